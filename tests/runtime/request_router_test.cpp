// The request router's policies over given replica loads: round-robin cycles, least-loaded picks the fewest
// outstanding requests, cache-aware follows the longest cached prefix (with the host and disk tiers' copies;
// cache-aware-device: on the device) unless it covers too little of the prompt or the load is imbalanced
// (both of the SGLang gateway's thresholds exceeded).
#include "duplex/runtime/sim/request_router.hpp"

#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "duplex/base/error.hpp"
#include "error_text.hpp"

namespace duplex::runtime {
namespace {

using testing::error_of;

ClusterSpec cluster(int replicas, RouterPolicy policy) {
  ClusterSpec c;
  c.replicas = replicas;
  c.router = policy;
  return c;
}

TEST(RequestRouter, RoundRobinCyclesWhateverTheLoads) {
  RequestRouter router(cluster(3, RouterPolicy::round_robin));
  const std::vector<ReplicaLoad> loads = {{50, 0}, {0, 900}, {7, 10}};
  std::vector<int> got;
  for (int i = 0; i < 7; ++i) got.push_back(router.route(1000, loads));
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 0, 1, 2, 0}));
}

TEST(RequestRouter, LeastLoadedPicksTheFewestOutstandingAndTheFirstOfEquals) {
  RequestRouter router(cluster(4, RouterPolicy::least_loaded));
  EXPECT_EQ(router.route(10, std::vector<ReplicaLoad>{{5, 0}, {3, 0}, {4, 0}, {3, 0}}), 1);
  EXPECT_EQ(router.route(10, std::vector<ReplicaLoad>{{0, 0}, {0, 900}, {0, 0}, {0, 0}}),
            0);  // ignores caches
}

TEST(RequestRouter, CacheAwareFollowsTheLongestCachedPrefixWhenTheLoadIsBalanced) {
  RequestRouter router(cluster(3, RouterPolicy::cache_aware));
  EXPECT_EQ(router.route(1000, std::vector<ReplicaLoad>{{10, 0}, {40, 600}, {11, 310}}), 1);
  // Equal prefixes: the less loaded of them.
  EXPECT_EQ(router.route(1000, std::vector<ReplicaLoad>{{10, 0}, {40, 600}, {30, 600}}), 2);
}

TEST(RequestRouter, CacheAwareGoesToTheLeastLoadedWhenThePrefixCoversTooLittle) {
  RequestRouter router(cluster(3, RouterPolicy::cache_aware));
  // 300 of 1,000 tokens is not more than the 0.3 threshold.
  EXPECT_EQ(router.route(1000, std::vector<ReplicaLoad>{{12, 0}, {20, 300}, {11, 100}}), 2);
  EXPECT_EQ(router.route(1000, std::vector<ReplicaLoad>{{12, 0}, {20, 301}, {11, 100}}), 1);
  EXPECT_EQ(router.route(1000, std::vector<ReplicaLoad>{{12, 0}, {20, 0}, {11, 0}}), 2);  // no cache anywhere
}

// A replica's host and disk tiers' copies after its device blocks count as held (it loads them instead of
// computing them): the most held wins, among equals the most on the device. cache-aware-device sees the
// device caches alone.
TEST(RequestRouter, CacheAwareCountsTheTiersCopiesAndCacheAwareDeviceDoesNot) {
  RequestRouter router(cluster(3, RouterPolicy::cache_aware));
  RequestRouter device(cluster(3, RouterPolicy::cache_aware_device));
  const std::vector<ReplicaLoad> spilled = {{10, 100, 0}, {12, 0, 700}, {11, 200, 100}};
  EXPECT_EQ(router.route(1000, spilled), 1);
  EXPECT_EQ(device.route(1000, spilled), 0);  // 200 tokens are too few: the least loaded
  const std::vector<ReplicaLoad> equal = {{10, 100, 500}, {12, 300, 300}, {11, 600, 0}};
  EXPECT_EQ(router.route(1000, equal), 2);
  EXPECT_EQ(device.route(1000, equal), 2);
  // Offloaded tokens count towards the cache threshold: 100 + 250 of 1,000 is more than 0.3.
  const std::vector<ReplicaLoad> some = {{10, 0, 0}, {20, 100, 250}, {15, 0, 0}};
  EXPECT_EQ(router.route(1000, some), 1);
  EXPECT_EQ(device.route(1000, some), 0);
}

TEST(RequestRouter, CacheAwareBalancesOnlyWhenBothImbalanceThresholdsAreExceeded) {
  RequestRouter router(cluster(2, RouterPolicy::cache_aware));
  // 100 - 10 > 64 and 100 > 1.5 x 10: imbalanced, the least loaded serves.
  EXPECT_EQ(router.route(1000, std::vector<ReplicaLoad>{{10, 0}, {100, 1000}}), 0);
  // 150 - 100 <= 64: balanced.
  EXPECT_EQ(router.route(1000, std::vector<ReplicaLoad>{{100, 0}, {150, 1000}}), 1);
  // 280 - 200 > 64 but 280 <= 1.5 x 200: balanced.
  EXPECT_EQ(router.route(1000, std::vector<ReplicaLoad>{{200, 0}, {280, 1000}}), 1);
  ClusterSpec strict = cluster(2, RouterPolicy::cache_aware);
  strict.thresholds.balance_abs = 0;
  strict.thresholds.balance_rel = 1.0;
  RequestRouter balancing(strict);
  EXPECT_EQ(balancing.route(1000, std::vector<ReplicaLoad>{{100, 0}, {101, 1000}}), 0);
}

TEST(RequestRouter, PrefixHashKeepsAFirstHashOnOneReplicaWhateverTheLoads) {
  RequestRouter router(cluster(4, RouterPolicy::prefix_hash));
  const std::vector<ReplicaLoad> idle(4), busy = {{90, 0}, {90, 0}, {90, 0}, {90, 0}};
  std::set<int> replicas;
  for (std::uint64_t session = 1; session <= 64; ++session) {
    const int r = router.route(100, idle, session * 0x51ed27ULL);
    EXPECT_EQ(router.route(100, busy, session * 0x51ed27ULL), r);  // the same hash, the same replica
    replicas.insert(r);
  }
  EXPECT_EQ(replicas.size(), 4u);  // 64 sessions spread over every replica
  RequestRouter plain(cluster(3, RouterPolicy::prefix_hash));
  EXPECT_EQ(plain.route(10, std::vector<ReplicaLoad>(3), 0), 0);  // no hashes: round-robin
  EXPECT_EQ(plain.route(10, std::vector<ReplicaLoad>(3), 0), 1);
}

TEST(RequestRouter, NamesParseBothWaysAndBadOnesAreRefused) {
  for (RouterPolicy p : {RouterPolicy::round_robin, RouterPolicy::least_loaded, RouterPolicy::cache_aware,
                         RouterPolicy::prefix_hash, RouterPolicy::cache_aware_device})
    EXPECT_EQ(parse_router_policy(router_policy_name(p)), p);
  EXPECT_EQ(
      error_of([] { parse_router_policy("random"); }),
      "unknown request router \"random\"; expected round-robin, least-loaded, cache-aware, prefix-hash or "
      "cache-aware-device");
}

TEST(RequestRouter, OutOfRangeClusterSettingsAreRefusedNamingThem) {
  ClusterSpec c;
  c.replicas = 0;
  EXPECT_NE(error_of([&] { c.validate(); }).find("0 replicas; expected 1 to 4096"), std::string::npos);
  c = ClusterSpec{};
  c.thresholds.cache = 1.5;
  EXPECT_NE(error_of([&] { c.validate(); }).find("cache threshold 1.5"), std::string::npos);
  c = ClusterSpec{};
  c.thresholds.balance_abs = -1;
  EXPECT_NE(error_of([&] { c.validate(); }).find("balance_abs -1; expected >= 0"), std::string::npos);
  c = ClusterSpec{};
  c.thresholds.balance_rel = 0.5;
  EXPECT_NE(error_of([&] { c.validate(); }).find("balance_rel 0.5; expected a ratio >= 1"),
            std::string::npos);
  EXPECT_NE(error_of([&] { RequestRouter r(c); }).find("balance_rel"), std::string::npos);
}

TEST(RequestRouter, LoadsOfAnotherClusterSizeAreAnInternalError) {
  RequestRouter router(cluster(3, RouterPolicy::least_loaded));
  EXPECT_THROW(router.route(10, std::vector<ReplicaLoad>{{0, 0}, {0, 0}}), InternalError);
}

}  // namespace
}  // namespace duplex::runtime
