#pragma once
// Host-side pieces of the CUDA backend, shared by the .cu kernel files and the g++-compiled backend class:
// the per-backend context, status conversion, the cuBLAS GEMM helper, stream-ordered scratch memory and the
// op entry points. No device code and no fmt here (nvcc cannot compile fmt's consteval format strings).
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "duplex/kernels/ops.hpp"
#include "duplex/kernels/status.hpp"

namespace duplex::kernels::cuda {

// Bits a kernel sets in the device error word when the data it reads is out of range. synchronize() reports
// and clears them.
enum DeviceErrorBit : unsigned int {
  kBadEmbeddingId = 1u,
  kBadBlockTableEntry = 2u,
  kBadContextLength = 4u,
  kBadExpertId = 8u,
  kBadPermutedRow = 16u,
  kBadPosition = 32u,
};

struct Context {
  cublasHandle_t blas = nullptr;
  unsigned int* error_word = nullptr;  // device memory, one word
  int sm_count = 0;
  std::size_t max_shared_bytes = 0;  // opt-in dynamic shared memory per block
  bool decode_in_registers = false;  // CudaOptions: decode attention on cuda_decode_attention_regs.cu where it applies
};

Status cuda_status(cudaError_t err, const char* what);
Status cublas_status(cublasStatus_t err, const char* what);

#define DUPLEX_CUDA_TRY(expr)                                                                        \
  do {                                                                                               \
    const cudaError_t duplex_err_ = (expr);                                                          \
    if (duplex_err_ != cudaSuccess) return ::duplex::kernels::cuda::cuda_status(duplex_err_, #expr); \
  } while (0)
#define DUPLEX_CUBLAS_TRY(expr)                                          \
  do {                                                                   \
    const cublasStatus_t duplex_err_ = (expr);                           \
    if (duplex_err_ != CUBLAS_STATUS_SUCCESS)                            \
      return ::duplex::kernels::cuda::cublas_status(duplex_err_, #expr); \
  } while (0)
// After a kernel launch: a launch error (bad configuration) becomes a status naming the kernel.
#define DUPLEX_CUDA_LAUNCHED(kernel_name)                                                                  \
  do {                                                                                                     \
    const cudaError_t duplex_err_ = cudaGetLastError();                                                    \
    if (duplex_err_ != cudaSuccess) return ::duplex::kernels::cuda::cuda_status(duplex_err_, kernel_name); \
  } while (0)

cudaDataType_t cuda_data_type(DType dtype);

// Row-major C[m,n] (+)= A[m,k] . op(B), op(B) = B^T for B [n,k] when b_transposed, else B [k,n]; FP32
// compute. A and B share ab_type; C may be FP32 while A/B are f16/bf16.
Status gemm_rowmajor(Context& ctx, cudaStream_t stream, const void* a, const void* b, void* c, std::int64_t m,
                     std::int64_t n, std::int64_t k, DType ab_type, DType c_type, bool b_transposed,
                     bool accumulate);

// One problem of a batched GEMM: row-major C[m,n] = A[m,k] . B^T with B [n,k] (a linear layer's weight).
struct GemmProblem {
  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
  std::int64_t m = 0, n = 0, k = 0;
};

// `count` problems of the same m, n, k (those of `shape`; >= 1 each) as one cublasGemmBatchedEx call (FP32
// compute). `pointers` is device memory holding the problems' B pointers, then their A pointers, then their C
// pointers (3 x count; cuda_moe.cu uploads them in stream order).
Status gemm_batched_rowmajor_bt(Context& ctx, cudaStream_t stream, const GemmProblem& shape, int count,
                                const void* const* pointers, DType ab_type, DType c_type);

inline unsigned int blocks_for(std::int64_t n, int threads) {
  return static_cast<unsigned int>((n + threads - 1) / threads);
}

// Stream-ordered scratch memory, freed (stream-ordered) when it goes out of scope.
class Scratch {
 public:
  explicit Scratch(cudaStream_t stream) : stream_(stream) {}
  ~Scratch() {
    if (ptr_ != nullptr) cudaFreeAsync(ptr_, stream_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  Status allocate(std::size_t bytes) {
    DUPLEX_CUDA_TRY(cudaMallocAsync(&ptr_, bytes == 0 ? 16 : bytes, stream_));
    return {};
  }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  cudaStream_t stream_;
  void* ptr_ = nullptr;
};

// The ops (arguments already checked by validate_op and the CUDA limits).
Status gemm(Context& ctx, const GemmArgs& args, cudaStream_t stream);
Status gemv(Context& ctx, const GemvArgs& args, cudaStream_t stream);
Status lm_head(Context& ctx, const LmHeadArgs& args, cudaStream_t stream);
Status norm(Context& ctx, const NormArgs& args, cudaStream_t stream);
Status rope(Context& ctx, const RopeArgs& args, cudaStream_t stream);
Status softmax(Context& ctx, const SoftmaxArgs& args, cudaStream_t stream);
Status residual_add(Context& ctx, const ResidualAddArgs& args, cudaStream_t stream);
Status clamp(Context& ctx, const ClampArgs& args, cudaStream_t stream);
Status attn_temperature(Context& ctx, const AttnTemperatureArgs& args, cudaStream_t stream);
Status embedding(Context& ctx, const EmbeddingArgs& args, cudaStream_t stream);
Status partial_sum(Context& ctx, const PartialSumArgs& args, cudaStream_t stream);
Status decode_attention(Context& ctx, const DecodeAttentionArgs& args, cudaStream_t stream);
Status prefill_attention(Context& ctx, const PrefillAttentionArgs& args, cudaStream_t stream);
Status router(Context& ctx, const RouterArgs& args, cudaStream_t stream);
Status permute(Context& ctx, const PermuteArgs& args, cudaStream_t stream);
Status unpermute(Context& ctx, const UnpermuteArgs& args, cudaStream_t stream);
Status expert_ffn(Context& ctx, const ExpertFfnArgs& args, cudaStream_t stream);
Status quantize(Context& ctx, const QuantizeArgs& args, cudaStream_t stream);

// Fake quantization (ops.hpp ActivationQuant) of x [rows, cols] (dtype) into y (which may be x), shared by
// quantize and expert_ffn (cuda_quantize.cu). scales (device, nullable) receives the scales in
// QuantizeArgs::scales' layout: [1] for a static or per-tensor spec (written even when rows = 0), [rows]
// per row, [rows, cols / group] per group. outliers (device i32[cols]) with quant.decomposes(): LLM.int8()'s
// outlier-column marks, the columns x reaches the threshold in marked (QuantizeArgs::outliers); ignored
// otherwise (nullable then).
Status fake_quantize_rows(Context& ctx, const ActivationQuant& quant, DType dtype, const void* x, void* y,
                          std::int64_t rows, std::int64_t cols, float* scales, cudaStream_t stream,
                          std::int32_t* outliers = nullptr);

}  // namespace duplex::kernels::cuda
