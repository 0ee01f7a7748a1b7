// DeepSeek's multi-head latent attention in the step runner, in the absorbed form the paged cache and the
// lowering assume (DUPLEX.md; compiler lower.cpp): a token caches one latent [k_pe, c] (kv_cache_shape), each
// query head attends to it with [q_pe, W_UK^T q_nope] and reads back the weighted latent, which W_UV turns
// into the head's value. Equal to HF's DeepseekV2Attention up to FP16 rounding: q_nope . (W_UK c) =
// (W_UK^T q_nope) . c and sum_t p_t W_UV c_t = W_UV sum_t p_t c_t.
#include <algorithm>

#include "step_runner.hpp"
#include "xpu_kernels.hpp"

namespace duplex::runtime::functional {

using compiler::OpKind;
using compiler::Unit;

void StepRunner::mla_qkv(int layer, Unit unit) {
  const compiler::MlaSpec& a = m_.mla;
  const std::int64_t h = m_.hidden, nope = a.qk_nope_head_dim, rope = a.qk_rope_head_dim,
                     rank = a.kv_lora_rank, qk = nope + rope, dim = attn_dim_, t = t_;
  // W8A8: q_a (or q), q_b and kv_a take quantized inputs; the absorbed W_UK^T, W_UV stay in 16 bits.
  // (A static release: q_a's or q's and kv_a's shared input at the larger of their scales, q_b's at its own.)
  const InputScales& scales0 = w0_.layers[static_cast<std::size_t>(layer)].input_scales;
  const kernels::ActivationQuant quant = input_quant(unit, m_.attention_matrix_dtype(), scales0.qkv),
                                 quant_b = input_quant(unit, m_.attention_matrix_dtype(), scales0.q_b);
  std::vector<bool> recorded(static_cast<std::size_t>(layout_.dp), false);
  for (std::size_t d = 0; d < dev_.size(); ++d) {
    if (!active(d)) continue;
    const std::int64_t heads = dev_[d].shard.q_heads;
    LayerWeights& lw = dev_[d].weights->layers[static_cast<std::size_t>(layer)];
    Lane& lane = lanes_[d];
    std::vector<CallQuant> calls;  // the quantized GEMMs' calls, in order
    auto linear = [&](const std::uint16_t* w, const std::uint16_t* x, std::int64_t k, std::uint16_t* y,
                      std::int64_t n, const kernels::ActivationQuant* q) {
      CallQuant call =
          node_linear(d, unit, OpKind::kQkvProj, w, x, k, y, n, q ? *q : kernels::ActivationQuant{});
      if (q != nullptr) calls.push_back(std::move(call));
    };
    // The latents' RMSNorms (q_a_layernorm, kv_a_layernorm) on the xPU, which has the norm kernel.
    auto rms = [&](std::vector<std::uint16_t>& x, std::int64_t cols, std::vector<std::uint16_t>& gain) {
      dev_[d].xpu->run(OpKind::kQkvProj, kernels::NormArgs{kernels::NormKind::kRms, f16_view(x, {t, cols}),
                                                           f16_view(gain, {cols}), kernels::Tensor{},
                                                           f16_view(x, {t, cols}), kMlaLatentNormEps, 0.0f});
    };
    std::vector<std::uint16_t> q(static_cast<std::size_t>(t * heads * qk));
    const std::int64_t ql = a.q_lora_rank;
    std::vector<std::uint16_t> qa(static_cast<std::size_t>(t * ql));  // q_b's input
    if (ql > 0) {
      linear(lw.q_a.data(), normed_.data(), h, qa.data(), ql, &quant);
      rms(qa, ql, lw.q_a_norm);
      linear(lw.mla_q.data(), qa.data(), ql, q.data(), heads * qk, &quant_b);
    } else {
      linear(lw.mla_q.data(), normed_.data(), h, q.data(), heads * qk, &quant);
    }
    // The latent: kv_a_proj_with_mqa's [c, k_pe], c normed, cached as [k_pe, c].
    std::vector<std::uint16_t> kv(static_cast<std::size_t>(t * (rank + rope))),
        c(static_cast<std::size_t>(t * rank));
    linear(lw.kv_a.data(), normed_.data(), h, kv.data(), rank + rope, &quant);
    for (std::int64_t r = 0; r < t; ++r)
      std::copy_n(kv.data() + r * (rank + rope), rank, c.data() + r * rank);
    rms(c, rank, lw.kv_a_norm);
    for (std::int64_t r = 0; r < t; ++r) {
      std::copy_n(kv.data() + r * (rank + rope) + rank, rope, lane.k.data() + r * dim);
      std::copy_n(c.data() + r * rank, rank, lane.k.data() + r * dim + rope);
    }
    // Each head's query: [q_pe, W_UK^T q_nope].
    std::vector<std::uint16_t> q_nope(static_cast<std::size_t>(t * nope)),
        q_lat(static_cast<std::size_t>(t * rank));
    for (std::int64_t head = 0; head < heads; ++head) {
      for (std::int64_t r = 0; r < t; ++r)
        std::copy_n(q.data() + (r * heads + head) * qk, nope, q_nope.data() + r * nope);
      linear(lw.w_uk_t.data() + head * rank * nope, q_nope.data(), nope, q_lat.data(), rank, nullptr);
      for (std::int64_t r = 0; r < t; ++r) {
        std::uint16_t* row = lane.q.data() + (r * heads + head) * dim;
        std::copy_n(q.data() + (r * heads + head) * qk + nope, rope, row);
        std::copy_n(q_lat.data() + r * rank, rank, row + rope);
      }
    }
    const int node = dev_[d].shard.node;
    if (quant.enabled() && !recorded[static_cast<std::size_t>(node)]) {
      recorded[static_cast<std::size_t>(node)] = true;
      const InputRows x{normed_.data(), h};
      if (ql > 0) {
        record_quantized(layer, node_rows_[static_cast<std::size_t>(node)],
                         quantized_input(QuantizedGemm::kQkv, quant, 1, calls), {x, {qa.data(), ql}, x});
      } else {
        record_quantized(layer, node_rows_[static_cast<std::size_t>(node)],
                         quantized_input(QuantizedGemm::kQkv, quant, 1, calls), {x, x});
      }
    }
  }
}

void StepRunner::mla_o_proj(int layer, Unit unit) {
  const compiler::MlaSpec& a = m_.mla;
  const std::int64_t h = m_.hidden, rope = a.qk_rope_head_dim, rank = a.kv_lora_rank, v = a.v_head_dim,
                     dim = attn_dim_, t = t_;
  const kernels::ActivationQuant quant = input_quant(
      unit, m_.attention_matrix_dtype(), w0_.layers[static_cast<std::size_t>(layer)].input_scales.o);
  std::vector<CallQuant> slice_calls(dev_.size());
  const std::int64_t width = m_.heads * v;  // the O projection's whole input: every head's value
  std::vector<std::uint16_t> full(quant.enabled() ? static_cast<std::size_t>(t * width) : 0);
  for (std::size_t d = 0; d < dev_.size(); ++d) {
    if (!active(d)) {
      std::fill_n(partial(d), t * h, std::uint16_t{0});
      continue;
    }
    const std::int64_t heads = dev_[d].shard.q_heads;
    const LayerWeights& lw = dev_[d].weights->layers[static_cast<std::size_t>(layer)];
    auto linear = [&](const std::uint16_t* w, const std::uint16_t* x, std::int64_t k, std::uint16_t* y,
                      std::int64_t n) { node_linear(d, unit, OpKind::kOProj, w, x, k, y, n); };
    // Each head's value: W_UV . (its attention-weighted latent, the last kv_lora_rank outputs).
    std::vector<std::uint16_t> lat(static_cast<std::size_t>(t * rank)), val(static_cast<std::size_t>(t * v)),
        values(static_cast<std::size_t>(t * heads * v));
    for (std::int64_t head = 0; head < heads; ++head) {
      for (std::int64_t r = 0; r < t; ++r)
        std::copy_n(lanes_[d].attn.data() + (r * heads + head) * dim + rope, rank, lat.data() + r * rank);
      linear(lw.w_uv.data() + head * v * rank, lat.data(), rank, val.data(), v);
      for (std::int64_t r = 0; r < t; ++r)
        std::copy_n(val.data() + r * v, v, values.data() + (r * heads + head) * v);
    }
    slice_calls[d] =
        node_linear(d, unit, OpKind::kOProj, lw.o.data(), values.data(), heads * v, partial(d), h, quant);
    if (quant.enabled())
      copy_slice(values.data(), heads * v, dev_[d].shard.q_head0 * v, full.data(), width,
                 node_rows_[static_cast<std::size_t>(dev_[d].shard.node)]);
  }
  record_row_parallel(layer, QuantizedGemm::kOProj, quant, slice_calls, {full.data(), width});
}

}  // namespace duplex::runtime::functional
