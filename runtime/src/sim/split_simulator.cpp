#include "split_simulator.hpp"

#include <fmt/format.h>
#include <cmath>
#include <functional>
#include <map>
#include <queue>
#include <set>

#include "duplex/base/error.hpp"
#include "duplex/runtime/scheduler/prefix_cache.hpp"
#include "duplex/runtime/sim/kv_migration.hpp"
#include "pool.hpp"

namespace duplex::runtime::detail {
namespace {

// One prefill or decode instance: a pool of devices with its own scheduler and clock, and what the routers
// count of it.
struct Instance {
  std::unique_ptr<Pool> pool;
  bool prefill = false;
  std::optional<int> node;  // the node its devices lie in (links.devices_per_node); none when they span nodes
  Time now;                 // the end of its last step (or the routing that woke it)
  std::int64_t routed = 0;            // requests routed to it
  std::int64_t done = 0;              // of those, finished by the last routing
  std::priority_queue<Time, std::vector<Time>, std::greater<>> finishing;  // finish times not yet counted
  // Requests routed to it and not finished by `t` (a routing decision's load).
  std::int64_t outstanding_at(Time t) {
    while (!finishing.empty() && finishing.top() <= t) {
      finishing.pop();
      ++done;
    }
    return routed - done;
  }
  // Whether it and `other` lie in one node (NVLink between them).
  bool near(const Instance& other) const { return node && node == other.node; }
};

// A prompt prefilled on instance `from` by a step from `step_start` to `prefill_end`, waiting to be routed to
// a decode instance at `ready`: its prefill's end, or the step's start when its K/V streams layer by layer
// (the decode instance must be known before the first layer leaves).
struct Migration {
  Time ready;
  RequestId id;
  std::size_t from;
  Time step_start, prefill_end;
  bool operator>(const Migration& o) const { return ready != o.ready ? ready > o.ready : id > o.id; }
};

// The prefill pool's copy of a request: it emits only the first token, and its content hashes cover only the
// tokens it holds (the prompt and that token; a conversation's hashes of its answer stand for K/V the decode
// instance computed, which the prefill instance never holds).
RequestSpec prefill_part(RequestSpec spec) {
  spec.output_tokens = 1;
  const std::int64_t held = spec.input_tokens + 1;
  if (spec.hashed_tokens > held) {
    const auto full_blocks = static_cast<std::size_t>(held / spec.hash_block_tokens);
    spec.content_hashes.resize(std::min(spec.content_hashes.size(), full_blocks));
    spec.hashed_tokens = static_cast<std::int64_t>(spec.content_hashes.size()) * spec.hash_block_tokens;
  }
  return spec;
}

}  // namespace

SystemResult simulate_split(const compiler::ModelSpec& model, const SystemSpec& system, const SimulationOptions& o) {
  const int devices = o.devices > 0 ? o.devices : system.devices_for(model.name);  // per replica
  const int prefill_devices = std::max(1, static_cast<int>(std::lround(devices * system.split_prefill_fraction)));
  const int decode_devices = devices - prefill_devices;
  if (decode_devices < 1)
    throw Error(fmt::format("system {}: {} devices leave none for decoding after {} prefill devices", system.name,
                            devices, prefill_devices));
  const int px = system.split_prefill_instances, dy = system.split_decode_instances;
  for (const auto& [pool, pool_devices, instances] :
       {std::tuple{"prefill", prefill_devices, px}, std::tuple{"decode", decode_devices, dy}})
    if (pool_devices % instances != 0)
      throw Error(
          fmt::format("system {}: the {} pool's {} devices do not divide into split.{}_instances {}; "
                      "expected a divisor of {}",
                      system.name, pool, pool_devices, pool, instances, pool_devices));
  const int replicas = o.cluster.replicas;
  const bool one_pair = replicas == 1 && px == 1 && dy == 1;  // the pools keep their plain names
  SystemResult r;
  r.system = system.name;
  r.model = model.name;
  r.devices = devices * replicas;
  r.replicas = replicas;
  if (replicas * px > 1) r.router = router_policy_name(o.cluster.router);
  std::unique_ptr<ExpertRouter> router = make_router(model, o.workload);
  RunTotals totals(system.energy);
  const SystemSpec& prefill_system = system.prefill_pool_system();

  // The instances: per replica, px prefill instances then dy decode instances on consecutive devices. One
  // timing memo for all; the lane timeline from the first prefill and the first decode instance only.
  SimulationOptions shared = o;
  if (!shared.pim_memos) shared.pim_memos = std::make_shared<PimTimingMemos>();
  SimulationOptions quiet = shared;
  quiet.timeline_steps = 0;
  // Instance i of a replica: its prefill or decode role, size and first device.
  auto place = [&](int rep, int i) {
    const bool is_prefill = i < px;
    const int size = is_prefill ? prefill_devices / px : decode_devices / dy;
    return std::tuple{is_prefill, size,
                      rep * devices + (is_prefill ? i * size : prefill_devices + (i - px) * size)};
  };
  // The prefill instances' host and disk tiers (the cache in use) may be shared by those in one node, or all.
  SharedHostTiers host_tiers(prefill_system.links.host_kv_scope, prefill_system.links),
      disk_tiers(prefill_system.links.disk_kv_scope, prefill_system.links);
  for (int rep = 0; rep < replicas; ++rep)
    for (int i = 0; i < px; ++i) {
      const auto [is_prefill, size, first] = place(rep, i);
      host_tiers.declare(first, size);
      disk_tiers.declare(first, size);
    }
  std::vector<Instance> prefill, decode;
  for (int rep = 0; rep < replicas; ++rep)
    for (int i = 0; i < px + dy; ++i) {
      const auto [is_prefill, size, first] = place(rep, i);
      std::vector<Instance>& role = is_prefill ? prefill : decode;
      const std::string name = one_pair ? (is_prefill ? "prefill" : "decode")
                                        : fmt::format("{}{}", is_prefill ? "prefill" : "decode", role.size());
      Instance in;
      in.prefill = is_prefill;
      in.node = node_of(first, size, system.links.devices_per_node);
      in.pool = std::make_unique<Pool>(model, is_prefill ? prefill_system : system,
                                       role.empty() ? shared : quiet, size, router.get(), r, totals, name,
                                       is_prefill ? host_tiers.of_pool(first, size) : nullptr, first,
                                       is_prefill ? disk_tiers.of_pool(first, size) : nullptr);
      role.push_back(std::move(in));
    }
  const Pool& p0 = *prefill.front().pool;
  const Pool& d0 = *decode.front().pool;
  const std::string pools =
      system.split_prefill_system
          ? fmt::format("prefill pool of {} {} | decode pool of {} {}", prefill_system.name,
                        p0.layout().describe(), system.name, d0.layout().describe())
          : fmt::format("prefill pool {} | decode pool {}", p0.layout().describe(), d0.layout().describe());
  r.layout =
      one_pair
          ? pools
          : fmt::format(
                "{} x {}P{}D ({}, instances of {} | {} devices), {} router{}", replicas, px, dy, pools,
                prefill_devices / px, decode_devices / dy, router_policy_name(o.cluster.router),
                dy * replicas > 1 && system.split_decode_by_free_kv ? ", most-free-kv decode router" : "");
  describe_memory_and_timing(r, d0, system);
  r.host_kv_blocks = p0.host_kv_blocks();  // the prefill instances' cache (the decode pool has none in use)
  r.disk_kv_blocks = p0.disk_kv_blocks();
  r.host_kv_scope = to_string(prefill_system.links.host_kv_scope);
  r.disk_kv_scope = to_string(prefill_system.links.disk_kv_scope);

  // Speculative decoding: both pools hold the draft model (the prefill pool prefills it with the prompts,
  // the decode pool drafts with it), whose K/V of the prompts moves with the target's. The links a migration
  // may take: NVLink between instances in one node, InfiniBand otherwise; each priced up front.
  const double kv_bytes_per_prompt_token =
      kv_bytes_per_token(model) + (o.draft_model ? kv_bytes_per_token(*o.draft_model) : 0.0);
  std::set<std::optional<int>> decode_nodes;
  for (const Instance& d : decode) decode_nodes.insert(d.node);
  bool any_nvlink = false;
  for (const Instance& p : prefill) any_nvlink |= p.node && decode_nodes.count(p.node) > 0;
  const bool any_infiniband = replicas * devices > system.links.devices_per_node;  // more than one node
  const std::optional<KvLinkMigration> nvlink =
      any_nvlink ? std::optional<KvLinkMigration>(std::in_place, system, true) : std::nullopt;
  const std::optional<KvLinkMigration> infiniband =
      any_infiniband ? std::optional<KvLinkMigration>(std::in_place, system, false) : std::nullopt;
  // Every prefill instance has one layout, every decode instance another: the streams of any pair.
  const int streams = kv_transfer_streams(model, p0.layout(), d0.layout());
  KvLinkSchedule links(prefill.size(), decode.size());
  auto link_between = [&](const Instance& p, const Instance& d) -> const KvLinkMigration& {
    const std::optional<KvLinkMigration>& link = p.near(d) ? nvlink : infiniband;
    DUPLEX_ASSERT(link.has_value(), "a migration over a link not priced up front");
    return *link;
  };

  auto source = make_request_source(o.workload);
  std::map<RequestId, RequestTimeline> timelines;
  std::priority_queue<Migration, std::vector<Migration>, std::greater<>> migrations;
  RequestRouter prompt_router(ClusterSpec{replicas * px, o.cluster.router, o.cluster.thresholds});
  std::vector<ReplicaLoad> loads(prefill.size());
  const bool looks_up = routes_by_cache(o.cluster.router) && o.scheduler.prefix_caching;
  // Adds `spec` to instance `in` at `t`, waking it there if it was idle.
  auto hand_to = [](Instance& in, const RequestSpec& spec, Time t) {
    if (!in.pool->scheduler().has_unfinished()) in.now = std::max(in.now, t);
    in.pool->scheduler().add_request(spec);
    ++in.routed;
  };
  // An arrival goes to the prefill instance the prompt router picks (each instance's outstanding prompts at
  // the arrival, and its prefix cache as of its last step).
  auto route_prompt = [&](RequestSpec spec) {
    timelines[spec.id].spec = spec;
    spec = prefill_part(std::move(spec));
    for (std::size_t i = 0; i < prefill.size(); ++i) {
      loads[i].outstanding = prefill[i].outstanding_at(spec.arrival);
      const HeldPrefix held =
          looks_up ? prefill[i].pool->scheduler().cached_prefix_tokens(spec) : HeldPrefix{};
      loads[i].cached_tokens = held.device;
      loads[i].offloaded_tokens = held.offloaded;
    }
    const auto chosen = static_cast<std::size_t>(prompt_router.route(
        spec.input_tokens, loads, spec.content_hashes.empty() ? 0 : spec.content_hashes.front()));
    hand_to(prefill[chosen], spec, spec.arrival);
  };
  // A prefilled prompt goes to the decode instance with the fewest outstanding requests when it is ready
  // (Splitwise's join-the-shortest-queue), or with split.decode_router most-free-kv to the one with the most
  // free K/V blocks less those its waiting requests take (as of its last step), among equals one in the
  // prefill instance's node, then the lowest index; its K/V arrives over the links between them once they are
  // free, after its prefill or layer by layer during its last step (split.kv_transfer;
  // KvLinkSchedule::book_prompt).
  const int layerwise_layers = system.split_kv_layerwise ? model.layers : 0;
  auto route_migration = [&](const Migration& m) {
    const Instance& from = prefill[m.from];
    std::size_t best = 0;
    std::int64_t best_load = 0;
    bool best_near = false;
    for (std::size_t i = 0; i < decode.size(); ++i) {
      const Scheduler& s = decode[i].pool->scheduler();
      const std::int64_t outstanding = decode[i].outstanding_at(m.ready);  // counts finishes up to m.ready
      const std::int64_t load = system.split_decode_by_free_kv
                                    ? s.kv_used_blocks() + s.waiting_kv_blocks() - s.kv_capacity_blocks()
                                    : outstanding;
      const bool near = from.near(decode[i]);
      if (i == 0 || load < best_load || (load == best_load && near && !best_near)) {
        best = i;
        best_load = load;
        best_near = near;
      }
    }
    RequestTimeline& t = timelines.at(m.id);
    const KvLinkMigration& link = link_between(from, decode[best]);
    const double bytes = kv_bytes_per_prompt_token * static_cast<double>(t.spec.input_tokens);
    link.charge(totals.energy, bytes);
    if (!one_pair) t.pool = fmt::format("{}>{}", from.pool->name(), decode[best].pool->name());
    const KvLinkSchedule::Crossing crossing =
        links.book_prompt(m.from, best, link, bytes, streams, m.step_start, m.prefill_end, layerwise_layers);
    hand_to(decode[best],
            RequestSpec{m.id, crossing.arrival(), t.spec.input_tokens + 1, t.spec.output_tokens - 1,
                        t.spec.input_tokens},
            m.ready);
  };

  std::vector<Instance*> all;  // prefill instances first: the lower index among equal clocks
  for (Instance& in : prefill) all.push_back(&in);
  for (Instance& in : decode) all.push_back(&in);
  Time end;
  std::int64_t finished = 0;
  for (std::int64_t events = 0;; ++events) {
    if (events > 1'000'000'000) throw Error("split simulation exceeded 1e9 events; expected fewer requests");
    // The instance with work whose clock is earliest.
    Instance* next = nullptr;
    for (Instance* in : all)
      if (in->pool->scheduler().has_unfinished() && (!next || in->now < next->now)) next = in;
    // Arrivals and migrations are routed once no busy instance's clock is before them (the routers then see
    // every finish up to them); a migration before an arrival at the same instant.
    const std::optional<Time> arrival = source->next_arrival();
    const std::optional<Time> ready =
        migrations.empty() ? std::nullopt : std::optional<Time>(migrations.top().ready);
    std::optional<Time> event = arrival;
    if (ready && (!event || *ready <= *event)) event = ready;
    if (event && (!next || *event <= next->now)) {
      if (ready && *event == *ready) {
        const Migration m = migrations.top();
        migrations.pop();
        route_migration(m);
      } else {
        for (RequestSpec spec : source->take_arrived(*arrival)) route_prompt(std::move(spec));
      }
      continue;
    }
    if (!next) break;
    Instance& in = *next;
    Pool& pool = *in.pool;
    const StepPlan plan = pool.scheduler().schedule(in.now);
    if (plan.empty()) {
      // Its requests arrive later (migrations on their way): wait for the first, or for the next routing.
      const std::optional<Time> queued = pool.scheduler().next_arrival_after(in.now);
      DUPLEX_ASSERT(queued.has_value(), fmt::format("instance {} stalled with requests left", pool.name()));
      in.now = event ? std::min(*queued, *event) : *queued;
      continue;
    }
    const Time began = in.now;
    in.now += pool.step(plan);
    end = std::max(end, in.now);
    const StepOutcome outcome = pool.scheduler().update(StepResult{plan.step, in.now});
    const auto from = static_cast<std::size_t>(&in - (in.prefill ? prefill.data() : decode.data()));
    for (const RequestId id : outcome.finished) {
      in.finishing.push(in.now);
      RequestTimeline& t = timelines.at(id);
      const RequestRecord& rec = pool.scheduler().records().at(id);
      t.preemptions += rec.preemptions;
      if (in.prefill) {
        t.token_times.push_back(rec.token_times.front());
        t.prefix_query_tokens +=
            rec.prefix_query_tokens;  // the prefill pool's cache (the decode pool has none)
        t.prefix_hit_tokens += rec.prefix_hit_tokens;
        t.host_hit_tokens += rec.host_hit_tokens;
        t.host_remote_hit_tokens += rec.host_remote_hit_tokens;
        t.disk_hit_tokens += rec.disk_hit_tokens;
        t.disk_remote_hit_tokens += rec.disk_remote_hit_tokens;
        if (t.spec.output_tokens == 1) {
          if (!one_pair) t.pool = pool.name();
          source->on_finished(id, in.now);
          ++finished;
          continue;
        }
        migrations.push(Migration{layerwise_layers > 0 ? began : in.now, id, from, began, in.now});
      } else {
        t.token_times.insert(t.token_times.end(), rec.token_times.begin(), rec.token_times.end());
        t.draft_tokens += rec.draft_tokens;
        t.accepted_tokens += rec.accepted_tokens;
        t.verify_steps += rec.verify_steps;
        source->on_finished(id, in.now);
        ++finished;
      }
    }
    if (o.progress) o.progress(finished, source->total_requests());
  }
  if (!migrations.empty() || !source->exhausted())
    throw InternalError("split simulation stopped with requests left");
  std::vector<RequestTimeline> done;
  for (auto& [id, t] : timelines) done.push_back(std::move(t));
  // Each pool's devices leak as their system's do (the prefill pool's may be another system's).
  charge_static_energy(totals, prefill_system, prefill_devices * replicas, end);
  finish_result(r, done, totals, end, system, r.devices, o.record_steps, o.slo, decode_devices * replicas);
  for (const Instance* in : all) r.pools.push_back(in->pool->figures(end));
  return r;
}

}  // namespace duplex::runtime::detail
