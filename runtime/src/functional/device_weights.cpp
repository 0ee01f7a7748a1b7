#include "device_weights.hpp"

namespace duplex::runtime::functional {
namespace {

void append(std::vector<std::uint16_t>& dst, const WeightTensor& t) { dst.insert(dst.end(), t.data.begin(), t.data.end()); }

}  // namespace

DeviceWeights lay_out_weights(const ModelWeights& w) {
  const compiler::ModelSpec& m = w.spec;
  expected_weights(m);  // rejects unsupported models
  DeviceWeights d;
  d.embedding = w.get(weight_name::embedding()).data;
  d.final_norm = w.get(weight_name::final_norm()).data;
  d.lm_head = w.lm_head().data;
  for (int l = 0; l < m.layers; ++l) {
    LayerWeights lw;
    lw.attn_norm = w.get(weight_name::attn_norm(l)).data;
    lw.ffn_norm = w.get(weight_name::ffn_norm(l)).data;
    for (char p : {'q', 'k', 'v'}) append(lw.qkv, w.get(weight_name::attn_proj(l, p)));
    lw.o = w.get(weight_name::attn_proj(l, 'o')).data;
    if (m.is_moe_layer(l)) {
      lw.router = w.get(weight_name::router(l)).data;
      lw.ffn_experts = m.experts;
      lw.ffn_width = m.expert_ffn;
      for (int e = 0; e < m.experts; ++e) {
        append(lw.gate, w.get(weight_name::expert(l, e, 1)));
        append(lw.down, w.get(weight_name::expert(l, e, 2)));
        append(lw.up, w.get(weight_name::expert(l, e, 3)));
      }
    } else {
      lw.ffn_width = m.ffn;
      lw.gate = w.get(weight_name::dense_mlp(l, "gate")).data;
      lw.up = w.get(weight_name::dense_mlp(l, "up")).data;
      lw.down = w.get(weight_name::dense_mlp(l, "down")).data;
    }
    d.layers.push_back(std::move(lw));
  }
  return d;
}

}  // namespace duplex::runtime::functional
