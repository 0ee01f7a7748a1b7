// Routing's token model in the compiler (router_groups.hpp): the inclusion probabilities under a router's
// group limit against the definition enumerated by hand, and the expected counts `duplex compile` plans under
// Zipf routing (Routing::expert_tokens), which are those probabilities times the tokens.
#include "duplex/compiler/router_groups.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "duplex/base/error.hpp"
#include "duplex/compiler/batch.hpp"

namespace duplex::compiler {
namespace {

TEST(RouterGroups, GroupSetsInLexicographicOrder) {
  EXPECT_EQ(router_group_sets(4, 2),
            (std::vector<std::vector<int>>{{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}}));
  EXPECT_EQ(router_group_sets(1, 1), (std::vector<std::vector<int>>{{0}}));
  EXPECT_EQ(router_group_set_count(8, 4), 70.0);
}

// 6 experts in 3 groups of 2, 2 groups kept, top-2, weights 3, 1, 2, 0.5, 1, 1: each pair (G, S), S a
// 2-subset of G's 4 experts, weighs the product of S's weights; P(e in S) = the pairs' weight holding e over
// all.
TEST(RouterGroups, InclusionIsTheDefinitionEnumerated) {
  const std::vector<double> w = {3, 1, 2, 0.5, 1, 1};
  std::vector<double> held(6, 0.0);
  double total = 0;
  for (const std::vector<int>& set : router_group_sets(3, 2)) {
    const int members[4] = {2 * set[0], 2 * set[0] + 1, 2 * set[1], 2 * set[1] + 1};
    for (int a = 0; a < 4; ++a)
      for (int b = a + 1; b < 4; ++b) {
        const double weight =
            w[static_cast<std::size_t>(members[a])] * w[static_cast<std::size_t>(members[b])];
        total += weight;
        held[static_cast<std::size_t>(members[a])] += weight;
        held[static_cast<std::size_t>(members[b])] += weight;
      }
  }
  const std::vector<double> p = top_k_inclusion(w, 2, 3, 2);
  for (std::size_t e = 0; e < 6; ++e) EXPECT_NEAR(p[e], held[e] / total, 1e-12) << e;
  EXPECT_NEAR(std::accumulate(p.begin(), p.end(), 0.0), 2.0, 1e-12);
  // Without the limit: pairs of all 6 experts.
  double all = 0, with0 = 0;
  for (std::size_t a = 0; a < 6; ++a)
    for (std::size_t b = a + 1; b < 6; ++b) {
      all += w[a] * w[b];
      if (a == 0) with0 += w[a] * w[b];
    }
  EXPECT_NEAR(top_k_inclusion(w, 2)[0], with0 / all, 1e-12);
  EXPECT_NE(top_k_inclusion(w, 2)[0], p[0]);
}

TEST(RouterGroups, BadLimitsAreErrorsNamingThem) {
  const std::vector<double> w(64, 1.0);
  const auto error = [&](int top_k, int groups, int kept) {
    try {
      top_k_inclusion(w, top_k, groups, kept);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error(2, 6, 2).find("6 router groups, 2 kept, of 64 experts, top_k 2; expected groups dividing"),
            std::string::npos);
  EXPECT_NE(error(9, 8, 1).find("top_k 9"), std::string::npos);
  EXPECT_NE(error(0, 1, 1).find("top_k 0 with 64 experts"), std::string::npos);
  EXPECT_NE(error(2, 32, 16).find("601080390 group sets; expected at most 100000"), std::string::npos);
}

// `duplex compile`'s Zipf counts: tokens x P(e in S) rounded by largest remainder, so they are the expected
// counts of the simulator's router (runtime/workload/expert_routing.hpp) with and without the group limit.
TEST(RouterGroups, ZipfCountsAreTokensTimesTheInclusionProbabilities) {
  Routing zipf;
  zipf.kind = Routing::Kind::kZipf;
  zipf.zipf_s = 1.0;
  std::vector<double> w(256);
  for (std::size_t e = 0; e < w.size(); ++e) w[e] = 1.0 / static_cast<double>(e + 1);
  for (const auto& [groups, kept] : {std::pair{1, 1}, std::pair{8, 4}}) {
    const std::vector<double> p = top_k_inclusion(w, 8, groups, kept);
    const std::vector<std::int64_t> c = zipf.expert_tokens(0, 10'000, 256, 8, groups, kept);
    EXPECT_EQ(std::accumulate(c.begin(), c.end(), std::int64_t{0}), 80'000);
    for (std::size_t e = 0; e < 256; ++e) EXPECT_NEAR(static_cast<double>(c[e]), 10'000 * p[e], 1.0) << e;
  }
  // DeepSeek-V3's limit concentrates the tokens on group 0's experts: expert 0 in 71% of the tokens, 65%
  // without it.
  EXPECT_NEAR(top_k_inclusion(w, 8, 8, 4)[0], 0.713, 0.001);
  EXPECT_NEAR(top_k_inclusion(w, 8)[0], 0.645, 0.001);
}

}  // namespace
}  // namespace duplex::compiler
