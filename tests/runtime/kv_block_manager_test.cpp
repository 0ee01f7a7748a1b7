#include <gtest/gtest.h>

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
  EXPECT_TRUE(kv.can_grow_to(1, 40));
  kv.grow_to(1, 40);  // 3 blocks
  EXPECT_EQ(kv.blocks_of(1), 3);
  EXPECT_EQ(kv.used_blocks(), 3);
  kv.grow_to(1, 48);  // still 3
  EXPECT_EQ(kv.used_blocks(), 3);
  kv.grow_to(1, 10);  // never shrinks
  EXPECT_EQ(kv.blocks_of(1), 3);
  EXPECT_TRUE(kv.can_grow_to(2, 16));
  EXPECT_FALSE(kv.can_grow_to(2, 17));
  EXPECT_EQ(kv.extra_blocks_needed(2, 17), 2);
  kv.grow_to(2, 16);
  EXPECT_EQ(kv.free_blocks(), 0);
  EXPECT_THROW(kv.grow_to(2, 17), InternalError);  // over capacity is refused, not allowed
  EXPECT_EQ(kv.used_blocks(), 4);
  kv.release(1);
  EXPECT_EQ(kv.used_blocks(), 1);
  EXPECT_EQ(kv.blocks_of(1), 0);
  kv.release(1);  // no-op
  EXPECT_EQ(kv.used_blocks(), 1);
  EXPECT_EQ(kv.num_holders(), 1);
}

TEST(KvBlockManager, BadSizesAreUserErrors) {
  EXPECT_THROW(KvBlockManager(0, 16), Error);
  EXPECT_THROW(KvBlockManager(4, 0), Error);
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
