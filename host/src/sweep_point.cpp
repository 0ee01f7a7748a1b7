#include "sweep_point.hpp"

#include <fmt/format.h>
#include <map>
#include <tuple>

#include "duplex/base/error.hpp"
#include "duplex/runtime/workload/workload_config.hpp"

namespace duplex::host {
namespace {

runtime::WorkloadSpec workload_for(const SweepPoint& p, const StudyOptions& o) {
  runtime::WorkloadSpec w;
  w.label = "sweep point " + p.id;
  w.seed = o.seed;
  w.requests = o.requests;
  runtime::LengthDistribution len;
  len.kind = o.length_spread > 0 ? runtime::LengthDistribution::Kind::gaussian : runtime::LengthDistribution::Kind::fixed;
  len.input = p.input_len;
  len.output = p.output_len;
  len.input_stddev = o.length_spread * static_cast<double>(p.input_len);
  len.output_stddev = o.length_spread * static_cast<double>(p.output_len);
  len.validate();
  w.lengths = len;
  if (p.load.poisson) {
    w.arrival.kind = runtime::ArrivalSpec::Kind::poisson;
    w.arrival.rate_per_s = p.load.rate_per_s;
  } else {
    w.arrival.kind = runtime::ArrivalSpec::Kind::closed;
    w.arrival.concurrency = p.batch;
  }
  runtime::RoutingSpec r;
  if (o.routing == "uniform") {
    r.kind = runtime::ExpertRouter::Kind::uniform;
  } else {
    r.kind = runtime::ExpertRouter::Kind::zipf;
    const std::string s = o.routing.substr(5);
    char* end = nullptr;
    r.zipf_s = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0' || r.zipf_s < 0) throw Error(fmt::format("routing \"{}\": expected zipf:S with S >= 0", o.routing));
  }
  w.routing = r;
  return w;
}

runtime::SchedulerConfig scheduler_for(const SweepPoint& p, const StudyOptions& o) {
  runtime::SchedulerConfig s;
  if (o.policy == "orca") s.policy = runtime::BatchingPolicy::orca;
  else if (o.policy == "static") s.policy = runtime::BatchingPolicy::static_batch;
  else s.policy = runtime::BatchingPolicy::continuous;
  s.max_batch = p.batch;
  s.max_tokens_per_step = o.max_tokens_per_step;
  s.chunked_prefill = o.chunked_prefill;
  s.kv_block_tokens = o.kv_block_tokens;
  return s;
}

nlohmann::json simulate_point(const SweepPoint& p, const StudyOptions& o) {
  const compiler::ModelSpec model = compiler::load_model(p.model);
  const SystemSpec system = load_system(p.system);
  runtime::SimulationOptions sim;
  sim.workload = workload_for(p, o);
  sim.scheduler = scheduler_for(p, o);
  sim.memory_reserve = o.memory_reserve;
  sim.pim_model = o.pim_model;  // the simulator rejects unknown names
  sim.record_steps = true;
  sim.timeline_steps = o.timeline_steps;
  const runtime::SystemResult r = runtime::simulate(model, system, sim);
  return {{"result", r.to_json()},
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
    double stage_start_us = step.start_s * 1e6 - origin_us;
    for (const auto& stage : step.plan.stages) {
      std::map<compiler::Unit, double> lane_at;
      for (const auto& p : stage.ops) {
        const auto& op = step.plan.graph.ops[p.op];
        auto [it, fresh] = lane_at.try_emplace(p.unit, stage_start_us);
        out.push_back({{"step", step.step},
                       {"lane", std::string(compiler::unit_name(p.unit))},
                       {"kind", std::string(compiler::op_kind_name(op.kind))},
                       {"name", op.name},
                       {"start_us", it->second},
                       {"dur_us", to_us(p.time)}});
        it->second += to_us(p.time);
      }
      stage_start_us += to_us(stage.time());
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
