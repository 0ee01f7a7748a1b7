#include "duplex/compiler/placement.hpp"
#include "compile_helper.hpp"

#include <cstdlib>
#include <fstream>
#include <gtest/gtest.h>
#include <sstream>

#include "duplex/compiler/lower.hpp"
#include "duplex/compiler/report.hpp"

namespace duplex::compiler {
namespace {

using testing::compile;
using testing::Compiled;

Unit unit_of(const ExecutionPlan& p, OpKind k, int layer = 0) {
  for (std::size_t i = 0; i < p.graph.ops.size(); ++i)
    if (p.graph.ops[i].kind == k && p.graph.ops[i].layer == layer) return p.find(i)->unit;
  ADD_FAILURE() << "no op " << op_kind_name(k);
  return Unit::kLink;
}

TEST(Placement, DuplexSendsDecodeAttentionAndDecodeExpertsToPimAndFcToXpu) {
  const auto c = compile("mixtral-8x7b", "duplex", BatchState::decode_batch(64, 2048));
  EXPECT_EQ(unit_of(c.plan, OpKind::kAttentionDecode), Unit::kPim);
  EXPECT_EQ(unit_of(c.plan, OpKind::kExpertFfn), Unit::kPim);
  EXPECT_EQ(unit_of(c.plan, OpKind::kQkvProj), Unit::kXpu);
  EXPECT_EQ(unit_of(c.plan, OpKind::kOProj), Unit::kXpu);
  EXPECT_EQ(unit_of(c.plan, OpKind::kRouter), Unit::kXpu);
  EXPECT_EQ(unit_of(c.plan, OpKind::kLmHead, -1), Unit::kXpu);
}

TEST(Placement, MixedStageSendsPrefillAttentionAndExpertsToXpu) {
  const auto c = compile("mixtral-8x7b", "duplex", BatchState::decode_batch(64, 2048, 2048));
  EXPECT_EQ(unit_of(c.plan, OpKind::kAttentionPrefill), Unit::kXpu);
  EXPECT_EQ(unit_of(c.plan, OpKind::kAttentionDecode), Unit::kPim);  // decode requests' attention in a mixed step
  EXPECT_EQ(unit_of(c.plan, OpKind::kExpertFfn), Unit::kXpu);
  EXPECT_EQ(unit_of(c.plan, OpKind::kQkvProj), Unit::kXpu);
}

TEST(Placement, GpuSystemRunsEverythingOnTheXpu) {
  const auto c = compile("mixtral-8x7b", "gpu", BatchState::decode_batch(64, 2048));
  EXPECT_EQ(c.plan.busy(Unit::kPim), Time{});
}

TEST(Placement, PlacementBeatsOrTiesEitherUnitAloneOnEveryOp) {
  const auto c = compile("grok-1", "duplex", BatchState::decode_batch(32, 4096, 512));
  for (const auto& st : c.plan.stages)
    for (const auto& p : st.ops) {
      EXPECT_LE(p.time.si(), p.xpu_time.si() + 1e-15);
      if (p.pim_time) {
        EXPECT_LE(p.time.si(), p.pim_time->si() + 1e-15);
      }
    }
}

TEST(ExpertSplit, GreedyMovesFewestTokenExpertsUntilLanesBalance) {
  // Hand-computed: xPU times 4,4,4,4 (equal); PIM times 1,2,3,6; tokens ascending with PIM time.
  // Moves: {e0}: max(12,1)=12; {e0,e1}: max(8,3)=8; {e0,e1,e2}: max(4,6)=6; all: max(0,12)=12 -> best 3 on PIM.
  const std::vector<Time> x = {us(4), us(4), us(4), us(4)};
  const std::vector<std::optional<Time>> p = {us(1), us(2), us(3), us(6)};
  const auto split = split_experts(x, p, {1, 2, 3, 9});
  EXPECT_EQ(split, (std::vector<bool>{true, true, true, false}));
  // When the PIM is slower on every expert, nothing moves.
  const std::vector<std::optional<Time>> slow = {us(40), us(40), us(40), us(40)};
  EXPECT_EQ(split_experts(x, slow, {1, 2, 3, 9}), (std::vector<bool>(4, false)));
  // An expert the PIM cannot run stops the greedy there.
  const std::vector<std::optional<Time>> partial = {us(1), std::nullopt, us(1), us(1)};
  EXPECT_EQ(split_experts(x, partial, {1, 2, 3, 9}), (std::vector<bool>{true, false, false, false}));
}

TEST(ExpertSplit, DuplexPeUsesBothUnitsInOneMoeLayerOfAMixedStep) {
  // Mixed step on one device: all 8 experts local, skewed routing so expert times differ.
  const ModelSpec m = load_model("mixtral-8x7b");
  const SystemSpec s = load_system("duplex-pe");
  const auto layout = ParallelLayout::make(m, s, 1);
  Routing r;
  r.kind = Routing::Kind::kZipf;
  r.zipf_s = 1.5;
  const ExecutionPlan plan = place(lower(m, BatchState::decode_batch(32, 1024, 256), layout, r), CostModel(s, layout));
  bool found = false;
  for (const auto& st : plan.stages) {
    bool has_expert = false;
    for (const auto& p : st.ops) has_expert = has_expert || plan.graph.ops[p.op].kind == OpKind::kExpertFfn;
    if (has_expert && st.coprocessed) {
      found = true;
      EXPECT_GT(st.lane(Unit::kXpu), Time{});
      EXPECT_GT(st.lane(Unit::kPim), Time{});
      // The split is no slower than all-xPU.
      Time all_xpu;
      for (const auto& p : st.ops) all_xpu += p.xpu_time;
      EXPECT_LE(st.time(), all_xpu);
    }
  }
  EXPECT_TRUE(found);
  // And the co-processed plan is faster than the one-unit-at-a-time plan.
  const SystemSpec d = load_system("duplex");
  const ExecutionPlan serial = place(lower(m, BatchState::decode_batch(32, 1024, 256), layout, r), CostModel(d, layout));
  EXPECT_LT(plan.total(), serial.total());
}

TEST(AttentionCoprocessing, PrefillAndDecodeAttentionShareAStage) {
  const auto c = compile("mixtral-8x7b", "duplex-pe", BatchState::decode_batch(64, 2048, 2048));
  int shared = 0;
  for (const auto& st : c.plan.stages) {
    bool pre = false, dec = false;
    for (const auto& p : st.ops) {
      pre = pre || (c.plan.graph.ops[p.op].kind == OpKind::kAttentionPrefill && p.unit == Unit::kXpu);
      dec = dec || (c.plan.graph.ops[p.op].kind == OpKind::kAttentionDecode && p.unit == Unit::kPim);
    }
    shared += pre && dec;
  }
  EXPECT_EQ(shared, c.model.layers);
}

// Golden text dump: the IR text of tiny-moe on duplex-pe for a small mixed batch whose 24-token prompt
// completes (so each layer has its K/V migration). Regenerate with DUPLEX_UPDATE_GOLDEN=1 after an intended
// change, and review the diff.
TEST(Golden, TinyMoeMixedStepPlanText) {
  BatchState b;
  b.groups = {{3, 17, 1, false}, {1, 0, 24, true}};
  const auto c = compile("tiny-moe", "duplex-pe", b, 1);
  const std::string text = dump_graph(c.plan.graph) + dump_plan(c.plan);
  const std::string path = std::string(DUPLEX_TEST_SOURCE_DIR) + "/golden/tiny_moe_duplex_pe.txt";
  if (std::getenv("DUPLEX_UPDATE_GOLDEN")) {
    std::ofstream(path) << text;
    GTEST_SKIP() << "golden file rewritten: " << path;
  }
  std::ifstream in(path);
  ASSERT_TRUE(in) << "missing golden file " << path << " (run with DUPLEX_UPDATE_GOLDEN=1 to create it)";
  std::stringstream expected;
  expected << in.rdbuf();
  EXPECT_EQ(text, expected.str());
}

}  // namespace
}  // namespace duplex::compiler
