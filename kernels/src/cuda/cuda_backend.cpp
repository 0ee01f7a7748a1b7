// The CUDA backend (host code, compiled by the host compiler): runtime detection (no -lcuda: cudart_static
// reports a missing driver as an error and we fall back), validation plus CUDA limits, one dispatch over the
// op variant, device memory, streams, events, and the device error word through which kernels report bad
// indices.
#include <fmt/format.h>

#include <cstdint>
#include <string>

#include "../validate.hpp"
#include "cuda_context.hpp"
#include "duplex/base/error.hpp"
#include "duplex/kernels/backend.hpp"

namespace duplex::kernels {
namespace cuda {

Status cuda_status(cudaError_t err, const char* what) {
  return {StatusCode::kDeviceError,
          fmt::format("cuda: {} failed: {} ({})", what, cudaGetErrorString(err), static_cast<int>(err))};
}

Status cublas_status(cublasStatus_t err, const char* what) {
  return {StatusCode::kDeviceError,
          fmt::format("cuda: {} failed: cuBLAS status {}", what, static_cast<int>(err))};
}

cudaDataType_t cuda_data_type(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kI32:
      break;
  }
  return CUDA_R_32I;
}

Status gemm_rowmajor(Context& ctx, cudaStream_t stream, const void* a, const void* b, void* c, std::int64_t m,
                     std::int64_t n, std::int64_t k, DType ab_type, DType c_type, bool b_transposed,
                     bool accumulate) {
  if (m == 0 || n == 0) return {};
  if (k == 0) {  // an empty sum: C = 0 (or unchanged when accumulating); all-zero bits are 0.0 in every dtype
    if (!accumulate)
      DUPLEX_CUDA_TRY(cudaMemsetAsync(c, 0, static_cast<std::size_t>(m * n) * dtype_size(c_type), stream));
    return {};
  }
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  DUPLEX_CUBLAS_TRY(cublasSetStream(ctx.blas, stream));
  // Row-major C[m,n] = A[m,k] op(B) is column-major C^T[n,m] = op(B)^T A^T, with B's row-major storage read
  // as its column-major transpose.
  DUPLEX_CUBLAS_TRY(cublasGemmEx(
      ctx.blas, b_transposed ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n),
      static_cast<int>(m), static_cast<int>(k), &alpha, b, cuda_data_type(ab_type),
      static_cast<int>(b_transposed ? k : n), a, cuda_data_type(ab_type), static_cast<int>(k), &beta, c,
      cuda_data_type(c_type), static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return {};
}

Status gemm_batched_rowmajor_bt(Context& ctx, cudaStream_t stream, const GemmProblem& shape, int count,
                                const void* const* pointers, DType ab_type, DType c_type) {
  if (count == 0) return {};
  const float alpha = 1.0f, beta = 0.0f;
  const auto m = static_cast<int>(shape.m), n = static_cast<int>(shape.n), k = static_cast<int>(shape.k);
  DUPLEX_CUBLAS_TRY(cublasSetStream(ctx.blas, stream));
  // Column-major view as in gemm_rowmajor: C^T[n,m] = B[n,k] (stored [n][k]: op T) . A^T.
  DUPLEX_CUBLAS_TRY(cublasGemmBatchedEx(
      ctx.blas, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, pointers, cuda_data_type(ab_type), k,
      pointers + count, cuda_data_type(ab_type), k, &beta, const_cast<void* const*>(pointers + 2 * count),
      cuda_data_type(c_type), n, count, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return {};
}

namespace {

struct Dispatch {
  Context& ctx;
  cudaStream_t stream;
  Status operator()(const GemmArgs& a) const { return gemm(ctx, a, stream); }
  Status operator()(const GemvArgs& a) const { return gemv(ctx, a, stream); }
  Status operator()(const NormArgs& a) const { return norm(ctx, a, stream); }
  Status operator()(const RopeArgs& a) const { return rope(ctx, a, stream); }
  Status operator()(const PrefillAttentionArgs& a) const { return prefill_attention(ctx, a, stream); }
  Status operator()(const DecodeAttentionArgs& a) const { return decode_attention(ctx, a, stream); }
  Status operator()(const SoftmaxArgs& a) const { return softmax(ctx, a, stream); }
  Status operator()(const RouterArgs& a) const { return router(ctx, a, stream); }
  Status operator()(const PermuteArgs& a) const { return permute(ctx, a, stream); }
  Status operator()(const UnpermuteArgs& a) const { return unpermute(ctx, a, stream); }
  Status operator()(const ExpertFfnArgs& a) const { return expert_ffn(ctx, a, stream); }
  Status operator()(const ResidualAddArgs& a) const { return residual_add(ctx, a, stream); }
  Status operator()(const EmbeddingArgs& a) const { return embedding(ctx, a, stream); }
  Status operator()(const LmHeadArgs& a) const { return lm_head(ctx, a, stream); }
  Status operator()(const PartialSumArgs& a) const { return partial_sum(ctx, a, stream); }
  Status operator()(const ClampArgs& a) const { return clamp(ctx, a, stream); }
  Status operator()(const AttnTemperatureArgs& a) const { return attn_temperature(ctx, a, stream); }
  Status operator()(const QuantizeArgs& a) const { return quantize(ctx, a, stream); }
};

constexpr std::int64_t kMaxHeadDim = 256;

// What the CUDA kernels cannot take although the contract allows it.
struct Limits {
  Status operator()(const PrefillAttentionArgs& a) const { return head_dim("prefill_attention", a.q.dim(2)); }
  Status operator()(const DecodeAttentionArgs& a) const {
    const Status s = head_dim("decode_attention", a.q.dim(2));
    if (!s.ok()) return s;
    if (a.q.dim(1) / a.k_cache.dim(2) > 64)
      return {StatusCode::kUnsupportedShape,
              "decode_attention: a GQA group above 64 query heads per kv head"};
    return {};
  }
  template <class Args>
  Status operator()(const Args&) const {
    return {};
  }
  static Status head_dim(const char* op, std::int64_t d) {
    if (d <= kMaxHeadDim) return {};
    return {StatusCode::kUnsupportedShape,
            fmt::format("{}: head_dim {} is above the CUDA kernels' {}", op, d, kMaxHeadDim)};
  }
};

std::string describe_error_bits(unsigned int bits) {
  std::string s;
  auto add = [&](unsigned int bit, const char* what) {
    if (bits & bit) s += std::string(s.empty() ? "" : "; ") + what;
  };
  add(kBadEmbeddingId, "embedding: an id outside the vocabulary");
  add(kBadBlockTableEntry, "decode_attention: a block_table entry outside [0, num_blocks)");
  add(kBadContextLength, "decode_attention: a context_len outside [0, max_context_len]");
  add(kBadExpertId, "permute: a topk_id outside [0, num_experts)");
  add(kBadPermutedRow, "unpermute: a permuted_row outside [0, T * top_k)");
  add(kBadPosition, "attn_temperature: a negative position");
  return s;
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(Context ctx, std::string device_name)
      : ctx_(ctx), device_name_(std::move(device_name)) {}
  ~CudaBackend() override {
    cudaDeviceSynchronize();
    cudaFree(ctx_.error_word);
    cublasDestroy(ctx_.blas);
  }

  BackendKind kind() const override { return BackendKind::kCuda; }
  std::string description() const override {
    return fmt::format("cuda ({}, {} SMs{})", device_name_, ctx_.sm_count,
                       ctx_.decode_in_registers ? ", decode attention loading K / V into registers" : "");
  }
  Location memory_location() const override { return Location::kDevice; }

  Status can_implement(const OpArgs& args) const override {
    const Status status = validate_op(args, Location::kDevice);
    if (!status.ok()) return status;
    return std::visit(Limits{}, args);
  }
  Status run(const OpArgs& args, Stream stream) override {
    const Status status = can_implement(args);
    if (!status.ok()) return status;
    return std::visit(Dispatch{ctx_, static_cast<cudaStream_t>(stream.handle)}, args);
  }

  void* allocate(std::size_t bytes) override {
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes == 0 ? 256 : bytes);
    if (err != cudaSuccess)
      throw Error(fmt::format("cuda backend: cannot allocate {} bytes of device memory: {}", bytes,
                              cudaGetErrorString(err)));
    return p;
  }
  void deallocate(void* ptr) noexcept override { cudaFree(ptr); }
  Status copy_from_host(void* dst, const void* src, std::size_t bytes, Stream stream) override {
    if (bytes != 0)
      DUPLEX_CUDA_TRY(
          cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream.handle)));
    return {};
  }
  Status copy_to_host(void* dst, const void* src, std::size_t bytes, Stream stream) override {
    if (bytes != 0)
      DUPLEX_CUDA_TRY(
          cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(stream.handle)));
    return {};
  }

  Stream create_stream() override {
    cudaStream_t s = nullptr;
    const cudaError_t err = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    if (err != cudaSuccess)
      throw Error(fmt::format("cuda backend: cannot create a stream: {}", cudaGetErrorString(err)));
    return {s};
  }
  void destroy_stream(Stream stream) noexcept override {
    if (stream.handle != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(stream.handle));
  }
  Event create_event() override {
    cudaEvent_t e = nullptr;
    const cudaError_t err = cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
    if (err != cudaSuccess)
      throw Error(fmt::format("cuda backend: cannot create an event: {}", cudaGetErrorString(err)));
    return {e};
  }
  void destroy_event(Event event) noexcept override {
    cudaEventDestroy(static_cast<cudaEvent_t>(event.handle));
  }
  Status record_event(Event event, Stream stream) override {
    DUPLEX_CUDA_TRY(
        cudaEventRecord(static_cast<cudaEvent_t>(event.handle), static_cast<cudaStream_t>(stream.handle)));
    return {};
  }
  Status stream_wait_event(Stream stream, Event event) override {
    DUPLEX_CUDA_TRY(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream.handle),
                                        static_cast<cudaEvent_t>(event.handle), 0));
    return {};
  }
  Status synchronize(Stream stream) override {
    DUPLEX_CUDA_TRY(cudaStreamSynchronize(static_cast<cudaStream_t>(stream.handle)));
    unsigned int bits = 0;
    DUPLEX_CUDA_TRY(cudaMemcpy(&bits, ctx_.error_word, sizeof bits, cudaMemcpyDeviceToHost));
    if (bits == 0) return {};
    DUPLEX_CUDA_TRY(cudaMemset(ctx_.error_word, 0, sizeof bits));
    return {StatusCode::kInvalidArgument, describe_error_bits(bits)};
  }

 private:
  Context ctx_;
  std::string device_name_;
};

}  // namespace
}  // namespace cuda

bool cuda_backend_compiled() {
  return true;
}

Status cuda_device_status() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess)
    return {StatusCode::kNoDevice, fmt::format("cuda: no usable device: cudaGetDeviceCount returned {} ({})",
                                               static_cast<int>(err), cudaGetErrorString(err))};
  if (count == 0) return {StatusCode::kNoDevice, "cuda: the driver reports no CUDA device"};
  return {};
}

std::unique_ptr<Backend> make_cuda_backend(Status* why, const CudaOptions& options) {
  auto fail = [&](const Status& s) -> std::unique_ptr<Backend> {
    if (why != nullptr) *why = s;
    return nullptr;
  };
  Status status = cuda_device_status();
  if (!status.ok()) return fail(status);
  cudaDeviceProp prop{};
  cudaError_t err = cudaGetDeviceProperties(&prop, 0);
  if (err != cudaSuccess) return fail(cuda::cuda_status(err, "cudaGetDeviceProperties"));
  if (prop.major < 8)
    return fail(
        {StatusCode::kNoDevice, fmt::format("cuda: device {} is sm_{}{}; this build targets sm_90 (and needs "
                                            ">= sm_80 for bf16)",
                                            prop.name, prop.major, prop.minor)});
  // Keep the stream-ordered pool's memory between synchronizations (op scratch is allocated per call).
  cudaMemPool_t pool = nullptr;
  if (cudaDeviceGetDefaultMemPool(&pool, 0) == cudaSuccess) {
    std::uint64_t keep = UINT64_MAX;
    cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
  }
  cuda::Context ctx;
  ctx.sm_count = prop.multiProcessorCount;
  ctx.max_shared_bytes = prop.sharedMemPerBlockOptin;
  ctx.decode_in_registers = options.decode_attention == CudaDecodeKernel::kRegisters;
  void* word = nullptr;
  err = cudaMalloc(&word, sizeof(unsigned int));
  ctx.error_word = static_cast<unsigned int*>(word);
  if (err != cudaSuccess) return fail(cuda::cuda_status(err, "cudaMalloc(error word)"));
  cudaMemset(ctx.error_word, 0, sizeof(unsigned int));
  if (cublasCreate(&ctx.blas) != CUBLAS_STATUS_SUCCESS) {
    cudaFree(ctx.error_word);
    return fail({StatusCode::kDeviceError, "cuda: cublasCreate failed"});
  }
  return std::make_unique<cuda::CudaBackend>(ctx, prop.name);
}

}  // namespace duplex::kernels
