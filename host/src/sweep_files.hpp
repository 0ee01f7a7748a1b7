#pragma once
// File helpers shared by `duplex sweep` and `duplex report`: whole-file reads and atomic writes.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace duplex::host {

// Writes `text` to `path` through a temporary file in the same folder and a rename, so a reader (or a
// resumed sweep) never sees a half-written file. `path`'s folder must exist. Throws duplex::Error.
void write_file_atomic(const std::filesystem::path& path, const std::string& text);

// The whole file; duplex::Error naming the file when it cannot be read.
std::string read_text_file(const std::filesystem::path& path);

// Parses the file as JSON; duplex::Error naming the file (and the parser's position) when it is missing or
// not valid JSON.
nlohmann::json read_json_file(const std::filesystem::path& path);

}  // namespace duplex::host
