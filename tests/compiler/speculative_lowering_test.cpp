// Lowering a speculative verification (RequestGroup::verify): decoding requests computing their last token
// plus drafts. Every projection and the LM head run over all the tokens; attention is decode attention with
// the tokens as query rows over each request's cached context, which placement may give to the Logic-PIM,
// where the same tokens as a prefill chunk would be prefill attention on the xPU.
#include <gtest/gtest.h>

#include "config_errors.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/cost_model.hpp"
#include "duplex/compiler/hf_import.hpp"
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

// DeepSeek-V3's multi-token-prediction module as a draft: one MoE layer with MLA, its fusion (two norms and
// eh_proj [2 hidden -> hidden]) before it, the target's embedding and LM head used but not held.
TEST(MtpDraft, OneLayerOfTheModelWithItsFusionAndNoTables) {
  const ModelSpec m = load_model("deepseek-v3");
  EXPECT_EQ(m.mtp_layers, 1);
  const ModelSpec d = mtp_draft(m);
  EXPECT_EQ(d.name, "deepseek-v3-mtp");
  EXPECT_EQ(d.layers, 1);
  EXPECT_TRUE(d.draft_head);
  EXPECT_TRUE(d.is_moe_layer(0));
  EXPECT_EQ(d.vocab, m.vocab);
  // Parameters: the layer (any of m's MoE layers) plus the fusion; no embedding, no LM head.
  const std::int64_t layer =
      (m.params() - m.embedding_params() - std::int64_t{m.hidden}) / m.layers;  // rough
  const std::int64_t fusion = 2 * std::int64_t{7168} * 7168 + 2 * 7168;
  EXPECT_EQ(d.embedding_params(), fusion);
  EXPECT_GT(d.params(), fusion + 11'000'000'000LL);  // 256 experts x 3 x 7168 x 2048 = 11.3G
  EXPECT_LT(d.params(), fusion + 2 * layer);
  const SystemSpec sys = load_system("gpu");
  const ParallelLayout layout = ParallelLayout::make(d, sys, 16);
  const Graph g = lower(d, BatchState::decode_batch(8, 512), layout, Routing{});
  int fusion_ops = 0;
  for (const Op& op : g.ops) {
    if (op.name == "head.fuse") {
      ++fusion_ops;
      EXPECT_EQ(op.kind, OpKind::kOProj);
      const std::int64_t tokens = 8 / layout.dp;  // one data-parallel replica's
      EXPECT_EQ(op.m, tokens);
      EXPECT_EQ(op.k, 2 * 7168);
      EXPECT_EQ(op.n, 7168);  // replicated: whole on every device
      EXPECT_DOUBLE_EQ(op.flops, 2.0 * static_cast<double>(tokens) * 7168 * 2 * 7168);
    }
    fusion_ops += op.name == "head.enorm" || op.name == "head.hnorm";
    EXPECT_LE(op.layer, 0) << op.name;
  }
  EXPECT_EQ(fusion_ops, 3);
  EXPECT_NE(find(g, OpKind::kLmHead, -1), nullptr);
  EXPECT_NE(find(g, OpKind::kExpertFfn, 0), nullptr);
}

TEST(MtpDraft, ReadFromConfigAndRefusedWithoutAModule) {
  const ModelSpec v3 = import_hf_config(
      R"({"model_type": "deepseek_v3", "hidden_size": 256, "intermediate_size": 512, "moe_intermediate_size": 64,
          "num_hidden_layers": 3, "num_attention_heads": 4, "n_routed_experts": 8, "num_experts_per_tok": 2,
          "first_k_dense_replace": 1, "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8,
          "v_head_dim": 16, "vocab_size": 100, "n_group": 1, "topk_group": 1, "num_nextn_predict_layers": 1})",
      "v3.json");
  EXPECT_EQ(v3.mtp_layers, 1);
  EXPECT_TRUE(mtp_draft(v3).is_moe_layer(0));
  try {
    mtp_draft(load_model("llama3-70b"));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("model llama3-70b has no multi-token-prediction module (mtp_layers 0)"),
        std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(read_model(ConfigNode::parse("name: h\nlayers: 1\nhidden: 64\nheads: 4\nvocab: 10\nffn: 128\n"
                                           "draft_head: true\n",
                                           "h.yaml"))
                  .draft_head);
  EXPECT_NE(testing::model_yaml_error(
                "name: x\nlayers: 2\nhidden: 64\nheads: 4\nvocab: 10\nffn: 128\nmtp_layers: -1\n")
                .find("x.yaml: mtp_layers"),
            std::string::npos);
}

// A draft head with its own LM head over a draft vocabulary (EAGLE-3's draft_vocab_size, FR-Spec) scores
// only those tokens and holds that LM head; without draft_vocab it uses the target's, which it does not hold.
TEST(DraftHead, ItsOwnLmHeadOverADraftVocabulary) {
  const ModelSpec eagle = load_model("eagle-llama3-70b");
  ModelSpec small = eagle;
  small.draft_vocab = 32000;
  small.validate();
  EXPECT_EQ(small.embedding_params() - eagle.embedding_params(), std::int64_t{32000} * 8192);
  EXPECT_DOUBLE_EQ(small.weight_bytes() - eagle.weight_bytes(), 2.0 * 32000 * 8192);  // in FP16
  const SystemSpec sys = load_system("gpu");
  const ParallelLayout layout = ParallelLayout::make(small, sys, 4);
  const Graph with_own = lower(small, BatchState::decode_batch(8, 512), layout, Routing{});
  const Graph with_shared = lower(eagle, BatchState::decode_batch(8, 512), layout, Routing{});
  const Op* own = find(with_own, OpKind::kLmHead, -1);
  const Op* shared = find(with_shared, OpKind::kLmHead, -1);
  ASSERT_NE(own, nullptr);
  ASSERT_NE(shared, nullptr);
  EXPECT_EQ(own->n, 32000 / layout.tp);
  EXPECT_EQ(shared->n, 128256 / layout.tp);
  EXPECT_DOUBLE_EQ(own->flops * 128256, shared->flops * 32000);
  const std::string head = "name: h\nlayers: 1\nhidden: 64\nheads: 4\nvocab: 1000\nffn: 128\n";
  EXPECT_EQ(
      read_model(ConfigNode::parse(head + "draft_head: true\ndraft_vocab: 256\n", "h.yaml")).draft_vocab,
      256);
  EXPECT_NE(
      testing::model_yaml_error(head + "draft_vocab: 256\n")
          .find("x.yaml: draft_vocab: is 256; expected 0 (the target's LM head) or, with draft_head: true"),
      std::string::npos);
  EXPECT_NE(
      testing::model_yaml_error(head + "draft_head: true\ndraft_vocab: 2000\n").find("at most vocab (1000)"),
      std::string::npos);
}

// An EAGLE-3 head (draft_states 3) for Llama-3.1-8B: the first draft pass of a step projects the target's
// three hidden states (head.fc [3 hidden -> hidden]); every pass's q / k / v read the normalized embedding
// and hidden state side by side (2 hidden inputs), with no per-pass fusion GEMM.
TEST(DraftHead, Eagle3FusesThreeStatesInItsFirstPass) {
  const ModelSpec head = read_model(ConfigNode::parse(
      "name: eagle3\nlayers: 1\nhidden: 4096\nheads: 32\nkv_heads: 8\nhead_dim: 128\nffn: 14336\n"
      "ffn_kind: gated\nvocab: 128256\ndraft_head: true\ndraft_states: 3\ndraft_vocab: 32000\n",
      "eagle3.yaml"));
  const std::int64_t h = 4096;
  EXPECT_EQ(head.embedding_params(), 3 * h * h + h * (4096 + 2 * 1024) + 2 * h + 32000 * h);
  const SystemSpec sys = load_system("gpu");
  const ParallelLayout layout = ParallelLayout::make(head, sys, 1);
  BatchState first = BatchState::decode_batch(8, 512);
  first.first_draft_pass = true;
  const Graph g1 = lower(head, first, layout, Routing{});
  const Graph g2 = lower(head, BatchState::decode_batch(8, 512), layout, Routing{});
  auto named = [](const Graph& g, const std::string& name) -> const Op* {
    for (const Op& op : g.ops)
      if (op.name == name) return &op;
    return nullptr;
  };
  ASSERT_NE(named(g1, "head.fc"), nullptr);
  EXPECT_EQ(named(g1, "head.fc")->k, 3 * h);
  EXPECT_EQ(named(g1, "head.fc")->n, h);
  EXPECT_EQ(named(g2, "head.fc"), nullptr);
  EXPECT_EQ(named(g1, "head.fuse"), nullptr);
  EXPECT_EQ(named(g2, "head.fuse"), nullptr);
  for (const Graph* g : {&g1, &g2}) {
    const Op* qkv = find(*g, OpKind::kQkvProj, 0);
    ASSERT_NE(qkv, nullptr);
    EXPECT_EQ(qkv->k, 2 * h);
    EXPECT_EQ(qkv->n, 4096 + 2 * 1024);
    EXPECT_NE(named(*g, "head.enorm"), nullptr);
  }
  const std::string base = "name: h\nlayers: 1\nhidden: 64\nheads: 4\nvocab: 1000\nffn: 128\n";
  EXPECT_NE(
      testing::model_yaml_error(base + "draft_states: 3\n")
          .find("x.yaml: draft_states: is 3; expected 1, or 3 (EAGLE-3) for a one-layer GQA draft_head"),
      std::string::npos);
  EXPECT_NE(
      testing::model_yaml_error(base + "draft_head: true\ndraft_states: 2\n").find("draft_states: is 2"),
      std::string::npos);
}

// An EAGLE-3 head's config.json (architectures LlamaForCausalLMEagle3, as SpecForge writes it) imports as a
// one-layer draft head fusing three states with its own draft vocabulary; a plain Llama config does not.
TEST(DraftHead, Eagle3ConfigJsonIsImported) {
  const std::string head = R"({"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama",
      "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
      "num_hidden_layers": 1, "vocab_size": 128256, "draft_vocab_size": 32000, "torch_dtype": "float16")";
  const ModelSpec m = import_hf_config(head + "}", "h.json");
  EXPECT_TRUE(m.draft_head);
  EXPECT_EQ(m.draft_states, 3);
  EXPECT_EQ(m.draft_vocab, 32000);
  EXPECT_EQ(m.layers, 1);
  EXPECT_FALSE(import_hf_config(R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 1,
      "vocab_size": 128256})",
                                "l.json")
                   .draft_head);
  EXPECT_NE(
      testing::hf_config_error(head + R"(, "target_hidden_size": 8192})")
          .find("config.json: target_hidden_size: 8192 with hidden_size 4096: an fc over a wider target is "
                "not modelled"),
      std::string::npos);
  std::string two_layers = head;
  two_layers.replace(two_layers.find("\"num_hidden_layers\": 1"), 22, "\"num_hidden_layers\": 2");
  EXPECT_NE(testing::hf_config_error(two_layers + "}").find("num_hidden_layers: 2 layers in an EAGLE-3 head"),
            std::string::npos);
}

}  // namespace
}  // namespace duplex::compiler
