#include "duplex/runtime/scheduler/host_kv_tier.hpp"

#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::runtime {

HostKvTier::HostKvTier(std::int64_t capacity_blocks) : capacity_(capacity_blocks) {
  if (capacity_blocks < 0)
    throw Error(fmt::format("host KV tier of {} blocks; expected >= 0 (0: none)", capacity_blocks));
}

bool HostKvTier::store(std::uint64_t key, int node) {
  if (capacity_ == 0) return false;
  const auto [it, added] = stamps_.try_emplace(key, Copy{next_stamp_, node});
  if (!added) by_use_.erase(it->second.stamp);
  it->second.stamp = next_stamp_;
  by_use_.emplace(next_stamp_++, key);
  if (blocks() > capacity_) {
    const auto oldest = by_use_.begin();
    stamps_.erase(oldest->second);
    by_use_.erase(oldest);
  }
  return added;
}

std::int64_t HostKvTier::leading(std::span<const std::uint64_t> keys, std::size_t from) const {
  std::int64_t n = 0;
  for (std::size_t i = from; i < keys.size() && stamps_.contains(keys[i]); ++i) ++n;
  return n;
}

void HostKvTier::touch(std::span<const std::uint64_t> keys) {
  for (const std::uint64_t key : keys) {
    DUPLEX_ASSERT(stamps_.contains(key), "touching a KV block the host tier does not hold");
    store(key);
  }
}

int HostKvTier::node_of(std::uint64_t key) const {
  const auto it = stamps_.find(key);
  DUPLEX_ASSERT(it != stamps_.end(), "the node of a KV block the host tier does not hold");
  return it->second.node;
}

}  // namespace duplex::runtime
