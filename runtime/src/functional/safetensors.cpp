#include "duplex/runtime/functional/safetensors.hpp"

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"

namespace duplex::runtime::functional {
namespace {

static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

// Header lengths beyond this are not a plausible safetensors header (the reference implementation caps at
// 100 MB); they are reported as a bad header rather than allocated.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot open for reading", path));
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string shape_text(const std::vector<std::int64_t>& s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}

// Bytes per element of a stored dtype the reader converts to FP16; 0 for any other.
std::uint64_t element_bytes(const std::string& dtype) {
  return dtype == "F16" || dtype == "BF16" ? 2 : dtype == "F32" ? 4 : 0;
}

}  // namespace

void write_safetensors(const std::string& path, const ModelWeights& weights) {
  nlohmann::json header = nlohmann::json::object();
  std::uint64_t offset = 0;
  for (const auto& [name, t] : weights.tensors) {
    const std::uint64_t bytes = t.data.size() * 2;
    header[name] = {{"dtype", "F16"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  header["__metadata__"] = {{"format", "pt"}, {"writer", "duplex"}};
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw Error(fmt::format("{}: cannot open for writing", path));
  const std::uint64_t n = text.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& [name, t] : weights.tensors)
    out.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(t.data.size() * 2));
  if (!out) throw Error(fmt::format("{}: write failed", path));
}

ModelWeights read_safetensors(const std::string& path, const compiler::ModelSpec& spec) {
  const std::string file = read_file(path);
  if (file.size() < 8)
    throw Error(fmt::format("{}: truncated: {} bytes, expected at least the 8-byte header length", path, file.size()));
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, file.data(), 8);
  if (header_len > kMaxHeaderBytes)
    throw Error(fmt::format("{}: bad header: header length {} is implausible; expected a safetensors file", path,
                            header_len));
  if (header_len > file.size() - 8)
    throw Error(fmt::format("{}: truncated: the header needs {} bytes, the file has {} after the length", path,
                            header_len, file.size() - 8));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(file.begin() + 8, file.begin() + 8 + static_cast<std::ptrdiff_t>(header_len));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: bad header: not valid JSON ({})", path, e.what()));
  }
  if (!header.is_object()) throw Error(fmt::format("{}: bad header: not a JSON object", path));
  const std::uint64_t data_size = file.size() - 8 - header_len;
  const char* data = file.data() + 8 + header_len;

  ModelWeights w;
  w.spec = spec;
  w.source = path;
  std::set<std::string> wanted, converted;  // converted: stored dtypes other than F16
  for (const WeightShape& s : expected_weights(spec)) {
    wanted.insert(s.name);
    if (!header.contains(s.name))
      throw Error(fmt::format("{}: tensor {} is missing (model {} needs it, shape {})", path, s.name, spec.name,
                              shape_text(s.shape)));
    const nlohmann::json& e = header[s.name];
    auto bad = [&](const std::string& what) {
      return Error(fmt::format("{}: tensor {}: {}", path, s.name, what));
    };
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
      throw bad("bad header entry; expected {dtype, shape, data_offsets}");
    const std::string dtype = e["dtype"].is_string() ? e["dtype"].get<std::string>() : "";
    const std::uint64_t elem = element_bytes(dtype);
    if (elem == 0) throw bad(fmt::format("dtype {}; expected F16, BF16 or F32", e["dtype"].dump()));
    std::vector<std::int64_t> shape;
    std::vector<std::uint64_t> offsets;
    try {
      shape = e["shape"].get<std::vector<std::int64_t>>();
      offsets = e["data_offsets"].get<std::vector<std::uint64_t>>();
    } catch (const nlohmann::json::exception&) {
      throw bad("bad header entry: shape and data_offsets must be lists of non-negative integers");
    }
    if (shape != s.shape) throw bad(fmt::format("shape {}; expected {}", shape_text(shape), shape_text(s.shape)));
    WeightTensor t;
    t.shape = shape;
    const std::uint64_t bytes = static_cast<std::uint64_t>(t.numel()) * elem;
    if (offsets.size() != 2 || offsets[1] < offsets[0] || offsets[1] - offsets[0] != bytes)
      throw bad(fmt::format("data_offsets {} do not span the {} bytes of its shape", e["data_offsets"].dump(), bytes));
    if (offsets[1] > data_size)
      throw bad(fmt::format("truncated: data ends at byte {}, the file holds {} data bytes", offsets[1], data_size));
    t.data.resize(static_cast<std::size_t>(t.numel()));
    if (dtype == "F16") {
      std::memcpy(t.data.data(), data + offsets[0], bytes);
    } else {
      // BF16 / F32 rounded to FP16, the arithmetic of the emulated devices; a value FP16 cannot hold is an error.
      converted.insert(dtype);
      const char* at = data + offsets[0];
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
          throw bad(fmt::format("element {} is {} ({}), outside FP16's finite range (+-65504); {} checkpoints are "
                                "converted to FP16, the emulated devices' arithmetic",
                                i, v, dtype, dtype));
      }
    }
    w.tensors.emplace(s.name, std::move(t));
  }
  for (const auto& [name, value] : header.items())
    if (name != "__metadata__" && !wanted.contains(name))
      throw Error(fmt::format("{}: unexpected tensor {} (model {} has no such weight)", path, name, spec.name));
  if (!converted.empty()) w.source = fmt::format("{} ({} converted to FP16)", path, fmt::join(converted, ", "));
  return w;
}

ModelWeights load_checkpoint(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  const fs::path tensors = fs::is_directory(p) ? p / "model.safetensors" : p;
  const fs::path config = tensors.parent_path() / "config.json";
  if (!fs::exists(config))
    throw Error(fmt::format("{}: no config.json beside it ({} is missing); expected a HF checkpoint directory",
                            tensors.string(), config.string()));
  const compiler::ModelSpec spec = compiler::load_model(config.string());
  ModelWeights w = read_safetensors(tensors.string(), spec);
  const nlohmann::json j = nlohmann::json::parse(read_file(config.string()), nullptr, false);
  if (j.is_object()) {
    if (j.contains("rms_norm_eps") && j["rms_norm_eps"].is_number())
      w.numerics.rms_norm_eps = j["rms_norm_eps"].get<float>();
    if (j.contains("rope_theta") && j["rope_theta"].is_number()) w.numerics.rope_theta = j["rope_theta"].get<float>();
  }
  return w;
}

void write_checkpoint(const std::string& dir, const ModelWeights& weights) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(fmt::format("{}: cannot create directory ({})", dir, ec.message()));
  const compiler::ModelSpec& m = weights.spec;
  nlohmann::json c = {{"model_type", m.is_moe() ? "mixtral" : "llama"},
                      {"_name_or_path", m.name},
                      {"num_hidden_layers", m.layers},
                      {"hidden_size", m.hidden},
                      {"num_attention_heads", m.heads},
                      {"num_key_value_heads", m.kv_heads},
                      {"head_dim", m.head_dim},
                      {"vocab_size", m.vocab},
                      {"tie_word_embeddings", m.tie_embeddings},
                      {"torch_dtype", "float16"},
                      {"rms_norm_eps", weights.numerics.rms_norm_eps},
                      {"rope_theta", weights.numerics.rope_theta}};
  if (m.is_moe()) {
    c["num_local_experts"] = m.experts;
    c["num_experts_per_tok"] = m.top_k;
    c["intermediate_size"] = m.expert_ffn;
  } else {
    c["intermediate_size"] = m.ffn;
  }
  std::ofstream out(fs::path(dir) / "config.json");
  out << c.dump(2) << "\n";
  if (!out) throw Error(fmt::format("{}/config.json: write failed", dir));
  out.close();
  write_safetensors((fs::path(dir) / "model.safetensors").string(), weights);
}

}  // namespace duplex::runtime::functional
