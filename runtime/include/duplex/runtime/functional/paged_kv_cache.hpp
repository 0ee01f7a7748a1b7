#pragma once
// The paged KV cache of functional emulation, shared by xPU and PIM attention: per layer, K and V pools of
// `num_blocks` blocks x `block_tokens` token slots x kv_heads x head_dim FP16 values (the kernels'
// DecodeAttentionArgs layout). A request's token j lives in block block_table[j / block_tokens], slot
// j % block_tokens. Blocks are handed out lowest id first from a free list, so the layout is deterministic.
// With shared_kv (MLA's latent, model_weights.hpp KvCacheShape) there is one pool: v() and v_pool() are K's.
// Prefix sharing: a block may begin several requests' tables (attach); it returns to the free list when no
// table holds it and it is not kept (keep: a cached prefix block outlives its holders until dropped).
#include <cstdint>
#include <map>
#include <set>
#include <vector>

namespace duplex::runtime::functional {

class PagedKvCache {
 public:
  // Throws duplex::Error unless every count is >= 1.
  PagedKvCache(int layers, int kv_heads, int head_dim, std::int64_t block_tokens, std::int64_t num_blocks,
               bool shared_kv = false);

  // Makes request `id` own blocks for at least `tokens` token slots; duplex::Error when the pool runs out.
  void reserve(std::int64_t id, std::int64_t tokens);
  // Request `id`, holding nothing, takes `blocks` (each held or kept) as its first blocks.
  void attach(std::int64_t id, const std::vector<std::int32_t>& blocks);
  void keep(std::int32_t block);  // a held block stays allocated when its last holder releases it
  void drop(std::int32_t block);  // not kept any more: freed now when no table holds it
  void release(std::int64_t id);  // no-op for an id that holds nothing
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
  std::int64_t num_blocks() const { return num_blocks_; }
  std::int64_t free_blocks() const { return static_cast<std::int64_t>(free_.size()); }
  std::int64_t token_values() const { return token_values_; }  // kv_heads x head_dim

 private:
  std::size_t offset(std::int64_t id, std::int64_t pos) const;

  std::int64_t block_tokens_, num_blocks_, token_values_;
  bool shared_kv_;
  std::vector<std::vector<std::uint16_t>> k_, v_;  // [layer][pool]; v_ empty with shared_kv
  std::set<std::int32_t> free_;
  std::vector<std::int32_t> holders_;  // per block: the tables holding it
  std::vector<bool> kept_;             // per block: kept as a cached prefix block
  std::map<std::int64_t, std::vector<std::int32_t>> tables_;
};

}  // namespace duplex::runtime::functional
