#pragma once
// The weights of a model for functional emulation (`duplex run`): FP16 tensors under their HuggingFace names
// (Llama / Mixtral naming), random from a seed or read from a safetensors file (safetensors.hpp).
//
// Supported model shape (check_functional_support): GQA attention with RoPE, RMSNorm, gated SiLU FFN, dense or
// MoE layers without shared experts, FP16 weights and KV. Anything else is a duplex::Error naming the field.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "duplex/compiler/model_spec.hpp"

namespace duplex::runtime::functional {

// Constants of the model's arithmetic that ModelSpec does not carry (HF config.json: rms_norm_eps,
// rope_theta). Defaults: rms_norm_eps 1e-5 (source: Mixtral-8x7B config.json), rope_theta 10000 (source: HF
// LlamaConfig default).
struct ModelNumerics {
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
};

// One weight tensor: row-major FP16 bit patterns.
struct WeightTensor {
  std::vector<std::int64_t> shape;
  std::vector<std::uint16_t> data;
  std::int64_t numel() const;
};

// Name, shape and role of one tensor the model needs.
struct WeightShape {
  std::string name;
  std::vector<std::int64_t> shape;
  bool is_norm = false;  // a norm's gain vector (random init around 1, not around 0)
};

// Throws duplex::Error naming the model file and the unsupported field.
void check_functional_support(const compiler::ModelSpec& spec);

// Every tensor the model needs, in a fixed order (embedding, layers in order, final norm, LM head unless tied).
std::vector<WeightShape> expected_weights(const compiler::ModelSpec& spec);

// HF tensor names (Llama / Mixtral).
namespace weight_name {
std::string embedding();
std::string final_norm();
std::string lm_head();
std::string attn_norm(int layer);
std::string ffn_norm(int layer);
std::string attn_proj(int layer, char which);          // which: 'q', 'k', 'v' or 'o'
std::string router(int layer);                          // block_sparse_moe.gate.weight
std::string expert(int layer, int expert, int matrix);  // matrix: 1 (gate), 2 (down), 3 (up)
std::string dense_mlp(int layer, const char* which);    // which: "gate", "up" or "down"
}  // namespace weight_name

struct ModelWeights {
  compiler::ModelSpec spec;
  ModelNumerics numerics;
  std::map<std::string, WeightTensor> tensors;
  std::string source;  // "random (seed 7)" or the safetensors path, for messages and reports

  // The tensor `name`; duplex::Error naming the source and the tensor when it is missing.
  const WeightTensor& get(const std::string& name) const;
  // The LM head matrix [vocab, hidden] (the embedding when tied).
  const WeightTensor& lm_head() const;
};

// Deterministic random FP16 weights: linear layers N(0, 1/fan_in) (std 1/sqrt(fan_in), keeping activations
// O(1) through every projection), embedding N(0, 1), norm gains 1 + N(0, 0.1^2). Same spec and seed ->
// bit-identical weights.
ModelWeights random_weights(const compiler::ModelSpec& spec, std::uint64_t seed);

}  // namespace duplex::runtime::functional
