#include "duplex/runtime/workload/random.hpp"

#include <cmath>
#include <numbers>
#include <string>

#include "duplex/base/error.hpp"

namespace duplex::runtime {

std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream) {
  // SplitMix64 (Steele, Lea, Flood 2014) applied to seed + stream * golden gamma.
  std::uint64_t z = seed + (stream + 1) * 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

double Rng::uniform01() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

double Rng::normal() {
  if (have_spare_normal_) {
    have_spare_normal_ = false;
    return spare_normal_;
  }
  const double u1 = uniform_open0();
  const double u2 = uniform01();
  const double radius = std::sqrt(-2.0 * std::log(u1));
  const double angle = 2.0 * std::numbers::pi * u2;
  spare_normal_ = radius * std::sin(angle);
  have_spare_normal_ = true;
  return radius * std::cos(angle);
}

double Rng::exponential(double rate) {
  DUPLEX_ASSERT(rate > 0.0, "exponential rate must be positive");
  return -std::log(uniform_open0()) / rate;
}

std::int64_t Rng::binomial(std::int64_t n, double p) {
  DUPLEX_ASSERT(n >= 0 && p >= 0.0 && p <= 1.0,
                "binomial(n=" + std::to_string(n) + ", p=" + std::to_string(p) + ") out of range");
  if (n == 0 || p == 0.0) return 0;
  if (p == 1.0) return n;
  if (p > 0.5) return n - binomial(n, 1.0 - p);
  if (static_cast<double>(n) * p < 10.0) return binomial_inversion(n, p);
  return binomial_btrs(n, p);
}

// Counts successes as geometric waiting times until they pass n trials; expected n*p + 1 draws.
std::int64_t Rng::binomial_inversion(std::int64_t n, double p) {
  const double log_q = std::log1p(-p);
  double trials = 0.0;
  std::int64_t successes = 0;
  for (;;) {
    trials += std::ceil(std::log(uniform_open0()) / log_q);
    if (trials > static_cast<double>(n)) return successes;
    ++successes;
  }
}

double stirling_tail(double k) {
  // source: exact values of log(k!) - Stirling's approximation for k = 0..9 (Hormann 1993, Table; equal to
  // lgamma(k+1) - ((k+0.5) log(k+1) - (k+1) + log sqrt(2 pi)), checked in random_test.cpp).
  static constexpr double kTail[] = {0.0810614667953272,  0.0413406959554092, 0.0276779256849983,
                                     0.02079067210376509, 0.0166446911898211, 0.0138761288230707,
                                     0.0118967099458917,  0.0104112652619720, 0.00925546218271273,
                                     0.00833056343336287};
  if (k <= 9.0) return kTail[static_cast<int>(k)];
  const double kp1_sq = (k + 1.0) * (k + 1.0);
  return (1.0 / 12.0 - (1.0 / 360.0 - 1.0 / 1260.0 / kp1_sq) / kp1_sq) / (k + 1.0);
}

// BTRS for n*p >= 10 and p <= 1/2 (Hormann 1993, algorithm BTRS).
std::int64_t Rng::binomial_btrs(std::int64_t n_int, double p) {
  const double n = static_cast<double>(n_int);
  const double spq = std::sqrt(n * p * (1.0 - p));
  const double b = 1.15 + 2.53 * spq;
  const double a = -0.0873 + 0.0248 * b + 0.01 * p;
  const double c = n * p + 0.5;
  const double v_r = 0.92 - 4.2 / b;
  const double alpha = (2.83 + 5.1 / b) * spq;
  const double r = p / (1.0 - p);
  const double m = std::floor((n + 1.0) * p);
  for (;;) {
    const double u = uniform01() - 0.5;
    double v = uniform01();
    const double us = 0.5 - std::fabs(u);
    const double k = std::floor((2.0 * a / us + b) * u + c);
    if (k < 0.0 || k > n) continue;
    if (us >= 0.07 && v <= v_r) return static_cast<std::int64_t>(k);
    v = std::log(v * alpha / (a / (us * us) + b));
    // Accept when log(v) <= log(f(k) / f(m)), f the binomial pmf, with log x! written as Stirling's
    // approximation plus stirling_tail(x) (exact for integer x).
    const double log_ratio = (m + 0.5) * std::log((m + 1.0) / (r * (n - m + 1.0))) +
                             (n + 1.0) * std::log((n - m + 1.0) / (n - k + 1.0)) +
                             (k + 0.5) * std::log(r * (n - k + 1.0) / (k + 1.0)) + stirling_tail(m) +
                             stirling_tail(n - m) - stirling_tail(k) - stirling_tail(n - k);
    if (v <= log_ratio) return static_cast<std::int64_t>(k);
  }
}

}  // namespace duplex::runtime
