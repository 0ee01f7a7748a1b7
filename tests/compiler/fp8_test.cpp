// Block-scaled FP8 releases in the compiler: HF quant_method "fp8" (DeepSeek-V3 / R1, Qwen3's FP8 models)
// read from config.json as linear_dtype and expert_dtype fp8_block128, our YAML keys, and what lowering and
// the weight bytes charge for them.
#include <gtest/gtest.h>

#include <string>

#include "config_errors.hpp"
#include "duplex/compiler/cost_model.hpp"
#include "duplex/compiler/hf_import.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/compiler/model_spec.hpp"

namespace duplex::compiler {
namespace {

using testing::hf_config_error;
using testing::model_yaml_error;

// deepseek-ai/DeepSeek-V3's config.json, trimmed to the fields the importer reads, with its release's
// quantization_config (or `quantization` in its place).
std::string deepseek_v3(const std::string& quantization =
                            R"("quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                               "quant_method": "fp8", "weight_block_size": [128, 128]})") {
  return R"({"model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432,
    "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128,
    "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
    "moe_layer_freq": 1, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "vocab_size": 129280, "torch_dtype": "bfloat16", )" +
         quantization + "}";
}

// A small Llama config.json with `quantization`.
std::string llama(const std::string& quantization) {
  return R"({"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
    "num_attention_heads": 4, "vocab_size": 100, "torch_dtype": "bfloat16", "quantization_config": )" +
         quantization + "}";
}

TEST(Fp8Block, DeepSeekV3ReleaseIsReadWithItsMatricesInFp8) {
  const ModelSpec m = import_hf_config(deepseek_v3(), "ds.json");
  EXPECT_EQ(m.dtype, DType::kBf16);
  EXPECT_EQ(m.linear_dtype, DType::kFp8Block128);
  EXPECT_EQ(m.expert_dtype, DType::kFp8Block128);
  const ModelSpec bf16 = import_hf_config(deepseek_v3(R"("quantization_config": null)"), "ds.json");
  EXPECT_EQ(bf16.linear_dtype, DType::kBf16);
  EXPECT_EQ(bf16.expert_dtype, DType::kBf16);
  EXPECT_EQ(m.params(), bf16.params());
  // Every matrix but the embeddings and the routers in FP8 with an FP32 scale per 128 x 128 block; those, the
  // norms and the MLA's low-rank norms in BF16.
  const double quantized = static_cast<double>(m.expert_matrix_params() + m.linear_matrix_params());
  const double rest = static_cast<double>(m.params()) - quantized;
  const double tables = 2.0 * 129280 * 7168, routers = 58.0 * 256 * 7168;
  const double norms = 61.0 * (2 * 7168 + 1536 + 512) + 7168;
  EXPECT_DOUBLE_EQ(rest, tables + routers + norms);
  EXPECT_DOUBLE_EQ(dtype_bytes(DType::kFp8Block128), 1.0 + 4.0 / 16384);
  EXPECT_DOUBLE_EQ(m.weight_bytes(), rest * 2 + quantized * (1.0 + 4.0 / 16384));
  EXPECT_NEAR(m.weight_bytes() / bf16.weight_bytes(), 0.503, 0.002);
  // The deepseek-v3-fp8 preset states the release: the same parameters and formats, hence bytes.
  const ModelSpec preset = load_model("deepseek-v3-fp8");
  EXPECT_EQ(preset.params(), m.params());
  EXPECT_EQ(preset.linear_dtype, m.linear_dtype);
  EXPECT_EQ(preset.expert_dtype, m.expert_dtype);
  EXPECT_EQ(preset.dtype, m.dtype);
  EXPECT_DOUBLE_EQ(preset.weight_bytes(), m.weight_bytes());
}

// Lowering charges each op its weights' format: projections, dense FFNs and experts at FP8 (the op's dtype,
// which the cycle-level PIM timing streams), the router and the LM head at BF16.
TEST(Fp8Block, LoweringChargesEachOpItsWeightsFormat) {
  const ModelSpec fp8 = import_hf_config(deepseek_v3(), "ds.json");
  const ModelSpec bf16 = import_hf_config(deepseek_v3(R"("quantization_config": null)"), "ds.json");
  const BatchState batch = BatchState::decode_batch(8, 1024);
  const ParallelLayout layout = ParallelLayout::make(fp8, load_system("gpu"), 8);
  const Graph a = lower(fp8, batch, layout, Routing{});
  const Graph b = lower(bf16, batch, layout, Routing{});
  ASSERT_EQ(a.ops.size(), b.ops.size());
  int fp8_ops = 0;
  for (std::size_t i = 0; i < a.ops.size(); ++i) {
    const Op& x = a.ops[i];
    const Op& y = b.ops[i];
    ASSERT_EQ(x.name, y.name);
    const bool quantized = x.kind == OpKind::kQkvProj || x.kind == OpKind::kOProj ||
                           x.kind == OpKind::kDenseFfn || x.kind == OpKind::kExpertFfn ||
                           x.kind == OpKind::kSharedExpertFfn;
    if (quantized) {
      ++fp8_ops;
      EXPECT_EQ(x.dtype, DType::kFp8Block128) << x.name;
      EXPECT_DOUBLE_EQ(x.bytes_weights, y.bytes_weights * (1.0 + 4.0 / 16384) / 2) << x.name;
    } else if (x.kind != OpKind::kAttentionDecode && x.kind != OpKind::kAttentionPrefill) {
      EXPECT_EQ(x.bytes_weights, y.bytes_weights) << x.name;
    }
    EXPECT_EQ(x.flops, y.flops) << x.name;
  }
  EXPECT_GE(fp8_ops,
            61 * 2 + 3 + 58 * 2);  // qkv and o per layer, 3 dense FFNs, >= 1 routed + shared per MoE layer
}

// On the xPU an FP8 weight GEMM runs on the FP8 tensor cores (W8A8, peak_fp8), the router and LM head at the
// FP16 rate: a compute-bound prefill projection takes half the time (H100: 1979 vs 989 TFLOPS dense).
TEST(Fp8Block, XpuRunsFp8WeightGemmsAtTheFp8Rate) {
  const ModelSpec fp8 = import_hf_config(deepseek_v3(), "ds.json");
  const SystemSpec gpu = load_system("gpu");
  const ParallelLayout layout = ParallelLayout::make(fp8, gpu, 8);
  const CostModel cost(gpu, layout);
  const Graph g = lower(fp8, BatchState::decode_batch(0, 0, 4096), layout, Routing{});
  bool checked = false;
  for (const Op& o : g.ops) {
    if (o.layer != 3 || (o.kind != OpKind::kOProj && o.kind != OpKind::kRouter)) continue;
    Op bf16 = o;
    bf16.dtype = DType::kBf16;
    bf16.bytes_weights = 0;  // compute-bound either way
    Op fp8_op = o;
    fp8_op.bytes_weights = 0;
    const double launch = gpu.xpu.launch_overhead.si();
    const double ratio = (cost.xpu_time(fp8_op).si() - launch) / (cost.xpu_time(bf16).si() - launch);
    if (o.kind == OpKind::kOProj) {
      EXPECT_NEAR(ratio, gpu.xpu.peak_fp16.si() / gpu.xpu.peak_fp8.si(), 1e-9) << o.name;
      checked = true;
    } else {
      EXPECT_EQ(o.dtype, DType::kBf16);
      EXPECT_NEAR(ratio, 1.0, 1e-12) << o.name;
    }
  }
  EXPECT_TRUE(checked);
}

// Qwen3's FP8 releases name their routers (and the LM head) in modules_to_not_convert: kept in BF16 anyway.
TEST(Fp8Block, ModulesLeftInTheirDtypeMayBeRoutersAndTables) {
  const ModelSpec m = import_hf_config(
      llama(R"({"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128], "scale_fmt": "ue8m0",
               "modules_to_not_convert": ["lm_head", "model.layers.0.mlp.gate", "model.embed_tokens"]})"),
      "q.json");
  EXPECT_EQ(m.linear_dtype, DType::kFp8Block128);
}

TEST(Fp8Block, OtherFormatsAreRefusedNamingTheField) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"quant_method": "fp8", "weight_block_size": [64, 64]})",
       "quantization_config.weight_block_size: [64,64] is not modelled"},
      {R"({"quant_method": "fp8", "activation_scheme": "static", "weight_block_size": [128, 128]})",
       "quantization_config.activation_scheme: \"static\" is not modelled beside weight_block_size (static "
       "scales of 128 x 128 blocks)"},
      {R"({"quant_method": "fp8", "fmt": "e5m2"})", "quantization_config.fmt: \"e5m2\" is not modelled"},
      {R"({"quant_method": "fp8", "activation_scheme": "calibrated"})",
       "quantization_config.activation_scheme: \"calibrated\" is not modelled; expected dynamic or static"},
      {R"({"quant_method": "fp8", "scale_fmt": "fp32"})",
       "quantization_config.scale_fmt: \"fp32\" is not modelled"},
      {R"({"quant_method": "fp8", "weight_block_size": [128, 128],
            "modules_to_not_convert": ["lm_head", "model.layers.1.self_attn.q_proj"]})",
       "quantization_config.modules_to_not_convert[1]: \"model.layers.1.self_attn.q_proj\": a projection "
       "left "
       "unquantized is not modelled"},
      {R"({"quant_method": "fp8", "weight_block_size": [128, 128], "ignored_layers": [3]})",
       "quantization_config.ignored_layers: holds 3"},
      {R"({"quant_method": "eetq"})", "quantization_config.quant_method: \"eetq\" is not modelled"},
      {R"({"quant_method": "mxfp4"})", "quantization_config.quant_method: \"mxfp4\" is not modelled"},
      {R"({"bits": 4})", "quantization_config.quant_method: missing"},
  };
  for (const auto& [quantization, expected] : cases) {
    const std::string error = hf_config_error(llama(quantization));
    EXPECT_NE(error.find(std::string("config.json: ") + expected), std::string::npos) << quantization << "\n"
                                                                                      << error;
  }
}

TEST(Fp8Block, YamlKeys) {
  const std::string dense = "name: x\nlayers: 2\nhidden: 256\nheads: 4\nvocab: 10\nffn: 512\ndtype: bf16\n";
  const ModelSpec m = read_model(ConfigNode::parse(dense + "linear_dtype: fp8_block128\n", "x.yaml"));
  EXPECT_EQ(m.linear_dtype, DType::kFp8Block128);
  EXPECT_EQ(m.expert_dtype, DType::kBf16);
  EXPECT_EQ(read_model(ConfigNode::parse(dense, "x.yaml")).linear_dtype, DType::kBf16);  // default: dtype
  EXPECT_NE(model_yaml_error(dense + "linear_dtype: fp7\n").find("x.yaml: linear_dtype"), std::string::npos);
  EXPECT_NE(model_yaml_error(
                "name: x\nlayers: 2\nhidden: 256\nheads: 4\nvocab: 10\nffn: 512\ndtype: fp8_block128\n")
                .find("dtype: fp8_block128 is a matrix format"),
            std::string::npos);
  EXPECT_NE(
      model_yaml_error(dense + "kv_dtype: fp8_block128\n").find("kv_dtype: fp8_block128 is a weight format"),
      std::string::npos);
}

}  // namespace
}  // namespace duplex::compiler
