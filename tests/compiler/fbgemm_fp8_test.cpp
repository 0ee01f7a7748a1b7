// Meta's Llama 3.1 FP8 releases (transformers' FbgemmFp8Config, HF quant_method "fbgemm_fp8") in the
// compiler: FP8 weights with one scale per output channel (fp8_channel) in the FFNs, the attention
// projections and the first and last layers' FFNs left in BF16 by modules_to_not_convert
// (unquantized_attention, unquantized_ffn_layers), what lowering and memory charge for them, the YAML keys,
// and the configurations refused, naming the field.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "config_errors.hpp"
#include "duplex/compiler/hf_import.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/compiler/model_spec.hpp"
#include "hf_configs.hpp"

namespace duplex::compiler {
namespace {

using testing::hf_config_error;
using testing::model_yaml_error;

// The modules Meta's release keeps in BF16: every layer's attention projections, the first and last layers'
// FFN matrices, and the LM head.
std::vector<std::string> meta_kept(int layers) {
  std::vector<std::string> kept;
  for (int l = 0; l < layers; ++l) {
    if (l == 0 || l == layers - 1)
      for (const char* n : {"down_proj", "gate_proj", "up_proj"})
        kept.push_back(fmt::format("model.layers.{}.mlp.{}", l, n));
    for (const char* n : {"k_proj", "o_proj", "q_proj", "v_proj"})
      kept.push_back(fmt::format("model.layers.{}.self_attn.{}", l, n));
  }
  kept.push_back("lm_head");
  return kept;
}

nlohmann::json fbgemm(const nlohmann::json& kept) {
  return {{"activation_scale_ub", 1200.0}, {"modules_to_not_convert", kept}, {"quant_method", "fbgemm_fp8"}};
}

// meta-llama/Llama-3.1-405B-Instruct-FP8's config.json, trimmed to the fields the importer reads, with
// `quantization`; `layers` fewer for the refusals' smaller lists.
std::string llama31_405b(const nlohmann::json& quantization, int layers = 126) {
  nlohmann::json c = {{"model_type", "llama"},      {"hidden_size", 16384},
                      {"intermediate_size", 53248}, {"num_hidden_layers", layers},
                      {"num_attention_heads", 128}, {"num_key_value_heads", 8},
                      {"vocab_size", 128256},       {"torch_dtype", "bfloat16"}};
  c["quantization_config"] = quantization;
  return c.dump();
}

TEST(FbgemmFp8, MetasReleaseKeepsAttentionAndItsEdgeLayersFfnsInBf16) {
  const ModelSpec m = import_hf_config(llama31_405b(fbgemm(meta_kept(126))), "l.json");
  EXPECT_EQ(m.dtype, DType::kBf16);
  EXPECT_EQ(m.linear_dtype, DType::kFp8Channel);
  EXPECT_TRUE(m.unquantized_attention);
  EXPECT_EQ(m.unquantized_ffn_layers, (std::vector<int>{0, 125}));
  EXPECT_DOUBLE_EQ(m.activation_scale_ub, 1200.0);
  EXPECT_EQ(m.attention_matrix_dtype(), DType::kBf16);
  EXPECT_EQ(m.dense_ffn_matrix_dtype(0), DType::kBf16);
  EXPECT_EQ(m.dense_ffn_matrix_dtype(1), DType::kFp8Channel);
  EXPECT_EQ(m.dense_ffn_matrix_dtype(125), DType::kBf16);
  // 124 FFNs of 3 x 16384 x 53248 in FP8 (1 byte a weight), the rest in BF16: 405.9e9 weights, 487 GB
  // against 812 GB.
  const std::int64_t fp8 = 124LL * 3 * 16384 * 53248;
  EXPECT_EQ(m.linear_matrix_params(), fp8);
  EXPECT_DOUBLE_EQ(m.weight_bytes(), static_cast<double>(fp8) + 2.0 * static_cast<double>(m.params() - fp8));
  const ParallelLayout layout = ParallelLayout::make(m, load_system("gpu"), 8);
  int fp8_ffns = 0, bf16 = 0;
  for (const Op& o : lower(m, BatchState::decode_batch(16, 1024), layout, Routing{}).ops) {
    if (o.kind != OpKind::kQkvProj && o.kind != OpKind::kOProj && o.kind != OpKind::kDenseFfn) continue;
    const bool quantized = o.kind == OpKind::kDenseFfn && o.layer != 0 && o.layer != 125;
    EXPECT_EQ(o.dtype, quantized ? DType::kFp8Channel : DType::kBf16) << o.name << " " << o.layer;
    EXPECT_NEAR(o.bytes_weights / (static_cast<double>(o.n) * static_cast<double>(o.k) * o.matrices),
                quantized ? 1.0 : 2.0, 1e-12)
        << o.name << " " << o.layer;
    (quantized ? fp8_ffns : bf16) += 1;
  }
  EXPECT_EQ(fp8_ffns, 124);
  EXPECT_EQ(bf16, 126 * 2 + 2);
}

TEST(FbgemmFp8, WithoutModulesToNotConvertEveryProjectionIsFp8) {
  for (const nlohmann::json& kept : {nlohmann::json(), nlohmann::json::array({"lm_head"})}) {
    const ModelSpec m = import_hf_config(llama31_405b(fbgemm(kept), 4), "l.json");
    EXPECT_EQ(m.linear_dtype, DType::kFp8Channel);
    EXPECT_FALSE(m.unquantized_attention);
    EXPECT_TRUE(m.unquantized_ffn_layers.empty());
    EXPECT_EQ(m.attention_matrix_dtype(), DType::kFp8Channel);
  }
  // Phi-3's fused projections are named as its modules are.
  const nlohmann::json phi3 = {
      {"model_type", "phi3"},
      {"hidden_size", 256},
      {"intermediate_size", 512},
      {"num_hidden_layers", 2},
      {"num_attention_heads", 4},
      {"num_key_value_heads", 4},
      {"vocab_size", 1000},
      {"torch_dtype", "bfloat16"},
      {"quantization_config", fbgemm({"model.layers.0.self_attn.qkv_proj", "model.layers.0.self_attn.o_proj",
                                      "model.layers.1.self_attn.qkv_proj", "model.layers.1.self_attn.o_proj",
                                      "model.layers.1.mlp.gate_up_proj", "model.layers.1.mlp.down_proj"})}};
  const ModelSpec m = import_hf_config(phi3.dump(), "phi3.json");
  EXPECT_TRUE(m.unquantized_attention);
  EXPECT_EQ(m.unquantized_ffn_layers, std::vector<int>{1});
}

TEST(FbgemmFp8, OtherConfigurationsAreRefusedNamingTheField) {
  const std::string q = "config.json: quantization_config.";
  auto without = [](std::vector<std::string> kept, const std::string& name) {
    std::erase(kept, name);
    return kept;
  };
  nlohmann::json no_bound = fbgemm(nullptr);
  no_bound.erase("activation_scale_ub");
  nlohmann::json zero_bound = fbgemm(nullptr);
  zero_bound["activation_scale_ub"] = 0;
  const std::pair<nlohmann::json, std::string> cases[] = {
      {no_bound, q + "activation_scale_ub: missing"},
      {zero_bound, q + "activation_scale_ub: is 0"},
      {fbgemm(without(meta_kept(4), "model.layers.2.self_attn.v_proj")),
       q + "modules_to_not_convert: names 3 of layer 2's 4 attention projections: a group partly in FP8"},
      {fbgemm(without(meta_kept(4), "model.layers.3.mlp.up_proj")),
       q + "modules_to_not_convert: names 2 of layer 3's 3 FFN matrices"},
      {fbgemm({"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.k_proj",
               "model.layers.1.self_attn.v_proj", "model.layers.1.self_attn.o_proj"}),
       q + "modules_to_not_convert: keeps the attention projections of 1 of 4 layers in bf16: per-layer"},
      {fbgemm({"lm_head", "model.layers.1.mlp"}), q + "modules_to_not_convert[1]: \"model.layers.1.mlp\" is "
                                                      "not a module of this model left unquantized"},
      {fbgemm({"model.layers.4.mlp.up_proj"}),
       q + "modules_to_not_convert[0]: \"model.layers.4.mlp.up_proj\""},
      {fbgemm({"model.layers.0.mlp.c_fc"}), q + "modules_to_not_convert[0]: \"model.layers.0.mlp.c_fc\""},
  };
  for (const auto& [quantization, expected] : cases) {
    const std::string error = hf_config_error(llama31_405b(quantization, 4));
    EXPECT_NE(error.find(expected), std::string::npos) << quantization.dump() << "\n" << error;
  }
  const std::string moe = hf_config_error(testing::mixtral_8x7b(fbgemm(nullptr).dump()));
  EXPECT_NE(moe.find(q + "quant_method: fbgemm_fp8 on model_type \"mixtral\" is not modelled"),
            std::string::npos)
      << moe;
}

TEST(FbgemmFp8, YamlKeys) {
  const std::string dense = "name: x\nlayers: 4\nhidden: 64\nheads: 4\nffn: 128\nvocab: 10\ndtype: bf16\n";
  const ModelSpec m =
      read_model(ConfigNode::parse(dense + "linear_dtype: fp8_channel\nunquantized_attention: true\n"
                                           "unquantized_ffn_layers: [0, 3]\nactivation_scale_ub: 1200\n",
                                   "x.yaml"));
  EXPECT_TRUE(m.unquantized_attention);
  EXPECT_EQ(m.unquantized_ffn_layers, (std::vector<int>{0, 3}));
  EXPECT_DOUBLE_EQ(m.activation_scale_ub, 1200.0);
  EXPECT_EQ(m.linear_matrix_params(), 2LL * 3 * 64 * 128);
  const std::pair<std::string, std::string> cases[] = {
      {"unquantized_attention: true\n",
       "x.yaml: unquantized_attention: keeps matrices in dtype, but linear_dtype is dtype (bf16)"},
      {"linear_dtype: int4_awq\nunquantized_ffn_layers: [1, 1]\n",
       "unquantized_ffn_layers: lists layer 1 twice"},
      {"linear_dtype: int4_awq\nunquantized_ffn_layers: [4]\n",
       "unquantized_ffn_layers[0]: \"4\" is not a layer"},
      {"linear_dtype: int4_awq\nactivation_scale_ub: 1200\n",
       "activation_scale_ub: is set with linear_dtype int4_awq; expected fp8_channel"},
      {"linear_dtype: fp8_channel\nactivation_scale_ub: -1\n",
       "activation_scale_ub: must be a finite number >= 0"},
  };
  for (const auto& [yaml, expected] : cases) {
    const std::string error = model_yaml_error(dense + yaml);
    EXPECT_NE(error.find(expected), std::string::npos) << yaml << "\n" << error;
  }
  const std::string moe = model_yaml_error(
      "name: x\nlayers: 2\nhidden: 64\nheads: 4\nffn: 128\nvocab: 10\nexperts: 4\ntop_k: 2\nexpert_ffn: 32\n"
      "linear_dtype: fp8_channel\nunquantized_ffn_layers: [1]\n");
  EXPECT_NE(moe.find("unquantized_ffn_layers: lists layer 1, an MoE layer"), std::string::npos) << moe;
}

}  // namespace
}  // namespace duplex::compiler
