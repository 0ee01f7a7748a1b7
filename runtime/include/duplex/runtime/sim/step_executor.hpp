#pragma once
// Times one scheduled step on one system: StepPlan -> shape histogram (BatchState) + expert routing ->
// lowering -> placement / co-processing -> step time, lane busy times and energy. Work per step is
// O(distinct request shapes + ops), never O(tokens).
#include <cstdint>
#include <memory>

#include "duplex/compiler/cost_model.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/compiler/placement.hpp"
#include "duplex/runtime/scheduler/step_plan.hpp"
#include "duplex/runtime/sim/energy_ledger.hpp"
#include "duplex/runtime/workload/expert_routing.hpp"

namespace duplex::runtime {

struct StepCost {
  Time time;                 // the step's duration (slowest device; devices of a TP group are symmetric)
  Time xpu_busy, pim_busy, link_busy;
  EnergyLedger energy;       // whole system (all devices) for this step, dynamic energy only
  compiler::ExecutionPlan plan;  // a device's plan of the slowest data-parallel replica (for timelines)
};

class StepExecutor {
 public:
  // `router` may be null for dense models. `pim_model` replaces the analytical PIM roofline when set.
  StepExecutor(const compiler::ModelSpec& model, const SystemSpec& system, const compiler::ParallelLayout& layout,
               ExpertRouter* router, compiler::PimTimeFn pim_model = {}, compiler::XpuTimeFn xpu_model = {});
  // `first_draft_pass`: the plan is a draft head's first pass of a step (compiler::BatchState).
  StepCost execute(const StepPlan& plan, bool first_draft_pass = false);
  // The step as lowering sees it: one request group per distinct (context, tokens, completes-prefill) shape;
  // with `ranks` > 1 per data-parallel rank too (RequestGroup::rank: request id mod ranks).
  static compiler::BatchState batch_of(const StepPlan& plan, int ranks = 1);
  // Functional emulation's plans: every group on the representative device (LowerOptions::
  // every_group_per_replica).
  void lower_every_group_per_replica() { every_group_per_replica_ = true; }

 private:
  const compiler::ModelSpec& model_;
  const SystemSpec& system_;
  compiler::ParallelLayout layout_;
  ExpertRouter* router_;
  compiler::CostModel cost_;
  std::int64_t moe_layers_ = 0;
  bool every_group_per_replica_ = false;
};

}  // namespace duplex::runtime
