#include "duplex/runtime/functional/safetensors.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/runtime/functional/bnb4.hpp"
#include "duplex/runtime/functional/bnb_int8.hpp"
#include "duplex/runtime/functional/fp8.hpp"
#include "duplex/runtime/functional/int4.hpp"
#include "mxfp4.hpp"

namespace duplex::runtime::functional {
namespace {

static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

// Header lengths beyond this are not a plausible safetensors header (the reference implementation caps at
// 100 MB); they are reported as a bad header rather than allocated.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

std::string read_file(const std::string& path) {
  if (std::filesystem::is_directory(path)) throw Error(fmt::format("{}: is a folder; expected a file", path));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot open for reading", path));
  std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) throw Error(fmt::format("{}: read failed", path));
  return bytes;
}

std::string shape_text(const std::vector<std::int64_t>& s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}

// Bytes per element of a stored dtype the reader converts to FP16; 0 for any other.
std::uint64_t element_bytes(const std::string& dtype) {
  return dtype == "F16" || dtype == "BF16" ? 2 : dtype == "F32" ? 4 : 0;
}

}  // namespace

namespace {

// A tensor to write: its checkpoint name, safetensors dtype and shape, and its little-endian bytes (owned
// elsewhere).
struct OutTensor {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  const char* data = nullptr;
  std::uint64_t bytes = 0;
};
using TensorList = std::vector<OutTensor>;

OutTensor f16_tensor(std::string name, const WeightTensor& t) {
  return {std::move(name), "F16", t.shape, reinterpret_cast<const char*>(t.data.data()), t.data.size() * 2};
}

// Writes `tensors` in the order given; returns the data bytes written.
std::uint64_t write_tensors(const std::string& path, const TensorList& tensors) {
  nlohmann::json header = nlohmann::json::object();
  std::uint64_t offset = 0;
  for (const OutTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes}}};
    offset += t.bytes;
  }
  header["__metadata__"] = {{"format", "pt"}, {"writer", "duplex"}};
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw Error(fmt::format("{}: cannot open for writing", path));
  const std::uint64_t n = text.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const OutTensor& t : tensors) out.write(t.data, static_cast<std::streamsize>(t.bytes));
  if (!out) throw Error(fmt::format("{}: write failed", path));
  return offset;
}

// One safetensors file read whole: its JSON header and its data bytes (after the header).
struct SafetensorsFile {
  std::string path;
  std::string bytes;
  nlohmann::json header;
  const char* data = nullptr;
  std::uint64_t data_size = 0;
};

SafetensorsFile open_safetensors(const std::string& path) {
  SafetensorsFile f;
  f.path = path;
  f.bytes = read_file(path);
  const std::string& file = f.bytes;
  if (file.size() < 8)
    throw Error(fmt::format("{}: truncated: {} bytes, expected at least the 8-byte header length", path, file.size()));
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, file.data(), 8);
  if (header_len > kMaxHeaderBytes)
    throw Error(fmt::format("{}: bad header: header length {} is implausible; expected a safetensors file", path,
                            header_len));
  if (header_len > file.size() - 8)
    throw Error(fmt::format("{}: truncated: the header needs {} bytes, the file has {} after the length",
                            path, header_len, file.size() - 8));
  try {
    f.header =
        nlohmann::json::parse(file.begin() + 8, file.begin() + 8 + static_cast<std::ptrdiff_t>(header_len));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: bad header: not valid JSON ({})", path, e.what()));
  }
  if (!f.header.is_object()) throw Error(fmt::format("{}: bad header: not a JSON object", path));
  f.data_size = file.size() - 8 - header_len;
  f.data = file.data() + 8 + header_len;
  // Each tensor owns its bytes (the safetensors library refuses overlapping ranges too): two entries over
  // one range would silently alias two weights.
  std::vector<std::tuple<std::uint64_t, std::uint64_t, std::string>> ranges;
  for (const auto& [name, e] : f.header.items()) {
    if (name == "__metadata__" || !e.is_object() || !e.contains("data_offsets")) continue;
    const nlohmann::json& o = e["data_offsets"];
    if (o.is_array() && o.size() == 2 && o[0].is_number_unsigned() && o[1].is_number_unsigned())
      ranges.emplace_back(o[0].get<std::uint64_t>(), o[1].get<std::uint64_t>(), name);
  }
  std::sort(ranges.begin(), ranges.end());
  for (std::size_t i = 1; i < ranges.size(); ++i)
    if (std::get<0>(ranges[i]) < std::get<1>(ranges[i - 1]))
      throw Error(
          fmt::format("{}: tensors {} and {} share bytes (data_offsets overlap); expected each tensor its "
                      "own range",
                      path, std::get<2>(ranges[i - 1]), std::get<2>(ranges[i])));
  return f;
}

// One header entry of file f: its dtype (as written: a JSON string, else ""), shape and data offsets; errors
// name the file and the tensor. `missing`: what the error for an absent tensor adds in parentheses.
struct TensorEntry {
  std::string dtype, dtype_json;
  std::vector<std::int64_t> shape;
  std::vector<std::uint64_t> offsets;
};
Error tensor_error(const SafetensorsFile& f, const std::string& name, const std::string& what) {
  return Error(fmt::format("{}: tensor {}: {}", f.path, name, what));
}
TensorEntry tensor_entry(const SafetensorsFile& f, const std::string& name, const std::string& missing) {
  if (!f.header.contains(name))
    throw Error(fmt::format("{}: tensor {} is missing ({})", f.path, name, missing));
  const nlohmann::json& e = f.header[name];
  if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
    throw tensor_error(f, name, "bad header entry; expected {dtype, shape, data_offsets}");
  TensorEntry t;
  t.dtype = e["dtype"].is_string() ? e["dtype"].get<std::string>() : "";
  t.dtype_json = e["dtype"].dump();
  try {
    t.shape = e["shape"].get<std::vector<std::int64_t>>();
    t.offsets = e["data_offsets"].get<std::vector<std::uint64_t>>();
  } catch (const nlohmann::json::exception&) {
    throw tensor_error(f, name,
                       "bad header entry: shape and data_offsets must be lists of non-negative integers");
  }
  return t;
}

// The tensor `s` of file f, converted to FP16; `converted` collects stored dtypes other than F16.
WeightTensor read_tensor(const SafetensorsFile& f, const WeightShape& s, const std::string& model,
                         std::set<std::string>& converted) {
  const TensorEntry entry =
      tensor_entry(f, s.name, fmt::format("model {} needs it, shape {}", model, shape_text(s.shape)));
  auto bad = [&](const std::string& what) { return tensor_error(f, s.name, what); };
  const std::string& dtype = entry.dtype;
  const std::uint64_t elem = element_bytes(dtype);
  if (elem == 0) throw bad(fmt::format("dtype {}; expected F16, BF16 or F32", entry.dtype_json));
  const std::vector<std::int64_t>& shape = entry.shape;
  const std::vector<std::uint64_t>& offsets = entry.offsets;
  if (shape != s.shape)
    throw bad(fmt::format("shape {}; expected {}", shape_text(shape), shape_text(s.shape)));
  WeightTensor t;
  t.shape = shape;
  const std::uint64_t bytes = static_cast<std::uint64_t>(t.numel()) * elem;
  if (offsets.size() != 2 || offsets[1] < offsets[0] || offsets[1] - offsets[0] != bytes)
    throw bad(fmt::format("data_offsets [{}] do not span the {} bytes of its shape", fmt::join(offsets, ","),
                          bytes));
  if (offsets[1] > f.data_size)
    throw bad(fmt::format("truncated: data ends at byte {}, the file holds {} data bytes", offsets[1],
                          f.data_size));
  t.data.resize(static_cast<std::size_t>(t.numel()));
  const char* at = f.data + offsets[0];
  if (dtype == "F16") {
    std::memcpy(t.data.data(), at, bytes);
    return t;
  }
  // BF16 / F32 rounded to FP16, the arithmetic of the emulated devices; a value FP16 cannot hold is an error.
  converted.insert(dtype);
  for (std::size_t i = 0; i < t.data.size(); ++i) {
    float v = 0;
    if (dtype == "F32") {
      std::memcpy(&v, at + 4 * i, 4);
    } else {
      std::uint16_t b = 0;
      std::memcpy(&b, at + 2 * i, 2);
      v = bf16_bits_to_float(b);
    }
    t.data[i] = float_to_half_bits(v);
    if (!std::isfinite(half_bits_to_float(t.data[i])))
      throw bad(
          fmt::format("element {} is {} ({}), outside FP16's finite range (+-65504); {} checkpoints are "
                      "converted to FP16, the emulated devices' arithmetic",
                      i, v, dtype, dtype));
  }
  return t;
}

// The raw bytes of tensor `name` of file f, of `dtype` (`element` bytes each) and `shape`: the parts of a
// quantized matrix (`format`: "MXFP4" blocks and scales, U8; "FP8" codes, F8_E4M3, and scales, F32; "INT8"
// codes, I8).
const char* raw_tensor(const SafetensorsFile& f, const std::string& name, const char* dtype,
                       std::uint64_t element, const std::vector<std::int64_t>& shape, const char* format) {
  const TensorEntry e = tensor_entry(f, name, fmt::format("{} matrix, shape {}", format, shape_text(shape)));
  if (e.dtype != dtype)
    throw tensor_error(f, name, fmt::format("dtype {}; expected {} ({})", e.dtype_json, dtype, format));
  if (e.shape != shape)
    throw tensor_error(f, name, fmt::format("shape {}; expected {}", shape_text(e.shape), shape_text(shape)));
  std::uint64_t bytes = element;
  for (auto d : shape) bytes *= static_cast<std::uint64_t>(d);
  if (e.offsets.size() != 2 || e.offsets[1] < e.offsets[0] || e.offsets[1] - e.offsets[0] != bytes ||
      e.offsets[1] > f.data_size)
    throw tensor_error(f, name,
                       fmt::format("data_offsets [{}] do not span the {} bytes of its shape within the file",
                                   fmt::join(e.offsets, ","), bytes));
  return f.data + e.offsets[0];
}
const std::uint8_t* u8_tensor(const SafetensorsFile& f, const std::string& name,
                              const std::vector<std::int64_t>& shape) {
  return reinterpret_cast<const std::uint8_t*>(raw_tensor(f, name, "U8", 1, shape, "MXFP4"));
}

void note_conversions(ModelWeights& w, const std::set<std::string>& converted) {
  if (!converted.empty())
    w.source = fmt::format("{} ({} converted to FP16)", w.source, fmt::join(converted, ", "));
}

}  // namespace

namespace {
// A tensor as the checkpoint stores it (name, shape) and the model's tensors it holds: one, or several
// stacked by rows (Phi-3's qkv_proj = [q; k; v], gate_up_proj = [gate; up]; DBRX's Wqkv, and its experts'
// w1 / v1 / w2 = [expert 0; expert 1; ...]), in expected_weights order.
struct StoredTensor {
  WeightShape stored;
  std::vector<WeightShape> parts;
};
// DBRX stores each expert's down projection transposed: w2's rows [ffn, hidden] per expert (HF
// DbrxExpertGLU multiplies by them untransposed); the model's tensor is [hidden, ffn] as every down
// projection.
// gpt-oss and Llama 4 store every expert matrix input-major: gate_up_proj [E, hidden, 2 ffn], down_proj
// [E, ffn, hidden] (HF GptOssExperts / Llama4TextExperts multiply x @ W): each part transposed from the
// model's [out, in].
bool stored_transposed(const compiler::ModelSpec& spec, const std::string& name) {
  if (spec.weight_naming == compiler::WeightNaming::kGptOss ||
      spec.weight_naming == compiler::WeightNaming::kLlama4)
    return name.find(".mlp.experts.") != std::string::npos && name.ends_with("_proj.weight");
  return spec.weight_naming == compiler::WeightNaming::kDbrx && name.find(".experts.") != std::string::npos &&
         name.ends_with(".w2.weight");
}
// gpt-oss's and Llama 4's fused expert tensors (checkpoint names): one per kind and layer holding every
// expert, [E, ...]. gate_up_proj (and gpt-oss's gate_up_proj_bias) hold each expert's gate and up: its parts
// come in pairs (gate, up) per expert (paired), along the last dimension alternating in gpt-oss's (gate i at
// 2i, up i at 2i + 1: interleaved), one after the other in Llama 4's (gate i at i, up i at ffn + i).
bool fused_experts(const compiler::ModelSpec& spec, const std::string& stored) {
  if (spec.weight_naming == compiler::WeightNaming::kLlama4)
    return stored.ends_with(".feed_forward.experts.gate_up_proj") ||
           stored.ends_with(".feed_forward.experts.down_proj");
  return spec.weight_naming == compiler::WeightNaming::kGptOss &&
         (stored.ends_with(".mlp.experts.gate_up_proj") || stored.ends_with(".mlp.experts.down_proj") ||
          stored.ends_with(".mlp.experts.gate_up_proj_bias") ||
          stored.ends_with(".mlp.experts.down_proj_bias"));
}
bool paired(const std::string& stored) {
  return stored.ends_with(".gate_up_proj") || stored.ends_with(".gate_up_proj_bias");
}
bool interleaved(const compiler::ModelSpec& spec) {
  return spec.weight_naming == compiler::WeightNaming::kGptOss;
}
// gpt-oss's MXFP4 checkpoints (expert_dtype mxfp4) store each expert matrix tensor NAME as NAME_blocks
// [E, out, in / 32, 16] and NAME_scales [E, out, in / 32] (U8, out-major: gate_up's rows alternate gate and
// up), its biases as they are.
bool mxfp4_stored(const compiler::ModelSpec& spec, const std::string& stored) {
  return spec.expert_dtype == compiler::DType::kMxfp4 && fused_experts(spec, stored) &&
         !stored.ends_with("_bias");
}
// FP8 and INT8 matrices (safetensors.hpp): NAME.weight in F8_E4M3 (or I8) and its scales,
// NAME.weight_scale_inv (128 x 128 blocks) or NAME.weight_scale (one per row, or one per matrix).
bool fp8_stored(const WeightShape& stored) {
  return compiler::scaled_8bit(stored.format) && stored.role == WeightShape::Role::kMatrix;
}
// The safetensors dtype of a scaled 8-bit matrix's codes.
const char* codes_dtype(const WeightShape& stored) {
  return stored.format == compiler::DType::kInt8Channel ? "I8" : "F8_E4M3";
}
std::string fp8_scale_name(const WeightShape& stored) {
  return stored.name + (stored.format == compiler::DType::kFp8Block128 ? "_scale_inv" : "_scale");
}
Fp8Grid stored_grid(const WeightShape& stored) {
  return fp8_grid(stored.format, stored.shape[0], stored.shape.back());
}
// The scales' shape as duplex writes it: fp8_scale_shape's, or [] for one per matrix (AutoFP8's releases;
// llm-compressor's store [1], read alike: tensor_scale_shape).
std::vector<std::int64_t> scale_shape(const WeightShape& stored) {
  if (stored.format == compiler::DType::kFp8Tensor) return {};
  const std::array<std::int64_t, 2> s =
      fp8_scale_shape(stored_grid(stored), stored.shape[0], stored.shape[1]);
  return {s[0], s[1]};
}
// 4-bit (and GPTQ's 8-bit) group matrices (int4.hpp), NAME the stored tensor's name without ".weight" (its
// module): AutoAWQ's NAME.qweight, NAME.qzeros, NAME.scales; GPTQ's and NAME.g_idx; W4A16's
// (compressed-tensors) NAME.weight_packed, NAME.weight_scale, NAME.weight_shape.
bool int4_stored(const WeightShape& stored) {
  return compiler::grouped_int(stored.format) && stored.role == WeightShape::Role::kMatrix;
}
std::string module_name(const WeightShape& stored) {
  DUPLEX_ASSERT(stored.name.ends_with(".weight"), "a quantized matrix is a module's weight");
  return stored.name.substr(0, stored.name.size() - std::string_view(".weight").size());
}
// fbgemm's FP8 matrices (activation_scale_ub > 0: Meta's Llama 3.1 FP8 releases) store beside them their
// module's bound of the activation scales, NAME.input_scale_ub F32 [1] (NAME: the module).
bool bound_stored(const compiler::ModelSpec& spec, const WeightShape& stored) {
  return spec.activation_scale_ub > 0 && stored.format == compiler::DType::kFp8Channel &&
         stored.role == WeightShape::Role::kMatrix;
}
std::string bound_name(const WeightShape& stored) {
  return module_name(stored) + ".input_scale_ub";
}
// Static per-tensor FP8 releases (fp8_tensor with static_input_scales: AutoFP8's activation_scheme static,
// llm-compressor's static FP8 scheme) store beside each FP8 matrix its module's calibrated activation scale,
// NAME.input_scale, one value, shape [] or [1] (NAME: the module).
bool input_scale_stored(const compiler::ModelSpec& spec, const WeightShape& stored) {
  return spec.static_input_scales && stored.format == compiler::DType::kFp8Tensor &&
         stored.role == WeightShape::Role::kMatrix;
}
std::string input_scale_name(const WeightShape& stored) {
  return module_name(stored) + ".input_scale";
}
std::vector<std::string> int4_names(const WeightShape& stored) {
  const std::string module = module_name(stored);
  if (pack_layout(stored.format))
    return {module + ".weight_packed", module + ".weight_scale", module + ".weight_shape"};
  std::vector<std::string> names = {module + ".qweight", module + ".qzeros", module + ".scales"};
  if (gptq_layout(stored.format)) names.push_back(module + ".g_idx");
  return names;
}
// The release kind a grouped integer format's errors name.
const char* int4_kind(compiler::DType format) {
  return format == compiler::DType::kInt4Awq    ? "AWQ"
         : gptq_layout(format)                  ? "GPTQ"
         : format == compiler::DType::kInt8Pack ? "W8A16"
                                                : "W4A16";
}
// bitsandbytes' 4-bit matrices (bnb4.hpp): NAME.weight (U8) beside NAME.weight.absmax, .quant_map and
// .quant_state.bitsandbytes__TYPE (nf4 or fp4), and with double quantization .nested_absmax and
// .nested_quant_map.
bool bnb4_stored(const WeightShape& stored) {
  return compiler::bnb_4bit(stored.format) && stored.role == WeightShape::Role::kMatrix;
}
// How errors name a bitsandbytes format: "NF4" or "FP4".
const char* bnb4_kind(compiler::DType format) {
  return compiler::bnb_quant_type(format) == "nf4" ? "NF4" : "FP4";
}
std::vector<std::string> bnb4_names(const WeightShape& stored) {
  std::vector<std::string> names = {
      stored.name, stored.name + ".absmax", stored.name + ".quant_map",
      fmt::format("{}.quant_state.bitsandbytes__{}", stored.name, compiler::bnb_quant_type(stored.format))};
  if (compiler::bnb_nested(stored.format)) {
    names.push_back(stored.name + ".nested_absmax");
    names.push_back(stored.name + ".nested_quant_map");
  }
  return names;
}
// LLM.int8() matrices (bnb_int8.hpp): NAME.weight (I8) beside NAME.SCB and NAME.weight_format (NAME: the
// module; weight_format may be absent: optional_part).
bool bnb8_stored(const WeightShape& stored) {
  return stored.format == compiler::DType::kBnbInt8 && stored.role == WeightShape::Role::kMatrix;
}
std::vector<std::string> bnb8_names(const WeightShape& stored) {
  const std::string module = module_name(stored);
  return {stored.name, module + ".SCB", module + ".weight_format"};
}
// Whether `name`, one of stored_names(spec, stored), may be absent from a checkpoint: an LLM.int8() matrix's
// weight_format (bitsandbytes < 0.41 saved none; read as row-major).
bool optional_part(const WeightShape& stored, const std::string& name) {
  return bnb8_stored(stored) && name.ends_with(".weight_format");
}
// The checkpoint's names of a stored tensor: itself, its MXFP4 blocks and scales, its FP8 codes and scales,
// its 4-bit parts, or its LLM.int8() codes, absmax and layout.
std::vector<std::string> stored_names(const compiler::ModelSpec& spec, const WeightShape& stored) {
  if (mxfp4_stored(spec, stored.name)) return {stored.name + "_blocks", stored.name + "_scales"};
  if (bound_stored(spec, stored)) return {stored.name, fp8_scale_name(stored), bound_name(stored)};
  if (input_scale_stored(spec, stored))
    return {stored.name, fp8_scale_name(stored), input_scale_name(stored)};
  if (fp8_stored(stored)) return {stored.name, fp8_scale_name(stored)};
  if (int4_stored(stored)) return int4_names(stored);
  if (bnb4_stored(stored)) return bnb4_names(stored);
  if (bnb8_stored(stored)) return bnb8_names(stored);
  return {stored.name};
}
// The rows of a and b in one tensor: alternating (a's row i at 2i, b's at 2i + 1), or b's after a's; a
// vector is a column.
WeightTensor pair_rows(const WeightTensor& a, const WeightTensor& b, bool alternate) {
  const std::int64_t rows = a.shape[0], cols = a.shape.size() == 2 ? a.shape[1] : 1;
  WeightTensor out;
  out.shape = a.shape;
  out.shape[0] = 2 * rows;
  out.data.resize(2 * a.data.size());
  for (std::int64_t r = 0; r < rows; ++r) {
    std::copy_n(a.data.begin() + r * cols, cols, out.data.begin() + (alternate ? 2 * r : r) * cols);
    std::copy_n(b.data.begin() + r * cols, cols,
                out.data.begin() + (alternate ? 2 * r + 1 : rows + r) * cols);
  }
  return out;
}
// The shape tensor `s` has in its checkpoint tensor.
std::vector<std::int64_t> stored_shape(const compiler::ModelSpec& spec, const WeightShape& s) {
  if (!stored_transposed(spec, s.name)) return s.shape;
  return {s.shape[1], s.shape[0]};
}
// `count` row-major rows x cols matrices, one after the other, each transposed to cols x rows.
std::vector<std::uint16_t> transpose_each(const std::uint16_t* v, std::int64_t count, std::int64_t rows,
                                          std::int64_t cols) {
  std::vector<std::uint16_t> out(static_cast<std::size_t>(count * rows * cols));
  for (std::int64_t m = 0; m < count; ++m)
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < cols; ++c)
        out[static_cast<std::size_t>((m * cols + c) * rows + r)] = v[(m * rows + r) * cols + c];
  return out;
}
WeightTensor transposed(const WeightTensor& t) {
  DUPLEX_ASSERT(t.shape.size() == 2, "a transposed tensor is a matrix");
  return {{t.shape[1], t.shape[0]}, transpose_each(t.data.data(), 1, t.shape[0], t.shape[1])};
}
std::vector<StoredTensor> storage_plan(const compiler::ModelSpec& spec) {
  std::vector<StoredTensor> plan;
  std::map<std::string, std::size_t> at;  // checkpoint name -> index in plan
  for (const WeightShape& s : expected_weights(spec)) {
    const std::string name = checkpoint_name(spec, s.name);
    const std::vector<std::int64_t> shape = stored_shape(spec, s);
    const auto it = at.find(name);
    if (fused_experts(spec, name)) {  // [E, part shape] (gate and up paired: twice as wide)
      std::vector<std::int64_t> whole{spec.experts};
      for (std::size_t i = 0; i < shape.size(); ++i)
        whole.push_back(shape[i] * (i + 1 == shape.size() && paired(name) ? 2 : 1));
      if (it == at.end()) {
        at.emplace(name, plan.size());
        plan.push_back({WeightShape{name, whole, s.role, s.format}, {s}});
      } else {
        plan[it->second].parts.push_back(s);
      }
      continue;
    }
    if (it == at.end()) {
      at.emplace(name, plan.size());
      plan.push_back({WeightShape{name, shape, s.role, s.format}, {s}});
      continue;
    }
    StoredTensor& t = plan[it->second];
    DUPLEX_ASSERT(t.stored.shape.size() == 2 && shape.size() == 2 && t.stored.shape[1] == shape[1],
                  "stacked tensors share their row width");
    t.stored.shape[0] += shape[0];
    t.parts.push_back(s);
  }
  return plan;
}
// Whether the stored tensor is the one model tensor as it is (not stacked, not transposed).
bool stored_as_is(const compiler::ModelSpec& spec, const StoredTensor& p) {
  return p.parts.size() == 1 && !stored_transposed(spec, p.parts[0].name);
}
// DeepSeek's and Llama 4's checkpoints order each head's rope rows interleaved: HF rotates the pairs (2i,
// 2i + 1) (as complex numbers), the emulation the pairs (i, i + rope / 2) (rotate-half). The rope rows of
// q_proj / q_b_proj (per head, after its nope rows) and of kv_a_proj_with_mqa (after the latent's), or
// Llama 4's whole heads of q_proj and k_proj (in every layer: a NoPE layer's q . k and its queries'
// temperature do not depend on the order), are permuted on reading (checkpoint row 2i -> i, 2i + 1 ->
// rope / 2 + i) and back on writing; q . k is unchanged, as q and k move alike, and so is a head's L2 norm.
// The rows of a rope block (rope_rows), and the first row of every rope block of tensor `name`; empty for
// other tensors.
std::int64_t rope_rows(const compiler::ModelSpec& spec) {
  return spec.attention == compiler::AttentionKind::kMla ? spec.mla.qk_rope_head_dim : spec.head_dim;
}
std::vector<std::int64_t> rope_row_blocks(const compiler::ModelSpec& spec, const std::string& name) {
  if (spec.weight_naming == compiler::WeightNaming::kLlama4) {
    const bool q = name.ends_with(".self_attn.q_proj.weight"), k = name.ends_with(".self_attn.k_proj.weight");
    std::vector<std::int64_t> first;
    for (int h = 0; h < (q ? spec.heads : k ? spec.kv_heads : 0); ++h)
      first.push_back(std::int64_t{h} * spec.head_dim);
    return first;
  }
  if (spec.attention != compiler::AttentionKind::kMla) return {};
  const compiler::MlaSpec& a = spec.mla;
  const std::string q = a.q_lora_rank > 0 ? ".self_attn.q_b_proj.weight" : ".self_attn.q_proj.weight";
  if (name.ends_with(".self_attn.kv_a_proj_with_mqa.weight")) return {a.kv_lora_rank};
  if (!name.ends_with(q)) return {};
  std::vector<std::int64_t> first;
  for (int h = 0; h < spec.heads; ++h)
    first.push_back(std::int64_t{h} * (a.qk_nope_head_dim + a.qk_rope_head_dim) + a.qk_nope_head_dim);
  return first;
}
// `t` with its rope rows reordered: to the emulation's order (from a checkpoint), or back.
WeightTensor permute_rope_rows(const compiler::ModelSpec& spec, const std::string& name, WeightTensor t,
                               bool to_checkpoint) {
  const std::int64_t rope = rope_rows(spec), cols = t.shape.back(), half = rope / 2;
  for (std::int64_t first : rope_row_blocks(spec, name)) {
    const std::vector<std::uint16_t> block(t.data.begin() + first * cols,
                                           t.data.begin() + (first + rope) * cols);
    for (std::int64_t i = 0; i < rope; ++i) {
      const std::int64_t inner = i < half ? 2 * i : 2 * (i - half) + 1;  // checkpoint row of emulation row i
      const std::int64_t from = to_checkpoint ? i : inner, to = to_checkpoint ? inner : i;
      std::copy_n(block.begin() + from * cols, cols, t.data.begin() + (first + to) * cols);
    }
  }
  return t;
}
// The model's tensors of a stored one, split by rows as the plan stacks them (and transposed back).
void unstack(const StoredTensor& p, WeightTensor t, ModelWeights& w) {
  if (fused_experts(w.spec, p.stored.name)) {  // per expert: untranspose, then split gate / up
    const std::size_t step = paired(p.stored.name) ? 2 : 1;
    const bool alternate = interleaved(w.spec);
    std::size_t at = 0;
    for (std::size_t i = 0; i < p.parts.size(); i += step) {
      const WeightShape& first = p.parts[i];
      WeightTensor x;
      x.shape = first.shape;
      x.shape[0] *= static_cast<std::int64_t>(step);  // the pair: [2 f, ...]
      const bool transpose = stored_transposed(w.spec, first.name);
      if (transpose) x.shape = {x.shape[1], x.shape[0]};
      x.data.assign(t.data.begin() + static_cast<std::ptrdiff_t>(at),
                    t.data.begin() + static_cast<std::ptrdiff_t>(at + static_cast<std::size_t>(x.numel())));
      at += static_cast<std::size_t>(x.numel());
      if (transpose) x = transposed(x);
      if (step == 1) {
        w.tensors.emplace(first.name, std::move(x));
        continue;
      }
      const std::int64_t cols = x.shape.size() == 2 ? x.shape[1] : 1;
      WeightTensor a, b;
      a.shape = b.shape = first.shape;
      const std::int64_t rows = first.shape[0];
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t ra = alternate ? 2 * r : r, rb = alternate ? 2 * r + 1 : rows + r;
        a.data.insert(a.data.end(), x.data.begin() + ra * cols, x.data.begin() + (ra + 1) * cols);
        b.data.insert(b.data.end(), x.data.begin() + rb * cols, x.data.begin() + (rb + 1) * cols);
      }
      w.tensors.emplace(first.name, std::move(a));
      w.tensors.emplace(p.parts[i + 1].name, std::move(b));
    }
    return;
  }
  if (stored_as_is(w.spec, p)) {
    w.tensors.emplace(p.parts[0].name, permute_rope_rows(w.spec, p.parts[0].name, std::move(t), false));
    return;
  }
  const std::int64_t cols = t.shape[1];
  std::int64_t row = 0;
  for (const WeightShape& part : p.parts) {
    WeightTensor x;
    x.shape = stored_shape(w.spec, part);
    x.data.assign(t.data.begin() + row * cols, t.data.begin() + (row + x.shape[0]) * cols);
    row += x.shape[0];
    w.tensors.emplace(part.name, stored_transposed(w.spec, part.name) ? transposed(x) : std::move(x));
  }
}
// The stored tensor p ([E, in, out], as the BF16 checkpoints hold it) from its MXFP4 blocks (in file fb) and
// scales (in file fs), dequantized exactly to FP16 (mxfp4.hpp).
WeightTensor read_mxfp4(const SafetensorsFile& fb, const SafetensorsFile& fs, const StoredTensor& p) {
  const std::int64_t experts = p.stored.shape[0], in = p.stored.shape[1], out = p.stored.shape[2];
  const std::string& name = p.stored.name;
  const std::uint8_t* blocks =
      u8_tensor(fb, name + "_blocks", {experts, out, in / kMxfp4Block, kMxfp4Block / 2});
  const std::uint8_t* scales = u8_tensor(fs, name + "_scales", {experts, out, in / kMxfp4Block});
  const std::vector<std::uint16_t> rows =
      dequantize_mxfp4(blocks, scales, experts * out, in, fb.path + ": " + name);
  return {p.stored.shape, transpose_each(rows.data(), experts, out, in)};  // [E][in][out]
}
// The scales `name` of file f, of `shape`, stored in one of `dtypes` (of F32, BF16, F16), as floats; the
// errors name `format` (FP8, AWQ, GPTQ, W4A16, NF4, FP4).
std::vector<float> scale_values(const SafetensorsFile& f, const std::string& name,
                                const std::vector<std::int64_t>& shape,
                                const std::vector<std::string>& dtypes, const char* format) {
  std::string dtype = dtypes[0];
  if (dtypes.size() > 1) {
    const TensorEntry e =
        tensor_entry(f, name, fmt::format("{} matrix, shape {}", format, shape_text(shape)));
    if (std::find(dtypes.begin(), dtypes.end(), e.dtype) == dtypes.end())
      throw tensor_error(
          f, name,
          fmt::format("dtype {}; expected {} or {} ({} scales)", e.dtype_json,
                      fmt::join(dtypes.begin(), dtypes.end() - 1, ", "), dtypes.back(), format));
    dtype = e.dtype;
  }
  const bool half = dtype != "F32";
  const char* raw = raw_tensor(f, name, dtype.c_str(), half ? 2 : 4, shape, format);
  std::int64_t count = 1;
  for (const std::int64_t d : shape) count *= d;
  std::vector<float> scales(static_cast<std::size_t>(count));
  for (std::size_t i = 0; i < scales.size(); ++i) {  // the data need not be aligned
    if (!half) {
      std::memcpy(&scales[i], raw + 4 * i, 4);
      continue;
    }
    std::uint16_t b = 0;
    std::memcpy(&b, raw + 2 * i, 2);
    scales[i] = dtype == "BF16" ? bf16_bits_to_float(b) : half_bits_to_float(b);
  }
  return scales;
}
// The shape of one-value tensor `name` of file f, [] or [1] as the file holds it (another is an error naming
// the tensor and `what` it holds).
std::vector<std::int64_t> one_value_shape(const SafetensorsFile& f, const std::string& name,
                                          const char* what) {
  const TensorEntry e = tensor_entry(f, name, fmt::format("{}, shape [] or [1]", what));
  if (!e.shape.empty() && e.shape != std::vector<std::int64_t>{1})
    throw tensor_error(f, name, fmt::format("shape {}; expected [] or [1] ({})", shape_text(e.shape), what));
  return e.shape;
}
// The shape of stored tensor's FP8 scales in file f: scale_shape's, or for one scale per matrix [] or [1].
std::vector<std::int64_t> tensor_scale_shape(const SafetensorsFile& f, const WeightShape& stored) {
  if (stored.format != compiler::DType::kFp8Tensor) return scale_shape(stored);
  return one_value_shape(f, fp8_scale_name(stored), "one scale per matrix");
}
// A static FP8 release's activation scale of stored matrix `stored`, tensor input_scale_name of file f: one
// finite value > 0 in F32, BF16 or F16, shape [] or [1] (the xPU's static quantization of the module's
// input).
float read_input_scale(const SafetensorsFile& f, const WeightShape& stored) {
  const std::string name = input_scale_name(stored);
  const std::vector<std::int64_t> shape = one_value_shape(f, name, "one activation scale per module");
  const float s = scale_values(f, name, shape, {"F32", "BF16", "F16"}, "FP8")[0];
  if (!std::isfinite(s) || s <= 0)
    throw tensor_error(f, name, fmt::format("holds {}; expected a finite activation scale > 0", s));
  return s;
}
// The stored tensor p (2-D) from its FP8 (or INT8) codes (in file fc) and scales (in file fs), dequantized to
// FP16 (fp8.hpp).
WeightTensor read_fp8(const SafetensorsFile& fc, const SafetensorsFile& fs, const StoredTensor& p) {
  const std::int64_t rows = p.stored.shape[0], cols = p.stored.shape[1];
  const std::string& name = p.stored.name;
  const bool int8 = p.stored.format == compiler::DType::kInt8Channel;
  const char* kind = int8 ? "INT8" : "FP8";
  const auto* codes = reinterpret_cast<const std::uint8_t*>(
      raw_tensor(fc, name, codes_dtype(p.stored), 1, p.stored.shape, kind));
  // FineGrainedFP8 stores F32 scales; compressed-tensors the model's dtype (or F32).
  const std::vector<float> scales = scale_values(
      fs, fp8_scale_name(p.stored), tensor_scale_shape(fs, p.stored),
      p.stored.format != compiler::DType::kFp8Block128 ? std::vector<std::string>{"F32", "BF16", "F16"}
                                                       : std::vector<std::string>{"F32"},
      kind);
  WeightTensor t;
  t.shape = p.stored.shape;
  t.data =
      dequantize_fp8_blocks(codes, scales.data(), rows, cols, stored_grid(p.stored), fc.path + ": " + name);
  return t;
}
// fbgemm's bound of the activation scales, tensor `name` of f: F32 [1], the config's activation_scale_ub.
void expect_bound(const SafetensorsFile& f, const std::string& name, const compiler::ModelSpec& spec) {
  const float bound = scale_values(f, name, {1}, {"F32"}, "FP8")[0];
  if (bound != static_cast<float>(spec.activation_scale_ub))
    throw tensor_error(f, name,
                       fmt::format("holds {}; expected {}, the config's activation_scale_ub (one bound for "
                                   "every module)",
                                   bound, spec.activation_scale_ub));
}
// A copy of the `count` elements of type T at `raw` (safetensors data need not be aligned).
template <typename T>
std::vector<T> copied(const char* raw, std::int64_t count) {
  std::vector<T> out(static_cast<std::size_t>(count));
  std::memcpy(out.data(), raw, out.size() * sizeof(T));
  return out;
}
// W4A16's NAME.weight_shape (`name` of file f): I64 (or I32) [2] holding the matrix's {rows, cols}.
void check_weight_shape(const SafetensorsFile& f, const std::string& name, std::int64_t rows,
                        std::int64_t cols) {
  const TensorEntry e = tensor_entry(f, name, "W4A16 matrix's shape, [2]");
  if (e.dtype != "I64" && e.dtype != "I32")
    throw tensor_error(f, name,
                       fmt::format("dtype {}; expected I64 or I32 (W4A16 weight_shape)", e.dtype_json));
  const bool wide = e.dtype == "I64";
  const char* raw = raw_tensor(f, name, e.dtype.c_str(), wide ? 8 : 4, {2}, "W4A16");
  const std::vector<std::int64_t> held = wide ? copied<std::int64_t>(raw, 2) : [&] {
    const std::vector<std::int32_t> v = copied<std::int32_t>(raw, 2);
    return std::vector<std::int64_t>{v[0], v[1]};
  }();
  if (held != std::vector<std::int64_t>{rows, cols})
    throw tensor_error(f, name,
                       fmt::format("holds {}; expected [{}, {}] (the matrix's outputs, inputs)",
                                   shape_text(held), rows, cols));
}
// The stored tensor p (2-D, [out, in]) from its 4-bit parts in groups of `group` inputs, files[i] holding
// int4_names(p.stored)[i], dequantized to FP16 (int4.hpp); scales in F16 or BF16.
WeightTensor read_int4(const std::vector<const SafetensorsFile*>& files, const StoredTensor& p,
                       int quant_group) {
  const compiler::DType format = p.stored.format;
  const bool gptq = gptq_layout(format), pack = pack_layout(format);
  const char* kind = int4_kind(format);
  const std::int64_t rows = p.stored.shape[0], cols = p.stored.shape[1];
  const std::int64_t group = compiler::group_inputs(quant_group, cols);
  const std::vector<std::string> names = int4_names(p.stored);
  auto words = [&](std::size_t i, std::array<std::int64_t, 2> shape) {
    return copied<std::int32_t>(raw_tensor(*files[i], names[i], "I32", 4, {shape[0], shape[1]}, kind),
                                shape[0] * shape[1]);
  };
  const std::vector<std::int32_t> qweight = words(0, int4_qweight_shape(format, rows, cols));
  const std::vector<std::int32_t> qzeros =
      pack ? std::vector<std::int32_t>() : words(1, int4_qzeros_shape(format, rows, cols, group));
  const std::size_t at = pack ? 1 : 2;  // the scales
  const std::array<std::int64_t, 2> shape = int4_scales_shape(format, rows, cols, group);
  const std::vector<float> scales =
      scale_values(*files[at], names[at], {shape[0], shape[1]}, {"F16", "BF16"}, kind);
  std::vector<std::int32_t> g_idx;
  if (gptq) g_idx = copied<std::int32_t>(raw_tensor(*files[3], names[3], "I32", 4, {cols}, kind), cols);
  if (pack) check_weight_shape(*files[2], names[2], rows, cols);
  const std::string what = files[0]->path + ": " + module_name(p.stored);
  const Int4Matrix m = unpack_int4(
      format, rows, cols,
      {qweight.data(), pack ? nullptr : qzeros.data(), scales.data(), gptq ? g_idx.data() : nullptr}, what,
      group);
  return {p.stored.shape, dequantize_int4(m, what)};
}
// A bitsandbytes 4-bit matrix's quant_state (tensor `name` of file f: U8, a JSON object's bytes), checked
// against the matrix of `format` (a bnb_4bit format): quant_type its type (nf4, fp4), its shape, a blocksize
// >= 1, and double quantization's fields exactly when the format has them (nested_blocksize 256, a finite
// nested_offset). Returns {blocksize, nested_offset}.
std::pair<std::int64_t, float> bnb4_quant_state(const SafetensorsFile& f, const std::string& name,
                                                std::int64_t rows, std::int64_t cols,
                                                compiler::DType format) {
  const char* kind = bnb4_kind(format);
  const std::string_view type = compiler::bnb_quant_type(format);
  const bool nested = compiler::bnb_nested(format);
  const TensorEntry e = tensor_entry(f, name, fmt::format("{} quant_state, U8 bytes of a JSON object", kind));
  if (e.dtype != "U8" || e.shape.size() != 1)
    throw tensor_error(f, name,
                       fmt::format("dtype {}, shape {}; expected U8 [bytes] (a JSON object's UTF-8 bytes)",
                                   e.dtype_json, shape_text(e.shape)));
  const char* raw = raw_tensor(f, name, "U8", 1, e.shape, kind);
  const nlohmann::json state =
      nlohmann::json::parse(std::string(raw, static_cast<std::size_t>(e.shape[0])), nullptr, false);
  const std::string expected = fmt::format(
      "{{quant_type: \"{}\", blocksize, dtype, shape: [out, in]}} (with double quantization also "
      "nested_blocksize: 256, nested_dtype, nested_offset)",
      type);
  auto bad = [&](const std::string& what) { return tensor_error(f, name, what + "; expected " + expected); };
  if (state.is_discarded() || !state.is_object()) throw bad("its bytes are not a JSON object");
  if (state.value("quant_type", nlohmann::json()) != type)
    throw bad(fmt::format("quant_type {}", state.value("quant_type", nlohmann::json()).dump()));
  if (state.value("shape", nlohmann::json()) != nlohmann::json::array({rows, cols}))
    throw bad(fmt::format("shape {} for a matrix of [{}, {}]", state.value("shape", nlohmann::json()).dump(),
                          rows, cols));
  const nlohmann::json blocksize = state.value("blocksize", nlohmann::json());
  if (!blocksize.is_number_integer() || blocksize.get<std::int64_t>() < 1)
    throw bad(fmt::format("blocksize {}", blocksize.dump()));
  if (state.contains("nested_offset") != nested)
    throw bad(nested ? "no double quantization (no nested_offset), where the config says "
                       "bnb_4bit_use_double_quant true"
                     : "double quantization (a nested_offset), where the config says "
                       "bnb_4bit_use_double_quant false");
  float offset = 0;
  if (nested) {
    if (state.value("nested_blocksize", nlohmann::json()) != kBnb4NestedBlock)
      throw bad(fmt::format("nested_blocksize {}", state.value("nested_blocksize", nlohmann::json()).dump()));
    const nlohmann::json o = state["nested_offset"];
    if (!o.is_number() || !std::isfinite(o.get<double>()))
      throw bad(fmt::format("nested_offset {}", o.dump()));
    offset = o.get<float>();
  }
  return {blocksize.get<std::int64_t>(), offset};
}
// The stored tensor p (2-D, [out, in]) from its bitsandbytes 4-bit parts, files[i] holding
// bnb4_names(p.stored)[i], dequantized to FP16 with the checkpoint's quant_map (bnb4.hpp).
WeightTensor read_bnb4(const std::vector<const SafetensorsFile*>& files, const StoredTensor& p) {
  const compiler::DType format = p.stored.format;
  const char* kind = bnb4_kind(format);
  const std::vector<std::string> names = bnb4_names(p.stored);
  Bnb4Matrix m;
  m.rows = p.stored.shape[0];
  m.cols = p.stored.shape[1];
  const std::int64_t n = m.rows * m.cols;
  float offset = 0;
  std::tie(m.blocksize, offset) = bnb4_quant_state(*files[3], names[3], m.rows, m.cols, format);
  m.q = unpack_bnb4(
      reinterpret_cast<const std::uint8_t*>(raw_tensor(*files[0], names[0], "U8", 1, {(n + 1) / 2, 1}, kind)),
      n);
  const std::vector<float> code = scale_values(*files[2], names[2], {16}, {"F32"}, kind);
  std::copy(code.begin(), code.end(), m.code.begin());
  if (!compiler::bnb_nested(format)) {
    m.absmax = scale_values(*files[1], names[1], {m.blocks()}, {"F32"}, kind);
  } else {
    const auto* codes =
        reinterpret_cast<const std::uint8_t*>(raw_tensor(*files[1], names[1], "U8", 1, {m.blocks()}, kind));
    const std::int64_t scales = (m.blocks() + kBnb4NestedBlock - 1) / kBnb4NestedBlock;
    m.absmax = nested_absmax_values(std::vector<std::uint8_t>(codes, codes + m.blocks()),
                                    scale_values(*files[4], names[4], {scales}, {"F32"}, kind),
                                    scale_values(*files[5], names[5], {256}, {"F32"}, kind), offset);
  }
  return {p.stored.shape, dequantize_bnb4(m, files[0]->path + ": " + p.stored.name)};
}
// The stored tensor p (2-D, [out, in]) from its LLM.int8() parts, files[i] holding bnb8_names(p.stored)[i]:
// I8 codes, F32 SCB [out] and weight_format U8 0 (row-major), dequantized to FP16 (bnb_int8.hpp).
WeightTensor read_bnb8(const std::vector<const SafetensorsFile*>& files, const StoredTensor& p) {
  const char* kind = "LLM.int8()";
  const std::vector<std::string> names = bnb8_names(p.stored);
  BnbInt8Matrix m;
  m.rows = p.stored.shape[0];
  m.cols = p.stored.shape[1];
  const auto* codes =
      reinterpret_cast<const std::int8_t*>(raw_tensor(*files[0], names[0], "I8", 1, p.stored.shape, kind));
  m.codes.assign(codes, codes + m.rows * m.cols);
  m.scb = scale_values(*files[1], names[1], {m.rows}, {"F32"}, kind);
  // bitsandbytes before 0.41 saved no weight_format: row-major (transformers' maybe_rearrange_weight).
  if (files[2]->header.contains(names[2])) {
    const std::vector<std::int64_t> shape =
        one_value_shape(*files[2], names[2], "bitsandbytes' layout of the codes, U8");
    const auto layout = static_cast<std::uint8_t>(*raw_tensor(*files[2], names[2], "U8", 1, shape, kind));
    const char* tiled[] = {"col32", "col_turing", "col_ampere"};
    if (layout != kBnbInt8RowFormat)
      throw tensor_error(
          *files[2], names[2],
          fmt::format("holds {} ({}); expected {} (row-major codes: a tiled layout is not read)", layout,
                      layout <= 3 ? tiled[layout - 1] : "not a bitsandbytes layout", kBnbInt8RowFormat));
  }
  return {p.stored.shape, dequantize_bnb_int8(m, files[0]->path + ": " + p.stored.name)};
}
// The stored tensor p, converted to FP16, files[i] holding stored_names(spec, p.stored)[i] (a quantized one's
// parts: the same file unless a sharded checkpoint put them apart).
WeightTensor read_stored(const std::vector<const SafetensorsFile*>& files, const StoredTensor& p,
                         const compiler::ModelSpec& spec, std::set<std::string>& converted,
                         std::map<std::string, float>& input_scales) {
  if (mxfp4_stored(spec, p.stored.name)) {
    converted.insert("MXFP4");
    return read_mxfp4(*files[0], *files[1], p);
  }
  if (fp8_stored(p.stored)) {
    converted.insert(p.stored.format == compiler::DType::kInt8Channel ? "INT8" : "FP8");
    if (bound_stored(spec, p.stored)) expect_bound(*files[2], bound_name(p.stored), spec);
    if (input_scale_stored(spec, p.stored)) {  // every matrix of the module shares it
      const float s = read_input_scale(*files[2], p.stored);
      for (const WeightShape& part : p.parts) input_scales[part.name] = s;
    }
    return read_fp8(*files[0], *files[1], p);
  }
  if (int4_stored(p.stored)) {
    converted.insert(
        fmt::format("{} int{}", int4_kind(p.stored.format), compiler::grouped_int_bits(p.stored.format)));
    return read_int4(files, p, spec.quant_group);
  }
  if (bnb4_stored(p.stored)) {
    converted.insert(bnb4_kind(p.stored.format));
    return read_bnb4(files, p);
  }
  if (bnb8_stored(p.stored)) {
    converted.insert("LLM.int8()");
    return read_bnb8(files, p);
  }
  return read_tensor(*files[0], p.stored, spec.name, converted);
}
// The checkpoint's form of stored tensor p: its parts stacked (and transposed) as stored, gpt-oss's and
// Llama 4's experts fused, DeepSeek's and Llama 4's rope rows in the checkpoint's order.
WeightTensor stored_form(const ModelWeights& weights, const StoredTensor& p) {
  if (p.parts.size() == 1 && !rope_row_blocks(weights.spec, p.parts[0].name).empty())
    return permute_rope_rows(weights.spec, p.parts[0].name, weights.get(p.parts[0].name), true);
  WeightTensor t;
  t.shape = p.stored.shape;
  if (fused_experts(weights.spec, p.stored.name)) {  // per expert: gate / up paired, transposed
    const std::size_t step = paired(p.stored.name) ? 2 : 1;
    for (std::size_t i = 0; i < p.parts.size(); i += step) {
      WeightTensor x = step == 2 ? pair_rows(weights.get(p.parts[i].name), weights.get(p.parts[i + 1].name),
                                             interleaved(weights.spec))
                                 : weights.get(p.parts[i].name);
      if (stored_transposed(weights.spec, p.parts[i].name)) x = transposed(x);
      t.data.insert(t.data.end(), x.data.begin(), x.data.end());
    }
    return t;
  }
  for (const WeightShape& part : p.parts) {
    const WeightTensor& x = weights.get(part.name);
    const std::vector<std::uint16_t>& d =
        stored_transposed(weights.spec, part.name) ? transposed(x).data : x.data;
    t.data.insert(t.data.end(), d.begin(), d.end());
  }
  return t;
}
// What checkpoint_tensors' list points into: the stored forms made for it, FP8 codes and scales, MXFP4 blocks
// and scales, 4-bit parts.
struct StoredData {
  std::deque<WeightTensor> tensors;  // deques: the list points into them as they grow
  std::deque<Fp8Blocks> fp8;
  std::deque<Mxfp4Blocks> mxfp4;
  std::deque<Int4Packed> int4;
  std::deque<std::array<std::int64_t, 2>> shapes;  // W4A16's weight_shape tensors
  std::deque<Bnb4Packed> bnb4;
  std::deque<BnbInt8Matrix> bnb8;
  float bound = 0;  // fbgemm's activation_scale_ub, every FP8 module's input_scale_ub
};
// A bitsandbytes 4-bit matrix of `spec` (stored tensor `stored`, its values in t, on the grid) as its
// release's parts.
void add_bnb4(TensorList& all, StoredData& data, const compiler::ModelSpec& spec, const WeightShape& stored,
              const WeightTensor& t) {
  const std::int64_t rows = t.shape[0], cols = t.shape[1];
  const bool nested = compiler::bnb_nested(stored.format);
  const Bnb4Packed& q = data.bnb4.emplace_back(pack_bnb4_matrix(
      quantize_bnb4(t.data.data(), rows, cols, stored.format, "model " + spec.name + ": " + stored.name),
      stored.format, spec.dtype == compiler::DType::kBf16 ? "bfloat16" : "float16"));
  const std::vector<std::string> names = bnb4_names(stored);
  auto bytes = [](const auto& v) { return reinterpret_cast<const char*>(v.data()); };
  const auto count = [](const auto& v) { return static_cast<std::int64_t>(v.size()); };
  all.push_back({names[0], "U8", {count(q.weight), 1}, bytes(q.weight), q.weight.size()});
  if (nested)
    all.push_back({names[1], "U8", {count(q.absmax_codes)}, bytes(q.absmax_codes), q.absmax_codes.size()});
  else
    all.push_back({names[1], "F32", {count(q.absmax)}, bytes(q.absmax), q.absmax.size() * 4});
  all.push_back({names[2], "F32", {16}, bytes(q.quant_map), q.quant_map.size() * 4});
  all.push_back({names[3], "U8", {count(q.quant_state)}, q.quant_state.data(), q.quant_state.size()});
  if (!nested) return;
  all.push_back(
      {names[4], "F32", {count(q.nested_absmax)}, bytes(q.nested_absmax), q.nested_absmax.size() * 4});
  all.push_back({names[5], "F32", {count(q.nested_map)}, bytes(q.nested_map), q.nested_map.size() * 4});
}
// An LLM.int8() matrix of `spec` (stored tensor `stored`, its values in t, on the grid) as its release's
// parts.
void add_bnb8(TensorList& all, StoredData& data, const compiler::ModelSpec& spec, const WeightShape& stored,
              const WeightTensor& t) {
  static const std::uint8_t kRow = kBnbInt8RowFormat;
  const BnbInt8Matrix& q = data.bnb8.emplace_back(
      quantize_bnb_int8(t.data.data(), t.shape[0], t.shape[1], "model " + spec.name + ": " + stored.name));
  const std::vector<std::string> names = bnb8_names(stored);
  all.push_back({names[0], "I8", t.shape, reinterpret_cast<const char*>(q.codes.data()), q.codes.size()});
  all.push_back({names[1], "F32", {q.rows}, reinterpret_cast<const char*>(q.scb.data()), q.scb.size() * 4});
  all.push_back({names[2], "U8", {}, reinterpret_cast<const char*>(&kRow), 1});
}
// A 4-bit matrix of `spec` (stored tensor `stored`, its values in t) as its release's parts (int4.hpp): zero
// 8, power-of-two scales, groups of spec.quant_group (per row: all `cols`) in order.
void add_int4(TensorList& all, StoredData& data, const compiler::ModelSpec& spec, const WeightShape& stored,
              const WeightTensor& t) {
  const std::int64_t rows = t.shape[0], cols = t.shape[1],
                     group = compiler::group_inputs(spec.quant_group, cols);
  const Int4Packed& q = data.int4.emplace_back(pack_int4(
      stored.format, quantize_int4(t.data.data(), rows, cols, "model " + spec.name + ": " + stored.name,
                                   group, compiler::grouped_int_bits(stored.format))));
  const std::vector<std::string> names = int4_names(stored);
  auto shape = [](std::array<std::int64_t, 2> a) { return std::vector<std::int64_t>{a[0], a[1]}; };
  all.push_back({names[0], "I32", shape(int4_qweight_shape(stored.format, rows, cols)),
                 reinterpret_cast<const char*>(q.qweight.data()), q.qweight.size() * 4});
  const bool pack = pack_layout(stored.format);
  all.push_back({names[pack ? 1 : 2], "F16", shape(int4_scales_shape(stored.format, rows, cols, group)),
                 reinterpret_cast<const char*>(q.scales.data()), q.scales.size() * 2});
  if (pack) {
    const std::array<std::int64_t, 2>& held =
        data.shapes.emplace_back(std::array<std::int64_t, 2>{rows, cols});
    all.push_back({names[2], "I64", {2}, reinterpret_cast<const char*>(held.data()), 16});
    return;
  }
  all.push_back({names[1], "I32", shape(int4_qzeros_shape(stored.format, rows, cols, group)),
                 reinterpret_cast<const char*>(q.qzeros.data()), q.qzeros.size() * 4});
  if (!q.g_idx.empty())
    all.push_back(
        {names[3], "I32", {cols}, reinterpret_cast<const char*>(q.g_idx.data()), q.g_idx.size() * 4});
}
// gpt-oss's MXFP4 expert tensor `name`, stored [E, in, out] in t, as its release's NAME_blocks and
// NAME_scales (out-major: each expert's rows of `in` elements, blocks of 32).
void add_mxfp4(TensorList& all, StoredData& data, const std::string& model, const std::string& name,
               const WeightTensor& t) {
  const std::int64_t experts = t.shape[0], in = t.shape[1], out = t.shape[2];
  const std::vector<std::uint16_t> rows = transpose_each(t.data.data(), experts, in, out);  // [E][out][in]
  const Mxfp4Blocks& q =
      data.mxfp4.emplace_back(quantize_mxfp4(rows.data(), experts * out, in, "model " + model + ": " + name));
  all.push_back({name + "_blocks",
                 "U8",
                 {experts, out, in / kMxfp4Block, kMxfp4Block / 2},
                 reinterpret_cast<const char*>(q.blocks.data()),
                 q.blocks.size()});
  all.push_back({name + "_scales",
                 "U8",
                 {experts, out, in / kMxfp4Block},
                 reinterpret_cast<const char*>(q.scales.data()),
                 q.scales.size()});
}
// Every tensor as the checkpoint stores it, in name order: F16, an FP8 matrix's codes and scales, a 4-bit
// matrix's parts, or gpt-oss's MXFP4 experts' blocks and scales.
TensorList checkpoint_tensors(const ModelWeights& weights, StoredData& data) {
  TensorList all;
  data.bound = static_cast<float>(weights.spec.activation_scale_ub);
  for (const StoredTensor& p : storage_plan(weights.spec)) {
    const bool as_is =
        stored_as_is(weights.spec, p) && rope_row_blocks(weights.spec, p.parts[0].name).empty();
    const WeightTensor& t =
        as_is ? weights.get(p.parts[0].name) : data.tensors.emplace_back(stored_form(weights, p));
    if (mxfp4_stored(weights.spec, p.stored.name)) {
      add_mxfp4(all, data, weights.spec.name, p.stored.name, t);
      continue;
    }
    if (int4_stored(p.stored)) {
      add_int4(all, data, weights.spec, p.stored, t);
      continue;
    }
    if (bnb4_stored(p.stored)) {
      add_bnb4(all, data, weights.spec, p.stored, t);
      continue;
    }
    if (bnb8_stored(p.stored)) {
      add_bnb8(all, data, weights.spec, p.stored, t);
      continue;
    }
    if (!fp8_stored(p.stored)) {
      all.push_back(f16_tensor(p.stored.name, t));
      continue;
    }
    if (input_scale_stored(weights.spec, p.stored))
      throw Error(fmt::format(
          "model {}: {}: static activation scales (activation_scheme static) are calibrated on real "
          "activations, which duplex does not keep; expected activation_scheme dynamic to write a checkpoint",
          weights.spec.name, input_scale_name(p.stored)));
    const Fp8Blocks& q = data.fp8.emplace_back(
        quantize_fp8_blocks(t.data.data(), t.shape[0], t.shape[1], stored_grid(p.stored),
                            "model " + weights.spec.name + ": " + p.stored.name));
    all.push_back({p.stored.name, codes_dtype(p.stored), t.shape,
                   reinterpret_cast<const char*>(q.codes.data()), q.codes.size()});
    all.push_back({fp8_scale_name(p.stored), "F32", scale_shape(p.stored),
                   reinterpret_cast<const char*>(q.scales.data()), q.scales.size() * 4});
    if (bound_stored(weights.spec, p.stored))
      all.push_back({bound_name(p.stored), "F32", {1}, reinterpret_cast<const char*>(&data.bound), 4});
  }
  std::sort(all.begin(), all.end(), [](const OutTensor& a, const OutTensor& b) { return a.name < b.name; });
  return all;
}
}  // namespace

void put_on_checkpoint_grid(ModelWeights& weights) {
  for (const StoredTensor& p : storage_plan(weights.spec)) {
    if (!fp8_stored(p.stored) && !int4_stored(p.stored) && !bnb4_stored(p.stored) && !bnb8_stored(p.stored))
      continue;
    WeightTensor t = stored_form(weights, p);
    if (bnb8_stored(p.stored))
      round_to_bnb_int8(t.data.data(), t.shape[0], t.shape[1]);
    else if (bnb4_stored(p.stored))
      round_to_bnb4(t.data.data(), t.shape[0], t.shape[1], p.stored.format);
    else if (int4_stored(p.stored))
      round_to_int4_groups(t.data.data(), t.shape[0], t.shape[1],
                           compiler::group_inputs(weights.spec.quant_group, t.shape[1]),
                           compiler::grouped_int_bits(p.stored.format));
    else
      round_to_fp8_blocks(t.data.data(), t.shape[0], t.shape[1], stored_grid(p.stored));
    ModelWeights parts;
    parts.spec = weights.spec;
    unstack(p, std::move(t), parts);
    for (auto& [name, tensor] : parts.tensors) weights.tensors[name] = std::move(tensor);
  }
}

void write_safetensors(const std::string& path, const ModelWeights& weights) {
  StoredData data;
  write_tensors(path, checkpoint_tensors(weights, data));
}

std::string CheckpointLayout::stored_name(const std::string& model_name) const {
  return prefix + (model_name.starts_with("model.") ? model_prefix + model_name.substr(6) : model_name);
}

namespace {
// The storage plan with every checkpoint name as `layout` stores it (a multimodal checkpoint's language
// model).
std::vector<StoredTensor> prefixed_plan(const compiler::ModelSpec& spec, const CheckpointLayout& layout) {
  std::vector<StoredTensor> plan = storage_plan(spec);
  for (StoredTensor& p : plan) p.stored.name = layout.stored_name(p.stored.name);
  return plan;
}
// Whether tensor `name` is one of the checkpoint's the model does not run (CheckpointLayout).
bool skipped_tensor(const CheckpointLayout& layout, const std::string& name) {
  if (!name.starts_with(layout.prefix)) return true;
  if (name.starts_with(layout.prefix + "model.") && !name.starts_with(layout.prefix + layout.model_prefix))
    return true;
  return std::any_of(layout.extra.begin(), layout.extra.end(),
                     [&](const std::string& extra) { return name.starts_with(extra); });
}
// Notes in w.source how many tensors reading skipped.
void note_skipped(ModelWeights& w, const CheckpointLayout& layout, std::size_t skipped) {
  const std::string under = layout.model_prefix != "model." ? layout.model_prefix : layout.prefix;
  if (skipped > 0)
    w.source = fmt::format("{} ({}{} other tensors skipped)", w.source,
                           under.empty() ? "" : "the language model under " + under + "; ", skipped);
}
// Whether the checkpoint at `tensors` (a .safetensors file or an index) holds a tensor named under `prefix`:
// from the index's weight_map, or the file's header alone.
bool holds_tensor_under(const std::filesystem::path& tensors, const std::string& prefix) {
  nlohmann::json names;
  if (tensors.string().ends_with(".index.json")) {
    const nlohmann::json index = nlohmann::json::parse(read_file(tensors.string()), nullptr, false);
    if (index.is_object() && index.contains("weight_map") && index["weight_map"].is_object())
      names = index["weight_map"];
  } else {
    std::ifstream in(tensors, std::ios::binary);
    std::uint64_t n = 0;
    if (in.read(reinterpret_cast<char*>(&n), 8) && n < (std::uint64_t{1} << 30)) {
      std::string header(static_cast<std::size_t>(n), '\0');
      if (in.read(header.data(), static_cast<std::streamsize>(n)))
        names = nlohmann::json::parse(header, nullptr, false);
    }
  }
  if (!names.is_object()) return false;  // the reader reports a malformed file or index
  for (const auto& [name, value] : names.items())
    if (name.starts_with(prefix)) return true;
  return false;
}
}  // namespace

ModelWeights read_safetensors(const std::string& path, const compiler::ModelSpec& spec,
                              const CheckpointLayout& layout) {
  const SafetensorsFile f = open_safetensors(path);
  ModelWeights w;
  w.spec = spec;
  w.source = path;
  std::set<std::string> wanted, converted;
  for (const StoredTensor& p : prefixed_plan(spec, layout)) {
    const std::vector<std::string> names = stored_names(spec, p.stored);
    wanted.insert(names.begin(), names.end());
    unstack(p,
            read_stored(std::vector<const SafetensorsFile*>(names.size(), &f), p, spec, converted,
                        w.input_scales),
            w);
  }
  std::size_t skipped = 0;
  for (const auto& [name, value] : f.header.items()) {
    if (name == "__metadata__" || wanted.contains(name)) continue;
    if (skipped_tensor(layout, name)) {
      ++skipped;
      continue;
    }
    throw Error(fmt::format("{}: unexpected tensor {} (model {} has no such weight)", path, name, spec.name));
  }
  note_conversions(w, converted);
  note_skipped(w, layout, skipped);
  return w;
}

ModelWeights read_sharded_safetensors(const std::string& index_path, const compiler::ModelSpec& spec,
                                      const CheckpointLayout& layout) {
  namespace fs = std::filesystem;
  const nlohmann::json index = nlohmann::json::parse(read_file(index_path), nullptr, false);
  if (index.is_discarded() || !index.is_object())
    throw Error(fmt::format(
        "{}: not a JSON object; expected a safetensors index ({{\"weight_map\": {{tensor: file}}}})",
        index_path));
  if (!index.contains("weight_map") || !index["weight_map"].is_object())
    throw Error(fmt::format("{}: weight_map: missing or not an object; expected {{tensor name: shard file}}",
                            index_path));
  std::map<std::string, std::string> where;  // tensor -> shard file
  for (const auto& [name, file] : index["weight_map"].items()) {
    if (!file.is_string() || file.get<std::string>().empty() ||
        fs::path(file.get<std::string>()).filename().string() != file.get<std::string>())
      throw Error(fmt::format("{}: weight_map.{}: {} is not a file name; expected a shard beside the index",
                              index_path, name, file.dump()));
    where[name] = file.get<std::string>();
  }
  const std::vector<StoredTensor> plan = prefixed_plan(spec, layout);
  std::set<std::string> wanted;
  for (const StoredTensor& p : plan)
    for (const std::string& name : stored_names(spec, p.stored)) {
      wanted.insert(name);
      if (!where.contains(name) && !optional_part(p.stored, name))
        throw Error(fmt::format(
            "{}: weight_map: tensor {} is missing (model {} needs it{})", index_path, name, spec.name,
            name == p.stored.name               ? ", shape " + shape_text(p.stored.shape)
            : mxfp4_stored(spec, p.stored.name) ? ": MXFP4"
            : int4_stored(p.stored)             ? ": 4-bit " + p.stored.name
            : bnb4_stored(p.stored) ? fmt::format(": {} {}", bnb4_kind(p.stored.format), p.stored.name)
            : bnb8_stored(p.stored) ? ": LLM.int8() " + p.stored.name
            : name.ends_with(".input_scale_ub") ? ": fbgemm's activation scale bound"
                                                : ": FP8 scales"));
    }
  std::size_t skipped = 0;  // outside the language model, in files that may not be opened
  for (const auto& [name, file] : where) {
    if (wanted.contains(name)) continue;
    if (skipped_tensor(layout, name)) {
      ++skipped;
      continue;
    }
    throw Error(fmt::format("{}: weight_map: unexpected tensor {} (model {} has no such weight)", index_path,
                            name, spec.name));
  }
  std::map<std::string, std::vector<std::size_t>> by_file;  // shard file -> indices into plan
  for (std::size_t i = 0; i < plan.size(); ++i)
    by_file[where.at(stored_names(spec, plan[i].stored)[0])].push_back(i);
  ModelWeights w;
  w.spec = spec;
  w.source = index_path;
  std::set<std::string> converted;
  for (const auto& [file, list] : by_file) {
    const SafetensorsFile f = open_safetensors((fs::path(index_path).parent_path() / file).string());
    for (std::size_t i : list) {
      // A quantized tensor's parts may lie in other shards: each opened once for it.
      std::map<std::string, SafetensorsFile> others;
      std::vector<const SafetensorsFile*> files;
      for (const std::string& name : stored_names(spec, plan[i].stored)) {
        if (!where.contains(name)) {  // an optional part the index does not map: read as absent from f
          files.push_back(&f);
          continue;
        }
        const std::string& in = where.at(name);
        if (in != file && !others.contains(in))
          others.emplace(in, open_safetensors((fs::path(index_path).parent_path() / in).string()));
        files.push_back(in == file ? &f : &others.at(in));
      }
      unstack(plan[i], read_stored(files, plan[i], spec, converted, w.input_scales), w);
    }
    for (const auto& [name, value] : f.header.items())
      if (name != "__metadata__" && (!where.contains(name) || where.at(name) != file))
        throw Error(fmt::format("{}: unexpected tensor {} ({} does not map it to this shard)", f.path, name,
                                index_path));
  }
  note_conversions(w, converted);
  note_skipped(w, layout, skipped);
  return w;
}

namespace {

// config.json's rope_scaling: linear, llama3, longrope or yarn (HF rope_type, or its older key type; "su" is
// longrope's old name, "default" plain RoPE). Any other kind, or a field missing or out of range, is an error
// naming rope_scaling.<field>. LongRoPE's attention factor: Phi-3.5-MoE's short_mscale, else
// attention_factor, else HF's sqrt(1 + ln(max / original) / ln(original)) (1 when max <= original), where
// original is the config's original_max_position_embeddings (top level, else rope_scaling's, else
// max_position_embeddings).
RopeScaling rope_scaling(const std::string& config, const nlohmann::json& j) {
  const nlohmann::json& r = j["rope_scaling"];
  auto fail = [&](const std::string& key, const std::string& got, const std::string& expected) {
    throw Error(fmt::format("{}: rope_scaling{}: {} is not what functional emulation computes; expected {}",
                            config, key.empty() ? "" : "." + key, got, expected));
  };
  if (!r.is_object()) fail("", r.dump(), "null or an object");
  const char* type_key = r.contains("rope_type") ? "rope_type" : "type";
  const std::string type = r.contains(type_key) && r[type_key].is_string() ? r[type_key] : "";
  auto number = [&](const char* key) {
    if (!r.contains(key) || !r[key].is_number() || !(r[key].get<double>() > 0) ||
        !std::isfinite(r[key].get<double>()))
      fail(key, r.contains(key) ? r[key].dump() : "missing", "a positive number");
    return r[key].get<double>();
  };
  auto factors = [&](const char* key, std::size_t count) {
    std::vector<double> out;
    const bool list = r.contains(key) && r[key].is_array();
    if (list)
      for (const auto& v : r[key]) {
        if (!v.is_number() || !(v.get<double>() > 0) || !std::isfinite(v.get<double>())) break;
        out.push_back(v.get<double>());
      }
    if (!list || out.size() != count || r[key].size() != count)
      fail(key, r.contains(key) ? r[key].dump() : "missing",
           fmt::format(
               "a list of {} positive numbers (one per rotated pair: head_dim x partial_rotary_factor / 2)",
               count));
    return out;
  };
  auto top_number = [&](const char* key) {
    return j.contains(key) && j[key].is_number() && j[key].get<double>() > 0 ? j[key].get<double>() : 0.0;
  };
  // The dimensions of a head RoPE rotates, as HF derives them: int(head_dim (or hidden_size /
  // num_attention_heads) x partial_rotary_factor); 0 when the config states no whole head_dim.
  auto rotated_dims = [&] {
    const double heads = top_number("num_attention_heads");
    const double head_dim = top_number("head_dim") > 0 ? top_number("head_dim")
                            : heads > 0                ? top_number("hidden_size") / heads
                                                       : 0.0;
    const double partial =
        top_number("partial_rotary_factor") > 0 ? top_number("partial_rotary_factor") : 1.0;
    return head_dim >= 1 && head_dim == std::floor(head_dim) ? std::floor(head_dim * partial) : 0.0;
  };
  RopeScaling s;
  if (type == "default") return s;
  const bool deepseek =
      j.contains("model_type") && (j["model_type"] == "deepseek_v2" || j["model_type"] == "deepseek_v3");
  if (deepseek && type != "yarn")
    fail(type_key, r.contains(type_key) ? r[type_key].dump() : "missing",
         "\"yarn\" (DeepSeek's scaled RoPE)");
  if (type == "yarn") {
    // gpt-oss states truncate (false: the ramp's ends not rounded). DeepSeek states its attention factors
    // by mscale and mscale_all_dim (both, or neither); the others by attention_factor.
    const char* kOwn = deepseek ? "absent (DeepSeek's YaRN states mscale and mscale_all_dim)"
                                : "absent (YaRN as Qwen states it; mscale is DeepSeek's)";
    for (const char* key : deepseek ? std::vector<const char*>{"attention_factor", "truncate"}
                                    : std::vector<const char*>{"mscale", "mscale_all_dim"})
      if (r.contains(key) && !r[key].is_null()) fail(key, r[key].dump(), kOwn);
    if (r.contains("truncate") && !r["truncate"].is_null()) {
      if (!r["truncate"].is_boolean()) fail("truncate", r["truncate"].dump(), "true or false");
      s.truncate = r["truncate"].get<bool>();
    }
    s.kind = RopeScaling::Kind::kYarn;
    s.factor = number("factor");
    // source: DeepSeek's modeling code defaults original_max_position_embeddings to 4096.
    s.original_max_position_embeddings = r.contains("original_max_position_embeddings")
                                             ? number("original_max_position_embeddings")
                                         : deepseek ? 4096.0
                                                    : top_number("max_position_embeddings");
    if (!(s.original_max_position_embeddings > 0))
      fail("original_max_position_embeddings", "missing", "a positive number (or max_position_embeddings)");
    s.attention_factor = r.contains("attention_factor") && !r["attention_factor"].is_null()
                             ? number("attention_factor")
                             : 0.1 * std::log(s.factor) + 1.0;
    if (deepseek) {
      const bool has_m = r.contains("mscale") && !r["mscale"].is_null(),
                 has_all = r.contains("mscale_all_dim") && !r["mscale_all_dim"].is_null();
      if (has_m != has_all)
        fail(has_m ? "mscale_all_dim" : "mscale", "missing",
             "both mscale and mscale_all_dim, or neither (where DeepSeek's and HF's factors agree)");
      if (has_m) {
        s.mscale = number("mscale");
        s.mscale_all_dim = number("mscale_all_dim");
        // yarn_get_mscale(factor, x) = 0.1 x ln(factor) + 1 (1 for factor <= 1)
        auto m = [&](double x) { return s.factor <= 1.0 ? 1.0 : 0.1 * x * std::log(s.factor) + 1.0; };
        s.attention_factor = m(s.mscale) / m(s.mscale_all_dim);
      }
    }
    if (r.contains("beta_fast") && !r["beta_fast"].is_null()) s.beta_fast = number("beta_fast");
    if (r.contains("beta_slow") && !r["beta_slow"].is_null()) s.beta_slow = number("beta_slow");
    return s;
  }
  if (type == "longrope" || type == "su") {
    // One factor per rotated pair.
    const double rotary_dims = rotated_dims();
    if (!(rotary_dims >= 2))
      fail("", r.dump(), "longrope with the head_dim (or hidden_size and num_attention_heads) stated");
    const auto rotary = static_cast<std::size_t>(rotary_dims);
    s.kind = RopeScaling::Kind::kLongRope;
    s.short_factor = factors("short_factor", rotary / 2);
    s.long_factor = factors("long_factor", rotary / 2);
    const double max_positions = top_number("max_position_embeddings");
    s.original_max_position_embeddings =
        top_number("original_max_position_embeddings") > 0 ? top_number("original_max_position_embeddings")
        : r.contains("original_max_position_embeddings")   ? number("original_max_position_embeddings")
                                                           : max_positions;
    if (!(s.original_max_position_embeddings > 0))
      fail("original_max_position_embeddings", "missing",
           "a positive number (here, at the top level, or max_position_embeddings)");
    const bool phimoe = j.contains("model_type") && j["model_type"] == "phimoe";
    if (phimoe && r.contains("short_mscale")) {
      s.attention_factor = number("short_mscale");
    } else if (r.contains("attention_factor")) {
      s.attention_factor = number("attention_factor");
    } else {
      // HF: factor = max_position_embeddings / original; without it the config states no factor at all.
      if (!(max_positions > 0))
        fail("", r.dump(),
             "longrope with its attention factor (attention_factor, or Phi-3.5-MoE's short_mscale) or the "
             "config's max_position_embeddings to derive it from");
      const double factor = max_positions / s.original_max_position_embeddings;
      s.attention_factor =
          factor <= 1.0 ? 1.0
                        : std::sqrt(1.0 + std::log(factor) / std::log(s.original_max_position_embeddings));
    }
    // Beyond the original context: Phi-3.5-MoE's long_mscale; the others keep the one factor.
    s.long_attention_factor =
        phimoe && r.contains("long_mscale") ? number("long_mscale") : s.attention_factor;
    return s;
  }
  if (type == "dynamic") {
    // HF _compute_dynamic_ntk_parameters: against the config's max_position_embeddings (not rope_scaling's).
    if (!(rotated_dims() >= 4))
      fail("", r.dump(), "dynamic with at least 4 rotated dimensions per head (its exponent is d / (d - 2))");
    s.kind = RopeScaling::Kind::kDynamic;
    s.factor = number("factor");
    s.original_max_position_embeddings = top_number("max_position_embeddings");
    if (!(s.original_max_position_embeddings > 0))
      fail("", r.dump(), "dynamic with the config's max_position_embeddings (the context it scales beyond)");
    return s;
  }
  if (type == "linear") {
    s.kind = RopeScaling::Kind::kLinear;
    s.factor = number("factor");
  } else if (type == "llama3") {
    s.kind = RopeScaling::Kind::kLlama3;
    s.factor = number("factor");
    s.low_freq_factor = number("low_freq_factor");
    s.high_freq_factor = number("high_freq_factor");
    s.original_max_position_embeddings = number("original_max_position_embeddings");
    if (!(s.high_freq_factor > s.low_freq_factor))
      fail("high_freq_factor", r["high_freq_factor"].dump(), "a number above low_freq_factor");
  } else {
    fail(type_key, r.contains(type_key) ? r[type_key].dump() : "missing",
         "\"linear\", \"llama3\", \"longrope\", \"yarn\", \"dynamic\" or \"default\"");
  }
  return s;
}

}  // namespace

namespace {
// The multimodal model_types whose language model functional emulation runs, and that model's type.
std::string text_model_type(const nlohmann::json& config) {
  if (!config.is_object() || !config.contains("model_type") || !config["model_type"].is_string()) return "";
  const std::string type = config["model_type"];
  return type == "gemma3" ? "gemma3_text" : type == "llama4" ? "llama4_text" : "";
}

// config_numerics of the config object j; errors name `config`.
ModelNumerics numerics_of(const std::string& config, const nlohmann::json& j);
}  // namespace

ModelNumerics config_numerics(const std::string& config) {
  const nlohmann::json j = nlohmann::json::parse(read_file(config), nullptr, false);
  const std::string text_type = text_model_type(j);
  if (!text_type.empty() && j.contains("text_config") && j["text_config"].is_object()) {
    nlohmann::json text = j["text_config"];
    text["model_type"] = text_type;
    return numerics_of(config + " (text_config)", text);
  }
  return numerics_of(config, j);
}

namespace {
// The rms_norm_eps of a config.json that leaves it out: the default of its model_type's transformers config
// class (source: transformers configuration_*.py): 1e-6 for the Llama, Mistral, Qwen, Gemma and DeepSeek
// families, else 1e-5 (Mixtral, Phi-3, PhiMoE, StarCoder2's norm_epsilon, OLMoE, gpt-oss, Llama 4; OPT's and
// DBRX's LayerNorms, which config.json does not state).
float default_norm_eps(const nlohmann::json& j) {
  static const std::set<std::string> k1e6 = {"llama",       "mistral",     "qwen2",      "qwen3",
                                             "qwen2_moe",   "qwen3_moe",   "gemma",      "gemma2",
                                             "gemma3_text", "deepseek_v2", "deepseek_v3"};
  return j.contains("model_type") && j["model_type"].is_string() &&
                 k1e6.contains(j["model_type"].get<std::string>())
             ? 1e-6f
             : 1e-5f;
}

ModelNumerics numerics_of(const std::string& config, const nlohmann::json& j) {
  ModelNumerics n;
  if (!j.is_object()) return n;  // compiler::load_model has already refused it
  n.norm_eps = default_norm_eps(j);
  auto refuse = [&](const char* key, const std::string& expected) {
    throw Error(fmt::format("{}: {}: {} is not what functional emulation computes; expected {}", config, key,
                            j[key].dump(), expected));
  };
  auto number = [&](const char* key, float& out) {
    if (!j.contains(key) || j[key].is_null()) return;
    if (!j[key].is_number() || !(j[key].get<double>() > 0)) refuse(key, "a positive number");
    out = j[key].get<float>();
  };
  number("rms_norm_eps", n.norm_eps);
  number("norm_epsilon", n.norm_eps);  // StarCoder2
  number("rope_theta", n.rope_theta);
  if (j.contains("model_type") && j["model_type"] == "dbrx" && j.contains("attn_config") &&
      j["attn_config"].is_object() && j["attn_config"].contains("rope_theta") &&
      !j["attn_config"]["rope_theta"].is_null()) {  // DBRX states it in attn_config
    const nlohmann::json& theta = j["attn_config"]["rope_theta"];
    if (!theta.is_number() || !(theta.get<double>() > 0))
      throw Error(
          fmt::format("{}: attn_config.rope_theta: {} is not what functional emulation computes; "
                      "expected a positive number",
                      config, theta.dump()));
    n.rope_theta = theta.get<float>();
  }
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) n.rope_scaling = rope_scaling(config, j);
  // Partial RoPE: Phi-3's code (Phi-4-mini) rotates int(head_dim x factor) of each head (the importer's
  // rotary_dim); the other families' HF code rotates the whole head whatever the field says.
  const bool phi3 = j.contains("model_type") && j["model_type"] == "phi3";
  if (!phi3 && j.contains("partial_rotary_factor") &&
      !(j["partial_rotary_factor"].is_number() && j["partial_rotary_factor"].get<double>() == 1.0))
    refuse("partial_rotary_factor", "1 (RoPE over the whole head; Phi-3's code alone rotates a part)");
  // The FFN's activation (hidden_act, OPT's activation_function): every one the importer reads is emulated
  // (the Logic-PIM's activation unit has each in gated and added form).
  const bool gemma = j.contains("model_type") && (j["model_type"] == "gemma" || j["model_type"] == "gemma2" ||
                                                  j["model_type"] == "gemma3_text");
  if (!gemma && j.contains("hidden_activation") && !j["hidden_activation"].is_null())
    refuse("hidden_activation", "absent (only Gemma's FFN reads it; the others' activation is hidden_act)");
  if (j.contains("mlp_bias") && j["mlp_bias"] != false)
    refuse("mlp_bias", "false (a gated FFN without biases; biased FFNs are two-matrix: OPT, StarCoder2)");
  if (j.contains("clip_qkv") && !j["clip_qkv"].is_null()) refuse("clip_qkv", "null (q, k, v unclipped)");
  const std::string type = j.contains("model_type") && j["model_type"].is_string() ? j["model_type"] : "";
  if (type == "gpt_oss") {  // GptOssConfig's default base
    n.rope_theta = 150000.0f;
    number("rope_theta", n.rope_theta);
  }
  if (type == "llama4_text") {  // Llama4TextConfig's default base
    n.rope_theta = 500000.0f;
    number("rope_theta", n.rope_theta);
  }
  if (type == "gemma3_text") {
    // Gemma 3: the windowed layers rotate with rope_local_base_freq, unscaled; the full ones with rope_theta
    // (Gemma3TextConfig's default 1e6) and rope_scaling.
    n.rope_theta = 1e6f;
    number("rope_theta", n.rope_theta);
    n.local_rope_theta = 10000.0f;
    number("rope_local_base_freq", n.local_rope_theta);
    if (rope_depends_on_length(n))
      refuse("rope_scaling",
             "linear, llama3 or yarn with Gemma 3 (a length-dependent RoPE on its full layers "
             "is not emulated)");
  }
  if (type == "deepseek_v2" || type == "deepseek_v3") {
    if (j.contains("attention_bias") && j["attention_bias"] != false)
      refuse("attention_bias", "false (MLA's projections without biases)");
    if (j.contains("rope_interleave") && j["rope_interleave"] != true)
      refuse("rope_interleave", "true (DeepSeek's checkpoints order each RoPE pair interleaved)");
    // DeepSeek's V2 code renormalises without the routed scaling, HF's DeepseekV2Moe scales without
    // renormalising: the two disagree, so neither is guessed.
    if (type == "deepseek_v2" && j.contains("norm_topk_prob") && j["norm_topk_prob"] == true)
      refuse("norm_topk_prob",
             "false (DeepSeek-V2's own code and HF's weigh renormalised experts differently)");
  }
  return n;
}
}  // namespace

ModelWeights load_checkpoint(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  fs::path tensors = p;
  if (fs::is_directory(p)) {
    tensors = p / "model.safetensors";
    if (!fs::exists(tensors) && fs::exists(p / "model.safetensors.index.json"))
      tensors = p / "model.safetensors.index.json";
    if (!fs::exists(tensors))
      throw Error(
          fmt::format("{}: neither model.safetensors nor model.safetensors.index.json is there; expected a "
                      "HF checkpoint directory",
                      path));
  }
  const fs::path config = tensors.parent_path() / "config.json";
  if (!fs::exists(config))
    throw Error(fmt::format("{}: no config.json beside it ({} is missing); expected a HF checkpoint directory",
                            tensors.string(), config.string()));
  const compiler::ModelSpec spec = compiler::load_model(config.string());
  const ModelNumerics numerics = config_numerics(config.string());  // before reading the tensors
  check_weights_fit(spec, host_memory_bytes());
  const nlohmann::json j = nlohmann::json::parse(read_file(config.string()), nullptr, false);
  CheckpointLayout layout;
  if (!text_model_type(j).empty()) {  // the hub's releases, or transformers >= 4.52's saves
    if (holds_tensor_under(tensors, "model.language_model.")) {
      layout.model_prefix = "model.language_model.";
    } else {
      layout.prefix = "language_model.";
    }
  }
  // DeepSeek's multi-token-prediction layers (num_nextn_predict_layers, read by the compiler as mtp_layers).
  for (int i = 0; i < spec.mtp_layers; ++i)
    layout.extra.push_back(fmt::format("model.layers.{}.", spec.layers + i));
  ModelWeights w = tensors.string().ends_with(".index.json")
                       ? read_sharded_safetensors(tensors.string(), spec, layout)
                       : read_safetensors(tensors.string(), spec, layout);
  w.numerics = numerics;
  return w;
}

namespace {
std::string family_type(const compiler::ModelSpec& m);
}  // namespace

std::string hf_model_type(const compiler::ModelSpec& m) {
  const std::string type = family_type(m);
  if (m.rotary_dim != 0 && type != "phi3")
    throw Error(
        fmt::format("model {}: RoPE over {} of each head's {} elements is stated by Phi-3's config "
                    "(partial_rotary_factor) alone, but the model is otherwise {}; no HuggingFace "
                    "architecture states it",
                    m.name, m.rotary_dim, m.head_dim, type));
  return type;
}

namespace {
std::string family_type(const compiler::ModelSpec& m) {
  using compiler::QkNorm;
  // DeepSeek: MLA under DeepSeek names, RMSNorm, gated SiLU FFNs, the first layers dense, DeepSeek's routers.
  if (m.attention == compiler::AttentionKind::kMla || m.weight_naming == compiler::WeightNaming::kDeepSeek) {
    const bool fits =
        m.attention == compiler::AttentionKind::kMla &&
        m.weight_naming == compiler::WeightNaming::kDeepSeek && m.norm == compiler::NormKind::kRmsNorm &&
        m.norm_weight_offset == 0.0 && !m.scale_embedding && m.ffn_kind == compiler::FfnKind::kGated &&
        m.activation == compiler::Activation::kSilu && m.learned_positions == 0 && m.sliding_window == 0 &&
        !m.lm_head_bias && !m.shared_expert_gate && m.dense_layers.empty() && m.moe_every == 1;
    if (fits && m.is_moe() && m.router == compiler::Router::kNoAuxTc) return "deepseek_v3";
    if (fits && m.is_moe() && !m.router_renormalize &&
        (m.router == compiler::Router::kSoftmaxTopK || m.router == compiler::Router::kGroupLimited))
      return "deepseek_v2";
    throw Error(fmt::format(
        "model {}: MLA and DeepSeek's names are DeepSeek-V2 / V3's, but the model differs from them (they "
        "have both, RMSNorm, gated SiLU FFNs, the first layers dense and the rest MoE, and route greedy or "
        "group-limited without renormalising (V2) or by noaux_tc (V3)); no HuggingFace architecture states "
        "it",
        m.name));
  }
  const bool no_norm = m.qk_norm == QkNorm::kNone, head_norm = m.qk_norm == QkNorm::kPerHead;
  const bool all_bias = m.qkv_bias == m.o_bias;  // attention_bias: all four projections or none
  const bool every_layer_moe = m.dense_layers.empty() && m.moe_every == 1 && m.first_moe_layer == 0;
  // gpt-oss: its names; every layer MoE with biased gated experts under its clamped SwiGLU, a biased router
  // whose top-k logits are softmaxed, attention sinks, RMSNorm; sinks, a router bias and the clamped SwiGLU
  // are gpt-oss's alone.
  const bool gpt_oss_features =
      m.attn_sinks || m.router_bias || m.activation == compiler::Activation::kSwigluOai;
  if (m.weight_naming == compiler::WeightNaming::kGptOss || gpt_oss_features) {
    if (m.weight_naming == compiler::WeightNaming::kGptOss && m.is_moe() && every_layer_moe &&
        m.norm == compiler::NormKind::kRmsNorm && m.norm_weight_offset == 0.0 && !m.scale_embedding &&
        m.ffn_kind == compiler::FfnKind::kGated && m.activation == compiler::Activation::kSwigluOai &&
        m.mlp_bias && m.router_bias && m.attn_sinks && no_norm && all_bias &&
        m.router == compiler::Router::kSoftmaxTopK && m.router_renormalize && m.routed_scaling == 1.0 &&
        m.shared_experts == 0 && !m.lm_head_bias && m.learned_positions == 0 && !m.post_norms &&
        m.attn_softcap == 0 && m.final_softcap == 0 && m.query_pre_attn_scalar == 0 && m.clip_qkv == 0)
      return "gpt_oss";
    throw Error(fmt::format(
        "model {}: attention sinks, a router bias and the clamped SwiGLU are gpt-oss's, but the model "
        "differs "
        "from it (gpt-oss's names, every layer MoE with biased gated experts under swiglu_oai, a biased "
        "softmax top-k router renormalised, sinks, RMSNorm, attention biases on all four projections or "
        "none); no HuggingFace architecture states it",
        m.name));
  }
  // Llama 4: its names; RMSNorm, gated FFNs without biases, MoE layers (every moe_every-th, or all but the
  // dense_layers) each with one shared expert as wide as a routed one, routed by the sigmoid of the top-k
  // logits scaling the experts' inputs; no attention bias, q / k L2-normed or not, NoPE layers, chunked
  // attention, temperature tuning. Those five are Llama 4's alone.
  const bool llama4_features = m.attention_chunk > 0 || !m.nope_layers.empty() || m.qk_norm == QkNorm::kL2 ||
                               m.router == compiler::Router::kSigmoidTopK || m.expert_input_scaled ||
                               m.attn_temperature_floor > 0;
  if (m.weight_naming == compiler::WeightNaming::kLlama4 || llama4_features) {
    const bool moe_fits =
        !m.is_moe() ||
        (m.router == compiler::Router::kSigmoidTopK && m.expert_input_scaled && !m.router_renormalize &&
         m.routed_scaling == 1.0 && m.shared_experts == 1 && m.shared_expert_ffn == m.expert_ffn &&
         !m.shared_expert_gate && m.first_moe_layer == 0 && (m.dense_layers.empty() || m.moe_every == 1));
    if (m.weight_naming == compiler::WeightNaming::kLlama4 && moe_fits &&
        m.norm == compiler::NormKind::kRmsNorm && m.norm_weight_offset == 0.0 && !m.scale_embedding &&
        m.ffn_kind == compiler::FfnKind::kGated && !m.mlp_bias && !m.qkv_bias && !m.o_bias &&
        (no_norm || m.qk_norm == QkNorm::kL2) && !m.lm_head_bias && m.learned_positions == 0 &&
        !m.post_norms && m.attn_softcap == 0 && m.final_softcap == 0 && m.query_pre_attn_scalar == 0 &&
        m.clip_qkv == 0 && m.sliding_window == 0)
      return "llama4_text";
    throw Error(fmt::format(
        "model {}: chunked attention, NoPE layers, the L2 q / k norm, temperature tuning and sigmoid routing "
        "of the experts' inputs are Llama 4's, but the model differs from it (Llama 4's names, RMSNorm, "
        "gated FFNs without biases, MoE layers with one shared expert as wide as a routed one and sigmoid "
        "top-k routing scaling the experts' inputs, no attention bias, q / k norm l2 or none, no window); "
        "no HuggingFace architecture states it",
        m.name));
  }
  const bool layer_norm = m.norm == compiler::NormKind::kLayerNorm;
  // DBRX: its names, LayerNorm without a bias, gated FFNs (any activation: ffn_act_fn) in every layer MoE,
  // softmax top-k routing (renormalised or not), GQA with head_dim = hidden / heads and no bias, RoPE; the
  // clamp of q, k and v and a LayerNorm without its bias are DBRX's alone.
  if (m.weight_naming == compiler::WeightNaming::kDbrx) {
    if (m.is_moe() && every_layer_moe && layer_norm && !m.norm_bias && m.norm_weight_offset == 0.0 &&
        !m.scale_embedding && m.ffn_kind == compiler::FfnKind::kGated && no_norm && !m.qkv_bias &&
        !m.o_bias && m.router == compiler::Router::kSoftmaxTopK && m.routed_scaling == 1.0 &&
        m.shared_experts == 0 && !m.lm_head_bias && m.learned_positions == 0 && m.sliding_window == 0 &&
        m.head_dim * m.heads == m.hidden)
      return "dbrx";
    throw Error(fmt::format(
        "model {}: DBRX's names, but the model differs from DBRX (LayerNorm without a bias, gated experts "
        "in every layer, softmax top-k routing, no bias, no q / k norm, head_dim x heads = hidden, RoPE, "
        "no window); no HuggingFace architecture states it",
        m.name));
  }
  if (m.clip_qkv > 0 || (layer_norm && !m.norm_bias))
    throw Error(
        fmt::format("model {}: {} is DBRX's alone, but the model has another family's names ({}); "
                    "expected weight_naming: dbrx",
                    m.name, m.clip_qkv > 0 ? "clip_qkv" : "a LayerNorm without a bias",
                    compiler::weight_naming_name(m.weight_naming)));
  // Sliding windows: Mistral and Mixtral window every layer (sliding_window); the Qwen families window the
  // layers layer_types names; Llama and OLMoE have none.
  const bool windowed = m.sliding_window > 0, all_windowed = windowed && m.windowed_layers() == m.layers;
  const bool plain = no_norm && !m.qkv_bias && !m.o_bias;
  // The two-matrix LayerNorm families: all their projections biased alike, MHA (OPT) or GQA (StarCoder2) with
  // head_dim = hidden / heads.
  const bool two_matrix = m.ffn_kind == compiler::FfnKind::kTwoMatrix;
  const bool all_biased_alike = m.qkv_bias == m.o_bias && m.o_bias == m.mlp_bias;
  const bool split_heads = m.head_dim * m.heads == m.hidden;
  // Gemma's norms scale by (1 + weight) and its embedding rows by sqrt(hidden); no other family does either.
  const bool gemma_norms = m.norm_weight_offset == 1.0 && m.scale_embedding,
             standard_norms = m.norm_weight_offset == 0.0 && !m.scale_embedding;
  // Phi-3.5-MoE: Mixtral's layout and names with LayerNorm, attention biases, the sparsemixer router and an
  // optional LM-head bias; no other family has the last two.
  const bool sparsemixer = m.router == compiler::Router::kSparseMixer;
  if (m.is_moe() && sparsemixer && m.weight_naming == compiler::WeightNaming::kMixtral && !two_matrix &&
      layer_norm && standard_norms && no_norm && all_bias && !m.mlp_bias && m.learned_positions == 0 &&
      split_heads && m.shared_experts == 0 && every_layer_moe && !windowed)
    return "phimoe";
  if (sparsemixer || m.lm_head_bias)
    throw Error(
        fmt::format("model {}: the sparsemixer router and an LM-head bias are Phi-3.5-MoE's, but the "
                    "model differs from it (it has Mixtral's names, LayerNorm, attention biases on "
                    "all four projections or none, head_dim x heads = hidden, every layer MoE, no "
                    "shared experts, no window); no HuggingFace architecture states it",
                    m.name));
  // Gemma 2: Gemma's with a norm after each block, soft-capping and query_pre_attn_scalar (each optional in
  // its config), windows on any layers (layer_types); Gemma 3: Gemma 2's with q / k norms per head. No other
  // family has these.
  const bool gemma2_features =
      m.post_norms || m.attn_softcap > 0 || m.final_softcap > 0 || m.query_pre_attn_scalar > 0;
  const bool gemma_base = m.weight_naming == compiler::WeightNaming::kMixtral && !m.is_moe() && !two_matrix &&
                          !layer_norm && gemma_norms && all_bias && !m.mlp_bias && m.learned_positions == 0;
  const bool gemma_like = gemma_base && no_norm;
  if (gemma_like && m.post_norms) return "gemma2";
  if (gemma_base && head_norm && m.post_norms) return "gemma3_text";
  if (gemma2_features)
    throw Error(fmt::format(
        "model {}: a norm after each block, soft-capping and query_pre_attn_scalar are Gemma 2's, but the "
        "model differs from it (Gemma's names, GQA, RMSNorm by (1 + weight), a scaled embedding, a dense "
        "gated FFN, attention biases on all four projections or none, a norm after each block); no "
        "HuggingFace architecture states it",
        m.name));
  if (gemma_like && !windowed) return "gemma";
  if (standard_norms && m.weight_naming == compiler::WeightNaming::kOpt && !m.is_moe() && two_matrix &&
      layer_norm && no_norm && all_biased_alike && split_heads && m.kv_heads == m.heads &&
      m.learned_positions > 2 && m.position_offset == 2 && !windowed)
    return "opt";
  if (standard_norms && m.weight_naming == compiler::WeightNaming::kStarcoder2 && !m.is_moe() && two_matrix &&
      layer_norm && no_norm && all_biased_alike && split_heads && m.learned_positions == 0 &&
      (!windowed || all_windowed))
    return "starcoder2";
  if (standard_norms && m.weight_naming == compiler::WeightNaming::kPhi3 && !m.is_moe() && !two_matrix &&
      !layer_norm && plain && !m.mlp_bias && m.learned_positions == 0 && (!windowed || all_windowed))
    return "phi3";
  const bool llama_like = standard_norms && !two_matrix && !layer_norm && m.learned_positions == 0 &&
                          !m.mlp_bias &&
                          (m.weight_naming == compiler::WeightNaming::kMixtral ||
                           m.weight_naming == compiler::WeightNaming::kQwenMoe);
  if (!llama_like) {
    // no family below has this model's FFN, norms, positions or names
  } else if (!m.is_moe()) {
    if (head_norm && all_bias) return "qwen3";
    if (no_norm && m.qkv_bias && !m.o_bias) return "qwen2";
    if (plain && all_windowed) return "mistral";
    if (no_norm && all_bias && !windowed) return "llama";
  } else if (m.weight_naming == compiler::WeightNaming::kMixtral) {
    if (plain && m.router_renormalize && m.shared_experts == 0 && every_layer_moe &&
        (!windowed || all_windowed))
      return "mixtral";
  } else if (m.first_moe_layer == 0) {
    if (no_norm && m.qkv_bias && !m.o_bias && m.shared_experts <= 1 &&
        m.shared_expert_gate == (m.shared_experts == 1))
      return "qwen2_moe";
    if (head_norm && all_bias && m.shared_experts == 0) return "qwen3_moe";
    if (m.qk_norm == QkNorm::kWhole && all_bias && m.shared_experts == 0 && every_layer_moe && !windowed)
      return "olmoe";
  }
  const char* norm = no_norm ? "none" : head_norm ? "head" : "whole";
  throw Error(fmt::format(
      "model {}: no HuggingFace architecture has this combination (MoE {}, weight names {}, {} FFN with {}, "
      "FFN bias {}, {} (gain offset {}), embedding scaled {}, learned positions {} (offset {}), "
      "q/k/v bias {}, o bias {}, q/k norm {}, shared experts {} gated {}, renormalised routing {}, sliding "
      "window {} on {} layers); expected one of llama, mistral, qwen2, qwen3, phi3, gemma, gemma2, opt, "
      "starcoder2 (dense), mixtral, qwen2_moe, qwen3_moe, olmoe, phimoe as configs/README.md describes",
      m.name, m.is_moe(), compiler::weight_naming_name(m.weight_naming), two_matrix ? "two-matrix" : "gated",
      compiler::activation_name(m.activation), m.mlp_bias, layer_norm ? "LayerNorm" : "RMSNorm",
      m.norm_weight_offset, m.scale_embedding, m.learned_positions, m.position_offset, m.qkv_bias, m.o_bias,
      norm, m.shared_experts, m.shared_expert_gate, m.router_renormalize, m.sliding_window,
      m.windowed_layers()));
}

// The double whose shortest decimal form is the float's (1e-05, not 9.999999747378752e-06); it reads back as
// the same float.
double decimal(float v) {
  return std::stod(fmt::format("{}", v));
}

// DeepSeek-V2 / V3's config.json fields beyond `c` (the ones every family states), as DeepSeek's configs
// state them (every routing field written out: the defaults of the two model types differ).
nlohmann::json deepseek_config(const ModelWeights& weights, nlohmann::json c) {
  const compiler::ModelSpec& m = weights.spec;
  const compiler::MlaSpec& a = m.mla;
  const bool v3 = m.router == compiler::Router::kNoAuxTc;
  c.update({{"num_key_value_heads", m.heads},
            {"rms_norm_eps", decimal(weights.numerics.norm_eps)},
            {"rope_theta", decimal(weights.numerics.rope_theta)},
            {"hidden_act", "silu"},
            {"attention_bias", false},
            {"q_lora_rank", a.q_lora_rank > 0 ? nlohmann::json(a.q_lora_rank) : nlohmann::json(nullptr)},
            {"kv_lora_rank", a.kv_lora_rank},
            {"qk_nope_head_dim", a.qk_nope_head_dim},
            {"qk_rope_head_dim", a.qk_rope_head_dim},
            {"v_head_dim", a.v_head_dim},
            {"intermediate_size", m.ffn > 0 ? m.ffn : m.expert_ffn},
            {"moe_intermediate_size", m.expert_ffn},
            {"n_routed_experts", m.experts},
            {"n_shared_experts",
             m.shared_experts > 0 ? nlohmann::json(m.shared_experts) : nlohmann::json(nullptr)},
            {"num_experts_per_tok", m.top_k},
            {"first_k_dense_replace", m.first_moe_layer},
            {"moe_layer_freq", 1},
            {"topk_method", m.router == compiler::Router::kNoAuxTc        ? "noaux_tc"
                            : m.router == compiler::Router::kGroupLimited ? "group_limited_greedy"
                                                                          : "greedy"},
            {"scoring_func", v3 ? "sigmoid" : "softmax"},
            {"n_group", m.router_groups},
            {"topk_group", m.router_topk_groups},
            {"norm_topk_prob", m.router_renormalize},
            {"routed_scaling_factor", m.routed_scaling}});
  if (m.shared_experts > 0 && m.shared_expert_ffn != m.expert_ffn)
    throw Error(
        fmt::format("model {}: shared experts {} wide, routed ones {}; DeepSeek's config states one "
                    "width (moe_intermediate_size) for both",
                    m.name, m.shared_expert_ffn, m.expert_ffn));
  const RopeScaling& rs = weights.numerics.rope_scaling;
  if (rs.kind == RopeScaling::Kind::kYarn) {
    c["rope_scaling"] = {{"type", "yarn"},
                         {"factor", rs.factor},
                         {"original_max_position_embeddings", rs.original_max_position_embeddings},
                         {"beta_fast", rs.beta_fast},
                         {"beta_slow", rs.beta_slow}};
    if (rs.mscale_all_dim > 0) {
      c["rope_scaling"]["mscale"] = rs.mscale;
      c["rope_scaling"]["mscale_all_dim"] = rs.mscale_all_dim;
    }
  } else if (rs.kind != RopeScaling::Kind::kNone) {
    throw Error(fmt::format("model {}: DeepSeek's config states YaRN RoPE scaling only", m.name));
  }
  return c;
}

// DBRX's config.json: its own field names, attention and FFN fields in attn_config / ffn_config (HF
// DbrxConfig). Its LayerNorms are torch.nn.LayerNorm's (eps 1e-5) and its RoPE is unscaled: config.json
// states nothing else.
nlohmann::json dbrx_config(const ModelWeights& weights, const char* activation) {
  const compiler::ModelSpec& m = weights.spec;
  if (weights.numerics.norm_eps != 1e-5f)
    throw Error(
        fmt::format("model {}: norm eps {} cannot be stated in a DBRX config.json (its LayerNorms use "
                    "1e-5); expected 1e-5",
                    m.name, weights.numerics.norm_eps));
  if (weights.numerics.rope_scaling.kind != RopeScaling::Kind::kNone)
    throw Error(fmt::format("model {}: a scaled RoPE cannot be stated in a DBRX config.json", m.name));
  return {
      {"model_type", "dbrx"},
      {"architectures", {"DbrxForCausalLM"}},
      {"_name_or_path", m.name},
      {"n_layers", m.layers},
      {"d_model", m.hidden},
      {"n_heads", m.heads},
      {"vocab_size", m.vocab},
      {"tie_word_embeddings", m.tie_embeddings},
      {"torch_dtype", m.dtype == compiler::DType::kBf16 ? "bfloat16" : "float16"},
      {"attn_config",
       {{"kv_n_heads", m.kv_heads},
        {"clip_qkv", m.clip_qkv > 0 ? nlohmann::json(m.clip_qkv) : nlohmann::json(nullptr)},
        {"rope_theta", decimal(weights.numerics.rope_theta)}}},
      {"ffn_config",
       {{"ffn_hidden_size", m.expert_ffn},
        {"moe_num_experts", m.experts},
        {"moe_top_k", m.top_k},
        {"moe_normalize_expert_weights", m.router_renormalize ? nlohmann::json(1) : nlohmann::json(nullptr)},
        {"ffn_act_fn", {{"name", activation}}}}}};
}

// Llama 4's config.json fields beyond those every family states (Llama4TextConfig's names): the FFN widths
// (intermediate_size_mlp dense, intermediate_size the experts'), which layers are MoE (the step, or the
// list), rotate (no_rope_layers), attend in chunks (layer_types), and the temperature tuning, all written
// out.
void llama4_fields(const compiler::ModelSpec& m, nlohmann::json& c) {
  c["intermediate_size_mlp"] = m.ffn;
  c["intermediate_size"] = m.is_moe() ? m.expert_ffn : m.ffn;
  c["num_local_experts"] = m.experts;
  c["num_experts_per_tok"] = m.is_moe() ? m.top_k : 1;
  if (m.is_moe() && m.dense_layers.empty()) {
    c["interleave_moe_layer_step"] = m.moe_every;
  } else {
    std::vector<int> moe;
    for (int l = 0; l < m.layers; ++l)
      if (m.is_moe_layer(l)) moe.push_back(l);
    c["moe_layers"] = moe;
  }
  std::vector<int> rope;
  std::vector<std::string> types;
  for (int l = 0; l < m.layers; ++l) {
    rope.push_back(m.rotates(l) ? 1 : 0);
    types.push_back(m.attention_chunk_of(l) > 0 ? "chunked_attention" : "full_attention");
  }
  c["no_rope_layers"] = rope;
  c["layer_types"] = types;
  const int chunk = m.attention_chunk > 0 ? m.attention_chunk : 8192;  // Llama4TextConfig's default
  c["attention_chunk_size"] = chunk;
  c["max_position_embeddings"] = std::max(131072, chunk + 1);  // beyond the chunk: the importer keeps it
  c["use_qk_norm"] = m.qk_norm == compiler::QkNorm::kL2;
  c["attn_temperature_tuning"] = m.attn_temperature_floor > 0;
  if (m.attn_temperature_floor > 0) {
    c["floor_scale"] = m.attn_temperature_floor;
    c["attn_scale"] = m.attn_temperature_scale;
  }
}

// config.json for `weights`: the fields import_hf_config reads for hf_model_type(spec), so that it reads back
// the same ModelSpec.
nlohmann::json family_config(const ModelWeights& weights) {
  const compiler::ModelSpec& m = weights.spec;
  const std::string type = hf_model_type(m);
  // The transformers class of each model_type (config.json's "architectures").
  static const std::map<std::string, std::string> kArchitecture = {{"llama", "LlamaForCausalLM"},
                                                                   {"mistral", "MistralForCausalLM"},
                                                                   {"qwen2", "Qwen2ForCausalLM"},
                                                                   {"qwen3", "Qwen3ForCausalLM"},
                                                                   {"gemma", "GemmaForCausalLM"},
                                                                   {"gemma2", "Gemma2ForCausalLM"},
                                                                   {"gemma3_text", "Gemma3ForCausalLM"},
                                                                   {"mixtral", "MixtralForCausalLM"},
                                                                   {"qwen2_moe", "Qwen2MoeForCausalLM"},
                                                                   {"qwen3_moe", "Qwen3MoeForCausalLM"},
                                                                   {"olmoe", "OlmoeForCausalLM"},
                                                                   {"opt", "OPTForCausalLM"},
                                                                   {"starcoder2", "Starcoder2ForCausalLM"},
                                                                   {"phimoe", "PhimoeForCausalLM"},
                                                                   {"phi3", "Phi3ForCausalLM"},
                                                                   {"deepseek_v2", "DeepseekV2ForCausalLM"},
                                                                   {"deepseek_v3", "DeepseekV3ForCausalLM"},
                                                                   {"dbrx", "DbrxForCausalLM"},
                                                                   {"gpt_oss", "GptOssForCausalLM"},
                                                                   {"llama4_text", "Llama4ForCausalLM"}};
  const char* activation = m.activation == compiler::Activation::kRelu       ? "relu"
                           : m.activation == compiler::Activation::kGeluTanh ? "gelu_pytorch_tanh"
                           : m.activation == compiler::Activation::kGelu     ? "gelu"
                                                                             : "silu";
  // The fields every family states alike.
  nlohmann::json c = {{"model_type", type},
                      {"architectures", {kArchitecture.at(type)}},
                      {"_name_or_path", m.name},
                      {"num_hidden_layers", m.layers},
                      {"hidden_size", m.hidden},
                      {"num_attention_heads", m.heads},
                      {"vocab_size", m.vocab},
                      {"tie_word_embeddings", m.tie_embeddings},
                      {"torch_dtype", m.dtype == compiler::DType::kBf16 ? "bfloat16" : "float16"}};
  if (type == "opt") {
    // OPT's LayerNorms are torch.nn.LayerNorm's, eps 1e-5: config.json cannot state another.
    if (weights.numerics.norm_eps != 1e-5f)
      throw Error(
          fmt::format("model {}: norm eps {} cannot be stated in an OPT config.json (its LayerNorms "
                      "use 1e-5); expected 1e-5",
                      m.name, weights.numerics.norm_eps));
    c.update({{"word_embed_proj_dim", m.hidden},
              {"ffn_dim", m.ffn},
              {"max_position_embeddings", m.learned_positions - 2},
              {"do_layer_norm_before", true},
              {"enable_bias", m.mlp_bias},
              {"activation_function", activation}});
    return c;
  }
  if (type == "deepseek_v2" || type == "deepseek_v3") return deepseek_config(weights, std::move(c));
  if (type == "dbrx") return dbrx_config(weights, activation);
  c.update({{"num_key_value_heads", m.kv_heads},
            {"head_dim", m.head_dim},
            {type == "starcoder2" ? "norm_epsilon" : "rms_norm_eps", decimal(weights.numerics.norm_eps)},
            {"rope_theta", decimal(weights.numerics.rope_theta)},
            {"hidden_act", activation}});
  if (type == "gemma" || type == "gemma2" || type == "gemma3_text")
    c["hidden_activation"] = activation;  // GemmaMLP reads this one, not hidden_act
  if (type == "gemma3_text")              // one base for every layer unless the numerics have a local one
    c["rope_local_base_freq"] =
        decimal(weights.numerics.local_rope_theta > 0 ? weights.numerics.local_rope_theta
                                                      : weights.numerics.rope_theta);
  if (type == "gemma2" ||
      type == "gemma3_text") {  // every field written out: Gemma2Config's defaults cap and window
    auto cap = [](double v) { return v > 0 ? nlohmann::json(v) : nlohmann::json(nullptr); };
    c.update({{"query_pre_attn_scalar", m.query_pre_attn_scalar > 0 ? m.query_pre_attn_scalar : m.head_dim},
              {"attn_logit_softcapping", cap(m.attn_softcap)},
              {"final_logit_softcapping", cap(m.final_softcap)},
              {"sliding_window",
               m.sliding_window > 0 ? nlohmann::json(m.sliding_window) : nlohmann::json(nullptr)}});
  }
  if (m.rotary_dim != 0) {  // Phi-3 (hf_model_type): HF rotates int(head_dim x factor) elements
    const double factor = static_cast<double>(m.rotary_dim) / m.head_dim;
    if (static_cast<int>(m.head_dim * factor) != m.rotary_dim)
      throw Error(
          fmt::format("model {}: rotary_dim {} of head_dim {} is not int(head_dim x {}); "
                      "partial_rotary_factor cannot state it",
                      m.name, m.rotary_dim, m.head_dim, factor));
    c["partial_rotary_factor"] = factor;
  }
  const RopeScaling& rs = weights.numerics.rope_scaling;
  if (rs.kind == RopeScaling::Kind::kLinear) {
    c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", rs.factor}};
  } else if (rs.kind == RopeScaling::Kind::kLongRope) {
    // The attention factor stated outright (Phi-3.5-MoE's own keys for it), so it reads back the same.
    c["rope_scaling"] = {{"rope_type", "longrope"},
                         {"short_factor", rs.short_factor},
                         {"long_factor", rs.long_factor},
                         {"original_max_position_embeddings", rs.original_max_position_embeddings}};
    if (type == "phimoe") {
      c["rope_scaling"]["short_mscale"] = rs.attention_factor;
      c["rope_scaling"]["long_mscale"] = rs.long_attention_factor;
    } else {
      c["rope_scaling"]["attention_factor"] = rs.attention_factor;
    }
    c["original_max_position_embeddings"] = rs.original_max_position_embeddings;
  } else if (rs.kind == RopeScaling::Kind::kYarn) {
    c["rope_scaling"] = {{"rope_type", "yarn"},
                         {"factor", rs.factor},
                         {"original_max_position_embeddings", rs.original_max_position_embeddings},
                         {"attention_factor", rs.attention_factor},
                         {"beta_fast", rs.beta_fast},
                         {"beta_slow", rs.beta_slow}};
    if (!rs.truncate) c["rope_scaling"]["truncate"] = false;  // gpt-oss's
  } else if (rs.kind == RopeScaling::Kind::kDynamic) {
    c["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", rs.factor}};
    c["max_position_embeddings"] = rs.original_max_position_embeddings;
  } else if (rs.kind == RopeScaling::Kind::kLlama3) {
    c["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", rs.factor},
                         {"low_freq_factor", rs.low_freq_factor},
                         {"high_freq_factor", rs.high_freq_factor},
                         {"original_max_position_embeddings", rs.original_max_position_embeddings}};
  }
  if (type == "starcoder2") {
    c["use_bias"] = m.mlp_bias;
    // HF's window check compares with it: a table longer than any window.
    if (rs.kind != RopeScaling::Kind::kDynamic)  // (dynamic NTK states its own above)
      c["max_position_embeddings"] = std::max(16384, m.sliding_window + 1);
  } else if (type != "qwen2" && type != "qwen2_moe") {
    c["attention_bias"] = m.qkv_bias;
  }
  if (type == "llama4_text") {
    llama4_fields(m, c);
  } else if (!m.is_moe()) {
    c["intermediate_size"] = m.ffn;
  } else if (type == "gpt_oss") {
    c["num_local_experts"] = m.experts;
    c["num_experts_per_tok"] = m.top_k;
    c["intermediate_size"] = m.expert_ffn;
    c["swiglu_limit"] = compiler::kSwigluOaiLimit;
    if (m.sliding_window == 0) c["sliding_window"] = nullptr;  // else GptOssConfig's 128
  } else if (type == "mixtral" || type == "phimoe") {
    c["num_local_experts"] = m.experts;
    c["num_experts_per_tok"] = m.top_k;
    c["intermediate_size"] = m.expert_ffn;
    if (type == "phimoe") {
      c["router_jitter_noise"] = m.router_jitter;
      c["lm_head_bias"] = m.lm_head_bias;
    }
  } else {
    c["num_experts"] = m.experts;
    c["num_experts_per_tok"] = m.top_k;
    c["norm_topk_prob"] = m.router_renormalize;
    if (type == "olmoe") {
      c["intermediate_size"] = m.expert_ffn;
    } else {
      c["moe_intermediate_size"] = m.expert_ffn;
      c["intermediate_size"] = m.ffn;
      c["decoder_sparse_step"] = m.moe_every;
      c["mlp_only_layers"] = m.dense_layers;
      if (type == "qwen2_moe")
        c["shared_expert_intermediate_size"] = m.shared_experts == 1 ? m.shared_expert_ffn : 0;
    }
  }
  if (m.sliding_window > 0) {
    c["sliding_window"] = m.sliding_window;
    if (type != "mistral" && type != "mixtral" && type != "starcoder2" &&
        type != "phi3") {  // Qwen: which layers, by layer_types
      c["use_sliding_window"] = true;
      std::vector<std::string> types;
      for (int l = 0; l < m.layers; ++l)
        types.push_back(m.attention_window(l) > 0 ? "sliding_attention" : "full_attention");
      c["layer_types"] = types;
    }
  }
  return c;
}

// compressed-tensors' QuantizationArgs of 8-bit floats with `strategy`, dynamic or static (llm-compressor's
// FP8-dynamic scheme).
nlohmann::json fp8_args(const char* strategy, bool dynamic, const char* type = "float") {
  return {{"num_bits", 8},
          {"type", type},
          {"symmetric", true},
          {"strategy", strategy},
          {"dynamic", dynamic},
          {"group_size", nullptr},
          {"block_structure", nullptr},
          {"actorder", nullptr},
          {"observer", dynamic ? nlohmann::json() : nlohmann::json("minmax")}};
}

// A compressed-tensors quantization_config: one group targeting every Linear with `weights` and
// `input_activations` args, in `format`; the LM head and the routers ignored (by regexes of their last name).
nlohmann::json compressed_tensors_config(const compiler::ModelSpec& m, const char* format,
                                         nlohmann::json weights, nlohmann::json input_activations) {
  nlohmann::json ignore = {"lm_head"};
  if (m.is_moe()) ignore.insert(ignore.end(), {"re:.*\\.gate$", "re:.*\\.shared_expert_gate$"});
  return {{"quant_method", "compressed-tensors"},
          {"format", format},
          {"quantization_status", "compressed"},
          {"config_groups",
           {{"group_0",
             {{"targets", {"Linear"}},
              {"weights", std::move(weights)},
              {"input_activations", std::move(input_activations)},
              {"output_activations", nullptr}}}}},
          {"ignore", ignore},
          {"kv_cache_scheme", nullptr}};
}

// The quantization_config of a model in int4_awq, int4_gptq or int4_pack (its projections and experts):
// AutoAWQ's (version gemm, zero points), its modules_to_not_convert naming each layer's matrices left in
// dtype (the routers, by full name: transformers matches them as substrings); GPTQ's (checkpoint_format gptq,
// desc_act false: groups in order, sym: zero 8), with optimum's modules_in_block_to_quantize in an MoE model
// (the modules under a layer in 4 bits; else optimum would quantize the routers too); or llm-compressor's
// W4A16 or W8A16 (compressed-tensors pack-quantized: 4- or 8-bit int, symmetric, groups of quant_group or
// strategy channel, 16-bit activations).
nlohmann::json int4_config(const compiler::ModelSpec& m) {
  const bool per_row = m.quant_group == compiler::kPerRowGroup;  // W4A16: strategy channel
  if (pack_layout(m.linear_dtype))
    return compressed_tensors_config(
        m, "pack-quantized",
        {{"num_bits", compiler::grouped_int_bits(m.linear_dtype)},
         {"type", "int"},
         {"symmetric", true},
         {"strategy", per_row ? "channel" : "group"},
         {"group_size", per_row ? nlohmann::json() : nlohmann::json(m.quant_group)},
         {"dynamic", false},
         {"block_structure", nullptr},
         {"actorder", nullptr},
         {"observer", "minmax"}},
        nullptr);
  // Modules under model.layers.<l>.: those kept in dtype by full name, the 4-bit ones by name in a layer.
  std::vector<std::string> kept, quantized;
  for (const StoredTensor& p : storage_plan(m)) {
    const std::string& name = p.stored.name;
    if (p.stored.role != WeightShape::Role::kMatrix || !name.starts_with("model.layers.")) continue;
    const std::string module = name.substr(0, name.size() - std::string_view(".weight").size());
    if (!int4_stored(p.stored)) {
      kept.push_back(module);
      continue;
    }
    const std::string in_layer =
        module.substr(module.find('.', std::string_view("model.layers.").size()) + 1);
    if (std::find(quantized.begin(), quantized.end(), in_layer) == quantized.end())
      quantized.push_back(in_layer);
  }
  if (m.linear_dtype == compiler::DType::kInt4Awq)
    return {{"quant_method", "awq"},
            {"bits", 4},
            {"group_size", m.quant_group},
            {"zero_point", true},
            {"version", "gemm"},
            {"modules_to_not_convert", kept.empty() ? nlohmann::json() : nlohmann::json(kept)}};
  nlohmann::json q = {{"quant_method", "gptq"},
                      {"bits", compiler::grouped_int_bits(m.linear_dtype)},
                      {"group_size", m.quant_group},
                      {"desc_act", false},
                      {"sym", true},
                      {"checkpoint_format", "gptq"},
                      {"static_groups", false},
                      {"true_sequential", true},
                      {"damp_percent", 0.01}};
  if (m.is_moe()) q["modules_in_block_to_quantize"] = {quantized};
  return q;
}

// transformers' FbgemmFp8Config of a dense model in fp8_channel under activation_scale_ub (Meta's Llama 3.1
// FP8 releases): modules_to_not_convert names, by full module name, each layer's matrices left in dtype
// (unquantized_attention, unquantized_ffn_layers) and the LM head.
nlohmann::json fbgemm_config(const compiler::ModelSpec& m) {
  std::vector<std::string> kept;
  for (const StoredTensor& p : storage_plan(m))
    if (p.stored.role == WeightShape::Role::kMatrix && p.stored.name.starts_with("model.layers.") &&
        !fp8_stored(p.stored))
      kept.push_back(module_name(p.stored));
  kept.push_back("lm_head");
  return {{"activation_scale_ub", m.activation_scale_ub},
          {"modules_to_not_convert", kept},
          {"quant_method", "fbgemm_fp8"}};
}

// The config.json of `weights`: its family's fields, and the quantization_config of MXFP4 experts (gpt-oss's
// release), FP8 matrices in 128 x 128 blocks (HF FineGrainedFP8, as DeepSeek-V3's release states it, with
// scale_fmt ue8m0: the scales duplex writes are powers of two) or FP8 matrices per channel
// (compressed-tensors, as llm-compressor's FP8-dynamic scheme states it, the LM head and routers ignored), or
// 4-bit matrices (int4_config), or NF4 / FP4 or LLM.int8() matrices (bitsandbytes, as
// BitsAndBytesConfig.to_dict() writes it), or fbgemm's FP8 matrices (fbgemm_config). One
// quantization_config states one method for the projections and the experts alike: other combinations are
// refused.
nlohmann::json hf_config(const ModelWeights& weights) {
  const compiler::ModelSpec& m = weights.spec;
  nlohmann::json c = family_config(weights);
  const compiler::DType experts = m.is_moe() ? m.expert_dtype : m.linear_dtype;
  if (!compiler::matrix_format(m.linear_dtype) && !compiler::matrix_format(experts)) return c;
  auto refuse = [&] {
    return Error(
        fmt::format("model {}: linear_dtype {} with expert_dtype {} cannot be stated in config.json (one "
                    "quantization_config: one method for the projections and the experts)",
                    m.name, compiler::dtype_name(m.linear_dtype), compiler::dtype_name(m.expert_dtype)));
  };
  if (experts == compiler::DType::kMxfp4) {  // gpt-oss's release: its experts only
    if (compiler::matrix_format(m.linear_dtype)) throw refuse();
    c["quantization_config"] = {
        {"quant_method", "mxfp4"},
        {"modules_to_not_convert",
         {"model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"}}};
    return c;
  }
  if (m.unquantized_attention || !m.unquantized_ffn_layers.empty() || m.activation_scale_ub > 0) {
    if (m.activation_scale_ub == 0 || m.is_moe())
      throw Error(fmt::format(
          "model {}: {}: only fbgemm_fp8's quantization_config states it in config.json; expected a dense "
          "model with linear_dtype fp8_channel and activation_scale_ub > 0 (Meta's Llama 3.1 FP8 releases)",
          m.name,
          m.activation_scale_ub > 0
              ? "activation_scale_ub in an MoE model"
              : "matrices left in dtype (unquantized_attention, unquantized_ffn_layers)"));
    c["quantization_config"] = fbgemm_config(m);
    return c;
  }
  if (m.linear_dtype != experts) throw refuse();
  if (experts == compiler::DType::kFp8Block128) {
    c["quantization_config"] = {{"quant_method", "fp8"},
                                {"fmt", "e4m3"},
                                {"activation_scheme", "dynamic"},
                                {"weight_block_size", {kFp8Block, kFp8Block}},
                                {"scale_fmt", "ue8m0"}};
    return c;
  }
  if (compiler::grouped_int(experts)) {
    c["quantization_config"] = int4_config(m);
    return c;
  }
  if (compiler::bitsandbytes(experts)) {  // transformers' BitsAndBytesConfig (a dense model: model_weights)
    const bool int4 = compiler::bnb_4bit(experts);
    // A load_in_8bit config keeps bnb_4bit_compute_dtype's default, float32.
    const char* compute = !int4 ? "float32" : m.dtype == compiler::DType::kBf16 ? "bfloat16" : "float16";
    c["quantization_config"] = {{"quant_method", "bitsandbytes"},
                                {"_load_in_4bit", int4},
                                {"_load_in_8bit", !int4},
                                {"bnb_4bit_compute_dtype", compute},
                                {"bnb_4bit_quant_storage", "uint8"},
                                {"bnb_4bit_quant_type", int4 ? compiler::bnb_quant_type(experts) : "fp4"},
                                {"bnb_4bit_use_double_quant", int4 && compiler::bnb_nested(experts)},
                                {"llm_int8_enable_fp32_cpu_offload", false},
                                {"llm_int8_has_fp16_weight", false},
                                {"llm_int8_skip_modules", nullptr},
                                {"llm_int8_threshold", m.llm_int8_threshold},
                                {"load_in_4bit", int4},
                                {"load_in_8bit", !int4}};
    return c;
  }
  if (experts == compiler::DType::kFp8Tensor) {  // AutoFP8's per-tensor release, dynamic activations
    c["quantization_config"] = {
        {"quant_method", "fp8"}, {"activation_scheme", "dynamic"}, {"ignored_layers", {"lm_head"}}};
    return c;
  }
  if (experts == compiler::DType::kInt8Channel) {  // llm-compressor's W8A8-INT8
    c["quantization_config"] = compressed_tensors_config(
        m, "int-quantized", fp8_args("channel", false, "int"), fp8_args("token", true, "int"));
    return c;
  }
  DUPLEX_ASSERT(experts == compiler::DType::kFp8Channel, "a matrix format the weights' check lets through");
  c["quantization_config"] =
      compressed_tensors_config(m, "float-quantized", fp8_args("channel", false), fp8_args("token", true));
  return c;
}

}  // namespace

void write_checkpoint(const std::string& dir, const ModelWeights& weights, int shards) {
  namespace fs = std::filesystem;
  StoredData data;
  const TensorList all = checkpoint_tensors(weights, data);  // as stored: Phi-3's stacked ones count once
  if (shards < 1 || static_cast<std::size_t>(shards) > all.size())
    throw Error(
        fmt::format("{}: {} shards for {} tensors; expected 1 to {}", dir, shards, all.size(), all.size()));
  const nlohmann::json config = hf_config(weights);  // before anything is written: it may refuse the model
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(fmt::format("{}: cannot create directory ({})", dir, ec.message()));
  std::ofstream out(fs::path(dir) / "config.json");
  out << config.dump(2) << "\n";
  if (!out) throw Error(fmt::format("{}/config.json: write failed", dir));
  out.close();
  if (shards == 1) {
    write_tensors((fs::path(dir) / "model.safetensors").string(), all);
    return;
  }
  // HF's sharded layout: model-0000i-of-0000n.safetensors, consecutive tensors (in name order) per shard, and
  // model.safetensors.index.json mapping every tensor to its shard.
  nlohmann::json index = {{"metadata", nlohmann::json::object()}, {"weight_map", nlohmann::json::object()}};
  std::uint64_t total = 0;
  for (int i = 0; i < shards; ++i) {
    const std::size_t first = all.size() * static_cast<std::size_t>(i) / static_cast<std::size_t>(shards),
                      last = all.size() * static_cast<std::size_t>(i + 1) / static_cast<std::size_t>(shards);
    const std::string file = fmt::format("model-{:05}-of-{:05}.safetensors", i + 1, shards);
    const TensorList part(all.begin() + static_cast<std::ptrdiff_t>(first),
                          all.begin() + static_cast<std::ptrdiff_t>(last));
    total += write_tensors((fs::path(dir) / file).string(), part);
    for (const OutTensor& t : part) index["weight_map"][t.name] = file;
  }
  index["metadata"]["total_size"] = total;
  std::ofstream idx(fs::path(dir) / "model.safetensors.index.json");
  idx << index.dump(2) << "\n";
  if (!idx) throw Error(fmt::format("{}/model.safetensors.index.json: write failed", dir));
}

}  // namespace duplex::runtime::functional
