#include "duplex/compiler/lower.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "duplex/base/error.hpp"

namespace duplex::compiler {
namespace {

Graph lower_on(const std::string& model_name, const BatchState& b, const std::string& system = "duplex") {
  const ModelSpec m = load_model(model_name);
  const SystemSpec s = load_system(system);
  return lower(m, b, ParallelLayout::make(m, s, s.devices_for(m.name)), Routing{});
}

const Op& first_of(const Graph& g, OpKind k) {
  for (const auto& o : g.ops)
    if (o.kind == k) return o;
  throw Error("no op of that kind");
}

TEST(Lowering, DecodeAttentionOpPerByteIsTheGqaGroupSize) {
  const std::pair<const char*, double> cases[] = {
      {"mixtral-8x7b", 4}, {"llama3-70b", 8}, {"grok-1", 6}, {"opt-66b", 1}, {"glam", 1}};
  for (const auto& [model, group] : cases) {
    const Graph g = lower_on(model, BatchState::decode_batch(64, 2048));
    EXPECT_NEAR(first_of(g, OpKind::kAttentionDecode).op_b(), group, 0.1 * group) << model;
  }
}

// Sliding-window attention: a decode step reads min(context + 1, window) tokens per request; a prefill's
// FLOPs are the causal pairs each capped at the window (checked against the sum over queries); a layer listed
// in full_attention_layers attends to everything.
TEST(Lowering, SlidingWindowCapsAttentionReadsAndFlops) {
  ModelSpec windowed = load_model("mixtral-8x7b");
  ModelSpec full = windowed;
  windowed.sliding_window = 1000;
  windowed.full_attention_layers = {1};
  const SystemSpec s = load_system("duplex");
  const ParallelLayout p = ParallelLayout::make(full, s, s.devices_for(full.name));
  BatchState b;
  b.groups = {{8, 3000, 1, false}, {1, 600, 700, true}, {1, 2000, 500, true}};
  const Graph gw = lower(windowed, b, p, Routing{}), gf = lower(full, b, p, Routing{});
  auto op_of = [](const Graph& g, OpKind k, int layer) -> const Op& {
    for (const auto& o : g.ops)
      if (o.kind == k && o.layer == layer) return o;
    throw Error("no such op");
  };
  const Op& dw = op_of(gw, OpKind::kAttentionDecode, 0);
  const Op& df = op_of(gf, OpKind::kAttentionDecode, 0);
  EXPECT_EQ(dw.context_tokens, 8 * 1000);
  EXPECT_EQ(df.context_tokens, 8 * 3001);
  EXPECT_NEAR(dw.flops / df.flops, 1000.0 / 3001.0, 1e-9);
  // Prefill chunks of 700 queries after 600 cached tokens and 500 after 2000; query i of a chunk after c
  // tokens sees min(c + 1 + i, 1000) tokens.
  double pairs = 0, full_pairs = 0;
  for (const auto& [c, t] : {std::pair{600, 700}, std::pair{2000, 500}})
    for (int i = 0; i < t; ++i) {
      pairs += std::min(c + 1 + i, 1000);
      full_pairs += c + 1 + i;
    }
  const Op& pw = op_of(gw, OpKind::kAttentionPrefill, 0);
  const Op& pf = op_of(gf, OpKind::kAttentionPrefill, 0);
  EXPECT_NEAR(pw.flops / pf.flops, pairs / full_pairs, 1e-12);
  // Reads from the first query's window start on: all 1300 tokens of the first chunk (its first query sees
  // tokens 0..600), 999 cached + 500 new of the second.
  EXPECT_EQ(pw.context_tokens, 1300 + 1499);
  EXPECT_EQ(pf.context_tokens, 1300 + 2500);
  // Layer 1 attends to the whole context: the same ops as without a window.
  EXPECT_EQ(op_of(gw, OpKind::kAttentionDecode, 1).flops, op_of(gf, OpKind::kAttentionDecode, 1).flops);
  EXPECT_EQ(op_of(gw, OpKind::kAttentionPrefill, 1).bytes_kv, op_of(gf, OpKind::kAttentionPrefill, 1).bytes_kv);
}

TEST(Lowering, DecodeExpertOpPerByteIsItsTokenCount) {
  // 64 requests x top-2 over 8 experts: 16 tokens each (uniform routing).
  const Graph g = lower_on("mixtral-8x7b", BatchState::decode_batch(64, 2048));
  const Op& e = first_of(g, OpKind::kExpertFfn);
  EXPECT_EQ(e.m, 16);
  EXPECT_NEAR(e.op_b(), 16.0, 1.6);
}

TEST(Lowering, FcOpPerByteIsTheStepTokenCount) {
  for (std::int64_t batch : {8, 64, 128}) {
    const Graph g = lower_on("llama3-70b", BatchState::decode_batch(batch, 1024));
    for (OpKind k : {OpKind::kQkvProj, OpKind::kOProj, OpKind::kDenseFfn})
      EXPECT_NEAR(first_of(g, k).op_b(), static_cast<double>(batch), 0.1 * static_cast<double>(batch));
  }
}

// Biases and q / k norms are the xPU's elementwise pass after the projection (the rope op): it then also
// reads and writes v and holds the bias and gain vectors as weights; the o bias rides on the attention's
// residual; the shared-expert gate is one more router output.
TEST(Lowering, BiasesQkNormsAndSharedGateAreCountedWhereTheyRun) {
  const BatchState b = BatchState::decode_batch(16, 256);
  auto on_one_device = [&](const ModelSpec& model) {
    return lower(model, b, ParallelLayout::make(model, load_system("gpu"), 1), Routing{});
  };
  ModelSpec m = load_model("tiny-qwen-moe");  // q/k/v biases, a gated shared expert
  const Graph g = on_one_device(m);
  const double t = 16, q = 8 * 32, kv = 2 * 32;
  const Op& rope = first_of(g, OpKind::kRope);
  EXPECT_DOUBLE_EQ(rope.bytes_weights, (q + 2 * kv) * 2);
  EXPECT_DOUBLE_EQ(rope.bytes_act, 2 * t * (q + 2 * kv) * 2);
  EXPECT_DOUBLE_EQ(rope.flops, 6 * t * (q + kv) + t * (q + 2 * kv));
  EXPECT_EQ(first_of(g, OpKind::kRouter).n, 9);
  const Op& residual = first_of(g, OpKind::kResidual);
  EXPECT_DOUBLE_EQ(residual.bytes_weights, 0);

  m.qkv_bias = false;
  m.o_bias = true;
  m.qk_norm = QkNorm::kPerHead;
  const Graph h = on_one_device(m);
  const Op& rope2 = first_of(h, OpKind::kRope);
  EXPECT_DOUBLE_EQ(rope2.bytes_weights, 2 * 32 * 2);
  EXPECT_DOUBLE_EQ(rope2.bytes_act, 2 * t * (q + kv) * 2);
  EXPECT_DOUBLE_EQ(rope2.flops, 10 * t * (q + kv));
  EXPECT_DOUBLE_EQ(first_of(h, OpKind::kResidual).bytes_weights, 256 * 2);

  // OLMoE's whole-projection q / k norm over tensor-parallel heads: one small all-reduce per layer of the
  // per-token sums of squares (2 FP32 values per token), before the rope pass; none on one device.
  m.qk_norm = QkNorm::kWhole;
  const Graph whole_one = on_one_device(m);
  for (const Op& o : whole_one.ops) EXPECT_FALSE(o.name.ends_with(kQkNormAllReduce)) << o.name;
  const Graph whole_tp = lower(m, b, ParallelLayout::make(m, load_system("gpu"), 4), Routing{});
  int reductions = 0;
  for (std::size_t i = 0; i < whole_tp.ops.size(); ++i) {
    const Op& o = whole_tp.ops[i];
    if (!o.name.ends_with(kQkNormAllReduce)) continue;
    ++reductions;
    EXPECT_EQ(o.kind, OpKind::kAllReduce);
    EXPECT_DOUBLE_EQ(o.link_bytes, t * 2 * 4 * 2.0 * 3 / 4);
    EXPECT_EQ(whole_tp.ops[i + 1].kind, OpKind::kRope);
  }
  EXPECT_EQ(reductions, m.layers);

  // Without any of them the rope op is as before: 6 FLOPs per rotated element, no weights.
  const Graph plain = on_one_device(load_model("tiny-moe"));
  EXPECT_DOUBLE_EQ(first_of(plain, OpKind::kRope).flops, 6 * t * (q + kv));
  EXPECT_DOUBLE_EQ(first_of(plain, OpKind::kRope).bytes_weights, 0);
  EXPECT_EQ(first_of(plain, OpKind::kRouter).n, 8);
}

// Phi-3.5-MoE's LM-head bias (its vocabulary row read once, added to every logit row) and Gemma's embedding
// scale (one multiply per embedded element).
TEST(Lowering, LmHeadBiasAndEmbeddingScaleAreCharged) {
  const BatchState b = BatchState::decode_batch(16, 256);
  auto lowered = [&](const ModelSpec& model) {
    return lower(model, b, ParallelLayout::make(model, load_system("gpu"), 1), Routing{});
  };
  ModelSpec m = load_model("tiny-phimoe");
  const Graph biased = lowered(m);
  m.lm_head_bias = false;
  const Graph plain = lowered(m);
  const Op &head = first_of(biased, OpKind::kLmHead), &head0 = first_of(plain, OpKind::kLmHead);
  EXPECT_DOUBLE_EQ(head.bytes_weights - head0.bytes_weights, 1024 * 2);
  EXPECT_DOUBLE_EQ(head.flops - head0.flops, 16.0 * 1024);
  ModelSpec g = load_model("tiny-gemma");
  const double scaled = first_of(lowered(g), OpKind::kEmbedding).flops;
  g.scale_embedding = false;
  EXPECT_DOUBLE_EQ(scaled - first_of(lowered(g), OpKind::kEmbedding).flops, 16.0 * 128);
}

// DBRX's clamp of q, k and v: the pass after the projections reads and writes v too, a min and a max per
// element; without RoPE the pass is named for the clamp.
TEST(Lowering, ClipQkvIsChargedInThePassAfterTheProjections) {
  const BatchState b = BatchState::decode_batch(16, 256);
  auto pass = [&](const ModelSpec& model) {
    return first_of(lower(model, b, ParallelLayout::make(model, load_system("gpu"), 1), Routing{}),
                    OpKind::kRope);
  };
  ModelSpec m = load_model("tiny-dbrx");  // 8 query heads, 2 KV heads of 16
  const Op clipped = pass(m);
  m.clip_qkv = 0;
  const Op plain = pass(m);
  const double qk = 16.0 * (8 + 2) * 16, v = 16.0 * 2 * 16;
  EXPECT_DOUBLE_EQ(plain.flops, 6 * qk);
  EXPECT_DOUBLE_EQ(clipped.flops, 6 * qk + 2 * (qk + v));
  EXPECT_DOUBLE_EQ(clipped.bytes_act - plain.bytes_act, 2 * v * 2);  // v read and written, FP16
  ModelSpec opt = load_model("tiny-opt");  // learned positions and biases: the pass is the biases'
  opt.qkv_bias = opt.o_bias = opt.mlp_bias = false;
  opt.clip_qkv = 4;
  EXPECT_EQ(pass(opt).name, "L0.qkv_clip");
}

// Gemma 2: a norm after each block (before its residual add), a divide, a tanh and a multiply per attention
// score and per logit with soft-capping.
TEST(Lowering, Gemma2PostNormsAndSoftcapsAreCharged) {
  const BatchState b = BatchState::decode_batch(16, 256);
  auto lowered = [&](const ModelSpec& model) {
    return lower(model, b, ParallelLayout::make(model, load_system("gpu"), 1), Routing{});
  };
  ModelSpec m = load_model("tiny-gemma2");  // 8 query heads, windows of 4 on even layers
  const Graph g = lowered(m);
  std::vector<std::string> layer1;
  for (const Op& o : g.ops)
    if (o.layer == 1 && (o.kind == OpKind::kNorm || o.kind == OpKind::kResidual)) layer1.push_back(o.name);
  EXPECT_EQ(layer1, (std::vector<std::string>{"L1.attn_norm", "L1.post_attn_norm", "L1.attn_residual",
                                              "L1.ffn_norm", "L1.post_ffn_norm", "L1.ffn_residual"}));
  const Op attn = first_of(g, OpKind::kAttentionDecode), head = first_of(g, OpKind::kLmHead);
  m.attn_softcap = m.final_softcap = 0;
  const Graph plain = lowered(m);
  const Op attn0 = first_of(plain, OpKind::kAttentionDecode), head0 = first_of(plain, OpKind::kLmHead);
  // Layer 0 attends to its window of 4 tokens: 16 requests x 4 scores x 8 heads.
  EXPECT_DOUBLE_EQ(attn.flops - attn0.flops, 3.0 * 16 * 4 * 8);
  EXPECT_DOUBLE_EQ(head.flops - head0.flops, 3.0 * 16 * 1024);
  int norms = 0;
  for (const Op& o : g.ops) norms += o.kind == OpKind::kNorm ? 1 : 0;
  EXPECT_EQ(norms, 4 * 4 + 1);
}

TEST(Lowering, TensorParallelSplitsHeadsAndAddsAllReduces) {
  const Graph g = lower_on("mixtral-8x7b", BatchState::decode_batch(32, 512));  // 4 devices
  const Op& a = first_of(g, OpKind::kAttentionDecode);
  EXPECT_EQ(a.q_heads, 8);
  EXPECT_EQ(a.kv_heads, 2);
  EXPECT_EQ(g.devices, 4);
  EXPECT_GT(first_of(g, OpKind::kAllReduce).link_bytes, 0);
  int experts_l0 = 0;
  for (const auto& o : g.ops) experts_l0 += (o.kind == OpKind::kExpertFfn && o.layer == 0) ? 1 : 0;
  EXPECT_EQ(experts_l0, 2);  // 8 experts over 4 devices (expert parallel)
}

// The QKV op's weights are what one device holds: its query heads' rows and the KV heads they read, which
// are replicated when tensor parallelism exceeds the KV heads; MLA's q_a and kv_a whole (every device
// computes and caches the latent), q_b and kv_b's k_nope rows (W_UK) by its heads, kv_b's v rows (W_UV) with
// the O projection, as functional emulation runs them.
TEST(Lowering, QkvWeightsAreOneDevicesShareWithReplicatedKvHeadsAndLatent) {
  const BatchState b = BatchState::decode_batch(8, 256);
  const SystemSpec s = load_system("duplex");
  ModelSpec gqa = load_model("mixtral-8x7b");  // 32 q / 8 KV heads of 128
  for (int devices : {4, 16}) {                // TP4 (2 KV heads each), TP8 over two nodes (1 each)
    const Graph g = lower(gqa, b, ParallelLayout::make(gqa, s, devices), Routing{});
    const int tp = devices == 4 ? 4 : 8;
    EXPECT_DOUBLE_EQ(first_of(g, OpKind::kQkvProj).bytes_weights,
                     (32.0 / tp + 2.0 * (8 / tp)) * 128 * 4096 * 2);
  }
  gqa.kv_heads = 2;  // TP4 over 2 KV heads: each device reads one, replicated
  const Graph r = lower(gqa, b, ParallelLayout::make(gqa, s, 4), Routing{});
  EXPECT_DOUBLE_EQ(first_of(r, OpKind::kQkvProj).bytes_weights, (8.0 + 2.0) * 128 * 4096 * 2);
  const ModelSpec ds = load_model("deepseek-v2");  // 128 heads over TP4: 32 each
  const Graph m = lower(ds, b, ParallelLayout::make(ds, s, 4), Routing{});
  const double h = 5120, q_a = h * 1536, q_b = 1536.0 * 32 * 192, kv_a = h * 576, w_uk = 512.0 * 32 * 128,
               w_uv = 512.0 * 32 * 128, o = 32.0 * 128 * h;
  EXPECT_DOUBLE_EQ(first_of(m, OpKind::kQkvProj).bytes_weights,
                   std::ceil((q_a + q_b + kv_a + w_uk) / h) * h * 2);
  const Op& o_proj = first_of(m, OpKind::kOProj);
  EXPECT_DOUBLE_EQ(o_proj.bytes_weights, (w_uv + o) * 2);
  EXPECT_DOUBLE_EQ(o_proj.flops, 2.0 * 8 * (w_uv + o));  // 8 decode tokens
}

// A partial RoPE rotates rotary_dim of each head: 6 FLOPs per rotated element, the bytes of the whole heads.
TEST(Lowering, PartialRopeChargesTheRotatedElements) {
  ModelSpec m = load_model("tiny-dense");
  const SystemSpec s = load_system("gpu");
  const BatchState b = BatchState::decode_batch(4, 64);
  const Op whole = first_of(lower(m, b, ParallelLayout::make(m, s, 1), Routing{}), OpKind::kRope);
  m.rotary_dim = m.head_dim / 2;
  const Op half = first_of(lower(m, b, ParallelLayout::make(m, s, 1), Routing{}), OpKind::kRope);
  EXPECT_DOUBLE_EQ(half.flops, whole.flops / 2);
  EXPECT_DOUBLE_EQ(half.bytes(), whole.bytes());
}

// Data-parallel replicas (16 devices: TP8 x DP2) are dealt the requests in turn, heaviest first, and the plan
// is replica 0's share. Four decodes at distinct contexts: 2 of them, those at 4000 and 2000 tokens (each
// split separately and rounded up, every group of one request used to land on both replicas: all 4). A prompt
// and three decodes: the prompt and the second-longest decode.
TEST(Lowering, DataParallelReplicasAreDealtTheRequestsHeaviestFirst) {
  const ModelSpec m = load_model("mixtral-8x7b");
  const ParallelLayout p = ParallelLayout::make(m, load_system("gpu"), 16);
  ASSERT_EQ(p.dp, 2);
  auto decode = [](std::int64_t context) { return RequestGroup{1, context, 1, false, false, 0}; };
  BatchState b;
  b.groups = {decode(1000), decode(4000), decode(3000), decode(2000)};
  const Op attn = first_of(lower(m, b, p, Routing{}), OpKind::kAttentionDecode);
  EXPECT_EQ(attn.requests, 2);
  EXPECT_EQ(attn.context_tokens, 4000 + 1 + 2000 + 1);  // each reads its context and its new token
  b.groups = {decode(1000), decode(4000), RequestGroup{1, 0, 512, true, false, 0}, decode(2000)};
  const Graph mixed = lower(m, b, p, Routing{});
  EXPECT_EQ(first_of(mixed, OpKind::kAttentionPrefill).requests, 1);
  const Op d = first_of(mixed, OpKind::kAttentionDecode);
  EXPECT_EQ(d.requests, 1);
  EXPECT_EQ(d.context_tokens, 2000 + 1);
  // Replica 1's share (the energy of its devices): the other two.
  b.groups = {decode(1000), decode(4000), decode(3000), decode(2000)};
  EXPECT_EQ(first_of(lower(m, b, p, Routing{}, {.replica = 1}), OpKind::kAttentionDecode).context_tokens,
            3000 + 1 + 1000 + 1);
  // One request: replica 1 has none and runs only its devices' routed experts for replica 0's tokens.
  const BatchState one{{decode(1000)}};
  const Graph idle = lower(m, one, p, Routing{}, {.replica = 1});
  ASSERT_FALSE(idle.ops.empty());
  for (const Op& o : idle.ops) EXPECT_EQ(o.kind, OpKind::kExpertFfn) << o.name;
  // Functional emulation's plans keep every group (LowerOptions::every_group_per_replica).
  EXPECT_EQ(first_of(lower(m, b, p, Routing{}, {.every_group_per_replica = true}), OpKind::kAttentionDecode)
                .requests,
            4);
}

// Groups of a data-parallel rank (the scheduler's: request id mod dp) are their replica's share as they are,
// however unbalanced: here 3 decodes on replica 0 and 1 on replica 1. A batch mixing ranked and unranked
// groups, or a rank past the layout's replicas, is an error.
TEST(Lowering, RankedGroupsAreTheirReplicasShare) {
  const ModelSpec m = load_model("mixtral-8x7b");
  const ParallelLayout p = ParallelLayout::make(m, load_system("gpu"), 16);
  ASSERT_EQ(p.dp, 2);
  BatchState b;
  b.groups = {RequestGroup{3, 1000, 1, false, false, 0, 0}, RequestGroup{1, 4000, 1, false, false, 0, 1}};
  const Op zero = first_of(lower(m, b, p, Routing{}), OpKind::kAttentionDecode);
  EXPECT_EQ(zero.requests, 3);
  EXPECT_EQ(zero.context_tokens, 3 * 1001);
  const Op one = first_of(lower(m, b, p, Routing{}, {.replica = 1}), OpKind::kAttentionDecode);
  EXPECT_EQ(one.requests, 1);
  EXPECT_EQ(one.context_tokens, 4001);
  // Routing is over both replicas' tokens either way.
  EXPECT_EQ(first_of(lower(m, b, p, Routing{}), OpKind::kExpertFfn).m,
            first_of(lower(m, b, p, Routing{}, {.replica = 1}), OpKind::kExpertFfn).m);
  BatchState mixed = b;
  mixed.groups[1].rank = -1;
  EXPECT_THROW(lower(m, mixed, p, Routing{}), Error);
  BatchState past = b;
  past.groups[1].rank = 2;
  EXPECT_THROW(lower(m, past, p, Routing{}), Error);
}

TEST(Lowering, ExpertTensorParallelShardsEveryExpert) {
  const Graph g = lower_on("mixtral-8x7b", BatchState::decode_batch(32, 512), "duplex-pe-et");
  int experts_l0 = 0;
  for (const auto& o : g.ops)
    if (o.kind == OpKind::kExpertFfn && o.layer == 0) {
      ++experts_l0;
      EXPECT_EQ(o.n, 14336 / 4);
    }
  EXPECT_EQ(experts_l0, 8);
}

TEST(Lowering, RoutingCountsSumToTokensTimesTopK) {
  Routing zipf;
  zipf.kind = Routing::Kind::kZipf;
  zipf.zipf_s = 1.2;
  const auto c = zipf.expert_tokens(0, 100, 8, 2);
  std::int64_t sum = 0;
  for (auto v : c) {
    sum += v;
    EXPECT_LE(v, 100);
  }
  EXPECT_EQ(sum, 200);
  EXPECT_GT(c[0], c[7]);
  const auto u = Routing{}.expert_tokens(0, 10, 8, 2);  // 20 over 8: 3,3,3,3,2,2,2,2
  EXPECT_EQ(u, (std::vector<std::int64_t>{3, 3, 3, 3, 2, 2, 2, 2}));
}

TEST(Lowering, BadBatchOrRoutingIsAnError) {
  const ModelSpec m = load_model("tiny-moe");
  const SystemSpec s = load_system("duplex");
  const auto layout = ParallelLayout::make(m, s, 1);
  EXPECT_THROW(lower(m, BatchState{}, layout, Routing{}), Error);
  Routing wrong;
  wrong.kind = Routing::Kind::kCounts;
  wrong.counts = {{1, 1, 1}};  // 3 entries for 8 experts
  EXPECT_THROW(lower(m, BatchState::decode_batch(4, 8), layout, wrong), Error);
  wrong.counts = {{1, 1, 1, 1, 1, 1, 1, 0}};  // sums to 7, not 4 x 2
  EXPECT_THROW(lower(m, BatchState::decode_batch(4, 8), layout, wrong), Error);
  EXPECT_THROW(ParallelLayout::make(load_model("mixtral-8x7b"), s, 3), Error);  // 32 heads over 3
}

}  // namespace
}  // namespace duplex::compiler
