#include "duplex/kernels/ops.hpp"

namespace duplex::kernels {
namespace {

struct OpNamer {
  const char* operator()(const GemmArgs&) const { return "gemm"; }
  const char* operator()(const GemvArgs&) const { return "gemv"; }
  const char* operator()(const NormArgs& a) const {
    return a.kind == NormKind::kRms ? "rms_norm" : "layer_norm";
  }
  const char* operator()(const RopeArgs&) const { return "rope"; }
  const char* operator()(const PrefillAttentionArgs&) const { return "prefill_attention"; }
  const char* operator()(const DecodeAttentionArgs&) const { return "decode_attention"; }
  const char* operator()(const SoftmaxArgs&) const { return "softmax"; }
  const char* operator()(const RouterArgs&) const { return "router"; }
  const char* operator()(const PermuteArgs&) const { return "permute"; }
  const char* operator()(const UnpermuteArgs&) const { return "unpermute"; }
  const char* operator()(const ExpertFfnArgs&) const { return "expert_ffn"; }
  const char* operator()(const ResidualAddArgs&) const { return "residual_add"; }
  const char* operator()(const EmbeddingArgs&) const { return "embedding"; }
  const char* operator()(const LmHeadArgs&) const { return "lm_head"; }
  const char* operator()(const PartialSumArgs&) const { return "partial_sum"; }
  const char* operator()(const ClampArgs&) const { return "clamp"; }
  const char* operator()(const AttnTemperatureArgs&) const { return "attn_temperature"; }
  const char* operator()(const QuantizeArgs&) const { return "quantize"; }
};

}  // namespace

const char* op_name(const OpArgs& args) {
  return std::visit(OpNamer{}, args);
}

}  // namespace duplex::kernels
