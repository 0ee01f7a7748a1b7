#pragma once
// Pieces shared by the decode-attention kernels (cuda_decode_attention.cu: CUDA-core paths;
// cuda_decode_attention_mma.cu: tensor-core path): split sizing, the FP32 per-split partials (acc
// [heads][splits][D], (max, sum) [heads][splits][2] in natural-log units) and the kernel that merges them in
// split order (and adds the attention sinks: every decode kernel leaves them to it).
#include <algorithm>
#include <cstdint>

#include "cuda_common.cuh"

namespace duplex::kernels::cuda::decode {

constexpr int kMinSplit = 256;  // fewest tokens a split covers (keeps the merge traffic small)
constexpr double kLog2e = 1.4426950408889634;
constexpr float kLn2 = 0.693147180559945309f;

// Unsigned division by a runtime constant (a multiply-high, an add and a shift), for n < 2^31.
struct FastDivider {
  unsigned int divisor = 1, magic = 1, shift = 0;
  explicit FastDivider(unsigned int d) : divisor(d) {
    while ((1u << shift) < d) ++shift;
    const std::uint64_t one = 1;
    magic = static_cast<unsigned int>(((one << 32) * ((one << shift) - d)) / d + 1);
  }
  __device__ __forceinline__ unsigned int div(unsigned int n) const {
    return (__umulhi(n, magic) + n) >> shift;
  }
};

// A block's place in a split-KV grid (splits, kv heads x head chunks, requests) whose blocks take up to
// `heads_per_block` query heads of one kv head, and its tokens [first, last) of the request's attended tokens
// (the whole context; with a sliding window its last `window` tokens; with chunked attention those of the new
// token's chunk; with both, the tokens both allow: first_attended). A context length outside
// [0, max_context] is reported in error_word and reads as empty. `Shape` has hq, group, head_chunks,
// split_tokens, window and chunk (0: none).
struct SplitBlock {
  int split, kv_head, chunk, b;
  int heads;           // query heads of this block, 1..heads_per_block
  std::int64_t head0;  // index of its first query head in q / out ([B * Hq])
  int first, last;
};
template <class Shape>
__device__ __forceinline__ SplitBlock split_block(const Shape& s, int heads_per_block,
                                                  const std::int32_t* context_lens, std::int64_t max_context,
                                                  unsigned int* error_word) {
  SplitBlock k;
  k.split = static_cast<int>(blockIdx.x);
  k.kv_head = static_cast<int>(blockIdx.y) / s.head_chunks;
  k.chunk = static_cast<int>(blockIdx.y) % s.head_chunks;
  k.b = static_cast<int>(blockIdx.z);
  k.heads = min(heads_per_block, s.group - k.chunk * heads_per_block);
  k.head0 = static_cast<std::int64_t>(k.b) * s.hq + k.kv_head * s.group + k.chunk * heads_per_block;
  std::int64_t context = context_lens[k.b];
  if (context < 0 || context > max_context) {
    if (threadIdx.x == 0) atomicOr(error_word, kBadContextLength);
    context = 0;
  }
  const std::int64_t begin = context > 0 ? first_attended(context - 1, s.window, s.chunk) : 0;
  k.first = static_cast<int>(begin) + k.split * s.split_tokens;
  k.last = static_cast<int>(min(context, static_cast<std::int64_t>(k.first) + s.split_tokens));
  return k;
}

// One block per (request, query head): the splits' partials, rescaled to their common max, in split order.
// kSinks: head h's attention sink (sinks[h], natural-log units, as the partials' maxes) joins as one more
// partial before the splits: max S, sum 1, no output (so it is counted once however many splits there are,
// and a request with no tokens still gets out = 0). Without kSinks, sinks and hq are not read.
template <class T, bool kSinks>
__global__ void decode_merge(const float* partial_acc, const float* partial_ml, T* out, std::int64_t splits,
                             std::int64_t d, const T* sinks, std::int64_t hq) {
  const std::int64_t head = blockIdx.x;  // b * Hq + h
  const float* ml = partial_ml + head * splits * 2;
  float m = -INFINITY;
  float sink = -INFINITY;
  if constexpr (kSinks) {
    sink = to_float(sinks[head % hq]);
    m = sink;
  }
  for (std::int64_t sp = 0; sp < splits; ++sp) m = fmaxf(m, ml[sp * 2]);
  float l = 0.0f;
  if constexpr (kSinks)
    if (sink != -INFINITY) l = expf(sink - m);
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

inline bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

// Tokens per split: enough splits that a grid of `units` blocks per split has `blocks_per_sm` blocks per SM
// (several waves: a small tail), at least kMinSplit tokens each, a multiple of `granule` tokens.
inline std::int64_t split_tokens_for(const Context& ctx, std::int64_t units, std::int64_t max_context,
                                     std::int64_t granule, std::int64_t blocks_per_sm) {
  const std::int64_t wanted = std::max<std::int64_t>(1, (blocks_per_sm * ctx.sm_count + units - 1) / units);
  std::int64_t tokens = std::max<std::int64_t>(kMinSplit, (max_context + wanted - 1) / wanted);
  tokens = (tokens + granule - 1) / granule * granule;
  return tokens;
}

// Element strides of a paged cache view [pages, block_size, kv heads, D] (rows contiguous; K and V share
// them: validated).
struct CacheStrides {
  std::int64_t page = 0, slot = 0, head = 0;
};
inline CacheStrides cache_strides(const Tensor& cache) {
  return {cache.strides[0], cache.strides[1], cache.strides[2]};
}
// The element offset of `token`'s row in a paged cache view, plus `row_base` (e.g. a kv head's offset): its
// page `page` (read from the block table by the caller) times the page stride plus its slot (token % block
// size) times the slot stride. -1 for a token at or past `last`, and for a page outside [0, num_blocks)
// (set in error_word, reported by synchronize(); the caller reads that row as zeros).
__device__ __forceinline__ std::int64_t paged_row_offset(int token, int last, std::int32_t page,
                                                         std::int64_t num_blocks,
                                                         const FastDivider& block_size,
                                                         const CacheStrides& stride, std::int64_t row_base,
                                                         unsigned int* error_word) {
  if (token >= last) return -1;
  if (page < 0 || page >= num_blocks) {
    atomicOr(error_word, kBadBlockTableEntry);
    return -1;
  }
  const auto u = static_cast<unsigned int>(token);
  const unsigned int slot = u - block_size.div(u) * block_size.divisor;
  return page * stride.page + slot * stride.slot + row_base;
}

// Every row of the view starts 16-byte aligned when the base does: the strides are whole 16-byte chunks.
inline bool rows_aligned16(const Tensor& cache) {
  const auto elem = static_cast<std::int64_t>(dtype_size(cache.dtype));
  return aligned16(cache.data) && (cache.strides[0] * elem) % 16 == 0 &&
         (cache.strides[1] * elem) % 16 == 0 && (cache.strides[2] * elem) % 16 == 0;
}

// The launch shape of the tensor-core kernels (cuda_decode_attention_mma.cu, cuda_decode_attention_regs.cu).
struct MmaShape {
  int hq, hkv, group, max_blocks, splits, split_tokens, head_chunks, window;
  int chunk;  // chunked attention (tokens; 0: none)
  FastDivider block_size;
  CacheStrides stride;  // of both caches, in elements
  ScoreCap cap;         // the soft-cap (read by the kernels' capped instantiations only)
};

// Tokens per split (a multiple of tile_tokens) for a grid of `units` blocks per split on a GPU that holds
// `resident` blocks at once: the split count (1..kMaxSplits) that minimises waves x (tokens per block +
// kSplitCostTokens), i.e. the last wave's idle slots and the per-split merge cost; ties go to fewer splits.
inline std::int64_t split_tokens_by_waves(std::int64_t units, std::int64_t resident, std::int64_t max_context,
                                          std::int64_t tile_tokens) {
  constexpr std::int64_t kMaxSplits = 256, kSplitCostTokens = 128;  // two 64-token tiles
  const auto round_up = [](std::int64_t v, std::int64_t to) { return (v + to - 1) / to * to; };
  std::int64_t best_tokens = round_up(std::max<std::int64_t>(max_context, 1), tile_tokens), best_cost = -1;
  for (std::int64_t want = 1; want <= kMaxSplits; ++want) {
    const std::int64_t tokens = round_up((max_context + want - 1) / want, tile_tokens);
    if (tokens == 0) break;
    const std::int64_t splits = (max_context + tokens - 1) / tokens;
    const std::int64_t waves = (units * splits + resident - 1) / resident;
    const std::int64_t cost = waves * (tokens + kSplitCostTokens);
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      best_tokens = tokens;
    }
  }
  return best_tokens;
}

struct Partials {
  float* acc = nullptr;
  float* ml = nullptr;
};

inline Status allocate_partials(Scratch& scratch, std::int64_t heads, std::int64_t splits, std::int64_t d,
                                Partials& p) {
  const auto acc_floats = static_cast<std::size_t>(heads * splits * d);
  const auto ml_floats = static_cast<std::size_t>(heads * splits * 2);
  const Status st = scratch.allocate((acc_floats + ml_floats) * sizeof(float));
  if (!st.ok()) return st;
  p.acc = scratch.as<float>();
  p.ml = p.acc + acc_floats;
  return {};
}

// The split kernels leave the sinks to this merge (decode_merge's kSinks), so every decode kernel takes them.
template <class T>
Status launch_merge(const DecodeAttentionArgs& args, const Partials& p, std::int64_t heads,
                    std::int64_t splits, std::int64_t d, cudaStream_t stream) {
  auto kernel = args.sinks.present() ? decode_merge<T, true> : decode_merge<T, false>;
  kernel<<<static_cast<unsigned int>(heads), 128, 0, stream>>>(p.acc, p.ml, args.out.as<T>(), splits, d,
                                                               args.sinks.as<const T>(), args.q.dim(1));
  DUPLEX_CUDA_LAUNCHED("decode_merge");
  return {};
}

// Online softmax (scores in base-2 units): the factor that rescales what a row accumulated when its running
// max moves from m_old to m_new; 0 while it accumulated nothing (m_old = -inf).
__device__ __forceinline__ float rescale_factor(float m_old, float m_new) {
  return m_old == -INFINITY ? 0.0f : exp2f(m_old - m_new);
}
// One tile's step for a row: the running max m takes the tile's max (finite), the running sum l is rescaled;
// returns the factor for the accumulated output.
__device__ __forceinline__ float online_softmax_step(float& m, float& l, float tile_max) {
  const float m_new = fmaxf(m, tile_max);
  const float alpha = rescale_factor(m, m_new);
  m = m_new;
  l *= alpha;
  return alpha;
}
// exp2(s - m) of a score, 0 for a masked one (-inf).
__device__ __forceinline__ float exp2_unless_masked(float s, float m) {
  return s == -INFINITY ? 0.0f : exp2f(s - m);
}

// The last step of a split kernel, by every thread of the block: the partials of its `warps` independent
// groups (warps, or row groups of the CUDA-core kernel), stored in shared memory as acc
// [warps][heads_per_block][d] and (max in base-2 units, sum) [warps][heads_per_block][2], merged in group
// order into the block's split partial (max in natural-log units, as decode_merge reads it).
__device__ __forceinline__ void merge_warp_partials(const float* acc_s, const float* ml_s, int warps,
                                                    int heads_per_block, int heads, int d, std::int64_t head0,
                                                    int splits, int split, float* partial_acc,
                                                    float* partial_ml) {
  for (int i = static_cast<int>(threadIdx.x); i < heads * d; i += static_cast<int>(blockDim.x)) {
    const int h = i / d, c = i % d;
    float m_all = -INFINITY;
    for (int w = 0; w < warps; ++w) m_all = fmaxf(m_all, ml_s[(w * heads_per_block + h) * 2]);
    float a = 0.0f, l_all = 0.0f;
    if (m_all != -INFINITY)
      for (int w = 0; w < warps; ++w) {
        const float m_w = ml_s[(w * heads_per_block + h) * 2];
        if (m_w == -INFINITY) continue;
        const float scale_w = exp2f(m_w - m_all);
        a = fmaf(acc_s[(w * heads_per_block + h) * d + c], scale_w, a);
        l_all = fmaf(ml_s[(w * heads_per_block + h) * 2 + 1], scale_w, l_all);
      }
    const std::int64_t at = (head0 + h) * splits + split;
    partial_acc[at * d + c] = a;
    if (c == 0) {
      partial_ml[at * 2] = m_all * kLn2;
      partial_ml[at * 2 + 1] = l_all;
    }
  }
}

// Launches a tensor-core split kernel (decode_split_mma's parameters, the soft-cap in MmaShape::cap; blocks
// of `threads` threads with `shared_bytes` of dynamic shared memory, each up to `heads_per_block` query heads
// of one kv head) on a grid whose split count fills whole waves of the blocks the GPU holds at once
// (split_tokens_by_waves, splits a multiple of tile_tokens), then the merge.
template <class T, class Kernel>
Status launch_split_kernel(Context& ctx, const DecodeAttentionArgs& args, cudaStream_t stream, Kernel kernel,
                           int threads, std::size_t shared_bytes, int heads_per_block,
                           std::int64_t tile_tokens, const char* name) {
  const std::int64_t batch = args.q.dim(0), hkv = args.k_cache.dim(2), d = args.q.dim(2);
  MmaShape s{static_cast<int>(args.q.dim(1)),
             static_cast<int>(hkv),
             static_cast<int>(args.q.dim(1) / hkv),
             static_cast<int>(args.block_table.dim(1)),
             1,
             0,
             0,
             static_cast<int>(std::min<std::int64_t>(args.window, std::int64_t{1} << 30)),
             static_cast<int>(std::min<std::int64_t>(args.chunk, std::int64_t{1} << 30)),
             FastDivider(static_cast<unsigned int>(args.k_cache.dim(1))),
             cache_strides(args.k_cache),
             ScoreCap::of(args.scale, args.softcap)};
  s.head_chunks = (s.group + heads_per_block - 1) / heads_per_block;
  int resident_per_sm = 0;
  DUPLEX_CUDA_TRY(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident_per_sm, kernel, threads, shared_bytes));
  const std::int64_t split_tokens = split_tokens_by_waves(
      batch * hkv * s.head_chunks, std::max(1, resident_per_sm) * std::int64_t{ctx.sm_count},
      args.max_attended(), tile_tokens);
  const std::int64_t splits =
      std::max<std::int64_t>(1, (args.max_attended() + split_tokens - 1) / split_tokens);
  s.split_tokens = static_cast<int>(split_tokens);
  s.splits = static_cast<int>(splits);

  Scratch scratch(stream);
  Partials p;
  if (Status st = allocate_partials(scratch, batch * s.hq, splits, d, p); !st.ok()) return st;
  const dim3 grid(static_cast<unsigned int>(splits), static_cast<unsigned int>(hkv * s.head_chunks),
                  static_cast<unsigned int>(batch));
  kernel<<<grid, threads, shared_bytes, stream>>>(
      args.q.as<const T>(), args.k_cache.as<const T>(), args.v_cache.as<const T>(),
      args.block_table.as<const std::int32_t>(), args.context_lens.as<const std::int32_t>(), p.acc, p.ml, s,
      args.k_cache.dim(0), args.max_context_len, static_cast<float>(args.scale * kLog2e), ctx.error_word);
  DUPLEX_CUDA_LAUNCHED(name);
  return launch_merge<T>(args, p, batch * s.hq, splits, d, stream);
}

}  // namespace duplex::kernels::cuda::decode

namespace duplex::kernels::cuda {
// The tensor-core path (cuda_decode_attention_mma.cu): FP16 / BF16, head_dim 32, 64 or 128, 16-byte aligned
// tensors and cache rows (base and strides), contexts below 2^30 tokens (32-bit token arithmetic).
bool decode_attention_mma_applies(const DecodeAttentionArgs& args);
Status decode_attention_mma(Context& ctx, const DecodeAttentionArgs& args, cudaStream_t stream);
// The register-direct tensor-core kernel (cuda_decode_attention_regs.cu; CudaOptions::decode_attention):
// the tensor-core path's conditions and head_dim 128; its first compiled shape.
bool decode_attention_regs_applies(const DecodeAttentionArgs& args);
Status decode_attention_regs(Context& ctx, const DecodeAttentionArgs& args, cudaStream_t stream);
}  // namespace duplex::kernels::cuda
