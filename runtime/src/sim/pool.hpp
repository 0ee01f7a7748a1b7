#pragma once
// Internal to the serving simulator: one pool of devices that runs its own scheduler and times its steps
// (a whole system, or the prefill / decode half of a split system), and the accumulators of a run.
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "duplex/runtime/scheduler/scheduler.hpp"
#include "duplex/runtime/sim/cycle_pim_model.hpp"
#include "duplex/runtime/sim/request_router.hpp"
#include "duplex/runtime/sim/serving_simulator.hpp"
#include "duplex/runtime/sim/step_executor.hpp"
#include "duplex/runtime/sim/xpu_profile.hpp"

namespace duplex::runtime::detail {

// What all pools of one run add to.
struct RunTotals {
  explicit RunTotals(const EnergyTable& table) : energy(table) {}
  EnergyLedger energy;
  Time xpu_busy, pim_busy;  // device-time: each step's per-device busy time x the pool's devices
  double batch_sum = 0;
  std::int64_t steps = 0;
  std::int64_t batch_max = 0;
  // Expert load balancing (StepExecutor::balances_experts): steps, rebalancings, the time steps waited for
  // expert copies, and the steps' ExpertBalancer::imbalance summed.
  std::int64_t balanced_steps = 0, rebalancings = 0;
  Time expert_move;
  double imbalance_sum = 0;
  // Two-batch overlap (SystemSpec::two_batch_overlap on some pool): whether any pool has it, and the steps
  // that ran as two micro-batches.
  bool overlap = false;
  std::int64_t overlapped_steps = 0;
};

// Pools sharing a host (or disk) tier (links.host_kv_scope / disk_kv_scope: node, cluster): the first pool
// built with it makes the tier, of `pools` x its own capacity; the others use it.
struct SharedHostTier {
  int pools = 0;
  std::shared_ptr<HostKvTier> tier;
};

// The node (of `per_node` consecutive devices) holding devices [first_device, first_device + devices); none
// when they span nodes.
inline std::optional<int> node_of(int first_device, int devices, int per_node) {
  const int a = first_device / per_node;
  return a == (first_device + devices - 1) / per_node ? std::optional<int>(a) : std::nullopt;
}

// The host (or disk) tiers of a run's pools (a cluster's replicas, a split system's prefill instances), given
// their devices in the run's numbering (nodes of links.devices_per_node consecutive devices). With `scope`
// (links.host_kv_scope, or disk_kv_scope) node the pools lying in one node share one, and a pool spanning
// nodes has its own; with scope cluster every pool shares one, the run's store; with scope device every pool
// has its own (of_pool: null). Declare every pool before building the first.
class SharedHostTiers {
 public:
  SharedHostTiers(HostKvScope scope, const LinkSpec& links)
      : scope_(scope), per_node_(links.devices_per_node) {}
  void declare(int first_device, int devices) {
    if (const auto n = node(first_device, devices)) ++tiers_[*n].pools;
  }
  SharedHostTier* of_pool(int first_device, int devices) {
    const auto n = node(first_device, devices);
    return n ? &tiers_.at(*n) : nullptr;
  }

 private:
  // The tier's number: the pools' node, or 0 for the run's store.
  std::optional<int> node(int first_device, int devices) const {
    if (scope_ == HostKvScope::cluster) return 0;
    return scope_ == HostKvScope::node ? node_of(first_device, devices, per_node_) : std::nullopt;
  }
  HostKvScope scope_;
  int per_node_;
  std::map<int, SharedHostTier> tiers_;
};

class Pool {
 public:
  // Throws duplex::Error when the model does not fit the pool's devices. `shared_host` / `shared_disk`: the
  // host / disk tier it shares (its node's, or the run's store; null: a tier of its own, when the system has
  // one). `first_device`: its first device's number in the run (which node's host memory and drives take its
  // copies).
  Pool(const compiler::ModelSpec& model, const SystemSpec& system, const SimulationOptions& options,
       int devices, ExpertRouter* router, SystemResult& result, RunTotals& totals, std::string name = "",
       SharedHostTier* shared_host = nullptr, int first_device = 0, SharedHostTier* shared_disk = nullptr);
  Scheduler& scheduler() { return *scheduler_; }
  const Scheduler& scheduler() const { return *scheduler_; }
  const std::string& name() const { return name_; }
  const compiler::ParallelLayout& layout() const { return layout_; }
  const MemoryPlan& memory() const { return memory_; }
  std::int64_t kv_blocks() const { return kv_blocks_; }
  std::int64_t host_kv_blocks() const { return scheduler_->config().host_kv_blocks; }
  std::int64_t rank_batch_cap() const { return scheduler_->config().rank_batch_cap; }
  std::int64_t disk_kv_blocks() const { return scheduler_->config().disk_kv_blocks; }
  bool cycle_model() const { return cycle_ != nullptr; }
  // Times one step, adds its energy and statistics to the run; returns its duration.
  Time step(const StepPlan& plan);
  // This pool's steps, batch sizes and utilisation over a run of `simulated` time.
  PoolFigures figures(Time simulated) const;

 private:
  const SimulationOptions& options_;
  compiler::ParallelLayout layout_;
  MemoryPlan memory_;
  std::int64_t kv_blocks_ = 0;
  std::unique_ptr<CyclePimModel> cycle_;
  std::unique_ptr<XpuProfile> xpu_profile_;
  std::unique_ptr<StepExecutor> executor_;
  std::optional<compiler::ParallelLayout> draft_layout_;
  std::unique_ptr<StepExecutor> draft_executor_;  // speculative decoding with a draft model
  // Adds to c the draft model's passes before `plan`'s verification, the first with its prefills (none
  // without a draft model): their time, busy times and energy; appends their plans to `plans` when given
  // (op names prefixed "draft<i>.").
  void add_draft_passes(const StepPlan& plan, StepCost& c, std::vector<compiler::ExecutionPlan>* plans);
  // The host tier's transfers of a step (links.host_*): K/V loaded before it (time, energy) and copied out
  // beside it (energy); nothing without a host tier.
  void add_host_transfers(const StepPlan& plan, StepCost& c) const;
  struct HostLink {
    Bandwidth bandwidth;
    Time latency;
    Bandwidth remote_bandwidth;  // a store spanning nodes: another node's copies come over InfiniBand
    Time remote_latency;
    Bandwidth disk_bandwidth;  // a disk tier behind the host tier
    Time disk_latency;
    double kv_bytes_per_token = 0;  // one device's share
    std::int64_t block_tokens = 0;
    bool layerwise = false;  // links.host_kv_layerwise: loads overlap the layers before them
    int layers = 1;          // the model's: a layerwise load's units
  };
  std::optional<HostLink> host_link_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<RequestRouter> rank_router_;  // data_parallel_balance cache-aware: deals to the ranks
  SystemResult& result_;
  RunTotals& totals_;
  std::string name_;
  int devices_;
  Time xpu_busy_, pim_busy_;  // per device, summed over this pool's steps
  double batch_sum_ = 0;
  std::int64_t steps_ = 0, batch_max_ = 0;
};

// One request's user-visible timeline (for split systems: prefill pool's first token + decode pool's rest).
struct RequestTimeline {
  RequestSpec spec;
  std::vector<Time> token_times;
  std::int64_t preemptions = 0;
  std::int64_t draft_tokens = 0, accepted_tokens = 0, verify_steps = 0;  // speculative decoding
  std::int64_t prefix_query_tokens = 0, prefix_hit_tokens = 0;           // prefix caching
  std::int64_t host_hit_tokens = 0;                                      // of those, from the host tier
  std::int64_t host_remote_hit_tokens = 0;  // of those, from another node's host memory
  std::int64_t disk_hit_tokens = 0;         // of those, from the disk tier
  std::int64_t disk_remote_hit_tokens = 0;  // of those, from another node's drives
  std::string pool;  // a cluster's replica that served it ("" otherwise)
};

// Sets r's memory plan, KV blocks, host tier, PIM area and PIM timing from `pool` (a split system: its decode
// pool, the host tier then set from the prefill pool's).
void describe_memory_and_timing(SystemResult& r, const Pool& pool, const SystemSpec& system);

// The timeline of a request its record shows finished (InternalError otherwise), served by `pool`.
RequestTimeline finished_timeline(const RequestRecord& record, std::string pool = "");

// The expert router the workload asks for; null for dense models; duplex::Error for an MoE model whose
// workload has no routing section.
std::unique_ptr<ExpertRouter> make_router(const compiler::ModelSpec& model, const WorkloadSpec& workload);

// Adds the static energy of `devices` devices of `system` over a run that ended at `end`.
void charge_static_energy(RunTotals& totals, const SystemSpec& system, int devices, Time end);

// Fills the latency, throughput, energy and batch figures of `r` from the timelines and totals (and the
// requests meeting `slo`, when set) for `devices` devices; adds static energy for `static_devices` of them
// (default: all) of `system` over the run (a split system with another system's prefill devices charges
// those itself).
void finish_result(SystemResult& r, const std::vector<RequestTimeline>& timelines, RunTotals& totals,
                   Time end, const SystemSpec& system, int devices, bool record_requests,
                   const LatencySlo& slo, std::optional<int> static_devices = std::nullopt);

}  // namespace duplex::runtime::detail
