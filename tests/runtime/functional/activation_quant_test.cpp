// Which W8A8 GEMM inputs functional emulation quantizes, and how (activation_quant.hpp): each format's
// kernels::ActivationQuant as the serving kernels quantize (vLLM's constants), the formats it does not, and
// what a run states about them.
#include <gtest/gtest.h>

#include <string>

#include "checkpoint_files.hpp"
#include "duplex/runtime/functional/activation_quant.hpp"

namespace duplex::runtime::functional {
namespace {

using compiler::DType;
using kernels::QuantFormat;

TEST(ActivationQuant, EachW8a8FormatQuantizesAsItsServingKernels) {
  compiler::ModelSpec m = testing::data_model("tiny-mixtral-fp8-dynamic.yaml");
  // DeepSeek-V3's 1 x 128 groups, vLLM's eps 1e-10 on each group's amax.
  const kernels::ActivationQuant block = w8a8_input_quant(m, DType::kFp8Block128);
  EXPECT_EQ(block.format, QuantFormat::kFp8E4M3);
  EXPECT_EQ(block.group, 128);
  EXPECT_FALSE(block.per_tensor);
  EXPECT_EQ(block.min_scale, 1e-10f / 448.0f);
  EXPECT_EQ(block.scale_ub, 0.0f);
  // Per token, vLLM's min_scaling_factor 1 / (448 x 512); fbgemm's bound where the release has one.
  kernels::ActivationQuant channel = w8a8_input_quant(m, DType::kFp8Channel);
  EXPECT_EQ(channel.format, QuantFormat::kFp8E4M3);
  EXPECT_EQ(channel.group, 0);
  EXPECT_EQ(channel.min_scale, 1.0f / (448.0f * 512.0f));
  EXPECT_EQ(channel.scale_ub, 0.0f);
  m.activation_scale_ub = 1200;
  EXPECT_EQ(w8a8_input_quant(m, DType::kFp8Channel).scale_ub, 1200.0f);
  // Per tensor, dynamic; a static release at its calibrated scale, none without one (random weights).
  EXPECT_TRUE(w8a8_input_quant(m, DType::kFp8Tensor).per_tensor);
  m.static_input_scales = true;
  EXPECT_FALSE(w8a8_input_quant(m, DType::kFp8Tensor).enabled());
  const kernels::ActivationQuant fixed = w8a8_input_quant(m, DType::kFp8Tensor, 0.25f);
  EXPECT_EQ(fixed.format, QuantFormat::kFp8E4M3);
  EXPECT_EQ(fixed.static_scale, 0.25f);
  EXPECT_FALSE(fixed.per_tensor);
  // INT8 per token, symmetric: amax / 127.
  const kernels::ActivationQuant int8 = w8a8_input_quant(m, DType::kInt8Channel);
  EXPECT_EQ(int8.format, QuantFormat::kInt8);
  EXPECT_EQ(int8.group, 0);
  EXPECT_EQ(int8.min_scale, 0.0f);
  // LLM.int8(): INT8 per token with bitsandbytes' decomposition at the model's threshold (0: none); an MoE
  // model's bnb_int8 experts not at all (vLLM dequantizes them).
  const kernels::ActivationQuant lt = w8a8_input_quant(m, DType::kBnbInt8);
  EXPECT_EQ(lt.format, QuantFormat::kInt8);
  EXPECT_EQ(lt.group, 0);
  EXPECT_EQ(lt.min_scale, 0.0f);
  EXPECT_EQ(lt.outlier_threshold, 6.0f);
  EXPECT_TRUE(lt.decomposes());
  m.llm_int8_threshold = 0;
  EXPECT_FALSE(w8a8_input_quant(m, DType::kBnbInt8).decomposes());
  EXPECT_TRUE(w8a8_input_quant(m, DType::kBnbInt8).enabled());
  EXPECT_FALSE(w8a8_expert_input_quant(m, DType::kBnbInt8).enabled());
  EXPECT_TRUE(w8a8_expert_input_quant(m, DType::kInt8Channel).enabled());
  EXPECT_EQ(w8a8_input_quant(m, DType::kInt8Channel).outlier_threshold, 0.0f);
  // Weight-only formats.
  for (DType t : {DType::kFp16, DType::kBf16, DType::kMxfp4, DType::kInt4Awq, DType::kInt8Gptq, DType::kNf4})
    EXPECT_FALSE(w8a8_input_quant(m, t).enabled()) << compiler::dtype_name(t);
}

TEST(ActivationQuant, ARunStatesWhatItQuantizes) {
  const compiler::ModelSpec fbgemm = testing::data_model("tiny-llama-fbgemm-fp8.yaml");
  EXPECT_TRUE(quantizes_activations(fbgemm, false));
  EXPECT_EQ(describe_activation_quant(fbgemm, true, false),
            "the xPU quantizes its fp8_channel GEMMs' inputs FP8 per token, scales bounded by "
            "activation_scale_ub (the Logic-PIM's take FP16)");
  EXPECT_EQ(describe_activation_quant(fbgemm, false, false),
            "W8A8 GEMMs take FP16 inputs (--activation-quant off: weight-only)");
  const compiler::ModelSpec block = testing::data_model("tiny-deepseek-v3-fp8.yaml");
  EXPECT_EQ(describe_activation_quant(block, true, false),
            "the xPU quantizes its fp8_block128 GEMMs' inputs FP8 per token and 128 columns (the Logic-PIM's "
            "take FP16)");
  compiler::ModelSpec bnb = testing::data_model("tiny-llama-bnb-int8.yaml");
  EXPECT_TRUE(quantizes_activations(bnb, false));
  EXPECT_EQ(
      describe_activation_quant(bnb, true, false),
      "the xPU quantizes its bnb_int8 GEMMs' inputs INT8 per token, columns where some token reaches |x| "
      ">= 6 in 16 bits (LLM.int8()) (the Logic-PIM's take FP16)");
  bnb.llm_int8_threshold = 0;
  EXPECT_EQ(describe_activation_quant(bnb, true, false),
            "the xPU quantizes its bnb_int8 GEMMs' inputs INT8 per token (the Logic-PIM's take FP16)");
  // A YAML MoE model's bnb_int8 experts: dequantized, 16-bit inputs.
  compiler::ModelSpec moe = testing::data_model("tiny-mixtral-w8a8.yaml");
  moe.linear_dtype = DType::kFp16;
  moe.expert_dtype = DType::kBnbInt8;
  EXPECT_FALSE(quantizes_activations(moe, false));
  EXPECT_EQ(
      describe_activation_quant(moe, true, false),
      "LLM.int8() experts take FP16 activations (dequantized, as vLLM's bitsandbytes MoE method runs them)");
  compiler::ModelSpec fixed = testing::data_model("tiny-mixtral-fp8-tensor.yaml");
  fixed.static_input_scales = true;
  EXPECT_FALSE(quantizes_activations(fixed, false));
  EXPECT_EQ(describe_activation_quant(fixed, true, false),
            "a static release's input scales come with its checkpoint (random weights have none): its FP8 "
            "GEMMs take FP16 activations");
  EXPECT_TRUE(quantizes_activations(fixed, true));
  EXPECT_EQ(describe_activation_quant(fixed, true, true),
            "the xPU quantizes its fp8_tensor GEMMs' inputs FP8 at the release's static input scales (the "
            "Logic-PIM's take FP16)");
  // A model without W8A8 matrices says nothing.
  EXPECT_EQ(describe_activation_quant(testing::data_model("tiny-qwen2-gptq.yaml"), true, false), "");
  EXPECT_FALSE(quantizes_activations(testing::data_model("tiny-qwen2-gptq.yaml"), false));
}

}  // namespace
}  // namespace duplex::runtime::functional
