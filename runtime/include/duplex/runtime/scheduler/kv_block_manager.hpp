#pragma once
// Paged KV cache accounting (vLLM-style): the cache is `capacity_blocks` blocks of `block_tokens` tokens;
// a request holding T tokens of KV owns ceil(T / block_tokens) blocks. With a sliding window of W tokens, a
// step whose first new token is at position c only needs the windowed layers' blocks holding tokens
// [max(0, c - W + 1), T): those wholly behind the window are freed when the request next grows (vLLM's
// sliding-window block tables). With chunked attention (Llama 4) of C tokens instead, that step needs the
// tokens [c - c % C, T): a request entering a new chunk frees the blocks wholly before it. When only some
// layers are windowed (KvWindow::full_layers > 0), a block is
// counted per layer group: the accounting unit is one block of one layer's share, 1 / layers of a block
// (units_per_block() of them make a block), the full layers holding every token and the windowed ones the
// window (vLLM's hybrid allocator, one pool). With no window, or every layer windowed, a unit is a block.
// Pure bookkeeping, no policy: the scheduler decides who grows and who is preempted. The caller computes the
// capacity from device memory minus weights (see kv_blocks_for_memory). Used units never exceed capacity:
// grow_to() throws first.
//
// Prefix caching (PrefixCache): a request's blocks may include cached prefix blocks, taken at admission
// (take_prefix) or cached as it computes them (share_computed). A cached block counts once in the used units
// however many requests hold it, and stays used when none does until a grow needs its memory: then the least
// recently released cached blocks are evicted (free_units() counts only never-used memory, can_grow_to()
// also the evictable units). With a host tier (HostKvTier, `host_blocks` > 0) the cached
// blocks are also copied to host memory as they are cached, and a sequence continues its hit there; with a
// disk tier behind it (`disk_blocks` > 0, LMCache's local disk) every copy is also written to disk, and a
// sequence continues its hit there after the host tier's blocks (a block loaded from disk is put back in the
// host tier on its way).
// With a window, as vLLM's hybrid KV cache manager: each layer group caches its own blocks (the full layers'
// share of block j and the windowed layers' are two entries, full_layers and windowed_layers units; one group
// alone: 1 unit); a windowed block behind a request's window is released to the cache (evictable when no one
// else holds it) rather than freed; and a hit of L blocks needs the full layers' blocks 0..L-1 and the
// windowed layers' blocks that the next token's window (or chunk) reaches, the longest such L found. The host
// and disk tiers keep whole blocks (every layer, as LMCache stores a chunk) and continue such a hit.
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <span>
#include <unordered_map>

#include "duplex/runtime/scheduler/host_kv_tier.hpp"
#include "duplex/runtime/scheduler/prefix_cache.hpp"
#include "duplex/runtime/scheduler/request.hpp"

namespace duplex::runtime {

// A model's sliding window as the KV cache sees it: `tokens` (0: none), and how many layers attend fully /
// through the window (full_layers 0: every layer is windowed). chunked: `tokens` is the chunk of chunked
// attention (Llama 4), not a window.
struct KvWindow {
  std::int64_t tokens = 0;
  std::int64_t full_layers = 0;
  std::int64_t windowed_layers = 1;
  bool chunked = false;
};

class KvBlockManager {
 public:
  // Throws duplex::Error unless capacity_blocks >= 1, block_tokens >= 1, window.tokens >= 0 (0: no window),
  // window.full_layers >= 0, window.windowed_layers >= 1 and host_blocks >= 0 (0: no host tier).
  // `shared_host`: a host tier other managers use too (replicas on one machine or across machines;
  // links.host_kv_scope node or cluster), used instead of one of host_blocks; `host_node`: the node whose
  // host memory takes this manager's copies.
  // `disk_blocks`: a disk tier of its own behind the host tier (0: none; duplex::Error without a host tier);
  // `shared_disk`: one other managers use too (links.disk_kv_scope node or cluster), instead of it, taking
  // this manager's copies on `host_node`'s drives.
  KvBlockManager(std::int64_t capacity_blocks, std::int64_t block_tokens, KvWindow window = {},
                 std::int64_t host_blocks = 0, std::shared_ptr<HostKvTier> shared_host = nullptr,
                 int host_node = 0, std::int64_t disk_blocks = 0,
                 std::shared_ptr<HostKvTier> shared_disk = nullptr);

  std::int64_t blocks_for(std::int64_t tokens) const;  // ceil(tokens / block_tokens), tokens >= 0
  // Blocks a request must hold for a step whose first new token is at position `context` and after which it
  // has `total_tokens` tokens (context <= total_tokens): blocks_for(total_tokens), or with a window the
  // blocks that hold tokens [max(0, context - window + 1), total_tokens) (chunked: [context - context %
  // chunk, total_tokens)).
  std::int64_t blocks_for_step(std::int64_t context, std::int64_t total_tokens) const;
  // Units a request holds for that step: full_layers x blocks_for(total) + windowed_layers x
  // blocks_for_step(...) when only some layers are windowed, else blocks_for_step(...).
  std::int64_t units_for_step(std::int64_t context, std::int64_t total_tokens) const;
  // Units `id` must add for that step (0 when it already holds enough; with a window, the cached blocks
  // behind it that other requests hold too, which it gives up without freeing them, count as held).
  std::int64_t extra_units_needed(RequestId id, std::int64_t context, std::int64_t total_tokens) const;
  bool can_grow_to(RequestId id, std::int64_t context, std::int64_t total_tokens) const {
    return extra_units_needed(id, context, total_tokens) <= free_units() + prefix_.evictable_units();
  }
  // Makes `id` hold units_for_step(context, total_tokens) units: without a window it never shrinks; with one,
  // the blocks behind the window are returned (cached ones to the cache). Evicts unheld cached prefix blocks
  // when free units are short.
  // InternalError when units are short (the scheduler checks can_grow_to first).
  void grow_to(RequestId id, std::int64_t context, std::int64_t total_tokens);
  // Returns all units of `id` and its references on cached prefix blocks (no-op for an id holding none).
  void release(RequestId id);

  // Prefix caching. The cached blocks that begin a sequence with these block keys (prefix_block_keys), the
  // host tier's copies of the blocks that follow them, and the disk tier's of those that follow these.
  // `max_tokens`: the most tokens the hit may stand for (the request's tokens less one); with a window the
  // hit is at most the blocks those tokens reach, and the window is that of the token after
  // min(blocks x block_tokens, max_tokens).
  PrefixCache::Hit prefix_hit(std::span<const std::uint64_t> keys,
                              std::int64_t max_tokens = std::numeric_limits<std::int64_t>::max()) const;
  // Whether `id`, holding nothing, can take `hit`'s cached blocks and then grow to the step's units.
  bool can_grow_with(RequestId id, const PrefixCache::Hit& hit, std::int64_t context,
                     std::int64_t total_tokens) const;
  // `id`, holding nothing, takes `hit`'s cached blocks of `keys` (prefix_hit: its first hit.blocks, with a
  // window its windowed layers' from hit.window_first) as its first blocks, and marks the host tier's copies
  // of the next hit.host_blocks (all held), and the disk tier's of the hit.disk_blocks after those, used: it
  // loads them into blocks of its own (grow_to).
  void take_prefix(RequestId id, std::span<const std::uint64_t> keys, const PrefixCache::Hit& hit);
  // Caches `id`'s blocks that its first `computed_tokens` tokens fill and `keys` name, those not cached yet
  // (a block another request cached first stays `id`'s own; with a window, each layer group's that `id`
  // holds), and with `to_host` copies to the host tier those of them not copied yet (without it, a later call
  // with it copies them; a disk tier takes each as well). Returns the new copies.
  struct Copies {
    std::int64_t host = 0;
    std::int64_t disk = 0;
  };
  Copies share_computed(RequestId id, std::span<const std::uint64_t> keys, std::int64_t computed_tokens,
                        bool to_host = true);
  // Of `tokens` tokens loaded from the host tier into the blocks from keys[first_block] on (all held there),
  // those whose copy lies in another node's memory than this manager's.
  std::int64_t host_remote_tokens(std::span<const std::uint64_t> keys, std::int64_t first_block,
                                  std::int64_t tokens) const;
  // Likewise of `tokens` tokens read from the disk tier: those whose copy lies on another node's drives.
  std::int64_t disk_remote_tokens(std::span<const std::uint64_t> keys, std::int64_t first_block,
                                  std::int64_t tokens) const;
  const PrefixCache& prefix_cache() const { return prefix_; }
  const HostKvTier& host_tier() const { return *host_; }
  const HostKvTier& disk_tier() const { return *disk_; }

  std::int64_t units_of(RequestId id) const;  // including the cached prefix blocks it holds
  std::int64_t units_per_block() const { return units_per_block_; }
  std::int64_t used_units() const { return used_units_; }
  std::int64_t free_units() const { return capacity_blocks_ * units_per_block_ - used_units_; }
  // Blocks in use, whole blocks' worth of units rounded up (what a step reports).
  std::int64_t used_blocks() const { return (used_units_ + units_per_block_ - 1) / units_per_block_; }
  std::int64_t capacity_blocks() const { return capacity_blocks_; }
  std::int64_t block_tokens() const { return block_tokens_; }
  const KvWindow& window() const { return window_; }
  std::int64_t num_holders() const { return static_cast<std::int64_t>(units_.size()); }

 private:
  std::int64_t capacity_blocks_;
  std::int64_t block_tokens_;
  KvWindow window_;
  std::int64_t units_per_block_;  // layers when only some are windowed, else 1
  std::int64_t full_units_;       // a block's units in the layers attending to every token (0: none)
  std::int64_t window_units_;     // and in the windowed layers (0: no window)
  std::int64_t used_units_ = 0;   // units no cached block is counted in, plus every cached block once
  struct Holder {
    std::int64_t units = 0;
    std::int64_t next_shared = 0;  // share_computed considered its blocks before this one
    std::int64_t next_hosted = 0;  // and copied those before this one to the host tier
    std::int64_t window_from = 0;  // with a window: the first block its windowed layers hold
    // With a window: the cached windowed blocks it holds (index, key), oldest first.
    std::deque<std::pair<std::int64_t, std::uint64_t>> window_cached;
  };
  // The first token and block the windowed layers keep for a step starting at `context`.
  std::int64_t window_first_token(std::int64_t context) const;
  std::int64_t window_first_block(std::int64_t context) const {
    return window_first_token(context) / block_tokens_;
  }
  // The windowed layers' cache key of block `key` (the key itself when no layer attends to every token).
  std::uint64_t window_key(std::uint64_t key) const;
  // Of `tokens` tokens in `tier` from keys[first_block] on, those on another node than host_node_.
  std::int64_t remote_tokens(const HostKvTier& tier, std::span<const std::uint64_t> keys,
                             std::int64_t first_block, std::int64_t tokens) const;
  // Units of `id`'s cached windowed blocks behind the window at `context` that another request holds too.
  std::int64_t slid_shared_units(RequestId id, std::int64_t context) const;
  std::unordered_map<RequestId, Holder> units_;
  PrefixCache prefix_;
  std::shared_ptr<HostKvTier> host_;  // never null
  int host_node_;
  std::shared_ptr<HostKvTier> disk_;  // never null (capacity 0: none)
};

// Blocks that fit in `kv_bytes_available` (device memory left after weights and activations, per the
// system's parallelism) when one token's KV takes `kv_bytes_per_token` (2 * layers * kv_heads * head_dim *
// bytes per element, divided by the parallel degree): floor(bytes / (per_token * block_tokens)).
// Throws duplex::Error when per-token bytes or block size are not positive, or when not one block fits.
std::int64_t kv_blocks_for_memory(double kv_bytes_available, double kv_bytes_per_token, std::int64_t block_tokens);

}  // namespace duplex::runtime
