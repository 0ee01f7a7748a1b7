#pragma once
// Device-side helpers of the CUDA kernels: storage-type traits, dtype dispatch, warp / block reductions.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda_context.hpp"

namespace duplex::kernels::cuda {

template <class T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
__device__ __forceinline__ float to_float<float>(float v) {
  return v;
}

template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}

// Calls f(T{}) with T the CUDA storage type of a floating dtype.
template <class F>
Status with_storage_type(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kF16:
      return f(__half{});
    case DType::kBF16:
      return f(__nv_bfloat16{});
    case DType::kF32:
      return f(float{});
    case DType::kI32:
      break;
  }
  return {StatusCode::kUnsupportedDType, "cuda: an integer tensor where a floating one was expected"};
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Sum over a block of up to 1024 threads (every thread gets it). scratch: 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < warps; ++w) total += scratch[w];
  return total;
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float m = -INFINITY;
  for (int w = 0; w < warps; ++w) m = fmaxf(m, scratch[w]);
  return m;
}

// The first key a query at position `pos` of its sequence attends to (PrefillAttentionArgs /
// DecodeAttentionArgs): the later of its sliding window's first key (window > 0: pos - window + 1) and its
// chunk's (chunk > 0, Llama 4's chunked attention: pos - pos % chunk); 0 without either.
__host__ __device__ __forceinline__ std::int64_t first_attended(std::int64_t pos, std::int64_t window,
                                                                std::int64_t chunk) {
  std::int64_t first = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
  if (chunk > 0 && pos - pos % chunk > first) first = pos - pos % chunk;
  return first;
}

// Gemma 2's attention soft-cap (PrefillAttentionArgs / DecodeAttentionArgs::softcap) as the kernels apply it:
// the true scaled score s = scale * q.k (FP32) becomes cap * tanh(s / cap) (IEEE division, tanhf). Kernels
// that work in base-2 units (their uncapped code folds log2(e) into the scale) take a ScoreCap: s from the
// scale itself, and log2(e) multiplied in after the tanh (cap_log2 = cap * log2(e), rounded once). cap 0:
// none: the capped code is a separate instantiation (a bool template parameter chosen once per launch), so
// the uncapped kernels are unchanged.
__device__ __forceinline__ float soft_capped(float s, float cap) {
  return cap * tanhf(s / cap);
}
struct ScoreCap {
  float scale = 1.0f;     // the attention scale
  float cap = 0.0f;       // softcap; 0: none
  float cap_log2 = 0.0f;  // softcap * log2(e)
  static ScoreCap of(float scale, float softcap) {
    return {scale, softcap, static_cast<float>(static_cast<double>(softcap) * 1.4426950408889634)};
  }
  // The capped score of the dot product q.k, in base-2 units.
  __device__ __forceinline__ float capped_log2(float dot) const {
    return cap_log2 * tanhf(dot * scale / cap);
  }
};

// One tile of a flash-style online softmax over `rows` score rows of 32 columns (one per lane), rows spread
// over the block's warps: scores p_s[r * stride + lane] become exp(score - m_new); the running max m_s,
// the running sum l_s and the rescale factor alpha_s = exp(m_old - m_new) of each row are updated.
// -INFINITY scores (masked or past the end) contribute 0. Call between __syncthreads().
__device__ __forceinline__ void online_softmax_tile(float* p_s, float* m_s, float* l_s, float* alpha_s,
                                                    std::int64_t rows, std::int64_t stride, int warp, int warps,
                                                    int lane) {
  for (std::int64_t r = warp; r < rows; r += warps) {
    const float score = p_s[r * stride + lane];
    const float m_old = m_s[r];
    const float m_new = fmaxf(m_old, warp_max(score));
    const float p = score == -INFINITY ? 0.0f : expf(score - m_new);
    const float tile_sum = warp_sum(p);
    p_s[r * stride + lane] = p;
    if (lane == 0) {
      const float alpha = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
      alpha_s[r] = alpha;
      m_s[r] = m_new;
      l_s[r] = l_s[r] * alpha + tile_sum;
    }
  }
}

// acc[r][c] = acc[r][c] * alpha[r] + sum_t p[r][t] * v[t][c] for the tile's `len` tokens (rows x d
// accumulators, p rows `stride` apart), spread over the block's threads. Call between __syncthreads().
__device__ __forceinline__ void rescale_and_accumulate(float* acc_s, const float* alpha_s, const float* p_s,
                                                       const float* v_s, std::int64_t rows, std::int64_t d,
                                                       std::int64_t stride, std::int64_t len) {
  for (std::int64_t i = threadIdx.x; i < rows * d; i += blockDim.x) {
    const std::int64_t r = i / d, c = i % d;
    float acc = acc_s[i] * alpha_s[r];
    for (std::int64_t t = 0; t < len; ++t) acc += p_s[r * stride + t] * v_s[t * d + c];
    acc_s[i] = acc;
  }
}

}  // namespace duplex::kernels::cuda
