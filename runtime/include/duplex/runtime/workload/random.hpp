#pragma once
// Deterministic random numbers for workloads: same seed -> bit-identical streams on every standard library.
// Only std::mt19937_64 (whose output sequence the C++ standard specifies) is taken from <random>; every
// distribution is implemented here, because std::*_distribution outputs are implementation-defined.
// Transcendental functions (log, sqrt, cos) come from the C library; glibc's are correctly rounded for
// double, so results are reproducible across machines running glibc.
#include <cstdint>
#include <random>

namespace duplex::runtime {

// Derives an independent stream seed from (seed, stream) with SplitMix64, so one user seed feeds several
// generators (arrivals, lengths, routing) that do not share a sequence.
std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream);

// The streams a workload seed feeds; fixed numbers, so adding a stream never shifts another.
namespace seed_stream {
inline constexpr std::uint64_t lengths = 1;
inline constexpr std::uint64_t arrival_gaps = 2;
inline constexpr std::uint64_t routing = 3;
inline constexpr std::uint64_t prefix_groups = 4;
}  // namespace seed_stream

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : engine_(seed) {}

  std::uint64_t next_u64() { return engine_(); }
  // Uniform in [0, 1): the top 53 bits of one 64-bit draw.
  double uniform01();
  // Uniform in (0, 1]: never 0, safe for log().
  double uniform_open0() { return 1.0 - uniform01(); }
  // Standard normal N(0, 1) by the Box-Muller transform (the second variate of a pair is cached).
  double normal();
  // Exponential with rate `rate` (> 0) by inversion: -log(U) / rate.
  double exponential(double rate);
  // Binomial(n, p), n >= 0, 0 <= p <= 1. Exact: inversion by geometric waiting times when n*min(p,1-p) < 10,
  // otherwise Hormann's BTRS (transformed rejection with squeeze; W. Hormann, "The generation of binomial
  // random variates", J. Stat. Comput. Simul. 46, 1993). Expected O(1) work for large n.
  std::int64_t binomial(std::int64_t n, double p);

 private:
  std::int64_t binomial_inversion(std::int64_t n, double p);
  std::int64_t binomial_btrs(std::int64_t n, double p);

  std::mt19937_64 engine_;
  bool have_spare_normal_ = false;
  double spare_normal_ = 0.0;
};

// log(k!) - [ (k + 1/2) log(k + 1) - (k + 1) + log(sqrt(2 pi)) ], the Stirling-series remainder used by BTRS.
// Tabulated for k <= 9, series beyond. Exposed for its test.
double stirling_tail(double k);

}  // namespace duplex::runtime
