#include "duplex/compiler/model_spec.hpp"

#include <gtest/gtest.h>

#include <cstring>

#include "duplex/base/config_store.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/hf_import.hpp"

namespace duplex::compiler {
namespace {

void expect_params(const char* model, double billions, double rel) {
  const ModelSpec m = load_model(model);
  EXPECT_NEAR(static_cast<double>(m.params()) / 1e9, billions, billions * rel) << model;
}

TEST(ModelSpec, ParameterCountsMatchPublishedSizesWithinOnePercent) {
  expect_params("mixtral-8x7b", 46.7, 0.01);
  expect_params("llama3-70b", 70.6, 0.01);
  expect_params("grok-1", 314.0, 0.01);
  expect_params("glam", 143.0, 0.01);
  expect_params("opt-66b", 66.0, 0.01);
  expect_params("qwen2-57b-a14b", 57.4, 0.01);  // model card: 57B; HF: 57.41B
  expect_params("qwen3-30b-a3b", 30.5, 0.01);
  expect_params("olmoe-1b-7b", 6.9, 0.01);
  expect_params("phi-3.5-moe", 41.9, 0.01);
  expect_params("gemma-7b", 8.54, 0.01);
  expect_params("gemma-2-2b", 2.61, 0.01);
  expect_params("gemma-2-9b", 9.24, 0.01);
  expect_params("gemma-2-27b", 27.2, 0.01);
  EXPECT_EQ(load_model("gemma-7b").params(), 8537680896);  // as google/gemma-7b's config.json imports
  EXPECT_NEAR(static_cast<double>(load_model("phi-3.5-moe").active_params()) / 1e9, 6.6, 0.07);
}

// The Qwen / OLMoE presets: their model cards' activated parameters, and the features of their configs.
TEST(ModelSpec, QwenAndOlmoePresetsActiveParametersAndFeatures) {
  const ModelSpec q2 = load_model("qwen2-57b-a14b"), q3 = load_model("qwen3-30b-a3b"),
                  ol = load_model("olmoe-1b-7b");
  EXPECT_NEAR(static_cast<double>(q2.active_params()) / 1e9, 14.0, 0.3);  // "A14B"
  EXPECT_NEAR(static_cast<double>(q3.active_params()) / 1e9, 3.3, 0.1);
  EXPECT_NEAR(static_cast<double>(ol.active_params()) / 1e9, 1.3, 0.03);
  EXPECT_TRUE(q2.qkv_bias && q2.shared_expert_gate && !q2.router_renormalize);
  EXPECT_TRUE(q3.qk_norm == QkNorm::kPerHead && q3.router_renormalize);
  EXPECT_TRUE(ol.qk_norm == QkNorm::kWhole && !ol.router_renormalize);
}

TEST(ModelSpec, MixtralActiveParametersAreTopTwoExperts) {
  const ModelSpec m = load_model("mixtral-8x7b");
  EXPECT_NEAR(static_cast<double>(m.active_params()) / 1e9, 12.9, 0.13);  // Mistral AI: 12.9B active
  EXPECT_TRUE(m.is_moe_layer(0));
  EXPECT_TRUE(m.is_moe_layer(31));
}

TEST(ModelSpec, GlamHasMoeInEveryOtherLayer) {
  const ModelSpec m = load_model("glam");
  EXPECT_FALSE(m.is_moe_layer(0));
  EXPECT_TRUE(m.is_moe_layer(1));
  EXPECT_FALSE(m.is_moe_layer(30));
  EXPECT_TRUE(m.is_moe_layer(31));
}

TEST(ModelSpec, TinyMoeIsSmall) {
  const ModelSpec m = load_model("tiny-moe");
  EXPECT_EQ(m.layers, 2);
  EXPECT_EQ(m.heads / m.kv_heads, 4);
  EXPECT_LT(m.params(), 10'000'000);
}

std::string error_of(const std::string& json) {
  try {
    import_hf_config(json, "config.json");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(HfImport, LlamaMixtralQwenDeepSeekFieldNames) {
  const ModelSpec llama = import_hf_config(R"({"model_type": "llama", "hidden_size": 8192,
    "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
    "vocab_size": 128256, "torch_dtype": "bfloat16", "tie_word_embeddings": false})", "llama.json");
  EXPECT_NEAR(static_cast<double>(llama.params()) / 1e9, 70.6, 0.7);
  EXPECT_EQ(llama.dtype, DType::kBf16);

  const ModelSpec mixtral = import_hf_config(R"({"model_type": "mixtral", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32000})", "mixtral.json");
  EXPECT_EQ(mixtral.params(), load_model("mixtral-8x7b").params());

  // Qwen1.5-MoE-A2.7B: 60 experts (1408 wide) top-4 + one shared expert of 5632: 14.3B total.
  const ModelSpec qwen2 = import_hf_config(R"({"model_type": "qwen2_moe", "hidden_size": 2048,
    "intermediate_size": 5632, "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
    "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16, "num_experts": 60,
    "num_experts_per_tok": 4, "decoder_sparse_step": 1, "mlp_only_layers": [], "vocab_size": 151936})", "q2.json");
  EXPECT_NEAR(static_cast<double>(qwen2.params()) / 1e9, 14.3, 0.15);
  EXPECT_EQ(qwen2.shared_experts, 1);

  // Qwen3-30B-A3B: 128 experts top-8, head_dim 128 with 32 q / 4 kv heads: 30.5B total, 3.3B active.
  const ModelSpec qwen3 = import_hf_config(R"({"model_type": "qwen3_moe", "hidden_size": 2048,
    "intermediate_size": 6144, "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_attention_heads": 32,
    "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8,
    "decoder_sparse_step": 1, "mlp_only_layers": [], "vocab_size": 151936, "tie_word_embeddings": false})", "q3.json");
  EXPECT_NEAR(static_cast<double>(qwen3.params()) / 1e9, 30.5, 0.3);
  EXPECT_NEAR(static_cast<double>(qwen3.active_params()) / 1e9, 3.3, 0.1);

  // DeepSeek-V3: MLA, 256 routed experts top-8 + 1 shared, first 3 layers dense: 671B (without the MTP module).
  const ModelSpec ds = import_hf_config(R"({"model_type": "deepseek_v3", "hidden_size": 7168,
    "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128,
    "num_key_value_heads": 128, "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8,
    "first_k_dense_replace": 3, "moe_layer_freq": 1, "q_lora_rank": 1536, "kv_lora_rank": 512,
    "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "vocab_size": 129280})", "ds.json");
  EXPECT_NEAR(static_cast<double>(ds.params()) / 1e9, 671.0, 6.7);
  EXPECT_EQ(ds.attention, AttentionKind::kMla);
  EXPECT_FALSE(ds.is_moe_layer(2));
  EXPECT_TRUE(ds.is_moe_layer(3));
  EXPECT_EQ(ds.kv_elements_per_token_layer(), 576);
  // V3's router by its defaults (DeepseekV3Config): noaux_tc over 8 groups keeping 4, renormalised, x 2.5.
  EXPECT_EQ(ds.router, Router::kNoAuxTc);
  EXPECT_EQ(ds.router_groups, 8);
  EXPECT_EQ(ds.router_topk_groups, 4);
  EXPECT_TRUE(ds.router_renormalize);
  EXPECT_EQ(ds.routed_scaling, 2.5);
  EXPECT_EQ(ds.weight_naming, WeightNaming::kDeepSeek);
  const ModelSpec preset = load_model("deepseek-v3");  // the preset states the same model
  EXPECT_EQ(preset.params(), ds.params());
  EXPECT_EQ(preset.active_params(), ds.active_params());
  EXPECT_EQ(preset.router, ds.router);
}

// DeepSeek-V2-Lite (15.7B total, 2.4B active; no q compression, greedy routing) and DeepSeek-V2 (236B, 21B;
// group-limited routing x 16): the model cards' sizes and the configs' routers.
TEST(HfImport, DeepSeekV2RoutersAndSizes) {
  const std::string mla = R"("num_attention_heads": 16, "num_key_value_heads": 16, "kv_lora_rank": 512,
    "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "vocab_size": 102400)";
  const ModelSpec lite = import_hf_config(R"({"model_type": "deepseek_v2", "hidden_size": 2048,
    "intermediate_size": 10944, "moe_intermediate_size": 1408, "num_hidden_layers": 27, "n_routed_experts": 64,
    "n_shared_experts": 2, "num_experts_per_tok": 6, "first_k_dense_replace": 1, "q_lora_rank": null,
    "topk_method": "greedy", "n_group": 1, "topk_group": 1, "routed_scaling_factor": 1.0,
    "norm_topk_prob": false, "scoring_func": "softmax", )" +
                                              mla + "}",
                                          "lite.json");
  EXPECT_NEAR(static_cast<double>(lite.params()) / 1e9, 15.7, 0.16);
  // DeepSeek's activated counts leave out the input embedding (a lookup): ours count every table.
  const double table = 102400.0 * 2048;
  EXPECT_NEAR((static_cast<double>(lite.active_params()) - table) / 1e9, 2.4, 0.1);
  EXPECT_EQ(lite.router, Router::kSoftmaxTopK);
  EXPECT_FALSE(lite.router_renormalize);
  EXPECT_EQ(lite.mla.q_lora_rank, 0);

  const std::string v2 = R"({"model_type": "deepseek_v2", "hidden_size": 5120, "intermediate_size": 12288,
    "moe_intermediate_size": 1536, "num_hidden_layers": 60, "n_routed_experts": 160, "n_shared_experts": 2,
    "num_experts_per_tok": 6, "first_k_dense_replace": 1, "q_lora_rank": 1536, "n_group": 8, "topk_group": 3,
    "routed_scaling_factor": 16.0, "norm_topk_prob": false, "num_attention_heads": 128,
    "num_key_value_heads": 128, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
    "v_head_dim": 128, "vocab_size": 102400, )";
  const ModelSpec big = import_hf_config(v2 + R"("topk_method": "group_limited_greedy"})", "v2.json");
  EXPECT_NEAR(static_cast<double>(big.params()) / 1e9, 236.0, 2.4);
  EXPECT_NEAR((static_cast<double>(big.active_params()) - 102400.0 * 5120) / 1e9, 21.0, 0.5);
  EXPECT_EQ(big.router, Router::kGroupLimited);
  EXPECT_EQ(big.router_groups, 8);
  EXPECT_EQ(big.router_topk_groups, 3);
  EXPECT_EQ(big.routed_scaling, 16.0);
  for (const char* bad : {R"("topk_method": "noaux_tc"})", R"("topk_method": "sampled"})"}) {
    try {
      import_hf_config(v2 + bad, "v2.json");
      ADD_FAILURE() << bad << " was accepted";
    } catch (const ConfigError& e) {
      EXPECT_EQ(e.key(), "topk_method");  // noaux_tc with V2's softmax scores is no DeepSeek router
    }
  }
  try {  // 3 groups do not divide 160 experts
    import_hf_config(v2 + R"("topk_method": "group_limited_greedy", "n_group": 3})", "v2.json");
    ADD_FAILURE() << "n_group 3 was accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key(), "router_groups");
  }
}

// OLMoE-1B-7B (6.9B total, 1.3B active), Phi-3.5-MoE (41.9B, 6.6B), DBRX (132B, 36B; nested attn_config /
// ffn_config): published sizes from each model card.
TEST(HfImport, OlmoePhimoeAndDbrxFieldNames) {
  const ModelSpec olmoe = import_hf_config(R"({"model_type": "olmoe", "hidden_size": 2048,
    "intermediate_size": 1024, "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 16,
    "num_experts": 64, "num_experts_per_tok": 8, "norm_topk_prob": false, "vocab_size": 50304,
    "tie_word_embeddings": false, "torch_dtype": "bfloat16"})", "olmoe.json");
  EXPECT_NEAR(static_cast<double>(olmoe.params()) / 1e9, 6.9, 0.07);
  EXPECT_NEAR(static_cast<double>(olmoe.active_params()) / 1e9, 1.3, 0.03);
  EXPECT_EQ(olmoe.top_k, 8);

  const ModelSpec phi = import_hf_config(R"({"model_type": "phimoe", "hidden_size": 4096,
    "intermediate_size": 6400, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "num_local_experts": 16, "num_experts_per_tok": 2, "vocab_size": 32064, "torch_dtype": "bfloat16",
    "attention_bias": true, "lm_head_bias": true, "router_jitter_noise": 0.01})",
                                         "phimoe.json");
  EXPECT_NEAR(static_cast<double>(phi.params()) / 1e9, 41.9, 0.42);
  EXPECT_NEAR(static_cast<double>(phi.active_params()) / 1e9, 6.6, 0.07);
  EXPECT_EQ(phi.norm, NormKind::kLayerNorm);
  EXPECT_EQ(phi.router, Router::kSparseMixer);
  EXPECT_EQ(phi.router_jitter, 0.01);
  EXPECT_TRUE(phi.lm_head_bias && phi.qkv_bias && phi.o_bias);
  ModelSpec unbiased = phi;
  unbiased.lm_head_bias = false;
  EXPECT_EQ(phi.params() - unbiased.params(), 32064);  // the LM head's bias
  EXPECT_NE(error_of(R"({"model_type": "phimoe", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 1, "num_attention_heads": 4, "num_local_experts": 4, "num_experts_per_tok": 1,
    "vocab_size": 10})")
                .find("router: sparsemixer routes to 2 experts, but top_k is 1"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"model_type": "phimoe", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 1, "num_attention_heads": 4, "num_local_experts": 4, "num_experts_per_tok": 2,
    "vocab_size": 10, "router_jitter_noise": "high"})")
                .find("config.json: router_jitter_noise: is not a number"),
            std::string::npos);

  const ModelSpec dbrx = import_hf_config(R"({"model_type": "dbrx", "d_model": 6144, "n_heads": 48,
    "n_layers": 40, "vocab_size": 100352, "attn_config": {"kv_n_heads": 8, "clip_qkv": 8, "rope_theta": 500000},
    "ffn_config": {"ffn_hidden_size": 10752, "moe_num_experts": 16, "moe_top_k": 4}, "torch_dtype": "bfloat16"})",
                                            "dbrx.json");
  EXPECT_NEAR(static_cast<double>(dbrx.params()) / 1e9, 132.0, 1.3);
  EXPECT_NEAR(static_cast<double>(dbrx.active_params()) / 1e9, 36.0, 0.6);
  EXPECT_EQ(dbrx.kv_heads, 8);
  EXPECT_EQ(dbrx.head_dim, 128);
  EXPECT_NE(error_of(R"({"model_type": "dbrx", "d_model": 64, "n_heads": 4, "n_layers": 2, "vocab_size": 10,
    "attn_config": {}, "ffn_config": {"ffn_hidden_size": 128, "moe_num_experts": 4}})")
                .find("config.json: ffn_config.moe_top_k: missing required field"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"model_type": "dbrx", "d_model": 64, "n_heads": 4, "n_layers": 2, "vocab_size": 10,
    "attn_config": [], "ffn_config": {}})")
                .find("config.json: attn_config: is not an object"),
            std::string::npos);
}

// Sliding-window attention: a window that is on and shorter than the positions is imported, on every layer
// (Mistral), on the layers layer_types names (newer configs) or on the layers from max_window_layers on
// (Qwen2); off (use_sliding_window: false), null, or covering every position imports as full attention.
TEST(HfImport, SlidingWindowAttentionIsImportedPerLayer) {
  const std::string base = R"({"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 4, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000,
    "max_position_embeddings": 32768, )";
  const ModelSpec all = import_hf_config(base + R"("sliding_window": 4096})", "m.json");
  EXPECT_EQ(all.sliding_window, 4096);
  for (int l = 0; l < 4; ++l) EXPECT_EQ(all.attention_window(l), 4096) << l;
  EXPECT_EQ(all.window_note(), "sliding window 4096 (every layer)");
  for (const char* off : {R"("sliding_window": null})", R"("sliding_window": 4096, "use_sliding_window": false})",
                          R"("sliding_window": 32768})"}) {
    const ModelSpec m = import_hf_config(base + off, "m.json");
    EXPECT_EQ(m.sliding_window, 0) << off;
    EXPECT_EQ(m.attention_window(0), 0) << off;
    EXPECT_EQ(m.window_note(), "") << off;
  }
  const ModelSpec qwen = import_hf_config(
      base + R"("sliding_window": 4096, "use_sliding_window": true, "max_window_layers": 3})", "m.json");
  EXPECT_EQ(qwen.full_attention_layers, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(qwen.attention_window(2), 0);
  EXPECT_EQ(qwen.attention_window(3), 4096);
  EXPECT_EQ(qwen.window_note(), "sliding window 4096 (1 of 4 layers)");
  // Qwen2 with max_window_layers = num_hidden_layers: every layer attends fully, i.e. no window.
  const ModelSpec all_full = import_hf_config(
      base + R"("sliding_window": 4096, "use_sliding_window": true, "max_window_layers": 4})", "m.json");
  EXPECT_EQ(all_full.sliding_window, 0);
  EXPECT_TRUE(all_full.full_attention_layers.empty());
  const ModelSpec typed = import_hf_config(base + R"("sliding_window": 1024, "layer_types": ["sliding_attention",
    "full_attention", "sliding_attention", "full_attention"]})", "m.json");
  EXPECT_EQ(typed.full_attention_layers, (std::vector<int>{1, 3}));
  EXPECT_EQ(typed.attention_window(0), 1024);
  EXPECT_EQ(typed.attention_window(1), 0);
  EXPECT_NE(error_of(base + R"("sliding_window": 1024, "layer_types": ["sliding_attention", "global",
    "sliding_attention", "full_attention"]})")
                .find("config.json: layer_types[1]: \"global\" is not a layer type"),
            std::string::npos);
  EXPECT_NE(error_of(base + R"("sliding_window": 1024, "layer_types": ["full_attention"]})")
                .find("config.json: layer_types: has 1 entries for 4 layers"),
            std::string::npos);
  EXPECT_NE(error_of(base + R"("sliding_window": -5})").find("config.json: sliding_window: -5 is not a non-negative"),
            std::string::npos);
}

// Our YAML: sliding_window and full_attention_layers, read strictly.
TEST(ModelSpec, SlidingWindowFromYaml) {
  const std::string base = "name: x\nlayers: 3\nhidden: 64\nheads: 4\nvocab: 10\nffn: 8\n";
  const ModelSpec m =
      read_model(ConfigNode::parse(base + "sliding_window: 128\nfull_attention_layers: [1]\n", "m.yaml"));
  EXPECT_EQ(m.attention_window(0), 128);
  EXPECT_EQ(m.attention_window(1), 0);
  EXPECT_EQ(m.attention_window(2), 128);
  auto message = [&](const std::string& extra) {
    try {
      read_model(ConfigNode::parse(base + extra, "m.yaml"));
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(
      message("full_attention_layers: [1]\n")
          .find("m.yaml: full_attention_layers: is set, but neither sliding_window nor attention_chunk"),
      std::string::npos);
  EXPECT_NE(message("sliding_window: 128\nfull_attention_layers: [3]\n").find("\"3\" is not a layer index"),
            std::string::npos);
  EXPECT_NE(message("sliding_window: 128\nfull_attention_layers: [0, 1, 2]\n")
                .find("m.yaml: full_attention_layers: lists every layer, so no layer has the sliding window"),
            std::string::npos);
}

// Attention biases, q / k norms, the shared-expert gate and routing renormalisation per family; parameter
// counts against the model cards: Qwen2.5-0.5B 0.49B (q/k/v biases, tied embeddings), Qwen3-0.6B 0.6B
// (0.44B without embeddings; per-head q/k norms).
TEST(HfImport, BiasesQkNormsSharedExpertGateAndRoutingPerFamily) {
  const char* qwen25 = R"({"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
    "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
    "tie_word_embeddings": true, "sliding_window": 32768, "use_sliding_window": false})";
  const ModelSpec q2 = import_hf_config(qwen25, "q25.json");
  EXPECT_TRUE(q2.qkv_bias);
  EXPECT_FALSE(q2.o_bias);
  EXPECT_EQ(q2.qk_norm, QkNorm::kNone);
  EXPECT_NEAR(static_cast<double>(q2.params()) / 1e9, 0.494, 0.005);
  ModelSpec unbiased = q2;
  unbiased.qkv_bias = false;
  EXPECT_EQ(q2.params() - unbiased.params(), 24 * (896 + 2 * 128));

  const ModelSpec q3 =
      import_hf_config(R"({"model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072,
    "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
    "vocab_size": 151936, "tie_word_embeddings": true, "attention_bias": false})",
                       "q3.json");
  EXPECT_EQ(q3.qk_norm, QkNorm::kPerHead);
  EXPECT_FALSE(q3.qkv_bias);
  EXPECT_NEAR(static_cast<double>(q3.params()) / 1e9, 0.6, 0.01);
  EXPECT_NEAR(static_cast<double>(q3.params() - q3.embedding_params()) / 1e9, 0.44, 0.01);
  EXPECT_EQ(q3.attention_vector_params(), 2 * 128);

  const ModelSpec llama =
      import_hf_config(R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100, "attention_bias": true})",
                       "l.json");
  EXPECT_TRUE(llama.qkv_bias);
  EXPECT_TRUE(llama.o_bias);
  EXPECT_EQ(llama.attention_vector_params(), 3 * 64 + 64);

  const ModelSpec q2moe = import_hf_config(R"({"model_type": "qwen2_moe", "hidden_size": 2048,
    "intermediate_size": 5632, "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
    "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16, "num_experts": 60,
    "num_experts_per_tok": 4, "vocab_size": 151936})",
                                           "q2moe.json");
  EXPECT_TRUE(q2moe.shared_expert_gate);
  EXPECT_FALSE(q2moe.router_renormalize);  // HF's default norm_topk_prob
  EXPECT_TRUE(q2moe.qkv_bias);
  EXPECT_EQ(q2moe.weight_naming, WeightNaming::kQwenMoe);

  const ModelSpec q3moe = import_hf_config(R"({"model_type": "qwen3_moe", "hidden_size": 2048,
    "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4,
    "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8, "norm_topk_prob": true,
    "vocab_size": 151936})",
                                           "q3moe.json");
  EXPECT_TRUE(q3moe.router_renormalize);
  EXPECT_EQ(q3moe.qk_norm, QkNorm::kPerHead);
  EXPECT_FALSE(q3moe.shared_expert_gate);

  const ModelSpec olmoe = import_hf_config(R"({"model_type": "olmoe", "hidden_size": 2048,
    "intermediate_size": 1024, "num_hidden_layers": 16, "num_attention_heads": 16, "num_experts": 64,
    "num_experts_per_tok": 8, "vocab_size": 50304})",
                                           "olmoe.json");
  EXPECT_EQ(olmoe.qk_norm, QkNorm::kWhole);
  EXPECT_FALSE(olmoe.router_renormalize);
  EXPECT_EQ(olmoe.attention_vector_params(), 2048 + 2048);

  const ModelSpec mixtral = load_model("mixtral-8x7b");
  EXPECT_TRUE(mixtral.router_renormalize);
  EXPECT_EQ(mixtral.weight_naming, WeightNaming::kMixtral);
  EXPECT_EQ(mixtral.attention_vector_params(), 0);
}

TEST(HfImport, UnknownArchitectureMissingFieldAndBadJsonAreClearErrors) {
  const std::string unknown = error_of(R"({"model_type": "mamba", "hidden_size": 1})");
  EXPECT_NE(unknown.find("config.json: model_type: unsupported architecture \"mamba\""), std::string::npos) << unknown;
  const std::string missing = error_of(R"({"model_type": "llama", "hidden_size": 4096})");
  EXPECT_NE(missing.find("num_hidden_layers: missing required field"), std::string::npos) << missing;
  const std::string bad = error_of(R"({"model_type": "llama", )");
  EXPECT_NE(bad.find("not valid JSON"), std::string::npos) << bad;
  const std::string negative = error_of(R"({"model_type": "llama", "hidden_size": -5, "num_hidden_layers": 2,
    "num_attention_heads": 2, "vocab_size": 10, "intermediate_size": 8})");
  EXPECT_NE(negative.find("hidden_size"), std::string::npos) << negative;
}

TEST(ModelYaml, UnknownKeyAndInconsistentShapesAreErrors) {
  EXPECT_THROW(read_model(ConfigNode::parse("name: x\nlayers: 2\nhidden: 64\nheads: 4\nvocab: 10\nffn: 8\nlayerz: 3\n",
                                            "m.yaml")),
               ConfigError);
  try {
    read_model(ConfigNode::parse("name: x\nlayers: 2\nhidden: 64\nheads: 4\nkv_heads: 3\nvocab: 10\nffn: 8\n", "m.yaml"));
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key(), "kv_heads");
    EXPECT_EQ(e.file(), "m.yaml");
  }
  EXPECT_THROW(read_model(ConfigNode::parse("name: x\nlayers: 0\nhidden: 64\nheads: 4\nvocab: 10\nffn: 8\n", "m.yaml")),
               ConfigError);
  EXPECT_THROW(load_model("no-such-model"), Error);
}

// The key a model YAML's error names ("no error" when it reads).
std::string key_of(const std::string& text) {
  try {
    read_model(ConfigNode::parse(text, "m.yaml"));
  } catch (const ConfigError& e) {
    return e.key();
  }
  return "no error";
}

TEST(ModelYaml, QwenFeatureKeysAndTheirErrors) {
  const std::string base = "name: x\nlayers: 2\nhidden: 64\nheads: 4\nvocab: 10\n";
  const std::string moe = base + "experts: 4\ntop_k: 2\nexpert_ffn: 32\n";
  const ModelSpec m = read_model(ConfigNode::parse(
      moe + "shared_experts: 1\nshared_expert_ffn: 48\nshared_expert_gate: true\nrouter_renormalize: false\n"
            "qkv_bias: true\no_bias: true\nqk_norm: head\nweight_naming: qwen_moe\n",
      "m.yaml"));
  EXPECT_TRUE(m.shared_expert_gate && m.qkv_bias && m.o_bias);
  EXPECT_FALSE(m.router_renormalize);
  EXPECT_EQ(m.qk_norm, QkNorm::kPerHead);
  EXPECT_EQ(m.weight_naming, WeightNaming::kQwenMoe);
  EXPECT_EQ(m.attention_vector_params(), 3 * 64 + 64 + 2 * 16);
  EXPECT_EQ(key_of(moe + "qk_norm: rms\n"), "qk_norm");
  EXPECT_EQ(key_of(moe + "weight_naming: gpt2\n"), "weight_naming");
  EXPECT_EQ(key_of(moe + "shared_expert_gate: true\n"), "shared_expert_gate");            // no shared experts
  EXPECT_EQ(key_of(base + "ffn: 8\nrouter_renormalize: false\n"), "router_renormalize");  // dense
  EXPECT_EQ(key_of(base + "ffn: 8\nlearned_positions: 16\nqkv_bias: true\nqk_norm: whole\n"), "no error");
}

// Phi-4-mini (3.8B): Phi-3's layout with RoPE over int(128 x 0.75) = 96 of each head's elements.
TEST(HfImport, Phi3PartialRotaryFactorSetsRotaryDim) {
  const std::string phi4 = R"({"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192,
    "num_hidden_layers": 32, "num_attention_heads": 24, "num_key_value_heads": 8, "vocab_size": 200064,
    "tie_word_embeddings": true, )";
  const ModelSpec m = import_hf_config(phi4 + R"("partial_rotary_factor": 0.75})", "phi4.json");
  EXPECT_EQ(m.head_dim, 128);
  EXPECT_EQ(m.rotary_dim, 96);
  EXPECT_NEAR(static_cast<double>(m.params()) / 1e9, 3.84, 0.01);
  EXPECT_EQ(import_hf_config(phi4 + R"("partial_rotary_factor": 1.0})", "phi4.json").rotary_dim, 0);
  try {
    import_hf_config(phi4 + R"("partial_rotary_factor": 1.5})", "phi4.json");
    ADD_FAILURE() << "a factor above 1 was accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key(), "partial_rotary_factor");
  }
  EXPECT_EQ(load_model("phi-4-mini").rotary_dim, 96);
}

TEST(ModelYaml, RotaryDimKeyAndItsErrors) {
  const std::string base = "name: x\nlayers: 2\nhidden: 64\nheads: 4\nvocab: 10\nffn: 32\n";  // head_dim 16
  EXPECT_EQ(read_model(ConfigNode::parse(base + "rotary_dim: 12\n", "m.yaml")).rotary_dim, 12);
  EXPECT_EQ(key_of(base + "rotary_dim: 7\n"), "rotary_dim");   // odd
  EXPECT_EQ(key_of(base + "rotary_dim: 18\n"), "rotary_dim");  // beyond the head
  EXPECT_EQ(key_of(base + "rotary_dim: 8\nlearned_positions: 16\n"), "rotary_dim");
  EXPECT_EQ(key_of(base + "rotary_dim: 8\nmla: {q_lora_rank: 0, kv_lora_rank: 16, qk_nope_head_dim: 8, "
                          "qk_rope_head_dim: 4, v_head_dim: 8}\n"),
            "rotary_dim");
}

// DBRX's config (HF DbrxConfig): clip_qkv and rope_theta in attn_config (kv_n_heads defaults to 1), the
// routing p-norm and the activation in ffn_config; LayerNorm without a bias; DBRX's tensor names.
TEST(HfImport, DbrxClampNormsRoutingAndActivation) {
  const std::string head = R"({"model_type": "dbrx", "d_model": 64, "n_heads": 4, "n_layers": 2,
    "vocab_size": 10, )";
  const std::string ffn = R"("ffn_config": {"ffn_hidden_size": 32, "moe_num_experts": 4, "moe_top_k": 2)";
  const ModelSpec m = import_hf_config(
      head + R"("attn_config": {"clip_qkv": 8, "kv_n_heads": 2}, )" + ffn + "}}", "dbrx.json");
  EXPECT_EQ(m.clip_qkv, 8.0);
  EXPECT_EQ(m.kv_heads, 2);
  EXPECT_EQ(m.norm, NormKind::kLayerNorm);
  EXPECT_FALSE(m.norm_bias);
  EXPECT_TRUE(m.router_renormalize);  // moe_normalize_expert_weights' default 1
  EXPECT_EQ(m.activation, Activation::kSilu);
  EXPECT_EQ(m.weight_naming, WeightNaming::kDbrx);
  ModelSpec biased = m;
  biased.norm_bias = true;
  EXPECT_EQ(biased.params() - m.params(), (2 * 2 + 1) * 64);  // two norms per layer and the final one
  const ModelSpec plain =
      import_hf_config(head + R"("attn_config": {"clip_qkv": null}, )" + ffn +
                           R"(, "moe_normalize_expert_weights": null, "ffn_act_fn": {"name": "gelu"}}})",
                       "dbrx.json");
  EXPECT_EQ(plain.clip_qkv, 0.0);
  EXPECT_EQ(plain.kv_heads, 1);  // DbrxAttentionConfig's default
  EXPECT_FALSE(plain.router_renormalize);
  EXPECT_EQ(plain.activation, Activation::kGelu);
  EXPECT_NE(error_of(head + R"("attn_config": {}, )" + ffn + R"(, "moe_normalize_expert_weights": 2}})")
                .find("config.json: ffn_config.moe_normalize_expert_weights: 2 is not modelled"),
            std::string::npos);
  EXPECT_NE(error_of(head + R"("attn_config": {"clip_qkv": -1}, )" + ffn + "}}").find("attn_config.clip_qkv"),
            std::string::npos);
  EXPECT_NE(error_of(head + R"("attn_config": {}, )" + ffn + R"(, "ffn_act_fn": {"name": "gelu_10"}}})")
                .find("config.json: ffn_config.ffn_act_fn.name: \"gelu_10\" is not a supported activation"),
            std::string::npos);
  const ModelSpec preset = load_model("dbrx");
  EXPECT_NEAR(static_cast<double>(preset.params()) / 1e9, 131.6, 0.1);
  EXPECT_NEAR(static_cast<double>(preset.active_params()) / 1e9, 36.5, 0.1);
}

TEST(ModelYaml, Gemma2KeysAndTheirErrors) {
  const std::string base = "name: x\nlayers: 2\nhidden: 64\nheads: 4\nvocab: 10\nffn: 32\n";
  const ModelSpec m = read_model(ConfigNode::parse(
      base + "post_norms: true\nattn_softcap: 50\nfinal_softcap: 30\nquery_pre_attn_scalar: 144\n",
      "m.yaml"));
  EXPECT_TRUE(m.post_norms);
  EXPECT_EQ(m.attn_softcap, 50.0);
  EXPECT_EQ(m.final_softcap, 30.0);
  EXPECT_EQ(m.query_pre_attn_scalar, 144);
  EXPECT_EQ(key_of(base + "attn_softcap: -1\n"), "attn_softcap");
  EXPECT_EQ(key_of(base + "final_softcap: .nan\n"), "final_softcap");
  EXPECT_EQ(key_of(base + "query_pre_attn_scalar: -4\n"), "query_pre_attn_scalar");
  EXPECT_EQ(key_of(base + "attn_softcap: 50\nmla: {q_lora_rank: 0, kv_lora_rank: 16, qk_nope_head_dim: 8, "
                          "qk_rope_head_dim: 4, v_head_dim: 8}\n"),
            "attn_softcap");
}

TEST(ModelYaml, ClipQkvAndNormBiasKeysAndTheirErrors) {
  const std::string base = "name: x\nlayers: 2\nhidden: 64\nheads: 4\nvocab: 10\nffn: 32\n";
  const ModelSpec m =
      read_model(ConfigNode::parse(base + "norm: layernorm\nnorm_bias: false\nclip_qkv: 8\n", "m.yaml"));
  EXPECT_FALSE(m.norm_bias);
  EXPECT_EQ(m.clip_qkv, 8.0);
  EXPECT_EQ(key_of(base + "norm_bias: false\n"), "norm_bias");  // RMSNorm has no bias
  EXPECT_EQ(key_of(base + "clip_qkv: -1\n"), "clip_qkv");
  EXPECT_EQ(key_of(base + "clip_qkv: .inf\n"), "clip_qkv");
  EXPECT_EQ(key_of(base + "clip_qkv: 8\nmla: {q_lora_rank: 0, kv_lora_rank: 16, qk_nope_head_dim: 8, "
                          "qk_rope_head_dim: 4, v_head_dim: 8}\n"),
            "clip_qkv");
  EXPECT_EQ(key_of(base + "weight_naming: dbrx\n"),
            "no error");  // the names: checked by functional emulation
}

// DeepSeek's routers and MLA in our YAML: the keys, their defaults and what each refuses.
TEST(ModelYaml, DeepSeekRouterAndMlaKeysAndTheirErrors) {
  const std::string base = "name: x\nlayers: 2\nhidden: 64\nheads: 4\nvocab: 10\n";
  const std::string moe = base + "experts: 8\ntop_k: 2\nexpert_ffn: 32\n";
  const std::string mla =
      "mla: {q_lora_rank: 0, kv_lora_rank: 16, qk_nope_head_dim: 8, qk_rope_head_dim: 4, v_head_dim: 8}\n";
  const ModelSpec m = read_model(
      ConfigNode::parse(moe + mla +
                            "router: noaux_tc\nrouter_groups: 4\nrouter_topk_groups: 2\nrouted_scaling: 2.5\n"
                            "weight_naming: deepseek\n",
                        "m.yaml"));
  EXPECT_EQ(m.router, Router::kNoAuxTc);
  EXPECT_EQ(m.router_groups, 4);
  EXPECT_EQ(m.router_topk_groups, 2);
  EXPECT_EQ(m.routed_scaling, 2.5);
  EXPECT_EQ(m.weight_naming, WeightNaming::kDeepSeek);
  EXPECT_EQ(m.head_dim, 12);  // qk_nope_head_dim + qk_rope_head_dim
  EXPECT_EQ(m.kv_heads, 4);
  EXPECT_EQ(std::string(router_name(m.router)), "noaux_tc");
  EXPECT_EQ(key_of(moe + "router: group_limited_greedy\nrouter_groups: 3\n"), "router_groups");
  EXPECT_EQ(key_of(moe + "router: group_limited_greedy\nrouter_groups: 4\nrouter_topk_groups: 5\n"),
            "router_topk_groups");
  EXPECT_EQ(key_of(moe + "router: group_limited_greedy\nrouter_groups: 4\nrouter_topk_groups: 1\ntop_k: 3\n"),
            "top_k");  // 2 experts in the one kept group
  EXPECT_EQ(key_of(moe + "router: noaux_tc\nrouter_groups: 8\nrouter_topk_groups: 4\n"),
            "router_groups");                                      // 1 expert per group
  EXPECT_EQ(key_of(moe + "router_groups: 2\n"), "router_groups");  // softmax_topk has no groups
  EXPECT_EQ(key_of(moe + "routed_scaling: 0\n"), "routed_scaling");
  EXPECT_EQ(key_of(base + "ffn: 8\nrouted_scaling: 2\n"), "routed_scaling");  // dense
  EXPECT_EQ(key_of(moe + "router: sparsemixer\nrouted_scaling: 2\n"), "routed_scaling");
  EXPECT_EQ(key_of(moe + "router: dispatch\n"), "router");
  EXPECT_EQ(key_of(moe + mla + "head_dim: 16\n"), "head_dim");
  EXPECT_EQ(key_of(moe + mla + "kv_heads: 1\n"), "kv_heads");
}

TEST(ModelYaml, TwoMatrixFfnKeysAndTheirErrors) {
  const std::string base = "name: x\nlayers: 2\nhidden: 64\nheads: 4\nvocab: 10\nffn: 32\n";
  const ModelSpec m = read_model(ConfigNode::parse(
      base + "ffn_kind: two_matrix\nactivation: gelu_tanh\nmlp_bias: true\nnorm: layernorm\n"
             "learned_positions: 18\nposition_offset: 2\nweight_naming: opt\n",
      "m.yaml"));
  EXPECT_EQ(m.activation, Activation::kGeluTanh);
  EXPECT_TRUE(m.mlp_bias);
  EXPECT_EQ(m.position_offset, 2);
  EXPECT_EQ(m.weight_naming, WeightNaming::kOpt);
  EXPECT_EQ(m.ffn_params(32), 2 * 64 * 32 + 32 + 64);  // fc1, fc2 and their biases
  EXPECT_EQ(key_of(base + "ffn_kind: two_matrix\n"), "activation");  // a two-matrix FFN names it
  EXPECT_EQ(key_of(base + "activation: swiglu\n"), "activation");
  EXPECT_EQ(key_of(base + "position_offset: 2\n"), "position_offset");  // no learned positions
  // Expert biases are modelled (gpt-oss): a gated FFN biases gate and up (its width each) and down (hidden).
  const ModelSpec biased_moe = read_model(
      ConfigNode::parse(base + "experts: 4\ntop_k: 2\nexpert_ffn: 16\nmlp_bias: true\n", "m.yaml"));
  EXPECT_EQ(biased_moe.ffn_params(16), 3 * 64 * 16 + 2 * 16 + 64);
  EXPECT_EQ(key_of(base + "weight_naming: gpt2\n"), "weight_naming");
  EXPECT_EQ(key_of(base + "norm_weight_offset: one\n"), "norm_weight_offset");
  EXPECT_EQ(key_of(base + "norm_weight_offset: .inf\n"), "norm_weight_offset");
  EXPECT_EQ(key_of(base + "scale_embedding: sqrt\n"), "scale_embedding");
  EXPECT_EQ(key_of(base + "router: sparsemixer\n"), "router");  // a dense model
  EXPECT_EQ(key_of(base + "experts: 4\ntop_k: 2\nrouter: top2\n"), "router");
  EXPECT_EQ(key_of(base + "experts: 4\ntop_k: 2\nrouter: sparsemixer\nrouter_renormalize: false\n"),
            "router_renormalize");
  EXPECT_EQ(key_of(base + "router_jitter: -1\n"), "router_jitter");
  EXPECT_EQ(key_of(base + "lm_head_bias: 1.5\n"), "lm_head_bias");
  EXPECT_EQ(load_model("opt-66b").activation, Activation::kRelu);
  EXPECT_EQ(load_model("glam").activation, Activation::kGelu);
}

TEST(HfImport, OptAndStarcoder2MatchTheirModelCards) {
  // facebook/opt-125m's config.json (dropout / token-id fields left out): 125,239,296 parameters.
  const ModelSpec opt = import_hf_config(R"({"model_type": "opt", "activation_function": "relu",
    "do_layer_norm_before": true, "ffn_dim": 3072, "hidden_size": 768, "max_position_embeddings": 2048,
    "num_attention_heads": 12, "num_hidden_layers": 12, "torch_dtype": "float16", "vocab_size": 50272,
    "word_embed_proj_dim": 768})",
                                         "opt.json");
  EXPECT_EQ(opt.params(), 125239296);
  EXPECT_EQ(opt.learned_positions, 2050);
  EXPECT_EQ(opt.position_offset, 2);
  EXPECT_EQ(opt.ffn_kind, FfnKind::kTwoMatrix);
  EXPECT_EQ(opt.activation, Activation::kRelu);
  EXPECT_EQ(opt.norm, NormKind::kLayerNorm);
  EXPECT_TRUE(opt.tie_embeddings && opt.qkv_bias && opt.o_bias && opt.mlp_bias);
  EXPECT_EQ(opt.weight_naming, WeightNaming::kOpt);
  // bigcode/starcoder2-3b's shape: 3,030,371,328 parameters (tied embeddings, biases on every projection).
  const ModelSpec sc2 = import_hf_config(R"({"model_type": "starcoder2", "hidden_act": "gelu_pytorch_tanh",
    "hidden_size": 3072, "intermediate_size": 12288, "max_position_embeddings": 16384,
    "num_attention_heads": 24, "num_hidden_layers": 30, "num_key_value_heads": 2, "norm_epsilon": 1e-05,
    "rope_theta": 999999.4420358813, "sliding_window": 4096, "use_bias": true, "vocab_size": 49152,
    "torch_dtype": "bfloat16"})",
                                         "sc2.json");
  EXPECT_EQ(sc2.params(), 3030371328);
  EXPECT_EQ(sc2.activation, Activation::kGeluTanh);
  EXPECT_EQ(sc2.sliding_window, 4096);
  EXPECT_EQ(sc2.windowed_layers(), 30);
  EXPECT_EQ(sc2.weight_naming, WeightNaming::kStarcoder2);
  EXPECT_EQ(sc2.learned_positions, 0);
  EXPECT_EQ(import_hf_config(R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100, "hidden_act": "gelu"})",
                             "l.json")
                .activation,
            Activation::kGelu);

  // microsoft/Phi-3-mini-4k-instruct's config.json (token ids left out): 3.82B parameters (model card: 3.8B),
  // Llama's layout under fused names, a sliding window of 2047 on every layer.
  const ModelSpec phi3 =
      import_hf_config(R"({"model_type": "phi3", "attention_bias": false, "hidden_act": "silu",
    "hidden_size": 3072, "intermediate_size": 8192, "max_position_embeddings": 4096, "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 32, "original_max_position_embeddings": 4096,
    "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 10000.0, "sliding_window": 2047,
    "tie_word_embeddings": false, "torch_dtype": "bfloat16", "vocab_size": 32064})",
                       "phi3.json");
  EXPECT_NEAR(static_cast<double>(phi3.params()) / 1e9, 3.82, 0.01);
  EXPECT_EQ(phi3.weight_naming, WeightNaming::kPhi3);
  EXPECT_EQ(phi3.windowed_layers(), 32);
  // google/gemma-7b's config.json (token-id / dropout fields left out): 8,537,680,896 parameters (tied
  // embeddings; 16 heads of 256 = 4096 wide q / k / v against a hidden of 3072). hidden_act "gelu" is
  // ignored: GemmaMLP uses hidden_activation, else GELU's tanh form.
  const std::string gemma = R"({"model_type": "gemma", "head_dim": 256, "hidden_act": "gelu",
    "hidden_size": 3072, "intermediate_size": 24576, "max_position_embeddings": 8192,
    "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 16, "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0, "torch_dtype": "bfloat16", "vocab_size": 256000)";
  const ModelSpec gemma7b = import_hf_config(gemma + "}", "gemma.json");
  EXPECT_EQ(gemma7b.params(), 8537680896);
  EXPECT_EQ(gemma7b.activation, Activation::kGeluTanh);
  EXPECT_EQ(gemma7b.ffn_kind, FfnKind::kGated);
  EXPECT_EQ(gemma7b.q_dim(), 4096);
  EXPECT_TRUE(gemma7b.tie_embeddings && gemma7b.scale_embedding);
  EXPECT_EQ(gemma7b.norm_weight_offset, 1.0);
  EXPECT_EQ(gemma7b.weight_naming, WeightNaming::kMixtral);  // the Llama names
  EXPECT_EQ(import_hf_config(gemma + R"(, "hidden_activation": "gelu"})", "g.json").activation,
            Activation::kGelu);
  EXPECT_EQ(import_hf_config(gemma + R"(, "hidden_activation": null})", "g.json").activation,
            Activation::kGeluTanh);

  // google/gemma-2-9b's config.json (token-id / dropout fields left out): Gemma's layout plus a norm after
  // each block (two more gains per layer), soft-capping, query_pre_attn_scalar, and the 4096-token window on
  // the even layers (Gemma2Config without layer_types); the preset is the same model.
  const std::string gemma2 = R"({"model_type": "gemma2", "attention_bias": false,
    "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "head_dim": 256,
    "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 3584,
    "intermediate_size": 14336, "max_position_embeddings": 8192, "num_attention_heads": 16,
    "num_hidden_layers": 42, "num_key_value_heads": 8, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0, "torch_dtype": "float32", "vocab_size": 256000)";
  const ModelSpec g9 = import_hf_config(gemma2 + R"(, "sliding_window": 4096})", "gemma2.json");
  EXPECT_EQ(g9.params(), load_model("gemma-2-9b").params());
  EXPECT_EQ(g9.params(), 9241705984);
  EXPECT_TRUE(g9.post_norms && g9.scale_embedding && g9.tie_embeddings);
  EXPECT_EQ(g9.norm_weight_offset, 1.0);
  EXPECT_EQ(g9.attn_softcap, 50.0);
  EXPECT_EQ(g9.final_softcap, 30.0);
  EXPECT_EQ(g9.query_pre_attn_scalar, 256);
  EXPECT_EQ(g9.sliding_window, 4096);
  EXPECT_EQ(g9.windowed_layers(), 21);
  EXPECT_EQ(g9.attention_window(0), 4096);
  EXPECT_EQ(g9.attention_window(1), 0);
  EXPECT_EQ(g9.full_attention_layers, load_model("gemma-2-9b").full_attention_layers);
  ModelSpec pre_only = g9;
  pre_only.post_norms = false;
  EXPECT_EQ(g9.params() - pre_only.params(), 2 * 42 * 3584);
  // Gemma2Config's defaults (softcaps 50 / 30, scalar 256, window 4096), and layer_types when given.
  const ModelSpec defaults = import_hf_config(R"({"model_type": "gemma2", "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4, "vocab_size": 10})",
                                              "g.json");
  EXPECT_EQ(defaults.attn_softcap, 50.0);
  EXPECT_EQ(defaults.final_softcap, 30.0);
  EXPECT_EQ(defaults.query_pre_attn_scalar, 256);
  EXPECT_EQ(defaults.sliding_window, 4096);
  EXPECT_EQ(defaults.full_attention_layers, std::vector<int>{1});
  const ModelSpec typed = import_hf_config(
      gemma2 + R"(, "sliding_window": 4096, "layer_types":
    [)" +
          [] {
            std::string t;
            for (int l = 0; l < 42; ++l)
              t += std::string(l ? ", " : "") + (l % 3 ? "\"sliding_attention\"" : "\"full_attention\"");
            return t;
          }() +
          "]}",
      "gemma2.json");
  EXPECT_EQ(typed.windowed_layers(), 28);
  std::string nulls = gemma2;  // the caps null: none
  for (const char* key : {"attn_logit_softcapping\": 50.0", "final_logit_softcapping\": 30.0"})
    nulls.replace(nulls.find(key), std::strlen(key),
                  std::string(key).substr(0, std::strlen(key) - 4) + "null");
  const ModelSpec uncapped = import_hf_config(nulls + R"(, "sliding_window": null})", "gemma2.json");
  EXPECT_EQ(uncapped.attn_softcap, 0.0);
  EXPECT_EQ(uncapped.final_softcap, 0.0);
  EXPECT_EQ(uncapped.sliding_window, 0);
  EXPECT_NE(error_of(gemma2 + R"(, "attn_logit_softcapping": -1})").find("attn_softcap"), std::string::npos);

  // Gemma 3 (Gemma3TextConfig's defaults): q / k norms per head, post norms, no caps unless stated, the
  // window on all layers but every 6th; the multimodal gemma3 config's language model from text_config.
  const std::string gemma3 = R"("model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 13, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
    "vocab_size": 10)";
  const ModelSpec g3 = import_hf_config("{" + gemma3 + ", \"sliding_window\": 512}", "gemma3.json");
  EXPECT_TRUE(g3.post_norms && g3.scale_embedding);
  EXPECT_EQ(g3.qk_norm, QkNorm::kPerHead);
  EXPECT_EQ(g3.attn_softcap, 0.0);
  EXPECT_EQ(g3.final_softcap, 0.0);
  EXPECT_EQ(g3.query_pre_attn_scalar, 256);
  EXPECT_EQ(g3.sliding_window, 512);
  EXPECT_EQ(g3.full_attention_layers, (std::vector<int>{5, 11}));
  EXPECT_EQ(
      import_hf_config("{" + gemma3 + ", \"sliding_window_pattern\": 2}", "g.json").full_attention_layers,
      (std::vector<int>{1, 3, 5, 7, 9, 11}));
  EXPECT_EQ(import_hf_config("{" + gemma3 + "}", "g.json").sliding_window, 4096);  // the default window
  const std::string text = "{" + gemma3.substr(gemma3.find(',') + 1) + ", \"sliding_window\": 512}";
  const ModelSpec multimodal =
      import_hf_config(R"({"model_type": "gemma3", "text_config": )" + text + "}", "gemma3.json");
  EXPECT_EQ(multimodal.params(), g3.params());
  EXPECT_EQ(multimodal.full_attention_layers, g3.full_attention_layers);
  EXPECT_NE(error_of(R"({"model_type": "gemma3", "text_config": {"hidden_size": 64}})")
                .find("config.json: text_config.num_hidden_layers: missing required field"),
            std::string::npos);
  expect_params("gemma-3-12b", 11.77, 0.01);
  expect_params("gemma-3-27b", 27.0, 0.01);

  const std::string opt_base = R"("model_type": "opt", "ffn_dim": 64, "hidden_size": 32,
    "max_position_embeddings": 16, "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 10)";
  const std::string project = error_of("{" + opt_base + R"(, "word_embed_proj_dim": 16})");
  EXPECT_NE(project.find("word_embed_proj_dim"), std::string::npos) << project;
  const std::string post = error_of("{" + opt_base + R"(, "do_layer_norm_before": false})");
  EXPECT_NE(post.find("do_layer_norm_before"), std::string::npos) << post;
  const std::string act = error_of("{" + opt_base + R"(, "activation_function": "gelu_10"})");
  EXPECT_NE(act.find("activation_function: \"gelu_10\" is not a supported activation"), std::string::npos)
      << act;
}

// weight_bytes() by where the weights lie: every preset's layers, input table and LM head sum to it (draft
// heads aside: they borrow the target's table); a quantized layer counts its matrices in their formats.
TEST(ModelSpec, LayerWeightBytesSumToTheModelsWeights) {
  for (const std::string& name : list_presets("models")) {
    const ModelSpec m = load_model(name);
    if (m.draft_head) continue;
    double sum = m.input_embedding_bytes() + m.lm_head_bytes();
    for (int l = 0; l < m.layers; ++l) sum += m.layer_weight_bytes(l);
    EXPECT_NEAR(sum, m.weight_bytes(), 1e-9 * m.weight_bytes()) << name;
  }
  // Llama-3.1-405B's FP8 release keeps attention in BF16: a layer is its attention at 2 bytes, its FFN at 1.
  const ModelSpec fp8 = load_model("llama3-405b-fp8");
  const double attention = 16384.0 * (16384 + 2 * 1024 + 16384) * 2, ffn = 3.0 * 16384 * 53248;
  EXPECT_DOUBLE_EQ(fp8.layer_weight_bytes(1), attention + ffn + 2.0 * 16384 * 2);
  EXPECT_DOUBLE_EQ(fp8.input_embedding_bytes(), 128256.0 * 16384 * 2);
  EXPECT_DOUBLE_EQ(fp8.lm_head_bytes(), (128256.0 * 16384 + 16384) * 2);
}

}  // namespace
}  // namespace duplex::compiler
