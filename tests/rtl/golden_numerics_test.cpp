// The golden datapath primitives against independent references (double precision, std::exp).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <random>

#include "duplex/base/fp16.hpp"
#include "duplex/rtl/datapath_numerics.hpp"
#include "fp16_reference.hpp"

namespace duplex::pim::numerics {
namespace {

std::uint32_t bits(float x) {
  return std::bit_cast<std::uint32_t>(x);
}
float fbits(std::uint32_t b) {
  return std::bit_cast<float>(b);
}

using testing::nearest_fp16;

TEST(GoldenNumerics, MulFp16ExactMatchesDoubleProduct) {
  std::mt19937 rng(1);
  for (int i = 0; i < 200000; ++i) {
    const auto a = static_cast<std::uint16_t>(rng());
    const auto b = static_cast<std::uint16_t>(rng());
    const double exact =
        static_cast<double>(half_bits_to_float(a)) * static_cast<double>(half_bits_to_float(b));
    const float got = mul_fp16_exact(a, b);
    if (std::isnan(exact)) {
      EXPECT_EQ(bits(got), kCanonicalNanFp32);
    } else {
      EXPECT_EQ(static_cast<double>(got), exact) << std::hex << a << " " << b;
    }
  }
  EXPECT_EQ(bits(mul_fp16_exact(0x7C00, 0x0000)), kCanonicalNanFp32);                    // Inf x 0
  EXPECT_EQ(bits(mul_fp16_exact(0x8000, 0x3C00)), 0x80000000u);                          // -0 x 1 = -0
  EXPECT_EQ(static_cast<double>(mul_fp16_exact(0x0001, 0x0001)), std::ldexp(1.0, -48));  // subnormal^2, exact
}

TEST(GoldenNumerics, AddFp32IsIeeeWithCanonicalNan) {
  EXPECT_EQ(bits(add_fp32(1.0f, -1.0f)), 0u);  // x + (-x) = +0
  EXPECT_EQ(bits(add_fp32(-0.0f, -0.0f)), 0x80000000u);
  EXPECT_EQ(bits(add_fp32(INFINITY, -INFINITY)), kCanonicalNanFp32);
  EXPECT_EQ(bits(add_fp32(fbits(0xFFC00001u), 1.0f)), kCanonicalNanFp32);  // negative NaN with payload
  EXPECT_EQ(add_fp32(1.0f, 0x1p-24f), 1.0f);                               // tie to even
  EXPECT_EQ(add_fp32(1.0f, 0x1.8p-24f), 1.0f + 0x1p-23f);
}

TEST(GoldenNumerics, ExpNegWithinStatedErrorOfStdExp) {
  EXPECT_EQ(exp_neg_fp32(0.0f), 1.0f);
  EXPECT_EQ(exp_neg_fp32(-0.0f), 1.0f);
  EXPECT_EQ(bits(exp_neg_fp32(NAN)), kCanonicalNanFp32);
  EXPECT_EQ(bits(exp_neg_fp32(-INFINITY)), 0u);
  EXPECT_EQ(bits(exp_neg_fp32(64.5f)), 0u);
  EXPECT_GT(exp_neg_fp32(64.0f), 0.0f);
  EXPECT_EQ(exp_neg_fp32(3.0f), exp_neg_fp32(-3.0f));  // uses |z|
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> dist(0.0f, 64.0f);
  double worst = 0.0;
  for (int i = 0; i < 200000; ++i) {
    const float z = i % 2 ? dist(rng) : dist(rng) / 1024.0f;
    const double ref = std::exp(-static_cast<double>(z));
    const double rel = std::fabs(static_cast<double>(exp_neg_fp32(-z)) - ref) / ref;
    worst = std::max(worst, rel);
  }
  EXPECT_LT(worst, 4e-5);  // README.md states the measured figure
  EXPECT_GT(worst, 1e-7);  // it is an approximation, not std::exp
}

TEST(GoldenNumerics, RecipWithinStatedErrorAndExactOnPowersOfTwo) {
  EXPECT_EQ(recip_fp32(1.0f), 1.0f);
  EXPECT_EQ(recip_fp32(2.0f), 0.5f);
  EXPECT_EQ(recip_fp32(0x1p-20f), 0x1p20f);
  EXPECT_EQ(bits(recip_fp32(INFINITY)), 0u);
  EXPECT_EQ(bits(recip_fp32(0.0f)), 0x7F800000u);
  EXPECT_EQ(bits(recip_fp32(NAN)), kCanonicalNanFp32);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(1.0f, 40000.0f);
  double worst = 0.0;
  for (int i = 0; i < 200000; ++i) {
    const float d = dist(rng);
    const double ref = 1.0 / static_cast<double>(d);
    worst = std::max(worst, std::fabs(static_cast<double>(recip_fp32(d)) - ref) / ref);
  }
  EXPECT_LT(worst, 2e-5);
  EXPECT_GT(worst, 1e-7);
}

TEST(GoldenNumerics, MulTruncTruncatesTheExactProduct) {
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> dist(1e-20f, 1.0f);
  for (int i = 0; i < 100000; ++i) {
    const float u = dist(rng);
    const float y = dist(rng);
    const double exact = static_cast<double>(u) * static_cast<double>(y);
    const double got = static_cast<double>(mul_trunc_fp32(u, y));
    ASSERT_LE(got, exact);
    ASSERT_GT(static_cast<double>(std::nextafter(static_cast<float>(got), 1.0f)), exact);
  }
  EXPECT_EQ(mul_trunc_fp32(0.0f, 0.5f), 0.0f);
}

TEST(GoldenNumerics, MulRoundFp16IsTheNearestFp16OfTheExactProduct) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> exp_dist(-40, 18);
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  for (int i = 0; i < 200000; ++i) {
    const float a = std::ldexp(mant(rng), exp_dist(rng)) * (rng() % 2 ? -1.0f : 1.0f);
    const float b = std::ldexp(mant(rng), exp_dist(rng) / 2);
    const double exact = static_cast<double>(a) * static_cast<double>(b);
    ASSERT_EQ(mul_round_fp16(a, b), nearest_fp16(exact)) << a << " * " << b;
  }
  EXPECT_EQ(mul_round_fp16(INFINITY, 0.0f), kCanonicalNanFp16);
  EXPECT_EQ(mul_round_fp16(-INFINITY, 2.0f), 0xFC00u);
  EXPECT_EQ(mul_round_fp16(-0.0f, 2.0f), 0x8000u);
  EXPECT_EQ(mul_round_fp16(65520.0f, 1.0f), 0x7C00u);  // overflow after rounding
  EXPECT_EQ(mul_round_fp16(0x1p-25f, 1.0f), 0x0000u);  // exactly half the smallest subnormal: ties to even
  EXPECT_EQ(mul_round_fp16(0x1.8p-25f, 1.0f), 0x0001u);
}

TEST(GoldenNumerics, MulFp32IsTheRoundedExactProduct) {
  // The exact product of two FP32 values is a double (48-bit significand, exponent >= -298): one rounding of
  // it to float is the IEEE RNE product, subnormal and overflowing results included.
  std::mt19937 rng(6);
  for (int i = 0; i < 400000; ++i) {
    std::uint32_t ab = static_cast<std::uint32_t>(rng());
    std::uint32_t bb = static_cast<std::uint32_t>(rng());
    if (i % 2 == 1) {  // exponents near each other's negation: products around 1, subnormal and overflow
      ab = (ab & 0x807FFFFFu) | (static_cast<std::uint32_t>(rng() % 254 + 1) << 23);
      bb = (bb & 0x807FFFFFu) | (static_cast<std::uint32_t>(rng() % 254 + 1) << 23);
    }
    const float a = fbits(ab);
    const float b = fbits(bb);
    const double exact = static_cast<double>(a) * static_cast<double>(b);
    const float got = mul_fp32(a, b);
    if (std::isnan(exact)) {
      ASSERT_EQ(bits(got), kCanonicalNanFp32) << std::hex << ab << " " << bb;
    } else {
      ASSERT_EQ(bits(got), bits(static_cast<float>(exact))) << std::hex << ab << " " << bb;
    }
  }
  EXPECT_EQ(bits(mul_fp32(INFINITY, 0.0f)), kCanonicalNanFp32);
  EXPECT_EQ(bits(mul_fp32(-0.0f, 3.0f)), 0x80000000u);
  EXPECT_EQ(bits(mul_fp32(0x1p-75f, 0x1p-75f)), 0x00000000u);    // 2^-150: half the smallest subnormal, even
  EXPECT_EQ(bits(mul_fp32(0x1.8p-75f, 0x1p-75f)), 0x00000001u);  // 0.75 x 2^-149 rounds up
  EXPECT_EQ(bits(mul_fp32(-0x1p64f, 0x1p64f)), 0xFF800000u);     // overflow -> -Inf
}

}  // namespace
}  // namespace duplex::pim::numerics
