// Kernel throughput. CPU: GEMM GFLOP/s and decode-attention GB/s (KV bytes read), plus a host memory copy as
// the machine's achievable-bandwidth reference. CUDA (skipped without a GPU): decode attention achieved HBM
// bandwidth, GEMM and grouped expert FFN TFLOP/s, and per-op launch overhead.
// Counters: "flops" / "bytes" are rates (per second); "of_peak" divides them by the peak given in
// bench/kernels/README.md (H200: 4.8 TB/s HBM3e, 989 TFLOP/s dense FP16/BF16 - source: NVIDIA H200 SXM
// datasheet; the CPU's is printed by the program from its core count and clock).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench_buffers.hpp"
#include "duplex/kernels/backend.hpp"

#ifdef DUPLEX_BENCH_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace duplex::kernels {
namespace {

constexpr double kH200HbmBytesPerSecond = 4.8e12;        // source: NVIDIA H200 SXM datasheet (HBM3e)
constexpr double kH200DenseFp16FlopsPerSecond = 989e12;  // source: NVIDIA H100/H200 SXM datasheet, dense

Backend* cpu_backend() {
  static std::unique_ptr<Backend> b = make_cpu_backend();
  return b.get();
}
Backend* cuda_backend() {
  static std::unique_ptr<Backend> b = make_cuda_backend();
  return b.get();
}

// Runs op once per iteration and waits for it (so the time is the op's, launch to completion).
void time_op(benchmark::State& state, Backend& backend, const OpArgs& args) {
  const Status can = backend.can_implement(args);
  if (!can.ok()) {
    state.SkipWithError(can.to_string().c_str());
    return;
  }
  for (auto _ : state) {
    Status s = backend.run(args, {});
    if (s.ok()) s = backend.synchronize({});
    if (!s.ok()) {
      state.SkipWithError(s.to_string().c_str());
      return;
    }
  }
}

void set_rates(benchmark::State& state, double flops, double bytes, double peak_flops, double peak_bytes) {
  const auto iters = static_cast<double>(state.iterations());
  if (flops > 0) state.counters["flops"] = benchmark::Counter(flops * iters, benchmark::Counter::kIsRate);
  if (bytes > 0) state.counters["bytes"] = benchmark::Counter(bytes * iters, benchmark::Counter::kIsRate);
  if (peak_flops > 0)
    state.counters["of_peak"] = benchmark::Counter(flops * iters / peak_flops, benchmark::Counter::kIsRate);
  else if (peak_bytes > 0)
    state.counters["of_peak"] = benchmark::Counter(bytes * iters / peak_bytes, benchmark::Counter::kIsRate);
}

// ---- GEMM: C[M,N] = A[M,K] . W[N,K]^T ---------------------------------------------------------------------
void gemm_bench(benchmark::State& state, Backend* backend, DType dtype, double peak) {
  if (backend == nullptr) {
    state.SkipWithError("backend unavailable (no GPU)");
    return;
  }
  const std::int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  Buffers buf(*backend);
  GemmArgs args{buf.random(dtype, {m, k}), buf.random(dtype, {n, k}), buf.random(dtype, {m, n})};
  time_op(state, *backend, args);
  set_rates(state, 2.0 * static_cast<double>(m * n * k), 0, peak, 0);
}

// ---- decode attention: KV bytes read per second
// -------------------------------------------------------------
// The caches are the runtime's layout ([pages][16][kv heads][d], contiguous) or, with head_major, pages of
// one head contiguous ([pages][kv heads][16][d]) seen through strides.
void decode_bench(benchmark::State& state, Backend* backend, DType dtype, double peak_bytes, bool head_major) {
  if (backend == nullptr) {
    state.SkipWithError("backend unavailable (no GPU)");
    return;
  }
  const std::int64_t batch = state.range(0), hq = state.range(1), d = state.range(3), context = state.range(4);
  Buffers buf(*backend);
  const DecodeAttentionArgs args = paged_decode_args(buf, dtype, batch, hq, state.range(2), d, context, head_major);
  time_op(state, *backend, args);
  set_rates(state, 4.0 * static_cast<double>(batch * hq * context * d), decode_kv_bytes(args), 0, peak_bytes);
}

// ---- grouped expert FFN (gated SiLU), tokens spread evenly over the experts
// ----------------------------------
void expert_bench(benchmark::State& state, Backend* backend, DType dtype, double peak) {
  if (backend == nullptr) {
    state.SkipWithError("backend unavailable (no GPU)");
    return;
  }
  const std::int64_t experts = state.range(0), h = state.range(1), f = state.range(2),
                     per_expert = state.range(3);
  Buffers buf(*backend);
  std::vector<std::int64_t> offsets(static_cast<std::size_t>(experts) + 1);
  for (std::int64_t e = 0; e <= experts; ++e) offsets[static_cast<std::size_t>(e)] = e * per_expert;
  const double ws = 1.0 / std::sqrt(static_cast<double>(h));
  ExpertFfnArgs args{FfnKind::kGated,
                     Activation::kSilu,
                     buf.random(dtype, {experts * per_expert, h}),
                     buf.random(dtype, {experts, f, h}, -ws, ws),
                     buf.random(dtype, {experts, f, h}, -ws, ws),
                     buf.random(dtype, {experts, h, f}, -ws, ws),
                     buf.random(dtype, {experts * per_expert, h}),
                     offsets,
                     Tensor{}};
  time_op(state, *backend, args);
  set_rates(state, 6.0 * static_cast<double>(experts * per_expert * h * f), 0, peak, 0);
}

// ---- launch overhead: a one-element residual add, launched and waited for
// ------------------------------------
void launch_bench(benchmark::State& state, Backend* backend) {
  if (backend == nullptr) {
    state.SkipWithError("backend unavailable (no GPU)");
    return;
  }
  Buffers buf(*backend);
  Tensor a = buf.random(DType::kF16, {1});
  ResidualAddArgs args{a, buf.random(DType::kF16, {1}), a};
  const std::int64_t launches = state.range(0);
  for (auto _ : state) {
    for (std::int64_t i = 0; i < launches; ++i)
      if (!backend->run(args, {}).ok()) state.SkipWithError("run failed");
    if (!backend->synchronize({}).ok()) state.SkipWithError("synchronize failed");
  }
  state.counters["us_per_launch"] =
      benchmark::Counter(static_cast<double>(launches),
                         benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

// ---- device memory copy (cudaMemcpy device to device): the achievable HBM bandwidth of the GPU, which the
// decode-attention bandwidth is also compared against; bytes count the read and the write
// ------------------------
void device_copy_bench(benchmark::State& state, Backend* backend) {
#ifdef DUPLEX_BENCH_HAVE_CUDA
  if (backend != nullptr) {
    const auto bytes = static_cast<std::size_t>(state.range(0));
    void* src = backend->allocate(bytes);
    void* dst = backend->allocate(bytes);
    for (auto _ : state)
      if (cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice) != cudaSuccess ||
          cudaDeviceSynchronize() != cudaSuccess)
        state.SkipWithError("cudaMemcpy failed");
    backend->deallocate(src);
    backend->deallocate(dst);
    set_rates(state, 0, 2.0 * static_cast<double>(bytes), 0, kH200HbmBytesPerSecond);
    return;
  }
#endif
  (void)backend;
  state.SkipWithError("backend unavailable (no GPU)");
}

// ---- host memory copy: the achievable CPU bandwidth the decode GB/s is compared against
// ------------------------
void host_copy_bench(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), bytes);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.counters["bytes"] =
      benchmark::Counter(2.0 * static_cast<double>(bytes) * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
}

void register_all() {
  // CPU. Shapes: square GEMMs, and the tiny model the functional runtime runs (hidden 256, 8 q / 2 kv heads,
  // head_dim 32): its QKV projection for 16 tokens (N = (8 + 2 * 2) * 32 = 384) and its decode attention.
  for (DType dtype : {DType::kF32, DType::kF16}) {
    const std::string dn = dtype_name(dtype);
    benchmark::RegisterBenchmark(("Cpu/Gemm/" + dn).c_str(), gemm_bench, cpu_backend(), dtype, 0.0)
        ->Args({512, 512, 512})
        ->Args({1024, 1024, 1024})
        ->Args({16, 256, 384})
        ->Args({1, 4096, 4096})
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("Cpu/DecodeAttention/" + dn).c_str(), decode_bench, cpu_backend(), dtype,
                                 0.0, false)
        ->Args({8, 32, 8, 128, 2048})
        ->Args({8, 8, 2, 32, 512})
        ->Args({1, 8, 2, 32, 16384})
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  benchmark::RegisterBenchmark("Cpu/ExpertFfn/f16", expert_bench, cpu_backend(), DType::kF16, 0.0)
      ->Args({8, 256, 512, 4})
      ->Args({8, 1024, 3584, 32})
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("Cpu/HostMemcpy", host_copy_bench)
      ->Arg(256 << 20)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("Cpu/LaunchOverhead", launch_bench, cpu_backend())->Arg(1000)->UseRealTime();

  // CUDA (H200 peaks as the reference).
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    const std::string dn = dtype_name(dtype);
    benchmark::RegisterBenchmark(("Cuda/Gemm/" + dn).c_str(), gemm_bench, cuda_backend(), dtype,
                                 kH200DenseFp16FlopsPerSecond)
        ->Args({8192, 8192, 8192})
        ->Args({4096, 4096, 14336})
        ->Args({256, 4096, 14336})
        ->Args({16, 256, 384})
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    for (bool head_major : {false, true})
      benchmark::RegisterBenchmark(("Cuda/DecodeAttention/" + dn + (head_major ? "/head-major" : "")).c_str(),
                                   decode_bench, cuda_backend(), dtype, kH200HbmBytesPerSecond, head_major)
          ->Args({64, 32, 8, 128, 4096})
          ->Args({256, 32, 8, 128, 2048})
          ->Args({16, 48, 8, 128, 16384})
          ->Args({64, 64, 8, 128, 4096})
          ->Args({64, 32, 32, 128, 2048})
          ->Args({32, 8, 2, 32, 1024})
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
  }
  benchmark::RegisterBenchmark("Cuda/ExpertFfn/f16", expert_bench, cuda_backend(), DType::kF16,
                               kH200DenseFp16FlopsPerSecond)
      ->Args({8, 4096, 14336, 16})
      ->Args({8, 4096, 14336, 256})
      ->Args({8, 4096, 14336, 1024})
      ->Args({64, 4096, 4096, 4})
      ->Args({64, 4096, 4096, 64})
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("Cuda/DeviceCopy", device_copy_bench, cuda_backend())
      ->Arg(std::int64_t{1} << 31)
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("Cuda/LaunchOverhead", launch_bench, cuda_backend())->Arg(1000)->UseRealTime();
}

}  // namespace
}  // namespace duplex::kernels

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  duplex::kernels::register_all();
  benchmark::AddCustomContext("cpu_backend", duplex::kernels::cpu_backend()->description());
  duplex::kernels::Status why = duplex::kernels::cuda_device_status();
  benchmark::AddCustomContext("cuda_backend",
                              why.ok() ? duplex::kernels::cuda_backend()->description() : why.to_string());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
