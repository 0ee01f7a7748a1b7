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

std::int64_t PrefixCache::holders(std::uint64_t key) const {
  const auto it = blocks_.find(key);
  return it == blocks_.end() ? 0 : it->second.holders;
}

PrefixCache::Hit PrefixCache::lookup(std::span<const std::uint64_t> keys) const {
  Hit hit;
  for (const std::uint64_t key : keys) {
    const auto it = blocks_.find(key);
    if (it == blocks_.end()) break;
    ++hit.blocks;
    hit.units += it->second.units;
    if (it->second.holders == 0) hit.evictable += it->second.units;
  }
  return hit;
}

void PrefixCache::acquire(RequestId holder, std::span<const std::uint64_t> keys) {
  std::vector<std::uint64_t>& held = held_[holder].keys;
  for (const std::uint64_t key : keys) {
    const auto it = blocks_.find(key);
    DUPLEX_ASSERT(it != blocks_.end(),
                  fmt::format("request {} acquires a prefix block that is not cached", holder));
    if (it->second.holders++ == 0) {
      evictable_.erase(it->second.released);
      evictable_units_ -= it->second.units;
    }
    held.push_back(key);
  }
}

bool PrefixCache::insert(RequestId holder, std::uint64_t key, std::int64_t units) {
  DUPLEX_ASSERT(units >= 1, "a cached block of no memory");
  if (!blocks_.emplace(key, Block{.holders = 1, .units = units}).second) return false;
  held_[holder].keys.push_back(key);
  cached_units_ += units;
  return true;
}

void PrefixCache::unhold(Block& block, std::uint64_t key) {
  if (--block.holders > 0) return;
  block.released = next_stamp_++;
  evictable_.emplace(block.released, key);
  evictable_units_ += block.units;
}

std::int64_t PrefixCache::release(RequestId holder) {
  const auto it = held_.find(holder);
  if (it == held_.end()) return 0;
  std::int64_t units = 0;
  for (auto key = it->second.keys.rbegin(); key != it->second.keys.rend(); ++key) {
    if (it->second.gone.contains(*key)) continue;
    Block& block = blocks_.at(*key);
    units += block.units;
    unhold(block, *key);
  }
  held_.erase(it);
  return units;
}

void PrefixCache::release_one(RequestId holder, std::uint64_t key) {
  const auto it = held_.find(holder);
  DUPLEX_ASSERT(it != held_.end() && !it->second.gone.contains(key) && blocks_.contains(key) &&
                    blocks_.at(key).holders > 0,
                fmt::format("request {} releases a prefix block it does not hold", holder));
  it->second.gone.insert(key);
  unhold(blocks_.at(key), key);
}

std::int64_t PrefixCache::held_by(RequestId holder) const {
  const auto it = held_.find(holder);
  return it == held_.end() ? 0 : static_cast<std::int64_t>(it->second.keys.size() - it->second.gone.size());
}

std::int64_t PrefixCache::evict(std::int64_t units) {
  DUPLEX_ASSERT(0 <= units && units <= evictable_units_, "evicting more cached units than are evictable");
  std::int64_t freed = 0;
  while (freed < units) {
    const auto oldest = evictable_.begin();
    const auto block = blocks_.find(oldest->second);
    freed += block->second.units;
    cached_units_ -= block->second.units;
    evictable_units_ -= block->second.units;
    blocks_.erase(block);
    evictable_.erase(oldest);
  }
  return freed;
}

}  // namespace duplex::runtime
