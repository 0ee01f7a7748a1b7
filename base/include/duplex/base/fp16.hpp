#pragma once
// IEEE 754 binary16 (FP16) and bfloat16 storage types with exact conversions.
// float -> half/bf16 rounds to nearest, ties to even, keeps subnormals, infinities and NaN (quiet NaN
// 0x7E00 / 0x7FC0 canonical); half/bf16 -> float is exact. These are the conversions the kernels, the
// golden PIM datapath and the RTL all agree on.
#include <cstdint>

namespace duplex {

std::uint16_t float_to_half_bits(float f);
float half_bits_to_float(std::uint16_t h);
std::uint16_t float_to_bf16_bits(float f);
float bf16_bits_to_float(std::uint16_t b);

// Storage types: 2 bytes, trivially copyable, explicit conversions only.
struct Half {
  std::uint16_t bits = 0;
  Half() = default;
  explicit Half(float f) : bits(float_to_half_bits(f)) {}
  static Half from_bits(std::uint16_t b) { Half h; h.bits = b; return h; }
  explicit operator float() const { return half_bits_to_float(bits); }
  float to_float() const { return half_bits_to_float(bits); }
};
struct BFloat16 {
  std::uint16_t bits = 0;
  BFloat16() = default;
  explicit BFloat16(float f) : bits(float_to_bf16_bits(f)) {}
  static BFloat16 from_bits(std::uint16_t b) { BFloat16 h; h.bits = b; return h; }
  explicit operator float() const { return bf16_bits_to_float(bits); }
  float to_float() const { return bf16_bits_to_float(bits); }
};
static_assert(sizeof(Half) == 2 && sizeof(BFloat16) == 2);

}  // namespace duplex
