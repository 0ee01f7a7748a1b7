#pragma once
// Import of a HuggingFace `config.json` into a ModelSpec. Supported `model_type`s (field names as those
// files use them): llama, mistral, qwen2, mixtral, qwen2_moe, qwen3_moe, deepseek_v2, deepseek_v3.
// Anything else is a clear error naming the file and the model_type, never a guess. Missing required
// fields are errors naming the field.
#include <string>

#include "duplex/compiler/model_spec.hpp"

namespace duplex::compiler {

ModelSpec import_hf_config(const std::string& json_text, const std::string& file);

}  // namespace duplex::compiler
