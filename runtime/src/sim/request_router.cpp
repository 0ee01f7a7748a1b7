#include "duplex/runtime/sim/request_router.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <cmath>

#include "duplex/base/error.hpp"

namespace duplex::runtime {

RouterPolicy parse_router_policy(const std::string& text) {
  for (RouterPolicy p : {RouterPolicy::round_robin, RouterPolicy::least_loaded, RouterPolicy::cache_aware,
                         RouterPolicy::prefix_hash, RouterPolicy::cache_aware_device})
    if (text == router_policy_name(p)) return p;
  throw Error(fmt::format(
      "unknown request router \"{}\"; expected round-robin, least-loaded, cache-aware, prefix-hash or "
      "cache-aware-device",
      text));
}

const char* router_policy_name(RouterPolicy policy) {
  switch (policy) {
    case RouterPolicy::round_robin:
      return "round-robin";
    case RouterPolicy::least_loaded:
      return "least-loaded";
    case RouterPolicy::cache_aware:
      return "cache-aware";
    case RouterPolicy::prefix_hash:
      return "prefix-hash";
    case RouterPolicy::cache_aware_device:
      return "cache-aware-device";
  }
  return "?";
}

void ClusterSpec::validate() const {
  if (replicas < 1 || replicas > 4096)
    throw Error(fmt::format("{} replicas; expected 1 to 4096 copies of the system", replicas));
  const CacheAwareThresholds& t = thresholds;
  if (!(t.cache >= 0 && t.cache <= 1))
    throw Error(fmt::format(
        "cache-aware router: cache threshold {}; expected a fraction of the prompt in [0, 1]", t.cache));
  if (t.balance_abs < 0)
    throw Error(fmt::format("cache-aware router: balance_abs {}; expected >= 0 requests", t.balance_abs));
  if (!(t.balance_rel >= 1 && std::isfinite(t.balance_rel)))
    throw Error(fmt::format("cache-aware router: balance_rel {}; expected a ratio >= 1", t.balance_rel));
}

RequestRouter::RequestRouter(const ClusterSpec& spec) : spec_(spec) {
  spec_.validate();
}

int RequestRouter::route(std::int64_t prompt_tokens, std::span<const ReplicaLoad> replicas,
                         std::uint64_t first_hash) {
  if (static_cast<std::int64_t>(replicas.size()) != spec_.replicas)
    throw InternalError(
        fmt::format("routing over {} replicas of a cluster of {}", replicas.size(), spec_.replicas));
  const std::int64_t index = routed_++;
  if (spec_.router == RouterPolicy::prefix_hash && first_hash != 0) {
    std::uint64_t h =
        first_hash + 0x9e3779b97f4a7c15ULL;  // splitmix64's finaliser: every bit of the hash counts
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    return static_cast<int>((h ^ (h >> 31)) % static_cast<std::uint64_t>(spec_.replicas));
  }
  if (spec_.router == RouterPolicy::round_robin || spec_.router == RouterPolicy::prefix_hash)
    return static_cast<int>(index % spec_.replicas);
  auto by_load = [](const ReplicaLoad& a, const ReplicaLoad& b) { return a.outstanding < b.outstanding; };
  const auto least = std::min_element(replicas.begin(), replicas.end(), by_load);  // the first of equals
  const int least_index = static_cast<int>(least - replicas.begin());
  if (spec_.router == RouterPolicy::least_loaded) return least_index;
  const std::int64_t max_load = std::max_element(replicas.begin(), replicas.end(), by_load)->outstanding;
  const CacheAwareThresholds& t = spec_.thresholds;
  if (max_load - least->outstanding > t.balance_abs &&
      static_cast<double>(max_load) > t.balance_rel * static_cast<double>(least->outstanding))
    return least_index;
  // The longest prefix held (cache-aware-device: on the device); among equal ones the most on the device, the
  // least loaded, then the lowest index.
  const bool tiers = spec_.router == RouterPolicy::cache_aware;
  auto held = [tiers](const ReplicaLoad& a) { return a.cached_tokens + (tiers ? a.offloaded_tokens : 0); };
  const auto best =
      std::min_element(replicas.begin(), replicas.end(), [&](const ReplicaLoad& a, const ReplicaLoad& b) {
        if (held(a) != held(b)) return held(a) > held(b);
        return a.cached_tokens != b.cached_tokens ? a.cached_tokens > b.cached_tokens
                                                  : a.outstanding < b.outstanding;
      });
  const double match =
      static_cast<double>(held(*best)) / static_cast<double>(std::max<std::int64_t>(1, prompt_tokens));
  return match > t.cache ? static_cast<int>(best - replicas.begin()) : least_index;
}

}  // namespace duplex::runtime
