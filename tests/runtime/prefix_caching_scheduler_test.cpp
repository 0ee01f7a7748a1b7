// Prefix caching in the scheduler (SchedulerConfig::prefix_caching): hand-worked plans for hits, misses,
// requests sharing a step, eviction, preemption and the prefill space; the random-workload properties are in
// scheduler_property_test.cpp (its prefix_* cases).
#include <gtest/gtest.h>

#include <algorithm>

#include "duplex/base/error.hpp"
#include "duplex/runtime/scheduler/scheduler.hpp"

namespace duplex::runtime {
namespace {

SchedulerConfig config(std::int64_t kv_blocks, bool prefix_caching = true) {
  SchedulerConfig c;
  c.kv_block_tokens = 4;
  c.kv_capacity_blocks = kv_blocks;
  c.prefix_caching = prefix_caching;
  return c;
}

// A request whose prompt begins with `shared` tokens of system prompt `group` (0: none).
RequestSpec request(RequestId id, Time arrival, std::int64_t in, std::int64_t out, std::uint64_t group = 0,
                    std::int64_t shared = 0) {
  RequestSpec r{id, arrival, in, out};
  if (group != 0) {
    r.content_hashes = {group};
    r.hash_block_tokens = r.hashed_tokens = shared;
  }
  return r;
}

// Runs one step at `now` ending 1 ms later; returns its plan.
StepPlan step(Scheduler& s, Time now) {
  const StepPlan p = s.schedule(now);
  if (!p.empty()) s.update({p.step, now + ms(1)});
  return p;
}

TEST(PrefixCaching, ALaterRequestSkipsTheCachedBlocks) {
  Scheduler s(config(32));
  s.add_request(request(0, Time{}, 20, 2, 7, 16));
  s.add_request(request(1, ms(1), 22, 2, 7, 16));
  StepPlan p = step(s, Time{});
  ASSERT_EQ(p.requests.size(), 1u);
  EXPECT_EQ(p.requests[0].tokens, 20);
  EXPECT_EQ(s.kv().prefix_cache().cached_blocks(), 4);  // A's 16 shared tokens, cached once computed
  p = step(s, ms(1));
  ASSERT_EQ(p.requests.size(), 2u);
  const ScheduledRequest& b = p.requests[1];
  EXPECT_EQ(b.id, 1);
  EXPECT_EQ(b.tokens, 6);  // 22 - 16 cached
  EXPECT_EQ(b.context_len, 16);
  EXPECT_EQ(b.cached_context, 16);
  EXPECT_EQ(b.phase, TokenPhase::prefill);
  EXPECT_EQ(s.records().at(1).prefix_hit_tokens, 16);
  EXPECT_EQ(s.records().at(0).prefix_hit_tokens, 0);
  // A: 6 blocks for 21 tokens; B: 4 shared + 2 own for 22. The shared 4 count once.
  EXPECT_EQ(p.kv_blocks_used, 6 + 2);
}

TEST(PrefixCaching, AWhollyCachedPromptStillComputesItsLastToken) {
  Scheduler s(config(32));
  s.add_request(request(0, Time{}, 16, 1, 7, 16));
  s.add_request(request(1, ms(1), 16, 3, 7, 16));
  step(s, Time{});
  const StepPlan p = step(s, ms(1));
  ASSERT_EQ(p.requests.size(), 1u);
  EXPECT_EQ(p.requests[0].tokens, 1);
  EXPECT_EQ(p.requests[0].context_len, 15);
  EXPECT_TRUE(p.requests[0].samples_token);
  EXPECT_EQ(s.records().at(1).prefix_hit_tokens, 15);
}

TEST(PrefixCaching, NoHitAcrossGroupsOrWhenOff) {
  for (const bool on : {true, false}) {
    Scheduler s(config(64, on));
    s.add_request(request(0, Time{}, 20, 1, 7, 16));
    s.add_request(request(2, ms(1), 20, 1, 8, 16));  // another system prompt
    s.add_request(request(3, ms(1), 20, 1));         // no hashes
    s.add_request(request(4, ms(2), 20, 1, 7, 16));  // group 7 again, after it was cached
    for (const Time t : {Time{}, ms(1), ms(2)}) step(s, t);
    for (RequestId id : {0, 2, 3}) EXPECT_EQ(s.records().at(id).prefix_hit_tokens, 0) << id << on;
    EXPECT_EQ(s.records().at(4).prefix_hit_tokens, on ? 16 : 0);
    EXPECT_EQ(s.kv().prefix_cache().cached_blocks(), on ? 8 : 0);  // groups 7 and 8, once each
  }
}

// As vLLM v1: a block is cached when the step computing it is scheduled, so a request admitted later in
// that step takes it (its attention reads the K/V the step writes).
TEST(PrefixCaching, ARequestAdmittedLaterInAStepTakesTheBlocksThatStepComputes) {
  Scheduler s(config(64));
  s.add_request(request(0, Time{}, 20, 1, 7, 16));
  s.add_request(request(1, Time{}, 20, 1, 7, 16));
  StepPlan p = step(s, Time{});
  ASSERT_EQ(p.requests.size(), 2u);
  EXPECT_EQ(p.requests[0].tokens, 20);
  EXPECT_EQ(p.requests[1].tokens, 4);
  EXPECT_EQ(p.requests[1].cached_context, 16);
  EXPECT_EQ(s.records().at(1).prefix_hit_tokens, 16);
  EXPECT_EQ(p.kv_blocks_used, 5 + 1);  // the 4 shared blocks count once

  // Chunked prefill, 14 tokens per step: A computes tokens 0..13 (3 whole blocks), then 14..19 beside B,
  // which arrives for the second step and takes all 4 blocks of the system prompt, the 4th computed in that
  // step.
  SchedulerConfig chunked = config(64);
  chunked.chunked_prefill = true;
  chunked.max_tokens_per_step = 14;
  Scheduler c(chunked);
  c.add_request(request(0, Time{}, 20, 1, 7, 16));
  c.add_request(request(1, ms(1), 20, 1, 7, 16));
  p = step(c, Time{});
  ASSERT_EQ(p.requests.size(), 1u);
  EXPECT_EQ(p.requests[0].tokens, 14);
  EXPECT_EQ(c.kv().prefix_cache().cached_blocks(), 3);
  p = step(c, ms(1));
  ASSERT_EQ(p.requests.size(), 2u);
  EXPECT_EQ(p.requests[0].tokens, 6);
  EXPECT_EQ(p.requests[1].tokens, 4);
  EXPECT_EQ(c.records().at(1).prefix_hit_tokens, 16);
}

TEST(PrefixCaching, CachedBlocksOutliveTheirRequestUntilMemoryIsShort) {
  Scheduler s(config(10));
  s.add_request(request(0, Time{}, 16, 1, 7, 16));
  step(s, Time{});
  EXPECT_EQ(s.num_finished(), 1);
  EXPECT_EQ(s.kv().used_blocks(), 4);  // unheld, still cached
  EXPECT_EQ(s.kv().prefix_cache().evictable_blocks(), 4);
  // A request of 36 tokens (9 blocks) evicts 3 of them; the first block survives (the tail goes first).
  s.add_request(request(1, ms(1), 36, 1));
  const StepPlan p = step(s, ms(1));
  ASSERT_EQ(p.requests.size(), 1u);
  EXPECT_EQ(p.kv_blocks_used, 10);
  EXPECT_EQ(s.kv().prefix_cache().cached_blocks(), 1);
  s.add_request(request(2, ms(2), 20, 1, 7, 16));
  step(s, ms(2));
  EXPECT_EQ(s.records().at(2).prefix_hit_tokens, 4);
}

TEST(PrefixCaching, APreemptedRequestTakesItsPrefixBackOnReadmission) {
  // 8 blocks: A (prompt 16 shared + 4) and B (prompt 16 shared + 4, admitted after A's blocks are cached)
  // decode until the cache is short; B, the youngest, is preempted, and on readmission takes the cached
  // prefix again (A still holds it) and recomputes only the rest.
  Scheduler s(config(8));
  s.add_request(request(0, Time{}, 20, 12, 7, 16));
  s.add_request(request(1, ms(1), 20, 12, 7, 16));
  Time t{};
  bool preempted = false;
  for (int i = 0; i < 200 && s.has_unfinished(); ++i, t = t + ms(1)) {
    const StepPlan p = step(s, t);
    for (const RequestId id : p.preempted) preempted |= id == 1;
  }
  ASSERT_TRUE(preempted);
  EXPECT_FALSE(s.has_unfinished());
  const RequestRecord& b = s.records().at(1);
  EXPECT_GE(b.preemptions, 1);
  EXPECT_EQ(b.prefix_hit_tokens, 16 * (1 + b.preemptions));
}

TEST(PrefixCaching, CachedTokensTakeNoPrefillSpace) {
  // Prefill space of 6 blocks (24 tokens). A caches a 16-token system prompt; then B (same prompt, 20 tokens)
  // and C (20 tokens, unshared) arrive together. B's 4 new tokens take 1 block, C's 20 take 5: both fit.
  // Without prefix caching B takes 5 and C waits.
  for (const bool on : {true, false}) {
    SchedulerConfig c = config(32, on);
    c.prefill_capacity_tokens = 24;
    Scheduler s(c);
    s.add_request(request(0, Time{}, 20, 1, 7, 16));
    s.add_request(request(1, ms(1), 20, 1, 7, 16));
    s.add_request(request(2, ms(1), 20, 1));
    step(s, Time{});
    const StepPlan p = step(s, ms(1));
    EXPECT_EQ(p.requests.size(), on ? 2u : 1u) << on;
  }
}

TEST(PrefixCaching, AnAnswersBlocksAreCachedForTheNextTurn) {
  // Turn 1: 20 prompt + 12 answer tokens, hashed over all 32 (blocks of 4). Its K/V covers 31 tokens (the
  // last answer token is never fed back): 7 whole blocks are cached, answer blocks included. Turn 2 (its
  // prompt is turn 1's 32 tokens + 4) takes those 7 and computes 8 tokens.
  const auto turn = [](RequestId id, Time arrival, std::int64_t in, std::int64_t out) {
    RequestSpec r{id, arrival, in, out};
    for (std::int64_t i = 0; i * 4 < in + out; ++i)
      r.content_hashes.push_back(100 + static_cast<std::uint64_t>(i));
    r.hash_block_tokens = 4;
    r.hashed_tokens = in + out;
    return r;
  };
  Scheduler s(config(32));
  s.add_request(turn(0, Time{}, 20, 12));
  Time t{};
  while (s.has_unfinished()) {
    step(s, t);
    t = t + ms(1);
  }
  EXPECT_EQ(s.kv().prefix_cache().cached_blocks(), 7);
  s.add_request(turn(1, t, 36, 4));
  const StepPlan p = step(s, t);
  ASSERT_EQ(p.requests.size(), 1u);
  EXPECT_EQ(p.requests[0].context_len, 28);
  EXPECT_EQ(p.requests[0].tokens, 8);
  EXPECT_EQ(s.records().at(1).prefix_hit_tokens, 28);
  // Hashes that say more than the request's tokens are refused.
  RequestSpec bad = turn(2, t, 8, 4);
  bad.hashed_tokens = 13;
  EXPECT_THROW(s.add_request(bad), Error);
  bad.hashed_tokens = 7;  // the 3 hashes stand for 9 to 12 tokens
  EXPECT_THROW(s.add_request(bad), Error);
}

// What a router in front sees: the cached prompt tokens as of the last step, or with count_routed_prefixes
// also the blocks of the requests added and not finished, computed or not.
TEST(PrefixCaching, ARouterCanSeeThePromptsItRouted) {
  for (const bool routed : {false, true}) {
    SchedulerConfig c = config(32);
    c.count_routed_prefixes = routed;
    Scheduler s(c);
    s.add_request(request(0, Time{}, 20, 2, 7, 16));
    const RequestSpec next = request(1, Time{}, 24, 2, 7, 16);
    EXPECT_EQ(s.cached_prefix_tokens(next).device, routed ? 16 : 0);
    step(s, Time{});  // computes and caches request 0's 4 shared blocks
    EXPECT_EQ(s.cached_prefix_tokens(next).device, 16);
    EXPECT_EQ(s.cached_prefix_tokens(next).offloaded, 0);                           // no host tier
    EXPECT_EQ(s.cached_prefix_tokens(request(2, Time{}, 24, 2, 8, 16)).device, 0);  // another system prompt
  }
}

// With a host tier, a router also sees the tokens its copies hold after the device's blocks: request 1 evicts
// 3 of request 0's 4 cached blocks, which the host tier keeps (counted the same with count_routed_prefixes).
TEST(PrefixCaching, ARouterSeesTheHostTiersCopiesAfterTheDevicesBlocks) {
  for (const bool routed : {false, true}) {
    SchedulerConfig c = config(10);
    c.host_kv_blocks = 16;
    c.count_routed_prefixes = routed;
    Scheduler s(c);
    s.add_request(request(0, Time{}, 16, 1, 7, 16));
    step(s, Time{});
    const RequestSpec next = request(2, ms(2), 20, 1, 7, 16);
    EXPECT_EQ(s.cached_prefix_tokens(next).device, 16);
    EXPECT_EQ(s.cached_prefix_tokens(next).offloaded, 0);
    s.add_request(request(1, ms(1), 36, 1));
    step(s, ms(1));
    EXPECT_EQ(s.kv().prefix_cache().cached_blocks(), 1);
    EXPECT_EQ(s.cached_prefix_tokens(next).device, 4);
    EXPECT_EQ(s.cached_prefix_tokens(next).offloaded, 12);
    EXPECT_EQ(s.cached_prefix_tokens(request(3, ms(2), 8, 1, 7, 16)).offloaded, 4);  // at most its prompt
  }
}

// A sliding window of 8 tokens over 4-token blocks: request 0 decodes past its 16-token shared prompt, so
// its windowed blocks behind the window go back to the cache; request 1, with the same prompt, still finds
// the blocks its own window needs.
TEST(PrefixCaching, ASlidingWindowModelReusesTheWindowsBlocks) {
  SchedulerConfig c = config(32);
  c.kv_window = KvWindow{8, 0, 1};
  Scheduler s(c);
  s.add_request(request(0, Time{}, 20, 40, 7, 16));
  s.add_request(request(1, ms(20), 22, 2, 7, 16));
  Time now;
  for (int i = 0; i < 12 && s.has_unfinished(); ++i, now += ms(1)) step(s, now);
  EXPECT_EQ(s.kv().prefix_cache().cached_blocks(), 4);    // the shared 16 tokens
  EXPECT_EQ(s.kv().prefix_cache().evictable_units(), 4);  // all behind request 0's window (token 30's)
  const StepPlan p = step(s, ms(20));
  const auto b = std::find_if(p.requests.begin(), p.requests.end(), [](auto& r) { return r.id == 1; });
  ASSERT_NE(b, p.requests.end());
  EXPECT_EQ(b->context_len, 16);
  EXPECT_EQ(b->tokens, 6);
  EXPECT_EQ(s.records().at(1).prefix_hit_tokens, 16);
  // Its window (tokens 9..21 over the step) holds blocks 2..5: 2 of them cached, 2 its own.
  EXPECT_EQ(s.kv().units_of(1), 4);
}

}  // namespace
}  // namespace duplex::runtime
