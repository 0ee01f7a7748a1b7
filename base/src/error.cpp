#include "duplex/base/error.hpp"

namespace duplex {
namespace {
std::string config_message(const std::string& file, const std::string& key, const std::string& problem,
                           const std::string& expected) {
  std::string m = file.empty() ? std::string("<config>") : file;
  if (!key.empty()) m += ": " + key;
  m += ": " + problem;
  if (!expected.empty()) m += "; expected " + expected;
  return m;
}
}  // namespace

ConfigError::ConfigError(std::string file, std::string key, const std::string& problem,
                         const std::string& expected)
    : Error(config_message(file, key, problem, expected)), file_(std::move(file)), key_(std::move(key)) {}

void internal_error(const char* file, int line, const std::string& what) {
  throw InternalError(std::string("internal error (a duplex bug) at ") + file + ":" + std::to_string(line) +
                      ": " + what);
}

}  // namespace duplex
