// The tensor-core decode attention kernels' shapes, measured (CUDA builds only; skipped without a GPU).
// Cuda/DecodeTune/<dtype>/<shape>/B/Hq/Hkv/D/context runs each compiled shape (cuda_decode_tuning.hpp) on
// Cuda/DecodeAttention's head_dim-128 shapes and inputs (kernels_bench: pages of 16 tokens, the same shuffled
// block table), so the kernel and shape decode_attention uses are chosen from measurements. <shape> is
// w<warps>s<stages><i> for cuda_decode_attention_mma.cu (shared-memory ring; <i> "e" for early issue, "l" for
// late; suffixes -pf<n>, -bulk, -copies-only, -compute-only) and regs-w<warps>b<min blocks>-<issue> for
// cuda_decode_attention_regs.cu (loads into registers). Before timing, each shape's output is compared with the
// default shape's (the one the conformance tests check): a difference beyond a few units in the last place of
// the storage type fails the benchmark and the program's exit status. Counters as kernels_bench: `bytes`
// (K + V bytes per second) and `of_peak` (over 4.8 TB/s).
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "bench_buffers.hpp"
#include "cuda_decode_tuning.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/kernels/backend.hpp"

namespace duplex::kernels {
namespace {

constexpr double kH200HbmBytesPerSecond = 4.8e12;  // source: NVIDIA H200 SXM datasheet (HBM3e)

bool g_failed = false;  // a shape's output differed from the default's, or a run failed

Backend* cuda_backend() {
  static std::unique_ptr<Backend> b = make_cuda_backend();
  return b.get();
}

// The kernel context the CUDA backend would build (no cuBLAS: decode attention does not use it).
cuda::Context* tune_context() {
  static cuda::Context ctx = [] {
    cuda::Context c;
    int device = 0, sms = 0, shared = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess ||
        cudaMalloc(reinterpret_cast<void**>(&c.error_word), sizeof(unsigned int)) != cudaSuccess ||
        cudaMemset(c.error_word, 0, sizeof(unsigned int)) != cudaSuccess)
      c.error_word = nullptr;
    c.sm_count = sms;
    c.max_shared_bytes = static_cast<std::size_t>(shared);
    return c;
  }();
  return ctx.error_word != nullptr ? &ctx : nullptr;
}

// A kernel shape to measure: its benchmark name's last part, how to launch it, and whether it is a probe (its
// output meaningless: only timed).
struct Candidate {
  std::string label;
  std::function<Status(cuda::Context&, const DecodeAttentionArgs&)> launch;
  bool probe = false;
};

// The shared-memory kernel's shapes: "w4s3l", "w4s3l-pf4", "w4s2e-bulk", "w4s3l-copies-only" (formatted with
// snprintf: GCC 12's -Wrestrict misfires on chained string +).
Candidate staged_candidate(const cuda::MmaPipeline& p) {
  const char* probe = p.probe == cuda::MmaProbe::kCopiesOnly    ? "-copies-only"
                      : p.probe == cuda::MmaProbe::kComputeOnly ? "-compute-only"
                                                                : "";
  char prefetch[16] = "";
  if (p.prefetch > 0) std::snprintf(prefetch, sizeof prefetch, "-pf%d", p.prefetch);
  char name[64];
  std::snprintf(name, sizeof name, "w%ds%d%c%s%s%s", p.warps, p.stages, p.early_issue ? 'e' : 'l', prefetch,
                p.bulk ? "-bulk" : "", probe);
  return {name,
          [p](cuda::Context& ctx, const DecodeAttentionArgs& args) {
            return cuda::decode_attention_mma(ctx, args, nullptr, p);
          },
          p.probe != cuda::MmaProbe::kNone};
}

// The register-direct kernel's shapes: "regs-w4b3-interleaved" (warps, minimum blocks per SM, issue order).
Candidate regs_candidate(const cuda::RegsPipeline& p) {
  const char* issue = p.issue == cuda::RegsIssue::kAfter         ? "after"
                      : p.issue == cuda::RegsIssue::kInterleaved ? "interleaved"
                                                                 : "ahead";
  char name[64];
  std::snprintf(name, sizeof name, "regs-w%db%d-%s", p.warps, p.min_blocks, issue);
  return {name, [p](cuda::Context& ctx, const DecodeAttentionArgs& args) {
            return cuda::decode_attention_regs(ctx, args, nullptr, p);
          }};
}

// Runs a candidate once and waits; the kernel's status, or the error word's.
Status run_once(cuda::Context& ctx, const DecodeAttentionArgs& args, const Candidate& c) {
  Status st = c.launch(ctx, args);
  if (!st.ok()) return st;
  if (cudaDeviceSynchronize() != cudaSuccess) return {StatusCode::kDeviceError, "cudaDeviceSynchronize failed"};
  unsigned int word = 0;
  if (cudaMemcpy(&word, ctx.error_word, sizeof word, cudaMemcpyDeviceToHost) != cudaSuccess || word != 0)
    return {StatusCode::kDeviceError, "the kernel raised device error bits " + std::to_string(word)};
  return {};
}

std::vector<float> to_host_floats(Backend& backend, const Tensor& t) {
  std::vector<std::uint16_t> bits(static_cast<std::size_t>(t.numel()));
  (void)backend.copy_to_host(bits.data(), t.data, t.bytes(), {});
  std::vector<float> out(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i)
    out[i] = t.dtype == DType::kBF16 ? bf16_bits_to_float(bits[i]) : half_bits_to_float(bits[i]);
  return out;
}

void fail(benchmark::State& state, const std::string& why) {
  g_failed = true;
  state.SkipWithError(why.c_str());
}

// Times the op (launch to completion) and sets the rate counters.
void time_and_count(benchmark::State& state, cuda::Context& ctx, const DecodeAttentionArgs& args,
                    const Candidate& c) {
  for (auto _ : state) {
    if (Status st = c.launch(ctx, args); !st.ok()) return fail(state, st.to_string());
    if (cudaDeviceSynchronize() != cudaSuccess) return fail(state, "cudaDeviceSynchronize failed");
  }
  const double kv_bytes = decode_kv_bytes(args);
  const auto iters = static_cast<double>(state.iterations());
  state.counters["bytes"] = benchmark::Counter(kv_bytes * iters, benchmark::Counter::kIsRate);
  state.counters["of_peak"] =
      benchmark::Counter(kv_bytes * iters / kH200HbmBytesPerSecond, benchmark::Counter::kIsRate);
}

// One shape's inputs (Cuda/DecodeAttention's), made once and shared by every pipeline shape's benchmark.
struct Inputs {
  explicit Inputs(Backend& backend) : buf(backend) {}
  Buffers buf;
  DecodeAttentionArgs args;
};
Inputs& inputs_for(Backend& backend, DType dtype, std::int64_t batch, std::int64_t hq, std::int64_t hkv,
                   std::int64_t d, std::int64_t context) {
  static std::map<std::vector<std::int64_t>, std::unique_ptr<Inputs>> made;
  std::unique_ptr<Inputs>& in = made[{static_cast<std::int64_t>(dtype), batch, hq, hkv, d, context}];
  if (in != nullptr) return *in;
  in = std::make_unique<Inputs>(backend);
  in->args = paged_decode_args(in->buf, dtype, batch, hq, hkv, d, context);  // Cuda/DecodeAttention's inputs
  return *in;
}

// Args: batch, query heads, kv heads, head_dim, context.
void tune_bench(benchmark::State& state, DType dtype, const Candidate& candidate) {
  Backend* backend = cuda_backend();
  cuda::Context* ctx = backend != nullptr ? tune_context() : nullptr;
  if (ctx == nullptr) {
    state.SkipWithError("no GPU");
    return;
  }
  const std::int64_t batch = state.range(0), hq = state.range(1), hkv = state.range(2), d = state.range(3);
  const std::int64_t context = state.range(4);
  const DecodeAttentionArgs& args = inputs_for(*backend, dtype, batch, hq, hkv, d, context).args;

  // The default shape's output, then this shape's: equal to within a few units in the last place (a probe's
  // output is meaningless: it is only timed).
  if (candidate.probe) {
    if (Status st = run_once(*ctx, args, candidate); !st.ok()) return fail(state, st.to_string());
    time_and_count(state, *ctx, args, candidate);
    return;
  }
  if (Status st = run_once(*ctx, args, staged_candidate(cuda::mma_pipelines().front())); !st.ok())
    return fail(state, st.to_string());
  const std::vector<float> want = to_host_floats(*backend, args.out);
  if (Status st = run_once(*ctx, args, candidate); !st.ok()) return fail(state, st.to_string());
  const std::vector<float> got = to_host_floats(*backend, args.out);
  const double ulp = dtype == DType::kBF16 ? 0x1p-8 : 0x1p-11;  // relative spacing of the storage type
  double worst = 0.0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]) / (ulp * (std::fabs(want[i]) + 1e-3));
    if (!(err <= worst)) worst = err;  // NaN propagates as the worst
  }
  state.counters["ulps_vs_default"] = worst;
  if (!(worst <= 4.0)) {
    char why[96];
    std::snprintf(why, sizeof why, "output differs from the default shape's by %.3g ulp", worst);
    return fail(state, why);
  }

  time_and_count(state, *ctx, args, candidate);
}

void register_all() {
  std::vector<Candidate> candidates;
  for (const cuda::MmaPipeline& p : cuda::mma_pipelines()) candidates.push_back(staged_candidate(p));
  for (const cuda::RegsPipeline& p : cuda::regs_pipelines()) candidates.push_back(regs_candidate(p));
  for (DType dtype : {DType::kF16, DType::kBF16})
    for (const Candidate& c : candidates)
      benchmark::RegisterBenchmark(("Cuda/DecodeTune/" + std::string(dtype_name(dtype)) + "/" + c.label).c_str(),
                                   tune_bench, dtype, c)
          ->Args({64, 32, 8, 128, 4096})  // Cuda/DecodeAttention's head_dim-128 shapes
          ->Args({256, 32, 8, 128, 2048})
          ->Args({16, 48, 8, 128, 16384})
          ->Args({64, 64, 8, 128, 4096})
          ->Args({64, 32, 32, 128, 2048})
          ->Args({8, 32, 8, 128, 1000})  // a last tile cut by the context (rows past it zero-filled)
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
}

}  // namespace
}  // namespace duplex::kernels

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  duplex::kernels::register_all();
  const duplex::kernels::Status why = duplex::kernels::cuda_device_status();
  benchmark::AddCustomContext("cuda_backend", why.ok() ? duplex::kernels::cuda_backend()->description()
                                                       : why.to_string());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return duplex::kernels::g_failed ? 1 : 0;
}
