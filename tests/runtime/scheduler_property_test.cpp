// Properties under random workloads (the acceptance criteria): every request completes exactly once
// with exactly its output tokens; KV never exceeds capacity (checked every step); simulated time is monotone;
// same seed -> identical plans. KV capacity is made tiny so preemption happens, and the tests assert it did.
// The same hold with speculative decoding (draft tokens verified, some rejected) and with prefix caching
// (shared system prompts whose cached blocks are taken instead of computed, and evicted under pressure;
// multi-turn conversations whose turns find the previous turn's prompt and answer cached).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "duplex/runtime/scheduler/serving_loop.hpp"
#include "duplex/runtime/workload/conversation_source.hpp"
#include "duplex/runtime/workload/request_source.hpp"

namespace duplex::runtime {
namespace {

struct Case {
  std::string name;
  BatchingPolicy policy;
  bool chunked;
  std::int64_t budget;
  std::int64_t kv_blocks;
  bool poisson;
  int speculative = 0;  // draft tokens per step (a tree's depth)
  double acceptance = 0;
  int tree_tokens = 0;  // a draft tree's nodes (0: a chain)
  int draft_topk = 1;
  std::int64_t prefix_tokens = 0;  // > 0: shared system prompts of this many tokens, in 3 groups
  int turns = 1;                   // > 1: closed-loop conversations of this many turns (not with poisson)
  int ranks = 1;                   // data-parallel ranks, each kv_blocks / ranks of the memory
  bool least_loaded = false;       // ranks: dealt to the least-loaded at arrival (else round-robin by id)
  bool cache_aware = false;        // ranks: dealt by a dealer to the longest cached prefix, else least loaded
  KvWindow window{};               // a sliding window or chunked attention over some layers
  std::int64_t host_blocks = 0;    // a host tier behind the prefix cache, each rank's
};

// A step costs 0.5 ms plus 2 us per token: enough to make arrivals interleave with steps.
Time step_time(const StepPlan& plan) { return ms(0.5) + us(2.0) * static_cast<double>(plan.total_tokens); }

struct Observed {
  std::vector<StepPlan> plans;
  std::map<RequestId, std::int64_t> tokens_computed;
  std::map<RequestId, int> finished_events;
  std::int64_t preemptions = 0;
  std::int64_t max_running = 0;
};

ServingRun run_case(const Case& c, std::uint64_t seed, Observed& seen) {
  SchedulerConfig config;
  config.policy = c.policy;
  config.chunked_prefill = c.chunked;
  config.max_tokens_per_step = c.budget;
  config.max_batch = 16;
  config.kv_block_tokens = 8;
  config.kv_capacity_blocks = c.kv_blocks;
  config.speculative_tokens = c.speculative;
  config.acceptance_rates = {c.acceptance};
  config.acceptance_seed = seed;
  config.tree_tokens = c.tree_tokens;
  config.draft_topk = c.draft_topk;
  config.data_parallel_ranks = c.ranks;
  config.kv_window = c.window;
  config.host_kv_blocks = c.host_blocks;
  config.data_parallel_balance = c.cache_aware    ? DataParallelBalance::cache_aware
                                 : c.least_loaded ? DataParallelBalance::least_loaded
                                                  : DataParallelBalance::round_robin;
  Scheduler scheduler(config);
  scheduler.set_dealer([](const RequestSpec&, std::span<const RankLoad> loads) {
    const auto best = std::min_element(loads.begin(), loads.end(), [](const RankLoad& a, const RankLoad& b) {
      return a.cached_tokens != b.cached_tokens ? a.cached_tokens > b.cached_tokens
                                                : a.unfinished < b.unfinished;
    });
    return static_cast<int>(best - loads.begin());
  });
  const LengthDistribution lengths{LengthDistribution::Kind::gaussian, 60, 40, 20.0, 15.0};
  std::unique_ptr<RequestSource> source;
  if (c.poisson) {
    source = std::make_unique<PoissonSource>(400.0, 150, lengths, seed);
  } else {
    source = std::make_unique<ClosedLoopSource>(12, 150, lengths, seed);
  }
  if (c.turns > 1)
    source = std::make_unique<ConversationSource>(
        12, 150, lengths, Conversations{c.turns, 0.001, SharedPrefix{c.prefix_tokens, 3}}, seed);
  if (c.prefix_tokens > 0 && c.turns == 1)
    source = std::make_unique<SharedPrefixSource>(std::move(source), SharedPrefix{c.prefix_tokens, 3}, seed);
  Time last_end;
  std::set<RequestId> active_before;
  auto observer = [&](const StepPlan& plan, const StepOutcome& outcome, const Scheduler& s) {
    // KV within capacity, and the plan's report matches the manager.
    EXPECT_LE(plan.kv_blocks_used, plan.kv_blocks_capacity);
    for (int rank = 0; rank < c.ranks; ++rank) {
      EXPECT_LE(s.kv(rank).used_blocks(), s.kv(rank).capacity_blocks());
    }
    // Time monotone.
    EXPECT_GE(plan.start, last_end);
    last_end = plan.start;
    // Batch and budget.
    EXPECT_LE(static_cast<std::int64_t>(plan.requests.size()), config.max_batch);
    if (c.budget > 0 && plan.requests.size() > 1) {
      EXPECT_LE(plan.total_tokens, c.budget);
    }
    if (c.chunked) {
      EXPECT_LE(plan.total_tokens, c.budget);
    }
    // Each rank within its share of the batch and of the budget (a lone whole prefill may exceed the latter).
    std::map<int, std::int64_t> rank_requests, rank_tokens;
    for (const ScheduledRequest& r : plan.requests) {
      EXPECT_EQ(r.rank, s.rank_of(r.id)) << "request " << r.id;
      ++rank_requests[r.rank];
      rank_tokens[r.rank] += r.tokens;
    }
    for (const auto& [rank, n] : rank_requests) {
      EXPECT_LE(n, config.rank_max_batch()) << "rank " << rank;
      if (c.budget > 0 && (n > 1 || c.chunked)) {
        EXPECT_LE(rank_tokens[rank], config.rank_tokens_per_step()) << "rank " << rank;
      }
    }
    std::set<RequestId> ids;
    for (const ScheduledRequest& r : plan.requests) {
      EXPECT_TRUE(ids.insert(r.id).second) << "request scheduled twice in one step";
      EXPECT_GE(r.tokens, 1);
      if (r.phase == TokenPhase::decode) {
        EXPECT_LE(r.tokens, 1 + std::max(c.speculative, c.tree_tokens));  // its last token and its drafts
        EXPECT_LE(r.draft_depth, c.speculative);
        if (c.speculative == 0) {
          EXPECT_EQ(r.tokens, 1);
        }
      }
      seen.tokens_computed[r.id] += r.tokens;
      // Its K/V on its own rank only (none once it finished: the observer sees the step's update).
      const bool finished =
          std::find(outcome.finished.begin(), outcome.finished.end(), r.id) != outcome.finished.end();
      for (int rank = 0; rank < c.ranks; ++rank) {
        EXPECT_EQ(s.kv(rank).units_of(r.id) > 0, rank == s.rank_of(r.id) && !finished) << "request " << r.id;
      }
      // Static batching: a request new to the running set joins only when nothing else was running.
      if (c.policy == BatchingPolicy::static_batch && !active_before.contains(r.id)) {
        EXPECT_TRUE(active_before.empty()) << "static batch admitted request " << r.id << " mid-batch";
      }
    }
    for (const RequestId id : plan.preempted) active_before.erase(id);
    for (const ScheduledRequest& r : plan.requests) active_before.insert(r.id);
    for (const RequestId id : outcome.finished) {
      ++seen.finished_events[id];
      active_before.erase(id);
    }
    seen.preemptions += static_cast<std::int64_t>(plan.preempted.size());
    seen.max_running = std::max(seen.max_running, s.num_running() + static_cast<std::int64_t>(outcome.finished.size()));
    seen.plans.push_back(plan);
  };
  ServingRun run = run_serving_loop(scheduler, *source, step_time, observer);
  EXPECT_TRUE(source->exhausted());
  EXPECT_FALSE(scheduler.has_unfinished());
  // Only cached prefix blocks stay, held by no one.
  for (int rank = 0; rank < c.ranks; ++rank) {
    const KvBlockManager& kv = scheduler.kv(rank);
    EXPECT_EQ(kv.used_units(), kv.prefix_cache().cached_units());
    EXPECT_EQ(kv.prefix_cache().evictable_units(), kv.prefix_cache().cached_units());
    if (c.prefix_tokens == 0 && c.turns == 1) {
      EXPECT_EQ(kv.used_blocks(), 0);
    }
  }
  return run;
}

class SchedulerProperties : public ::testing::TestWithParam<Case> {};

TEST_P(SchedulerProperties, ExactlyOnceExactTokensKvBoundedTimeMonotone) {
  const Case& c = GetParam();
  for (const std::uint64_t seed : {1u, 2u, 3u}) {
    Observed seen;
    const ServingRun run = run_case(c, seed, seen);
    ASSERT_EQ(run.records.size(), 150u);
    std::int64_t hit_tokens = 0, host_tokens = 0;
    for (const auto& [id, r] : run.records) {
      ASSERT_TRUE(r.finished()) << "request " << id;
      EXPECT_EQ(seen.finished_events[id], 1) << "request " << id << " finished more than once";
      EXPECT_EQ(static_cast<std::int64_t>(r.token_times.size()), r.spec.output_tokens) << "request " << id;
      EXPECT_EQ(*r.finish, r.token_times.back());
      EXPECT_GE(r.token_times.front(), r.spec.arrival);
      for (std::size_t i = 1; i < r.token_times.size(); ++i) {
        if (c.speculative > 0) {
          EXPECT_GE(r.token_times[i], r.token_times[i - 1]);  // accepted drafts come out with their step
        } else {
          EXPECT_GT(r.token_times[i], r.token_times[i - 1]);
        }
      }
      // Every token computed is accounted for: the prompt, all outputs but the last (never fed back), what
      // preemptions threw away, and the rejected drafts, less what the prefix cache provided.
      EXPECT_EQ(seen.tokens_computed[id], r.spec.input_tokens + r.spec.output_tokens - 1 +
                                              r.recomputed_tokens + r.draft_tokens - r.accepted_tokens -
                                              r.prefix_hit_tokens)
          << "request " << id;
      hit_tokens += r.prefix_hit_tokens;
      host_tokens += r.host_hit_tokens;
      EXPECT_LE(r.host_hit_tokens, r.prefix_hit_tokens);
      if (c.prefix_tokens == 0 && c.turns == 1) {
        EXPECT_EQ(r.prefix_hit_tokens, 0);
      }
      EXPECT_LE(r.accepted_tokens, r.draft_tokens);
      if (c.speculative == 0) {
        EXPECT_EQ(r.draft_tokens, 0);
      }
    }
    EXPECT_LE(seen.max_running, 16);
    if (c.prefix_tokens > 0 || c.turns > 1) {
      EXPECT_GT(hit_tokens, 0) << "the shared prompts were meant to hit the cache";
    }
    EXPECT_EQ(host_tokens > 0, c.host_blocks > 0) << "evicted blocks were meant to come back from the host";
    if (c.policy == BatchingPolicy::continuous) {
      EXPECT_GT(seen.preemptions, 0) << "the tiny KV cache was meant to force preemptions";
    } else {
      EXPECT_EQ(seen.preemptions, 0) << "reserved-KV policies never preempt";
    }
  }
}

TEST_P(SchedulerProperties, SameSeedSamePlans) {
  const Case& c = GetParam();
  Observed a, b, other;
  const ServingRun ra = run_case(c, 9, a);
  const ServingRun rb = run_case(c, 9, b);
  run_case(c, 10, other);
  EXPECT_TRUE(a.plans == b.plans);
  EXPECT_EQ(ra.end, rb.end);
  for (const auto& [id, r] : ra.records) EXPECT_EQ(r.token_times, rb.records.at(id).token_times);
  EXPECT_FALSE(a.plans == other.plans);
}

INSTANTIATE_TEST_SUITE_P(
    Policies, SchedulerProperties,
    ::testing::Values(
        Case{"continuous_closed", BatchingPolicy::continuous, false, 0, 40, false},
        Case{"continuous_poisson", BatchingPolicy::continuous, false, 0, 40, true},
        Case{"continuous_budget", BatchingPolicy::continuous, false, 128, 40, true},
        Case{"chunked_closed", BatchingPolicy::continuous, true, 96, 40, false},
        Case{"chunked_poisson", BatchingPolicy::continuous, true, 64, 40, true},
        Case{"orca_closed", BatchingPolicy::orca, false, 0, 60, false},
        Case{"orca_poisson", BatchingPolicy::orca, false, 256, 60, true},
        Case{"static_closed", BatchingPolicy::static_batch, false, 0, 60, false},
        Case{"speculative_closed", BatchingPolicy::continuous, false, 0, 40, false, 3, 0.7},
        Case{"speculative_chunked", BatchingPolicy::continuous, true, 64, 40, true, 4, 0.5},
        Case{"speculative_orca", BatchingPolicy::orca, false, 0, 60, false, 2, 0.9},
        Case{"tree_closed", BatchingPolicy::continuous, false, 0, 40, false, 3, 0.7, 10, 2},
        Case{"tree_chunked", BatchingPolicy::continuous, true, 64, 40, true, 4, 0.6, 16, 3},
        Case{"tree_orca", BatchingPolicy::orca, false, 0, 60, false, 3, 0.8, 8, 2},
        Case{"prefix_closed", BatchingPolicy::continuous, false, 0, 40, false, 0, 0, 0, 1, 40},
        Case{"prefix_chunked", BatchingPolicy::continuous, true, 64, 40, true, 0, 0, 0, 1, 40},
        Case{"prefix_speculative", BatchingPolicy::continuous, false, 0, 40, true, 3, 0.7, 0, 1, 40},
        Case{"prefix_orca", BatchingPolicy::orca, false, 0, 80, false, 0, 0, 0, 1, 40},
        // Turn 3 peaks near 300 tokens (38 blocks of 8): 80 blocks hold any one conversation.
        Case{"conversation", BatchingPolicy::continuous, false, 0, 80, false, 0, 0, 0, 1, 0, 3},
        Case{"conversation_chunked", BatchingPolicy::continuous, true, 64, 80, false, 0, 0, 0, 1, 24, 3},
        Case{"conversation_speculative", BatchingPolicy::continuous, false, 0, 80, false, 3, 0.7, 0, 1, 0, 3},
        // Orca reserves whole peaks: at 120 blocks the other users' admissions evict a finished
        // turn's blocks before its next turn comes, so a cache that holds the users' histories.
        Case{"conversation_orca", BatchingPolicy::orca, false, 0, 400, false, 0, 0, 0, 1, 0, 3},
        // Three data-parallel ranks of 40 blocks each.
        Case{"ranks_closed", BatchingPolicy::continuous, false, 0, 120, false, 0, 0, 0, 1, 0, 1, 3},
        Case{"ranks_chunked_prefix", BatchingPolicy::continuous, true, 64, 120, true, 0, 0, 0, 1, 40, 1, 3},
        Case{"ranks_speculative", BatchingPolicy::continuous, false, 0, 120, false, 3, 0.7, 0, 1, 0, 1, 3},
        Case{"ranks_orca", BatchingPolicy::orca, false, 0, 180, false, 0, 0, 0, 1, 0, 1, 3},
        // The same ranks, requests dealt to the least-loaded at arrival.
        Case{"ranks_least_loaded", BatchingPolicy::continuous, false, 0, 120, false, 0, 0, 0, 1, 0, 1, 3,
             true},
        Case{"ranks_least_loaded_chunked_prefix", BatchingPolicy::continuous, true, 64, 120, true, 0, 0, 0, 1,
             40, 1, 3, true},
        Case{"ranks_least_loaded_speculative", BatchingPolicy::continuous, false, 0, 120, false, 3, 0.7, 0, 1,
             0, 1, 3, true},
        // Dealt to the rank caching the longest prefix (shared prompts, conversations), else the least
        // loaded.
        Case{"ranks_cache_aware_prefix", BatchingPolicy::continuous, true, 64, 120, true, 0, 0, 0, 1, 40, 1,
             3, false, true},
        Case{"ranks_cache_aware_conversation", BatchingPolicy::continuous, false, 0, 240, false, 0, 0, 0, 1,
             0, 3, 3, false, true},
        // Prefix caching with a 24-token sliding window over every layer, over 1 of 4 layers, and with
        // 32-token chunked attention over 1 of 2 layers: the windowed layers' blocks behind a request's
        // window go back to the cache, and a hit needs only those its window reaches.
        Case{"window_prefix", BatchingPolicy::continuous, false, 0, 40, false, 0, 0, 0, 1, 40, 1, 1, false,
             false, KvWindow{24, 0, 1}},
        Case{"window_prefix_speculative", BatchingPolicy::continuous, false, 0, 40, true, 3, 0.7, 0, 1, 40, 1,
             1, false, false, KvWindow{24, 0, 1}},
        Case{"window_hybrid_conversation", BatchingPolicy::continuous, false, 0, 60, false, 0, 0, 0, 1, 0, 3,
             1, false, false, KvWindow{24, 1, 3}},
        Case{"window_hybrid_orca_prefix", BatchingPolicy::orca, false, 0, 60, false, 0, 0, 0, 1, 40, 1, 1,
             false, false, KvWindow{24, 1, 3}},
        Case{"chunked_attention_prefix", BatchingPolicy::continuous, true, 64, 30, true, 0, 0, 0, 1, 40, 1, 1,
             false, false, KvWindow{32, 1, 1, true}},
        Case{"chunked_attention_ranks_conversation", BatchingPolicy::continuous, false, 0, 160, false, 0, 0,
             0, 1, 0, 3, 2, true, false, KvWindow{32, 1, 1, true}},
        // With a host tier of 64 blocks behind each rank's cache: evicted prompts and histories come back
        // from host memory.
        Case{"window_hybrid_host_conversation", BatchingPolicy::continuous, false, 0, 60, false, 0, 0, 0, 1,
             0, 3, 1, false, false, KvWindow{24, 1, 3}, 64},
        Case{"window_prefix_host_chunked", BatchingPolicy::continuous, true, 64, 40, true, 0, 0, 0, 1, 40, 1,
             1, false, false, KvWindow{24, 0, 1}, 64}),
    [](const ::testing::TestParamInfo<Case>& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace duplex::runtime
