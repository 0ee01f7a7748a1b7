// BankGroup-PIM and the heterogeneous GPU + PIM-device system in the compiler: placement by data location and
// the GPU <-> PIM-device transfers lowering adds (hand-computed on tiny-moe).
#include <gtest/gtest.h>
#include <string>
#include <vector>

#include "duplex/base/error.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/compiler/placement.hpp"
#include "compile_helper.hpp"

namespace duplex::compiler {
namespace {

using testing::compile;
using testing::Compiled;

// Every op of `kind` (any layer) ran on `unit`; at least one such op exists.
void expect_all_on(const ExecutionPlan& p, OpKind kind, Unit unit) {
  int seen = 0;
  for (std::size_t i = 0; i < p.graph.ops.size(); ++i) {
    if (p.graph.ops[i].kind != kind) continue;
    ++seen;
    EXPECT_EQ(p.find(i)->unit, unit) << p.graph.ops[i].name;
  }
  EXPECT_GT(seen, 0) << "no op " << op_kind_name(kind);
}

const Op& op_named(const ExecutionPlan& p, const std::string& name) {
  for (const auto& o : p.graph.ops)
    if (o.name == name) return o;
  throw Error("no op " + name);
}

TEST(BankGroupPim, PlacesEveryOpLikeDuplexPe) {
  for (const auto& batch : {BatchState::decode_batch(64, 2048), BatchState::decode_batch(64, 2048, 2048)}) {
    const auto bg = compile("mixtral-8x7b", "bankgroup-pim", batch);
    const auto pe = compile("mixtral-8x7b", "duplex-pe", batch);
    // Duplex-PE's ops but its K/V migrations: BankGroup-PIM has no Logic-PIM memory spaces (lower.hpp).
    std::vector<std::size_t> pe_ops;
    for (std::size_t j = 0; j < pe.plan.graph.ops.size(); ++j)
      if (pe.plan.graph.ops[j].kind != OpKind::kKvMigration) pe_ops.push_back(j);
    ASSERT_EQ(bg.plan.graph.ops.size(), pe_ops.size());
    EXPECT_GT(bg.plan.busy(Unit::kPim), Time{});
    for (std::size_t i = 0; i < bg.plan.graph.ops.size(); ++i) {
      EXPECT_EQ(bg.plan.graph.ops[i].name, pe.plan.graph.ops[pe_ops[i]].name);
      EXPECT_EQ(bg.plan.find(i)->unit, pe.plan.find(pe_ops[i])->unit) << bg.plan.graph.ops[i].name;
      EXPECT_EQ(bg.plan.find(i)->time, pe.plan.find(pe_ops[i])->time) << bg.plan.graph.ops[i].name;
    }
  }
}

TEST(Heterogeneous, DataLocationForcesPlacementWhereDuplexWouldChooseTheXpu) {
  // A prefill-heavy mixed step: Duplex runs the experts on the xPU (placement_test), the heterogeneous system
  // cannot - their weights are only on the PIM devices.
  const BatchState batch = BatchState::decode_batch(64, 2048, 2048);
  const auto duplex = compile("mixtral-8x7b", "duplex", batch);
  expect_all_on(duplex.plan, OpKind::kExpertFfn, Unit::kXpu);
  const auto h = compile("mixtral-8x7b", "gpu-pim-hetero", batch);
  expect_all_on(h.plan, OpKind::kExpertFfn, Unit::kPim);
  expect_all_on(h.plan, OpKind::kAttentionDecode, Unit::kPim);
  expect_all_on(h.plan, OpKind::kAttentionPrefill, Unit::kXpu);
  expect_all_on(h.plan, OpKind::kQkvProj, Unit::kXpu);
  expect_all_on(h.plan, OpKind::kOProj, Unit::kXpu);
  expect_all_on(h.plan, OpKind::kRouter, Unit::kXpu);
  expect_all_on(h.plan, OpKind::kPimTransfer, Unit::kLink);
  // The GPU-resident ops have no PIM alternative at all.
  for (std::size_t i = 0; i < h.plan.graph.ops.size(); ++i) {
    if (h.plan.find(i)->unit == Unit::kXpu) {
      EXPECT_FALSE(h.plan.find(i)->pim_time.has_value()) << h.plan.graph.ops[i].name;
    }
  }
}

TEST(Heterogeneous, TransfersPerLayerMatchTheHandComputedBytes) {
  // tiny-moe on one GPU: hidden 256, 8 q heads / 2 kv heads of 32, 8 experts top-2, FP16.
  // 4 decode requests + one 16-token prefill = 20 tokens.
  //   to_pim_attn   = 4 x (256 q + 128 k,v) x 2 B + 16 x 128 k,v x 2 B = 3072 + 4096 = 7168 B
  //   from_pim_attn = 4 x 256 x 2 B = 2048 B
  //   to/from_pim_experts = 20 tokens x top-2 x 256 x 2 B = 20480 B
  const auto h = compile("tiny-moe", "gpu-pim-hetero", BatchState::decode_batch(4, 100, 16), 1);
  for (int l = 0; l < 2; ++l) {
    const std::string p = "L" + std::to_string(l) + ".";
    EXPECT_DOUBLE_EQ(op_named(h.plan, p + "to_pim_attn").link_bytes, 7168);
    EXPECT_DOUBLE_EQ(op_named(h.plan, p + "from_pim_attn").link_bytes, 2048);
    EXPECT_DOUBLE_EQ(op_named(h.plan, p + "to_pim_experts").link_bytes, 20480);
    EXPECT_DOUBLE_EQ(op_named(h.plan, p + "from_pim_experts").link_bytes, 20480);
  }
  double link_bytes = 0;
  for (const auto& o : h.plan.graph.ops) link_bytes += o.link_bytes;
  EXPECT_DOUBLE_EQ(link_bytes, 2 * (7168 + 2048 + 2 * 20480));
  // Each transfer is one NVLink hop: bytes / 450 GB/s + 2 us (devices/links.yaml).
  const Op& to = op_named(h.plan, "L0.to_pim_experts");
  std::size_t idx = 0;
  while (&h.plan.graph.ops[idx] != &to) ++idx;
  EXPECT_NEAR(h.plan.find(idx)->time.si(), 20480 / 450e9 + 2e-6, 1e-15);

  // The same model on a Duplex device crosses no link at all (one device, no collectives).
  const auto d = compile("tiny-moe", "duplex-pe", BatchState::decode_batch(4, 100, 16), 1);
  for (const auto& o : d.plan.graph.ops) EXPECT_EQ(o.link_bytes, 0) << o.name;
}

TEST(Heterogeneous, TransfersFollowTheTensorParallelShare) {
  // tiny-moe on 4 GPUs: 2 q heads and 1 kv head per GPU, 2 local experts (0 and 1).
  // Decode-only, 8 requests: uniform routing gives 8 x 2 / 8 = 2 tokens per expert -> 4 local tokens.
  const auto h = compile("tiny-moe", "gpu-pim-hetero", BatchState::decode_batch(8, 50), 4);
  EXPECT_DOUBLE_EQ(op_named(h.plan, "L0.to_pim_attn").link_bytes, 8 * (64 + 64) * 2);
  EXPECT_DOUBLE_EQ(op_named(h.plan, "L0.from_pim_attn").link_bytes, 8 * 64 * 2);
  EXPECT_DOUBLE_EQ(op_named(h.plan, "L0.to_pim_experts").link_bytes, 4 * 256 * 2);
}

TEST(Heterogeneous, AcrossNodesTokensCrossInfinibandGpuToGpuThenNvlinkToThePimDevices) {
  // tiny-moe on 16 GPUs (+ 16 PIM devices): two nodes of 8, TP8 x DP2, EP8 with each expert in 2 shards.
  // Decode-only, 8 requests: 4 per replica; uniform routing over all 8 tokens: 2 per expert.
  const auto h = compile("tiny-moe", "gpu-pim-hetero", BatchState::decode_batch(8, 50), 16);
  ASSERT_EQ(h.layout.nodes, 2);
  auto time_of = [&](const std::string& name) {
    const Op& o = op_named(h.plan, name);
    std::size_t idx = 0;
    while (&h.plan.graph.ops[idx] != &o) ++idx;
    EXPECT_EQ(h.plan.find(idx)->unit, Unit::kLink) << name;
    return h.plan.find(idx)->time.si();
  };
  for (int l = 0; l < 2; ++l) {
    const std::string p = "L" + std::to_string(l) + ".";
    // All-to-all GPU to GPU: the node's 4 tokens x top-2 rows x 256 x 2 B, sent 1/8 by each of its 8 GPUs;
    // half of that leaves the node over InfiniBand (one step of 50 GB/s + 5 us, devices/links.yaml), and the
    // receiving GPU forwards it to the expert's second shard over NVLink (one step of 450 GB/s + 2 us) as it
    // arrives: the longer of the two.
    for (const char* a2a : {"dispatch", "combine"}) {
      const Op& o = op_named(h.plan, p + a2a);
      EXPECT_DOUBLE_EQ(o.link_bytes - o.link_bytes_in_node, 4 * 2 * 256 * 2 / 8 / 2.0);
      EXPECT_DOUBLE_EQ(o.link_bytes_in_node, 4 * 2 * 256 * 2 / 8 / 2.0);
      EXPECT_NEAR(time_of(p + a2a), 256 / 50e9 + 5e-6, 1e-15);
    }
    // Then this GPU's expert shard's 2 tokens, from both nodes, to its PIM device and back over NVLink.
    EXPECT_DOUBLE_EQ(op_named(h.plan, p + "to_pim_experts").link_bytes, 2 * 256 * 2);
    EXPECT_DOUBLE_EQ(op_named(h.plan, p + "from_pim_experts").link_bytes, 2 * 256 * 2);
    EXPECT_NEAR(time_of(p + "to_pim_experts"), 1024 / 450e9 + 2e-6, 1e-15);
    // Attention: this replica's 4 decode tokens, 1 q head and 1 kv head of 32 per GPU.
    EXPECT_DOUBLE_EQ(op_named(h.plan, p + "to_pim_attn").link_bytes, 4 * (32 + 64) * 2);
    EXPECT_DOUBLE_EQ(op_named(h.plan, p + "from_pim_attn").link_bytes, 4 * 32 * 2);
  }
  // The order inside an MoE layer: the tokens reach the other node before the PIM devices and come back after.
  std::vector<std::string> moe;
  for (const auto& o : h.plan.graph.ops)
    if (o.layer == 0 && (o.kind == OpKind::kAllToAll || o.kind == OpKind::kPimTransfer || o.kind == OpKind::kExpertFfn))
      moe.push_back(o.name);
  EXPECT_EQ(moe, (std::vector<std::string>{"L0.to_pim_attn", "L0.from_pim_attn", "L0.dispatch", "L0.to_pim_experts",
                                           "L0.expert0", "L0.from_pim_experts", "L0.combine"}));
  // One node (8 GPUs) has no all-to-all: every expert's tokens are already on each GPU of the node.
  for (const auto& o : compile("tiny-moe", "gpu-pim-hetero", BatchState::decode_batch(8, 50), 8).plan.graph.ops)
    EXPECT_NE(o.kind, OpKind::kAllToAll) << o.name;
  // The paper's Grok-1 deployment, two nodes of eight, lowers with the same ops.
  const auto g = compile("grok-1", "gpu-pim-hetero", BatchState::decode_batch(64, 1024, 512), 16);
  EXPECT_EQ(g.layout.nodes, 2);
  expect_all_on(g.plan, OpKind::kExpertFfn, Unit::kPim);
  expect_all_on(g.plan, OpKind::kAttentionDecode, Unit::kPim);
  expect_all_on(g.plan, OpKind::kAllToAll, Unit::kLink);
}

}  // namespace
}  // namespace duplex::compiler
