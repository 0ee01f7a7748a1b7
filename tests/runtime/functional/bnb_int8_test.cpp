// bitsandbytes' LLM.int8() matrices (bnb_int8) in functional emulation: the codec against its definition
// (bnb_int8.hpp: code x SCB x (1 / 127) in FP32, rounded once to FP16), the grid duplex writes (exact on
// reading back, and stable under rounding again), checkpoints written as transformers' load_in_8bit releases
// store them (NAME.weight I8, NAME.SCB F32, NAME.weight_format U8) and read back bit for bit, the stored
// absmax used as stored, and the errors naming the tensor.
#include "duplex/runtime/functional/bnb_int8.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "checkpoint_files.hpp"
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

float half(std::uint16_t h) {
  return half_bits_to_float(h);
}

// Deterministic FP16 values of about `scale`, the rows scaled apart.
std::vector<std::uint16_t> values(std::int64_t rows, std::int64_t cols, float scale) {
  return testing::lcg_values(rows, cols, scale, 54321u);
}

// Code +-127 is the row's absmax itself, 0 is 0, and 1 under an absmax of 127 is 1 (127 x float(1 / 127)
// is 1 - 2^-25 in float, which rounds to 1 in FP16); an element beyond FP16, or a negative or NaN absmax,
// is an error naming the row.
TEST(BnbInt8Codec, AnElementIsItsCodeTimesItsRowsAbsmaxOver127) {
  BnbInt8Matrix m{2, 3, {127, -127, 0, 1, -1, 64}, {2.5f, 127.0f}};
  const std::vector<std::uint16_t> w = dequantize_bnb_int8(m, "m");
  EXPECT_EQ(half(w[0]), 2.5f);
  EXPECT_EQ(half(w[1]), -2.5f);
  EXPECT_EQ(half(w[2]), 0.0f);
  EXPECT_EQ(half(w[3]), 1.0f);
  EXPECT_EQ(half(w[4]), -1.0f);
  EXPECT_EQ(half(w[5]), 64.0f);
  m.scb[1] = -1;
  EXPECT_NE(error_of([&] { dequantize_bnb_int8(m, "m"); }).find("m: SCB[1] is -1; expected a finite absmax"),
            std::string::npos);
  m.scb[1] = NAN;
  EXPECT_NE(error_of([&] { dequantize_bnb_int8(m, "m"); }).find("m: SCB[1] is nan"), std::string::npos);
  m.scb[1] = 1e6f;
  EXPECT_NE(error_of([&] { dequantize_bnb_int8(m, "m"); })
                .find("m: element (1, 2) = 64 x 1000000 / 127 is "
                      "beyond FP16's range"),
            std::string::npos);
}

// Rounded to duplex's grid, weights quantize back exactly and round to themselves again: each row's SCB its
// largest magnitude (code +-127 there), a row of zeros SCB 0; a value off the grid is refused.
TEST(BnbInt8Codec, RoundedWeightsComeBackExactly) {
  const std::int64_t rows = 6, cols = 4096;
  std::vector<std::uint16_t> v = values(rows, cols, 0.1f);
  for (std::int64_t c = 0; c < cols; ++c) v[static_cast<std::size_t>(5 * cols + c)] = 0;  // a row of zeros
  const std::vector<std::uint16_t> raw = v;
  round_to_bnb_int8(v.data(), rows, cols);
  const BnbInt8Matrix m = quantize_bnb_int8(v.data(), rows, cols, "w");
  EXPECT_EQ(dequantize_bnb_int8(m, "w"), v);
  std::vector<std::uint16_t> again = v;
  round_to_bnb_int8(again.data(), rows, cols);
  EXPECT_EQ(again, v);
  int changed = 0;
  for (std::size_t i = 0; i < v.size(); ++i) changed += v[i] != raw[i];
  EXPECT_GT(changed, 10000);
  for (std::int64_t r = 0; r < rows; ++r) {
    float top = 0;
    int widest = 0;
    for (std::int64_t c = 0; c < cols; ++c) {
      top = std::max(top, std::fabs(half(raw[static_cast<std::size_t>(r * cols + c)])));
      widest = std::max(widest, std::abs(static_cast<int>(m.codes[static_cast<std::size_t>(r * cols + c)])));
    }
    EXPECT_EQ(m.scb[static_cast<std::size_t>(r)], top) << r;  // rounding kept each row's largest
    EXPECT_EQ(widest, r == 5 ? 0 : 127) << r;
  }
  std::vector<std::uint16_t> off = v;
  off[7] = float_to_half_bits(half(off[7]) + half(off[7]) / 300);  // a third of a code away
  if (off[7] == v[7]) off[7] = static_cast<std::uint16_t>(v[7] + 1);
  EXPECT_NE(error_of([&] { quantize_bnb_int8(off.data(), rows, cols, "w"); })
                .find("w: element (0, 7) = " + fmt::format("{}", half(off[7])) +
                      " is not an LLM.int8() value of its row"),
            std::string::npos);
  off = v;
  off[9] = float_to_half_bits(NAN);
  EXPECT_NE(error_of([&] {
              quantize_bnb_int8(off.data(), rows, cols, "w");
            }).find("w: element (0, 9) is not finite"),
            std::string::npos);
}

nlohmann::json shape(std::int64_t a, std::int64_t b) {
  return nlohmann::json::array({a, b});
}

// transformers' load_in_8bit layout: NAME.weight I8 [out, in], NAME.SCB F32 [out], NAME.weight_format U8 []
// holding 0 (row-major); biases, embeddings and norms in F16 (as duplex writes every checkpoint); config.json
// states bitsandbytes with load_in_8bit and the model's llm_int8_threshold, read back by the compiler as
// bnb_int8 at that threshold; one file or sharded, every weight back bit for bit.
TEST(BnbInt8Checkpoint, ReleaseLayoutWrittenAndReadBackBitForBit) {
  for (const char* file : {"tiny-llama-bnb-int8.yaml", "tiny-qwen2-bnb-int8.yaml"}) {
    SCOPED_TRACE(file);
    const ModelWeights w = random_weights(data_model(file), 9);
    for (int shards : {1, 3}) {
      const fs::path dir = testing::scratch_dir(fmt::format("bnb_int8_{}", shards));
      write_checkpoint(dir.string(), w, shards);
      if (shards == 1) {
        RawFile f(dir / "model.safetensors");
        const std::string down = "model.layers.0.mlp.down_proj";  // [256, 512]
        EXPECT_EQ(f.header[down + ".weight"]["dtype"], "I8");
        EXPECT_EQ(f.header[down + ".weight"]["shape"], shape(256, 512));
        EXPECT_EQ(f.header[down + ".SCB"]["dtype"], "F32");
        EXPECT_EQ(f.header[down + ".SCB"]["shape"], nlohmann::json::array({256}));
        EXPECT_EQ(f.header[down + ".weight_format"]["dtype"], "U8");
        EXPECT_EQ(f.header[down + ".weight_format"]["shape"], nlohmann::json::array());
        EXPECT_EQ(static_cast<int>(*f.at(down + ".weight_format")), 0);
        for (const char* kept : {"model.embed_tokens.weight", "model.norm.weight"})
          EXPECT_EQ(f.header[kept]["dtype"], "F16") << kept;  // duplex writes FP16
        EXPECT_FALSE(f.header.contains("model.embed_tokens.SCB"));
        const std::string config = read_text(dir / "config.json");
        const nlohmann::json q = nlohmann::json::parse(config)["quantization_config"];
        EXPECT_EQ(q["quant_method"], "bitsandbytes");
        EXPECT_EQ(q["load_in_8bit"], true);
        EXPECT_EQ(q["load_in_4bit"], false);
        EXPECT_EQ(q["llm_int8_threshold"], w.spec.llm_int8_threshold);  // 6 (the default), or the model's 2
        const compiler::ModelSpec read = compiler::import_hf_config(config, "config.json");
        EXPECT_EQ(read.linear_dtype, DType::kBnbInt8);
        EXPECT_EQ(read.llm_int8_threshold, w.spec.llm_int8_threshold);
      }
      const ModelWeights back = load_checkpoint(dir.string());
      EXPECT_EQ(back.spec.linear_dtype, DType::kBnbInt8);
      EXPECT_NE(back.source.find("LLM.int8() converted to FP16"), std::string::npos) << back.source;
      ASSERT_EQ(back.tensors.size(), w.tensors.size());
      for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
      fs::remove_all(dir);
    }
  }
}

// A release's SCB is read as stored: doubling a matrix's doubles its weights (a power of two: exact).
TEST(BnbInt8Checkpoint, TheStoredAbsmaxIsUsed) {
  const ModelWeights w = random_weights(data_model("tiny-llama-bnb-int8.yaml"), 10);
  const fs::path dir = testing::scratch_dir("bnb_int8_scb");
  write_checkpoint(dir.string(), w);
  RawFile f(dir / "model.safetensors");
  const std::string o = "model.layers.1.self_attn.o_proj";
  for (std::size_t i = 0; i < 256; ++i) {
    float v = 0;
    std::memcpy(&v, f.at(o + ".SCB") + 4 * i, 4);
    v *= 2;
    std::memcpy(f.at(o + ".SCB") + 4 * i, &v, 4);
  }
  f.save(dir / "model.safetensors");
  const std::vector<std::uint16_t>& before = w.get(o + ".weight").data;
  const ModelWeights back = load_checkpoint(dir.string());
  const std::vector<std::uint16_t>& after = back.get(o + ".weight").data;
  for (std::size_t i = 0; i < before.size(); ++i) ASSERT_EQ(half(after[i]), 2 * half(before[i])) << i;
  fs::remove_all(dir);
}

// bitsandbytes before 0.41 saved no weight_format (transformers reads its absence as row-major): without
// any, one file or sharded, every weight reads back the same.
TEST(BnbInt8Checkpoint, AnAbsentWeightFormatIsRowMajor) {
  const ModelWeights w = random_weights(data_model("tiny-qwen2-bnb-int8.yaml"), 12);
  for (int shards : {1, 3}) {
    SCOPED_TRACE(shards);
    const fs::path dir = testing::scratch_dir(fmt::format("bnb_int8_noformat_{}", shards));
    write_checkpoint(dir.string(), w, shards);
    int dropped = 0;
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.path().extension() != ".safetensors") continue;
      RawFile f(entry.path());
      for (auto it = f.header.begin(); it != f.header.end();)
        if (it.key().ends_with(".weight_format")) {
          it = f.header.erase(it);
          ++dropped;
        } else {
          ++it;
        }
      f.save(entry.path());
    }
    EXPECT_EQ(dropped, 2 * 7);  // 2 layers x (q, k, v, o, gate, up, down)
    if (shards > 1) {
      nlohmann::json index = testing::read_json(dir / "model.safetensors.index.json");
      for (auto it = index["weight_map"].begin(); it != index["weight_map"].end();)
        it = it.key().ends_with(".weight_format") ? index["weight_map"].erase(it) : std::next(it);
      std::ofstream(dir / "model.safetensors.index.json") << index.dump();
    }
    const ModelWeights back = load_checkpoint(dir.string());
    for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
    fs::remove_all(dir);
  }
}

TEST(BnbInt8Checkpoint, MalformedPartsAreNamed) {
  const ModelWeights w = random_weights(data_model("tiny-llama-bnb-int8.yaml"), 11);
  const std::string m = "model.layers.1.self_attn.v_proj";  // [64, 256]
  auto set_byte = [](RawFile& f, const std::string& tensor, std::size_t at, char value) {
    f.at(tensor)[at] = value;
  };
  const std::vector<Corruption> cases = {
      {[&](RawFile& f) { f.header.erase(m + ".SCB"); }, "tensor " + m + ".SCB is missing"},
      {[&](RawFile& f) { f.header[m + ".weight"]["dtype"] = "U8"; },
       "tensor " + m + ".weight: dtype \"U8\"; expected I8 (LLM.int8())"},
      {[&](RawFile& f) { f.header[m + ".SCB"]["dtype"] = "F16"; },
       "tensor " + m + ".SCB: dtype \"F16\"; expected F32 (LLM.int8())"},
      {[&](RawFile& f) { f.header[m + ".SCB"]["shape"] = {32}; },
       "tensor " + m + ".SCB: shape [32]; expected [64]"},
      {[&](RawFile& f) { set_byte(f, m + ".weight_format", 0, 2); },
       "tensor " + m + ".weight_format: holds 2 (col_turing); expected 0 (row-major codes"},
      {[&](RawFile& f) { set_byte(f, m + ".weight_format", 0, 9); },
       "tensor " + m + ".weight_format: holds 9 (not a bitsandbytes layout)"},
      {[&](RawFile& f) {
         const float minus = -1;
         std::memcpy(f.at(m + ".SCB") + 4 * 3, &minus, 4);
       },
       m + ".weight: SCB[3] is -1; expected a finite absmax >= 0"},
  };
  expect_corruptions_named(w, testing::scratch_dir("bnb_int8_bad"), cases);
}

}  // namespace
}  // namespace duplex::runtime::functional
