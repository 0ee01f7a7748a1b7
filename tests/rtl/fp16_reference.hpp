#pragma once
// Independent FP16 references for the accuracy tests: the FP16 nearest to a double (ties to even), found by
// comparing the neighbours of a first guess, and the distance in FP16 ulps between two finite values.
#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "duplex/base/fp16.hpp"

namespace duplex::pim::testing {

inline std::uint16_t nearest_fp16(double x) {
  if (std::isnan(x)) return 0x7E00;
  const std::uint16_t sign = std::signbit(x) ? 0x8000u : 0u;
  const double ax = std::fabs(x);
  if (ax >= 65520.0) return static_cast<std::uint16_t>(sign | 0x7C00u);  // 65504 + half ulp rounds to Inf
  const auto guess = static_cast<std::uint16_t>(float_to_half_bits(static_cast<float>(ax)) & 0x7FFFu);
  std::uint16_t best = guess;
  double best_err = std::fabs(static_cast<double>(half_bits_to_float(guess)) - ax);
  for (int delta : {-1, 1}) {
    const int c = guess + delta;
    if (c < 0 || c > 0x7BFF) continue;
    const auto cand = static_cast<std::uint16_t>(c);
    const double err = std::fabs(static_cast<double>(half_bits_to_float(cand)) - ax);
    if (err < best_err || (err == best_err && (cand & 1u) == 0)) {
      best = cand;
      best_err = err;
    }
  }
  return static_cast<std::uint16_t>(sign | best);
}

// Ulps between two finite FP16 values (+0 and -0 are 0 apart).
inline int fp16_ulps(std::uint16_t a, std::uint16_t b) {
  auto ordered = [](std::uint16_t h) {
    return (h & 0x8000u) ? -static_cast<int>(h & 0x7FFFu) : static_cast<int>(h);
  };
  return std::abs(ordered(a) - ordered(b));
}

}  // namespace duplex::pim::testing
