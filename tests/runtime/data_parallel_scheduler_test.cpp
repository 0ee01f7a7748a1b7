// Data-parallel ranks (SchedulerConfig::data_parallel_ranks): a request lives on one rank (round-robin: id
// mod ranks; least-loaded: the rank with the fewest unfinished requests at its arrival), whose own share of
// the K/V memory alone holds it. Hand-worked plans: a full rank admits nobody while the others go on, a rank
// short of K/V preempts its own youngest, a request longer than one rank's memory is refused, and each rank
// runs its share of the batch and of the token budget.
#include <gtest/gtest.h>

#include "duplex/base/error.hpp"
#include "duplex/runtime/scheduler/scheduler.hpp"

namespace duplex::runtime {
namespace {

// `ranks` ranks sharing `capacity_blocks` blocks of 4 tokens, requests dealt round-robin (id mod ranks).
SchedulerConfig ranks_config(int ranks, std::int64_t capacity_blocks) {
  SchedulerConfig c;
  c.kv_capacity_blocks = capacity_blocks;
  c.kv_block_tokens = 4;
  c.data_parallel_ranks = ranks;
  c.data_parallel_balance = DataParallelBalance::round_robin;
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
  s.add_request(RequestSpec{6, Time{}, 2, 1});
  s.add_request(RequestSpec{7, Time{}, 2, 1});
  EXPECT_EQ(s.rank_of(6), 0);
  EXPECT_EQ(s.rank_of(7), 1);
  EXPECT_THROW((void)s.rank_of(8), Error);  // never added
  EXPECT_EQ(s.kv(0).capacity_blocks(), 4);
  EXPECT_EQ(s.kv(1).capacity_blocks(), 4);
  EXPECT_EQ(s.kv_capacity_blocks(), 8);
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

// Ids 0, 2, 4 and 6 all belong to rank 0 round-robin: with max_batch 4 over 2 ranks (2 each) only two run at
// once while rank 1 idles. Least-loaded deals them 0, 1, 0, 1 as they arrive together (oldest first), and all
// four run.
TEST(DataParallelScheduler, EachRankRunsItsShareOfTheBatch) {
  for (const DataParallelBalance balance :
       {DataParallelBalance::round_robin, DataParallelBalance::least_loaded}) {
    SchedulerConfig c = ranks_config(2, 40);
    c.max_batch = 4;
    c.data_parallel_balance = balance;
    Scheduler s(c);
    for (RequestId id : {0, 2, 4, 6}) s.add_request(RequestSpec{id, us(static_cast<double>(id)), 2, 3});
    const bool round_robin = balance == DataParallelBalance::round_robin;
    if (!round_robin) {
      EXPECT_THROW((void)s.rank_of(0), Error) << "dealt before its arrival";
    }
    const StepPlan p = s.schedule(us(6.0));
    EXPECT_EQ(ids_of(p), round_robin ? (std::vector<RequestId>{0, 2}) : (std::vector<RequestId>{0, 2, 4, 6}));
    EXPECT_EQ(s.batch_peak(0), 2);
    EXPECT_EQ(s.batch_peak(1), round_robin ? 0 : 2);
    for (RequestId id : {0, 2, 4, 6}) EXPECT_EQ(s.rank_of(id), round_robin ? 0 : id / 2 % 2) << id;
    for (const ScheduledRequest& r : p.requests) EXPECT_EQ(r.rank, s.rank_of(r.id));
  }
  SchedulerConfig c = ranks_config(4, 40);
  c.max_batch = 3;  // fewer than one request per rank
  EXPECT_THROW(Scheduler{c}, Error);
}

// A budget of 8 tokens per step over 2 ranks is 4 for each: with chunked prefill the two 10-token prompts
// (ids 0 and 1, one per rank) prefill 4 tokens each side by side, not 8 of the first. Without chunking a
// prompt longer than its rank's 4 runs alone on its rank (id 0), the other rank's prompt beside it (id 1),
// and id 2 behind id 0 on rank 0 waits.
TEST(DataParallelScheduler, EachRankComputesItsShareOfTheTokenBudget) {
  SchedulerConfig c = ranks_config(2, 40);
  c.max_tokens_per_step = 8;
  c.chunked_prefill = true;
  Scheduler chunked(c);
  chunked.add_request(RequestSpec{0, Time{}, 10, 2});
  chunked.add_request(RequestSpec{1, Time{}, 10, 2});
  StepPlan p = chunked.schedule(Time{});
  ASSERT_EQ(ids_of(p), (std::vector<RequestId>{0, 1}));
  EXPECT_EQ(p.requests[0].tokens, 4);
  EXPECT_EQ(p.requests[1].tokens, 4);

  c.chunked_prefill = false;
  Scheduler whole(c);
  whole.add_request(RequestSpec{0, Time{}, 10, 2});
  whole.add_request(RequestSpec{1, Time{}, 3, 2});
  whole.add_request(RequestSpec{2, Time{}, 3, 2});
  p = whole.schedule(Time{});
  ASSERT_EQ(ids_of(p), (std::vector<RequestId>{0, 1}));
  EXPECT_EQ(p.requests[0].tokens, 10);
  EXPECT_EQ(p.requests[1].tokens, 3);

  c.max_tokens_per_step = 1;  // under a token per rank
  EXPECT_THROW(Scheduler{c}, Error);
}

// Least-loaded balancing deals at arrival: A (id 0) and B (id 1) take ranks 0 and 1; A finishes, so C (id 3,
// arriving after) goes to rank 0, where round-robin would have put it beside B on rank 1. A router sees the
// rank an arrival would go to now, and that rank's cached prefix.
TEST(DataParallelScheduler, LeastLoadedDealsEachArrivalToTheRankWithFewestRequests) {
  SchedulerConfig c = ranks_config(2, 40);
  c.data_parallel_balance = DataParallelBalance::least_loaded;
  Scheduler s(c);
  s.add_request(RequestSpec{0, Time{}, 2, 1});
  s.add_request(RequestSpec{1, Time{}, 2, 4});
  StepPlan p = s.schedule(Time{});
  EXPECT_EQ(s.rank_of(0), 0);
  EXPECT_EQ(s.rank_of(1), 1);
  s.update({p.step, ms(1)});  // A finishes, B decodes on
  const RequestSpec late{3, ms(2), 2, 1};
  EXPECT_EQ(s.rank_for_arrival(late), 0);
  EXPECT_EQ(s.cached_prefix_tokens(late).device, 0);  // no hashes
  s.add_request(late);
  p = s.schedule(ms(2));
  EXPECT_EQ(ids_of(p), (std::vector<RequestId>{1, 3}));
  EXPECT_EQ(s.rank_of(3), 0);
}

// Cache-aware dealing asks the engine's dealer with each rank's unfinished requests and the prompt's tokens
// its cache holds, counting the blocks of requests dealt there and not computed yet: B, arriving beside A
// with the same 8 prompt tokens, sees them on A's rank before either ran. Without a dealer, an error.
TEST(DataParallelScheduler, CacheAwareDealingAsksItsDealer) {
  SchedulerConfig c = ranks_config(2, 40);
  c.data_parallel_balance = DataParallelBalance::cache_aware;
  const RequestSpec a{0, Time{}, 8, 2, 0, {11, 12}, 4, 8}, b{1, Time{}, 8, 2, 0, {11, 12}, 4, 8};
  Scheduler lone(c);
  lone.add_request(a);
  EXPECT_THROW((void)lone.schedule(Time{}), Error);
  Scheduler s(c);
  std::vector<std::vector<RankLoad>> seen;
  s.set_dealer([&](const RequestSpec&, std::span<const RankLoad> loads) {
    seen.emplace_back(loads.begin(), loads.end());
    return 1;
  });
  s.add_request(a);
  s.add_request(b);
  const StepPlan p = s.schedule(Time{});
  EXPECT_EQ(ids_of(p), (std::vector<RequestId>{0, 1}));
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0][0].cached_tokens, 0);
  EXPECT_EQ(seen[0][1].cached_tokens, 0);
  EXPECT_EQ(seen[1][0].cached_tokens, 0);
  EXPECT_EQ(seen[1][1].cached_tokens, 8);
  EXPECT_EQ(seen[1][1].unfinished, 1);
  EXPECT_EQ(s.rank_of(0), 1);
  EXPECT_EQ(s.rank_of(1), 1);
  SchedulerConfig one = c;  // one rank: nothing to deal, no dealer needed
  one.data_parallel_ranks = 1;
  Scheduler single(one);
  EXPECT_EQ(single.rank_for_arrival(a), 0);
  single.add_request(a);
  EXPECT_EQ(single.schedule(Time{}).requests.size(), 1u);
}

}  // namespace
}  // namespace duplex::runtime
