#pragma once
// The CPU implementation of every op (arguments already validated by validate_op). Each returns ok or a
// data-dependent error (an index out of range).
#include "duplex/kernels/ops.hpp"
#include "duplex/kernels/status.hpp"

namespace duplex::kernels::cpu {

Status gemm(const GemmArgs& args);
Status gemv(const GemvArgs& args);
Status norm(const NormArgs& args);
Status rope(const RopeArgs& args);
Status prefill_attention(const PrefillAttentionArgs& args);
Status decode_attention(const DecodeAttentionArgs& args);
Status softmax(const SoftmaxArgs& args);
Status router(const RouterArgs& args);
Status permute(const PermuteArgs& args);
Status unpermute(const UnpermuteArgs& args);
Status expert_ffn(const ExpertFfnArgs& args);
Status residual_add(const ResidualAddArgs& args);
Status clamp(const ClampArgs& args);
Status attn_temperature(const AttnTemperatureArgs& args);
Status embedding(const EmbeddingArgs& args);
Status lm_head(const LmHeadArgs& args);
Status partial_sum(const PartialSumArgs& args);
Status quantize(const QuantizeArgs& args);

// Fake quantization (ops.hpp ActivationQuant), the pieces quantize and expert_ffn share (quantize.cpp).
// Whether the spec has one scale for the whole call: a static scale, or per tensor.
bool has_call_scale(const ActivationQuant& quant);
// The scale of a reach whose largest magnitude is amax: static_scale when > 0, else from amax (scale_ub,
// min_scale, pow2_scale applied).
float quant_scale(const ActivationQuant& quant, float amax);
// The largest magnitude of n FP32 values, or of a tensor's elements (in parallel); 0 when empty.
float max_magnitude(const float* values, std::int64_t n);
float max_magnitude(const Tensor& x);
// One row of `cols` FP32 values, in place: each fake-quantized by `quant` and rounded to dtype (the value
// writing it to memory gives). call_scale: the scale of a spec with one for the call (has_call_scale),
// ignored otherwise (the row, or each of its groups, finds its own). row_scales (nullable): receives the
// row's scale, or its C / group scales (not written for a call scale). outliers: the call's outlier-column
// marks [cols] with quant.decomposes() (those elements pass), ignored otherwise (nullable then).
void fake_quantize_row(const ActivationQuant& quant, float call_scale, float* row, std::int64_t cols,
                       DType dtype, float* row_scales, const std::int32_t* outliers = nullptr);
// fake_quantize_row over rows x cols values, rows in parallel.
void fake_quantize_rows(const ActivationQuant& quant, float call_scale, float* values, std::int64_t rows,
                        std::int64_t cols, DType dtype, const std::int32_t* outliers = nullptr);
// LLM.int8()'s outlier columns: outliers[c] = 1 where some row of rows x cols FP32 values (or of the 2-D
// tensor x) has |v| >= threshold; other marks unchanged.
void mark_outlier_columns(const float* values, std::int64_t rows, std::int64_t cols, float threshold,
                          std::int32_t* outliers);
void mark_outlier_columns(const Tensor& x, float threshold, std::int32_t* outliers);

}  // namespace duplex::kernels::cpu
