#pragma once
// safetensors files (https://github.com/huggingface/safetensors, format: 8-byte little-endian header length N,
// N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end)}, "__metadata__": {...}}, then the raw
// tensor bytes, offsets relative to the end of the header).
//
// Reading is strict: every tensor the ModelSpec needs must be present with dtype F16, BF16 or F32 and exactly
// the expected shape, its byte range inside the file and of the right size; no unexpected tensor. BF16 and F32
// tensors are rounded to FP16 (the emulated devices compute in FP16; the weights' source then says so), and a
// value FP16 cannot hold (beyond +-65504, inf, NaN) is an error. Every violation is a duplex::Error naming the
// file and the tensor.
#include <string>
#include <vector>

#include "duplex/runtime/functional/model_weights.hpp"

namespace duplex::runtime::functional {

// Block-scaled FP8 checkpoints (linear_dtype / expert_dtype fp8_block128; quant_method "fp8" in
// config.json) store each such matrix NAME.weight as F8_E4M3 with NAME.weight_scale_inv [ceil(rows / 128)]
// [ceil(cols / 128)] F32 beside it (fp8.hpp), per checkpoint tensor (Phi-3's and DBRX's stacked ones whole,
// DeepSeek's and Llama 4's q / k rows in the checkpoint's order). Reading dequantizes them to FP16; writing
// quantizes them with power-of-two scales and fails, naming the element, on a value not on that grid.

// Rounds `weights`' FP8 matrices in place onto the grid of their checkpoint tensors' blocks (power-of-two
// scales), as random_weights does, so that write_checkpoint stores them exactly. No-op for other formats.
void put_on_checkpoint_grid(ModelWeights& weights);

// Writes every tensor of `weights` as F16 (little-endian), in name order (FP8 matrices as F8_E4M3 and their
// scales; gpt-oss's MXFP4 experts as their release's _blocks and _scales, U8, which fails, naming the
// element, on a value off the MXFP4 grid). Throws duplex::Error when the file cannot be written.
void write_safetensors(const std::string& path, const ModelWeights& weights);

// Where a checkpoint keeps the model's tensors, and which of its other tensors the model does not run: every
// tensor of the model named under `prefix`, its "model." part renamed `model_prefix` (a multimodal
// checkpoint's language model: the hub's releases "language_model." + "model."; transformers' newer saves ""
// + "model.language_model.", the LM head at the top); those outside `prefix` or under prefix + "model." but
// outside `model_prefix` (a vision tower, a projector) and those under one of `extra` (DeepSeek-V3's
// multi-token-prediction layers, "model.layers.61.") skipped, their count noted in the weights' source; any
// other unexpected tensor is an error.
struct CheckpointLayout {
  std::string prefix;
  std::string model_prefix = "model.";
  std::vector<std::string> extra;
  std::string stored_name(const std::string& model_name) const;  // a model tensor's checkpoint name
};

// Reads the tensors `spec` needs from `path`, laid out as `layout` says.
ModelWeights read_safetensors(const std::string& path, const compiler::ModelSpec& spec,
                              const CheckpointLayout& layout = {});

// A sharded checkpoint: `index_path` is HF's model.safetensors.index.json ({"weight_map": {tensor: shard
// file}}), the shards beside it. Every tensor the spec needs must be mapped, to a shard that holds it; a
// tensor the spec lacks, in the map or in a shard (or in a shard the map does not send it to), is an error.
// `layout` as read_safetensors'; a shard holding only skipped tensors is not opened.
ModelWeights read_sharded_safetensors(const std::string& index_path, const compiler::ModelSpec& spec,
                                      const CheckpointLayout& layout = {});

// A multimodal config's (gemma3, llama4) numerics are its text_config's, errors naming
// "config.json (text_config)".
// rms_norm_eps (norm_epsilon), rope_theta (DBRX: attn_config.rope_theta; Gemma 3: 1e6 when absent, and
// rope_local_base_freq, 10000, for its windowed layers) and rope_scaling (linear, llama3,
// longrope, yarn or dynamic) from a HF config.json (ModelNumerics' defaults where absent), after refusing
// every field that would make the emulation compute something else than the model while ModelSpec reads the
// same shapes: another rope_scaling (or a bad field of one: "rope_scaling.<field>"), partial_rotary_factor
// other than 1 outside phi3, hidden_activation outside Gemma, mlp_bias, a top-level clip_qkv (OLMo's; DBRX's,
// in attn_config, is ModelSpec::clip_qkv), and DeepSeek's attention_bias, rope_interleave false and V2's
// norm_topk_prob; each a duplex::Error naming the file and the key.
ModelNumerics config_numerics(const std::string& config_json_path);

// A checkpoint directory in HF layout: `config.json` (the ModelSpec, rms_norm_eps, rope_theta) beside
// model.safetensors or a sharded model.safetensors.index.json. `path` is the directory, the .safetensors file
// or the index. A multimodal config (model_type gemma3: Gemma3ForConditionalGeneration; llama4:
// Llama4ForConditionalGeneration) runs its language model: its text_config, its tensors as the released
// checkpoints name them (language_model.model.layers.*, language_model.lm_head.weight) or, when the
// checkpoint holds tensors under model.language_model., as transformers >= 4.52 saves them
// (model.language_model.layers.*, lm_head.weight); the vision tower's and projector's tensors are skipped. A
// DeepSeek config stating num_nextn_predict_layers N: the checkpoint's N multi-token-prediction layers after
// the model's (model.layers.<layers + i>.*, which HF does not load either) are skipped.
ModelWeights load_checkpoint(const std::string& path);

// The HF model_type whose config.json states `spec` (llama, mistral, qwen2, qwen3, phi3, gemma, opt,
// starcoder2, mixtral, phimoe, qwen2_moe, qwen3_moe, olmoe, deepseek_v2, deepseek_v3 or dbrx); duplex::Error
// naming the model when no architecture has its combination of features.
std::string hf_model_type(const compiler::ModelSpec& spec);

// Writes `weights` as <dir>/config.json (hf_model_type's fields; load_checkpoint reads back the same spec and
// numerics) plus <dir>/model.safetensors, or with shards > 1 as HF's model-0000i-of-0000n.safetensors and
// model.safetensors.index.json. The config is formed first, so a model no architecture states writes nothing.
void write_checkpoint(const std::string& dir, const ModelWeights& weights, int shards = 1);

}  // namespace duplex::runtime::functional
