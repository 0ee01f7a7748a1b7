#pragma once
// The arithmetic primitives the datapath units are built from, exposed so tests can check them one by one.
// Each is specified bit-exactly in rtl/golden/README.md and has an RTL twin in rtl/common/.
// FP32 values travel as float; every NaN result is the canonical 0x7FC00000 (FP32) / 0x7E00 (FP16).
#include <cstdint>

namespace duplex::pim::numerics {

inline constexpr std::uint32_t kCanonicalNanFp32 = 0x7FC00000u;
inline constexpr std::uint16_t kCanonicalNanFp16 = 0x7E00u;

// FP16 x FP16 -> FP32, exact (22-bit significand product; never subnormal). Inf x 0 -> NaN.
float mul_fp16_exact(std::uint16_t a, std::uint16_t b);
// IEEE 754 binary32 addition, round to nearest even, subnormals kept; x + (-x) = +0.
float add_fp32(float a, float b);
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
// Canonicalises NaN: any NaN -> 0x7FC00000, other values unchanged.
float canonical(float x);

}  // namespace duplex::pim::numerics
