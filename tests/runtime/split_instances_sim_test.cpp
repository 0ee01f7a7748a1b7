// Split systems of several instances (xPyD): split.prefill_instances / decode_instances divide each pool, and
// replicas copy the whole. Replicas each in their own node serve as independent split systems would; a
// migration between nodes takes InfiniBand; decode instances share the load; bad instance counts are refused.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "closed_loop_options.hpp"
#include "duplex/runtime/sim/kv_migration.hpp"
#include "duplex/runtime/sim/serving_simulator.hpp"
#include "error_text.hpp"

namespace duplex::runtime {
namespace {

// `ids` of a trace of requests arriving every `gap_s`, 256-token prompts answered in 32 tokens, at most 32
// served at once, per-request rows kept.
SimulationOptions spaced_trace(const std::vector<std::int64_t>& ids, double gap_s) {
  SimulationOptions o =
      testing::closed_loop_options(static_cast<std::int64_t>(ids.size()), 256, 32, 32, 5, 0.0);
  o.workload.arrival.kind = ArrivalSpec::Kind::trace;
  for (const std::int64_t id : ids)
    o.workload.arrival.trace_rows.push_back({.id = id,
                                             .arrival = Time::from_si(gap_s * static_cast<double>(id)),
                                             .input_tokens = 256,
                                             .output_tokens = 32});
  o.workload.lengths.reset();  // the trace's own
  o.record_steps = true;
  return o;
}

std::vector<std::int64_t> ids_from(std::int64_t first, std::int64_t step, std::int64_t n) {
  std::vector<std::int64_t> ids;
  for (std::int64_t id = first; id < n; id += step) ids.push_back(id);
  return ids;
}

// duplex-split with `per_node` devices per node (Mixtral-8x7B, Llama-3-70B: 4 devices, 2 prefilling and 2
// decoding).
SystemSpec split_system(int per_node) {
  SystemSpec s = load_system("duplex-split");
  s.links.devices_per_node = per_node;
  return s;
}

// duplex-split with its prefill and decode pools in `prefill` and `decode` instances.
SystemSpec split_instances(int prefill, int decode) {
  SystemSpec s = load_system("duplex-split");
  s.split_prefill_instances = prefill;
  s.split_decode_instances = decode;
  return s;
}

// Two replicas, each in its own node: round-robin sends even prompts to prefill0, odd ones to prefill1, and
// each prefilled prompt goes to its own node's decode instance (fewer outstanding requests there with
// arrivals 50 ms apart: the arrivals are regular and the lengths fixed; equal loads, none, 1 s apart, and
// then the one in the same node), so every request is served exactly as one split system serving only its
// replica's requests serves it.
void replicas_serve_as_independent_split_systems(double gap_s) {
  const auto model = compiler::load_model("llama3-70b");  // dense: no expert draws shared between pools
  const SystemSpec system = split_system(4);
  SimulationOptions o = spaced_trace(ids_from(0, 1, 24), gap_s);
  o.cluster.replicas = 2;
  const SystemResult cluster = simulate(model, system, o);
  EXPECT_EQ(cluster.devices, 8);
  ASSERT_EQ(cluster.pools.size(), 4u);
  const std::vector<std::string> names = {"prefill0", "prefill1", "decode0", "decode1"};
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(cluster.pools[i].name, names[i]);
    EXPECT_EQ(cluster.pools[i].devices, 2);
    EXPECT_EQ(cluster.pools[i].requests, 12);
  }
  EXPECT_EQ(cluster.router, "round-robin");
  EXPECT_NE(cluster.layout.find("2 x 1P1D"), std::string::npos) << cluster.layout;
  double energy = 0;
  for (std::int64_t replica = 0; replica < 2; ++replica) {
    const std::vector<std::int64_t> own = ids_from(replica, 2, 24);
    const SystemResult alone = simulate(model, system, spaced_trace(own, gap_s));
    EXPECT_TRUE(alone.pools.size() == 2 && alone.pools[0].name == "prefill");
    ASSERT_EQ(alone.request_rows.size(), own.size());
    for (std::size_t k = 0; k < own.size(); ++k) {  // the trace numbers its requests from 0
      const std::int64_t id = own[k];
      const nlohmann::json& row = alone.request_rows.at(static_cast<std::int64_t>(k));
      const nlohmann::json& c = cluster.request_rows.at(id);
      EXPECT_EQ(c["ttft_ms"], row["ttft_ms"]) << id;
      EXPECT_EQ(c["e2e_ms"], row["e2e_ms"]) << id;
      EXPECT_EQ(c["pool"], fmt::format("prefill{}>decode{}", replica, replica)) << id;
    }
    energy += alone.energy_j - alone.energy_breakdown["static.xpu"].get<double>() -
              alone.energy_breakdown["static.hbm_stack"].get<double>() -
              alone.energy_breakdown["static.logic_pim_stack"].get<double>();
  }
  // Dynamic energy adds up over the replicas (static energy runs over the longer run).
  const double cluster_dynamic = cluster.energy_j - cluster.energy_breakdown["static.xpu"].get<double>() -
                                 cluster.energy_breakdown["static.hbm_stack"].get<double>() -
                                 cluster.energy_breakdown["static.logic_pim_stack"].get<double>();
  EXPECT_NEAR(cluster_dynamic, energy, 1e-9 * energy);
}

TEST(SplitInstancesSim, ReplicasInTheirOwnNodesServeAsIndependentSplitSystems) {
  for (const double gap_s : {0.05, 1.0}) {
    SCOPED_TRACE(gap_s);
    replicas_serve_as_independent_split_systems(gap_s);
  }
}

// One request at a time (1 s apart): the prefill and decode instances in different nodes (2 devices per
// node) move each prompt's K/V over InfiniBand, in one node over NVLink; the difference is the links' price
// and time for those bytes, nothing else.
TEST(SplitInstancesSim, MigrationsBetweenNodesTakeInfiniBand) {
  const auto model = compiler::load_model("mixtral-8x7b");
  const SimulationOptions o = spaced_trace(ids_from(0, 1, 4), 1.0);
  const SystemSpec near = split_system(4), far = split_system(2);
  const SystemResult nv = simulate(model, near, o);
  const SystemResult ib = simulate(model, far, o);
  const double bytes = kv_bytes_per_token(model) * 256;
  const double price_gap =
      (far.energy.price("links.infiniband_per_byte") - far.energy.price("links.nvlink_per_byte")).si();
  ASSERT_NE(price_gap, 0.0);
  EXPECT_NEAR(ib.energy_breakdown["communication.links"].get<double>() -
                  nv.energy_breakdown["communication.links"].get<double>(),
              4 * bytes * price_gap, 1e-9 * std::abs(4 * bytes * price_gap));
  // Each pool's two devices hold Mixtral's 8 KV heads in two shards: two links carry a prompt side by side.
  const auto pool = compiler::ParallelLayout::make(model, near, 2);
  const int streams = kv_transfer_streams(model, pool, pool);
  EXPECT_EQ(streams, 2);
  const double time_gap =
      (KvLinkMigration(far, false).time(bytes, streams) - KvLinkMigration(near, true).time(bytes, streams))
          .si();
  for (std::int64_t id = 0; id < 4; ++id) {
    EXPECT_EQ(ib.request_rows.at(id)["ttft_ms"], nv.request_rows.at(id)["ttft_ms"]);
    EXPECT_NEAR(
        ib.request_rows.at(id)["e2e_ms"].get<double>() - nv.request_rows.at(id)["e2e_ms"].get<double>(),
        time_gap * 1e3, 1e-6);
  }
}

// Two prompts prefilled in one step queue for the links: the second's K/V leaves when the first's has arrived
// (Llama-3-70B, dense: its steps do not depend on expert draws; InfiniBand slowed to 0.02 GB/s per device, so
// a transfer, 2.1 s, outlasts the first request's decoding: each decodes alone, the second one transfer
// later).
TEST(SplitInstancesSim, MigrationsQueueForTheLinks) {
  const auto model = compiler::load_model("llama3-70b");
  SystemSpec far = split_system(2);
  far.links.infiniband_bandwidth = Bandwidth::from_si(0.02e9);
  const SystemResult r = simulate(model, far, spaced_trace({0, 1}, 0.0));
  const auto pool = compiler::ParallelLayout::make(model, far, 2);
  const double transfer =
      KvLinkMigration(far, false)
          .transfer(kv_bytes_per_token(model) * 256, kv_transfer_streams(model, pool, pool))
          .si();
  EXPECT_EQ(r.request_rows.at(0)["ttft_ms"], r.request_rows.at(1)["ttft_ms"]);
  const double gap_s =
      (r.request_rows.at(1)["e2e_ms"].get<double>() - r.request_rows.at(0)["e2e_ms"].get<double>()) * 1e-3;
  EXPECT_NEAR(gap_s, transfer, 1e-9);
}

// split.kv_transfer: layerwise streams each prompt's K/V during the step that completes its prefill, layer by
// layer (Llama-3-70B, 80 layers; one request at a time, each prefilled in one step from its arrival to its
// first token). Over NVLink a prompt's transfer is shorter than its step: the last layer arrives one layer's
// transfer after the prefill, (L - 1) / L of the transfer earlier than after the prefill. Over InfiniBand
// slowed to 0.02 GB/s the transfer outlasts the step: it starts after the first layer, (L - 1) / L of the
// step earlier. The first tokens do not move.
TEST(SplitInstancesSim, LayerwiseTransfersOverlapThePromptsLastStep) {
  const auto model = compiler::load_model("llama3-70b");
  const double layers = model.layers;
  const SimulationOptions o = spaced_trace(ids_from(0, 1, 3), 5.0);
  const auto pool = compiler::ParallelLayout::make(model, split_system(4), 2);
  const double bytes = kv_bytes_per_token(model) * 256;
  for (const bool one_node : {true, false}) {
    SCOPED_TRACE(one_node);
    SystemSpec system = split_system(one_node ? 4 : 2);
    if (!one_node) system.links.infiniband_bandwidth = Bandwidth::from_si(0.02e9);
    const SystemResult after = simulate(model, system, o);
    system.split_kv_layerwise = true;
    const SystemResult layerwise = simulate(model, system, o);
    const double transfer_ms =
        KvLinkMigration(system, one_node).transfer(bytes, kv_transfer_streams(model, pool, pool)).si() * 1e3;
    for (std::int64_t id = 0; id < 3; ++id) {
      const double ttft_ms = after.request_rows.at(id)["ttft_ms"].get<double>();
      EXPECT_EQ(layerwise.request_rows.at(id)["ttft_ms"], ttft_ms);
      ASSERT_EQ(one_node, transfer_ms < ttft_ms);
      const double saved_ms = (one_node ? transfer_ms : ttft_ms) * (layers - 1) / layers;
      EXPECT_NEAR(after.request_rows.at(id)["e2e_ms"].get<double>() -
                      layerwise.request_rows.at(id)["e2e_ms"].get<double>(),
                  saved_ms, 1e-6)
          << id;
    }
  }
}

// One prefill instance of 4 devices feeding two decode instances of 2 (Llama-3-70B on 8 devices): the
// least-loaded decode instance takes each prefilled prompt, so both serve about half.
TEST(SplitInstancesSim, DecodeInstancesShareTheLoad) {
  const auto model = compiler::load_model("llama3-70b");
  const SystemSpec system = split_instances(1, 2);
  SimulationOptions o = testing::closed_loop_options(128, 512, 64, 16, 3, 0.3);
  o.devices = 8;
  const SystemResult r = simulate(model, system, o);
  ASSERT_EQ(r.pools.size(), 3u);
  EXPECT_EQ(r.pools[0].name, "prefill0");
  EXPECT_EQ(r.pools[0].devices, 4);
  EXPECT_EQ(r.pools[0].requests, 128);
  EXPECT_EQ(r.pools[1].name, "decode0");
  EXPECT_EQ(r.pools[2].devices, 2);
  EXPECT_EQ(r.pools[1].requests + r.pools[2].requests, 128);
  EXPECT_LE(std::abs(r.pools[1].requests - r.pools[2].requests), 8);
  EXPECT_TRUE(r.router.empty());  // one prefill instance: no prompt routing
  EXPECT_EQ(r.requests, 128);
  EXPECT_GT(r.pools[1].xpu_utilization, 0.0);
  EXPECT_GT(r.pools[2].xpu_utilization, 0.0);
}

// Three requests on 1P2D (Llama-3-70B, two TP2 decode instances), a second apart: A's 8,192-token prompt goes
// to decode0 (both empty: the lower index), B's 128 tokens to decode1 (fewer outstanding), and C's 128
// tokens, with one request on each, to decode0 by the queue (the lower index) but to decode1 by free K/V (A's
// 8,192 tokens hold over 500 blocks of decode0, B's some 20 of decode1).
TEST(SplitInstancesSim, DecodeRouterByFreeKvAvoidsTheFullerInstance) {
  const auto model = compiler::load_model("llama3-70b");
  SimulationOptions o = spaced_trace({0, 1, 2}, 1.0);
  o.devices = 8;
  const std::int64_t inputs[] = {8192, 128, 128};
  for (std::size_t i = 0; i < 3; ++i) {
    o.workload.arrival.trace_rows[i].input_tokens = inputs[i];
    o.workload.arrival.trace_rows[i].output_tokens = 400;  // all three decode at once
  }
  SystemSpec system = split_instances(1, 2);
  const SystemResult by_queue = simulate(model, system, o);
  system.split_decode_by_free_kv = true;
  const SystemResult by_kv = simulate(model, system, o);
  const char* queue_pools[] = {"prefill0>decode0", "prefill0>decode1", "prefill0>decode0"};
  const char* kv_pools[] = {"prefill0>decode0", "prefill0>decode1", "prefill0>decode1"};
  for (std::int64_t id = 0; id < 3; ++id) {
    EXPECT_EQ(by_queue.request_rows.at(id)["pool"], queue_pools[id]) << id;
    EXPECT_EQ(by_kv.request_rows.at(id)["pool"], kv_pools[id]) << id;
  }
  EXPECT_NE(by_kv.layout.find("most-free-kv decode router"), std::string::npos) << by_kv.layout;
}

// The prompt router sees the prefill instances' prefix caches: cache-aware routing sends each turn of a
// conversation to the prefill instance holding its previous prompt, round-robin spreads the turns over all
// four (2 replicas x 2 prefill instances of Llama-3-70B on 8 devices each): twice the prompt tokens come
// from the caches (0.70 against 0.35).
TEST(SplitInstancesSim, CacheAwareRoutingKeepsAConversationOnItsPrefillInstance) {
  const auto model = compiler::load_model("llama3-70b");
  const SystemSpec system = split_instances(2, 1);
  SimulationOptions o = testing::closed_loop_options(192, 64, 32, 16, 7, 0.0);
  o.devices = 8;
  o.workload.arrival.concurrency = 32;
  o.workload.conversation = Conversations{.turns = 6, .think_s = 0.05};
  o.scheduler.prefix_caching = true;
  o.cluster.replicas = 2;
  const SystemResult rr = simulate(model, system, o);
  o.cluster.router = RouterPolicy::cache_aware;
  const SystemResult ca = simulate(model, system, o);
  ASSERT_EQ(ca.pools.size(), 6u);  // 4 prefill instances, 2 decode instances
  EXPECT_EQ(ca.router, "cache-aware");
  auto hit_rate = [](const SystemResult& r) {
    return static_cast<double>(r.prefix_hit_tokens) / static_cast<double>(r.prefix_query_tokens);
  };
  EXPECT_GT(hit_rate(ca), 1.5 * hit_rate(rr));
}

TEST(SplitInstancesSim, InstancesMustDivideTheirPool) {
  const auto model = compiler::load_model("mixtral-8x7b");
  const SimulationOptions o = testing::closed_loop_options(4, 64, 4, 4, 1, 0.0);
  EXPECT_NE(testing::error_of([&] {
              simulate(model, split_instances(3, 1), o);
            }).find("the prefill pool's 2 devices do not divide into split.prefill_instances 3"),
            std::string::npos);
  // 2 decode devices: 2 instances of 1, too small for Mixtral's weights.
  EXPECT_NE(testing::error_of([&] { simulate(model, split_instances(1, 2), o); }).find("does not fit"),
            std::string::npos);
}

}  // namespace
}  // namespace duplex::runtime
