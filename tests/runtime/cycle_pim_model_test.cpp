#include "duplex/runtime/sim/cycle_pim_model.hpp"

#include <cmath>
#include <cstdio>
#include <gtest/gtest.h>

#include "duplex/base/error.hpp"
#include "duplex/compiler/cost_model.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/sysc/pim_timing.hpp"

namespace duplex::runtime {
namespace {

TEST(CyclePimModel, AgreesWithTheAnalyticalModelOnAMixtralDecodeStep) {
  // Bound: each PIM op of a Mixtral decode step (4 devices, batch 64, context 2048) within 25% of the
  // analytical roofline. The cycle model adds what the roofline leaves out (row activations and refresh on
  // the bundle path, pipeline fill, write-back, per-stack rounding), so it must never be faster than the
  // roofline by more than the roofline's own rounding (1%).
  const auto model = compiler::load_model("mixtral-8x7b");
  const auto sys = load_system("duplex");
  const auto layout = compiler::ParallelLayout::make(model, sys, 4);
  const compiler::CostModel analytical(sys, layout);
  CyclePimModel cycle(sys);
  const auto g = compiler::lower(model, compiler::BatchState::decode_batch(64, 2048), layout, compiler::Routing{});
  int checked = 0;
  for (const auto& op : g.ops) {
    if (!analytical.pim_supports(op) || op.layer != 0) continue;
    const double a = analytical.analytical_pim_time(op).si();
    const double c = cycle.time(op).si();
    EXPECT_GT(c, 0.99 * a) << op.name;
    EXPECT_LT(c, 1.25 * a) << op.name << " cycle " << c * 1e6 << " us vs analytical " << a * 1e6 << " us";
    ++checked;
  }
  EXPECT_GE(checked, 5);  // qkv, attention, o-proj, 2 experts
}

// Contexts longer than one attention op takes (group 4: 131072 B of softmax buffer / (4 x 2 B) = 16384 tokens)
// run in equal passes, each its own op (with its dispatch), plus a merge of the partials that costs a fraction
// of a pass; the time grows across the pass boundary.
TEST(CyclePimModel, LongContextsRunInPassesOverTheSoftmaxBuffer) {
  const auto model = compiler::load_model("mixtral-8x7b");
  const auto sys = load_system("duplex");
  const auto layout = compiler::ParallelLayout::make(model, sys, 4);
  CyclePimModel cycle(sys);
  // The layer-0 decode attention of 8 requests that each attend to `context` tokens (the new one included).
  auto attention_over = [&](std::int64_t context) {
    const auto g =
        compiler::lower(model, compiler::BatchState::decode_batch(8, context - 1), layout, compiler::Routing{});
    for (const auto& op : g.ops)
      if (op.kind == compiler::OpKind::kAttentionDecode && op.layer == 0) {
        EXPECT_EQ(op.context_tokens, 8 * context);
        return op;
      }
    ADD_FAILURE() << "no decode attention op";
    return g.ops.front();
  };
  const std::int64_t limit = sysc::max_attention_context(*sys.pim, 4);
  ASSERT_EQ(limit, 16384);
  const double one = cycle.time(attention_over(limit)).si();
  const double past = cycle.time(attention_over(limit + 1)).si();
  const double two = cycle.time(attention_over(2 * limit)).si();
  EXPECT_GT(past, one);
  // The merge: one more op, mostly its dispatch latency (2 us, devices/logic-pim.yaml command_latency).
  const double merge = two - 2.0 * one;
  EXPECT_GT(merge, sys.pim->command_latency.si());
  EXPECT_LT(merge, 0.25 * one);
}

compiler::Op decode_attention_op() {
  compiler::Op op;
  op.kind = compiler::OpKind::kAttentionDecode;
  op.q_heads = 8;
  op.kv_heads = 2;
  op.head_dim = 128;
  return op;
}

// Gemma 2's soft-capped scores pass the softmax unit's cap stages: a capped decode attention op takes longer
// than the same op uncapped (the op's softcap flag reaches the SystemC timing).
TEST(CyclePimModel, SoftcappedAttentionAddsTheCapStages) {
  const auto sys = load_system("duplex");
  CyclePimModel cycle(sys);
  compiler::Op op = decode_attention_op();  // 8 query heads, 2 KV heads of 128
  op.requests = 16;
  op.context_tokens = 16 * 1000;
  const double plain = cycle.time(op).si();
  op.softcap = true;
  const double capped = cycle.time(op).si();
  EXPECT_GT(capped, plain);
  EXPECT_GT(cycle.attention_exact(4, 4, 1000, 128, true).si(), cycle.attention_exact(4, 4, 1000, 128).si());
}

// Attention sinks (gpt-oss): the op's flag reaches the SystemC timing as its own shape (memoized apart from
// the plain op's); the unit folds a sink into its max and sum passes at no cycle (pim::timing::
// kSoftmaxSinkCycles), and its reads with q cost at least nothing.
TEST(CyclePimModel, AttentionSinksAreTimedAsTheirOwnShape) {
  const auto sys = load_system("duplex");
  CyclePimModel cycle(sys);
  compiler::Op op = decode_attention_op();
  op.requests = 16;
  op.context_tokens = 16 * 1000;
  const double plain = cycle.time(op).si();
  const std::size_t entries = cycle.cache_size();
  op.sinks = true;
  const double with_sinks = cycle.time(op).si();
  EXPECT_GT(cycle.cache_size(), entries);
  EXPECT_GE(with_sinks, plain);
  EXPECT_LT(with_sinks, 1.01 * plain);
}

// Expert biases (gpt-oss, Op::bias from lowering): each GEMV of the FFN reads its rows' biases with the
// weights (its own memoized shape); the lane adds them at no cycle, so the op costs at least as much and at
// most a little more (an expert of gpt-oss-20b's shape, 2880 -> 2880, 8 tokens).
TEST(CyclePimModel, ExpertBiasesAreTimedAsTheirOwnShape) {
  const auto sys = load_system("duplex");
  CyclePimModel cycle(sys);
  compiler::Op e;
  e.kind = compiler::OpKind::kExpertFfn;
  e.m = 8;
  e.n = 2880;
  e.k = 2880;
  e.matrices = 3;
  const double plain = cycle.time(e).si();
  const std::size_t entries = cycle.cache_size();
  e.bias = true;
  const double with_bias = cycle.time(e).si();
  EXPECT_GT(cycle.cache_size(), entries);
  EXPECT_GE(with_bias, plain);
  EXPECT_LT(with_bias, 1.01 * plain);
  // Lowering marks gpt-oss's experts (mlp_bias) and no other model's.
  for (const char* model : {"tiny-gpt-oss", "tiny-moe"}) {
    const compiler::ModelSpec m = compiler::load_model(model);
    const compiler::Graph g = compiler::lower(m, compiler::BatchState::decode_batch(8, 64),
                                              compiler::ParallelLayout::make(m, sys, 1), compiler::Routing{});
    for (const compiler::Op& o : g.ops) {
      if (o.kind == compiler::OpKind::kExpertFfn) {
        EXPECT_EQ(o.bias, m.mlp_bias) << model << " " << o.name;
      }
    }
  }
}

// The lowering gives each weight GEMM its weights' dtype (gpt-oss's MXFP4 experts, 4.25 bits) and each
// attention its KV cache's; the cycle model streams those bytes. gpt-oss-20b's MXFP4 decode experts are
// faster than in BF16 on the Logic-PIM (their weight stream is 3.8x shorter; the activation and each GEMV's
// dispatch are not). An FP8 KV cache shortens Mixtral's decode attention, though by less than half its
// stream: the softmax unit, sized for the FP16 stream, then bounds it (7 groups of 4 heads x 1025 tokens per
// stack: K / V read in 1.08 us, the softmax 1.08 us, down from 1.47 us read at FP16).
TEST(CyclePimModel, WeightAndKvFormatsSetTheBytesStreamed) {
  const auto sys = load_system("duplex");
  CyclePimModel cycle(sys);
  auto layer0 = [&](const compiler::ModelSpec& m, compiler::OpKind kind) {
    const compiler::Graph g = compiler::lower(m, compiler::BatchState::decode_batch(16, 1024),
                                              compiler::ParallelLayout::make(m, sys, 4), compiler::Routing{});
    for (const compiler::Op& o : g.ops)
      if (o.kind == kind && o.layer == 0) return o;
    ADD_FAILURE() << "no " << compiler::op_kind_name(kind) << " op";
    return g.ops.front();
  };
  compiler::ModelSpec mxfp4 = compiler::load_model("gpt-oss-20b");
  ASSERT_EQ(mxfp4.expert_dtype, compiler::DType::kMxfp4);
  compiler::ModelSpec bf16 = mxfp4;
  bf16.expert_dtype = compiler::DType::kBf16;
  const compiler::Op small = layer0(mxfp4, compiler::OpKind::kExpertFfn);
  const compiler::Op wide = layer0(bf16, compiler::OpKind::kExpertFfn);
  EXPECT_EQ(small.dtype, compiler::DType::kMxfp4);
  EXPECT_EQ(wide.dtype, compiler::DType::kBf16);
  EXPECT_EQ(small.m, wide.m);
  EXPECT_LT(cycle.time(small).si(), 0.8 * cycle.time(wide).si());
  // Attention and projections keep the model's formats.
  EXPECT_EQ(layer0(mxfp4, compiler::OpKind::kQkvProj).dtype, compiler::DType::kBf16);
  const compiler::ModelSpec mixtral = compiler::load_model("mixtral-8x7b");
  compiler::ModelSpec fp8_kv = mixtral;
  fp8_kv.kv_dtype = compiler::DType::kFp8;
  const compiler::Op kv16 = layer0(mixtral, compiler::OpKind::kAttentionDecode);
  const compiler::Op kv8 = layer0(fp8_kv, compiler::OpKind::kAttentionDecode);
  EXPECT_EQ(kv8.dtype, compiler::DType::kFp8);
  EXPECT_LT(cycle.time(kv8).si(), 0.95 * cycle.time(kv16).si());
}

TEST(CyclePimModel, GridInterpolationErrorIsBelowTwoPercent) {
  // Measured max error on this grid: see the printed table; the bound below is what the model promises.
  const auto sys = load_system("duplex");
  CyclePimModel cycle(sys);
  compiler::Op op = decode_attention_op();  // 8 query heads, 2 KV heads of 128
  for (std::int64_t requests : {10, 53, 100}) {
    op.requests = requests;
    const std::int64_t groups = (requests * 2 + 4) / 5;
    for (std::int64_t ctx : {100, 700, 1500, 3000, 5000, 9000}) {
      op.context_tokens = op.requests * ctx;
      const double bucketed = cycle.time(op).si();
      const double exact = cycle.attention_exact(groups, 4, ctx, 128).si();
      EXPECT_NEAR(bucketed, exact, 0.02 * exact) << "groups " << groups << " context " << ctx;
      std::printf("attention groups %lld ctx %lld: interpolated %.4f exact %.4f us\n", static_cast<long long>(groups),
                  static_cast<long long>(ctx), bucketed * 1e6, exact * 1e6);
    }
  }
  compiler::Op e;
  e.kind = compiler::OpKind::kExpertFfn;
  e.n = 14336;
  e.k = 4096;
  e.matrices = 3;
  for (std::int64_t tokens : {5, 17, 21, 29, 41, 57, 77, 100}) {
    e.m = tokens;
    const double interpolated = cycle.time(e).si();
    CyclePimModel fresh(sys);
    const double exact = fresh.gemv_exact(tokens, 2 * 14336 / 5 + 1, 4096).si() +
                         fresh.activation_exact(tokens * (14336 / 5 + 1)).si() +
                         fresh.gemv_exact(tokens, 4096, 14336 / 5 + 1).si();
    EXPECT_NEAR(interpolated, exact, 0.02 * exact) << "tokens " << tokens;
  }
}

// A Mixtral expert (gated FFN, 4096 -> 14336) over `tokens` tokens.
compiler::Op mixtral_expert(std::int64_t tokens) {
  compiler::Op op;
  op.kind = compiler::OpKind::kExpertFfn;
  op.m = tokens;
  op.n = 14336;
  op.k = 4096;
  op.matrices = 3;
  return op;
}

TEST(CyclePimModel, RepeatedShapesAreNotSimulatedAgain) {
  const auto sys = load_system("duplex");
  CyclePimModel cycle(sys);
  const compiler::Op op = mixtral_expert(16);
  const Time first = cycle.time(op);
  const auto simulated = cycle.simulated_ops();
  EXPECT_EQ(cycle.time(op), first);
  EXPECT_EQ(cycle.simulated_ops(), simulated);
}

// Models sharing a memo time each shape once between them, with the same results; memos are per system.
TEST(CyclePimModel, ASharedMemoServesEveryModelOfTheSameSystem) {
  const auto sys = load_system("duplex");
  const compiler::Op op = mixtral_expert(12);
  PimTimingMemos memos;
  const auto memo = memos.for_system(sys);
  ASSERT_NE(memo, nullptr);
  EXPECT_EQ(memos.for_system(load_system("duplex")), memo);     // same resolved config, same memo
  EXPECT_NE(memos.for_system(load_system("duplex-pe")), memo);  // another config, another memo
  SystemSpec built = sys;
  built.resolved_yaml.clear();
  EXPECT_EQ(memos.for_system(built), nullptr);  // no resolved config: no sharing
  CyclePimModel first(sys, memo), second(sys, memo), alone(sys);
  const Time t = first.time(op);
  EXPECT_GT(first.simulated_ops(), 0u);
  EXPECT_EQ(second.time(op), t);
  EXPECT_EQ(second.simulated_ops(), 0u);
  EXPECT_EQ(alone.time(op), t);
  EXPECT_EQ(second.cache_size(), first.cache_size());
}

TEST(CyclePimModel, BucketGrid) {
  EXPECT_EQ(CyclePimModel::context_bucket_below(100), 96);
  EXPECT_EQ(CyclePimModel::context_bucket_above(100), 128);
  EXPECT_EQ(CyclePimModel::context_bucket_below(128), 128);
  EXPECT_EQ(CyclePimModel::context_bucket_above(128), 128);
  EXPECT_EQ(CyclePimModel::context_bucket_below(3000), 2944);  // step 2048 / 32 = 64
  EXPECT_EQ(CyclePimModel::context_bucket_above(3000), 3008);
  EXPECT_EQ(CyclePimModel::grid_below(22), 20);
  EXPECT_EQ(CyclePimModel::grid_above(22), 24);
  EXPECT_EQ(CyclePimModel::grid_below(24), 24);
  EXPECT_EQ(CyclePimModel::grid_above(30), 32);
  EXPECT_EQ(CyclePimModel::grid_above(33), 40);
  EXPECT_EQ(CyclePimModel::grid_above(7), 7);
  EXPECT_THROW(CyclePimModel(load_system("bank-pim")), Error);
}

}  // namespace
}  // namespace duplex::runtime
