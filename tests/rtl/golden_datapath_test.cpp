// The golden datapath units against double-precision references and their specified corner cases.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/rtl/datapath.hpp"
#include "duplex/rtl/golden_datapath.hpp"

namespace duplex::pim {
namespace {

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
    softmax_fp16(s.data(), n, scale, p.data());
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
  softmax_fp16(with_nan.data(), 3, h(1.0f), p.data());
  for (auto v : p) EXPECT_EQ(v, 0x7E00u);
  const std::vector<std::uint16_t> same{0x4000, 0x4000, 0x4000, 0x4000};
  softmax_fp16(same.data(), 4, h(1.0f), p.data());
  EXPECT_EQ(p[0], h(0.25f));  // e^0 = 1 and 1/4 are exact
  EXPECT_THROW(softmax_fp16(same.data(), 0, h(1.0f), p.data()), Error);
  std::vector<std::uint16_t> too_long(kSoftmaxMaxElements + 1);
  EXPECT_THROW(softmax_fp16(too_long.data(), too_long.size(), h(1.0f), too_long.data()), Error);
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
  decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, scale, out.data(), DatapathParams{});
  for (std::size_t g = 0; g < group; ++g) {
    std::vector<double> s(t);
    double mx = -INFINITY;
    for (std::size_t i = 0; i < t; ++i) {
      for (std::size_t j = 0; j < d; ++j) s[i] += f(q[g * d + j]) * f(k[i * d + j]);
      s[i] *= 0.125;
      mx = std::max(mx, s[i]);
    }
    double sum = 0.0;
    for (auto& x : s) sum += (x = std::exp(x - mx));
    for (std::size_t j = 0; j < d; ++j) {
      double ref = 0.0;
      for (std::size_t i = 0; i < t; ++i) ref += s[i] / sum * f(v[i * d + j]);
      EXPECT_NEAR(f(out[g * d + j]), ref, 4e-3) << g << " " << j;  // FP16 scores and probabilities
    }
  }
  auto dp = make_golden_datapath(DatapathParams{});
  std::vector<std::uint16_t> out2(group * d);
  dp->decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, scale, out2.data());
  EXPECT_EQ(out, out2);
  EXPECT_EQ(dp->kind(), "golden");
  EXPECT_FALSE(dp->simulated_cycles().has_value());
  EXPECT_THROW(make_golden_datapath(DatapathParams{3}), Error);
}

}  // namespace
}  // namespace duplex::pim
