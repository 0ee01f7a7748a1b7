#include "duplex/runtime/functional/model_weights.hpp"

#include <cmath>
#include <fmt/format.h>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/runtime/workload/random.hpp"

namespace duplex::runtime::functional {

std::int64_t WeightTensor::numel() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

namespace weight_name {
std::string embedding() { return "model.embed_tokens.weight"; }
std::string final_norm() { return "model.norm.weight"; }
std::string lm_head() { return "lm_head.weight"; }
std::string attn_norm(int layer) { return fmt::format("model.layers.{}.input_layernorm.weight", layer); }
std::string ffn_norm(int layer) { return fmt::format("model.layers.{}.post_attention_layernorm.weight", layer); }
std::string attn_proj(int layer, char which) {
  return fmt::format("model.layers.{}.self_attn.{}_proj.weight", layer, which);
}
std::string router(int layer) { return fmt::format("model.layers.{}.block_sparse_moe.gate.weight", layer); }
std::string expert(int layer, int expert, int matrix) {
  return fmt::format("model.layers.{}.block_sparse_moe.experts.{}.w{}.weight", layer, expert, matrix);
}
std::string dense_mlp(int layer, const char* which) {
  return fmt::format("model.layers.{}.mlp.{}_proj.weight", layer, which);
}
}  // namespace weight_name

void check_functional_support(const compiler::ModelSpec& m) {
  auto reject = [&](const char* field, const std::string& problem) {
    throw Error(fmt::format("{}: {}: {}; functional emulation supports GQA + RoPE, RMSNorm, gated SiLU FFN, "
                            "dense or MoE layers without shared experts, fp16 or bf16 weights and KV (computed in "
                            "FP16)",
                            m.file.empty() ? m.name : m.file, field, problem));
  };
  if (m.attention != compiler::AttentionKind::kGqa) reject("attention", "MLA");
  if (m.norm != compiler::NormKind::kRmsNorm) reject("norm", "LayerNorm");
  if (m.ffn_kind != compiler::FfnKind::kGated) reject("ffn_kind", "two-matrix FFN");
  if (m.shared_experts > 0) reject("shared_experts", fmt::format("{} shared experts", m.shared_experts));
  if (m.learned_positions > 0) reject("learned_positions", "learned position embeddings");
  auto half_width = [](compiler::DType t) { return t == compiler::DType::kFp16 || t == compiler::DType::kBf16; };
  if (!half_width(m.dtype)) reject("dtype", fmt::format("weights are {}", compiler::dtype_name(m.dtype)));
  if (!half_width(m.kv_dtype)) reject("kv_dtype", fmt::format("the KV cache is {}", compiler::dtype_name(m.kv_dtype)));
  if (m.head_dim % 2 != 0) reject("head_dim", fmt::format("{} is odd (RoPE rotates pairs)", m.head_dim));
  if (m.kv_heads <= 0 || m.heads % m.kv_heads != 0)
    reject("kv_heads", fmt::format("{} does not divide heads = {}", m.kv_heads, m.heads));
  if (m.is_moe() && (m.top_k < 1 || m.top_k > m.experts))
    reject("top_k", fmt::format("{} is not in 1..experts = {}", m.top_k, m.experts));
}

std::vector<WeightShape> expected_weights(const compiler::ModelSpec& m) {
  check_functional_support(m);
  const std::int64_t h = m.hidden, q = m.q_dim(), kv = m.kv_dim();
  std::vector<WeightShape> w;
  w.push_back({weight_name::embedding(), {m.vocab, h}, false});
  for (int l = 0; l < m.layers; ++l) {
    w.push_back({weight_name::attn_norm(l), {h}, true});
    w.push_back({weight_name::attn_proj(l, 'q'), {q, h}, false});
    w.push_back({weight_name::attn_proj(l, 'k'), {kv, h}, false});
    w.push_back({weight_name::attn_proj(l, 'v'), {kv, h}, false});
    w.push_back({weight_name::attn_proj(l, 'o'), {h, q}, false});
    w.push_back({weight_name::ffn_norm(l), {h}, true});
    if (m.is_moe_layer(l)) {
      const std::int64_t f = m.expert_ffn;
      w.push_back({weight_name::router(l), {m.experts, h}, false});
      for (int e = 0; e < m.experts; ++e) {
        w.push_back({weight_name::expert(l, e, 1), {f, h}, false});
        w.push_back({weight_name::expert(l, e, 2), {h, f}, false});
        w.push_back({weight_name::expert(l, e, 3), {f, h}, false});
      }
    } else {
      const std::int64_t f = m.ffn;
      w.push_back({weight_name::dense_mlp(l, "gate"), {f, h}, false});
      w.push_back({weight_name::dense_mlp(l, "up"), {f, h}, false});
      w.push_back({weight_name::dense_mlp(l, "down"), {h, f}, false});
    }
  }
  w.push_back({weight_name::final_norm(), {h}, true});
  if (!m.tie_embeddings) w.push_back({weight_name::lm_head(), {m.vocab, h}, false});
  return w;
}

const WeightTensor& ModelWeights::get(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) throw Error(fmt::format("{}: tensor {} is missing", source, name));
  return it->second;
}

const WeightTensor& ModelWeights::lm_head() const {
  return get(spec.tie_embeddings ? weight_name::embedding() : weight_name::lm_head());
}

ModelWeights random_weights(const compiler::ModelSpec& spec, std::uint64_t seed) {
  ModelWeights w;
  w.spec = spec;
  w.source = fmt::format("random weights (seed {})", seed);
  const auto shapes = expected_weights(spec);
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const WeightShape& s = shapes[i];
    // One stream per tensor (by its index in expected_weights), so tensors do not shift each other.
    Rng rng(derive_seed(seed, i));
    WeightTensor t;
    t.shape = s.shape;
    t.data.resize(static_cast<std::size_t>(t.numel()));
    const bool embedding = s.name == weight_name::embedding();
    const double stddev = s.is_norm ? 0.1 : embedding ? 1.0 : 1.0 / std::sqrt(static_cast<double>(s.shape.back()));
    const double mean = s.is_norm ? 1.0 : 0.0;
    for (auto& v : t.data) v = float_to_half_bits(static_cast<float>(mean + stddev * rng.normal()));
    w.tensors.emplace(s.name, std::move(t));
  }
  return w;
}

}  // namespace duplex::runtime::functional
