#pragma once
// Continuous-batching scheduler as a pure policy (vLLM v1 shape): schedule(now) returns a StepPlan,
// update(result) takes the step's end time. No prefill/decode special cases: each request has num_tokens
// (prompt + generated so far) and num_computed (tokens whose KV is cached); every step brings num_computed
// towards num_tokens under the token budget. When a request catches up, it emits one token (num_tokens + 1).
// With speculative decoding (SchedulerConfig::speculative_tokens) a decoding request also computes draft
// tokens past num_tokens (a chain, or a tree: SchedulerConfig::tree_tokens); it emits its accepted drafts
// plus one token and keeps their K/V.
//
// Guarantees (checked by tests/runtime): every request added finishes exactly once with exactly its
// output_tokens; KV blocks in use never exceed capacity; schedule()/update() times never go backwards;
// same inputs -> same plans. A preempted request keeps its emitted tokens and recomputes prompt + generated
// tokens as a prefill.
//
// Prefill space (SchedulerConfig::prefill_capacity_tokens > 0; Duplex memory spaces, DUPLEX.md s.6): a
// prefill writes its K/V into the prefill space and the xPU migrates it into the KV spaces at the end of the
// step that completes the prefill. So the requests whose prefill is not complete (prefill phase: new prompts
// and recomputations after a preemption), counting what they prefilled in earlier chunks plus this step's
// chunk, rounded up to whole blocks of kv_block_tokens per request, never hold more than
// prefill_capacity_tokens / kv_block_tokens blocks (data-parallel ranks: each its share, below). With chunked
// prefill a chunk is cut to fit; without, the request waits (its rank's admission stops at it, as for KV).
// Prefills cannot block each other: unfinished prefills are served oldest first and are admitted in age order
// (a preempted request is the youngest running one, so it is readmitted before anything younger), and a
// younger one gets prefill space in a step only when every older one completes its prefill in that step or
// had its chunk cut to the space left (which then fills it); so the oldest unfinished prefill always finds
// its own blocks plus the free ones. add_request() rejects a request whose prompt can never fit the space
// (under continuous batching: prompt + output - 1 tokens, the longest recomputation after a preemption). KV
// blocks are accounted as without the bound: a request holds blocks for its prompt in the KV spaces from
// admission (they are the migration's target).
//
// Prefix caching (SchedulerConfig::prefix_caching): a request admitted with no K/V (new, or after a
// preemption) takes the cached blocks its sequence begins with and starts computing after them (its last
// token is always computed, for its logits); the whole blocks its content hashes name (its prompt's, and its
// answer's when hashed) are cached when the step computing them is scheduled (vLLM v1: a request admitted
// later in that step takes them), and stay cached after it finishes until their memory is needed. Cached
// tokens take no prefill space (their K/V is in the KV spaces already) and migrate nowhere.
//
// Data-parallel ranks (SchedulerConfig::data_parallel_ranks > 1; nodes, or attention-DP devices): a request
// is dealt to one rank, whose memory alone holds its K/V (one KvBlockManager per rank, with its own prefix
// cache, host tier and share of the prefill space): round-robin, rank id mod ranks, when it is added;
// least-loaded, at the first schedule() at or after its arrival, to the rank with the fewest unfinished
// requests dealt to it (then the lowest rank; requests arriving together dealt oldest first, one at a time).
// Each rank runs as its own scheduler would inside one step: it runs at most max_batch / ranks requests and
// computes at most max_tokens_per_step / ranks tokens (SchedulerConfig::rank_max_batch, rank_tokens_per_step;
// a whole prefill longer than that runs alone on its rank), its waiting requests are admitted in order while
// its memory and share last (a rank that cannot admit its oldest waiting request admits nobody, the other
// ranks go on), a request short of KV preempts its own rank's youngest, and a rank that preempted admits
// nobody that step.
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "duplex/base/units.hpp"
#include "duplex/runtime/scheduler/kv_block_manager.hpp"
#include "duplex/runtime/scheduler/request.hpp"
#include "duplex/runtime/scheduler/request_record.hpp"
#include "duplex/runtime/scheduler/scheduler_config.hpp"
#include "duplex/runtime/scheduler/step_plan.hpp"

namespace duplex::runtime {

// What a dealer (Scheduler::set_dealer) knows of one data-parallel rank when a request arrives.
struct RankLoad {
  std::int64_t unfinished = 0;     // requests dealt to it and not finished
  std::int64_t cached_tokens = 0;  // leading tokens of the arriving prompt its prefix cache holds (device)
  std::int64_t offloaded_tokens = 0;  // the tokens after those its host and disk tiers hold
};

// The leading tokens of a prompt a rank holds: in its device prefix cache, and after those in its host and
// disk tiers (in whole blocks, at most the prompt).
struct HeldPrefix {
  std::int64_t device = 0;
  std::int64_t offloaded = 0;
};
// Picks the rank (an index into the loads, one per rank) of an arriving request.
using RankDealer = std::function<int(const RequestSpec&, std::span<const RankLoad>)>;

// What one update() changed, so callers (closed-loop sources, metrics) can react.
struct StepOutcome {
  std::vector<RequestId> emitted;   // requests that emitted a token this step (speculative: one or more)
  std::vector<RequestId> finished;  // requests that emitted their last token this step
};

class Scheduler {
 public:
  // Validates config. `shared_host` / `shared_disk`: a host / disk tier shared with other schedulers
  // (KvBlockManager), instead of one of config.host_kv_blocks / disk_kv_blocks.
  explicit Scheduler(SchedulerConfig config, std::shared_ptr<HostKvTier> shared_host = nullptr,
                     std::shared_ptr<HostKvTier> shared_disk = nullptr);

  // Queues a request. It becomes eligible once schedule(now) has now >= spec.arrival. Throws duplex::Error for
  // a duplicate id, lengths < 1, or a request whose prompt + output can never fit in the KV capacity.
  void add_request(const RequestSpec& spec);

  // Plans the next step at time `now` (>= the previous step's end). An empty plan means nothing can run
  // now (no arrived requests); it needs no update(). A non-empty plan must be followed by update() before the
  // next schedule(); duplex::Error otherwise.
  StepPlan schedule(Time now);
  // `accepted`: speculative decoding's acceptance of the listed verifying requests; those not listed draw
  // theirs from SchedulerConfig::acceptance_rates. duplex::Error for an acceptance past a draft's depth.
  StepOutcome update(const StepResult& result, const std::vector<AcceptedDrafts>& accepted = {});
  // Speculative decoding with a proposer that may find fewer drafts than speculative_tokens (n-gram lookup:
  // ngram_proposer.hpp): request `id`'s steps verify at most `drafts` draft tokens (0: none) until the next
  // call for it. duplex::Error for a request not queued or running, or drafts < 0.
  void limit_drafts(RequestId id, std::int64_t drafts);

  bool has_unfinished() const { return !running_.empty() || !waiting_.empty(); }
  // Earliest arrival among queued requests that have not arrived by `now` (for idle time skipping).
  std::optional<Time> next_arrival_after(Time now) const;
  std::int64_t num_running() const { return static_cast<std::int64_t>(running_.size()); }
  std::int64_t num_waiting() const { return static_cast<std::int64_t>(waiting_.size()); }
  std::int64_t num_finished() const { return num_finished_; }
  // Data-parallel ranks: their count, the rank request `id` was dealt to (duplex::Error for a request not
  // added, or not dealt yet: least-loaded balancing deals it at its arrival), a rank's K/V memory (the one
  // memory with a single rank), and the blocks used / held over all ranks.
  int ranks() const { return static_cast<int>(kv_.size()); }
  int rank_of(RequestId id) const;
  const KvBlockManager& kv(int rank = 0) const { return kv_.at(static_cast<std::size_t>(rank)); }
  // The rank a request `spec` arriving now would be dealt to (its id's under round-robin, the least-loaded
  // rank now otherwise), and the leading tokens of its prompt that rank's prefix cache holds in device memory
  // now, in whole blocks, or with count_routed_prefixes those the rank's unfinished requests' blocks cover
  // too, and the tokens after those its host and disk tiers hold: what a request router in front of this
  // scheduler sees. 0 without prefix caching or hashes.
  int rank_for_arrival(const RequestSpec& spec) const;
  HeldPrefix cached_prefix_tokens(const RequestSpec& spec) const;
  // data_parallel_balance cache-aware: the policy over the ranks' loads (the engine's: the cluster router's
  // cache-aware policy); rank_for_arrival throws duplex::Error without one.
  void set_dealer(RankDealer dealer) { dealer_ = std::move(dealer); }
  std::int64_t kv_used_blocks() const;
  std::int64_t kv_capacity_blocks() const;
  // The blocks its waiting requests (arrived or not) take when admitted: those of their tokens so far (a
  // migrated request's prompt and first token; a preempted one's prompt and outputs).
  std::int64_t waiting_kv_blocks() const;
  // The most blocks `rank` held after any schedule() so far (cached prefix blocks included).
  std::int64_t kv_peak_blocks(int rank) const { return kv_peak_blocks_.at(static_cast<std::size_t>(rank)); }
  // The most requests `rank` ran at once after any schedule() so far (at most
  // SchedulerConfig::rank_max_batch).
  std::int64_t batch_peak(int rank) const { return batch_peak_.at(static_cast<std::size_t>(rank)); }
  const SchedulerConfig& config() const { return config_; }
  // Records of every request added, by id.
  const std::map<RequestId, RequestRecord>& records() const { return records_; }

 private:
  struct Live {
    RequestSpec spec;
    std::int64_t num_tokens = 0;    // prompt + generated so far
    std::int64_t num_computed = 0;  // tokens with KV in cache
    std::int64_t generated = 0;     // output tokens emitted
    bool decoding = false;          // emitted a token since its last (re)start, so its next token is a decode
    std::int64_t prefill_start = 0;  // tokens it had (from the prefix cache) when its prefill (re)started
    std::vector<std::uint64_t> prefix_keys;  // its sequence's cacheable blocks (prefix_block_keys), or none
    std::int64_t draft_computed = 0;  // speculative decoding: tokens of its sequence in the draft's cache
    std::int64_t draft_limit = std::numeric_limits<std::int64_t>::max();  // limit_drafts()
    int rank = -1;  // the data-parallel rank it was dealt to (deal()); -1 before
  };
  // Priority: earlier arrival first, then smaller id. Preemption takes the youngest (last) running request.
  static bool older(const Live& a, const Live& b);
  void insert_sorted(std::deque<Live>& queue, Live live);
  // The leading tokens of `spec`'s prompt `rank`'s prefix cache holds in device memory, and its host and disk
  // tiers after those, in whole blocks (0 without prefix caching or hashes); cache-aware dealing and a
  // cache-aware router in front count the blocks of the rank's unfinished requests as on the device.
  HeldPrefix cached_tokens_on(const RequestSpec& spec, int rank) const;
  bool counts_routed_prefixes() const {
    return config_.data_parallel_balance == DataParallelBalance::cache_aware || config_.count_routed_prefixes;
  }
  // Deals `live` to `rank`: its K/V memory, and its prefix keys salted by it.
  void deal(Live& live, int rank);
  // Deals the requests arrived by `now` and not dealt yet to the least-loaded ranks, oldest first.
  void deal_arrived(Time now);
  // What each rank has left of its share of one step: tokens, request slots, and whether it scheduled any
  // request yet (a whole prefill longer than its budget runs only alone on its rank).
  struct RankStep {
    std::int64_t budget = 0;
    std::int64_t slots = 0;
    bool scheduled = false;
  };
  // Sets preempted[r] when rank r preempted.
  void schedule_running(StepPlan& plan, std::vector<RankStep>& shares, std::vector<char>& preempted);
  // `preempted[r]`: rank r preempted this step (it admits nobody).
  void admit_waiting(StepPlan& plan, std::vector<RankStep>& shares, Time now,
                     const std::vector<char>& preempted);
  // Preempts running_[index] back to the waiting queue.
  void preempt(StepPlan& plan, std::size_t index);
  // The index in running_ of `rank`'s youngest running request (it has one).
  std::size_t youngest_of(int rank) const;
  // Admits waiting_[index] if it fits (taking its cached prefix blocks): the tokens it computes this step, or
  // 0 when it must wait.
  std::int64_t admit(StepPlan& plan, const RankStep& share, std::size_t index);
  KvBlockManager& kv_of(const Live& live) { return kv_[static_cast<std::size_t>(live.rank)]; }
  // Tokens `live` may compute now under `budget` and the prefill space; 0 when it must wait (no chunking and
  // it does not fit).
  std::int64_t tokens_to_schedule(const Live& live, std::int64_t budget, bool plan_empty) const;
  // Prefill tokens `live` may add this step in the prefill space (unbounded: max; decoding: max).
  std::int64_t prefill_room(const Live& live) const;
  std::int64_t prefill_blocks_of(const Live& live) const;  // blocks it holds in the prefill space now
  // KV tokens `live` must hold before computing `tokens` more (orca/static reserve prompt + output up front).
  std::int64_t kv_tokens_needed(const Live& live, std::int64_t tokens) const;
  // The most KV tokens `spec` ever holds: prompt + output - 1 (the last output is never fed back), plus a
  // draft tree's nodes off its accepted path while they are verified.
  std::int64_t peak_kv_tokens(const RequestSpec& spec) const;
  void add_to_plan(StepPlan& plan, const Live& live, std::int64_t tokens);
  void finalize(StepPlan& plan) const;
  // Draft tokens that `live`'s verification of a draft of depth `depth` accepts (speculative decoding; at
  // most `depth`), from its own stream.
  std::int64_t accepted_drafts(const Live& live, std::int64_t depth) const;
  // The depth of the draft `live` verifies in a step with `budget` tokens left (speculative decoding).
  std::int64_t draft_depth(const Live& live, std::int64_t budget) const;

  SchedulerConfig config_;
  std::vector<KvBlockManager> kv_;  // one per data-parallel rank
  std::vector<std::int64_t> kv_peak_blocks_;  // per rank
  std::vector<std::int64_t> rank_load_;       // per rank: unfinished requests dealt to it
  std::vector<std::int64_t> batch_peak_;      // per rank
  RankDealer dealer_;
  // Cache-aware dealing: per rank, the prefix keys of its unfinished requests (how many hold each).
  std::vector<std::unordered_map<std::uint64_t, std::int64_t>> pending_keys_;
  std::deque<Live> running_;  // sorted by older()
  std::deque<Live> waiting_;  // sorted by older(); holds not-yet-arrived requests too
  std::map<RequestId, RequestRecord> records_;
  std::int64_t num_finished_ = 0;
  std::int64_t prefill_capacity_blocks_ = 0;       // per rank; 0 = no prefill space bound
  std::vector<std::int64_t> prefill_blocks_used_;  // per rank, during schedule(): held + this step's chunks
  std::int64_t next_step_ = 0;
  std::optional<StepPlan> in_flight_;
  Time last_time_;
};

}  // namespace duplex::runtime
