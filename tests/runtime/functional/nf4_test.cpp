// bitsandbytes' NF4 matrices (nf4, nf4_dq) in functional emulation: the codec against its definition
// (nf4.hpp: two indices a byte, the first high; code x absmax in float rounded once to FP16; double
// quantization's absmax from its 8-bit codes, nested map, nested scales and offset), the grid duplex writes
// (exact on reading back, and stable under rounding again), and checkpoints written as transformers'
// load_in_4bit releases store them and read back bit for bit, their quant_map and nested scales used as
// stored, and the errors naming the tensor.
#include "duplex/runtime/functional/nf4.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
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
using testing::error_of;
using testing::expect_corruptions_named;
using testing::RawFile;

// Deterministic FP16 values of about `scale` (a linear congruential sequence), the rows scaled apart.
std::vector<std::uint16_t> values(std::int64_t rows, std::int64_t cols, float scale) {
  std::vector<std::uint16_t> v;
  std::uint32_t x = 12345;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      x = x * 1664525u + 1013904223u;
      const float u = static_cast<float>(x >> 8) / 16777216.0f - 0.5f;  // [-0.5, 0.5)
      v.push_back(float_to_half_bits(u * scale * static_cast<float>(1 + r % 3)));
    }
  return v;
}

TEST(Nf4Codec, TwoIndicesAByteTheFirstInTheHighNibble) {
  const std::vector<std::uint8_t> q = {1, 2, 3, 15, 0};
  const std::vector<std::uint8_t> bytes = pack_nf4(q);
  EXPECT_EQ(bytes, (std::vector<std::uint8_t>{0x12, 0x3F, 0x00}));
  EXPECT_EQ(unpack_nf4(bytes.data(), 5), q);
  EXPECT_EQ(nf4_code()[0], -1.0f);
  EXPECT_EQ(nf4_code()[7], 0.0f);
  EXPECT_EQ(nf4_code()[15], 1.0f);
}

// Element i is code[q] x absmax[i / 64] in float, rounded once to FP16; the last block may be short.
TEST(Nf4Codec, AnElementIsItsCodeTimesItsBlocksAbsmax) {
  Nf4Matrix m;
  m.rows = 2;
  m.cols = 65;  // 130 elements: blocks of 64, 64 and 2
  for (int i = 0; i < 130; ++i) m.q.push_back(static_cast<std::uint8_t>(i % 16));
  m.absmax = {0.5f, 3.0f, 1e-3f};
  const std::vector<std::uint16_t> out = dequantize_nf4(m, "m");
  ASSERT_EQ(out.size(), 130u);
  for (int i = 0; i < 130; ++i)
    EXPECT_EQ(out[static_cast<std::size_t>(i)],
              float_to_half_bits(nf4_code()[static_cast<std::size_t>(i % 16)] *
                                 m.absmax[static_cast<std::size_t>(i / 64)]))
        << i;
  EXPECT_EQ(half_bits_to_float(out[15]), 0.5f);   // code 1 x 0.5
  EXPECT_EQ(half_bits_to_float(out[64]), -3.0f);  // code -1 x 3
  m.code[15] = 2.0f;                              // a checkpoint's own quant_map
  EXPECT_EQ(half_bits_to_float(dequantize_nf4(m, "m")[15]), 1.0f);
  m.absmax[1] = 70000.0f;  // code -1 x 70000 is beyond FP16
  EXPECT_NE(error_of([&] { dequantize_nf4(m, "m"); }).find("m: element (0, 64) = -70000"), std::string::npos);
  m.absmax[1] = std::nanf("");
  EXPECT_NE(error_of([&] { dequantize_nf4(m, "m"); }).find("m: block 1 has absmax nan"), std::string::npos);
}

// Double quantization: absmax[b] = nested_map[code_b] x nested_absmax[b / 256] + offset, in float, with
// whatever map the checkpoint stores (bitsandbytes' dynamic map is not a map of powers of two).
TEST(Nf4Codec, DoubleQuantizedAbsmaxIsMapTimesNestedScalePlusOffset) {
  std::vector<float> map(256);
  for (int j = 0; j < 256; ++j) map[static_cast<std::size_t>(j)] = static_cast<float>(j - 128) / 127.0f;
  std::vector<std::uint8_t> codes;
  for (int b = 0; b < 300; ++b) codes.push_back(static_cast<std::uint8_t>((b * 7) % 256));
  const std::vector<float> nested = {2.0f, 0.25f}, absmax = nested_absmax_values(codes, nested, map, 0.01f);
  ASSERT_EQ(absmax.size(), 300u);
  for (std::size_t b : {0u, 255u, 256u, 299u})
    EXPECT_EQ(absmax[b], map[codes[b]] * nested[b / 256] + 0.01f) << b;
  EXPECT_FLOAT_EQ(absmax[256], static_cast<float>((256 * 7) % 256 - 128) / 127.0f * 0.25f + 0.01f);
}

// Rounded to duplex's grid, weights quantize back exactly and round to themselves again: nf4's absmax the
// block's largest magnitude; nf4_dq's a power of two the block's largest reaches, stored as map entries
// 255 - (K - e) under nested scales 2^K (two nested groups here: 260 blocks).
TEST(Nf4Codec, RoundedWeightsComeBackExactly) {
  for (const bool nested : {false, true}) {
    SCOPED_TRACE(nested ? "nf4_dq" : "nf4");
    const std::int64_t rows = 4, cols = 4160;
    std::vector<std::uint16_t> v = values(rows, cols, 0.1f);
    round_to_nf4(v.data(), rows, cols, nested);
    const Nf4Matrix m = quantize_nf4(v.data(), rows, cols, nested, "w");
    ASSERT_EQ(m.blocks(), 260);
    EXPECT_EQ(dequantize_nf4(m, "w"), v);
    std::vector<std::uint16_t> again = v;
    round_to_nf4(again.data(), rows, cols, nested);
    EXPECT_EQ(again, v);
    int changed = 0;
    const std::vector<std::uint16_t> raw = values(rows, cols, 0.1f);
    for (std::size_t i = 0; i < v.size(); ++i) changed += v[i] != raw[i];
    EXPECT_GT(changed, 10000);
    const Nf4Packed p = pack_nf4_matrix(m, nested, "bfloat16");
    EXPECT_EQ(p.weight.size(), static_cast<std::size_t>(rows * cols / 2));
    const nlohmann::json state = nlohmann::json::parse(p.quant_state);
    EXPECT_EQ(state["quant_type"], "nf4");
    EXPECT_EQ(state["blocksize"], 64);
    EXPECT_EQ(state["dtype"], "bfloat16");
    EXPECT_EQ(state["shape"], nlohmann::json::array({rows, cols}));
    EXPECT_EQ(state.contains("nested_offset"), nested);
    if (!nested) {
      EXPECT_EQ(p.absmax, m.absmax);
      continue;
    }
    EXPECT_EQ(state["nested_blocksize"], 256);
    ASSERT_EQ(p.nested_absmax.size(), 2u);
    EXPECT_EQ(nested_absmax_values(p.absmax_codes, p.nested_absmax, p.nested_map, p.offset), m.absmax);
    for (std::size_t b = 0; b < m.absmax.size(); ++b) {
      int e = 0;
      EXPECT_EQ(std::frexp(m.absmax[b], &e), 0.5f) << b;  // a power of two
    }
  }
  std::vector<std::uint16_t> off = values(2, 64, 0.1f);
  round_to_nf4(off.data(), 2, 64, false);
  off[70] = float_to_half_bits(half_bits_to_float(off[70]) * 0.9f);
  EXPECT_NE(error_of([&] { quantize_nf4(off.data(), 2, 64, false, "w"); }).find("w: element (1, 6) = "),
            std::string::npos);
}

compiler::ModelSpec data_model(const char* file) {
  return compiler::load_model(std::string(DUPLEX_TEST_DATA_DIR) + "/" + file);
}
nlohmann::json shape(std::int64_t a, std::int64_t b) {
  return nlohmann::json::array({a, b});
}
std::string config_text(const fs::path& dir) {
  std::ifstream in(dir / "config.json");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
// The quant_state JSON of matrix `name` (its weight's name) in f.
nlohmann::json quant_state(RawFile& f, const std::string& name) {
  const std::string key = name + ".quant_state.bitsandbytes__nf4";
  return nlohmann::json::parse(std::string(f.at(key), f.header[key]["shape"][0].get<std::size_t>()));
}
// Replaces the first `from` in matrix `name`'s quant_state bytes by `to` (as long).
void edit_quant_state(RawFile& f, const std::string& name, const std::string& from, const std::string& to) {
  const std::string key = name + ".quant_state.bitsandbytes__nf4";
  std::string text(f.at(key), f.header[key]["shape"][0].get<std::size_t>());
  ASSERT_EQ(from.size(), to.size());
  const std::size_t at = text.find(from);
  ASSERT_NE(at, std::string::npos) << text;
  std::memcpy(f.at(key) + at, to.data(), to.size());
}

// transformers' load_in_4bit layout: NAME.weight U8 [n / 2, 1], NAME.weight.absmax (F32; double quantization:
// U8 codes beside nested_absmax F32 and nested_quant_map F32 [256]), quant_map F32 [16], the quant_state's
// JSON bytes; biases, embeddings and norms in F16 (as duplex writes every checkpoint); config.json states
// bitsandbytes, read back by the compiler as the same format; one file or sharded, every weight back bit for
// bit.
TEST(Nf4Checkpoint, ReleaseLayoutWrittenAndReadBackBitForBit) {
  for (const auto& [file, dtype] :
       {std::pair{"tiny-llama-nf4-dq.yaml", DType::kNf4Dq}, std::pair{"tiny-qwen2-nf4.yaml", DType::kNf4}}) {
    SCOPED_TRACE(file);
    const bool nested = dtype == DType::kNf4Dq;
    const ModelWeights w = random_weights(data_model(file), 9);
    for (int shards : {1, 3}) {
      const fs::path dir = testing::scratch_dir(fmt::format("nf4_{}_{}", nested, shards));
      write_checkpoint(dir.string(), w, shards);
      if (shards == 1) {
        RawFile f(dir / "model.safetensors");
        const std::string down = "model.layers.0.mlp.down_proj.weight";  // [256, 512]: 2048 blocks
        EXPECT_EQ(f.header[down]["dtype"], "U8");
        EXPECT_EQ(f.header[down]["shape"], shape(65536, 1));
        EXPECT_EQ(f.header[down + ".absmax"]["dtype"], nested ? "U8" : "F32");
        EXPECT_EQ(f.header[down + ".absmax"]["shape"], nlohmann::json::array({2048}));
        EXPECT_EQ(f.header[down + ".quant_map"]["shape"], nlohmann::json::array({16}));
        EXPECT_EQ(f.header.contains(down + ".nested_absmax"), nested);
        if (nested) {
          EXPECT_EQ(f.header[down + ".nested_absmax"]["shape"], nlohmann::json::array({8}));
          EXPECT_EQ(f.header[down + ".nested_quant_map"]["shape"], nlohmann::json::array({256}));
        }
        EXPECT_EQ(quant_state(f, down)["shape"], shape(256, 512));
        for (const char* kept : {"model.embed_tokens.weight", "model.norm.weight"})
          EXPECT_EQ(f.header[kept]["dtype"], "F16") << kept;  // duplex writes FP16
        if (!nested) {
          EXPECT_EQ(f.header["model.layers.1.self_attn.q_proj.bias"]["dtype"], "F16");
        }
        const std::string config = config_text(dir);
        const nlohmann::json q = nlohmann::json::parse(config)["quantization_config"];
        EXPECT_EQ(q["quant_method"], "bitsandbytes");
        EXPECT_EQ(q["bnb_4bit_quant_type"], "nf4");
        EXPECT_EQ(q["bnb_4bit_use_double_quant"], nested);
        EXPECT_EQ(compiler::import_hf_config(config, "config.json").linear_dtype, dtype);
      }
      const ModelWeights back = load_checkpoint(dir.string());
      EXPECT_EQ(back.spec.linear_dtype, dtype);
      EXPECT_NE(back.source.find("NF4"), std::string::npos) << back.source;
      ASSERT_EQ(back.tensors.size(), w.tensors.size());
      for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
      fs::remove_all(dir);
    }
  }
}

// A release's quant_map and nested scales are read as stored: doubling a matrix's quant_map doubles it (a
// power of two: exact), as does doubling a double-quantized one's nested_absmax.
TEST(Nf4Checkpoint, TheStoredMapAndNestedScalesAreUsed) {
  for (const char* part : {".quant_map", ".nested_absmax"}) {
    SCOPED_TRACE(part);
    const ModelWeights w = random_weights(data_model("tiny-llama-nf4-dq.yaml"), 10);
    const fs::path dir = testing::scratch_dir("nf4_map");
    write_checkpoint(dir.string(), w);
    RawFile f(dir / "model.safetensors");
    const std::string o = "model.layers.1.self_attn.o_proj.weight";
    const std::size_t count = f.header[o + part]["shape"][0].get<std::size_t>();
    for (std::size_t i = 0; i < count; ++i) {
      float v = 0;
      std::memcpy(&v, f.at(o + part) + 4 * i, 4);
      v *= 2;
      std::memcpy(f.at(o + part) + 4 * i, &v, 4);
    }
    f.save(dir / "model.safetensors");
    const WeightTensor& before = w.get(o);
    const ModelWeights back = load_checkpoint(dir.string());
    const WeightTensor& after = back.get(o);
    for (std::size_t i = 0; i < before.data.size(); ++i)
      ASSERT_EQ(half_bits_to_float(after.data[i]), 2 * half_bits_to_float(before.data[i])) << i;
    fs::remove_all(dir);
  }
}

// Double quantization's nested_offset is added to every block's absmax (duplex writes 0): with 1, a block's
// largest element (code +-1) reads +-(its absmax + 1) and its zeros stay 0.
TEST(Nf4Checkpoint, TheNestedOffsetIsAddedToEveryAbsmax) {
  const ModelWeights w = random_weights(data_model("tiny-llama-nf4-dq.yaml"), 12);
  const fs::path dir = testing::scratch_dir("nf4_offset");
  write_checkpoint(dir.string(), w);
  RawFile f(dir / "model.safetensors");
  const std::string o = "model.layers.0.self_attn.o_proj.weight";  // [256, 256]: 1024 blocks
  edit_quant_state(f, o, "\"nested_offset\":0.0", "\"nested_offset\":1.0");
  f.save(dir / "model.safetensors");
  const ModelWeights back = load_checkpoint(dir.string());
  const std::vector<std::uint16_t>& before = w.get(o).data;
  const std::vector<std::uint16_t>& after = back.get(o).data;
  for (std::size_t begin = 0; begin < before.size(); begin += kNf4Block) {
    float top = 0, top_after = 0;
    for (std::size_t i = begin; i < begin + kNf4Block; ++i) {
      top = std::max(top, std::abs(half_bits_to_float(before[i])));
      top_after = std::max(top_after, std::abs(half_bits_to_float(after[i])));
      if (half_bits_to_float(before[i]) == 0) {
        ASSERT_EQ(half_bits_to_float(after[i]), 0) << i;
      }
    }
    ASSERT_EQ(top_after, half_bits_to_float(float_to_half_bits(top + 1.0f))) << begin;
  }
  fs::remove_all(dir);
}

TEST(Nf4Checkpoint, MalformedPartsAreNamed) {
  const ModelWeights w = random_weights(data_model("tiny-llama-nf4-dq.yaml"), 11);
  const std::string m = "model.layers.1.self_attn.v_proj.weight";  // [64, 256]: 256 blocks
  const std::string state = m + ".quant_state.bitsandbytes__nf4";
  const std::vector<Corruption> cases = {
      {[&](RawFile& f) { f.header.erase(m + ".absmax"); }, "tensor " + m + ".absmax is missing"},
      {[&](RawFile& f) { f.header[m]["dtype"] = "I8"; }, "tensor " + m + ": dtype \"I8\"; expected U8 (NF4)"},
      {[&](RawFile& f) { f.header[m + ".quant_map"]["dtype"] = "F16"; },
       "tensor " + m + ".quant_map: dtype \"F16\"; expected F32 (NF4)"},
      {[&](RawFile& f) { f.header[m + ".nested_absmax"]["shape"] = {2}; },
       "tensor " + m + ".nested_absmax: shape [2]; expected [1]"},
      {[&](RawFile& f) { edit_quant_state(f, m, "\"nf4\"", "\"fp4\""); },
       "tensor " + state + ": quant_type \"fp4\"; expected {quant_type: \"nf4\""},
      {[&](RawFile& f) { edit_quant_state(f, m, "[64,256]", "[64,257]"); },
       "tensor " + state + ": shape [64,257] for a matrix of [64, 256]"},
      {[&](RawFile& f) { edit_quant_state(f, m, "nested_offset", "nested_offsex"); },
       "tensor " + state +
           ": no double quantization (no nested_offset), where the config says "
           "bnb_4bit_use_double_quant true"},
      {[&](RawFile& f) { edit_quant_state(f, m, "{", "["); },
       "tensor " + state + ": its bytes are not a JSON object"},
  };
  expect_corruptions_named(w, testing::scratch_dir("nf4_bad"), cases);
}

}  // namespace
}  // namespace duplex::runtime::functional
