#include "duplex/compiler/op.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

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

// One MatMul8bitLt call's outputs and inputs.
struct LtCall {
  double n, k;
};

// The calls of an int8_lt_gemm op (Op::int8_lt_calls): an FFN's matrices but its last n x k (gate, up; a
// two-matrix FFN's first) and its down projection k x n; the QKV projection's three of k inputs (their
// outputs summing to n); otherwise `matrices` of n x k.
std::vector<LtCall> lt_calls(const Op& op) {
  const auto n = static_cast<double>(op.n), k = static_cast<double>(op.k);
  switch (op.kind) {
    case OpKind::kDenseFfn:
    case OpKind::kExpertFfn:
    case OpKind::kSharedExpertFfn: {
      std::vector<LtCall> calls(static_cast<std::size_t>(op.matrices - 1), LtCall{n, k});
      calls.push_back({k, n});
      return calls;
    }
    case OpKind::kQkvProj:
      return std::vector<LtCall>(3, LtCall{n / 3.0, k});
    default:
      return std::vector<LtCall>(static_cast<std::size_t>(op.matrices), LtCall{n, k});
  }
}

// The bytes one call moves beyond bytes() (Op::xpu_bytes).
double lt_call_bytes(const Op& op, const LtCall& call) {
  const double m = static_cast<double>(op.m);
  double b = 2.0 * m * call.k + 8.0 * m * call.n;
  if (!op.int8_decomposes) return b;
  b += 9.0 * m * call.k + 2.0 * call.k;
  const double c = std::min(op.int8_outlier_columns, call.k);
  if (c > 0) b += 7.0 * m * c + 23.0 * call.n * c + 4.0 * call.n + 4.0 * m * call.n;
  return b;
}

}  // namespace

int Op::int8_lt_calls() const {
  return int8_lt_gemm(*this) ? static_cast<int>(lt_calls(*this).size()) : 0;
}

double Op::xpu_bytes() const {
  const double outs = static_cast<double>(n), ins = static_cast<double>(k);
  if (int8_lt_gemm(*this)) {
    double b = bytes();
    for (const LtCall& call : lt_calls(*this)) b += lt_call_bytes(*this, call);
    return b;
  }
  if (!xpu_dequantizes_first()) return bytes();
  return bytes() + 4.0 * outs * ins * matrices;
}

int Op::xpu_kernels() const {
  if (!int8_lt_gemm(*this)) return xpu_dequantizes_first() ? 2 : 1;
  const int per_call =
      3 + (int8_decomposes ? 5 : 0) + (int8_decomposes && int8_outlier_columns > 0 ? (m > 1 ? 7 : 6) : 0);
  return per_call * int8_lt_calls();
}

double Graph::total_bytes() const {
  double b = 0;
  for (const auto& o : ops) b += o.bytes();
  return b;
}

}  // namespace duplex::compiler
