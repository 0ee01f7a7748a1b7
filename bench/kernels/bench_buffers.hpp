#pragma once
// Seeded device buffers for the kernel benchmarks (kernels_bench, decode_tune_bench).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <random>
#include <vector>

#include "duplex/base/fp16.hpp"
#include "duplex/kernels/backend.hpp"

namespace duplex::kernels {

// Device buffers of one backend filled with seeded uniform data; freed with the set.
class Buffers {
 public:
  explicit Buffers(Backend& backend) : backend_(backend) {}
  ~Buffers() {
    (void)backend_.synchronize({});
    for (void* p : owned_) backend_.deallocate(p);
  }
  Buffers(const Buffers&) = delete;
  Buffers& operator=(const Buffers&) = delete;

  Tensor random(DType dtype, std::initializer_list<std::int64_t> shape, double lo = -1.0, double hi = 1.0) {
    Tensor t = Tensor::contiguous(nullptr, dtype, shape, backend_.memory_location());
    t.data = backend_.allocate(t.bytes());
    owned_.push_back(t.data);
    // A seeded random pattern of up to 1 Mi elements, repeated: fast to make for multi-GB weights.
    const std::size_t element = dtype_size(dtype);
    const std::size_t pattern =
        std::min<std::size_t>(static_cast<std::size_t>(t.numel()), std::size_t{1} << 20);
    std::vector<unsigned char> host(t.bytes());
    std::uniform_real_distribution<float> dist(static_cast<float>(lo), static_cast<float>(hi));
    for (std::size_t i = 0; i < pattern; ++i) {
      const float v = dist(rng_);
      const std::uint16_t h = dtype == DType::kBF16 ? float_to_bf16_bits(v) : float_to_half_bits(v);
      std::memcpy(host.data() + element * i, dtype == DType::kF32 ? static_cast<const void*>(&v) : &h,
                  element);
    }
    for (std::size_t done = pattern * element; done < host.size(); done += pattern * element)
      std::memcpy(host.data() + done, host.data(), std::min(pattern * element, host.size() - done));
    (void)backend_.copy_from_host(t.data, host.data(), host.size(), {});
    return t;
  }
  Tensor ints(std::initializer_list<std::int64_t> shape, const std::vector<std::int32_t>& values) {
    Tensor t = Tensor::contiguous(nullptr, DType::kI32, shape, backend_.memory_location());
    t.data = backend_.allocate(t.bytes());
    owned_.push_back(t.data);
    (void)backend_.copy_from_host(t.data, values.data(), t.bytes(), {});
    return t;
  }

 private:
  Backend& backend_;
  std::vector<void*> owned_;
  std::mt19937_64 rng_{42};
};

}  // namespace duplex::kernels
