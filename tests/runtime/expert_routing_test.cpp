// Expert routing: exact invariants (sums, distinctness) and distribution checks within stated bounds.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <string>

#include "duplex/base/error.hpp"
#include "duplex/runtime/workload/expert_routing.hpp"

namespace duplex::runtime {
namespace {

std::int64_t sum(const std::vector<std::int64_t>& v) {
  return std::accumulate(v.begin(), v.end(), std::int64_t{0});
}

TEST(ExpertRouter, CountsSumToTokensTimesTopKAndNeverExceedTokens) {
  for (ExpertRouter router : {ExpertRouter::uniform(1), ExpertRouter::zipf(1.2, 1)}) {
    for (const auto& [tokens, experts, top_k] :
         std::vector<std::tuple<std::int64_t, std::int64_t, std::int64_t>>{
             {0, 8, 2}, {1, 8, 2}, {128, 8, 2}, {7, 8, 8}, {4096, 64, 2}, {1'000'000, 256, 8}, {33, 16, 1}}) {
      const ExpertCounts counts = router.route(tokens, experts, top_k, 3);
      ASSERT_EQ(counts.size(), 3u);
      for (const auto& layer : counts) {
        ASSERT_EQ(static_cast<std::int64_t>(layer.size()), experts);
        EXPECT_EQ(sum(layer), tokens * top_k);
        for (const std::int64_t c : layer) {
          EXPECT_GE(c, 0);
          EXPECT_LE(c, tokens);
        }
      }
    }
  }
}

TEST(ExpertRouter, OneTokenPicksTopKDistinctExperts) {
  ExpertRouter router = ExpertRouter::zipf(2.0, 4);
  for (int i = 0; i < 200; ++i) {
    const ExpertCounts counts = router.route(1, 8, 3, 1);
    for (const std::int64_t c : counts[0]) EXPECT_LE(c, 1);
    EXPECT_EQ(sum(counts[0]), 3);
  }
}

TEST(ExpertRouter, UniformMeansWithinFiveStandardErrors) {
  // Each expert's count is Binomial(T, k/E) for uniform k-subsets; over R rounds its mean has standard error
  // sqrt(T p (1-p) / R).
  ExpertRouter router = ExpertRouter::uniform(12);
  constexpr std::int64_t kTokens = 1000, kExperts = 8, kTopK = 2, kRounds = 2000;
  std::vector<double> total(kExperts, 0.0), total_sq(kExperts, 0.0);
  for (int r = 0; r < kRounds; ++r) {
    const ExpertCounts counts = router.route(kTokens, kExperts, kTopK, 1);
    for (std::size_t e = 0; e < kExperts; ++e) {
      const auto c = static_cast<double>(counts[0][e]);
      total[e] += c;
      total_sq[e] += c * c;
    }
  }
  const double p = static_cast<double>(kTopK) / kExperts;
  const double var = kTokens * p * (1.0 - p);
  for (std::size_t e = 0; e < kExperts; ++e) {
    const double mean = total[e] / kRounds;
    EXPECT_NEAR(mean, kTokens * p, 5.0 * std::sqrt(var / kRounds)) << "expert " << e;
    const double sample_var = total_sq[e] / kRounds - mean * mean;
    EXPECT_NEAR(sample_var, var, 5.0 * var * std::sqrt(2.0 / kRounds)) << "expert " << e;
  }
  const std::vector<double> incl = router.inclusion_probabilities(kExperts, kTopK);
  for (const double x : incl) EXPECT_NEAR(x, p, 1e-12);
}

TEST(ExpertRouter, ZipfTop1IsZipf) {
  ExpertRouter router = ExpertRouter::zipf(1.0, 3);
  constexpr std::int64_t kExperts = 8;
  const std::vector<double> incl = router.inclusion_probabilities(kExperts, 1);
  double h = 0.0;
  for (int e = 1; e <= kExperts; ++e) h += 1.0 / e;
  for (std::size_t e = 0; e < kExperts; ++e)
    EXPECT_NEAR(incl[e], 1.0 / static_cast<double>(e + 1) / h, 1e-12);
  // 10^6 tokens: each expert's count is Binomial(10^6, p_e); within 5 standard deviations.
  const ExpertCounts counts = router.route(1'000'000, kExperts, 1, 4);
  for (const auto& layer : counts)
    for (std::size_t e = 0; e < kExperts; ++e) {
      const double mean = 1e6 * incl[e];
      EXPECT_NEAR(static_cast<double>(layer[e]), mean, 5.0 * std::sqrt(mean * (1.0 - incl[e])));
    }
}

TEST(ExpertRouter, ZipfTopKSubsetsFollowProductWeights) {
  // 4 experts, top-2, s = 1: pair {a, b} has probability w_a w_b / e_2(w). Chi-square over the 6 pairs from
  // 60000 single-token draws; accept below df + 6 sqrt(2 df) (df = 5).
  ExpertRouter router = ExpertRouter::zipf(1.0, 8);
  const double w[4] = {1.0, 0.5, 1.0 / 3.0, 0.25};
  double e2 = 0.0;
  for (int a = 0; a < 4; ++a)
    for (int b = a + 1; b < 4; ++b) e2 += w[a] * w[b];
  std::map<std::pair<int, int>, double> observed;
  constexpr int kN = 60000;
  for (int i = 0; i < kN; ++i) {
    const ExpertCounts c = router.route(1, 4, 2, 1);
    int first = -1, second = -1;
    for (int e = 0; e < 4; ++e)
      if (c[0][static_cast<std::size_t>(e)] == 1) (first < 0 ? first : second) = e;
    observed[{first, second}] += 1.0;
  }
  double chi2 = 0.0;
  for (int a = 0; a < 4; ++a)
    for (int b = a + 1; b < 4; ++b) {
      const double expected = kN * w[a] * w[b] / e2;
      const double d = observed[{a, b}] - expected;
      chi2 += d * d / expected;
    }
  EXPECT_LT(chi2, 5.0 + 6.0 * std::sqrt(10.0));
  // Inclusion probabilities agree with the pair probabilities.
  const std::vector<double> incl = router.inclusion_probabilities(4, 2);
  EXPECT_NEAR(incl[0], w[0] * (w[1] + w[2] + w[3]) / e2, 1e-12);
  EXPECT_NEAR(std::accumulate(incl.begin(), incl.end(), 0.0), 2.0, 1e-12);
}

// Group-limited routing (DeepSeek's): a token keeps `kept` of the router's groups of consecutive experts and
// takes its top-k set among their experts, the pair (group set G, expert set S) with probability proportional
// to the product of S's weights. Checked against that definition enumerated by hand: 8 experts in 4 groups
// of 2, 2 groups kept, top-3, Zipf(1).
TEST(ExpertRouterGroupLimit, InclusionProbabilitiesAreTheDefinitionsEnumerated) {
  constexpr int kExperts = 8, kGroups = 4, kKept = 2, kTopK = 3;
  double w[kExperts];
  for (int e = 0; e < kExperts; ++e) w[e] = 1.0 / (e + 1);
  std::vector<double> mass(kExperts, 0.0);
  double total = 0;
  for (int g0 = 0; g0 < kGroups; ++g0)
    for (int g1 = g0 + 1; g1 < kGroups; ++g1) {
      const int members[4] = {2 * g0, 2 * g0 + 1, 2 * g1, 2 * g1 + 1};
      for (int a = 0; a < 4; ++a)
        for (int b = a + 1; b < 4; ++b)
          for (int c = b + 1; c < 4; ++c) {
            const double pair = w[members[a]] * w[members[b]] * w[members[c]];
            total += pair;
            for (const int e : {members[a], members[b], members[c]})
              mass[static_cast<std::size_t>(e)] += pair;
          }
    }
  const ExpertRouter zipf = ExpertRouter::zipf(1.0, 1);
  const std::vector<double> limited = zipf.inclusion_probabilities(kExperts, kTopK, kGroups, kKept);
  const std::vector<double> free = zipf.inclusion_probabilities(kExperts, kTopK);
  for (std::size_t e = 0; e < kExperts; ++e) EXPECT_NEAR(limited[e], mass[e] / total, 1e-12) << e;
  EXPECT_NEAR(std::accumulate(limited.begin(), limited.end(), 0.0), 3.0, 1e-12);
  EXPECT_GT(limited[0], free[0] + 0.01);  // the limit concentrates tokens on the hot group's experts
  // Uniform weights: every expert k / E, as without the limit.
  for (const double x : ExpertRouter::uniform(1).inclusion_probabilities(kExperts, kTopK, kGroups, kKept))
    EXPECT_NEAR(x, 3.0 / 8, 1e-12);
  // One group set of all groups is no limit.
  const std::vector<double> all_kept = zipf.inclusion_probabilities(kExperts, kTopK, kGroups, kGroups);
  for (std::size_t e = 0; e < kExperts; ++e) EXPECT_NEAR(all_kept[e], free[e], 1e-12) << e;
}

// Sampled counts: a token's experts lie in at most `kept` groups, every layer sums to tokens x top_k with no
// expert above tokens, and over many tokens each expert's count is within 5 standard deviations of tokens x
// its inclusion probability (DeepSeek-V3's shape: 256 experts, 8 groups, 4 kept, top-8, Zipf(1)).
TEST(ExpertRouterGroupLimit, SampledCountsFollowTheLimit) {
  ExpertRouter one = ExpertRouter::zipf(1.0, 7);
  for (int i = 0; i < 300; ++i) {
    const ExpertCounts c = one.route(1, 16, 3, 1, 8, 2);
    std::set<int> groups;
    for (int e = 0; e < 16; ++e) {
      EXPECT_LE(c[0][static_cast<std::size_t>(e)], 1);
      if (c[0][static_cast<std::size_t>(e)] > 0) groups.insert(e / 2);
    }
    EXPECT_EQ(sum(c[0]), 3);
    EXPECT_LE(groups.size(), 2u);
  }
  ExpertRouter router = ExpertRouter::zipf(1.0, 3);
  constexpr std::int64_t kTokens = 1'000'000;
  const std::vector<double> incl = router.inclusion_probabilities(256, 8, 8, 4);
  const std::vector<double> free = router.inclusion_probabilities(256, 8);
  EXPECT_GT(incl[0], free[0] + 0.05);
  for (const auto& layer : router.route(kTokens, 256, 8, 3, 8, 4)) {
    EXPECT_EQ(sum(layer), kTokens * 8);
    for (std::size_t e = 0; e < 256; ++e) {
      EXPECT_LE(layer[e], kTokens);
      const double mean = kTokens * incl[e];
      EXPECT_NEAR(static_cast<double>(layer[e]), mean, 5.0 * std::sqrt(mean * (1.0 - incl[e]))) << e;
    }
  }
  ExpertRouter a = ExpertRouter::zipf(1.0, 5), b = ExpertRouter::zipf(1.0, 5);
  EXPECT_EQ(a.route(500, 256, 8, 4, 8, 4), b.route(500, 256, 8, 4, 8, 4));
}

// With every group kept (one group set of 8 groups: the tokens' experts dealt over the groups first) the
// counts have the law of no limit: each expert within 5 standard deviations of tokens x its inclusion
// probability without a limit.
TEST(ExpertRouterGroupLimit, EveryGroupKeptIsNoLimit) {
  ExpertRouter a = ExpertRouter::zipf(1.0, 9);
  const std::vector<double> free = a.inclusion_probabilities(64, 6);
  constexpr std::int64_t kTokens = 1'000'000;
  for (const auto& layer : a.route(kTokens, 64, 6, 3, 8, 8)) {
    EXPECT_EQ(sum(layer), kTokens * 6);
    for (std::size_t e = 0; e < 64; ++e) {
      const double mean = kTokens * free[e];
      EXPECT_NEAR(static_cast<double>(layer[e]), mean, 5.0 * std::sqrt(mean * (1.0 - free[e]))) << e;
    }
  }
}

TEST(ExpertRouterGroupLimit, BadLimitsAreErrorsNamingThem) {
  ExpertRouter r = ExpertRouter::zipf(1.0, 1);
  const auto error = [&](int groups, int kept, std::int64_t top_k) {
    try {
      r.route(4, 64, top_k, 1, groups, kept);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error(6, 2, 2).find("6 router groups, 2 kept, of 64 experts, top_k 2; expected groups dividing"),
            std::string::npos);
  EXPECT_NE(error(8, 9, 2).find("8 router groups, 9 kept"), std::string::npos);
  EXPECT_NE(error(8, 1, 9).find("top_k 9"), std::string::npos);
  EXPECT_NE(error(32, 16, 2).find("601080390 group sets; expected at most 4096"), std::string::npos);
}

TEST(ExpertRouter, SameSeedSameCounts) {
  ExpertRouter a = ExpertRouter::zipf(0.8, 5), b = ExpertRouter::zipf(0.8, 5), c = ExpertRouter::zipf(0.8, 6);
  const ExpertCounts ra = a.route(5000, 64, 2, 16);
  EXPECT_EQ(ra, b.route(5000, 64, 2, 16));
  EXPECT_NE(ra, c.route(5000, 64, 2, 16));
}

TEST(ExpertRouter, BadShapesAreErrors) {
  ExpertRouter r = ExpertRouter::uniform(1);
  EXPECT_THROW(r.route(10, 8, 0, 1), Error);
  EXPECT_THROW(r.route(10, 8, 9, 1), Error);
  EXPECT_THROW(r.route(-1, 8, 2, 1), Error);
  EXPECT_THROW(r.route(10, 8, 2, 0), Error);
  EXPECT_THROW(ExpertRouter::zipf(-0.5, 1), Error);
}

const char* kTrace =
    "step,layer,expert,count\n"
    "0,0,0,6\n0,0,1,2\n0,0,2,2\n0,0,3,2\n"  // 12 assignments (6 tokens, top-2)
    "0,1,1,3\n0,1,2,3\n"                    // experts 0 and 3 idle
    "1,0,0,1\n1,0,1,1\n1,1,3,1\n1,1,2,1\n";

TEST(RoutingTrace, ScalesEachLayerAndCyclesThroughSteps) {
  ExpertRouter r = ExpertRouter::from_trace(parse_routing_trace(kTrace, "r.csv"));
  ExpertCounts c = r.route(3, 4, 2, 2);  // step 0 scaled from 12 to 6 assignments
  EXPECT_EQ(c[0], (std::vector<std::int64_t>{3, 1, 1, 1}));
  EXPECT_EQ(c[1], (std::vector<std::int64_t>{0, 3, 3, 0}));
  c = r.route(5, 4, 2, 2);  // step 1: halves of 10, remainders none
  EXPECT_EQ(c[0], (std::vector<std::int64_t>{5, 5, 0, 0}));
  EXPECT_EQ(c[1], (std::vector<std::int64_t>{0, 0, 5, 5}));
  c = r.route(5, 4, 2, 2);  // back to step 0: 10 assignments, shares 5, 1.67, 1.67, 1.67 -> 5, 2, 2, 1
  EXPECT_EQ(c[0], (std::vector<std::int64_t>{5, 2, 2, 1}));
  EXPECT_EQ(sum(c[1]), 10);
}

TEST(RoutingTrace, ErrorsNameTheProblem) {
  const auto error_of = [](const std::string& text) -> std::string {
    try {
      parse_routing_trace(text, "r.csv");
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(error_of("step,layer,count\n0,0,1\n").find("no expert column"), std::string::npos);
  EXPECT_NE(error_of("step,layer,expert,count\n0,0,0,x\n").find("r.csv:2: column count"), std::string::npos);
  EXPECT_NE(error_of("step,layer,expert,count\n0,0,0,1\n0,0,0,2\n").find("appears twice"), std::string::npos);
  EXPECT_NE(error_of("step,layer,expert,count\n0,1,0,1\n").find("no tokens in layer 0"), std::string::npos);
  // Model mismatch and an impossible top-k share are reported at route().
  ExpertRouter r = ExpertRouter::from_trace(parse_routing_trace(kTrace, "r.csv"));
  EXPECT_THROW(r.route(4, 4, 2, 3), Error);
  EXPECT_THROW(r.route(4, 3, 2, 2), Error);
  EXPECT_THROW(r.route(4, 4, 4, 2), Error);  // expert 0 holds 6 of 12 > 12 / 4
}

}  // namespace
}  // namespace duplex::runtime
