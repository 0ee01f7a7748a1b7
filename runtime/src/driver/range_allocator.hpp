#pragma once
// First-fit allocator of one contiguous address range (one bank-bundle space of one stack). Sizes and the
// range are multiples of the alignment; freeing coalesces neighbours.
#include <cstdint>
#include <map>
#include <optional>

namespace duplex::driver {

class RangeAllocator {
 public:
  RangeAllocator(std::uint64_t base, std::uint64_t bytes);
  // The lowest free address with `bytes` room, or nothing.
  std::optional<std::uint64_t> allocate(std::uint64_t bytes);
  // Returns [addr, addr + bytes) (an allocation this allocator made) to the free list.
  void release(std::uint64_t addr, std::uint64_t bytes);
  bool contains(std::uint64_t addr) const { return addr >= base_ && addr - base_ < bytes_; }

 private:
  std::uint64_t base_, bytes_;
  std::map<std::uint64_t, std::uint64_t> free_;  // start -> length
};

}  // namespace duplex::driver
