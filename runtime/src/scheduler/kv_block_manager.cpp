#include "duplex/runtime/scheduler/kv_block_manager.hpp"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::runtime {

KvBlockManager::KvBlockManager(std::int64_t capacity_blocks, std::int64_t block_tokens, KvWindow window,
                               std::int64_t host_blocks, std::shared_ptr<HostKvTier> shared_host)
    : capacity_blocks_(capacity_blocks),
      block_tokens_(block_tokens),
      window_(window),
      units_per_block_(1),
      host_(shared_host ? std::move(shared_host) : std::make_shared<HostKvTier>(host_blocks)) {
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
  const std::int64_t first = window_.chunked ? context - context % window_.tokens  // oldest token needed
                                             : std::max<std::int64_t>(0, context - window_.tokens + 1);
  return (total_tokens - 1) / block_tokens_ - first / block_tokens_ + 1;
}

std::int64_t KvBlockManager::units_for_step(std::int64_t context, std::int64_t total_tokens) const {
  if (units_per_block_ == 1) return blocks_for_step(context, total_tokens);
  return window_.full_layers * blocks_for(total_tokens) +
         window_.windowed_layers * blocks_for_step(context, total_tokens);
}

std::int64_t KvBlockManager::extra_units_needed(RequestId id, std::int64_t context, std::int64_t total_tokens) const {
  const std::int64_t need = units_for_step(context, total_tokens) - units_of(id);
  return need > 0 ? need : 0;
}

void KvBlockManager::grow_to(RequestId id, std::int64_t context, std::int64_t total_tokens) {
  const std::int64_t held = units_of(id), want = units_for_step(context, total_tokens);
  const std::int64_t target = window_.tokens > 0 ? want : std::max(held, want);
  if (target == held) return;
  if (target - held > free_units()) {
    const std::int64_t short_units = target - held - free_units();
    DUPLEX_ASSERT(
        short_units <= prefix_.evictable_blocks(),
        fmt::format("KV grow of request {} by {} units with {} free", id, target - held, free_units()));
    prefix_.evict(short_units);
    used_units_ -= short_units;
  }
  units_[id].units = target;
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
  const std::int64_t own = std::max<std::int64_t>(0, units_for_step(context, total_tokens) - hit.blocks);
  return own <= free_units() + prefix_.evictable_blocks() - hit.evictable;
}

PrefixCache::Hit KvBlockManager::prefix_hit(std::span<const std::uint64_t> keys) const {
  PrefixCache::Hit hit = prefix_.lookup(keys);
  hit.host_blocks = host_->leading(keys, static_cast<std::size_t>(hit.blocks));
  return hit;
}

void KvBlockManager::take_prefix(RequestId id, std::span<const std::uint64_t> keys, std::int64_t blocks,
                                 std::int64_t host_blocks) {
  DUPLEX_ASSERT(units_of(id) == 0, "a request taking cached prefix blocks already holds blocks");
  if (blocks + host_blocks == 0) return;
  DUPLEX_ASSERT(window_.tokens == 0, "prefix caching with a sliding window");
  host_->touch(keys.subspan(static_cast<std::size_t>(blocks), static_cast<std::size_t>(host_blocks)));
  if (blocks == 0) return;
  prefix_.acquire(id, keys.first(static_cast<std::size_t>(blocks)));
  units_[id] = Holder{.units = blocks, .next_shared = blocks, .next_hosted = blocks};
}

std::int64_t KvBlockManager::share_computed(RequestId id, std::span<const std::uint64_t> keys,
                                            std::int64_t computed_tokens, bool to_host) {
  if (keys.empty()) return 0;
  DUPLEX_ASSERT(window_.tokens == 0, "prefix caching with a sliding window");
  Holder& holder = units_.at(id);
  const std::int64_t full =
      std::min<std::int64_t>(static_cast<std::int64_t>(keys.size()), computed_tokens / block_tokens_);
  DUPLEX_ASSERT(full <= holder.units, "a request computed blocks it does not hold");
  // Moving a block of its own into the cache leaves the used units as they are.
  for (; holder.next_shared < full; ++holder.next_shared)
    prefix_.insert(id, keys[static_cast<std::size_t>(holder.next_shared)]);
  std::int64_t copies = 0;
  if (to_host)
    for (; holder.next_hosted < full; ++holder.next_hosted)
      if (host_->store(keys[static_cast<std::size_t>(holder.next_hosted)])) ++copies;
  return copies;
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
