// CUDA row-wise and elementwise kernels: RMSNorm / LayerNorm, RoPE, softmax, residual add, clamp, Llama 4's
// attention temperature, embedding lookup, sum of partials. FP32 arithmetic, one rounding to the storage
// dtype on the way out.
#include "cuda_common.cuh"

namespace duplex::kernels::cuda {
namespace {

constexpr int kRowThreads = 256;
constexpr int kElementThreads = 256;

template <class T>
__global__ void norm_rows(const T* x, const T* weight, const T* bias, T* y, std::int64_t h, float eps,
                          float weight_offset, bool layer) {
  __shared__ float scratch[32];
  const std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * h;
  float mean = 0.0f;
  if (layer) {
    float s = 0.0f;
    for (std::int64_t i = threadIdx.x; i < h; i += blockDim.x) s += to_float(x[base + i]);
    mean = block_sum(s, scratch) / static_cast<float>(h);
  }
  float sq = 0.0f;
  for (std::int64_t i = threadIdx.x; i < h; i += blockDim.x) {
    const float d = to_float(x[base + i]) - mean;
    sq += d * d;
  }
  const float inv = rsqrtf(block_sum(sq, scratch) / static_cast<float>(h) + eps);
  __syncthreads();  // y may alias x: every thread has read x before anyone writes
  for (std::int64_t i = threadIdx.x; i < h; i += blockDim.x) {
    const float b = bias != nullptr ? to_float(bias[i]) : 0.0f;
    y[base + i] =
        from_float<T>((to_float(x[base + i]) - mean) * inv * (weight_offset + to_float(weight[i])) + b);
  }
}

// The caller's RoPE frequencies, passed by value (kernel parameter space; validate bounds the count).
struct RopeFrequencies {
  float v[kMaxRopeFrequencies];
  bool given;
};

template <class T>
__global__ void rope_pairs(T* x, const std::int32_t* positions, std::int64_t tokens, std::int64_t heads,
                           std::int64_t d, std::int64_t half, float theta, RopeFrequencies freq,
                           float scale) {
  const std::int64_t idx = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= tokens * heads * half) return;
  const std::int64_t i = idx % half, row = idx / half, t = row / heads;
  const float inv_freq =
      freq.given ? freq.v[i] : powf(theta, -2.0f * static_cast<float>(i) / static_cast<float>(2 * half));
  float s, c;
  sincosf(static_cast<float>(positions[t]) * inv_freq, &s, &c);
  s *= scale;
  c *= scale;
  T* p = x + row * d;
  const float x0 = to_float(p[i]), x1 = to_float(p[i + half]);
  p[i] = from_float<T>(x0 * c - x1 * s);
  p[i + half] = from_float<T>(x1 * c + x0 * s);
}

template <class T>
__global__ void softmax_rows(const T* x, T* y, std::int64_t cols, float scale) {
  __shared__ float scratch[32];
  const std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * cols;
  float m = -INFINITY;
  for (std::int64_t i = threadIdx.x; i < cols; i += blockDim.x) m = fmaxf(m, scale * to_float(x[base + i]));
  m = block_max(m, scratch);
  float s = 0.0f;
  for (std::int64_t i = threadIdx.x; i < cols; i += blockDim.x) s += expf(scale * to_float(x[base + i]) - m);
  const float inv = 1.0f / block_sum(s, scratch);
  __syncthreads();
  for (std::int64_t i = threadIdx.x; i < cols; i += blockDim.x)
    y[base + i] = from_float<T>(expf(scale * to_float(x[base + i]) - m) * inv);
}

template <class T>
__global__ void add_elements(const T* a, const T* b, T* out, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));
}

// y = x, or the bound it passes: limit rounded to T (from_float rounds to nearest even, as the CPU's
// round_to_dtype does), so nothing else is rounded; NaN compares false both ways and is copied.
template <class T>
__global__ void clamp_elements(const T* x, T* y, float limit, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const T hi = from_float<T>(limit);
  const float bound = to_float(hi), v = to_float(x[i]);
  y[i] = v < -bound ? from_float<T>(-bound) : v > bound ? hi : x[i];
}

// One block per row t of x [T, heads x D], in place: every element times Llama 4's attention temperature
// f(t) = 1 + attn_scale * log1p(floor((positions[t] + 1) / floor_scale)) (ops.hpp AttnTemperatureArgs),
// in FP32 in HF's order (the _rn intrinsics keep each step one IEEE operation: nvcc would contract the
// multiply and the add into an FMA), the product rounded once to T. A negative position is reported in
// error_word and leaves its row unchanged.
template <class T>
__global__ void temperature_rows(T* x, const std::int32_t* positions, std::int64_t row_elems,
                                 float floor_scale, float attn_scale, unsigned int* error_word) {
  const std::int32_t position = positions[blockIdx.x];
  if (position < 0) {
    if (threadIdx.x == 0) atomicOr(error_word, kBadPosition);
    return;
  }
  const float steps = floorf(__fdiv_rn(__fadd_rn(static_cast<float>(position), 1.0f), floor_scale));
  const float f = __fadd_rn(__fmul_rn(log1pf(steps), attn_scale), 1.0f);
  T* row = x + static_cast<std::int64_t>(blockIdx.x) * row_elems;
  for (std::int64_t i = threadIdx.x; i < row_elems; i += blockDim.x)
    row[i] = from_float<T>(__fmul_rn(to_float(row[i]), f));
}

template <class T>
__global__ void gather_rows(const T* table, const std::int32_t* ids, T* out, std::int64_t vocab,
                            std::int64_t h, float scale, unsigned int* error_word) {
  const std::int32_t id = ids[blockIdx.x];
  const bool valid = id >= 0 && id < vocab;
  if (!valid && threadIdx.x == 0) atomicOr(error_word, kBadEmbeddingId);
  T* dst = out + static_cast<std::int64_t>(blockIdx.x) * h;
  for (std::int64_t i = threadIdx.x; i < h; i += blockDim.x)
    dst[i] = !valid          ? from_float<T>(0.0f)
             : scale == 1.0f ? table[static_cast<std::int64_t>(id) * h + i]
                             : from_float<T>(to_float(table[static_cast<std::int64_t>(id) * h + i]) * scale);
}

template <class T>
__global__ void sum_partials(const T* partials, T* out, std::int64_t p, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float acc = 0.0f;
  for (std::int64_t j = 0; j < p; ++j) acc += to_float(partials[j * n + i]);
  out[i] = from_float<T>(acc);
}

}  // namespace

Status norm(Context&, const NormArgs& args, cudaStream_t stream) {
  const std::int64_t t = args.x.dim(0);
  if (t == 0) return {};
  return with_storage_type(args.x.dtype, [&](auto tag) -> Status {
    using T = decltype(tag);
    norm_rows<T><<<static_cast<unsigned int>(t), kRowThreads, 0, stream>>>(
        args.x.as<const T>(), args.weight.as<const T>(), args.bias.as<const T>(), args.y.as<T>(),
        args.x.dim(1), args.eps, args.weight_offset, args.kind == NormKind::kLayer);
    DUPLEX_CUDA_LAUNCHED("norm_rows");
    return {};
  });
}

Status rope(Context&, const RopeArgs& args, cudaStream_t stream) {
  const std::int64_t t = args.x.dim(0), heads = args.x.dim(1), d = args.x.dim(2);
  const std::int64_t half = (args.rotary_dim == 0 ? d : args.rotary_dim) / 2;
  if (t * heads * half == 0) return {};
  RopeFrequencies freq{};
  freq.given = !args.inv_freq.empty();
  for (std::size_t i = 0; i < args.inv_freq.size(); ++i) freq.v[i] = args.inv_freq[i];
  return with_storage_type(args.x.dtype, [&](auto tag) -> Status {
    using T = decltype(tag);
    rope_pairs<T><<<blocks_for(t * heads * half, kElementThreads), kElementThreads, 0, stream>>>(
        args.x.as<T>(), args.positions.as<const std::int32_t>(), t, heads, d, half, args.theta, freq,
        args.scale);
    DUPLEX_CUDA_LAUNCHED("rope_pairs");
    return {};
  });
}

Status softmax(Context&, const SoftmaxArgs& args, cudaStream_t stream) {
  if (args.x.dim(0) == 0 || args.x.dim(1) == 0) return {};
  return with_storage_type(args.x.dtype, [&](auto tag) -> Status {
    using T = decltype(tag);
    softmax_rows<T><<<static_cast<unsigned int>(args.x.dim(0)), kRowThreads, 0, stream>>>(
        args.x.as<const T>(), args.y.as<T>(), args.x.dim(1), args.scale);
    DUPLEX_CUDA_LAUNCHED("softmax_rows");
    return {};
  });
}

Status residual_add(Context&, const ResidualAddArgs& args, cudaStream_t stream) {
  const std::int64_t n = args.a.numel();
  if (n == 0) return {};
  return with_storage_type(args.a.dtype, [&](auto tag) -> Status {
    using T = decltype(tag);
    add_elements<T><<<blocks_for(n, kElementThreads), kElementThreads, 0, stream>>>(
        args.a.as<const T>(), args.b.as<const T>(), args.out.as<T>(), n);
    DUPLEX_CUDA_LAUNCHED("add_elements");
    return {};
  });
}

Status clamp(Context&, const ClampArgs& args, cudaStream_t stream) {
  const std::int64_t n = args.x.numel();
  if (n == 0) return {};
  return with_storage_type(args.x.dtype, [&](auto tag) -> Status {
    using T = decltype(tag);
    clamp_elements<T><<<blocks_for(n, kElementThreads), kElementThreads, 0, stream>>>(
        args.x.as<const T>(), args.y.as<T>(), args.limit, n);
    DUPLEX_CUDA_LAUNCHED("clamp_elements");
    return {};
  });
}

Status attn_temperature(Context& ctx, const AttnTemperatureArgs& args, cudaStream_t stream) {
  const std::int64_t t = args.x.dim(0), row_elems = args.x.dim(1) * args.x.dim(2);
  if (t == 0) return {};
  return with_storage_type(args.x.dtype, [&](auto tag) -> Status {
    using T = decltype(tag);
    temperature_rows<T><<<static_cast<unsigned int>(t), kRowThreads, 0, stream>>>(
        args.x.as<T>(), args.positions.as<const std::int32_t>(), row_elems, args.floor_scale, args.attn_scale,
        ctx.error_word);
    DUPLEX_CUDA_LAUNCHED("temperature_rows");
    return {};
  });
}

Status embedding(Context& ctx, const EmbeddingArgs& args, cudaStream_t stream) {
  const std::int64_t t = args.ids.dim(0);
  if (t == 0) return {};
  return with_storage_type(args.table.dtype, [&](auto tag) -> Status {
    using T = decltype(tag);
    gather_rows<T><<<static_cast<unsigned int>(t), kRowThreads, 0, stream>>>(
        args.table.as<const T>(), args.ids.as<const std::int32_t>(), args.out.as<T>(), args.table.dim(0),
        args.table.dim(1), args.scale, ctx.error_word);
    DUPLEX_CUDA_LAUNCHED("gather_rows");
    return {};
  });
}

Status partial_sum(Context&, const PartialSumArgs& args, cudaStream_t stream) {
  const std::int64_t p = args.partials.dim(0), n = args.partials.dim(1);
  if (n == 0) return {};
  return with_storage_type(args.out.dtype, [&](auto tag) -> Status {
    using T = decltype(tag);
    sum_partials<T><<<blocks_for(n, kElementThreads), kElementThreads, 0, stream>>>(
        args.partials.as<const T>(), args.out.as<T>(), p, n);
    DUPLEX_CUDA_LAUNCHED("sum_partials");
    return {};
  });
}

}  // namespace duplex::kernels::cuda
