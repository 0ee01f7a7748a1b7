// Prefix caching's bookkeeping: block keys from prompt hashes, the cache's references and eviction order, and
// the KV block manager counting a cached block once and evicting unheld ones when memory is short.
#include <gtest/gtest.h>

#include "duplex/base/error.hpp"

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

TEST(PrefixCache, EntriesWeighUnitsAndOneCanBeReleasedAlone) {
  PrefixCache cache;
  EXPECT_TRUE(cache.insert(1, 10, 3));
  EXPECT_TRUE(cache.insert(1, 11, 1));
  EXPECT_TRUE(cache.insert(1, 12, 3));
  EXPECT_EQ(cache.cached_units(), 7);
  cache.release_one(1, 10);  // behind a window: evictable at once, the others still held
  EXPECT_EQ(cache.evictable_units(), 3);
  EXPECT_EQ(cache.held_by(1), 2);
  EXPECT_THROW(cache.release_one(1, 10), InternalError);
  const std::vector<std::uint64_t> keys{10, 11, 12};
  EXPECT_EQ(cache.lookup(keys).units, 7);
  EXPECT_EQ(cache.lookup(keys).evictable, 3);
  EXPECT_EQ(cache.release(1), 4);  // the two it still held: 12, then 11
  EXPECT_EQ(cache.holders(11), 0);
  // Eviction frees whole entries, oldest released first, until the units asked for are free.
  EXPECT_EQ(cache.evict(2), 3);  // key 10
  EXPECT_EQ(cache.evict(2), 3);  // key 12 is enough
  EXPECT_EQ(cache.evict(1), 1);  // key 11
  EXPECT_EQ(cache.cached_units(), 0);
  EXPECT_EQ(cache.evictable_units(), 0);
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
  kv.take_prefix(1, keys, hit);
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

// Sliding window of 8 tokens over 4-token blocks, every layer windowed: a block is one unit, and a request
// starting at token c needs the blocks holding tokens [c - 7, c) cached, not the ones before.
TEST(KvBlockManagerWindowPrefix, AHitNeedsOnlyTheWindowsBlocks) {
  KvBlockManager kv(10, 4, {8});
  const std::vector<std::uint64_t> keys{1, 2, 3, 4, 5};  // a 20-token shared prompt
  kv.grow_to(0, 0, 20);
  kv.share_computed(0, keys, 20);
  EXPECT_EQ(kv.prefix_cache().cached_blocks(), 5);
  kv.grow_to(0, 20, 21);  // decoding token 20: tokens 13..20, blocks 3..5; blocks 0..2 go back to the cache
  EXPECT_EQ(kv.units_of(0), 3);
  EXPECT_EQ(kv.used_units(), 6);  // 5 cached (3 evictable) and block 5
  EXPECT_EQ(kv.prefix_cache().evictable_units(), 3);
  // Another request with the prompt and more starts at token 20: its window needs blocks 3 and 4.
  PrefixCache::Hit hit = kv.prefix_hit(keys, 24);
  EXPECT_EQ(hit.blocks, 5);
  EXPECT_EQ(hit.window_first, 3);
  EXPECT_EQ(hit.units, 2);
  EXPECT_EQ(hit.evictable, 0);  // request 0 holds both
  // The same prompt alone: it starts at its last token, 19, whose window reaches back to token 12: block 3.
  EXPECT_EQ(kv.prefix_hit(keys, 19).window_first, 3);
  // Blocks 0..2 evicted: a full-attention cache would miss; the window hits.
  kv.grow_to(1, 0, 28);  // 7 blocks: evicts the 3 evictable ones (10 - 6 free = 4 short by 3)
  EXPECT_EQ(kv.prefix_cache().cached_blocks(), 2);
  hit = kv.prefix_hit(keys, 24);
  EXPECT_EQ(hit.blocks, 5);
  EXPECT_FALSE(kv.can_grow_with(2, hit, 20, 21));  // it needs 1 block of its own: none free
  kv.release(1);
  ASSERT_TRUE(kv.can_grow_with(2, hit, 20, 21));
  kv.take_prefix(2, keys, hit);
  kv.grow_to(2, 20, 21);
  EXPECT_EQ(kv.units_of(2), 3);
  EXPECT_EQ(kv.used_units(), 2 + 1 + 1);  // the two cached blocks once, each request's own block 5
  // Block 4 under another key: a hit of 4 blocks (starting at token 16, whose window needs blocks 2 and 3)
  // misses block 2, and so do the shorter ones; a 4-token window hits 4 blocks (it needs block 3 alone).
  const std::vector<std::uint64_t> other{1, 2, 3, 4, 99};
  EXPECT_EQ(kv.prefix_hit(other, 24).blocks, 0);
  KvBlockManager narrow(10, 4, {4});
  narrow.grow_to(0, 0, 20);
  narrow.share_computed(0, keys, 20);
  EXPECT_EQ(narrow.prefix_hit(other, 24).blocks, 4);
  EXPECT_EQ(narrow.prefix_hit(other, 24).window_first, 3);  // token 16's window: tokens 13..16
}

// One full layer and three windowed (window 8, 4-token blocks): block j is cached as two entries, the full
// layer's (1 unit) and the windowed layers' (3 units); a hit needs the full layer's blocks from the first.
TEST(KvBlockManagerWindowPrefix, FullAndWindowedLayersCacheTheirOwnBlocks) {
  KvBlockManager kv(10, 4, {8, 1, 3});
  const std::vector<std::uint64_t> keys{1, 2, 3, 4, 5};
  kv.grow_to(0, 0, 20);
  kv.share_computed(0, keys, 20);
  EXPECT_EQ(kv.prefix_cache().cached_blocks(), 10);
  EXPECT_EQ(kv.prefix_cache().cached_units(), 20);
  kv.grow_to(0, 20, 21);  // the windowed layers give blocks 0..2 back: 9 units evictable
  EXPECT_EQ(kv.units_of(0), 1 * 6 + 3 * 3);
  EXPECT_EQ(kv.prefix_cache().evictable_units(), 9);
  const PrefixCache::Hit hit = kv.prefix_hit(keys, 24);
  EXPECT_EQ(hit.blocks, 5);
  EXPECT_EQ(hit.units, 1 * 5 + 3 * 2);
  ASSERT_TRUE(kv.can_grow_with(1, hit, 20, 21));
  kv.take_prefix(1, keys, hit);
  kv.grow_to(1, 20, 21);
  EXPECT_EQ(kv.units_of(1), 1 * 6 + 3 * 3);
  EXPECT_EQ(kv.used_units(), 20 + 4 + 4);  // the cache's 20, each request's own block 5 in both groups
  // Without the full layer's block 0 nothing hits, whatever the windowed layers hold.
  EXPECT_EQ(kv.prefix_hit(std::vector<std::uint64_t>{9, 2, 3, 4, 5}, 24).blocks, 0);
  // Request 0 moves past block 3, which request 1 still holds: it gives it up without freeing it, so
  // entering block 6 takes a whole new block, 4 units, where its own block 3 would have made room for 3.
  EXPECT_EQ(kv.extra_units_needed(0, 24, 25), 1 + 3);
  kv.grow_to(0, 24, 25);
  EXPECT_EQ(kv.units_of(0), 1 * 7 + 3 * 3);
  EXPECT_EQ(kv.used_units(), 28 + 4);
  kv.release(0);
  kv.release(1);
  EXPECT_EQ(kv.used_units(), kv.prefix_cache().cached_units());
  EXPECT_EQ(kv.prefix_cache().evictable_units(), 20);
}

// Chunked attention of 8 tokens over 4-token blocks: a request starting at token c needs the blocks from
// its chunk's first token, c - c % 8; at a chunk boundary none.
TEST(KvBlockManagerWindowPrefix, ChunkedAttentionNeedsTheChunkSoFar) {
  KvBlockManager kv(10, 4, {8, 0, 1, true});
  const std::vector<std::uint64_t> keys{1, 2, 3, 4, 5};
  kv.grow_to(0, 0, 20);
  kv.share_computed(0, keys, 20);
  EXPECT_EQ(kv.prefix_hit(keys, 24).window_first, 4);  // token 20's chunk starts at 16: block 4
  EXPECT_EQ(kv.prefix_hit(keys, 16).blocks, 4);        // at most 16 tokens: 4 blocks
  EXPECT_EQ(kv.prefix_hit(keys, 16).window_first, 4);  // token 16 begins a chunk: no block needed
  EXPECT_EQ(kv.prefix_hit(keys, 16).units, 0);
}

// A host tier behind a windowed cache keeps whole blocks (every layer). One full layer and three windowed
// (window 8, 4-token blocks, 4 units a block): request 0 computes a 20-token prompt (copied to the host tier
// as it is cached); request 1 fills the device, evicting every cached block. The prompt again then loads all
// 5 blocks from the host tier, and holds their windowed share only from its window on (tokens 13..20:
// blocks 3..5); caching them keeps the windowed share of blocks 0..2 out.
TEST(KvBlockManagerWindowPrefix, AHostTierContinuesAWindowedHit) {
  KvBlockManager kv(10, 4, {8, 1, 3}, 16);
  const std::vector<std::uint64_t> keys{1, 2, 3, 4, 5};
  kv.grow_to(0, 0, 20);
  EXPECT_EQ(kv.share_computed(0, keys, 20).host, 5);
  kv.release(0);
  kv.grow_to(1, 0, 40);  // 10 blocks of every layer: the whole cache
  EXPECT_EQ(kv.prefix_cache().cached_blocks(), 0);
  kv.release(1);
  const PrefixCache::Hit hit = kv.prefix_hit(keys, 20);
  EXPECT_EQ(hit.blocks, 0);
  EXPECT_EQ(hit.host_blocks, 5);  // the prompt's reach: blocks 0..4 hold tokens 0..19
  ASSERT_TRUE(kv.can_grow_with(2, hit, 20, 21));
  kv.take_prefix(2, keys, hit);
  kv.grow_to(2, 20, 21);
  EXPECT_EQ(kv.units_of(2), 1 * 6 + 3 * 3);
  kv.share_computed(2, keys, 21);
  // The full layer's share of all 5 blocks, the windowed share of blocks 3 and 4 only.
  EXPECT_EQ(kv.prefix_cache().cached_blocks(), 5 + 2);
  EXPECT_EQ(kv.prefix_cache().cached_units(), 5 * 1 + 2 * 3);
  EXPECT_EQ(kv.used_units(), kv.units_of(2));
  // A shorter prompt's window (it starts at token 11: tokens 4..11) needs the windowed share of blocks 1 and
  // 2, which the device does not hold: it loads all 3 blocks from the host tier, the full layer's share too.
  const PrefixCache::Hit shorter = kv.prefix_hit(std::span(keys).first(3), 11);
  EXPECT_EQ(shorter.blocks, 0);
  EXPECT_EQ(shorter.host_blocks, 3);
}

}  // namespace
}  // namespace duplex::runtime
