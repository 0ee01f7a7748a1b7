// Expert load balancing over a run (SystemSpec::expert_balancing): when the experts are placed again and
// from which steps' loads, the expert copies a new placement costs (by hand, over NVLink in a node and
// InfiniBand across), the step that waits for them, and whole runs: no rebalancing reproduces the unbalanced
// run bit for bit, balancing evens the devices' rows, the same every run; and the energy of the busiest
// group's plan, which times the step, charges the mean group's expert work.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <fmt/format.h>

#include "closed_loop_options.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/expert_placement.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/runtime/sim/energy_ledger.hpp"
#include "duplex/runtime/sim/expert_balancer.hpp"
#include "duplex/runtime/sim/serving_simulator.hpp"
#include "duplex/runtime/sim/step_executor.hpp"

namespace duplex::runtime {
namespace {

SystemSpec gpu_balancing(int redundant, std::int64_t window, std::int64_t interval) {
  SystemSpec s = load_system("gpu");
  s.expert_balancing = ExpertBalancing{redundant, window, interval};
  return s;
}

ExpertCounts every_layer(const compiler::ModelSpec& m, const std::vector<std::int64_t>& row) {
  return ExpertCounts(static_cast<std::size_t>(m.moe_layers_before(m.layers)), row);
}

// Interval 3, window 2: steps 3 and 6 place the experts again, each from the two steps before it; step 0's
// loads (which alone would place them otherwise) never count.
TEST(ExpertBalancer, RebalancesEveryIntervalFromTheWindowBeforeIt) {
  const compiler::ModelSpec m = compiler::load_model("mixtral-8x7b");
  const SystemSpec s = gpu_balancing(0, 2, 3);
  const compiler::ParallelLayout p = compiler::ParallelLayout::make(m, s, 4);
  ExpertBalancer b(m, *s.expert_balancing, p, s.links);
  const std::vector<std::int64_t> hot0{10, 4, 2, 1, 1, 1, 1, 0}, hot7{0, 1, 1, 1, 1, 2, 4, 10};
  const compiler::SlotExperts initial = compiler::default_placement(8, 8);
  EXPECT_FALSE(b.step(every_layer(m, hot0)).rebalanced);
  EXPECT_FALSE(b.step(every_layer(m, hot7)).rebalanced);
  EXPECT_FALSE(b.step(every_layer(m, hot7)).rebalanced);
  EXPECT_EQ(b.placement().front(), initial);
  EXPECT_TRUE(b.step(every_layer(m, hot0)).rebalanced);  // step 3: from steps 1 and 2
  const compiler::SlotExperts from_hot7 = compiler::balance_experts({0, 2, 2, 2, 2, 4, 8, 20}, 8, 4);
  for (const compiler::SlotExperts& layer : b.placement()) EXPECT_EQ(layer, from_hot7);
  EXPECT_NE(from_hot7, compiler::balance_experts({10, 6, 4, 3, 3, 5, 9, 20}, 8, 4));  // with step 0's
  EXPECT_FALSE(b.step(every_layer(m, hot0)).rebalanced);
  EXPECT_FALSE(b.step(every_layer(m, hot0)).rebalanced);
  EXPECT_TRUE(b.step(every_layer(m, hot7)).rebalanced);  // step 6: from steps 4 and 5
  EXPECT_EQ(b.placement().front(), compiler::balance_experts({20, 8, 4, 2, 2, 2, 2, 0}, 8, 4));
  EXPECT_EQ(b.rebalancings(), 2);
}

// Mixtral on 4 GPUs of one node, loads {8, 4, 2, 1, 1, 1, 1, 1}: the packing {0 7 | 1 6 | 2 5 | 3 4} from
// {0 1 | 2 3 | 4 5 | 6 7}: devices 1 and 3 copy in two experts per MoE layer, 0 and 2 one, all over NVLink.
TEST(ExpertBalancer, ANewPlacementCopiesEachDevicesNewExpertsOverNvlinkInANode) {
  const compiler::ModelSpec m = compiler::load_model("mixtral-8x7b");
  const SystemSpec s = gpu_balancing(0, 1, 1);
  const compiler::ParallelLayout p = compiler::ParallelLayout::make(m, s, 4);
  ExpertBalancer b(m, *s.expert_balancing, p, s.links);
  const ExpertCounts counts = every_layer(m, {8, 4, 2, 1, 1, 1, 1, 1});
  b.step(counts);
  const ExpertBalancer::Move move = b.step(counts);
  ASSERT_TRUE(move.rebalanced);
  EXPECT_EQ(b.placement().front(), (compiler::SlotExperts{0, 7, 1, 6, 2, 5, 3, 4}));
  const double expert = m.expert_ffn_bytes(m.expert_ffn);
  EXPECT_EQ(move.device_slots, 2 * 32);
  EXPECT_DOUBLE_EQ(move.device_nvlink_bytes, 64 * expert);
  EXPECT_EQ(move.device_infiniband_bytes, 0);
  EXPECT_DOUBLE_EQ(move.nvlink_bytes, (1 + 2 + 1 + 2) * 32 * expert);
  EXPECT_EQ(move.infiniband_bytes, 0);
  EXPECT_NEAR(move.time.si(),
              (transfer_time(64 * expert, s.links.nvlink_bandwidth) + s.links.nvlink_latency).si(), 1e-15);
  // The loads again: the same placement, nothing copied.
  const ExpertBalancer::Move again = b.step(counts);
  EXPECT_TRUE(again.rebalanced);
  EXPECT_EQ(again.time, Time{});
  EXPECT_EQ(again.nvlink_bytes, 0);
  // Balanced rows: the busiest device's over the mean, 8 + 1 = 9 against 19 / 4.
  EXPECT_NEAR(b.imbalance(counts), 9.0 / (19.0 / 4), 1e-12);
}

// +ET on two nodes: each node holds 4 expert slots, each sharded over its 8 devices. The packing
// {0 5 6 7 | 1 2 3 4} from {0 1 2 3 | 4 5 6 7}: each node copies in 3 experts per MoE layer, all from the
// other node over InfiniBand, each device its 1/8 shard.
TEST(ExpertBalancer, ExpertsFromAnotherNodeComeOverInfiniband) {
  const compiler::ModelSpec m = compiler::load_model("mixtral-8x7b");
  SystemSpec s = gpu_balancing(0, 1, 1);
  s.expert_tensor_parallel = true;
  const compiler::ParallelLayout p = compiler::ParallelLayout::make(m, s, 16);
  ASSERT_EQ(p.expert_groups, 2);
  ExpertBalancer b(m, *s.expert_balancing, p, s.links);
  const ExpertCounts counts = every_layer(m, {8, 4, 2, 1, 1, 1, 1, 1});
  b.step(counts);
  const ExpertBalancer::Move move = b.step(counts);
  EXPECT_EQ(b.placement().front(), (compiler::SlotExperts{0, 5, 6, 7, 1, 2, 3, 4}));
  const double shard = m.expert_ffn_bytes(m.expert_ffn) / 8;
  EXPECT_EQ(move.device_slots, 3 * 32);
  EXPECT_EQ(move.device_nvlink_bytes, 0);
  EXPECT_DOUBLE_EQ(move.device_infiniband_bytes, 96 * shard);
  EXPECT_DOUBLE_EQ(move.infiniband_bytes, 2 * 8 * 96 * shard);  // both nodes' 8 devices
  EXPECT_NEAR(move.time.si(),
              (transfer_time(96 * shard, s.links.infiniband_bandwidth) + s.links.infiniband_latency).si(),
              1e-15);
}

// As vLLM calls DeepSeek's EPLB: DeepSeek-V3's 8 router groups divide over the 4 nodes of 32 GPUs, so each
// node's 64 slots hold 2 whole groups (hierarchical policy); Qwen3-30B-A3B has one group, which does not
// divide over 2 nodes, so its experts are placed by the global policy.
TEST(ExpertBalancer, ThePolicyIsHierarchicalWhereTheRouterGroupsDivideOverTheNodes) {
  auto rebalanced = [](const compiler::ModelSpec& m, int devices) {
    const SystemSpec s = gpu_balancing(0, 1, 1);
    const compiler::ParallelLayout p = compiler::ParallelLayout::make(m, s, devices);
    ExpertBalancer b(m, *s.expert_balancing, p, s.links);
    std::vector<std::int64_t> row(static_cast<std::size_t>(m.experts));
    for (int e = 0; e < m.experts; ++e) row[static_cast<std::size_t>(e)] = 1000 / (e % 37 + 1);
    b.step(every_layer(m, row));
    EXPECT_TRUE(b.step(every_layer(m, row)).rebalanced);
    return std::pair{b.placement().front(), row};
  };
  const compiler::ModelSpec deepseek = compiler::load_model("deepseek-v3-fp8");
  ASSERT_EQ(deepseek.router_groups, 8);
  const auto [grouped, ds_row] = rebalanced(deepseek, 32);
  const std::vector<double> ds_load(ds_row.begin(), ds_row.end());
  EXPECT_EQ(grouped, compiler::balance_experts_hierarchical(ds_load, 256, 32, 8, 4));
  EXPECT_NE(grouped, compiler::balance_experts(ds_load, 256, 32));
  for (std::size_t slot = 0; slot < grouped.size(); ++slot)
    for (std::size_t other = 0; other < grouped.size(); ++other)
      if (grouped[other] / 32 == grouped[slot] / 32) {
        ASSERT_EQ(other / 64, slot / 64);  // a router group's experts on one node
      }
  const compiler::ModelSpec qwen = compiler::load_model("qwen3-30b-a3b");
  const auto [global, q_row] = rebalanced(qwen, 16);
  EXPECT_EQ(global, compiler::balance_experts(std::vector<double>(q_row.begin(), q_row.end()), 128, 16));
}

TEST(ExpertBalancer, DenseModelsAndShardedLayoutsAreRefused) {
  const SystemSpec s = gpu_balancing(0, 1, 1);
  const compiler::ModelSpec dense = compiler::load_model("llama3-70b");
  try {
    ExpertBalancer b(dense, *s.expert_balancing, compiler::ParallelLayout::make(dense, s, 4), s.links);
    ADD_FAILURE() << "a dense model was balanced";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model llama3-70b has no experts"), std::string::npos) << e.what();
  }
  // A layout made without the section has no redundant slots to hold.
  const compiler::ModelSpec m = compiler::load_model("mixtral-8x7b");
  try {
    ExpertBalancer b(m, ExpertBalancing{4, 1, 1}, compiler::ParallelLayout::make(m, s, 4), s.links);
    ADD_FAILURE() << "a layout without the redundant slots was balanced";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds 8 expert slots per layer; expected 8 experts + 4 redundant"),
              std::string::npos)
        << e.what();
  }
}

// A rebalancing step: the copies' op first in its plan, the step longer by their time, and their bytes
// charged for every device.
TEST(ExpertBalancer, TheRebalancingStepWaitsForTheCopies) {
  const compiler::ModelSpec m = compiler::load_model("mixtral-8x7b");
  const SystemSpec s = gpu_balancing(4, 1, 1);
  const compiler::ParallelLayout p = compiler::ParallelLayout::make(m, s, 4);
  ExpertRouter router = ExpertRouter::zipf(1.2, 3);
  StepExecutor executor(m, s, p, &router);
  StepPlan plan;
  for (RequestId id = 0; id < 32; ++id) plan.requests.push_back({id, 1, 300, TokenPhase::decode});
  const StepCost first = executor.execute(plan);
  EXPECT_FALSE(first.experts_rebalanced);
  EXPECT_GT(first.expert_imbalance, 1.0);
  const StepCost second = executor.execute(plan);
  ASSERT_TRUE(second.experts_rebalanced);
  ASSERT_GT(second.expert_move, Time{});
  const compiler::Op& move = second.plan.graph.ops[second.plan.stages.front().ops.front().op];
  EXPECT_EQ(move.kind, compiler::OpKind::kExpertMove);
  EXPECT_EQ(second.plan.stages.front().time(), second.expert_move);
  EXPECT_NEAR(second.time.si(), second.plan.total().si(), 1e-15);
  EXPECT_GT(second.energy.total().si(), 0);
  // The cost model times the op as the balancer did.
  EXPECT_NEAR(compiler::CostModel(s, p).link_time(move).si(), second.expert_move.si(), 1e-15);
}

SimulationOptions zipf_options(std::int64_t requests) {
  SimulationOptions o = testing::closed_loop_options(requests, 256, 64, 64, 5, 0.2);
  o.workload.routing = RoutingSpec{ExpertRouter::Kind::zipf, 1.2, {}};
  o.devices = 16;
  return o;
}

// No rebalancing within the run and no redundant slots: vLLM's initial placement is the unbalanced one, and
// both plans time the busiest device, here (every step's counts rising with the expert index) the one holding
// the last experts, so the run is the same bit for bit.
TEST(ExpertBalancingSim, NeverRebalancingReproducesTheUnbalancedRun) {
  const compiler::ModelSpec m = compiler::load_model("qwen3-30b-a3b");
  SimulationOptions o = zipf_options(64);
  std::string trace = "step,layer,expert,count\n";
  for (int l = 0; l < m.moe_layers_before(m.layers); ++l)
    for (int e = 0; e < m.experts; ++e) trace += fmt::format("0,{},{},{}\n", l, e, 200 + 10 * (l % 3) + e);
  o.workload.routing = RoutingSpec{ExpertRouter::Kind::trace, 0, parse_routing_trace(trace, "rising.csv")};
  const SystemResult plain = simulate(m, load_system("gpu"), o);
  const SystemResult never = simulate(m, gpu_balancing(0, 1000, 1'000'000), o);
  EXPECT_EQ(plain.throughput_tok_s, never.throughput_tok_s);
  EXPECT_EQ(plain.energy_j, never.energy_j);
  EXPECT_EQ(plain.tbt_ms.p99, never.tbt_ms.p99);
  ASSERT_TRUE(never.expert_balancing.has_value());
  EXPECT_EQ(never.expert_balancing->rebalancings, 0);
  EXPECT_FALSE(plain.expert_balancing.has_value());
}

// Rebalancing every 20 steps from the last 20 evens the devices' rows, more so with redundant copies, and
// the runs are the same every time.
TEST(ExpertBalancingSim, RebalancingEvensTheDevicesRowsTheSameEveryRun) {
  const compiler::ModelSpec m = compiler::load_model("qwen3-30b-a3b");
  const SimulationOptions o = zipf_options(64);
  const SystemResult never = simulate(m, gpu_balancing(0, 20, 1'000'000), o);
  const SystemResult permuted = simulate(m, gpu_balancing(0, 20, 20), o);
  const SystemResult copies = simulate(m, gpu_balancing(16, 20, 20), o);
  const SystemResult again = simulate(m, gpu_balancing(16, 20, 20), o);
  ASSERT_TRUE(permuted.expert_balancing && copies.expert_balancing && again.expert_balancing);
  EXPECT_GT(permuted.expert_balancing->rebalancings, 0);
  EXPECT_GT(permuted.expert_balancing->move_s, 0);
  EXPECT_LT(permuted.expert_balancing->imbalance_mean, never.expert_balancing->imbalance_mean);
  EXPECT_LT(copies.expert_balancing->imbalance_mean, permuted.expert_balancing->imbalance_mean);
  EXPECT_EQ(copies.layout, "16 devices: TP8 x DP2, EP16 (9 expert slots/device: 16 redundant per layer)");
  EXPECT_LT(copies.kv_capacity_blocks, never.kv_capacity_blocks);  // the copies' weights take K/V memory
  EXPECT_EQ(copies.throughput_tok_s, again.throughput_tok_s);
  EXPECT_EQ(copies.energy_j, again.energy_j);
  EXPECT_EQ(copies.expert_balancing->move_s, again.expert_balancing->move_s);
  EXPECT_EQ(copies.expert_balancing->imbalance_mean, again.expert_balancing->imbalance_mean);
}

// Mixtral on 4 GPUs (every op on the xPU), 16 decodes, counts {0 0 | 0 8 | 16 8 | 0 0}: the plan holds
// device 2's experts 4 and 5 (24 rows, 2 experts with rows), but the devices do 8 rows and 0.75 experts with
// rows on average; the plan's expert energy is the mean of the four devices' own plans' (energy is linear in
// FLOPs and bytes on one unit).
TEST(ExpertEnergy, ThePlanChargesTheMeanDevicesExpertWork) {
  const compiler::ModelSpec m = compiler::load_model("mixtral-8x7b");
  const SystemSpec s = load_system("gpu");
  const compiler::ParallelLayout p = compiler::ParallelLayout::make(m, s, 4);
  compiler::Routing r;
  r.kind = compiler::Routing::Kind::kCounts;
  r.counts = {{0, 0, 0, 8, 16, 8, 0, 0}};
  const auto batch = compiler::BatchState::decode_batch(16, 512);
  // The expert ops' energy as charged, or (`own`) unscaled: the planned group's own work.
  auto expert_joules = [&](const compiler::LowerOptions& o, bool own) {
    EnergyLedger ledger(s.energy);
    int experts = 0;
    for (compiler::Op op : compiler::lower(m, batch, p, r, o).ops)
      if (op.kind == compiler::OpKind::kExpertFfn) {
        if (own) op.energy_rows_scale = op.energy_weights_scale = 1;
        charge_op(ledger, op, compiler::Unit::kXpu, s);
        ++experts;
      }
    return std::pair{ledger.total().si(), experts};
  };
  const auto [planned, planned_ops] = expert_joules({}, false);
  EXPECT_EQ(planned_ops, 2 * m.moe_layers_before(m.layers));
  double mean = 0;
  for (int g = 0; g < 4; ++g) mean += expert_joules({.expert_group = g}, true).first / 4;
  EXPECT_GT(mean, 0);
  EXPECT_NEAR(planned, mean, 1e-12 * mean);
  EXPECT_GT(expert_joules({}, true).first, 1.5 * mean);  // device 2's own work
}

}  // namespace
}  // namespace duplex::runtime
