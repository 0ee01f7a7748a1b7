// The golden Logic-PIM datapath: the units composed from the primitives in numerics.cpp.
#include "duplex/rtl/golden_datapath.hpp"

#include <array>
#include <bit>
#include <cmath>
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

std::uint16_t silu_gate_fp16(std::uint16_t gate, std::uint16_t up) {
  const float g = half_bits_to_float(gate);
  const float u = exp_neg_fp32(g);                                   // e^-|g|
  const float y = recip_fp32(add_fp32(1.0f, u));                     // sigmoid(|g|)
  const float s = (gate & 0x8000u) != 0 ? mul_trunc_fp32(u, y) : y;  // sigmoid(g)
  return mul_round_fp16(mul_fp16_exact(gate, up), s);
}

namespace {

// GELU (tanh form) constants, FP32 (RNE of the real values): 2 sqrt(2/pi) and 2 sqrt(2/pi) x 0.044715.
constexpr float kGeluC1 = 0x1.988454p+0f;  // 0x3FCC422A = 1.59576917
constexpr float kGeluC3 = 0x1.2444f2p-4f;  // 0x3D922279 = 0.0713548139

// s = a + b, FP16 operands widened exactly to FP32, one RNE addition.
float add_fp16_operands(std::uint16_t a, std::uint16_t b) {
  const float* half = half_to_float_table();
  return add_fp32(half[a], half[b]);
}

// s * sigmoid(z), z = s (c1 + c3 s^2): the sigmoid as the SiLU path computes it.
std::uint16_t gelu_tanh_fp16(std::uint16_t a, std::uint16_t b) {
  const float s = add_fp16_operands(a, b);
  const float s2 = mul_fp32(s, s);
  const float p = add_fp32(kGeluC1, mul_fp32(kGeluC3, s2));
  const float z = mul_fp32(s, p);
  const float u = exp_neg_fp32(z);                              // e^-|z|
  const float y = recip_fp32(add_fp32(1.0f, u));                // sigmoid(|z|)
  const float sg = std::signbit(z) ? mul_trunc_fp32(u, y) : y;  // sigmoid(z)
  return mul_round_fp16(s, sg);
}

std::uint16_t relu_fp16(std::uint16_t a, std::uint16_t b) {
  const float s = add_fp16_operands(a, b);
  return std::isnan(s) || s > 0.0f ? to_fp16(s) : std::uint16_t{0};  // to_fp16: NaN -> the canonical NaN
}

}  // namespace

const char* to_string(ActivationMode mode) {
  switch (mode) {
    case ActivationMode::kSiluGate:
      return "silu-gate";
    case ActivationMode::kGeluTanh:
      return "gelu-tanh";
    case ActivationMode::kRelu:
      return "relu";
  }
  validate(mode);
  return "";
}

void validate(ActivationMode mode) {
  const auto v = static_cast<unsigned>(mode);
  if (v >= static_cast<unsigned>(kActivationModes))
    throw Error("pim activation: mode " + std::to_string(v) +
                "; expected 0 (silu-gate), 1 (gelu-tanh) or 2 (relu)");
}

std::uint16_t activation_fp16(ActivationMode mode, std::uint16_t a, std::uint16_t b) {
  switch (mode) {
    case ActivationMode::kSiluGate:
      return silu_gate_fp16(a, b);
    case ActivationMode::kGeluTanh:
      return gelu_tanh_fp16(a, b);
    case ActivationMode::kRelu:
      return relu_fp16(a, b);
  }
  validate(mode);
  return 0;
}

void decode_attention_fp16(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                           std::size_t group, std::size_t t, std::size_t d, std::uint16_t scale,
                           std::uint16_t* out, const DatapathParams& params) {
  make_golden_datapath(params)->decode_attention_fp16(q, k, v, group, t, d, scale, out);
}

}  // namespace duplex::pim
