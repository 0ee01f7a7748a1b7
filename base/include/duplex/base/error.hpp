#pragma once
// Errors. Two kinds, kept apart as gem5 does:
//  - duplex::Error (and subclasses): the user's input is wrong (config, trace, model file, API call).
//    The message names what was wrong and what was expected; the CLI prints it and exits non-zero.
//  - duplex::InternalError via DUPLEX_ASSERT: a bug in duplex itself.
// Library code never calls exit(); it throws.
#include <stdexcept>
#include <string>

namespace duplex {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A configuration value is missing, unknown, of the wrong form or out of range.
// what() reads: "<file>: <key.path>: <problem>; expected <form>".
class ConfigError : public Error {
 public:
  ConfigError(std::string file, std::string key, const std::string& problem, const std::string& expected = {});
  const std::string& file() const { return file_; }
  const std::string& key() const { return key_; }

 private:
  std::string file_;
  std::string key_;
};

class InternalError : public std::logic_error {
 public:
  explicit InternalError(const std::string& what) : std::logic_error(what) {}
};

[[noreturn]] void internal_error(const char* file, int line, const std::string& what);

}  // namespace duplex

#define DUPLEX_ASSERT(cond, msg)                                                        \
  do {                                                                                  \
    if (!(cond)) ::duplex::internal_error(__FILE__, __LINE__, std::string(#cond ": ") + (msg)); \
  } while (0)
