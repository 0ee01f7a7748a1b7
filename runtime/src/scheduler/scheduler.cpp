#include "duplex/runtime/scheduler/scheduler.hpp"

#include <algorithm>
#include <fmt/format.h>
#include <limits>
#include <unordered_map>

#include "duplex/base/error.hpp"

namespace duplex::runtime {
namespace {

SchedulerConfig validated(SchedulerConfig c) {
  c.validate();
  return c;
}

// One K/V memory per data-parallel rank, each an equal share of the capacity, each with its own host and disk
// tiers (its devices' host memory and drives) unless they are shared.
std::vector<KvBlockManager> rank_memories(const SchedulerConfig& c,
                                          const std::shared_ptr<HostKvTier>& shared_host,
                                          const std::shared_ptr<HostKvTier>& shared_disk) {
  std::vector<KvBlockManager> kv;
  for (int r = 0; r < c.data_parallel_ranks; ++r)
    kv.emplace_back(c.kv_capacity_blocks / c.data_parallel_ranks, c.kv_block_tokens, c.kv_window,
                    c.host_kv_blocks, shared_host,
                    c.host_kv_nodes.empty() ? 0 : c.host_kv_nodes.at(static_cast<std::size_t>(r)),
                    c.disk_kv_blocks, shared_disk);
  return kv;
}

// splitmix64 (Steele, Lea, Flood 2014): a counter-based stream of well-mixed 64-bit values.
std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

std::int64_t Scheduler::accepted_drafts(const Live& live, std::int64_t depth) const {
  std::uint64_t state = config_.acceptance_seed;
  splitmix64(state);
  state ^= static_cast<std::uint64_t>(live.spec.id) * 0xd1b54a32d192ed03ULL;
  splitmix64(state);
  // Keyed by the tokens in the sequence so far, which a split system's migrated request (its first token in
  // its input) continues: both pools of a comparison draw alike.
  state ^= static_cast<std::uint64_t>(live.spec.input_tokens + live.generated) * 0x8cb92ba72f3d8dd7ULL;
  std::int64_t accepted = 0;
  while (accepted < depth) {
    const double u = static_cast<double>(splitmix64(state) >> 11) * 0x1.0p-53;  // uniform in [0, 1)
    const std::size_t position =
        std::min(static_cast<std::size_t>(accepted), config_.acceptance_rates.size() - 1);
    if (u >= config_.acceptance_rates[position]) break;
    ++accepted;
  }
  return accepted;
}

Scheduler::Scheduler(SchedulerConfig config, std::shared_ptr<HostKvTier> shared_host,
                     std::shared_ptr<HostKvTier> shared_disk)
    : config_(validated(config)),
      kv_(rank_memories(config_, shared_host, shared_disk)),
      kv_peak_blocks_(kv_.size()),
      rank_load_(kv_.size()),
      batch_peak_(kv_.size()),
      pending_keys_(kv_.size()),
      prefill_capacity_blocks_(config_.prefill_capacity_tokens / config_.data_parallel_ranks /
                               config_.kv_block_tokens),
      prefill_blocks_used_(kv_.size()) {}

int Scheduler::rank_of(RequestId id) const {
  const auto it = records_.find(id);
  if (it == records_.end() || it->second.rank < 0)
    throw Error(fmt::format("Scheduler::rank_of(): request {} {}; expected a request dealt to a rank", id,
                            it == records_.end() ? "was never added" : "has not arrived yet"));
  return it->second.rank;
}

int Scheduler::rank_for_arrival(const RequestSpec& spec) const {
  if (ranks() == 1) return 0;
  switch (config_.data_parallel_balance) {
    case DataParallelBalance::round_robin:
      return data_parallel_rank(spec.id, ranks());
    case DataParallelBalance::least_loaded:
      return static_cast<int>(std::min_element(rank_load_.begin(), rank_load_.end()) - rank_load_.begin());
    case DataParallelBalance::cache_aware:
      break;
  }
  if (!dealer_)
    throw Error(
        "scheduler data_parallel_balance cache-aware: no dealer set; expected Scheduler::set_dealer()");
  std::vector<RankLoad> loads(kv_.size());
  for (int r = 0; r < ranks(); ++r) {
    loads[static_cast<std::size_t>(r)].unfinished = rank_load_[static_cast<std::size_t>(r)];
    const HeldPrefix held = cached_tokens_on(spec, r);
    loads[static_cast<std::size_t>(r)].cached_tokens = held.device;
    loads[static_cast<std::size_t>(r)].offloaded_tokens = held.offloaded;
  }
  const int rank = dealer_(spec, loads);
  if (rank < 0 || rank >= ranks())
    throw InternalError(fmt::format("a dealer picked rank {} of {}", rank, ranks()));
  return rank;
}

HeldPrefix Scheduler::cached_tokens_on(const RequestSpec& spec, int rank) const {
  if (!config_.prefix_caching || spec.content_hashes.empty()) return {};
  const std::vector<std::uint64_t> keys = prefix_block_keys(spec, config_.kv_block_tokens, rank, ranks());
  const KvBlockManager& memory = kv(rank);
  std::int64_t blocks = 0;
  std::int64_t offloaded = 0;  // blocks
  if (!counts_routed_prefixes()) {
    const PrefixCache::Hit hit = memory.prefix_hit(keys, spec.input_tokens - 1);
    blocks = hit.blocks;
    offloaded = hit.host_blocks + hit.disk_blocks;
  } else {
    // Cache-aware dealing (and a cache-aware router in front) also counts the blocks of the unfinished
    // requests dealt to the rank, cached or not yet (SGLang's router inserts a prompt into its worker's
    // approximate tree when it routes it): a burst of one prompt's requests stays on one rank.
    const PrefixCache& cache = memory.prefix_cache();
    const auto& pending = pending_keys_[static_cast<std::size_t>(rank)];
    while (blocks < static_cast<std::int64_t>(keys.size()) &&
           (cache.contains(keys[static_cast<std::size_t>(blocks)]) ||
            pending.contains(keys[static_cast<std::size_t>(blocks)])))
      ++blocks;
    const std::int64_t host = memory.host_tier().leading(keys, static_cast<std::size_t>(blocks));
    offloaded = host + memory.disk_tier().leading(keys, static_cast<std::size_t>(blocks + host));
  }
  const std::int64_t device = std::min(spec.input_tokens, blocks * config_.kv_block_tokens);
  return {device, std::min(spec.input_tokens, (blocks + offloaded) * config_.kv_block_tokens) - device};
}

HeldPrefix Scheduler::cached_prefix_tokens(const RequestSpec& spec) const {
  return cached_tokens_on(spec, rank_for_arrival(spec));
}

void Scheduler::deal(Live& live, int rank) {
  live.rank = rank;
  records_.at(live.spec.id).rank = rank;
  ++rank_load_[static_cast<std::size_t>(rank)];
  if (config_.prefix_caching && !live.spec.content_hashes.empty() && live.spec.cached_tokens == 0)
    live.prefix_keys = prefix_block_keys(live.spec, config_.kv_block_tokens, rank, ranks());
  if (counts_routed_prefixes())
    for (const std::uint64_t key : live.prefix_keys) ++pending_keys_[static_cast<std::size_t>(rank)][key];
}

void Scheduler::deal_arrived(Time now) {
  for (Live& live : waiting_) {
    if (live.spec.arrival > now) break;  // sorted by arrival: so are the rest
    if (live.rank < 0) deal(live, rank_for_arrival(live.spec));
  }
}

std::int64_t Scheduler::kv_used_blocks() const {
  std::int64_t used = 0;
  for (const KvBlockManager& k : kv_) used += k.used_blocks();
  return used;
}

std::int64_t Scheduler::kv_capacity_blocks() const {
  std::int64_t capacity = 0;
  for (const KvBlockManager& k : kv_) capacity += k.capacity_blocks();
  return capacity;
}

std::int64_t Scheduler::waiting_kv_blocks() const {
  std::int64_t blocks = 0;
  for (const Live& live : waiting_) blocks += kv_.front().blocks_for(live.num_tokens);  // every rank's alike
  return blocks;
}

bool Scheduler::older(const Live& a, const Live& b) {
  if (a.spec.arrival != b.spec.arrival) return a.spec.arrival < b.spec.arrival;
  return a.spec.id < b.spec.id;
}

void Scheduler::insert_sorted(std::deque<Live>& queue, Live live) {
  const auto pos = std::upper_bound(queue.begin(), queue.end(), live, older);
  queue.insert(pos, std::move(live));
}

void Scheduler::add_request(const RequestSpec& spec) {
  if (records_.contains(spec.id)) throw Error(fmt::format("request id {} was added twice; ids must be unique", spec.id));
  if (spec.input_tokens < 1 || spec.output_tokens < 1)
    throw Error(fmt::format("request {} has {} input and {} output tokens; expected at least 1 of each", spec.id,
                            spec.input_tokens, spec.output_tokens));
  // The last output token is emitted but never fed back, so KV peaks at prompt + output - 1 tokens: a
  // recomputation after a preemption (continuous) or the reservation at admission (orca, static) holds them
  // all at once, sliding window or not; a draft tree adds its nodes off the accepted path while verified.
  const std::int64_t tree_extra = peak_kv_tokens(spec) - (spec.input_tokens + spec.output_tokens - 1);
  const KvBlockManager& memory = kv_.front();  // every rank's memory is alike
  const std::int64_t peak_blocks = memory.blocks_for(peak_kv_tokens(spec));
  if (peak_blocks > memory.capacity_blocks())
    throw Error(
        fmt::format("request {} ({} input + {} output tokens{}) needs {} KV blocks of {} tokens but the "
                    "KV cache holds {} blocks{}; expected shorter requests or more KV memory",
                    spec.id, spec.input_tokens, spec.output_tokens,
                    tree_extra > 0 ? fmt::format(" + {} draft tree nodes", tree_extra) : "", peak_blocks,
                    memory.block_tokens(), memory.capacity_blocks(),
                    ranks() > 1 ? fmt::format(" on each of {} data-parallel ranks", ranks()) : ""));
  // Under continuous batching a preempted request recomputes prompt + generated tokens as one prefill.
  const std::int64_t longest_prefill = config_.policy == BatchingPolicy::continuous
                                           ? spec.input_tokens + spec.output_tokens - 1
                                           : spec.input_tokens;
  if (prefill_capacity_blocks_ > 0 && memory.blocks_for(longest_prefill) > prefill_capacity_blocks_)
    throw Error(fmt::format(
        "request {} ({} input + {} output tokens) may prefill {} tokens at once ({} blocks of {} "
        "tokens{}) but the prefill space holds {} blocks; expected shorter requests or a larger "
        "prefill space",
        spec.id, spec.input_tokens, spec.output_tokens, longest_prefill, memory.blocks_for(longest_prefill),
        memory.block_tokens(),
        config_.policy == BatchingPolicy::continuous ? ", a recomputation after a preemption" : "",
        prefill_capacity_blocks_));
  if (spec.cached_tokens < 0 || spec.cached_tokens >= spec.input_tokens)
    throw Error(fmt::format("request {} arrives with {} cached tokens of {} input tokens; expected 0 <= cached < "
                            "input (at least one token left to compute)", spec.id, spec.cached_tokens,
                            spec.input_tokens));
  if (!spec.content_hashes.empty()) {
    const auto hashes = static_cast<std::int64_t>(spec.content_hashes.size());
    if (spec.hash_block_tokens < 1 || spec.hashed_tokens <= (hashes - 1) * spec.hash_block_tokens ||
        spec.hashed_tokens > hashes * spec.hash_block_tokens ||
        spec.hashed_tokens > spec.input_tokens + spec.output_tokens)
      throw Error(
          fmt::format("request {} carries {} content hashes of blocks of {} tokens standing for {} tokens; "
                      "expected blocks of at least 1 token, the hashes' last block holding the last of those "
                      "tokens, and at most its {} input + {} output tokens",
                      spec.id, hashes, spec.hash_block_tokens, spec.hashed_tokens, spec.input_tokens,
                      spec.output_tokens));
  }
  RequestRecord record;
  record.spec = spec;
  records_.emplace(spec.id, std::move(record));
  Live live;
  live.spec = spec;
  live.num_tokens = spec.input_tokens;
  live.num_computed = spec.cached_tokens;
  live.decoding = spec.cached_tokens > 0;
  live.draft_computed = spec.cached_tokens;  // the draft's K/V of the prompt migrates with the target's
  if (config_.data_parallel_balance == DataParallelBalance::round_robin || ranks() == 1)
    deal(live, data_parallel_rank(spec.id, ranks()));
  insert_sorted(waiting_, std::move(live));
}

std::optional<Time> Scheduler::next_arrival_after(Time now) const {
  for (const Live& live : waiting_)
    if (live.spec.arrival > now) return live.spec.arrival;
  return std::nullopt;
}

StepPlan Scheduler::schedule(Time now) {
  if (in_flight_)
    throw Error(fmt::format("Scheduler::schedule() called while step {} is in flight; call update() with its "
                            "result first", in_flight_->step));
  if (now < last_time_)
    throw Error(fmt::format("Scheduler::schedule(now = {}) goes back in time; the previous step ended at {}",
                            format_time(now), format_time(last_time_)));
  last_time_ = now;
  StepPlan plan;
  plan.step = next_step_;
  plan.start = now;
  deal_arrived(now);
  std::vector<RankStep> shares(
      kv_.size(), RankStep{config_.max_tokens_per_step > 0 ? config_.rank_tokens_per_step()
                                                           : std::numeric_limits<std::int64_t>::max(),
                           config_.rank_max_batch()});
  std::fill(prefill_blocks_used_.begin(), prefill_blocks_used_.end(), 0);
  for (const Live& live : running_) {
    prefill_blocks_used_[static_cast<std::size_t>(live.rank)] += prefill_blocks_of(live);
    --shares[static_cast<std::size_t>(live.rank)].slots;
  }
  std::vector<char> preempted(kv_.size());
  schedule_running(plan, shares, preempted);
  // As vLLM: a rank that had to preempt admits nobody this step (the preempted would be readmitted into the
  // shortage).
  admit_waiting(plan, shares, now, preempted);
  finalize(plan);
  for (std::size_t r = 0; r < kv_.size(); ++r) {
    kv_peak_blocks_[r] = std::max(kv_peak_blocks_[r], kv_[r].used_blocks());
    batch_peak_[r] = std::max(batch_peak_[r], config_.rank_max_batch() - shares[r].slots);
  }
  if (!plan.empty()) {
    in_flight_ = plan;
    ++next_step_;
  }
  return plan;
}

std::int64_t Scheduler::tokens_to_schedule(const Live& live, std::int64_t budget, bool plan_empty) const {
  const std::int64_t remaining = live.num_tokens - live.num_computed;
  DUPLEX_ASSERT(remaining >= 1, "an unfinished request has no token to compute");
  if (live.decoding && remaining == 1 && config_.speculative_tokens > 0)
    return 1 + config_.tree_nodes(draft_depth(live, budget));  // its last token plus the drafts
  const std::int64_t room = prefill_room(live);
  if (remaining > room) {
    if (!config_.chunked_prefill) return 0;  // a whole prefill that does not fit the prefill space waits
    budget = std::min(budget, room);
  }
  if (remaining <= budget) return remaining;
  if (config_.chunked_prefill) return budget;
  // Without chunking, a prefill longer than the whole budget runs alone in a step rather than never.
  return plan_empty ? remaining : 0;
}

std::int64_t Scheduler::draft_depth(const Live& live, std::int64_t budget) const {
  // Never past its output (the step emits at least one token of its own), nor past the token budget.
  std::int64_t depth = std::min({std::int64_t{config_.speculative_tokens},
                                 live.spec.output_tokens - live.generated - 1, live.draft_limit});
  while (depth > 0 && 1 + config_.tree_nodes(depth) > budget) --depth;
  return depth;
}

void Scheduler::limit_drafts(RequestId id, std::int64_t drafts) {
  if (drafts < 0)
    throw Error(
        fmt::format("Scheduler::limit_drafts(): request {} limited to {} drafts; expected >= 0", id, drafts));
  for (std::deque<Live>* queue : {&running_, &waiting_})
    for (Live& live : *queue)
      if (live.spec.id == id) {
        live.draft_limit = drafts;
        return;
      }
  throw Error(fmt::format("Scheduler::limit_drafts(): request {} is neither queued nor running", id));
}

std::int64_t Scheduler::prefill_blocks_of(const Live& live) const {
  return prefill_capacity_blocks_ > 0 && !live.decoding
             ? kv_.front().blocks_for(live.num_computed - live.prefill_start)
             : 0;
}

std::int64_t Scheduler::prefill_room(const Live& live) const {
  if (prefill_capacity_blocks_ == 0 || live.decoding) return std::numeric_limits<std::int64_t>::max();
  // Its own partly filled last block plus its rank's free blocks (prefill_blocks_used_ counts its own).
  const std::int64_t blocks = prefill_capacity_blocks_ -
                              prefill_blocks_used_[static_cast<std::size_t>(live.rank)] +
                              prefill_blocks_of(live);
  return blocks * config_.kv_block_tokens - (live.num_computed - live.prefill_start);
}

std::int64_t Scheduler::peak_kv_tokens(const RequestSpec& spec) const {
  // A draft of depth d verified before the last d + 1 outputs holds prompt + outputs - 1 tokens plus the
  // tree's nodes off its longest path, most at the deepest draft the output allows (tree_nodes(d) - d grows
  // with d).
  const std::int64_t depth = std::min<std::int64_t>(config_.speculative_tokens, spec.output_tokens - 1);
  return spec.input_tokens + spec.output_tokens - 1 + config_.tree_nodes(depth) - depth;
}

std::int64_t Scheduler::kv_tokens_needed(const Live& live, std::int64_t tokens) const {
  const std::int64_t now_needed = live.num_computed + tokens;
  if (config_.policy == BatchingPolicy::continuous) return now_needed;
  return std::max(now_needed, peak_kv_tokens(live.spec));
}

void Scheduler::schedule_running(StepPlan& plan, std::vector<RankStep>& shares,
                                 std::vector<char>& preempted) {
  for (std::size_t i = 0; i < running_.size();) {
    const int rank = running_[i].rank;
    RankStep& share = shares[static_cast<std::size_t>(rank)];
    const std::int64_t tokens =
        share.budget > 0 ? tokens_to_schedule(running_[i], share.budget, !share.scheduled) : 0;
    if (tokens == 0) {
      ++i;
      continue;
    }
    const std::int64_t need = kv_tokens_needed(running_[i], tokens);
    bool preempted_self = false;
    while (!kv_of(running_[i]).can_grow_to(running_[i].spec.id, running_[i].num_computed, need)) {
      DUPLEX_ASSERT(config_.policy == BatchingPolicy::continuous,
                    "a request with reserved KV ran out of it under policy " + to_string(config_.policy));
      // Its rank's youngest running request: itself or one behind it.
      const std::size_t victim = youngest_of(rank);
      preempted_self = victim == i;
      preempt(plan, victim);
      ++share.slots;
      preempted[static_cast<std::size_t>(rank)] = 1;
      if (preempted_self) break;
    }
    if (preempted_self) continue;  // running_[i] is the next one now
    kv_of(running_[i]).grow_to(running_[i].spec.id, running_[i].num_computed, need);
    add_to_plan(plan, running_[i], tokens);
    share.budget -= tokens;
    share.scheduled = true;
    ++i;
  }
}

void Scheduler::admit_waiting(StepPlan& plan, std::vector<RankStep>& shares, Time now,
                              const std::vector<char>& preempted) {
  if (config_.policy == BatchingPolicy::static_batch && !running_.empty()) return;
  // Each rank admits its waiting requests in order until one does not fit, or its share of the step's tokens
  // or of the batch is spent (it then admits nobody more).
  std::vector<char> closed = preempted;
  auto open = static_cast<std::size_t>(std::count(closed.begin(), closed.end(), 0));
  for (std::size_t w = 0; w < waiting_.size() && open > 0;) {
    if (waiting_[w].spec.arrival > now) break;  // sorted by arrival: so are the rest
    const auto rank = static_cast<std::size_t>(waiting_[w].rank);
    if (closed[rank]) {
      ++w;
      continue;
    }
    RankStep& share = shares[rank];
    const std::int64_t tokens = share.budget > 0 && share.slots > 0 ? admit(plan, share, w) : 0;
    if (tokens == 0) {  // limited by its rank's free KV blocks (or prefill space), budget or batch
      closed[rank] = 1;
      --open;
      ++w;
      continue;
    }
    share.budget -= tokens;  // waiting_[w] is the next one now
    --share.slots;
    share.scheduled = true;
  }
}

std::int64_t Scheduler::admit(StepPlan& plan, const RankStep& share, std::size_t index) {
  Live& head = waiting_[index];
  KvBlockManager& memory = kv_of(head);
  // A request with no K/V starts after the cached blocks its prompt begins with (one token short of all).
  PrefixCache::Hit hit;
  const bool looks_up = head.num_computed == 0 && !head.prefix_keys.empty();
  std::int64_t loaded = 0;       // of the cached tokens, those in host memory or on disk
  std::int64_t disk_loaded = 0;  // of those, the ones on disk
  std::int64_t remote = 0;       // of those, the ones in another node's host memory
  std::int64_t disk_remote = 0;  // and on another node's drives
  if (looks_up) {
    const std::int64_t b = config_.kv_block_tokens;
    hit = memory.prefix_hit(head.prefix_keys, head.num_tokens - 1);
    head.num_computed = head.prefill_start =
        std::min((hit.blocks + hit.host_blocks + hit.disk_blocks) * b, head.num_tokens - 1);
    loaded = std::max<std::int64_t>(0, head.num_computed - hit.blocks * b);
    disk_loaded = std::max<std::int64_t>(0, loaded - hit.host_blocks * b);
    hit.host_blocks = (loaded - disk_loaded + b - 1) / b;
    hit.disk_blocks = (disk_loaded + b - 1) / b;
    // Where the host tier's copies lie, before taking the disk's pushes any out.
    if (loaded > disk_loaded)
      remote = memory.host_remote_tokens(head.prefix_keys, hit.blocks, loaded - disk_loaded);
    if (disk_loaded > 0)
      disk_remote = memory.disk_remote_tokens(head.prefix_keys, hit.blocks + hit.host_blocks, disk_loaded);
  }
  const std::int64_t tokens = tokens_to_schedule(head, share.budget, !share.scheduled);
  const std::int64_t need = tokens > 0 ? kv_tokens_needed(head, tokens) : 0;
  if (tokens == 0 || !memory.can_grow_with(head.spec.id, hit, head.num_computed, need)) {
    if (looks_up) head.num_computed = head.prefill_start = 0;
    return 0;
  }
  memory.take_prefix(head.spec.id, head.prefix_keys, hit);
  memory.grow_to(head.spec.id, head.num_computed, need);
  if (looks_up) {
    RequestRecord& record = records_.at(head.spec.id);
    record.prefix_query_tokens += head.num_tokens;
    record.prefix_hit_tokens += head.prefill_start;
    record.host_hit_tokens += loaded;
    record.disk_hit_tokens += disk_loaded;
    record.host_remote_hit_tokens += remote;
    record.disk_remote_hit_tokens += disk_remote;
  }
  add_to_plan(plan, head, tokens);
  plan.requests.back().host_loaded = loaded;
  plan.requests.back().host_remote_loaded = remote;
  plan.requests.back().disk_loaded = disk_loaded;
  plan.requests.back().disk_remote_loaded = disk_remote;
  Live admitted = std::move(head);
  waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(index));
  insert_sorted(running_, std::move(admitted));
  return tokens;
}

void Scheduler::preempt(StepPlan& plan, std::size_t index) {
  Live victim = std::move(running_[index]);
  running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(index));
  prefill_blocks_used_[static_cast<std::size_t>(victim.rank)] -= prefill_blocks_of(victim);
  kv_of(victim).release(victim.spec.id);
  RequestRecord& record = records_.at(victim.spec.id);
  ++record.preemptions;
  record.recomputed_tokens += victim.num_computed;
  victim.num_computed = 0;
  victim.prefill_start = 0;
  victim.decoding = false;
  victim.draft_computed = 0;
  plan.preempted.push_back(victim.spec.id);
  insert_sorted(waiting_, std::move(victim));
}

std::size_t Scheduler::youngest_of(int rank) const {
  for (std::size_t i = running_.size(); i-- > 0;)
    if (running_[i].rank == rank) return i;
  DUPLEX_ASSERT(false, "a rank with no running request ran short of K/V");
  return 0;
}

void Scheduler::add_to_plan(StepPlan& plan, const Live& live, std::int64_t tokens) {
  const std::int64_t prefilled = live.num_computed - live.prefill_start;  // in the prefill space
  std::int64_t& prefill_used = prefill_blocks_used_[static_cast<std::size_t>(live.rank)];
  if (prefill_capacity_blocks_ > 0 && !live.decoding)
    prefill_used += kv_.front().blocks_for(prefilled + tokens) - kv_.front().blocks_for(prefilled);
  DUPLEX_ASSERT(prefill_capacity_blocks_ == 0 || prefill_used <= prefill_capacity_blocks_,
                "the prefill space is over-filled");
  plan.requests.push_back(ScheduledRequest{
      .id = live.spec.id,
      .tokens = tokens,
      .context_len = live.num_computed,
      .phase = live.decoding ? TokenPhase::decode : TokenPhase::prefill,
      .samples_token = live.num_computed + tokens >= live.num_tokens,  // > with draft tokens
      .draft_depth = live.num_computed + tokens > live.num_tokens ? draft_depth(live, tokens) : 0,
      .cached_context = live.decoding ? 0 : live.prefill_start,
      .draft_context = live.decoding && config_.speculative_tokens > 0 ? live.draft_computed : 0,
      .rank = live.rank,
  });
  RequestRecord& record = records_.at(live.spec.id);
  if (!record.first_scheduled) record.first_scheduled = plan.start;
  // Its whole blocks of the sequence this step computes are cached now, as vLLM v1 caches a block when it
  // schedules the tokens that fill it: a request admitted later in this step takes them (its attention reads
  // the K/V this step writes). Drafts wait for their acceptance (update()). A request scheduled in a step is
  // never preempted in that step (preempt() takes those behind it), so what is cached here is computed.
  const KvBlockManager::Copies copies = kv_of(live).share_computed(
      live.spec.id, live.prefix_keys, std::min(live.num_computed + tokens, live.num_tokens));
  plan.host_stored_blocks += copies.host;
  plan.disk_stored_blocks += copies.disk;
}

void Scheduler::finalize(StepPlan& plan) const {
  for (const ScheduledRequest& r : plan.requests) {
    if (r.phase == TokenPhase::decode) {
      ++plan.decode_requests;
    } else {
      ++plan.prefill_requests;
      plan.prefill_tokens += r.tokens;
    }
    plan.total_tokens += r.tokens;
    plan.host_loaded_tokens += r.host_loaded;
    plan.host_remote_loaded_tokens += r.host_remote_loaded;
    plan.disk_loaded_tokens += r.disk_loaded;
    plan.disk_remote_loaded_tokens += r.disk_remote_loaded;
    plan.max_context_len = std::max(plan.max_context_len, r.context_len + r.tokens);
  }
  plan.kv_blocks_used = kv_used_blocks();
  plan.kv_blocks_capacity = kv_capacity_blocks();
}

StepOutcome Scheduler::update(const StepResult& result,
                              const std::vector<AcceptedDrafts>& accepted_drafts_of) {
  if (!in_flight_) throw Error(fmt::format("Scheduler::update(step {}) with no step in flight", result.step));
  if (result.step != in_flight_->step)
    throw Error(fmt::format("Scheduler::update() got step {}; the step in flight is {}", result.step,
                            in_flight_->step));
  if (result.end < in_flight_->start)
    throw Error(fmt::format("Scheduler::update(): step {} ends at {}, before it started at {}", result.step,
                            format_time(result.end), format_time(in_flight_->start)));
  std::unordered_map<RequestId, const ScheduledRequest*> computed;
  for (const ScheduledRequest& r : in_flight_->requests) computed.emplace(r.id, &r);
  StepOutcome out;
  std::size_t matched = 0;
  for (Live& live : running_) {
    const auto it = computed.find(live.spec.id);
    if (it == computed.end()) continue;
    ++matched;
    live.num_computed += it->second->tokens;
    if (it->second->phase == TokenPhase::prefill) live.draft_computed = live.num_computed;  // its pass 1
    if (live.num_computed < live.num_tokens)
      continue;  // a prefill chunk (its blocks were cached when scheduled)
    RequestRecord& record = records_.at(live.spec.id);
    // Draft tokens past num_tokens (speculative decoding): those of the accepted path, at most its depth,
    // keep their K/V and are emitted before the step's own token; the K/V of the rejected ones is dropped.
    const std::int64_t drafts = live.num_computed - live.num_tokens, depth = it->second->draft_depth;
    DUPLEX_ASSERT(drafts == 0 || (live.decoding && drafts == config_.tree_nodes(depth) && depth >= 1),
                  "computed past the request's tokens");
    std::int64_t accepted = 0;
    if (drafts > 0) {
      const auto given = std::find_if(accepted_drafts_of.begin(), accepted_drafts_of.end(),
                                      [&](const AcceptedDrafts& a) { return a.id == live.spec.id; });
      accepted = given == accepted_drafts_of.end() ? accepted_drafts(live, depth) : given->accepted;
      if (accepted < 0 || accepted > depth)
        throw Error(
            fmt::format("Scheduler::update(): request {} accepted {} draft tokens of a draft {} deep; "
                        "expected 0..{}",
                        live.spec.id, accepted, depth, depth));
    }
    record.draft_tokens += drafts;
    record.accepted_tokens += accepted;
    if (drafts > 0) {
      ++record.verify_steps;
      // Its draft passes cached the sequence through its last token, then drafts 1..depth - 1 (a draft head's
      // with its own hidden states, not the target's: none of them kept).
      live.draft_computed = live.num_tokens + (config_.draft_head ? 0 : std::min(accepted, depth - 1));
    }
    live.num_computed = live.num_tokens + accepted;
    // The accepted path's K/V only; copied to the host tier when the request's next step is scheduled.
    kv_of(live).share_computed(live.spec.id, live.prefix_keys, live.num_computed, false);
    live.decoding = true;
    out.emitted.push_back(live.spec.id);
    for (std::int64_t e = 0; e <= accepted; ++e) {
      ++live.generated;
      record.token_times.push_back(result.end);
      if (live.generated == live.spec.output_tokens) {
        DUPLEX_ASSERT(e == accepted, "a request emitted past its output");
        record.finish = result.end;
        kv_of(live).release(live.spec.id);
        --rank_load_[static_cast<std::size_t>(live.rank)];
        auto& pending = pending_keys_[static_cast<std::size_t>(live.rank)];
        for (const std::uint64_t key : live.prefix_keys)
          if (const auto held = pending.find(key); held != pending.end() && --held->second == 0)
            pending.erase(held);
        out.finished.push_back(live.spec.id);
        ++num_finished_;
      } else {
        ++live.num_tokens;
      }
    }
  }
  DUPLEX_ASSERT(matched == in_flight_->requests.size(), "a scheduled request left the running set");
  std::erase_if(running_, [](const Live& live) { return live.generated == live.spec.output_tokens; });
  last_time_ = result.end;
  in_flight_.reset();
  return out;
}

}  // namespace duplex::runtime
