#pragma once
// Paged KV cache accounting (vLLM-style): the cache is `capacity_blocks` blocks of `block_tokens` tokens;
// a request holding T tokens of KV owns ceil(T / block_tokens) blocks. Pure bookkeeping, no policy:
// the scheduler decides who grows and who is preempted. The caller computes the capacity from device memory
// minus weights (see kv_blocks_for_memory). Used blocks never exceed capacity: grow_to() throws first.
#include <cstdint>
#include <unordered_map>

#include "duplex/runtime/scheduler/request.hpp"

namespace duplex::runtime {

class KvBlockManager {
 public:
  // Throws duplex::Error unless capacity_blocks >= 1 and block_tokens >= 1.
  KvBlockManager(std::int64_t capacity_blocks, std::int64_t block_tokens);

  std::int64_t blocks_for(std::int64_t tokens) const;  // ceil(tokens / block_tokens), tokens >= 0
  // Blocks `id` must add to hold `total_tokens` tokens (0 when it already holds enough).
  std::int64_t extra_blocks_needed(RequestId id, std::int64_t total_tokens) const;
  bool can_grow_to(RequestId id, std::int64_t total_tokens) const {
    return extra_blocks_needed(id, total_tokens) <= free_blocks();
  }
  // Makes `id` hold at least `total_tokens` tokens; never shrinks. InternalError when blocks are short
  // (the scheduler checks can_grow_to first).
  void grow_to(RequestId id, std::int64_t total_tokens);
  // Returns all blocks of `id` (no-op for an id holding none).
  void release(RequestId id);

  std::int64_t blocks_of(RequestId id) const;
  std::int64_t used_blocks() const { return used_blocks_; }
  std::int64_t free_blocks() const { return capacity_blocks_ - used_blocks_; }
  std::int64_t capacity_blocks() const { return capacity_blocks_; }
  std::int64_t block_tokens() const { return block_tokens_; }
  std::int64_t num_holders() const { return static_cast<std::int64_t>(blocks_.size()); }

 private:
  std::int64_t capacity_blocks_;
  std::int64_t block_tokens_;
  std::int64_t used_blocks_ = 0;
  std::unordered_map<RequestId, std::int64_t> blocks_;
};

// Blocks that fit in `kv_bytes_available` (device memory left after weights and activations, per the
// system's parallelism) when one token's KV takes `kv_bytes_per_token` (2 * layers * kv_heads * head_dim *
// bytes per element, divided by the parallel degree): floor(bytes / (per_token * block_tokens)).
// Throws duplex::Error when per-token bytes or block size are not positive, or when not one block fits.
std::int64_t kv_blocks_for_memory(double kv_bytes_available, double kv_bytes_per_token, std::int64_t block_tokens);

}  // namespace duplex::runtime
