#include "duplex/runtime/scheduler/kv_block_manager.hpp"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::runtime {

KvBlockManager::KvBlockManager(std::int64_t capacity_blocks, std::int64_t block_tokens, KvWindow window)
    : capacity_blocks_(capacity_blocks), block_tokens_(block_tokens), window_(window), units_per_block_(1) {
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
  return it == units_.end() ? 0 : it->second;
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
  DUPLEX_ASSERT(target - held <= free_units(), fmt::format("KV grow of request {} by {} units with {} free", id,
                                                           target - held, free_units()));
  units_[id] = target;
  used_units_ += target - held;
}

void KvBlockManager::release(RequestId id) {
  const auto it = units_.find(id);
  if (it == units_.end()) return;
  used_units_ -= it->second;
  units_.erase(it);
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
