#pragma once
// The quantization_config of a HuggingFace config.json: which of a model's matrices a release stores in a
// quantized format, and in which (internal to import_hf_config).
#include <string>

#include "duplex/compiler/model_spec.hpp"
#include "hf_fields.hpp"

namespace duplex::compiler {

// Sets m.linear_dtype and m.expert_dtype (and m.kv_dtype when the config quantizes the KV cache) from the
// top-level quantization_config of `f` (model_type `type`); absent or null: every matrix in m.dtype.
// - quant_method "mxfp4" (gpt-oss only): the experts' matrices in MXFP4 (the release's
//   modules_to_not_convert keep attention, router, embeddings and LM head in dtype).
// - quant_method "fp8" (HF FineGrainedFP8: DeepSeek-V3 / R1, Qwen3's FP8 releases): every attention
//   projection, dense FFN and expert matrix in FP8 E4M3 with one FP32 scale per weight_block_size block
//   ([128, 128], stated: absent, AutoFP8's per-tensor scales, or another size is refused), fmt e4m3,
//   activation_scheme dynamic, scale_fmt absent or ue8m0 (fp8_block128); without weight_block_size (AutoFP8's
//   releases: neuralmagic's first FP8 ones) one FP32 scale per matrix, activation_scheme static (calibrated
//   per-tensor input scales) or dynamic (fp8_tensor).
// - quant_method "compressed-tensors" (llm-compressor's FP8-dynamic scheme: RedHatAI's and neuralmagic's FP8
//   releases), format float-quantized, quantization_status compressed: one config group targeting Linear,
//   its weights 8-bit float, symmetric, static, one scale per output channel; its input activations 8-bit
//   float, dynamic, one scale per token (fp8_channel); llm-compressor's FP8 scheme (neuralmagic's and
//   RedHatAI's static FP8 releases) alike with its weights one scale per tensor and its input activations
//   one static scale per tensor (or per token, dynamic) (fp8_tensor). Format int-quantized (llm-compressor's
//   W8A8-INT8 scheme) alike with 8-bit int weights and activations (int8_channel; asymmetric activations
//   refused). A kv_cache_scheme of 8-bit float, per-tensor static scales puts the KV cache in fp8. Format
//   pack-quantized (llm-compressor's W4A16 and W8A16 schemes): the group's weights 4- or 8-bit int,
//   symmetric, static, strategy group of 32, 64 or 128, or strategy channel (one scale per row; group_size
//   null) (actorder null, weight or static), no input activations, no kv_cache_scheme (int4_pack, int8_pack).
// - quant_method "awq" (AutoAWQ's releases), bits 4, group_size 32, 64, 128 or -1 (one scale and zero point
//   per row; ModelSpec::quant_group, as the W4A16 one), zero_point true, version gemm: every projection,
//   dense FFN and expert matrix in int4_awq.
// - quant_method "gptq" (AutoGPTQ's / GPTQModel's releases), bits 4 or 8, group_size 32, 64, 128 or -1 (one
//   scale and zero point per row: the "no group" releases),
//   checkpoint_format gptq (absent: gptq), desc_act and sym either way, no quantized lm_head: every
//   projection, dense FFN and expert matrix in int4_gptq (a modules_in_block_to_quantize list must name no
//   router, the attention's output projection and, in an MoE model, experts).
// - quant_method "bitsandbytes" (transformers' BitsAndBytesConfig: QLoRA-style and unsloth's bnb-4bit
//   releases), load_in_4bit true, bnb_4bit_quant_storage uint8 (or absent), a dense model (on an MoE one it
//   quantizes the routers too): every projection and FFN matrix in nf4 (bnb_4bit_quant_type nf4) or bnb_fp4
//   (fp4, or absent: BitsAndBytesConfig's default), nf4_dq / bnb_fp4_dq with bnb_4bit_use_double_quant
//   (llm_int8_skip_modules as modules_to_not_convert below); without quant_method (transformers < 4.32 wrote
//   none) when load_in_4bit or load_in_8bit is true. Or load_in_8bit true (LLM.int8(): the
//   "-8bit" releases), llm_int8_has_fp16_weight false (or absent), llm_int8_threshold a number >= 0 (or
//   absent: 6.0), a dense model: every projection and FFN matrix in bnb_int8.
// - quant_method "fbgemm_fp8" (transformers' FbgemmFp8Config: Meta's Llama 3.1 FP8 releases), a dense
//   model of Llama's module names (llama, mistral, qwen2, qwen3, phi3, gemma, gemma2, gemma3_text,
//   starcoder2): every projection and FFN matrix in fp8_channel (FP8 E4M3, one FP32 scale per output
//   channel), the activations scaled per token under activation_scale_ub (a number > 0;
//   m.activation_scale_ub). Its modules_to_not_convert may also name, by full module name
//   (model.layers.<l>.self_attn.q_proj), every layer's attention projections (m.unquantized_attention: Meta's
//   releases keep attention in BF16) and a layer's FFN matrices (m.unquantized_ffn_layers: their first and
//   last layers'), each group whole.
// The modules a release leaves unquantized (modules_to_not_convert, ignored_layers, ignore; a "re:" regex by
// its last name) may only be those the model keeps in dtype anyway: the LM head, the embeddings, routers.
// Anything else is refused, naming the field: its format is not modelled.
void read_quantization(const Fields& f, const std::string& type, ModelSpec& m);

}  // namespace duplex::compiler
