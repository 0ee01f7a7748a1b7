#include "duplex/runtime/functional/model_weights.hpp"

#include <fmt/format.h>
#include <tbb/parallel_for.h>
#include <algorithm>
#include <cmath>

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
std::string attn_bias(int layer, char which) {
  return fmt::format("model.layers.{}.self_attn.{}_proj.bias", layer, which);
}
std::string qk_norm(int layer, char which) {
  return fmt::format("model.layers.{}.self_attn.{}_norm.weight", layer, which);
}
std::string router(compiler::WeightNaming naming, int layer) {
  return naming == compiler::WeightNaming::kQwenMoe
             ? fmt::format("model.layers.{}.mlp.gate.weight", layer)
             : fmt::format("model.layers.{}.block_sparse_moe.gate.weight", layer);
}
std::string expert(compiler::WeightNaming naming, int layer, int expert, const char* which) {
  if (naming == compiler::WeightNaming::kQwenMoe)
    return fmt::format("model.layers.{}.mlp.experts.{}.{}_proj.weight", layer, expert, which);
  const std::string_view w = which;
  const int matrix = w == "gate" ? 1 : w == "down" ? 2 : 3;  // Mixtral: w1 gate, w2 down, w3 up
  return fmt::format("model.layers.{}.block_sparse_moe.experts.{}.w{}.weight", layer, expert, matrix);
}
std::string shared_expert(int layer, const char* which) {
  return fmt::format("model.layers.{}.mlp.shared_expert.{}_proj.weight", layer, which);
}
std::string shared_expert_gate(int layer) {
  return fmt::format("model.layers.{}.mlp.shared_expert_gate.weight", layer);
}
std::string dense_mlp(int layer, const char* which) {
  return fmt::format("model.layers.{}.mlp.{}_proj.weight", layer, which);
}
}  // namespace weight_name

std::int64_t shared_ffn_width(const compiler::ModelSpec& m) {
  return std::int64_t{m.shared_experts} * m.shared_expert_ffn;
}

void check_functional_support(const compiler::ModelSpec& m) {
  auto reject = [&](const char* field, const std::string& problem) {
    throw Error(
        fmt::format("{}: {}: {}; functional emulation supports GQA + RoPE, RMSNorm, gated SiLU FFN, "
                    "dense or MoE layers (shared experts under Qwen-MoE names), q / k / v biases, q / k "
                    "norms, fp16 or bf16 weights and KV (computed in FP16)",
                    m.file.empty() ? m.name : m.file, field, problem));
  };
  if (m.attention != compiler::AttentionKind::kGqa) reject("attention", "MLA");
  if (m.norm != compiler::NormKind::kRmsNorm) reject("norm", "LayerNorm");
  if (m.ffn_kind != compiler::FfnKind::kGated) reject("ffn_kind", "two-matrix FFN");
  if (m.shared_experts > 0 && m.weight_naming != compiler::WeightNaming::kQwenMoe)
    reject("shared_experts",
           fmt::format("{} shared experts with Mixtral weight names (no HF checkpoint has them); "
                       "expected weight_naming: qwen_moe (mlp.shared_expert.*)",
                       m.shared_experts));
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
  using Role = WeightShape::Role;
  const std::int64_t h = m.hidden, q = m.q_dim(), kv = m.kv_dim();
  std::vector<WeightShape> w;
  w.push_back({weight_name::embedding(), {m.vocab, h}, Role::kMatrix});
  for (int l = 0; l < m.layers; ++l) {
    w.push_back({weight_name::attn_norm(l), {h}, Role::kNormGain});
    w.push_back({weight_name::attn_proj(l, 'q'), {q, h}, Role::kMatrix});
    w.push_back({weight_name::attn_proj(l, 'k'), {kv, h}, Role::kMatrix});
    w.push_back({weight_name::attn_proj(l, 'v'), {kv, h}, Role::kMatrix});
    w.push_back({weight_name::attn_proj(l, 'o'), {h, q}, Role::kMatrix});
    if (m.qkv_bias) {
      w.push_back({weight_name::attn_bias(l, 'q'), {q}, Role::kBias});
      w.push_back({weight_name::attn_bias(l, 'k'), {kv}, Role::kBias});
      w.push_back({weight_name::attn_bias(l, 'v'), {kv}, Role::kBias});
    }
    if (m.o_bias) w.push_back({weight_name::attn_bias(l, 'o'), {h}, Role::kBias});
    if (m.qk_norm != compiler::QkNorm::kNone) {
      const bool per_head = m.qk_norm == compiler::QkNorm::kPerHead;
      w.push_back({weight_name::qk_norm(l, 'q'), {per_head ? m.head_dim : q}, Role::kNormGain});
      w.push_back({weight_name::qk_norm(l, 'k'), {per_head ? m.head_dim : kv}, Role::kNormGain});
    }
    w.push_back({weight_name::ffn_norm(l), {h}, Role::kNormGain});
    if (m.is_moe_layer(l)) {
      const std::int64_t f = m.expert_ffn;
      w.push_back({weight_name::router(m.weight_naming, l), {m.experts, h}, Role::kMatrix});
      for (int e = 0; e < m.experts; ++e) {
        w.push_back({weight_name::expert(m.weight_naming, l, e, "gate"), {f, h}, Role::kMatrix});
        w.push_back({weight_name::expert(m.weight_naming, l, e, "down"), {h, f}, Role::kMatrix});
        w.push_back({weight_name::expert(m.weight_naming, l, e, "up"), {f, h}, Role::kMatrix});
      }
      if (m.shared_experts > 0) {  // one FFN as wide as all of them (as HF stores DeepSeek's too)
        const std::int64_t fs = shared_ffn_width(m);
        w.push_back({weight_name::shared_expert(l, "gate"), {fs, h}, Role::kMatrix});
        w.push_back({weight_name::shared_expert(l, "up"), {fs, h}, Role::kMatrix});
        w.push_back({weight_name::shared_expert(l, "down"), {h, fs}, Role::kMatrix});
        if (m.shared_expert_gate) w.push_back({weight_name::shared_expert_gate(l), {1, h}, Role::kMatrix});
      }
    } else {
      const std::int64_t f = m.ffn;
      w.push_back({weight_name::dense_mlp(l, "gate"), {f, h}, Role::kMatrix});
      w.push_back({weight_name::dense_mlp(l, "up"), {f, h}, Role::kMatrix});
      w.push_back({weight_name::dense_mlp(l, "down"), {h, f}, Role::kMatrix});
    }
  }
  w.push_back({weight_name::final_norm(), {h}, Role::kNormGain});
  if (!m.tie_embeddings) w.push_back({weight_name::lm_head(), {m.vocab, h}, Role::kMatrix});
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
  // One stream per tensor (by its index in expected_weights), so tensors do not shift each other; a tensor
  // beyond kChunk elements continues in one more stream per chunk (its first chunk keeps the tensor's own),
  // so the chunks fill in parallel and the result does not depend on the threads.
  constexpr std::int64_t kChunk = std::int64_t{1} << 20;
  struct Task {
    std::size_t tensor;
    std::int64_t chunk;
  };
  std::vector<Task> tasks;
  std::vector<WeightTensor*> out;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    WeightTensor& t = w.tensors[shapes[i].name];
    t.shape = shapes[i].shape;
    t.data.resize(static_cast<std::size_t>(t.numel()));
    out.push_back(&t);
    for (std::int64_t c = 0; c * kChunk < t.numel(); ++c) tasks.push_back({i, c});
  }
  tbb::parallel_for(std::size_t{0}, tasks.size(), [&](std::size_t k) {
    const auto [i, c] = tasks[k];
    const WeightShape& s = shapes[i];
    WeightTensor& t = *out[i];
    const std::uint64_t stream = derive_seed(seed, i);
    Rng rng(c == 0 ? stream : derive_seed(stream, static_cast<std::uint64_t>(c)));
    const bool embedding = s.name == weight_name::embedding();
    const double stddev = s.role != WeightShape::Role::kMatrix ? 0.1
                          : embedding                          ? 1.0
                                      : 1.0 / std::sqrt(static_cast<double>(s.shape.back()));
    const double mean = s.role == WeightShape::Role::kNormGain ? 1.0 : 0.0;
    const std::int64_t end = std::min(t.numel(), (c + 1) * kChunk);
    for (std::int64_t e = c * kChunk; e < end; ++e)
      t.data[static_cast<std::size_t>(e)] =
          float_to_half_bits(static_cast<float>(mean + stddev * rng.normal()));
  });
  return w;
}

}  // namespace duplex::runtime::functional
