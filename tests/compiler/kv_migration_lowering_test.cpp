// In-device K/V migration (DUPLEX.md s.6 memory spaces): lowering adds one kv_migration op per layer on
// Logic-PIM systems in the step that completes a prefill; the cost model times it as a memory-bound xPU copy and
// placement keeps it on the xPU (with attention co-processing: in the attention stage's xPU lane).
#include <gtest/gtest.h>

#include "compile_helper.hpp"

namespace duplex::compiler {
namespace {

using testing::compile;

std::vector<const Op*> of_kind(const Graph& g, OpKind k) {
  std::vector<const Op*> out;
  for (const auto& o : g.ops)
    if (o.kind == k) out.push_back(&o);
  return out;
}

// A step of 64 decodes at context 2048 plus a request whose prefill completes with a 512-token chunk at
// context 1536 (a chunked prompt of 2048 tokens): the migration moves all 2048 prompt tokens.
BatchState completing_step(bool completes) {
  BatchState b = BatchState::decode_batch(64, 2048);
  b.groups.push_back({1, 1536, 512, completes});
  return b;
}

TEST(KvMigrationLowering, OnePerLayerWithThePromptsKvBytesOnTheXpu) {
  for (const int devices : {1, 4}) {
    const auto c = compile("mixtral-8x7b", "duplex-pe", completing_step(true), devices);
    const auto ops = of_kind(c.plan.graph, OpKind::kKvMigration);
    ASSERT_EQ(static_cast<int>(ops.size()), c.model.layers) << devices;
    const int kv_heads_here = c.model.kv_heads / c.layout.tp;  // the KV heads one device holds
    // read + write x (K + V) x this device's heads x head_dim x 2 B x 2048 prompt tokens
    const double expected = 2.0 * 2.0 * kv_heads_here * c.model.head_dim * 2.0 * 2048;
    const CostModel cost(c.system, c.layout);
    for (const Op* op : ops) {
      EXPECT_EQ(op->name, "L" + std::to_string(op->layer) + ".kv_migration");
      EXPECT_EQ(op->flops, 0.0);
      EXPECT_EQ(op->bytes_kv, expected);
      EXPECT_EQ(op->bytes(), expected);
      EXPECT_EQ(op->m, 1);     // requests
      EXPECT_EQ(op->n, 2048);  // prompt tokens
      EXPECT_FALSE(cost.pim_time(*op).has_value());
      const auto* planned = c.plan.find(static_cast<std::size_t>(op - c.plan.graph.ops.data()));
      ASSERT_NE(planned, nullptr);
      EXPECT_EQ(planned->unit, Unit::kXpu);
      const Time memory_bound = transfer_time(expected, c.system.memory_bandwidth() * c.system.xpu.memory_efficiency) +
                                c.system.xpu.launch_overhead;
      EXPECT_DOUBLE_EQ(planned->time.si(), memory_bound.si());
    }
  }
}

TEST(KvMigrationLowering, PrefixCachedContextIsNotMoved) {
  // The same completing chunk, 1024 of whose 1536 context tokens came from the prefix cache (in the KV spaces
  // from the start): only 512 earlier-chunk tokens + the 512 new ones migrate.
  BatchState b = BatchState::decode_batch(64, 2048);
  b.groups.push_back({.count = 1, .context = 1536, .tokens = 512, .completes_prefill = true, .cached = 1024});
  const auto c = compile("mixtral-8x7b", "duplex-pe", b);
  const auto ops = of_kind(c.plan.graph, OpKind::kKvMigration);
  ASSERT_EQ(static_cast<int>(ops.size()), c.model.layers);
  const int kv_heads_here = c.model.kv_heads / c.layout.tp;
  for (const Op* op : ops) {
    EXPECT_EQ(op->n, 1024);
    EXPECT_EQ(op->bytes_kv, 2.0 * 2.0 * kv_heads_here * c.model.head_dim * 2.0 * 1024);
  }
  // Attention still reads the whole context.
  const auto whole = compile("mixtral-8x7b", "duplex-pe", completing_step(true));
  const auto attention = [](const Graph& g) {
    double bytes = 0;
    for (const Op& o : g.ops)
      if (o.kind == OpKind::kAttentionPrefill) bytes += o.bytes_kv;
    return bytes;
  };
  EXPECT_EQ(attention(c.plan.graph), attention(whole.plan.graph));
}

TEST(KvMigrationLowering, SitsInTheCoprocessedAttentionStageXpuLane) {
  const auto c = compile("mixtral-8x7b", "duplex-pe", completing_step(true));
  int stages_with_migration = 0;
  for (const auto& st : c.plan.stages)
    for (const auto& p : st.ops)
      if (c.plan.graph.ops[p.op].kind == OpKind::kKvMigration) {
        ++stages_with_migration;
        EXPECT_TRUE(st.coprocessed);
        EXPECT_EQ(st.lane(Unit::kPim) > Time{}, true);  // decode attention runs on the PIM meanwhile
      }
  EXPECT_EQ(stages_with_migration, c.model.layers);
  // Without co-processing (duplex) it is an ordinary xPU op after attention.
  const auto d = compile("mixtral-8x7b", "duplex", completing_step(true));
  EXPECT_EQ(static_cast<int>(of_kind(d.plan.graph, OpKind::kKvMigration).size()), d.model.layers);
}

TEST(KvMigrationLowering, OnlyWhenAPrefillCompletesOnLogicPimDevices) {
  EXPECT_TRUE(of_kind(compile("mixtral-8x7b", "duplex-pe", completing_step(false)).plan.graph, OpKind::kKvMigration)
                  .empty());  // an earlier chunk: the prompt is not complete yet
  EXPECT_TRUE(of_kind(compile("mixtral-8x7b", "duplex-pe", BatchState::decode_batch(64, 2048)).plan.graph,
                      OpKind::kKvMigration)
                  .empty());
  for (const char* system : {"gpu", "bank-pim", "bankgroup-pim", "duplex-split", "gpu-pim-hetero"})
    EXPECT_TRUE(of_kind(compile("mixtral-8x7b", system, completing_step(true)).plan.graph, OpKind::kKvMigration).empty())
        << system;
  for (const char* system : {"duplex", "duplex-pe", "duplex-pe-et"}) {
    EXPECT_TRUE(LowerOptions::for_system(load_system(system)).kv_migration) << system;
    EXPECT_FALSE(
        of_kind(compile("mixtral-8x7b", system, completing_step(true)).plan.graph, OpKind::kKvMigration).empty())
        << system;
  }
}

TEST(KvMigrationLowering, CoversEveryCompletingRequest) {
  BatchState b;
  b.groups = {{3, 0, 100, true}, {2, 50, 30, true}, {4, 0, 64, false}, {8, 300, 1, false}};
  const auto c = compile("llama3-70b", "duplex-pe", b, 1);
  const auto ops = of_kind(c.plan.graph, OpKind::kKvMigration);
  ASSERT_EQ(static_cast<int>(ops.size()), c.model.layers);
  EXPECT_EQ(ops[0]->m, 5);
  EXPECT_EQ(ops[0]->n, 3 * 100 + 2 * 80);
  EXPECT_EQ(op_kind_name(OpKind::kKvMigration), "kv_migration");
  EXPECT_EQ(ops[0]->shape(), "5x460");
}

}  // namespace
}  // namespace duplex::compiler
