#include "duplex/runtime/sim/capacity_search.hpp"

#include <fmt/format.h>
#include <cmath>

#include "duplex/base/error.hpp"

namespace duplex::runtime {
namespace {

// Halvings (and doublings) from the first rate before the search gives up on finding a rate that meets (falls
// short of) the target: 2^30 either way, far past any rate a run can tell apart.
constexpr int kMaxRateSteps = 30;
// With duration_s, the search stops growing the rate before a probe would serve more requests than this.
constexpr std::int64_t kMaxProbeRequests = 1'000'000;

void check_spec(const CapacitySearchSpec& s) {
  if (!(s.attainment > 0 && s.attainment <= 1))
    throw Error(fmt::format("capacity search: attainment {}; expected a share in (0, 1]", s.attainment));
  if (!(s.precision > 0 && s.precision <= 1))
    throw Error(
        fmt::format("capacity search: precision {}; expected a relative width in (0, 1]", s.precision));
  if (!(std::isfinite(s.first_rate) && s.first_rate >= 0))
    throw Error(fmt::format("capacity search: first rate {}; expected requests/s >= 0 (0: found by a run)",
                            s.first_rate));
  if (s.max_probes < 2)
    throw Error(fmt::format("capacity search: {} probes at most; expected >= 2", s.max_probes));
  if (!(std::isfinite(s.duration_s) && s.duration_s >= 0 && s.duration_s <= 1e7))
    throw Error(
        fmt::format("capacity search: duration {} s; expected seconds in [0, 1e7] (0: the workload's "
                    "request count)",
                    s.duration_s));
}

nlohmann::json latency_json(const Percentiles& p) {
  return {{"p50", p.p50}, {"p99", p.p99}};
}

// Turns per conversation of a workload (1 for independent requests): a closed-loop run's requests/s over this
// is its conversations/s, the unit of a conversation workload's Poisson rate.
double turns_of(const WorkloadSpec& w) {
  return w.conversation ? static_cast<double>(w.conversation->turns) : 1.0;
}

}  // namespace

bool CapacityResult::converged() const {
  return max_rate && failing_rate && *failing_rate <= *max_rate * (1 + spec.precision);
}

nlohmann::json CapacityResult::to_json() const {
  nlohmann::json probes_json = nlohmann::json::array();
  for (const CapacityProbe& p : probes)
    probes_json.push_back({{"rate_per_s", p.rate_per_s},
                           {"requests", p.requests},
                           {"meets", p.meets},
                           {"attainment", p.attainment},
                           {"goodput_req_s", p.goodput_req_s},
                           {"throughput_tok_s", p.throughput_tok_s},
                           {"ttft_ms", latency_json(p.ttft_ms)},
                           {"tpot_ms", latency_json(p.tpot_ms)}});
  auto optional = [](const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(); };
  nlohmann::json j = {{"attainment_target", spec.attainment},
                      {"precision", spec.precision},
                      {"duration_s", spec.duration_s},
                      {"closed_loop_rate_per_s", optional(closed_loop_rate)},
                      {"max_rate_per_s", optional(max_rate)},
                      {"failing_rate_per_s", optional(failing_rate)},
                      {"converged", converged()},
                      {"probes", probes_json}};
  j["at_max"] = at_max ? at_max->to_json() : nlohmann::json();
  return j;
}

CapacityResult find_capacity(const compiler::ModelSpec& model, const SystemSpec& system,
                             const SimulationOptions& o, const CapacitySearchSpec& spec) {
  check_spec(spec);
  if (!o.slo.any())
    throw Error(
        "capacity search: no latency objective; expected a TTFT and / or TPOT objective (the search "
        "finds the highest rate meeting them)");
  // A trace keeps its requests and the shape of its arrivals; a probe at rate r scales its times about the
  // first arrival by (its own rate) / r, its own rate being (requests - 1) / (last - first arrival).
  const bool trace = o.workload.arrival.kind == ArrivalSpec::Kind::trace;
  double trace_rate = 0;
  if (trace) {
    const std::vector<RequestSpec>& rows = o.workload.arrival.trace_rows;
    const auto n = static_cast<std::size_t>(o.workload.requests);
    DUPLEX_ASSERT(n >= 1 && n <= rows.size(), "a trace workload of more requests than rows");
    if (spec.duration_s > 0)
      throw Error(
          fmt::format("capacity search: the trace {} has its own requests; a duration applies to "
                      "Poisson arrivals (expected none)",
                      o.workload.arrival.trace_file));
    const double span = (rows[n - 1].arrival - rows[0].arrival).si();
    if (!(span > 0))
      throw Error(
          fmt::format("capacity search: the trace {}'s {} requests arrive at one time; expected "
                      "arrivals spread in time (a rate to scale)",
                      o.workload.arrival.trace_file, n));
    trace_rate = static_cast<double>(n - 1) / span;
  }
  // The workload's arrivals at `r` per second.
  auto at_rate = [&](WorkloadSpec& w, double r) {
    if (!trace) {
      w.arrival.kind = ArrivalSpec::Kind::poisson;
      w.arrival.rate_per_s = r;
      return;
    }
    const std::vector<RequestSpec>& rows = o.workload.arrival.trace_rows;
    const Time t0 = rows.front().arrival;
    for (std::size_t i = 0; i < rows.size(); ++i)
      w.arrival.trace_rows[i].arrival = t0 + (rows[i].arrival - t0) * (trace_rate / r);
  };
  CapacityResult res;
  res.spec = spec;
  SimulationOptions probe_options = o;  // probes keep no steps or timeline: only the final rerun does
  probe_options.record_steps = false;
  probe_options.timeline_steps = 0;

  double rate = spec.first_rate;
  if (rate == 0 && o.workload.arrival.kind == ArrivalSpec::Kind::poisson)
    rate = o.workload.arrival.rate_per_s;
  if (rate == 0 && trace) rate = trace_rate;
  if (rate == 0) {  // closed loop: its throughput is where the queue starts to grow
    const SystemResult closed = simulate(model, system, probe_options);
    if (!(closed.simulated_s > 0))
      throw Error(fmt::format("capacity search: the closed-loop run of {} on {} took no simulated time",
                              o.workload.label, system.name));
    rate = static_cast<double>(closed.requests) / closed.simulated_s / turns_of(o.workload);
    res.closed_loop_rate = rate;
  }
  const double first = rate;
  // A probe's requests: the workload's, or those arriving in duration_s at the rate (whole conversations).
  auto requests_at = [&](double r) {
    if (spec.duration_s == 0) return o.workload.requests;
    const double turns = turns_of(o.workload);
    return static_cast<std::int64_t>(std::max(1.0, std::ceil(r * spec.duration_s)) * turns);
  };
  while (static_cast<int>(res.probes.size()) < spec.max_probes && requests_at(rate) <= kMaxProbeRequests) {
    at_rate(probe_options.workload, rate);
    probe_options.workload.requests = requests_at(rate);
    SystemResult r = simulate(model, system, probe_options);
    DUPLEX_ASSERT(r.slo.has_value(), "a run with latency objectives reported no attainment");
    CapacityProbe p;
    p.rate_per_s = rate;
    p.requests = r.requests;
    p.attainment = r.slo->attainment;
    p.meets = p.attainment >= spec.attainment;
    p.goodput_req_s = r.slo->goodput_req_s;
    p.throughput_tok_s = r.throughput_tok_s;
    p.ttft_ms = r.ttft_ms;
    p.tpot_ms = r.tpot_ms;
    res.probes.push_back(p);
    // Growing and shrinking only move away from the probes so far, and bisection probes inside the bracket,
    // so max_rate < failing_rate throughout.
    if (p.meets) {
      res.max_rate = rate;
      res.at_max = std::move(r);
    } else {
      res.failing_rate = rate;
    }
    if (res.converged()) break;
    if (!res.failing_rate) {
      if (rate >= first * std::ldexp(1.0, kMaxRateSteps)) break;  // no load it admits breaks the objectives
      rate *= 2;
    } else if (!res.max_rate) {
      if (rate <= first * std::ldexp(1.0, -kMaxRateSteps)) break;  // not even an idle system meets them
      rate /= 2;
    } else {
      rate = std::sqrt(*res.max_rate * *res.failing_rate);
    }
  }
  if (res.probes.empty())
    throw Error(
        fmt::format("capacity search: the first rate, {:.4g}/s for {:g} s, makes a probe of {} requests; "
                    "expected at most {} (a shorter duration)",
                    first, spec.duration_s, requests_at(first), kMaxProbeRequests));
  if (res.max_rate && (o.record_steps || o.timeline_steps > 0)) {
    SimulationOptions rerun = o;
    at_rate(rerun.workload, *res.max_rate);
    rerun.workload.requests = requests_at(*res.max_rate);
    res.at_max = simulate(model, system, rerun);
  }
  return res;
}

}  // namespace duplex::runtime
