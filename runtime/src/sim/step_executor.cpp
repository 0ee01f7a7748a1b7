#include "duplex/runtime/sim/step_executor.hpp"

#include "duplex/base/error.hpp"

namespace duplex::runtime {

StepExecutor::StepExecutor(const compiler::ModelSpec& model, const SystemSpec& system,
                           const compiler::ParallelLayout& layout, ExpertRouter* router, compiler::PimTimeFn pim_model,
                           compiler::XpuTimeFn xpu_model)
    : model_(model), system_(system), layout_(layout), router_(router), cost_(system, layout, std::move(pim_model), std::move(xpu_model)) {
  moe_layers_ = model.moe_layers_before(model.layers);
  if (model.is_moe() && router_ == nullptr) throw Error("model " + model.name + " is MoE: the workload needs routing");
}

compiler::BatchState StepExecutor::batch_of(const StepPlan& plan) {
  compiler::BatchState b;
  for (const StepShape& s : plan.shapes())
    b.groups.push_back({s.count, s.context_len, s.tokens, s.completes_prefill,
                        s.phase == TokenPhase::decode && s.tokens > 1,  // a speculative verification
                        s.cached_context});
  return b;
}

StepCost StepExecutor::execute(const StepPlan& plan, bool first_draft_pass) {
  DUPLEX_ASSERT(!plan.empty(), "execute() of an empty step");
  compiler::BatchState batch = batch_of(plan);
  batch.first_draft_pass = first_draft_pass;
  compiler::Routing routing;
  if (model_.is_moe()) {
    routing.kind = compiler::Routing::Kind::kCounts;
    routing.counts = router_->route(batch.tokens(), model_.experts, model_.top_k, moe_layers_);
  }
  StepCost c{Time{}, Time{}, Time{}, Time{}, EnergyLedger(system_.energy), {}};
  // Heterogeneous: GPU <-> PIM-device transfers; Logic-PIM memory spaces: the K/V migration after prefill.
  auto lowering = compiler::LowerOptions::for_system(system_);
  lowering.every_group_per_replica = every_group_per_replica_;
  c.plan = compiler::place(compiler::lower(model_, batch, layout_, routing, lowering), cost_);
  c.time = c.plan.total();
  c.xpu_busy = c.plan.busy(compiler::Unit::kXpu);
  c.pim_busy = c.plan.busy(compiler::Unit::kPim);
  c.link_busy = c.plan.busy(compiler::Unit::kLink);
  // Energy: every device's. The plan is a device of the busiest data-parallel replica (replica 0), which sets
  // the step time; the other replicas' devices are charged for their own shares' plans.
  auto charge = [&](const compiler::ExecutionPlan& placed, int devices) {
    EnergyLedger device(system_.energy);
    for (const auto& stage : placed.stages)
      for (const auto& p : stage.ops) charge_op(device, placed.graph.ops[p.op], p.unit, system_);
    c.energy.add(device, devices);
  };
  const int replicas = lowering.every_group_per_replica ? 1 : layout_.dp;
  charge(c.plan, layout_.devices / replicas);
  for (int r = 1; r < replicas; ++r) {
    lowering.replica = r;
    charge(compiler::place(compiler::lower(model_, batch, layout_, routing, lowering), cost_),
           layout_.devices / replicas);
  }
  return c;
}

}  // namespace duplex::runtime
