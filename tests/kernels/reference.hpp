#pragma once
// Straightforward FP64 references for every op, each with an op-specific error bound per output element.
// The inputs are the exactly representable stored values; the bound covers what an FP32-accumulating kernel
// may legitimately differ by: rounding of the output to its dtype (u = 2^-11 f16, 2^-8 bf16, 2^-24 f32) plus
// a worst-case FP32 accumulation term proportional to the sum of the absolute values of the terms (with a 2x
// margin for reordered or tensor-core accumulation). A wrong index, a missed term or a wrong scale gives an
// error of the order of the terms themselves, far above these bounds.
#include <cstdint>
#include <span>
#include <vector>

#include "duplex/kernels/ops.hpp"
#include "harness.hpp"

namespace duplex::kernels::test {

struct Expected {
  std::vector<double> value;
  std::vector<double> bound;
};

double unit_roundoff(DType dtype);
inline constexpr double kU32 = 1.0 / 16777216.0;  // 2^-24, FP32 unit roundoff

Expected gemm_ref(const HostTensor& a, const HostTensor& b, const HostTensor* c_before, bool b_transposed,
                  DType out_dtype);
Expected norm_ref(NormKind kind, const HostTensor& x, const HostTensor& weight, const HostTensor* bias,
                  double eps, double weight_offset = 0.0);
// inv_freq: the frequencies (rotary_dim / 2 of them); empty: theta^(-2i/rotary_dim).
// scale multiplies cos and sin (LongRoPE's attention factor).
Expected rope_ref(const HostTensor& x, const HostTensor& positions, double theta, std::int64_t rotary_dim,
                  const std::vector<double>& inv_freq = {}, double scale = 1.0);
// window > 0: sliding-window attention (the last `window` tokens up to the query's own), as in ops.hpp.
// softcap > 0: Gemma 2's soft-capping of the scaled scores, softcap * tanh(s / softcap), before the softmax;
// the bound adds the cap's FP32 rounding (tanhf within 2 ulps) to the score error it propagates.
// sinks [Hq] (nullptr: none): gpt-oss's sink logit per head joins each row's max and denominator.
Expected prefill_attention_ref(const HostTensor& q, const HostTensor& k, const HostTensor& v,
                               std::span<const std::int64_t> seq_starts, double scale,
                               std::int64_t window = 0, double softcap = 0.0,
                               const HostTensor* sinks = nullptr);
Expected decode_attention_ref(const HostTensor& q, const HostTensor& k_cache, const HostTensor& v_cache,
                              const HostTensor& block_table, const HostTensor& context_lens, double scale,
                              std::int64_t window = 0, double softcap = 0.0,
                              const HostTensor* sinks = nullptr);
// cap * tanh(x / cap) of each value of x (e.g. gemm_ref's logits: LmHeadArgs::softcap), with its bound: x's
// error through the cap's slope, plus the FP32 division, tanhf (2 ulps) and product.
Expected softcap_ref(const Expected& x, double cap);
Expected softmax_ref(const HostTensor& x, double scale);
// Router logits [T,E] (hidden . gate_weight^T, + logit_bias [E] when given) and their bounds.
Expected router_logits_ref(const HostTensor& hidden, const HostTensor& gate_weight,
                           const HostTensor* logit_bias = nullptr);
// Router probabilities p[T,E] (softmax of the FP64 logits, with the bias when given) and the bound on each.
Expected router_probs_ref(const HostTensor& hidden, const HostTensor& gate_weight,
                          const HostTensor* logit_bias = nullptr);
Expected unpermute_ref(const HostTensor& y_perm, const HostTensor& permuted_row,
                       const HostTensor& topk_weights, DType out_dtype);
// The optional biases (nullptr: none): b_in [E,F] added before the activation, b_up [E,F] to the up
// projection, b_down [E,H] to the output.
Expected expert_ffn_ref(FfnKind kind, Activation act, const HostTensor& x, const HostTensor& w_in,
                        const HostTensor* w_up, const HostTensor& w_down,
                        std::span<const std::int64_t> offsets, const HostTensor* b_in = nullptr,
                        const HostTensor* b_up = nullptr, const HostTensor* b_down = nullptr);
Expected residual_add_ref(const HostTensor& a, const HostTensor& b);
// min(max(x, -l), l) with l = limit rounded to x's dtype; exact (bound 0: every output is an input or +-l);
// NaN gives NaN.
Expected clamp_ref(const HostTensor& x, float limit);
Expected partial_sum_ref(const HostTensor& partials);

// The absolute rounding error of a dtype near zero (half its smallest subnormal), added to every bound.
double underflow_floor(DType dtype);

// Compares got against expected element by element; reports the worst offenders. Returns true when all pass.
::testing::AssertionResult within_bound(const HostTensor& got, const Expected& expected);

}  // namespace duplex::kernels::test
