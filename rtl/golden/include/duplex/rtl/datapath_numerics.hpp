#pragma once
// The arithmetic primitives the datapath units are built from, exposed so tests can check them one by one.
// Each is specified bit-exactly in rtl/golden/README.md and has an RTL twin in rtl/common/.
// FP32 values travel as float; every NaN result is the canonical 0x7FC00000 (FP32) / 0x7E00 (FP16).
#include <bit>
#include <cmath>
#include <cstdint>

namespace duplex::pim::numerics {

inline constexpr std::uint32_t kCanonicalNanFp32 = 0x7FC00000u;
inline constexpr std::uint16_t kCanonicalNanFp16 = 0x7E00u;

// Canonicalises NaN: any NaN -> 0x7FC00000, other values unchanged.
inline float canonical(float x) {
  return std::isnan(x) ? std::bit_cast<float>(kCanonicalNanFp32) : x;
}
// The FP32 value of every FP16 bit pattern (duplex::half_bits_to_float, tabulated once: the MAC path's
// operand decode, [65536]).
const float* half_to_float_table();
// FP16 x FP16 -> FP32, exact (22-bit significand product; never subnormal). Inf x 0 -> NaN. `table` is
// half_to_float_table() (hoisted out of loops).
inline float mul_fp16_exact(const float* table, std::uint16_t a, std::uint16_t b) {
  return canonical(table[a] * table[b]);  // 11 x 11 bits: exact in FP32
}
inline float mul_fp16_exact(std::uint16_t a, std::uint16_t b) {
  return mul_fp16_exact(half_to_float_table(), a, b);
}
// IEEE 754 binary32 addition, round to nearest even, subnormals kept; x + (-x) = +0.
inline float add_fp32(float a, float b) {
  return canonical(a + b);
}
// IEEE 754 binary32 multiplication, round to nearest even, subnormals kept, overflow -> Inf; Inf x 0 -> NaN.
inline float mul_fp32(float a, float b) {
  return canonical(a * b);
}
// e^(-|z|), table + linear interpolation in fixed point (README.md): NaN -> NaN, |z| > 64 -> +0,
// otherwise a normal FP32 in (0, 1]; e^0 = 1 exactly.
float exp_neg_fp32(float z);
// 1/|d|, table + linear interpolation: NaN -> NaN, Inf -> +0, zero or subnormal -> +Inf, powers of two exact,
// results below the smallest normal -> +0.
float recip_fp32(float d);
// u * y with the exact 48-bit significand product truncated to 24 bits (both positive; 0 if u is 0).
float mul_trunc_fp32(float u, float y);
// The exact product a * b rounded once to FP16 (RNE, subnormals kept, overflow -> Inf).
// NaN operand or Inf x 0 -> NaN; Inf -> signed Inf; a zero -> signed zero.
std::uint16_t mul_round_fp16(float a, float b);

}  // namespace duplex::pim::numerics
