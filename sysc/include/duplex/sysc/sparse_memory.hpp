#pragma once
// The functional backing store of device memory: real bytes, allocated in pages on first write, so an
// 80 GB device fits in host RAM as long as only what is written is kept. Bytes never written read as 0.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <unordered_map>

namespace duplex::sysc {

class SparseMemory {
 public:
  // page_bytes must be a power of two. Throws duplex::Error otherwise.
  explicit SparseMemory(std::uint64_t capacity, std::uint64_t page_bytes = 64 * 1024);

  std::uint64_t capacity() const { return capacity_; }
  std::size_t pages_allocated() const { return pages_.size(); }
  std::uint64_t bytes_allocated() const { return pages_.size() * page_bytes_; }
  // Throws duplex::Error naming the range when [addr, addr + n) is outside the capacity.
  void read(std::uint64_t addr, void* dst, std::uint64_t n) const;
  void write(std::uint64_t addr, const void* src, std::uint64_t n);
  void check_range(std::uint64_t addr, std::uint64_t n) const;

 private:
  std::uint64_t capacity_;
  std::uint64_t page_bytes_;
  int page_shift_;
  std::unordered_map<std::uint64_t, std::unique_ptr<std::byte[]>> pages_;
};

}  // namespace duplex::sysc
