#include "cluster_simulator.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <functional>
#include <memory>
#include <queue>

#include "duplex/base/error.hpp"
#include "duplex/runtime/scheduler/prefix_cache.hpp"
#include "pool.hpp"

namespace duplex::runtime::detail {
namespace {

// One replica's clock and what the router counts of it.
struct ReplicaState {
  Time now;                 // the end of its last step (or the arrival that woke it)
  std::int64_t routed = 0;  // requests routed to it
  std::int64_t done = 0;    // of those, finished by the last arrival routed
  std::priority_queue<Time, std::vector<Time>, std::greater<>> finishing;  // finish times not yet counted
};

}  // namespace

SystemResult simulate_cluster(const compiler::ModelSpec& model, const SystemSpec& system,
                              const SimulationOptions& o) {
  const int replicas = o.cluster.replicas;
  const int devices = o.devices > 0 ? o.devices : system.devices_for(model.name);
  SystemResult r;
  r.system = system.name;
  r.model = model.name;
  r.devices = devices * replicas;
  r.replicas = replicas;
  r.router = router_policy_name(o.cluster.router);
  std::unique_ptr<ExpertRouter> experts = make_router(model, o.workload);
  RunTotals totals(system.energy);
  // The replicas' options: one timing memo for all (the same system), the lane timeline from replica 0 only.
  SimulationOptions shared = o;
  if (!shared.pim_memos) shared.pim_memos = std::make_shared<PimTimingMemos>();
  std::vector<SimulationOptions> options(static_cast<std::size_t>(replicas), shared);
  for (std::size_t i = 1; i < options.size(); ++i) options[i].timeline_steps = 0;
  // Replica i holds devices [i x devices, (i + 1) x devices).
  SharedHostTiers host_tiers(system.links.host_kv_scope, system.links),
      disk_tiers(system.links.disk_kv_scope, system.links);
  for (int i = 0; i < replicas; ++i) {
    host_tiers.declare(i * devices, devices);
    disk_tiers.declare(i * devices, devices);
  }
  std::vector<std::unique_ptr<Pool>> pools;
  for (int i = 0; i < replicas; ++i)
    pools.push_back(std::make_unique<Pool>(model, system, options[static_cast<std::size_t>(i)], devices,
                                           experts.get(), r, totals, fmt::format("replica{}", i),
                                           host_tiers.of_pool(i * devices, devices), i * devices,
                                           disk_tiers.of_pool(i * devices, devices)));
  const Pool& first = *pools.front();
  r.layout = fmt::format("{} replicas x ({}), {} router", replicas, first.layout().describe(), r.router);
  describe_memory_and_timing(r, first, system);  // one replica's

  auto source = make_request_source(o.workload);
  RequestRouter router(o.cluster);
  std::vector<ReplicaState> state(static_cast<std::size_t>(replicas));
  std::vector<ReplicaLoad> loads(static_cast<std::size_t>(replicas));
  const bool looks_up = routes_by_cache(o.cluster.router) && o.scheduler.prefix_caching;
  // Routes `spec`, arrived now, to a replica; wakes it at the arrival if it was idle.
  auto route = [&](const RequestSpec& spec) {
    for (std::size_t i = 0; i < state.size(); ++i) {
      ReplicaState& s = state[i];
      while (!s.finishing.empty() && s.finishing.top() <= spec.arrival) {
        s.finishing.pop();
        ++s.done;
      }
      loads[i].outstanding = s.routed - s.done;
      const HeldPrefix held = looks_up ? pools[i]->scheduler().cached_prefix_tokens(spec) : HeldPrefix{};
      loads[i].cached_tokens = held.device;
      loads[i].offloaded_tokens = held.offloaded;
    }
    const auto chosen = static_cast<std::size_t>(router.route(
        spec.input_tokens, loads, spec.content_hashes.empty() ? 0 : spec.content_hashes.front()));
    Scheduler& scheduler = pools[chosen]->scheduler();
    if (!scheduler.has_unfinished()) state[chosen].now = std::max(state[chosen].now, spec.arrival);
    scheduler.add_request(spec);
    ++state[chosen].routed;
  };

  Time end;
  std::int64_t finished = 0;
  for (std::int64_t events = 0;; ++events) {
    if (events > 1'000'000'000)
      throw Error("cluster simulation exceeded 1e9 events; expected fewer requests");
    // The replica with work whose clock is earliest (the lowest index among equals).
    std::size_t next = state.size();
    for (std::size_t i = 0; i < state.size(); ++i)
      if (pools[i]->scheduler().has_unfinished() && (next == state.size() || state[i].now < state[next].now))
        next = i;
    // Arrivals come first when no busy replica's clock is before them: the router then sees every finish up
    // to the arrival.
    const std::optional<Time> arrival = source->next_arrival();
    if (arrival && (next == state.size() || *arrival <= state[next].now)) {
      for (const RequestSpec& spec : source->take_arrived(*arrival)) route(spec);
      continue;
    }
    if (next == state.size()) break;
    ReplicaState& s = state[next];
    Pool& pool = *pools[next];
    const StepPlan plan = pool.scheduler().schedule(s.now);
    if (plan.empty()) {
      const std::optional<Time> queued = pool.scheduler().next_arrival_after(s.now);
      DUPLEX_ASSERT(queued.has_value(), fmt::format("replica {} stalled with requests left", next));
      s.now = *queued;
      continue;
    }
    s.now += pool.step(plan);
    end = std::max(end, s.now);
    const StepOutcome outcome = pool.scheduler().update(StepResult{plan.step, s.now});
    for (const RequestId id : outcome.finished) {
      s.finishing.push(s.now);
      source->on_finished(id, s.now);
      ++finished;
    }
    if (o.progress) o.progress(finished, source->total_requests());
  }
  if (!source->exhausted())
    throw InternalError("cluster simulation stopped with requests left at the source");
  std::vector<RequestTimeline> timelines;
  for (const std::unique_ptr<Pool>& pool : pools)
    for (const auto& [id, rec] : pool->scheduler().records())
      timelines.push_back(finished_timeline(rec, pool->name()));
  std::sort(timelines.begin(), timelines.end(),
            [](const RequestTimeline& a, const RequestTimeline& b) { return a.spec.id < b.spec.id; });
  finish_result(r, timelines, totals, end, system, r.devices, o.record_steps, o.slo);
  for (const std::unique_ptr<Pool>& pool : pools) r.pools.push_back(pool->figures(end));
  return r;
}

}  // namespace duplex::runtime::detail
