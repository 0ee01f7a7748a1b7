#pragma once
// Private to the functional executor: the devices of one pool (the whole system, or one side of a split
// system's prefill / decode pools), each an XpuDevice plus, on a PIM system, a LogicPimDevice or
// BankPimDevice, holding its shard of the weights (device_shard.hpp) and, during a run, its shard of the
// paged KV cache. A step runs on every device (StepRunner) and is timed by the serving simulator's
// StepExecutor on the pool's layout, routed as the step's routers routed.
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "device_shard.hpp"
#include "duplex/runtime/device/pim_unit_device.hpp"
#include "duplex/runtime/device/xpu_device.hpp"
#include "duplex/runtime/scheduler/prefix_cache.hpp"
#include "duplex/runtime/scheduler/step_plan.hpp"
#include "duplex/runtime/sim/step_executor.hpp"
#include "step_runner.hpp"

namespace duplex::runtime::functional {

// Prefix caching (each data-parallel node its own): each request's block keys (prefix_block_keys, by id) and
// the scheduler's prefix cache after it planned the step. The pool's cached blocks follow it: a block is
// cached when the step computing it is scheduled (the first request to fill a key; a request admitted later
// in the step reads the K/V the step writes), a request admitted with cached context starts with the cached
// blocks of its keys, and blocks whose keys the scheduler evicted are freed. With a prefill space a cached
// block lies where its prompt computed it, in the prefill space until that prompt migrates (the pool follows
// the block to the KV spaces then), wherever the requests sharing it are.
struct PrefixView {
  const std::vector<std::vector<std::uint64_t>>* keys = nullptr;
  std::vector<const PrefixCache*> caches;  // each node's (the scheduler's data-parallel ranks); empty: off
};

// Logit rows a scheduled request's step returns (StepRequest::logit_rows): a decoding request of several
// tokens (a verification, or a draft pass catching up) every row, as the lowering's RequestGroup::verify;
// otherwise its last.
inline std::int64_t logit_rows(const ScheduledRequest& s) {
  return s.phase == TokenPhase::decode && s.tokens > 1 ? s.tokens : 1;
}

class DevicePool {
 public:
  // `prefix` starts every unit's name ("" -> "dev0.xpu", "prefill." -> "prefill.dev0.xpu"). `shared_pim`:
  // the one PIM unit every device's PIM ops run on; null: a datapath of kind `datapath_kind` per device, and
  // device 0's writes the waveform `rtl_trace` if that is not empty.
  // Throws duplex::Error for a layout the emulation cannot run (shard_devices).
  DevicePool(const ModelWeights& weights, const SystemSpec& system, int devices, const std::string& prefix,
             const std::shared_ptr<PimUnit>& shared_pim, const std::string& datapath_kind,
             const std::string& rtl_trace = "");

  // Fresh KV caches of `blocks` blocks of `block_tokens` tokens on every device (and, where lowering migrates
  // K/V in the device, `prefill_blocks` more of the prefill space), and a fresh step runner (its xPU
  // quantizing W8A8 GEMMs' inputs with quantize_activations: StepRunner).
  void start(std::int64_t block_tokens, std::int64_t blocks, std::int64_t prefill_blocks,
             bool quantize_activations);

  struct Step {
    StepOutput out;
    StepCost cost;
  };
  // Reserves the scheduled requests' KV slots, runs the step on every device and times it. sequences[id]:
  // request id's prompt and the tokens generated so far, its first prompt_tokens[id] the prompt.
  // Under two-batch overlap (SystemSpec::two_batch_overlap) a step the timing model splits
  // (compiler::micro_batches) runs as its two micro-batches, one after the other on the devices (the second's
  // tokens after the first's in any request they share), each lowered, placed, routed and (W8A8) quantized
  // as the batch it is; the step is timed as their overlapped plans (StepExecutor), replaying each half's
  // routing.
  Step step(const StepPlan& plan, const std::vector<std::vector<std::int32_t>>& sequences,
            const std::vector<std::int64_t>& prompt_tokens, const PrefixView& prefix = {});
  void release(std::int64_t id);
  // The node serving request `id` (its K/V on that node's devices only): requests go round-robin over the
  // layout's data-parallel ranks (nodes, or devices under attention data parallelism) by id.
  int node_of(std::int64_t id) const { return data_parallel_rank(id, layout_.dp); }
  // K/V migration: copies the first `tokens` cached tokens of request `id` from `source`'s devices into this
  // pool's (new blocks, a new block table on every device of its node here), block by block, every layer,
  // each KV head from a source device of its node there holding it to every device of its node here holding
  // it. Returns the bytes moved (each head once).
  double receive_kv(const DevicePool& source, std::int64_t id, std::int64_t tokens);

  const compiler::ParallelLayout& layout() const { return layout_; }
  const SystemSpec& system() const { return sys_; }
  int devices() const { return layout_.devices; }
  const device::XpuDevice& xpu(int d) const { return *xpus_[static_cast<std::size_t>(d)]; }
  const device::IDevice* pim(int d) const {
    return pims_.empty() ? nullptr : pims_[static_cast<std::size_t>(d)].get();
  }
  // The distinct PIM units its devices' PIM ops run on (empty without PIM; pools may share one).
  const std::vector<std::shared_ptr<PimUnit>>& pim_units() const { return pim_units_; }

 private:
  const ModelWeights& w_;
  const SystemSpec& sys_;
  compiler::ParallelLayout layout_;
  compiler::CostModel cost_;
  // Two-batch overlap: the system a micro-batch's computation sees where the other's collectives hold SMs
  // (compiler::overlapped_system; the system itself without two_batch_overlap), and its cost model.
  SystemSpec overlap_system_;
  compiler::CostModel overlap_cost_;
  std::vector<DeviceShard> shards_;
  std::vector<DeviceWeights> weights_;  // per device
  std::vector<std::unique_ptr<device::XpuDevice>> xpus_;
  std::vector<std::unique_ptr<device::PimUnitDevice>> pims_;  // per device; empty without PIM
  std::vector<std::shared_ptr<PimUnit>> pim_units_;           // the distinct units behind pims_
  std::vector<PagedKvCache> kv_;  // per device, during a run: the KV spaces (and the prefill space, if any)
  bool prefill_space_ = false;    // prefill chunks' K/V in the prefill space (LowerOptions::kv_migration)
  std::unique_ptr<StepRunner> runner_;
  // Prefix caching: per key, the node whose devices cache it (the keys of one node's requests are its own:
  // prefix_block_keys' partitions) and its block there (the same block id on every device of the node: they
  // allocate alike); per request the keys it has considered caching (as KvBlockManager's
  // Holder::next_shared).
  struct CachedBlock {
    int node = 0;
    std::int32_t block = 0;
  };
  std::unordered_map<std::uint64_t, CachedBlock> cached_;
  std::map<std::int64_t, std::size_t> next_shared_;
  void share_computed(std::int64_t id, const std::vector<std::uint64_t>& keys, std::int64_t computed);
  // The caches' moves out of the prefill space (the same on every device of one node): cached_ follows them.
  void follow_moves();
  // The first device of `node` (its caches' block tables stand for the node's).
  std::size_t first_device(int node) const;
  // Calls f(cache) for the paged cache of every device of `node`.
  template <class F>
  void each_cache_of(int node, F f) {
    for (std::size_t d = 0; d < shards_.size(); ++d)
      if (shards_[d].node == node) f(kv_[d]);
  }
};

}  // namespace duplex::runtime::functional
