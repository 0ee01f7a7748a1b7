#include "duplex/compiler/op.hpp"

#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::compiler {

std::string_view op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::kEmbedding: return "embedding";
    case OpKind::kNorm: return "norm";
    case OpKind::kQkvProj: return "qkv_proj";
    case OpKind::kRope: return "rope";
    case OpKind::kAttentionPrefill: return "attn_prefill";
    case OpKind::kAttentionDecode: return "attn_decode";
    case OpKind::kOProj: return "o_proj";
    case OpKind::kResidual: return "residual";
    case OpKind::kRouter: return "router";
    case OpKind::kExpertFfn: return "expert_ffn";
    case OpKind::kSharedExpertFfn: return "shared_expert";
    case OpKind::kDenseFfn: return "dense_ffn";
    case OpKind::kLmHead: return "lm_head";
    case OpKind::kAllReduce: return "all_reduce";
    case OpKind::kAllToAll: return "all_to_all";
    case OpKind::kPimTransfer: return "pim_transfer";
    case OpKind::kKvMigration: return "kv_migration";
    case OpKind::kStageSend:
      return "stage_send";
    case OpKind::kExpertMove:
      return "expert_move";
  }
  DUPLEX_ASSERT(false, "unhandled op kind");
}

std::string_view unit_name(Unit u) {
  switch (u) {
    case Unit::kXpu: return "xpu";
    case Unit::kPim: return "pim";
    case Unit::kLink: return "link";
  }
  DUPLEX_ASSERT(false, "unhandled unit");
}

std::string Op::shape() const {
  switch (kind) {
    case OpKind::kAttentionPrefill:
    case OpKind::kAttentionDecode:
      return fmt::format("r={} q={} ctx={} h={}/{} d={}", requests, query_tokens, context_tokens, q_heads, kv_heads,
                         head_dim);
    case OpKind::kAllReduce:
    case OpKind::kAllToAll:
    case OpKind::kPimTransfer:
    case OpKind::kKvMigration:
    case OpKind::kStageSend:
      return fmt::format("{}x{}", m, n);
    case OpKind::kExpertMove:
      return fmt::format("{} slots", m);
    default:
      if (n == 0) return fmt::format("{}x{}", m, k);
      return matrices > 1 ? fmt::format("{}x{}x{} *{}", m, n, k, matrices) : fmt::format("{}x{}x{}", m, n, k);
  }
}

double Graph::total_flops() const {
  double f = 0;
  for (const auto& o : ops) f += o.flops;
  return f;
}

bool Op::xpu_dequantizes_first() const {
  return bnb_4bit(dtype) && m > 1 && n > 0 && k > 0;
}

namespace {
// Whether op is a GEMM of LLM.int8() weights (Op::xpu_bytes).
bool int8_lt_gemm(const Op& op) {
  return op.dtype == DType::kBnbInt8 && op.m > 0 && op.n > 0 && op.k > 0;
}
}  // namespace

double Op::xpu_bytes() const {
  const double rows = static_cast<double>(m), outs = static_cast<double>(n), ins = static_cast<double>(k);
  if (int8_lt_gemm(*this)) return bytes() + (2.0 * rows * ins + 8.0 * rows * outs) * matrices;
  if (!xpu_dequantizes_first()) return bytes();
  return bytes() + 4.0 * outs * ins * matrices;
}

int Op::xpu_kernels() const {
  return int8_lt_gemm(*this) ? 3 : xpu_dequantizes_first() ? 2 : 1;
}

double Graph::total_bytes() const {
  double b = 0;
  for (const auto& o : ops) b += o.bytes();
  return b;
}

}  // namespace duplex::compiler
