// CUDA fake quantization (ops.hpp ActivationQuant / QuantizeArgs): one block per reach (a row, or a group of
// a row's columns) finds its largest magnitude and its scale, then puts each element on the FP8 E4M3 grid
// (cuda_fp8.h's round-to-nearest-even, saturating conversion) or the INT8 grid (rintf) and writes q x s back
// rounded to the storage dtype. A per-tensor spec first reduces the amax of the whole call (a grid-stride
// kernel, atomicMax on the non-negative floats' bits: order-independent). LLM.int8()'s decomposition first
// marks the call's outlier columns (a grid-stride kernel; every write stores 1, so the races agree), then each
// row's scale comes from its elements below the threshold and the marked columns pass through. expert_ffn
// (cuda_moe.cu) quantizes its x and h rows through fake_quantize_rows.
#include <cuda_fp8.h>

#include <algorithm>

#include "cuda_common.cuh"

namespace duplex::kernels::cuda {
namespace {

constexpr int kMaxThreads = 256;
constexpr float kFp8Max = 448.0f;  // the largest finite E4M3 value
constexpr float kInt8Max = 127.0f;

// The spec as a kernel argument.
struct QuantParams {
  QuantFormat format;
  float static_scale, scale_ub, min_scale;
  bool pow2_scale;
  float outlier_threshold;  // > 0: LLM.int8()'s decomposition (outliers marked)
};

// The scale of a reach whose largest magnitude is amax (ops.hpp): static_scale when > 0, else
// max(min(amax, scale_ub) / q_max, min_scale), with pow2_scale 2^ceil(log2 s) (a power of two stays itself).
// IEEE division (__fdiv_rn), as the CPU's.
__device__ float scale_of(const QuantParams& p, float amax) {
  if (p.static_scale > 0.0f) return p.static_scale;
  const float a = p.scale_ub > 0.0f ? fminf(amax, p.scale_ub) : amax;
  float s = fmaxf(__fdiv_rn(a, p.format == QuantFormat::kInt8 ? kInt8Max : kFp8Max), p.min_scale);
  if (p.pow2_scale && s > 0.0f) {
    int e = 0;
    const float m = frexpf(s, &e);  // s = m 2^e, m in [0.5, 1)
    if (m != 0.5f) s = ldexpf(1.0f, e);
  }
  return s;
}

// x at scale s: q = x / s (IEEE division) on the format's grid, written back as q x s (one FP32 product).
// s == 0: 0.
__device__ __forceinline__ float fake_quantize(QuantFormat format, float x, float s) {
  if (s == 0.0f) return 0.0f;
  const float q = __fdiv_rn(x, s);
  float on_grid;
  if (format == QuantFormat::kInt8) {
    on_grid = fminf(fmaxf(rintf(q), -128.0f), kInt8Max);
  } else {  // saturating: |q| > 448 becomes +-448, as the contract's clamp
    const __nv_fp8_storage_t bits = __nv_cvt_float_to_fp8(q, __NV_SATFINITE, __NV_E4M3);
    on_grid = __half2float(__half(__nv_cvt_fp8_to_halfraw(bits, __NV_E4M3)));
  }
  return __fmul_rn(on_grid, s);
}

// *amax_bits = max(*amax_bits, |x[i]|) over n elements (the bits of non-negative floats order as the floats
// do; *amax_bits starts at 0).
template <class T>
__global__ void max_magnitude(const T* x, std::int64_t n, unsigned int* amax_bits) {
  __shared__ float scratch[32];
  float m = 0.0f;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    m = fmaxf(m, fabsf(to_float(x[i])));
  m = block_max(m, scratch);
  if (threadIdx.x == 0) atomicMax(amax_bits, __float_as_uint(m));
}

// outliers[c] = 1 for every column c of x [rows, cols] with some |x| >= threshold (n = rows x cols).
template <class T>
__global__ void mark_outlier_columns(const T* x, std::int64_t n, std::int64_t cols, float threshold,
                                     std::int32_t* outliers) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    if (fabsf(to_float(x[i])) >= threshold) outliers[i % cols] = 1;
}

// One block per reach: per_row of them in each row of `cols` elements, reach g of a row its elements
// [g step, min((g + 1) step, cols)) (the last group of a row the shorter rest), `reaches` of them in all
// (the grid has at least one block, so a call scale is written even for an empty tensor). The reach's scale:
// the static one, the call's amax (tensor_amax_bits, per tensor) or its own amax. scales (nullable):
// per_reach ? scales[r] : scales[0] (block 0). y may alias x: a block reads its reach (the amax) before any
// of its threads writes it. With p.outlier_threshold > 0 (one reach a row), the amax is over the elements
// below it and the columns outliers marks pass through.
template <class T>
__global__ void quantize_reaches(const T* x, T* y, std::int64_t reaches, std::int64_t cols,
                                 std::int64_t per_row, std::int64_t step, QuantParams p,
                                 const unsigned int* tensor_amax_bits, bool per_reach, float* scales,
                                 const std::int32_t* outliers) {
  const bool decomposes = p.outlier_threshold > 0.0f;
  __shared__ float scratch[32];
  const std::int64_t r = blockIdx.x;
  const std::int64_t g = r % per_row, base = (r / per_row) * cols + g * step;
  const std::int64_t width = step < cols - g * step ? step : cols - g * step;
  const bool in_range = r < reaches;
  float s;
  if (p.static_scale > 0.0f) {
    s = p.static_scale;
  } else if (tensor_amax_bits != nullptr) {
    s = scale_of(p, __uint_as_float(*tensor_amax_bits));
  } else {
    float m = 0.0f;
    if (in_range)
      for (std::int64_t i = threadIdx.x; i < width; i += blockDim.x) {
        const float a = fabsf(to_float(x[base + i]));
        if (!decomposes || a < p.outlier_threshold) m = fmaxf(m, a);
      }
    s = scale_of(p, block_max(m, scratch));
  }
  if (scales != nullptr && threadIdx.x == 0 && (per_reach ? in_range : r == 0)) scales[per_reach ? r : 0] = s;
  if (!in_range) return;
  for (std::int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    if (decomposes && outliers[g * step + i] != 0) {
      y[base + i] = x[base + i];
      continue;
    }
    y[base + i] = from_float<T>(fake_quantize(p.format, to_float(x[base + i]), s));
  }
}

}  // namespace

Status fake_quantize_rows(Context& ctx, const ActivationQuant& quant, DType dtype, const void* x, void* y,
                          std::int64_t rows, std::int64_t cols, float* scales, cudaStream_t stream,
                          std::int32_t* outliers) {
  const bool call = quant.static_scale > 0.0f || quant.per_tensor;
  const bool dynamic_call = call && !(quant.static_scale > 0.0f);
  // Reaches: the rows, or their ceil(C / group) groups, the last the shorter rest (the call scale's spec runs
  // per row, its scale shared).
  const bool grouped = !call && quant.group > 0;
  const std::int64_t per_row = grouped ? (cols + quant.group - 1) / quant.group : 1;
  const std::int64_t reaches = rows * per_row, width = grouped ? quant.group : cols;
  const QuantParams params{quant.format,    quant.static_scale, quant.scale_ub,
                           quant.min_scale, quant.pow2_scale,   quant.outlier_threshold};
  const int threads = static_cast<int>(std::clamp<std::int64_t>((width + 31) / 32 * 32, 32, kMaxThreads));
  Scratch amax(stream);
  return with_storage_type(dtype, [&](auto tag) -> Status {
    using T = decltype(tag);
    const unsigned int* amax_bits = nullptr;
    if (dynamic_call) {
      if (Status s = amax.allocate(sizeof(unsigned int)); !s.ok()) return s;
      DUPLEX_CUDA_TRY(cudaMemsetAsync(amax.as<unsigned int>(), 0, sizeof(unsigned int), stream));
      const std::int64_t n = rows * cols;
      const unsigned int blocks =
          std::max(1u, std::min(blocks_for(n, kMaxThreads), static_cast<unsigned int>(4 * ctx.sm_count)));
      max_magnitude<T>
          <<<blocks, kMaxThreads, 0, stream>>>(static_cast<const T*>(x), n, amax.as<unsigned int>());
      DUPLEX_CUDA_LAUNCHED("max_magnitude");
      amax_bits = amax.as<const unsigned int>();
    }
    if (quant.decomposes() && rows * cols > 0) {
      const std::int64_t n = rows * cols;
      const unsigned int blocks =
          std::max(1u, std::min(blocks_for(n, kMaxThreads), static_cast<unsigned int>(4 * ctx.sm_count)));
      mark_outlier_columns<T><<<blocks, kMaxThreads, 0, stream>>>(static_cast<const T*>(x), n, cols,
                                                                  quant.outlier_threshold, outliers);
      DUPLEX_CUDA_LAUNCHED("mark_outlier_columns");
    }
    const auto grid = static_cast<unsigned int>(std::max<std::int64_t>(reaches, 1));
    quantize_reaches<T><<<grid, threads, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y), reaches,
                                                      cols, std::max<std::int64_t>(per_row, 1), width, params,
                                                      amax_bits, !call, scales,
                                                      quant.decomposes() ? outliers : nullptr);
    DUPLEX_CUDA_LAUNCHED("quantize_reaches");
    return {};
  });
}

Status quantize(Context& ctx, const QuantizeArgs& args, cudaStream_t stream) {
  return fake_quantize_rows(ctx, args.quant, args.x.dtype, args.x.data, args.y.data, args.x.dim(0),
                            args.x.dim(1), args.scales.as<float>(), stream, args.outliers.as<std::int32_t>());
}

}  // namespace duplex::kernels::cuda
