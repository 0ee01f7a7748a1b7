#include "duplex/runtime/scheduler/kv_block_manager.hpp"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::runtime {

KvBlockManager::KvBlockManager(std::int64_t capacity_blocks, std::int64_t block_tokens, KvWindow window,
                               std::int64_t host_blocks, std::shared_ptr<HostKvTier> shared_host,
                               int host_node, std::int64_t disk_blocks,
                               std::shared_ptr<HostKvTier> shared_disk)
    : capacity_blocks_(capacity_blocks),
      block_tokens_(block_tokens),
      window_(window),
      units_per_block_(1),
      full_units_(1),
      window_units_(0),
      host_(shared_host ? std::move(shared_host) : std::make_shared<HostKvTier>(host_blocks)),
      host_node_(host_node),
      disk_(shared_disk ? std::move(shared_disk) : std::make_shared<HostKvTier>(disk_blocks)) {
  if (capacity_blocks < 1)
    throw Error(fmt::format("KV cache capacity is {} blocks; expected at least 1 block", capacity_blocks));
  if (block_tokens < 1)
    throw Error(fmt::format("KV block size is {} tokens; expected at least 1 token", block_tokens));
  if (window.tokens < 0)
    throw Error(fmt::format("KV sliding window is {} tokens; expected >= 1 (or 0: no window)", window.tokens));
  if (window.full_layers < 0 || window.windowed_layers < 1)
    throw Error(fmt::format("KV sliding window over {} windowed and {} full layers; expected >= 1 windowed and "
                            ">= 0 full",
                            window.windowed_layers, window.full_layers));
  if (window.tokens > 0 && window.full_layers > 0) units_per_block_ = window.full_layers + window.windowed_layers;
  if (window.tokens > 0) {
    full_units_ = window.full_layers > 0 ? window.full_layers : 0;
    window_units_ = window.full_layers > 0 ? window.windowed_layers : 1;
  }
  if (disk_->capacity_blocks() > 0 && host_->capacity_blocks() == 0)
    throw Error(
        fmt::format("a disk K/V tier of {} blocks (links.disk_kv_offload) without a host tier; expected "
                    "links.host_kv_offload above 0 in front of it",
                    disk_->capacity_blocks()));
}

std::int64_t KvBlockManager::window_first_token(std::int64_t context) const {
  return window_.chunked ? context - context % window_.tokens  // oldest token needed
                         : std::max<std::int64_t>(0, context - window_.tokens + 1);
}

std::uint64_t KvBlockManager::window_key(std::uint64_t key) const {
  if (full_units_ == 0) return key;
  // Another splitmix64 round keeps the windowed group's keys apart from the full layers'.
  std::uint64_t z = key + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::int64_t KvBlockManager::slid_shared_units(RequestId id, std::int64_t context) const {
  const auto it = units_.find(id);
  if (window_units_ == 0 || it == units_.end()) return 0;
  const std::int64_t first = window_first_block(context);
  std::int64_t units = 0;
  for (const auto& [index, key] : it->second.window_cached) {
    if (index >= first) break;
    if (prefix_.holders(key) > 1) units += window_units_;
  }
  return units;
}

std::int64_t KvBlockManager::blocks_for(std::int64_t tokens) const {
  DUPLEX_ASSERT(tokens >= 0, "negative token count");
  return (tokens + block_tokens_ - 1) / block_tokens_;
}

std::int64_t KvBlockManager::units_of(RequestId id) const {
  const auto it = units_.find(id);
  return it == units_.end() ? 0 : it->second.units;
}

std::int64_t KvBlockManager::blocks_for_step(std::int64_t context, std::int64_t total_tokens) const {
  DUPLEX_ASSERT(0 <= context && context <= total_tokens, "a step's context outside [0, its total tokens]");
  if (window_.tokens == 0 || total_tokens == 0) return blocks_for(total_tokens);
  return (total_tokens - 1) / block_tokens_ - window_first_block(context) + 1;
}

std::int64_t KvBlockManager::units_for_step(std::int64_t context, std::int64_t total_tokens) const {
  if (units_per_block_ == 1) return blocks_for_step(context, total_tokens);
  return window_.full_layers * blocks_for(total_tokens) +
         window_.windowed_layers * blocks_for_step(context, total_tokens);
}

std::int64_t KvBlockManager::extra_units_needed(RequestId id, std::int64_t context, std::int64_t total_tokens) const {
  const std::int64_t need =
      units_for_step(context, total_tokens) - units_of(id) + slid_shared_units(id, context);
  return need > 0 ? need : 0;
}

void KvBlockManager::grow_to(RequestId id, std::int64_t context, std::int64_t total_tokens) {
  Holder& holder = units_[id];
  // Its cached windowed blocks behind the window go back to the cache: still counted in the used units, no
  // longer its own.
  const std::int64_t first = window_units_ > 0 ? window_first_block(context) : 0;
  holder.window_from = std::max(holder.window_from, first);
  while (!holder.window_cached.empty() && holder.window_cached.front().first < first) {
    prefix_.release_one(id, holder.window_cached.front().second);
    holder.units -= window_units_;
    holder.window_cached.pop_front();
  }
  const std::int64_t held = holder.units, want = units_for_step(context, total_tokens);
  const std::int64_t target = window_.tokens > 0 ? want : std::max(held, want);
  if (target == held) return;
  if (target - held > free_units()) {
    const std::int64_t short_units = target - held - free_units();
    DUPLEX_ASSERT(
        short_units <= prefix_.evictable_units(),
        fmt::format("KV grow of request {} by {} units with {} free", id, target - held, free_units()));
    used_units_ -= prefix_.evict(short_units);
  }
  holder.units = target;
  used_units_ += target - held;
}

void KvBlockManager::release(RequestId id) {
  const auto it = units_.find(id);
  if (it == units_.end()) return;
  // Its cached blocks stay counted (as cached, now perhaps evictable); its own go.
  used_units_ -= it->second.units - prefix_.release(id);
  units_.erase(it);
}

bool KvBlockManager::can_grow_with(RequestId id, const PrefixCache::Hit& hit, std::int64_t context,
                                   std::int64_t total_tokens) const {
  DUPLEX_ASSERT(units_of(id) == 0, "a request taking cached prefix blocks already holds blocks");
  const std::int64_t own = std::max<std::int64_t>(0, units_for_step(context, total_tokens) - hit.units);
  return own <= free_units() + prefix_.evictable_units() - hit.evictable;
}

PrefixCache::Hit KvBlockManager::prefix_hit(std::span<const std::uint64_t> keys,
                                            std::int64_t max_tokens) const {
  if (window_.tokens == 0) {
    PrefixCache::Hit hit = prefix_.lookup(keys);
    hit.host_blocks = host_->leading(keys, static_cast<std::size_t>(hit.blocks));
    hit.disk_blocks = disk_->leading(keys, static_cast<std::size_t>(hit.blocks + hit.host_blocks));
    return hit;
  }
  // The full layers' blocks from the first; the windowed layers' then decide, longest first (vLLM's
  // find_longest_cache_hit): a hit of L blocks starts the request at c = min(L x block, max_tokens), whose
  // window reaches back to block window_first_block(c).
  const auto reach =
      std::min<std::int64_t>(static_cast<std::int64_t>(keys.size()),
                             max_tokens / block_tokens_ + (max_tokens % block_tokens_ > 0 ? 1 : 0));
  auto blocks = reach;
  if (full_units_ > 0)
    blocks = std::min(blocks, prefix_.lookup(keys.first(static_cast<std::size_t>(blocks))).blocks);
  std::vector<std::int64_t> run(static_cast<std::size_t>(blocks));  // cached windowed blocks ending at j
  for (std::int64_t j = 0; j < blocks; ++j)
    run[static_cast<std::size_t>(j)] = prefix_.contains(window_key(keys[static_cast<std::size_t>(j)]))
                                           ? (j > 0 ? run[static_cast<std::size_t>(j - 1)] : 0) + 1
                                           : 0;
  for (; blocks > 0; --blocks) {
    const std::int64_t first = window_first_block(std::min(blocks * block_tokens_, max_tokens));
    if (first >= blocks || run[static_cast<std::size_t>(blocks - 1)] >= blocks - first) break;
  }
  // The host and disk tiers' copies (every layer of a block) continue it; the window of the token it then
  // starts at lies within the device's windowed blocks checked above, or among the loaded ones.
  PrefixCache::Hit hit;
  hit.blocks = blocks;
  hit.host_blocks = std::min(reach - blocks, host_->leading(keys, static_cast<std::size_t>(blocks)));
  hit.disk_blocks = std::min(reach - blocks - hit.host_blocks,
                             disk_->leading(keys, static_cast<std::size_t>(blocks + hit.host_blocks)));
  if (blocks == 0) return hit;
  const std::int64_t start =
      std::min((blocks + hit.host_blocks + hit.disk_blocks) * block_tokens_, max_tokens);
  hit.window_first = std::min(blocks, window_first_block(start));
  std::vector<std::uint64_t> windowed;
  for (std::int64_t j = hit.window_first; j < blocks; ++j)
    windowed.push_back(window_key(keys[static_cast<std::size_t>(j)]));
  const PrefixCache::Hit w = prefix_.lookup(windowed);
  hit.units = w.units;
  hit.evictable = w.evictable;
  if (full_units_ > 0) {
    const PrefixCache::Hit f = prefix_.lookup(keys.first(static_cast<std::size_t>(blocks)));
    hit.units += f.units;
    hit.evictable += f.evictable;
  }
  return hit;
}

void KvBlockManager::take_prefix(RequestId id, std::span<const std::uint64_t> keys,
                                 const PrefixCache::Hit& hit) {
  DUPLEX_ASSERT(units_of(id) == 0, "a request taking cached prefix blocks already holds blocks");
  if (hit.blocks + hit.host_blocks + hit.disk_blocks == 0) return;
  host_->touch(keys.subspan(static_cast<std::size_t>(hit.blocks), static_cast<std::size_t>(hit.host_blocks)));
  const auto from_disk = keys.subspan(static_cast<std::size_t>(hit.blocks + hit.host_blocks),
                                      static_cast<std::size_t>(hit.disk_blocks));
  disk_->touch(from_disk);
  for (const std::uint64_t key : from_disk)
    host_->store(key, host_node_);  // read into host memory on its way
  if (hit.blocks == 0) return;
  Holder& holder = units_[id];
  holder = Holder{.units = hit.units,
                  .next_shared = hit.blocks,
                  .next_hosted = hit.blocks,
                  .window_from = hit.window_first,
                  .window_cached = {}};
  if (full_units_ > 0) prefix_.acquire(id, keys.first(static_cast<std::size_t>(hit.blocks)));
  for (std::int64_t j = hit.window_first; window_units_ > 0 && j < hit.blocks; ++j) {
    const std::uint64_t key = window_key(keys[static_cast<std::size_t>(j)]);
    prefix_.acquire(id, std::span(&key, 1));
    holder.window_cached.emplace_back(j, key);
  }
}

KvBlockManager::Copies KvBlockManager::share_computed(RequestId id, std::span<const std::uint64_t> keys,
                                                      std::int64_t computed_tokens, bool to_host) {
  if (keys.empty()) return {};
  Holder& holder = units_.at(id);
  const std::int64_t full =
      std::min<std::int64_t>(static_cast<std::int64_t>(keys.size()), computed_tokens / block_tokens_);
  DUPLEX_ASSERT(window_.tokens > 0 || full <= holder.units, "a request computed blocks it does not hold");
  // Moving a block of its own into the cache leaves the used units as they are. (With a window, the blocks
  // a step computes are in the window of its first token: held; blocks loaded from the host tier may lie
  // behind it: their windowed share is not held.)
  for (; holder.next_shared < full; ++holder.next_shared) {
    const std::int64_t j = holder.next_shared;
    const std::uint64_t key = keys[static_cast<std::size_t>(j)];
    if (full_units_ > 0) prefix_.insert(id, key, full_units_);
    if (window_units_ > 0 && j >= holder.window_from && prefix_.insert(id, window_key(key), window_units_))
      holder.window_cached.emplace_back(j, window_key(key));
  }
  Copies copies;
  if (to_host)
    for (; holder.next_hosted < full; ++holder.next_hosted) {
      const std::uint64_t key = keys[static_cast<std::size_t>(holder.next_hosted)];
      if (host_->store(key, host_node_)) ++copies.host;
      if (disk_->store(key, host_node_)) ++copies.disk;
    }
  return copies;
}

std::int64_t KvBlockManager::remote_tokens(const HostKvTier& tier, std::span<const std::uint64_t> keys,
                                           std::int64_t first_block, std::int64_t tokens) const {
  std::int64_t remote = 0;
  for (std::int64_t j = first_block; tokens > 0; ++j, tokens -= block_tokens_)
    if (tier.node_of(keys[static_cast<std::size_t>(j)]) != host_node_)
      remote += std::min(tokens, block_tokens_);
  return remote;
}

std::int64_t KvBlockManager::host_remote_tokens(std::span<const std::uint64_t> keys, std::int64_t first_block,
                                                std::int64_t tokens) const {
  return remote_tokens(*host_, keys, first_block, tokens);
}

std::int64_t KvBlockManager::disk_remote_tokens(std::span<const std::uint64_t> keys, std::int64_t first_block,
                                                std::int64_t tokens) const {
  return remote_tokens(*disk_, keys, first_block, tokens);
}

std::int64_t kv_blocks_for_memory(double kv_bytes_available, double kv_bytes_per_token,
                                  std::int64_t block_tokens) {
  if (!(kv_bytes_per_token > 0.0))
    throw Error(fmt::format("KV bytes per token is {}; expected a positive number", kv_bytes_per_token));
  if (block_tokens < 1)
    throw Error(fmt::format("KV block size is {} tokens; expected at least 1 token", block_tokens));
  const double block_bytes = kv_bytes_per_token * static_cast<double>(block_tokens);
  const double blocks = std::floor(kv_bytes_available / block_bytes);
  if (!(blocks >= 1.0))
    throw Error(fmt::format("{:.4g} bytes left for the KV cache hold no block of {:.4g} bytes; the model's "
                            "weights leave no room for KV: use more devices or a smaller model",
                            kv_bytes_available, block_bytes));
  return static_cast<std::int64_t>(blocks);
}

}  // namespace duplex::runtime
