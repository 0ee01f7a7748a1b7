// Decode attention over a paged KV cache, split-KV and GQA-aware.
// Grid (splits, kv heads, requests): a block streams its share of one kv head's keys and values through
// shared memory once and uses each tile for the whole query group (G heads), keeping an online softmax per
// head. A second kernel merges the splits (max-rescaled) in split order, so results do not depend on
// scheduling.
#include <algorithm>
#include <cstdint>

#include "cuda_common.cuh"

namespace duplex::kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kTile = 32;  // tokens per shared-memory tile (one per lane in the softmax step)

struct DecodeShape {
  std::int64_t hq, hkv, group, d, block_size, max_blocks, split_tokens, splits;
};

// kVectorized: rows are read 16 bytes at a time (needs 16-byte aligned caches and D * sizeof(T) % 16 == 0).
template <class T, bool kVectorized>
__global__ void __launch_bounds__(kThreads)
    decode_split(const T* q, const T* k_cache, const T* v_cache, const std::int32_t* block_table,
                 const std::int32_t* context_lens, float* partial_acc, float* partial_ml, DecodeShape s,
                 std::int64_t num_blocks, std::int64_t max_context, float scale, unsigned int* error_word) {
  extern __shared__ float shared[];
  const std::int64_t d = s.d, g_count = s.group;
  float* q_s = shared;                   // [G, D]
  float* k_s = q_s + g_count * d;        // [kTile, D + 1] (padded: conflict-free row reads)
  float* v_s = k_s + kTile * (d + 1);    // [kTile, D]
  float* p_s = v_s + kTile * d;          // [G, kTile]
  float* acc_s = p_s + g_count * kTile;  // [G, D]
  float* m_s = acc_s + g_count * d;      // [G]
  float* l_s = m_s + g_count;            // [G]
  float* alpha_s = l_s + g_count;        // [G]

  const std::int64_t split = blockIdx.x, kv_head = blockIdx.y, b = blockIdx.z;
  std::int64_t context = context_lens[b];
  if (context < 0 || context > max_context) {
    if (threadIdx.x == 0) atomicOr(error_word, kBadContextLength);
    context = 0;
  }
  const std::int64_t first = split * s.split_tokens;
  const std::int64_t last = context < first + s.split_tokens ? context : first + s.split_tokens;

  for (std::int64_t i = threadIdx.x; i < g_count * d; i += blockDim.x) {
    q_s[i] = to_float(q[(b * s.hq + kv_head * g_count) * d + i]);
    acc_s[i] = 0.0f;
  }
  for (std::int64_t g = threadIdx.x; g < g_count; g += blockDim.x) {
    m_s[g] = -INFINITY;
    l_s[g] = 0.0f;
  }
  __syncthreads();

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  for (std::int64_t tile = first; tile < last; tile += kTile) {
    const std::int64_t tile_len = (last - tile < kTile ? last - tile : kTile);
    // Each thread moves kVector consecutive elements of a row (16 bytes when vectorized) per step.
    constexpr std::int64_t kVector = kVectorized ? static_cast<std::int64_t>(16 / sizeof(T)) : 1;
    const std::int64_t chunks_per_row = d / kVector;
    for (std::int64_t i = threadIdx.x; i < tile_len * chunks_per_row; i += blockDim.x) {
      const std::int64_t t = i / chunks_per_row, c0 = (i % chunks_per_row) * kVector, token = tile + t;
      std::int64_t block = block_table[b * s.max_blocks + token / s.block_size];
      if (block < 0 || block >= num_blocks) {
        atomicOr(error_word, kBadBlockTableEntry);
        block = 0;
      }
      const std::int64_t row = ((block * s.block_size + token % s.block_size) * s.hkv + kv_head) * d + c0;
      alignas(16) T k_vals[kVector];
      alignas(16) T v_vals[kVector];
      if constexpr (kVectorized) {
        *reinterpret_cast<uint4*>(k_vals) = *reinterpret_cast<const uint4*>(k_cache + row);
        *reinterpret_cast<uint4*>(v_vals) = *reinterpret_cast<const uint4*>(v_cache + row);
      } else {
        k_vals[0] = k_cache[row];
        v_vals[0] = v_cache[row];
      }
#pragma unroll
      for (std::int64_t e = 0; e < kVector; ++e) {
        k_s[t * (d + 1) + c0 + e] = to_float(k_vals[e]);
        v_s[t * d + c0 + e] = to_float(v_vals[e]);
      }
    }
    __syncthreads();
    for (std::int64_t i = threadIdx.x; i < g_count * kTile; i += blockDim.x) {
      const std::int64_t g = i / kTile, t = i % kTile;
      float score = -INFINITY;
      if (t < tile_len) {
        score = 0.0f;
        for (std::int64_t c = 0; c < d; ++c) score += q_s[g * d + c] * k_s[t * (d + 1) + c];
        score *= scale;
      }
      p_s[i] = score;
    }
    __syncthreads();
    for (std::int64_t g = warp; g < g_count; g += warps) {
      const float score = p_s[g * kTile + lane];
      const float m_old = m_s[g];
      const float m_new = fmaxf(m_old, warp_max(score));  // the tile holds >= 1 valid token: finite
      const float p = score == -INFINITY ? 0.0f : expf(score - m_new);
      const float tile_sum = warp_sum(p);
      p_s[g * kTile + lane] = p;
      if (lane == 0) {
        const float alpha = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
        alpha_s[g] = alpha;
        m_s[g] = m_new;
        l_s[g] = l_s[g] * alpha + tile_sum;
      }
    }
    __syncthreads();
    for (std::int64_t i = threadIdx.x; i < g_count * d; i += blockDim.x) {
      const std::int64_t g = i / d, c = i % d;
      float acc = acc_s[i] * alpha_s[g];
      for (std::int64_t t = 0; t < tile_len; ++t) acc += p_s[g * kTile + t] * v_s[t * d + c];
      acc_s[i] = acc;
    }
    __syncthreads();
  }

  const std::int64_t head0 = b * s.hq + kv_head * g_count;
  for (std::int64_t i = threadIdx.x; i < g_count * d; i += blockDim.x) {
    const std::int64_t g = i / d, c = i % d;
    partial_acc[((head0 + g) * s.splits + split) * d + c] = acc_s[i];
  }
  for (std::int64_t g = threadIdx.x; g < g_count; g += blockDim.x) {
    partial_ml[((head0 + g) * s.splits + split) * 2] = m_s[g];
    partial_ml[((head0 + g) * s.splits + split) * 2 + 1] = l_s[g];
  }
}

template <class T>
__global__ void decode_merge(const float* partial_acc, const float* partial_ml, T* out, std::int64_t splits,
                             std::int64_t d) {
  const std::int64_t head = blockIdx.x;  // b * Hq + h
  const float* ml = partial_ml + head * splits * 2;
  float m = -INFINITY;
  for (std::int64_t sp = 0; sp < splits; ++sp) m = fmaxf(m, ml[sp * 2]);
  float l = 0.0f;
  if (m != -INFINITY)
    for (std::int64_t sp = 0; sp < splits; ++sp)
      if (ml[sp * 2] != -INFINITY) l += ml[sp * 2 + 1] * expf(ml[sp * 2] - m);
  for (std::int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float acc = 0.0f;
    if (m != -INFINITY)
      for (std::int64_t sp = 0; sp < splits; ++sp)
        if (ml[sp * 2] != -INFINITY) acc += partial_acc[(head * splits + sp) * d + c] * expf(ml[sp * 2] - m);
    out[head * d + c] = from_float<T>(l > 0.0f ? acc / l : 0.0f);
  }
}

}  // namespace

Status decode_attention(Context& ctx, const DecodeAttentionArgs& args, cudaStream_t stream) {
  const std::int64_t batch = args.q.dim(0);
  if (batch == 0) return {};
  DecodeShape s{};
  s.hq = args.q.dim(1);
  s.hkv = args.k_cache.dim(2);
  s.group = s.hq / s.hkv;
  s.d = args.q.dim(2);
  s.block_size = args.k_cache.dim(1);
  s.max_blocks = args.block_table.dim(1);
  // Enough blocks to fill the GPU twice over, each split a whole number of tiles.
  const std::int64_t tiles = std::max<std::int64_t>(1, (args.max_context_len + kTile - 1) / kTile);
  const std::int64_t wanted =
      std::max<std::int64_t>(1, (2 * ctx.sm_count + batch * s.hkv - 1) / (batch * s.hkv));
  const std::int64_t tiles_per_split = std::max<std::int64_t>(1, (tiles + wanted - 1) / wanted);
  s.split_tokens = tiles_per_split * kTile;
  s.splits = (tiles + tiles_per_split - 1) / tiles_per_split;

  const std::size_t shared_bytes =
      sizeof(float) * static_cast<std::size_t>(2 * s.group * s.d + kTile * (s.d + 1) + kTile * s.d +
                                               s.group * kTile + 3 * s.group);
  if (shared_bytes > ctx.max_shared_bytes)
    return {StatusCode::kUnsupportedShape,
            "decode_attention: group x head_dim needs more shared memory than the device has"};

  Scratch scratch(stream);
  const std::size_t acc_floats = static_cast<std::size_t>(batch * s.hq * s.splits * s.d);
  const std::size_t ml_floats = static_cast<std::size_t>(batch * s.hq * s.splits * 2);
  Status st = scratch.allocate((acc_floats + ml_floats) * sizeof(float));
  if (!st.ok()) return st;
  float* partial_acc = scratch.as<float>();
  float* partial_ml = partial_acc + acc_floats;

  return with_storage_type(args.q.dtype, [&](auto tag) -> Status {
    using T = decltype(tag);
    const bool aligned = reinterpret_cast<std::uintptr_t>(args.k_cache.data) % 16 == 0 &&
                         reinterpret_cast<std::uintptr_t>(args.v_cache.data) % 16 == 0 &&
                         (s.d * static_cast<std::int64_t>(sizeof(T))) % 16 == 0;
    auto kernel = aligned ? decode_split<T, true> : decode_split<T, false>;
    DUPLEX_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(shared_bytes)));
    const dim3 grid(static_cast<unsigned int>(s.splits), static_cast<unsigned int>(s.hkv),
                    static_cast<unsigned int>(batch));
    kernel<<<grid, kThreads, shared_bytes, stream>>>(
        args.q.as<const T>(), args.k_cache.as<const T>(), args.v_cache.as<const T>(),
        args.block_table.as<const std::int32_t>(), args.context_lens.as<const std::int32_t>(), partial_acc,
        partial_ml, s, args.k_cache.dim(0), args.max_context_len, args.scale, ctx.error_word);
    DUPLEX_CUDA_LAUNCHED("decode_split");
    decode_merge<T><<<static_cast<unsigned int>(batch * s.hq), 128, 0, stream>>>(
        partial_acc, partial_ml, args.out.as<T>(), s.splits, s.d);
    DUPLEX_CUDA_LAUNCHED("decode_merge");
    return {};
  });
}

}  // namespace duplex::kernels::cuda
