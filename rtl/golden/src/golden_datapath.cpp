// The golden Logic-PIM datapath: the units composed from the primitives in numerics.cpp.
#include "duplex/rtl/golden_datapath.hpp"

#include <array>
#include <bit>
#include <cmath>
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

float dot_fp16(const std::uint16_t* a, const std::uint16_t* b, std::size_t k, const DatapathParams& params) {
  validate(params);
  const auto lanes = static_cast<std::size_t>(params.lanes);
  std::array<float, 64> tree;  // lanes <= 64 (validate)
  const float* half = half_to_float_table();
  float acc = 0.0f;
  for (std::size_t base = 0; base < k; base += lanes) {
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
               const DatapathParams& params) {
  for (std::size_t row = 0; row < n; ++row) y[row] = to_fp16(dot_fp16(w + row * k, x, k, params));
}

void softmax_fp16(const std::uint16_t* scores, std::size_t n, std::uint16_t scale, std::uint16_t* probs) {
  if (n == 0 || n > kSoftmaxMaxElements)
    throw Error("pim softmax: n = " + std::to_string(n) + "; expected 1.." +
                std::to_string(kSoftmaxMaxElements) + " elements (softmax unit buffer)");
  float max = -std::numeric_limits<float>::infinity();
  for (std::size_t i = 0; i < n; ++i) {
    const float x = mul_fp16_exact(scale, scores[i]);
    if (x > max) max = x;  // NaN never replaces the max; it propagates through exp instead
  }
  std::vector<float> e(n);
  float sum = 0.0f;
  for (std::size_t i = 0; i < n; ++i) {
    e[i] = exp_neg_fp32(add_fp32(mul_fp16_exact(scale, scores[i]), -max));
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
         mode == ActivationMode::kReluGate || mode == ActivationMode::kGeluErfGate;
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
                           std::uint16_t* out, const DatapathParams& params) {
  make_golden_datapath(params)->decode_attention_fp16(q, k, v, group, t, d, scale, out);
}

}  // namespace duplex::pim
