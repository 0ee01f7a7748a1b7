// The golden Logic-PIM datapath: the units composed from the primitives in numerics.cpp.
#include "duplex/rtl/golden_datapath.hpp"

#include <array>
#include <bit>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/rtl/datapath.hpp"
#include "duplex/rtl/datapath_numerics.hpp"

namespace duplex::pim {

using namespace numerics;

void validate(const DatapathParams& params) {
  const int lanes = params.lanes;
  if (lanes < 1 || lanes > 64 || !std::has_single_bit(static_cast<unsigned>(lanes)))
    throw Error("pim datapath: lanes = " + std::to_string(lanes) + "; expected a power of two in [1, 64]");
}

float dot_fp16(const std::uint16_t* a, const std::uint16_t* b, std::size_t k, const DatapathParams& params,
               std::uint16_t init) {
  validate(params);
  const auto lanes = static_cast<std::size_t>(params.lanes);
  std::array<float, 64> tree;  // lanes <= 64 (validate)
  const float* half = half_to_float_table();
  float acc = half[init];  // exact widening; +0 without a bias
  // At least one pass: k = 0 adds one tree of +0 products (the lane's single pass).
  for (std::size_t base = 0; base < k || base == 0; base += lanes) {
    for (std::size_t i = 0; i < lanes; ++i)
      tree[i] = base + i < k ? mul_fp16_exact(half, a[base + i], b[base + i]) : 0.0f;
    for (std::size_t width = lanes; width > 1; width /= 2)
      for (std::size_t i = 0; i < width / 2; ++i) tree[i] = add_fp32(tree[2 * i], tree[2 * i + 1]);
    acc = add_fp32(acc, tree[0]);
  }
  return acc;
}

std::uint16_t to_fp16(float acc) {
  return std::isnan(acc) ? kCanonicalNanFp16 : float_to_half_bits(acc);
}

void gemv_fp16(const std::uint16_t* w, const std::uint16_t* x, std::uint16_t* y, std::size_t n, std::size_t k,
               const DatapathParams& params, const std::uint16_t* bias) {
  for (std::size_t row = 0; row < n; ++row)
    y[row] = to_fp16(dot_fp16(w + row * k, x, k, params, bias != nullptr ? bias[row] : std::uint16_t{0}));
}

namespace {

#include "softcap_tanh_coefficients.inc"

// The soft-cap's per-row constants, from the cap c (FP16, exact in FP32): c, 2c, 1/c and 2/c. 1/c is the
// reciprocal unit's estimate r0 refined by one Newton step, r0 + r0 (1 - c r0) (relative error ~1e-7
// instead of the table's 1.5e-5); the doublings are exact.
struct SoftcapConstants {
  float c = 0, c2 = 0, rc = 0, rc2 = 0;
};

// 1/d (d > 0 or NaN) to ~1e-7: the reciprocal unit's r0, then r0 + r0 (1 - d r0).
float recip_refined_fp32(float d) {
  const float r0 = recip_fp32(d);
  const float e = add_fp32(1.0f, -mul_fp32(d, r0));
  return add_fp32(r0, mul_fp32(r0, e));
}

SoftcapConstants softcap_constants(std::uint16_t softcap) {
  SoftcapConstants k;
  k.c = half_to_float_table()[softcap];
  k.c2 = mul_fp32(2.0f, k.c);
  k.rc = recip_refined_fp32(k.c);
  k.rc2 = mul_fp32(2.0f, k.rc);
  return k;
}

// x' = c tanh(x / c), as the cap stages compute it (README.md "Logit soft-cap").
float softcap_fp32(float x, const SoftcapConstants& k) {
  const float y = mul_fp32(x, k.rc);  // x / c
  const float v = mul_fp32(y, y);     // y^2
  // |y| < 1: x P(y^2), relative accuracy near 0.
  if (v < std::bit_cast<float>(kSoftcapPolyVMaxBits)) {
    constexpr int kDegree = static_cast<int>(std::size(kSoftcapTanhCoefficientBits)) - 1;
    float p = std::bit_cast<float>(kSoftcapTanhCoefficientBits[kDegree]);
    for (int j = kDegree - 1; j >= 0; --j)
      p = add_fp32(mul_fp32(p, v), std::bit_cast<float>(kSoftcapTanhCoefficientBits[j]));
    return mul_fp32(x, p);
  }
  // |y| >= 1, Inf or NaN: c tanh|y| = c - 2c w, w = u / (1 + u), u = e^-2|y|; the sign of x.
  const float u = exp_neg_fp32(mul_fp32(x, k.rc2));
  const float w = mul_fp32(u, recip_refined_fp32(add_fp32(1.0f, u)));
  const float m = add_fp32(k.c, -mul_fp32(k.c2, w));
  return std::signbit(x) ? -m : m;  // x NaN: canonical, sign clear, and m is the canonical NaN
}

}  // namespace

bool softcap_valid(std::uint16_t softcap) {
  return (softcap & 0x8000u) == 0 && (softcap & 0x7C00u) != 0x7C00u;  // +0 or a finite positive FP16
}

void validate_softcap(std::uint16_t softcap) {
  if (softcap_valid(softcap)) return;
  char bits[8];
  std::snprintf(bits, sizeof bits, "0x%04X", static_cast<unsigned>(softcap));
  const float value = half_bits_to_float(softcap);
  const std::string what = std::isnan(value)   ? "NaN"
                           : std::isinf(value) ? (value > 0 ? "+Inf" : "-Inf")
                           : value == 0.0f     ? "-0"
                                               : std::to_string(value);
  throw Error("pim softmax: softcap " + std::string(bits) + " (" + what +
              "); expected +0 (no cap) or a finite FP16 > 0 (the attention logit soft-cap c)");
}

float softcap_fp32(float x, std::uint16_t softcap) {
  validate_softcap(softcap);
  return softcap == 0 ? x : softcap_fp32(x, softcap_constants(softcap));
}

void softmax_fp16(const std::uint16_t* scores, std::size_t n, std::uint16_t scale, std::uint16_t softcap,
                  std::uint16_t* probs, const std::uint16_t* sink) {
  if (n == 0 || n > kSoftmaxMaxElements)
    throw Error("pim softmax: n = " + std::to_string(n) + "; expected 1.." +
                std::to_string(kSoftmaxMaxElements) + " elements (softmax unit buffer)");
  validate_softcap(softcap);
  const bool capped = softcap != 0;
  const SoftcapConstants cap = capped ? softcap_constants(softcap) : SoftcapConstants{};
  // x'_i = scale s_i, capped; the max is over the capped values (so x'_i - max <= 0 always) and starts at the
  // sink S (widened exactly; not scaled, not capped), or at -Inf without one.
  const float s_sink = sink != nullptr ? half_to_float_table()[*sink] : 0.0f;
  std::vector<float> x(n);
  float max = sink != nullptr ? s_sink : -std::numeric_limits<float>::infinity();
  for (std::size_t i = 0; i < n; ++i) {
    x[i] = mul_fp16_exact(scale, scores[i]);
    if (capped) x[i] = softcap_fp32(x[i], cap);
    if (x[i] > max) max = x[i];  // NaN never replaces the max; it propagates through exp instead
  }
  std::vector<float> e(n);
  float sum = 0.0f;
  if (sink != nullptr) sum = add_fp32(sum, exp_neg_fp32(add_fp32(s_sink, -max)));  // e^(S - m), first
  for (std::size_t i = 0; i < n; ++i) {
    e[i] = exp_neg_fp32(add_fp32(x[i], -max));
    sum = add_fp32(sum, e[i]);
  }
  const float r = recip_fp32(sum);
  for (std::size_t i = 0; i < n; ++i) probs[i] = mul_round_fp16(e[i], r);
}

namespace {

#include "gelu_erf_coefficients.inc"

// GELU (tanh form) constants, FP32 (RNE of the real values): 2 sqrt(2/pi) and 2 sqrt(2/pi) x 0.044715.
constexpr float kGeluC1 = 0x1.988454p+0f;  // 0x3FCC422A = 1.59576917
constexpr float kGeluC3 = 0x1.2444f2p-4f;  // 0x3D922279 = 0.0713548139

// The sigmoid unit (back stages B1..B4): e^-|x|, 1 + u, its reciprocal, and u y for a negative x.
float sigmoid_fp32(float x) {
  const float u = exp_neg_fp32(x);                    // e^-|x|
  const float y = recip_fp32(add_fp32(1.0f, u));      // sigmoid(|x|)
  return std::signbit(x) ? mul_trunc_fp32(u, y) : y;  // sigmoid(x)
}

// z = s (c1 + c3 s^2): gelu_tanh(s) = s sigmoid(z).
float gelu_tanh_argument(float s) {
  const float s2 = mul_fp32(s, s);
  const float p = add_fp32(kGeluC1, mul_fp32(kGeluC3, s2));
  return mul_fp32(s, p);
}

// z = s G(u), u = min(s^2, 36), G of degree 7 by Horner (rtl/scripts/fit_gelu_erf.py):
// gelu(s) = s Phi(s) ~ s sigmoid(z).
float gelu_erf_argument(float s) {
  const float s2 = mul_fp32(s, s);
  const float u_max = std::bit_cast<float>(kGeluErfUMaxBits);
  const float u = s2 > u_max ? u_max : s2;  // NaN stays NaN
  constexpr int kDegree = static_cast<int>(std::size(kGeluErfCoefficientBits)) - 1;
  float p = std::bit_cast<float>(kGeluErfCoefficientBits[kDegree]);
  for (int k = kDegree - 1; k >= 0; --k)
    p = add_fp32(mul_fp32(p, u), std::bit_cast<float>(kGeluErfCoefficientBits[k]));
  return mul_fp32(s, p);
}

// gpt-oss's clamped SwiGLU (kSwigluOaiGate): alpha as the unit holds it (FP32) and the limit.
constexpr float kSwigluOaiAlphaFp32 = 0x1.b3b646p+0f;  // kSwigluOaiAlphaFp32Bits
static_assert(std::bit_cast<std::uint32_t>(kSwigluOaiAlphaFp32) == kSwigluOaiAlphaFp32Bits);
constexpr float kSwigluOaiLimitFp32 = static_cast<float>(kSwigluOaiLimit);  // 7: exact

// ReLU of an FP16 operand in FP16: a if a > 0 or NaN, else +0.
std::uint16_t relu_bits(std::uint16_t a) {
  const bool nan = (a & 0x7C00u) == 0x7C00u && (a & 0x03FFu) != 0;
  const bool positive = (a & 0x8000u) == 0 && (a & 0x7FFFu) != 0;
  return nan || positive ? a : std::uint16_t{0};
}

}  // namespace

bool is_gated(ActivationMode mode) {
  validate(mode);
  return mode == ActivationMode::kSiluGate || mode == ActivationMode::kGeluTanhGate ||
         mode == ActivationMode::kReluGate || mode == ActivationMode::kGeluErfGate ||
         mode == ActivationMode::kSwigluOaiGate;
}

std::uint16_t silu_gate_fp16(std::uint16_t gate, std::uint16_t up) {
  return activation_fp16(ActivationMode::kSiluGate, gate, up);
}

const char* to_string(ActivationMode mode) {
  switch (mode) {
    case ActivationMode::kSiluGate:
      return "silu-gate";
    case ActivationMode::kGeluTanh:
      return "gelu-tanh";
    case ActivationMode::kRelu:
      return "relu";
    case ActivationMode::kGeluErf:
      return "gelu";
    case ActivationMode::kSilu:
      return "silu";
    case ActivationMode::kGeluTanhGate:
      return "gelu-tanh-gate";
    case ActivationMode::kReluGate:
      return "relu-gate";
    case ActivationMode::kGeluErfGate:
      return "gelu-gate";
    case ActivationMode::kSwigluOaiGate:
      return "swiglu-oai-gate";
  }
  validate(mode);
  return "";
}

std::string activation_mode_names() {
  std::string names;
  for (int v = 0; v < kActivationModes; ++v) {
    if (v > 0) names += v + 1 < kActivationModes ? ", " : " or ";
    names += std::to_string(v) + " (" + to_string(static_cast<ActivationMode>(v)) + ")";
  }
  return names;
}

void validate(ActivationMode mode) {
  const auto v = static_cast<unsigned>(mode);
  if (v >= static_cast<unsigned>(kActivationModes))
    throw Error("pim activation: mode " + std::to_string(v) + "; expected " + activation_mode_names());
}

std::uint16_t activation_fp16(ActivationMode mode, std::uint16_t a, std::uint16_t b) {
  const bool gated = is_gated(mode);  // validates
  const float* half = half_to_float_table();
  if (mode == ActivationMode::kReluGate) return to_fp16(mul_fp16_exact(half, relu_bits(a), b));
  if (mode == ActivationMode::kSwigluOaiGate) {
    // g = min(a, limit), u = clamp(b, -limit, limit): FP32 compares, a NaN is not clamped (it stays NaN).
    const float g = half[a] > kSwigluOaiLimitFp32 ? kSwigluOaiLimitFp32 : half[a];
    const float u = half[b] > kSwigluOaiLimitFp32    ? kSwigluOaiLimitFp32
                    : half[b] < -kSwigluOaiLimitFp32 ? -kSwigluOaiLimitFp32
                                                     : half[b];
    const float u1 = add_fp32(u, 1.0f);                // u + 1
    const float x = mul_fp32(kSwigluOaiAlphaFp32, g);  // the sigmoid's argument alpha g
    const float m = mul_fp32(g, u1);                   // the final multiplicand g (u + 1)
    return mul_round_fp16(m, sigmoid_fp32(x));
  }
  // s: the activation's argument (a, or a + b in FP32); m: the final multiplicand (a x b exact, or s).
  const float s = gated ? half[a] : add_fp32(half[a], half[b]);
  const float m = gated ? mul_fp16_exact(half, a, b) : s;
  switch (mode) {
    case ActivationMode::kRelu:
      return std::isnan(s) || s > 0.0f ? to_fp16(s) : std::uint16_t{0};  // to_fp16: NaN -> canonical
    case ActivationMode::kSiluGate:
    case ActivationMode::kSilu:
      return mul_round_fp16(m, sigmoid_fp32(s));
    case ActivationMode::kGeluTanh:
    case ActivationMode::kGeluTanhGate:
      return mul_round_fp16(m, sigmoid_fp32(gelu_tanh_argument(s)));
    default:  // kGeluErf, kGeluErfGate
      return mul_round_fp16(m, sigmoid_fp32(gelu_erf_argument(s)));
  }
}

void decode_attention_fp16(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                           std::size_t group, std::size_t t, std::size_t d, std::uint16_t scale,
                           std::uint16_t softcap, std::uint16_t* out, const DatapathParams& params,
                           const std::uint16_t* sinks) {
  make_golden_datapath(params)->decode_attention_fp16(q, k, v, group, t, d, scale, softcap, out, sinks);
}

}  // namespace duplex::pim
