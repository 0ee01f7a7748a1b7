// Two-batch overlap (compiler/micro_batches.hpp): the split of a step's requests, of its routing, and the
// interleaving of the two micro-batches' plans on a device's lanes, checked against schedules worked by hand.
#include "duplex/compiler/micro_batches.hpp"

#include <gtest/gtest.h>

#include <numeric>
#include <string>
#include <vector>

#include "duplex/base/config.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/model_spec.hpp"

namespace duplex::compiler {
namespace {

Time us(double v) {
  return Time::from_si(v * 1e-6);
}

// A decoding batch: half its requests, rounded down, first (SGLang: num_seqs // 2).
TEST(MicroBatches, ADecodeBatchSplitsByCountTheSmallerHalfFirst) {
  const MicroBatches m = split_micro_batches(BatchState::decode_batch(5, 300), 0.48);
  ASSERT_EQ(m.first.groups.size(), 1u);
  ASSERT_EQ(m.second.groups.size(), 1u);
  EXPECT_EQ(m.first.groups[0].count, 2);
  EXPECT_EQ(m.second.groups[0].count, 3);
  EXPECT_EQ(m.first.groups[0].context, 300);
  EXPECT_EQ(m.second.groups[0].context, 300);
  // One decoding request: the first half empty.
  EXPECT_EQ(split_micro_batches(BatchState::decode_batch(1, 300), 0.48).first.tokens(), 0);
}

// Prompts of 4 x 512 and 3 x 100 tokens (2,348): the best split between requests puts two prompts first
// (1,024: 300 short of half; three would be 724 over), 43.6% of the tokens. Within a threshold of 0.4 it
// stands; at SGLang's 0.48 the split moves to token 1,174, inside the third prompt: its first 150 tokens
// end the first half without completing it, its other 362 (150 more of context) start the second.
TEST(MicroBatches, PromptsSplitBetweenRequestsOrMidPrompt) {
  BatchState b;
  b.groups.push_back({4, 0, 512, true, false, 0});
  b.groups.push_back({3, 0, 100, true, false, 0});
  const MicroBatches wide = split_micro_batches(b, 0.4);
  EXPECT_EQ(wide.first.tokens(), 1024);
  EXPECT_EQ(wide.second.tokens(), 1324);
  ASSERT_EQ(wide.second.groups.size(), 2u);
  EXPECT_EQ(wide.second.groups[0].count, 2);
  EXPECT_EQ(wide.second.groups[1].count, 3);
  const MicroBatches m = split_micro_batches(b, 0.48);
  EXPECT_EQ(m.first.tokens(), 1174);
  EXPECT_EQ(m.second.tokens(), 1174);
  ASSERT_EQ(m.first.groups.size(), 2u);
  EXPECT_EQ(m.first.groups[0], (RequestGroup{2, 0, 512, true, false, 0}));
  EXPECT_EQ(m.first.groups[1], (RequestGroup{1, 0, 150, false, false, 0}));
  ASSERT_EQ(m.second.groups.size(), 3u);
  EXPECT_EQ(m.second.groups[0], (RequestGroup{1, 150, 362, true, false, 0}));
  EXPECT_EQ(m.second.groups[1], (RequestGroup{1, 0, 512, true, false, 0}));
  EXPECT_EQ(m.second.groups[2], (RequestGroup{3, 0, 100, true, false, 0}));
  // A mixed step, 8 decodes then a 1,000-token prompt: between requests the decodes alone would go first
  // (8 of 1,008 tokens), so the prompt splits at token 504: the decodes and its first 496 tokens first.
  const MicroBatches mixed = split_micro_batches(BatchState::decode_batch(8, 100, 1000), 0.48);
  EXPECT_EQ(mixed.first.tokens(), 504);
  EXPECT_EQ(mixed.first.decode_requests(), 8);
  ASSERT_EQ(mixed.second.groups.size(), 1u);
  EXPECT_EQ(mixed.second.groups[0], (RequestGroup{1, 496, 504, true, false, 0}));
}

// A single prompt always splits in two chunks (its prefix-cached tokens stay cached in both), unless the
// threshold is 0, which never splits a prompt: then its first half is empty.
TEST(MicroBatches, ASinglePromptSplitsInTwoChunks) {
  BatchState b;
  b.groups.push_back({1, 300, 4097, true, false, 200});
  b.first_draft_pass = true;
  const MicroBatches m = split_micro_batches(b, 0.48);
  ASSERT_EQ(m.first.groups.size(), 1u);
  ASSERT_EQ(m.second.groups.size(), 1u);
  EXPECT_EQ(m.first.groups[0], (RequestGroup{1, 300, 2048, false, false, 200}));
  EXPECT_EQ(m.second.groups[0], (RequestGroup{1, 2348, 2049, true, false, 200}));
  EXPECT_TRUE(m.first.first_draft_pass);
  EXPECT_TRUE(m.second.first_draft_pass);
  EXPECT_EQ(split_micro_batches(b, 0).first.tokens(), 0);
  EXPECT_TRUE(split_micro_batches(BatchState{}, 0.48).first.groups.empty());
  EXPECT_THROW(split_micro_batches(b, 0.6), Error);
}

// Each data-parallel rank's requests split on their own: rank 0's four decodes two and two, rank 1's two
// decodes and a 64-token prompt (66 tokens) at token 33, mid-prompt.
TEST(MicroBatches, EachRankSplitsItsOwnRequests) {
  BatchState b;
  b.groups.push_back({4, 200, 1, false, false, 0, 0});
  b.groups.push_back({2, 900, 1, false, false, 0, 1});
  b.groups.push_back({1, 0, 64, true, false, 0, 1});
  const MicroBatches m = split_micro_batches(b, 0.48);
  std::int64_t first[2] = {0, 0}, second[2] = {0, 0};
  for (const RequestGroup& g : m.first.groups) first[g.rank] += g.count * g.tokens;
  for (const RequestGroup& g : m.second.groups) second[g.rank] += g.count * g.tokens;
  EXPECT_EQ(first[0], 2);
  EXPECT_EQ(second[0], 2);
  EXPECT_EQ(first[1], 33);
  EXPECT_EQ(second[1], 33);
}

// Given counts shared in proportion, the first half's by largest remainder, the second the rest; synthetic
// routing unchanged.
TEST(MicroBatches, TheStepsCountsAreSharedInProportion) {
  Routing r;
  r.kind = Routing::Kind::kCounts;
  r.counts = {{5, 3, 0, 2}, {4, 4, 1, 1}};
  r.weights = {1, 2, 3, 4};
  const auto [a, b] = split_routing(r, 6, 10, 4, 1);
  EXPECT_EQ(a.counts[0], (std::vector<std::int64_t>{3, 2, 0, 1}));  // 3, 1.8, 0, 1.2
  EXPECT_EQ(b.counts[0], (std::vector<std::int64_t>{2, 1, 0, 1}));
  for (const auto& row : a.counts) EXPECT_EQ(std::accumulate(row.begin(), row.end(), std::int64_t{0}), 6);
  for (const auto& row : b.counts) EXPECT_EQ(std::accumulate(row.begin(), row.end(), std::int64_t{0}), 4);
  EXPECT_EQ(a.weights, r.weights);
  EXPECT_EQ(b.weights, r.weights);
  Routing uniform;
  const auto halves = split_routing(uniform, 3, 8, 8, 2);
  EXPECT_EQ(halves[0].expert_tokens(0, 3, 8, 2), uniform.expert_tokens(0, 3, 8, 2));
  EXPECT_THROW(split_routing(r, 11, 10, 4, 1), Error);
}

// A plan of stages, each {unit, microseconds} ops.
ExecutionPlan plan_of(const std::vector<std::vector<std::pair<Unit, double>>>& stages) {
  ExecutionPlan p;
  for (const auto& ops : stages) {
    PlanStage s;
    for (const auto& [unit, t] : ops) {
      Op op;
      op.name = "op" + std::to_string(p.graph.ops.size());
      p.graph.ops.push_back(op);
      s.ops.push_back({p.graph.ops.size() - 1, unit, us(t), us(t), std::nullopt});
    }
    p.stages.push_back(s);
  }
  return p;
}

void expect_starts(const ExecutionPlan& p, const std::vector<double>& starts_us) {
  ASSERT_EQ(p.starts.size(), starts_us.size());
  for (std::size_t i = 0; i < starts_us.size(); ++i)
    EXPECT_NEAR(p.starts[i].si(), starts_us[i] * 1e-6, 1e-15) << "stage " << i;
}

// Compute 2, exchange 3, compute 1 in each half: the second's compute runs under the first's exchange.
//   xPU:  a0 [0,2] b0 [2,4]        a2 [5,6]        b2 [8,9]
//   link:          a1 [2,5]        b1 [5,8]
TEST(MicroBatches, OneHalfsExchangeRunsUnderTheOthersCompute) {
  const ExecutionPlan half = plan_of({{{Unit::kXpu, 2}}, {{Unit::kLink, 3}}, {{Unit::kXpu, 1}}});
  const ExecutionPlan p = overlap_micro_batches(half, half);
  expect_starts(p, {0, 2, 2, 5, 5, 8});
  EXPECT_NEAR(p.total().si(), 9e-6, 1e-15);
  EXPECT_NEAR(p.busy(Unit::kXpu).si(), 6e-6, 1e-15);
  EXPECT_NEAR(p.busy(Unit::kLink).si(), 6e-6, 1e-15);
  ASSERT_EQ(p.graph.ops.size(), 6u);
  EXPECT_EQ(p.graph.ops[0].name, "mb0.op0");
  EXPECT_EQ(p.graph.ops[3].name, "mb1.op0");
  // The stages in the order placed: a0, a1, b0, a2, b1, b2 (b's op indices after a's).
  EXPECT_EQ(p.stages[2].ops[0].op, 3u);
  EXPECT_EQ(p.stages[3].ops[0].op, 2u);
  EXPECT_EQ(p.stage_starts(), p.starts);
}

// NeuPIMs' sub-batch interleaving: one half's PIM attention under the other's xPU projections.
//   xPU: a0 [0,1] b0 [1,2] a2 [3,4]        b2 [5,6]
//   PIM:          a1 [1,3]        b1 [3,5]
TEST(MicroBatches, OneHalfsPimWorkRunsUnderTheOthersXpuWork) {
  const ExecutionPlan half = plan_of({{{Unit::kXpu, 1}}, {{Unit::kPim, 2}}, {{Unit::kXpu, 1}}});
  const ExecutionPlan p = overlap_micro_batches(half, half);
  expect_starts(p, {0, 1, 1, 3, 3, 5});
  EXPECT_NEAR(p.total().si(), 6e-6, 1e-15);
}

// A co-processed stage (xPU and PIM at once) waits for both lanes; a lane with no time in a stage is free.
//   xPU:  a0 [0,4] b0 [4,8]
//   PIM:  a0 [0,1]          b0 [4,5]
//   link:          a1 [4,6]          b1 [8,10]
TEST(MicroBatches, AStageWaitsForEveryLaneItUses) {
  const ExecutionPlan half = plan_of({{{Unit::kXpu, 4}, {Unit::kPim, 1}}, {{Unit::kLink, 2}}});
  const ExecutionPlan p = overlap_micro_batches(half, half);
  expect_starts(p, {0, 4, 4, 8});
  EXPECT_NEAR(p.total().si(), 10e-6, 1e-15);
  // Plans of different lengths: the longer one's last stages follow alone.
  const ExecutionPlan longer = plan_of({{{Unit::kXpu, 1}}, {{Unit::kXpu, 1}}, {{Unit::kXpu, 1}}});
  const ExecutionPlan q = overlap_micro_batches(plan_of({{{Unit::kLink, 5}}}), longer);
  expect_starts(q, {0, 0, 1, 2});
  EXPECT_NEAR(q.total().si(), 5e-6, 1e-15);
}

// The system keys: two_batch_overlap false in every preset (gpu.yaml states it), refused beside pipeline
// parallelism; two_batch_overlap_threshold 0.48 (0..0.5); links.comm_sms 20, leaving the xPU an SM.
TEST(MicroBatches, SystemKey) {
  auto load = [](const std::vector<std::string>& sets) {
    std::vector<ConfigOverride> overrides;
    for (const std::string& s : sets) overrides.push_back(parse_override(s, "--set"));
    return read_system(ConfigNode::load("duplex-pe", "systems", overrides));
  };
  auto error_of = [&](const std::vector<std::string>& sets) {
    try {
      load(sets);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_FALSE(load({}).two_batch_overlap);
  EXPECT_FALSE(load_system("gpu").two_batch_overlap);
  EXPECT_TRUE(load({"two_batch_overlap=true"}).two_batch_overlap);
  EXPECT_THROW(load({"two_batch_overlap=2"}), Error);
  EXPECT_EQ(load({}).two_batch_overlap_threshold, 0.48);
  EXPECT_EQ(load({"two_batch_overlap_threshold=0.3"}).two_batch_overlap_threshold, 0.3);
  EXPECT_EQ(load({"links.comm_sms=24"}).links.comm_sms, 24);
  const std::pair<std::vector<std::string>, std::string> refused[] = {
      {{"pipeline_parallel=2", "two_batch_overlap=true"},
       "two_batch_overlap: true beside pipeline_parallel 2 is not modelled"},
      {{"two_batch_overlap_threshold=0.6"}, "two_batch_overlap_threshold: 0.6 is outside 0..0.5"},
      {{"links.comm_sms=132"}, "comm_sms: 132 leaves none of the xPU's 132 SMs to compute"},
  };
  for (const auto& [sets, expected] : refused)
    EXPECT_NE(error_of(sets).find(expected), std::string::npos) << error_of(sets);
}

// The collectives' SMs (links.comm_sms, DeepEP's 20 of an H100's 132) slow the overlapped computation: every
// xPU rate x 112 / 132, memory bandwidth unchanged; comm_sms must leave an SM. They are held by a
// tensor-parallel all-reduce and by DeepEP's normal kernels, not its low-latency ones nor a single device.
TEST(MicroBatches, TheCollectivesSmsSlowTheOverlappedCompute) {
  SystemSpec s = load_system("gpu");
  EXPECT_EQ(s.links.comm_sms, 20);
  EXPECT_EQ(s.xpu.sms, 132);
  const SystemSpec o = overlapped_system(s);
  EXPECT_DOUBLE_EQ(o.xpu.peak_fp16.si(), s.xpu.peak_fp16.si() * 112 / 132);
  EXPECT_DOUBLE_EQ(o.xpu.peak_fp8.si(), s.xpu.peak_fp8.si() * 112 / 132);
  EXPECT_DOUBLE_EQ(o.xpu.peak_int8.si(), s.xpu.peak_int8.si() * 112 / 132);
  EXPECT_DOUBLE_EQ(o.xpu.peak_fp32.si(), s.xpu.peak_fp32.si() * 112 / 132);
  EXPECT_EQ(o.memory_bandwidth().si(), s.memory_bandwidth().si());
  const ModelSpec glam = load_model("glam");
  const BatchState prompts = BatchState::decode_batch(8, 100, 512),
                   decodes = BatchState::decode_batch(8, 100);
  EXPECT_TRUE(collectives_hold_sms(s, ParallelLayout::make(glam, s, 8), decodes));  // TP8's all-reduces
  EXPECT_FALSE(collectives_hold_sms(s, ParallelLayout::make(load_model("llama-3.2-1b"), s, 1), prompts));
  s.attention_data_parallel = true;  // DP16 attention, experts over both nodes: exchanges only
  const ParallelLayout dp = ParallelLayout::make(glam, s, 16);
  EXPECT_TRUE(collectives_hold_sms(s, dp, prompts));   // auto: the normal kernels
  EXPECT_FALSE(collectives_hold_sms(s, dp, decodes));  // auto: the low-latency kernels
  s.expert_all_to_all = ExpertAllToAll::normal;
  EXPECT_TRUE(collectives_hold_sms(s, dp, decodes));
  s.links.comm_sms = 132;
  EXPECT_THROW(overlapped_system(s), Error);
}

// Which steps run as two micro-batches: none without the key; with it, a step with a prompt not where its
// token exchange runs DeepEP's low-latency kernels (GLaM on two nodes), a decoding step there yes; a step of
// one decoding request never.
TEST(MicroBatches, WhichStepsOverlap) {
  SystemSpec s = load_system("gpu");
  const ParallelLayout two_nodes = ParallelLayout::make(load_model("glam"), s, 16);
  const BatchState prompts = BatchState::decode_batch(8, 100, 512),
                   decodes = BatchState::decode_batch(8, 100);
  EXPECT_FALSE(micro_batches(s, two_nodes, prompts));
  s.two_batch_overlap = true;
  EXPECT_TRUE(micro_batches(s, two_nodes, prompts));
  EXPECT_FALSE(micro_batches(s, two_nodes, BatchState::decode_batch(1, 100)));
  s.expert_all_to_all = ExpertAllToAll::low_latency;
  EXPECT_FALSE(micro_batches(s, two_nodes, prompts));
  EXPECT_TRUE(micro_batches(s, two_nodes, decodes));
  const ParallelLayout one_node = ParallelLayout::make(load_model("glam"), s, 8);  // no exchange
  EXPECT_TRUE(micro_batches(s, one_node, prompts));
  const std::optional<MicroBatches> m = micro_batches(s, one_node, prompts);
  EXPECT_EQ(m->first.tokens() + m->second.tokens(), prompts.tokens());
}

}  // namespace
}  // namespace duplex::compiler
