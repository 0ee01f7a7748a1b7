#include "duplex/sysc/sparse_memory.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::sysc {

SparseMemory::SparseMemory(std::uint64_t capacity, std::uint64_t page_bytes)
    : capacity_(capacity), page_bytes_(page_bytes), page_shift_(std::countr_zero(page_bytes)) {
  if (page_bytes == 0 || !std::has_single_bit(page_bytes))
    throw Error(fmt::format("sparse memory page size {} is not a power of two", page_bytes));
}

void SparseMemory::check_range(std::uint64_t addr, std::uint64_t n) const {
  if (addr > capacity_ || n > capacity_ - addr)
    throw Error(fmt::format("device memory access [0x{:x}, +{}) is outside the {} bytes of device memory",
                            addr, n, capacity_));
}

void SparseMemory::read(std::uint64_t addr, void* dst, std::uint64_t n) const {
  check_range(addr, n);
  auto* out = static_cast<std::byte*>(dst);
  while (n > 0) {
    const std::uint64_t page = addr >> page_shift_;
    const std::uint64_t offset = addr & (page_bytes_ - 1);
    const std::uint64_t chunk = std::min(n, page_bytes_ - offset);
    auto it = pages_.find(page);
    if (it == pages_.end())
      std::memset(out, 0, chunk);
    else
      std::memcpy(out, it->second.get() + offset, chunk);
    out += chunk;
    addr += chunk;
    n -= chunk;
  }
}

void SparseMemory::write(std::uint64_t addr, const void* src, std::uint64_t n) {
  check_range(addr, n);
  const auto* in = static_cast<const std::byte*>(src);
  while (n > 0) {
    const std::uint64_t page = addr >> page_shift_;
    const std::uint64_t offset = addr & (page_bytes_ - 1);
    const std::uint64_t chunk = std::min(n, page_bytes_ - offset);
    auto& p = pages_[page];
    if (!p) {
      p = std::make_unique<std::byte[]>(page_bytes_);
      std::memset(p.get(), 0, page_bytes_);
    }
    std::memcpy(p.get() + offset, in, chunk);
    in += chunk;
    addr += chunk;
    n -= chunk;
  }
}

}  // namespace duplex::sysc
