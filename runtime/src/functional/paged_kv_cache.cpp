#include "duplex/runtime/functional/paged_kv_cache.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "duplex/base/error.hpp"

namespace duplex::runtime::functional {
namespace {
constexpr std::uint16_t kFreedValue = 0x7e00;  // an FP16 quiet NaN
}  // namespace

PagedKvCache::PagedKvCache(int layers, int kv_heads, int head_dim, std::int64_t block_tokens,
                           std::int64_t kv_blocks, bool shared_kv, std::int64_t prefill_blocks)
    : block_tokens_(block_tokens),
      num_blocks_(kv_blocks + prefill_blocks),
      kv_blocks_(kv_blocks),
      token_values_(std::int64_t{kv_heads} * head_dim),
      shared_kv_(shared_kv) {
  if (layers < 1 || kv_heads < 1 || head_dim < 1 || block_tokens < 1 || kv_blocks < 1 || prefill_blocks < 0)
    throw Error(
        fmt::format("paged KV cache: layers {}, kv_heads {}, head_dim {}, block_tokens {}, blocks {}, "
                    "prefill-space blocks {}; expected all >= 1 (prefill-space blocks >= 0)",
                    layers, kv_heads, head_dim, block_tokens, kv_blocks, prefill_blocks));
  // Held in host memory (FP16 K and V, every layer): refuse what cannot be, rather than fail allocating it.
  constexpr double kMaxBytes = 16.0 * (1 << 30);
  const double bytes = (shared_kv ? 1.0 : 2.0) * layers * static_cast<double>(kv_blocks + prefill_blocks) *
                       static_cast<double>(block_tokens) * kv_heads * head_dim * 2.0;
  if (bytes > kMaxBytes)
    throw Error(
        fmt::format("paged KV cache: {} blocks of {} tokens ({} in the prefill space) need {:.1f} GiB "
                    "of host memory per device; expected at most 16 GiB (fewer --kv-blocks)",
                    kv_blocks + prefill_blocks, block_tokens, prefill_blocks, bytes / (1 << 30)));
  const auto pool = static_cast<std::size_t>(num_blocks_ * block_tokens * token_values_);
  k_.assign(static_cast<std::size_t>(layers), std::vector<std::uint16_t>(pool, 0));
  if (!shared_kv_) v_ = k_;
  holders_.assign(static_cast<std::size_t>(num_blocks_), 0);
  kept_.assign(static_cast<std::size_t>(num_blocks_), false);
  owner_.assign(static_cast<std::size_t>(num_blocks_), -1);
  for (std::int64_t b = 0; b < num_blocks_; ++b)
    (in_prefill_space(static_cast<std::int32_t>(b)) ? free_prefill_ : free_)
        .insert(static_cast<std::int32_t>(b));
}

void PagedKvCache::free_block(std::int32_t block) {
  owner_[static_cast<std::size_t>(block)] = -1;
  // A freed block reads as NaN until it is written again: a table still pointing at it poisons its request's
  // attention (as stale memory would corrupt it on the device) instead of reading K/V left behind.
  const auto n = static_cast<std::ptrdiff_t>(block_tokens_ * token_values_);
  for (auto* pools : {&k_, &v_})
    for (auto& pool : *pools) std::fill_n(pool.begin() + block * n, n, kFreedValue);
  (in_prefill_space(block) ? free_prefill_ : free_).insert(block);
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
  if (holders_[i] == 0) free_block(block);
}

void PagedKvCache::reserve(std::int64_t id, std::int64_t tokens, KvSpace space) {
  auto& table = tables_[id];
  const std::int64_t need = (tokens + block_tokens_ - 1) / block_tokens_;
  std::set<std::int32_t>& free = free_of(space);
  while (static_cast<std::int64_t>(table.size()) < need) {
    if (free.empty())
      throw Error(
          fmt::format("paged KV cache: request {} needs {} blocks of {} tokens, the {} of {} blocks is "
                      "exhausted; raise the KV block count",
                      id, need, block_tokens_, space == KvSpace::kv ? "pool" : "prefill space",
                      space == KvSpace::kv ? kv_blocks_ : prefill_blocks()));
    table.push_back(*free.begin());
    holders_[static_cast<std::size_t>(table.back())] = 1;
    owner_[static_cast<std::size_t>(table.back())] = id;
    free.erase(free.begin());
  }
}

std::int32_t PagedKvCache::take_kv_block(std::int64_t id) {
  if (free_.empty())
    throw Error(
        fmt::format("paged KV cache: request {}'s K/V leaves the prefill space, the pool of {} blocks is "
                    "exhausted; raise the KV block count",
                    id, kv_blocks_));
  const std::int32_t b = *free_.begin();
  free_.erase(free_.begin());
  return b;
}

std::vector<BlockMove> PagedKvCache::plan_migration(std::int64_t id) {
  std::vector<BlockMove> moves;
  for (const std::int32_t b : block_table(id))
    if (in_prefill_space(b) && owner_[static_cast<std::size_t>(b)] == id)
      moves.push_back({b, take_kv_block(id)});
  return moves;
}

void PagedKvCache::copy_block(int layer, const BlockMove& move) {
  const auto n = static_cast<std::size_t>(block_tokens_ * token_values_);
  const auto from = static_cast<std::size_t>(move.from) * n, to = static_cast<std::size_t>(move.to) * n;
  auto& k = k_[static_cast<std::size_t>(layer)];
  std::copy_n(k.begin() + static_cast<std::ptrdiff_t>(from), n, k.begin() + static_cast<std::ptrdiff_t>(to));
  if (shared_kv_) return;
  auto& v = v_[static_cast<std::size_t>(layer)];
  std::copy_n(v.begin() + static_cast<std::ptrdiff_t>(from), n, v.begin() + static_cast<std::ptrdiff_t>(to));
}

void PagedKvCache::complete_migration(const std::vector<BlockMove>& moves) {
  for (const BlockMove& m : moves) {
    const auto from = static_cast<std::size_t>(m.from), to = static_cast<std::size_t>(m.to);
    DUPLEX_ASSERT(in_prefill_space(m.from) && !in_prefill_space(m.to) && holders_[to] == 0 && !kept_[to],
                  fmt::format("moving block {} to block {}: expected a prefill-space block to a taken KV one",
                              m.from, m.to));
    for (auto& [id, table] : tables_) std::replace(table.begin(), table.end(), m.from, m.to);
    holders_[to] = holders_[from];
    kept_[to] = kept_[from];
    owner_[to] = owner_[from];
    holders_[from] = 0;
    kept_[from] = false;
    free_block(m.from);
    moves_.push_back(m);
  }
}

std::int64_t PagedKvCache::own_prefill_blocks(std::int64_t id) const {
  const auto& table = block_table(id);
  return std::count_if(table.begin(), table.end(), [&](std::int32_t b) {
    return in_prefill_space(b) && owner_[static_cast<std::size_t>(b)] == id;
  });
}

std::vector<BlockMove> PagedKvCache::take_moves() {
  return std::exchange(moves_, {});
}

void PagedKvCache::release(std::int64_t id) {
  auto it = tables_.find(id);
  if (it == tables_.end()) return;
  // Its prefill-space blocks that outlive it leave the prefill space first (no prompt is left to migrate
  // them).
  std::vector<BlockMove> orphans;
  for (const std::int32_t b : it->second) {
    const auto i = static_cast<std::size_t>(b);
    if (in_prefill_space(b) && owner_[i] == id && (holders_[i] > 1 || kept_[i]))
      orphans.push_back({b, take_kv_block(id)});
  }
  for (const BlockMove& m : orphans)
    for (std::size_t layer = 0; layer < k_.size(); ++layer) copy_block(static_cast<int>(layer), m);
  complete_migration(orphans);
  for (const BlockMove& m : orphans) owner_[static_cast<std::size_t>(m.to)] = -1;
  for (auto b : it->second) {
    const auto i = static_cast<std::size_t>(b);
    if (--holders_[i] == 0 && !kept_[i]) free_block(b);
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
