// The paged KV cache's memory spaces: a prompt's blocks in the prefill space, shared with other tables and
// kept by the prefix cache, move to the KV spaces by migration (or when their prompt is released while others
// still need them), every table and kept mark following them; freed blocks read as NaN.
#include "duplex/runtime/functional/paged_kv_cache.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "duplex/base/error.hpp"

namespace duplex::runtime::functional {
namespace {

constexpr int kLayers = 2;
constexpr std::int64_t kBlockTokens = 2;
constexpr std::uint16_t kNaN = 0x7e00;

// 4 KV-space blocks (0..3) and 3 prefill-space blocks (4..6) of 2 tokens x 1 head x 2 values.
PagedKvCache make_cache() {
  return PagedKvCache(kLayers, 1, 2, kBlockTokens, 4, false, 3);
}

// Writes a value naming (layer, request, position) into each K and V slot of `id`'s first `tokens` tokens.
void fill(PagedKvCache& c, std::int64_t id, std::int64_t tokens) {
  for (int layer = 0; layer < kLayers; ++layer)
    for (std::int64_t pos = 0; pos < tokens; ++pos)
      for (int i = 0; i < 2; ++i) {
        c.k(layer, id, pos)[i] = static_cast<std::uint16_t>(1000 * layer + 100 * id + 10 * pos + i);
        c.v(layer, id, pos)[i] = static_cast<std::uint16_t>(5000 + 1000 * layer + 100 * id + 10 * pos + i);
      }
}

// `id`'s first `tokens` tokens read as `owner`'s fill() wrote them.
void expect_values(const PagedKvCache& c, std::int64_t id, std::int64_t owner, std::int64_t tokens) {
  for (int layer = 0; layer < kLayers; ++layer)
    for (std::int64_t pos = 0; pos < tokens; ++pos)
      for (int i = 0; i < 2; ++i) {
        EXPECT_EQ(c.k(layer, id, pos)[i], 1000 * layer + 100 * owner + 10 * pos + i) << layer << " " << pos;
        EXPECT_EQ(c.v(layer, id, pos)[i], 5000 + 1000 * layer + 100 * owner + 10 * pos + i);
      }
}

bool freed(PagedKvCache& c, std::int32_t block) {
  const std::int64_t n = kBlockTokens * c.token_values();
  for (int layer = 0; layer < kLayers; ++layer)
    for (std::int64_t i = 0; i < n; ++i)
      if (c.k_pool(layer)[block * n + i] != kNaN || c.v_pool(layer)[block * n + i] != kNaN) return false;
  return true;
}

void migrate(PagedKvCache& c, std::int64_t id) {
  const std::vector<BlockMove> moves = c.plan_migration(id);
  for (int layer = 0; layer < kLayers; ++layer)
    for (const BlockMove& m : moves) c.copy_block(layer, m);
  c.complete_migration(moves);
}

TEST(PagedKvCacheSpaces, EachSpaceHandsOutItsOwnBlocks) {
  PagedKvCache c = make_cache();
  EXPECT_EQ(c.num_blocks(), 7);
  EXPECT_EQ(c.kv_blocks(), 4);
  EXPECT_EQ(c.prefill_blocks(), 3);
  c.reserve(0, 3, KvSpace::prefill);
  c.reserve(1, 1);
  EXPECT_EQ(c.block_table(0), (std::vector<std::int32_t>{4, 5}));
  EXPECT_EQ(c.block_table(1), (std::vector<std::int32_t>{0}));
  EXPECT_EQ(c.free_blocks(KvSpace::prefill), 1);
  EXPECT_EQ(c.free_blocks(), 3);
  EXPECT_EQ(c.own_prefill_blocks(0), 2);
  try {
    c.reserve(2, 4, KvSpace::prefill);
    FAIL() << "the prefill space gave more blocks than it has";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the prefill space of 3 blocks is exhausted"), std::string::npos)
        << e.what();
  }
  PagedKvCache no_prefill(kLayers, 1, 2, kBlockTokens, 4);
  EXPECT_THROW(no_prefill.reserve(0, 1, KvSpace::prefill), Error);
  EXPECT_THROW(PagedKvCache(kLayers, 1, 2, kBlockTokens, 4, false, -1), Error);
}

// Request 0 prefills 4 tokens (blocks 4, 5); request 1 shares its first block, then prefills a block of its
// own. Request 1 migrates only its own block; request 0's migration moves both of its blocks, and request 1's
// table follows the shared one.
TEST(PagedKvCacheSpaces, MigrationMovesOwnBlocksAndEveryTableFollows) {
  PagedKvCache c = make_cache();
  c.reserve(0, 4, KvSpace::prefill);
  fill(c, 0, 4);
  c.keep(4);  // the prefix cache keeps its first block
  c.attach(1, {4});
  c.reserve(1, 3, KvSpace::prefill);
  EXPECT_EQ(c.block_table(1), (std::vector<std::int32_t>{4, 6}));
  EXPECT_EQ(c.own_prefill_blocks(1), 1);
  const std::vector<BlockMove> own = c.plan_migration(1);
  EXPECT_EQ(own, (std::vector<BlockMove>{{6, 0}}));
  for (int layer = 0; layer < kLayers; ++layer) c.copy_block(layer, own[0]);
  c.complete_migration(own);
  EXPECT_EQ(c.block_table(1),
            (std::vector<std::int32_t>{4, 0}));  // the shared block stays in the prefill space
  EXPECT_TRUE(freed(c, 6));
  EXPECT_EQ(c.take_moves(), own);
  migrate(c, 0);
  EXPECT_EQ(c.block_table(0), (std::vector<std::int32_t>{1, 2}));
  EXPECT_EQ(c.block_table(1), (std::vector<std::int32_t>{1, 0}));
  EXPECT_EQ(c.take_moves(), (std::vector<BlockMove>{{4, 1}, {5, 2}}));
  EXPECT_TRUE(c.take_moves().empty());
  expect_values(c, 0, 0, 4);
  expect_values(c, 1, 0, 2);
  EXPECT_EQ(c.free_blocks(KvSpace::prefill), 3);
  EXPECT_TRUE(freed(c, 4));
  EXPECT_TRUE(freed(c, 5));
  // The kept mark moved with block 4: block 1 outlives both tables until the cache drops it.
  c.release(0);
  c.release(1);
  EXPECT_FALSE(freed(c, 1));
  EXPECT_TRUE(freed(c, 2));
  EXPECT_EQ(c.free_blocks(), 3);
  c.drop(1);
  EXPECT_EQ(c.free_blocks(), 4);
  EXPECT_TRUE(freed(c, 1));
}

// A prompt released (preempted) before its migration: the prefill-space blocks another table holds or the
// cache keeps move to the KV spaces with every layer's K/V; the others are freed.
TEST(PagedKvCacheSpaces, ReleasedPromptLeavesItsSharedBlocksInTheKvSpaces) {
  PagedKvCache c = make_cache();
  c.reserve(0, 6, KvSpace::prefill);  // blocks 4, 5, 6
  fill(c, 0, 6);
  c.attach(1, {4});  // held by request 1
  c.keep(5);         // kept by the prefix cache
  c.release(0);
  EXPECT_EQ(c.take_moves(), (std::vector<BlockMove>{{4, 0}, {5, 1}}));
  EXPECT_EQ(c.block_table(1), (std::vector<std::int32_t>{0}));
  expect_values(c, 1, 0, 2);
  EXPECT_EQ(c.free_blocks(KvSpace::prefill), 3);
  EXPECT_TRUE(freed(c, 6));
  c.attach(2, {0, 1});  // the kept block went with its mark
  expect_values(c, 2, 0, 4);
  // A released request that shares another prompt's prefill-space block leaves it where it is.
  c.reserve(3, 2, KvSpace::prefill);
  c.attach(4, c.block_table(3));
  c.release(4);
  EXPECT_TRUE(c.take_moves().empty());
  EXPECT_EQ(c.own_prefill_blocks(3), 1);
}

TEST(PagedKvCacheSpaces, MigrationNeedsFreeKvBlocks) {
  PagedKvCache c(kLayers, 1, 2, kBlockTokens, 1, false, 2);
  c.reserve(0, 2);
  c.reserve(1, 2, KvSpace::prefill);
  try {
    c.plan_migration(1);
    FAIL() << "migrated into a full KV space";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("request 1's K/V leaves the prefill space"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace duplex::runtime::functional
