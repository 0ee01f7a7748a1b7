// Per-channel FP8 checkpoints (llm-compressor's FP8-dynamic releases, quant_method compressed-tensors) in
// functional emulation: random weights on the grid of their checkpoint tensors' rows, written as F8_E4M3 +
// weight_scale [rows, 1] and read back bit for bit, scales in the model's dtype as the releases store them,
// a release's arbitrary scales, and the errors. The file's layout is checked from the safetensors header.
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
#include "duplex/compiler/hf_import.hpp"
#include "duplex/runtime/functional/model_weights.hpp"
#include "duplex/runtime/functional/safetensors.hpp"

namespace duplex::runtime::functional {
namespace {

namespace fs = std::filesystem;
using testing::Corruption;
using testing::error_of;
using testing::expect_corruptions_named;
using testing::RawFile;
using testing::read_text;

compiler::ModelSpec fp8_mixtral() {
  return testing::data_model("tiny-mixtral-fp8-dynamic.yaml");
}

fs::path scratch(const std::string& what) {
  return testing::scratch_dir("fp8ch_" + what);
}

// Replaces F32 tensor `name` of f by its values in `dtype` (BF16 or F16: power-of-two scales convert
// exactly), appended at the end of the data.
void store_scales_as(RawFile& f, const std::string& name, const char* dtype) {
  const auto& e = f.header[name];
  const std::size_t begin = e["data_offsets"][0], end = e["data_offsets"][1];
  std::string half;
  for (std::size_t i = begin; i < end; i += 4) {
    float v = 0;
    std::memcpy(&v, f.data.data() + i, 4);
    const std::uint16_t b = std::string(dtype) == "BF16" ? float_to_bf16_bits(v) : float_to_half_bits(v);
    half.append(reinterpret_cast<const char*>(&b), 2);
  }
  f.header[name]["dtype"] = dtype;
  f.header[name]["data_offsets"] = {f.data.size(), f.data.size() + half.size()};
  f.data += half;
}

// The release layout: every projection and expert matrix F8_E4M3 with one F32 scale per row ([rows, 1]); the
// embeddings, routers, LM head and norms in the model's dtype (F16 here); config.json states
// compressed-tensors' FP8-dynamic scheme, which the compiler reads back as the same spec; read back bit for
// bit, one file or sharded.
TEST(Fp8ChannelCheckpoint, ReleaseLayoutWrittenAndReadBackBitForBit) {
  const ModelWeights w = random_weights(fp8_mixtral(), 3);
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
      EXPECT_EQ(f.header[w1 + "_scale"]["shape"], nlohmann::json::array({512, 1}));
      EXPECT_EQ(f.header["model.layers.0.self_attn.k_proj.weight_scale"]["shape"],
                nlohmann::json::array({64, 1}));
      for (const char* kept : {"model.embed_tokens.weight", "lm_head.weight",
                               "model.layers.1.block_sparse_moe.gate.weight", "model.norm.weight"}) {
        EXPECT_EQ(f.header[kept]["dtype"], "F16") << kept;
        EXPECT_FALSE(f.header.contains(std::string(kept) + "_scale")) << kept;
      }
      const std::string config = read_text(dir / "config.json");
      const auto q = nlohmann::json::parse(config)["quantization_config"];
      EXPECT_EQ(q["quant_method"], "compressed-tensors");
      EXPECT_EQ(q["config_groups"]["group_0"]["weights"]["strategy"], "channel");
      EXPECT_EQ(q["config_groups"]["group_0"]["input_activations"]["strategy"], "token");
      const compiler::ModelSpec imported = compiler::import_hf_config(config, "config.json");
      EXPECT_EQ(imported.linear_dtype, compiler::DType::kFp8Channel);
      EXPECT_EQ(imported.expert_dtype, compiler::DType::kFp8Channel);
    }
    const ModelWeights back = load_checkpoint(dir.string());
    EXPECT_EQ(back.spec.linear_dtype, compiler::DType::kFp8Channel);
    EXPECT_NE(back.source.find("FP8"), std::string::npos) << back.source;
    ASSERT_EQ(back.tensors.size(), w.tensors.size());
    for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
    fs::remove_all(dir);
  }
}

// compressed-tensors stores the scales in the model's dtype (BF16 in the releases): read alike.
TEST(Fp8ChannelCheckpoint, ScalesInTheModelsDtypeAreRead) {
  const ModelWeights w = random_weights(fp8_mixtral(), 4);
  for (const char* dtype : {"BF16", "F16"}) {
    const fs::path dir = scratch(dtype);
    write_checkpoint(dir.string(), w);
    RawFile f(dir / "model.safetensors");
    for (const char* name : {"model.layers.0.self_attn.q_proj.weight_scale",
                             "model.layers.1.block_sparse_moe.experts.7.w2.weight_scale"})
      store_scales_as(f, name, dtype);
    f.save(dir / "model.safetensors");
    const ModelWeights back = load_checkpoint(dir.string());
    for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << dtype << " " << name;
    fs::remove_all(dir);
  }
}

// A release's scales are arbitrary: each row's products are rounded once to FP16, only that row changes.
TEST(Fp8ChannelCheckpoint, EachRowHasItsOwnScale) {
  const ModelWeights w = random_weights(fp8_mixtral(), 5);
  const fs::path dir = scratch("rows");
  write_checkpoint(dir.string(), w);
  RawFile f(dir / "model.safetensors");
  const std::string name = "model.layers.0.self_attn.o_proj.weight";  // [256, 256]
  float scale = 0;
  std::memcpy(&scale, f.at(name + "_scale") + 4 * 5, 4);
  const float changed = scale * 1.1f;
  std::memcpy(f.at(name + "_scale") + 4 * 5, &changed, 4);
  f.save(dir / "model.safetensors");
  const ModelWeights back = load_checkpoint(dir.string());
  const WeightTensor& o = back.get(name);
  const WeightTensor& before = w.get(name);
  int changed_elements = 0;
  for (std::int64_t r = 0; r < 256; ++r)
    for (std::int64_t c = 0; c < 256; ++c) {
      const std::size_t i = static_cast<std::size_t>(r * 256 + c);
      if (r != 5) {
        ASSERT_EQ(o.data[i], before.data[i]) << r << "," << c;
        continue;
      }
      const double x = half_bits_to_float(before.data[i]) * 1.1;
      EXPECT_NEAR(half_bits_to_float(o.data[i]), x, std::fabs(x) / 1024 + 1e-7) << c;
      changed_elements += o.data[i] != before.data[i];
    }
  EXPECT_GT(changed_elements, 200);
  fs::remove_all(dir);
}

TEST(Fp8ChannelCheckpoint, MalformedScalesAreNamed) {
  const ModelWeights w = random_weights(fp8_mixtral(), 6);
  const std::string name = "model.layers.1.block_sparse_moe.experts.2.w3.weight";
  const std::vector<Corruption> cases = {
      {[&](RawFile& f) { f.header.erase(name + "_scale"); },
       "tensor " + name + "_scale is missing (FP8 matrix, shape [512, 1])"},
      {[&](RawFile& f) { f.header[name + "_scale"]["dtype"] = "I32"; },
       "tensor " + name + "_scale: dtype \"I32\"; expected F32, BF16 or F16 (FP8 scales)"},
      {[&](RawFile& f) {
         f.header[name + "_scale"]["shape"] = {1, 512};
       },
       "tensor " + name + "_scale: shape [1, 512]; expected [512, 1]"},
      {[&](RawFile& f) {
         const float negative = -1;
         std::memcpy(f.at(name + "_scale") + 4 * 9, &negative, 4);
       },
       name + ": the scale of block [9][0] is -1"},
  };
  expect_corruptions_named(w, scratch("bad"), cases);
}

// One quantization_config states one method: per-channel projections beside block-scaled experts are refused
// before anything is written.
TEST(Fp8ChannelCheckpoint, MixedFormatsCannotBeStated) {
  compiler::ModelSpec m = fp8_mixtral();
  m.expert_dtype = compiler::DType::kFp8Block128;
  const ModelWeights w = random_weights(m, 1);
  const fs::path dir = scratch("mixed");
  EXPECT_NE(
      error_of([&] {
        write_checkpoint(dir.string(), w);
      }).find("linear_dtype fp8_channel with expert_dtype fp8_block128 cannot be stated in config.json"),
      std::string::npos);
  EXPECT_FALSE(fs::exists(dir));
}

}  // namespace
}  // namespace duplex::runtime::functional
