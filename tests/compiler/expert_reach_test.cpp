// Where a token's top-k experts live (expert_reach) and the node-deduplicated all-to-all built on it
// (deduplicated_exchange; DeepEP's normal kernels), against enumeration of every top-k set and by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>

#include "duplex/base/config.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/cost_model.hpp"
#include "duplex/compiler/expert_reach.hpp"
#include "duplex/compiler/lower.hpp"

namespace duplex::compiler {
namespace {

// A layout of `nodes` x `per_node` devices, `groups` expert-parallel groups of `shards` devices each, each
// group `local` slots.
ParallelLayout layout(int nodes, int per_node, int groups, int shards, int local, bool attention_dp = false) {
  ParallelLayout p;
  p.devices = nodes * per_node;
  p.nodes = nodes;
  p.tp = attention_dp ? 1 : per_node;
  p.dp = attention_dp ? p.devices : nodes;
  p.attention_dp = attention_dp;
  p.expert_groups = groups;
  p.expert_shards = shards;
  p.local_experts = local;
  return p;
}

// The probability that a token reaches each location, by enumerating every kept group set G and every top-k
// set S of G's experts (the pair with probability proportional to the product of S's weights) and, for each,
// every choice of one copy per expert of S. One router group: every top-k set of all experts.
ExpertReach enumerate(const std::vector<double>& w, int k, const SlotExperts& placement,
                      const ParallelLayout& p, int router_groups = 1, int kept = 1) {
  const int experts = static_cast<int>(w.size()), devices = p.expert_groups * p.expert_shards;
  const int per_node = p.devices_per_node(), nodes = devices / per_node, size = experts / router_groups;
  std::vector<std::vector<int>> copies(w.size());
  for (std::size_t s = 0; s < placement.size(); ++s)
    copies[static_cast<std::size_t>(placement[s])].push_back(static_cast<int>(s));
  // Each group set's top-k sets' summed weight and per location the weight of those reaching it.
  struct Outcome {
    double sets = 0;
    std::vector<double> node, device;
  };
  std::vector<int> set, groups;
  Outcome current;
  std::function<void(std::size_t, double, std::vector<bool>&)> choose = [&](std::size_t i, double prob,
                                                                            std::vector<bool>& hit) {
    if (i == set.size()) {
      for (int d = 0; d < devices; ++d)
        if (hit[static_cast<std::size_t>(d)]) current.device[static_cast<std::size_t>(d)] += prob;
      for (int n = 0; n < nodes; ++n)
        if (std::any_of(hit.begin() + n * per_node, hit.begin() + (n + 1) * per_node,
                        [](bool b) { return b; }))
          current.node[static_cast<std::size_t>(n)] += prob;
      return;
    }
    const auto& cs = copies[static_cast<std::size_t>(set[i])];
    for (const int slot : cs) {
      std::vector<bool> next = hit;
      const int first = slot / p.local_experts * p.expert_shards;
      for (int d = first; d < first + p.expert_shards; ++d) next[static_cast<std::size_t>(d)] = true;
      choose(i + 1, prob / static_cast<double>(cs.size()), next);
    }
  };
  std::vector<int> pool;  // the kept groups' experts
  std::function<void(std::size_t)> subsets = [&](std::size_t from) {
    if (static_cast<int>(set.size()) == k) {
      double prob = 1;
      for (const int e : set) prob *= w[static_cast<std::size_t>(e)];
      current.sets += prob;
      std::vector<bool> hit(static_cast<std::size_t>(devices), false);
      choose(0, prob, hit);
      return;
    }
    for (std::size_t i = from; i < pool.size(); ++i) {
      set.push_back(pool[i]);
      subsets(i + 1);
      set.pop_back();
    }
  };
  ExpertReach r{std::vector<double>(static_cast<std::size_t>(nodes), 0.0),
                std::vector<double>(static_cast<std::size_t>(devices), 0.0)};
  double total = 0;
  std::function<void(int)> group_sets = [&](int from) {
    if (static_cast<int>(groups.size()) == kept) {
      current = {0, std::vector<double>(r.node.size(), 0.0), std::vector<double>(r.device.size(), 0.0)};
      pool.clear();
      for (const int g : groups)
        for (int e = g * size; e < (g + 1) * size; ++e) pool.push_back(e);
      subsets(0);
      total += current.sets;
      for (std::size_t i = 0; i < r.node.size(); ++i) r.node[i] += current.node[i];
      for (std::size_t i = 0; i < r.device.size(); ++i) r.device[i] += current.device[i];
      return;
    }
    for (int g = from; g < router_groups; ++g) {
      groups.push_back(g);
      group_sets(g + 1);
      groups.pop_back();
    }
  };
  group_sets(0);
  for (auto& x : r.node) x /= total;
  for (auto& x : r.device) x /= total;
  return r;
}

// 8 experts, top-2, whole experts two a device on 2 nodes of 2: a token misses a node when both its experts
// are among the other node's 4 (6 of the 28 equally likely pairs), a device when both are among the other 6.
TEST(ExpertReach, UniformRoutingByHand) {
  const ParallelLayout p = layout(2, 2, 4, 1, 2);
  const ExpertReach r = expert_reach(std::vector<double>(8, 1.0), 2, default_placement(8, 8), p);
  ASSERT_EQ(r.node.size(), 2u);
  ASSERT_EQ(r.device.size(), 4u);
  for (const double x : r.node) EXPECT_NEAR(x, 1.0 - 6.0 / 28, 1e-15);
  for (const double x : r.device) EXPECT_NEAR(x, 1.0 - 15.0 / 28, 1e-15);
}

// Random weights, copies (expert load balancing's redundant slots in any order) and shards (+ET, experts
// spanning devices or nodes): the closed form equals enumeration.
TEST(ExpertReach, EqualsEnumerationOfEveryTopKSet) {
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> weight(0.05, 3.0);
  struct Shape {
    int nodes, per_node, groups, shards, local;
  };
  const Shape shapes[] = {{2, 4, 8, 1, 1}, {2, 2, 4, 1, 3}, {2, 4, 2, 4, 5},
                          {4, 2, 2, 4, 4}, {1, 4, 4, 1, 2}, {2, 3, 2, 3, 4}};
  for (int round = 0; round < 40; ++round) {
    const Shape sh = shapes[round % std::size(shapes)];
    const ParallelLayout p = layout(sh.nodes, sh.per_node, sh.groups, sh.shards, sh.local);
    const int slots = sh.groups * sh.local;
    const int experts = std::min(8, slots - round % 3);
    const int k = 1 + round % std::min(4, experts);
    std::vector<double> w(static_cast<std::size_t>(experts));
    for (auto& x : w) x = weight(rng);
    if (round % 5 == 0) w[static_cast<std::size_t>(round % experts)] = 0.0;  // an expert never chosen
    SlotExperts placement = default_placement(experts, slots);
    std::shuffle(placement.begin(), placement.end(), rng);
    const ExpertReach want = enumerate(w, k, placement, p), got = expert_reach(w, k, placement, p);
    ASSERT_EQ(got.node.size(), want.node.size());
    ASSERT_EQ(got.device.size(), want.device.size());
    for (std::size_t i = 0; i < want.node.size(); ++i) EXPECT_NEAR(got.node[i], want.node[i], 1e-12) << round;
    for (std::size_t i = 0; i < want.device.size(); ++i)
      EXPECT_NEAR(got.device[i], want.device[i], 1e-12) << round;
  }
}

// Group-limited routing (DeepSeek's): random weights, copies and shards, 2 to 4 router groups of which 1 to
// all are kept; the closed form equals enumeration. Keeping every group is routing without the limit.
TEST(ExpertReach, GroupLimitedRoutingEqualsEnumeration) {
  std::mt19937_64 rng(12);
  std::uniform_real_distribution<double> weight(0.05, 3.0);
  const ParallelLayout layouts[] = {layout(2, 2, 4, 1, 2), layout(2, 4, 8, 1, 1), layout(2, 2, 2, 2, 4),
                                    layout(4, 1, 4, 1, 3)};
  for (int round = 0; round < 30; ++round) {
    const ParallelLayout& p = layouts[round % std::size(layouts)];
    const int slots = p.expert_groups * p.local_experts;
    const int experts = 8, router_groups = round % 2 == 0 ? 2 : 4;
    const int kept = 1 + round / 2 % router_groups;
    const int k = 1 + round % std::min(3, kept * experts / router_groups);
    std::vector<double> w(static_cast<std::size_t>(experts));
    for (auto& x : w) x = weight(rng);
    if (round % 4 == 1) w[static_cast<std::size_t>(round % experts)] = 0.0;
    SlotExperts placement = default_placement(experts, slots);
    std::shuffle(placement.begin(), placement.end(), rng);
    const ExpertReach want = enumerate(w, k, placement, p, router_groups, kept);
    const ExpertReach got = expert_reach(w, k, placement, p, router_groups, kept);
    for (std::size_t i = 0; i < want.node.size(); ++i) EXPECT_NEAR(got.node[i], want.node[i], 1e-12) << round;
    for (std::size_t i = 0; i < want.device.size(); ++i)
      EXPECT_NEAR(got.device[i], want.device[i], 1e-12) << round;
  }
  // Every group kept: the unlimited reach.
  const ParallelLayout p = layout(2, 2, 4, 1, 2);
  const std::vector<double> w = {1, 2, 3, 4, 5, 6, 7, 8};
  const ExpertReach all = expert_reach(w, 3, default_placement(8, 8), p, 4, 4);
  const ExpertReach none = expert_reach(w, 3, default_placement(8, 8), p);
  for (std::size_t i = 0; i < all.node.size(); ++i) EXPECT_NEAR(all.node[i], none.node[i], 1e-13);
  for (std::size_t i = 0; i < all.device.size(); ++i) EXPECT_NEAR(all.device[i], none.device[i], 1e-13);
}

// DeepSeek-V3's router by hand, uniform: 4 of 8 groups of 32 kept, each node (of 4) holding 2 whole groups.
// A node is missed when neither of its groups is kept (C(6,4) / C(8,4) = 15/70) or when kept groups of it
// get none of the 8 experts: with one of its groups kept (40/70) the 8 fall among the other 96 of 128
// experts with probability C(96,8) / C(128,8); with both (15/70) among the other 64.
TEST(ExpertReach, DeepSeekV3sGroupLimitByHand) {
  ParallelLayout p = layout(4, 8, 32, 1, 8);
  const ExpertReach r = expert_reach(std::vector<double>(256, 1.0), 8, default_placement(256, 256), p, 8, 4);
  const auto choose = [](double n, int k) {
    double c = 1;
    for (int i = 0; i < k; ++i) c = c * (n - i) / (i + 1);
    return c;
  };
  const double miss =
      15.0 / 70 + 40.0 / 70 * choose(96, 8) / choose(128, 8) + 15.0 / 70 * choose(64, 8) / choose(128, 8);
  for (const double x : r.node) EXPECT_NEAR(x, 1 - miss, 1e-12);
  const double unlimited =
      expert_reach(std::vector<double>(256, 1.0), 8, default_placement(256, 256), p).node[0];
  EXPECT_NEAR(unlimited, 1 - choose(192, 8) / choose(256, 8), 1e-12);
  EXPECT_LT(r.node[0], unlimited);
}

// What DeepSeek's hierarchical EPLB policy buys the node-deduplicated exchange: with each node holding two
// whole router groups a token reaches 0.73 of the other nodes; with every node holding experts of every group
// (slot s of device s / 8 holding expert s / 8 + 32 (s mod 8)), about as many as without the limit, 0.90.
TEST(ExpertReach, RouterGroupsKeptOnANodeShortenTheExchange) {
  const ParallelLayout p = layout(4, 8, 32, 1, 8);
  const std::vector<double> w(256, 1.0);
  SlotExperts scattered(256);
  for (int s = 0; s < 256; ++s)
    scattered[static_cast<std::size_t>(s)] = s / 8 + s % 8 * 32;  // slot s, device s/8
  const auto whole = deduplicated_exchange(p, expert_reach(w, 8, default_placement(256, 256), p, 8, 4));
  const auto spread = deduplicated_exchange(p, expert_reach(w, 8, scattered, p, 8, 4));
  const auto unlimited = deduplicated_exchange(p, expert_reach(w, 8, scattered, p));
  const ExpertReach by_hand =
      expert_reach(w, 8, default_placement(256, 256), p, 8, 4);  // DeepSeekV3sGroupLimitByHand
  EXPECT_NEAR(whole.infiniband, 3 * by_hand.node[0], 1e-12);
  EXPECT_NEAR(by_hand.node[0], 0.732, 1e-3);
  EXPECT_NEAR(spread.infiniband, unlimited.infiniband, 0.01 * unlimited.infiniband);
  EXPECT_LT(whole.infiniband, 0.82 * spread.infiniband);
}

// Weights derived from few tokens' counts can leave every router group but one without weight: a token
// then keeps that group beside any other and takes its experts there (functional emulation's counts).
TEST(ExpertReach, OneGroupWithWeightIsKeptBesideAnyOther) {
  const ParallelLayout p = layout(2, 2, 4, 1, 2);  // experts 0-3 on node 0
  const ExpertReach r = expert_reach({1, 1, 0, 0, 0, 0, 0, 0}, 2, default_placement(8, 8), p, 4, 2);
  EXPECT_NEAR(r.node[0], 1.0, 1e-15);
  EXPECT_NEAR(r.node[1], 0.0, 1e-15);
  EXPECT_NEAR(r.device[0], 1.0, 1e-15);
  EXPECT_NEAR(r.device[1], 0.0, 1e-15);
}

TEST(ExpertReach, RefusesWhatDoesNotFit) {
  const ParallelLayout p = layout(2, 2, 4, 1, 2);
  const std::vector<double> w(8, 1.0);
  EXPECT_THROW(expert_reach(w, 0, default_placement(8, 8), p), Error);
  EXPECT_THROW(expert_reach(w, 9, default_placement(8, 8), p), Error);
  EXPECT_THROW(expert_reach(w, 2, default_placement(8, 12), p), Error);  // 12 slots, the layout has 8
  EXPECT_THROW(expert_reach(std::vector<double>(9, 1.0), 2, default_placement(8, 8), p), Error);  // no copy
  EXPECT_THROW(expert_reach({1, 1, 1, 1, 1, 1, 1, -1}, 2, default_placement(8, 8), p), Error);
  EXPECT_THROW(expert_reach({1, 0, 0, 0, 0, 0, 0, 0}, 2, default_placement(8, 8), p), Error);  // < top_k
  EXPECT_THROW(expert_reach(w, 2, default_placement(8, 8), p, 3, 1), Error);  // 3 groups of 8 experts
  EXPECT_THROW(expert_reach(w, 2, default_placement(8, 8), p, 4, 5), Error);  // keeps more than there are
  EXPECT_THROW(expert_reach(w, 3, default_placement(8, 8), p, 4, 1), Error);  // 3 of a group's 2 experts
  // 64 groups of one expert, 32 kept: C(64, 32) group sets, refused before they are listed.
  const ParallelLayout wide = layout(2, 2, 4, 1, 16);
  EXPECT_THROW(expert_reach(std::vector<double>(64, 1.0), 2, default_placement(64, 64), wide, 64, 32), Error);
}

// The exchange from reach, by hand: 2 nodes of 2 as above, tensor parallel in the node (each device sends
// 1/2 of its node's tokens): a token crosses to the other node with probability 22/28 and is forwarded
// there to the other device when it holds one of the token's experts but did not receive it (13/28 x 1/2);
// the node's own rows need nothing. Under attention data parallelism the sender forwards its own node's too.
TEST(DeduplicatedExchange, CopiesPerTokenByHand) {
  const ParallelLayout p = layout(2, 2, 4, 1, 2);
  const ExpertReach r = expert_reach(std::vector<double>(8, 1.0), 2, default_placement(8, 8), p);
  const auto x = deduplicated_exchange(p, r);
  EXPECT_DOUBLE_EQ(x.row_share, 0.5);
  EXPECT_NEAR(x.infiniband, 22.0 / 28, 1e-15);
  EXPECT_NEAR(x.nvlink, 13.0 / 28, 1e-15);
  EXPECT_EQ(x.infiniband_peers, 1);
  EXPECT_EQ(x.nvlink_peers, 1);
  EXPECT_NEAR(x.infiniband_skew, 1.0, 1e-15);
  EXPECT_NEAR(x.nvlink_skew, 1.0, 1e-15);
  const ParallelLayout dp = layout(2, 2, 4, 1, 2, true);
  const auto y = deduplicated_exchange(dp, r);
  EXPECT_DOUBLE_EQ(y.row_share, 1.0);
  EXPECT_NEAR(y.nvlink, 2 * 13.0 / 28, 1e-15);
  // Skewed weights: expert 0 in most tokens' sets, so its device and node receive the most.
  std::vector<double> w(8, 1.0);
  w[0] = 20;
  const ExpertReach s = expert_reach(w, 2, default_placement(8, 8), p);
  const auto z = deduplicated_exchange(p, s);
  EXPECT_NEAR(z.infiniband_skew, 2 * s.node[0] / (s.node[0] + s.node[1]), 1e-15);
  EXPECT_NEAR(z.nvlink_skew, 4 * s.device[0] / (s.device[0] + s.device[1] + s.device[2] + s.device[3]),
              1e-15);
  EXPECT_GT(z.nvlink_skew, z.infiniband_skew);
  EXPECT_GT(z.infiniband_skew, 1.0);
}

// The weights a layer's token sets are drawn with: the synthetic kinds' own, given router weights, or from
// the counts (pi / (1 - pi), pi the share of the tokens an expert received; equal counts give equal weights).
TEST(RoutingTokenWeights, KnownOrDerivedFromTheCounts) {
  Routing zipf;
  zipf.kind = Routing::Kind::kZipf;
  zipf.zipf_s = 1.5;
  const std::vector<double> z = zipf.token_weights({0, 0, 0, 0}, 4);
  EXPECT_DOUBLE_EQ(z[3], std::pow(4.0, -1.5));
  Routing counts;
  counts.kind = Routing::Kind::kCounts;
  const std::vector<double> d = counts.token_weights({10, 5, 5, 0}, 10);  // top-2 of 10 tokens
  EXPECT_NEAR(d[0], 1e6 - 1, 1e-3);  // in every token's set: pi capped at 1 - 1e-6
  EXPECT_DOUBLE_EQ(d[1], 1.0);       // pi 1/2
  EXPECT_DOUBLE_EQ(d[3], 0.0);
  counts.weights = {4, 3, 2, 1};
  EXPECT_EQ(counts.token_weights({10, 5, 5, 0}, 10), counts.weights);
  counts.weights = {1, 1};
  EXPECT_THROW(counts.token_weights({10, 5, 5, 0}, 10), Error);
}

}  // namespace
}  // namespace duplex::compiler
