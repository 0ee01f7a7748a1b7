#pragma once
// The paged KV cache of functional emulation, shared by xPU and PIM attention: per layer, K and V pools of
// `num_blocks` blocks x `block_tokens` token slots x kv_heads x head_dim FP16 values (the kernels'
// DecodeAttentionArgs layout). A request's token j lives in block block_table[j / block_tokens], slot
// j % block_tokens. Blocks are handed out lowest id first from a free list, so the layout is deterministic.
// With shared_kv (MLA's latent, model_weights.hpp KvCacheShape) there is one pool: v() and v_pool() are K's.
// Prefix sharing: a block may begin several requests' tables (attach); it returns to the free list when no
// table holds it and it is not kept (keep: a cached prefix block outlives its holders until dropped).
//
// Memory spaces (Duplex's prefill space, DUPLEX.md s.6): the pool may end with `prefill_blocks` blocks of the
// prefill space after the KV spaces' blocks [0, kv_blocks), one address space as in the device's HBM, so a
// table may hold blocks of both (a prompt's own blocks in the prefill space behind cached blocks wherever
// they lie). A prompt leaves the prefill space by migration: each prefill-space block it allocated moves to a
// new KV-space block (plan_migration, copy_block per layer, complete_migration), and every table holding it,
// and its kept mark, follow. A request released while others still hold (or the cache keeps) a prefill-space
// block it allocated moves that block to the KV spaces first (every layer at once). Every move is logged for
// holders of block ids outside the cache (take_moves).
#include <cstdint>
#include <map>
#include <set>
#include <utility>
#include <vector>

namespace duplex::runtime::functional {

enum class KvSpace : std::uint8_t { kv, prefill };

// One block's move out of the prefill space: `from` (prefill space) -> `to` (KV spaces).
struct BlockMove {
  std::int32_t from = 0;
  std::int32_t to = 0;
  bool operator==(const BlockMove&) const = default;
};

class PagedKvCache {
 public:
  // `kv_blocks` blocks of the KV spaces, then `prefill_blocks` of the prefill space (0: none). Throws
  // duplex::Error unless every count is >= 1 (prefill_blocks >= 0).
  PagedKvCache(int layers, int kv_heads, int head_dim, std::int64_t block_tokens, std::int64_t kv_blocks,
               bool shared_kv = false, std::int64_t prefill_blocks = 0);

  // Makes request `id` hold blocks for at least `tokens` token slots, new ones from `space`; duplex::Error
  // when that space runs out (or the cache has no prefill space).
  void reserve(std::int64_t id, std::int64_t tokens, KvSpace space = KvSpace::kv);
  // Request `id`, holding nothing, takes `blocks` (each held or kept) as its first blocks.
  void attach(std::int64_t id, const std::vector<std::int32_t>& blocks);
  void keep(std::int32_t block);  // a held block stays allocated when its last holder releases it
  void drop(std::int32_t block);  // not kept any more: freed now when no table holds it
  // No-op for an id that holds nothing. The prefill-space blocks `id` allocated that another table holds, or
  // that are kept, move to the KV spaces (duplex::Error when those are full).
  void release(std::int64_t id);

  // Migration of request `id` out of the prefill space: a new KV-space block for each prefill-space block of
  // its table it allocated (not those it attached), in table order; duplex::Error when the KV spaces are
  // full. Copy every layer (copy_block), then complete_migration: the tables holding a moved block hold its
  // new one, which is kept if it was, and the prefill-space blocks are freed.
  std::vector<BlockMove> plan_migration(std::int64_t id);
  void copy_block(int layer, const BlockMove& move);  // that layer's K (and V) of the block's slots
  void complete_migration(const std::vector<BlockMove>& moves);
  // Prefill-space blocks of `id`'s table that it allocated.
  std::int64_t own_prefill_blocks(std::int64_t id) const;
  // The moves completed (migrations and releases) since the last call, in order.
  std::vector<BlockMove> take_moves();
  // Block ids of `id` in token order (empty for an id that holds nothing).
  const std::vector<std::int32_t>& block_table(std::int64_t id) const;

  // The kv_heads x head_dim values of token `pos` of request `id` in `layer` (pos < reserved slots).
  std::uint16_t* k(int layer, std::int64_t id, std::int64_t pos);
  std::uint16_t* v(int layer, std::int64_t id, std::int64_t pos);
  const std::uint16_t* k(int layer, std::int64_t id, std::int64_t pos) const;
  const std::uint16_t* v(int layer, std::int64_t id, std::int64_t pos) const;
  // Whole pools of one layer: [num_blocks, block_tokens, kv_heads, head_dim].
  std::uint16_t* k_pool(int layer) { return k_[static_cast<std::size_t>(layer)].data(); }
  std::uint16_t* v_pool(int layer) { return (shared_kv_ ? k_ : v_)[static_cast<std::size_t>(layer)].data(); }
  bool shared_kv() const { return shared_kv_; }

  std::int64_t block_tokens() const { return block_tokens_; }
  std::int64_t num_blocks() const { return num_blocks_; }  // the whole pool: KV spaces and prefill space
  std::int64_t kv_blocks() const { return kv_blocks_; }
  std::int64_t prefill_blocks() const { return num_blocks_ - kv_blocks_; }
  std::int64_t free_blocks(KvSpace space = KvSpace::kv) const {
    return static_cast<std::int64_t>(free_of(space).size());
  }
  bool in_prefill_space(std::int32_t block) const { return block >= kv_blocks_; }
  std::int64_t token_values() const { return token_values_; }  // kv_heads x head_dim

 private:
  std::size_t offset(std::int64_t id, std::int64_t pos) const;
  std::set<std::int32_t>& free_of(KvSpace space) { return space == KvSpace::kv ? free_ : free_prefill_; }
  const std::set<std::int32_t>& free_of(KvSpace space) const {
    return space == KvSpace::kv ? free_ : free_prefill_;
  }
  void free_block(std::int32_t block);
  std::int32_t take_kv_block(std::int64_t id);

  std::int64_t block_tokens_, num_blocks_, kv_blocks_, token_values_;
  bool shared_kv_;
  std::vector<std::vector<std::uint16_t>> k_, v_;  // [layer][pool]; v_ empty with shared_kv
  std::set<std::int32_t> free_, free_prefill_;     // free blocks of the KV spaces, of the prefill space
  std::vector<std::int32_t> holders_;              // per block: the tables holding it
  std::vector<bool> kept_;                         // per block: kept as a cached prefix block
  std::vector<std::int64_t> owner_;  // per block: the request that allocated it; -1 when free or
                                     // left behind by a released one
  std::map<std::int64_t, std::vector<std::int32_t>> tables_;
  std::vector<BlockMove> moves_;  // completed since take_moves()
};

}  // namespace duplex::runtime::functional
