#include "device_shard.hpp"

#include <fmt/format.h>
#include <algorithm>

#include "duplex/base/error.hpp"

namespace duplex::runtime::functional {
namespace {

// Rows [row0, row0 + rows) of a row-major matrix `cols` wide.
void append_rows(std::vector<std::uint16_t>& dst, const std::vector<std::uint16_t>& src, std::int64_t row0,
                 std::int64_t rows, std::int64_t cols) {
  dst.insert(dst.end(), src.begin() + row0 * cols, src.begin() + (row0 + rows) * cols);
}

// Columns [col0, col0 + n) of `rows` rows of a row-major matrix `cols` wide, starting at `base`.
void append_cols(std::vector<std::uint16_t>& dst, const std::uint16_t* base, std::int64_t rows,
                 std::int64_t cols, std::int64_t col0, std::int64_t n) {
  for (std::int64_t r = 0; r < rows; ++r)
    dst.insert(dst.end(), base + r * cols + col0, base + r * cols + col0 + n);
}

}  // namespace

std::vector<DeviceShard> shard_devices(const compiler::ModelSpec& m, const compiler::ParallelLayout& p) {
  const int tp = p.tp;
  const int group = m.heads / m.kv_heads;
  const int q_local = m.heads / tp, kv_local = std::max(1, m.kv_heads / tp);
  if (m.heads % tp != 0 || (tp <= m.kv_heads ? m.kv_heads % tp != 0 : group % q_local != 0))
    throw Error(fmt::format("model {}: {} query / {} KV heads do not split over tensor-parallel degree {}",
                            m.name, m.heads, m.kv_heads, tp));
  if (m.ffn % tp != 0 || m.vocab % tp != 0)
    throw Error(
        fmt::format("model {}: FFN width {} or vocabulary {} does not split over tensor-parallel degree {}",
                    m.name, m.ffn, m.vocab, tp));
  if (m.shared_experts > 0 && shared_ffn_width(m) % tp != 0)
    throw Error(fmt::format("model {}: shared-expert width {} does not split over tensor-parallel degree {}",
                            m.name, shared_ffn_width(m), tp));
  std::vector<DeviceShard> out;
  DUPLEX_ASSERT(p.devices == p.dp * tp, "a layout whose data-parallel ranks are not TP groups of equal size");
  for (int d = 0; d < p.devices; ++d) {
    DeviceShard s;
    s.device = d;
    s.node = d / tp;
    const int rank = d % tp;  // within the node's tensor-parallel group
    s.q_head0 = rank * q_local;
    s.q_heads = q_local;
    s.kv_head0 = s.q_head0 / group;
    s.kv_heads = kv_local;
    if (m.attention == compiler::AttentionKind::kMla) {  // every device caches the one latent
      s.kv_head0 = 0;
      s.kv_heads = 1;
    }
    s.ffn_shard = rank;
    s.ffn_shards = tp;
    if (m.is_moe()) {
      const int per_group = p.devices / p.expert_groups;
      s.expert0 = d / per_group * p.local_experts;
      s.local_experts = p.local_experts;
      s.expert_shard = d % per_group;
      s.expert_shards = p.expert_shards;
      DUPLEX_ASSERT(per_group == p.expert_shards, "expert groups and shards disagree with the device count");
    }
    s.vocab = m.vocab / tp;
    s.vocab0 = rank * s.vocab;
    out.push_back(s);
  }
  return out;
}

DeviceWeights shard_weights(const DeviceWeights& full, const compiler::ModelSpec& m, const DeviceShard& s) {
  const std::int64_t h = m.hidden, d = m.head_dim, qd = m.q_dim(), kvd = m.kv_dim();
  DeviceWeights w;
  w.embedding = full.embedding;
  w.positions = full.positions;
  w.final_norm = full.final_norm;
  w.final_norm_bias = full.final_norm_bias;
  append_rows(w.lm_head, full.lm_head, s.vocab0, s.vocab, h);
  if (!full.lm_head_bias.empty()) append_rows(w.lm_head_bias, full.lm_head_bias, s.vocab0, s.vocab, 1);
  for (const LayerWeights& f : full.layers) {
    LayerWeights l;
    l.attn_norm = f.attn_norm;
    l.ffn_norm = f.ffn_norm;
    l.attn_norm_bias = f.attn_norm_bias;
    l.ffn_norm_bias = f.ffn_norm_bias;
    l.post_attn_norm = f.post_attn_norm;
    l.post_ffn_norm = f.post_ffn_norm;
    l.post_attn_norm_bias = f.post_attn_norm_bias;
    l.post_ffn_norm_bias = f.post_ffn_norm_bias;
    l.router = f.router;
    if (!f.mla_q.empty()) {  // MLA: the local heads' rows of q and kv_b, o's columns; the latent's whole
      const compiler::MlaSpec& a = m.mla;
      const std::int64_t qk = a.qk_nope_head_dim + a.qk_rope_head_dim, rank = a.kv_lora_rank,
                         v = a.v_head_dim, q_in = a.q_lora_rank > 0 ? a.q_lora_rank : h;
      append_rows(l.mla_q, f.mla_q, s.q_head0 * qk, s.q_heads * qk, q_in);
      l.q_a = f.q_a;
      l.q_a_norm = f.q_a_norm;
      l.kv_a = f.kv_a;
      l.kv_a_norm = f.kv_a_norm;
      append_rows(l.w_uk_t, f.w_uk_t, s.q_head0 * rank, s.q_heads * rank, a.qk_nope_head_dim);
      append_rows(l.w_uv, f.w_uv, s.q_head0 * v, s.q_heads * v, rank);
      append_cols(l.o, f.o.data(), h, m.heads * v, s.q_head0 * v, s.q_heads * v);
    } else {
      append_rows(l.qkv, f.qkv, s.q_head0 * d, s.q_heads * d, h);
      append_rows(l.qkv, f.qkv, qd + s.kv_head0 * d, s.kv_heads * d, h);
      append_rows(l.qkv, f.qkv, qd + kvd + s.kv_head0 * d, s.kv_heads * d, h);
      append_cols(l.o, f.o.data(), h, qd, s.q_head0 * d, s.q_heads * d);
    }
    l.correction_bias = f.correction_bias;
    if (!f.qkv_bias.empty()) {  // the bias rows of the QKV rows above
      append_rows(l.qkv_bias, f.qkv_bias, s.q_head0 * d, s.q_heads * d, 1);
      append_rows(l.qkv_bias, f.qkv_bias, qd + s.kv_head0 * d, s.kv_heads * d, 1);
      append_rows(l.qkv_bias, f.qkv_bias, qd + kvd + s.kv_head0 * d, s.kv_heads * d, 1);
    }
    l.o_bias = f.o_bias;  // added once, after the all-reduce
    if (!f.sinks.empty()) append_rows(l.sinks, f.sinks, s.q_head0, s.q_heads, 1);  // the local heads'
    l.router_bias = f.router_bias;
    l.q_norm = f.q_norm;  // whole (per head or the whole projection's: StepRunner::rope takes what it needs)
    l.k_norm = f.k_norm;
    // The shared experts: columns of the node's tensor-parallel group, as a dense FFN.
    if (f.shared_width > 0) {
      const std::int64_t sw = f.shared_width / s.ffn_shards, c0 = s.ffn_shard * sw;
      append_rows(l.shared_gate_proj, f.shared_gate_proj, c0, sw, h);
      if (!f.shared_up.empty()) append_rows(l.shared_up, f.shared_up, c0, sw, h);
      append_cols(l.shared_down, f.shared_down.data(), h, f.shared_width, c0, sw);
      l.shared_gate = f.shared_gate;
      l.shared_width = sw;
    }
    const bool moe = !f.router.empty();
    const int shards = moe ? s.expert_shards : s.ffn_shards, shard = moe ? s.expert_shard : s.ffn_shard;
    const std::int64_t e0 = moe ? s.expert0 : 0, experts = moe ? s.local_experts : 1;
    const std::int64_t width = f.ffn_width / shards, col0 = shard * width;
    for (std::int64_t e = e0; e < e0 + experts; ++e) {
      append_rows(l.gate, f.gate, e * f.ffn_width + col0, width, h);
      if (!f.up.empty()) append_rows(l.up, f.up, e * f.ffn_width + col0, width, h);
      append_cols(l.down, f.down.data() + e * h * f.ffn_width, h, f.ffn_width, col0, width);
    }
    // Biases. gpt-oss's experts: their columns' gate / up biases, the down bias on the expert's first shard
    // only (the shards' outputs are summed). A dense FFN: its fc1 columns' bias, the output bias whole (added
    // once, after the all-reduce).
    if (!f.ffn_bias_in.empty() && moe) {
      for (std::int64_t e = e0; e < e0 + experts; ++e) {
        append_rows(l.ffn_bias_in, f.ffn_bias_in, e * f.ffn_width + col0, width, 1);
        append_rows(l.expert_bias_up, f.expert_bias_up, e * f.ffn_width + col0, width, 1);
        if (shard == 0) append_rows(l.expert_bias_down, f.expert_bias_down, e * h, h, 1);
      }
    } else if (!f.ffn_bias_in.empty()) {
      append_rows(l.ffn_bias_in, f.ffn_bias_in, col0, width, 1);
      l.ffn_bias_out = f.ffn_bias_out;
    }
    l.ffn_experts = experts;
    l.ffn_width = width;
    l.input_scales = f.input_scales;
    w.layers.push_back(std::move(l));
  }
  return w;
}

}  // namespace duplex::runtime::functional
