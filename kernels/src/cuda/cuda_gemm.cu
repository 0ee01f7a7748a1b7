// CUDA GEMM / GEMV through cuBLAS (FP32 compute), and the LM head (cuBLAS logits, the optional bias and
// soft-cap kernels, a greedy argmax kernel).
#include "cuda_common.cuh"

namespace duplex::kernels::cuda {
namespace {

constexpr int kArgmaxThreads = 256;

// One block per row: the largest logit, ties to the lowest id.
__global__ void argmax_rows(const float* logits, std::int64_t vocab, std::int32_t* ids) {
  const float* row = logits + static_cast<std::int64_t>(blockIdx.x) * vocab;
  float best = -INFINITY;
  std::int64_t best_id = vocab;  // vocab >= 1: replaced by any element, NaN aside
  for (std::int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float v = row[j];
    if (v > best || best_id == vocab) {
      best = v;
      best_id = j;
    }
  }
  __shared__ float values[kArgmaxThreads];
  __shared__ std::int64_t indices[kArgmaxThreads];
  values[threadIdx.x] = best;
  indices[threadIdx.x] = best_id;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      const float ov = values[threadIdx.x + stride];
      const std::int64_t oi = indices[threadIdx.x + stride];
      if (ov > values[threadIdx.x] || (ov == values[threadIdx.x] && oi < indices[threadIdx.x])) {
        values[threadIdx.x] = ov;
        indices[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) ids[blockIdx.x] = static_cast<std::int32_t>(indices[0] == vocab ? 0 : indices[0]);
}

// logits[t, v] += bias[v] (FP32), the LM head's bias.
template <class T>
__global__ void add_vocab_bias(float* logits, const T* bias, std::int64_t tokens, std::int64_t vocab) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < tokens * vocab) logits[i] += to_float(bias[i % vocab]);
}

// logits[i] = cap * tanh(logits[i] / cap) (FP32: IEEE division, tanhf), Gemma 2's final logit soft-cap.
__global__ void softcap_logits(float* logits, std::int64_t n, float cap) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) logits[i] = cap * tanhf(logits[i] / cap);
}

// c[i] = round(c[i] + product[i]): the accumulation of a 16-bit C rounds once, after the FP32 sum.
template <class T>
__global__ void add_product(const float* product, T* c, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) c[i] = from_float<T>(to_float(c[i]) + product[i]);
}

}  // namespace

Status gemm(Context& ctx, const GemmArgs& args, cudaStream_t stream) {
  const std::int64_t m = args.a.dim(0), n = args.c.dim(1), k = args.a.dim(1);
  if (!args.accumulate || args.c.dtype == DType::kF32 || m == 0 || n == 0 || k == 0)
    return gemm_rowmajor(ctx, stream, args.a.data, args.b.data, args.c.data, m, n, k, args.a.dtype, args.c.dtype,
                         args.b_transposed, args.accumulate);
  // cuBLAS's beta = 1 on a 16-bit C may round the product before adding C (two roundings); the contract is
  // one rounding of the FP32 sum, so the product goes to an FP32 scratch and is added here.
  Scratch product(stream);
  if (Status s = product.allocate(static_cast<std::size_t>(m * n) * sizeof(float)); !s.ok()) return s;
  if (Status s = gemm_rowmajor(ctx, stream, args.a.data, args.b.data, product.as<float>(), m, n, k, args.a.dtype,
                               DType::kF32, args.b_transposed, false);
      !s.ok())
    return s;
  constexpr int kThreads = 256;
  const auto blocks = static_cast<unsigned int>((m * n + kThreads - 1) / kThreads);
  if (args.c.dtype == DType::kF16)
    add_product<<<blocks, kThreads, 0, stream>>>(product.as<float>(), static_cast<__half*>(args.c.data), m * n);
  else
    add_product<<<blocks, kThreads, 0, stream>>>(product.as<float>(), static_cast<__nv_bfloat16*>(args.c.data),
                                                 m * n);
  DUPLEX_CUDA_LAUNCHED("add_product");
  return {};
}

Status gemv(Context& ctx, const GemvArgs& args, cudaStream_t stream) {
  return gemm_rowmajor(ctx, stream, args.x.data, args.w.data, args.y.data, 1, args.w.dim(0), args.w.dim(1),
                       args.w.dtype, args.y.dtype, true, false);
}

Status lm_head(Context& ctx, const LmHeadArgs& args, cudaStream_t stream) {
  const std::int64_t t = args.hidden.dim(0), v = args.weight.dim(0);
  Scratch scratch(stream);
  float* logits = args.logits.as<float>();
  if (!args.logits.present()) {
    const Status s = scratch.allocate(static_cast<std::size_t>(t * v) * sizeof(float));
    if (!s.ok()) return s;
    logits = scratch.as<float>();
  }
  const Status s = gemm_rowmajor(ctx, stream, args.hidden.data, args.weight.data, logits, t, v,
                                 args.hidden.dim(1), args.hidden.dtype, DType::kF32, true, false);
  if (!s.ok()) return s;
  if (t == 0) return {};
  if (args.bias.present()) {
    const Status b = with_storage_type(args.bias.dtype, [&](auto tag) -> Status {
      using T = decltype(tag);
      add_vocab_bias<T><<<blocks_for(t * v, kArgmaxThreads), kArgmaxThreads, 0, stream>>>(
          logits, args.bias.as<const T>(), t, v);
      DUPLEX_CUDA_LAUNCHED("add_vocab_bias");
      return {};
    });
    if (!b.ok()) return b;
  }
  if (args.softcap > 0.0f) {  // after the bias, before the argmax (which then picks among capped logits)
    softcap_logits<<<blocks_for(t * v, kArgmaxThreads), kArgmaxThreads, 0, stream>>>(logits, t * v,
                                                                                     args.softcap);
    DUPLEX_CUDA_LAUNCHED("softcap_logits");
  }
  argmax_rows<<<static_cast<unsigned int>(t), kArgmaxThreads, 0, stream>>>(logits, v,
                                                                           args.next_ids.as<std::int32_t>());
  DUPLEX_CUDA_LAUNCHED("argmax_rows");
  return {};
}

}  // namespace duplex::kernels::cuda
