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

}  // namespace duplex::kernels::cpu
