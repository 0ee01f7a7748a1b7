#include "sweep_files.hpp"

#include <fmt/format.h>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "duplex/base/error.hpp"

namespace duplex::host {
namespace fs = std::filesystem;

void write_file_atomic(const fs::path& path, const std::string& text) {
  // Renaming over a device, a FIFO or a folder would replace it.
  if (fs::exists(path) && !fs::is_regular_file(path))
    throw Error(fmt::format("{}: is not a regular file; expected a file to write", path.string()));
  // The pid keeps two sweeps writing into one folder from sharing a temporary name.
  const fs::path tmp = fs::path(path.string() + fmt::format(".tmp{}", getpid()));
  {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) throw Error(fmt::format("{}: cannot write", tmp.string()));
    out << text;
    out.flush();
    if (!out) throw Error(fmt::format("{}: write failed", tmp.string()));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error(fmt::format("{}: cannot rename into place: {}", path.string(), ec.message()));
}

std::string read_text_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: missing or unreadable", path.string()));
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) throw Error(fmt::format("{}: read failed", path.string()));
  return s.str();
}

nlohmann::json read_json_file(const fs::path& path) {
  const std::string text = read_text_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(fmt::format("{}: not valid JSON ({}); expected a file written by duplex sweep", path.string(), e.what()));
  }
}

}  // namespace duplex::host
