// Decode attention over a paged KV cache, split-KV and GQA-aware, on CUDA cores. FP16 / BF16 caches with
// head_dim 32 / 64 / 128 take the tensor-core path instead (cuda_decode_attention_mma.cu).
//
// Fast path (rows of 16-byte multiples on 16-byte aligned caches, at most 32 chunks of 16 bytes a row):
// grid (splits, kv heads x head chunks, requests). A block of four warps streams its share of one kv head's
// keys and values straight into registers with 16-byte loads: a "row group" of `lanes` lanes holds one
// token's key and value row (one 16-byte chunk per lane), so a warp covers 32 / lanes tokens per step and
// each thread keeps kTokens tokens' loads in flight. Every row is read once for the whole query group (up to
// kGroup query heads a block; larger groups are split over head chunks). Scores are reduced across the row
// group with warp shuffles; each row group keeps an FP32 online softmax per head (in base-2 units: scores
// carry the factor log2(e), so exp2f does the exponentials; soft-capping is a kSoftcap instantiation, which
// caps the true scaled score and multiplies log2(e) in after the tanh: ScoreCap), updated once per kTokens
// tokens. The row groups of a block are merged through shared memory, in a fixed order, into one partial per
// split; a second kernel merges the splits (max-rescaled) in split order, so results do not depend on
// scheduling. Attention sinks are added by that merge (decode::decode_merge), once per row: the split
// kernels do not see them.
//
// Fallback (any other row size or alignment): one scalar element at a time through shared-memory tiles
// (natural-log units; soft-capping: a kSoftcap instantiation, soft_capped on each scaled score).
#include <algorithm>
#include <cstdint>

#include "cuda_decode_common.cuh"

namespace duplex::kernels::cuda {
namespace {

using namespace decode;

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kTokens = 4;        // tokens a row group loads per step (its loads in flight)
constexpr int kBlocksPerSm = 32;  // blocks wanted per SM over the whole grid (CUDA-core paths)

struct FastShape {
  int hq, hkv, group, d, max_blocks, splits, split_tokens;
  int window;       // sliding window (tokens; 0: none)
  int chunk;        // chunked attention (tokens; 0: none)
  int lanes;        // lanes per row group: a power of two >= the row's 16-byte chunks, <= 32
  int head_chunks;  // blocks per kv head along the query group (group / kGroup, rounded up)
  FastDivider block_size;
  CacheStrides stride;  // of both caches, in elements
  ScoreCap cap;         // the soft-cap (read by the kSoftcap instantiations only)
};

// The elements of one 16-byte chunk as floats.
template <class T>
constexpr int kChunkElems = static_cast<int>(16 / sizeof(T));

template <class T>
__device__ __forceinline__ void unpack(const uint4& raw, float (&out)[kChunkElems<T>]) {
  if constexpr (sizeof(T) == 4) {
    out[0] = __uint_as_float(raw.x);
    out[1] = __uint_as_float(raw.y);
    out[2] = __uint_as_float(raw.z);
    out[3] = __uint_as_float(raw.w);
  } else {
    const unsigned int words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      T pair[2];
      __builtin_memcpy(pair, &words[i], sizeof(pair));
      out[2 * i] = to_float(pair[0]);
      out[2 * i + 1] = to_float(pair[1]);
    }
  }
}

// The element offset in the caches of kv head 0's row (page * page stride + offset in the page * slot
// stride) of each token of one row group in the step that starts at token `base`; -1 at or past `last`, and
// for a block_table entry outside [0, num_blocks) (set in error_word; that row then reads as zeros).
__device__ __forceinline__ void find_slots(int base, int last, int row_group, int row_groups,
                                           const FastShape& s, const std::int32_t* table,
                                           std::int64_t num_blocks, unsigned int* error_word,
                                           std::int64_t (&slots)[kTokens]) {
#pragma unroll
  for (int u = 0; u < kTokens; ++u) {
    const int token = base + u * row_groups + row_group;
    const std::int32_t page = token < last ? table[s.block_size.div(static_cast<unsigned int>(token))] : 0;
    slots[u] = paged_row_offset(token, last, page, num_blocks, s.block_size, s.stride, 0, error_word);
  }
}

// Dynamic shared memory: [row groups][heads][D] accumulators, then [row groups][heads][2] (max, sum).
// Registers (ptxas, sm_90, 16-bit types): kGroup 4 fits 128 (four blocks an SM, a few spilled bytes);
// kGroup 8 needs ~240 (two blocks an SM; capping it spills hundreds of bytes). kSoftcap: scores soft-capped
// (s.cap) instead of scaled by scale_log2.
template <class T, int kGroup, bool kSoftcap>
__global__ void __launch_bounds__(kThreads, kGroup <= 4 ? 4 : 1)
    decode_split_fast(const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
                      const std::int32_t* __restrict__ block_table,
                      const std::int32_t* __restrict__ context_lens, float* __restrict__ partial_acc,
                      float* __restrict__ partial_ml, FastShape s, std::int64_t num_blocks,
                      std::int64_t max_context, float scale_log2, unsigned int* error_word) {
  constexpr int kE = kChunkElems<T>;
  extern __shared__ float shared[];

  const SplitBlock blk = split_block(s, kGroup, context_lens, max_context, error_word);
  const int split = blk.split, kv_head = blk.kv_head, b = blk.b, heads = blk.heads;  // heads: 1..kGroup
  const std::int64_t head0 = blk.head0;
  const int first = blk.first, last = blk.last;

  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int sub_lane = lane % s.lanes;                           // this lane's 16-byte chunk of a row
  const int row_group = warp * (32 / s.lanes) + lane / s.lanes;  // 0 .. row_groups - 1
  const int row_groups = kWarps * (32 / s.lanes);
  const bool active = sub_lane * kE < s.d;  // rows of fewer than `lanes` chunks leave lanes idle

  float q_reg[kGroup][kE];
  float acc[kGroup][kE];
  float m[kGroup], l[kGroup];
#pragma unroll
  for (int g = 0; g < kGroup; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < kE; ++e) {
      q_reg[g][e] = 0.0f;
      acc[g][e] = 0.0f;
    }
    if (g < heads && active) {
      const uint4 raw = *reinterpret_cast<const uint4*>(q + (head0 + g) * s.d + sub_lane * kE);
      unpack<T>(raw, q_reg[g]);
    }
  }

  const std::int64_t head_offset = static_cast<std::int64_t>(kv_head) * s.stride.head;
  const std::int32_t* table = block_table + static_cast<std::int64_t>(b) * s.max_blocks;
  const int step = row_groups * kTokens;
  std::int64_t slots[kTokens];  // the row offsets of this row group's tokens in the current step
  find_slots(first, last, row_group, row_groups, s, table, num_blocks, error_word, slots);
  for (int base = first; base < last; base += step) {  // uniform across the block
    uint4 k_raw[kTokens], v_raw[kTokens];
    bool valid[kTokens];
#pragma unroll
    for (int u = 0; u < kTokens; ++u) {
      valid[u] = base + u * row_groups + row_group < last;
      k_raw[u] = make_uint4(0, 0, 0, 0);
      v_raw[u] = make_uint4(0, 0, 0, 0);
      if (slots[u] >= 0 && active) {
        const std::int64_t row = slots[u] + head_offset + sub_lane * kE;
        k_raw[u] = *reinterpret_cast<const uint4*>(k_cache + row);
        v_raw[u] = *reinterpret_cast<const uint4*>(v_cache + row);
      }
    }
    // The next step's block-table reads overlap this step's loads and math.
    find_slots(base + step, last, row_group, row_groups, s, table, num_blocks, error_word, slots);

    // Scores: partial dot products over this lane's chunk, summed over the row group.
    float score[kTokens][kGroup];
#pragma unroll
    for (int u = 0; u < kTokens; ++u) {
      float k_vals[kE];
      unpack<T>(k_raw[u], k_vals);
#pragma unroll
      for (int g = 0; g < kGroup; ++g) {
        float dot = 0.0f;
        if (g < heads) {
#pragma unroll
          for (int e = 0; e < kE; ++e) dot = fmaf(q_reg[g][e], k_vals[e], dot);
          for (int offset = s.lanes >> 1; offset > 0; offset >>= 1)
            dot += __shfl_xor_sync(0xffffffffu, dot, offset);
        }
        if constexpr (kSoftcap)
          score[u][g] = valid[u] ? s.cap.capped_log2(dot) : -INFINITY;
        else
          score[u][g] = valid[u] ? dot * scale_log2 : -INFINITY;
      }
    }

    // Online softmax per head over this step's tokens, then the weighted values.
    float v_vals[kTokens][kE];
#pragma unroll
    for (int u = 0; u < kTokens; ++u) unpack<T>(v_raw[u], v_vals[u]);
    if (!valid[0]) continue;  // this row group has no token in this step (tokens fill row groups in order)
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
      if (g >= heads) continue;
      float m_new = m[g];
#pragma unroll
      for (int u = 0; u < kTokens; ++u) m_new = fmaxf(m_new, score[u][g]);  // finite: valid[0]
      const float alpha = rescale_factor(m[g], m_new);
      float p[kTokens];
      float p_sum = 0.0f;
#pragma unroll
      for (int u = 0; u < kTokens; ++u) {
        p[u] = valid[u] ? exp2f(score[u][g] - m_new) : 0.0f;
        p_sum += p[u];
      }
      m[g] = m_new;
      l[g] = l[g] * alpha + p_sum;
#pragma unroll
      for (int e = 0; e < kE; ++e) {
        float a = acc[g][e] * alpha;
#pragma unroll
        for (int u = 0; u < kTokens; ++u) a = fmaf(p[u], v_vals[u][e], a);
        acc[g][e] = a;
      }
    }
  }

  // Merge the row groups of this block (in row-group order) into this split's partial.
  float* acc_s = shared;                           // [row_groups][heads][D]
  float* ml_s = acc_s + row_groups * heads * s.d;  // [row_groups][heads][2]
#pragma unroll
  for (int g = 0; g < kGroup; ++g) {
    if (g >= heads) continue;
    const int at = row_group * heads + g;
    if (active)
#pragma unroll
      for (int e = 0; e < kE; ++e) acc_s[at * s.d + sub_lane * kE + e] = acc[g][e];
    if (sub_lane == 0) {
      ml_s[at * 2] = m[g];
      ml_s[at * 2 + 1] = l[g];
    }
  }
  __syncthreads();
  merge_warp_partials(acc_s, ml_s, row_groups, heads, heads, s.d, head0, s.splits, split, partial_acc, partial_ml);
}

constexpr int kTile = 32;  // fallback: tokens per shared-memory tile (one per lane in the softmax step)

struct DecodeShape {
  std::int64_t hq, hkv, group, d, block_size, max_blocks, split_tokens, splits;
  std::int64_t window;  // sliding window (tokens; 0: none)
  std::int64_t chunk;   // chunked attention (tokens; 0: none)
  CacheStrides stride;  // of both caches, in elements
  float softcap;        // soft-cap of the scaled scores (0: none)
};

// Fallback: any head_dim and alignment, one element at a time; the whole query group per block. kSoftcap:
// scaled scores soft-capped by s.softcap.
template <class T, bool kSoftcap>
__global__ void __launch_bounds__(kThreads)
    decode_split_scalar(const T* q, const T* k_cache, const T* v_cache, const std::int32_t* block_table,
                        const std::int32_t* context_lens, float* partial_acc, float* partial_ml,
                        DecodeShape s, std::int64_t num_blocks, std::int64_t max_context, float scale,
                        unsigned int* error_word) {
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
  const std::int64_t begin = context > 0 ? first_attended(context - 1, s.window, s.chunk) : 0;
  const std::int64_t first = begin + split * s.split_tokens;
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
    for (std::int64_t i = threadIdx.x; i < tile_len * d; i += blockDim.x) {
      const std::int64_t t = i / d, c = i % d, token = tile + t;
      std::int64_t block = block_table[b * s.max_blocks + token / s.block_size];
      if (block < 0 || block >= num_blocks) {
        atomicOr(error_word, kBadBlockTableEntry);
        block = 0;
      }
      const std::int64_t row =
          block * s.stride.page + (token % s.block_size) * s.stride.slot + kv_head * s.stride.head + c;
      k_s[t * (d + 1) + c] = to_float(k_cache[row]);
      v_s[t * d + c] = to_float(v_cache[row]);
    }
    __syncthreads();
    for (std::int64_t i = threadIdx.x; i < g_count * kTile; i += blockDim.x) {
      const std::int64_t g = i / kTile, t = i % kTile;
      float score = -INFINITY;
      if (t < tile_len) {
        score = 0.0f;
        for (std::int64_t c = 0; c < d; ++c) score += q_s[g * d + c] * k_s[t * (d + 1) + c];
        score *= scale;
        if constexpr (kSoftcap) score = soft_capped(score, s.softcap);
      }
      p_s[i] = score;
    }
    __syncthreads();
    online_softmax_tile(p_s, m_s, l_s, alpha_s, g_count, kTile, warp, warps, lane);
    __syncthreads();
    rescale_and_accumulate(acc_s, alpha_s, p_s, v_s, g_count, d, kTile, tile_len);
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

template <class T, int kGroup, bool kSoftcap>
Status launch_fast(Context& ctx, const DecodeAttentionArgs& args, cudaStream_t stream) {
  const std::int64_t batch = args.q.dim(0), d = args.q.dim(2), hkv = args.k_cache.dim(2);
  const std::int64_t chunks_per_row = d / kChunkElems<T>;
  int lanes = 1;
  while (lanes < chunks_per_row) lanes *= 2;
  FastShape s{static_cast<int>(args.q.dim(1)),
              static_cast<int>(hkv),
              static_cast<int>(args.q.dim(1) / hkv),
              static_cast<int>(d),
              static_cast<int>(args.block_table.dim(1)),
              1,
              0,
              static_cast<int>(std::min<std::int64_t>(args.window, std::int64_t{1} << 30)),
              static_cast<int>(std::min<std::int64_t>(args.chunk, std::int64_t{1} << 30)),
              lanes,
              0,
              FastDivider(static_cast<unsigned int>(args.k_cache.dim(1))),
              cache_strides(args.k_cache),
              ScoreCap::of(args.scale, args.softcap)};
  s.head_chunks = (s.group + kGroup - 1) / kGroup;
  const std::int64_t row_groups = kWarps * (32 / lanes);
  const std::int64_t split_tokens = split_tokens_for(ctx, batch * hkv * s.head_chunks, args.max_attended(),
                                                     row_groups * kTokens, kBlocksPerSm);
  const std::int64_t splits = std::max<std::int64_t>(1, (args.max_attended() + split_tokens - 1) / split_tokens);
  s.split_tokens = static_cast<int>(split_tokens);
  s.splits = static_cast<int>(splits);

  const int block_heads = std::min(kGroup, s.group);
  const std::size_t shared_bytes =
      sizeof(float) * static_cast<std::size_t>(row_groups * block_heads * (d + 2));
  auto kernel = decode_split_fast<T, kGroup, kSoftcap>;
  if (shared_bytes > ctx.max_shared_bytes)
    return {StatusCode::kUnsupportedShape,
            "decode_attention: head_dim needs more shared memory than the device has"};
  DUPLEX_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(shared_bytes)));

  Scratch scratch(stream);
  Partials p;
  Status st = allocate_partials(scratch, batch * s.hq, splits, d, p);
  if (!st.ok()) return st;
  const dim3 grid(static_cast<unsigned int>(splits), static_cast<unsigned int>(hkv * s.head_chunks),
                  static_cast<unsigned int>(batch));
  kernel<<<grid, kThreads, shared_bytes, stream>>>(
      args.q.as<const T>(), args.k_cache.as<const T>(), args.v_cache.as<const T>(),
      args.block_table.as<const std::int32_t>(), args.context_lens.as<const std::int32_t>(), p.acc, p.ml, s,
      args.k_cache.dim(0), args.max_context_len, static_cast<float>(args.scale * kLog2e), ctx.error_word);
  DUPLEX_CUDA_LAUNCHED("decode_split_fast");
  return launch_merge<T>(args, p, batch * s.hq, splits, d, stream);
}

template <class T>
Status launch_scalar(Context& ctx, const DecodeAttentionArgs& args, cudaStream_t stream) {
  const std::int64_t batch = args.q.dim(0);
  DecodeShape s{};
  s.hq = args.q.dim(1);
  s.hkv = args.k_cache.dim(2);
  s.group = s.hq / s.hkv;
  s.d = args.q.dim(2);
  s.block_size = args.k_cache.dim(1);
  s.max_blocks = args.block_table.dim(1);
  s.stride = cache_strides(args.k_cache);
  s.window = args.window;
  s.chunk = args.chunk;
  s.softcap = args.softcap;
  s.split_tokens = split_tokens_for(ctx, batch * s.hkv, args.max_attended(), kTile, kBlocksPerSm);
  s.splits = std::max<std::int64_t>(1, (args.max_attended() + s.split_tokens - 1) / s.split_tokens);

  const std::size_t shared_bytes =
      sizeof(float) * static_cast<std::size_t>(2 * s.group * s.d + kTile * (s.d + 1) + kTile * s.d +
                                               s.group * kTile + 3 * s.group);
  if (shared_bytes > ctx.max_shared_bytes)
    return {StatusCode::kUnsupportedShape,
            "decode_attention: group x head_dim needs more shared memory than the device has"};
  auto kernel = args.softcap > 0.0f ? decode_split_scalar<T, true> : decode_split_scalar<T, false>;
  DUPLEX_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(shared_bytes)));

  Scratch scratch(stream);
  Partials p;
  Status st = allocate_partials(scratch, batch * s.hq, s.splits, s.d, p);
  if (!st.ok()) return st;
  const dim3 grid(static_cast<unsigned int>(s.splits), static_cast<unsigned int>(s.hkv),
                  static_cast<unsigned int>(batch));
  kernel<<<grid, kThreads, shared_bytes, stream>>>(
      args.q.as<const T>(), args.k_cache.as<const T>(), args.v_cache.as<const T>(),
      args.block_table.as<const std::int32_t>(), args.context_lens.as<const std::int32_t>(), p.acc, p.ml, s,
      args.k_cache.dim(0), args.max_context_len, args.scale, ctx.error_word);
  DUPLEX_CUDA_LAUNCHED("decode_split_scalar");
  return launch_merge<T>(args, p, batch * s.hq, s.splits, s.d, stream);
}

}  // namespace

Status decode_attention(Context& ctx, const DecodeAttentionArgs& args, cudaStream_t stream) {
  const std::int64_t batch = args.q.dim(0);
  if (batch == 0) return {};
  if (ctx.decode_in_registers && decode_attention_regs_applies(args)) return decode_attention_regs(ctx, args, stream);
  if (decode_attention_mma_applies(args)) return decode_attention_mma(ctx, args, stream);
  return with_storage_type(args.q.dtype, [&](auto tag) -> Status {
    using T = decltype(tag);
    const std::int64_t d = args.q.dim(2), row_bytes = d * static_cast<std::int64_t>(sizeof(T));
    const std::int64_t group = args.q.dim(1) / args.k_cache.dim(2);
    // The fast path indexes tokens with 32-bit arithmetic (FastDivider needs n < 2^31) and loads 16 bytes.
    const bool fast = row_bytes % 16 == 0 && row_bytes / 16 <= 32 && aligned16(args.q.data) &&
                      rows_aligned16(args.k_cache) && rows_aligned16(args.v_cache) &&
                      args.max_context_len < (std::int64_t{1} << 30);
    if (!fast) return launch_scalar<T>(ctx, args, stream);
    if (args.softcap > 0.0f)
      return group <= 4 ? launch_fast<T, 4, true>(ctx, args, stream)
                        : launch_fast<T, 8, true>(ctx, args, stream);
    return group <= 4 ? launch_fast<T, 4, false>(ctx, args, stream)
                      : launch_fast<T, 8, false>(ctx, args, stream);
  });
}

}  // namespace duplex::kernels::cuda
