// Two-batch overlap in the serving simulator (SystemSpec::two_batch_overlap; compiler/micro_batches.hpp): a
// step's two micro-batches, each lowered on its own and charged, their plans interleaved on the lanes.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "closed_loop_options.hpp"
#include "duplex/runtime/sim/serving_simulator.hpp"
#include "duplex/runtime/sim/step_executor.hpp"

namespace duplex::runtime {
namespace {

StepPlan decode_step(int requests, std::int64_t context) {
  StepPlan plan;
  for (RequestId i = 0; i < static_cast<RequestId>(requests); ++i)
    plan.requests.push_back({i, 1, context, TokenPhase::decode, true});
  return plan;
}

// Each lane runs one op at a time: the ops' intervals on a lane, from their stages' starts, never overlap.
void expect_lanes_serial(const compiler::ExecutionPlan& p) {
  std::map<compiler::Unit, std::vector<std::pair<double, double>>> lanes;
  const std::vector<Time> starts = p.stage_starts();
  for (std::size_t i = 0; i < p.stages.size(); ++i) {
    std::map<compiler::Unit, double> at;
    for (const compiler::PlannedOp& op : p.stages[i].ops) {
      auto [it, fresh] = at.try_emplace(op.unit, starts[i].si());
      lanes[op.unit].push_back({it->second, it->second + op.time.si()});
      it->second += op.time.si();
    }
  }
  for (auto& [unit, spans] : lanes) {
    std::sort(spans.begin(), spans.end());
    for (std::size_t i = 1; i < spans.size(); ++i)
      EXPECT_GE(spans[i].first * (1 + 1e-12), spans[i - 1].second)
          << compiler::unit_name(unit) << " op " << i;
  }
}

// The ops of a micro-batch's plan (names without their "mbN." prefix) but the routed experts', whose number
// depends on each half's routing.
std::multiset<std::string> non_expert_ops(const compiler::ExecutionPlan& p, const std::string& prefix) {
  std::multiset<std::string> out;
  for (const compiler::Op& o : p.graph.ops)
    if (o.kind != compiler::OpKind::kExpertFfn && o.name.rfind(prefix, 0) == 0)
      out.insert(o.name.substr(prefix.size()));
  return out;
}

// The weight bytes a plan reads but the embedding's (the rows of its tokens) and the routed experts' (those
// of each half's routing): once per micro-batch.
double weight_bytes(const compiler::ExecutionPlan& p) {
  double b = 0;
  for (const compiler::Op& o : p.graph.ops)
    if (o.kind != compiler::OpKind::kEmbedding && o.kind != compiler::OpKind::kExpertFfn)
      b += o.bytes_weights;
  return b;
}

// GLaM on two nodes of 8 GPUs (experts parallel over both, the all-to-all across InfiniBand), a step of 8
// prompts of 512 tokens: two micro-batches of 4 prompts, each the one-batch plan's ops (names prefixed),
// one's exchange running under the other's compute: the step is shorter than its lanes' busy times in
// sequence, no shorter than the busiest lane, and here shorter than as one batch (the exchange is a third of
// the step; each prompt's compute outweighs its weights' reads). Energy: each half reads the weights again.
TEST(TwoBatchOverlapSim, AStepsMicroBatchesOverlapOnTheLanes) {
  const compiler::ModelSpec m = compiler::load_model("glam");
  SystemSpec s = load_system("gpu");
  const compiler::ParallelLayout p = compiler::ParallelLayout::make(m, s, 16);
  StepPlan plan;
  for (RequestId i = 0; i < 8; ++i) plan.requests.push_back({i, 512, 0, TokenPhase::prefill, true});
  ExpertRouter r1 = ExpertRouter::uniform(7), r2 = ExpertRouter::uniform(7);
  const StepCost one = StepExecutor(m, s, p, &r1).execute(plan);
  s.two_batch_overlap = true;
  const StepCost two = StepExecutor(m, s, p, &r2).execute(plan);
  const std::multiset<std::string> ops = non_expert_ops(one.plan, "");
  EXPECT_EQ(non_expert_ops(two.plan, "mb0."), ops);
  EXPECT_EQ(non_expert_ops(two.plan, "mb1."), ops);
  for (const compiler::Op& o : two.plan.graph.ops)
    EXPECT_TRUE(o.name.rfind("mb0.", 0) == 0 || o.name.rfind("mb1.", 0) == 0) << o.name;
  EXPECT_FALSE(two.plan.starts.empty());
  EXPECT_EQ(two.time, two.plan.total());
  EXPECT_LT(two.time, two.xpu_busy + two.pim_busy + two.link_busy);
  EXPECT_GE(two.time, std::max(two.xpu_busy, two.link_busy));
  EXPECT_GT(one.link_busy, one.time * 0.2);
  EXPECT_LT(two.time, one.time) << to_us(two.time) << " us against " << to_us(one.time);
  expect_lanes_serial(two.plan);
  EXPECT_NEAR(weight_bytes(two.plan), 2 * weight_bytes(one.plan), 1e-9 * weight_bytes(one.plan));
  EXPECT_GT(two.energy.total(), one.energy.total());
  // Same config and seed, same step.
  ExpertRouter r3 = ExpertRouter::uniform(7);
  const StepCost again = StepExecutor(m, s, p, &r3).execute(plan);
  EXPECT_EQ(again.time, two.time);
  EXPECT_EQ(again.energy.total(), two.energy.total());
  // The collectives' SMs (links.comm_sms, 20 of 132) slow the prompts' compute-bound GEMMs: without them the
  // step is shorter.
  s.links.comm_sms = 0;
  ExpertRouter r4 = ExpertRouter::uniform(7);
  EXPECT_LT(StepExecutor(m, s, p, &r4).execute(plan).time, two.time);
}

// A step of one decoding request has nothing to split: the same step as without overlap, to the bit. A
// single prompt splits in two chunks: the first half's plan writes its K/V without migrating it (it does
// not complete the prompt), the second's attends over both chunks and migrates the prompt's K/V once.
TEST(TwoBatchOverlapSim, OneDecodingRequestRunsAsOneBatchAPromptInTwoChunks) {
  const compiler::ModelSpec m = compiler::load_model("llama3-70b");
  SystemSpec s = load_system("duplex-pe");
  const compiler::ParallelLayout p = compiler::ParallelLayout::make(m, s, 4);
  StepPlan decode;
  decode.requests.push_back({0, 1, 700, TokenPhase::decode, true});
  StepPlan prompt;
  prompt.requests.push_back({0, 512, 0, TokenPhase::prefill, true});
  const StepCost one = StepExecutor(m, s, p, nullptr).execute(decode);
  const StepCost whole = StepExecutor(m, s, p, nullptr).execute(prompt);
  s.two_batch_overlap = true;
  const StepCost two = StepExecutor(m, s, p, nullptr).execute(decode);
  EXPECT_EQ(two.time, one.time);
  EXPECT_EQ(two.energy.total(), one.energy.total());
  EXPECT_TRUE(two.plan.starts.empty());
  const StepCost chunks = StepExecutor(m, s, p, nullptr).execute(prompt);
  ASSERT_FALSE(chunks.plan.starts.empty());
  double migrated[2] = {0, 0}, kv_migrated_whole = 0;
  for (const compiler::Op& o : chunks.plan.graph.ops)
    if (o.kind == compiler::OpKind::kKvMigration) migrated[o.name.rfind("mb1.", 0) == 0] += o.bytes_kv;
  for (const compiler::Op& o : whole.plan.graph.ops)
    if (o.kind == compiler::OpKind::kKvMigration) kv_migrated_whole += o.bytes_kv;
  EXPECT_EQ(migrated[0], 0);
  EXPECT_GT(kv_migrated_whole, 0);
  EXPECT_DOUBLE_EQ(migrated[1], kv_migrated_whole);
}

// Duplex (one unit at a time) on a dense model, 64 decodes: one half's work on the Logic-PIM runs under the
// other's on the xPU (NeuPIMs' sub-batch interleaving), but each half reads every weight, and at 32 requests
// the projections and FFN (Op/B 32) run faster on the Logic-PIM than on the xPU, so both halves queue there
// and the step is slower than as one batch: the reason DUPLEX.md s.6 gives for rejecting alternating
// half-batches.
TEST(TwoBatchOverlapSim, HalfBatchesReadTheWeightsTwice) {
  const compiler::ModelSpec m = compiler::load_model("llama3-70b");
  SystemSpec s = load_system("duplex");
  const compiler::ParallelLayout p = compiler::ParallelLayout::make(m, s, 4);
  const StepPlan plan = decode_step(64, 4096);
  const StepCost one = StepExecutor(m, s, p, nullptr).execute(plan);
  s.two_batch_overlap = true;
  const StepCost two = StepExecutor(m, s, p, nullptr).execute(plan);
  expect_lanes_serial(two.plan);
  EXPECT_LT(two.time, two.xpu_busy + two.pim_busy + two.link_busy);  // the lanes overlap
  EXPECT_NEAR(weight_bytes(two.plan), 2 * weight_bytes(one.plan), 1e-9 * weight_bytes(one.plan));
  EXPECT_GT(two.pim_busy, one.pim_busy * 5);  // the projections and FFN moved to the Logic-PIM
  EXPECT_GT(two.time, one.time);
  EXPECT_GT(two.energy.total(), one.energy.total());
}

// Expert load balancing beside two micro-batches (Mixtral on 8 GPUs, Zipf routing, rebalanced every step): a
// step that copies experts in waits for them first, the copies a stage of their own at the plan's start and
// both micro-batches' stages after them; the step's time is the plan's end, each lane serial.
TEST(TwoBatchOverlapSim, ExpertCopiesComeBeforeBothMicroBatches) {
  const compiler::ModelSpec m = compiler::load_model("mixtral-8x7b");
  SystemSpec s = load_system("gpu");
  s.two_batch_overlap = true;
  s.expert_balancing = ExpertBalancing{0, 1, 1};
  const compiler::ParallelLayout p = compiler::ParallelLayout::make(m, s, 8);
  ExpertRouter router = ExpertRouter::zipf(1.2, 3);
  StepExecutor executor(m, s, p, &router);
  int copied = 0;
  for (int step = 0; step < 4; ++step) {
    const StepCost c = executor.execute(decode_step(64, 512));
    ASSERT_FALSE(c.plan.starts.empty());
    EXPECT_NEAR(c.time.si(), c.plan.total().si(), 1e-12 * c.time.si());  // sums in another order
    expect_lanes_serial(c.plan);
    if (c.expert_move <= Time{}) continue;
    ++copied;
    ASSERT_EQ(c.plan.graph.ops[c.plan.stages.front().ops.front().op].kind, compiler::OpKind::kExpertMove);
    EXPECT_EQ(c.plan.starts.front(), Time{});
    for (std::size_t i = 1; i < c.plan.starts.size(); ++i) EXPECT_GE(c.plan.starts[i], c.expert_move);
  }
  EXPECT_GT(copied, 0);
}

// A serving run counts the steps that ran as two micro-batches (JSON two_batch_overlap): every step of a run
// of 8 users on one tensor-parallel group but those of a single decoding request (the run's tail); none
// reported without the key.
TEST(TwoBatchOverlapSim, ARunCountsItsOverlappedSteps) {
  const compiler::ModelSpec m = compiler::load_model("mixtral-8x7b");
  SystemSpec s = load_system("duplex-pe");
  SimulationOptions o = testing::closed_loop_options(16, 128, 16, 8, 5, 0.3);
  o.record_steps = true;
  EXPECT_FALSE(simulate(m, s, o).two_batch_overlap);
  s.two_batch_overlap = true;
  const SystemResult r = simulate(m, s, o);
  ASSERT_TRUE(r.two_batch_overlap);
  EXPECT_EQ(r.two_batch_overlap->steps, r.steps);
  std::int64_t lone_decodes = 0;
  for (const StepRow& row : r.step_rows) lone_decodes += row.requests == 1 && row.prefill_tokens == 0;
  EXPECT_GT(lone_decodes, 0);
  EXPECT_EQ(r.two_batch_overlap->overlapped_steps, r.steps - lone_decodes);
  EXPECT_EQ(r.to_json().at("two_batch_overlap").at("overlapped_steps"),
            r.two_batch_overlap->overlapped_steps);
}

}  // namespace
}  // namespace duplex::runtime
