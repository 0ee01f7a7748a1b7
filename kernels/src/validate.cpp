#include "validate.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <string>
#include <utility>

namespace duplex::kernels {
namespace {

// Records the first violated rule of one op; later checks are skipped once one failed.
class Checker {
 public:
  Checker(const char* op, Location memory) : op_(op), memory_(memory) {}

  // A present, contiguous tensor of the given rank in the backend's memory.
  Checker& tensor(const char* name, const Tensor& t, int rank) {
    if (!status_.ok()) return *this;
    if (!t.present())
      return fail(StatusCode::kInvalidArgument, fmt::format("{} is absent (null data)", name));
    if (t.rank != rank)
      return fail(StatusCode::kInvalidArgument,
                  fmt::format("{} is {}; expected rank {}", name, t.describe(), rank));
    for (int d = 0; d < t.rank; ++d)
      if (t.dim(d) < 0)
        return fail(StatusCode::kInvalidArgument, fmt::format("{} has a negative extent", name));
    if (t.location != memory_)
      return fail(StatusCode::kWrongLocation, fmt::format("{} is {}; this backend needs {} memory", name,
                                                          t.describe(), location_name(memory_)));
    if (!t.is_contiguous())
      return fail(StatusCode::kUnsupportedLayout, fmt::format("{} is not row-major contiguous", name));
    return *this;
  }
  // A present paged cache [pages, block_size, kv heads, D] in the backend's memory whose rows are contiguous
  // (stride 1 along D) and whose other strides are >= 0: the runtime's layout ([pages][block][heads][D],
  // contiguous), head-major pages ([pages][heads][block][D] seen through permuted strides) and K and V
  // interleaved in one buffer are all such views.
  Checker& paged_cache(const char* name, const Tensor& t) {
    if (!status_.ok()) return *this;
    if (!t.present()) return fail(StatusCode::kInvalidArgument, fmt::format("{} is absent (null data)", name));
    if (t.rank != 4)
      return fail(StatusCode::kInvalidArgument, fmt::format("{} is {}; expected rank 4", name, t.describe()));
    for (int d = 0; d < 4; ++d) {
      if (t.dim(d) < 0) return fail(StatusCode::kInvalidArgument, fmt::format("{} has a negative extent", name));
      if (t.strides[static_cast<std::size_t>(d)] < 0)
        return fail(StatusCode::kUnsupportedLayout,
                    fmt::format("{} has stride {} along dimension {}; expected >= 0", name,
                                t.strides[static_cast<std::size_t>(d)], d));
    }
    if (t.strides[3] != 1)
      return fail(StatusCode::kUnsupportedLayout,
                  fmt::format("{} has stride {} along D; expected 1 (contiguous rows)", name, t.strides[3]));
    if (t.location != memory_)
      return fail(StatusCode::kWrongLocation, fmt::format("{} is {}; this backend needs {} memory", name,
                                                          t.describe(), location_name(memory_)));
    return *this;
  }
  Checker& optional_tensor(const char* name, const Tensor& t, int rank) {
    return t.present() ? tensor(name, t, rank) : *this;
  }
  Checker& extent(const char* name, const Tensor& t, int d, std::int64_t expected, const char* meaning) {
    if (!status_.ok() || !t.present() || t.dim(d) == expected) return *this;
    return fail(StatusCode::kInvalidArgument, fmt::format("{} is {}; dimension {} must be {} = {}", name,
                                                          t.describe(), d, meaning, expected));
  }
  Checker& float_dtype(const char* name, const Tensor& t) {
    if (!status_.ok() || !t.present() || is_floating(t.dtype)) return *this;
    return fail(StatusCode::kUnsupportedDType,
                fmt::format("{} is {}; expected f16, bf16 or f32", name, t.describe()));
  }
  Checker& dtype(const char* name, const Tensor& t, DType expected) {
    if (!status_.ok() || !t.present() || t.dtype == expected) return *this;
    return fail(StatusCode::kUnsupportedDType,
                fmt::format("{} is {}; expected {}", name, t.describe(), dtype_name(expected)));
  }
  Checker& same_dtype(const char* name, const Tensor& t, const Tensor& reference,
                      const char* reference_name) {
    if (!status_.ok() || !t.present() || t.dtype == reference.dtype) return *this;
    return fail(StatusCode::kUnsupportedDType,
                fmt::format("{} is {} but {} is {}; they must share one dtype", name, t.describe(),
                            reference_name, reference.describe()));
  }
  Checker& no_alias(const char* out_name, const Tensor& out, const char* in_name, const Tensor& in) {
    if (!status_.ok() || !out.present() || !in.present()) return *this;
    const auto* o = static_cast<const char*>(out.data);
    const auto* i = static_cast<const char*>(in.data);
    if (o < i + in.bytes() && i < o + out.bytes())
      return fail(StatusCode::kInvalidArgument,
                  fmt::format("{} overlaps {}; expected separate memory", out_name, in_name));
    return *this;
  }
  Checker& require(bool condition, StatusCode code, const std::string& message) {
    if (!status_.ok() || condition) return *this;
    return fail(code, message);
  }
  Status status() const { return status_; }

 private:
  Checker& fail(StatusCode code, const std::string& message) {
    status_ = Status(code, fmt::format("{}: {}", op_, message));
    return *this;
  }
  const char* op_;
  Location memory_;
  Status status_;
};

// Gemma 2's soft-cap of attention scores or final logits: finite and >= 0 (0: none).
// Attention sinks: absent, or [Hq] in q's dtype.
void check_sinks(Checker& c, const Tensor& sinks, const Tensor& q) {
  c.optional_tensor("sinks", sinks, 1).same_dtype("sinks", sinks, q, "q");
  c.extent("sinks", sinks, 0, q.dim(1), "Hq");
}

void check_softcap(Checker& c, float softcap) {
  c.require(std::isfinite(softcap) && softcap >= 0.0f, StatusCode::kInvalidArgument,
            fmt::format("softcap is {}; expected a finite number >= 0 (0: no soft-capping)", softcap));
}

// Llama 4's chunked attention: chunk >= 0 (0: none).
void check_chunk(Checker& c, std::int64_t chunk) {
  c.require(chunk >= 0, StatusCode::kInvalidArgument,
            fmt::format("chunk is {}; expected >= 1 (or 0: no chunked attention)", chunk));
}

// An activation quantization spec (ops.hpp ActivationQuant) named `name`, over rows of `cols` columns
// (`cols_name`): a format, group >= 0, per_tensor with group 0, finite scales >= 0, and
// a static scale alone (group 0, no scale_ub, no min_scale).
void check_quant(Checker& c, const char* name, const ActivationQuant& q, std::int64_t cols,
                 const char* cols_name) {
  c.require(q.format == QuantFormat::kFp8E4M3 || q.format == QuantFormat::kInt8, StatusCode::kInvalidArgument,
            fmt::format("{}.format is {}; expected kFp8E4M3 or kInt8", name,
                        q.format == QuantFormat::kNone ? std::string("kNone")
                                                       : std::to_string(static_cast<int>(q.format))));
  c.require(
      q.group >= 0, StatusCode::kInvalidArgument,
      fmt::format("{}.group is {}; expected >= 0 (0: per row of {} = {})", name, q.group, cols_name, cols));
  c.require(!q.per_tensor || q.group == 0, StatusCode::kInvalidArgument,
            fmt::format("{}.per_tensor is set with group {}; expected group 0", name, q.group));
  for (auto [field, value] : {std::pair{"static_scale", q.static_scale}, std::pair{"scale_ub", q.scale_ub},
                              std::pair{"min_scale", q.min_scale}})
    c.require(std::isfinite(value) && value >= 0.0f, StatusCode::kInvalidArgument,
              fmt::format("{}.{} is {}; expected a finite number >= 0", name, field, value));
  if (q.static_scale > 0.0f) {
    c.require(q.group == 0, StatusCode::kInvalidArgument,
              fmt::format("{}.group is {} with a static_scale; expected 0", name, q.group));
    c.require(q.scale_ub == 0.0f, StatusCode::kInvalidArgument,
              fmt::format("{}.scale_ub is {} with a static_scale; expected 0", name, q.scale_ub));
    c.require(q.min_scale == 0.0f, StatusCode::kInvalidArgument,
              fmt::format("{}.min_scale is {} with a static_scale; expected 0", name, q.min_scale));
  }
  c.require(std::isfinite(q.outlier_threshold) && q.outlier_threshold >= 0.0f, StatusCode::kInvalidArgument,
            fmt::format("{}.outlier_threshold is {}; expected a finite number >= 0 (0: no outlier columns)",
                        name, q.outlier_threshold));
  if (q.decomposes())
    c.require(q.format == QuantFormat::kInt8 && q.group == 0 && !q.per_tensor && q.static_scale == 0.0f &&
                  q.scale_ub == 0.0f && q.min_scale == 0.0f && !q.pow2_scale,
              StatusCode::kInvalidArgument,
              fmt::format("{}.outlier_threshold {} (LLM.int8()'s outlier columns) is set beside another "
                          "scheme; expected kInt8 per row alone (group 0, not per_tensor, no static_scale, "
                          "scale_ub, min_scale or pow2_scale)",
                          name, q.outlier_threshold));
}

// The outlier-column marks `name` of a call whose specs `decomposes` (ops.hpp ActivationQuant): i32[cols]
// then, absent otherwise.
void check_outliers(Checker& c, const char* name, const Tensor& t, bool decomposes, std::int64_t cols,
                    const char* cols_name) {
  if (!decomposes) {
    c.require(!t.present(), StatusCode::kInvalidArgument,
              fmt::format("{} is given without an outlier_threshold; expected it absent", name));
    return;
  }
  c.tensor(name, t, 1).dtype(name, t, DType::kI32).extent(name, t, 0, cols, cols_name);
}

bool starts_valid(std::span<const std::int64_t> starts, std::int64_t total) {
  if (starts.empty() || starts.front() != 0 || starts.back() != total) return false;
  for (std::size_t i = 1; i < starts.size(); ++i)
    if (starts[i] < starts[i - 1]) return false;
  return true;
}

struct Validator {
  Location memory;

  Status operator()(const GemmArgs& a) const {
    Checker c("gemm", memory);
    c.tensor("a", a.a, 2).tensor("b", a.b, 2).tensor("c", a.c, 2);
    c.float_dtype("a", a.a).same_dtype("b", a.b, a.a, "a").same_dtype("c", a.c, a.a, "a");
    const std::int64_t m = a.a.dim(0), k = a.a.dim(1);
    const std::int64_t n = a.b_transposed ? a.b.dim(0) : a.b.dim(1);
    c.extent("b", a.b, a.b_transposed ? 1 : 0, k, "K (a's columns)");
    c.extent("c", a.c, 0, m, "M (a's rows)").extent("c", a.c, 1, n, "N");
    c.no_alias("c", a.c, "a", a.a).no_alias("c", a.c, "b", a.b);
    return c.status();
  }
  Status operator()(const GemvArgs& a) const {
    Checker c("gemv", memory);
    c.tensor("w", a.w, 2).tensor("x", a.x, 1).tensor("y", a.y, 1);
    c.float_dtype("w", a.w).same_dtype("x", a.x, a.w, "w").same_dtype("y", a.y, a.w, "w");
    c.extent("x", a.x, 0, a.w.dim(1), "K (w's columns)").extent("y", a.y, 0, a.w.dim(0), "N (w's rows)");
    c.no_alias("y", a.y, "w", a.w).no_alias("y", a.y, "x", a.x);
    return c.status();
  }
  Status operator()(const NormArgs& a) const {
    Checker c(a.kind == NormKind::kRms ? "rms_norm" : "layer_norm", memory);
    c.tensor("x", a.x, 2)
        .tensor("weight", a.weight, 1)
        .tensor("y", a.y, 2)
        .optional_tensor("bias", a.bias, 1);
    c.require(a.kind == NormKind::kLayer || !a.bias.present(), StatusCode::kInvalidArgument,
              "bias is given to an RMSNorm; expected it absent");
    c.float_dtype("x", a.x).same_dtype("weight", a.weight, a.x, "x").same_dtype("y", a.y, a.x, "x");
    c.same_dtype("bias", a.bias, a.x, "x");
    c.extent("weight", a.weight, 0, a.x.dim(1), "H").extent("bias", a.bias, 0, a.x.dim(1), "H");
    c.extent("y", a.y, 0, a.x.dim(0), "T").extent("y", a.y, 1, a.x.dim(1), "H");
    c.require(a.eps > 0.0f, StatusCode::kInvalidArgument, fmt::format("eps is {}; expected > 0", a.eps));
    c.require(std::isfinite(a.weight_offset), StatusCode::kInvalidArgument,
              fmt::format("weight_offset is {}; expected a finite number", a.weight_offset));
    c.require(a.x.dim(1) > 0, StatusCode::kInvalidArgument, "H is 0; expected > 0");
    return c.status();
  }
  Status operator()(const RopeArgs& a) const {
    Checker c("rope", memory);
    c.tensor("x", a.x, 3).tensor("positions", a.positions, 1);
    c.float_dtype("x", a.x).dtype("positions", a.positions, DType::kI32);
    c.extent("positions", a.positions, 0, a.x.dim(0), "T");
    const std::int64_t rd = a.rotary_dim == 0 ? a.x.dim(2) : a.rotary_dim;
    c.require(rd > 0 && rd % 2 == 0 && rd <= a.x.dim(2), StatusCode::kInvalidArgument,
              fmt::format("rotary_dim is {}; expected even, > 0 and <= head_dim {}", rd, a.x.dim(2)));
    c.require(a.theta > 0.0f, StatusCode::kInvalidArgument,
              fmt::format("theta is {}; expected > 0", a.theta));
    c.require(std::isfinite(a.scale) && a.scale > 0.0f, StatusCode::kInvalidArgument,
              fmt::format("scale is {}; expected a finite number > 0", a.scale));
    if (!a.inv_freq.empty()) {
      c.require(static_cast<std::int64_t>(a.inv_freq.size()) == rd / 2 && rd / 2 <= kMaxRopeFrequencies,
                StatusCode::kInvalidArgument,
                fmt::format("inv_freq has {} frequencies; expected rotary_dim / 2 = {} (at most {})",
                            a.inv_freq.size(), rd / 2, kMaxRopeFrequencies));
      for (std::size_t i = 0; i < a.inv_freq.size(); ++i)
        c.require(std::isfinite(a.inv_freq[i]) && a.inv_freq[i] > 0.0f, StatusCode::kInvalidArgument,
                  fmt::format("inv_freq[{}] is {}; expected a finite number > 0", i, a.inv_freq[i]));
    }
    return c.status();
  }
  Status operator()(const PrefillAttentionArgs& a) const {
    Checker c("prefill_attention", memory);
    c.tensor("q", a.q, 3).tensor("k", a.k, 3).tensor("v", a.v, 3).tensor("out", a.out, 3);
    c.float_dtype("q", a.q).same_dtype("k", a.k, a.q, "q").same_dtype("v", a.v, a.q, "q");
    c.same_dtype("out", a.out, a.q, "q");
    const std::int64_t t = a.q.dim(0), hkv = a.k.dim(1), d = a.q.dim(2);
    c.extent("k", a.k, 0, t, "T").extent("k", a.k, 2, d, "D").extent("v", a.v, 0, t, "T");
    c.extent("v", a.v, 1, hkv, "Hkv").extent("v", a.v, 2, d, "D");
    c.extent("out", a.out, 0, t, "T")
        .extent("out", a.out, 1, a.q.dim(1), "Hq")
        .extent("out", a.out, 2, d, "D");
    c.require(hkv > 0 && a.q.dim(1) % hkv == 0, StatusCode::kInvalidArgument,
              fmt::format("Hq {} is not a multiple of Hkv {}", a.q.dim(1), hkv));
    c.require(starts_valid(a.seq_starts, t), StatusCode::kInvalidArgument,
              fmt::format("seq_starts must start at 0, not decrease and end at T = {}", t));
    c.require(a.window >= 0, StatusCode::kInvalidArgument,
              fmt::format("window is {}; expected >= 1 (or 0: no sliding window)", a.window));
    check_chunk(c, a.chunk);
    check_softcap(c, a.softcap);
    check_sinks(c, a.sinks, a.q);
    c.no_alias("out", a.out, "q", a.q).no_alias("out", a.out, "k", a.k).no_alias("out", a.out, "v", a.v);
    return c.status();
  }
  Status operator()(const DecodeAttentionArgs& a) const {
    Checker c("decode_attention", memory);
    c.tensor("q", a.q, 3).paged_cache("k_cache", a.k_cache).paged_cache("v_cache", a.v_cache);
    c.tensor("block_table", a.block_table, 2)
        .tensor("context_lens", a.context_lens, 1)
        .tensor("out", a.out, 3);
    c.float_dtype("q", a.q)
        .same_dtype("k_cache", a.k_cache, a.q, "q")
        .same_dtype("v_cache", a.v_cache, a.q, "q");
    c.same_dtype("out", a.out, a.q, "q");
    c.dtype("block_table", a.block_table, DType::kI32).dtype("context_lens", a.context_lens, DType::kI32);
    const std::int64_t b = a.q.dim(0), d = a.q.dim(2), hkv = a.k_cache.dim(2);
    for (int i = 0; i < 4; ++i) c.extent("v_cache", a.v_cache, i, a.k_cache.dim(i), "k_cache's extent");
    c.extent("k_cache", a.k_cache, 3, d, "D (q's head_dim)");
    c.require(a.v_cache.strides == a.k_cache.strides, StatusCode::kUnsupportedLayout,
              fmt::format("v_cache's strides ({}) differ from k_cache's ({}); expected one layout for both",
                          fmt::join(a.v_cache.strides, ", "), fmt::join(a.k_cache.strides, ", ")));
    c.extent("block_table", a.block_table, 0, b, "B").extent("context_lens", a.context_lens, 0, b, "B");
    c.extent("out", a.out, 0, b, "B")
        .extent("out", a.out, 1, a.q.dim(1), "Hq")
        .extent("out", a.out, 2, d, "D");
    c.require(hkv > 0 && a.q.dim(1) % hkv == 0, StatusCode::kInvalidArgument,
              fmt::format("Hq {} is not a multiple of Hkv {}", a.q.dim(1), hkv));
    c.require(a.k_cache.dim(1) > 0, StatusCode::kInvalidArgument, "block_size is 0; expected > 0");
    c.require(a.max_context_len >= 0 && a.max_context_len <= a.block_table.dim(1) * a.k_cache.dim(1),
              StatusCode::kInvalidArgument,
              fmt::format("max_context_len {} must be in [0, max_blocks * block_size = {}]",
                          a.max_context_len, a.block_table.dim(1) * a.k_cache.dim(1)));
    c.require(a.window >= 0, StatusCode::kInvalidArgument,
              fmt::format("window is {}; expected >= 1 (or 0: no sliding window)", a.window));
    check_chunk(c, a.chunk);
    check_softcap(c, a.softcap);
    check_sinks(c, a.sinks, a.q);
    c.no_alias("out", a.out, "q", a.q);
    return c.status();
  }
  Status operator()(const SoftmaxArgs& a) const {
    Checker c("softmax", memory);
    c.tensor("x", a.x, 2).tensor("y", a.y, 2).float_dtype("x", a.x).same_dtype("y", a.y, a.x, "x");
    c.extent("y", a.y, 0, a.x.dim(0), "R").extent("y", a.y, 1, a.x.dim(1), "C");
    return c.status();
  }
  Status operator()(const RouterArgs& a) const {
    Checker c("router", memory);
    c.tensor("hidden", a.hidden, 2).tensor("gate_weight", a.gate_weight, 2).tensor("topk_ids", a.topk_ids, 2);
    c.tensor("topk_weights", a.topk_weights, 2).optional_tensor("logits", a.logits, 2);
    c.float_dtype("hidden", a.hidden).same_dtype("gate_weight", a.gate_weight, a.hidden, "hidden");
    c.dtype("topk_ids", a.topk_ids, DType::kI32).dtype("topk_weights", a.topk_weights, DType::kF32);
    c.dtype("logits", a.logits, DType::kF32);
    const std::int64_t t = a.hidden.dim(0), e = a.gate_weight.dim(0);
    c.extent("gate_weight", a.gate_weight, 1, a.hidden.dim(1), "H");
    c.require(a.top_k >= 1 && a.top_k <= e, StatusCode::kInvalidArgument,
              fmt::format("top_k is {}; expected in [1, experts = {}]", a.top_k, e));
    if (a.kind == RouterKind::kSparseMixer) {
      c.require(a.top_k == 2, StatusCode::kInvalidArgument,
                fmt::format("top_k is {} with the sparsemixer router; expected 2", a.top_k));
      c.require(std::isfinite(a.jitter_eps) && a.jitter_eps >= 0.0f, StatusCode::kInvalidArgument,
                fmt::format("jitter_eps is {}; expected a finite number >= 0", a.jitter_eps));
    }
    c.require(std::isfinite(a.routed_scaling) && a.routed_scaling > 0.0f, StatusCode::kInvalidArgument,
              fmt::format("routed_scaling is {}; expected a finite number > 0", a.routed_scaling));
    c.require(a.kind != RouterKind::kSparseMixer || a.routed_scaling == 1.0f, StatusCode::kInvalidArgument,
              fmt::format("routed_scaling is {} with the sparsemixer router; expected 1", a.routed_scaling));
    const bool grouped = a.kind == RouterKind::kGroupLimited || a.kind == RouterKind::kNoAuxTc;
    if (grouped) {
      c.require(a.num_groups >= 1 && e % a.num_groups == 0, StatusCode::kInvalidArgument,
                fmt::format("num_groups is {}; expected >= 1 and dividing experts = {}", a.num_groups, e));
      c.require(
          a.topk_groups >= 1 && a.topk_groups <= a.num_groups, StatusCode::kInvalidArgument,
          fmt::format("topk_groups is {}; expected in [1, num_groups = {}]", a.topk_groups, a.num_groups));
      const std::int64_t group_size = a.num_groups >= 1 ? e / a.num_groups : 0;
      const std::int64_t kept =
          a.topk_groups >= 1 && a.topk_groups <= a.num_groups ? a.topk_groups * group_size : 0;
      c.require(a.top_k <= kept, StatusCode::kInvalidArgument,
                fmt::format("top_k is {}; expected <= topk_groups x experts per group = {} x {}", a.top_k,
                            a.topk_groups, group_size));
      c.require(a.kind != RouterKind::kNoAuxTc || group_size >= 2, StatusCode::kInvalidArgument,
                fmt::format("num_groups is {} with the noaux_tc router; expected >= 2 experts per group "
                            "(experts = {})",
                            a.num_groups, e));
    } else {
      c.require(a.num_groups == 1 && a.topk_groups == 1, StatusCode::kInvalidArgument,
                fmt::format("num_groups and topk_groups are {} and {}; expected 1 without a group router",
                            a.num_groups, a.topk_groups));
    }
    if (a.kind == RouterKind::kNoAuxTc) {
      c.tensor("correction_bias", a.correction_bias, 1)
          .same_dtype("correction_bias", a.correction_bias, a.gate_weight, "gate_weight")
          .extent("correction_bias", a.correction_bias, 0, e, "E");
    } else {
      c.require(!a.correction_bias.present(), StatusCode::kInvalidArgument,
                "correction_bias is present; only the noaux_tc router takes one");
    }
    c.optional_tensor("logit_bias", a.logit_bias, 1)
        .same_dtype("logit_bias", a.logit_bias, a.gate_weight, "gate_weight")
        .extent("logit_bias", a.logit_bias, 0, e, "E");
    c.extent("topk_ids", a.topk_ids, 0, t, "T").extent("topk_ids", a.topk_ids, 1, a.top_k, "top_k");
    c.extent("topk_weights", a.topk_weights, 0, t, "T")
        .extent("topk_weights", a.topk_weights, 1, a.top_k, "top_k");
    c.extent("logits", a.logits, 0, t, "T").extent("logits", a.logits, 1, e, "E");
    c.optional_tensor("shared_gate_weight", a.shared_gate_weight, 2)
        .optional_tensor("shared_gate", a.shared_gate, 1);
    c.require(a.shared_gate_weight.present() == a.shared_gate.present(), StatusCode::kInvalidArgument,
              "shared_gate_weight and shared_gate must be given together");
    c.same_dtype("shared_gate_weight", a.shared_gate_weight, a.hidden, "hidden");
    c.dtype("shared_gate", a.shared_gate, DType::kF32);
    c.extent("shared_gate_weight", a.shared_gate_weight, 0, 1, "1")
        .extent("shared_gate_weight", a.shared_gate_weight, 1, a.hidden.dim(1), "H");
    c.extent("shared_gate", a.shared_gate, 0, t, "T");
    return c.status();
  }
  Status operator()(const PermuteArgs& a) const {
    Checker c("permute", memory);
    c.tensor("x", a.x, 2).tensor("topk_ids", a.topk_ids, 2).tensor("x_perm", a.x_perm, 2);
    c.tensor("permuted_row", a.permuted_row, 2).tensor("expert_offsets", a.expert_offsets, 1);
    c.float_dtype("x", a.x)
        .same_dtype("x_perm", a.x_perm, a.x, "x")
        .dtype("topk_ids", a.topk_ids, DType::kI32);
    c.dtype("permuted_row", a.permuted_row, DType::kI32)
        .dtype("expert_offsets", a.expert_offsets, DType::kI32);
    const std::int64_t t = a.x.dim(0), k = a.topk_ids.dim(1);
    c.require(a.num_experts >= 1, StatusCode::kInvalidArgument,
              fmt::format("num_experts is {}; expected >= 1", a.num_experts));
    c.extent("topk_ids", a.topk_ids, 0, t, "T").extent("x_perm", a.x_perm, 0, t * k, "T * top_k");
    c.extent("x_perm", a.x_perm, 1, a.x.dim(1), "H").extent("permuted_row", a.permuted_row, 0, t, "T");
    c.extent("permuted_row", a.permuted_row, 1, k, "top_k");
    c.extent("expert_offsets", a.expert_offsets, 0, a.num_experts + 1, "num_experts + 1");
    c.optional_tensor("topk_weights", a.topk_weights, 2).dtype("topk_weights", a.topk_weights, DType::kF32);
    c.extent("topk_weights", a.topk_weights, 0, t, "T").extent("topk_weights", a.topk_weights, 1, k, "top_k");
    c.no_alias("x_perm", a.x_perm, "x", a.x);
    return c.status();
  }
  Status operator()(const UnpermuteArgs& a) const {
    Checker c("unpermute", memory);
    c.tensor("y_perm", a.y_perm, 2).tensor("permuted_row", a.permuted_row, 2);
    c.tensor("topk_weights", a.topk_weights, 2).tensor("out", a.out, 2);
    c.float_dtype("y_perm", a.y_perm).same_dtype("out", a.out, a.y_perm, "y_perm");
    c.dtype("permuted_row", a.permuted_row, DType::kI32).dtype("topk_weights", a.topk_weights, DType::kF32);
    const std::int64_t t = a.out.dim(0), k = a.permuted_row.dim(1);
    c.extent("permuted_row", a.permuted_row, 0, t, "T").extent("topk_weights", a.topk_weights, 0, t, "T");
    c.extent("topk_weights", a.topk_weights, 1, k, "top_k").extent("y_perm", a.y_perm, 0, t * k, "T * top_k");
    c.extent("out", a.out, 1, a.y_perm.dim(1), "H");
    c.no_alias("out", a.out, "y_perm", a.y_perm);
    return c.status();
  }
  Status operator()(const ExpertFfnArgs& a) const {
    Checker c("expert_ffn", memory);
    const bool gated = a.kind == FfnKind::kGated;
    c.tensor("x", a.x, 2).tensor("w_in", a.w_in, 3).tensor("w_down", a.w_down, 3).tensor("y", a.y, 2);
    if (gated) c.tensor("w_up", a.w_up, 3);
    c.require(gated || !a.w_up.present(), StatusCode::kInvalidArgument,
              "w_up is given to a two-matrix FFN; expected it absent");
    c.float_dtype("x", a.x).same_dtype("w_in", a.w_in, a.x, "x").same_dtype("w_up", a.w_up, a.x, "x");
    c.same_dtype("w_down", a.w_down, a.x, "x").same_dtype("y", a.y, a.x, "x");
    const std::int64_t p = a.x.dim(0), h = a.x.dim(1), e = a.w_in.dim(0), f = a.w_in.dim(1);
    c.extent("w_in", a.w_in, 2, h, "H");
    if (gated) {
      for (int i = 0; i < 3; ++i) c.extent("w_up", a.w_up, i, a.w_in.dim(i), "w_in's extent");
    }
    c.extent("w_down", a.w_down, 0, e, "E")
        .extent("w_down", a.w_down, 1, h, "H")
        .extent("w_down", a.w_down, 2, f, "F");
    c.extent("y", a.y, 0, p, "P").extent("y", a.y, 1, h, "H");
    c.optional_tensor("b_in", a.b_in, 2).same_dtype("b_in", a.b_in, a.x, "x");
    c.extent("b_in", a.b_in, 0, e, "E").extent("b_in", a.b_in, 1, f, "F");
    c.optional_tensor("b_up", a.b_up, 2).same_dtype("b_up", a.b_up, a.x, "x");
    c.extent("b_up", a.b_up, 0, e, "E").extent("b_up", a.b_up, 1, f, "F");
    c.require(gated || !a.b_up.present(), StatusCode::kInvalidArgument,
              "b_up is given to a two-matrix FFN; expected it absent");
    c.optional_tensor("b_down", a.b_down, 2).same_dtype("b_down", a.b_down, a.x, "x");
    c.extent("b_down", a.b_down, 0, e, "E").extent("b_down", a.b_down, 1, h, "H");
    c.require(gated || a.activation != Activation::kSwigluOai, StatusCode::kInvalidArgument,
              "activation kSwigluOai with a two-matrix FFN; expected kGated (gpt-oss's SwiGLU is gated)");
    c.require(
        a.expert_offsets.size() == static_cast<std::size_t>(e) + 1, StatusCode::kInvalidArgument,
        fmt::format("expert_offsets has {} entries; expected E + 1 = {}", a.expert_offsets.size(), e + 1));
    c.require(starts_valid(a.expert_offsets, p), StatusCode::kInvalidArgument,
              fmt::format("expert_offsets must start at 0, not decrease and end at P = {}", p));
    if (a.quant_x.enabled()) check_quant(c, "quant_x", a.quant_x, h, "H");
    if (a.quant_h.enabled()) check_quant(c, "quant_h", a.quant_h, f, "F");
    c.optional_tensor("quant_scales", a.quant_scales, 1).dtype("quant_scales", a.quant_scales, DType::kF32);
    c.extent("quant_scales", a.quant_scales, 0, 2, "the scales of x and h");
    c.no_alias("y", a.y, "x", a.x).no_alias("quant_scales", a.quant_scales, "y", a.y);
    c.optional_tensor("h_out", a.h_out, 2).same_dtype("h_out", a.h_out, a.x, "x");
    c.extent("h_out", a.h_out, 0, p, "P").extent("h_out", a.h_out, 1, f, "F");
    c.no_alias("h_out", a.h_out, "x", a.x).no_alias("h_out", a.h_out, "y", a.y);
    check_outliers(c, "quant_outliers", a.quant_outliers, a.quant_x.decomposes() || a.quant_h.decomposes(),
                   h + f, "H + F");
    c.no_alias("quant_outliers", a.quant_outliers, "y", a.y)
        .no_alias("quant_outliers", a.quant_outliers, "x", a.x)
        .no_alias("quant_outliers", a.quant_outliers, "h_out", a.h_out)
        .no_alias("quant_outliers", a.quant_outliers, "quant_scales", a.quant_scales);
    return c.status();
  }
  Status operator()(const ResidualAddArgs& a) const {
    Checker c("residual_add", memory);
    c.tensor("a", a.a, a.a.rank).tensor("b", a.b, a.a.rank).tensor("out", a.out, a.a.rank);
    c.float_dtype("a", a.a).same_dtype("b", a.b, a.a, "a").same_dtype("out", a.out, a.a, "a");
    for (int d = 0; d < a.a.rank; ++d) {
      c.extent("b", a.b, d, a.a.dim(d), "a's extent").extent("out", a.out, d, a.a.dim(d), "a's extent");
    }
    return c.status();
  }
  Status operator()(const ClampArgs& a) const {
    Checker c("clamp", memory);
    c.tensor("x", a.x, a.x.rank).tensor("y", a.y, a.x.rank);
    c.float_dtype("x", a.x).same_dtype("y", a.y, a.x, "x");
    for (int d = 0; d < a.x.rank; ++d) c.extent("y", a.y, d, a.x.dim(d), "x's extent");
    c.require(std::isfinite(a.limit) && a.limit > 0.0f, StatusCode::kInvalidArgument,
              fmt::format("limit is {}; expected a finite number > 0", a.limit));
    return c.status();
  }
  Status operator()(const AttnTemperatureArgs& a) const {
    Checker c("attn_temperature", memory);
    c.tensor("x", a.x, 3).tensor("positions", a.positions, 1);
    c.float_dtype("x", a.x).dtype("positions", a.positions, DType::kI32);
    c.extent("positions", a.positions, 0, a.x.dim(0), "T");
    c.require(std::isfinite(a.floor_scale) && a.floor_scale > 0.0f, StatusCode::kInvalidArgument,
              fmt::format("floor_scale is {}; expected a finite number > 0", a.floor_scale));
    c.require(std::isfinite(a.attn_scale) && a.attn_scale >= 0.0f, StatusCode::kInvalidArgument,
              fmt::format("attn_scale is {}; expected a finite number >= 0", a.attn_scale));
    return c.status();
  }
  Status operator()(const QuantizeArgs& a) const {
    Checker c("quantize", memory);
    c.tensor("x", a.x, 2).tensor("y", a.y, 2).float_dtype("x", a.x).same_dtype("y", a.y, a.x, "x");
    const std::int64_t t = a.x.dim(0), cols = a.x.dim(1);
    c.extent("y", a.y, 0, t, "T").extent("y", a.y, 1, cols, "C");
    check_quant(c, "quant", a.quant, cols, "C");
    // scales: [1] for the call's one scale (static or per tensor), [T, ceil(C / group)] per group, [T] per
    // row.
    const bool call = a.quant.static_scale > 0.0f || a.quant.per_tensor;
    const bool grouped = !call && a.quant.group > 0;
    c.optional_tensor("scales", a.scales, grouped ? 2 : 1).dtype("scales", a.scales, DType::kF32);
    if (call) {
      c.require(
          !a.scales.present() || a.scales.dim(0) == 1, StatusCode::kInvalidArgument,
          fmt::format("scales is {}; expected f32[1] (one static or per-tensor scale)", a.scales.describe()));
    } else {
      c.extent("scales", a.scales, 0, t, "T");
      if (grouped)
        c.extent("scales", a.scales, 1, (cols + a.quant.group - 1) / a.quant.group, "ceil(C / group)");
    }
    if (a.y.data != a.x.data) c.no_alias("y", a.y, "x", a.x);  // in place, or apart
    c.no_alias("scales", a.scales, "x", a.x).no_alias("scales", a.scales, "y", a.y);
    check_outliers(c, "outliers", a.outliers, a.quant.decomposes(), cols, "C");
    c.no_alias("outliers", a.outliers, "x", a.x)
        .no_alias("outliers", a.outliers, "y", a.y)
        .no_alias("outliers", a.outliers, "scales", a.scales);
    return c.status();
  }
  Status operator()(const EmbeddingArgs& a) const {
    Checker c("embedding", memory);
    c.tensor("table", a.table, 2).tensor("ids", a.ids, 1).tensor("out", a.out, 2);
    c.float_dtype("table", a.table)
        .same_dtype("out", a.out, a.table, "table")
        .dtype("ids", a.ids, DType::kI32);
    c.extent("out", a.out, 0, a.ids.dim(0), "T").extent("out", a.out, 1, a.table.dim(1), "H");
    c.require(std::isfinite(a.scale), StatusCode::kInvalidArgument,
              fmt::format("scale is {}; expected a finite number", a.scale));
    return c.status();
  }
  Status operator()(const LmHeadArgs& a) const {
    Checker c("lm_head", memory);
    c.tensor("hidden", a.hidden, 2).tensor("weight", a.weight, 2).tensor("next_ids", a.next_ids, 1);
    c.optional_tensor("logits", a.logits, 2);
    c.float_dtype("hidden", a.hidden).same_dtype("weight", a.weight, a.hidden, "hidden");
    c.dtype("next_ids", a.next_ids, DType::kI32).dtype("logits", a.logits, DType::kF32);
    const std::int64_t t = a.hidden.dim(0), v = a.weight.dim(0);
    c.extent("weight", a.weight, 1, a.hidden.dim(1), "H").extent("next_ids", a.next_ids, 0, t, "T");
    c.extent("logits", a.logits, 0, t, "T").extent("logits", a.logits, 1, v, "V");
    c.optional_tensor("bias", a.bias, 1).same_dtype("bias", a.bias, a.hidden, "hidden");
    c.extent("bias", a.bias, 0, v, "V");
    c.require(v >= 1, StatusCode::kInvalidArgument, "the vocabulary is empty; expected V >= 1");
    check_softcap(c, a.softcap);
    return c.status();
  }
  Status operator()(const PartialSumArgs& a) const {
    Checker c("partial_sum", memory);
    c.tensor("partials", a.partials, 2).tensor("out", a.out, 1);
    c.float_dtype("partials", a.partials).same_dtype("out", a.out, a.partials, "partials");
    c.extent("out", a.out, 0, a.partials.dim(1), "N");
    c.no_alias("out", a.out, "partials", a.partials);
    return c.status();
  }
};

}  // namespace

Status validate_op(const OpArgs& args, Location backend_memory) {
  return std::visit(Validator{backend_memory}, args);
}

}  // namespace duplex::kernels
