// The bandwidth ceiling of decode attention's access pattern on the GPU (CUDA builds only; skipped without a
// GPU). Cuda/KvRead reads exactly the K and V rows Cuda/DecodeAttention (kernels_bench) reads - same shapes,
// pages of 16 tokens, the same shuffled block table - with a kernel that only loads (kv_read_kernels.cu), and
// varies what the attention kernel cannot: the cache layout (nhd: the runtime's [pages][16][kv heads][d];
// hnd: [pages][kv heads][16][d]) and the page order (shuffled as in serving, or sequential). Comparing
// DecodeAttention with KvRead/nhd/shuffled tells how far the kernel is from its access pattern's ceiling;
// KvRead across layouts and orders tells what a layout change could gain. Counters as kernels_bench: `bytes`
// (K + V bytes per second) and `of_peak` (over 4.8 TB/s).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "kv_read_kernels.hpp"

namespace duplex::bench {
namespace {

constexpr double kH200HbmBytesPerSecond = 4.8e12;  // source: NVIDIA H200 SXM datasheet (HBM3e)

bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// Device allocations freed on scope exit.
class DeviceBuffers {
 public:
  DeviceBuffers() = default;
  DeviceBuffers(const DeviceBuffers&) = delete;
  DeviceBuffers& operator=(const DeviceBuffers&) = delete;
  ~DeviceBuffers() {
    for (void* p : owned_) (void)cudaFree(p);
  }
  void* allocate(std::size_t bytes) {
    void* p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) return nullptr;
    owned_.push_back(p);
    return p;
  }

 private:
  std::vector<void*> owned_;
};

// Args: batch, kv heads, head_dim, context, tokens per thread block.
void kv_read_bench(benchmark::State& state, KvLayout layout, bool shuffled) {
  if (!have_gpu()) {
    state.SkipWithError("no GPU");
    return;
  }
  KvReadShape s;
  s.batch = state.range(0);
  s.kv_heads = state.range(1);
  s.head_dim = state.range(2);
  s.context = state.range(3);
  s.tokens_per_block = state.range(4);
  s.block_tokens = 16;
  s.blocks_per_seq = (s.context + s.block_tokens - 1) / s.block_tokens;
  s.layout = layout;
  const std::int64_t pages = s.batch * s.blocks_per_seq;
  const auto cache_bytes = static_cast<std::size_t>(pages * s.block_tokens * s.kv_heads * s.head_dim * 2);
  std::vector<std::int32_t> table(static_cast<std::size_t>(pages));
  std::iota(table.begin(), table.end(), 0);
  if (shuffled) std::shuffle(table.begin(), table.end(), std::mt19937_64(7));  // as kernels_bench's decode_bench

  DeviceBuffers buf;
  void* k = buf.allocate(cache_bytes);
  void* v = buf.allocate(cache_bytes);
  auto* table_d = static_cast<std::int32_t*>(buf.allocate(table.size() * sizeof(std::int32_t)));
  auto* sink = static_cast<unsigned int*>(buf.allocate(sizeof(unsigned int)));
  if (k == nullptr || v == nullptr || table_d == nullptr || sink == nullptr ||
      cudaMemset(k, 0x3c, cache_bytes) != cudaSuccess || cudaMemset(v, 0x5a, cache_bytes) != cudaSuccess ||
      cudaMemcpy(table_d, table.data(), table.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice) !=
          cudaSuccess) {
    state.SkipWithError("device allocation or copy failed");
    return;
  }
  for (auto _ : state) {
    if (launch_kv_read(k, v, table_d, sink, s, nullptr) != cudaSuccess ||
        cudaDeviceSynchronize() != cudaSuccess) {
      state.SkipWithError("kv_read failed");
      return;
    }
  }
  const double bytes = 2.0 * static_cast<double>(s.batch * s.context * s.kv_heads * s.head_dim * 2);
  const auto iters = static_cast<double>(state.iterations());
  state.counters["bytes"] = benchmark::Counter(bytes * iters, benchmark::Counter::kIsRate);
  state.counters["of_peak"] =
      benchmark::Counter(bytes * iters / kH200HbmBytesPerSecond, benchmark::Counter::kIsRate);
}

void register_all() {
  for (KvLayout layout : {KvLayout::kNhd, KvLayout::kHnd})
    for (bool shuffled : {true, false}) {
      const std::string name = std::string("Cuda/KvRead/") + (layout == KvLayout::kNhd ? "nhd" : "hnd") + "/" +
                               (shuffled ? "shuffled" : "sequential");
      // Cuda/DecodeAttention's d=128 shapes (batch, kv heads, d, context), each with 512 tokens per thread
      // block (many small splits) and with one block per (request, kv head) (no split).
      auto* b = benchmark::RegisterBenchmark(name.c_str(), kv_read_bench, layout, shuffled);
      constexpr std::array<std::array<std::int64_t, 3>, 4> kShapes{
          {{64, 8, 4096}, {256, 8, 2048}, {16, 8, 16384}, {64, 32, 2048}}};
      for (const auto& [batch, hkv, ctx] : kShapes) {
        b->Args({batch, hkv, 128, ctx, 512});
        b->Args({batch, hkv, 128, ctx, ctx});
      }
      b->Unit(benchmark::kMicrosecond)->UseRealTime();
    }
}

}  // namespace
}  // namespace duplex::bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  duplex::bench::register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
