#pragma once
// Times one scheduled step on one system: StepPlan -> shape histogram (BatchState) + expert routing ->
// lowering -> placement / co-processing -> step time, lane busy times and energy. Work per step is
// O(distinct request shapes + ops), never O(tokens).
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "duplex/compiler/cost_model.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/compiler/placement.hpp"
#include "duplex/runtime/scheduler/step_plan.hpp"
#include "duplex/runtime/sim/energy_ledger.hpp"
#include "duplex/runtime/sim/expert_balancer.hpp"
#include "duplex/runtime/workload/expert_routing.hpp"

namespace duplex::runtime {

struct StepCost {
  Time time;                 // the step's duration (slowest device; devices of a TP group are symmetric)
  Time xpu_busy, pim_busy, link_busy;
  EnergyLedger energy;       // whole system (all devices) for this step, dynamic energy only
  compiler::ExecutionPlan plan;  // a device's plan of the slowest data-parallel replica (for timelines)
  // Expert load balancing: whether this step placed the experts again, and the time it waited for the
  // copies (in `time`, and first in `plan` as an expert_move op).
  bool experts_rebalanced = false;
  Time expert_move;
  double expert_imbalance = 0;  // ExpertBalancer::imbalance of the step's routing (0 without balancing)
  bool micro_batches = false;   // two-batch overlap: the step ran as two micro-batches
};

class StepExecutor {
 public:
  // `router` may be null for dense models. `pim_model` replaces the analytical PIM roofline when set. An MoE
  // model on a system with expert load balancing has its experts placed by an ExpertBalancer over the
  // executor's steps.
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
  // Functional emulation under two-batch overlap: the next execute()'s micro-batches as their routers routed
  // them ([moe layer][expert] counts, the first micro-batch's then the second's), in place of split_routing's
  // shares of the step's routing. That step must run as two micro-batches (else an InternalError).
  void replay_micro_batch_routing(std::array<std::vector<std::vector<std::int64_t>>, 2> counts) {
    micro_counts_ = std::move(counts);
  }
  bool balances_experts() const { return balancer_.has_value(); }

 private:
  void add_expert_move(const ExpertBalancer::Move& move, StepCost& c) const;

  const compiler::ModelSpec& model_;
  const SystemSpec& system_;
  compiler::ParallelLayout layout_;
  ExpertRouter* router_;
  std::optional<ExpertBalancer> balancer_;  // SystemSpec::expert_balancing on an MoE model
  compiler::CostModel cost_;
  // Two-batch overlap: the system its micro-batches' computation sees where the other half's collectives
  // hold SMs (compiler::overlapped_system, collectives_hold_sms) and its cost model.
  SystemSpec overlap_system_;
  compiler::CostModel overlap_cost_;
  std::int64_t moe_layers_ = 0;
  std::vector<double>
      router_weights_;  // the router's per-expert weights (ExpertRouter::token_weights), fixed
  bool every_group_per_replica_ = false;
  std::optional<std::array<std::vector<std::vector<std::int64_t>>, 2>> micro_counts_;
};

}  // namespace duplex::runtime
