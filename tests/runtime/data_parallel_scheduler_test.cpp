// Data-parallel ranks (SchedulerConfig::data_parallel_ranks): request id lives on rank id mod ranks, whose
// own share of the K/V memory alone holds it. Hand-worked plans: a full rank admits nobody while the others
// go on, a rank short of K/V preempts its own youngest, and a request longer than one rank's memory is
// refused.
#include <gtest/gtest.h>

#include "duplex/base/error.hpp"
#include "duplex/runtime/scheduler/scheduler.hpp"

namespace duplex::runtime {
namespace {

// `ranks` ranks sharing `capacity_blocks` blocks of 4 tokens.
SchedulerConfig ranks_config(int ranks, std::int64_t capacity_blocks) {
  SchedulerConfig c;
  c.kv_capacity_blocks = capacity_blocks;
  c.kv_block_tokens = 4;
  c.data_parallel_ranks = ranks;
  return c;
}

std::vector<RequestId> ids_of(const StepPlan& p) {
  std::vector<RequestId> ids;
  for (const ScheduledRequest& r : p.requests) ids.push_back(r.id);
  return ids;
}

TEST(DataParallelScheduler, EachRankHoldsItsShareOfTheMemory) {
  Scheduler s(ranks_config(2, 9));  // 4 blocks each; the ninth is no rank's
  EXPECT_EQ(s.ranks(), 2);
  EXPECT_EQ(s.rank_of(6), 0);
  EXPECT_EQ(s.rank_of(7), 1);
  EXPECT_EQ(s.kv(0).capacity_blocks(), 4);
  EXPECT_EQ(s.kv(1).capacity_blocks(), 4);
  EXPECT_EQ(s.kv_capacity_blocks(), 8);
  EXPECT_EQ(&s.kv_for(7), &s.kv(1));
  // 17 tokens at their peak need 5 blocks: more than a rank holds, though the ranks together hold 8.
  try {
    s.add_request(RequestSpec{0, Time{}, 10, 8});
    ADD_FAILURE() << "a request longer than a rank's memory was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds 4 blocks on each of 2 data-parallel ranks"),
              std::string::npos)
        << e.what();
  }
  // Each rank needs one block at least.
  EXPECT_THROW(Scheduler(ranks_config(3, 2)), Error);
}

// Waiting in order of arrival: A (id 0) and C (id 2) on rank 0, B (id 1) on rank 1. A fills rank 0's 2
// blocks, so C waits; B, behind C in the queue, is admitted on its own rank. (One pool of 4 blocks would
// have admitted all three.)
TEST(DataParallelScheduler, AFullRankAdmitsNobodyWhileTheOthersGoOn) {
  Scheduler s(ranks_config(2, 4));
  s.add_request(RequestSpec{0, Time{}, 8, 1});
  s.add_request(RequestSpec{2, us(1.0), 4, 1});
  s.add_request(RequestSpec{1, us(2.0), 4, 1});
  StepPlan p = s.schedule(us(2.0));
  EXPECT_EQ(ids_of(p), (std::vector<RequestId>{0, 1}));
  EXPECT_EQ(p.kv_blocks_used, 3);
  EXPECT_EQ(p.kv_blocks_capacity, 4);
  EXPECT_EQ(s.kv(0).used_blocks(), 2);
  EXPECT_EQ(s.kv(1).used_blocks(), 1);
  s.update({p.step, ms(1)});  // A and B finish: C fits now
  p = s.schedule(ms(1));
  EXPECT_EQ(ids_of(p), (std::vector<RequestId>{2}));
  EXPECT_EQ(s.kv_peak_blocks(0), 2);  // A's, not C's one
  EXPECT_EQ(s.kv_peak_blocks(1), 1);
}

// Rank 0 holds A (id 0, 4 + 3 tokens) and C (id 2, 3 + 2), 2 blocks; B (id 1, rank 1) is the youngest of all.
// A's first decode needs a second block: rank 0 preempts C, its own youngest, not B (whose memory would not
// help), and B decodes on. A preempting rank admits nobody that step, but rank 1 does: D (id 3).
TEST(DataParallelScheduler, ARankShortOfKvPreemptsItsOwnYoungest) {
  Scheduler s(ranks_config(2, 4));
  s.add_request(RequestSpec{0, Time{}, 4, 3});
  s.add_request(RequestSpec{2, us(1.0), 3, 2});
  s.add_request(RequestSpec{1, us(2.0), 3, 2});
  StepPlan p = s.schedule(us(2.0));
  EXPECT_EQ(ids_of(p), (std::vector<RequestId>{0, 2, 1}));
  s.update({p.step, ms(1)});
  s.add_request(RequestSpec{3, ms(1), 2, 1});
  p = s.schedule(ms(1));
  EXPECT_EQ(p.preempted, std::vector<RequestId>{2});
  EXPECT_EQ(ids_of(p), (std::vector<RequestId>{0, 1, 3}));
  EXPECT_EQ(s.kv(0).used_blocks(), 2);  // A's two blocks
  EXPECT_EQ(s.kv(1).used_blocks(), 2);  // B's and D's
  EXPECT_EQ(s.records().at(2).preemptions, 1);
  EXPECT_EQ(s.records().at(1).preemptions, 0);
}

// The prefill space is split as the K/V memory: 16 tokens over 2 ranks hold 2 blocks of 4 each, so a 12-token
// prompt can never prefill on its rank.
TEST(DataParallelScheduler, EachRankHasItsShareOfThePrefillSpace) {
  SchedulerConfig c = ranks_config(2, 16);
  c.prefill_capacity_tokens = 16;
  Scheduler s(c);
  EXPECT_THROW(s.add_request(RequestSpec{0, Time{}, 12, 1}), Error);
  s.add_request(RequestSpec{1, Time{}, 8, 1});
  c.prefill_capacity_tokens = 4;  // under a block per rank
  EXPECT_THROW(Scheduler{c}, Error);
}

}  // namespace
}  // namespace duplex::runtime
