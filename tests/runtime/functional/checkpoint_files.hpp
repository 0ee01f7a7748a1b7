#pragma once
// Test helpers for checkpoint files: a safetensors file as its parsed header and data bytes, to corrupt,
// rename or extend by hand and save back; and the message of the duplex::Error a call throws.
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "duplex/base/error.hpp"

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

// The message of the duplex::Error f throws, or "no error".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace duplex::runtime::functional::testing
