#pragma once
// `duplex simulate` for one system: continuous batching (scheduler) over a request stream (workload),
// every step timed and charged energy by StepExecutor. Results: throughput, TTFT / TBT / E2E percentiles,
// energy per generated token with its breakdown, batch sizes; optionally per-step and per-request rows and
// a lane timeline.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/pim_area.hpp"
#include "duplex/compiler/model_spec.hpp"
#include "duplex/compiler/placement.hpp"
#include "duplex/runtime/scheduler/scheduler_config.hpp"
#include "duplex/runtime/sim/cycle_pim_model.hpp"
#include "duplex/runtime/sim/memory_plan.hpp"
#include "duplex/runtime/sim/request_router.hpp"
#include "duplex/runtime/workload/workload_config.hpp"

namespace duplex::runtime {

// Latency service-level objectives (DistServe, Sarathi-Serve): a request meets them when its time to first
// token is at most ttft_ms and its time per output token after the first, (finish - first token) / (outputs -
// 1), at most tpot_ms (a request of one output token has none). 0: no bound on that one.
struct LatencySlo {
  double ttft_ms = 0;
  double tpot_ms = 0;
  bool any() const { return ttft_ms > 0 || tpot_ms > 0; }
};

struct SimulationOptions {
  SchedulerConfig scheduler;       // kv_capacity_blocks is computed from the memory plan
  WorkloadSpec workload;
  int devices = 0;                 // 0: the system's count for the model
  double memory_reserve = 0.10;    // fraction of HBM kept for activations / workspace (vLLM's default 0.9 use)
  // PIM op timing: "cycle" (the SystemC device's timing engine, memoized; Logic-PIM systems) or "analytical"
  // (the roofline of compiler/cost_model.hpp). Bank-PIM systems always use the analytical model.
  std::string pim_model = "cycle";
  std::string xpu_profile;         // a measured xPU profile CSV (sim/xpu_profile.hpp); "" = the xPU roofline
  // Speculative decoding (scheduler.speculative_tokens > 0): the model proposing the draft tokens, run on the
  // same devices (its own parallel layout) one decode pass per draft token before each step's verification,
  // its weights and K/V in memory beside the target's; it must share the target's vocabulary. None: the
  // drafts cost no device time (n-gram / prompt-lookup drafting on the host).
  std::optional<compiler::ModelSpec> draft_model;
  // Optional: cycle-model memos shared with other runs of the same systems (a sweep's points; see
  // PimTimingMemos). Results do not change, only how often the timing engine runs.
  std::shared_ptr<PimTimingMemos> pim_memos;
  // Called after every step with the requests finished so far and the total (for a progress display).
  std::function<void(std::int64_t finished, std::int64_t total)> progress;
  bool record_steps = false;       // keep per-step rows (for -o DIR)
  std::int64_t timeline_steps = 0; // keep device 0's plan of the first N steps (for the lane timeline)
  LatencySlo slo;                  // report how many requests meet it (SystemResult::slo), when set
  // replicas > 1: that many copies of the system, each of `devices` devices, behind a request router
  // (sim/request_router.hpp). A split system: that many copies of its prefill and decode instances, the
  // router picking the prefill instance of each prompt.
  ClusterSpec cluster;
};

struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0, mean = 0;  // milliseconds
};

struct StepRow {
  std::int64_t step = 0;
  double start_s = 0, end_s = 0;
  std::int64_t requests = 0, decode_requests = 0, prefill_tokens = 0, tokens = 0;
  std::int64_t kv_blocks_used = 0, kv_blocks_capacity = 0;
  double xpu_busy_us = 0, pim_busy_us = 0, link_us = 0, energy_j = 0;
  // The pool that ran it: "" (one), "prefill" | "decode" (split; "prefill<i>" | "decode<i>" with several
  // instances), "replica<i>" (cluster).
  std::string pool;
};

// One plan of a recorded step, from start_s: the step's, or (speculative decoding with a draft model) one of
// its draft passes, which come first with the same step number and ops named "draft<i>.*".
struct TimelineStep {
  std::int64_t step = 0;
  double start_s = 0;
  compiler::ExecutionPlan plan;
};

// One pool of a split system (prefill or decode devices) or one replica of a cluster, over the whole run.
// One data-parallel rank of a pool (SchedulerConfig::data_parallel_ranks): the requests dealt to it, their
// preemptions, the most K/V blocks it held (cached prefix blocks included) of its own, and the most requests
// it ran at once of its share of the batch.
struct RankFigures {
  std::int64_t requests = 0, preemptions = 0, kv_peak_blocks = 0, kv_capacity_blocks = 0;
  std::int64_t batch_peak = 0, max_batch = 0;
};

struct PoolFigures {
  std::string name;  // "prefill" | "decode" | "prefill<i>" | "decode<i>" | "replica<i>"
  int devices = 0;
  std::int64_t requests = 0;  // requests its scheduler served (a split system's decode pool: those migrated)
  std::int64_t steps = 0;
  double batch_mean = 0;  // requests per step of this pool
  std::int64_t batch_max = 0;
  double xpu_utilization = 0, pim_utilization = 0;  // this pool's busy time per device / simulated time, <= 1
  std::vector<RankFigures> ranks;                   // its data-parallel ranks; empty with one
};

// Requests meeting a LatencySlo over a run: their share, and their rate (goodput) in requests and generated
// tokens per simulated second.
struct SloResult {
  LatencySlo slo;
  std::int64_t met = 0;
  double attainment = 0;
  double goodput_req_s = 0, goodput_tok_s = 0;
};

// Expert load balancing over a run (SystemSpec::expert_balancing on an MoE model; every pool's steps):
// rebalancings (the target model's), the time steps waited for expert copies (an MoE draft's included), and
// the busiest expert-parallel group's routed rows
// over the mean group's, averaged over steps and MoE layers (ExpertBalancer::imbalance; 1: even).
struct ExpertBalancingFigures {
  std::int64_t rebalancings = 0;
  double move_s = 0;
  double imbalance_mean = 0;
};

// Two-batch overlap (SystemSpec::two_batch_overlap): the steps that ran as two micro-batches, of all steps
// (compiler::micro_batches: one decoding request, or a prompt on DeepEP's low-latency kernels, run as one).
struct MicroBatchFigures {
  std::int64_t overlapped_steps = 0, steps = 0;
};

struct SystemResult {
  std::string system;
  std::string model;
  std::string layout;
  int devices = 0;     // all of them: a cluster's replicas x devices per replica
  int replicas = 1;    // a cluster's copies of the system (SimulationOptions::cluster)
  std::string router;  // a cluster's request router ("" for one replica or one prefill instance)
  std::string pim_model;
  MemoryPlan memory;
  std::optional<PimArea> pim_area;  // Logic-PIM systems: the units' area per stack (base/pim_area.hpp)
  std::int64_t kv_capacity_blocks = 0;
  // DeepEP's low-latency kernels: the most requests a data-parallel rank runs (SchedulerConfig::
  // rank_batch_cap); 0: no such bound.
  std::int64_t rank_batch_cap = 0;
  std::int64_t steps = 0;
  std::int64_t requests = 0;
  std::int64_t generated_tokens = 0;
  std::int64_t preemptions = 0;
  // Speculative decoding: draft tokens verified and accepted over the run, and the verification steps of all
  // requests (a step verifying n requests' drafts counts n; 0 when off).
  std::int64_t draft_tokens = 0, accepted_tokens = 0, verify_steps = 0;
  // Prefix caching: prompt tokens to compute at admissions of requests with prompt hashes (recomputations
  // included), and those taken from the cache instead (0 / 0 when no request carried hashes).
  std::int64_t prefix_query_tokens = 0, prefix_hit_tokens = 0;
  // A host tier (links.host_kv_offload): its blocks per device (0: none), and the hit tokens loaded from it.
  std::int64_t host_kv_blocks = 0, host_hit_tokens = 0;
  std::int64_t host_remote_hit_tokens = 0;  // of host_hit_tokens, those from another node's memory (cluster)
  std::string host_kv_scope = "device";     // links.host_kv_scope: device, node or cluster
  // A disk tier behind it (links.disk_kv_offload): its blocks per device (0: none), and the host hit tokens
  // read from it.
  std::int64_t disk_kv_blocks = 0, disk_hit_tokens = 0;
  std::int64_t disk_remote_hit_tokens = 0;  // of disk_hit_tokens, those from another node's drives (cluster)
  std::string disk_kv_scope = "device";     // links.disk_kv_scope: device, node or cluster
  double simulated_s = 0;
  double throughput_tok_s = 0;
  Percentiles ttft_ms, tbt_ms, e2e_ms;
  Percentiles tpot_ms;  // per request: (finish - first token) / (outputs - 1), requests of >= 2 outputs
  std::optional<SloResult> slo;  // when SimulationOptions::slo is set
  std::optional<ExpertBalancingFigures> expert_balancing;
  std::optional<MicroBatchFigures> two_batch_overlap;  // when a system of the run has it on
  double batch_mean = 0;  // requests per step over all steps (a split system: both pools' steps; see pools)
  std::int64_t batch_max = 0;
  double energy_j = 0;
  double energy_j_per_token = 0;
  nlohmann::json energy_breakdown;   // "fc.dram", "moe.compute", "static.xpu", ... in joules
  // Busy device-time / (devices x simulated time), <= 1: for a split system both pools' devices together.
  double xpu_utilization = 0, pim_utilization = 0;
  std::vector<PoolFigures>
      pools;  // split systems: the prefill then the decode instances; clusters: the replicas; else empty
  std::vector<RankFigures> ranks;  // one system (no pools): its data-parallel ranks; empty with one
  std::string data_parallel_balance;  // how requests are dealt to the ranks: round-robin | least-loaded
  // The MoE all-to-all's kernels (low_latency | normal | auto) where the layout exchanges tokens; else empty.
  std::string expert_all_to_all;
  std::vector<StepRow> step_rows;
  std::vector<TimelineStep> timeline;
  std::map<std::int64_t, nlohmann::json> request_rows;  // id -> row
  nlohmann::json to_json() const;    // summary (no per-step / per-request rows)
};

SystemResult simulate(const compiler::ModelSpec& model, const SystemSpec& system, const SimulationOptions& options);

// Nearest-rank percentile of `values` (ms); zeros for an empty list.
Percentiles percentiles(std::vector<double> values);

}  // namespace duplex::runtime
