#pragma once
// Functional emulation: runs a model on real tensors for a small batch of prompts, as a Duplex system would.
// Requests are batched continuously by the runtime Scheduler; every step is lowered and placed by the
// compiler (compiler::lower + compiler::place with the system's CostModel, as the serving simulator does),
// then its ops run on tensors on the unit the plan gives them:
//  - xPU ops on the kernels library (CPU backend);
//  - PIM ops (GEMMs the placement sends to PIM, expert FFNs, decode attention) on a PimUnit (the Logic-PIM
//    datapath, golden or RTL; or the SystemC device through the driver, via pim_unit_factory).
// Expert routing is known only after each layer's router runs: the step is re-lowered and re-placed with the
// routing seen so far at every router (the paper's lookup-table split after the gate), so expert
// co-processing splits the experts the router actually picked. Ops are executed in graph order; lanes that
// the plan runs concurrently write disjoint outputs, so results do not depend on lane timing.
// Simulated time and energy per op come from the plan (CostModel) and runtime::charge_op.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>
#include <optional>

#include "duplex/base/device_spec.hpp"
#include "duplex/compiler/op.hpp"
#include "duplex/runtime/functional/model_weights.hpp"
#include "duplex/runtime/functional/pim_unit.hpp"

namespace duplex::runtime::functional {

struct FunctionalOptions {
  std::string datapath;                // PIM datapath "golden" | "rtl"; empty: the system's pim.datapath
  std::int64_t max_batch = 8;          // requests running at once (continuous batching)
  std::int64_t max_tokens_per_step = 0;  // scheduler token budget per step; 0: none
  std::int64_t kv_block_tokens = 16;   // tokens per paged-KV block
  std::int64_t kv_blocks = 0;          // blocks in the pool; 0: enough for every request at full length
  // Makes the PIM unit for the system (e.g. make_device_pim_unit, device_pim_unit.hpp); empty: the Logic-PIM
  // datapath of kind `datapath`. With a factory, `datapath` must be empty.
  std::function<std::unique_ptr<PimUnit>(const SystemSpec&)> pim_unit_factory;
};

// One executed op.
struct OpRecord {
  std::int64_t step = 0;
  std::string name;  // "L0.expert3"
  compiler::OpKind kind = compiler::OpKind::kNorm;
  int layer = -1;
  compiler::Unit unit = compiler::Unit::kXpu;
  Time time;         // on its unit, from the plan
  Energy energy;     // dynamic energy of its actions on that unit (runtime::charge_op)
};

struct StepRecord {
  std::int64_t step = 0;
  std::int64_t requests = 0, prefill_tokens = 0, decode_tokens = 0;
  Time time, xpu_busy, pim_busy;
  // MoE layers whose experts ran on both units in this step (expert co-processing).
  std::vector<int> coprocessed_expert_layers;
};

struct FunctionalResult {
  // Per request (prompt order): generated tokens and the logits [vocab] that chose each.
  std::vector<std::vector<std::int32_t>> tokens;
  std::vector<std::vector<std::vector<float>>> logits;
  std::vector<OpRecord> ops;
  std::vector<StepRecord> steps;
  Time time;                       // simulated: sum of step times
  Energy energy;                   // dynamic energy of all ops (runtime::charge_op)
  nlohmann::json energy_breakdown; // EnergyLedger::breakdown_json()
  std::string xpu_backend, pim_unit;
  std::optional<std::uint64_t> pim_cycles;  // datapath cycles (RTL datapath only)

  // Executed ops per unit name ("xpu", "pim") and per (kind, unit): the placement summary.
  std::map<std::string, std::int64_t> ops_per_unit() const;
  std::map<std::string, std::map<std::string, std::int64_t>> ops_per_kind_and_unit() const;
};

class FunctionalExecutor {
 public:
  // Throws duplex::Error for an unsupported model, a bad option or a PIM datapath kind that does not exist.
  // `weights` must outlive the executor.
  FunctionalExecutor(const ModelWeights& weights, const SystemSpec& system, FunctionalOptions options = {});
  ~FunctionalExecutor();
  FunctionalExecutor(const FunctionalExecutor&) = delete;
  FunctionalExecutor& operator=(const FunctionalExecutor&) = delete;

  // Greedy generation of `max_new_tokens` (>= 1) tokens for every prompt; duplex::Error for bad prompts.
  FunctionalResult run(const std::vector<std::vector<std::int32_t>>& prompts, int max_new_tokens);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace duplex::runtime::functional
