// bitsandbytes' 4-bit releases (transformers' BitsAndBytesConfig, HF quant_method "bitsandbytes") in the
// compiler: read from config.json as linear_dtype nf4 or bnb_fp4 (an FP32 absmax per 64 weights), nf4_dq or
// bnb_fp4_dq (double quantization: an 8-bit absmax per 64, an FP32 scale per 256 of those), what lowering
// charges for them, and the configurations refused, naming the field.
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

// unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit's quantization_config (BitsAndBytesConfig.to_dict()); `more`
// adds or replaces fields.
std::string bnb(const std::string& more = "") {
  return testing::bitsandbytes_config(true, more);
}

TEST(Nf4, FormatsAndTheirBytes) {
  const std::pair<DType, const char*> names[] = {{DType::kNf4, "nf4"},
                                                 {DType::kNf4Dq, "nf4_dq"},
                                                 {DType::kBnbFp4, "bnb_fp4"},
                                                 {DType::kBnbFp4Dq, "bnb_fp4_dq"}};
  for (const auto& [t, name] : names) {
    EXPECT_EQ(parse_dtype(name), t);
    EXPECT_EQ(dtype_name(t), name);
    EXPECT_TRUE(matrix_format(t)) << name;
    EXPECT_TRUE(bnb_4bit(t)) << name;
    EXPECT_FALSE(grouped_int(t)) << name;
    EXPECT_EQ(bnb_nested(t), std::string_view(name).ends_with("_dq")) << name;
    EXPECT_EQ(bnb_quant_type(t), std::string_view(name).starts_with("nf4") ? "nf4" : "fp4") << name;
    // 4 bits, one FP32 absmax per 64; double quantization: one 8-bit absmax per 64, one FP32 per 64 x 256.
    EXPECT_DOUBLE_EQ(dtype_bytes(t), bnb_nested(t) ? (64 * 256 * 4 + 256 * 8 + 32) / 8.0 / (64 * 256)
                                                   : (64 * 4 + 32) / 8.0 / 64)
        << name;
  }
  EXPECT_FALSE(bnb_4bit(DType::kInt4Pack));
  EXPECT_FALSE(bnb_4bit(DType::kMxfp4));
}

TEST(Nf4, ReleasesAreReadWithTheirLinearLayersInNf4) {
  const ModelSpec bf16 = import_hf_config(llama31_8b("null"), "l.json");
  for (const auto& [config, dtype] :
       {std::pair{bnb(), DType::kNf4Dq},
        std::pair{bnb(R"(, "bnb_4bit_use_double_quant": false)"), DType::kNf4},
        std::pair{bnb(R"(, "bnb_4bit_quant_type": "fp4")"), DType::kBnbFp4Dq},
        std::pair{bnb(R"(, "bnb_4bit_quant_type": "fp4", "bnb_4bit_use_double_quant": false)"),
                  DType::kBnbFp4},
        // BitsAndBytesConfig's defaults: fp4, no double quantization.
        std::pair{std::string(R"({"quant_method": "bitsandbytes", "load_in_4bit": true})"),
                  DType::kBnbFp4}}) {
    const ModelSpec m = import_hf_config(llama31_8b(config), "l.json");
    EXPECT_EQ(m.dtype, DType::kBf16);
    EXPECT_EQ(m.kv_dtype, DType::kBf16);
    EXPECT_EQ(m.linear_dtype, dtype);
    EXPECT_EQ(m.expert_dtype, dtype);
    EXPECT_EQ(m.params(), bf16.params());
    const double quantized = static_cast<double>(m.linear_matrix_params());
    EXPECT_DOUBLE_EQ(m.weight_bytes(),
                     quantized * dtype_bytes(dtype) + 2.0 * (static_cast<double>(m.params()) - quantized));
    const ParallelLayout layout = ParallelLayout::make(m, load_system("gpu"), 1);
    int charged = 0;
    for (const Op& o : lower(m, BatchState::decode_batch(16, 1024), layout, Routing{}).ops) {
      if (o.kind == OpKind::kQkvProj || o.kind == OpKind::kOProj || o.kind == OpKind::kDenseFfn) {
        EXPECT_EQ(o.dtype, dtype) << o.name;
        EXPECT_NEAR(o.bytes_weights / (static_cast<double>(o.n) * static_cast<double>(o.k) * o.matrices),
                    dtype_bytes(dtype), 1e-12)
            << o.name;
        ++charged;
      }
      if (o.kind == OpKind::kLmHead) {
        EXPECT_EQ(o.dtype, DType::kBf16);
      }
    }
    EXPECT_EQ(charged, 32 * 3);
  }
  // The LM head skipped (transformers skips it anyway) is the model's own.
  EXPECT_EQ(
      import_hf_config(llama31_8b(bnb(R"(, "llm_int8_skip_modules": ["lm_head"])")), "l.json").linear_dtype,
      DType::kNf4Dq);
}

// bitsandbytes' matmul_4bit runs one token row as gemv_4bit on the packed weights, and more by dequantizing
// the matrix to 16 bits first (written, then read by the GEMM): on the xPU a decode GEMM of one request moves
// the NF4 bytes, one of 16 moves 4 bytes per weight more, and takes a second launch; the Logic-PIM streams
// the packed weights either way.
TEST(Nf4, XpuGemmsOfSeveralRowsDequantizeTheWeightsFirst) {
  const ModelSpec m = import_hf_config(llama31_8b(bnb()), "l.json");
  const SystemSpec gpu = load_system("gpu");
  const ParallelLayout layout = ParallelLayout::make(m, gpu, 1);
  const CostModel cost(gpu, layout);
  const double bandwidth = gpu.memory_bandwidth().si() * gpu.xpu.memory_efficiency;
  for (const int requests : {1, 16}) {
    int checked = 0;
    for (const Op& o : lower(m, BatchState::decode_batch(requests, 1024), layout, Routing{}).ops) {
      if (o.kind != OpKind::kQkvProj && o.kind != OpKind::kOProj && o.kind != OpKind::kDenseFfn) continue;
      const double weights = static_cast<double>(o.n) * static_cast<double>(o.k) * o.matrices;
      EXPECT_EQ(o.xpu_dequantizes_first(), requests > 1) << o.name;
      EXPECT_DOUBLE_EQ(o.xpu_bytes(), o.bytes() + (requests > 1 ? 4.0 * weights : 0.0)) << o.name;
      // Memory-bound either way: the time is the traffic plus one launch per kernel.
      EXPECT_NEAR(cost.xpu_time(o).si(),
                  o.xpu_bytes() / bandwidth + gpu.xpu.launch_overhead.si() * (requests > 1 ? 2 : 1), 1e-12)
          << o.name;
      Op bf16 = o;
      bf16.dtype = DType::kBf16;
      bf16.bytes_weights = 2.0 * weights;
      EXPECT_EQ(cost.xpu_time(o) < cost.xpu_time(bf16), requests == 1) << o.name;
      ++checked;
    }
    EXPECT_EQ(checked, 32 * 3);
  }
  // Another 4-bit format's GEMM reads its packed weights at any batch (a fused dequantizing kernel).
  Op awq;
  awq.kind = OpKind::kDenseFfn;
  awq.dtype = DType::kInt4Awq;
  awq.m = 16;
  awq.n = awq.k = 4096;
  awq.bytes_weights = 4096.0 * 4096.0 * dtype_bytes(DType::kInt4Awq);
  EXPECT_FALSE(awq.xpu_dequantizes_first());
  EXPECT_EQ(awq.xpu_bytes(), awq.bytes());
}

TEST(Nf4, OtherBitsandbytesSchemesAreRefusedNamingTheField) {
  const std::string q = "config.json: quantization_config.";
  const std::pair<std::string, std::string> cases[] = {
      {bnb(R"(, "load_in_8bit": true)"), q + "load_in_8bit: true beside load_in_4bit true"},
      {bnb(R"(, "load_in_4bit": false)"), q + "load_in_4bit: false or absent"},
      {bnb(R"(, "bnb_4bit_quant_type": "int4")"), q + "bnb_4bit_quant_type: \"int4\" is not a bitsandbytes "
                                                      "4-bit type; expected nf4 (NormalFloat 4) or fp4"},
      {bnb(R"(, "bnb_4bit_quant_storage": "bfloat16")"),
       q + "bnb_4bit_quant_storage: \"bfloat16\" is not modelled"},
      {bnb(R"(, "llm_int8_skip_modules": ["lm_head", "down_proj"])"),
       q + "llm_int8_skip_modules[1]: \"down_proj\": a projection left unquantized is not modelled"},
  };
  for (const auto& [quantization, expected] : cases) {
    const std::string error = hf_config_error(llama31_8b(quantization));
    EXPECT_NE(error.find(expected), std::string::npos) << quantization << "\n" << error;
  }
  const std::string moe = hf_config_error(testing::mixtral_8x7b(bnb()));
  EXPECT_NE(
      moe.find("quantization_config.quant_method: bitsandbytes on an MoE model quantizes its routers' gates "
               "too: a router in 4 bits is not modelled"),
      std::string::npos)
      << moe;
}

TEST(Nf4, YamlKeys) {
  const std::string dense = "name: x\nlayers: 2\nhidden: 64\nheads: 4\nffn: 128\nvocab: 10\n";
  EXPECT_EQ(read_model(ConfigNode::parse(dense + "linear_dtype: nf4_dq\n", "x.yaml")).linear_dtype,
            DType::kNf4Dq);
  EXPECT_NE(model_yaml_error(dense + "dtype: nf4\n").find("nf4 is a matrix format"), std::string::npos);
  EXPECT_NE(model_yaml_error(dense + "kv_dtype: nf4_dq\n").find("nf4_dq is a weight format"),
            std::string::npos);
  EXPECT_EQ(read_model(ConfigNode::parse(dense + "linear_dtype: bnb_fp4\n", "x.yaml")).linear_dtype,
            DType::kBnbFp4);
  EXPECT_NE(model_yaml_error(dense + "dtype: bnb_fp4_dq\n").find("bnb_fp4_dq is a matrix format"),
            std::string::npos);
}

}  // namespace
}  // namespace duplex::compiler
