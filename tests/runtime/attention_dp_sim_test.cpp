// Attention data parallelism in the serving simulator: an MoE layer's all-to-all is charged per byte on the
// link it crosses, and DeepSeek-V3, whose MLA latent TP replicates on every device of a node, holds a larger
// batch when each device holds only its own requests' latent.
#include <gtest/gtest.h>

#include "closed_loop_options.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/runtime/sim/energy_ledger.hpp"
#include "duplex/runtime/sim/serving_simulator.hpp"
#include "duplex/runtime/sim/step_executor.hpp"

namespace duplex::runtime {
namespace {

// Two nodes of 8: the all-to-all's bytes to the device's own node at NVLink's price, the rest at
// InfiniBand's.
TEST(AttentionDataParallelSim, AllToAllBytesArePricedOnTheLinkTheyCross) {
  const compiler::ModelSpec m = compiler::load_model("mixtral-8x7b");
  SystemSpec s = load_system("gpu");
  s.attention_data_parallel = true;
  const compiler::ParallelLayout p = compiler::ParallelLayout::make(m, s, 16);
  const compiler::Graph g = compiler::lower(m, compiler::BatchState::decode_batch(64, 512), p, {});
  for (const compiler::Op& o : g.ops) {
    if (o.kind != compiler::OpKind::kAllToAll) continue;
    EnergyLedger ledger(s.energy);
    charge_op(ledger, o, compiler::Unit::kLink, s);
    const double expected =
        (s.energy.price("links.nvlink_per_byte") * o.link_bytes_in_node).si() +
        (s.energy.price("links.infiniband_per_byte") * (o.link_bytes - o.link_bytes_in_node)).si();
    EXPECT_DOUBLE_EQ(ledger.total().si(), expected);
    EXPECT_GT(o.link_bytes_in_node, 0);
    EXPECT_GT(o.link_bytes, o.link_bytes_in_node);
    return;
  }
  FAIL() << "no all-to-all in the plan";
}

// Each replica runs its own rank's requests (ScheduledRequest::rank, where the scheduler keeps their K/V) and
// the slowest sets the step: 8 decodes all dealt to rank 0 of TP8 x DP2 take longer than 4 on each; the
// attention compute energy is the same (the same 8 decodes), and the slower step's plan is replica 0's, with
// all 8.
TEST(AttentionDataParallelSim, TheSlowestRankSetsTheStep) {
  const compiler::ModelSpec m = compiler::load_model("mixtral-8x7b");
  const SystemSpec s = load_system("gpu");
  const compiler::ParallelLayout p = compiler::ParallelLayout::make(m, s, 16);
  ASSERT_EQ(p.dp, 2);
  auto run = [&](bool balanced) {
    StepPlan plan;
    for (RequestId i = 0; i < 8; ++i) {
      plan.requests.push_back({i, 1, 2048, TokenPhase::decode, false});
      plan.requests.back().rank = balanced ? static_cast<int>(i % 2) : 0;
    }
    ExpertRouter router = ExpertRouter::uniform(5);
    return StepExecutor(m, s, p, &router).execute(plan);
  };
  const StepCost even = run(true), skewed = run(false);
  EXPECT_GT(skewed.time, even.time);
  auto attention_requests = [](const StepCost& c) {
    for (const compiler::Op& o : c.plan.graph.ops)
      if (o.kind == compiler::OpKind::kAttentionDecode) return o.requests;
    return std::int64_t{-1};
  };
  EXPECT_EQ(attention_requests(skewed), 8);
  EXPECT_EQ(attention_requests(even), 4);
  const double a = even.energy.breakdown_json()["attention.compute"].get<double>();
  EXPECT_NEAR(skewed.energy.breakdown_json()["attention.compute"].get<double>(), a, 1e-9 * a);
}

// The result reports each data-parallel rank (one system: `ranks`; a cluster's replicas: their pools'): the
// requests dealt to it, their preemptions and the most K/V blocks it held of its own; one rank reports none.
TEST(AttentionDataParallelSim, EachRankIsReported) {
  const compiler::ModelSpec m = compiler::load_model("mixtral-8x7b");
  SystemSpec s = load_system("gpu");
  s.data_parallel_balance = DataParallelBalance::round_robin;
  SimulationOptions o = testing::closed_loop_options(24, 256, 16, 8, 3, 0.3);
  o.devices = 16;
  const SystemResult r = simulate(m, s, o);
  ASSERT_EQ(r.ranks.size(), 2u);
  std::int64_t requests = 0, preemptions = 0;
  for (const RankFigures& k : r.ranks) {
    requests += k.requests;
    preemptions += k.preemptions;
    EXPECT_GT(k.kv_peak_blocks, 0);
    EXPECT_LE(k.kv_peak_blocks, k.kv_capacity_blocks);
    EXPECT_EQ(k.kv_capacity_blocks, r.kv_capacity_blocks / 2);
    EXPECT_EQ(k.max_batch, 4);  // 8 over 2 ranks
    EXPECT_GE(k.batch_peak, 1);
    EXPECT_LE(k.batch_peak, k.max_batch);
  }
  EXPECT_EQ(requests, 24);
  EXPECT_EQ(r.ranks[0].requests, 12);  // ids mod 2
  EXPECT_EQ(preemptions, r.preemptions);
  const nlohmann::json j = r.to_json();
  ASSERT_EQ(j.at("data_parallel_ranks").size(), 2u);
  EXPECT_EQ(j["data_parallel_ranks"][1]["kv_peak_blocks"].get<std::int64_t>(), r.ranks[1].kv_peak_blocks);
  EXPECT_EQ(j["data_parallel_ranks"][0]["batch_peak"].get<std::int64_t>(), r.ranks[0].batch_peak);
  EXPECT_EQ(j.at("data_parallel_balance"), "round-robin");
  o.cluster.replicas = 2;
  const SystemResult cluster = simulate(m, s, o);
  ASSERT_EQ(cluster.pools.size(), 2u);
  EXPECT_EQ(cluster.pools[0].ranks.size(), 2u);
  EXPECT_TRUE(cluster.to_json()["pools"][cluster.pools[0].name].contains("data_parallel_ranks"));
  o.devices = 8;  // one node, one rank
  o.cluster.replicas = 1;
  const SystemResult one = simulate(m, s, o);
  EXPECT_TRUE(one.ranks.empty());
  EXPECT_FALSE(one.to_json().contains("data_parallel_ranks"));
  EXPECT_FALSE(one.to_json().contains("data_parallel_balance"));
}

// A closed loop of 8 users at max batch 8 on two nodes (4 a rank), answers of varied lengths: round-robin
// deals user i's next request to rank (its id) mod 2 whichever rank's user finished, so a rank's fifth
// request waits for a slot while the other rank has one free; least-loaded deals it to the rank that freed
// one, so no request waits: each rank runs 4 at most, and the first tokens come sooner at the tail.
TEST(AttentionDataParallelSim, LeastLoadedBalancingKeepsEveryRankFull) {
  const compiler::ModelSpec m = compiler::load_model("mixtral-8x7b");
  SystemSpec s = load_system("gpu");
  EXPECT_EQ(s.data_parallel_balance, DataParallelBalance::least_loaded);  // the default
  SimulationOptions o = testing::closed_loop_options(96, 256, 64, 8, 5, 0.5);
  o.devices = 16;
  s.data_parallel_balance = DataParallelBalance::round_robin;
  const SystemResult round_robin = simulate(m, s, o);
  s.data_parallel_balance = DataParallelBalance::least_loaded;
  const SystemResult least_loaded = simulate(m, s, o);
  EXPECT_EQ(least_loaded.data_parallel_balance, "least-loaded");
  EXPECT_EQ(least_loaded.generated_tokens, round_robin.generated_tokens);
  for (const RankFigures& k : least_loaded.ranks) EXPECT_EQ(k.batch_peak, 4);
  EXPECT_LT(least_loaded.ttft_ms.p99, round_robin.ttft_ms.p99);
}

// A step's energy is every replica's: each replica's devices are charged for their own rank's requests (a
// replica without requests for its experts only), not the slowest replica's plan on every device. The
// attention FLOPs of 37 decodes at distinct contexts and one prompt are the same whichever way 16 devices
// split them, TP8 x DP2 or DP16, and so is their compute energy (charging the busiest replica's plan, with
// the prompt, on every device overstated DP16's).
TEST(AttentionDataParallelSim, EveryReplicaIsChargedForItsOwnShare) {
  const compiler::ModelSpec m = compiler::load_model("mixtral-8x7b");
  StepPlan plan;
  for (RequestId id = 0; id < 37; ++id)
    plan.requests.push_back({id, 1, 300 + 17 * id, TokenPhase::decode, false});
  plan.requests.push_back({37, 512, 0, TokenPhase::prefill, true});
  auto attention_compute = [&](bool attention_dp) {
    SystemSpec s = load_system("gpu");
    s.attention_data_parallel = attention_dp;
    const compiler::ParallelLayout p = compiler::ParallelLayout::make(m, s, 16);
    StepPlan dealt = plan;  // round-robin over the layout's ranks
    for (ScheduledRequest& r : dealt.requests) r.rank = static_cast<int>(r.id % p.dp);
    ExpertRouter router = ExpertRouter::uniform(5);
    StepExecutor exec(m, s, p, &router);
    const StepCost c = exec.execute(dealt);
    return c.energy.breakdown_json()["attention.compute"].get<double>();
  };
  const double tp = attention_compute(false), dp = attention_compute(true);
  EXPECT_GT(tp, 0);
  EXPECT_NEAR(dp, tp, 1e-9 * tp);
}

// DeepSeek-V3 (FP8) on 16 GPUs, 512 requests of (2048, 64) at most 512 at once: under TP8 x DP2 the KV cache
// (each node's 8 devices holding every latent of the node) bounds the batch; under attention DP it holds 4x
// the tokens and the batch grows.
TEST(AttentionDataParallelSim, DeepSeekV3HoldsALargerBatch) {
  const compiler::ModelSpec m = compiler::load_model("deepseek-v3-fp8");
  SimulationOptions o = testing::closed_loop_options(512, 2048, 64, 512, 3, 0.0);
  o.devices = 16;
  SystemSpec s = load_system("gpu");
  const SystemResult tp = simulate(m, s, o);
  s.attention_data_parallel = true;
  const SystemResult dp = simulate(m, s, o);
  EXPECT_EQ(dp.generated_tokens, tp.generated_tokens);
  EXPECT_GT(dp.memory.kv_tokens, 3 * tp.memory.kv_tokens);
  EXPECT_GT(dp.batch_mean, tp.batch_mean);
  EXPECT_NE(dp.layout.find("attention data parallel"), std::string::npos) << dp.layout;
  std::printf("TP: %s, kv %lld tokens, batch %.1f, %.0f tok/s | DP: kv %lld, batch %.1f, %.0f tok/s\n",
              tp.layout.c_str(), static_cast<long long>(tp.memory.kv_tokens), tp.batch_mean,
              tp.throughput_tok_s, static_cast<long long>(dp.memory.kv_tokens), dp.batch_mean,
              dp.throughput_tok_s);
}

}  // namespace
}  // namespace duplex::runtime
