// The prefill-space bound (SchedulerConfig::prefill_capacity_tokens, Duplex memory spaces): hand-worked
// plans, rejection at submission, and, under random workloads for every policy, the bound checked every step
// from the plans alone (each unfinished prefill holds ceil((context_len - cached_context + tokens) / block)
// blocks from its step until the step that completes it; a preemption frees them).
#include <gtest/gtest.h>

#include <map>
#include <memory>

#include "duplex/base/error.hpp"
#include "duplex/runtime/scheduler/scheduler.hpp"
#include "duplex/runtime/scheduler/serving_loop.hpp"
#include "duplex/runtime/workload/request_source.hpp"

namespace duplex::runtime {
namespace {

SchedulerConfig config(std::int64_t kv_blocks, std::int64_t prefill_tokens, std::int64_t budget = 0,
                       bool chunked = false, BatchingPolicy policy = BatchingPolicy::continuous) {
  SchedulerConfig c;
  c.policy = policy;
  c.kv_block_tokens = 4;
  c.kv_capacity_blocks = kv_blocks;
  c.prefill_capacity_tokens = prefill_tokens;
  c.max_tokens_per_step = budget;
  c.chunked_prefill = chunked;
  return c;
}

RequestSpec request(RequestId id, std::int64_t in, std::int64_t out) { return RequestSpec{id, Time{}, in, out}; }

TEST(PrefillSpace, ConfigNeedsZeroOrAtLeastOneBlock) {
  EXPECT_NO_THROW(Scheduler(config(8, 0)));
  EXPECT_NO_THROW(Scheduler(config(8, 4)));
  EXPECT_THROW(Scheduler(config(8, 3)), Error);   // less than one 4-token block
  EXPECT_THROW(Scheduler(config(8, -4)), Error);
}

TEST(PrefillSpace, WholePrefillThatDoesNotFitWaitsForTheMigration) {
  // 2 blocks of prefill space: A's 6-token prompt takes both, so B's 5 tokens wait one step.
  Scheduler s(config(16, 8));
  s.add_request(request(0, 6, 2));
  s.add_request(request(1, 5, 2));
  StepPlan p = s.schedule(Time{});
  ASSERT_EQ(p.requests.size(), 1u);
  EXPECT_EQ(p.requests[0], (ScheduledRequest{0, 6, 0, TokenPhase::prefill, true}));
  s.update({p.step, ms(1)});
  // A's prefill completed and migrated: its decode holds no prefill space, B's prompt fits now.
  p = s.schedule(ms(1));
  ASSERT_EQ(p.requests.size(), 2u);
  EXPECT_EQ(p.requests[0], (ScheduledRequest{0, 1, 6, TokenPhase::decode, true}));
  EXPECT_EQ(p.requests[1], (ScheduledRequest{1, 5, 0, TokenPhase::prefill, true}));
}

TEST(PrefillSpace, ChunkIsCutToTheFreeBlocks) {
  // 4 blocks (16 tokens), budget 10. Step 0: A prefills 10 of 12 (3 blocks). Step 1: A's last 2 tokens keep 3
  // blocks, so B gets one block (4 tokens) though the budget leaves 8.
  Scheduler s(config(32, 16, 10, true));
  s.add_request(request(0, 12, 1));
  s.add_request(request(1, 12, 1));
  StepPlan p = s.schedule(Time{});
  ASSERT_EQ(p.requests.size(), 1u);
  EXPECT_EQ(p.requests[0].tokens, 10);
  s.update({p.step, ms(1)});
  p = s.schedule(ms(1));
  ASSERT_EQ(p.requests.size(), 2u);
  EXPECT_EQ(p.requests[0], (ScheduledRequest{0, 2, 10, TokenPhase::prefill, true}));
  EXPECT_EQ(p.requests[1], (ScheduledRequest{1, 4, 0, TokenPhase::prefill, false}));
  s.update({p.step, ms(2)});
  // A finished; B has 1 block and may grow to all 4: the rest of its prompt (8) fits the budget.
  p = s.schedule(ms(2));
  ASSERT_EQ(p.requests.size(), 1u);
  EXPECT_EQ(p.requests[0], (ScheduledRequest{1, 8, 4, TokenPhase::prefill, true}));
}

TEST(PrefillSpace, OrcaAndStaticWaitForWholePrompts) {
  for (const BatchingPolicy policy : {BatchingPolicy::orca, BatchingPolicy::static_batch}) {
    Scheduler s(config(64, 8, 0, false, policy));
    s.add_request(request(0, 8, 3));
    s.add_request(request(1, 8, 3));
    StepPlan p = s.schedule(Time{});
    ASSERT_EQ(p.requests.size(), 1u) << to_string(policy);
    s.update({p.step, ms(1)});
    p = s.schedule(ms(1));
    if (policy == BatchingPolicy::orca) {
      ASSERT_EQ(p.requests.size(), 2u);
      EXPECT_EQ(p.requests[1], (ScheduledRequest{1, 8, 0, TokenPhase::prefill, true}));
    } else {
      ASSERT_EQ(p.requests.size(), 1u);  // static: B waits for the whole batch anyway
    }
  }
}

TEST(PrefillSpace, RequestThatCanNeverFitIsRejected) {
  Scheduler orca(config(64, 8, 0, false, BatchingPolicy::orca));
  EXPECT_THROW(orca.add_request(request(0, 9, 1)), Error);  // 3 blocks of prompt, 2 of space
  EXPECT_NO_THROW(orca.add_request(request(1, 8, 20)));     // never preempted: only the prompt counts
  // Continuous batching may preempt and recompute prompt + generated tokens as one prefill.
  Scheduler cont(config(64, 8));
  EXPECT_THROW(cont.add_request(request(0, 4, 6)), Error);  // 9 tokens to recompute at most
  EXPECT_NO_THROW(cont.add_request(request(1, 4, 5)));      // 8
  try {
    cont.add_request(request(2, 20, 1));
    FAIL() << "expected a rejection";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("prefill space holds 2 blocks"), std::string::npos) << e.what();
  }
}

// Random workloads: the bound from the plans alone, every step; every request finishes.
struct Case {
  const char* name;
  BatchingPolicy policy;
  bool chunked;
  std::int64_t budget;
  std::int64_t kv_blocks;
  std::int64_t prefill_tokens;  // the bound
  LengthDistribution lengths;
  std::int64_t prefix_tokens = 0;  // > 0: shared system prompts (prefix caching), 3 of them
};

constexpr std::int64_t kBlock = 8;
// Gaussian: in + out - 1 stays below 320 tokens (7 sigma above its mean of 139), so nothing is rejected.
constexpr LengthDistribution kVaried{LengthDistribution::Kind::gaussian, 100, 40, 20.0, 15.0};
// Fixed 100 + 8 with a 96-token budget: the second prompt's first chunk is cut to the space left by the first.
constexpr LengthDistribution kFixed{LengthDistribution::Kind::fixed, 100, 8, 0.0, 0.0};

std::vector<StepPlan> run_case(const Case& c, std::int64_t prefill_tokens, std::uint64_t seed) {
  SchedulerConfig sc;
  sc.policy = c.policy;
  sc.chunked_prefill = c.chunked;
  sc.max_tokens_per_step = c.budget;
  sc.max_batch = 16;
  sc.kv_block_tokens = kBlock;
  sc.kv_capacity_blocks = c.kv_blocks;
  sc.prefill_capacity_tokens = prefill_tokens;
  Scheduler scheduler(sc);
  std::unique_ptr<RequestSource> source = std::make_unique<ClosedLoopSource>(12, 120, c.lengths, seed);
  if (c.prefix_tokens > 0)
    source = std::make_unique<SharedPrefixSource>(std::move(source), SharedPrefix{c.prefix_tokens, 3}, seed);
  std::map<RequestId, std::int64_t> held;  // unfinished prefills: tokens in the prefill space
  std::vector<StepPlan> plans;
  auto observer = [&](const StepPlan& plan, const StepOutcome&, const Scheduler&) {
    for (const RequestId id : plan.preempted) held.erase(id);
    for (const ScheduledRequest& r : plan.requests)
      if (r.phase == TokenPhase::prefill) held[r.id] = r.context_len - r.cached_context + r.tokens;
    std::int64_t blocks = 0;
    for (const auto& [id, tokens] : held) blocks += (tokens + kBlock - 1) / kBlock;
    if (prefill_tokens > 0) {
      EXPECT_LE(blocks * kBlock, prefill_tokens) << c.name << " step " << plan.step;
    }
    for (const ScheduledRequest& r : plan.requests)
      if (r.phase == TokenPhase::prefill && r.samples_token) held.erase(r.id);  // migrated at the step's end
    plans.push_back(plan);
  };
  auto step_time = [](const StepPlan& plan) { return ms(0.5) + us(2.0) * static_cast<double>(plan.total_tokens); };
  const ServingRun run = run_serving_loop(scheduler, *source, step_time, observer);
  EXPECT_TRUE(source->exhausted());
  EXPECT_FALSE(scheduler.has_unfinished());
  std::int64_t hits = 0;
  for (const auto& [id, r] : run.records) {
    EXPECT_TRUE(r.finished()) << "request " << id;
    EXPECT_EQ(static_cast<std::int64_t>(r.token_times.size()), r.spec.output_tokens) << "request " << id;
    hits += r.prefix_hit_tokens;
  }
  EXPECT_EQ(hits > 0, c.prefix_tokens > 0) << c.name;
  return plans;
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class PrefillSpaceProperties : public ::testing::TestWithParam<Case> {};

TEST_P(PrefillSpaceProperties, BoundHoldsEveryStepAndBinds) {
  const Case& c = GetParam();
  for (const std::uint64_t seed : {1u, 2u}) {
    const std::vector<StepPlan> bounded = run_case(c, c.prefill_tokens, seed);
    const std::vector<StepPlan> free = run_case(c, 0, seed);
    EXPECT_FALSE(bounded == free) << c.name << ": the bound was meant to change some plan";
  }
}

TEST_P(PrefillSpaceProperties, ZeroAndANeverBindingBoundChangeNothing) {
  const Case& c = GetParam();
  // 1 << 20 tokens: more than all requests' prompts together, so no plan may differ from the unbounded one.
  EXPECT_TRUE(run_case(c, 0, 3) == run_case(c, kBlock << 20, 3)) << c.name;
}

INSTANTIATE_TEST_SUITE_P(
    Policies, PrefillSpaceProperties,
    ::testing::Values(Case{"continuous", BatchingPolicy::continuous, false, 0, 60, 320, kVaried},
                      Case{"continuous_budget", BatchingPolicy::continuous, false, 512, 60, 320, kVaried},
                      Case{"chunked", BatchingPolicy::continuous, true, 96, 60, 160, kFixed},
                      Case{"chunked_tight_kv", BatchingPolicy::continuous, true, 96, 45, 160, kFixed},
                      Case{"orca", BatchingPolicy::orca, false, 0, 120, 320, kVaried},
                      Case{"static", BatchingPolicy::static_batch, false, 0, 120, 320, kVaried},
                      // 40 more prompt tokens: in + out - 1 stays below 360 (7 sigma above 179).
                      Case{"prefix", BatchingPolicy::continuous, false, 0, 60, 360, kVaried, 40},
                      Case{"prefix_chunked", BatchingPolicy::continuous, true, 96, 60, 160, kFixed, 32}),
    [](const ::testing::TestParamInfo<Case>& param_info) { return std::string(param_info.param.name); });

}  // namespace
}  // namespace duplex::runtime
