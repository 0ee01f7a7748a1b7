// Decode attention over a paged KV cache on tensor cores, with K and V loaded straight into the MMA operand
// registers (no shared-memory ring): FP16 / BF16 caches, head_dim 128. A candidate for decode_attention's
// tensor-core path, measured by bench/kernels/decode_tune_bench against cuda_decode_attention_mma.cu, whose
// shared-memory copy pipeline alone stays below what plain 16-byte loads of the same rows reach on an H200
// (bench/kernels/README.md).
//
// Grid (splits, kv heads x head chunks, requests), as the shared-memory kernel, but a block covers up to 8
// query heads of a kv head's group (the MMAs' N), and each warp walks its own 16-token tiles of the split
// (tiles warp, warp + warps, ...) with no barrier until the end. Per tile, with the roles of the usual
// formulation swapped so that the heads are N and the 16 tokens are M (Q.K^T) or K (P.V):
//   S^T [16 tokens x 8 heads] = K . Q^T    (m16n8k16: 8 MMAs over head_dim, A = K rows, B = Q)
//   online softmax per head over the tile's tokens (FP32, base-2 units: the scale carries log2(e); a kSoftcap
//   instantiation soft-caps: cap * tanh(s / cap) of the true scaled score s, then log2(e): ScoreCap)
//   O^T [128 x 8 heads] += V^T . P^T       (8 m-tiles of head_dim; P high and low parts: 16 MMAs)
// Half the MMAs of the 16-head formulation for groups of up to 8 heads.
//
// Loads: every thread issues 16 loads of 16 bytes per tile (8 of K, 8 of V) into registers, in the fragment
// layouts, so that no data moves between lanes:
//  - K: the reduction over head_dim may visit it in any order as long as Q is permuted alike. Lane (g, t)
//    loads 16-byte chunks 4i + t (i = 0..3) of the rows of tokens g and g + 8; MMA step ks reads logical
//    columns 16 ks + 8 h + 2t + e (h, e in {0, 1}) from physical element 32 (ks / 2) + 8t + 4 (ks % 2) + 2h +
//    e (regs_layout::qk_element, cuda_decode_regs_layout.hpp). Q is loaded the same way (head g) once per
//    block and kept in shared memory in fragment order (read back per tile), which leaves the registers to
//    loads in flight.
//  - V: lane (g, t) loads chunks g and g + 8 of the rows of tokens 2t, 2t + 1, 2t + 8, 2t + 9 and pairs the
//    tokens' 16-bit halves by position (byte permutes) into A registers; the output rows (head_dim) come out
//    in the order regs_layout::pv_element gives, which the partial's store undoes.
//  - P: S^T's accumulators hold (token, head) pairs where P.V's B operand wants (head, token) pairs: one
//    8 x 8 transpose (movmatrix) per 8 tokens.
// Rows past the context or behind a bad block-table entry (reported in error_word) are not read: their K and
// V registers are zeros and their scores -inf. A tile's page numbers are read one load ahead (lane i, token i
// of the tile). The pipeline shape (cuda_decode_tuning.hpp, RegsPipeline): warps per block, the minimum
// blocks per SM the registers are capped for, and when a warp issues its next tile's loads (after computing
// the current one; its K after the current Q.K^T and its V after the current P.V; or before computing the
// current one, into a second tile of registers). Soft-capped instantiations exist for the first shape only
// (the one decode_attention uses); the others refuse a capped call (kUnsupportedShape).
//
// Status: compiled (sm_90) and its fragment scheme checked by emulating a warp on the CPU, but not yet run on
// a GPU. decode_attention uses it only with CudaOptions::decode_attention = kRegisters; scripts/gpu_check.sh
// runs the decode-attention conformance tests on it and decode_tune_bench times its shapes.
//
// The warps' partials are merged in warp order into one FP32 partial per split, and decode::decode_merge
// merges the splits in split order: results are deterministic. Attention sinks join in that merge (one more
// partial per row), so every pipeline shape takes them.
#include <array>
#include <cstdint>
#include <span>
#include <tuple>
#include <utility>

#include "cuda_decode_common.cuh"
#include "cuda_decode_regs_layout.hpp"
#include "cuda_decode_tuning.hpp"
#include "cuda_mma.cuh"

namespace duplex::kernels::cuda {
namespace {

using namespace decode;

using regs_layout::k_chunk;
using regs_layout::k_token;
using regs_layout::kD;
using regs_layout::kTileTokens;
using regs_layout::pv_element;
using regs_layout::v_chunk;
using regs_layout::v_token;
constexpr int kHeadsPerBlock = regs_layout::kHeads;
constexpr unsigned int kFullMask = 0xffffffffu;

template <int kWarpsArg, int kMinBlocksArg, RegsIssue kIssueArg>
struct Shape {
  static constexpr int kWarps = kWarpsArg;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kMinBlocks = kMinBlocksArg;
  static constexpr RegsIssue kIssue = kIssueArg;
};


__device__ __forceinline__ std::uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// One warp's tile in registers (lane (g, t)): K rows of tokens g, g + 8, chunks 4i + t; V rows of tokens 2t,
// 2t + 1, 2t + 8, 2t + 9, chunks g, g + 8.
struct Tile {
  uint4 k[2][4];
  uint4 v[4][2];
};

template <class T, class P, bool kSoftcap>
__global__ void __launch_bounds__(P::kThreads, P::kMinBlocks)
    decode_split_regs(const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
                      const std::int32_t* __restrict__ block_table, const std::int32_t* __restrict__ context_lens,
                      float* __restrict__ partial_acc, float* __restrict__ partial_ml, MmaShape s,
                      std::int64_t num_blocks, std::int64_t max_context, float scale_log2, unsigned int* error_word) {
  constexpr int kWarps = P::kWarps;
  static_assert(sizeof(T) == 2, "16-bit types");
  __shared__ float acc_s[kWarps][kHeadsPerBlock][kD];  // the warps' partials, merged at the end
  __shared__ float ml_s[kWarps][kHeadsPerBlock][2];
  __shared__ uint4 q_s[4][32];  // Q in fragment order (every warp's the same)

  const SplitBlock blk = split_block(s, kHeadsPerBlock, context_lens, max_context, error_word);
  const int split = blk.split, kv_head = blk.kv_head, b = blk.b, heads = blk.heads;  // heads: 1..8
  const std::int64_t head0 = blk.head0;
  const int first = blk.first, last = blk.last;
  const int tiles = last > first ? (last - first + kTileTokens - 1) / kTileTokens : 0;

  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int g = lane >> 2, t = lane & 3;

  // Q as the B operand of S^T = K . Q^T: head g, chunks 4i + t (qk_element's order; zeros past the group),
  // in shared memory in fragment order (lane `lane` reads q_s[i][lane]: no bank conflicts), which keeps the
  // registers for loads in flight.
  if (warp == 0)
#pragma unroll
    for (int i = 0; i < 4; ++i)
      q_s[i][lane] =
          g < heads ? reinterpret_cast<const uint4*>(q + (head0 + g) * kD)[k_chunk(i, t)] : make_uint4(0, 0, 0, 0);
  __syncthreads();

  const std::int64_t head_offset = static_cast<std::int64_t>(kv_head) * s.stride.head;
  const std::int32_t* table = block_table + static_cast<std::int64_t>(b) * s.max_blocks;
  const int row = lane & 15;  // the tile token whose page and row offset this lane finds
  auto page_of = [&](int tile) -> std::int32_t {
    const int token = first + tile * kTileTokens + row;
    return token < last ? table[s.block_size.div(static_cast<unsigned int>(token))] : 0;
  };
  // Element offset of the row of this lane's token of `tile` in the caches, or -1 (past the context, or a bad
  // table entry: reported, read as zeros).
  auto row_offset = [&](int tile, std::int32_t page) {
    return paged_row_offset(first + tile * kTileTokens + row, last, page, num_blocks, s.block_size, s.stride,
                            head_offset, error_word);
  };
  // Chunk c of a row, or zeros without a row (row_pointer: null for offset -1). Through the read-only
  // (non-coherent) path, as kv_read_bench's loads, whose bandwidth is the target.
  auto row_pointer = [](const T* cache, std::int64_t offset) {
    return offset >= 0 ? reinterpret_cast<const uint4*>(cache + offset) : nullptr;
  };
  auto load16 = [](const uint4* row_chunks, int c) {
    return row_chunks != nullptr ? __ldg(row_chunks + c) : make_uint4(0, 0, 0, 0);
  };

  // A tile's loads: row_offsets finds the rows of this lane's token (and reads the page numbers of the warp's
  // next tile, off the critical path), load_k and load_v issue the 16-byte loads.
  std::int32_t page = page_of(warp);
  auto row_offsets = [&](int tile) {
    const std::int64_t off = row_offset(tile, page);
    page = page_of(tile + kWarps);
    return off;
  };
  auto load_k = [&](Tile& x, std::int64_t off) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const uint4* k = row_pointer(k_cache, __shfl_sync(kFullMask, off, k_token(g, r)));
#pragma unroll
      for (int i = 0; i < 4; ++i) x.k[r][i] = load16(k, k_chunk(i, t));
    }
  };
  auto load_v = [&](Tile& x, std::int64_t off) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint4* v = row_pointer(v_cache, __shfl_sync(kFullMask, off, v_token(t, j)));
      x.v[j][0] = load16(v, v_chunk(g, 0));
      x.v[j][1] = load16(v, v_chunk(g, 1));
    }
  };

  float o[8][4];  // O^T: m-tile mt, rows pv_element(mt, g, 0 / 1), heads 2t, 2t + 1
#pragma unroll
  for (int mt = 0; mt < 8; ++mt) o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY};  // running max of heads 2t and 2t + 1 (base-2 units)
  float l[2] = {0.0f, 0.0f};            // this lane's share of their running sums

  // S^T of the tile in x: (token g, heads 2t, 2t + 1), (token g + 8, heads 2t, 2t + 1); Q from shared memory.
  auto scores = [&](const Tile& x, float (&sc)[4]) {
    sc[0] = sc[1] = sc[2] = sc[3] = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint4 qc = q_s[i][lane];
#pragma unroll
      for (int h2 = 0; h2 < 2; ++h2) {  // k16 step ks = 2i + h2
        const int j = 2 * h2;
        const std::uint32_t a[4] = {word(x.k[0][i], j), word(x.k[1][i], j), word(x.k[0][i], j + 1),
                                    word(x.k[1][i], j + 1)};
        Mma<T>::run(sc, a, word(qc, j), word(qc, j + 1));
      }
    }
  };
  // The online softmax over the tile's scores, then O^T += V^T . P^T.
  auto accumulate = [&](int tile, const Tile& x, float (&sc)[4]) {
    const int base = first + tile * kTileTokens;
    const bool lo_valid = base + k_token(g, 0) < last, hi_valid = base + k_token(g, 1) < last;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if constexpr (kSoftcap)
        sc[i] = (i < 2 ? lo_valid : hi_valid) ? s.cap.capped_log2(sc[i]) : -INFINITY;
      else
        sc[i] = (i < 2 ? lo_valid : hi_valid) ? sc[i] * scale_log2 : -INFINITY;
    }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = fmaxf(sc[r], sc[r + 2]);
      mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 4));
      mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 8));
      mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 16));
      alpha[r] = online_softmax_step(m[r], l[r], mx);  // mx finite: the tile's first token is valid
    }
    float p[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      p[i] = exp2_unless_masked(sc[i], m[i & 1]);
      l[i & 1] += p[i];
    }
#pragma unroll
    for (int mt = 0; mt < 8; ++mt) {
      o[mt][0] *= alpha[0];
      o[mt][1] *= alpha[1];
      o[mt][2] *= alpha[0];
      o[mt][3] *= alpha[1];
    }
    // P as the B operand (k = tokens 2t.., 2t + 8..; n = head g), high and low parts: pack (token, head)
    // pairs, then transpose each 8 x 8 block.
    std::uint32_t b_hi[2], b_lo[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      std::uint32_t hi, lo;
      Mma<T>::split(p[2 * r], p[2 * r + 1], hi, lo);
      b_hi[r] = transpose8x8(hi);
      b_lo[r] = transpose8x8(lo);
    }
    // O^T += V^T . P^T: m-tile mt takes 16-bit position mt % 4 of chunk mt / 4 of the four tokens' rows.
#pragma unroll
    for (int mt = 0; mt < 8; ++mt) {
      const int c = mt / 4, w = mt % 4;
      const std::uint32_t v0 = word(x.v[0][c], w), v1 = word(x.v[1][c], w);
      const std::uint32_t v8 = word(x.v[2][c], w), v9 = word(x.v[3][c], w);
      const std::uint32_t a[4] = {pair_low_halves(v0, v1), pair_high_halves(v0, v1), pair_low_halves(v8, v9),
                                  pair_high_halves(v8, v9)};
      Mma<T>::run(o[mt], a, b_hi[0], b_hi[1]);
      Mma<T>::run(o[mt], a, b_lo[0], b_lo[1]);
    }
  };

  // The tile loop (tile < tiles: its first token is valid), by when the loads are issued.
  float sc[4];
  if constexpr (P::kIssue == RegsIssue::kAfter) {
    Tile x;
    for (int tile = warp; tile < tiles; tile += kWarps) {
      const std::int64_t off = row_offsets(tile);
      load_k(x, off);
      load_v(x, off);
      scores(x, sc);
      accumulate(tile, x, sc);
    }
  } else if constexpr (P::kIssue == RegsIssue::kInterleaved) {
    Tile x;
    std::int64_t off = row_offsets(warp);
    load_k(x, off);
    load_v(x, off);
    for (int tile = warp; tile < tiles; tile += kWarps) {
      scores(x, sc);
      off = row_offsets(tile + kWarps);
      load_k(x, off);  // the next tile's K, in flight during this tile's softmax and P.V
      accumulate(tile, x, sc);
      load_v(x, off);  // the next tile's V, in flight during its Q.K^T
    }
  } else {
    Tile cur, next;
    std::int64_t off = row_offsets(warp);
    load_k(cur, off);
    load_v(cur, off);
    for (int tile = warp; tile < tiles; tile += 2 * kWarps) {
      off = row_offsets(tile + kWarps);
      load_k(next, off);
      load_v(next, off);
      scores(cur, sc);
      accumulate(tile, cur, sc);
      if (tile + kWarps >= tiles) break;  // warp-uniform
      off = row_offsets(tile + 2 * kWarps);
      load_k(cur, off);
      load_v(cur, off);
      scores(next, sc);
      accumulate(tile + kWarps, next, sc);
    }
  }

  // This warp's partial: sums over the 8 lanes of a head, then to shared memory in head_dim order.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(kFullMask, l[r], 4);
    l[r] += __shfl_xor_sync(kFullMask, l[r], 8);
    l[r] += __shfl_xor_sync(kFullMask, l[r], 16);
  }
#pragma unroll
  for (int mt = 0; mt < 8; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc_s[warp][2 * t + (e & 1)][pv_element(mt, g, e >> 1)] = o[mt][e];
  if (g == 0)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      ml_s[warp][2 * t + r][0] = m[r];
      ml_s[warp][2 * t + r][1] = l[r];
    }
  __syncthreads();

  merge_warp_partials(&acc_s[0][0][0], &ml_s[0][0][0], kWarps, kHeadsPerBlock, heads, kD, head0, s.splits, split,
                      partial_acc, partial_ml);
}

template <class T, class P, bool kSoftcap = false>
Status launch(Context& ctx, const DecodeAttentionArgs& args, cudaStream_t stream) {
  return launch_split_kernel<T>(ctx, args, stream, decode_split_regs<T, P, kSoftcap>, P::kThreads, 0,
                                kHeadsPerBlock, std::int64_t{kTileTokens} * P::kWarps, "decode_split_regs");
}

// The shapes compiled, in kRegsPipelines order. Not yet measured on a GPU (bench/kernels/README.md).
constexpr RegsIssue kAfter = RegsIssue::kAfter, kInterleaved = RegsIssue::kInterleaved, kAhead = RegsIssue::kAhead;
using RegsShapes = std::tuple<Shape<4, 3, kInterleaved>, Shape<4, 4, kInterleaved>, Shape<8, 2, kInterleaved>,
                              Shape<4, 3, kAfter>, Shape<4, 4, kAfter>, Shape<4, 2, kAhead>>;
template <class P>
constexpr RegsPipeline pipeline_of() {
  return {P::kWarps, P::kMinBlocks, P::kIssue};
}
template <std::size_t... I>
constexpr std::array<RegsPipeline, sizeof...(I)> pipelines_of(std::index_sequence<I...>) {
  return {pipeline_of<std::tuple_element_t<I, RegsShapes>>()...};
}
constexpr auto kIndices = std::make_index_sequence<std::tuple_size_v<RegsShapes>>{};
constexpr auto kRegsPipelines = pipelines_of(kIndices);

template <class P>
constexpr bool same_pipeline(const RegsPipeline& p) {
  constexpr RegsPipeline q = pipeline_of<P>();
  return p.warps == q.warps && p.min_blocks == q.min_blocks && p.issue == q.issue;
}

// Launches the compiled shape equal to `p`; false when there is none.
template <class T, std::size_t... I>
bool launch_shape(Context& ctx, const DecodeAttentionArgs& args, cudaStream_t stream, const RegsPipeline& p,
                  Status& st, std::index_sequence<I...>) {
  return ((same_pipeline<std::tuple_element_t<I, RegsShapes>>(p) &&
           (st = launch<T, std::tuple_element_t<I, RegsShapes>>(ctx, args, stream), true)) ||
          ...);
}

}  // namespace

std::span<const RegsPipeline> regs_pipelines() {
  return kRegsPipelines;
}

bool decode_attention_regs_applies(const DecodeAttentionArgs& args) {
  return decode_attention_mma_applies(args) && args.q.dim(2) == kD;
}

Status decode_attention_regs(Context& ctx, const DecodeAttentionArgs& args, cudaStream_t stream) {
  return decode_attention_regs(ctx, args, stream, kRegsPipelines.front());
}

Status decode_attention_regs(Context& ctx, const DecodeAttentionArgs& args, cudaStream_t stream,
                             const RegsPipeline& pipeline) {
  if (!decode_attention_regs_applies(args))
    return {StatusCode::kUnsupportedShape,
            "decode_attention_regs: compiled for FP16 / BF16 head_dim 128 with 16-byte aligned rows"};
  if (args.softcap > 0.0f) {  // capped instantiations: the first shape only
    using First = std::tuple_element_t<0, RegsShapes>;
    if (!same_pipeline<First>(pipeline))
      return {StatusCode::kUnsupportedShape,
              "decode_attention_regs: soft-capping is compiled for the first pipeline shape only"};
    return args.q.dtype == DType::kF16 ? launch<__half, First, true>(ctx, args, stream)
                                       : launch<__nv_bfloat16, First, true>(ctx, args, stream);
  }
  Status st;
  const bool found = args.q.dtype == DType::kF16 ? launch_shape<__half>(ctx, args, stream, pipeline, st, kIndices)
                                                 : launch_shape<__nv_bfloat16>(ctx, args, stream, pipeline, st, kIndices);
  if (!found) return {StatusCode::kInvalidArgument, "decode_attention_regs: that pipeline shape is not compiled"};
  return st;
}

}  // namespace duplex::kernels::cuda
