// gpt-oss in the compiler: its config.json (HF GptOssConfig's defaults, MXFP4 experts), our YAML keys, and
// what lowering charges for its features (MXFP4 expert bytes, expert and router biases, attention sinks).
#include <gtest/gtest.h>

#include <string>

#include "config_errors.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/hf_import.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/compiler/model_spec.hpp"

namespace duplex::compiler {
namespace {

// openai/gpt-oss-20b's config.json, trimmed to the fields the importer reads (layer_types from its release).
std::string gpt_oss_20b(const std::string& extra = "") {
  std::string types;
  for (int l = 0; l < 24; ++l)
    types += std::string(l ? ", " : "") + (l % 2 ? "\"full_attention\"" : "\"sliding_attention\"");
  return R"({"model_type": "gpt_oss", "hidden_size": 2880, "intermediate_size": 2880, "num_hidden_layers": 24,
    "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64, "num_local_experts": 32,
    "num_experts_per_tok": 4, "sliding_window": 128, "max_position_embeddings": 131072, "vocab_size": 201088,
    "tie_word_embeddings": false, "attention_bias": true, "swiglu_limit": 7.0, "torch_dtype": "bfloat16",
    "rope_theta": 150000, "quantization_config": {"quant_method": "mxfp4"}, "layer_types": [)" +
         types + "]" + extra + "}";
}

using testing::hf_config_error;

TEST(GptOss, ImportMatchesTheModelCardAndThePreset) {
  const ModelSpec m = import_hf_config(gpt_oss_20b(), "gpt-oss-20b.json");
  EXPECT_NEAR(static_cast<double>(m.params()) / 1e9, 20.9, 0.1);  // the card: 21B (20.9B)
  EXPECT_EQ(m.activation, Activation::kSwigluOai);
  EXPECT_TRUE(m.mlp_bias && m.router_bias && m.attn_sinks && m.qkv_bias && m.o_bias);
  EXPECT_EQ(m.weight_naming, WeightNaming::kGptOss);
  EXPECT_EQ(m.dtype, DType::kBf16);
  EXPECT_EQ(m.expert_dtype, DType::kMxfp4);
  EXPECT_EQ(m.sliding_window, 128);
  EXPECT_EQ(m.windowed_layers(), 12);
  EXPECT_EQ(m.attention_window(0), 128);
  EXPECT_EQ(m.attention_window(1), 0);
  // The preset states the same shape.
  const ModelSpec preset = load_model("gpt-oss-20b");
  EXPECT_EQ(preset.params(), m.params());
  EXPECT_EQ(preset.expert_dtype, DType::kMxfp4);
  EXPECT_EQ(preset.full_attention_layers, m.full_attention_layers);
  EXPECT_NEAR(static_cast<double>(load_model("gpt-oss-120b").params()) / 1e9, 116.8, 0.2);  // the card: 117B
  // Weights in bytes: 32 x 24 expert matrix triples in MXFP4 (4.25 bits), the rest in BF16.
  const double expert = 24.0 * 32 * 3 * 2880.0 * 2880.0;
  EXPECT_DOUBLE_EQ(static_cast<double>(m.expert_matrix_params()), expert);
  EXPECT_DOUBLE_EQ(m.weight_bytes(), (static_cast<double>(m.params()) - expert) * 2 + expert * 4.25 / 8);
  // Sinks (heads), the router bias (experts) and the experts' biases (2 ffn + hidden each) are parameters.
  ModelSpec bare = m;
  bare.attn_sinks = bare.router_bias = bare.mlp_bias = false;
  EXPECT_EQ(m.params() - bare.params(), 24 * (64 + 32 + 32 * (2 * 2880 + 2880)));
}

// GptOssConfig's defaults: windows (128) on the even layers without layer_types, attention biased, top 4;
// no quantization_config: every weight in dtype.
TEST(GptOss, DefaultsWithoutLayerTypesOrQuantization) {
  const ModelSpec m = import_hf_config(R"({"model_type": "gpt_oss", "hidden_size": 64,
    "intermediate_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 16, "num_local_experts": 8, "vocab_size": 100})",
                                       "config.json");
  EXPECT_EQ(m.sliding_window, 128);
  EXPECT_EQ(m.full_attention_layers, (std::vector<int>{1, 3}));
  EXPECT_EQ(m.top_k, 4);
  EXPECT_TRUE(m.qkv_bias && m.o_bias);
  EXPECT_EQ(m.expert_dtype, m.dtype);
}

TEST(GptOss, UnmodelledFieldsAreClearErrors) {
  EXPECT_NE(hf_config_error(gpt_oss_20b(R"(, "swiglu_limit": 10)"))
                .find("config.json: swiglu_limit: 10 is not modelled"),
            std::string::npos);
  const std::string bnb =
      hf_config_error(R"({"model_type": "gpt_oss", "hidden_size": 64, "intermediate_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_local_experts": 4, "vocab_size": 10,
    "quantization_config": {"quant_method": "hqq"}})");
  EXPECT_NE(bnb.find("quantization_config.quant_method: \"hqq\" is not modelled"), std::string::npos) << bnb;
}

TEST(GptOss, YamlKeysAndTheirErrors) {
  auto yaml_error = [](const std::string& extra) {
    return testing::model_yaml_error("name: x\nlayers: 2\nhidden: 64\nheads: 4\nvocab: 10\n" + extra);
  };
  const std::string moe = "experts: 4\ntop_k: 2\nexpert_ffn: 32\n";
  EXPECT_NE(yaml_error("ffn: 32\nrouter_bias: true\n").find("router_bias: is set for a dense model"),
            std::string::npos);
  EXPECT_NE(yaml_error(moe + "activation: swiglu_oai\nffn_kind: two_matrix\n")
                .find("swiglu_oai is a gated activation"),
            std::string::npos);
  EXPECT_NE(yaml_error("ffn: 32\nexpert_dtype: mxfp4\n").find("expert_dtype: is mxfp4 for a dense model"),
            std::string::npos);
  EXPECT_NE(yaml_error(moe + "kv_dtype: mxfp4\n").find("kv_dtype: mxfp4 is a weight format"),
            std::string::npos);
  EXPECT_NE(yaml_error(moe + "expert_dtype: fp5\n").find("expert_dtype"), std::string::npos);
  const ModelSpec m = read_model(ConfigNode::parse(
      "name: x\nlayers: 2\nhidden: 64\nheads: 4\nvocab: 10\n" + moe + "dtype: bf16\nexpert_dtype: mxfp4\n",
      "x.yaml"));
  EXPECT_EQ(m.expert_dtype, DType::kMxfp4);
  EXPECT_EQ(read_model(ConfigNode::parse(
                           "name: x\nlayers: 2\nhidden: 64\nheads: 4\nvocab: 10\n" + moe + "dtype: bf16\n",
                           "x.yaml"))
                .expert_dtype,
            DType::kBf16);  // the dtype unless stated
}

// Lowering: an expert reads its matrices in MXFP4 (4.25 bits each) plus its biases in BF16 (gate and up:
// its width each; down: hidden); the router adds its bias row; decode attention carries the sinks flag and
// an exp and an add per query head.
TEST(GptOss, LoweringChargesMxfp4ExpertsBiasesAndSinks) {
  const BatchState b = BatchState::decode_batch(16, 256);
  auto lowered = [&](const ModelSpec& model) {
    return lower(model, b, ParallelLayout::make(model, load_system("gpu"), 1), Routing{});
  };
  auto first = [](const Graph& g, OpKind k) -> const Op& {
    for (const Op& o : g.ops)
      if (o.kind == k) return o;
    throw Error("no such op");
  };
  ModelSpec m = load_model("tiny-gpt-oss");  // hidden 128, expert_ffn 64, 8 experts, 8 heads
  m.expert_dtype = DType::kMxfp4;
  const Graph g = lowered(m);
  const Op& expert = first(g, OpKind::kExpertFfn);
  EXPECT_DOUBLE_EQ(expert.bytes_weights, 3.0 * 64 * 128 * 4.25 / 8 + (2.0 * 64 + 128) * 2);
  const auto rows = static_cast<double>(expert.m);
  EXPECT_DOUBLE_EQ(expert.flops, 2.0 * rows * 64 * 128 * 3 + rows * (2 * 64 + 128));
  const Op& router = first(g, OpKind::kRouter);
  EXPECT_DOUBLE_EQ(router.bytes_weights, (8.0 * 128 + 8) * 2);
  const Op& attn = first(g, OpKind::kAttentionDecode);
  EXPECT_TRUE(attn.sinks);
  ModelSpec plain = m;
  plain.attn_sinks = false;
  const Op& attn0 = first(lowered(plain), OpKind::kAttentionDecode);
  EXPECT_FALSE(attn0.sinks);
  EXPECT_DOUBLE_EQ(attn.flops - attn0.flops, 16.0 * 2 * 8);
}

}  // namespace
}  // namespace duplex::compiler
