#include "range_allocator.hpp"

#include <iterator>

namespace duplex::driver {

RangeAllocator::RangeAllocator(std::uint64_t base, std::uint64_t bytes) : base_(base), bytes_(bytes) {
  if (bytes > 0) free_.emplace(base, bytes);
}

std::optional<std::uint64_t> RangeAllocator::allocate(std::uint64_t bytes) {
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < bytes) continue;
    const std::uint64_t at = it->first, rest = it->second - bytes;
    free_.erase(it);
    if (rest > 0) free_.emplace(at + bytes, rest);
    return at;
  }
  return std::nullopt;
}

void RangeAllocator::release(std::uint64_t addr, std::uint64_t bytes) {
  auto it = free_.emplace(addr, bytes).first;
  const auto next = std::next(it);
  if (next != free_.end() && it->first + it->second == next->first) {
    it->second += next->second;
    free_.erase(next);
  }
  if (it != free_.begin()) {
    const auto prev = std::prev(it);
    if (prev->first + prev->second == it->first) {
      prev->second += it->second;
      free_.erase(it);
    }
  }
}

}  // namespace duplex::driver
