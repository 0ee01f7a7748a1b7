#include "duplex/base/fp16.hpp"

#include <bit>
#include <cmath>
#include <cstdint>
#include <gtest/gtest.h>
#include <random>

namespace duplex {
namespace {

// GCC's _Float16 (x86-64, SSE2) is an independent IEEE implementation: compare every conversion with it.
TEST(Fp16, HalfToFloatMatchesCompilerForAllEncodings) {
  for (std::uint32_t h = 0; h <= 0xFFFF; ++h) {
    const auto hb = static_cast<std::uint16_t>(h);
    const float ours = half_bits_to_float(hb);
    const float ref = static_cast<float>(std::bit_cast<_Float16>(hb));
    if (std::isnan(ref)) {
      EXPECT_TRUE(std::isnan(ours)) << std::hex << h;
    } else {
      EXPECT_EQ(std::bit_cast<std::uint32_t>(ours), std::bit_cast<std::uint32_t>(ref)) << std::hex << h;
    }
  }
}

TEST(Fp16, FloatToHalfRoundsLikeCompilerOnRandomAndEdgeFloats) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<std::uint32_t> any;
  auto check = [](float f) {
    const std::uint16_t ours = float_to_half_bits(f);
    const auto ref = std::bit_cast<std::uint16_t>(static_cast<_Float16>(f));
    if (std::isnan(f)) {
      EXPECT_EQ(ours & 0x7C00, 0x7C00);
      EXPECT_NE(ours & 0x03FF, 0);
    } else {
      ASSERT_EQ(ours, ref) << "f=" << f << " bits=" << std::hex << std::bit_cast<std::uint32_t>(f);
    }
  };
  for (int i = 0; i < 2'000'000; ++i) check(std::bit_cast<float>(any(rng)));
  // Every float whose exponent lies in the half range and around it, with tie-exercising mantissas.
  for (std::uint32_t e = 90; e < 150; ++e)
    for (std::uint32_t m : {0u, 1u, 0x1000u, 0x1001u, 0x0FFFu, 0x3000u, 0x7FFFFFu, 0x400000u, 0x402000u})
      for (std::uint32_t s : {0u, 1u}) check(std::bit_cast<float>((s << 31) | (e << 23) | m));
  check(65504.0f);
  check(65520.0f);  // rounds to infinity
  check(std::ldexp(1.0f, -25));  // tie between 0 and the smallest subnormal: to even (0)
}

TEST(Bf16, RoundTripsAndRoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16_bits(1.0f), 0x3F80);
  EXPECT_EQ(bf16_bits_to_float(0x3F80), 1.0f);
  // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: to even (1.0).
  EXPECT_EQ(float_to_bf16_bits(1.0f + std::ldexp(1.0f, -8)), 0x3F80);
  EXPECT_EQ(float_to_bf16_bits(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
  EXPECT_TRUE(std::isnan(bf16_bits_to_float(float_to_bf16_bits(NAN))));
  for (std::uint32_t b = 0; b <= 0xFFFF; ++b) {
    const float f = bf16_bits_to_float(static_cast<std::uint16_t>(b));
    if (!std::isnan(f)) {
      EXPECT_EQ(float_to_bf16_bits(f), b);
    }
  }
}

}  // namespace
}  // namespace duplex
