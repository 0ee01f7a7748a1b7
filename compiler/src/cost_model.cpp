#include "duplex/compiler/cost_model.hpp"

#include <algorithm>

#include "duplex/base/error.hpp"

namespace duplex::compiler {
namespace {

bool is_elementwise(OpKind k) {
  return k == OpKind::kNorm || k == OpKind::kRope || k == OpKind::kResidual || k == OpKind::kEmbedding;
}

bool is_link(OpKind k) {
  return k == OpKind::kAllReduce || k == OpKind::kAllToAll || k == OpKind::kPimTransfer ||
         k == OpKind::kStageSend || k == OpKind::kExpertMove;
}

bool is_weight_gemm(OpKind k) {
  switch (k) {
    case OpKind::kQkvProj:
    case OpKind::kOProj:
    case OpKind::kRouter:  // the gate GEMM; see pim_supports for its top-k
    case OpKind::kExpertFfn:
    case OpKind::kSharedExpertFfn:
    case OpKind::kDenseFfn:
    case OpKind::kLmHead: return true;
    default: return false;
  }
}

}  // namespace

CostModel::CostModel(const SystemSpec& system, const ParallelLayout& layout, PimTimeFn pim_model,
                     XpuTimeFn xpu_model)
    : sys_(system), layout_(layout), pim_model_(std::move(pim_model)), xpu_model_(std::move(xpu_model)) {}

Time CostModel::xpu_time(const Op& op) const {
  if (is_link(op.kind)) return link_time(op);
  if (xpu_model_)
    if (const auto measured = xpu_model_(op)) return *measured;
  const XpuSpec& x = sys_.xpu;
  // Weight GEMMs of FP8 weights (dtype fp8, an FP8 release's fp8_block128, fp8_channel or fp8_tensor) run
  // W8A8 on the FP8 tensor cores, their activations quantized on the fly (by the releases' dynamic scales, or
  // fp8_tensor's static ones); those of
  // a W8A8-INT8 release's int8_channel weights and LLM.int8()'s bnb_int8 on the INT8 tensor cores alike
  // (per-token dynamic scales);
  // every other GEMM (MXFP4 experts expanded to BF16, 4-bit weights W4A16 included) at the FP16 rate,
  // elementwise ops at FP32's.
  const bool gemm = is_weight_gemm(op.kind);
  const bool fp8 = gemm && fp8_weights(op.dtype);
  const bool int8 = gemm && int8_weights(op.dtype);
  const FlopRate peak = is_elementwise(op.kind) ? x.peak_fp32
                        : fp8                   ? x.peak_fp8
                        : int8                  ? x.peak_int8
                                                : x.peak_fp16;
  const FlopRate rate = peak * x.gemm_efficiency;
  const Time compute = compute_time(op.flops, rate);
  // bitsandbytes' 4-bit (NF4, FP4) GEMMs of several rows dequantize their weights to 16 bits first, and
  // LLM.int8()'s quantize their activations and scale their INT32 sums (Op::xpu_bytes, Op::xpu_kernels):
  // more kernels and their traffic.
  const Time memory = transfer_time(op.xpu_bytes(), sys_.memory_bandwidth() * x.memory_efficiency);
  return std::max(compute, memory) + x.launch_overhead * op.xpu_kernels();
}

std::optional<Unit> CostModel::required_unit(const Op& op) const {
  if (!sys_.heterogeneous() || is_link(op.kind)) return std::nullopt;
  return op.kind == OpKind::kAttentionDecode || op.kind == OpKind::kExpertFfn ? Unit::kPim : Unit::kXpu;
}

bool CostModel::pim_supports(const Op& op) const {
  if (!sys_.pim) return false;
  if (sys_.heterogeneous()) return required_unit(op) == Unit::kPim;
  // The router's top-k + renormalisation and the LM head's argmax have no PIM unit (Logic-PIM has GEMM
  // modules, softmax and gated-SiLU units only), so those ops stay whole on the xPU.
  if (op.kind == OpKind::kRouter || op.kind == OpKind::kLmHead) return false;
  return is_weight_gemm(op.kind) || op.kind == OpKind::kAttentionDecode;
}

std::int64_t CostModel::pim_tokens_per_pass(std::int64_t k) const {
  if (!sys_.pim || !sys_.pim->has_logic_pim_units() || k <= 0) return 0;
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(sys_.pim->input_buffer.bytes) / (k * 2));
}

std::optional<Time> CostModel::pim_time(const Op& op) const {
  if (!pim_supports(op)) return std::nullopt;
  if (pim_model_) return pim_model_(op);
  return analytical_pim_time(op);
}

Time CostModel::analytical_pim_time(const Op& op) const {
  DUPLEX_ASSERT(pim_supports(op), "analytical_pim_time of an op the PIM cannot run");
  const PimSpec& p = *sys_.pim;
  double bytes = op.bytes();
  if (is_weight_gemm(op.kind)) {
    // Bank-PIM's Op/B-1 compute rate already bounds it; Logic-PIM re-reads weights once per buffer-full.
    const std::int64_t per_pass = p.has_logic_pim_units() ? pim_tokens_per_pass(op.k) : std::max<std::int64_t>(1, op.m);
    const std::int64_t passes = std::max<std::int64_t>(1, (op.m + per_pass - 1) / per_pass);
    bytes = op.bytes_weights * static_cast<double>(passes) + op.bytes_kv + op.bytes_act;
  }
  // A heterogeneous system's op is spread over the GPU's PIM devices (the same stacks as a Duplex device each).
  const int pim_devices = sys_.heterogeneous() ? sys_.pim_devices_per_gpu : 1;
  const Time compute = compute_time(op.flops, sys_.pim_peak_flops() * pim_devices);
  const Time memory = transfer_time(bytes, sys_.pim_bandwidth() * pim_devices);
  Time softmax;
  if (op.kind == OpKind::kAttentionDecode && p.has_logic_pim_units()) {
    // One score per query head per cached token passes the softmax unit of its stack, for each query token
    // of a request (1, or 1 + the draft tokens a speculative step verifies).
    const double queries =
        static_cast<double>(op.query_tokens) / static_cast<double>(std::max<std::int64_t>(1, op.requests));
    const double elements =
        static_cast<double>(op.q_heads) * static_cast<double>(op.context_tokens) * std::max(1.0, queries);
    softmax = seconds(elements / (p.softmax_elements_per_cycle * p.clock.si() * sys_.stacks * pim_devices));
  }
  return std::max({compute, memory, softmax}) + p.command_latency;
}

Time CostModel::concurrent_copy_time(const LinkSpec& links, double nvlink_bytes, double infiniband_bytes) {
  return std::max(
      nvlink_bytes > 0 ? transfer_time(nvlink_bytes, links.nvlink_bandwidth) + links.nvlink_latency : Time{},
      infiniband_bytes > 0
          ? transfer_time(infiniband_bytes, links.infiniband_bandwidth) + links.infiniband_latency
          : Time{});
}

Time CostModel::link_time(const Op& op) const {
  if (op.kind == OpKind::kStageSend) {
    // Each device's share to its peer of the next stage, over NVLink when the pipeline lies in one node, else
    // InfiniBand; then the next stage's devices all-gather the shares over NVLink (tp - 1 ring steps).
    const double share = op.link_bytes / layout_.tp, gather = op.link_bytes - share;
    const Time send =
        layout_.pipeline_in_node
            ? transfer_time(share, sys_.links.nvlink_bandwidth) + sys_.links.nvlink_latency
            : transfer_time(share, sys_.links.infiniband_bandwidth) + sys_.links.infiniband_latency;
    if (layout_.tp <= 1) return send;
    return send + transfer_time(gather, sys_.links.nvlink_bandwidth) +
           sys_.links.nvlink_latency * (layout_.tp - 1);
  }
  if (op.kind == OpKind::kExpertMove)  // runtime ExpertBalancer
    return concurrent_copy_time(sys_.links, op.link_bytes_in_node, op.link_bytes - op.link_bytes_in_node);
  if (op.kind == OpKind::kPimTransfer)  // GPU <-> its PIM devices, point to point
    return transfer_time(op.link_bytes, sys_.links.nvlink_bandwidth) + sys_.links.nvlink_latency;
  if (op.kind == OpKind::kAllToAll) {
    // An MoE layer's token exchange (ParallelLayout::expert_exchange): the busiest device's NVLink copies
    // (link_bytes_in_node x its skew: to its node's expert shards, and forwarded from InfiniBand as chunks
    // arrive) while its InfiniBand copies cross, at once, each link a step per peer device / node.
    const Op::Exchange& x = op.exchange;
    const Time nvlink = x.nvlink_peers > 0 ? transfer_time(op.link_bytes_in_node * x.nvlink_skew,
                                                           sys_.links.nvlink_bandwidth) +
                                                 sys_.links.nvlink_latency * x.nvlink_peers
                                           : Time{};
    const Time infiniband = x.infiniband_peers > 0
                                ? transfer_time((op.link_bytes - op.link_bytes_in_node) * x.infiniband_skew,
                                                sys_.links.infiniband_bandwidth) +
                                      sys_.links.infiniband_latency * x.infiniband_peers
                                : Time{};
    return std::max(nvlink, infiniband);
  }
  // Ring all-reduce inside a node: 2 (tp - 1) NVLink steps.
  DUPLEX_ASSERT(op.kind == OpKind::kAllReduce, "link_time of an op that crosses no link");
  if (layout_.tp <= 1) return Time{};
  return transfer_time(op.link_bytes, sys_.links.nvlink_bandwidth) +
         sys_.links.nvlink_latency * (2 * (layout_.tp - 1));
}

}  // namespace duplex::compiler
