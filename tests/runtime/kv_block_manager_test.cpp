#include <gtest/gtest.h>

#include <algorithm>

#include "duplex/base/error.hpp"
#include "duplex/runtime/scheduler/kv_block_manager.hpp"

namespace duplex::runtime {
namespace {

TEST(KvBlockManager, BlocksRoundUp) {
  KvBlockManager kv(10, 16);
  EXPECT_EQ(kv.blocks_for(0), 0);
  EXPECT_EQ(kv.blocks_for(1), 1);
  EXPECT_EQ(kv.blocks_for(16), 1);
  EXPECT_EQ(kv.blocks_for(17), 2);
}

TEST(KvBlockManager, GrowReleaseExactAccounting) {
  KvBlockManager kv(4, 16);
  EXPECT_TRUE(kv.can_grow_to(1, 0, 40));
  kv.grow_to(1, 0, 40);  // 3 blocks
  EXPECT_EQ(kv.units_of(1), 3);
  EXPECT_EQ(kv.used_blocks(), 3);
  kv.grow_to(1, 40, 48);  // still 3
  EXPECT_EQ(kv.used_blocks(), 3);
  kv.grow_to(1, 0, 10);  // never shrinks
  EXPECT_EQ(kv.units_of(1), 3);
  EXPECT_TRUE(kv.can_grow_to(2, 0, 16));
  EXPECT_FALSE(kv.can_grow_to(2, 0, 17));
  EXPECT_EQ(kv.extra_units_needed(2, 0, 17), 2);
  kv.grow_to(2, 0, 16);
  EXPECT_EQ(kv.free_units(), 0);
  EXPECT_THROW(kv.grow_to(2, 16, 17), InternalError);  // over capacity is refused, not allowed
  EXPECT_EQ(kv.used_blocks(), 4);
  kv.release(1);
  EXPECT_EQ(kv.used_blocks(), 1);
  EXPECT_EQ(kv.units_of(1), 0);
  kv.release(1);  // no-op
  EXPECT_EQ(kv.used_blocks(), 1);
  EXPECT_EQ(kv.num_holders(), 1);
}

// Sliding window of 64 tokens, 16-token blocks: a step starting at position c needs tokens
// [max(0, c - 63), total); the blocks wholly behind that are returned when the request grows.
TEST(KvBlockManager, SlidingWindowFreesTheBlocksBehindIt) {
  KvBlockManager kv(20, 16, {64});
  EXPECT_EQ(kv.blocks_for_step(0, 100), 7);   // a whole prompt: every token
  EXPECT_EQ(kv.blocks_for_step(100, 101), 5);  // tokens 37..100: blocks 2..6
  EXPECT_EQ(kv.blocks_for_step(63, 64), 4);    // tokens 0..63: the window just full
  EXPECT_EQ(kv.blocks_for_step(64, 65), 5);    // tokens 1..64
  EXPECT_EQ(kv.blocks_for_step(79, 80), 4);    // tokens 16..79: block 0 is behind
  EXPECT_EQ(kv.blocks_for_step(90, 120), 7);   // a chunk: tokens 27..119, blocks 1..7
  kv.grow_to(1, 0, 100);
  EXPECT_EQ(kv.used_blocks(), 7);
  kv.grow_to(1, 100, 101);  // the first decode step frees blocks 0 and 1
  EXPECT_EQ(kv.units_of(1), 5);
  EXPECT_EQ(kv.used_blocks(), 5);
  for (std::int64_t c = 101; c < 1000; ++c) {
    kv.grow_to(1, c, c + 1);
    ASSERT_LE(kv.units_of(1), 5) << c;  // ceil(63 / 16) + 1 blocks at most
    ASSERT_GE(kv.units_of(1), 4) << c;
  }
  KvBlockManager full(20, 16);  // no window: the same steps keep every block
  full.grow_to(1, 0, 100);
  full.grow_to(1, 100, 101);
  EXPECT_EQ(full.units_of(1), 7);
}

// Chunked attention (Llama 4) of 64 tokens, 16-token blocks, one full layer and three chunked: a step
// starting at position c needs the chunked layers' tokens [c - c % 64, total) only, so entering a new chunk
// frees the blocks of the one before (sawtooth), where a 64-token window would keep them.
TEST(KvBlockManager, ChunkedAttentionFreesThePastChunksBlocks) {
  KvBlockManager kv(20, 16, {64, 1, 3, true});
  EXPECT_EQ(kv.units_for_step(0, 100), 4 * 7);            // the prompt: every token in every layer
  EXPECT_EQ(kv.units_for_step(100, 101), 1 * 7 + 3 * 3);  // tokens 64..100 in the chunked layers: blocks 4..6
  EXPECT_EQ(kv.units_for_step(127, 128), 1 * 8 + 3 * 4);  // tokens 64..127: the chunk just full
  EXPECT_EQ(kv.units_for_step(128, 129), 1 * 9 + 3 * 1);  // a new chunk: token 128 alone
  EXPECT_EQ(kv.units_for_step(120, 136), 1 * 9 + 3 * 5);  // a prefill chunk across the boundary: 64..135
  KvBlockManager windowed(20, 16, {64, 1, 3});
  EXPECT_EQ(windowed.units_for_step(128, 129), 1 * 9 + 3 * 5);  // the window keeps tokens 65..128
  kv.grow_to(1, 0, 100);
  kv.grow_to(1, 100, 101);
  EXPECT_EQ(kv.units_of(1), 16);
  std::int64_t most = 0;
  for (std::int64_t c = 101; c < 1000; ++c) {
    kv.grow_to(1, c, c + 1);
    most = std::max(most, kv.units_of(1) - kv.blocks_for(c + 1));  // the chunked layers' share
    ASSERT_LE(kv.units_of(1) - kv.blocks_for(c + 1), 3 * 4) << c;
  }
  EXPECT_EQ(most, 3 * 4);
}

// One full layer and three windowed ones (window 64, 16-token blocks): a unit is a quarter block; the full
// layer keeps every token's block, the windowed ones only the window's.
TEST(KvBlockManager, SomeLayersWindowedCountsPerLayerGroup) {
  KvBlockManager kv(20, 16, {64, 1, 3});
  EXPECT_EQ(kv.units_per_block(), 4);
  EXPECT_EQ(kv.units_for_step(0, 100), 4 * 7);            // the prompt: every layer, every token
  EXPECT_EQ(kv.units_for_step(100, 101), 1 * 7 + 3 * 5);  // decoding: the window's 5 blocks in 3 layers
  kv.grow_to(1, 0, 100);
  EXPECT_EQ(kv.used_blocks(), 7);
  kv.grow_to(1, 100, 101);
  EXPECT_EQ(kv.units_of(1), 22);
  EXPECT_EQ(kv.used_blocks(), 6);  // 22 units, 5.5 blocks, reported rounded up
  for (std::int64_t c = 101; c < 1000; ++c) kv.grow_to(1, c, c + 1);
  EXPECT_EQ(kv.units_of(1), 1 * kv.blocks_for(1000) + 3 * kv.blocks_for_step(999, 1000));
  EXPECT_EQ(kv.free_units(), 20 * 4 - kv.units_of(1));
  EXPECT_FALSE(kv.can_grow_to(2, 0, 16 * 20));  // a whole 320-token prompt needs 20 blocks: 80 units
}

TEST(KvBlockManager, BadSizesAreUserErrors) {
  EXPECT_THROW(KvBlockManager(0, 16), Error);
  EXPECT_THROW(KvBlockManager(4, 0), Error);
  EXPECT_THROW(KvBlockManager(4, 16, {-1}), Error);
  EXPECT_THROW(KvBlockManager(4, 16, {64, -1, 1}), Error);
  EXPECT_THROW(KvBlockManager(4, 16, {64, 1, 0}), Error);
}

TEST(KvBlockManager, CapacityFromMemory) {
  // 1 GiB for KV, 160 KiB per token (e.g. 40 layers * 2 * 8 heads * 128 * 2 B), 16-token blocks.
  const double per_token = 40.0 * 2 * 8 * 128 * 2;
  EXPECT_EQ(kv_blocks_for_memory(1024.0 * 1024 * 1024, per_token, 16), 409);  // floor(1 GiB / 2.5 MiB)
  EXPECT_THROW(kv_blocks_for_memory(1000.0, per_token, 16), Error);          // not one block
  EXPECT_THROW(kv_blocks_for_memory(-5.0, per_token, 16), Error);            // weights exceed memory
  EXPECT_THROW(kv_blocks_for_memory(1e9, 0.0, 16), Error);
}

}  // namespace
}  // namespace duplex::runtime
