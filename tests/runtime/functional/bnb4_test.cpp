// bitsandbytes' 4-bit matrices (nf4, nf4_dq, bnb_fp4, bnb_fp4_dq) in functional emulation: the codec against
// its definition (bnb4.hpp: two indices a byte, the first high; code x absmax in float rounded once to FP16;
// FP4's code as bitsandbytes' dequantization kernel's constants, its indices as its quantizer takes them;
// double quantization's absmax from its 8-bit codes, nested map, nested scales and offset), the grid duplex
// writes (exact on reading back, and stable under rounding again), and checkpoints written as transformers'
// load_in_4bit releases store them and read back bit for bit, their quant_map and nested scales used as
// stored, and the errors naming the tensor.
#include "duplex/runtime/functional/bnb4.hpp"

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
using testing::data_model;
using testing::error_of;
using testing::expect_corruptions_named;
using testing::RawFile;
using testing::read_text;

// Deterministic FP16 values of about `scale`, the rows scaled apart.
std::vector<std::uint16_t> values(std::int64_t rows, std::int64_t cols, float scale) {
  return testing::lcg_values(rows, cols, scale, 12345u);
}

TEST(Nf4Codec, TwoIndicesAByteTheFirstInTheHighNibble) {
  const std::vector<std::uint8_t> q = {1, 2, 3, 15, 0};
  const std::vector<std::uint8_t> bytes = pack_bnb4(q);
  EXPECT_EQ(bytes, (std::vector<std::uint8_t>{0x12, 0x3F, 0x00}));
  EXPECT_EQ(unpack_bnb4(bytes.data(), 5), q);
  EXPECT_EQ(nf4_code()[0], -1.0f);
  EXPECT_EQ(nf4_code()[7], 0.0f);
  EXPECT_EQ(nf4_code()[15], 1.0f);
  EXPECT_EQ(&bnb4_code(DType::kNf4Dq), &nf4_code());
  EXPECT_EQ(&bnb4_code(DType::kBnbFp4), &fp4_code());
}

// FP4's code is bitsandbytes' dequantization kernel's (dDequantizeFP4Tree's float constants by the 3 bits
// under the sign bit 8): 0, 1/192, 2/3, 1, 1/3, 1/2, 1/6, 1/4, then their negatives.
TEST(Fp4Codec, TheCodeIsTheKernelsConstants) {
  const float kernel[8] = {0.00000000f, 5.208333333e-03f, 0.66666667f, 1.00000000f,
                           0.33333333f, 0.50000000f,      0.16666667f, 0.25000000f};
  for (std::size_t j = 0; j < 8; ++j) {
    EXPECT_EQ(fp4_code()[j], kernel[j]) << j;
    EXPECT_EQ(fp4_code()[j + 8], -kernel[j]) << j;
  }
  EXPECT_TRUE(std::signbit(fp4_code()[8]));  // -0
}

// Rounding to the FP4 grid takes bitsandbytes' quantizer's index (dQuantizeFP4): the sign bit for a negative
// value, then the magnitude by its pivots, a value on a pivot to the smaller magnitude; a small negative
// value is -0 (code 8), and -0 keeps code 8 (dQuantizeFP4 would take +0), so it reads back as it was. One
// block of absmax 1.
TEST(Fp4Codec, RoundingTakesTheQuantizersIndex) {
  const std::pair<float, float> cases[] = {
      {0.0859375f, 1.0f / 192},    // on the pivot 11/128 (FP16 holds it): the smaller magnitude
      {-0.0859375f, -1.0f / 192},  //   the same below zero
      {0.0864258f, 1.0f / 6},      // above it
      {0.2902832f, 0.25f},         // under 7/24
      {0.2917480f, 1.0f / 3},      // over it
      {0.5830078f, 0.5f},          // under the pivot 0.583333
      {0.5834961f, 2.0f / 3},      // over it
      {0.0025978f, 0.0f},          // under 1/384
      {-0.0026093f, -1.0f / 192},  // over it, below zero
      {0.8330078f, 2.0f / 3},      // under 0.8333333
      {-0.0015f, -0.0f},           // under 1/384, below zero
      {-0.0f, -0.0f},
  };
  std::vector<std::uint16_t> v(64, float_to_half_bits(0.0f));
  v[0] = float_to_half_bits(1.0f);
  for (std::size_t i = 0; i < std::size(cases); ++i) v[i + 1] = float_to_half_bits(cases[i].first);
  round_to_bnb4(v.data(), 1, 64, DType::kBnbFp4);
  EXPECT_EQ(half_bits_to_float(v[0]), 1.0f);
  for (std::size_t i = 0; i < std::size(cases); ++i)
    EXPECT_EQ(v[i + 1], float_to_half_bits(cases[i].second)) << cases[i].first;
  const Bnb4Matrix m = quantize_bnb4(v.data(), 1, 64, DType::kBnbFp4, "w");
  EXPECT_EQ(m.q[0], 3);   // +1
  EXPECT_EQ(m.q[2], 9);   // -1/192
  EXPECT_EQ(m.q[11], 8);  // -0
  EXPECT_EQ(m.q[12], 8);
  EXPECT_EQ(m.q[63], 0);  // +0
  EXPECT_EQ(dequantize_bnb4(m, "w"), v);
}

// Element i is code[q] x absmax[i / 64] in float, rounded once to FP16; the last block may be short.
TEST(Nf4Codec, AnElementIsItsCodeTimesItsBlocksAbsmax) {
  Bnb4Matrix m;
  m.rows = 2;
  m.cols = 65;  // 130 elements: blocks of 64, 64 and 2
  for (int i = 0; i < 130; ++i) m.q.push_back(static_cast<std::uint8_t>(i % 16));
  m.absmax = {0.5f, 3.0f, 1e-3f};
  const std::vector<std::uint16_t> out = dequantize_bnb4(m, "m");
  ASSERT_EQ(out.size(), 130u);
  for (int i = 0; i < 130; ++i)
    EXPECT_EQ(out[static_cast<std::size_t>(i)],
              float_to_half_bits(nf4_code()[static_cast<std::size_t>(i % 16)] *
                                 m.absmax[static_cast<std::size_t>(i / 64)]))
        << i;
  Bnb4Matrix fp4 = m;  // the same with FP4's code
  fp4.code = fp4_code();
  const std::vector<std::uint16_t> fp4_out = dequantize_bnb4(fp4, "m");
  EXPECT_EQ(half_bits_to_float(fp4_out[3]), 0.5f);    // code 1 x 0.5
  EXPECT_EQ(half_bits_to_float(fp4_out[75]), -3.0f);  // code -1 (11) x 3
  EXPECT_EQ(fp4_out[72], float_to_half_bits(-0.0f));  // code -0 (8)
  EXPECT_EQ(half_bits_to_float(out[15]), 0.5f);       // code 1 x 0.5
  EXPECT_EQ(half_bits_to_float(out[64]), -3.0f);      // code -1 x 3
  m.code[15] = 2.0f;                                  // a checkpoint's own quant_map
  EXPECT_EQ(half_bits_to_float(dequantize_bnb4(m, "m")[15]), 1.0f);
  m.absmax[1] = 70000.0f;  // code -1 x 70000 is beyond FP16
  EXPECT_NE(error_of([&] { dequantize_bnb4(m, "m"); }).find("m: element (0, 64) = -70000"),
            std::string::npos);
  m.absmax[1] = std::nanf("");
  EXPECT_NE(error_of([&] { dequantize_bnb4(m, "m"); }).find("m: block 1 has absmax nan"), std::string::npos);
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

// Rounded to duplex's grid, weights quantize back exactly and round to themselves again: nf4's and bnb_fp4's
// absmax the block's largest magnitude; with double quantization a power of two the block's largest reaches,
// stored as map entries 255 - (K - e) under nested scales 2^K (two nested groups here: 260 blocks).
TEST(Bnb4Codec, RoundedWeightsComeBackExactly) {
  for (const DType format : {DType::kNf4, DType::kNf4Dq, DType::kBnbFp4, DType::kBnbFp4Dq}) {
    SCOPED_TRACE(compiler::dtype_name(format));
    const bool nested = compiler::bnb_nested(format);
    const std::int64_t rows = 4, cols = 4160;
    std::vector<std::uint16_t> v = values(rows, cols, 0.1f);
    round_to_bnb4(v.data(), rows, cols, format);
    const Bnb4Matrix m = quantize_bnb4(v.data(), rows, cols, format, "w");
    ASSERT_EQ(m.blocks(), 260);
    EXPECT_EQ(m.code, bnb4_code(format));
    EXPECT_EQ(dequantize_bnb4(m, "w"), v);
    std::vector<std::uint16_t> again = v;
    round_to_bnb4(again.data(), rows, cols, format);
    EXPECT_EQ(again, v);
    int changed = 0;
    const std::vector<std::uint16_t> raw = values(rows, cols, 0.1f);
    for (std::size_t i = 0; i < v.size(); ++i) changed += v[i] != raw[i];
    EXPECT_GT(changed, 10000);
    const Bnb4Packed p = pack_bnb4_matrix(m, format, "bfloat16");
    EXPECT_EQ(p.weight.size(), static_cast<std::size_t>(rows * cols / 2));
    EXPECT_EQ(p.quant_map, bnb4_code(format));
    const nlohmann::json state = nlohmann::json::parse(p.quant_state);
    EXPECT_EQ(state["quant_type"], compiler::bnb_quant_type(format));
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
  round_to_bnb4(off.data(), 2, 64, DType::kNf4);
  off[70] = float_to_half_bits(half_bits_to_float(off[70]) * 0.9f);
  EXPECT_NE(
      error_of([&] { quantize_bnb4(off.data(), 2, 64, DType::kNf4, "w"); }).find("w: element (1, 6) = "),
      std::string::npos);
  EXPECT_NE(error_of([&] {
              quantize_bnb4(off.data(), 2, 64, DType::kBnbFp4, "w");
            }).find("is not on the bnb_fp4 grid"),
            std::string::npos);
}

nlohmann::json shape(std::int64_t a, std::int64_t b) {
  return nlohmann::json::array({a, b});
}
// The quant_state JSON of matrix `name` (its weight's name, bnb_4bit_quant_type `type`) in f.
nlohmann::json quant_state(RawFile& f, const std::string& name, const std::string& type) {
  const std::string key = name + ".quant_state.bitsandbytes__" + type;
  return nlohmann::json::parse(std::string(f.at(key), f.header[key]["shape"][0].get<std::size_t>()));
}
// Replaces the first `from` in matrix `name`'s quant_state bytes (bnb_4bit_quant_type `type`) by `to` (as
// long).
void edit_quant_state(RawFile& f, const std::string& name, const std::string& from, const std::string& to,
                      const std::string& type = "nf4") {
  const std::string key = name + ".quant_state.bitsandbytes__" + type;
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
TEST(Bnb4Checkpoint, ReleaseLayoutWrittenAndReadBackBitForBit) {
  for (const auto& [file, dtype] :
       {std::pair{"tiny-llama-nf4-dq.yaml", DType::kNf4Dq}, std::pair{"tiny-qwen2-nf4.yaml", DType::kNf4},
        std::pair{"tiny-llama-bnb-fp4.yaml", DType::kBnbFp4},
        std::pair{"tiny-qwen2-bnb-fp4-dq.yaml", DType::kBnbFp4Dq}}) {
    SCOPED_TRACE(file);
    const bool nested = compiler::bnb_nested(dtype);
    const std::string type(compiler::bnb_quant_type(dtype));
    const ModelWeights w = random_weights(data_model(file), 9);
    for (int shards : {1, 3}) {
      const fs::path dir =
          testing::scratch_dir(fmt::format("bnb4_{}_{}", compiler::dtype_name(dtype), shards));
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
        EXPECT_EQ(quant_state(f, down, type)["shape"], shape(256, 512));
        EXPECT_EQ(quant_state(f, down, type)["quant_type"], type);
        EXPECT_FALSE(
            f.header.contains(down + ".quant_state.bitsandbytes__" + (type == "nf4" ? "fp4" : "nf4")));
        for (const char* kept : {"model.embed_tokens.weight", "model.norm.weight"})
          EXPECT_EQ(f.header[kept]["dtype"], "F16") << kept;              // duplex writes FP16
        if (f.header.contains("model.layers.1.self_attn.q_proj.bias")) {  // Qwen2's
          EXPECT_EQ(f.header["model.layers.1.self_attn.q_proj.bias"]["dtype"], "F16");
        }
        const std::string config = read_text(dir / "config.json");
        const nlohmann::json q = nlohmann::json::parse(config)["quantization_config"];
        EXPECT_EQ(q["quant_method"], "bitsandbytes");
        EXPECT_EQ(q["bnb_4bit_quant_type"], type);
        EXPECT_EQ(q["bnb_4bit_use_double_quant"], nested);
        EXPECT_EQ(compiler::import_hf_config(config, "config.json").linear_dtype, dtype);
      }
      const ModelWeights back = load_checkpoint(dir.string());
      EXPECT_EQ(back.spec.linear_dtype, dtype);
      EXPECT_NE(back.source.find(type == "nf4" ? "NF4" : "FP4"), std::string::npos) << back.source;
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
  for (std::size_t begin = 0; begin < before.size(); begin += kBnb4Block) {
    float top = 0, top_after = 0;
    for (std::size_t i = begin; i < begin + kBnb4Block; ++i) {
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

// An FP4 release's parts are named as FP4, its quant_state under bitsandbytes__fp4 stating fp4.
TEST(Fp4Checkpoint, MalformedPartsAreNamed) {
  const ModelWeights w = random_weights(data_model("tiny-llama-bnb-fp4.yaml"), 13);
  const std::string m = "model.layers.0.mlp.gate_proj.weight";  // [512, 256]
  const std::string state = m + ".quant_state.bitsandbytes__fp4";
  const std::vector<Corruption> cases = {
      {[&](RawFile& f) { f.header[m + ".absmax"]["dtype"] = "U8"; },
       "tensor " + m + ".absmax: dtype \"U8\"; expected F32 (FP4)"},
      {[&](RawFile& f) { edit_quant_state(f, m, "\"fp4\"", "\"nf4\"", "fp4"); },
       "tensor " + state + ": quant_type \"nf4\"; expected {quant_type: \"fp4\""},
      {[&](RawFile& f) { f.header.erase(state); }, "tensor " + state + " is missing"},
  };
  expect_corruptions_named(w, testing::scratch_dir("fp4_bad"), cases);
}

}  // namespace
}  // namespace duplex::runtime::functional
