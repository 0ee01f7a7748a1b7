// Decode attention over a paged KV cache on tensor cores (sm_80+ mma.sync), for FP16 / BF16 caches whose
// head_dim is a multiple of 16 and at most kMaxHeadDim.
//
// Grid (splits, kv heads x head chunks, requests); a block of P::warps warps covers one split of one kv
// head's tokens for up to 16 query heads of its group (the M dimension of the MMAs; a group of G < 16 leaves
// 16 - G rows idle, which costs tensor-core cycles the memory-bound op has to spare). The block streams tiles
// of 16 x P::warps tokens' K and V rows into shared memory with cp.async (a ring of P::stages tiles, rows of
// pages gathered through the block table; rows past the context or behind a bad table entry are zero-filled),
// and each warp takes 16 tokens of every tile:
//   S [16 heads x 16 tokens] = Q . K^T     (m16n8k16, K rows read by ldmatrix as the col-major B operand)
//   online softmax per head over S (FP32, base-2 units: the scale carries log2(e); soft-capped, a kSoftcap
//   instantiation: cap * tanh(s / cap) of the true scaled score s, times log2(e) after the tanh: ScoreCap)
//   O [16 heads x D] += P . V              (P from S's accumulator registers; V by ldmatrix.trans)
// P is split into P_hi = round(P) and P_lo = round(P - P_hi) in the storage type, and both are multiplied
// into O, so the probabilities keep ~2x the storage type's precision (BF16 alone would lose 8 bits).
// The warps' partials are merged in warp order into one FP32 partial per split, and decode::decode_merge
// merges the splits in split order: results are deterministic. Attention sinks join in that merge (one more
// partial per row), so every pipeline shape takes them.
//
// The pipeline shape P (cuda_decode_tuning.hpp) sets warps, ring stages and when a tile's copies are issued:
// after the wait for the tile being computed (stages - 1 tiles in flight while a warp waits), or, with
// early_issue, before it (stages tiles in flight; one more barrier per tile); optionally an L2 prefetch of
// later tiles, TMA bulk row copies on mbarriers instead of cp.async (both sm_90), or a diagnostic probe
// (copies only / compute only). decode_attention uses DefaultPipeline; decode_tune_bench measures the others
// (bench/kernels/README.md: on an H200 none was faster, and bandwidth followed warps per SM, not bytes in
// flight). Soft-capped instantiations exist for DefaultPipeline only (head_dim 32, 64, 128): the other shapes
// refuse a capped call (kUnsupportedShape), which decode_attention never makes.
//
// MMA fragment layouts: cuda_mma.cuh.
#include <array>
#include <cstdint>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cuda_decode_common.cuh"
#include "cuda_mma.cuh"
#include "cuda_decode_tuning.hpp"

namespace duplex::kernels::cuda {
namespace {

using namespace decode;

// A pipeline shape as template arguments (see MmaPipeline).
template <int kWarpsArg, int kStagesArg, bool kEarlyIssueArg, int kPrefetchArg = 0, bool kBulkArg = false,
          MmaProbe kProbeArg = MmaProbe::kNone>
struct Pipeline {
  static constexpr int kWarps = kWarpsArg;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kTileTokens = 16 * kWarps;  // tokens per pipeline stage: 16 per warp
  static constexpr int kStages = kStagesArg;
  static constexpr bool kEarlyIssue = kEarlyIssueArg;
  static constexpr int kPrefetch = kPrefetchArg;  // tiles prefetched into L2 ahead of the copies
  static constexpr bool kBulk = kBulkArg;
  static constexpr MmaProbe kProbe = kProbeArg;
  static_assert(kWarps >= 1 && kStages >= 2, "a pipeline of at least two stages");
  static_assert(!(kBulk && kProbe == MmaProbe::kComputeOnly), "the compute-only probe is a cp.async shape");
};
using DefaultPipeline = Pipeline<4, 3, false>;

constexpr int kHeadsPerBlock = 16;  // the MMA's M
constexpr int kRowPad = 8;          // elements of padding per shared row: conflict-free ldmatrix

__device__ __forceinline__ unsigned int shared_address(const void* p) {
  return static_cast<unsigned int>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; src_bytes 0 fills the 16 bytes with zeros.
__device__ __forceinline__ void copy16_async(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void commit_copies() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int kPending>
__device__ __forceinline__ void wait_copies() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row)));
}

// Bulk copies (sm_90 TMA, no tensor map) completing on a shared-memory mbarrier. mbarrier_wait spins until
// the barrier's phase with the given parity has completed. sm_90 only (the bulk shapes' kernels trap below it).
#if __CUDA_ARCH__ >= 900 || !defined(__CUDA_ARCH__)
__device__ __forceinline__ void mbarrier_init(std::uint64_t* bar, unsigned int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_address(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbarrier_arrive_expect(std::uint64_t* bar, unsigned int bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(shared_address(bar)), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbarrier_arrive(std::uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(shared_address(bar)) : "memory");
}
__device__ __forceinline__ void mbarrier_wait(std::uint64_t* bar, unsigned int parity) {
  unsigned int done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(shared_address(bar)), "r"(parity)
        : "memory");
  } while (done == 0);
}
// Asks L2 to fetch `bytes` (a multiple of 16) at src; no register or shared memory waits for it.
__device__ __forceinline__ void prefetch_l2(const void* src, unsigned int bytes) {
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(src), "r"(bytes) : "memory");
}
// Orders this thread's earlier shared-memory accesses before its later bulk copies (async proxy).
__device__ __forceinline__ void fence_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, unsigned int bytes, std::uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
          shared_address(dst)),
      "l"(src), "r"(bytes), "r"(shared_address(bar))
      : "memory");
}
#endif

// Shared memory: kStages x {K tile, V tile} of [kTileTokens][D + kRowPad] elements; after the loop the same
// bytes hold the warps' partials: [kWarps][16][D] accumulators, then [kWarps][16][2] (max, sum).
template <class P, int kD>
constexpr std::size_t shared_bytes_for(std::size_t elem) {
  const std::size_t pipeline =
      static_cast<std::size_t>(P::kStages) * 2 * P::kTileTokens * (kD + kRowPad) * elem;
  const std::size_t partials = sizeof(float) * static_cast<std::size_t>(P::kWarps) * kHeadsPerBlock * (kD + 2);
  return pipeline > partials ? pipeline : partials;
}

template <class T, int kD, class P, bool kSoftcap>
__global__ void __launch_bounds__(P::kThreads)
    decode_split_mma(const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
                     const std::int32_t* __restrict__ block_table,
                     const std::int32_t* __restrict__ context_lens, float* __restrict__ partial_acc,
                     float* __restrict__ partial_ml, MmaShape s, std::int64_t num_blocks,
                     std::int64_t max_context, float scale_log2, unsigned int* error_word) {
  constexpr int kWarps = P::kWarps, kThreads = P::kThreads, kTileTokens = P::kTileTokens, kStages = P::kStages;
  constexpr int kPitch = kD + kRowPad;  // elements per shared row
  constexpr int kChunks = kD * 2 / 16;  // 16-byte chunks per row
  constexpr int kKSteps = kD / 16;      // k16 steps of Q . K^T
  constexpr int kNTiles = kD / 8;       // n8 tiles of O
  constexpr int kStageElems = 2 * kTileTokens * kPitch;
  static_assert(sizeof(T) == 2 && kD % 16 == 0, "16-bit types, head_dim a multiple of 16");
  extern __shared__ __align__(16) unsigned char shared_raw[];
  T* stages = reinterpret_cast<T*>(shared_raw);

  const SplitBlock blk = split_block(s, kHeadsPerBlock, context_lens, max_context, error_word);
  const int split = blk.split, kv_head = blk.kv_head, b = blk.b, heads = blk.heads;  // heads: 1..16
  const std::int64_t head0 = blk.head0;
  const int first = blk.first, last = blk.last;
  const int tiles = last > first ? (last - first + kTileTokens - 1) / kTileTokens : 0;

  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int g = lane >> 2, t = lane & 3;

  // Q as the A operand: rows g and g + 8 (query heads), columns 2t.., 2t + 8.. of each k16 step.
  std::uint32_t qa[kKSteps][4];
  {
    const std::uint32_t* q32 = reinterpret_cast<const std::uint32_t*>(q);
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int row = g + (r & 1) * 8, col = ks * 16 + (r >> 1) * 8 + 2 * t;
        qa[ks][r] = row < heads ? q32[((head0 + row) * kD + col) / 2] : 0u;
      }
  }

  const std::int64_t head_offset = static_cast<std::int64_t>(kv_head) * s.stride.head;
  const std::int32_t* table = block_table + static_cast<std::int64_t>(b) * s.max_blocks;

  // Copies of tile `tile` into its stage: kTileTokens rows of K and of V. In two halves, so that the
  // block-table reads are off the critical path: fetch_pages issues the reads of a tile's pages (nothing uses
  // them until issue_copies, an iteration later: the warp does not wait for them), issue_copies checks them
  // and issues the copies. cp.async: 16 bytes a thread a copy, kCopies chunks a thread. Bulk: thread i <
  // kTileTokens copies token i's K and V rows, one bulk copy each, completing on the stage's mbarrier; a row
  // with nothing to copy is zeroed by the thread.
  constexpr int kCopies = P::kBulk ? 1 : kTileTokens * kChunks / kThreads;
  static_assert(P::kBulk || kTileTokens * kChunks % kThreads == 0, "whole copies per thread");
  static_assert(!P::kBulk || kThreads >= kTileTokens, "a thread per row");
  __shared__ __align__(8) std::uint64_t full[P::kBulk ? kStages : 1];  // bulk: a tile's rows have landed
  if constexpr (P::kBulk) {
#if __CUDA_ARCH__ >= 900
    if (threadIdx.x < kStages) mbarrier_init(&full[threadIdx.x], kTileTokens);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    __syncthreads();
#endif
  }
  auto row_token = [&](int tile) {  // the token of row threadIdx.x of a tile (bulk copies, L2 prefetch)
    return first + tile * kTileTokens + static_cast<int>(threadIdx.x);
  };
  auto token_of = [&](int tile, int j) {
    if constexpr (P::kBulk) return row_token(tile);
    return first + tile * kTileTokens + (static_cast<int>(threadIdx.x) + j * kThreads) / kChunks;
  };
  auto fetch_pages = [&](int tile, std::int32_t(&pages)[kCopies]) {
#pragma unroll
    for (int j = 0; j < kCopies; ++j) {
      const int token = token_of(tile, j);
      pages[j] = token < last ? table[s.block_size.div(static_cast<unsigned int>(token))] : 0;
    }
  };
  // Element offset of token's row (plus chunk * 8) in the caches, or -1 (no row: past the context, or a bad
  // table entry, reported through error_word and read as zeros).
  auto source_of = [&](int token, std::int32_t page, int chunk) -> std::int64_t {
    const std::int64_t row =
        paged_row_offset(token, last, page, num_blocks, s.block_size, s.stride, head_offset, error_word);
    return row < 0 ? -1 : row + chunk * 8;
  };
  auto issue_copies = [&](int tile, const std::int32_t(&pages)[kCopies]) {
    if constexpr (P::kProbe == MmaProbe::kComputeOnly) return;
    T* k_s = stages + (tile % kStages) * kStageElems;
    T* v_s = k_s + kTileTokens * kPitch;
    if constexpr (P::kBulk) {
#if __CUDA_ARCH__ >= 900
      const int row = static_cast<int>(threadIdx.x);
      if (row >= kTileTokens) return;
      std::uint64_t* bar = &full[tile % kStages];
      const std::int64_t src = source_of(token_of(tile, 0), pages[0], 0);
      fence_async_shared();  // this thread's earlier zeroing of these rows precedes the copies into them
      if (src >= 0) {
        constexpr unsigned int kRowBytes = kD * sizeof(T);
        mbarrier_arrive_expect(bar, 2 * kRowBytes);
        bulk_copy(k_s + row * kPitch, k_cache + src, kRowBytes, bar);
        bulk_copy(v_s + row * kPitch, v_cache + src, kRowBytes, bar);
      } else {
#pragma unroll
        for (int c = 0; c < kChunks; ++c) {
          *reinterpret_cast<uint4*>(k_s + row * kPitch + c * 8) = make_uint4(0, 0, 0, 0);
          *reinterpret_cast<uint4*>(v_s + row * kPitch + c * 8) = make_uint4(0, 0, 0, 0);
        }
        mbarrier_arrive(bar);
      }
#else
      __trap();  // bulk shapes are sm_90 only
#endif
    } else {
#pragma unroll
      for (int j = 0; j < kCopies; ++j) {
        const int c = static_cast<int>(threadIdx.x) + j * kThreads;
        const std::int64_t src = source_of(token_of(tile, j), pages[j], c % kChunks);
        const int at = (c / kChunks) * kPitch + (c % kChunks) * 8;
        copy16_async(k_s + at, src >= 0 ? k_cache + src : k_cache, src >= 0 ? 16 : 0);
        copy16_async(v_s + at, src >= 0 ? v_cache + src : v_cache, src >= 0 ? 16 : 0);
      }
    }
  };
  // L2 prefetch (P::kPrefetch > 0): thread i < kTileTokens asks L2 for token i's K and V rows of the tile
  // kPrefetch tiles after the one whose copies it issues, so those copies hit L2: bytes in flight beyond what
  // shared memory holds. The page is read an iteration ahead (pf_page), as for the copies.
  std::int32_t pf_page = -1;
  auto fetch_pf_page = [&](int tile) {
    const int token = row_token(tile);
    pf_page = threadIdx.x < kTileTokens && token < last ? table[s.block_size.div(static_cast<unsigned int>(token))]
                                                        : -1;
  };
  auto prefetch = [&](int tile) {
#if __CUDA_ARCH__ >= 900
    if (threadIdx.x >= kTileTokens) return;
    const std::int64_t src = source_of(row_token(tile), pf_page, 0);
    if (src < 0) return;
    prefetch_l2(k_cache + src, kD * sizeof(T));
    prefetch_l2(v_cache + src, kD * sizeof(T));
#endif
  };
  auto commit = [] {
    if constexpr (!P::kBulk) commit_copies();
  };
  // Waits until tile's rows are in shared memory (this thread's copies; bulk: every thread's).
  auto wait_tile = [&](int tile) {
    if constexpr (P::kProbe == MmaProbe::kComputeOnly) return;
    if constexpr (P::kBulk) {
#if __CUDA_ARCH__ >= 900
      mbarrier_wait(&full[tile % kStages], static_cast<unsigned int>(tile / kStages) & 1u);
#endif
    } else if constexpr (P::kEarlyIssue) {
      wait_copies<kStages - 1>();
    } else {
      wait_copies<kStages - 2>();
    }
  };

  float o[kNTiles][4];
#pragma unroll
  for (int n = 0; n < kNTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY};  // running max of rows g and g + 8 (base-2 units)
  float l[2] = {0.0f, 0.0f};            // this thread's share of the running sums

  std::int32_t pages[kCopies];
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < tiles) {
      fetch_pages(st, pages);
      issue_copies(st, pages);
    }
    commit();
  }
  fetch_pages(kStages - 1, pages);  // for the first tile the loop issues
  if constexpr (P::kPrefetch > 0) {
    for (int pf = kStages - 1; pf < kStages - 1 + P::kPrefetch; ++pf) {
      fetch_pf_page(pf);
      prefetch(pf);
    }
    fetch_pf_page(kStages - 1 + P::kPrefetch);  // for the loop's first prefetch
  }
  // Issues tile's copies (and the prefetch kPrefetch tiles later), then reads the next ones' pages.
  auto advance = [&](int tile) {
    if (tile < tiles) issue_copies(tile, pages);
    commit();
    fetch_pages(tile + 1, pages);
    if constexpr (P::kPrefetch > 0) {
      if (tile + P::kPrefetch < tiles) prefetch(tile + P::kPrefetch);
      fetch_pf_page(tile + 1 + P::kPrefetch);
    }
  };
  for (int tile = 0; tile < tiles; ++tile) {
    if constexpr (P::kEarlyIssue) {
      __syncthreads();  // every warp is done with tile - 1: its stage, (tile + kStages - 1) % kStages, is free
      advance(tile + kStages - 1);
      wait_tile(tile);
      if constexpr (!P::kBulk) __syncthreads();  // every thread's copies of `tile` have landed
    } else {
      wait_tile(tile);
      __syncthreads();  // tile's copies are visible to all; stage (tile - 1) % kStages is free
      advance(tile + kStages - 1);
    }
    if constexpr (P::kProbe == MmaProbe::kCopiesOnly) continue;

    const int base = first + tile * kTileTokens + warp * 16;  // this warp's 16 tokens
    if (base >= last) continue;                               // warp-uniform
    const T* k_s = stages + (tile % kStages) * kStageElems + warp * 16 * kPitch;
    const T* v_s = k_s + kTileTokens * kPitch;

    // S = Q . K^T: n-tile 0 = tokens 0-7, n-tile 1 = tokens 8-15.
    float sc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
    const int mat = lane >> 3, mat_row = lane & 7;
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) {
      std::uint32_t
          kb[4];  // matrices: (tok 0-7, d 0-7), (tok 0-7, d 8-15), (tok 8-15, d 0-7), (tok 8-15, d 8-15)
      ldmatrix_x4(kb, k_s + ((mat >> 1) * 8 + mat_row) * kPitch + ks * 16 + (mat & 1) * 8);
      Mma<T>::run(sc[0], qa[ks], kb[0], kb[1]);
      Mma<T>::run(sc[1], qa[ks], kb[2], kb[3]);
    }

    // Online softmax of rows g (c0, c1) and g + 8 (c2, c3) over this warp's 16 tokens.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int token = base + n * 8 + 2 * t + (i & 1);
        if constexpr (kSoftcap)
          sc[n][i] = token < last ? s.cap.capped_log2(sc[n][i]) : -INFINITY;
        else
          sc[n][i] = token < last ? sc[n][i] * scale_log2 : -INFINITY;
        mx[i >> 1] = fmaxf(mx[i >> 1], sc[n][i]);
      }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      alpha[r] = online_softmax_step(m[r], l[r], mx[r]);  // mx finite: the warp's first token is valid
    }
    float p[2][4];
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        p[n][i] = exp2_unless_masked(sc[n][i], m[i >> 1]);
        l[i >> 1] += p[n][i];
      }
#pragma unroll
    for (int n = 0; n < kNTiles; ++n) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }
    // P as the A operand (rows g, g + 8; tokens 2t.., 2t + 8..), high and low parts.
    std::uint32_t pa_hi[4], pa_lo[4];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      Mma<T>::split(p[r >> 1][(r & 1) * 2], p[r >> 1][(r & 1) * 2 + 1], pa_hi[r], pa_lo[r]);
    }

    // O += P . V: per 16 columns of D, matrices (tok 0-7, d 0-7), (tok 8-15, d 0-7), (tok 0-7, d 8-15),
    // (tok 8-15, d 8-15), transposed.
#pragma unroll
    for (int dp = 0; dp < kD / 16; ++dp) {
      std::uint32_t vb[4];
      ldmatrix_x4_trans(vb, v_s + ((mat & 1) * 8 + mat_row) * kPitch + dp * 16 + (mat >> 1) * 8);
      Mma<T>::run(o[2 * dp], pa_hi, vb[0], vb[1]);
      Mma<T>::run(o[2 * dp], pa_lo, vb[0], vb[1]);
      Mma<T>::run(o[2 * dp + 1], pa_hi, vb[2], vb[3]);
      Mma<T>::run(o[2 * dp + 1], pa_lo, vb[2], vb[3]);
    }
  }
  if constexpr (!P::kBulk) wait_copies<0>();  // (bulk: every issued tile was waited for in the loop)
  __syncthreads();  // the pipeline's shared memory is reused for the partials below

  // This warp's partial: sums over the 4 lanes of a row, then to shared memory.
  float* acc_s = reinterpret_cast<float*>(shared_raw);  // [kWarps][16][kD]
  float* ml_s = acc_s + kWarps * kHeadsPerBlock * kD;   // [kWarps][16][2]
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  float* acc_w = acc_s + warp * kHeadsPerBlock * kD;
#pragma unroll
  for (int n = 0; n < kNTiles; ++n) {
    acc_w[g * kD + n * 8 + 2 * t] = o[n][0];
    acc_w[g * kD + n * 8 + 2 * t + 1] = o[n][1];
    acc_w[(g + 8) * kD + n * 8 + 2 * t] = o[n][2];
    acc_w[(g + 8) * kD + n * 8 + 2 * t + 1] = o[n][3];
  }
  if (t == 0)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      ml_s[(warp * kHeadsPerBlock + g + 8 * r) * 2] = m[r];
      ml_s[(warp * kHeadsPerBlock + g + 8 * r) * 2 + 1] = l[r];
    }
  __syncthreads();

  merge_warp_partials(acc_s, ml_s, kWarps, kHeadsPerBlock, heads, kD, head0, s.splits, split, partial_acc,
                      partial_ml);
}

template <class T, int kD, class P, bool kSoftcap = false>
Status launch(Context& ctx, const DecodeAttentionArgs& args, cudaStream_t stream) {
  constexpr std::size_t shared_bytes = shared_bytes_for<P, kD>(sizeof(T));
  if (shared_bytes > ctx.max_shared_bytes)
    return {StatusCode::kUnsupportedShape, "decode_attention: the tensor-core path needs more shared memory"};
  auto kernel = decode_split_mma<T, kD, P, kSoftcap>;
  DUPLEX_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(shared_bytes)));
  return launch_split_kernel<T>(ctx, args, stream, kernel, P::kThreads, shared_bytes, kHeadsPerBlock, P::kTileTokens,
                                "decode_split_mma");
}

// The shapes compiled for head_dim 128, in kMmaPipelines order (the first is DefaultPipeline).
// Session-4 measurements on an H200 (bench/kernels/README.md): none beats the default.
constexpr MmaProbe kCopiesOnly = MmaProbe::kCopiesOnly, kComputeOnly = MmaProbe::kComputeOnly;
using TunedPipelines =
    std::tuple<DefaultPipeline, Pipeline<4, 3, true>, Pipeline<4, 2, true>, Pipeline<2, 3, true>, Pipeline<2, 4, true>,
               Pipeline<1, 8, true>, Pipeline<4, 3, false, 4>, Pipeline<4, 2, true, 4>, Pipeline<4, 3, true, 0, true>,
               Pipeline<4, 2, true, 0, true>, Pipeline<4, 3, false, 0, false, kCopiesOnly>,
               Pipeline<4, 3, true, 0, true, kCopiesOnly>, Pipeline<4, 3, false, 4, false, kCopiesOnly>,
               Pipeline<4, 3, false, 0, false, kComputeOnly>>;
template <class P>
constexpr MmaPipeline shape_of() {
  return {P::kWarps, P::kStages, P::kEarlyIssue, P::kPrefetch, P::kBulk, P::kProbe};
}
template <std::size_t... I>
constexpr std::array<MmaPipeline, sizeof...(I)> shapes_of(std::index_sequence<I...>) {
  return {shape_of<std::tuple_element_t<I, TunedPipelines>>()...};
}
constexpr auto kMmaPipelines = shapes_of(std::make_index_sequence<std::tuple_size_v<TunedPipelines>>{});

template <class P>
constexpr bool same_shape(const MmaPipeline& p) {
  constexpr MmaPipeline q = shape_of<P>();
  return p.warps == q.warps && p.stages == q.stages && p.early_issue == q.early_issue &&
         p.prefetch == q.prefetch && p.bulk == q.bulk && p.probe == q.probe;
}

// Launches the compiled shape equal to `p`; false when there is none.
template <class T, std::size_t... I>
bool launch_tuned(Context& ctx, const DecodeAttentionArgs& args, cudaStream_t stream, const MmaPipeline& p,
                  Status& st, std::index_sequence<I...>) {
  return ((same_shape<std::tuple_element_t<I, TunedPipelines>>(p) &&
           (st = launch<T, 128, std::tuple_element_t<I, TunedPipelines>>(ctx, args, stream), true)) ||
          ...);
}

}  // namespace

bool decode_attention_mma_applies(const DecodeAttentionArgs& args) {
  const std::int64_t d = args.q.dim(2);
  const bool dtype_ok = args.q.dtype == DType::kF16 || args.q.dtype == DType::kBF16;
  return dtype_ok && (d == 32 || d == 64 || d == 128) && aligned16(args.q.data) &&
         rows_aligned16(args.k_cache) && rows_aligned16(args.v_cache) &&
         args.max_context_len < (std::int64_t{1} << 30);
}

Status decode_attention_mma(Context& ctx, const DecodeAttentionArgs& args, cudaStream_t stream) {
  const std::int64_t d = args.q.dim(2);
  auto by_dim = [&](auto tag, auto capped) -> Status {
    using T = decltype(tag);
    constexpr bool kSoftcap = decltype(capped)::value;
    if (d == 32) return launch<T, 32, DefaultPipeline, kSoftcap>(ctx, args, stream);
    if (d == 64) return launch<T, 64, DefaultPipeline, kSoftcap>(ctx, args, stream);
    return launch<T, 128, DefaultPipeline, kSoftcap>(ctx, args, stream);
  };
  auto by_cap = [&](auto tag) -> Status {
    return args.softcap > 0.0f ? by_dim(tag, std::true_type{}) : by_dim(tag, std::false_type{});
  };
  if (args.q.dtype == DType::kF16) return by_cap(__half{});
  return by_cap(__nv_bfloat16{});
}

std::span<const MmaPipeline> mma_pipelines() {
  return kMmaPipelines;
}

Status decode_attention_mma(Context& ctx, const DecodeAttentionArgs& args, cudaStream_t stream,
                            const MmaPipeline& pipeline) {
  if (!decode_attention_mma_applies(args) || args.q.dim(2) != 128)
    return {StatusCode::kUnsupportedShape,
            "decode_attention_mma: pipeline shapes are compiled for FP16 / BF16 head_dim 128 on the tensor-core path"};
  if (args.softcap > 0.0f) {  // capped instantiations: DefaultPipeline only
    if (!same_shape<DefaultPipeline>(pipeline))
      return {StatusCode::kUnsupportedShape,
              "decode_attention_mma: soft-capping is compiled for the default pipeline shape only"};
    return decode_attention_mma(ctx, args, stream);
  }
  Status st;
  constexpr auto kIndices = std::make_index_sequence<std::tuple_size_v<TunedPipelines>>{};
  const bool found = args.q.dtype == DType::kF16
                         ? launch_tuned<__half>(ctx, args, stream, pipeline, st, kIndices)
                         : launch_tuned<__nv_bfloat16>(ctx, args, stream, pipeline, st, kIndices);
  if (!found) return {StatusCode::kInvalidArgument, "decode_attention_mma: that pipeline shape is not compiled"};
  return st;
}

}  // namespace duplex::kernels::cuda
