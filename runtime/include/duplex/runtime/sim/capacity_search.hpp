#pragma once
// Capacity search: the highest arrival rate at which a system still serves at least a target share of
// its requests within the latency objectives (DistServe's per-GPU goodput at 90% SLO attainment,
// Vidur-Search's max QPS under SLO, Splitwise's max load). Each probe simulates the same requests (same seed:
// the same lengths, prompts and routing; the arrival gaps drawn as unit-rate exponentials divided by the
// rate, so a probe's arrivals are the first probe's scaled in time) at one rate. A trace workload keeps its
// requests and the shape of its arrivals (bursts included): a probe at rate r scales its arrival times about
// the first one by (its own rate) / r, its own rate being (requests - 1) / (last - first arrival)
// (Splitwise's scaled traces).
//
// The search: from the first rate, double until a probe falls short (or halve until one meets the target),
// then bisect the bracket geometrically until failing rate / meeting rate <= 1 + precision. Attainment need
// not fall monotonically with the rate (a finite run can meet the target by chance at a rate above one that
// does not); the bracket then holds one crossing, and every probe is kept for the caller to show.
//
// With a finite request count, a rate above the system's service rate queues work that grows with the run
// (TTFT grows with it); a run too short to queue past the objective can meet it above the rate the system can
// sustain. Use enough requests (thousands) for the queueing to show, or a fixed span of arrivals
// (duration_s): each probe then serves rate x duration_s requests, so every probe, and every system, queues
// for as long at a rate it cannot sustain.
#include <optional>
#include <vector>

#include "duplex/runtime/sim/serving_simulator.hpp"

namespace duplex::runtime {

struct CapacitySearchSpec {
  double attainment = 0.9;  // share of requests that must meet the objectives, in (0, 1] (DistServe: 90%)
  double precision = 0.02;  // stop when the failing / meeting rates bracket is <= 1 + precision; in (0, 1]
  // The first rate probed, requests/s (conversations/s for multi-turn workloads); 0: the workload's Poisson
  // rate or a trace's own rate, or for a closed-loop workload its closed-loop throughput (requests/s /
  // turns), run first.
  double first_rate = 0;
  int max_probes = 40;  // >= 2; the search stops there, bracket or not
  // > 0: each probe serves ceil(rate x duration_s) requests (x turns for conversations), arrivals spanning
  // about duration_s seconds (the search stops before a probe of more than a million requests); 0: the
  // workload's request count at every rate.
  double duration_s = 0;
};

// One simulation of the search.
struct CapacityProbe {
  double rate_per_s = 0;
  std::int64_t requests = 0;  // served
  bool meets = false;         // attainment >= the target
  double attainment = 0;
  double goodput_req_s = 0;
  double throughput_tok_s = 0;
  Percentiles ttft_ms, tpot_ms;
};

struct CapacityResult {
  CapacitySearchSpec spec;
  std::optional<double> closed_loop_rate;  // when the first rate came from a closed-loop run: its rate
  std::vector<CapacityProbe> probes;       // in the order run
  // The highest rate probed that meets the target, and the lowest rate above it probed that does not:
  // nullopt when no probe met it (max_rate) or every probe above did (failing_rate: no upper bound found
  // within max_probes; the objectives hold at any load the max batch admits, e.g. TPOT alone).
  std::optional<double> max_rate, failing_rate;
  std::optional<SystemResult> at_max;  // the simulation at max_rate (with steps / timeline when asked)
  bool converged() const;              // both rates found and within precision of each other

  nlohmann::json to_json() const;  // spec, probes, rates (null when not found), at_max's summary
};

// Throws duplex::Error when `o` has no latency objective, its workload is a trace whose arrivals are all at
// one time or is given a duration, or `spec` is out of range; the simulations' own errors otherwise. `o`'s
// arrival rate is replaced per probe; its record_steps / timeline_steps apply only to a final rerun at
// max_rate.
CapacityResult find_capacity(const compiler::ModelSpec& model, const SystemSpec& system,
                             const SimulationOptions& o, const CapacitySearchSpec& spec);

}  // namespace duplex::runtime
