// Causal (optionally sliding-window and / or chunked) prefill attention, tiled flash-style: grid (query
// tiles, q heads, sequences); a block keeps kRows query rows and their running softmax state in shared memory
// and streams kCols keys/values at a time (from its first row's first attended key on: first_attended, which
// never decreases along the rows), so the T x T score matrix never exists. FP32 arithmetic on CUDA cores.
// Soft-capping (softcap > 0) is a kSoftcap instantiation, which rewrites each scaled score before the mask
// and the online softmax (soft_capped: softcap * tanhf(s / softcap)).
// Attention sinks (sinks present) are a kSinks instantiation: each row's running max and sum start at the
// head's sink S and exp(S - S) = 1 (a first key with no value), so the online softmax counts it once.
#include <algorithm>

#include "cuda_common.cuh"

namespace duplex::kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kRows = 32;
constexpr int kCols = 32;  // one per lane in the softmax step

template <class T, bool kSoftcap, bool kSinks>
__global__ void prefill_tile(const T* q, const T* k, const T* v, T* out, const std::int64_t* seq_starts,
                             std::int64_t hq, std::int64_t hkv, std::int64_t d, float scale,
                             std::int64_t window, std::int64_t chunk, float softcap, const T* sinks) {
  extern __shared__ float shared[];
  float* q_s = shared;                 // [kRows, D]
  float* k_s = q_s + kRows * d;        // [kCols, D + 1]
  float* v_s = k_s + kCols * (d + 1);  // [kCols, D]
  float* p_s = v_s + kCols * d;        // [kRows, kCols]
  float* acc_s = p_s + kRows * kCols;  // [kRows, D]
  float* m_s = acc_s + kRows * d;      // [kRows]
  float* l_s = m_s + kRows;            // [kRows]
  float* alpha_s = l_s + kRows;        // [kRows]

  const std::int64_t seq = blockIdx.z, head = blockIdx.y, kv_head = head / (hq / hkv);
  const std::int64_t start = seq_starts[seq], len = seq_starts[seq + 1] - start;
  const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.x) * kRows;
  if (row0 >= len) return;  // block-uniform
  const std::int64_t rows = len - row0 < kRows ? len - row0 : kRows;

  for (std::int64_t i = threadIdx.x; i < kRows * d; i += blockDim.x) {
    const std::int64_t r = i / d, c = i % d;
    q_s[i] = r < rows ? to_float(q[((start + row0 + r) * hq + head) * d + c]) : 0.0f;
    acc_s[i] = 0.0f;
  }
  for (std::int64_t r = threadIdx.x; r < kRows; r += blockDim.x) {
    if constexpr (kSinks) {  // a sink of -inf has no share: m = -inf, l = 0 as without one
      const float sink = to_float(sinks[head]);
      m_s[r] = sink;
      l_s[r] = sink == -INFINITY ? 0.0f : 1.0f;
    } else {
      m_s[r] = -INFINITY;
      l_s[r] = 0.0f;
    }
  }
  __syncthreads();

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  // Keys [first_key, last_key) can be seen by this block's rows (a sliding window or a chunk: from the first
  // row's first attended key on).
  const std::int64_t last_key = row0 + rows;
  const std::int64_t first_key = first_attended(row0, window, chunk);
  for (std::int64_t col0 = first_key; col0 < last_key; col0 += kCols) {
    const std::int64_t cols = last_key - col0 < kCols ? last_key - col0 : kCols;
    for (std::int64_t i = threadIdx.x; i < cols * d; i += blockDim.x) {
      const std::int64_t t = i / d, c = i % d;
      const std::int64_t src = ((start + col0 + t) * hkv + kv_head) * d + c;
      k_s[t * (d + 1) + c] = to_float(k[src]);
      v_s[t * d + c] = to_float(v[src]);
    }
    __syncthreads();
    for (std::int64_t i = threadIdx.x; i < kRows * kCols; i += blockDim.x) {
      const std::int64_t r = i / kCols, t = i % kCols;
      float score = -INFINITY;
      if (r < rows && t < cols && col0 + t <= row0 + r &&
          col0 + t >= first_attended(row0 + r, window, chunk)) {
        score = 0.0f;
        for (std::int64_t c = 0; c < d; ++c) score += q_s[r * d + c] * k_s[t * (d + 1) + c];
        score *= scale;
        if constexpr (kSoftcap) score = soft_capped(score, softcap);
      }
      p_s[i] = score;
    }
    __syncthreads();
    online_softmax_tile(p_s, m_s, l_s, alpha_s, kRows, kCols, warp, warps, lane);
    __syncthreads();
    rescale_and_accumulate(acc_s, alpha_s, p_s, v_s, kRows, d, kCols, cols);
    __syncthreads();
  }
  for (std::int64_t i = threadIdx.x; i < rows * d; i += blockDim.x) {
    const std::int64_t r = i / d, c = i % d;
    out[((start + row0 + r) * hq + head) * d + c] = from_float<T>(acc_s[i] / l_s[r]);
  }
}

}  // namespace

Status prefill_attention(Context& ctx, const PrefillAttentionArgs& args, cudaStream_t stream) {
  const std::int64_t sequences = static_cast<std::int64_t>(args.seq_starts.size()) - 1;
  std::int64_t longest = 0;
  for (std::int64_t i = 0; i < sequences; ++i)
    longest = std::max(longest, args.seq_starts[static_cast<std::size_t>(i) + 1] -
                                    args.seq_starts[static_cast<std::size_t>(i)]);
  if (longest == 0) return {};
  const std::int64_t d = args.q.dim(2);
  const std::size_t shared_bytes =
      sizeof(float) * static_cast<std::size_t>(kRows * d + kCols * (d + 1) + kCols * d + kRows * kCols +
                                               kRows * d + 3 * kRows);
  if (shared_bytes > ctx.max_shared_bytes)
    return {StatusCode::kUnsupportedShape,
            "prefill_attention: head_dim needs more shared memory than the device has"};
  Scratch starts(stream);
  Status st = starts.allocate(args.seq_starts.size() * sizeof(std::int64_t));
  if (!st.ok()) return st;
  DUPLEX_CUDA_TRY(cudaMemcpyAsync(starts.as<std::int64_t>(), args.seq_starts.data(),
                                  args.seq_starts.size() * sizeof(std::int64_t), cudaMemcpyHostToDevice,
                                  stream));
  return with_storage_type(args.q.dtype, [&](auto tag) -> Status {
    using T = decltype(tag);
    const bool capped = args.softcap > 0.0f, sinks = args.sinks.present();
    auto kernel = capped ? (sinks ? prefill_tile<T, true, true> : prefill_tile<T, true, false>)
                         : (sinks ? prefill_tile<T, false, true> : prefill_tile<T, false, false>);
    DUPLEX_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(shared_bytes)));
    const dim3 grid(static_cast<unsigned int>((longest + kRows - 1) / kRows),
                    static_cast<unsigned int>(args.q.dim(1)), static_cast<unsigned int>(sequences));
    kernel<<<grid, kThreads, shared_bytes, stream>>>(
        args.q.as<const T>(), args.k.as<const T>(), args.v.as<const T>(), args.out.as<T>(),
        starts.as<const std::int64_t>(), args.q.dim(1), args.k.dim(1), d, args.scale, args.window, args.chunk,
        args.softcap, args.sinks.as<const T>());
    DUPLEX_CUDA_LAUNCHED("prefill_tile");
    return {};
  });
}

}  // namespace duplex::kernels::cuda
