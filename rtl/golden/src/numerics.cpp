// Bit-exact arithmetic primitives of the Logic-PIM datapath (specification: rtl/golden/README.md).
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "duplex/base/fp16.hpp"
#include "duplex/rtl/datapath_numerics.hpp"

namespace duplex::pim::numerics {
namespace {

#include "datapath_tables.inc"

constexpr std::uint32_t kSignFp32 = 0x80000000u;
constexpr std::uint32_t kHiddenFp32 = 0x800000u;
constexpr std::uint32_t kMantFp32 = 0x7FFFFFu;
constexpr std::uint32_t kInfFp32 = 0x7F800000u;

std::uint32_t bits_of(float x) {
  return std::bit_cast<std::uint32_t>(x);
}
float from_bits(std::uint32_t b) {
  return std::bit_cast<float>(b);
}
bool is_nan(std::uint32_t b) {
  return (b & 0x7FFFFFFFu) > kInfFp32;
}
bool is_inf(std::uint32_t b) {
  return (b & 0x7FFFFFFFu) == kInfFp32;
}
bool is_zero(std::uint32_t b) {
  return (b & 0x7FFFFFFFu) == 0;
}

// A finite nonzero FP32 as significand * 2^exp2 (significand has its hidden bit for normals).
struct Unpacked {
  std::uint64_t significand;
  int exp2;
};
Unpacked unpack_finite(std::uint32_t b) {
  const std::uint32_t field = (b >> 23) & 0xFFu;
  const std::uint32_t mant = b & kMantFp32;
  if (field == 0) return {mant, 1 - 127 - 23};
  return {mant | kHiddenFp32, static_cast<int>(field) - 127 - 23};
}

int bit_width64(std::uint64_t x) {
  return static_cast<int>(std::bit_width(x));
}

// significand * 2^exp2 (significand > 0) rounded to FP16, RNE, subnormals kept, overflow -> Inf.
std::uint16_t round_to_fp16(bool negative, std::uint64_t significand, int exp2) {
  const std::uint16_t sign = negative ? 0x8000u : 0u;
  const int msb = bit_width64(significand) - 1;
  const int e = msb + exp2;  // unbiased exponent of the leading bit
  if (e > 15) return static_cast<std::uint16_t>(sign | 0x7C00u);
  // Quantum (weight of the last kept bit): 2^(e-10) for normals, 2^-24 for subnormals.
  const int quantum = e >= -14 ? e - 10 : -24;
  const int drop = quantum - exp2;  // low bits of significand below the quantum
  std::uint64_t q;
  if (drop <= 0) {
    q = significand << (-drop);
  } else if (drop > 63) {
    q = 0;  // far below half the smallest subnormal
  } else {
    q = significand >> drop;
    const std::uint64_t rem = significand & ((std::uint64_t{1} << drop) - 1);
    const std::uint64_t half = std::uint64_t{1} << (drop - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
  }
  // Normal: q in [2^10, 2^11] -> field (e+15), carry handled by the addition. Subnormal: q in [0, 2^10].
  std::uint32_t out;
  if (e >= -14) {
    out = (static_cast<std::uint32_t>(e + 15) << 10) + static_cast<std::uint32_t>(q) - 0x400u;
  } else {
    out = static_cast<std::uint32_t>(q);
  }
  if (out >= 0x7C00u) out = 0x7C00u;
  return static_cast<std::uint16_t>(sign | out);
}

}  // namespace

const float* half_to_float_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (std::uint32_t h = 0; h < t.size(); ++h) t[h] = half_bits_to_float(static_cast<std::uint16_t>(h));
    return t;
  }();
  return table.data();
}

float exp_neg_fp32(float z) {
  const std::uint32_t b = bits_of(z) & ~kSignFp32;
  if (is_nan(b)) return from_bits(kCanonicalNanFp32);
  if (is_zero(b)) return 1.0f;
  if (is_inf(b)) return 0.0f;
  const Unpacked u = unpack_finite(b);
  const int exp_lead = u.exp2 + 23;  // exponent of the hidden-bit position
  if (exp_lead > 6 || (exp_lead == 6 && u.significand > kHiddenFp32)) return 0.0f;  // |z| > 64
  // a_fix = floor(|z| * 2^20) = significand * 2^(exp2 + 20)
  const int shift = u.exp2 + 20;
  std::uint64_t a_fix;
  if (shift >= 0) {
    a_fix = u.significand << shift;
  } else if (shift <= -32) {
    a_fix = 0;
  } else {
    a_fix = u.significand >> (-shift);
  }
  constexpr std::uint64_t kLog2eQ24 = 24204407;       // round(log2(e) * 2^24)
  const std::uint64_t t = (a_fix * kLog2eQ24) >> 24;  // |z| * log2(e), Q.20
  const std::uint32_t n = static_cast<std::uint32_t>(t >> 20);
  const std::uint32_t idx = static_cast<std::uint32_t>(t >> 14) & 0x3Fu;
  const std::uint64_t frac = t & 0x3FFFu;
  const std::uint64_t hi = kExp2NegTable[idx];
  const std::uint64_t v = hi - (((hi - kExp2NegTable[idx + 1]) * frac) >> 14);  // 2^-f, Q1.30, in (0.5, 1]
  if (v == (std::uint64_t{1} << 30)) return from_bits((127u - n) << 23);
  return from_bits(((127u - n - 1u) << 23) | static_cast<std::uint32_t>((v - (std::uint64_t{1} << 29)) >> 6));
}

float recip_fp32(float d) {
  const std::uint32_t b = bits_of(d) & ~kSignFp32;
  if (is_nan(b)) return from_bits(kCanonicalNanFp32);
  if (is_inf(b)) return 0.0f;
  const std::uint32_t field = b >> 23;
  if (field == 0) return from_bits(kInfFp32);
  const std::uint32_t mant = b & kMantFp32;
  if (mant == 0) {
    const int out_field = 254 - static_cast<int>(field);
    return out_field <= 0 ? 0.0f : from_bits(static_cast<std::uint32_t>(out_field) << 23);
  }
  const std::uint32_t idx = mant >> 16;
  const std::uint64_t frac = mant & 0xFFFFu;
  const std::uint64_t hi = kRecipTable[idx];
  const std::uint64_t v = hi - (((hi - kRecipTable[idx + 1]) * frac) >> 16);  // 1/1.m, Q1.30, in (0.5, 1)
  const int out_field = 253 - static_cast<int>(field);
  if (out_field <= 0) return 0.0f;
  return from_bits((static_cast<std::uint32_t>(out_field) << 23) |
                   static_cast<std::uint32_t>((v - (std::uint64_t{1} << 29)) >> 6));
}

float mul_trunc_fp32(float u, float y) {
  const std::uint32_t ub = bits_of(u);
  const std::uint32_t yb = bits_of(y);
  if (is_zero(ub) || is_zero(yb)) return 0.0f;
  const std::uint64_t p = static_cast<std::uint64_t>((ub & kMantFp32) | kHiddenFp32) *
                          static_cast<std::uint64_t>((yb & kMantFp32) | kHiddenFp32);  // [2^46, 2^48)
  int field = static_cast<int>((ub >> 23) & 0xFFu) + static_cast<int>((yb >> 23) & 0xFFu) - 127;
  std::uint64_t sig;
  if (p >> 47) {
    sig = p >> 24;
    ++field;
  } else {
    sig = p >> 23;
  }
  if (field <= 0) return 0.0f;
  return from_bits((static_cast<std::uint32_t>(field) << 23) | (static_cast<std::uint32_t>(sig) & kMantFp32));
}

std::uint16_t mul_round_fp16(float a, float b) {
  const std::uint32_t ab = bits_of(a);
  const std::uint32_t bb = bits_of(b);
  const bool negative = ((ab ^ bb) & kSignFp32) != 0;
  const std::uint16_t sign = negative ? 0x8000u : 0u;
  if (is_nan(ab) || is_nan(bb)) return kCanonicalNanFp16;
  if ((is_inf(ab) && is_zero(bb)) || (is_zero(ab) && is_inf(bb))) return kCanonicalNanFp16;
  if (is_inf(ab) || is_inf(bb)) return static_cast<std::uint16_t>(sign | 0x7C00u);
  if (is_zero(ab) || is_zero(bb)) return sign;
  const Unpacked ua = unpack_finite(ab);
  const Unpacked ub = unpack_finite(bb);
  return round_to_fp16(negative, ua.significand * ub.significand, ua.exp2 + ub.exp2);
}

}  // namespace duplex::pim::numerics
