#include "duplex/base/config_store.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <set>
#include <sstream>

#include "duplex/base/error.hpp"

namespace duplex {
namespace fs = std::filesystem;

namespace {
std::optional<fs::path> config_dir() {
  const char* dir = std::getenv("DUPLEX_CONFIG_DIR");
  if (dir == nullptr || *dir == '\0') return std::nullopt;
  return fs::path(dir);
}

bool looks_like_path(std::string_view s) {
  return s.find('/') != std::string_view::npos || s.ends_with(".yaml") || s.ends_with(".yml") ||
         s.ends_with(".json");
}
}  // namespace

std::string read_text_file(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw Error(fmt::format("{}: {}", path,
                            fs::is_directory(path, ec) ? "is a folder; expected a file" : "no such file"));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot open for reading", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error(fmt::format("{}: read error", path));
  return ss.str();
}

std::optional<ConfigText> read_store_file(std::string_view relative) {
  if (auto dir = config_dir()) {
    const fs::path p = *dir / std::string(relative);
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return ConfigText{read_text_file(p.string()), p.string()};
  }
  for (const auto& f : embedded_config_files()) {
    if (f.path == relative) return ConfigText{f.text, fmt::format("configs/{} (embedded)", f.path)};
  }
  return std::nullopt;
}

ConfigText resolve_config(std::string_view name_or_path, std::string_view kind) {
  if (name_or_path.empty()) throw Error(fmt::format("empty {} name; expected one of: {}", kind,
                                                    fmt::join(list_presets(kind), ", ")));
  // A bare name ("duplex") is always a preset, even when a file of that name sits in the working directory;
  // a path has a '/' or a .yaml/.json extension.
  std::error_code ec;
  if (looks_like_path(name_or_path) && fs::is_regular_file(std::string(name_or_path), ec)) {
    const std::string path(name_or_path);
    return ConfigText{read_text_file(path), path};
  }
  if (!looks_like_path(name_or_path)) {
    for (const char* ext : {".yaml", ".json"}) {
      if (auto t = read_store_file(fmt::format("{}/{}{}", kind, name_or_path, ext))) return *t;
    }
  } else {  // "devices/h100" or "devices/h100.yaml", relative to configs/
    for (const char* ext : {"", ".yaml", ".json"}) {
      if (auto t = read_store_file(fmt::format("{}{}", name_or_path, ext))) return *t;
    }
  }
  throw Error(fmt::format("{} \"{}\" is neither a file nor a preset; presets: {}", kind, name_or_path,
                          fmt::join(list_presets(kind), ", ")));
}

std::vector<std::string> list_presets(std::string_view kind) {
  std::set<std::string> names;
  const std::string prefix = std::string(kind) + "/";
  auto add = [&](const std::string& rel) {
    if (!rel.starts_with(prefix)) return;
    std::string stem = rel.substr(prefix.size());
    if (stem.find('/') != std::string::npos) return;
    for (const char* ext : {".yaml", ".json"})
      if (stem.ends_with(ext)) names.insert(stem.substr(0, stem.size() - std::string_view(ext).size()));
  };
  for (const auto& f : embedded_config_files()) add(f.path);
  if (auto dir = config_dir()) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(*dir / std::string(kind), ec))
      add(prefix + e.path().filename().string());
  }
  return {names.begin(), names.end()};
}

}  // namespace duplex
