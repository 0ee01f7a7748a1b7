#pragma once
// Test helper: meta-llama/Llama-3.1-8B-Instruct's config.json, trimmed to the fields the importer reads, with
// a quantized release's quantization_config.
#include <string>

namespace duplex::compiler::testing {

// The config.json text with `quantization` (a JSON object, or null) as its quantization_config and
// `torch_dtype` (bfloat16 as Meta's release and unsloth's bnb-4bit releases keep it; AWQ, GPTQ and
// LLM.int8() releases keep float16).
inline std::string llama31_8b(const std::string& quantization, const std::string& torch_dtype = "bfloat16") {
  return R"({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "torch_dtype": ")" +
         torch_dtype + R"(", "quantization_config": )" + quantization + "}";
}

}  // namespace duplex::compiler::testing
