#pragma once
// The weights of a model for functional emulation (`duplex run`): FP16 tensors under their HuggingFace names
// (Llama / Mixtral naming; checkpoint_name gives OPT's, StarCoder2's, Phi-3's, DeepSeek's and DBRX's), random
// from a seed or read from a safetensors file (safetensors.hpp).
//
// Supported model shape (check_functional_support): GQA attention with RoPE (scaled or not) or learned
// positions (q / k / v biases, o bias, q / k RMSNorm, DBRX's clamp optional), or DeepSeek's MLA with RoPE;
// RMSNorm or LayerNorm (gain and bias, or DBRX's without the bias; a gain offset, Gemma's 1), gated or
// two-matrix FFNs with SiLU, GELU (erf or tanh) or ReLU (two-matrix dense FFNs optionally with biases), dense
// or MoE layers (shared experts, optionally gated, under Qwen-MoE or DeepSeek names; softmax top-k routing
// renormalised or not, Phi-3.5-MoE's sparsemixer, DeepSeek's group-limited or noaux_tc routing, a routed
// scaling factor), an LM-head bias, gpt-oss's attention sinks, router bias and biased experts (FP16 / BF16,
// or MXFP4 as released: exact in FP16), FP16 / BF16 weights and KV. Anything else is a duplex::Error naming
// the field.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "duplex/compiler/model_spec.hpp"

namespace duplex::runtime::functional {

// Constants of the model's arithmetic that ModelSpec does not carry (HF config.json: rms_norm_eps or
// norm_epsilon, rope_theta, rope_scaling). norm_eps is the eps of every RMSNorm or LayerNorm. Defaults: 1e-5
// (source: Mixtral-8x7B config.json; also torch.nn.LayerNorm's, which OPT uses), rope_theta 10000 (source: HF
// LlamaConfig default).
// rope_scaling: a scaled RoPE (HF config.json rope_scaling), kNone for the plain theta^(-2i/d). kLinear
// divides every frequency by factor; kLlama3 (Llama 3.1+) divides the frequencies whose wavelength 2 pi / f
// exceeds original / low_freq_factor by factor, keeps those below original / high_freq_factor, and blends
// linearly in between (HF _compute_llama3_parameters); original = original_max_position_embeddings.
// kLongRope (Phi-3, Phi-3.5-MoE) divides frequency i by short_factor[i] and multiplies cos and sin by
// attention_factor at sequence lengths up to original_max_position_embeddings, and by long_factor[i] and
// long_attention_factor beyond; HF picks them per forward by its longest position and keeps cached keys as
// rotated, so a token is rotated at its dynamic_rope_length, as with kDynamic. kYarn (YaRN: Qwen2.5 / Qwen3
// long context) blends each frequency between base / factor and base by a linear ramp over the dimensions
// whose rotations within original_max_position_embeddings lie between beta_slow and beta_fast (HF
// _compute_yarn_parameters; their ends rounded to whole dimensions unless truncate is false), and multiplies
// cos and sin by attention_factor (0.1 ln(factor) + 1 unless given). DeepSeek's YaRN (mscale_all_dim > 0)
// multiplies cos and sin by m(mscale) / m(mscale_all_dim) and the softmax scale by m(mscale_all_dim)^2, m(x)
// = 0.1 x ln(factor) + 1 (its modeling code's yarn_get_mscale). kDynamic (HF "dynamic", dynamic NTK) rescales
// the base per sequence length s beyond original_max_position_embeddings (HF: the config's
// max_position_embeddings): theta x ((factor s / original)
// - (factor - 1))^(d / (d - 2)), d the rotated dimensions; at s <= original the plain frequencies. HF
// recomputes them for each forward's longest position and keeps the cached keys as rotated: in one generate
// call a prompt's tokens are rotated at s = the prompt's length, each later token at its position + 1
// (dynamic_rope_length); the emulation and the reference rotate each token so, however the prompt is chunked.
struct RopeScaling {
  enum class Kind { kNone, kLinear, kLlama3, kLongRope, kYarn, kDynamic };
  Kind kind = Kind::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 8192.0;
  std::vector<double> short_factor, long_factor;  // kLongRope: rotary_dim / 2 each
  double attention_factor = 1.0;                  // kLongRope, kYarn: on cos and sin
  double long_attention_factor = 1.0;  // kLongRope beyond the original context (Phi-3.5-MoE's long_mscale)
  double beta_fast = 32.0, beta_slow = 1.0;       // kYarn (HF defaults)
  double mscale = 0, mscale_all_dim = 0;          // kYarn as DeepSeek states it; 0 without
  bool truncate = true;  // kYarn: the ramp's ends rounded out to whole dimensions (false: gpt-oss's)
};
// local_rope_theta: the windowed layers rotate with this base and no rope_scaling (Gemma 3's
// rope_local_base_freq), the others with rope_theta and rope_scaling; 0: every layer alike.
struct ModelNumerics {
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  float local_rope_theta = 0.0f;
};
// Whether layer `layer` rotates with the local base: a windowed layer of a model with local_rope_theta.
bool rotates_locally(const ModelNumerics& n, const compiler::ModelSpec& spec, int layer);
// The numerics layer `layer` rotates with: `n`, or where it rotates locally the local base and unscaled RoPE.
ModelNumerics layer_rope_numerics(const ModelNumerics& n, const compiler::ModelSpec& spec, int layer);

// The RoPE frequencies of a head of `rotary_dim` elements (rotary_dim / 2 of them, in double), as HF
// computes them from rope_theta and rope_scaling; with kDynamic, at sequence length `seq_len` (0: the plain
// ones; with kLongRope, the short factors at 0 and within the original context, the long ones beyond).
std::vector<double> rope_inv_freq(const ModelNumerics& numerics, int rotary_dim, std::int64_t seq_len = 0);
// The sequence length whose frequencies (dynamic NTK, LongRoPE) rotate the token at `position` of a request
// whose prompt has `prompt_tokens` tokens: max(prompt_tokens, position + 1) (HF generate: the prompt in one
// forward).
std::int64_t dynamic_rope_length(std::int64_t prompt_tokens, std::int64_t position);
// The eps of MLA's latent norms (q_a_layernorm, kv_a_layernorm), whatever the config's rms_norm_eps. source:
// DeepSeek's modeling code builds them as DeepseekV2RMSNorm(rank), whose eps defaults to 1e-6.
inline constexpr float kMlaLatentNormEps = 1e-6f;

// The factor cos and sin are multiplied by: LongRoPE's (at sequence length `seq_len`: its long factor beyond
// the original context) or YaRN's attention factor, else 1.
double rope_attention_factor(const ModelNumerics& numerics, std::int64_t seq_len = 0);
// Whether the RoPE frequencies depend on the sequence length (kDynamic, kLongRope): each token is then
// rotated at its dynamic_rope_length.
bool rope_depends_on_length(const ModelNumerics& numerics);
// The elements of a head RoPE rotates (its first ones): head_dim, ModelSpec::rotary_dim (partial RoPE), or
// MLA's qk_rope_head_dim.
int rotary_dim(const compiler::ModelSpec& spec);
// The attention's softmax scale: 1 / sqrt(head_dim) (MLA: qk_nope_head_dim + qk_rope_head_dim; Gemma 2:
// query_pre_attn_scalar), times DeepSeek YaRN's m(mscale_all_dim)^2 (RopeScaling).
double attention_scale(const compiler::ModelSpec& spec, const ModelNumerics& numerics);

// What the paged KV cache holds per token and layer. GQA: kv_heads x head_dim keys and as many values. MLA
// (DeepSeek): one latent [k_pe (qk_rope_head_dim, rotated), c (kv_lora_rank, kv_a_layernorm'd)] that is every
// head's key against the absorbed query [q_pe, W_UK^T q_nope], and, read whole as the value, yields the
// attention-weighted latent in its last kv_lora_rank outputs (the first qk_rope_head_dim are not used):
// the K and V pools are one (shared_kv).
struct KvCacheShape {
  int heads = 0;  // the whole model's (a device holds its DeviceShard::kv_heads of them)
  int head_dim = 0;
  bool shared_kv = false;
};
KvCacheShape kv_cache_shape(const compiler::ModelSpec& spec);

// One weight tensor: row-major FP16 bit patterns.
struct WeightTensor {
  std::vector<std::int64_t> shape;
  std::vector<std::uint16_t> data;
  std::int64_t numel() const;
};

// Name, shape and role of one tensor the model needs.
struct WeightShape {
  // kNormGain: a norm's gain vector (random init 1 + N(0, 0.1^2)); kBias: a bias vector (N(0, 0.1^2)).
  enum class Role { kMatrix, kNormGain, kBias };
  std::string name;
  std::vector<std::int64_t> shape;
  Role role = Role::kMatrix;
  // The format the checkpoint stores it in: the spec's linear_dtype for attention projections and dense FFN
  // matrices (dtype for those unquantized_attention / unquantized_ffn_layers keep so), expert_dtype for the
  // routed and shared experts' matrices, dtype for everything else. Held
  // and computed in FP16 whatever it is (MXFP4 and FP8 values on their grids, exact in FP16).
  compiler::DType format = compiler::DType::kFp16;
};

// Throws duplex::Error naming the model file and the unsupported field.
void check_functional_support(const compiler::ModelSpec& spec);

// The emulation holds a model's weights in host memory as FP16, 2 bytes per parameter (its devices' shards
// besides). Throws duplex::Error naming the model, those bytes and `memory_bytes` when they do not fit in it
// (the caller passes host_memory_bytes(); a checkpoint is checked before a tensor is read).
void check_weights_fit(const compiler::ModelSpec& spec, double memory_bytes);
// This machine's physical memory in bytes (sysconf), 0 when it cannot be read (nothing is then refused).
double host_memory_bytes();

// The factor the embedding rows are multiplied by: sqrt(hidden) rounded to FP16 (the compute dtype; HF Gemma
// rounds it to the model's dtype) with scale_embedding, else 1.
float embedding_scale(const compiler::ModelSpec& spec);

// Every tensor the model needs, in a fixed order (embedding, layers in order, final norm, LM head unless tied).
std::vector<WeightShape> expected_weights(const compiler::ModelSpec& spec);

// The width of the one FFN standing for all of a layer's shared experts (shared_experts x shared_expert_ffn).
std::int64_t shared_ffn_width(const compiler::ModelSpec& spec);

// HF tensor names (Llama / Qwen2 / Qwen3 dense layers; Mixtral or Qwen-MoE MoE layers:
// ModelSpec::weight_naming).
namespace weight_name {
std::string embedding();
std::string final_norm();
std::string lm_head();
std::string lm_head_bias();  // "lm_head.bias" (Phi-3.5-MoE)
std::string attn_norm(int layer);
std::string ffn_norm(int layer);
// The norms after each block (ModelSpec::post_norms); checkpoint_name gives Gemma 2's names.
std::string post_attn_norm(int layer);
std::string post_ffn_norm(int layer);
std::string attn_proj(int layer, char which);  // which: 'q', 'k', 'v' or 'o'
std::string attn_bias(int layer, char which);  // self_attn.{which}_proj.bias
std::string qk_norm(int layer, char which);    // self_attn.{q,k}_norm.weight
// MLA: self_attn.{name}.weight, name one of q_proj, q_a_proj, q_a_layernorm, q_b_proj, kv_a_proj_with_mqa,
// kv_a_layernorm, kv_b_proj (o_proj: attn_proj(layer, 'o')).
std::string mla(int layer, const char* name);
std::string router_correction_bias(int layer);  // mlp.gate.e_score_correction_bias (DeepSeek-V3) [experts]
std::string router_bias(int layer);             // mlp.router.bias (gpt-oss) [experts]
std::string sinks(int layer);                   // self_attn.sinks (gpt-oss) [heads]
// An expert's bias (gpt-oss): mlp.experts.E.{which}_proj.bias, which "gate", "up" [ffn] or "down" [hidden].
std::string expert_bias(int layer, int expert, const char* which);
// Mixtral: block_sparse_moe.gate.weight; Qwen-MoE and DeepSeek: mlp.gate.weight; gpt-oss: mlp.router.weight.
std::string router(compiler::WeightNaming naming, int layer);
// which: "gate", "up" or "down"; Mixtral: block_sparse_moe.experts.E.w1 / w3 / w2; Qwen-MoE, DeepSeek and
// gpt-oss: mlp.experts.E.{which}_proj.
std::string expert(compiler::WeightNaming naming, int layer, int expert, const char* which);
std::string shared_expert(int layer, const char* which);  // mlp.shared_expert.{which}_proj.weight
std::string shared_expert_gate(int layer);                // mlp.shared_expert_gate.weight [1, hidden]
// which: "gate", "up" or "down"; a two-matrix FFN has "up" (the activation's input: OPT fc1, StarCoder2 c_fc)
// and "down" only.
std::string dense_mlp(int layer, const char* which);
std::string dense_mlp_bias(int layer, const char* which);  // mlp.{up,down}_proj.bias (ModelSpec::mlp_bias)
std::string positions();  // model.embed_positions.weight [learned_positions, hidden]
// The bias beside a LayerNorm's gain: "model.norm.weight" -> "model.norm.bias".
std::string norm_bias(const std::string& gain_name);
}  // namespace weight_name

// The name a checkpoint of the model's family gives the tensor weight_name calls `name`: OPT's
// model.decoder.* (self_attn.out_proj, fc1 / fc2, self_attn_layer_norm / final_layer_norm), StarCoder2's
// mlp.c_fc / mlp.c_proj, Phi-3's self_attn.qkv_proj for q / k / v and mlp.gate_up_proj for gate / up (one
// checkpoint tensor holds several, stacked by rows in expected_weights order), DeepSeek's
// mlp.shared_experts.*; DBRX's transformer.* (norm_attn_norm.attn.Wqkv for q / k / v, ffn.experts.mlp.w1 /
// v1 / w2 for every expert's gate / up / down: safetensors.cpp stores w2's parts transposed); every other
// family's names are weight_name's.
std::string checkpoint_name(const compiler::ModelSpec& spec, const std::string& name);

struct ModelWeights {
  compiler::ModelSpec spec;
  ModelNumerics numerics;
  std::map<std::string, WeightTensor> tensors;
  // A static FP8 release's calibrated activation scales (ModelSpec::static_input_scales, read from a
  // checkpoint: NAME.input_scale), by the name of each matrix its module holds; empty otherwise (random
  // weights have none).
  std::map<std::string, float> input_scales;
  std::string source;  // "random (seed 7)" or the safetensors path, for messages and reports

  // The tensor `name`; duplex::Error naming the source and the tensor when it is missing.
  const WeightTensor& get(const std::string& name) const;
  // The LM head matrix [vocab, hidden] (the embedding when tied).
  const WeightTensor& lm_head() const;
};

// Deterministic random FP16 weights (check_weights_fit against host_memory_bytes() first): linear layers N(0,
// 1/fan_in) (std 1/sqrt(fan_in), keeping activations O(1) through every projection), embedding and position
// table N(0, 1), norm gains 1 + N(0, 0.1^2), biases (LayerNorm's too) N(0, 0.1^2); an MXFP4 model's expert
// matrices then rounded to the MXFP4 grid (mxfp4.hpp). Same spec and seed -> bit-identical weights, however
// many threads fill them (one random stream per tensor and per 2^20-element chunk of it).
ModelWeights random_weights(const compiler::ModelSpec& spec, std::uint64_t seed);

}  // namespace duplex::runtime::functional
