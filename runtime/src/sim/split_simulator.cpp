#include "split_simulator.hpp"

#include <cmath>
#include <fmt/format.h>
#include <map>

#include "duplex/base/error.hpp"
#include "duplex/runtime/sim/kv_migration.hpp"
#include "pool.hpp"

namespace duplex::runtime::detail {

SystemResult simulate_split(const compiler::ModelSpec& model, const SystemSpec& system, const SimulationOptions& o) {
  const int devices = o.devices > 0 ? o.devices : system.devices_for(model.name);
  const int prefill_devices = std::max(1, static_cast<int>(std::lround(devices * system.split_prefill_fraction)));
  const int decode_devices = devices - prefill_devices;
  if (decode_devices < 1)
    throw Error(fmt::format("system {}: {} devices leave none for decoding after {} prefill devices", system.name,
                            devices, prefill_devices));
  SystemResult r;
  r.system = system.name;
  r.model = model.name;
  r.devices = devices;
  std::unique_ptr<ExpertRouter> router = make_router(model, o.workload);
  RunTotals totals(system.energy);
  const SystemSpec& prefill_system = system.prefill_pool_system();
  Pool prefill(model, prefill_system, o, prefill_devices, router.get(), r, totals, "prefill");
  Pool decode(model, system, o, decode_devices, router.get(), r, totals, "decode");
  r.layout = system.split_prefill_system
                 ? fmt::format("prefill pool of {} {} | decode pool of {} {}", prefill_system.name,
                               prefill.layout().describe(), system.name, decode.layout().describe())
                 : fmt::format("prefill pool {} | decode pool {}", prefill.layout().describe(),
                               decode.layout().describe());
  describe_memory_and_timing(r, decode, system);
  r.host_kv_blocks = prefill.host_kv_blocks();  // the prefill pool's cache (the decode pool has none in use)

  // Speculative decoding: both pools hold the draft model (the prefill pool prefills it with the prompts,
  // the decode pool drafts with it), whose K/V of the prompts moves with the target's.
  const KvLinkMigration link(system, devices);
  const double kv_bytes_per_prompt_token =
      kv_bytes_per_token(model) + (o.draft_model ? kv_bytes_per_token(*o.draft_model) : 0.0);

  auto source = make_request_source(o.workload);
  std::map<RequestId, RequestTimeline> timelines;
  struct Clock {
    Time now;
    bool waiting = false;  // idle until the other pool (or the source) gives it work
  };
  Clock pc, dc;
  Time end;
  std::int64_t finished = 0;
  // Steps pool `p` at its clock if it has work, else moves the clock to its next arrival or marks it waiting;
  // hands the requests a step finished on.
  auto advance = [&](Pool& p, Clock& clock, bool is_prefill) {
    if (is_prefill)
      for (RequestSpec spec : source->take_arrived(clock.now)) {
        timelines[spec.id].spec = spec;
        spec.output_tokens = 1;  // the prefill pool emits only the first token
        p.scheduler().add_request(spec);
      }
    const StepPlan plan = p.scheduler().schedule(clock.now);
    if (plan.empty()) {
      std::optional<Time> next = p.scheduler().next_arrival_after(clock.now);
      if (is_prefill)
        if (const auto s = source->next_arrival()) next = next ? std::min(*next, *s) : *s;
      if (next) clock.now = std::max(clock.now, *next);
      else clock.waiting = true;
      return;
    }
    clock.now += p.step(plan);
    end = std::max(end, clock.now);
    const StepOutcome outcome = p.scheduler().update(StepResult{plan.step, clock.now});
    for (const RequestId id : outcome.finished) {
      RequestTimeline& t = timelines.at(id);
      const RequestRecord& rec = p.scheduler().records().at(id);
      t.preemptions += rec.preemptions;
      if (is_prefill) {
        t.token_times.push_back(rec.token_times.front());
        t.prefix_query_tokens +=
            rec.prefix_query_tokens;  // the prefill pool's cache (the decode pool has none)
        t.prefix_hit_tokens += rec.prefix_hit_tokens;
        t.host_hit_tokens += rec.host_hit_tokens;
        if (t.spec.output_tokens == 1) {
          source->on_finished(id, clock.now);
          continue;
        }
        const double bytes = kv_bytes_per_prompt_token * static_cast<double>(t.spec.input_tokens);
        link.charge(totals.energy, bytes);
        decode.scheduler().add_request(RequestSpec{id, clock.now + link.time(bytes),
                                                   t.spec.input_tokens + 1, t.spec.output_tokens - 1,
                                                   t.spec.input_tokens});
      } else {
        t.token_times.insert(t.token_times.end(), rec.token_times.begin(), rec.token_times.end());
        t.draft_tokens += rec.draft_tokens;
        t.accepted_tokens += rec.accepted_tokens;
        t.verify_steps += rec.verify_steps;
        source->on_finished(id, clock.now);
        ++finished;
      }
    }
    if (o.progress) o.progress(finished, source->total_requests());
  };
  for (std::int64_t events = 0;; ++events) {
    if (events > 100'000'000) throw Error("split simulation exceeded 1e8 events; expected fewer requests");
    // New work wakes a waiting pool: a migrated request for the decode pool, a (replacement) arrival for the
    // prefill pool.
    if (dc.waiting && decode.scheduler().has_unfinished()) dc.waiting = false;
    if (pc.waiting && (prefill.scheduler().has_unfinished() || source->next_arrival())) pc.waiting = false;
    if (pc.waiting && dc.waiting) break;
    if (!pc.waiting && (dc.waiting || pc.now <= dc.now)) advance(prefill, pc, true);
    else advance(decode, dc, false);
  }
  if (prefill.scheduler().has_unfinished() || decode.scheduler().has_unfinished() || !source->exhausted())
    throw InternalError("split simulation stopped with requests left");
  std::vector<RequestTimeline> all;
  for (auto& [id, t] : timelines) all.push_back(std::move(t));
  // Each pool's devices leak as their system's do (the prefill pool's may be another system's).
  charge_static_energy(totals, prefill_system, prefill_devices, end);
  finish_result(r, all, totals, end, system, devices, o.record_steps, o.slo, decode_devices);
  r.pools = {prefill.figures(end), decode.figures(end)};
  return r;
}

}  // namespace duplex::runtime::detail
