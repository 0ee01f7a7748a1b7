// Block-scaled FP8 checkpoints (DeepSeek-V3's and Qwen3's FP8 release layout) in functional emulation: random
// weights on the grid of their checkpoint tensors' blocks, written as F8_E4M3 + weight_scale_inv and read
// back bit for bit (one file or sharded), a release's arbitrary FP32 scales, and the errors. The file's
// layout is checked here from the safetensors header, not through the library's reader.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "checkpoint_files.hpp"
#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/runtime/functional/model_weights.hpp"
#include "duplex/runtime/functional/safetensors.hpp"

namespace duplex::runtime::functional {
namespace {

namespace fs = std::filesystem;
using testing::Corruption;
using testing::error_of;
using testing::expect_corruptions_named;
using testing::RawFile;

compiler::ModelSpec fp8_deepseek() {
  return testing::data_model("tiny-deepseek-v3-fp8.yaml");
}

fs::path scratch(const std::string& what) {
  return testing::scratch_dir("fp8_" + what);
}

// The release layout: every projection, dense FFN and expert matrix F8_E4M3 with an F32 scale per 128 x 128
// block (kv_a_proj_with_mqa's 80 x 256: one row of two blocks), the embeddings, routers, norms and the
// correction bias in the model's dtype (F16 here); config.json states quant_method fp8; read back bit for
// bit.
TEST(Fp8Checkpoint, ReleaseLayoutWrittenAndReadBackBitForBit) {
  const ModelWeights w = random_weights(fp8_deepseek(), 3);
  for (int shards : {1, 3}) {
    SCOPED_TRACE(fmt::format("{} shard(s)", shards));
    const fs::path dir = scratch(std::to_string(shards));
    write_checkpoint(dir.string(), w, shards);
    if (shards == 1) {
      const RawFile f(dir / "model.safetensors");
      const auto& kv_a = f.header["model.layers.0.self_attn.kv_a_proj_with_mqa.weight"];
      EXPECT_EQ(kv_a["dtype"], "F8_E4M3");
      EXPECT_EQ(kv_a["shape"], nlohmann::json::array({80, 256}));
      const auto& kv_a_scale = f.header["model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv"];
      EXPECT_EQ(kv_a_scale["dtype"], "F32");
      EXPECT_EQ(kv_a_scale["shape"], nlohmann::json::array({1, 2}));
      EXPECT_EQ(f.header["model.layers.1.mlp.experts.3.down_proj.weight"]["dtype"], "F8_E4M3");
      EXPECT_EQ(f.header["model.layers.1.mlp.experts.3.down_proj.weight_scale_inv"]["shape"],
                nlohmann::json::array({2, 1}));
      EXPECT_EQ(f.header["model.layers.0.mlp.down_proj.weight_scale_inv"]["shape"],
                nlohmann::json::array({2, 4}));
      for (const char* kept :
           {"model.embed_tokens.weight", "lm_head.weight", "model.layers.1.mlp.gate.weight",
            "model.layers.0.self_attn.kv_a_layernorm.weight"}) {
        EXPECT_EQ(f.header[kept]["dtype"], "F16") << kept;
        EXPECT_FALSE(f.header.contains(std::string(kept) + "_scale_inv")) << kept;
      }
      std::ifstream config_in(dir / "config.json");
      const nlohmann::json config = nlohmann::json::parse(config_in);
      EXPECT_EQ(config["quantization_config"]["quant_method"], "fp8");
      EXPECT_EQ(config["quantization_config"]["weight_block_size"], nlohmann::json::array({128, 128}));
    }
    const ModelWeights back = load_checkpoint(dir.string());
    EXPECT_EQ(back.spec.linear_dtype, compiler::DType::kFp8Block128);
    EXPECT_EQ(back.spec.expert_dtype, compiler::DType::kFp8Block128);
    EXPECT_NE(back.source.find("FP8"), std::string::npos) << back.source;
    ASSERT_EQ(back.tensors.size(), w.tensors.size());
    for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
    fs::remove_all(dir);
  }
}

// Random weights: the FP8 matrices within half an E4M3 step of the FP16 weights of the same seed, the rest
// identical.
TEST(Fp8Checkpoint, RandomMatricesAreRoundedOnlyWhereFp8) {
  const ModelWeights q = random_weights(fp8_deepseek(), 4);
  compiler::ModelSpec plain_spec = fp8_deepseek();
  plain_spec.linear_dtype = plain_spec.expert_dtype = plain_spec.dtype;
  const ModelWeights plain = random_weights(plain_spec, 4);
  int rounded = 0;
  for (const auto& [name, t] : q.tensors) {
    const WeightTensor& p = plain.get(name);
    const bool fp8 = name.ends_with("_proj.weight") || name.ends_with("_proj_with_mqa.weight");
    if (!fp8) {
      EXPECT_EQ(t.data, p.data) << name;
      continue;
    }
    ++rounded;
    EXPECT_NE(t.data, p.data) << name;
    float max = 0;
    for (std::uint16_t v : p.data) max = std::max(max, std::fabs(half_bits_to_float(v)));
    for (std::size_t i = 0; i < t.data.size();
         ++i)  // E4M3's largest relative step 1/8; the block's scale bound
      ASSERT_LE(std::fabs(half_bits_to_float(t.data[i]) - half_bits_to_float(p.data[i])),
                std::max(std::fabs(half_bits_to_float(p.data[i])) / 16, max / 448 * std::ldexp(1.0f, -9) * 2))
          << name << " element " << i;
  }
  EXPECT_EQ(rounded,
            3 * 5 + 1 * 3 + 2 * (16 * 3 + 3));  // q_a, q_b, kv_a, kv_b, o; dense FFN; experts + shared
}

// A release's scales are any FP32 values: dequantized and rounded once to FP16. duplex writes power-of-two
// scales only, so saving such weights again is refused naming the tensor and the element.
TEST(Fp8Checkpoint, ArbitraryScalesAreReadAndNotWrittenBack) {
  const ModelWeights w = random_weights(fp8_deepseek(), 5);
  const fs::path dir = scratch("scales");
  write_checkpoint(dir.string(), w);
  RawFile f(dir / "model.safetensors");
  const std::string name = "model.layers.0.self_attn.o_proj.weight";
  float scale[2] = {};
  std::memcpy(scale, f.at(name + "_scale_inv"), sizeof scale);
  const float changed = scale[0] * 1.1f;
  std::memcpy(f.at(name + "_scale_inv"), &changed, 4);
  f.save(dir / "model.safetensors");
  const ModelWeights back = load_checkpoint(dir.string());
  const WeightTensor& o = back.get(name);  // [256, 256]: block [0][0] is rows 0..127, columns 0..127
  const WeightTensor& before = w.get(name);
  for (std::int64_t r : {0, 127, 128})
    for (std::int64_t c : {0, 100, 200}) {
      const std::size_t i = static_cast<std::size_t>(r * 256 + c);
      const double x = half_bits_to_float(before.data[i]) * (r < 128 && c < 128 ? 1.1 : 1.0);
      EXPECT_NEAR(half_bits_to_float(o.data[i]), x, std::fabs(x) / 1024 + 1e-7) << r << "," << c;
    }
  const std::string error = error_of([&] { write_checkpoint((dir / "again").string(), back); });
  EXPECT_NE(error.find("model tiny-deepseek-v3-fp8: " + name + ": element ["), std::string::npos) << error;
  EXPECT_NE(error.find("is not on the FP8 grid"), std::string::npos) << error;
  EXPECT_FALSE(fs::exists(dir / "again"));  // nothing half-written
  fs::remove_all(dir);
}

// Each violation names the file and the tensor: a missing scale, a matrix stored in another dtype, a NaN
// code, a scale of the wrong shape.
TEST(Fp8Checkpoint, MalformedTensorsAreNamed) {
  const ModelWeights w = random_weights(fp8_deepseek(), 6);
  const std::string name = "model.layers.2.mlp.experts.5.up_proj.weight";
  const std::vector<Corruption> cases = {
      {[&](RawFile& f) { f.header.erase(name + "_scale_inv"); },
       "tensor " + name + "_scale_inv is missing (FP8 matrix, shape [1, 2])"},
      {[&](RawFile& f) { f.header[name]["dtype"] = "BF16"; },
       "tensor " + name + ": dtype \"BF16\"; expected F8_E4M3 (FP8)"},
      {[&](RawFile& f) { f.at(name)[17] = 0x7f; }, name + ": element [0][17] is NaN (E4M3 code 0x7f)"},
      {[&](RawFile& f) {
         f.header[name + "_scale_inv"]["shape"] = {2, 1};
       },
       "tensor " + name + "_scale_inv: shape [2, 1]; expected [1, 2]"},
  };
  expect_corruptions_named(w, scratch("bad"), cases);
}

// FP8 experts need a per-matrix layout: the fused expert tensors of gpt-oss / Llama 4 / DBRX have none.
TEST(Fp8Checkpoint, FusedExpertTensorsAreRefused) {
  compiler::ModelSpec m = compiler::load_model("tiny-llama4");
  m.expert_dtype = compiler::DType::kFp8Block128;
  const std::string error = error_of([&] { random_weights(m, 1); });
  EXPECT_NE(error.find("expert_dtype: fp8_block128 experts under llama4's fused expert tensors"),
            std::string::npos)
      << error;
  m = compiler::load_model("tiny-llama4");
  m.linear_dtype = compiler::DType::kFp8Block128;  // its projections may be FP8
  EXPECT_NO_THROW(random_weights(m, 1));
  // One quantization_config states one method: FP8 projections beside gpt-oss's MXFP4 experts are refused
  // before anything is written.
  m = compiler::load_model("tiny-gpt-oss");
  m.expert_dtype = compiler::DType::kMxfp4;
  m.linear_dtype = compiler::DType::kFp8Block128;
  const fs::path dir = fs::temp_directory_path() / fmt::format("duplex_fp8_mixed_{}", ::getpid());
  fs::remove_all(dir);
  const ModelWeights w = random_weights(m, 1);
  EXPECT_NE(error_of([&] {
              write_checkpoint(dir.string(), w);
            }).find("linear_dtype fp8_block128 with expert_dtype mxfp4 cannot be stated in config.json"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(dir));
}

}  // namespace
}  // namespace duplex::runtime::functional
