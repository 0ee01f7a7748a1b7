// 4-bit checkpoints (AutoAWQ's releases, quant_method awq; GPTQ's, quant_method gptq; llm-compressor's W4A16,
// compressed-tensors pack-quantized) in functional emulation: random weights on the grid of their groups,
// written as I32 qweight / qzeros, F16 scales (and GPTQ's g_idx), or weight_packed / weight_scale /
// weight_shape, and read back bit for bit, one file or sharded; a release's arbitrary scales and act-order
// groups; and the errors. The file's layout is checked from the safetensors header.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cstring>
#include <filesystem>
#include <fstream>
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
using compiler::DType;
using testing::Corruption;
using testing::data_model;
using testing::error_of;
using testing::expect_corruptions_named;
using testing::RawFile;
using testing::read_text;

compiler::ModelSpec awq_mixtral() {
  return data_model("tiny-mixtral-awq.yaml");
}
compiler::ModelSpec gptq_qwen2() {
  return data_model("tiny-qwen2-gptq.yaml");
}

fs::path scratch(const std::string& what) {
  return testing::scratch_dir("int4_" + what);
}

nlohmann::json shape(std::int64_t a, std::int64_t b) {
  return nlohmann::json::array({a, b});
}

// AutoAWQ's layout: NAME.qweight [in, out / 8] and NAME.qzeros [in / 128, out / 8] in I32, NAME.scales
// [in / 128, out] in F16, no NAME.weight; routers, embeddings, LM head and norms F16; config.json states awq
// (GEMM packing, the routers not converted), read back by the compiler as the same spec.
TEST(Int4Checkpoint, AwqReleaseLayoutWrittenAndReadBackBitForBit) {
  const ModelWeights w = random_weights(awq_mixtral(), 3);
  for (int shards : {1, 3}) {
    SCOPED_TRACE(fmt::format("{} shard(s)", shards));
    const fs::path dir = scratch("awq" + std::to_string(shards));
    write_checkpoint(dir.string(), w, shards);
    if (shards == 1) {
      const RawFile f(dir / "model.safetensors");
      const std::string w1 = "model.layers.1.block_sparse_moe.experts.3.w1";  // [512, 256]
      EXPECT_EQ(f.header[w1 + ".qweight"]["dtype"], "I32");
      EXPECT_EQ(f.header[w1 + ".qweight"]["shape"], shape(256, 64));
      EXPECT_EQ(f.header[w1 + ".qzeros"]["dtype"], "I32");
      EXPECT_EQ(f.header[w1 + ".qzeros"]["shape"], shape(2, 64));
      EXPECT_EQ(f.header[w1 + ".scales"]["dtype"], "F16");
      EXPECT_EQ(f.header[w1 + ".scales"]["shape"], shape(2, 512));
      EXPECT_FALSE(f.header.contains(w1 + ".weight"));
      EXPECT_FALSE(f.header.contains(w1 + ".g_idx"));
      EXPECT_EQ(f.header["model.layers.0.self_attn.k_proj.qweight"]["shape"], shape(256, 8));
      EXPECT_EQ(f.header["model.layers.0.block_sparse_moe.experts.0.w2.qweight"]["shape"], shape(512, 32));
      for (const char* kept : {"model.embed_tokens.weight", "lm_head.weight",
                               "model.layers.1.block_sparse_moe.gate.weight", "model.norm.weight"})
        EXPECT_EQ(f.header[kept]["dtype"], "F16") << kept;
      const std::string config = read_text(dir / "config.json");
      const nlohmann::json q = nlohmann::json::parse(config)["quantization_config"];
      EXPECT_EQ(q["quant_method"], "awq");
      EXPECT_EQ(q["version"], "gemm");
      EXPECT_EQ(q["modules_to_not_convert"], nlohmann::json::array({"model.layers.0.block_sparse_moe.gate",
                                                                    "model.layers.1.block_sparse_moe.gate"}));
      const compiler::ModelSpec imported = compiler::import_hf_config(config, "config.json");
      EXPECT_EQ(imported.linear_dtype, DType::kInt4Awq);
      EXPECT_EQ(imported.expert_dtype, DType::kInt4Awq);
    }
    const ModelWeights back = load_checkpoint(dir.string());
    EXPECT_EQ(back.spec.linear_dtype, DType::kInt4Awq);
    EXPECT_EQ(back.spec.expert_dtype, DType::kInt4Awq);
    EXPECT_NE(back.source.find("AWQ int4"), std::string::npos) << back.source;
    ASSERT_EQ(back.tensors.size(), w.tensors.size());
    for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
    fs::remove_all(dir);
  }
}

// GPTQ's layout: NAME.qweight [in / 8, out], NAME.qzeros [in / 128, out / 8] holding zero - 1 (7 for the
// zero 8 duplex writes), NAME.scales, NAME.g_idx [in] (desc_act false: groups in order); the biases F16
// beside them; config.json states gptq (checkpoint_format gptq, sym).
TEST(Int4Checkpoint, GptqReleaseLayoutWrittenAndReadBackBitForBit) {
  const ModelWeights w = random_weights(gptq_qwen2(), 4);
  for (int shards : {1, 3}) {
    SCOPED_TRACE(fmt::format("{} shard(s)", shards));
    const fs::path dir = scratch("gptq" + std::to_string(shards));
    write_checkpoint(dir.string(), w, shards);
    if (shards == 1) {
      RawFile f(dir / "model.safetensors");
      const std::string down = "model.layers.0.mlp.down_proj";  // [256, 512]
      EXPECT_EQ(f.header[down + ".qweight"]["shape"], shape(64, 256));
      EXPECT_EQ(f.header[down + ".qzeros"]["shape"], shape(4, 32));
      EXPECT_EQ(f.header[down + ".scales"]["shape"], shape(4, 256));
      EXPECT_EQ(f.header[down + ".g_idx"]["dtype"], "I32");
      EXPECT_EQ(f.header[down + ".g_idx"]["shape"], nlohmann::json::array({512}));
      std::int32_t word = 0, group = 0;
      std::memcpy(&word, f.at(down + ".qzeros"), 4);
      EXPECT_EQ(static_cast<std::uint32_t>(word), 0x77777777u);
      std::memcpy(&group, f.at(down + ".g_idx") + 4 * 300, 4);
      EXPECT_EQ(group, 2);
      EXPECT_EQ(f.header["model.layers.1.self_attn.q_proj.bias"]["dtype"], "F16");
      const std::string config = read_text(dir / "config.json");
      const nlohmann::json q = nlohmann::json::parse(config)["quantization_config"];
      EXPECT_EQ(q["quant_method"], "gptq");
      EXPECT_EQ(q["checkpoint_format"], "gptq");
      EXPECT_FALSE(q.contains("modules_in_block_to_quantize"));  // dense: every Linear in the layers
      EXPECT_EQ(compiler::import_hf_config(config, "config.json").linear_dtype, DType::kInt4Gptq);
    }
    const ModelWeights back = load_checkpoint(dir.string());
    EXPECT_EQ(back.spec.linear_dtype, DType::kInt4Gptq);
    EXPECT_NE(back.source.find("GPTQ int4"), std::string::npos) << back.source;
    for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
    fs::remove_all(dir);
  }
}

// Groups of 32 (GPTQ) and 64 (AWQ), and GPTQ's one group per row (group_size -1): scales and zero points per
// that many inputs, group_size stated in config.json and read back by the compiler, every weight back bit for
// bit.
TEST(Int4Checkpoint, SmallerGroupsWrittenAndReadBackBitForBit) {
  for (const auto& [file, group] :
       {std::pair{"tiny-qwen2-gptq-g32.yaml", 32}, std::pair{"tiny-mixtral-awq-g64.yaml", 64},
        std::pair{"tiny-qwen2-gptq-perrow.yaml", compiler::kPerRowGroup}}) {
    SCOPED_TRACE(file);
    const ModelWeights w = random_weights(data_model(file), 6);
    EXPECT_EQ(w.spec.quant_group, group);
    const fs::path dir = scratch("g" + std::to_string(group));
    write_checkpoint(dir.string(), w);
    RawFile f(dir / "model.safetensors");
    const std::string o = "model.layers.0.self_attn.o_proj";  // [256, 256]
    const std::int64_t groups = group > 0 ? 256 / group : 1;
    EXPECT_EQ(f.header[o + ".scales"]["shape"], shape(groups, 256));
    EXPECT_EQ(f.header[o + ".qzeros"]["shape"], shape(groups, 32));
    const std::string config = read_text(dir / "config.json");
    EXPECT_EQ(nlohmann::json::parse(config)["quantization_config"]["group_size"], group);
    EXPECT_EQ(compiler::import_hf_config(config, "config.json").quant_group, group);
    const ModelWeights back = load_checkpoint(dir.string());
    EXPECT_EQ(back.spec.quant_group, group);
    for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
    fs::remove_all(dir);
  }
}

// GPTQ's 8-bit layout (Qwen's GPTQ-Int8): qweight [in / 4, out], qzeros [in / 128, out / 4], config.json
// bits 8, read back by the compiler as int8_gptq; every weight back bit for bit.
TEST(Int4Checkpoint, EightBitGptqWrittenAndReadBackBitForBit) {
  const ModelWeights w = random_weights(data_model("tiny-qwen2-gptq-int8.yaml"), 7);
  const fs::path dir = scratch("gptq_int8");
  write_checkpoint(dir.string(), w);
  RawFile f(dir / "model.safetensors");
  const std::string down = "model.layers.0.mlp.down_proj";  // [256, 512]
  EXPECT_EQ(f.header[down + ".qweight"]["shape"], shape(128, 256));
  EXPECT_EQ(f.header[down + ".qzeros"]["shape"], shape(4, 64));
  EXPECT_EQ(f.header[down + ".scales"]["shape"], shape(4, 256));
  std::int32_t word = 0;
  std::memcpy(&word, f.at(down + ".qzeros"), 4);
  EXPECT_EQ(static_cast<std::uint32_t>(word), 0x7f7f7f7fu);  // zero 128, stored minus 1
  const std::string config = read_text(dir / "config.json");
  EXPECT_EQ(nlohmann::json::parse(config)["quantization_config"]["bits"], 8);
  EXPECT_EQ(compiler::import_hf_config(config, "config.json").linear_dtype, DType::kInt8Gptq);
  const ModelWeights back = load_checkpoint(dir.string());
  EXPECT_NE(back.source.find("GPTQ int8"), std::string::npos) << back.source;
  for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
  fs::remove_all(dir);
}

// An MoE GPTQ release lists the modules under a layer in 4 bits (optimum's modules_in_block_to_quantize):
// the dense layer's FFN and the experts, not the routers; the compiler reads that back.
TEST(Int4Checkpoint, MoeGptqListsItsQuantizedModules) {
  const ModelWeights w = random_weights(data_model("tiny-qwen3-moe-gptq.yaml"), 5);
  const fs::path dir = scratch("gptq_moe");
  write_checkpoint(dir.string(), w);
  const std::string config = read_text(dir / "config.json");
  const nlohmann::json listed =
      nlohmann::json::parse(config)["quantization_config"]["modules_in_block_to_quantize"];
  ASSERT_EQ(listed.size(), 1u);
  const std::string names = listed[0].dump();
  for (const char* name : {"\"self_attn.o_proj\"", "\"mlp.gate_proj\"", "\"mlp.experts.7.down_proj\""})
    EXPECT_NE(names.find(name), std::string::npos) << name << " in " << names;
  EXPECT_EQ(names.find("\"mlp.gate\""), std::string::npos) << names;
  EXPECT_EQ(compiler::import_hf_config(config, "config.json").expert_dtype, DType::kInt4Gptq);
  const ModelWeights back = load_checkpoint(dir.string());
  for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
  fs::remove_all(dir);
}

// A release's scales are arbitrary and its groups may be permuted (GPTQ act-order, g_idx): an element is
// (q - zero) x scale of the group g_idx names. Taking every input into group 0 scales the second group's
// elements by scale0 / scale1 (powers of two here: exact).
TEST(Int4Checkpoint, GIdxAssignsEachInputItsGroup) {
  const ModelWeights w = random_weights(gptq_qwen2(), 6);
  const fs::path dir = scratch("gidx");
  write_checkpoint(dir.string(), w);
  RawFile f(dir / "model.safetensors");
  const std::string up = "model.layers.1.mlp.up_proj";  // [512, 256]: two groups
  std::memset(f.at(up + ".g_idx"), 0, 4 * 256);
  f.save(dir / "model.safetensors");
  const WeightTensor& before = w.get(up + ".weight");
  const ModelWeights back = load_checkpoint(dir.string());
  const WeightTensor& after = back.get(up + ".weight");
  const RawFile g(dir / "model.safetensors");
  int changed = 0;
  for (std::int64_t r = 0; r < 512; ++r) {
    std::uint16_t s0 = 0, s1 = 0;  // scales [group][out]
    std::memcpy(&s0, g.data.data() + g.header[up + ".scales"]["data_offsets"][0].get<std::size_t>() + 2 * r,
                2);
    std::memcpy(
        &s1, g.data.data() + g.header[up + ".scales"]["data_offsets"][0].get<std::size_t>() + 2 * (512 + r),
        2);
    const float ratio = half_bits_to_float(s0) / half_bits_to_float(s1);
    for (std::int64_t c = 0; c < 256; ++c) {
      const std::size_t i = static_cast<std::size_t>(r * 256 + c);
      const float expected =
          c < 128 ? half_bits_to_float(before.data[i]) : half_bits_to_float(before.data[i]) * ratio;
      ASSERT_EQ(half_bits_to_float(after.data[i]), expected) << r << "," << c;
      changed += after.data[i] != before.data[i];
    }
  }
  EXPECT_GT(changed, 1000);
  fs::remove_all(dir);
}

TEST(Int4Checkpoint, MalformedPartsAreNamed) {
  const ModelWeights w = random_weights(gptq_qwen2(), 7);
  const std::string m = "model.layers.1.self_attn.v_proj";  // [64, 256]
  const std::vector<Corruption> cases = {
      {[&](RawFile& f) { f.header.erase(m + ".qzeros"); },
       "tensor " + m + ".qzeros is missing (GPTQ matrix, shape [2, 8])"},
      {[&](RawFile& f) { f.header[m + ".qweight"]["dtype"] = "F32"; },
       "tensor " + m + ".qweight: dtype \"F32\"; expected I32 (GPTQ)"},
      {[&](RawFile& f) { f.header[m + ".scales"]["dtype"] = "F32"; },
       "tensor " + m + ".scales: dtype \"F32\"; expected F16 or BF16 (GPTQ scales)"},
      {[&](RawFile& f) {
         f.header[m + ".qweight"]["shape"] = {256, 8};
       },
       "tensor " + m + ".qweight: shape [256, 8]; expected [32, 64]"},
      {[&](RawFile& f) {
         const std::int32_t bad = 5;
         std::memcpy(f.at(m + ".g_idx") + 4 * 17, &bad, 4);
       },
       m + ": g_idx[17] is 5; expected a group 0..1"},
      {[&](RawFile& f) {
         const std::uint16_t negative = float_to_half_bits(-0.5f);
         std::memcpy(f.at(m + ".scales") + 2 * (64 + 3), &negative, 2);
       },
       m + ": the scale of output 3, group 1 is -0.5"},
  };
  expect_corruptions_named(w, scratch("bad"), cases);
}

// llm-compressor's W4A16 layout (compressed-tensors pack-quantized): NAME.weight_packed [out, in / 8] I32,
// NAME.weight_scale [out, in / 128] (F16 here; BF16 as the releases store it reads alike), NAME.weight_shape
// I64 [2]; config.json states compressed-tensors' W4A16 scheme, read back by the compiler.
// llm-compressor's W8A16: weight_packed [out, in / 4] of 8-bit fields, num_bits 8 in the config.
TEST(Int4Checkpoint, W8a16ReleaseLayoutWrittenAndReadBackBitForBit) {
  const ModelWeights w = random_weights(data_model("tiny-llama-w8a16.yaml"), 8);
  const fs::path dir = scratch("w8a16");
  write_checkpoint(dir.string(), w);
  RawFile f(dir / "model.safetensors");
  const std::string up = "model.layers.0.mlp.up_proj";  // [512, 256]
  EXPECT_EQ(f.header[up + ".weight_packed"]["shape"], shape(512, 64));
  EXPECT_EQ(f.header[up + ".weight_scale"]["shape"], shape(512, 2));
  const std::string config = read_text(dir / "config.json");
  EXPECT_EQ(
      nlohmann::json::parse(config)["quantization_config"]["config_groups"]["group_0"]["weights"]["num_bits"],
      8);
  EXPECT_EQ(compiler::import_hf_config(config, "config.json").linear_dtype, DType::kInt8Pack);
  const ModelWeights back = load_checkpoint(dir.string());
  EXPECT_NE(back.source.find("W8A16 int8"), std::string::npos) << back.source;
  for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
  fs::remove_all(dir);
}

TEST(Int4Checkpoint, W4a16ReleaseLayoutWrittenAndReadBackBitForBit) {
  const ModelWeights w = random_weights(data_model("tiny-llama-w4a16.yaml"), 8);
  const fs::path dir = scratch("w4a16");
  write_checkpoint(dir.string(), w, 2);
  write_checkpoint((dir / "one").string(), w);
  RawFile f(dir / "one" / "model.safetensors");
  const std::string up = "model.layers.0.mlp.up_proj";  // [512, 256]
  EXPECT_EQ(f.header[up + ".weight_packed"]["dtype"], "I32");
  EXPECT_EQ(f.header[up + ".weight_packed"]["shape"], shape(512, 32));
  EXPECT_EQ(f.header[up + ".weight_scale"]["shape"], shape(512, 2));
  EXPECT_EQ(f.header[up + ".weight_shape"]["dtype"], "I64");
  EXPECT_FALSE(f.header.contains(up + ".weight"));
  const std::string config = read_text(dir / "config.json");
  const nlohmann::json q = nlohmann::json::parse(config)["quantization_config"];
  EXPECT_EQ(q["format"], "pack-quantized");
  EXPECT_EQ(q["config_groups"]["group_0"]["weights"]["group_size"], 128);
  EXPECT_TRUE(q["config_groups"]["group_0"]["input_activations"].is_null());
  EXPECT_EQ(compiler::import_hf_config(config, "config.json").linear_dtype, DType::kInt4Pack);
  for (const fs::path& d : {dir, dir / "one"}) {
    const ModelWeights back = load_checkpoint(d.string());
    EXPECT_NE(back.source.find("W4A16 int4"), std::string::npos) << back.source;
    for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
  }
  // BF16 scales (the releases keep them in the model's dtype): powers of two convert exactly.
  const std::string scale = "model.layers.1.self_attn.o_proj.weight_scale";
  const std::size_t begin = f.header[scale]["data_offsets"][0], end = f.header[scale]["data_offsets"][1];
  for (std::size_t i = begin; i < end; i += 2) {
    std::uint16_t h = 0;
    std::memcpy(&h, f.data.data() + i, 2);
    const std::uint16_t b = float_to_bf16_bits(half_bits_to_float(h));
    std::memcpy(f.data.data() + i, &b, 2);
  }
  f.header[scale]["dtype"] = "BF16";
  f.save(dir / "one" / "model.safetensors");
  const ModelWeights back = load_checkpoint((dir / "one").string());
  for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
  fs::remove_all(dir);
}

// W4A16 with strategy channel (one scale per row: weight_scale [out, 1], group_size null), back bit for bit.
TEST(Int4Checkpoint, W4a16ChannelScalesWrittenAndReadBackBitForBit) {
  const ModelWeights w = random_weights(data_model("tiny-llama-w4a16-channel.yaml"), 8);
  EXPECT_EQ(w.spec.quant_group, compiler::kPerRowGroup);
  const fs::path dir = scratch("w4a16_channel");
  write_checkpoint(dir.string(), w);
  RawFile f(dir / "model.safetensors");
  EXPECT_EQ(f.header["model.layers.0.mlp.down_proj.weight_scale"]["shape"], shape(256, 1));
  const std::string config = read_text(dir / "config.json");
  const nlohmann::json weights =
      nlohmann::json::parse(config)["quantization_config"]["config_groups"]["group_0"]["weights"];
  EXPECT_EQ(weights["strategy"], "channel");
  EXPECT_TRUE(weights["group_size"].is_null());
  EXPECT_EQ(compiler::import_hf_config(config, "config.json").quant_group, compiler::kPerRowGroup);
  const ModelWeights back = load_checkpoint(dir.string());
  for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
  fs::remove_all(dir);
}

TEST(Int4Checkpoint, W4a16WeightShapeMustMatch) {
  const ModelWeights w = random_weights(data_model("tiny-llama-w4a16.yaml"), 9);
  const std::string m = "model.layers.0.self_attn.k_proj";  // [64, 256]
  const std::vector<Corruption> cases = {
      {[&](RawFile& f) {
         const std::int64_t wrong = 65;
         std::memcpy(f.at(m + ".weight_shape"), &wrong, 8);
       },
       "tensor " + m + ".weight_shape: holds [65, 256]; expected [64, 256] (the matrix's outputs, inputs)"},
      {[&](RawFile& f) { f.header[m + ".weight_shape"]["dtype"] = "F32"; },
       "tensor " + m + ".weight_shape: dtype \"F32\"; expected I64 or I32 (W4A16 weight_shape)"},
      {[&](RawFile& f) { f.header.erase(m + ".weight_scale"); },
       "tensor " + m + ".weight_scale is missing (W4A16 matrix, shape [64, 2])"},
  };
  expect_corruptions_named(w, scratch("bad_w4a16"), cases);
}

// Matrices of whole groups of 128 inputs and words of 8 outputs only; one quantization_config states one
// method: AWQ projections beside GPTQ experts are refused before anything is written.
TEST(Int4Checkpoint, ShapesAndMixedFormatsAreRefused) {
  compiler::ModelSpec narrow = gptq_qwen2();
  narrow.ffn = 320;
  EXPECT_NE(
      error_of([&] { random_weights(narrow, 1); })
          .find("linear_dtype: model.layers.0.mlp.down_proj.weight has 256 outputs and 320 inputs; int4_gptq "
                "matrices need their inputs in whole groups of 128"),
      std::string::npos);
  compiler::ModelSpec mixed = awq_mixtral();
  mixed.expert_dtype = DType::kInt4Gptq;
  const ModelWeights w = random_weights(mixed, 1);
  const fs::path dir = scratch("mixed");
  EXPECT_NE(error_of([&] {
              write_checkpoint(dir.string(), w);
            }).find("linear_dtype int4_awq with expert_dtype int4_gptq cannot be stated in config.json"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(dir));
}

}  // namespace
}  // namespace duplex::runtime::functional
