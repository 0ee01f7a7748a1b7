#pragma once
// Seeded device buffers for the kernel benchmarks (kernels_bench, decode_tune_bench), and the decode-attention
// inputs both benchmark.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <numeric>
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

// Decode attention over a paged cache as the benchmarks run it: `batch` requests of `context` tokens each,
// pages of 16 tokens handed out in a seeded shuffled order (as in serving), random q / K / V. The caches are
// the runtime's layout ([pages][16][Hkv][D]) or, with head_major, strided views of [pages][Hkv][16][D].
inline DecodeAttentionArgs paged_decode_args(Buffers& buf, DType dtype, std::int64_t batch, std::int64_t hq,
                                             std::int64_t hkv, std::int64_t d, std::int64_t context,
                                             bool head_major = false) {
  const std::int64_t block = 16, blocks_per_seq = (context + block - 1) / block;
  std::vector<std::int32_t> table(static_cast<std::size_t>(batch * blocks_per_seq));
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937_64(7));
  std::vector<std::int32_t> lens(static_cast<std::size_t>(batch), static_cast<std::int32_t>(context));
  const std::int64_t num_blocks = batch * blocks_per_seq;
  auto cache = [&] {
    if (!head_major) return buf.random(dtype, {num_blocks, block, hkv, d});
    const Tensor physical = buf.random(dtype, {num_blocks, hkv, block, d});
    return Tensor::strided(physical.data, dtype, {num_blocks, block, hkv, d}, {hkv * block * d, d, block * d, 1},
                           physical.location);
  };
  return DecodeAttentionArgs{buf.random(dtype, {batch, hq, d}),
                             cache(),
                             cache(),
                             buf.ints({batch, blocks_per_seq}, table),
                             buf.ints({batch}, lens),
                             buf.random(dtype, {batch, hq, d}),
                             1.0f / static_cast<float>(std::sqrt(static_cast<double>(d))),
                             context};
}

// The K and V bytes one call of paged_decode_args' op must read (every request at max_context_len).
inline double decode_kv_bytes(const DecodeAttentionArgs& args) {
  return 2.0 * static_cast<double>(args.q.dim(0) * args.max_context_len * args.k_cache.dim(2) * args.q.dim(2)) *
         static_cast<double>(dtype_size(args.q.dtype));
}

}  // namespace duplex::kernels
