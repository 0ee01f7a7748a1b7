#include "device_weights.hpp"

#include <algorithm>

namespace duplex::runtime::functional {
namespace {

void append(std::vector<std::uint16_t>& dst, const WeightTensor& t) { dst.insert(dst.end(), t.data.begin(), t.data.end()); }

// MLA's tensors of layer l; kv_b_proj [heads x (nope + v), rank] split into each head's transposed k_nope
// rows and its v rows.
void lay_out_mla(const ModelWeights& w, int l, LayerWeights& lw) {
  const compiler::MlaSpec& a = w.spec.mla;
  if (a.q_lora_rank == 0) {
    lw.mla_q = w.get(weight_name::mla(l, "q_proj")).data;
  } else {
    lw.q_a = w.get(weight_name::mla(l, "q_a_proj")).data;
    lw.q_a_norm = w.get(weight_name::mla(l, "q_a_layernorm")).data;
    lw.mla_q = w.get(weight_name::mla(l, "q_b_proj")).data;
  }
  lw.kv_a = w.get(weight_name::mla(l, "kv_a_proj_with_mqa")).data;
  lw.kv_a_norm = w.get(weight_name::mla(l, "kv_a_layernorm")).data;
  const std::vector<std::uint16_t>& kv_b = w.get(weight_name::mla(l, "kv_b_proj")).data;
  const std::int64_t rank = a.kv_lora_rank, nope = a.qk_nope_head_dim, v = a.v_head_dim;
  for (std::int64_t h = 0; h < w.spec.heads; ++h) {
    const std::uint16_t* head = kv_b.data() + h * (nope + v) * rank;
    for (std::int64_t c = 0; c < rank; ++c)
      for (std::int64_t r = 0; r < nope; ++r) lw.w_uk_t.push_back(head[r * rank + c]);
    lw.w_uv.insert(lw.w_uv.end(), head + nope * rank, head + (nope + v) * rank);
  }
}

}  // namespace

namespace {

// Layer l's InputScales from a static release's module scales (every quantized matrix has one).
void lay_out_input_scales(const ModelWeights& w, int l, InputScales& s) {
  const compiler::ModelSpec& m = w.spec;
  auto of = [&](const std::string& name) {
    const auto it = w.input_scales.find(name);
    return it == w.input_scales.end() ? 0.0f : it->second;
  };
  const bool gated = m.ffn_kind == compiler::FfnKind::kGated;
  auto ffn_in = [&](auto name) {
    return gated ? std::max(of(name("gate")), of(name("up"))) : of(name("up"));
  };
  if (m.attention == compiler::AttentionKind::kMla) {
    const bool lora = m.mla.q_lora_rank > 0;
    s.qkv = std::max(of(weight_name::mla(l, lora ? "q_a_proj" : "q_proj")),
                     of(weight_name::mla(l, "kv_a_proj_with_mqa")));
    if (lora) s.q_b = of(weight_name::mla(l, "q_b_proj"));
  } else {
    for (char p : {'q', 'k', 'v'}) s.qkv = std::max(s.qkv, of(weight_name::attn_proj(l, p)));
  }
  s.o = of(weight_name::attn_proj(l, 'o'));
  if (!m.is_moe_layer(l)) {
    s.ffn = ffn_in([&](const char* which) { return weight_name::dense_mlp(l, which); });
    s.down = of(weight_name::dense_mlp(l, "down"));
    return;
  }
  for (int e = 0; e < m.experts; ++e) {
    s.expert.push_back(
        ffn_in([&](const char* which) { return weight_name::expert(m.weight_naming, l, e, which); }));
    s.expert_down.push_back(of(weight_name::expert(m.weight_naming, l, e, "down")));
  }
  if (m.shared_experts > 0) {
    s.shared = ffn_in([&](const char* which) { return weight_name::shared_expert(l, which); });
    s.shared_down = of(weight_name::shared_expert(l, "down"));
  }
}

}  // namespace

DeviceWeights lay_out_weights(const ModelWeights& w) {
  const compiler::ModelSpec& m = w.spec;
  expected_weights(m);  // rejects unsupported models
  DeviceWeights d;
  const bool norm_biased = m.norm == compiler::NormKind::kLayerNorm && m.norm_bias,
             gated = m.ffn_kind == compiler::FfnKind::kGated;
  auto norm_bias = [&](const std::string& gain) {
    return norm_biased ? w.get(weight_name::norm_bias(gain)).data : std::vector<std::uint16_t>{};
  };
  d.embedding = w.get(weight_name::embedding()).data;
  if (m.learned_positions > 0) d.positions = w.get(weight_name::positions()).data;
  d.final_norm = w.get(weight_name::final_norm()).data;
  d.final_norm_bias = norm_bias(weight_name::final_norm());
  d.lm_head = w.lm_head().data;
  if (m.lm_head_bias) d.lm_head_bias = w.get(weight_name::lm_head_bias()).data;
  for (int l = 0; l < m.layers; ++l) {
    LayerWeights lw;
    lw.attn_norm = w.get(weight_name::attn_norm(l)).data;
    lw.ffn_norm = w.get(weight_name::ffn_norm(l)).data;
    lw.attn_norm_bias = norm_bias(weight_name::attn_norm(l));
    lw.ffn_norm_bias = norm_bias(weight_name::ffn_norm(l));
    if (m.post_norms) {
      lw.post_attn_norm = w.get(weight_name::post_attn_norm(l)).data;
      lw.post_ffn_norm = w.get(weight_name::post_ffn_norm(l)).data;
      lw.post_attn_norm_bias = norm_bias(weight_name::post_attn_norm(l));
      lw.post_ffn_norm_bias = norm_bias(weight_name::post_ffn_norm(l));
    }
    if (m.attention == compiler::AttentionKind::kMla) {
      lay_out_mla(w, l, lw);
    } else {
      for (char p : {'q', 'k', 'v'}) append(lw.qkv, w.get(weight_name::attn_proj(l, p)));
    }
    lw.o = w.get(weight_name::attn_proj(l, 'o')).data;
    if (m.qkv_bias)
      for (char p : {'q', 'k', 'v'}) append(lw.qkv_bias, w.get(weight_name::attn_bias(l, p)));
    if (m.o_bias) lw.o_bias = w.get(weight_name::attn_bias(l, 'o')).data;
    if (m.attn_sinks) lw.sinks = w.get(weight_name::sinks(l)).data;
    if (m.qk_norm == compiler::QkNorm::kPerHead || m.qk_norm == compiler::QkNorm::kWhole) {  // gains
      lw.q_norm = w.get(weight_name::qk_norm(l, 'q')).data;
      lw.k_norm = w.get(weight_name::qk_norm(l, 'k')).data;
    }
    if (m.is_moe_layer(l)) {
      lw.router = w.get(weight_name::router(m.weight_naming, l)).data;
      if (m.router == compiler::Router::kNoAuxTc)
        lw.correction_bias = w.get(weight_name::router_correction_bias(l)).data;
      if (m.router_bias) lw.router_bias = w.get(weight_name::router_bias(l)).data;
      lw.ffn_experts = m.experts;
      lw.ffn_width = m.expert_ffn;
      for (int e = 0; e < m.experts; ++e) {
        append(lw.gate, w.get(weight_name::expert(m.weight_naming, l, e, gated ? "gate" : "up")));
        append(lw.down, w.get(weight_name::expert(m.weight_naming, l, e, "down")));
        if (gated) append(lw.up, w.get(weight_name::expert(m.weight_naming, l, e, "up")));
        if (m.mlp_bias) {
          append(lw.ffn_bias_in, w.get(weight_name::expert_bias(l, e, "gate")));
          append(lw.expert_bias_up, w.get(weight_name::expert_bias(l, e, "up")));
          append(lw.expert_bias_down, w.get(weight_name::expert_bias(l, e, "down")));
        }
      }
      if (m.shared_experts > 0) {
        lw.shared_width = shared_ffn_width(m);
        lw.shared_gate_proj = w.get(weight_name::shared_expert(l, gated ? "gate" : "up")).data;
        if (gated) lw.shared_up = w.get(weight_name::shared_expert(l, "up")).data;
        lw.shared_down = w.get(weight_name::shared_expert(l, "down")).data;
        if (m.shared_expert_gate) lw.shared_gate = w.get(weight_name::shared_expert_gate(l)).data;
      }
    } else {
      lw.ffn_width = m.ffn;
      lw.gate = w.get(weight_name::dense_mlp(l, gated ? "gate" : "up")).data;
      if (gated) lw.up = w.get(weight_name::dense_mlp(l, "up")).data;
      lw.down = w.get(weight_name::dense_mlp(l, "down")).data;
      if (m.mlp_bias) {
        lw.ffn_bias_in = w.get(weight_name::dense_mlp_bias(l, "up")).data;
        lw.ffn_bias_out = w.get(weight_name::dense_mlp_bias(l, "down")).data;
      }
    }
    if (!w.input_scales.empty()) lay_out_input_scales(w, l, lw.input_scales);
    d.layers.push_back(std::move(lw));
  }
  return d;
}

}  // namespace duplex::runtime::functional
