// gpt-oss's MXFP4 experts in functional emulation: random weights on the MXFP4 grid, and a checkpoint in the
// release's layout (NAME_blocks / NAME_scales, U8) read back bit for bit, one file or sharded, and run.
// The encoder below is the test's own (from the OCP MX definition), not the library's.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/runtime/functional/model_weights.hpp"
#include "duplex/runtime/functional/run_session.hpp"
#include "duplex/runtime/functional/safetensors.hpp"

namespace duplex::runtime::functional {
namespace {

namespace fs = std::filesystem;

constexpr float kE2m1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

compiler::ModelSpec mxfp4_spec() {
  compiler::ModelSpec m = compiler::load_model("tiny-gpt-oss");
  m.expert_dtype = compiler::DType::kMxfp4;
  return m;
}

// Encodes one block of 32 FP16 values that lie on the MXFP4 grid: its scale byte and 16 bytes of codes (the
// first of each pair in the low nibble); fails the test when a value is off the grid.
void encode_block(const std::uint16_t* v, std::uint8_t& scale, std::uint8_t* bytes) {
  float max = 0.0f;
  for (int i = 0; i < 32; ++i) max = std::max(max, std::fabs(half_bits_to_float(v[i])));
  const int e = max == 0.0f ? 0 : static_cast<int>(std::floor(std::log2(max))) - 2;
  scale = static_cast<std::uint8_t>(e + 127);
  for (int i = 0; i < 32; ++i) {
    const float x = std::ldexp(half_bits_to_float(v[i]), -e);
    int code = -1;
    for (int c = 0; c < 8; ++c)
      if (kE2m1[c] == std::fabs(x)) code = c;
    ASSERT_GE(code, 0) << "value " << half_bits_to_float(v[i]) << " is not on the MXFP4 grid of its block";
    if (std::signbit(x) && code != 0) code |= 8;
    if (i % 2 == 0)
      bytes[i / 2] = static_cast<std::uint8_t>(code);
    else
      bytes[i / 2] = static_cast<std::uint8_t>(bytes[i / 2] | code << 4);
  }
}

struct RawTensor {
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> bytes;
};

void write_raw_safetensors(const fs::path& path, const std::map<std::string, RawTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  std::uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    header[name] = {
        {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::ofstream out(path, std::ios::binary);
  const std::uint64_t n = text.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& [name, t] : tensors)
    out.write(reinterpret_cast<const char*>(t.bytes.data()), static_cast<std::streamsize>(t.bytes.size()));
}

// The checkpoint of `w` in the BF16 layout (its experts as F16 tensors [E, in, out], no quantization_config).
void write_bf16_layout(const fs::path& dir, const ModelWeights& w) {
  ModelWeights bf16 = w;
  bf16.spec.expert_dtype = compiler::DType::kBf16;
  write_checkpoint(dir.string(), bf16);
}

// `dir` holds the BF16-layout checkpoint write_bf16_layout wrote; rewrites it in gpt-oss's release layout:
// each expert matrix tensor [E, in, out] as NAME_blocks [E, out, in / 32, 16] and NAME_scales [E, out, in /
// 32], and quantization_config mxfp4 in config.json. With `shards`, the scales go to a second file (an index
// maps them there).
void rewrite_as_mxfp4(const fs::path& dir, bool shards) {
  std::ifstream in(dir / "model.safetensors", std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, file.data(), 8);
  const auto header = nlohmann::json::parse(file.substr(8, header_len));
  const char* data = file.data() + 8 + header_len;
  std::map<std::string, RawTensor> main, scales;
  for (const auto& [name, e] : header.items()) {
    if (name == "__metadata__") continue;
    const auto shape = e["shape"].get<std::vector<std::int64_t>>();
    const auto offsets = e["data_offsets"].get<std::vector<std::uint64_t>>();
    const bool matrix =
        name.ends_with(".mlp.experts.gate_up_proj") || name.ends_with(".mlp.experts.down_proj");
    if (!matrix) {
      main[name] = {e["dtype"], shape, std::vector<std::uint8_t>(data + offsets[0], data + offsets[1])};
      continue;
    }
    ASSERT_EQ(e["dtype"], "F16");
    const std::int64_t experts = shape[0], rows_in = shape[1], cols_out = shape[2];
    std::vector<std::uint16_t> v(static_cast<std::size_t>(experts * rows_in * cols_out));
    std::memcpy(v.data(), data + offsets[0], v.size() * 2);
    RawTensor blocks{"U8", {experts, cols_out, rows_in / 32, 16}, {}},
        s{"U8", {experts, cols_out, rows_in / 32}, {}};
    blocks.bytes.resize(static_cast<std::size_t>(experts * cols_out * rows_in / 2));
    s.bytes.resize(static_cast<std::size_t>(experts * cols_out * rows_in / 32));
    for (std::int64_t x = 0; x < experts; ++x)
      for (std::int64_t o = 0; o < cols_out; ++o)
        for (std::int64_t b = 0; b < rows_in / 32; ++b) {
          std::uint16_t block[32];
          for (int i = 0; i < 32; ++i)
            block[i] = v[static_cast<std::size_t>((x * rows_in + b * 32 + i) * cols_out + o)];
          const std::size_t at = static_cast<std::size_t>((x * cols_out + o) * (rows_in / 32) + b);
          encode_block(block, s.bytes[at], blocks.bytes.data() + at * 16);
        }
    main[name + "_blocks"] = blocks;
    (shards ? scales : main)[name + "_scales"] = s;
  }
  fs::remove(dir / "model.safetensors");
  if (!shards) {
    write_raw_safetensors(dir / "model.safetensors", main);
  } else {
    write_raw_safetensors(dir / "model-00001-of-00002.safetensors", main);
    write_raw_safetensors(dir / "model-00002-of-00002.safetensors", scales);
    nlohmann::json index = {{"weight_map", nlohmann::json::object()}};
    for (const auto& [name, t] : main) index["weight_map"][name] = "model-00001-of-00002.safetensors";
    for (const auto& [name, t] : scales) index["weight_map"][name] = "model-00002-of-00002.safetensors";
    std::ofstream(dir / "model.safetensors.index.json") << index.dump(2);
  }
  std::ifstream config_in(dir / "config.json");
  nlohmann::json config = nlohmann::json::parse(config_in);
  config["quantization_config"] = {{"quant_method", "mxfp4"}};
  std::ofstream(dir / "config.json") << config.dump(2);
}

// Random weights of an MXFP4 model: every expert matrix on the MXFP4 grid (encode_block accepts every block),
// close to the FP16 weights of the same seed (within E2M1's largest step in its block), the other tensors
// identical.
TEST(Mxfp4, RandomExpertsAreOnTheGrid) {
  const ModelWeights q = random_weights(mxfp4_spec(), 5);
  compiler::ModelSpec plain_spec = mxfp4_spec();
  plain_spec.expert_dtype = plain_spec.dtype;
  const ModelWeights plain = random_weights(plain_spec, 5);
  int matrices = 0;
  for (const auto& [name, t] : q.tensors) {
    const WeightTensor& p = plain.get(name);
    const bool expert_matrix =
        name.find(".mlp.experts.") != std::string::npos && name.ends_with("_proj.weight");
    if (!expert_matrix) {
      EXPECT_EQ(t.data, p.data) << name;
      continue;
    }
    ++matrices;
    EXPECT_NE(t.data, p.data) << name;  // rounded
    for (std::size_t b = 0; b < t.data.size(); b += 32) {
      std::uint8_t scale = 0, bytes[16];
      encode_block(t.data.data() + b, scale, bytes);
      float max = 0.0f;
      for (int i = 0; i < 32; ++i) max = std::max(max, std::fabs(half_bits_to_float(p.data[b + i])));
      // E2M1's top gap (4 to 6) x the block's scale, also the most that saturating at 6 loses.
      const float step = std::ldexp(1.0f, static_cast<int>(std::floor(std::log2(max))) - 1);
      for (int i = 0; i < 32; ++i)
        ASSERT_LE(std::fabs(half_bits_to_float(t.data[b + i]) - half_bits_to_float(p.data[b + i])), step)
            << name << " element " << b + i;
    }
  }
  EXPECT_EQ(matrices, 4 * 8 * 3);  // 4 layers x 8 experts x gate, up, down
}

// A checkpoint in the release's MXFP4 layout reads back bit for bit (one file, or with the scales in another
// shard); a blocks tensor stored as F16 is an error naming it.
TEST(Mxfp4, ReleaseLayoutCheckpointReadsBackBitForBit) {
  const ModelWeights w = random_weights(mxfp4_spec(), 6);
  for (bool shards : {false, true}) {
    SCOPED_TRACE(shards ? "sharded" : "one file");
    const fs::path dir = fs::temp_directory_path() / fmt::format("duplex_mxfp4_{}_{}", shards, ::getpid());
    fs::remove_all(dir);
    write_bf16_layout(dir, w);
    rewrite_as_mxfp4(dir, shards);
    const ModelWeights back = load_checkpoint(dir.string());
    EXPECT_EQ(back.spec.expert_dtype, compiler::DType::kMxfp4);
    EXPECT_NE(back.source.find("MXFP4"), std::string::npos) << back.source;
    ASSERT_EQ(back.tensors.size(), w.tensors.size());
    for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
    fs::remove_all(dir);
  }
  const fs::path dir = fs::temp_directory_path() / fmt::format("duplex_mxfp4_bad_{}", ::getpid());
  fs::remove_all(dir);
  write_bf16_layout(dir, w);
  rewrite_as_mxfp4(dir, false);
  {  // the first layer's gate_up blocks relabelled F16 (same bytes, twice the elements' width)
    std::ifstream in(dir / "model.safetensors", std::ios::binary);
    std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::string from = R"("model.layers.0.mlp.experts.gate_up_proj_blocks":{"data_offsets")";
    ASSERT_NE(file.find(from), std::string::npos);
    const std::size_t at = file.find(R"("dtype":"U8")", file.find(from));
    file.replace(at, 12, R"("dtype":"F8")");
    std::ofstream(dir / "model.safetensors", std::ios::binary) << file;
  }
  try {
    load_checkpoint(dir.string());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("tensor model.layers.0.mlp.experts.gate_up_proj_blocks: dtype \"F8\"; "
                                   "expected U8 (MXFP4)"),
        std::string::npos)
        << e.what();
  }
  fs::remove_all(dir);
}

// write_checkpoint stores an MXFP4 model as released: its blocks and scales byte for byte the test's own
// encoding, quantization_config mxfp4; read back bit for bit. A value off the MXFP4 grid is refused, naming
// it, and nothing is written.
TEST(Mxfp4, WriterStoresTheReleaseLayout) {
  const ModelWeights w = random_weights(mxfp4_spec(), 7);
  const fs::path mine = fs::temp_directory_path() / fmt::format("duplex_mxfp4_w_{}", ::getpid());
  const fs::path theirs = fs::temp_directory_path() / fmt::format("duplex_mxfp4_t_{}", ::getpid());
  fs::remove_all(mine);
  fs::remove_all(theirs);
  write_checkpoint(mine.string(), w);
  write_bf16_layout(theirs, w);
  rewrite_as_mxfp4(theirs, false);
  auto read = [](const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::uint64_t n = 0;
    std::memcpy(&n, file.data(), 8);
    return std::pair{nlohmann::json::parse(file.substr(8, n)), file.substr(8 + n)};
  };
  const auto [a_header, a_data] = read(mine / "model.safetensors");
  const auto [b_header, b_data] = read(theirs / "model.safetensors");
  int quantized = 0;
  for (const auto& [name, e] : b_header.items()) {
    if (name == "__metadata__") continue;
    ASSERT_TRUE(a_header.contains(name)) << name;
    EXPECT_EQ(a_header[name]["dtype"], e["dtype"]) << name;
    EXPECT_EQ(a_header[name]["shape"], e["shape"]) << name;
    auto bytes = [](const nlohmann::json& entry, const std::string& data) {
      const auto o = entry["data_offsets"].get<std::vector<std::size_t>>();
      return data.substr(o[0], o[1] - o[0]);
    };
    EXPECT_EQ(bytes(a_header[name], a_data), bytes(e, b_data)) << name;
    quantized += e["dtype"] == "U8" ? 1 : 0;
  }
  EXPECT_EQ(quantized, 4 * 2 * 2);  // 4 layers x gate_up / down x blocks / scales
  std::ifstream config(mine / "config.json");
  EXPECT_EQ(nlohmann::json::parse(config)["quantization_config"]["quant_method"], "mxfp4");
  const ModelWeights back = load_checkpoint(mine.string());
  for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
  ModelWeights off = w;
  off.tensors.at("model.layers.1.mlp.experts.2.up_proj.weight").data[5] = float_to_half_bits(0.1f);
  fs::remove_all(mine);
  try {
    write_checkpoint(mine.string(), off);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.1.mlp.experts.gate_up_proj: element ["),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("is not on the MXFP4 grid"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(mine));
  fs::remove_all(theirs);
}

}  // namespace
}  // namespace duplex::runtime::functional
