#include "duplex/runtime/sim/step_executor.hpp"

#include <algorithm>
#include <vector>

#include "duplex/base/error.hpp"
#include "duplex/compiler/micro_batches.hpp"

namespace duplex::runtime {

StepExecutor::StepExecutor(const compiler::ModelSpec& model, const SystemSpec& system,
                           const compiler::ParallelLayout& layout, ExpertRouter* router,
                           compiler::PimTimeFn pim_model, compiler::XpuTimeFn xpu_model)
    : model_(model),
      system_(system),
      layout_(layout),
      router_(router),
      cost_(system, layout, pim_model, xpu_model),
      overlap_system_(system.two_batch_overlap ? compiler::overlapped_system(system) : system),
      overlap_cost_(overlap_system_, layout, std::move(pim_model), std::move(xpu_model)) {
  moe_layers_ = model.moe_layers_before(model.layers);
  if (model.is_moe() && router_ == nullptr)
    throw Error("model " + model.name + " is MoE: the workload needs routing");
  if (model.is_moe()) router_weights_ = router_->token_weights(model.experts);
  if (model.is_moe() && system.expert_balancing)
    balancer_.emplace(model, *system.expert_balancing, layout, system.links);
}

compiler::BatchState StepExecutor::batch_of(const StepPlan& plan, int ranks) {
  compiler::BatchState b;
  for (const StepShape& s : plan.shapes(1, ranks))
    b.groups.push_back({s.count, s.context_len, s.tokens, s.completes_prefill,
                        s.phase == TokenPhase::decode && s.tokens > 1,  // a speculative verification
                        s.cached_context, ranks > 1 ? s.rank : -1});
  return b;
}

// A new expert placement: the step waits for the slowest device's copies, an expert_move op first in its
// plan; every device's copies are charged (ExpertBalancer::Move).
void StepExecutor::add_expert_move(const ExpertBalancer::Move& move, StepCost& c) const {
  c.experts_rebalanced = true;
  c.expert_move = move.time;
  c.time += move.time;
  c.energy.charge(EnergyCategory::kCommunication, "links.nvlink_per_byte", move.nvlink_bytes);
  c.energy.charge(EnergyCategory::kCommunication, "links.infiniband_per_byte", move.infiniband_bytes);
  if (move.time <= Time{}) return;  // nothing copied
  compiler::Op op;
  op.name = "expert_move";
  op.kind = compiler::OpKind::kExpertMove;
  op.m = move.device_slots;
  op.link_bytes = move.device_nvlink_bytes + move.device_infiniband_bytes;
  op.link_bytes_in_node = move.device_nvlink_bytes;
  op.bytes_act = 2.0 * op.link_bytes;  // read on the sender, written on the receiver
  c.plan.graph.ops.push_back(op);
  compiler::PlanStage stage;
  stage.ops.push_back(
      {c.plan.graph.ops.size() - 1, compiler::Unit::kLink, move.time, move.time, std::nullopt});
  c.plan.stages.insert(c.plan.stages.begin(), std::move(stage));
  if (!c.plan.starts.empty()) {  // overlapped micro-batches: every stage after the copies
    for (Time& start : c.plan.starts) start += move.time;
    c.plan.starts.insert(c.plan.starts.begin(), Time{});
  }
}

StepCost StepExecutor::execute(const StepPlan& plan, bool first_draft_pass) {
  DUPLEX_ASSERT(!plan.empty(), "execute() of an empty step");
  // Each data-parallel replica runs its own rank's requests (the scheduler's: their K/V is there); functional
  // emulation's one plan holds every group instead.
  const int replicas = every_group_per_replica_ ? 1 : layout_.dp;
  compiler::BatchState batch = batch_of(plan, replicas);
  batch.first_draft_pass = first_draft_pass;
  compiler::Routing routing;
  if (model_.is_moe()) {
    routing.kind = compiler::Routing::Kind::kCounts;
    routing.counts = router_->route(batch.tokens(), model_.experts, model_.top_k, moe_layers_,
                                    model_.router_groups, model_.router_topk_groups);
    routing.weights = router_weights_;
  }
  ExpertBalancer::Move move;
  if (balancer_) {
    move = balancer_->step(routing.counts);
    routing.placement = balancer_->placement();
  }
  const double imbalance = balancer_ ? balancer_->imbalance(routing.counts) : 0.0;
  StepCost c{Time{}, Time{}, Time{}, Time{}, EnergyLedger(system_.energy), {}, false, Time{}, imbalance};
  // Two-batch overlap: the step's micro-batches (one where it runs as one batch), each with its share of the
  // step's routing (compiler/micro_batches.hpp).
  std::vector<compiler::BatchState> micro{batch};
  std::vector<compiler::Routing> routings{routing};
  std::optional<compiler::MicroBatches> halves = compiler::micro_batches(system_, layout_, batch);
  DUPLEX_ASSERT(halves || !micro_counts_, "micro-batch routing replayed for a step run as one batch");
  if (halves) {
    auto shares = compiler::split_routing(routing, halves->first.tokens(), batch.tokens(), model_.experts,
                                          model_.top_k);
    if (micro_counts_ && model_.is_moe())  // functional emulation's halves, as routed
      for (std::size_t m = 0; m < 2; ++m) shares[m].counts = std::move((*micro_counts_)[m]);
    micro = {std::move(halves->first), std::move(halves->second)};
    routings = {shares[0], shares[1]};
    c.micro_batches = true;
  }
  micro_counts_.reset();
  // The collectives of one micro-batch hold SMs the other's computation would use (micro_batches.hpp).
  const bool held_sms = c.micro_batches && compiler::collectives_hold_sms(system_, layout_, batch);
  // Heterogeneous: GPU <-> PIM-device transfers; Logic-PIM memory spaces: the K/V migration after prefill.
  auto lowering = compiler::LowerOptions::for_system(system_);
  lowering.every_group_per_replica = every_group_per_replica_;
  // Every replica's devices are charged for their own share's plan; the slowest replica sets the step time
  // (the replicas meet at every MoE layer's all-to-all; one step for all of them). Replicas with the same
  // request shapes have the same plan (lowering depends on the replica only through its groups): it is
  // lowered and placed once.
  struct Distinct {
    std::vector<std::vector<compiler::RequestGroup>> groups;  // each micro-batch's of the replica, no rank
    EnergyLedger device;                                      // one of its devices' energy
  };
  std::vector<Distinct> distinct;
  for (int r = 0; r < replicas; ++r) {
    std::vector<std::vector<compiler::RequestGroup>> groups(micro.size());
    for (std::size_t m = 0; m < micro.size(); ++m)
      for (compiler::RequestGroup g : micro[m].groups)
        if (replicas == 1 || g.rank == r) {
          g.rank = -1;
          groups[m].push_back(g);
        }
    auto same =
        std::find_if(distinct.begin(), distinct.end(), [&](const Distinct& d) { return d.groups == groups; });
    if (same == distinct.end()) {
      lowering.replica = r;
      EnergyLedger device(system_.energy);
      std::vector<compiler::ExecutionPlan> plans;
      for (std::size_t m = 0; m < micro.size(); ++m) {
        plans.push_back(compiler::place(compiler::lower(model_, micro[m], layout_, routings[m], lowering),
                                        held_sms ? overlap_cost_ : cost_));
        for (const auto& stage : plans.back().stages)
          for (const auto& p : stage.ops) charge_op(device, plans.back().graph.ops[p.op], p.unit, system_);
      }
      compiler::ExecutionPlan placed =
          plans.size() == 2 ? compiler::overlap_micro_batches(plans[0], plans[1]) : std::move(plans[0]);
      // Under pipeline parallelism a step is a round of the batches in flight, each tick its slowest stage's.
      const Time time = compiler::pipeline_round(placed, layout_, model_.layers);
      if (r == 0 || time > c.time) {
        c.time = time;
        c.plan = std::move(placed);
      }
      same = distinct.insert(distinct.end(), Distinct{std::move(groups), std::move(device)});
    }
    c.energy.add(same->device, layout_.devices / replicas);
  }
  if (move.rebalanced) add_expert_move(move, c);
  c.xpu_busy = c.plan.busy(compiler::Unit::kXpu);
  c.pim_busy = c.plan.busy(compiler::Unit::kPim);
  c.link_busy = c.plan.busy(compiler::Unit::kLink);
  return c;
}

}  // namespace duplex::runtime
