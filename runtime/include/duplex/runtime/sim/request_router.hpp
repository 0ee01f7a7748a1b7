#pragma once
// A cluster: `replicas` independent copies of one system (each its own devices, scheduler, KV cache and
// prefix cache) behind a request router that picks, when a request arrives, the replica that serves it
// (Vidur's global scheduler; the SGLang model gateway's and llm-d's routers).
#include <cstdint>
#include <span>
#include <string>

namespace duplex::runtime {

enum class RouterPolicy {
  round_robin,   // the i-th arrival to replica i mod replicas
  least_loaded,  // fewest outstanding requests (Vidur's LOR); ties: the lowest index
  cache_aware,   // the longest cached prefix unless the load is imbalanced (CacheAwareThresholds), counting
                 // the replica's host and disk tiers' copies after its device cache's blocks (what it loads
                 // instead of computing: LMCache's controller tells vLLM production-stack's KV-aware router)
  prefix_hash,   // by a hash of the prompt's first content block (session affinity), whatever the load
  cache_aware_device,  // cache_aware seeing only the device prefix caches (SGLang's model gateway)
};

// Whether `policy` routes by the replicas' caches (cache-aware or cache-aware-device).
inline bool routes_by_cache(RouterPolicy policy) {
  return policy == RouterPolicy::cache_aware || policy == RouterPolicy::cache_aware_device;
}

// "round-robin" | "least-loaded" | "cache-aware" | "prefix-hash" | "cache-aware-device"; duplex::Error naming
// the expected ones otherwise.
RouterPolicy parse_router_policy(const std::string& text);
const char* router_policy_name(RouterPolicy policy);

// The SGLang model gateway's cache-aware policy and its defaults (source: lightseekorg/smg,
// docs/concepts/routing/cache-aware.md: cache-threshold 0.3, balance_abs_threshold 64, balance_rel_threshold
// 1.5). The load is imbalanced when max - min > balance_abs and max > balance_rel x min (outstanding
// requests); then the least loaded replica serves. Otherwise the replica holding the longest cached prefix of
// the prompt does, when it covers more than `cache` of the prompt's tokens, else the least loaded one.
struct CacheAwareThresholds {
  double cache = 0.3;             // in [0, 1]
  std::int64_t balance_abs = 64;  // requests, >= 0
  double balance_rel = 1.5;       // >= 1
};

struct ClusterSpec {
  int replicas = 1;  // >= 1
  RouterPolicy router = RouterPolicy::round_robin;
  CacheAwareThresholds thresholds;
  // duplex::Error naming the field and the expected range when a value is out of it.
  void validate() const;
};

// What the router knows of one replica when a request arrives.
struct ReplicaLoad {
  std::int64_t outstanding = 0;    // requests routed to it and not finished by the arrival
  std::int64_t cached_tokens = 0;  // leading tokens of the arriving prompt its prefix cache holds
  // The tokens after those that its host and disk tiers hold (a cache-aware router counts them too).
  std::int64_t offloaded_tokens = 0;
};

class RequestRouter {
 public:
  explicit RequestRouter(const ClusterSpec& spec);
  // The replica (an index into `replicas`, one entry per replica) to serve a request of `prompt_tokens`
  // (>= 1) whose first content hash is `first_hash` (RequestSpec::content_hashes[0]; 0: none). Deterministic:
  // ties go to the lowest index. cache-aware: the most cached and offloaded tokens, among equals the most
  // cached on the device, then the least loaded. prefix-hash: the same first hash, the same replica (SGLang
  // model gateway's prefix_hash, a load balancer's consistent hashing on a session key: a conversation's
  // turns, or the requests of one system prompt, stay together); a request without hashes goes round-robin.
  int route(std::int64_t prompt_tokens, std::span<const ReplicaLoad> replicas, std::uint64_t first_hash = 0);

 private:
  ClusterSpec spec_;
  std::int64_t routed_ = 0;
};

}  // namespace duplex::runtime
