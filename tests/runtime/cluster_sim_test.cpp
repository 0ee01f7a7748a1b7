// Clusters in the serving simulator: replicas of a system behind a request router. Each replica serves
// exactly what one system would serve of the requests routed to it; the figures add up over the replicas;
// least-loaded routing evens out uneven requests; cache-aware routing keeps a conversation where its history
// is cached.
#include <gtest/gtest.h>

#include <set>

#include "closed_loop_options.hpp"
#include "duplex/runtime/sim/serving_simulator.hpp"
#include "error_text.hpp"

namespace duplex::runtime {
namespace {

// Serving the requests of a trace, at most 32 at once.
SimulationOptions trace_options(const std::vector<RequestSpec>& rows) {
  SimulationOptions o =
      testing::closed_loop_options(static_cast<std::int64_t>(rows.size()), 256, 32, 32, 5, 0.0);
  o.workload.arrival.kind = ArrivalSpec::Kind::trace;
  o.workload.arrival.trace_rows = rows;
  o.workload.lengths.reset();  // the trace's own
  o.record_steps = true;
  return o;
}

// `n` requests arriving every `gap_s`, prompts of 256 tokens; request i generates `out(i)` tokens.
std::vector<RequestSpec> trace_rows(std::int64_t n, double gap_s, std::int64_t (*out)(std::int64_t)) {
  std::vector<RequestSpec> rows;
  for (std::int64_t i = 0; i < n; ++i)
    rows.push_back({.id = i,
                    .arrival = Time::from_si(gap_s * static_cast<double>(i)),
                    .input_tokens = 256,
                    .output_tokens = out(i)});
  return rows;
}

std::int64_t varied(std::int64_t i) {
  return 16 + (i * 37) % 97;
}
std::int64_t long_then_short(std::int64_t i) {
  return i % 2 == 0 ? 384 : 8;
}

TEST(ClusterSim, EachReplicaServesItsRequestsExactlyAsOneSystemWould) {
  const auto model = compiler::load_model("llama3-70b");
  const std::vector<RequestSpec> rows = trace_rows(48, 0.02, varied);
  SimulationOptions o = trace_options(rows);
  o.cluster.replicas = 2;  // round-robin: even arrivals to replica 0, odd ones to replica 1
  for (const char* name : {"gpu", "duplex-pe"}) {
    SCOPED_TRACE(name);
    const SystemSpec system = load_system(name);
    const SystemResult cluster = simulate(model, system, o);
    for (std::int64_t replica = 0; replica < 2; ++replica) {
      std::vector<RequestSpec> own;
      for (const RequestSpec& r : rows)
        if (r.id % 2 == replica) own.push_back(r);
      const SystemResult alone = simulate(model, system, trace_options(own));
      ASSERT_EQ(alone.request_rows.size(), own.size());
      for (std::size_t k = 0; k < own.size(); ++k) {
        const nlohmann::json& got = cluster.request_rows.at(own[k].id);
        const nlohmann::json& want = alone.request_rows.at(static_cast<std::int64_t>(k));
        EXPECT_EQ(got["pool"], "replica" + std::to_string(replica));
        EXPECT_EQ(got["ttft_ms"], want["ttft_ms"]) << "request " << own[k].id;
        EXPECT_EQ(got["e2e_ms"], want["e2e_ms"]) << "request " << own[k].id;
      }
      EXPECT_EQ(cluster.pools[static_cast<std::size_t>(replica)].steps, alone.steps);
    }
  }
}

TEST(ClusterSim, FiguresAddUpOverTheReplicasAndRepeatBitForBit) {
  const auto model = compiler::load_model("mixtral-8x7b");
  SimulationOptions o = testing::closed_loop_options(96, 128, 48, 16, 7, 0.1);
  o.cluster.replicas = 3;
  o.cluster.router = RouterPolicy::least_loaded;
  o.record_steps = true;
  o.timeline_steps = 12;
  const SystemSpec system = load_system("duplex-pe");
  const SystemResult r = simulate(model, system, o);
  const SystemResult one = simulate(model, system, testing::closed_loop_options(8, 128, 48, 16, 7, 0.1));
  EXPECT_EQ(r.devices, 3 * one.devices);
  EXPECT_EQ(r.replicas, 3);
  EXPECT_EQ(r.requests, 96);
  ASSERT_EQ(r.pools.size(), 3u);
  std::int64_t requests = 0, steps = 0;
  for (const PoolFigures& p : r.pools) {
    EXPECT_EQ(p.devices, one.devices);
    EXPECT_GT(p.requests, 0);
    requests += p.requests;
    steps += p.steps;
  }
  EXPECT_EQ(requests, 96);
  EXPECT_EQ(steps, r.steps);
  std::set<std::string> pools;
  std::set<double> replica0_starts;
  for (const StepRow& s : r.step_rows) {
    pools.insert(s.pool);
    if (s.pool == "replica0") replica0_starts.insert(s.start_s);
  }
  EXPECT_EQ(pools, (std::set<std::string>{"replica0", "replica1", "replica2"}));
  ASSERT_FALSE(r.timeline.empty());
  for (const TimelineStep& t : r.timeline)
    EXPECT_TRUE(replica0_starts.contains(t.start_s));  // replica 0's only
  const nlohmann::json j = r.to_json();
  EXPECT_EQ(j["cluster"]["replicas"], 3);
  EXPECT_EQ(j["cluster"]["router"], "least-loaded");
  EXPECT_EQ(j["pools"]["replica2"]["requests"], r.pools[2].requests);
  EXPECT_EQ(simulate(model, system, o).to_json().dump(), j.dump());
}

TEST(ClusterSim, LeastLoadedRoutingEvensOutUnevenRequests) {
  // Long and short requests alternate: round-robin sends every long one to replica 0.
  const auto model = compiler::load_model("llama3-70b");
  SimulationOptions o = trace_options(trace_rows(64, 0.01, long_then_short));
  o.cluster.replicas = 2;
  const SystemSpec system = load_system("gpu");
  const SystemResult rr = simulate(model, system, o);
  o.cluster.router = RouterPolicy::least_loaded;
  const SystemResult ll = simulate(model, system, o);
  EXPECT_EQ(rr.pools[0].requests, 32);
  EXPECT_LT(ll.pools[0].requests, ll.pools[1].requests);  // replica 0 stays busy with long requests
  EXPECT_LT(ll.e2e_ms.p99, rr.e2e_ms.p99);
  EXPECT_LT(ll.simulated_s, rr.simulated_s);
}

TEST(ClusterSim, CacheAwareAndPrefixHashRoutingKeepConversationsWhereTheirHistoryIsCached) {
  const auto model = compiler::load_model("llama3-70b");
  SimulationOptions o = testing::closed_loop_options(192, 64, 48, 32, 3, 0.1);
  o.workload.conversation = Conversations{.turns = 6, .think_s = 0.05};
  o.cluster.replicas = 4;
  const SystemSpec system = load_system("duplex-pe");
  const SystemResult rr = simulate(model, system, o);
  o.cluster.router = RouterPolicy::cache_aware;
  const SystemResult ca = simulate(model, system, o);
  o.cluster.router = RouterPolicy::prefix_hash;  // a conversation's turns share their first block
  const SystemResult sticky = simulate(model, system, o);
  o.cluster.replicas = 1;  // one system holds every conversation's history
  const SystemResult single = simulate(model, system, o);
  auto hit_rate = [](const SystemResult& r) {
    return static_cast<double>(r.prefix_hit_tokens) / static_cast<double>(r.prefix_query_tokens);
  };
  // A later turn finds its history on its replica under round-robin about one time in four.
  EXPECT_LT(hit_rate(rr), 0.8 * hit_rate(single));
  EXPECT_GT(hit_rate(ca), 0.95 * hit_rate(single));
  EXPECT_GT(hit_rate(sticky), 0.95 * hit_rate(single));
  EXPECT_LT(ca.ttft_ms.p50, rr.ttft_ms.p50);
}

// A burst of prompts sharing 2 system prompts (16 users at once, 96 requests, 1,024 shared + 128 own tokens):
// a cache-aware router counts the prompts it routed to a replica as that replica's, computed or not yet (as
// SGLang's router inserts a prompt into its worker's approximate tree), so each system prompt's requests
// follow its first to one replica, and the cluster computes each once, as one replica would; seeing only
// what the replicas had cached at their last step, the burst would spread by load and compute each prompt
// on several replicas. Round-robin does spread it.
TEST(ClusterSim, CacheAwareRoutingKeepsABurstOfOnePromptOnOneReplica) {
  const auto model = compiler::load_model("mixtral-8x7b");
  SimulationOptions o = testing::closed_loop_options(96, 128, 64, 16, 7, 0.1);
  o.workload.shared_prefix = SharedPrefix{1024, 2};
  const SystemResult one = simulate(model, load_system("gpu"), o);
  o.cluster.replicas = 4;
  o.cluster.router = RouterPolicy::cache_aware;
  const SystemResult cache_aware = simulate(model, load_system("gpu"), o);
  o.cluster.router = RouterPolicy::round_robin;
  const SystemResult round_robin = simulate(model, load_system("gpu"), o);
  EXPECT_EQ(cache_aware.prefix_query_tokens, one.prefix_query_tokens);
  EXPECT_EQ(cache_aware.prefix_hit_tokens, one.prefix_hit_tokens);
  EXPECT_LE(round_robin.prefix_hit_tokens, one.prefix_hit_tokens - 2 * 1024);
}

// 128 users in conversations of 8 turns (0.5 s of think time) over 4 replicas, round-robin: 512 requests.
SimulationOptions replicated_conversations() {
  SimulationOptions o = testing::closed_loop_options(512, 128, 64, 16, 5, 0.1);
  o.workload.arrival.concurrency = 128;
  o.workload.conversation = Conversations{.turns = 8, .think_s = 0.5};
  o.scheduler.prefix_caching = true;
  o.cluster.replicas = 4;
  return o;
}

// links.host_kv_scope node: the replicas of one node share one host tier of their capacities together, so a
// turn the router sends away from the replica holding its history still loads it from the node's host memory
// (LMCache's CPU backend shared by one machine's instances). 4 replicas x 4 devices, round-robin; with 8
// devices per node two tiers of two replicas each, with 16 one tier; with 4 devices per node every replica
// is its own node, exactly as with scope device. Same for a split system's prefill instances.
TEST(ClusterSim, ReplicasOfANodeShareItsHostTier) {
  const auto model = compiler::load_model("llama3-70b");
  const SimulationOptions o = replicated_conversations();
  auto run = [&](const char* name, const char* scope, int per_node) {
    SystemSpec s = load_system(name);
    s.links.host_kv_offload = gib(64);
    s.links.host_kv_scope = std::string(scope) == "node" ? HostKvScope::node : HostKvScope::device;
    s.links.devices_per_node = per_node;
    return simulate(model, s, o);
  };
  const SystemResult own = run("gpu", "device", 8), pairs = run("gpu", "node", 8),
                     one = run("gpu", "node", 16);
  EXPECT_GT(pairs.host_hit_tokens, own.host_hit_tokens);
  EXPECT_GT(one.host_hit_tokens, pairs.host_hit_tokens);
  EXPECT_GT(one.prefix_hit_tokens, own.prefix_hit_tokens);
  EXPECT_LT(one.ttft_ms.p50, own.ttft_ms.p50);
  EXPECT_EQ(one.host_kv_blocks, own.host_kv_blocks);  // per device either way
  EXPECT_EQ(one.to_json()["prefix_cache"]["host_kv_scope"], "node");
  EXPECT_EQ(own.to_json()["prefix_cache"]["host_kv_scope"], "device");
  nlohmann::json alone = run("gpu", "node", 4).to_json(), device = own.to_json();
  alone["prefix_cache"].erase("host_kv_scope");
  device["prefix_cache"].erase("host_kv_scope");
  EXPECT_EQ(alone.dump(), device.dump());
  // A split system (2 + 2 devices per replica): its 4 prefill instances, round-robin, share as well.
  const SystemResult split_own = run("duplex-split", "device", 16),
                     split_one = run("duplex-split", "node", 16);
  EXPECT_GT(split_one.host_hit_tokens, split_own.host_hit_tokens);
  EXPECT_EQ(split_one.to_json()["prefix_cache"]["host_kv_scope"], "node");
}

// links.host_kv_scope cluster: one store over every replica's host memory (Mooncake's store), each copy in
// the memory of the node that stored it. 4 replicas x 4 devices, 4 devices per node (a replica per node),
// round-robin: a turn sent away from its history loads it from another node over InfiniBand, where scope node
// (here a tier per replica) recomputes it. On one node of 16 the store is scope node's tier exactly, nothing
// remote; a slower network makes the remote loads, and so the first tokens, slower.
TEST(ClusterSim, ReplicasOnSeveralNodesShareTheClusterStore) {
  const auto model = compiler::load_model("llama3-70b");
  const SimulationOptions o = replicated_conversations();
  auto run = [&](HostKvScope scope, int per_node, double infiniband_gb_s = 0) {
    SystemSpec s = load_system("gpu");
    s.links.host_kv_offload = gib(64);
    s.links.host_kv_scope = scope;
    s.links.devices_per_node = per_node;
    if (infiniband_gb_s > 0) s.links.infiniband_bandwidth = gb_per_s(infiniband_gb_s);
    return simulate(model, s, o);
  };
  const SystemResult per_replica = run(HostKvScope::node, 4), store = run(HostKvScope::cluster, 4);
  EXPECT_EQ(per_replica.host_remote_hit_tokens, 0);
  EXPECT_GT(store.host_hit_tokens, per_replica.host_hit_tokens);
  EXPECT_GT(store.host_remote_hit_tokens, store.host_hit_tokens / 2);  // 3 of 4 replicas are elsewhere
  EXPECT_LE(store.host_remote_hit_tokens, store.host_hit_tokens);
  EXPECT_GT(store.prefix_hit_tokens, per_replica.prefix_hit_tokens);
  EXPECT_LT(store.ttft_ms.p50, per_replica.ttft_ms.p50);
  const nlohmann::json j = store.to_json();
  EXPECT_EQ(j["prefix_cache"]["host_kv_scope"], "cluster");
  EXPECT_EQ(j["prefix_cache"]["host_remote_hit_tokens"].get<std::int64_t>(), store.host_remote_hit_tokens);
  nlohmann::json one_node = run(HostKvScope::cluster, 16).to_json(),
                 node = run(HostKvScope::node, 16).to_json();
  EXPECT_EQ(one_node["prefix_cache"]["host_remote_hit_tokens"].get<std::int64_t>(), 0);
  for (nlohmann::json* r : {&one_node, &node}) {
    (*r)["prefix_cache"].erase("host_kv_scope");
    (*r)["prefix_cache"].erase("host_remote_hit_tokens");
  }
  EXPECT_EQ(one_node.dump(), node.dump());
  const SystemResult slow = run(HostKvScope::cluster, 4, 1.0);
  EXPECT_GT(slow.ttft_ms.p50, store.ttft_ms.p50);
}

// links.disk_kv_scope: a disk tier behind small host tiers (a replica's own host memory each), shared by the
// replicas of one node, or one store over the nodes (DeepSeek's 3FS KVCache). Round-robin over 4 replicas of
// 4 devices: a turn sent away from its history reads it from the shared disk (over InfiniBand from another
// node's drives with the store) where a disk per replica recomputes it; on one node of 16 devices the store
// is scope node's tier exactly, nothing remote.
TEST(ClusterSim, ReplicasShareADiskTierOnANodeOrOverTheNodes) {
  const auto model = compiler::load_model("llama3-70b");
  const SimulationOptions o = replicated_conversations();
  auto run = [&](HostKvScope scope, int per_node) {
    SystemSpec s = load_system("gpu");
    s.links.host_kv_offload = gib(1);
    s.links.disk_kv_offload = gib(256);
    s.links.disk_kv_scope = scope;
    s.links.devices_per_node = per_node;
    return simulate(model, s, o);
  };
  const SystemResult own = run(HostKvScope::device, 4), node = run(HostKvScope::node, 16),
                     store = run(HostKvScope::cluster, 4);
  EXPECT_GT(node.disk_hit_tokens, own.disk_hit_tokens);
  EXPECT_GT(store.disk_hit_tokens, own.disk_hit_tokens);
  EXPECT_GT(store.prefix_hit_tokens, own.prefix_hit_tokens);
  EXPECT_LT(store.ttft_ms.p50, own.ttft_ms.p50);
  EXPECT_EQ(own.disk_remote_hit_tokens, 0);
  EXPECT_GT(store.disk_remote_hit_tokens, store.disk_hit_tokens / 2);  // 3 of 4 replicas are elsewhere
  const nlohmann::json j = store.to_json();
  EXPECT_EQ(j["prefix_cache"]["disk_kv_scope"], "cluster");
  EXPECT_EQ(j["prefix_cache"]["disk_remote_hit_tokens"].get<std::int64_t>(), store.disk_remote_hit_tokens);
  nlohmann::json one_node = run(HostKvScope::cluster, 16).to_json(), as_node = node.to_json();
  EXPECT_EQ(one_node["prefix_cache"]["disk_remote_hit_tokens"].get<std::int64_t>(), 0);
  for (nlohmann::json* r : {&one_node, &as_node}) {
    (*r)["prefix_cache"].erase("disk_kv_scope");
    (*r)["prefix_cache"].erase("disk_remote_hit_tokens");
  }
  EXPECT_EQ(one_node.dump(), as_node.dump());
}

// A cache-aware router that sees each replica's host tier (cache-aware) sends a turn whose history the device
// cache dropped to the replica whose host memory holds it; seeing the device caches alone
// (cache-aware-device), it finds the history nowhere and sends the turn to the least-loaded replica, which
// computes it again. 4 replicas of llama3-70b on 2 devices each (little K/V memory), 128 users in 4-turn
// conversations with 512-token messages. Without host tiers the two are one policy, bit for bit.
TEST(ClusterSim, ACacheAwareRouterSeesTheReplicasHostTiers) {
  const auto model = compiler::load_model("llama3-70b");
  SimulationOptions o = testing::closed_loop_options(512, 512, 64, 128, 5, 0.1);
  o.devices = 2;
  o.workload.arrival.concurrency = 128;
  o.workload.conversation = Conversations{.turns = 4, .think_s = 2};
  o.cluster.replicas = 4;
  SystemSpec tiers = load_system("gpu");
  tiers.links.host_kv_offload = gib(64);
  auto run = [&](RouterPolicy router, const SystemSpec& system) {
    o.cluster.router = router;
    return simulate(model, system, o);
  };
  const SystemResult sees = run(RouterPolicy::cache_aware, tiers),
                     device = run(RouterPolicy::cache_aware_device, tiers);
  EXPECT_GT(sees.host_hit_tokens, device.host_hit_tokens);
  EXPECT_GT(static_cast<double>(sees.prefix_hit_tokens), 1.2 * static_cast<double>(device.prefix_hit_tokens));
  EXPECT_GT(sees.throughput_tok_s, device.throughput_tok_s);
  nlohmann::json plain = run(RouterPolicy::cache_aware, load_system("gpu")).to_json(),
                 plain_device = run(RouterPolicy::cache_aware_device, load_system("gpu")).to_json();
  EXPECT_EQ(plain_device["cluster"]["router"], "cache-aware-device");
  plain_device["cluster"] = plain["cluster"];
  plain_device["layout"] = plain["layout"];
  EXPECT_EQ(plain.dump(), plain_device.dump());
}

TEST(ClusterSim, BadClustersAreRefused) {
  const auto model = compiler::load_model("mixtral-8x7b");
  SimulationOptions o = testing::closed_loop_options(8, 64, 8, 4, 1, 0.0);
  o.cluster.replicas = 0;
  for (const char* name : {"gpu", "duplex-split"})
    EXPECT_NE(testing::error_of([&] { simulate(model, load_system(name), o); }).find("0 replicas"),
              std::string::npos)
        << name;
}

}  // namespace
}  // namespace duplex::runtime
