#include "sweep_point.hpp"

#include <fmt/format.h>
#include <map>
#include <memory>
#include <optional>
#include <tuple>

#include "duplex/base/error.hpp"
#include "duplex/runtime/sim/capacity_search.hpp"
#include "duplex/runtime/workload/synthetic_workload.hpp"

namespace duplex::host {
namespace {

runtime::WorkloadSpec workload_for(const SweepPoint& p, const StudyOptions& o) {
  if (p.load.trace()) {
    DUPLEX_ASSERT(p.load.trace_rows != nullptr, "a trace load not read when its study loaded");
    return runtime::trace_workload("sweep point " + p.id, o.seed, p.load.trace_file, *p.load.trace_rows,
                                   o.routing);
  }
  runtime::SyntheticStream s;
  s.label = "sweep point " + p.id;
  s.seed = o.seed;
  s.requests = o.requests;
  s.input_len = p.input_len;
  s.output_len = p.output_len;
  s.length_spread = o.length_spread;
  s.poisson_rate_per_s = p.load.poisson ? p.load.rate_per_s : 0;
  s.concurrency = p.batch * p.cluster.replicas;  // the batch is each replica's
  s.routing = o.routing;
  s.prefix_tokens = p.prefix.tokens;
  s.prefix_groups = p.prefix.groups;
  s.turns = p.prefix.turns;
  s.think_s = p.prefix.think_s;
  return runtime::synthetic_workload(s);
}

runtime::SchedulerConfig scheduler_for(const SweepPoint& p, const StudyOptions& o) {
  runtime::SchedulerConfig s;
  s.policy = runtime::parse_batching_policy(o.policy);
  s.max_batch = p.batch;
  s.max_tokens_per_step = o.max_tokens_per_step;
  s.chunked_prefill = o.chunked_prefill;
  s.kv_block_tokens = o.kv_block_tokens;
  s.speculative_tokens = p.speculative.tokens;
  s.acceptance_rates = p.speculative.acceptance;
  s.tree_tokens = p.speculative.tree_tokens;
  s.draft_topk = p.speculative.draft_topk;
  s.acceptance_seed = o.seed;
  s.prefix_caching = p.prefix.caching;
  return s;
}

nlohmann::json simulate_point(const SweepPoint& p, const StudyOptions& o) {
  const compiler::ModelSpec model = compiler::load_model(p.model);
  const SystemSpec system = read_system(ConfigNode::load(p.system, "systems", p.overrides()));
  runtime::SimulationOptions sim;
  sim.workload = workload_for(p, o);
  sim.scheduler = scheduler_for(p, o);
  sim.memory_reserve = o.memory_reserve;
  sim.pim_model = o.pim_model;  // the simulator rejects unknown names
  sim.slo = runtime::LatencySlo{o.slo_ttft_ms, o.slo_tpot_ms};
  sim.cluster.replicas = p.cluster.replicas;
  sim.cluster.router = runtime::parse_router_policy(p.cluster.router);
  if (p.speculative.tokens > 0 && p.speculative.draft != "ngram")
    sim.draft_model =
        p.speculative.draft == "mtp" ? compiler::mtp_draft(model) : compiler::load_model(p.speculative.draft);
  // The points of one process share the cycle model's memos per system (same results, fewer simulations).
  static const auto memos = std::make_shared<runtime::PimTimingMemos>();
  sim.pim_memos = memos;
  sim.record_steps = true;
  sim.timeline_steps = o.timeline_steps;
  std::optional<runtime::CapacityResult> capacity;
  if (o.capacity) {
    runtime::CapacitySearchSpec search;
    search.attainment = o.capacity_attainment;
    search.precision = o.capacity_precision;
    search.duration_s = o.capacity_duration_s;
    capacity = runtime::find_capacity(model, system, sim, search);
    if (!capacity->at_max)
      throw Error(
          fmt::format("no arrival rate meets the latency objectives for {:g}% of the requests (down to "
                      "{:.4g} req/s: {:.1f}%)",
                      100.0 * search.attainment, capacity->probes.back().rate_per_s,
                      100.0 * capacity->probes.back().attainment));
  }
  const runtime::SystemResult r = capacity ? *capacity->at_max : runtime::simulate(model, system, sim);
  nlohmann::json result = r.to_json();
  if (capacity) {
    result["capacity"] = capacity->to_json();
    result["capacity"].erase("at_max");  // the result itself
  }
  return {{"result", result},
          {"roofs", roofs(system)},
          {"steps", sampled_steps(r.step_rows, o.step_samples)},
          {"op_kinds", op_kind_stats(r.timeline)},
          {"timeline", lane_events(r.timeline)}};
}

}  // namespace

nlohmann::json sampled_steps(const std::vector<runtime::StepRow>& rows, std::int64_t samples) {
  nlohmann::json out = nlohmann::json::array();
  const std::size_t n = rows.size();
  const std::size_t k = std::min(n, static_cast<std::size_t>(std::max<std::int64_t>(samples, 2)));
  for (std::size_t i = 0; i < k; ++i) {
    const auto& x = rows[k == 1 ? 0 : i * (n - 1) / (k - 1)];
    out.push_back({x.start_s, x.requests, x.decode_requests, x.prefill_tokens, x.kv_blocks_used, x.kv_blocks_capacity});
  }
  return out;
}

nlohmann::json op_kind_stats(const std::vector<runtime::TimelineStep>& timeline) {
  struct Sum {
    std::int64_t count = 0;
    double flops = 0, bytes = 0, time_s = 0;
  };
  std::map<std::tuple<std::string, std::string>, Sum> sums;  // ordered: deterministic output
  for (const auto& step : timeline)
    for (const auto& stage : step.plan.stages)
      for (const auto& p : stage.ops) {
        const auto& op = step.plan.graph.ops[p.op];
        Sum& s = sums[{std::string(compiler::op_kind_name(op.kind)), std::string(compiler::unit_name(p.unit))}];
        ++s.count;
        s.flops += op.flops;
        s.bytes += op.bytes();
        s.time_s += p.time.si();
      }
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [key, s] : sums)
    out.push_back({{"kind", std::get<0>(key)}, {"unit", std::get<1>(key)}, {"count", s.count}, {"flops", s.flops},
                   {"bytes", s.bytes}, {"time_s", s.time_s}});
  return out;
}

nlohmann::json lane_events(const std::vector<runtime::TimelineStep>& timeline) {
  nlohmann::json out = nlohmann::json::array();
  if (timeline.empty()) return out;
  const double origin_us = timeline.front().start_s * 1e6;
  for (const auto& step : timeline) {
    const std::vector<Time> starts = step.plan.op_starts();  // overlapped micro-batches' stages overlap
    for (const auto& stage : step.plan.stages)
      for (const auto& p : stage.ops) {
        const auto& op = step.plan.graph.ops[p.op];
        out.push_back({{"step", step.step},
                       {"lane", std::string(compiler::unit_name(p.unit))},
                       {"kind", std::string(compiler::op_kind_name(op.kind))},
                       {"name", op.name},
                       {"start_us", step.start_s * 1e6 - origin_us + to_us(starts[p.op])},
                       {"dur_us", to_us(p.time)}});
      }
  }
  return out;
}

nlohmann::json roofs(const SystemSpec& system) {
  return {{"xpu_peak_flops", system.xpu.peak_fp16.si()},
          {"xpu_bandwidth", system.memory_bandwidth().si()},
          {"pim_peak_flops", system.pim ? system.pim_peak_flops().si() : 0.0},
          {"pim_bandwidth", system.pim ? system.pim_bandwidth().si() : 0.0}};
}

nlohmann::json run_point(const SweepPoint& point, const StudyOptions& options) {
  nlohmann::json record = {{"id", point.id}, {"params", point.params(options)}};
  try {
    nlohmann::json body = simulate_point(point, options);
    record["status"] = "ok";
    record.update(body);
  } catch (const Error& e) {
    record["status"] = "failed";
    record["error"] = e.what();
  } catch (const InternalError& e) {
    record["status"] = "failed";
    record["error"] = fmt::format("internal error (a duplex bug): {}", e.what());
  } catch (const std::exception& e) {
    record["status"] = "failed";
    record["error"] = fmt::format("unexpected error: {}", e.what());
  }
  return record;
}

}  // namespace duplex::host
