// The golden datapath units against double-precision references and their specified corner cases.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/rtl/datapath.hpp"
#include "duplex/rtl/datapath_numerics.hpp"
#include "duplex/rtl/golden_datapath.hpp"
#include "fp16_reference.hpp"

namespace duplex::pim {
namespace {

using testing::nearest_fp16;

std::uint16_t h(float x) {
  return float_to_half_bits(x);
}
double f(std::uint16_t b) {
  return static_cast<double>(half_bits_to_float(b));
}

std::vector<std::uint16_t> random_halves(std::size_t n, float lo, float hi, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<std::uint16_t> v(n);
  for (auto& x : v) x = h(dist(rng));
  return v;
}

TEST(GoldenDatapath, ValidatesLanes) {
  EXPECT_THROW(validate(DatapathParams{0}), Error);
  EXPECT_THROW(validate(DatapathParams{12}), Error);
  EXPECT_THROW(validate(DatapathParams{128}), Error);
  EXPECT_NO_THROW(validate(DatapathParams{1}));
  EXPECT_NO_THROW(validate(DatapathParams{64}));
}

TEST(GoldenDatapath, DotFollowsTheStatedTreeOrder) {
  // lanes = 1: plain sequential FP32 accumulation.
  std::mt19937 rng(10);
  const auto a = random_halves(100, -2.0f, 2.0f, rng);
  const auto b = random_halves(100, -2.0f, 2.0f, rng);
  float seq = 0.0f;
  for (std::size_t i = 0; i < 100; ++i) seq += half_bits_to_float(a[i]) * half_bits_to_float(b[i]);
  EXPECT_EQ(dot_fp16(a.data(), b.data(), 100, DatapathParams{1}), seq);
  // lanes = 4, k = 6: acc = (+0 + ((p0+p1)+(p2+p3))) + ((p4+p5)+(0+0)).
  auto p = [&](std::size_t i) { return half_bits_to_float(a[i]) * half_bits_to_float(b[i]); };
  const float expect = (0.0f + ((p(0) + p(1)) + (p(2) + p(3)))) + ((p(4) + p(5)) + (0.0f + 0.0f));
  EXPECT_EQ(dot_fp16(a.data(), b.data(), 6, DatapathParams{4}), expect);
}

TEST(GoldenDatapath, DotCornerCases) {
  const DatapathParams params;
  const std::vector<std::uint16_t> big{0x7BFF, 0x7BFF};                      // 65504
  const std::vector<std::uint16_t> sign{0x3C00, 0xBC00};                     // +1, -1
  EXPECT_EQ(dot_fp16(big.data(), sign.data(), 2, params), 0.0f);             // max-magnitude cancellation
  EXPECT_EQ(to_fp16(dot_fp16(big.data(), big.data(), 1, params)), 0x7C00u);  // overflow at FP16 output
  EXPECT_EQ(std::bit_cast<std::uint32_t>(dot_fp16(big.data(), big.data(), 0, params)), 0u);  // k = 0: +0
  const std::vector<std::uint16_t> inf{0x7C00, 0xFC00};
  const std::vector<std::uint16_t> ones{0x3C00, 0x3C00};
  EXPECT_EQ(to_fp16(dot_fp16(inf.data(), ones.data(), 2, params)), 0x7E00u);  // Inf - Inf
  EXPECT_EQ(to_fp16(dot_fp16(inf.data(), ones.data(), 1, params)), 0x7C00u);
  EXPECT_EQ(to_fp16(std::bit_cast<float>(0xFFC12345u)), 0x7E00u);  // NaN canonicalised
}

TEST(GoldenDatapath, GemvCloseToDoubleReference) {
  std::mt19937 rng(11);
  const std::size_t n = 64;
  const std::size_t k = 1000;
  const auto w = random_halves(n * k, -1.0f, 1.0f, rng);
  const auto x = random_halves(k, -1.0f, 1.0f, rng);
  std::vector<std::uint16_t> y(n);
  gemv_fp16(w.data(), x.data(), y.data(), n, k, DatapathParams{});
  for (std::size_t r = 0; r < n; ++r) {
    double ref = 0.0;
    double mag = 0.0;
    for (std::size_t i = 0; i < k; ++i) {
      ref += f(w[r * k + i]) * f(x[i]);
      mag += std::fabs(f(w[r * k + i]) * f(x[i]));
    }
    // FP16 output rounding (2^-11 relative) + FP32 accumulation (k * 2^-24 of the magnitude sum).
    EXPECT_LE(std::fabs(f(y[r]) - ref), std::fabs(ref) * 0x1p-11 + mag * 1e-6 + 0x1p-24) << r;
  }
}

TEST(GoldenDatapath, SoftmaxCloseToDoubleReferenceAndSumsToOne) {
  std::mt19937 rng(12);
  for (std::size_t n : {1u, 7u, 128u, 4096u}) {
    const auto s = random_halves(n, -30.0f, 30.0f, rng);
    const std::uint16_t scale = h(0.125f);
    std::vector<std::uint16_t> p(n);
    softmax_fp16(s.data(), n, scale, 0, p.data());
    double mx = -INFINITY;
    for (auto v : s) mx = std::max(mx, 0.125 * f(v));
    double sum = 0.0;
    for (auto v : s) sum += std::exp(0.125 * f(v) - mx);
    double psum = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      const double ref = std::exp(0.125 * f(s[i]) - mx) / sum;
      EXPECT_LE(std::fabs(f(p[i]) - ref), ref * 6e-4 + 0x1p-25) << n << " " << i;
      psum += f(p[i]);
    }
    EXPECT_NEAR(psum, 1.0, 1e-3 + static_cast<double>(n) * 0x1p-25);
  }
  const std::vector<std::uint16_t> with_nan{0x3C00, 0x7E01, 0x0000};
  std::vector<std::uint16_t> p(3);
  softmax_fp16(with_nan.data(), 3, h(1.0f), 0, p.data());
  for (auto v : p) EXPECT_EQ(v, 0x7E00u);
  const std::vector<std::uint16_t> same{0x4000, 0x4000, 0x4000, 0x4000};
  softmax_fp16(same.data(), 4, h(1.0f), 0, p.data());
  EXPECT_EQ(p[0], h(0.25f));  // e^0 = 1 and 1/4 are exact
  EXPECT_THROW(softmax_fp16(same.data(), 0, h(1.0f), 0, p.data()), Error);
  std::vector<std::uint16_t> too_long(kSoftmaxMaxElements + 1);
  EXPECT_THROW(softmax_fp16(too_long.data(), too_long.size(), h(1.0f), 0, too_long.data()), Error);
}

// The uncapped softmax as rtl/golden/README.md states it (before the soft-cap existed), from the primitives.
std::vector<std::uint16_t> uncapped_softmax_reference(const std::vector<std::uint16_t>& s,
                                                      std::uint16_t scale) {
  using namespace numerics;
  float max = -INFINITY;
  for (auto v : s) max = std::max(max, mul_fp16_exact(scale, v));  // NaN never becomes the max
  std::vector<float> e(s.size());
  float sum = 0.0f;
  for (std::size_t i = 0; i < s.size(); ++i)
    sum = add_fp32(sum, e[i] = exp_neg_fp32(add_fp32(mul_fp16_exact(scale, s[i]), -max)));
  const float r = recip_fp32(sum);
  std::vector<std::uint16_t> p(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) p[i] = mul_round_fp16(e[i], r);
  return p;
}

TEST(GoldenDatapath, SoftcapValidation) {
  for (const int ok : {0x0000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0x5240, 0x7BFF}) {
    const auto bits = static_cast<std::uint16_t>(ok);
    EXPECT_TRUE(softcap_valid(bits)) << std::hex << ok;
    EXPECT_NO_THROW(validate_softcap(bits));
  }
  const std::vector<std::pair<std::uint16_t, std::string>> bad{
      {0x8000, "-0"},   {0xBC00, "-1"},  {0x8001, "-0.0000"}, {0x7C00, "+Inf"},
      {0xFC00, "-Inf"}, {0x7E00, "NaN"}, {0x7C01, "NaN"},     {0xFE00, "NaN"}};
  std::vector<std::uint16_t> s{0x3C00, 0x4000};
  std::vector<std::uint16_t> p(2);
  for (const auto& [bits, name] : bad) {
    EXPECT_FALSE(softcap_valid(bits)) << std::hex << bits;
    try {
      validate_softcap(bits);
      ADD_FAILURE() << "softcap " << std::hex << bits << " accepted";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("softcap"), std::string::npos) << what;
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%04X", static_cast<unsigned>(bits));
      EXPECT_NE(what.find(hex), std::string::npos) << what;
      EXPECT_NE(what.find(name), std::string::npos) << what;
    }
    EXPECT_THROW(softmax_fp16(s.data(), 2, h(1.0f), bits, p.data()), Error);
    EXPECT_THROW(softcap_fp32(1.0f, bits), Error);
    EXPECT_THROW(decode_attention_fp16(s.data(), s.data(), s.data(), 1, 1, 2, h(1.0f), bits, p.data(),
                                       DatapathParams{}),
                 Error);
  }
}

// softcap = +0 is the plain softmax, bit for bit: random rows with corner cases, every scale class.
TEST(GoldenDatapath, SoftcapZeroIsTheUncappedSoftmax) {
  std::mt19937 rng(14);
  std::uniform_int_distribution<int> bits(0, 0xFFFF);
  std::size_t rows = 0;
  for (std::size_t n : {1u, 2u, 7u, 64u, 1000u}) {
    for (int row = 0; row < 200; ++row) {
      std::vector<std::uint16_t> s(n);
      for (auto& v : s)
        v = row % 4 == 0 ? static_cast<std::uint16_t>(bits(rng))
                         : h(std::ldexp(static_cast<float>(bits(rng) - 32768), -(row % 12)));
      const auto scale = row % 5 == 0 ? static_cast<std::uint16_t>(bits(rng)) : h(0.125f);
      std::vector<std::uint16_t> p(n);
      softmax_fp16(s.data(), n, scale, 0, p.data());
      ASSERT_EQ(p, uncapped_softmax_reference(s, scale)) << "n " << n << " row " << row;
      ++rows;
    }
  }
  EXPECT_EQ(rows, 1000u);
  for (float x : {0.0f, -1.5f, 1e30f, -INFINITY, NAN}) {
    const float got = softcap_fp32(x, 0);
    EXPECT_EQ(std::bit_cast<std::uint32_t>(got), std::bit_cast<std::uint32_t>(x));
  }
}

// The cap stage's stated properties: odd (x'(-x) = -x'(x) exactly), |x'| <= c, x' = x for |x| << c
// (P(0) = 1), +-Inf -> +-c, NaN -> NaN, +-0 -> +-0.
TEST(GoldenDatapath, SoftcapProperties) {
  for (const float c : {50.0f, 30.0f, 8.0f, 1.0f, 0x1p-24f, 65504.0f}) {
    const std::uint16_t cap = h(c);
    for (float x = -5.0f * c; x <= 5.0f * c; x += c / 1024.0f) {
      const float got = softcap_fp32(x, cap);
      EXPECT_EQ(softcap_fp32(-x, cap), -got) << c << " " << x;
      EXPECT_LE(std::fabs(got), c) << c << " " << x;
    }
    EXPECT_EQ(softcap_fp32(c * 0x1p-20f, cap), c * 0x1p-20f) << c;
    EXPECT_EQ(softcap_fp32(INFINITY, cap), c);
    EXPECT_EQ(softcap_fp32(-INFINITY, cap), -c);
    EXPECT_EQ(std::bit_cast<std::uint32_t>(softcap_fp32(NAN, cap)), numerics::kCanonicalNanFp32);
    EXPECT_EQ(std::bit_cast<std::uint32_t>(softcap_fp32(-0.0f, cap)), 0x80000000u);
    EXPECT_EQ(std::bit_cast<std::uint32_t>(softcap_fp32(0.0f, cap)), 0u);
  }
}

// Scores beyond the cap: the capped softmax is the double softmax of c tanh(x / c) (a dropped cap would give
// the plain softmax, which differs); scores far below the cap are (almost) unchanged. Infinite scores are
// capped to c (no Inf - Inf).
TEST(GoldenDatapath, SoftcapAppliedBeforeTheSoftmax) {
  std::mt19937 rng(15);
  const std::uint16_t cap = h(10.0f);
  const auto s = random_halves(256, -40.0f, 40.0f, rng);  // x = s / 2 in [-20, 20]: beyond the cap
  std::vector<std::uint16_t> capped(s.size()), plain(s.size());
  softmax_fp16(s.data(), s.size(), h(0.5f), cap, capped.data());
  softmax_fp16(s.data(), s.size(), h(0.5f), 0, plain.data());
  EXPECT_NE(capped, plain);
  double mx = -INFINITY;
  std::vector<double> x(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) mx = std::max(mx, x[i] = 10.0 * std::tanh(0.5 * f(s[i]) / 10.0));
  double sum = 0.0;
  for (double v : x) sum += std::exp(v - mx);
  std::size_t differ = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const double ref = std::exp(x[i] - mx) / sum;
    EXPECT_LE(std::fabs(f(capped[i]) - ref), ref * 6e-4 + 0x1p-25) << i;
    differ += capped[i] != plain[i];
  }
  EXPECT_GT(differ, s.size() / 2);
  // |x| <= 0.15 = c / 66: c tanh(x / c) = x (1 - y^2 / 3 ...) moves x by < 2e-5: within one FP16 ulp.
  const auto small = random_halves(256, -0.3f, 0.3f, rng);
  softmax_fp16(small.data(), small.size(), h(0.5f), cap, capped.data());
  softmax_fp16(small.data(), small.size(), h(0.5f), 0, plain.data());
  for (std::size_t i = 0; i < small.size(); ++i) EXPECT_LE(testing::fp16_ulps(capped[i], plain[i]), 1) << i;
  const std::vector<std::uint16_t> inf{0x7C00, 0x4000, 0xFC00};
  std::vector<std::uint16_t> p(3);
  softmax_fp16(inf.data(), 3, h(1.0f), cap, p.data());  // x' = 10, 1.97, -10
  for (auto v : p) EXPECT_NE(v, 0x7E00u);
  EXPECT_GT(f(p[0]), 0.99);
  softmax_fp16(inf.data(), 3, h(1.0f), 0, p.data());  // uncapped: Inf - Inf
  EXPECT_EQ(p[0], 0x7E00u);
}

TEST(GoldenDatapath, SiluGateWithinOneUlpOfDoubleReference) {
  for (std::uint32_t gate = 0; gate < 0x10000u; gate += 7) {
    const auto g = static_cast<std::uint16_t>(gate);
    if (((g >> 10) & 0x1F) == 0x1F) continue;
    const std::uint16_t up = h(1.5f);
    const double ref = f(g) / (1.0 + std::exp(-f(g))) * 1.5;
    const double got = f(silu_gate_fp16(g, up));
    const double ulp =
        std::max(std::ldexp(1.0, static_cast<int>(std::floor(std::log2(std::fabs(ref) + 1e-300))) - 10),
                 std::ldexp(1.0, -24));
    if (std::fabs(ref) > 65504.0) continue;
    EXPECT_LE(std::fabs(got - ref), ulp) << std::hex << gate;
  }
  EXPECT_EQ(silu_gate_fp16(0x0000, 0x3C00), 0x0000u);
  EXPECT_EQ(silu_gate_fp16(0x8000, 0x3C00), 0x8000u);
  EXPECT_EQ(silu_gate_fp16(0x7C00, 0x3C00), 0x7C00u);  // silu(+Inf) = +Inf
  EXPECT_EQ(silu_gate_fp16(0x7C00, 0x0000), 0x7E00u);  // Inf x 0
  EXPECT_EQ(silu_gate_fp16(0xFC00, 0x3C00), 0x7E00u);  // -Inf x sigmoid(-Inf) = -Inf x 0 (README.md)
  EXPECT_EQ(silu_gate_fp16(0x3C00, 0x7E00), 0x7E00u);
}

TEST(GoldenDatapath, GatedModeWithUpOneIsTheAddedModeWithBiasZero) {
  // act(a) x 1 (gated: m = a x 1 exact, s = a) and act(a + 0) (added: s = m = a + 0 = a) take the same path
  // through the unit, for every a but -0 (-0 + +0 = +0). A gated mode that fed b into the argument, or an
  // added mode that multiplied by b, breaks it.
  const std::pair<ActivationMode, ActivationMode> pairs[] = {
      {ActivationMode::kSiluGate, ActivationMode::kSilu},
      {ActivationMode::kGeluTanhGate, ActivationMode::kGeluTanh},
      {ActivationMode::kGeluErfGate, ActivationMode::kGeluErf},
      {ActivationMode::kReluGate, ActivationMode::kRelu}};
  for (const auto& [gated, added] : pairs) {
    EXPECT_TRUE(is_gated(gated));
    EXPECT_FALSE(is_gated(added));
    for (std::uint32_t bits = 0; bits < 0x10000u; ++bits) {
      const auto a = static_cast<std::uint16_t>(bits);
      if (a == 0x8000u) continue;
      ASSERT_EQ(activation_fp16(gated, a, h(1.0f)), activation_fp16(added, a, 0x0000))
          << to_string(gated) << " " << std::hex << a;
    }
  }
}

TEST(GoldenDatapath, GeluErfSpecialValues) {
  auto gelu = [](std::uint16_t a, std::uint16_t b) {
    return activation_fp16(ActivationMode::kGeluErf, a, b);
  };
  EXPECT_EQ(gelu(0x0000, 0x0000), 0x0000u);
  EXPECT_EQ(gelu(0x8000, 0x8000), 0x8000u);                    // s = -0: -0 x 1/2
  EXPECT_EQ(gelu(0x7E00, 0x0000), 0x7E00u);                    // NaN
  EXPECT_EQ(gelu(0x3C00, 0x7D00), 0x7E00u);                    // NaN bias
  EXPECT_EQ(gelu(0x7C00, 0x0000), 0x7C00u);                    // u clamped to 36: z = +Inf, sigmoid 1
  EXPECT_EQ(gelu(0xFC00, 0x0000), 0x7E00u);                    // -Inf x 0, as the tanh form
  EXPECT_EQ(gelu(0x7BFF, 0x0000), 0x7BFFu);                    // 65504
  EXPECT_EQ(gelu(h(-6.5f), 0x0000), 0x8000u);                  // past the clamp: |gelu| < 2^-25 -> -0
  EXPECT_EQ(gelu(0xFBFF, 0x0000), 0x8000u);                    // -65504 -> -0
  EXPECT_EQ(gelu(h(-4.0f), h(2.0f)), gelu(h(-2.0f), 0x0000));  // the bias is added before the activation
  const double one = 0.5 * std::erfc(-1.0 / std::sqrt(2.0));   // gelu(1) = Phi(1) = 0.841345
  EXPECT_EQ(gelu(h(1.0f), 0x0000), nearest_fp16(one));
  // The tail, where the tanh form is 3% low: gelu(-2.5) = -0.015524, gelu_tanh(-2.5) = -0.015040.
  const double tail = -2.5 * 0.5 * std::erfc(2.5 / std::sqrt(2.0));
  EXPECT_EQ(gelu(h(-2.5f), 0x0000), nearest_fp16(tail));
  EXPECT_NE(gelu(h(-2.5f), 0x0000), activation_fp16(ActivationMode::kGeluTanh, h(-2.5f), 0x0000));
}

TEST(GoldenDatapath, ReluGateExhaustive) {
  // relu(a) x b: a > 0 ? a x b : +0 x b (a signed zero; NaN for b = Inf / NaN); NaN a stays NaN.
  for (const float up : {1.5f, -0.75f, 0.0f, 70000.0f, -1e-7f}) {
    const std::uint16_t b = h(up);
    for (std::uint32_t bits = 0; bits < 0x10000u; ++bits) {
      const auto a = static_cast<std::uint16_t>(bits);
      const float x = half_bits_to_float(a);
      const float relu = std::isnan(x) ? x : x > 0.0f ? x : 0.0f;
      const double exact = static_cast<double>(relu) * f(b);  // FP16 x FP16: exact in double
      const std::uint16_t want = std::isnan(exact) ? std::uint16_t{0x7E00} : nearest_fp16(exact);
      ASSERT_EQ(activation_fp16(ActivationMode::kReluGate, a, b), want) << std::hex << a << " " << b;
    }
  }
  EXPECT_EQ(activation_fp16(ActivationMode::kReluGate, h(-2.0f), h(-3.0f)), 0x8000u);  // +0 x -3 = -0
  EXPECT_EQ(activation_fp16(ActivationMode::kReluGate, h(-2.0f), 0x7C00), 0x7E00u);    // +0 x Inf
}

TEST(GoldenDatapath, GeluTanhSpecialValues) {
  auto gelu = [](std::uint16_t a, std::uint16_t b) {
    return activation_fp16(ActivationMode::kGeluTanh, a, b);
  };
  EXPECT_EQ(gelu(0x0000, 0x0000), 0x0000u);
  EXPECT_EQ(gelu(0x8000, 0x8000), 0x8000u);                    // s = -0: -0 x 1/2
  EXPECT_EQ(gelu(0x8000, 0x0000), 0x0000u);                    // s = -0 + +0 = +0
  EXPECT_EQ(gelu(0x7E00, 0x0000), 0x7E00u);                    // NaN
  EXPECT_EQ(gelu(0x3C00, 0x7D00), 0x7E00u);                    // NaN bias (payload dropped)
  EXPECT_EQ(gelu(0x7C00, 0x0000), 0x7C00u);                    // +Inf x sigmoid(+Inf) = +Inf x 1
  EXPECT_EQ(gelu(0xFC00, 0x0000), 0x7E00u);                    // -Inf x sigmoid(-Inf) = -Inf x 0 (README.md)
  EXPECT_EQ(gelu(0x7C00, 0xFC00), 0x7E00u);                    // Inf - Inf
  EXPECT_EQ(gelu(0x7BFF, 0x0000), 0x7BFFu);                    // 65504: sigmoid exactly 1
  EXPECT_EQ(gelu(0x7BFF, 0x7BFF), 0x7C00u);                    // s = 131008 rounds to +Inf
  EXPECT_EQ(gelu(h(-20.0f), 0x0000), 0x8000u);                 // |z| > 64: sigmoid 0, -20 x 0 = -0
  EXPECT_EQ(gelu(0xFBFF, 0x0000), 0x8000u);                    // -65504 -> -0
  EXPECT_EQ(gelu(h(-4.0f), h(2.0f)), gelu(h(-2.0f), 0x0000));  // the bias is added before the activation
  EXPECT_EQ(gelu(h(1.0f), 0x0000), h(0.8411920f));             // gelu_tanh(1) = 0.841192 (FP16 0x3ABB)
  EXPECT_THROW(activation_fp16(static_cast<ActivationMode>(9), 0, 0), Error);
  EXPECT_EQ(std::string(to_string(ActivationMode::kGeluTanh)), "gelu-tanh");
  EXPECT_EQ(std::string(to_string(ActivationMode::kGeluErfGate)), "gelu-gate");
  EXPECT_THROW(to_string(static_cast<ActivationMode>(9)), Error);
  EXPECT_THROW(is_gated(static_cast<ActivationMode>(255)), Error);
}

TEST(GoldenDatapath, ReluOfTheSumExhaustive) {
  std::size_t checked = 0;
  for (const float bias : {0.0f, -0.0f, 0.5f, -1.25f, 3.0f, 1000.0f, -0.0001f}) {
    const std::uint16_t b = h(bias);
    for (std::uint32_t bits = 0; bits < 0x10000u; ++bits) {
      const auto a = static_cast<std::uint16_t>(bits);
      const double exact = f(a) + f(b);          // exact in double: two FP16 values
      const auto s = static_cast<float>(exact);  // one RNE rounding: the FP32 sum
      const std::uint16_t want = std::isnan(s) ? std::uint16_t{0x7E00}
                                 : s > 0.0f    ? nearest_fp16(s)
                                               : std::uint16_t{0};
      ASSERT_EQ(activation_fp16(ActivationMode::kRelu, a, b), want) << std::hex << a << " " << b;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 7u * 65536u);
  EXPECT_EQ(activation_fp16(ActivationMode::kRelu, 0x8000, 0x0000), 0x0000u);  // -0 -> +0
  EXPECT_EQ(activation_fp16(ActivationMode::kRelu, 0xFC00, 0x0000), 0x0000u);  // -Inf -> +0
  EXPECT_EQ(activation_fp16(ActivationMode::kRelu, 0x7C00, 0x0000), 0x7C00u);
  EXPECT_EQ(activation_fp16(ActivationMode::kRelu, 0x7BFF, 0x7BFF), 0x7C00u);  // 131008 -> Inf
  EXPECT_EQ(activation_fp16(ActivationMode::kRelu, 0xFE00, 0x0000), 0x7E00u);  // NaN, sign cleared
}

TEST(GoldenDatapath, ActivationModesDiffer) {
  // One input where every pair of the nine modes disagrees: a mode mixed up anywhere changes bits.
  // a + b = -3.25 (the tail, where GELU's two forms differ); relu(a + b) = +0 but relu(a) x b = -0.
  const std::uint16_t a = h(-2.5f);
  const std::uint16_t b = h(-0.75f);
  std::vector<std::uint16_t> results;
  for (int mode = 0; mode < kActivationModes; ++mode)
    results.push_back(activation_fp16(static_cast<ActivationMode>(mode), a, b));
  for (std::size_t i = 0; i < results.size(); ++i)
    for (std::size_t j = i + 1; j < results.size(); ++j)
      EXPECT_NE(results[i], results[j])
          << to_string(static_cast<ActivationMode>(i)) << " vs " << to_string(static_cast<ActivationMode>(j));
  auto dp = make_golden_datapath(DatapathParams{});
  const std::vector<std::uint16_t> as{a, a};
  const std::vector<std::uint16_t> bs{b, b};
  std::vector<std::uint16_t> out(2);
  dp->activation_fp16_n(ActivationMode::kGeluErf, as.data(), bs.data(), out.data(), 2);
  EXPECT_EQ(out[1], results[static_cast<std::size_t>(ActivationMode::kGeluErf)]);
  EXPECT_EQ(dp->silu_gate_fp16(a, b), results[0]);
  EXPECT_THROW(dp->activation_fp16_n(static_cast<ActivationMode>(kActivationModes), as.data(), bs.data(),
                                     out.data(), 2),
               Error);
  EXPECT_EQ(kActivationModes, 9);
  EXPECT_STREQ(to_string(ActivationMode::kSwigluOaiGate), "swiglu-oai-gate");
  EXPECT_TRUE(is_gated(ActivationMode::kSwigluOaiGate));
  EXPECT_NE(activation_mode_names().find("8 (swiglu-oai-gate)"), std::string::npos)
      << activation_mode_names();
  try {
    validate(static_cast<ActivationMode>(9));
    ADD_FAILURE() << "mode 9 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mode 9"), std::string::npos) << e.what();
  }
}

// gpt-oss's clamped SwiGLU (mode 8) composed from the primitives in the order rtl/golden/README.md states:
// g = min(a, 7), u = clamp(b, -7, 7), u1 = u + 1, x = alpha g, m = g u1, out = round_fp16(m sigmoid(x)) with
// the sigmoid unit's e^-|x|, 1 + u, recip and (x < 0) truncated u y. Every FP16 gate x 12 up values, bit for
// bit; a reordered product (m = (g alpha-free) ...) or a different alpha fails here.
TEST(GoldenDatapath, SwigluOaiFollowsTheStatedOrder) {
  using namespace numerics;
  EXPECT_EQ(std::bit_cast<std::uint32_t>(static_cast<float>(kSwigluOaiAlpha)), kSwigluOaiAlphaFp32Bits);
  const float alpha = std::bit_cast<float>(kSwigluOaiAlphaFp32Bits);
  auto sigmoid = [](float x) {
    const float u = exp_neg_fp32(x);
    const float y = recip_fp32(add_fp32(1.0f, u));
    return std::signbit(x) ? mul_trunc_fp32(u, y) : y;
  };
  for (const float up :
       {-9.0f, -7.0f, -6.99f, -1.0f, -0.999f, -0.0f, 0.0f, 0.5f, 3.0f, 7.0f, 7.01f, 100.0f}) {
    const std::uint16_t b = h(up);
    for (std::uint32_t bits = 0; bits < 0x10000u; ++bits) {
      const auto a = static_cast<std::uint16_t>(bits);
      const float fa = half_bits_to_float(a), fb = half_bits_to_float(b);
      const float g = fa > 7.0f ? 7.0f : fa;
      const float u = fb > 7.0f ? 7.0f : fb < -7.0f ? -7.0f : fb;
      const float m = mul_fp32(g, add_fp32(u, 1.0f));
      const std::uint16_t want = mul_round_fp16(m, sigmoid(mul_fp32(alpha, g)));
      ASSERT_EQ(activation_fp16(ActivationMode::kSwigluOaiGate, a, b), want) << std::hex << a << " " << b;
    }
  }
}

// Mode 8's clamps and special values (HF GptOssExperts: gate.clamp(max=7), up.clamp(-7, 7); torch.clamp keeps
// NaN): a gate above 7 (+Inf included) is 7, an up beyond +-7 (+-Inf included) is +-7; NaN gate or up -> NaN;
// gate -Inf -> -Inf x sigmoid(-Inf) = -Inf x 0 = NaN (as SiLU's); up = -1 -> a zero with the sign of g;
// gate +-0 -> a signed zero.
TEST(GoldenDatapath, SwigluOaiClampsAndSpecialValues) {
  auto oai = [](std::uint16_t a, std::uint16_t b) {
    return activation_fp16(ActivationMode::kSwigluOaiGate, a, b);
  };
  const std::uint16_t seven = h(7.0f), minus_seven = h(-7.0f);
  for (const std::uint16_t b : {h(0.5f), h(-3.0f), h(6.0f), h(-1.0f), h(0.0f)}) {
    for (const std::uint16_t a :
         {h(7.0078125f), h(8.0f), h(100.0f), std::uint16_t{0x7BFF}, std::uint16_t{0x7C00}})
      EXPECT_EQ(oai(a, b), oai(seven, b)) << std::hex << a << " " << b;
    if (b != h(-1.0f)) {
      EXPECT_NE(oai(h(6.5f), b), oai(seven, b)) << std::hex << b;  // inside: not clamped
    }
  }
  for (const std::uint16_t a : {h(-3.0f), h(0.25f), h(5.0f), h(7.0f), h(20.0f)}) {
    for (const std::uint16_t b : {h(7.0078125f), h(9.0f), std::uint16_t{0x7BFF}, std::uint16_t{0x7C00}})
      EXPECT_EQ(oai(a, b), oai(a, seven)) << std::hex << a << " " << b;
    for (const std::uint16_t b : {h(-7.0078125f), h(-9.0f), std::uint16_t{0xFBFF}, std::uint16_t{0xFC00}})
      EXPECT_EQ(oai(a, b), oai(a, minus_seven)) << std::hex << a << " " << b;
    EXPECT_NE(oai(a, h(6.5f)), oai(a, seven)) << std::hex << a;
    EXPECT_NE(oai(a, h(-6.5f)), oai(a, minus_seven)) << std::hex << a;
  }
  for (const std::uint16_t nan : {std::uint16_t{0x7E00}, std::uint16_t{0xFE00}, std::uint16_t{0x7C01}}) {
    EXPECT_EQ(oai(nan, h(1.0f)), 0x7E00u);
    EXPECT_EQ(oai(h(1.0f), nan), 0x7E00u);
  }
  EXPECT_EQ(oai(0xFC00, h(1.0f)), 0x7E00u);    // -Inf x 0
  EXPECT_EQ(oai(h(2.0f), h(-1.0f)), 0x0000u);  // u + 1 = +0
  EXPECT_EQ(oai(h(-2.0f), h(-1.0f)), 0x8000u);
  EXPECT_EQ(oai(0x0000, h(3.0f)), 0x0000u);
  EXPECT_EQ(oai(0x8000, h(3.0f)), 0x8000u);
  EXPECT_EQ(oai(0x0000, h(-3.0f)), 0x8000u);  // +0 x (u + 1 = -2)
  EXPECT_EQ(oai(0xFBFF, h(1.0f)), 0x8000u);   // g sigmoid(1.702 g) underflows: -0
  // gate 7, up 7: 7 sigmoid(11.914) x 8 = 55.9996..., to FP16 56
  EXPECT_EQ(oai(seven, seven), h(56.0f));
  // gate 1, up 0: sigmoid(1.702) = 0.84579...
  EXPECT_EQ(oai(h(1.0f), h(0.0f)), nearest_fp16(1.0 / (1.0 + std::exp(-1.702))));
}

// Decode attention in double for one GQA group: softmax(s) v per query head, s = scale q . k, soft-capped to
// cap tanh(s / cap) when cap > 0. q [group][d], K and V [t][d] -> [group][d].
std::vector<double> reference_attention(const std::vector<std::uint16_t>& q,
                                        const std::vector<std::uint16_t>& k,
                                        const std::vector<std::uint16_t>& v, std::size_t group, std::size_t t,
                                        std::size_t d, double scale, double cap) {
  std::vector<double> out(group * d);
  for (std::size_t g = 0; g < group; ++g) {
    std::vector<double> s(t);
    double mx = -INFINITY;
    for (std::size_t i = 0; i < t; ++i) {
      for (std::size_t j = 0; j < d; ++j) s[i] += f(q[g * d + j]) * f(k[i * d + j]);
      s[i] *= scale;
      if (cap > 0) s[i] = cap * std::tanh(s[i] / cap);
      mx = std::max(mx, s[i]);
    }
    double sum = 0.0;
    for (auto& x : s) sum += (x = std::exp(x - mx));
    for (std::size_t j = 0; j < d; ++j)
      for (std::size_t i = 0; i < t; ++i) out[g * d + j] += s[i] / sum * f(v[i * d + j]);
  }
  return out;
}

TEST(GoldenDatapath, DecodeAttentionComposesTheUnits) {
  std::mt19937 rng(13);
  const std::size_t group = 4;
  const std::size_t t = 37;
  const std::size_t d = 64;
  const auto q = random_halves(group * d, -1.0f, 1.0f, rng);
  const auto k = random_halves(t * d, -1.0f, 1.0f, rng);
  const auto v = random_halves(t * d, -1.0f, 1.0f, rng);
  const std::uint16_t scale = h(0.125f);
  std::vector<std::uint16_t> out(group * d);
  decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, scale, 0, out.data(), DatapathParams{});
  const std::vector<double> ref = reference_attention(q, k, v, group, t, d, 0.125, 0.0);
  for (std::size_t i = 0; i < ref.size(); ++i)
    EXPECT_NEAR(f(out[i]), ref[i], 4e-3) << i / d << " " << i % d;  // FP16 scores and probabilities
  auto dp = make_golden_datapath(DatapathParams{});
  std::vector<std::uint16_t> out2(group * d);
  dp->decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, scale, 0, out2.data());
  EXPECT_EQ(out, out2);
  EXPECT_EQ(dp->kind(), "golden");
  EXPECT_FALSE(dp->simulated_cycles().has_value());
  EXPECT_THROW(make_golden_datapath(DatapathParams{3}), Error);
}

// Decode attention with a soft-cap: the double reference with c tanh(scale s / c) before the softmax.
TEST(GoldenDatapath, DecodeAttentionSoftcap) {
  std::mt19937 rng(16);
  const std::size_t group = 2;
  const std::size_t t = 50;
  const std::size_t d = 32;
  const auto q = random_halves(group * d, -1.0f, 1.0f, rng);
  const auto k = random_halves(t * d, -1.0f, 1.0f, rng);
  const auto v = random_halves(t * d, -1.0f, 1.0f, rng);
  const double cap = 1.5;
  std::vector<std::uint16_t> out(group * d), plain(group * d);
  decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, h(1.0f), h(1.5f), out.data(),
                        DatapathParams{});
  decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, h(1.0f), 0, plain.data(),
                        DatapathParams{});
  EXPECT_NE(out, plain);
  const std::vector<double> ref = reference_attention(q, k, v, group, t, d, 1.0, cap);
  for (std::size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(f(out[i]), ref[i], 4e-3) << i / d << " " << i % d;
}

// The GEMV bias starts the FP32 accumulator (README.md "GEMM lane"): lanes = 1 is bias + p0 + p1 + ... in
// order; lanes = 4, k = 6: (bias + ((p0+p1)+(p2+p3))) + ((p4+p5)+(0+0)). The bias is added once in FP32,
// before the single FP16 rounding: W x = 1 + 2^-11 (an FP16 tie, rounds to 1) plus 2^-11 gives 1 + 2^-10;
// adding the bias after rounding would give 1 again.
TEST(GoldenDatapath, GemvBiasStartsTheAccumulator) {
  std::mt19937 rng(17);
  const auto a = random_halves(100, -2.0f, 2.0f, rng);
  const auto b = random_halves(100, -2.0f, 2.0f, rng);
  const std::uint16_t bias = h(-3.375f);
  auto p = [&](std::size_t i) { return half_bits_to_float(a[i]) * half_bits_to_float(b[i]); };
  float seq = -3.375f;
  for (std::size_t i = 0; i < 100; ++i) seq += p(i);
  EXPECT_EQ(dot_fp16(a.data(), b.data(), 100, DatapathParams{1}, bias), seq);
  const float expect = (-3.375f + ((p(0) + p(1)) + (p(2) + p(3)))) + ((p(4) + p(5)) + (0.0f + 0.0f));
  EXPECT_EQ(dot_fp16(a.data(), b.data(), 6, DatapathParams{4}, bias), expect);
  // +0 (the default) is the plain dot product; k = 0 is one pass of +0 products: init + 0.
  EXPECT_EQ(std::bit_cast<std::uint32_t>(dot_fp16(a.data(), b.data(), 100, DatapathParams{}, 0)),
            std::bit_cast<std::uint32_t>(dot_fp16(a.data(), b.data(), 100, DatapathParams{})));
  EXPECT_EQ(dot_fp16(a.data(), b.data(), 0, DatapathParams{}, h(1.5f)), 1.5f);
  EXPECT_EQ(std::bit_cast<std::uint32_t>(dot_fp16(a.data(), b.data(), 0, DatapathParams{}, 0x8000)), 0u);
  EXPECT_TRUE(std::isnan(dot_fp16(a.data(), b.data(), 3, DatapathParams{}, 0x7E00)));
  // One FP16 rounding of W x + bias.
  const std::vector<std::uint16_t> w{h(1.0f), h(0x1p-11f)};
  const std::vector<std::uint16_t> x{h(1.0f), h(1.0f)};
  const std::uint16_t tiny = h(0x1p-11f);
  std::vector<std::uint16_t> y(1);
  gemv_fp16(w.data(), x.data(), y.data(), 1, 2, DatapathParams{});
  EXPECT_EQ(y[0], 0x3C00u);  // 1 + 2^-11 ties to even
  gemv_fp16(w.data(), x.data(), y.data(), 1, 2, DatapathParams{}, &tiny);
  EXPECT_EQ(y[0], 0x3C01u);  // 1 + 2^-10
  // gemv with a bias = each row's dot product started at its bias; zeros = no bias, bit for bit.
  const std::size_t n = 33, k = 70;
  const auto wm = random_halves(n * k, -1.0f, 1.0f, rng);
  const auto xv = random_halves(k, -1.0f, 1.0f, rng);
  const auto bv = random_halves(n, -4.0f, 4.0f, rng);
  std::vector<std::uint16_t> with(n), without(n), zeros_bias(n);
  const std::vector<std::uint16_t> zeros(n, 0);
  gemv_fp16(wm.data(), xv.data(), with.data(), n, k, DatapathParams{}, bv.data());
  gemv_fp16(wm.data(), xv.data(), without.data(), n, k, DatapathParams{});
  gemv_fp16(wm.data(), xv.data(), zeros_bias.data(), n, k, DatapathParams{}, zeros.data());
  EXPECT_EQ(zeros_bias, without);
  EXPECT_NE(with, without);
  auto dp = make_golden_datapath(DatapathParams{});
  std::vector<std::uint16_t> via_interface(n);
  dp->gemv_fp16(wm.data(), xv.data(), via_interface.data(), n, k, bv.data());
  EXPECT_EQ(via_interface, with);
  for (std::size_t r = 0; r < n; ++r) {
    ASSERT_EQ(with[r], to_fp16(dot_fp16(wm.data() + r * k, xv.data(), k, DatapathParams{}, bv[r]))) << r;
    double ref = f(bv[r]), mag = std::fabs(ref);
    for (std::size_t i = 0; i < k; ++i) {
      ref += f(wm[r * k + i]) * f(xv[i]);
      mag += std::fabs(f(wm[r * k + i]) * f(xv[i]));
    }
    EXPECT_LE(std::fabs(f(with[r]) - ref), std::fabs(ref) * 0x1p-11 + mag * 1e-6 + 0x1p-24) << r;
  }
}

// The softmax with an attention sink S, from the primitives in the order README.md states: the max starts at
// S (not scaled, not capped), the sum at e^(S - m); p_i = e_i r. Random rows (any bits included), capped and
// not, several sinks.
std::vector<std::uint16_t> sink_softmax_reference(const std::vector<std::uint16_t>& s, std::uint16_t scale,
                                                  std::uint16_t cap, std::uint16_t sink) {
  using namespace numerics;
  const float sv = half_bits_to_float(sink);
  float max = sv;
  std::vector<float> x(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    x[i] = softcap_fp32(mul_fp16_exact(scale, s[i]), cap);
    if (x[i] > max) max = x[i];
  }
  float sum = add_fp32(0.0f, exp_neg_fp32(add_fp32(sv, -max)));
  std::vector<float> e(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) sum = add_fp32(sum, e[i] = exp_neg_fp32(add_fp32(x[i], -max)));
  const float r = recip_fp32(sum);
  std::vector<std::uint16_t> p(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) p[i] = mul_round_fp16(e[i], r);
  return p;
}

TEST(GoldenDatapath, SoftmaxSinkFollowsTheStatedOrder) {
  std::mt19937 rng(18);
  std::uniform_int_distribution<int> bits(0, 0xFFFF);
  for (std::size_t n : {1u, 2u, 7u, 64u, 1000u}) {
    for (int row = 0; row < 100; ++row) {
      std::vector<std::uint16_t> s(n);
      for (auto& v : s)
        v = row % 4 == 0 ? static_cast<std::uint16_t>(bits(rng))
                         : h(std::ldexp(static_cast<float>(bits(rng) - 32768), -12));
      const std::uint16_t scale = row % 5 == 0 ? h(1.0f) : h(0.5f);
      const std::uint16_t cap = row % 3 == 0 ? h(4.0f) : std::uint16_t{0};
      const std::uint16_t sink =
          row % 7 == 0 ? static_cast<std::uint16_t>(bits(rng)) : h(static_cast<float>(row % 13) - 6.0f);
      std::vector<std::uint16_t> p(n);
      softmax_fp16(s.data(), n, scale, cap, p.data(), &sink);
      ASSERT_EQ(p, sink_softmax_reference(s, scale, cap, sink)) << "n " << n << " row " << row;
    }
  }
}

// No sink (nullptr) is the softmax as before, bit for bit; a sink of -Inf is exactly no sink (its e is 0 and
// it never raises the max); a very negative finite sink (-65504) gives the same bits on ordinary rows; a NaN
// or +Inf sink makes the row NaN (a NaN score does too); a dominant sink drives every p to 0; the sink is not
// scaled: S = 2 with scale 1/2 is the scaled scores' own competitor at 2.
TEST(GoldenDatapath, SoftmaxSinkLimitsAndSpecialValues) {
  std::mt19937 rng(19);
  std::uniform_int_distribution<int> bits(0, 0xFFFF);
  const std::uint16_t minus_inf = 0xFC00, very_negative = 0xFBFF;
  for (std::size_t n : {1u, 3u, 50u, 700u}) {
    for (int row = 0; row < 200; ++row) {
      std::vector<std::uint16_t> s(n);
      for (auto& v : s)
        v = row % 4 == 0 ? static_cast<std::uint16_t>(bits(rng))
                         : h(std::ldexp(static_cast<float>(bits(rng) - 32768), -11));
      const std::uint16_t cap = row % 2 == 0 ? h(8.0f) : std::uint16_t{0};
      std::vector<std::uint16_t> plain(n), with_inf(n), with_negative(n);
      softmax_fp16(s.data(), n, h(1.0f), cap, plain.data());
      ASSERT_EQ(plain, sink_softmax_reference(s, h(1.0f), cap, minus_inf)) << n << " " << row;
      softmax_fp16(s.data(), n, h(1.0f), cap, with_inf.data(), &minus_inf);
      ASSERT_EQ(with_inf, plain) << n << " " << row;
      if (row % 4 != 0) {  // ordinary scores, |x| <= 16: e^(-65504 - m) = 0, the max unchanged
        softmax_fp16(s.data(), n, h(1.0f), cap, with_negative.data(), &very_negative);
        for (std::size_t i = 0; i < n; ++i) ASSERT_LE(testing::fp16_ulps(with_negative[i], plain[i]), 1);
        ASSERT_EQ(with_negative, plain);  // in fact bit for bit
      }
    }
  }
  const auto s = random_halves(100, -8.0f, 8.0f, rng);
  std::vector<std::uint16_t> p(100);
  for (const std::uint16_t bad : {std::uint16_t{0x7E00}, std::uint16_t{0x7C01}, std::uint16_t{0x7C00}}) {
    softmax_fp16(s.data(), 100, h(1.0f), 0, p.data(), &bad);
    for (auto v : p) ASSERT_EQ(v, 0x7E00u) << std::hex << bad;
  }
  const std::uint16_t dominant = h(60.0f);  // e^(x - 60) < 2^-74 for x <= 8
  softmax_fp16(s.data(), 100, h(1.0f), 0, p.data(), &dominant);
  for (auto v : p) EXPECT_EQ(v, 0x0000u);
  const std::uint16_t moderate = h(8.0f);  // p shrinks by 1 / (1 + e^8 / sum e^x)
  std::vector<std::uint16_t> plain(100);
  softmax_fp16(s.data(), 100, h(1.0f), 0, plain.data());
  softmax_fp16(s.data(), 100, h(1.0f), 0, p.data(), &moderate);
  double mx = -INFINITY, sum = 0;
  for (auto v : s) mx = std::max(mx, f(v));
  mx = std::max(mx, 8.0);
  for (auto v : s) sum += std::exp(f(v) - mx);
  sum += std::exp(8.0 - mx);
  for (std::size_t i = 0; i < 100; ++i) {
    const double ref = std::exp(f(s[i]) - mx) / sum;
    EXPECT_LE(std::fabs(f(p[i]) - ref), ref * 6e-4 + 0x1p-25) << i;
    EXPECT_LT(f(p[i]), f(plain[i]) + 0x1p-24) << i;
  }
  // Not scaled: scores 4 with scale 1/2 (x = 2) against S = 2: two equal logits, p = 1/2 each for one score.
  const std::uint16_t four = h(4.0f), two = h(2.0f);
  softmax_fp16(&four, 1, h(0.5f), 0, p.data(), &two);
  EXPECT_EQ(p[0], h(0.5f));
  // Not capped: a sink of 10 against cap 1 (x' <= 1) still dominates.
  const std::uint16_t ten = h(10.0f);
  softmax_fp16(&four, 1, h(1.0f), h(1.0f), p.data(), &ten);
  EXPECT_NEAR(f(p[0]), std::exp(1.0 - 10.0) / (1.0 + std::exp(1.0 - 10.0)), 1e-6);
  // The Datapath interface passes it through.
  auto dp = make_golden_datapath(DatapathParams{});
  std::vector<std::uint16_t> via_interface(100);
  dp->softmax_fp16(s.data(), 100, h(1.0f), 0, via_interface.data(), &moderate);
  softmax_fp16(s.data(), 100, h(1.0f), 0, p.data(), &moderate);
  EXPECT_EQ(via_interface, p);
}

// Decode attention with sinks: the double reference with each head's sink in its softmax; sinks change the
// result; the free function, the interface and per-head softmax_fp16 calls agree.
TEST(GoldenDatapath, DecodeAttentionSinks) {
  std::mt19937 rng(20);
  const std::size_t group = 3, t = 40, d = 32;
  const auto q = random_halves(group * d, -1.0f, 1.0f, rng);
  const auto k = random_halves(t * d, -1.0f, 1.0f, rng);
  const auto v = random_halves(t * d, -1.0f, 1.0f, rng);
  const std::vector<std::uint16_t> sinks{h(-1.5f), h(0.75f), h(3.0f)};
  const std::uint16_t scale = h(0.25f);
  std::vector<std::uint16_t> out(group * d), plain(group * d), via(group * d);
  decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, scale, 0, out.data(), DatapathParams{},
                        sinks.data());
  decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, scale, 0, plain.data(), DatapathParams{});
  EXPECT_NE(out, plain);
  make_golden_datapath(DatapathParams{})
      ->decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, scale, 0, via.data(), sinks.data());
  EXPECT_EQ(via, out);
  for (std::size_t g = 0; g < group; ++g) {
    std::vector<double> sc(t);
    double mx = f(sinks[g]);
    for (std::size_t i = 0; i < t; ++i) {
      for (std::size_t j = 0; j < d; ++j) sc[i] += f(q[g * d + j]) * f(k[i * d + j]);
      sc[i] *= 0.25;
      mx = std::max(mx, sc[i]);
    }
    double sum = std::exp(f(sinks[g]) - mx);
    for (auto& x : sc) sum += (x = std::exp(x - mx));
    for (std::size_t j = 0; j < d; ++j) {
      double ref = 0;
      for (std::size_t i = 0; i < t; ++i) ref += sc[i] / sum * f(v[i * d + j]);
      EXPECT_NEAR(f(out[g * d + j]), ref, 4e-3) << g << " " << j;
    }
  }
}

}  // namespace
}  // namespace duplex::pim
