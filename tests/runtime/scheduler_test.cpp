// Hand-worked scheduling scenarios: exact plans, step by step.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include "duplex/base/error.hpp"
#include "duplex/runtime/scheduler/scheduler.hpp"

namespace duplex::runtime {
namespace {

SchedulerConfig config(std::int64_t capacity_blocks, std::int64_t block_tokens = 4) {
  SchedulerConfig c;
  c.kv_capacity_blocks = capacity_blocks;
  c.kv_block_tokens = block_tokens;
  return c;
}

RequestSpec request(RequestId id, std::int64_t in, std::int64_t out, Time arrival = Time{}) {
  return RequestSpec{id, arrival, in, out};
}

TEST(Scheduler, OneRequestPrefillThenDecodes) {
  Scheduler s(config(8));
  s.add_request(request(0, 5, 3));
  StepPlan p = s.schedule(Time{});
  ASSERT_EQ(p.requests.size(), 1u);
  EXPECT_EQ(p.requests[0], (ScheduledRequest{0, 5, 0, TokenPhase::prefill, true}));
  EXPECT_EQ(p.prefill_tokens, 5);
  EXPECT_EQ(p.kv_blocks_used, 2);
  StepOutcome o = s.update({p.step, ms(10)});
  EXPECT_EQ(o.emitted, std::vector<RequestId>{0});
  EXPECT_TRUE(o.finished.empty());

  p = s.schedule(ms(10));
  ASSERT_EQ(p.requests.size(), 1u);
  EXPECT_EQ(p.requests[0], (ScheduledRequest{0, 1, 5, TokenPhase::decode, true}));
  EXPECT_EQ(p.decode_requests, 1);
  s.update({p.step, ms(11)});
  p = s.schedule(ms(11));
  EXPECT_EQ(p.requests[0], (ScheduledRequest{0, 1, 6, TokenPhase::decode, true}));
  EXPECT_EQ(p.kv_blocks_used, 2);  // 7 tokens in 4-token blocks
  o = s.update({p.step, ms(12)});
  EXPECT_EQ(o.finished, std::vector<RequestId>{0});
  EXPECT_EQ(s.kv().used_blocks(), 0);
  EXPECT_FALSE(s.has_unfinished());
  EXPECT_TRUE(s.schedule(ms(12)).empty());

  const RequestRecord& r = s.records().at(0);
  EXPECT_EQ(r.token_times, (std::vector<Time>{ms(10), ms(11), ms(12)}));
  EXPECT_EQ(r.ttft(), ms(10));
  EXPECT_EQ(r.e2e(), ms(12));
  ASSERT_EQ(r.tbt().size(), 2u);
  EXPECT_NEAR(to_ms(r.tbt()[0]), 1.0, 1e-12);
}

TEST(Scheduler, PreemptsYoungestAndRecomputesPromptPlusGenerated) {
  // 2 blocks of 4 tokens. A (4 in, 3 out) and B (3 in, 2 out) both fit for their prefills; when A's first
  // decode needs a second block, B (the younger) is preempted and later recomputes 3 + 1 tokens.
  Scheduler s(config(2));
  s.add_request(request(0, 4, 3));
  s.add_request(request(1, 3, 2));
  StepPlan p = s.schedule(Time{});
  ASSERT_EQ(p.requests.size(), 2u);
  EXPECT_EQ(p.kv_blocks_used, 2);
  s.update({p.step, ms(1)});

  p = s.schedule(ms(1));
  ASSERT_EQ(p.requests.size(), 1u);
  EXPECT_EQ(p.requests[0], (ScheduledRequest{0, 1, 4, TokenPhase::decode, true}));
  EXPECT_EQ(p.preempted, std::vector<RequestId>{1});
  EXPECT_EQ(p.kv_blocks_used, 2);
  s.update({p.step, ms(2)});

  p = s.schedule(ms(2));  // B cannot be readmitted: no free block
  ASSERT_EQ(p.requests.size(), 1u);
  EXPECT_EQ(p.requests[0].id, 0);
  StepOutcome o = s.update({p.step, ms(3)});
  EXPECT_EQ(o.finished, std::vector<RequestId>{0});

  p = s.schedule(ms(3));
  ASSERT_EQ(p.requests.size(), 1u);
  EXPECT_EQ(p.requests[0], (ScheduledRequest{1, 4, 0, TokenPhase::prefill, true}));
  o = s.update({p.step, ms(4)});
  EXPECT_EQ(o.finished, std::vector<RequestId>{1});

  const RequestRecord& b = s.records().at(1);
  EXPECT_EQ(b.preemptions, 1);
  EXPECT_EQ(b.recomputed_tokens, 3);
  EXPECT_EQ(b.token_times, (std::vector<Time>{ms(1), ms(4)}));  // the token emitted before preemption stays
}

// With a sliding window every running request holds only its window's blocks, so more requests decode at
// once in the same cache: 12 blocks of 4 tokens, 4 requests of 8 in + 40 out. Without a window each grows to
// 12 blocks: they preempt one another and take more steps; with an 8-token window on every layer each holds
// <= 3 blocks and all four run to the end together, in 40 steps (the prefills emit the first tokens). With
// half the layers windowed the saving is partial: fewer steps than without a window (93 vs 117).
TEST(Scheduler, SlidingWindowLetsMoreRequestsRunInTheSameCache) {
  struct Run {
    int steps = 0;
    std::int64_t preemptions = 0;
  };
  auto serve = [](KvWindow window) {
    SchedulerConfig c = config(12);
    c.kv_window = window;
    Scheduler s(c);
    for (RequestId id = 0; id < 4; ++id) s.add_request(request(id, 8, 40));
    Run run;
    Time t{};
    for (; s.has_unfinished() && run.steps < 10000; ++run.steps) {
      const StepPlan p = s.schedule(t);
      EXPECT_LE(p.kv_blocks_used, 12);
      t = t + ms(1);
      s.update({p.step, t});
    }
    EXPECT_FALSE(s.has_unfinished());
    for (const auto& [id, r] : s.records()) run.preemptions += r.preemptions;
    return run;
  };
  const Run windowed = serve({8, 0, 1}), half = serve({8, 1, 1}), full = serve({});
  EXPECT_EQ(windowed.steps, 40);
  EXPECT_EQ(windowed.preemptions, 0);
  EXPECT_GT(full.preemptions, 0);
  EXPECT_GT(full.steps, 40);
  EXPECT_LT(half.steps, full.steps);
  std::printf("steps / preemptions: every layer windowed %d / %lld, half %d / %lld, none %d / %lld\n",
              windowed.steps, static_cast<long long>(windowed.preemptions), half.steps,
              static_cast<long long>(half.preemptions), full.steps, static_cast<long long>(full.preemptions));
}

TEST(Scheduler, ChunkedPrefillFillsTheBudgetAfterDecodes) {
  SchedulerConfig c = config(100);
  c.max_tokens_per_step = 8;
  c.chunked_prefill = true;
  Scheduler s(c);
  s.add_request(request(0, 3, 4));
  s.add_request(request(1, 20, 2, ms(0.5)));
  StepPlan p = s.schedule(Time{});
  EXPECT_EQ(p.total_tokens, 3);
  s.update({p.step, ms(1)});
  p = s.schedule(ms(1));  // decode of 0 first, then 7 prompt tokens of 1
  ASSERT_EQ(p.requests.size(), 2u);
  EXPECT_EQ(p.requests[0], (ScheduledRequest{0, 1, 3, TokenPhase::decode, true}));
  EXPECT_EQ(p.requests[1], (ScheduledRequest{1, 7, 0, TokenPhase::prefill, false}));
  EXPECT_EQ(p.total_tokens, 8);
  s.update({p.step, ms(2)});
  p = s.schedule(ms(2));
  EXPECT_EQ(p.requests[1], (ScheduledRequest{1, 7, 7, TokenPhase::prefill, false}));
  s.update({p.step, ms(3)});
  p = s.schedule(ms(3));
  EXPECT_EQ(p.requests[1], (ScheduledRequest{1, 6, 14, TokenPhase::prefill, true}));
  EXPECT_EQ(p.total_tokens, 7);
}

TEST(Scheduler, WholePrefillLongerThanBudgetRunsAlone) {
  SchedulerConfig c = config(100);
  c.max_tokens_per_step = 8;
  Scheduler s(c);
  s.add_request(request(0, 2, 3));
  s.add_request(request(1, 30, 1));
  StepPlan p = s.schedule(Time{});
  ASSERT_EQ(p.requests.size(), 1u);  // 1 does not fit the 6 tokens left and is not chunked
  s.update({p.step, ms(1)});
  p = s.schedule(ms(1));
  ASSERT_EQ(p.requests.size(), 1u);  // decode of 0; 1 still waits (head of line)
  EXPECT_EQ(p.requests[0].id, 0);
  s.update({p.step, ms(2)});
  p = s.schedule(ms(2));
  s.update({p.step, ms(3)});
  p = s.schedule(ms(3));  // 0 finished; 1 runs alone, over the budget, rather than never
  ASSERT_EQ(p.requests.size(), 1u);
  EXPECT_EQ(p.requests[0], (ScheduledRequest{1, 30, 0, TokenPhase::prefill, true}));
}

TEST(Scheduler, ArrivalsWaitForTheirTime) {
  Scheduler s(config(100));
  s.add_request(request(0, 4, 1, ms(5)));
  EXPECT_TRUE(s.schedule(Time{}).empty());
  EXPECT_EQ(s.next_arrival_after(Time{}), ms(5));
  EXPECT_EQ(s.schedule(ms(5)).requests.size(), 1u);
}

TEST(Scheduler, MaxBatchLimitsRunningRequests) {
  SchedulerConfig c = config(100);
  c.max_batch = 2;
  Scheduler s(c);
  for (RequestId i = 0; i < 5; ++i) s.add_request(request(i, 2, 5));
  const StepPlan p = s.schedule(Time{});
  EXPECT_EQ(p.requests.size(), 2u);
  EXPECT_EQ(s.num_running(), 2);
  EXPECT_EQ(s.num_waiting(), 3);
}

TEST(Scheduler, OrcaReservesPromptPlusOutput) {
  SchedulerConfig c = config(4);  // 16 tokens
  c.policy = BatchingPolicy::orca;
  Scheduler s(c);
  s.add_request(request(0, 4, 5));  // reserves 8 tokens = 2 blocks
  s.add_request(request(1, 4, 5));  // 2 more blocks
  s.add_request(request(2, 1, 1));  // no block left
  const StepPlan p = s.schedule(Time{});
  EXPECT_EQ(p.requests.size(), 2u);
  EXPECT_EQ(p.kv_blocks_used, 4);
}

TEST(Scheduler, StaticBatchWaitsForTheWholeBatch) {
  SchedulerConfig c = config(100);
  c.policy = BatchingPolicy::static_batch;
  Scheduler s(c);
  s.add_request(request(0, 2, 1));
  s.add_request(request(1, 2, 3));
  StepPlan p = s.schedule(Time{});
  s.update({p.step, ms(1)});  // 0 finishes
  s.add_request(request(2, 2, 1, ms(1)));
  p = s.schedule(ms(1));
  ASSERT_EQ(p.requests.size(), 1u);  // 2 waits although a slot is free
  EXPECT_EQ(p.requests[0].id, 1);
  s.update({p.step, ms(2)});
  p = s.schedule(ms(2));
  s.update({p.step, ms(3)});
  p = s.schedule(ms(3));
  ASSERT_EQ(p.requests.size(), 1u);
  EXPECT_EQ(p.requests[0].id, 2);
}

TEST(Scheduler, BadRequestsAndCallsAreErrors) {
  Scheduler s(config(2));
  EXPECT_THROW(s.add_request(request(0, 0, 3)), Error);
  EXPECT_THROW(s.add_request(request(0, 3, 0)), Error);
  EXPECT_THROW(s.add_request(request(0, 6, 4)), Error);  // 9 KV tokens > 8: could never finish
  s.add_request(request(0, 5, 4));                       // 8 KV tokens at most: fits exactly
  EXPECT_THROW(s.add_request(request(0, 1, 1)), Error);  // duplicate id
  EXPECT_THROW(s.update({0, ms(1)}), Error);             // nothing in flight
  const StepPlan p = s.schedule(ms(2));
  EXPECT_THROW(s.schedule(ms(3)), Error);                // step in flight
  EXPECT_THROW(s.update({p.step + 1, ms(3)}), Error);    // wrong step
  EXPECT_THROW(s.update({p.step, ms(1)}), Error);        // ends before it started
  s.update({p.step, ms(3)});
  EXPECT_THROW(s.schedule(ms(2.5)), Error);              // time goes backwards
}

TEST(Scheduler, BadConfigIsError) {
  SchedulerConfig c = config(10);
  c.max_batch = 0;
  EXPECT_THROW(Scheduler{c}, Error);
  c = config(10);
  c.chunked_prefill = true;  // without a budget
  EXPECT_THROW(Scheduler{c}, Error);
  c.max_tokens_per_step = 16;
  c.policy = BatchingPolicy::orca;
  EXPECT_THROW(Scheduler{c}, Error);
  c = config(0);
  EXPECT_THROW(Scheduler{c}, Error);
}

}  // namespace
}  // namespace duplex::runtime
