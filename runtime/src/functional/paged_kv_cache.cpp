#include "duplex/runtime/functional/paged_kv_cache.hpp"

#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::runtime::functional {

PagedKvCache::PagedKvCache(int layers, int kv_heads, int head_dim, std::int64_t block_tokens,
                           std::int64_t num_blocks, bool shared_kv)
    : block_tokens_(block_tokens),
      num_blocks_(num_blocks),
      token_values_(std::int64_t{kv_heads} * head_dim),
      shared_kv_(shared_kv) {
  if (layers < 1 || kv_heads < 1 || head_dim < 1 || block_tokens < 1 || num_blocks < 1)
    throw Error(fmt::format("paged KV cache: layers {}, kv_heads {}, head_dim {}, block_tokens {}, blocks {}; "
                            "expected all >= 1", layers, kv_heads, head_dim, block_tokens, num_blocks));
  const auto pool = static_cast<std::size_t>(num_blocks * block_tokens * token_values_);
  k_.assign(static_cast<std::size_t>(layers), std::vector<std::uint16_t>(pool, 0));
  if (!shared_kv_) v_ = k_;
  for (std::int64_t b = 0; b < num_blocks; ++b) free_.insert(static_cast<std::int32_t>(b));
  holders_.assign(static_cast<std::size_t>(num_blocks), 0);
  kept_.assign(static_cast<std::size_t>(num_blocks), false);
}

void PagedKvCache::attach(std::int64_t id, const std::vector<std::int32_t>& blocks) {
  auto& table = tables_[id];
  DUPLEX_ASSERT(table.empty(), fmt::format("request {} attaches shared blocks behind blocks of its own", id));
  for (const std::int32_t b : blocks) {
    const auto i = static_cast<std::size_t>(b);
    DUPLEX_ASSERT(b >= 0 && b < num_blocks_ && (holders_[i] > 0 || kept_[i]),
                  fmt::format("request {} attaches block {}, which is free", id, b));
    ++holders_[i];
    table.push_back(b);
  }
}

void PagedKvCache::keep(std::int32_t block) {
  const auto i = static_cast<std::size_t>(block);
  DUPLEX_ASSERT(block >= 0 && block < num_blocks_ && holders_[i] > 0,
                fmt::format("keeping block {}, which no request holds", block));
  kept_[i] = true;
}

void PagedKvCache::drop(std::int32_t block) {
  const auto i = static_cast<std::size_t>(block);
  DUPLEX_ASSERT(block >= 0 && block < num_blocks_ && kept_[i],
                fmt::format("dropping block {}, not kept", block));
  kept_[i] = false;
  if (holders_[i] == 0) free_.insert(block);
}

void PagedKvCache::reserve(std::int64_t id, std::int64_t tokens) {
  auto& table = tables_[id];
  const std::int64_t need = (tokens + block_tokens_ - 1) / block_tokens_;
  while (static_cast<std::int64_t>(table.size()) < need) {
    if (free_.empty())
      throw Error(fmt::format("paged KV cache: request {} needs {} blocks of {} tokens, the pool of {} is exhausted; "
                              "raise the KV block count", id, need, block_tokens_, num_blocks_));
    table.push_back(*free_.begin());
    holders_[static_cast<std::size_t>(table.back())] = 1;
    free_.erase(free_.begin());
  }
}

void PagedKvCache::release(std::int64_t id) {
  auto it = tables_.find(id);
  if (it == tables_.end()) return;
  for (auto b : it->second) {
    const auto i = static_cast<std::size_t>(b);
    if (--holders_[i] == 0 && !kept_[i]) free_.insert(b);
  }
  tables_.erase(it);
}

const std::vector<std::int32_t>& PagedKvCache::block_table(std::int64_t id) const {
  static const std::vector<std::int32_t> kNone;
  auto it = tables_.find(id);
  return it == tables_.end() ? kNone : it->second;
}

std::size_t PagedKvCache::offset(std::int64_t id, std::int64_t pos) const {
  const auto& table = block_table(id);
  const auto block = static_cast<std::size_t>(pos / block_tokens_);
  DUPLEX_ASSERT(pos >= 0 && block < table.size(), fmt::format("request {} has no KV slot {}", id, pos));
  return static_cast<std::size_t>((table[block] * block_tokens_ + pos % block_tokens_) * token_values_);
}

std::uint16_t* PagedKvCache::k(int layer, std::int64_t id, std::int64_t pos) {
  return k_[static_cast<std::size_t>(layer)].data() + offset(id, pos);
}
std::uint16_t* PagedKvCache::v(int layer, std::int64_t id, std::int64_t pos) {
  return (shared_kv_ ? k_ : v_)[static_cast<std::size_t>(layer)].data() + offset(id, pos);
}
const std::uint16_t* PagedKvCache::k(int layer, std::int64_t id, std::int64_t pos) const {
  return k_[static_cast<std::size_t>(layer)].data() + offset(id, pos);
}
const std::uint16_t* PagedKvCache::v(int layer, std::int64_t id, std::int64_t pos) const {
  return (shared_kv_ ? k_ : v_)[static_cast<std::size_t>(layer)].data() + offset(id, pos);
}

}  // namespace duplex::runtime::functional
