// The MoE all-to-all's kernels in the serving simulator (SystemSpec::expert_all_to_all): the router's own
// weights reach the node-deduplicated exchange, and auto takes DeepEP's normal kernels for steps with
// prefill.
#include <gtest/gtest.h>

#include "closed_loop_options.hpp"
#include "duplex/compiler/expert_reach.hpp"
#include "duplex/runtime/sim/serving_simulator.hpp"
#include "duplex/runtime/sim/step_executor.hpp"

namespace duplex::runtime {
namespace {

// GLaM on two nodes of 8 under Zipf(1.2) routing, a step with a prefill (auto: the normal kernels): the
// exchange's copies and skews are those of the Zipf router's weights (not weights derived from the step's
// sampled counts), the bytes per token the device sends.
TEST(ExpertAllToAllSim, TheRoutersWeightsTimeTheNormalKernels) {
  const compiler::ModelSpec m = compiler::load_model("glam");
  SystemSpec s = load_system("gpu");
  s.expert_all_to_all = ExpertAllToAll::auto_by_step;
  const compiler::ParallelLayout p = compiler::ParallelLayout::make(m, s, 16);
  StepPlan plan;
  for (RequestId i = 0; i < 16; ++i) plan.requests.push_back({i, 1, 2048, TokenPhase::decode, true});
  plan.requests.push_back({16, 512, 0, TokenPhase::prefill, true});
  ExpertRouter router = ExpertRouter::zipf(1.2, 3);
  const StepCost c = StepExecutor(m, s, p, &router).execute(plan);
  const auto x = compiler::deduplicated_exchange(
      p, compiler::expert_reach(ExpertRouter::zipf(1.2, 0).token_weights(m.experts), m.top_k,
                                compiler::default_placement(m.experts, m.experts), p));
  ASSERT_GT(x.infiniband_skew, 1.0);
  int exchanges = 0;
  for (const compiler::Op& o : c.plan.graph.ops) {
    if (o.kind != compiler::OpKind::kAllToAll) continue;
    ++exchanges;
    EXPECT_DOUBLE_EQ(o.exchange.infiniband_skew, x.infiniband_skew) << o.name;
    EXPECT_DOUBLE_EQ(o.exchange.nvlink_skew, x.nvlink_skew) << o.name;
    EXPECT_EQ(o.m, 66);  // (16 + 512) tokens, 1/8 of them per device
    const double token = static_cast<double>(m.hidden) * 2 * (16 + 512) / 8.0;
    EXPECT_NEAR(o.link_bytes_in_node, token * x.nvlink, 1e-9 * o.link_bytes_in_node) << o.name;
  }
  EXPECT_EQ(exchanges, 2 * m.moe_layers_before(m.layers));
  // Decode only: the per-row kernels, skewed by the busiest device's rows.
  plan.requests.pop_back();
  const StepCost d = StepExecutor(m, s, p, &router).execute(plan);
  for (const compiler::Op& o : d.plan.graph.ops)
    if (o.kind == compiler::OpKind::kAllToAll) {
      EXPECT_EQ(o.exchange.infiniband_skew, o.exchange.nvlink_skew);
      EXPECT_EQ(o.m, 4);  // 16 decodes (all rank 0's) x top-2 rows, 1/8 of them per device
    }
}

// A serving run of GLaM on two nodes, 16 users: auto (the default) sends a prefill step's tokens across once
// per node where the per-row kernels send them once per expert, so it serves faster; the normal kernels in
// the decode steps too are slower than auto: a decode step's few tokens make the exchange latency-bound, and
// the normal kernels' forwarding adds NVLink steps (as DeepEP's low-latency kernels exist for decoding). The
// result names the kernels where the layout exchanges tokens at all.
TEST(ExpertAllToAllSim, DeduplicatedKernelsShortenARun) {
  const compiler::ModelSpec m = compiler::load_model("glam");
  SystemSpec s = load_system("gpu");
  SimulationOptions o = testing::closed_loop_options(32, 512, 16, 16, 5, 0.0);
  o.devices = 16;
  EXPECT_EQ(s.expert_all_to_all, ExpertAllToAll::auto_by_step);  // the preset's (and the key's default)
  const SystemResult by_step = simulate(m, s, o);
  s.expert_all_to_all = ExpertAllToAll::low_latency;
  const SystemResult per_row = simulate(m, s, o);
  s.expert_all_to_all = ExpertAllToAll::normal;
  const SystemResult normal = simulate(m, s, o);
  EXPECT_GT(by_step.throughput_tok_s, per_row.throughput_tok_s);
  EXPECT_GT(by_step.throughput_tok_s, normal.throughput_tok_s);
  EXPECT_EQ(per_row.to_json().at("expert_all_to_all"), "low_latency");
  EXPECT_EQ(by_step.to_json().at("expert_all_to_all"), "auto");
  o.devices = 8;  // one node under tensor parallelism: no exchange
  EXPECT_FALSE(simulate(m, s, o).to_json().contains("expert_all_to_all"));
}

}  // namespace
}  // namespace duplex::runtime
