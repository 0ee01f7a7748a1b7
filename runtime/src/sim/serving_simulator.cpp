#include "duplex/runtime/sim/serving_simulator.hpp"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <numeric>

#include "duplex/base/error.hpp"
#include "duplex/runtime/scheduler/scheduler.hpp"
#include "duplex/runtime/scheduler/serving_loop.hpp"
#include "duplex/runtime/sim/cycle_pim_model.hpp"
#include "duplex/runtime/sim/step_executor.hpp"

namespace duplex::runtime {

Percentiles percentiles(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto rank = [&](double q) {
    const auto idx = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size()))) - 1;
    return v[std::min(idx, v.size() - 1)];
  };
  p.p50 = rank(0.50);
  p.p90 = rank(0.90);
  p.p99 = rank(0.99);
  p.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  return p;
}

namespace {

nlohmann::json percentiles_json(const Percentiles& p) {
  return {{"p50", p.p50}, {"p90", p.p90}, {"p99", p.p99}, {"mean", p.mean}};
}

}  // namespace

nlohmann::json SystemResult::to_json() const {
  return {{"system", system},
          {"model", model},
          {"devices", devices},
          {"layout", layout},
          {"pim_model", pim_model},
          {"requests", requests},
          {"steps", steps},
          {"generated_tokens", generated_tokens},
          {"preemptions", preemptions},
          {"simulated_s", simulated_s},
          {"throughput_tok_s", throughput_tok_s},
          {"ttft_ms", percentiles_json(ttft_ms)},
          {"tbt_ms", percentiles_json(tbt_ms)},
          {"e2e_ms", percentiles_json(e2e_ms)},
          {"energy_j", energy_j},
          {"energy_j_per_token", energy_j_per_token},
          {"energy_breakdown", energy_breakdown},
          {"batch_size", {{"mean", batch_mean}, {"max", batch_max}}},
          {"utilization", {{"xpu", xpu_utilization}, {"pim", pim_utilization}}},
          {"memory",
           {{"weights_gib_per_device", memory.weight_bytes_per_device / 1073741824.0},
            {"kv_bytes_per_token_per_device", memory.kv_bytes_per_token},
            {"kv_tokens", memory.kv_tokens},
            {"kv_blocks", kv_capacity_blocks}}}};
}

SystemResult simulate(const compiler::ModelSpec& model, const SystemSpec& system, const SimulationOptions& o) {
  const int devices = o.devices > 0 ? o.devices : system.devices_for(model.name);
  const auto layout = compiler::ParallelLayout::make(model, system, devices);
  SystemResult r;
  r.system = system.name;
  r.model = model.name;
  r.layout = layout.describe();
  r.devices = devices;
  if (o.pim_model != "cycle" && o.pim_model != "analytical")
    throw Error(fmt::format("unknown PIM model \"{}\"; expected cycle or analytical", o.pim_model));
  std::unique_ptr<CyclePimModel> cycle;
  compiler::PimTimeFn pim_fn;
  if (o.pim_model == "cycle" && system.pim && system.pim->kind == PimKind::kLogicPim) {
    cycle = std::make_unique<CyclePimModel>(system);
    pim_fn = [&cycle](const compiler::Op& op) { return cycle->time(op); };
  }
  r.pim_model = !system.pim ? "none" : cycle ? "cycle" : "analytical";
  r.memory = plan_memory(model, system, layout, o.memory_reserve);

  SchedulerConfig sched = o.scheduler;
  sched.kv_capacity_blocks = r.memory.kv_blocks(sched.kv_block_tokens);
  r.kv_capacity_blocks = sched.kv_capacity_blocks;
  if (sched.kv_capacity_blocks < 1)
    throw Error(fmt::format("system {}: the KV cache holds less than one block of {} tokens", system.name,
                            sched.kv_block_tokens));
  Scheduler scheduler(sched);
  auto source = make_request_source(o.workload);
  std::unique_ptr<ExpertRouter> router;
  if (model.is_moe()) {
    if (!o.workload.routing) throw Error(fmt::format("{}: model {} is MoE; the workload needs a routing: section",
                                                     o.workload.label, model.name));
    router = std::make_unique<ExpertRouter>(make_expert_router(o.workload));
  }
  StepExecutor executor(model, system, layout, router.get(), pim_fn);

  EnergyLedger energy(system.energy);
  Time xpu_busy, pim_busy;
  double batch_sum = 0;
  auto step_time = [&](const StepPlan& plan) {
    StepCost c = executor.execute(plan);
    energy.add(c.energy);
    xpu_busy += c.xpu_busy;
    pim_busy += c.pim_busy;
    const auto batch = static_cast<std::int64_t>(plan.requests.size());
    batch_sum += static_cast<double>(batch);
    r.batch_max = std::max(r.batch_max, batch);
    if (o.record_steps) {
      StepRow row;
      row.step = plan.step;
      row.start_s = plan.start.si();
      row.end_s = (plan.start + c.time).si();
      row.requests = batch;
      row.decode_requests = plan.decode_requests;
      row.prefill_tokens = plan.prefill_tokens;
      row.tokens = plan.total_tokens;
      row.kv_blocks_used = plan.kv_blocks_used;
      row.kv_blocks_capacity = plan.kv_blocks_capacity;
      row.xpu_busy_us = to_us(c.xpu_busy);
      row.pim_busy_us = to_us(c.pim_busy);
      row.link_us = to_us(c.link_busy);
      row.energy_j = c.energy.total().si();
      r.step_rows.push_back(row);
    }
    if (plan.step < o.timeline_steps) r.timeline.push_back({plan.step, plan.start.si(), std::move(c.plan)});
    return c.time;
  };
  const ServingRun run = run_serving_loop(scheduler, *source, step_time);

  r.steps = run.steps;
  r.simulated_s = run.end.si();
  energy.charge_static("xpu", run.end, devices);
  energy.charge_static("hbm_stack", run.end, devices * system.stacks);
  if (system.pim && system.pim->kind == PimKind::kLogicPim) energy.charge_static("logic_pim_stack", run.end, devices * system.stacks);

  std::vector<double> ttft, tbt, e2e;
  for (const auto& [id, rec] : run.records) {
    if (!rec.finished()) throw InternalError(fmt::format("request {} did not finish", id));
    ++r.requests;
    r.generated_tokens += static_cast<std::int64_t>(rec.token_times.size());
    r.preemptions += rec.preemptions;
    ttft.push_back(to_ms(rec.ttft()));
    e2e.push_back(to_ms(rec.e2e()));
    double tbt_sum = 0;
    const auto gaps = rec.tbt();
    for (Time t : gaps) {
      tbt.push_back(to_ms(t));
      tbt_sum += to_ms(t);
    }
    if (o.record_steps)
      r.request_rows[id] = {{"id", id},
                            {"arrival_s", rec.spec.arrival.si()},
                            {"input_tokens", rec.spec.input_tokens},
                            {"output_tokens", rec.spec.output_tokens},
                            {"ttft_ms", to_ms(rec.ttft())},
                            {"e2e_ms", to_ms(rec.e2e())},
                            {"mean_tbt_ms", gaps.empty() ? 0.0 : tbt_sum / static_cast<double>(gaps.size())},
                            {"preemptions", rec.preemptions}};
  }
  r.ttft_ms = percentiles(ttft);
  r.tbt_ms = percentiles(tbt);
  r.e2e_ms = percentiles(e2e);
  r.throughput_tok_s = r.simulated_s > 0 ? static_cast<double>(r.generated_tokens) / r.simulated_s : 0;
  r.batch_mean = r.steps > 0 ? batch_sum / static_cast<double>(r.steps) : 0;
  r.energy_j = energy.total().si();
  r.energy_j_per_token = r.generated_tokens > 0 ? r.energy_j / static_cast<double>(r.generated_tokens) : 0;
  r.energy_breakdown = energy.breakdown_json();
  r.xpu_utilization = r.simulated_s > 0 ? xpu_busy.si() / r.simulated_s : 0;
  r.pim_utilization = r.simulated_s > 0 ? pim_busy.si() / r.simulated_s : 0;
  return r;
}

}  // namespace duplex::runtime
