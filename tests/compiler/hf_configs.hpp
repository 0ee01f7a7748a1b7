#pragma once
// Test helpers: meta-llama/Llama-3.1-8B-Instruct's and mistralai/Mixtral-8x7B-Instruct-v0.1's config.json,
// trimmed to the fields the importer reads, with a quantized release's quantization_config.
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

// Mixtral-8x7B's config.json text with `quantization` as its quantization_config and `torch_dtype` (empty:
// no torch_dtype field).
inline std::string mixtral_8x7b(const std::string& quantization, const std::string& torch_dtype = "") {
  return R"({"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8, "num_experts_per_tok": 2,
    "vocab_size": 32000, )" +
         (torch_dtype.empty() ? "" : R"("torch_dtype": ")" + torch_dtype + R"(", )") +
         R"("quantization_config": )" + quantization + "}";
}

// BitsAndBytesConfig.to_dict() as a release's config.json holds it: with `four_bit` load_in_4bit as
// unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit states it (NF4, double quantization, bfloat16 compute), else
// load_in_8bit (LLM.int8(), the 4-bit fields at their defaults); `more` adds or replaces fields (appended
// after them: the last of a repeated key is the one read).
inline std::string bitsandbytes_config(bool four_bit, const std::string& more = "") {
  const std::string yes = four_bit ? "true" : "false", no = four_bit ? "false" : "true";
  return R"({"_load_in_4bit": )" + yes + R"(, "_load_in_8bit": )" + no + R"(, "bnb_4bit_compute_dtype": ")" +
         (four_bit ? "bfloat16" : "float32") +
         R"(", "bnb_4bit_quant_storage": "uint8", "bnb_4bit_quant_type": ")" + (four_bit ? "nf4" : "fp4") +
         R"(", "bnb_4bit_use_double_quant": )" + yes +
         R"(, "llm_int8_enable_fp32_cpu_offload": false, "llm_int8_has_fp16_weight": false,
    "llm_int8_skip_modules": null, "llm_int8_threshold": 6.0, "load_in_4bit": )" +
         yes + R"(, "load_in_8bit": )" + no + R"(, "quant_method": "bitsandbytes")" + more + "}";
}

}  // namespace duplex::compiler::testing
