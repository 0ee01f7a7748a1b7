#pragma once
// Paged KV cache accounting (vLLM-style): the cache is `capacity_blocks` blocks of `block_tokens` tokens;
// a request holding T tokens of KV owns ceil(T / block_tokens) blocks. With a sliding window of W tokens
// (every layer windowed), a step whose first new token is at position c only needs the blocks holding tokens
// [max(0, c - W + 1), T): blocks wholly behind the window are freed when the request next grows (vLLM's
// sliding-window block tables). Pure bookkeeping, no policy:
// the scheduler decides who grows and who is preempted. The caller computes the capacity from device memory
// minus weights (see kv_blocks_for_memory). Used blocks never exceed capacity: grow_to() throws first.
#include <cstdint>
#include <unordered_map>

#include "duplex/runtime/scheduler/request.hpp"

namespace duplex::runtime {

class KvBlockManager {
 public:
  // Throws duplex::Error unless capacity_blocks >= 1, block_tokens >= 1 and window_tokens >= 0 (0: no
  // window).
  KvBlockManager(std::int64_t capacity_blocks, std::int64_t block_tokens, std::int64_t window_tokens = 0);

  std::int64_t blocks_for(std::int64_t tokens) const;  // ceil(tokens / block_tokens), tokens >= 0
  // Blocks a request must hold for a step whose first new token is at position `context` and after which it
  // has `total_tokens` tokens (context <= total_tokens): blocks_for(total_tokens), or with a window the blocks
  // that hold tokens [max(0, context - window + 1), total_tokens).
  std::int64_t blocks_for_step(std::int64_t context, std::int64_t total_tokens) const;
  // Blocks `id` must add for that step (0 when it already holds enough).
  std::int64_t extra_blocks_needed(RequestId id, std::int64_t context, std::int64_t total_tokens) const;
  bool can_grow_to(RequestId id, std::int64_t context, std::int64_t total_tokens) const {
    return extra_blocks_needed(id, context, total_tokens) <= free_blocks();
  }
  // Makes `id` hold blocks_for_step(context, total_tokens) blocks: without a window it never shrinks; with
  // one, the blocks behind the window are returned. InternalError when blocks are short (the scheduler checks
  // can_grow_to first).
  void grow_to(RequestId id, std::int64_t context, std::int64_t total_tokens);
  // Returns all blocks of `id` (no-op for an id holding none).
  void release(RequestId id);

  std::int64_t blocks_of(RequestId id) const;
  std::int64_t used_blocks() const { return used_blocks_; }
  std::int64_t free_blocks() const { return capacity_blocks_ - used_blocks_; }
  std::int64_t capacity_blocks() const { return capacity_blocks_; }
  std::int64_t block_tokens() const { return block_tokens_; }
  std::int64_t window_tokens() const { return window_tokens_; }
  std::int64_t num_holders() const { return static_cast<std::int64_t>(blocks_.size()); }

 private:
  std::int64_t capacity_blocks_;
  std::int64_t block_tokens_;
  std::int64_t window_tokens_;
  std::int64_t used_blocks_ = 0;
  std::unordered_map<RequestId, std::int64_t> blocks_;
};

// Blocks that fit in `kv_bytes_available` (device memory left after weights and activations, per the
// system's parallelism) when one token's KV takes `kv_bytes_per_token` (2 * layers * kv_heads * head_dim *
// bytes per element, divided by the parallel degree): floor(bytes / (per_token * block_tokens)).
// Throws duplex::Error when per-token bytes or block size are not positive, or when not one block fits.
std::int64_t kv_blocks_for_memory(double kv_bytes_available, double kv_bytes_per_token, std::int64_t block_tokens);

}  // namespace duplex::runtime
