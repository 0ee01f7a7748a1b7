// Prefix caching's bookkeeping: block keys from prompt hashes, the cache's references and eviction order, and
// the KV block manager counting a cached block once and evicting unheld ones when memory is short.
#include <gtest/gtest.h>

#include "duplex/runtime/scheduler/kv_block_manager.hpp"
#include "duplex/runtime/scheduler/prefix_cache.hpp"

namespace duplex::runtime {
namespace {

RequestSpec prompt(std::int64_t input, std::vector<std::uint64_t> hashes, std::int64_t hash_block) {
  RequestSpec r{0, Time{}, input, 1};
  r.content_hashes = std::move(hashes);
  r.hash_block_tokens = hash_block;
  r.hashed_tokens = std::min(input, static_cast<std::int64_t>(r.content_hashes.size()) * hash_block);
  return r;
}

TEST(PrefixBlockKeys, WholeBlocksInsideTheHashedPartOnly) {
  EXPECT_TRUE(prefix_block_keys(prompt(100, {}, 0), 16).empty());
  // 40 hashed tokens of a 100-token prompt: blocks [0, 16) and [16, 32); [32, 48) is not wholly hashed.
  EXPECT_EQ(prefix_block_keys(prompt(100, {7}, 40), 16).size(), 2u);
  // Hashes covering more than the prompt: the prompt's whole blocks (100 / 16 = 6).
  EXPECT_EQ(prefix_block_keys(prompt(100, {1, 2}, 512), 16).size(), 6u);
  // Mooncake-style 512-token hash blocks over 16-token KV blocks: 32 keys per hash.
  EXPECT_EQ(prefix_block_keys(prompt(2000, {1, 2, 3, 4}, 512), 16).size(), 125u);
}

TEST(PrefixBlockKeys, EqualWhereTheHashesAgreeAndNowhereElse) {
  const auto a = prefix_block_keys(prompt(1024, {1, 2}, 512), 16);
  const auto b = prefix_block_keys(prompt(1024, {1, 3}, 512), 16);
  const auto c = prefix_block_keys(prompt(1024, {9, 4}, 512), 16);
  ASSERT_EQ(a.size(), 64u);
  for (std::size_t j = 0; j < 32; ++j) EXPECT_EQ(a[j], b[j]) << j;   // same first hash block
  for (std::size_t j = 32; j < 64; ++j) EXPECT_NE(a[j], b[j]) << j;  // different second one
  for (std::size_t j = 0; j < 64; ++j) EXPECT_NE(a[j], c[j]) << j;   // different from the first block on
  // Keys of one prompt are distinct (the block index is in the key).
  for (std::size_t j = 1; j < 32; ++j) EXPECT_NE(a[j], a[0]);
  // A KV block straddling two hash blocks takes the later one's hash (which stands for all before it).
  const auto d = prefix_block_keys(prompt(96, {1, 2, 3}, 24), 32);
  const auto e = prefix_block_keys(prompt(96, {1, 5, 3}, 24), 32);
  ASSERT_EQ(d.size(), 2u);  // 72 hashed tokens: 2 whole blocks of 32
  EXPECT_NE(d[0], e[0]);    // tokens [0, 32): its last token, 31, is in hash block 1, where they differ
  const auto f = prefix_block_keys(prompt(96, {1, 2, 7}, 24), 32);
  EXPECT_EQ(d[0], f[0]);  // hash blocks 0 and 1 agree
  EXPECT_NE(d[1], f[1]);  // tokens [32, 64): its last token, 63, is in hash block 2
}

TEST(PrefixCache, ReferencesEvictableAndEvictionOrder) {
  PrefixCache cache;
  EXPECT_TRUE(cache.insert(1, 10));
  EXPECT_TRUE(cache.insert(1, 11));
  EXPECT_FALSE(cache.insert(2, 10));  // cached already: request 2's copy stays its own
  EXPECT_EQ(cache.held_by(2), 0);
  EXPECT_EQ(cache.cached_blocks(), 2);
  EXPECT_EQ(cache.evictable_blocks(), 0);
  const std::vector<std::uint64_t> keys{10, 11, 12};
  EXPECT_EQ(cache.lookup(keys).blocks, 2);
  EXPECT_EQ(cache.lookup(keys).evictable, 0);
  cache.acquire(3, std::span(keys).first(2));
  EXPECT_EQ(cache.release(1), 2);
  EXPECT_EQ(cache.evictable_blocks(), 0);  // request 3 still holds both
  EXPECT_EQ(cache.release(3), 2);
  EXPECT_EQ(cache.evictable_blocks(), 2);
  EXPECT_EQ(cache.lookup(keys).evictable, 2);
  // Released tail first: block 11 is evicted before block 10.
  cache.evict(1);
  EXPECT_TRUE(cache.contains(10));
  EXPECT_FALSE(cache.contains(11));
  EXPECT_EQ(cache.lookup(keys).blocks, 1);
  EXPECT_EQ(cache.release(3), 0);  // holds nothing now
}

TEST(PrefixCache, LeastRecentlyReleasedGoesFirst) {
  PrefixCache cache;
  cache.insert(1, 100);
  cache.insert(2, 200);
  cache.release(2);
  cache.release(1);
  cache.evict(1);
  EXPECT_FALSE(cache.contains(200));
  EXPECT_TRUE(cache.contains(100));
  // Taking an evictable block back protects it.
  const std::vector<std::uint64_t> k{100};
  cache.acquire(3, k);
  EXPECT_EQ(cache.evictable_blocks(), 0);
}

TEST(KvBlockManagerPrefix, CachedBlocksCountOnceAndAreEvictedWhenShort) {
  KvBlockManager kv(10, 4);
  const std::vector<std::uint64_t> keys{1, 2, 3};  // a 12-token shared prefix
  kv.grow_to(0, 0, 14);                            // request 0: 14 tokens, 4 blocks
  kv.share_computed(0, keys, 14);
  EXPECT_EQ(kv.prefix_cache().cached_blocks(), 3);
  EXPECT_EQ(kv.used_units(), 4);
  // Request 1 begins with the same 3 blocks: it adds 1 own block for 14 tokens.
  const PrefixCache::Hit hit = kv.prefix_hit(keys);
  EXPECT_EQ(hit.blocks, 3);
  EXPECT_TRUE(kv.can_grow_with(1, hit, 12, 14));
  kv.take_prefix(1, keys, hit.blocks);
  kv.grow_to(1, 12, 14);
  EXPECT_EQ(kv.units_of(1), 4);
  EXPECT_EQ(kv.used_units(), 5);
  kv.release(0);
  kv.release(1);
  // The 3 cached blocks stay, unheld: 7 free, 3 evictable.
  EXPECT_EQ(kv.used_units(), 3);
  EXPECT_EQ(kv.free_units(), 7);
  EXPECT_EQ(kv.prefix_cache().evictable_blocks(), 3);
  // A request needing 9 blocks evicts 2 of them (the tail first), and one stays.
  EXPECT_TRUE(kv.can_grow_to(2, 0, 36));
  EXPECT_FALSE(kv.can_grow_to(2, 0, 41));
  kv.grow_to(2, 0, 36);
  EXPECT_EQ(kv.used_units(), 10);
  EXPECT_EQ(kv.prefix_cache().cached_blocks(), 1);
  EXPECT_EQ(kv.prefix_hit(keys).blocks, 1);
}

TEST(KvBlockManagerPrefix, TakingEvictableBlocksLeavesFewerToEvict) {
  KvBlockManager kv(4, 4);
  const std::vector<std::uint64_t> keys{1, 2};
  kv.grow_to(0, 0, 8);
  kv.share_computed(0, keys, 8);
  kv.release(0);  // 2 cached, unheld; 2 free
  const PrefixCache::Hit hit = kv.prefix_hit(keys);
  EXPECT_EQ(hit.evictable, 2);
  // Taking both and growing to 4 blocks fits (2 own); to 5 blocks does not: the 2 taken cannot be evicted.
  EXPECT_TRUE(kv.can_grow_with(1, hit, 8, 16));
  EXPECT_FALSE(kv.can_grow_with(1, hit, 8, 17));
  // Without the hit, 4 blocks fit only by evicting both.
  EXPECT_TRUE(kv.can_grow_with(1, PrefixCache::Hit{}, 0, 16));
}

TEST(KvBlockManagerPrefix, ABlockCachedByAnotherStaysOwn) {
  KvBlockManager kv(8, 4);
  const std::vector<std::uint64_t> keys{1, 2};
  kv.grow_to(0, 0, 8);
  kv.grow_to(1, 0, 8);  // both compute the same prefix in one step
  kv.share_computed(0, keys, 8);
  kv.share_computed(1, keys, 8);
  EXPECT_EQ(kv.prefix_cache().cached_blocks(), 2);
  EXPECT_EQ(kv.prefix_cache().held_by(1), 0);
  EXPECT_EQ(kv.used_units(), 4);
  kv.release(1);
  EXPECT_EQ(kv.used_units(), 2);  // request 1's copies were its own
  kv.release(0);
  EXPECT_EQ(kv.used_units(), 2);  // request 0's are the cache's
  EXPECT_EQ(kv.prefix_cache().evictable_blocks(), 2);
}

}  // namespace
}  // namespace duplex::runtime
