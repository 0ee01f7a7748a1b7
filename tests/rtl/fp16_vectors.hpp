#pragma once
// Random FP16 test vectors for the RTL-vs-golden equivalence tests: realistic values mixed with the corner
// cases (zeros, subnormals, infinities, NaNs, the largest magnitudes) at a chosen rate. Fixed seeds only.
#include <array>
#include <cstdint>
#include <random>

namespace duplex::pim::testing {

inline constexpr std::array<std::uint16_t, 16> kFp16Corners{
    0x0000, 0x8000,                  // +-0
    0x0001, 0x8001, 0x03FF, 0x83FF,  // smallest / largest subnormals
    0x0400, 0x8400,                  // smallest normals
    0x7BFF, 0xFBFF,                  // +-65504
    0x7C00, 0xFC00,                  // +-Inf
    0x7E00, 0x7C01, 0xFE00,          // NaNs (quiet, signalling, negative)
    0x3C00};                         // 1.0

class Fp16Source {
 public:
  explicit Fp16Source(std::uint32_t seed) : rng_(seed) {}
  // A finite normal value with |x| in [2^emin, 2^(emax+1)), random sign.
  std::uint16_t normal(int emin, int emax) {
    const int e = std::uniform_int_distribution<int>(emin, emax)(rng_) + 15;
    const auto mant = static_cast<std::uint16_t>(rng_() & 0x3FFu);
    const auto sign = static_cast<std::uint16_t>((rng_() & 1u) << 15);
    return static_cast<std::uint16_t>(sign | (e << 10) | mant);
  }
  std::uint16_t subnormal() {
    return static_cast<std::uint16_t>((rng_() & 0x8000u) | (1u + rng_() % 0x3FFu));
  }
  std::uint16_t corner() { return kFp16Corners[rng_() % kFp16Corners.size()]; }
  std::uint16_t any_bits() { return static_cast<std::uint16_t>(rng_()); }
  // Realistic values, with a corner case at probability 1/corner_every (0: never).
  std::uint16_t mixed(unsigned corner_every, int emin = -8, int emax = 4) {
    if (corner_every != 0 && rng_() % corner_every == 0) return rng_() % 2 ? corner() : subnormal();
    return normal(emin, emax);
  }
  std::mt19937& rng() { return rng_; }

 private:
  std::mt19937 rng_;
};

}  // namespace duplex::pim::testing
