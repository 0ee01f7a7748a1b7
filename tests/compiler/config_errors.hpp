#pragma once
// Test helpers: the error a model config raises, or "no error" when it is read.
#include <string>

#include "duplex/base/error.hpp"
#include "duplex/compiler/hf_import.hpp"
#include "duplex/compiler/model_spec.hpp"

namespace duplex::compiler::testing {

// A HuggingFace config.json's text, read as "config.json".
inline std::string hf_config_error(const std::string& json) {
  try {
    import_hf_config(json, "config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// Our model YAML's text, read as "x.yaml".
inline std::string model_yaml_error(const std::string& yaml) {
  try {
    read_model(ConfigNode::parse(yaml, "x.yaml"));
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace duplex::compiler::testing
