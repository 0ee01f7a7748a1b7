// 4-bit weight releases (AutoAWQ's, HF quant_method "awq"; AutoGPTQ's / GPTQModel's, "gptq") in the compiler:
// read from config.json as linear_dtype and expert_dtype int4_awq / int4_gptq (4-bit integers, one FP16
// scale and 4-bit zero point per 128 inputs), and what lowering and the xPU charge for them.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>
#include <utility>

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

// hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4's quantization_config; `more` adds or replaces fields.
std::string awq(const std::string& more = "") {
  return R"({"bits": 4, "group_size": 128, "modules_to_not_convert": null, "quant_method": "awq",
    "version": "gemm", "zero_point": true)" +
         more + "}";
}

// hugging-quants/Meta-Llama-3.1-8B-Instruct-GPTQ-INT4's quantization_config; `more` adds or replaces fields.
std::string gptq(const std::string& more = "") {
  return R"({"bits": 4, "checkpoint_format": "gptq", "damp_percent": 0.01, "desc_act": true,
    "group_size": 128, "model_file_base_name": null, "model_name_or_path": null, "quant_method": "gptq",
    "static_groups": false, "sym": true, "true_sequential": true)" +
         more + "}";
}

// Mixtral-8x7B's config.json in float16, as these releases keep it, with `quantization`.
std::string mixtral(const std::string& quantization) {
  return testing::mixtral_8x7b(quantization, "float16");
}

// The config.json in float16, as these releases keep it.
std::string llama31_8b_fp16(const std::string& quantization) {
  return llama31_8b(quantization, "float16");
}

TEST(Int4Groups, AwqAndGptqReleasesAreReadWithTheirLinearLayersIn4Bits) {
  const ModelSpec fp16 = import_hf_config(llama31_8b_fp16("null"), "l.json");
  for (const auto& [config, dtype] :
       {std::pair{awq(), DType::kInt4Awq}, std::pair{gptq(), DType::kInt4Gptq}}) {
    const ModelSpec m = import_hf_config(llama31_8b_fp16(config), "l.json");
    EXPECT_EQ(m.dtype, DType::kFp16);
    EXPECT_EQ(m.kv_dtype, DType::kFp16);
    EXPECT_EQ(m.linear_dtype, dtype);
    EXPECT_EQ(m.params(), fp16.params());
    // 4 bits per weight, one 16-bit scale and one 4-bit zero per 128 (AutoAWQ / GPTQ: scales [in / 128, out]
    // in F16, qzeros [in / 128, out / 8] in I32).
    EXPECT_DOUBLE_EQ(dtype_bytes(dtype), (128 * 4 + 16 + 4) / 8.0 / 128);
    const double quantized = static_cast<double>(m.linear_matrix_params());
    EXPECT_DOUBLE_EQ(quantized, 32.0 * (4096.0 * (4096 + 2 * 1024 + 4096) + 3.0 * 4096 * 14336));
    EXPECT_DOUBLE_EQ(m.weight_bytes(),
                     quantized * dtype_bytes(dtype) + 2.0 * (static_cast<double>(m.params()) - quantized));
    EXPECT_NEAR(m.weight_bytes() / 1e9, 5.73, 0.01);  // 6.98 G matrix parameters at 0.52 B, 1.05 G at 2 B
  }
}

// TheBloke's Mixtral GPTQ releases list the layer's modules in 4 bits (optimum's
// modules_in_block_to_quantize, AutoGPTQ's MixtralGPTQForCausalLM): attention and experts, not the router.
TEST(Int4Groups, MixtralGptqListsItsQuantizedModules) {
  std::string experts;
  for (int e = 0; e < 8; ++e)
    experts += fmt::format(R"({}"block_sparse_moe.experts.{}.w1")", e ? ", " : "", e);
  const std::string listed =
      gptq(R"(, "modules_in_block_to_quantize": [["self_attn.k_proj", "self_attn.v_proj",
      "self_attn.q_proj"], ["self_attn.o_proj"], [)" +
           experts + "]]");
  EXPECT_EQ(import_hf_config(mixtral(listed), "m.json").expert_dtype, DType::kInt4Gptq);
  EXPECT_NE(
      hf_config_error(mixtral(gptq(R"(, "modules_in_block_to_quantize": [["self_attn.o_proj"]])")))
          .find("quantization_config.modules_in_block_to_quantize: names no expert: experts in 16 bits are "
                "not modelled"),
      std::string::npos);
}

// TheBloke/Mixtral-8x7B-Instruct-v0.1-AWQ keeps its routers ("gate") in FP16.
TEST(Int4Groups, MoeReleaseKeepsItsRoutersInTheirDtype) {
  const ModelSpec m = import_hf_config(mixtral(awq(R"(, "modules_to_not_convert": ["gate"])")), "m.json");
  EXPECT_EQ(m.expert_dtype, DType::kInt4Awq);
  EXPECT_EQ(m.linear_dtype, DType::kInt4Awq);
  const ParallelLayout layout = ParallelLayout::make(m, load_system("gpu"), 1);
  int quantized = 0;
  for (const Op& o : lower(m, BatchState::decode_batch(16, 1024), layout, Routing{}).ops) {
    if (o.kind == OpKind::kExpertFfn || o.kind == OpKind::kQkvProj || o.kind == OpKind::kOProj) {
      EXPECT_EQ(o.dtype, DType::kInt4Awq) << o.name;
      const double per_weight =
          o.bytes_weights / (static_cast<double>(o.n) * static_cast<double>(o.k) * o.matrices);
      EXPECT_NEAR(per_weight, dtype_bytes(DType::kInt4Awq), 1e-12) << o.name;
      ++quantized;
    }
    if (o.kind == OpKind::kRouter || o.kind == OpKind::kLmHead) {
      EXPECT_EQ(o.dtype, DType::kFp16) << o.name;
    }
  }
  EXPECT_GE(quantized, 32 * 3);
}

// On the xPU a 4-bit weight GEMM runs W4A16: its weights dequantized to FP16 on the way to the tensor cores
// (Marlin's, AWQ's kernels), at peak_fp16.
TEST(Int4Groups, XpuRunsItsWeightGemmsAtTheFp16Rate) {
  const ModelSpec m = import_hf_config(llama31_8b_fp16(gptq()), "l.json");
  const SystemSpec gpu = load_system("gpu");
  const ParallelLayout layout = ParallelLayout::make(m, gpu, 1);
  const CostModel cost(gpu, layout);
  bool checked = false;
  for (const Op& o : lower(m, BatchState::decode_batch(0, 0, 4096), layout, Routing{}).ops) {
    if (o.layer != 0 || o.kind != OpKind::kOProj) continue;
    Op int4 = o, fp16 = o;
    int4.bytes_weights = fp16.bytes_weights = 0;  // compute-bound either way
    fp16.dtype = DType::kFp16;
    EXPECT_DOUBLE_EQ(cost.xpu_time(int4).si(), cost.xpu_time(fp16).si());
    checked = true;
  }
  EXPECT_TRUE(checked);
}

TEST(Int4Groups, OtherSchemesAreRefusedNamingTheField) {
  const std::string q = "config.json: quantization_config.";
  const std::pair<std::string, std::string> cases[] = {
      {awq(R"(, "bits": 8)"), q + "bits: 8 bits are not modelled"},
      {awq(R"(, "bits": null)"), q + "bits: missing required field"},
      {awq(R"(, "group_size": 256)"), q + "group_size: 256 is not modelled"},
      {awq(R"(, "zero_point": false)"), q + "zero_point: false (no zero points) is not modelled"},
      {awq(R"(, "version": "gemv")"), q + "version: \"gemv\": that packing is not modelled"},
      {awq(R"(, "modules_to_not_convert": ["down_proj"])"),
       q + "modules_to_not_convert[0]: \"down_proj\": a projection left unquantized is not modelled"},
      {gptq(R"(, "bits": 3)"), q + "bits: 3 bits are not modelled"},
      {gptq(R"(, "group_size": 16)"), q + "group_size: 16 is not modelled"},
      {gptq(R"(, "group_size": "32")"), q + "group_size: \"32\" is not modelled"},
      {gptq(R"(, "checkpoint_format": "gptq_v2")"),
       q + "checkpoint_format: \"gptq_v2\": zero points stored as they are are not modelled"},
      {gptq(R"(, "lm_head": true)"), q + "lm_head: true: a quantized LM head is not modelled"},
      {gptq(R"(, "modules_in_block_to_quantize": [["self_attn.q_proj"], ["mlp.up_proj"]])"),
       q + "modules_in_block_to_quantize: names no attention output projection: attention in 16 bits is not "
           "modelled"},
      {gptq(R"(, "modules_in_block_to_quantize": [["self_attn.o_proj", "block_sparse_moe.gate"]])"),
       q + "modules_in_block_to_quantize: names \"block_sparse_moe.gate\": a router in 4 bits is not "
           "modelled"},
      {gptq(R"(, "modules_in_block_to_quantize": [["self_attn.o_proj", 3]])"),
       q + "modules_in_block_to_quantize: holds 3"},
      {R"({"quant_method": "hqq"})", q + "quant_method: \"hqq\" is not modelled"},
  };
  for (const auto& [quantization, expected] : cases) {
    const std::string error = hf_config_error(llama31_8b_fp16(quantization));
    EXPECT_NE(error.find(expected), std::string::npos) << quantization << "\n" << error;
  }
  // Upper-case version (older AutoAWQ configs) and sym false (asymmetric GPTQ) are read.
  EXPECT_EQ(import_hf_config(llama31_8b_fp16(awq(R"(, "version": "GEMM")")), "l.json").linear_dtype,
            DType::kInt4Awq);
  EXPECT_EQ(
      import_hf_config(llama31_8b_fp16(gptq(R"(, "sym": false, "desc_act": false)")), "l.json").linear_dtype,
      DType::kInt4Gptq);
}

// RedHatAI's W4A16 quantization_config (llm-compressor's W4A16 scheme,
// Meta-Llama-3.1-8B-Instruct-quantized.w4a16): compressed-tensors, pack-quantized, 4-bit symmetric weights in
// groups of 128, 16-bit activations. `weights` adds or replaces fields of the weights' args, `top` of the
// config.
std::string w4a16(const std::string& weights = "", const std::string& top = "") {
  return R"({"config_groups": {"group_0": {"input_activations": null, "output_activations": null,
    "targets": ["Linear"], "weights": {"actorder": "weight", "block_structure": null, "dynamic": false,
    "group_size": 128, "num_bits": 4, "observer": "minmax", "observer_kwargs": {}, "strategy": "group",
    "symmetric": true, "type": "int")" +
         weights + R"(}}}, "format": "pack-quantized", "ignore": ["lm_head"], "kv_cache_scheme": null,
    "quant_method": "compressed-tensors", "quantization_status": "compressed")" +
         top + "}";
}

TEST(Int4Groups, W4a16ReleaseIsReadWithItsLinearLayersIn4Bits) {
  const ModelSpec m = import_hf_config(llama31_8b_fp16(w4a16()), "l.json");
  EXPECT_EQ(m.linear_dtype, DType::kInt4Pack);
  // 4 bits per weight and one 16-bit scale per 128 (weight_scale [out, in / 128]), no zero point.
  EXPECT_DOUBLE_EQ(dtype_bytes(DType::kInt4Pack), (128 * 4 + 16) / 8.0 / 128);
  EXPECT_EQ(import_hf_config(mixtral(w4a16("", R"(, "ignore": ["lm_head", "re:.*block_sparse_moe.gate$"])")),
                             "m.json")
                .expert_dtype,
            DType::kInt4Pack);
  EXPECT_EQ(import_hf_config(llama31_8b_fp16(w4a16(R"(, "actorder": null)")), "l.json").linear_dtype,
            DType::kInt4Pack);
  const std::string g = "config.json: quantization_config.config_groups.group_0.";
  const std::pair<std::string, std::string> cases[] = {
      {w4a16(R"(, "num_bits": 2)"), g + "weights.num_bits: 2 bits are not modelled"},
      {w4a16(R"(, "symmetric": false)"), g + "weights.symmetric: false (a zero point) is not modelled"},
      {w4a16(R"(, "strategy": "channel")"),
       g + "weights.group_size: 128 beside strategy channel is not modelled"},
      {w4a16(R"(, "strategy": "tensor")"), g + "weights.strategy: \"tensor\" is not modelled"},
      {w4a16(R"(, "group_size": -1)"), g + "weights.group_size: -1 is not modelled"},
      {w4a16(R"(, "actorder": "group")"),
       g + "weights.actorder: \"group\" is not modelled (permuted groups: weight_g_idx)"},
      {w4a16(R"(, "type": "float")"), g + "weights.type: \"float\" is not modelled"},
      {w4a16("", R"(, "kv_cache_scheme": {"num_bits": 8, "type": "float", "strategy": "tensor"})"),
       "config.json: quantization_config.kv_cache_scheme: is set: a quantized KV cache beside 4-bit weights"},
  };
  for (const auto& [quantization, expected] : cases) {
    const std::string error = hf_config_error(llama31_8b_fp16(quantization));
    EXPECT_NE(error.find(expected), std::string::npos) << quantization << "\n" << error;
  }
  // W4A8 (int8 activations) is not this scheme.
  const std::string w4a8 =
      R"({"config_groups": {"group_0": {"input_activations": {"num_bits": 8, "type": "int",
    "strategy": "token", "dynamic": true}, "targets": ["Linear"], "weights": {"group_size": 128, "num_bits": 4,
    "strategy": "group", "symmetric": true, "type": "int"}}}, "format": "pack-quantized",
    "quant_method": "compressed-tensors", "quantization_status": "compressed"})";
  EXPECT_NE(
      hf_config_error(llama31_8b_fp16(w4a8))
          .find(g + "input_activations: is set: 4-bit weights under quantized activations are not modelled"),
      std::string::npos);
}

TEST(Int4Groups, YamlKeys) {
  const std::string dense = "name: x\nlayers: 2\nhidden: 256\nheads: 4\nvocab: 10\nffn: 512\ndtype: fp16\n";
  EXPECT_EQ(read_model(ConfigNode::parse(dense + "linear_dtype: int4_gptq\n", "x.yaml")).linear_dtype,
            DType::kInt4Gptq);
  EXPECT_EQ(read_model(ConfigNode::parse(dense + "linear_dtype: int4_awq\n", "x.yaml")).linear_dtype,
            DType::kInt4Awq);
  EXPECT_NE(model_yaml_error(dense + "kv_dtype: int4_awq\n").find("kv_dtype: int4_awq is a weight format"),
            std::string::npos);
}

// Groups of 32 or 64 (TheBloke's "gptq-4bit-32g-actorder_True" branches, AutoAWQ's q_group_size 64, W4A16
// recipes with group_size 32): quant_group, a scale (and zero) per that many inputs in timing and memory.
TEST(Int4Groups, GroupsOf32And64AreReadAndCharged) {
  for (const int group : {32, 64}) {
    const std::string size = fmt::format(R"(, "group_size": {})", group);
    const ModelSpec a = import_hf_config(llama31_8b_fp16(awq(size)), "l.json");
    const ModelSpec g = import_hf_config(llama31_8b_fp16(gptq(size)), "l.json");
    const ModelSpec p = import_hf_config(llama31_8b_fp16(w4a16(size)), "l.json");
    EXPECT_EQ(a.quant_group, group);
    EXPECT_EQ(g.quant_group, group);
    EXPECT_EQ(p.quant_group, group);
    EXPECT_DOUBLE_EQ(dtype_bytes(DType::kInt4Gptq, group), 0.5 + 2.5 / group);
    EXPECT_DOUBLE_EQ(dtype_bytes(DType::kInt4Pack, group), 0.5 + 2.0 / group);
    const double quantized = static_cast<double>(g.linear_matrix_params());
    EXPECT_DOUBLE_EQ(g.weight_bytes(),
                     quantized * (0.5 + 2.5 / group) + 2.0 * (static_cast<double>(g.params()) - quantized));
    const ParallelLayout layout = ParallelLayout::make(g, load_system("gpu"), 1);
    for (const Op& o : lower(g, BatchState::decode_batch(4, 256), layout, Routing{}).ops)
      if (o.kind == OpKind::kQkvProj || o.kind == OpKind::kOProj || o.kind == OpKind::kDenseFfn) {
        EXPECT_EQ(o.quant_group, group) << o.name;
        EXPECT_DOUBLE_EQ(o.bytes_weights, static_cast<double>(o.n) * static_cast<double>(o.k) * o.matrices *
                                              (0.5 + 2.5 / group))
            << o.name;
      }
  }
  EXPECT_EQ(import_hf_config(llama31_8b_fp16(gptq()), "l.json").quant_group, 128);
}

// GPTQ's "no group" releases (group_size -1, 4 or 8 bits), AutoAWQ's per-channel weights (group_size -1) and
// W4A16's strategy channel: one scale (and zero point) per row, left out of the bytes as fp8_channel's row
// scales are.
TEST(Int4Groups, PerRowGroupsAreOneScalePerRow) {
  for (const std::string& config : {gptq(R"(, "group_size": -1)"), gptq(R"(, "group_size": -1, "bits": 8)"),
                                    awq(R"(, "group_size": -1)")}) {
    const ModelSpec g = import_hf_config(llama31_8b_fp16(config), "l.json");
    EXPECT_EQ(g.quant_group, kPerRowGroup);
    const double per_element = g.linear_dtype == DType::kInt8Gptq ? 1.0 : 0.5;
    EXPECT_DOUBLE_EQ(dtype_bytes(g.linear_dtype, kPerRowGroup), per_element);
    const ParallelLayout layout = ParallelLayout::make(g, load_system("gpu"), 1);
    for (const Op& o : lower(g, BatchState::decode_batch(4, 256), layout, Routing{}).ops)
      if (o.kind == OpKind::kOProj) {
        EXPECT_DOUBLE_EQ(o.bytes_weights,
                         static_cast<double>(o.n) * static_cast<double>(o.k) * o.matrices * per_element);
      }
  }
  // llm-compressor's W4A16 with strategy channel: one scale per row, 0.5 bytes per weight.
  const ModelSpec p =
      import_hf_config(llama31_8b_fp16(w4a16(R"(, "strategy": "channel", "group_size": null)")), "l.json");
  EXPECT_EQ(p.linear_dtype, DType::kInt4Pack);
  EXPECT_EQ(p.quant_group, kPerRowGroup);
  EXPECT_DOUBLE_EQ(dtype_bytes(DType::kInt4Pack, kPerRowGroup), 0.5);
  EXPECT_EQ(group_inputs(kPerRowGroup, 4096), 4096);
  EXPECT_EQ(group_inputs(64, 4096), 64);
}

TEST(Int4Groups, QuantGroupYamlKey) {
  const std::string dense = "name: x\nlayers: 2\nhidden: 256\nheads: 4\nvocab: 10\nffn: 512\ndtype: fp16\n";
  EXPECT_EQ(read_model(ConfigNode::parse(dense + "linear_dtype: int4_gptq\nquant_group: 32\n", "x.yaml"))
                .quant_group,
            32);
  EXPECT_NE(model_yaml_error(dense + "linear_dtype: int4_gptq\nquant_group: 48\n")
                .find("quant_group: is 48; expected 32, 64, 128 (default) or -1 (one group per row)"),
            std::string::npos);
  EXPECT_NE(model_yaml_error(dense + "quant_group: 64\n").find("other than 128 only with a grouped integer"),
            std::string::npos);
  EXPECT_EQ(read_model(ConfigNode::parse(dense + "linear_dtype: int4_gptq\nquant_group: -1\n", "x.yaml"))
                .quant_group,
            kPerRowGroup);
  EXPECT_EQ(read_model(ConfigNode::parse(dense + "linear_dtype: int4_awq\nquant_group: -1\n", "x.yaml"))
                .quant_group,
            kPerRowGroup);
  EXPECT_NE(model_yaml_error(dense + "linear_dtype: int4_gptq\nquant_group: 0\n").find("quant_group: is 0"),
            std::string::npos);
}

// GPTQ's 8-bit releases (bits 8: Qwen's GPTQ-Int8): int8_gptq, 1 byte per weight plus an FP16 scale and an
// 8-bit zero point per group, run W8A16 at the FP16 rate; AWQ stays 4-bit only.
// RedHatAI's W8A16 releases (llm-compressor's W8A16 scheme, e.g.
// Meta-Llama-3.1-70B-Instruct-quantized.w8a16): the W4A16 config with num_bits 8, weights in int8_pack,
// computed at the FP16 rate as GPTQ's 8-bit ones.
TEST(Int4Groups, W8a16ReleaseIsInt8Pack) {
  const ModelSpec m = import_hf_config(llama31_8b_fp16(w4a16(R"(, "num_bits": 8)")), "l.json");
  EXPECT_EQ(m.linear_dtype, DType::kInt8Pack);
  EXPECT_EQ(m.expert_dtype, DType::kInt8Pack);
  EXPECT_EQ(dtype_name(DType::kInt8Pack), "int8_pack");
  EXPECT_EQ(parse_dtype("int8_pack"), DType::kInt8Pack);
  EXPECT_TRUE(grouped_int(DType::kInt8Pack));
  EXPECT_FALSE(grouped_int4(DType::kInt8Pack));
  EXPECT_EQ(grouped_int_bits(DType::kInt8Pack), 8);
  // 8 bits per weight and one 16-bit scale per group, no zero point; per row the scales are left out.
  EXPECT_DOUBLE_EQ(dtype_bytes(DType::kInt8Pack), 1.0 + 2.0 / 128);
  EXPECT_DOUBLE_EQ(dtype_bytes(DType::kInt8Pack, kPerRowGroup), 1.0);
  const ModelSpec channel = import_hf_config(
      llama31_8b_fp16(w4a16(R"(, "num_bits": 8, "strategy": "channel", "group_size": null)")), "l.json");
  EXPECT_EQ(channel.linear_dtype, DType::kInt8Pack);
  EXPECT_EQ(channel.quant_group, kPerRowGroup);
  EXPECT_NE(
      hf_config_error(llama31_8b_fp16(w4a16(R"(, "num_bits": 8)",
                                            R"(, "kv_cache_scheme": {"num_bits": 8, "type": "float"})")))
          .find("is set: a quantized KV cache beside 8-bit weights is not modelled"),
      std::string::npos);
  const SystemSpec gpu = load_system("gpu");
  const CostModel cost(gpu, ParallelLayout::make(m, gpu, 1));
  for (const Op& o :
       lower(m, BatchState::decode_batch(0, 0, 4096), ParallelLayout::make(m, gpu, 1), Routing{}).ops)
    if (o.layer == 0 && o.kind == OpKind::kOProj) {
      EXPECT_EQ(o.dtype, DType::kInt8Pack);
      EXPECT_DOUBLE_EQ(o.bytes_weights, static_cast<double>(m.hidden) * m.hidden * (1.0 + 2.0 / 128));
      Op w = o, h = o;
      w.bytes_weights = h.bytes_weights = 0;  // compute-bound: W8A16 at the FP16 rate
      h.dtype = DType::kFp16;
      EXPECT_DOUBLE_EQ(cost.xpu_time(w).si(), cost.xpu_time(h).si());
    }
}

TEST(Int4Groups, EightBitGptqIsInt8Gptq) {
  const ModelSpec m = import_hf_config(llama31_8b_fp16(gptq(R"(, "bits": 8)")), "l.json");
  EXPECT_EQ(m.linear_dtype, DType::kInt8Gptq);
  EXPECT_EQ(dtype_name(DType::kInt8Gptq), "int8_gptq");
  EXPECT_EQ(parse_dtype("int8_gptq"), DType::kInt8Gptq);
  EXPECT_TRUE(grouped_int(DType::kInt8Gptq));
  EXPECT_FALSE(grouped_int4(DType::kInt8Gptq));
  EXPECT_EQ(grouped_int_bits(DType::kInt8Gptq), 8);
  EXPECT_DOUBLE_EQ(dtype_bytes(DType::kInt8Gptq), 1.0 + 3.0 / 128);
  EXPECT_DOUBLE_EQ(dtype_bytes(DType::kInt8Gptq, 32), 1.0 + 3.0 / 32);
  const double quantized = static_cast<double>(m.linear_matrix_params());
  EXPECT_DOUBLE_EQ(m.weight_bytes(),
                   quantized * (1.0 + 3.0 / 128) + 2.0 * (static_cast<double>(m.params()) - quantized));
  const SystemSpec gpu = load_system("gpu");
  const ParallelLayout layout = ParallelLayout::make(m, gpu, 1);
  const CostModel cost(gpu, layout);
  for (const Op& o : lower(m, BatchState::decode_batch(0, 0, 4096), layout, Routing{}).ops)
    if (o.layer == 0 && o.kind == OpKind::kOProj) {
      EXPECT_EQ(o.dtype, DType::kInt8Gptq);
      Op w = o, h = o;
      w.bytes_weights = h.bytes_weights = 0;  // compute-bound: W8A16 at the FP16 rate
      h.dtype = DType::kFp16;
      EXPECT_DOUBLE_EQ(cost.xpu_time(w).si(), cost.xpu_time(h).si());
    }
  EXPECT_NE(hf_config_error(llama31_8b_fp16(gptq(R"(, "bits": 2)"))).find("bits: 2 bits are not modelled"),
            std::string::npos);
  EXPECT_NE(hf_config_error(llama31_8b_fp16(awq(R"(, "bits": 8)"))).find("bits: 8 bits are not modelled"),
            std::string::npos);
}

}  // namespace
}  // namespace duplex::compiler
