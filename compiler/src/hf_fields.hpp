#pragma once
// Typed access to a HuggingFace config.json's fields (internal to the compiler's importers): every error is
// a ConfigError naming the file and the field's path ("parent.key" in a nested object).
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "duplex/base/error.hpp"

namespace duplex::compiler {

class Fields {
 public:
  Fields(const nlohmann::json& j, std::string file, std::string prefix = "")
      : j_(j), file_(std::move(file)), prefix_(std::move(prefix)) {}

  // The fields of the nested object `key` (DBRX's attn_config / ffn_config); errors name "key.field".
  Fields child(const std::string& key) const {
    if (!j_.contains(key)) throw ConfigError(file_, prefix_ + key, "missing required field", "an object");
    if (!j_[key].is_object())
      throw ConfigError(file_, prefix_ + key, "is not an object", "an object of fields");
    return Fields(j_[key], file_, prefix_ + key + ".");
  }

  int integer(const char* key) const {
    if (!j_.contains(key)) throw ConfigError(file_, prefix_ + key, "missing required field", "an integer");
    return as_int(key);
  }
  int integer_or(const char* key, int fallback) const {
    return j_.contains(key) && !j_[key].is_null() ? as_int(key) : fallback;
  }
  bool boolean_or(const char* key, bool fallback) const {
    if (!j_.contains(key) || j_[key].is_null()) return fallback;
    if (!j_[key].is_boolean()) throw ConfigError(file_, prefix_ + key, "is not a boolean", "true or false");
    return j_[key].get<bool>();
  }
  double number_or(const char* key, double fallback) const {
    if (!j_.contains(key) || j_[key].is_null()) return fallback;
    if (!j_[key].is_number()) throw ConfigError(file_, prefix_ + key, "is not a number", "a number");
    return j_[key].get<double>();
  }
  std::string string_or(const char* key, const std::string& fallback) const {
    if (!j_.contains(key) || j_[key].is_null()) return fallback;
    if (!j_[key].is_string()) throw ConfigError(file_, prefix_ + key, "is not a string", "a string");
    return j_[key].get<std::string>();
  }
  std::vector<int> int_list_or_empty(const char* key) const {
    std::vector<int> out;
    if (!j_.contains(key) || j_[key].is_null()) return out;
    if (!j_[key].is_array())
      throw ConfigError(file_, prefix_ + key, "is not a list", "a list of layer indices");
    for (const auto& v : j_[key]) {
      if (!v.is_number_integer())
        throw ConfigError(file_, prefix_ + key, "holds a non-integer", "a list of layer indices");
      out.push_back(v.get<int>());
    }
    return out;
  }
  std::vector<std::string> string_list_or_empty(const char* key, const char* expected) const {
    std::vector<std::string> out;
    if (!j_.contains(key) || j_[key].is_null()) return out;
    if (!j_[key].is_array()) throw ConfigError(file_, prefix_ + key, "is not a list", expected);
    for (const auto& v : j_[key]) {
      if (!v.is_string())
        throw ConfigError(file_, prefix_ + key, fmt::format("holds {}", v.dump()), expected);
      out.push_back(v.get<std::string>());
    }
    return out;
  }
  bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }  // present, not null
  const nlohmann::json& raw() const { return j_; }
  const std::string& file() const { return file_; }
  std::string path(const char* key) const { return prefix_ + key; }  // "parent.key" in a nested object

 private:
  int as_int(const char* key) const {
    const nlohmann::json& v = j_[key];
    if (!v.is_number_integer() || v.get<long long>() < 0 || v.get<long long>() > (1LL << 30))
      throw ConfigError(file_, prefix_ + key, fmt::format("{} is not a non-negative integer", v.dump()),
                        "an integer");
    return v.get<int>();
  }
  const nlohmann::json& j_;
  std::string file_;
  std::string prefix_;  // "parent." for a nested object's fields
};

}  // namespace duplex::compiler
