#pragma once
// Automatic prefix caching (vLLM's APC, SGLang's RadixAttention) as block bookkeeping: full KV blocks whose
// tokens may be shared (a prompt's, or an answer a conversation's next turn repeats) are kept in an index by
// content, and a request whose sequence begins with cached blocks reuses them instead of computing their K/V
// again. A cached block is held by every running
// request using it (a reference count); one that no request holds stays cached until its memory is needed,
// and then the least recently released goes first (vLLM's free-block queue: a request's blocks are released
// tail first, so its last block goes before its first). Pure bookkeeping: KvBlockManager counts the blocks
// as memory, the scheduler decides who uses them. Each entry weighs some units of memory (1 unless inserted
// otherwise): a model with full and sliding-window layers caches a block of each group as its own entry, the
// full layers' share and the windowed layers' (KvBlockManager).
#include <cstdint>
#include <map>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "duplex/runtime/scheduler/request.hpp"

namespace duplex::runtime {

// The content keys of the KV blocks of `spec`'s sequence that are whole blocks of `block_tokens` tokens
// inside the part its content_hashes cover (its last output token excepted: it has no K/V): block j (tokens
// [j B, (j + 1) B)) is keyed by the hash of the hash block holding its last token, which (chained) stands for
// every token before it, and by j. Empty when the request carries no hashes. With `ranks` > 1 (data-parallel
// nodes, each with its own cache) the keys are also those of the request's `rank` (0..ranks - 1): two
// requests share blocks only on one rank (also in a host tier the ranks of a node share).
std::vector<std::uint64_t> prefix_block_keys(const RequestSpec& spec, std::int64_t block_tokens, int rank = 0,
                                             int ranks = 1);

class PrefixCache {
 public:
  std::int64_t cached_blocks() const { return static_cast<std::int64_t>(blocks_.size()); }
  std::int64_t evictable_blocks() const { return static_cast<std::int64_t>(evictable_.size()); }
  std::int64_t cached_units() const { return cached_units_; }
  std::int64_t evictable_units() const { return evictable_units_; }
  bool contains(std::uint64_t key) const { return blocks_.contains(key); }
  // Requests holding `key` (0 when it is not cached or no one holds it).
  std::int64_t holders(std::uint64_t key) const;

  // The leading keys that are cached: the count, their units, and the units of those no request holds
  // (acquiring them takes them out of the evictable ones). KvBlockManager::prefix_hit fills the rest.
  struct Hit {
    std::int64_t blocks = 0;
    std::int64_t units = 0;
    std::int64_t evictable = 0;     // units
    std::int64_t host_blocks = 0;   // the keys after `blocks` held in a host tier
    std::int64_t disk_blocks = 0;   // and the keys after those held in a disk tier behind it
    std::int64_t window_first = 0;  // with a sliding window: the first block its windowed layers take
  };
  Hit lookup(std::span<const std::uint64_t> keys) const;
  // `holder` takes a reference on each of `keys` (all cached; InternalError otherwise).
  void acquire(RequestId holder, std::span<const std::uint64_t> keys);
  // Caches `key`, `units` of memory, as a block that `holder` computed and holds. False (nothing changes)
  // when it is cached already: the holder's copy then stays its own.
  bool insert(RequestId holder, std::uint64_t key, std::int64_t units = 1);
  // Drops `holder`'s references (tail first); blocks no one holds become evictable. Returns the units of
  // those it held.
  std::int64_t release(RequestId holder);
  // Drops `holder`'s reference on `key` alone (a block behind its sliding window): evictable when no one
  // else holds it. InternalError unless it holds one.
  void release_one(RequestId holder, std::uint64_t key);
  std::int64_t held_by(RequestId holder) const;  // blocks
  // Forgets the least recently released blocks no one holds until at least `units` (<= evictable_units())
  // are freed; returns the units freed.
  std::int64_t evict(std::int64_t units);

 private:
  struct Block {
    std::int64_t holders = 0;
    std::uint64_t released = 0;  // the stamp it became evictable at (holders == 0)
    std::int64_t units = 1;
  };
  struct Held {
    std::vector<std::uint64_t> keys;         // in the order taken
    std::unordered_set<std::uint64_t> gone;  // of those, the ones released alone (release_one)
  };
  void unhold(Block& block, std::uint64_t key);
  std::unordered_map<std::uint64_t, Block> blocks_;
  std::map<std::uint64_t, std::uint64_t> evictable_;  // release stamp -> key: eviction order
  std::unordered_map<RequestId, Held> held_;
  std::uint64_t next_stamp_ = 0;
  std::int64_t cached_units_ = 0;
  std::int64_t evictable_units_ = 0;
};

}  // namespace duplex::runtime
