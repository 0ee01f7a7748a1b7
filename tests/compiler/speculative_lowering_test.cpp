// Lowering a speculative verification (RequestGroup::verify): decoding requests computing their last token
// plus drafts. Every projection and the LM head run over all the tokens; attention is decode attention with
// the tokens as query rows over each request's cached context, which placement may give to the Logic-PIM,
// where the same tokens as a prefill chunk would be prefill attention on the xPU.
#include <gtest/gtest.h>

#include "duplex/compiler/cost_model.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/compiler/placement.hpp"

namespace duplex::compiler {
namespace {

const Op* find(const Graph& g, OpKind kind, int layer) {
  for (const Op& op : g.ops)
    if (op.kind == kind && op.layer == layer) return &op;
  return nullptr;
}

TEST(SpeculativeLowering, VerificationIsDecodeAttentionOverEveryToken) {
  const ModelSpec m = load_model("llama3-70b");
  const SystemSpec sys = load_system("duplex-pe");
  const ParallelLayout layout = ParallelLayout::make(m, sys, 4);
  BatchState verify, chunk, decode = BatchState::decode_batch(16, 2048);
  verify.groups.push_back({16, 2048, 4, false, true});
  chunk.groups.push_back({16, 2048, 4, false, false});
  EXPECT_EQ(verify.decode_requests(), 16);
  EXPECT_EQ(verify.prefill_tokens(), 0);
  EXPECT_EQ(chunk.prefill_tokens(), 64);
  const Graph g = lower(m, verify, layout, Routing{});
  const Graph c = lower(m, chunk, layout, Routing{});
  const Graph d = lower(m, decode, layout, Routing{});
  const Op* attn = find(g, OpKind::kAttentionDecode, 0);
  ASSERT_NE(attn, nullptr);
  EXPECT_EQ(find(g, OpKind::kAttentionPrefill, 0), nullptr);
  EXPECT_EQ(attn->requests, 16);
  EXPECT_EQ(attn->query_tokens, 64);
  // The same FLOPs as the chunk's prefill attention (4 causal rows over 2048 + 1..4 keys), 4x a decode's
  // nearly; the K/V read once per request, with 4 tokens written instead of 1.
  const Op* pre = find(c, OpKind::kAttentionPrefill, 0);
  ASSERT_NE(pre, nullptr);
  EXPECT_DOUBLE_EQ(attn->flops, pre->flops);
  const Op* one = find(d, OpKind::kAttentionDecode, 0);
  EXPECT_NEAR(attn->flops / one->flops, 4.0, 0.01);
  EXPECT_LT(attn->bytes_kv, 1.01 * one->bytes_kv);
  EXPECT_GT(attn->bytes_kv, one->bytes_kv);
  // Projections over 64 tokens; logits for every token (each draft is checked against them).
  EXPECT_EQ(find(g, OpKind::kQkvProj, 0)->m, 64);
  EXPECT_EQ(find(g, OpKind::kLmHead, -1)->m, 64);
  EXPECT_EQ(find(c, OpKind::kLmHead, -1)->m, 16);
  // Duplex places the verification's attention on the Logic-PIM, the chunk's on the xPU.
  const CostModel cost(sys, layout);
  EXPECT_TRUE(cost.pim_supports(*attn));
  EXPECT_FALSE(cost.pim_supports(*pre));
  const ExecutionPlan placed = place(g, cost);
  const auto index = static_cast<std::size_t>(attn - g.ops.data());
  ASSERT_NE(placed.find(index), nullptr);
  EXPECT_EQ(placed.find(index)->unit, Unit::kPim);
}

}  // namespace
}  // namespace duplex::compiler
