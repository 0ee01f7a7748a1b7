#pragma once
// Test helpers for checkpoint files: a safetensors file as its parsed header and data bytes, to corrupt,
// rename or extend by hand and save back; the message of the duplex::Error a call throws; and a check that
// each of a list of corruptions is reported naming the file.
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include "../error_text.hpp"
#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/compiler/model_spec.hpp"
#include "duplex/runtime/functional/safetensors.hpp"

namespace duplex::runtime::functional::testing {

struct RawFile {
  nlohmann::json header = nlohmann::json::object();
  std::string data;

  RawFile() = default;
  explicit RawFile(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::uint64_t n = 0;
    std::memcpy(&n, file.data(), 8);
    header = nlohmann::json::parse(file.substr(8, n));
    data = file.substr(8 + n);
  }
  // The first data byte of `tensor`.
  char* at(const std::string& tensor) {
    return data.data() + header[tensor]["data_offsets"][0].get<std::size_t>();
  }
  // Appends an F16 tensor of zeros.
  void add_f16(const std::string& name, std::int64_t rows, std::int64_t cols) {
    const std::size_t bytes = static_cast<std::size_t>(rows * cols * 2);
    header[name] = {
        {"dtype", "F16"}, {"shape", {rows, cols}}, {"data_offsets", {data.size(), data.size() + bytes}}};
    data.append(bytes, '\0');
  }
  void save(const std::filesystem::path& path) const {
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    const std::uint64_t n = text.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << text << data;
  }
};

// An empty temporary directory path, <tmp>/duplex_<what>_<pid> (removed if it exists; not created).
inline std::filesystem::path scratch_dir(const std::string& what) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("duplex_" + what + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  return dir;
}

// The model file `file` in tests/runtime/functional/data (the test target's DUPLEX_TEST_DATA_DIR).
inline compiler::ModelSpec data_model(const std::string& file) {
  return compiler::load_model(std::string(DUPLEX_TEST_DATA_DIR) + "/" + file);
}

// The text of file `path` (a checkpoint's config.json).
inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The JSON document in file `path` (a checkpoint's config.json).
inline nlohmann::json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

using duplex::runtime::testing::error_of;

// Deterministic FP16 values of about `scale` (a linear congruential sequence from `seed`), rows x cols
// row-major, the rows scaled apart (row r by 1 + r mod 3).
inline std::vector<std::uint16_t> lcg_values(std::int64_t rows, std::int64_t cols, float scale,
                                             std::uint32_t seed) {
  std::vector<std::uint16_t> v;
  std::uint32_t x = seed;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      x = x * 1664525u + 1013904223u;
      const float u = static_cast<float>(x >> 8) / 16777216.0f - 0.5f;  // [-0.5, 0.5)
      v.push_back(float_to_half_bits(u * scale * static_cast<float>(1 + r % 3)));
    }
  return v;
}

// A corruption of a written checkpoint's model.safetensors, and what the error reading it then says after
// "<that file>: ".
using Corruption = std::pair<std::function<void(RawFile&)>, std::string>;

// For each case: writes `weights` as a checkpoint in `dir`, corrupts its model.safetensors, and expects
// load_checkpoint to fail naming the file and saying the case's text; removes `dir` after each.
inline void expect_corruptions_named(const ModelWeights& weights, const std::filesystem::path& dir,
                                     const std::vector<Corruption>& cases) {
  for (const auto& [corrupt, expected] : cases) {
    std::filesystem::remove_all(dir);
    write_checkpoint(dir.string(), weights);
    RawFile f(dir / "model.safetensors");
    corrupt(f);
    f.save(dir / "model.safetensors");
    const std::string error = error_of([&] { load_checkpoint(dir.string()); });
    EXPECT_NE(error.find((dir / "model.safetensors").string() + ": " + expected), std::string::npos)
        << "expected: " << expected << "\ngot: " << error;
    std::filesystem::remove_all(dir);
  }
}

}  // namespace duplex::runtime::functional::testing
