// FP8 releases of llm-compressor (HF quant_method "compressed-tensors", the FP8-dynamic scheme of RedHatAI's
// and neuralmagic's models) in the compiler: read from config.json as linear_dtype and expert_dtype
// fp8_channel (one scale per output channel), an FP8 KV cache from kv_cache_scheme, and what lowering and the
// xPU charge for them; and their INT8 siblings (the W8A8-INT8 scheme, format int-quantized: int8_channel).
#include <gtest/gtest.h>

#include <string>
#include <utility>

#include <fmt/format.h>

#include "config_errors.hpp"
#include "duplex/compiler/cost_model.hpp"
#include "duplex/compiler/hf_import.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/compiler/model_spec.hpp"
#include "hf_configs.hpp"

namespace duplex::compiler {
namespace {

using testing::hf_config_error;
using testing::llama31_8b;
using testing::model_yaml_error;

// A compressed-tensors QuantizationArgs object as llm-compressor writes it.
std::string args(const std::string& strategy, bool dynamic, const std::string& more = "") {
  return R"({"actorder": null, "block_structure": null, "dynamic": )" +
         std::string(dynamic ? "true" : "false") + R"(, "group_size": null, "num_bits": 8, "observer": ")" +
         (dynamic ? "" : "minmax") + R"(", "observer_kwargs": {}, "strategy": ")" + strategy +
         R"(", "symmetric": true, "type": "float")" + more + "}";
}

// RedHatAI's FP8-dynamic quantization_config (Meta-Llama-3.1-8B-Instruct-FP8-dynamic): one group, weights per
// channel, activations per token and dynamic, the LM head ignored. `group` and `top` replace or add fields.
std::string fp8_dynamic(const std::string& group = "", const std::string& top = "") {
  return R"({"config_groups": {"group_0": {"input_activations": )" + args("token", true) +
         R"(, "output_activations": null, "targets": ["Linear"], "weights": )" + args("channel", false) +
         group +
         R"(}}, "format": "float-quantized", "global_compression_ratio": 1.2405, "ignore": ["lm_head"],
         "kv_cache_scheme": null, "quant_method": "compressed-tensors", "quantization_status": "compressed")" +
         top + "}";
}

// Mixtral-8x7B's config.json in bfloat16, as these releases keep it, with `quantization`.
std::string mixtral(const std::string& quantization) {
  return testing::mixtral_8x7b(quantization, "bfloat16");
}

TEST(Fp8Channel, Fp8DynamicReleaseIsReadWithItsLinearLayersInFp8) {
  const ModelSpec m = import_hf_config(llama31_8b(fp8_dynamic()), "l.json");
  const ModelSpec bf16 = import_hf_config(llama31_8b("null"), "l.json");
  EXPECT_EQ(m.dtype, DType::kBf16);
  EXPECT_EQ(m.kv_dtype, DType::kBf16);
  EXPECT_EQ(m.linear_dtype, DType::kFp8Channel);
  EXPECT_EQ(m.params(), bf16.params());
  EXPECT_DOUBLE_EQ(dtype_bytes(DType::kFp8Channel), 1.0);
  // Every projection and FFN matrix at 1 byte; embeddings, LM head and norms at 2.
  const double quantized = static_cast<double>(m.linear_matrix_params());
  EXPECT_DOUBLE_EQ(quantized, 32.0 * (4096.0 * (4096 + 2 * 1024 + 4096) + 3.0 * 4096 * 14336));
  EXPECT_DOUBLE_EQ(m.weight_bytes(), quantized + 2.0 * (static_cast<double>(m.params()) - quantized));
  EXPECT_NEAR(m.weight_bytes() / 1e9, 9.08, 0.01);  // 6.98 G matrix parameters at 1 B, 1.05 G others at 2 B
}

// Mixtral's release (RedHatAI/Mixtral-8x7B-Instruct-v0.1-FP8-dynamic style) ignores its routers by regex:
// experts and projections FP8, the routers BF16.
TEST(Fp8Channel, MoeReleaseKeepsItsRoutersInTheirDtype) {
  const ModelSpec m = import_hf_config(
      mixtral(fp8_dynamic("", R"(, "ignore": ["lm_head", "re:.*block_sparse_moe.gate$"])")), "m.json");
  EXPECT_EQ(m.expert_dtype, DType::kFp8Channel);
  EXPECT_EQ(m.linear_dtype, DType::kFp8Channel);
  const ModelSpec listed = import_hf_config(
      mixtral(fp8_dynamic("", R"(, "ignore": ["lm_head", "model.layers.0.block_sparse_moe.gate"])")),
      "m.json");
  EXPECT_EQ(listed.expert_dtype, DType::kFp8Channel);
  const BatchState batch = BatchState::decode_batch(16, 1024);
  const ParallelLayout layout = ParallelLayout::make(m, load_system("gpu"), 4);
  int fp8_ops = 0;
  for (const Op& o : lower(m, batch, layout, Routing{}).ops) {
    if (o.kind == OpKind::kExpertFfn || o.kind == OpKind::kQkvProj || o.kind == OpKind::kOProj) {
      EXPECT_EQ(o.dtype, DType::kFp8Channel) << o.name;
      ++fp8_ops;
    }
    if (o.kind == OpKind::kRouter || o.kind == OpKind::kLmHead) {
      EXPECT_EQ(o.dtype, DType::kBf16) << o.name;
    }
  }
  EXPECT_GE(fp8_ops, 32 * 3);
}

// Layer 0's o_proj of m in a 4096-token prefill on `gpu`: its xPU compute time (launch excluded, no bytes:
// compute-bound) over the same op's in BF16; 0 when the step has none. `dtype` is the op's weights' format.
double compute_time_over_bf16(const ModelSpec& m, const SystemSpec& gpu, DType dtype) {
  const ParallelLayout layout = ParallelLayout::make(m, gpu, 1);
  const CostModel cost(gpu, layout);
  for (const Op& o : lower(m, BatchState::decode_batch(0, 0, 4096), layout, Routing{}).ops) {
    if (o.layer != 0 || o.kind != OpKind::kOProj) continue;
    EXPECT_EQ(o.dtype, dtype);
    Op quantized = o, bf16 = o;
    quantized.bytes_weights = bf16.bytes_weights = 0;  // compute-bound either way
    bf16.dtype = DType::kBf16;
    const double launch = gpu.xpu.launch_overhead.si();
    return (cost.xpu_time(quantized).si() - launch) / (cost.xpu_time(bf16).si() - launch);
  }
  return 0;
}

// On the xPU an fp8_channel weight GEMM runs W8A8 at peak_fp8, as fp8_block128 does.
TEST(Fp8Channel, XpuRunsItsWeightGemmsAtTheFp8Rate) {
  const SystemSpec gpu = load_system("gpu");
  EXPECT_NEAR(
      compute_time_over_bf16(import_hf_config(llama31_8b(fp8_dynamic()), "l.json"), gpu, DType::kFp8Channel),
      gpu.xpu.peak_fp16.si() / gpu.xpu.peak_fp8.si(), 1e-9);
}

// llm-compressor's FP8 scheme (neuralmagic/Meta-Llama-3.1-8B-Instruct-FP8 style): weights one scale per
// tensor, input activations one static (calibrated) scale per tensor: fp8_tensor, 1 byte per weight, run
// W8A8 at the FP8 rate; per-token dynamic activations beside per-tensor weights alike.
TEST(Fp8Tensor, StaticFp8ReleaseIsReadWithItsLinearLayersInFp8) {
  const std::string fp8_static = fp8_dynamic(R"(, "weights": )" + args("tensor", false) +
                                             R"(, "input_activations": )" + args("tensor", false));
  const ModelSpec m = import_hf_config(llama31_8b(fp8_static), "l.json");
  const ModelSpec channel = import_hf_config(llama31_8b(fp8_dynamic()), "l.json");
  EXPECT_EQ(m.linear_dtype, DType::kFp8Tensor);
  EXPECT_EQ(m.expert_dtype, DType::kFp8Tensor);
  EXPECT_TRUE(m.static_input_scales);  // each module stores its calibrated input_scale
  EXPECT_EQ(m.dtype, DType::kBf16);
  EXPECT_DOUBLE_EQ(dtype_bytes(DType::kFp8Tensor), 1.0);
  EXPECT_DOUBLE_EQ(m.weight_bytes(), channel.weight_bytes());  // one scale per matrix or per row: left out
  const SystemSpec gpu = load_system("gpu");
  EXPECT_NEAR(compute_time_over_bf16(m, gpu, DType::kFp8Tensor),
              gpu.xpu.peak_fp16.si() / gpu.xpu.peak_fp8.si(), 1e-9);
  const std::string dynamic_tokens = fp8_dynamic(R"(, "weights": )" + args("tensor", false));
  const ModelSpec per_token = import_hf_config(llama31_8b(dynamic_tokens), "l.json");
  EXPECT_EQ(per_token.linear_dtype, DType::kFp8Tensor);
  EXPECT_FALSE(per_token.static_input_scales);
  // Mixtral: its experts per tensor too, the routers (ignored) in BF16.
  const ModelSpec moe =
      import_hf_config(mixtral(fp8_dynamic(R"(, "weights": )" + args("tensor", false) +
                                               R"(, "input_activations": )" + args("tensor", false),
                                           R"(, "ignore": ["lm_head", "re:.*block_sparse_moe.gate$"])")),
                       "m.json");
  EXPECT_EQ(moe.expert_dtype, DType::kFp8Tensor);
}

// AutoFP8's releases (quant_method "fp8" without weight_block_size: neuralmagic's first FP8 models): one
// scale per tensor, activation_scheme static or dynamic.
TEST(Fp8Tensor, AutoFp8ReleasesAreReadPerTensor) {
  for (const char* scheme : {"static", "dynamic"}) {
    const ModelSpec m = import_hf_config(
        llama31_8b(fmt::format(
            R"({{"quant_method": "fp8", "activation_scheme": "{}", "ignored_layers": ["lm_head"]}})",
            scheme)),
        "l.json");
    EXPECT_EQ(m.linear_dtype, DType::kFp8Tensor) << scheme;
    EXPECT_EQ(m.static_input_scales, std::string(scheme) == "static") << scheme;
  }
  const std::string dense = "name: x\nlayers: 2\nhidden: 256\nheads: 4\nvocab: 10\nffn: 512\ndtype: bf16\n";
  EXPECT_EQ(read_model(ConfigNode::parse(dense + "linear_dtype: fp8_tensor\n", "x.yaml")).linear_dtype,
            DType::kFp8Tensor);
  EXPECT_NE(
      model_yaml_error(dense + "kv_dtype: fp8_tensor\n").find("kv_dtype: fp8_tensor is a weight format"),
      std::string::npos);
  // Our YAML states the scheme (default dynamic); static only beside fp8_tensor weights.
  EXPECT_TRUE(
      read_model(ConfigNode::parse(dense + "linear_dtype: fp8_tensor\nactivation_scheme: static\n", "x.yaml"))
          .static_input_scales);
  EXPECT_FALSE(
      read_model(ConfigNode::parse(dense + "linear_dtype: fp8_tensor\n", "x.yaml")).static_input_scales);
  EXPECT_NE(model_yaml_error(dense + "linear_dtype: fp8_channel\nactivation_scheme: static\n")
                .find("activation_scheme: static with linear_dtype fp8_channel; expected fp8_tensor weights"),
            std::string::npos);
  EXPECT_NE(model_yaml_error(dense + "linear_dtype: fp8_tensor\nactivation_scheme: calibrated\n")
                .find("activation_scheme"),
            std::string::npos);
}

// kv_cache_scheme (llm-compressor's FP8 KV cache: per-tensor static k_scale / v_scale) puts K / V in FP8.
TEST(Fp8Channel, KvCacheSchemeStoresTheCacheInFp8) {
  const ModelSpec m = import_hf_config(
      llama31_8b(fp8_dynamic("", R"(, "kv_cache_scheme": )" + args("tensor", false))), "l.json");
  EXPECT_EQ(m.kv_dtype, DType::kFp8);
  EXPECT_EQ(m.linear_dtype, DType::kFp8Channel);
}

TEST(Fp8Channel, OtherSchemesAreRefusedNamingTheField) {
  const std::string q = "quantization_config.";
  const std::string g = q + "config_groups.group_0.";
  const std::pair<std::string, std::string> cases[] = {
      {fp8_dynamic("", R"(, "format": "int-quantized")"), g + "weights.type: \"float\" is not modelled"},
      {fp8_dynamic("", R"(, "format": "marlin-24")"), q + "format: \"marlin-24\" is not modelled"},
      {fp8_dynamic("", R"(, "format": "pack-quantized")"), g + "weights.type: \"float\" is not modelled"},
      {fp8_dynamic("", R"(, "format": null)"), q + "format: missing"},
      {fp8_dynamic("", R"(, "quantization_status": "frozen")"),
       q + "quantization_status: \"frozen\": the checkpoint does not store its weights quantized"},
      {fp8_dynamic("", R"(, "sparsity_config": {"format": "sparse-24-bitmask"})"),
       q + "sparsity_config: is set: sparse weights are not modelled"},
      {fp8_dynamic(R"(, "weights": )" + args("tensor", false) + R"(, "input_activations": )" +
                   args("token", false)),
       g + "input_activations.dynamic: false (static scales) is not modelled"},
      {fp8_dynamic(R"(, "weights": )" + args("tensor", false) + R"(, "input_activations": )" +
                   args("tensor", true)),
       g + "input_activations.dynamic: true is not modelled"},
      {fp8_dynamic(R"(, "weights": )" + args("block", false)),
       g + "weights.strategy: \"block\" is not modelled"},
      {fp8_dynamic(R"(, "weights": )" + args("channel", false, R"(, "type": "int")")),
       g + "weights.type: \"int\" is not modelled"},
      {fp8_dynamic(R"(, "weights": )" + args("channel", false, R"(, "num_bits": 4)")),
       g + "weights.num_bits: 4 bits are not modelled"},
      {fp8_dynamic(R"(, "weights": )" + args("channel", false, R"(, "symmetric": false)")),
       g + "weights.symmetric: false (a zero point) is not modelled"},
      {fp8_dynamic(R"(, "input_activations": null)"),
       g + "input_activations: absent or null: FP8 weights under 16-bit activations (weight-only) are not "
           "modelled"},
      {fp8_dynamic(R"(, "input_activations": )" + args("tensor", false)),
       g + "input_activations.strategy: \"tensor\" is not modelled"},
      {fp8_dynamic(R"(, "input_activations": )" + args("token", false)),
       g + "input_activations.dynamic: false (static scales) is not modelled"},
      {fp8_dynamic(R"(, "output_activations": )" + args("token", true)),
       g + "output_activations: is set: quantized outputs are not modelled"},
      {fp8_dynamic(R"(, "targets": ["Linear", "Embedding"])"),
       g + "targets: [\"Linear\",\"Embedding\"] is not modelled"},
      {fp8_dynamic("", R"(, "ignore": ["lm_head", "re:.*self_attn.*"])"),
       q + "ignore[1]: \"re:.*self_attn.*\": a projection left unquantized is not modelled"},
      {fp8_dynamic("", R"(, "ignore": ["re:.*mlp.gate"])"),
       q + "ignore[0]: \"re:.*mlp.gate\": a projection left unquantized is not modelled"},
      {fp8_dynamic("", R"(, "ignore": ["model.layers.0.mlp.down_proj"])"),
       q + "ignore[0]: \"model.layers.0.mlp.down_proj\""},
      {fp8_dynamic("", R"(, "kv_cache_scheme": )" + args("tensor", false, R"(, "type": "int")")),
       q + "kv_cache_scheme.type: \"int\" is not modelled"},
      {R"({"quant_method": "compressed-tensors", "format": "float-quantized", "config_groups": {}})",
       q + "config_groups: has 0 groups: several schemes in one model are not modelled"},
      {R"({"quant_method": "compressed-tensors", "format": "float-quantized"})",
       q + "config_groups: missing required field"},
  };
  for (const auto& [quantization, expected] : cases) {
    const std::string error = hf_config_error(llama31_8b(quantization));
    EXPECT_NE(error.find("config.json: " + expected), std::string::npos) << quantization << "\n" << error;
  }
}

// RedHatAI's W8A8-INT8 quantization_config (Meta-Llama-3.1-8B-Instruct-quantized.w8a8): as FP8-dynamic's with
// format int-quantized and 8-bit int weights (per channel) and activations (per token, dynamic).
std::string w8a8(const std::string& group = "", const std::string& top = "") {
  const std::string kInt = R"(, "type": "int")";
  return R"({"config_groups": {"group_0": {"input_activations": )" + args("token", true, kInt) +
         R"(, "output_activations": null, "targets": ["Linear"], "weights": )" +
         args("channel", false, kInt) + group +
         R"(}}, "format": "int-quantized", "global_compression_ratio": 1.46, "ignore": ["lm_head"],
         "kv_cache_scheme": null, "quant_method": "compressed-tensors", "quantization_status": "compressed")" +
         top + "}";
}

// A W8A8-INT8 release: every projection, FFN and expert matrix int8_channel at 1 byte per weight (as FP8's),
// the routers and LM head in the model's dtype; on the xPU its weight GEMMs run at peak_int8.
TEST(Int8Channel, W8a8ReleaseIsReadAndRunsOnTheInt8TensorCores) {
  const ModelSpec m = import_hf_config(llama31_8b(w8a8()), "l.json");
  const ModelSpec fp8 = import_hf_config(llama31_8b(fp8_dynamic()), "l.json");
  EXPECT_EQ(m.linear_dtype, DType::kInt8Channel);
  EXPECT_EQ(m.kv_dtype, DType::kBf16);
  EXPECT_DOUBLE_EQ(m.weight_bytes(), fp8.weight_bytes());
  EXPECT_EQ(dtype_name(DType::kInt8Channel), "int8_channel");
  EXPECT_EQ(parse_dtype("int8_channel"), DType::kInt8Channel);
  EXPECT_TRUE(matrix_format(DType::kInt8Channel));
  const ModelSpec moe = import_hf_config(
      mixtral(w8a8("", R"(, "ignore": ["lm_head", "re:.*block_sparse_moe.gate$"])")), "m.json");
  EXPECT_EQ(moe.expert_dtype, DType::kInt8Channel);
  SystemSpec gpu = load_system("gpu");
  gpu.xpu.peak_int8 = gpu.xpu.peak_fp8 * 0.5;  // a device whose INT8 rate differs, to tell them apart
  EXPECT_NEAR(compute_time_over_bf16(m, gpu, DType::kInt8Channel),
              gpu.xpu.peak_fp16.si() / gpu.xpu.peak_int8.si(), 1e-9);
  EXPECT_DOUBLE_EQ(load_system("gpu").xpu.peak_int8.si(), 1978.9e12);  // H100 SXM5 dense INT8
}

TEST(Int8Channel, OtherInt8SchemesAreRefusedNamingTheField) {
  const std::string q = "quantization_config.";
  const std::string g = q + "config_groups.group_0.";
  const std::string kInt = R"(, "type": "int")";
  const std::pair<std::string, std::string> cases[] = {
      {w8a8(R"(, "input_activations": null)"),
       g + "input_activations: absent or null: INT8 weights under 16-bit activations (weight-only) are not "
           "modelled"},
      {w8a8(R"(, "input_activations": )" + args("token", true, kInt + R"(, "symmetric": false)")),
       g + "input_activations.symmetric: false (a zero point) is not modelled"},
      {w8a8(R"(, "input_activations": )" + args("tensor", false, kInt)),
       g + "input_activations.strategy: \"tensor\" is not modelled"},
      {w8a8(R"(, "weights": )" + args("group", false, kInt + R"(, "group_size": 128)")),
       g + "weights.strategy: \"group\" is not modelled"},
      {w8a8(R"(, "weights": )" + args("channel", false, kInt + R"(, "num_bits": 4)")),
       g + "weights.num_bits: 4 bits are not modelled"},
      {w8a8(R"(, "weights": )" + args("channel", false)), g + "weights.type: \"float\" is not modelled"},
  };
  for (const auto& [quantization, expected] : cases) {
    const std::string error = hf_config_error(llama31_8b(quantization));
    EXPECT_NE(error.find("config.json: " + expected), std::string::npos) << quantization << "\n" << error;
  }
}

TEST(Fp8Channel, YamlKeys) {
  const std::string dense = "name: x\nlayers: 2\nhidden: 256\nheads: 4\nvocab: 10\nffn: 512\ndtype: bf16\n";
  EXPECT_EQ(read_model(ConfigNode::parse(dense + "linear_dtype: fp8_channel\n", "x.yaml")).linear_dtype,
            DType::kFp8Channel);
  EXPECT_NE(
      model_yaml_error(dense + "kv_dtype: fp8_channel\n").find("kv_dtype: fp8_channel is a weight format"),
      std::string::npos);
  EXPECT_NE(
      model_yaml_error("name: x\nlayers: 2\nhidden: 256\nheads: 4\nvocab: 10\nffn: 512\ndtype: fp8_channel\n")
          .find("dtype: fp8_channel is a matrix format"),
      std::string::npos);
}

}  // namespace
}  // namespace duplex::compiler
