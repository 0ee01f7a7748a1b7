#include "duplex/runtime/functional/activation_quant.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace duplex::runtime::functional {

using compiler::DType;

namespace {

// source: vLLM per_token_group_quant_fp8 (eps 1e-10 on each group's largest magnitude).
constexpr float kGroupEps = 1e-10f;
// source: vLLM's scaled_fp8_quant per token, min_scaling_factor = 1 / (fp8_max x 512).
constexpr float kPerTokenMinScale = 1.0f / (448.0f * 512.0f);
constexpr std::int64_t kFp8Group = 128;  // source: DeepSeek-V3's act_quant block_size, weight_block_size[1]

}  // namespace

kernels::ActivationQuant w8a8_input_quant(const compiler::ModelSpec& m, DType format, float static_scale) {
  kernels::ActivationQuant q;
  switch (format) {
    case DType::kFp8Block128:
      q.format = kernels::QuantFormat::kFp8E4M3;
      q.group = kFp8Group;
      q.min_scale = kGroupEps / 448.0f;
      break;
    case DType::kFp8Channel:
      q.format = kernels::QuantFormat::kFp8E4M3;
      q.min_scale = kPerTokenMinScale;
      q.scale_ub = static_cast<float>(m.activation_scale_ub);
      break;
    case DType::kFp8Tensor:
      if (!m.static_input_scales) {
        q.format = kernels::QuantFormat::kFp8E4M3;
        q.per_tensor = true;
      } else if (static_scale > 0) {
        q.format = kernels::QuantFormat::kFp8E4M3;
        q.static_scale = static_scale;
      }
      break;
    case DType::kInt8Channel:
      q.format = kernels::QuantFormat::kInt8;
      break;
    case DType::kBnbInt8:
      q.format = kernels::QuantFormat::kInt8;
      q.outlier_threshold = static_cast<float>(m.llm_int8_threshold);
      break;
    default:
      break;
  }
  return q;
}

kernels::ActivationQuant w8a8_expert_input_quant(const compiler::ModelSpec& m, DType format,
                                                 float static_scale) {
  if (format == DType::kBnbInt8) return {};
  return w8a8_input_quant(m, format, static_scale);
}

namespace {

// How the inputs of `t`'s GEMMs are quantized, a layer's scale aside: with a static release's scales, any
// scale > 0 stands for its; `experts`: as an MoE layer's experts quantize it (w8a8_expert_input_quant).
kernels::ActivationQuant format_quant(const compiler::ModelSpec& m, DType t, bool static_scales,
                                      bool experts = false) {
  const float scale = static_scales ? 1.0f : 0.0f;
  return experts ? w8a8_expert_input_quant(m, t, scale) : w8a8_input_quant(m, t, scale);
}

}  // namespace

bool quantizes_activations(const compiler::ModelSpec& m, bool static_scales) {
  for (DType t : {m.attention_matrix_dtype(), m.linear_dtype})
    if (format_quant(m, t, static_scales).enabled()) return true;
  return m.is_moe() && format_quant(m, m.expert_dtype, static_scales, true).enabled();
}

namespace {

// "FP8 per token and 128 columns" and the like.
std::string how(const kernels::ActivationQuant& q) {
  std::string s = q.format == kernels::QuantFormat::kInt8 ? "INT8" : "FP8";
  if (q.per_tensor) return s + " per tensor";
  if (q.static_scale > 0) return s + " at the release's static input scales";
  if (q.decomposes())
    return fmt::format("{} per token, columns where some token reaches |x| >= {} in 16 bits (LLM.int8())", s,
                       q.outlier_threshold);
  s += q.group > 0 ? " per token and " + std::to_string(q.group) + " columns" : " per token";
  if (q.scale_ub > 0) s += ", scales bounded by activation_scale_ub";
  return s;
}

bool w8a8_format(DType t) {
  return t == DType::kFp8Block128 || t == DType::kFp8Channel || t == DType::kFp8Tensor ||
         t == DType::kInt8Channel || t == DType::kBnbInt8;
}

}  // namespace

std::string describe_activation_quant(const compiler::ModelSpec& m, bool quantize, bool static_scales) {
  std::vector<DType> formats;
  for (DType t : {m.linear_dtype, m.expert_dtype})
    if (w8a8_format(t) && std::find(formats.begin(), formats.end(), t) == formats.end()) formats.push_back(t);
  if (formats.empty()) return "";
  if (!quantize) return "W8A8 GEMMs take FP16 inputs (--activation-quant off: weight-only)";
  std::string s;
  for (DType t : formats) {
    // A format of the experts alone: as they quantize it.
    const kernels::ActivationQuant q =
        format_quant(m, t, static_scales, t != m.linear_dtype && t != m.attention_matrix_dtype());
    if (!q.enabled()) continue;
    s += fmt::format("{}{} GEMMs' inputs {}", s.empty() ? "" : "; ", compiler::dtype_name(t), how(q));
  }
  if (!s.empty()) s = "the xPU quantizes its " + s + " (the Logic-PIM's take FP16)";
  const std::string gap = activation_quant_gap(m, static_scales);
  if (!gap.empty()) s += (s.empty() ? "" : "; ") + gap;
  return s;
}

const char* quantized_gemm_name(QuantizedGemm g) {
  switch (g) {
    case QuantizedGemm::kQkv:
      return "qkv";
    case QuantizedGemm::kOProj:
      return "o_proj";
    case QuantizedGemm::kFfn:
      return "ffn";
    case QuantizedGemm::kSharedFfn:
      return "shared_ffn";
    case QuantizedGemm::kExpert:
      return "expert";
  }
  return "?";
}

std::int64_t quantized_inputs(const ExecutedQuantization& q) {
  std::int64_t n = 0;
  for (const auto& request : q)
    for (const auto& position : request)
      for (const auto& layer : position)
        for (const QuantizedInput& in : layer) n += static_cast<std::int64_t>(in.inputs.size());
  return n;
}

std::string activation_quant_gap(const compiler::ModelSpec& m, bool static_scales) {
  const std::vector<DType> formats{m.linear_dtype, m.expert_dtype};
  auto has = [&](DType t) { return std::find(formats.begin(), formats.end(), t) != formats.end(); };
  if (has(DType::kFp8Tensor) && m.static_input_scales && !static_scales)
    return "a static release's input scales come with its checkpoint (random weights have none): its FP8 "
           "GEMMs take FP16 activations";
  if (m.is_moe() && m.expert_dtype == DType::kBnbInt8)
    return "LLM.int8() experts take FP16 activations (dequantized, as vLLM's bitsandbytes MoE method runs "
           "them)";
  return "";
}

}  // namespace duplex::runtime::functional
