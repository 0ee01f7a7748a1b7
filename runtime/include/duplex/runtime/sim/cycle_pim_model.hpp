#pragma once
// The cycle-level PIM timing for the serving simulator: each PIM op of the compiler's graph is mapped to the
// per-stack Logic-PIM operations it becomes (DUPLEX.md s.6 "spreading over stacks": an FFN's gate/up
// projections split by columns over all stacks, the gated activation local, the down projection leaving
// partial sums; attention split by request and KV head, a context longer than the softmax buffer holds in
// several passes whose partials are merged), each timed by sysc::time_pim_op (the SystemC device's
// pseudo-channel controller and timing engine, replayed without the SystemC kernel).
//
// Memoized on grids, interpolated linearly between neighbouring grid points: GEMV token counts and attention
// groups per stack exact up to 16 then on quarter octaves (16, 20, 24, 28, 32, 40, ...); attention context on 32-token
// buckets up to 1024, then 1/32 of the power of two below the length (bilinear for attention). Matrix dims
// are exact. The interpolation error is measured against unbucketed calls in
// tests/runtime/cycle_pim_model_test.cpp. The memo is the model's own, or one shared by the runs of a sweep
// (PimTimingMemos: one per system, thread-safe).
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "duplex/base/device_spec.hpp"
#include "duplex/compiler/op.hpp"

namespace duplex::runtime {

class CyclePimModel {
 public:
  // (op kind, its dimensions and flags, the bits of its bytes per streamed element).
  using Key =
      std::tuple<int, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t>;
  // Per-stack op times that several models of the same system share (thread-safe). A time is a pure function
  // of the system and the key, so sharing changes no result, only how often the timing engine runs.
  struct SharedMemo {
    std::mutex mutex;
    std::map<Key, Time> times;
  };

  // Throws duplex::Error unless the system's PIM is a Logic-PIM. With `shared`, the memo is that one (every
  // model sharing it must time this same system: see PimTimingMemos); else the model's own.
  explicit CyclePimModel(const SystemSpec& system, std::shared_ptr<SharedMemo> shared = nullptr);
  // Time of a PIM-supported op on one device's Logic-PIM units (all stacks in parallel), including the
  // dispatch latency of each per-stack operation. A GEMV streams its weights at dtype_bytes(op.dtype) per
  // element (the lowering's weight format: MXFP4 experts 0.53125 B, FP8 1 B), an attention its K / V at the
  // KV cache's.
  Time time(const compiler::Op& op);
  // Single per-stack operations, off the grids (for measuring the interpolation error).
  Time attention_exact(std::int64_t groups_per_stack, std::int64_t group_size, std::int64_t context,
                       std::int64_t head_dim, bool softcap = false, bool sinks = false, double kv_bytes = 2);
  Time gemv_exact(std::int64_t tokens, std::int64_t rows, std::int64_t cols, bool bias = false,
                  double weight_bytes = 2);
  Time activation_exact(std::int64_t elements) { return activation(elements); }
  std::size_t cache_size() const;
  std::uint64_t simulated_ops() const { return simulated_; }

  static std::int64_t context_bucket_below(std::int64_t context);
  static std::int64_t context_bucket_above(std::int64_t context);
  // Grid for token counts and attention groups: exact up to 16, then quarter octaves (16, 20, 24, 28, 32, 40, ...).
  static std::int64_t grid_below(std::int64_t x);
  static std::int64_t grid_above(std::int64_t x);

 private:
  // bias: each row's accumulator starts at a bias read with the weights (rows x 2 B more, no cycle);
  // weight_bytes: per element of W.
  Time gemv(std::int64_t tokens, std::int64_t rows, std::int64_t cols, bool bias, double weight_bytes);
  Time activation(std::int64_t elements);
  // softcap: the scores pass the softmax unit's cap stages (Gemma 2); sinks: each row's sink logit (gpt-oss)
  // is read with q and joins the max and the sum; kv_bytes: per element of K and V.
  Time attention_at(std::int64_t groups, std::int64_t group_size, std::int64_t context, std::int64_t head_dim,
                    bool softcap, bool sinks, double kv_bytes);
  Time cached(const Key& key, const std::function<Time()>& compute);

  const SystemSpec& system_;
  std::map<Key, Time> cache_;            // without a shared memo
  std::shared_ptr<SharedMemo> shared_;   // or this
  std::uint64_t simulated_ = 0;
};

// The shared memos of a sequence of runs (a sweep's points), one per system, keyed by the system's resolved
// config (SystemSpec::resolved_yaml): only for systems read from configs as they are; a system without a
// resolved config gets no shared memo (nullptr: its model keeps its own).
class PimTimingMemos {
 public:
  std::shared_ptr<CyclePimModel::SharedMemo> for_system(const SystemSpec& system);

 private:
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<CyclePimModel::SharedMemo>> memos_;
};

}  // namespace duplex::runtime
