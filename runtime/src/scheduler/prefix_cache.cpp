#include "duplex/runtime/scheduler/prefix_cache.hpp"

#include <fmt/format.h>
#include <algorithm>

#include "duplex/base/error.hpp"

namespace duplex::runtime {

std::vector<std::uint64_t> prefix_block_keys(const RequestSpec& spec, std::int64_t block_tokens, int rank,
                                             int ranks) {
  DUPLEX_ASSERT(block_tokens >= 1 && ranks >= 1 && rank >= 0 && rank < ranks,
                "KV block of no tokens, or a rank out of range");
  // The rank's salt mixes into every key (none on one rank: the keys stay those of a single cache).
  const auto salt = ranks > 1 ? static_cast<std::uint64_t>(rank) + 1 : 0;
  std::vector<std::uint64_t> keys;
  if (spec.content_hashes.empty()) return keys;
  DUPLEX_ASSERT(spec.hash_block_tokens >= 1, "content hashes without a hash block size");
  // The last output token is never fed back: it has no K/V.
  const std::int64_t covered = std::min(spec.hashed_tokens, spec.input_tokens + spec.output_tokens - 1);
  for (std::int64_t j = 0; (j + 1) * block_tokens <= covered; ++j) {
    const std::uint64_t hash =
        spec.content_hashes[static_cast<std::size_t>(((j + 1) * block_tokens - 1) / spec.hash_block_tokens)];
    // A boost::hash_combine-style mix of the content hash and the block's index.
    const std::uint64_t index = static_cast<std::uint64_t>(j) ^ (salt << 40);
    std::uint64_t key = hash ^ (index + 0x9e3779b97f4a7c15ULL + (hash << 6) + (hash >> 2));
    key = (key ^ (key >> 31)) * 0xbf58476d1ce4e5b9ULL;
    keys.push_back(key ^ (key >> 29));
  }
  return keys;
}

PrefixCache::Hit PrefixCache::lookup(std::span<const std::uint64_t> keys) const {
  Hit hit;
  for (const std::uint64_t key : keys) {
    const auto it = blocks_.find(key);
    if (it == blocks_.end()) break;
    ++hit.blocks;
    if (it->second.holders == 0) ++hit.evictable;
  }
  return hit;
}

void PrefixCache::acquire(RequestId holder, std::span<const std::uint64_t> keys) {
  std::vector<std::uint64_t>& held = held_[holder];
  for (const std::uint64_t key : keys) {
    const auto it = blocks_.find(key);
    DUPLEX_ASSERT(it != blocks_.end(),
                  fmt::format("request {} acquires a prefix block that is not cached", holder));
    if (it->second.holders++ == 0) evictable_.erase(it->second.released);
    held.push_back(key);
  }
}

bool PrefixCache::insert(RequestId holder, std::uint64_t key) {
  if (!blocks_.emplace(key, Block{.holders = 1}).second) return false;
  held_[holder].push_back(key);
  return true;
}

std::int64_t PrefixCache::release(RequestId holder) {
  const auto it = held_.find(holder);
  if (it == held_.end()) return 0;
  const auto n = static_cast<std::int64_t>(it->second.size());
  for (auto key = it->second.rbegin(); key != it->second.rend(); ++key) {
    Block& block = blocks_.at(*key);
    if (--block.holders > 0) continue;
    block.released = next_stamp_++;
    evictable_.emplace(block.released, *key);
  }
  held_.erase(it);
  return n;
}

std::int64_t PrefixCache::held_by(RequestId holder) const {
  const auto it = held_.find(holder);
  return it == held_.end() ? 0 : static_cast<std::int64_t>(it->second.size());
}

void PrefixCache::evict(std::int64_t n) {
  DUPLEX_ASSERT(0 <= n && n <= evictable_blocks(), "evicting more cached blocks than are evictable");
  for (std::int64_t i = 0; i < n; ++i) {
    const auto oldest = evictable_.begin();
    blocks_.erase(oldest->second);
    evictable_.erase(oldest);
  }
}

}  // namespace duplex::runtime
