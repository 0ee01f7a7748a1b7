// The host tier behind the prefix cache: an LRU set of block copies of fixed capacity; and the scheduler
// loading a sequence's blocks from it when the device cache has evicted them.
#include "duplex/runtime/scheduler/host_kv_tier.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "duplex/base/error.hpp"
#include "duplex/runtime/scheduler/scheduler.hpp"

namespace duplex::runtime {
namespace {

TEST(HostKvTier, KeepsTheMostRecentlyUsedCopiesUpToItsCapacity) {
  HostKvTier tier(3);
  EXPECT_TRUE(tier.store(1));
  EXPECT_TRUE(tier.store(2));
  EXPECT_TRUE(tier.store(3));
  EXPECT_FALSE(tier.store(1));  // a copy already held: used again, no transfer
  EXPECT_TRUE(tier.store(4));   // over capacity: 2, the least recently used, goes
  EXPECT_EQ(tier.blocks(), 3);
  EXPECT_FALSE(tier.contains(2));
  const std::vector<std::uint64_t> keys = {1, 3, 4};
  tier.touch(std::span(keys).first(1));  // 1 is now the most recent; 3 the oldest
  EXPECT_TRUE(tier.store(5));
  EXPECT_FALSE(tier.contains(3));
  EXPECT_TRUE(tier.contains(1));
}

TEST(HostKvTier, LeadingCountsHeldKeysFromAnIndexUpToTheFirstMissing) {
  HostKvTier tier(8);
  for (std::uint64_t k : {10, 11, 13}) tier.store(k);
  const std::vector<std::uint64_t> keys = {9, 10, 11, 12, 13};
  EXPECT_EQ(tier.leading(keys, 0), 0);
  EXPECT_EQ(tier.leading(keys, 1), 2);
  EXPECT_EQ(tier.leading(keys, 4), 1);
  EXPECT_EQ(tier.leading(keys, 5), 0);
}

TEST(HostKvTier, NoCapacityMeansNoTierAndANegativeOneIsRefused) {
  HostKvTier none;
  EXPECT_FALSE(none.store(1));
  EXPECT_EQ(none.blocks(), 0);
  EXPECT_THROW(HostKvTier(-1), Error);
  HostKvTier tier(2);
  const std::vector<std::uint64_t> missing = {7};
  EXPECT_THROW(tier.touch(missing), InternalError);
}

// A 16-token system prompt (request 0, its 4 blocks cached) computed at 0 ms, request 1 (40 tokens, 10
// blocks, no hashes) evicting every cached block from the device's 10 at 1 ms, then request 2, the prompt and
// 4 tokens more, at 2 ms: the steps' plans, and request 2's spec.
struct Readmission {
  std::vector<StepPlan> plans;
  RequestSpec readmitted;
};
Readmission evict_and_readmit(Scheduler& s) {
  Readmission out;
  auto step = [&](Time now) {
    out.plans.push_back(s.schedule(now));
    if (!out.plans.back().empty()) s.update({out.plans.back().step, now + ms(1)});
  };
  RequestSpec a{0, Time{}, 16, 1};  // all of it shared
  a.content_hashes = {7};
  a.hash_block_tokens = a.hashed_tokens = 16;
  s.add_request(a);
  step(Time{});
  s.add_request(RequestSpec{1, ms(1), 40, 1});
  step(ms(1));
  EXPECT_EQ(s.kv().prefix_cache().cached_blocks(), 0);
  out.readmitted = a;
  out.readmitted.id = 2;
  out.readmitted.arrival = ms(2);
  out.readmitted.input_tokens = 20;
  s.add_request(out.readmitted);
  step(ms(2));
  return out;
}

SchedulerConfig tiered(std::int64_t host_blocks, std::int64_t disk_blocks = 0) {
  SchedulerConfig c;
  c.kv_block_tokens = 4;
  c.kv_capacity_blocks = 10;
  c.host_kv_blocks = host_blocks;
  c.disk_kv_blocks = disk_blocks;
  return c;
}

// A request whose shared prompt the device cache evicted finds it in the host tier: its step starts after
// the prompt (loaded, not computed) and says how many tokens it loads; without the tier it computes them.
TEST(HostKvTier, TheSchedulerLoadsEvictedBlocksFromTheHost) {
  for (const std::int64_t host_blocks : {0, 16}) {
    Scheduler s(tiered(host_blocks));
    const std::vector<StepPlan> plans = evict_and_readmit(s).plans;
    EXPECT_EQ(plans[0].host_stored_blocks, host_blocks > 0 ? 4 : 0);
    const StepPlan& p = plans[2];
    ASSERT_EQ(p.requests.size(), 1u);
    const ScheduledRequest& r = p.requests[0];
    if (host_blocks > 0) {
      EXPECT_EQ(r.tokens, 4);
      EXPECT_EQ(r.cached_context, 16);
      EXPECT_EQ(r.host_loaded, 16);
      EXPECT_EQ(p.host_loaded_tokens, 16);
      EXPECT_EQ(s.records().at(2).prefix_hit_tokens, 16);
      EXPECT_EQ(s.records().at(2).host_hit_tokens, 16);
      EXPECT_EQ(p.host_stored_blocks, 0);  // its blocks are in the tier already
    } else {
      EXPECT_EQ(r.tokens, 20);
      EXPECT_EQ(r.host_loaded, 0);
      EXPECT_EQ(s.records().at(2).prefix_hit_tokens, 0);
    }
    EXPECT_EQ(s.kv().prefix_cache().cached_blocks(), 4);  // cached on the device again
  }
}

// A disk tier behind a host tier of 2 blocks: every copy is also written to disk, so a prompt whose blocks
// left the device and the host tier is read back from disk (and put back in the host tier on its way).
TEST(HostKvTier, BlocksTheHostTierDroppedAreReadFromDisk) {
  Scheduler s(tiered(2, 16));
  const Readmission run = evict_and_readmit(s);
  EXPECT_EQ(run.plans[0].host_stored_blocks, 4);
  EXPECT_EQ(run.plans[0].disk_stored_blocks, 4);
  EXPECT_EQ(s.kv().disk_tier().blocks(), 4);
  const StepPlan& p = run.plans[2];
  ASSERT_EQ(p.requests.size(), 1u);
  const ScheduledRequest& r = p.requests[0];
  EXPECT_EQ(r.tokens, 4);
  EXPECT_EQ(r.cached_context, 16);
  // All off the device: the host tier kept only blocks 2 and 3, so its chain breaks at block 0; the disk's
  // does not.
  EXPECT_EQ(r.host_loaded, 16);
  EXPECT_EQ(r.disk_loaded, 16);
  EXPECT_EQ(p.disk_loaded_tokens, 16);
  EXPECT_EQ(s.records().at(2).disk_hit_tokens, 16);
  EXPECT_THROW(Scheduler{tiered(0, 16)}, Error);  // a disk tier needs a host tier in front of it
}

// A hit that continues in the host tier and then on disk: the disk's blocks, put back in a host tier too
// small for both, push out the host tier's own as they are read. Where those copies lay is looked up before
// that (it used to be looked up after, of copies gone). Host tier of 2 blocks, disk of 16: a 16-token prompt
// (blocks 0..3) leaves blocks 2, 3 in the host tier; an 8-token one (blocks 0, 1) reads those from disk, so
// the host tier holds 0, 1; the 16-token prompt again then loads blocks 0, 1 from host memory and 2, 3 from
// disk.
TEST(HostKvTier, AHitFromHostMemoryAndDiskTogether) {
  Scheduler s(tiered(2, 16));
  Time now;
  auto run = [&](const RequestSpec& r) {
    s.add_request(r);
    StepPlan last;
    for (; s.has_unfinished(); now += ms(1)) last = s.schedule(now), s.update({last.step, now + ms(1)});
    return last;
  };
  RequestSpec prompt{0, Time{}, 16, 1};
  prompt.content_hashes = {7};
  prompt.hash_block_tokens = prompt.hashed_tokens = 16;
  run(prompt);
  run(RequestSpec{1, now, 40, 1});  // the whole device: evicts every cached block
  RequestSpec half = prompt;
  half.id = 2;
  half.arrival = now;
  half.input_tokens = 9;
  half.hashed_tokens = 8;
  EXPECT_EQ(run(half).disk_loaded_tokens, 8);
  run(RequestSpec{3, now, 40, 1});
  RequestSpec again = prompt;
  again.id = 4;
  again.arrival = now;
  again.input_tokens = 20;
  EXPECT_EQ(run(again).disk_loaded_tokens, 8);
  EXPECT_EQ(s.records().at(4).host_hit_tokens, 16);
  EXPECT_EQ(s.records().at(4).disk_hit_tokens, 8);
  EXPECT_EQ(s.records().at(4).host_remote_hit_tokens, 0);
}

// Blocks read from disk pass through host memory, which keeps them again (the least recently used copies
// making room).
TEST(HostKvTier, ADiskReadPutsTheBlocksBackInTheHostTier) {
  KvBlockManager kv(10, 4, {}, 4, nullptr, 0, 16);
  const std::vector<std::uint64_t> first{1, 2, 3, 4}, second{5, 6, 7, 8};
  kv.grow_to(0, 0, 16);
  kv.share_computed(0, first, 16);
  kv.grow_to(1, 0, 16);
  kv.share_computed(1, second, 16);  // the host tier's 4 blocks now hold `second`; the disk both
  kv.release(0);
  kv.release(1);
  kv.grow_to(2, 0, 40);  // evicts every cached block from the device
  kv.release(2);
  const PrefixCache::Hit hit = kv.prefix_hit(first);
  EXPECT_EQ(hit.blocks, 0);
  EXPECT_EQ(hit.host_blocks, 0);
  EXPECT_EQ(hit.disk_blocks, 4);
  EXPECT_FALSE(kv.host_tier().contains(1));
  kv.take_prefix(3, first, hit);
  for (const std::uint64_t key : first) EXPECT_TRUE(kv.host_tier().contains(key)) << key;
  EXPECT_FALSE(kv.host_tier().contains(5));
}

// A speculative step's accepted drafts complete a block only when the step ends; the block is copied to the
// host tier when the request's next step is scheduled.
TEST(HostKvTier, BlocksCompletedByAcceptedDraftsAreCopiedAtTheNextStep) {
  SchedulerConfig c;
  c.kv_block_tokens = 4;
  c.kv_capacity_blocks = 64;
  c.host_kv_blocks = 64;
  c.speculative_tokens = 2;
  c.acceptance_rates = {1.0};
  Scheduler s(c);
  RequestSpec r{0, Time{}, 6, 10};  // a conversation turn: its hashes cover prompt and answer
  r.content_hashes = {9};
  r.hash_block_tokens = r.hashed_tokens = 16;
  s.add_request(r);
  std::vector<std::int64_t> stored;
  Time t{};
  for (int i = 0; i < 3; ++i, t = t + ms(1)) {
    const StepPlan p = s.schedule(t);
    stored.push_back(p.host_stored_blocks);
    s.update({p.step, t + ms(1)});
  }
  // Step 0 prefills 6 tokens (block 0); step 1 verifies 2 drafts, both accepted: 9 tokens have K/V, block 1
  // is full but copied only as step 2 is scheduled.
  EXPECT_EQ(stored, (std::vector<std::int64_t>{1, 0, 1}));
  EXPECT_EQ(s.kv().host_tier().blocks(), 2);
}

// A store spanning nodes keeps each copy where it was stored first; a manager on another node counts the
// tokens it loads from there as remote, a partial last block by its tokens.
TEST(HostKvTier, ACopyStaysOnTheNodeThatStoredIt) {
  auto store = std::make_shared<HostKvTier>(8);
  EXPECT_TRUE(store->store(1, 0));
  EXPECT_TRUE(store->store(2, 1));
  EXPECT_FALSE(store->store(1, 1));  // already there: used now, still on node 0
  EXPECT_EQ(store->node_of(1), 0);
  EXPECT_EQ(store->node_of(2), 1);
  EXPECT_THROW((void)store->node_of(3), InternalError);
  const KvBlockManager on_node_1(16, 4, {}, 0, store, 1);
  const std::vector<std::uint64_t> keys{7, 1, 2};
  EXPECT_EQ(on_node_1.host_remote_tokens(keys, 1, 6), 4);  // block 1 (4 tokens) on node 0, block 2 local
  EXPECT_EQ(on_node_1.host_remote_tokens(keys, 1, 3), 3);
  const KvBlockManager on_node_0(16, 4, {}, 0, store, 0);
  EXPECT_EQ(on_node_0.host_remote_tokens(keys, 1, 6), 2);  // block 2's 2 tokens on node 1
}

// A disk tier shared by managers (links.disk_kv_scope node or cluster) behind host tiers of their own: what
// one writes, another (its host tier empty) reads from disk, counted remote when it lies on another node's
// drives; a copy already on the shared disk is not written again.
TEST(HostKvTier, ASharedDiskServesWhatAnotherManagerWrote) {
  auto disk = std::make_shared<HostKvTier>(32);
  KvBlockManager writer(10, 4, {}, 4, nullptr, 0, 0, disk), reader(10, 4, {}, 4, nullptr, 1, 0, disk),
      neighbour(10, 4, {}, 4, nullptr, 0, 0, disk);
  const std::vector<std::uint64_t> keys{1, 2, 3, 4};
  writer.grow_to(0, 0, 16);
  EXPECT_EQ(writer.share_computed(0, keys, 16).disk, 4);
  EXPECT_EQ(&writer.disk_tier(), &reader.disk_tier());
  for (KvBlockManager* other : {&reader, &neighbour}) {
    const PrefixCache::Hit hit = other->prefix_hit(keys);
    EXPECT_EQ(hit.blocks, 0);
    EXPECT_EQ(hit.host_blocks, 0);
    EXPECT_EQ(hit.disk_blocks, 4);
  }
  EXPECT_EQ(reader.disk_remote_tokens(keys, 0, 14), 14);  // node 1 reads node 0's copies
  EXPECT_EQ(neighbour.disk_remote_tokens(keys, 0, 14), 0);
  neighbour.grow_to(5, 0, 16);
  const KvBlockManager::Copies copies = neighbour.share_computed(5, keys, 16);
  EXPECT_EQ(copies.host, 4);                                                 // its own host tier
  EXPECT_EQ(copies.disk, 0);                                                 // already on the shared disk
  EXPECT_THROW((KvBlockManager(10, 4, {}, 0, nullptr, 0, 0, disk)), Error);  // a disk tier needs a host tier
}

}  // namespace
}  // namespace duplex::runtime
