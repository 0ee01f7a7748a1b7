// Meta's Llama 3.1 FP8 releases (transformers' FbgemmFp8Config, quant_method fbgemm_fp8) in functional
// emulation: the FFN matrices F8_E4M3 with a weight_scale per row and their module's input_scale_ub, the
// attention projections and the first and last layers' FFNs in 16 bits; written as the release stores them,
// its config.json read back by the compiler as the same spec, the weights read back bit for bit, and the
// errors naming the tensor.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoint_files.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/hf_import.hpp"
#include "duplex/runtime/functional/model_weights.hpp"
#include "duplex/runtime/functional/safetensors.hpp"

namespace duplex::runtime::functional {
namespace {

namespace fs = std::filesystem;
using compiler::DType;
using testing::Corruption;
using testing::error_of;
using testing::expect_corruptions_named;
using testing::RawFile;

compiler::ModelSpec fbgemm_llama() {
  return testing::data_model("tiny-llama-fbgemm-fp8.yaml");
}

std::string text_of(const fs::path& file) {
  std::ifstream in(file);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

float f32_at(RawFile& f, const std::string& name) {
  float v = 0;
  std::memcpy(&v, f.at(name), 4);
  return v;
}

TEST(FbgemmFp8Checkpoint, ReleaseLayoutWrittenAndReadBackBitForBit) {
  const compiler::ModelSpec spec = fbgemm_llama();
  const ModelWeights w = random_weights(spec, 5);
  for (int shards : {1, 3}) {
    SCOPED_TRACE(fmt::format("{} shard(s)", shards));
    const fs::path dir = testing::scratch_dir(fmt::format("fbgemm_{}", shards));
    write_checkpoint(dir.string(), w, shards);
    if (shards == 1) {
      RawFile f(dir / "model.safetensors");
      for (const char* n : {"gate_proj", "up_proj", "down_proj"}) {
        const std::string fp8 = fmt::format("model.layers.1.mlp.{}", n);
        EXPECT_EQ(f.header[fp8 + ".weight"]["dtype"], "F8_E4M3") << n;
        EXPECT_EQ(f.header[fp8 + ".weight_scale"]["dtype"], "F32") << n;
        EXPECT_EQ(f.header[fp8 + ".weight_scale"]["shape"][1], 1) << n;
        EXPECT_EQ(f.header[fp8 + ".input_scale_ub"]["dtype"], "F32") << n;
        EXPECT_EQ(f.header[fp8 + ".input_scale_ub"]["shape"], nlohmann::json::array({1})) << n;
        EXPECT_EQ(f32_at(f, fp8 + ".input_scale_ub"), 1200.0f) << n;
        for (int l : {0, 2}) {
          const std::string kept = fmt::format("model.layers.{}.mlp.{}", l, n);
          EXPECT_EQ(f.header[kept + ".weight"]["dtype"], "F16") << kept;  // duplex writes 16 bits as FP16
          EXPECT_FALSE(f.header.contains(kept + ".weight_scale")) << kept;
          EXPECT_FALSE(f.header.contains(kept + ".input_scale_ub")) << kept;
        }
      }
      for (int l = 0; l < 3; ++l)
        for (char p : {'q', 'k', 'v', 'o'}) {
          const std::string proj = fmt::format("model.layers.{}.self_attn.{}_proj", l, p);
          EXPECT_EQ(f.header[proj + ".weight"]["dtype"], "F16") << proj;
          EXPECT_FALSE(f.header.contains(proj + ".input_scale_ub")) << proj;
        }
      const std::string config = text_of(dir / "config.json");
      const nlohmann::json q = nlohmann::json::parse(config)["quantization_config"];
      EXPECT_EQ(q["quant_method"], "fbgemm_fp8");
      EXPECT_EQ(q["activation_scale_ub"], 1200.0);
      EXPECT_EQ(q["modules_to_not_convert"].size(), 3 * 4 + 2 * 3 + 1);
      const compiler::ModelSpec back = compiler::import_hf_config(config, "config.json");
      EXPECT_EQ(back.linear_dtype, DType::kFp8Channel);
      EXPECT_TRUE(back.unquantized_attention);
      EXPECT_EQ(back.unquantized_ffn_layers, spec.unquantized_ffn_layers);
      EXPECT_EQ(back.activation_scale_ub, spec.activation_scale_ub);
      EXPECT_EQ(back.weight_bytes(), spec.weight_bytes());
    }
    const ModelWeights back = load_checkpoint(dir.string());
    EXPECT_NE(back.source.find("FP8"), std::string::npos) << back.source;
    ASSERT_EQ(back.tensors.size(), w.tensors.size());
    for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
    fs::remove_all(dir);
  }
}

TEST(FbgemmFp8Checkpoint, MalformedBoundsAreNamed) {
  const ModelWeights w = random_weights(fbgemm_llama(), 6);
  const std::string ub = "model.layers.1.mlp.up_proj.input_scale_ub";
  const std::vector<Corruption> cases = {
      {[&](RawFile& f) { f.header.erase(ub); }, "tensor " + ub + " is missing"},
      {[&](RawFile& f) {
         const float other = 448;
         std::memcpy(f.at(ub), &other, 4);
       },
       "tensor " + ub + ": holds 448; expected 1200, the config's activation_scale_ub"},
      {[&](RawFile& f) { f.header[ub]["dtype"] = "I32"; }, "tensor " + ub + ": dtype \"I32\""},
  };
  expect_corruptions_named(w, testing::scratch_dir("fbgemm_bad"), cases);
  // A sharded index without one names what it is.
  const fs::path dir = testing::scratch_dir("fbgemm_index");
  write_checkpoint(dir.string(), w, 2);
  const fs::path index = dir / "model.safetensors.index.json";
  nlohmann::json j = nlohmann::json::parse(text_of(index));
  j["weight_map"].erase(ub);
  std::ofstream(index) << j.dump();
  const std::string error = error_of([&] { load_checkpoint(dir.string()); });
  EXPECT_NE(error.find("weight_map: tensor " + ub +
                       " is missing (model tiny-llama-fbgemm-fp8 needs it: fbgemm's "
                       "activation scale bound)"),
            std::string::npos)
      << error;
  fs::remove_all(dir);
}

// Matrices left in dtype beside another format cannot be stated in config.json: only fbgemm_fp8's
// modules_to_not_convert names them.
TEST(FbgemmFp8Checkpoint, OtherFormatsKeepingMatricesInDtypeAreNotWrittenAsAConfig) {
  compiler::ModelSpec spec = fbgemm_llama();
  spec.activation_scale_ub = 0;  // llm-compressor's FP8-dynamic layout
  const fs::path dir = testing::scratch_dir("fbgemm_refused");
  const std::string error = error_of([&] { write_checkpoint(dir.string(), random_weights(spec, 7)); });
  EXPECT_NE(error.find("model tiny-llama-fbgemm-fp8: matrices left in dtype (unquantized_attention, "
                       "unquantized_ffn_layers): only fbgemm_fp8's quantization_config states it"),
            std::string::npos)
      << error;
  EXPECT_FALSE(fs::exists(dir));  // refused before anything is written
}

}  // namespace
}  // namespace duplex::runtime::functional
