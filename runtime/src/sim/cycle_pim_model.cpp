#include "duplex/runtime/sim/cycle_pim_model.hpp"

#include <algorithm>
#include <bit>
#include <fmt/format.h>
#include <functional>

#include "duplex/base/error.hpp"
#include "duplex/sysc/pim_timing.hpp"

namespace duplex::runtime {

using compiler::OpKind;

namespace {
std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
}
// A memo key's slot for bytes per element: the double's bits, so that every format keys apart exactly.
std::int64_t bytes_key(double bytes) {
  return std::bit_cast<std::int64_t>(bytes);
}
}  // namespace

CyclePimModel::CyclePimModel(const SystemSpec& system, std::shared_ptr<SharedMemo> shared)
    : system_(system), shared_(std::move(shared)) {
  if (!system.pim || system.pim->kind != PimKind::kLogicPim)
    throw Error("system " + system.name +
                ": the cycle-level PIM model needs a Logic-PIM (use --pim-model analytical)");
}

std::size_t CyclePimModel::cache_size() const {
  if (!shared_) return cache_.size();
  const std::lock_guard<std::mutex> lock(shared_->mutex);
  return shared_->times.size();
}

std::shared_ptr<CyclePimModel::SharedMemo> PimTimingMemos::for_system(const SystemSpec& system) {
  if (system.resolved_yaml.empty()) return nullptr;
  const std::lock_guard<std::mutex> lock(mutex_);
  auto& memo = memos_[system.resolved_yaml];
  if (!memo) memo = std::make_shared<CyclePimModel::SharedMemo>();
  return memo;
}

Time CyclePimModel::cached(const Key& key, const std::function<Time()>& compute) {
  if (shared_) {
    {
      const std::lock_guard<std::mutex> lock(shared_->mutex);
      auto it = shared_->times.find(key);
      if (it != shared_->times.end()) return it->second;
    }
    ++simulated_;
    const Time t = compute();  // outside the lock; a concurrent model may time the same key to the same value
    const std::lock_guard<std::mutex> lock(shared_->mutex);
    return shared_->times.emplace(key, t).first->second;
  }
  auto it = cache_.find(key);
  if (it != cache_.end()) return it->second;
  ++simulated_;
  const Time t = compute();
  cache_.emplace(key, t);
  return t;
}

Time CyclePimModel::gemv(std::int64_t tokens, std::int64_t rows, std::int64_t cols, bool bias,
                         double weight_bytes) {
  // Token counts beyond what the input buffer holds run as several passes over the weights.
  const std::int64_t per_pass = sysc::max_gemv_tokens(*system_.pim, cols);
  const std::int64_t passes = ceil_div(tokens, per_pass);
  const std::int64_t last = tokens - (passes - 1) * per_pass;
  auto at = [&](std::int64_t t) {
    return cached({0, t, rows, cols, bias ? 1 : 0, 0, bytes_key(weight_bytes)},
                  [&] { return gemv_exact(t, rows, cols, bias, weight_bytes); });
  };
  auto one = [&](std::int64_t t) {  // interpolated on the token grid, never beyond one pass
    const std::int64_t lo = grid_below(t), hi = std::min(grid_above(t), per_pass);
    if (hi <= lo) return at(t);
    return at(lo) + (at(hi) - at(lo)) * (static_cast<double>(t - lo) / static_cast<double>(hi - lo));
  };
  Time total = last > 0 ? one(last) : Time{};
  if (passes > 1) total += at(per_pass) * static_cast<double>(passes - 1);
  return total;
}

std::int64_t CyclePimModel::grid_below(std::int64_t x) {
  if (x <= 16) return x;
  const auto step = static_cast<std::int64_t>(std::bit_floor(static_cast<std::uint64_t>(x))) / 4;
  return (x / step) * step;
}

std::int64_t CyclePimModel::grid_above(std::int64_t x) {
  const std::int64_t lo = grid_below(x);
  if (lo == x) return x;
  return lo + static_cast<std::int64_t>(std::bit_floor(static_cast<std::uint64_t>(x))) / 4;
}

Time CyclePimModel::activation(std::int64_t elements) {
  return cached({1, elements, 0, 0, 0, 0, 0}, [&] {
    sysc::PimOpShape s;
    s.kind = sysc::PimOpKind::kActivation;
    s.elements = elements;
    return sysc::time_pim_op(system_.memory, *system_.pim, s).total;
  });
}

Time CyclePimModel::attention_at(std::int64_t groups, std::int64_t group_size, std::int64_t context,
                                 std::int64_t head_dim, bool softcap, bool sinks, double kv_bytes) {
  return cached(
      {2, groups, group_size, context, head_dim, (softcap ? 1 : 0) | (sinks ? 2 : 0), bytes_key(kv_bytes)},
      [&] {
        sysc::PimOpShape s;
        s.kind = sysc::PimOpKind::kAttention;
        s.kv_heads = groups;
        s.group_size = group_size;
        s.context = context;
        s.head_dim = head_dim;
        s.softcap = softcap;
        s.sinks = sinks;
        s.dtype_bytes = kv_bytes;
        return sysc::time_pim_op(system_.memory, *system_.pim, s).total;
      });
}

std::int64_t CyclePimModel::context_bucket_below(std::int64_t c) {
  if (c <= 1024) return std::max<std::int64_t>(1, (c / 32) * 32);
  const std::int64_t step = static_cast<std::int64_t>(std::bit_floor(static_cast<std::uint64_t>(c))) / 32;
  return (c / step) * step;
}

std::int64_t CyclePimModel::context_bucket_above(std::int64_t c) {
  const std::int64_t below = context_bucket_below(c);
  if (below == c) return c;
  if (c <= 1024) return below == 1 ? 32 : below + 32;
  const std::int64_t step = static_cast<std::int64_t>(std::bit_floor(static_cast<std::uint64_t>(c))) / 32;
  return below + step;
}

Time CyclePimModel::attention_exact(std::int64_t groups, std::int64_t group_size, std::int64_t context,
                                    std::int64_t head_dim, bool softcap, bool sinks, double kv_bytes) {
  return attention_at(groups, group_size, context, head_dim, softcap, sinks, kv_bytes);
}

Time CyclePimModel::gemv_exact(std::int64_t tokens, std::int64_t rows, std::int64_t cols, bool bias,
                               double weight_bytes) {
  sysc::PimOpShape s;
  s.kind = sysc::PimOpKind::kGemv;
  s.tokens = tokens;
  s.rows = rows;
  s.cols = cols;
  s.bias = bias;
  s.dtype_bytes = weight_bytes;
  return sysc::time_pim_op(system_.memory, *system_.pim, s).total;
}

Time CyclePimModel::time(const compiler::Op& op) {
  const std::int64_t stacks = system_.stacks;
  const double bytes = op.weight_bytes_per_element();  // per weight (GEMVs) or K / V element (attention)
  switch (op.kind) {
    case OpKind::kExpertFfn:
    case OpKind::kSharedExpertFfn:
    case OpKind::kDenseFfn: {
      // Gate/up (or up) rows split over the stacks; activation local; down projection over the stack's
      // slice of the FFN width, leaving partial sums. With biases (gpt-oss's experts) every GEMV reads its
      // rows' biases (the down bias counted on each stack: an upper bound of hidden x 2 B per stack).
      const std::int64_t width = ceil_div(op.n, stacks);
      const bool gated = op.matrices == 3;
      Time t = gemv(op.m, (gated ? 2 : 1) * width, op.k, op.bias, bytes);
      if (gated) t += activation(op.m * width);
      t += gemv(op.m, op.k, width, op.bias, bytes);
      return t;
    }
    case OpKind::kQkvProj:
    case OpKind::kOProj:
      return gemv(op.m, ceil_div(op.n * op.matrices, stacks), op.k, false, bytes);
    case OpKind::kAttentionDecode: {
      // Bilinear interpolation over (groups per stack, context) on the two grids. A context longer than one
      // op takes (the group's FP16 scores must fit the softmax buffer: sysc::max_attention_context) runs as
      // several passes over equal slices of the K/V, each an attention op; their partial outputs are then
      // merged (rescaled to the common max and added, as the split-KV kernels do), timed as an
      // activation-unit pass over the partials (passes x groups x group_size x head_dim elements).
      // A speculative step's requests verify several tokens each: their query rows join the GQA group (every
      // row reads the same K/V head), rounded up to whole rows per request.
      const std::int64_t groups = ceil_div(op.requests * op.kv_heads, stacks);
      const std::int64_t rows =
          std::max<std::int64_t>(1, ceil_div(op.query_tokens, std::max<std::int64_t>(1, op.requests)));
      const std::int64_t group_size = std::max(1, op.q_heads / std::max(1, op.kv_heads)) * rows;
      const std::int64_t full_context =
          std::max<std::int64_t>(1, op.context_tokens / std::max<std::int64_t>(1, op.requests));
      const std::int64_t max_context = sysc::max_attention_context(*system_.pim, group_size);
      if (max_context < 1)
        throw Error(fmt::format("system {}: a query group of {} heads does not fit the Logic-PIM softmax buffer",
                                system_.name, group_size));
      const std::int64_t passes = ceil_div(full_context, max_context);
      const std::int64_t context = ceil_div(full_context, passes);
      const std::int64_t c_lo = context_bucket_below(context);
      const std::int64_t c_hi = std::min(context_bucket_above(context), max_context);
      const std::int64_t g_lo = grid_below(groups), g_hi = grid_above(groups);
      auto at_context = [&](std::int64_t g) {
        const Time t_lo = attention_at(g, group_size, c_lo, op.head_dim, op.softcap, op.sinks, bytes);
        if (c_hi == c_lo) return t_lo;
        const Time t_hi = attention_at(g, group_size, c_hi, op.head_dim, op.softcap, op.sinks, bytes);
        return t_lo +
               (t_hi - t_lo) * (static_cast<double>(context - c_lo) / static_cast<double>(c_hi - c_lo));
      };
      const Time t_lo = at_context(g_lo);
      const Time one_pass =
          g_hi == g_lo ? t_lo
                       : t_lo + (at_context(g_hi) - t_lo) *
                                    (static_cast<double>(groups - g_lo) / static_cast<double>(g_hi - g_lo));
      if (passes == 1) return one_pass;
      return one_pass * static_cast<double>(passes) + activation(passes * groups * group_size * op.head_dim);
    }
    default:
      throw InternalError("cycle PIM model asked to time an op the PIM does not run: " + op.name);
  }
}

}  // namespace duplex::runtime
