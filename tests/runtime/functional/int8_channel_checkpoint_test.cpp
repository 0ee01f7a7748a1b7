// W8A8-INT8 checkpoints (llm-compressor's int-quantized releases, quant_method compressed-tensors) in
// functional emulation: random weights on the INT8 grid of their rows, written as I8 + weight_scale [rows, 1]
// with the config that states them, read back bit for bit, scales in the model's dtype, and the errors. The
// file's layout is checked from the safetensors header.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "checkpoint_files.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/compiler/hf_import.hpp"
#include "duplex/runtime/functional/model_weights.hpp"
#include "duplex/runtime/functional/safetensors.hpp"

namespace duplex::runtime::functional {
namespace {

namespace fs = std::filesystem;
using testing::Corruption;
using testing::expect_corruptions_named;
using testing::RawFile;

compiler::ModelSpec int8_mixtral() {
  return testing::data_model("tiny-mixtral-w8a8.yaml");
}

// The release layout: every projection and expert matrix I8 with one F32 scale per row ([rows, 1]); the
// embeddings, routers, LM head and norms in the model's dtype (F16 here); config.json states
// compressed-tensors' W8A8-INT8 scheme (int-quantized, 8-bit int weights per channel, activations per token,
// dynamic), which the compiler reads back as the same spec; every weight back bit for bit.
TEST(Int8ChannelCheckpoint, ReleaseLayoutWrittenAndReadBackBitForBit) {
  const ModelWeights w = random_weights(int8_mixtral(), 3);
  const fs::path dir = testing::scratch_dir("int8ch_layout");
  write_checkpoint(dir.string(), w);
  RawFile f(dir / "model.safetensors");
  const std::string w1 = "model.layers.1.block_sparse_moe.experts.3.w1.weight";
  EXPECT_EQ(f.header[w1]["dtype"], "I8");
  EXPECT_EQ(f.header[w1]["shape"], nlohmann::json::array({512, 256}));
  EXPECT_EQ(f.header[w1 + "_scale"]["dtype"], "F32");
  EXPECT_EQ(f.header[w1 + "_scale"]["shape"], nlohmann::json::array({512, 1}));
  EXPECT_EQ(f.header["model.layers.0.self_attn.q_proj.weight"]["dtype"], "I8");
  for (const char* kept :
       {"model.embed_tokens.weight", "lm_head.weight", "model.layers.1.block_sparse_moe.gate.weight"})
    EXPECT_EQ(f.header[kept]["dtype"], "F16") << kept;
  std::ifstream in(dir / "config.json");
  const std::string config{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  const auto q = nlohmann::json::parse(config)["quantization_config"];
  EXPECT_EQ(q["format"], "int-quantized");
  EXPECT_EQ(q["config_groups"]["group_0"]["weights"]["type"], "int");
  EXPECT_EQ(q["config_groups"]["group_0"]["input_activations"]["type"], "int");
  EXPECT_EQ(compiler::import_hf_config(config, "config.json").expert_dtype, compiler::DType::kInt8Channel);
  const ModelWeights back = load_checkpoint(dir.string());
  EXPECT_EQ(back.spec.linear_dtype, compiler::DType::kInt8Channel);
  EXPECT_NE(back.source.find("INT8"), std::string::npos) << back.source;
  ASSERT_EQ(back.tensors.size(), w.tensors.size());
  for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
  // Each matrix's rows are on their INT8 grid: every value an integer multiple of its row's power-of-two
  // scale.
  const WeightTensor& o = w.get("model.layers.0.self_attn.o_proj.weight");
  float scale = 0;
  std::memcpy(&scale, f.at("model.layers.0.self_attn.o_proj.weight_scale"), 4);
  for (std::int64_t c = 0; c < o.shape[1]; ++c) {
    const double q0 = half_bits_to_float(o.data[static_cast<std::size_t>(c)]) / scale;
    EXPECT_EQ(q0, std::nearbyint(q0)) << c;
    EXPECT_LE(std::fabs(q0), 127.0) << c;
  }
  fs::remove_all(dir);
}

TEST(Int8ChannelCheckpoint, MalformedTensorsAreNamed) {
  const ModelWeights w = random_weights(int8_mixtral(), 6);
  const std::string name = "model.layers.1.block_sparse_moe.experts.2.w3.weight";
  const std::vector<Corruption> cases = {
      {[&](RawFile& f) { f.header[name]["dtype"] = "F8_E4M3"; },
       "tensor " + name + ": dtype \"F8_E4M3\"; expected I8 (INT8)"},
      {[&](RawFile& f) { f.header.erase(name + "_scale"); },
       "tensor " + name + "_scale is missing (INT8 matrix, shape [512, 1])"},
      {[&](RawFile& f) { f.header[name + "_scale"]["dtype"] = "I32"; },
       "tensor " + name + "_scale: dtype \"I32\"; expected F32, BF16 or F16 (INT8 scales)"},
  };
  expect_corruptions_named(w, testing::scratch_dir("int8ch_bad"), cases);
}

}  // namespace
}  // namespace duplex::runtime::functional
