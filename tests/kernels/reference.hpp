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
// The first key a query at position `pos` of its sequence attends to (ops.hpp): the later of its sliding
// window's first key (window > 0: pos - window + 1) and its chunk's (chunk > 0: pos - pos % chunk); 0 without
// either.
std::int64_t first_attended(std::int64_t pos, std::int64_t window, std::int64_t chunk);
// window > 0: sliding-window attention (the last `window` tokens up to the query's own), as in ops.hpp.
// softcap > 0: Gemma 2's soft-capping of the scaled scores, softcap * tanh(s / softcap), before the softmax;
// the bound adds the cap's FP32 rounding (tanhf within 2 ulps) to the score error it propagates.
// sinks [Hq] (nullptr: none): gpt-oss's sink logit per head joins each row's max and denominator.
// chunk > 0: Llama 4's chunked attention (the query's own chunk only; with a window, what both allow:
// first_attended). Decode: the new token is at position context_len - 1.
Expected prefill_attention_ref(const HostTensor& q, const HostTensor& k, const HostTensor& v,
                               std::span<const std::int64_t> seq_starts, double scale,
                               std::int64_t window = 0, double softcap = 0.0,
                               const HostTensor* sinks = nullptr, std::int64_t chunk = 0);
Expected decode_attention_ref(const HostTensor& q, const HostTensor& k_cache, const HostTensor& v_cache,
                              const HostTensor& block_table, const HostTensor& context_lens, double scale,
                              std::int64_t window = 0, double softcap = 0.0,
                              const HostTensor* sinks = nullptr, std::int64_t chunk = 0);
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
// Llama 4's router weights before the top-k: s[T,E] = sigmoid of the FP64 logits (with the bias when given)
// and the bound on each (the logit's through the slope s (1 - s), plus the FP32 exp, add and division).
Expected router_sigmoid_ref(const HostTensor& hidden, const HostTensor& gate_weight,
                            const HostTensor* logit_bias = nullptr);
// Permute with routing weights (ops.hpp PermuteArgs::topk_weights): x_perm[permuted_row[t,j]] =
// x[t] * topk_weights[t,j], the FP32 product rounded once to x's dtype.
Expected permute_scaled_ref(const HostTensor& x, const HostTensor& permuted_row,
                            const HostTensor& topk_weights);
Expected unpermute_ref(const HostTensor& y_perm, const HostTensor& permuted_row,
                       const HostTensor& topk_weights, DType out_dtype);
// The optional biases (nullptr: none): b_in [E,F] added before the activation, b_up [E,F] to the up
// projection, b_down [E,H] to the output.
Expected expert_ffn_ref(FfnKind kind, Activation act, const HostTensor& x, const HostTensor& w_in,
                        const HostTensor* w_up, const HostTensor& w_down,
                        std::span<const std::int64_t> offsets, const HostTensor* b_in = nullptr,
                        const HostTensor* b_up = nullptr, const HostTensor* b_down = nullptr);
// expert_ffn_ref with W8A8 experts (ops.hpp ExpertFfnArgs::quant_h; quant_x is the caller's: pass x through
// quantize_ref first): every h element rounded to the dtype, then fake-quantized by quant_h (per row, per
// group, per tensor over all rows of the call, or static) before the down projection. The kernel's h may
// differ from the reference's within h's bound, and with it its reach's amax and scale, so each quantized
// element is bracketed over every h and scale those bounds allow (quantization is monotone in h, and in the
// grid value times the scale); where no grid boundary lies within h's bound, the bracket is a single value.
// h_scale_lo / h_scale_hi: the bracket of the call scale (static or per tensor; 0 and 0 otherwise).
// LLM.int8()'s decomposition (quant_h.decomposes()): an element whose h bound reaches across the threshold
// may or may not count for its row's amax and mark its column: the amax is bracketed over both, and an
// element of a column that may or may not be marked over its passing through and its quantization.
// h_outliers: per column of h, 1 marked, 0 not, -1 either (empty unless quant_h decomposes).
struct ExpertFfnQuantRef {
  Expected y;
  double h_scale_lo = 0.0, h_scale_hi = 0.0;
  Expected h;  // h before quant_h (ExpertFfnArgs::h_out), rounded to the dtype
  std::vector<int> h_outliers;
};
ExpertFfnQuantRef expert_ffn_quant_ref(FfnKind kind, Activation act, const HostTensor& x,
                                       const HostTensor& w_in, const HostTensor* w_up,
                                       const HostTensor& w_down, std::span<const std::int64_t> offsets,
                                       const ActivationQuant& quant_h, const HostTensor* b_in = nullptr);
Expected residual_add_ref(const HostTensor& a, const HostTensor& b);
// min(max(x, -l), l) with l = limit rounded to x's dtype; exact (bound 0: every output is an input or +-l);
// NaN gives NaN.
Expected clamp_ref(const HostTensor& x, float limit);
Expected partial_sum_ref(const HostTensor& partials);
// Llama 4's attention temperature (ops.hpp AttnTemperatureArgs): x[t] * f(t), f(t) = 1 + attn_scale *
// log1p(floor((positions[t] + 1) / floor_scale)). The floor's argument is the FP32 one (position + 1 and the
// division rounded as the contract's FP32 steps round them: the floor is discontinuous); the rest in FP64,
// the bound covering FP32 log1pf (2 ulps), the product and sum of f, and the product x * f rounded to the
// dtype.
Expected attn_temperature_ref(const HostTensor& x, const HostTensor& positions, float floor_scale,
                              float attn_scale);

// v clamped to [-448, 448] and rounded to the nearest FP8 E4M3 value (1 sign bit, 4 exponent bits with bias
// 7, 3 mantissa bits; subnormals m 2^-9; largest 448 = 1.75 x 2^8; no infinities), ties to the even mantissa:
// the nearest of the format's enumerated values, written from that definition alone.
double e4m3_round_ref(double v);
// Fake quantization (ops.hpp ActivationQuant / QuantizeArgs) of x [T,C] in x's dtype, from the contract: the
// scales in FP32 (a / q_max one FP32 division, emulated in FP64 and rounded to FP32, which is exact rounding
// for a quotient of two FP32 values), q = x / s likewise, then q on the grid and q x s one FP32 product,
// rounded to x's dtype. Exact: y's bound is 0. scales: QuantizeArgs::scales' layout ([1], [T] or
// [T, C / group]). LLM.int8()'s decomposition (quant.decomposes()): `marked` (empty: none) the caller's marks
// of C columns; outliers: them with every column where some |x| >= the threshold set to 1; each row's amax
// over its elements below the threshold; the elements of marked columns pass through.
struct QuantizeRef {
  Expected y;
  std::vector<double> scales;
  std::vector<std::int32_t> outliers;
};
QuantizeRef quantize_ref(const HostTensor& x, const ActivationQuant& quant,
                         std::vector<std::int32_t> marked = {});
// The scale of a reach whose largest magnitude is amax (QuantizeArgs), as FP32 computes it.
double quant_scale_ref(const ActivationQuant& quant, double amax);
// One element x at scale s: q x s rounded to `dtype` (0 when s is 0).
double fake_quantize_ref(QuantFormat format, double x, double s, DType dtype);

// The absolute rounding error of a dtype near zero (half its smallest subnormal), added to every bound.
double underflow_floor(DType dtype);

// Compares got against expected element by element; reports the worst offenders. Returns true when all pass.
::testing::AssertionResult within_bound(const HostTensor& got, const Expected& expected);

}  // namespace duplex::kernels::test
