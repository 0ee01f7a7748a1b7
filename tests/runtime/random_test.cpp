// Deterministic distributions: reproducibility, and moments / pmf within stated statistical bounds. Seeds are
// fixed, so each test is deterministic; the bounds (5 standard errors, or a chi-square far tail) are what a
// correct sampler meets with overwhelming probability for any seed.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "duplex/runtime/workload/random.hpp"

namespace duplex::runtime {
namespace {

TEST(Rng, SameSeedSameStreamAndStreamsDiffer) {
  Rng a(42), b(42), c(43);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const double x = a.uniform01();
    EXPECT_EQ(x, b.uniform01());
    differs = differs || x != c.uniform01();
  }
  EXPECT_TRUE(differs);
  EXPECT_NE(derive_seed(1, seed_stream::lengths), derive_seed(1, seed_stream::arrival_gaps));
  EXPECT_NE(derive_seed(1, seed_stream::lengths), derive_seed(2, seed_stream::lengths));
}

TEST(Rng, Mt19937FirstOutputIsTheStandardOne) {
  // The C++ standard fixes mt19937_64's 10000th output for the default seed: 9981545732273789042.
  Rng rng(5489u);
  std::uint64_t x = 0;
  for (int i = 0; i < 10000; ++i) x = rng.next_u64();
  EXPECT_EQ(x, 9981545732273789042ULL);
}

TEST(Rng, UniformRange) {
  Rng rng(1);
  for (int i = 0; i < 10000; ++i) {
    const double u = rng.uniform01();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    const double v = rng.uniform_open0();
    ASSERT_GT(v, 0.0);
    ASSERT_LE(v, 1.0);
  }
}

TEST(Rng, NormalMoments) {
  Rng rng(7);
  constexpr int kN = 200000;
  double sum = 0.0, sum_sq = 0.0;
  for (int i = 0; i < kN; ++i) {
    const double z = rng.normal();
    sum += z;
    sum_sq += z * z;
  }
  const double mean = sum / kN;
  const double var = sum_sq / kN - mean * mean;
  EXPECT_NEAR(mean, 0.0, 5.0 / std::sqrt(kN));              // 5 standard errors of the mean
  EXPECT_NEAR(var, 1.0, 5.0 * std::sqrt(2.0 / kN));         // 5 standard errors of the variance
}

TEST(Rng, ExponentialMean) {
  Rng rng(9);
  constexpr int kN = 200000;
  double sum = 0.0;
  for (int i = 0; i < kN; ++i) sum += rng.exponential(4.0);
  EXPECT_NEAR(sum / kN, 0.25, 5.0 * 0.25 / std::sqrt(kN));
}

TEST(Rng, StirlingTailMatchesLgamma) {
  for (int k = 0; k < 40; ++k) {
    const double kd = k;
    const double exact = std::lgamma(kd + 1.0) -
                         ((kd + 0.5) * std::log(kd + 1.0) - (kd + 1.0) + 0.5 * std::log(2.0 * std::numbers::pi));
    // Table entries carry 15 significant digits (and the lgamma difference cancels to ~1e-15); the 3-term series from k = 10 on is within 5e-11 (its
    // first omitted term, 1/(1680 (k+1)^7), is 3e-11 at k = 10), a negligible shift of BTRS's acceptance bound.
    EXPECT_NEAR(stirling_tail(kd), exact, k <= 9 ? 1e-14 : 5e-11) << "k = " << k;
  }
}

TEST(Rng, BinomialEdgesAndRange) {
  Rng rng(3);
  EXPECT_EQ(rng.binomial(0, 0.5), 0);
  EXPECT_EQ(rng.binomial(100, 0.0), 0);
  EXPECT_EQ(rng.binomial(100, 1.0), 100);
  for (int i = 0; i < 2000; ++i) {
    const std::int64_t x = rng.binomial(50, 0.9);
    ASSERT_GE(x, 0);
    ASSERT_LE(x, 50);
  }
}

struct BinomialCase {
  std::int64_t n;
  double p;
};

class BinomialMoments : public ::testing::TestWithParam<BinomialCase> {};

TEST_P(BinomialMoments, MeanAndVarianceWithinFiveStandardErrors) {
  const auto [n, p] = GetParam();
  Rng rng(11);
  constexpr int kN = 40000;
  double sum = 0.0, sum_sq = 0.0;
  for (int i = 0; i < kN; ++i) {
    const auto x = static_cast<double>(rng.binomial(n, p));
    sum += x;
    sum_sq += x * x;
  }
  const double nd = static_cast<double>(n);
  const double mean = sum / kN;
  const double var = sum_sq / kN - mean * mean;
  const double true_var = nd * p * (1.0 - p);
  EXPECT_NEAR(mean, nd * p, 5.0 * std::sqrt(true_var / kN));
  // Standard error of a sample variance ~ var * sqrt(2 / N) (plus a kurtosis term, small here).
  EXPECT_NEAR(var, true_var, 5.0 * true_var * std::sqrt(3.0 / kN));
}

INSTANTIATE_TEST_SUITE_P(InversionAndBtrs, BinomialMoments,
                         ::testing::Values(BinomialCase{10, 0.3}, BinomialCase{1000, 0.001},
                                           BinomialCase{100, 0.3}, BinomialCase{1000, 0.7},
                                           BinomialCase{1'000'000, 0.25}, BinomialCase{50'000'000, 0.01}));

TEST(Rng, BinomialPmfChiSquare) {
  // n = 60, p = 0.4 takes the BTRS path (n p = 24). Chi-square over bins with expected count >= 20.
  constexpr std::int64_t kTrials = 60;
  constexpr double kP = 0.4;
  constexpr int kN = 200000;
  Rng rng(21);
  std::vector<double> observed(kTrials + 1, 0.0);
  for (int i = 0; i < kN; ++i) observed[static_cast<std::size_t>(rng.binomial(kTrials, kP))] += 1.0;
  double chi2 = 0.0;
  int bins = 0;
  for (std::int64_t k = 0; k <= kTrials; ++k) {
    const double kd = static_cast<double>(k);
    const double log_pmf = std::lgamma(kTrials + 1.0) - std::lgamma(kd + 1.0) - std::lgamma(kTrials - kd + 1.0) +
                           kd * std::log(kP) + (kTrials - kd) * std::log(1.0 - kP);
    const double expected = kN * std::exp(log_pmf);
    if (expected < 20.0) continue;
    const double d = observed[static_cast<std::size_t>(k)] - expected;
    chi2 += d * d / expected;
    ++bins;
  }
  ASSERT_GT(bins, 20);
  // Chi-square with df = bins - 1: mean df, sd sqrt(2 df); accept below mean + 6 sd (p < 1e-6 for a correct
  // sampler). A wrong acceptance step shifts whole regions of the pmf and blows far past this.
  const double df = bins - 1;
  EXPECT_LT(chi2, df + 6.0 * std::sqrt(2.0 * df));
}

}  // namespace
}  // namespace duplex::runtime
