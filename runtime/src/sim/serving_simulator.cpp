#include "duplex/runtime/sim/serving_simulator.hpp"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <numeric>

#include "cluster_simulator.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/scheduler/scheduler.hpp"
#include "duplex/runtime/scheduler/serving_loop.hpp"
#include "pool.hpp"
#include "split_simulator.hpp"

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

// Each data-parallel rank's figures, in rank order.
nlohmann::json ranks_json(const std::vector<RankFigures>& ranks) {
  nlohmann::json out = nlohmann::json::array();
  for (const RankFigures& r : ranks)
    out.push_back({{"requests", r.requests},
                   {"preemptions", r.preemptions},
                   {"kv_peak_blocks", r.kv_peak_blocks},
                   {"kv_capacity_blocks", r.kv_capacity_blocks},
                   {"batch_peak", r.batch_peak},
                   {"max_batch", r.max_batch}});
  return out;
}

// The memory plan's figures; the memory-space split only on systems that have one.
nlohmann::json memory_json(const MemoryPlan& m, std::int64_t kv_blocks) {
  constexpr double kGiB = 1073741824.0;
  nlohmann::json j = {{"weights_gib_per_device", m.weight_bytes_per_device / kGiB},
                      {"kv_bytes_per_token_per_device", m.kv_bytes_per_token},
                      {"kv_tokens", m.kv_tokens},
                      {"kv_blocks", kv_blocks},
                      {"prefill_capacity_tokens", m.prefill_capacity_tokens}};
  if (m.draft_weight_bytes_per_device > 0)
    j["draft_weights_gib_per_device"] = m.draft_weight_bytes_per_device / kGiB;
  if (m.deepep_buffer_bytes_per_device > 0)
    j["deepep_low_latency_gib_per_device"] = m.deepep_buffer_bytes_per_device / kGiB;
  if (m.has_spaces()) {
    nlohmann::json weights = nlohmann::json::array();
    for (double w : m.space_weight_bytes) weights.push_back(w / kGiB);
    j["spaces"] = {{"space_gib", m.space_bytes / kGiB},
                   {"weights_gib", weights},
                   {"kv_spaces", m.kv_spaces},
                   {"prefill_spaces", m.prefill_spaces},
                   {"reserve_gib", m.reserve_bytes_per_device / kGiB},
                   {"prefill_tokens_per_replica", m.prefill_tokens}};
  }
  return j;
}

}  // namespace

nlohmann::json SystemResult::to_json() const {
  nlohmann::json j = {{"system", system},
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
                      {"tpot_ms", percentiles_json(tpot_ms)},
                      {"energy_j", energy_j},
                      {"energy_j_per_token", energy_j_per_token},
                      {"energy_breakdown", energy_breakdown},
                      {"batch_size", {{"mean", batch_mean}, {"max", batch_max}}},
                      {"utilization", {{"xpu", xpu_utilization}, {"pim", pim_utilization}}},
                      {"memory", memory_json(memory, kv_capacity_blocks)}};
  if (rank_batch_cap > 0) j["deepep_rank_max_requests"] = rank_batch_cap;
  if (replicas > 1) j["cluster"] = {{"replicas", replicas}, {"router", router}};
  if (draft_tokens > 0)
    j["speculative"] = {
        {"draft_tokens", draft_tokens},
        {"accepted_tokens", accepted_tokens},
        {"accepted_fraction", static_cast<double>(accepted_tokens) / static_cast<double>(draft_tokens)},
        {"verify_steps", verify_steps},
        // Tokens a verification emits, on average (EAGLE's acceptance length tau).
        {"tokens_per_verify",
         1.0 + static_cast<double>(accepted_tokens) / static_cast<double>(verify_steps)}};
  if (slo)
    j["slo"] = {{"ttft_ms", slo->slo.ttft_ms},
                {"tpot_ms", slo->slo.tpot_ms},
                {"met", slo->met},
                {"attainment", slo->attainment},
                {"goodput_req_s", slo->goodput_req_s},
                {"goodput_tok_s", slo->goodput_tok_s}};
  if (prefix_query_tokens > 0) {
    j["prefix_cache"] = {
        {"query_tokens", prefix_query_tokens},
        {"hit_tokens", prefix_hit_tokens},
        {"hit_rate", static_cast<double>(prefix_hit_tokens) / static_cast<double>(prefix_query_tokens)}};
    if (host_kv_blocks > 0) {
      j["prefix_cache"]["host_hit_tokens"] = host_hit_tokens;
      j["prefix_cache"]["host_kv_blocks"] = host_kv_blocks;
      j["prefix_cache"]["host_kv_scope"] = host_kv_scope;
      if (host_kv_scope == "cluster") j["prefix_cache"]["host_remote_hit_tokens"] = host_remote_hit_tokens;
      if (disk_kv_blocks > 0) {
        j["prefix_cache"]["disk_kv_blocks"] = disk_kv_blocks;
        j["prefix_cache"]["disk_hit_tokens"] = disk_hit_tokens;
        j["prefix_cache"]["disk_kv_scope"] = disk_kv_scope;
        if (disk_kv_scope == "cluster") j["prefix_cache"]["disk_remote_hit_tokens"] = disk_remote_hit_tokens;
      }
    }
  }
  if (two_batch_overlap)
    j["two_batch_overlap"] = {{"overlapped_steps", two_batch_overlap->overlapped_steps},
                              {"steps", two_batch_overlap->steps}};
  if (expert_balancing)
    j["expert_load_balancing"] = {{"rebalancings", expert_balancing->rebalancings},
                                  {"expert_move_s", expert_balancing->move_s},
                                  {"imbalance_mean", expert_balancing->imbalance_mean}};
  if (pim_area)
    j["pim_area"] = {{"per_stack_mm2",
                      {{"tsv", to_mm2(pim_area->tsv)},
                       {"gemm_modules", to_mm2(pim_area->gemm_modules)},
                       {"buffers", to_mm2(pim_area->buffers)},
                       {"softmax", to_mm2(pim_area->softmax)},
                       {"total", to_mm2(pim_area->total())}}},
                     {"logic_die_mm2", to_mm2(pim_area->logic_die)},
                     {"die_fraction", pim_area->die_fraction()}};
  if (!pools.empty()) {
    nlohmann::json& out = j["pools"];
    for (const PoolFigures& p : pools) {
      out[p.name] = {{"devices", p.devices},
                     {"requests", p.requests},
                     {"steps", p.steps},
                     {"batch_size", {{"mean", p.batch_mean}, {"max", p.batch_max}}},
                     {"utilization", {{"xpu", p.xpu_utilization}, {"pim", p.pim_utilization}}}};
      if (!p.ranks.empty()) out[p.name]["data_parallel_ranks"] = ranks_json(p.ranks);
    }
  }
  if (!ranks.empty()) j["data_parallel_ranks"] = ranks_json(ranks);
  if (!ranks.empty() ||
      std::any_of(pools.begin(), pools.end(), [](const PoolFigures& p) { return !p.ranks.empty(); }))
    j["data_parallel_balance"] = data_parallel_balance;
  if (!expert_all_to_all.empty()) j["expert_all_to_all"] = expert_all_to_all;
  return j;
}

SystemResult simulate(const compiler::ModelSpec& model, const SystemSpec& system, const SimulationOptions& o) {
  if (o.pim_model != "cycle" && o.pim_model != "analytical")
    throw Error(fmt::format("unknown PIM model \"{}\"; expected cycle or analytical", o.pim_model));
  const int speculative = o.scheduler.speculative_tokens;
  if (o.draft_model && speculative == 0)
    throw Error(
        fmt::format("a draft model ({}) without speculative decoding; expected speculative tokens >= 1",
                    o.draft_model->name));
  if (o.draft_model && o.draft_model->vocab != model.vocab)
    throw Error(
        fmt::format("draft model {} has a vocabulary of {} tokens, model {} of {}; speculative decoding "
                    "needs one vocabulary (the draft proposes the target's token ids)",
                    o.draft_model->name, o.draft_model->vocab, model.name, model.vocab));
  for (const auto& [name, value] : {std::pair{"TTFT", o.slo.ttft_ms}, std::pair{"TPOT", o.slo.tpot_ms}})
    if (!std::isfinite(value) || value < 0)
      throw Error(fmt::format("{} objective of {} ms; expected a time >= 0 ms (0: no bound)", name, value));
  o.cluster.validate();
  if (system.split_prefill_fraction > 0) return detail::simulate_split(model, system, o);
  if (o.cluster.replicas > 1) return detail::simulate_cluster(model, system, o);
  const int devices = o.devices > 0 ? o.devices : system.devices_for(model.name);
  SystemResult r;
  r.system = system.name;
  r.model = model.name;
  r.devices = devices;
  std::unique_ptr<ExpertRouter> router = detail::make_router(model, o.workload);
  detail::RunTotals totals(system.energy);
  detail::Pool pool(model, system, o, devices, router.get(), r, totals);
  r.layout = pool.layout().describe();
  detail::describe_memory_and_timing(r, pool, system);

  auto source = make_request_source(o.workload);
  StepObserver observer;
  if (o.progress)
    observer = [&](const StepPlan&, const StepOutcome&, const Scheduler& s) {
      o.progress(s.num_finished(), source->total_requests());
    };
  const ServingRun run =
      run_serving_loop(pool.scheduler(), *source, [&](const StepPlan& plan) { return pool.step(plan); }, observer);
  std::vector<detail::RequestTimeline> timelines;
  for (const auto& [id, rec] : run.records) timelines.push_back(detail::finished_timeline(rec));
  detail::finish_result(r, timelines, totals, run.end, system, devices, o.record_steps, o.slo);
  r.ranks = pool.figures(run.end).ranks;
  return r;
}

namespace detail {

std::unique_ptr<ExpertRouter> make_router(const compiler::ModelSpec& model, const WorkloadSpec& workload) {
  if (!model.is_moe()) return nullptr;
  if (!workload.routing)
    throw Error(fmt::format("{}: model {} is MoE; the workload needs a routing: section", workload.label, model.name));
  return std::make_unique<ExpertRouter>(make_expert_router(workload));
}

}  // namespace detail

}  // namespace duplex::runtime
