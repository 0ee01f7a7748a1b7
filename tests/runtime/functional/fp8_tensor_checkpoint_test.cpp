// Per-tensor FP8 checkpoints (AutoFP8's releases, quant_method fp8 without weight_block_size, and
// llm-compressor's FP8 scheme, strategy tensor) in functional emulation: random weights on the grid of one
// scale per checkpoint matrix, written as F8_E4M3 + weight_scale [] and read back bit for bit; a scale stored
// as [1] or in BF16 as llm-compressor stores it; static releases' input_scale beside each matrix, checked and
// kept, and the xPU's GEMM inputs quantized at them (vLLM's fused modules' largest); and the errors.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "checkpoint_files.hpp"
#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/compiler/hf_import.hpp"
#include "duplex/runtime/functional/functional_executor.hpp"
#include "duplex/runtime/functional/model_weights.hpp"
#include "duplex/runtime/functional/run_session.hpp"
#include "duplex/runtime/functional/safetensors.hpp"

namespace duplex::runtime::functional {
namespace {

namespace fs = std::filesystem;
using testing::Corruption;
using testing::error_of;
using testing::RawFile;
using testing::read_json;

compiler::ModelSpec tensor_mixtral() {
  return testing::data_model("tiny-mixtral-fp8-tensor.yaml");
}

fs::path scratch(const std::string& what) {
  return testing::scratch_dir("fp8t_" + what);
}

void write_json(const fs::path& path, const nlohmann::json& j) {
  std::ofstream(path) << j.dump(2) << "\n";
}

// Appends an F32 tensor of one value and `shape` ([] or [1]).
void add_scalar(RawFile& f, const std::string& name, float value, const std::vector<std::int64_t>& shape) {
  f.header[name] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {f.data.size(), f.data.size() + 4}}};
  f.data.append(reinterpret_cast<const char*>(&value), 4);
}

// Every FP8 matrix of the file (an F8_E4M3 tensor).
std::vector<std::string> fp8_matrices(const RawFile& f) {
  std::vector<std::string> names;
  for (const auto& [name, e] : f.header.items())
    if (name != "__metadata__" && e["dtype"] == "F8_E4M3") names.push_back(name);
  return names;
}

// The module of matrix NAME.weight: NAME.
std::string module_of(const std::string& matrix) {
  return matrix.substr(0, matrix.size() - std::string(".weight").size());
}

// The release layout: every projection and expert matrix F8_E4M3 with one F32 scale, shape [] (AutoFP8's);
// the embeddings, routers, LM head and norms in the model's dtype; config.json states AutoFP8's dynamic
// scheme, which the compiler reads back as the same spec; read back bit for bit, one file or sharded.
TEST(Fp8TensorCheckpoint, ReleaseLayoutWrittenAndReadBackBitForBit) {
  const ModelWeights w = random_weights(tensor_mixtral(), 3);
  for (int shards : {1, 3}) {
    SCOPED_TRACE(fmt::format("{} shard(s)", shards));
    const fs::path dir = scratch(std::to_string(shards));
    write_checkpoint(dir.string(), w, shards);
    if (shards == 1) {
      const RawFile f(dir / "model.safetensors");
      const std::string w1 = "model.layers.1.block_sparse_moe.experts.3.w1.weight";
      EXPECT_EQ(f.header[w1]["dtype"], "F8_E4M3");
      EXPECT_EQ(f.header[w1]["shape"], nlohmann::json::array({512, 256}));
      EXPECT_EQ(f.header[w1 + "_scale"]["dtype"], "F32");
      EXPECT_EQ(f.header[w1 + "_scale"]["shape"], nlohmann::json::array());
      EXPECT_EQ(fp8_matrices(f).size(), 2u * (4 + 8 * 3));  // q, k, v, o and 8 experts' three per layer
      for (const char* kept : {"model.embed_tokens.weight", "lm_head.weight",
                               "model.layers.1.block_sparse_moe.gate.weight", "model.norm.weight"}) {
        EXPECT_EQ(f.header[kept]["dtype"], "F16") << kept;
        EXPECT_FALSE(f.header.contains(std::string(kept) + "_scale")) << kept;
      }
      const nlohmann::json config = read_json(dir / "config.json");
      EXPECT_EQ(config["quantization_config"]["quant_method"], "fp8");
      EXPECT_EQ(config["quantization_config"]["activation_scheme"], "dynamic");
      EXPECT_FALSE(config["quantization_config"].contains("weight_block_size"));
      const compiler::ModelSpec imported = compiler::import_hf_config(config.dump(), "config.json");
      EXPECT_EQ(imported.linear_dtype, compiler::DType::kFp8Tensor);
      EXPECT_EQ(imported.expert_dtype, compiler::DType::kFp8Tensor);
      EXPECT_FALSE(imported.static_input_scales);
    }
    const ModelWeights back = load_checkpoint(dir.string());
    EXPECT_EQ(back.spec.linear_dtype, compiler::DType::kFp8Tensor);
    EXPECT_NE(back.source.find("FP8"), std::string::npos) << back.source;
    ASSERT_EQ(back.tensors.size(), w.tensors.size());
    for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
    fs::remove_all(dir);
  }
}

// One scale scales the whole matrix: a release's arbitrary scale rounds every product once to FP16; a scale
// stored as [1] (llm-compressor's) or in BF16 is read alike.
TEST(Fp8TensorCheckpoint, OneScaleScalesTheWholeMatrix) {
  const ModelWeights w = random_weights(tensor_mixtral(), 4);
  const fs::path dir = scratch("scale");
  write_checkpoint(dir.string(), w);
  RawFile f(dir / "model.safetensors");
  const std::string name = "model.layers.0.self_attn.o_proj.weight";  // [256, 256]
  float scale = 0;
  std::memcpy(&scale, f.at(name + "_scale"), 4);
  const float changed = scale * 1.1f;
  std::memcpy(f.at(name + "_scale"), &changed, 4);
  f.header[name + "_scale"]["shape"] = {1};
  const std::string k = "model.layers.1.self_attn.k_proj.weight_scale";
  float k_scale = 0;
  std::memcpy(&k_scale, f.at(k), 4);
  const std::uint16_t bf16 = float_to_bf16_bits(k_scale);  // a power of two: exact in BF16
  f.header[k] = {{"dtype", "BF16"}, {"shape", {1}}, {"data_offsets", {f.data.size(), f.data.size() + 2}}};
  f.data.append(reinterpret_cast<const char*>(&bf16), 2);
  f.save(dir / "model.safetensors");
  const ModelWeights back = load_checkpoint(dir.string());
  const WeightTensor& o = back.get(name);
  const WeightTensor& before = w.get(name);
  int changed_elements = 0;
  for (std::size_t i = 0; i < o.data.size(); ++i) {
    const double x = half_bits_to_float(before.data[i]) * 1.1;
    ASSERT_NEAR(half_bits_to_float(o.data[i]), x, std::fabs(x) / 1024 + 1e-7) << i;
    changed_elements += o.data[i] != before.data[i];
  }
  EXPECT_GT(changed_elements, 256 * 200);
  for (const auto& [n, t] : w.tensors) {
    if (n == name) continue;
    EXPECT_EQ(back.get(n).data, t.data) << n;
  }
  fs::remove_all(dir);
}

// A static release (AutoFP8's activation_scheme static): each FP8 matrix's module stores its calibrated
// input_scale, [] or [1]; read, checked and kept by matrix (ModelWeights::input_scales), the weights
// unchanged; missing, malformed or not positive, it is an error naming the file and tensor.
TEST(Fp8TensorCheckpoint, StaticReleasesInputScalesAreCheckedAndKept) {
  const ModelWeights w = random_weights(tensor_mixtral(), 5);
  const fs::path dir = scratch("static");
  write_checkpoint(dir.string(), w);
  nlohmann::json config = read_json(dir / "config.json");
  config["quantization_config"]["activation_scheme"] = "static";
  write_json(dir / "config.json", config);
  const RawFile written(dir / "model.safetensors");
  RawFile with_scales = written;
  bool as_vector = false;
  for (const std::string& m : fp8_matrices(written)) {
    add_scalar(with_scales, module_of(m) + ".input_scale", 0.0625f,
               as_vector ? std::vector<std::int64_t>{1} : std::vector<std::int64_t>{});
    as_vector = !as_vector;
  }
  with_scales.save(dir / "model.safetensors");
  const ModelWeights back = load_checkpoint(dir.string());
  EXPECT_TRUE(back.spec.static_input_scales);
  for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
  EXPECT_EQ(back.input_scales.size(), fp8_matrices(written).size());
  for (const std::string& m : fp8_matrices(written)) EXPECT_EQ(back.input_scales.at(m), 0.0625f) << m;
  EXPECT_TRUE(random_weights(tensor_mixtral(), 5).input_scales.empty());

  const std::string scale = "model.layers.1.block_sparse_moe.experts.2.w3.input_scale";
  const std::string file = (dir / "model.safetensors").string();
  const std::vector<Corruption> cases = {
      {[&](RawFile& f) { f.header.erase(scale); },
       "tensor " + scale + " is missing (one activation scale per module, shape [] or [1])"},
      {[&](RawFile& f) { f.header[scale]["shape"] = {2}; },
       "tensor " + scale + ": shape [2]; expected [] or [1] (one activation scale per module)"},
      {[&](RawFile& f) {
         const float negative = -1;
         std::memcpy(f.at(scale), &negative, 4);
       },
       "tensor " + scale + ": holds -1; expected a finite activation scale > 0"},
      {[&](RawFile& f) {
         f.header["model.layers.0.self_attn.v_proj.weight_scale"]["shape"] = {1, 1};
       },
       "tensor model.layers.0.self_attn.v_proj.weight_scale: shape [1, 1]; expected [] or [1] (one scale per "
       "matrix)"},
  };
  for (const auto& [corrupt, expected] : cases) {
    RawFile f = with_scales;
    corrupt(f);
    f.save(dir / "model.safetensors");
    EXPECT_EQ(error_of([&] { load_checkpoint(dir.string()); }), file + ": " + expected);
  }
  // A dynamic release's config with input scales in the file: they are not its weights.
  config["quantization_config"]["activation_scheme"] = "dynamic";
  write_json(dir / "config.json", config);
  with_scales.save(dir / "model.safetensors");
  EXPECT_NE(error_of([&] { load_checkpoint(dir.string()); }).find("unexpected tensor"), std::string::npos);
  fs::remove_all(dir);
}

// A static release on the xPU: each GEMM's input quantized at its module's scale, fused modules at the
// largest of theirs (q / k / v; gate / up; a device's experts: vLLM's fused MoE per rank), as the executor
// records them; --check passes following them; the logits differ from FP16 inputs' and from a dynamic
// release's. Random weights of a static model have no scales: their inputs stay FP16.
TEST(Fp8TensorCheckpoint, StaticInputScalesQuantizeTheXpuGemmInputs) {
  const ModelWeights w = random_weights(tensor_mixtral(), 7);
  const fs::path dir = scratch("static_run");
  write_checkpoint(dir.string(), w);
  nlohmann::json config = read_json(dir / "config.json");
  config["quantization_config"]["activation_scheme"] = "static";
  write_json(dir / "config.json", config);
  RawFile f(dir / "model.safetensors");
  const std::string k0 = "model.layers.0.self_attn.k_proj",
                    w2 = "model.layers.1.block_sparse_moe.experts.3.w2";
  for (const std::string& m : fp8_matrices(f)) {
    const std::string module = module_of(m);
    add_scalar(f, module + ".input_scale", module == k0 ? 0.125f : module == w2 ? 0.25f : 0.0625f, {});
  }
  f.save(dir / "model.safetensors");
  const ModelWeights back = load_checkpoint(dir.string());
  const std::vector<std::vector<std::int32_t>> prompts = {{1, 5, 9, 42}, {7, 30, 12}};
  FunctionalOptions o;
  o.devices = 1;
  const FunctionalResult got = FunctionalExecutor(back, load_system("gpu"), o).run(prompts, 4);
  std::set<float> o_scales, qkv0, qkv1, expert_h1;
  for (const auto& request : got.quantization)
    for (const auto& position : request)
      for (std::size_t l = 0; l < position.size(); ++l)
        for (const QuantizedInput& in : position[l]) {
          if (in.gemm == QuantizedGemm::kQkv) (l == 0 ? qkv0 : qkv1).insert(in.scales.at(0));
          if (in.gemm == QuantizedGemm::kOProj) o_scales.insert(in.scales.at(0));
          if (in.gemm == QuantizedGemm::kExpert) {
            EXPECT_EQ(in.scales.at(0), 0.0625f);
            if (l == 1) expert_h1.insert(in.scales.at(1));
          }
        }
  EXPECT_EQ(qkv0, std::set<float>{0.125f});  // the largest of q / k / v
  EXPECT_EQ(qkv1, std::set<float>{0.0625f});
  EXPECT_EQ(o_scales, std::set<float>{0.0625f});
  EXPECT_EQ(expert_h1, std::set<float>{0.25f});  // one device holds every expert: the largest w2 scale
  const CheckResult check = check_run(back, prompts, got, 4);
  EXPECT_TRUE(check.passed()) << check.max_abs_logit_err << " " << check.input_err_ratio;
  EXPECT_GT(check.followed_inputs, 0);
  o.quantize_activations = false;
  const FunctionalResult fp16 = FunctionalExecutor(back, load_system("gpu"), o).run(prompts, 4);
  EXPECT_TRUE(fp16.quantization.empty());
  EXPECT_NE(fp16.logits, got.logits);
  o.quantize_activations = true;
  compiler::ModelSpec static_spec = tensor_mixtral();
  static_spec.static_input_scales = true;
  const ModelWeights unscaled = random_weights(static_spec, 7);
  EXPECT_TRUE(FunctionalExecutor(unscaled, load_system("gpu"), o).run(prompts, 4).quantization.empty());
  fs::remove_all(dir);
}

// duplex has no calibrated activation scales to write: a static model's checkpoint is refused before
// anything is written.
TEST(Fp8TensorCheckpoint, StaticScalesAreNotWritten) {
  compiler::ModelSpec m = tensor_mixtral();
  m.static_input_scales = true;
  const ModelWeights w = random_weights(m, 1);
  const fs::path dir = scratch("write_static");
  EXPECT_NE(error_of([&] {
              write_checkpoint(dir.string(), w);
            }).find("static activation scales (activation_scheme static) are calibrated on real activations"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(dir));
}

}  // namespace
}  // namespace duplex::runtime::functional
