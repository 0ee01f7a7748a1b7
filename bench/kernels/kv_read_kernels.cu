#include "kv_read_kernels.hpp"

namespace duplex::bench {
namespace {

constexpr int kThreads = 128;
constexpr int kUnroll = 8;  // row passes whose loads are issued before any is used: 2 x 8 x 16 B a thread

struct Shape {
  int batch, kv_heads, chunks, block_tokens, blocks_per_seq, context, tokens_per_block;
  KvLayout layout;
};

// Grid (splits, kv heads, requests). A pass of the block covers kThreads / chunks rows (16-byte chunk c of
// row r: thread r * chunks + c), kUnroll passes of K and V are loaded before they are folded.
__global__ void __launch_bounds__(kThreads)
    kv_read(const uint4* __restrict__ k, const uint4* __restrict__ v, const std::int32_t* __restrict__ table,
            unsigned int* sink, Shape s) {
  const int rows_per_pass = kThreads / s.chunks;
  const int row = static_cast<int>(threadIdx.x) / s.chunks, c = static_cast<int>(threadIdx.x) % s.chunks;
  const int head = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z);
  const int first = static_cast<int>(blockIdx.x) * s.tokens_per_block;
  const int last = min(s.context, first + s.tokens_per_block);
  const std::int32_t* pages = table + static_cast<std::int64_t>(b) * s.blocks_per_seq;
  unsigned int fold = 0;
  if (row < rows_per_pass) {
    for (int t0 = first; t0 < last; t0 += rows_per_pass * kUnroll) {
      uint4 kx[kUnroll], vx[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int token = t0 + u * rows_per_pass + row;
        kx[u] = vx[u] = make_uint4(0, 0, 0, 0);
        if (token < last) {
          const std::int64_t page = pages[token / s.block_tokens], offset = token % s.block_tokens;
          const std::int64_t r = s.layout == KvLayout::kNhd
                                     ? (page * s.block_tokens + offset) * s.kv_heads + head
                                     : (page * s.kv_heads + head) * s.block_tokens + offset;
          kx[u] = k[r * s.chunks + c];
          vx[u] = v[r * s.chunks + c];
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
        fold ^= kx[u].x ^ kx[u].y ^ kx[u].z ^ kx[u].w ^ vx[u].x ^ vx[u].y ^ vx[u].z ^ vx[u].w;
    }
  }
  for (int o = 16; o > 0; o /= 2) fold ^= __shfl_xor_sync(0xffffffffu, fold, o);
  if ((threadIdx.x & 31) == 0) atomicXor(sink, fold);
}

}  // namespace

cudaError_t launch_kv_read(const void* k_cache, const void* v_cache, const std::int32_t* block_table,
                           unsigned int* sink, const KvReadShape& shape, cudaStream_t stream) {
  const KvReadShape& x = shape;
  const bool ok = x.batch > 0 && x.batch < 65536 && x.kv_heads > 0 && x.kv_heads < 65536 && x.head_dim % 8 == 0 &&
                  x.head_dim > 0 && x.head_dim <= 8 * kThreads && x.block_tokens > 0 && x.context > 0 &&
                  x.context <= x.blocks_per_seq * x.block_tokens && x.tokens_per_block > 0 &&
                  x.context < (std::int64_t{1} << 30);
  if (!ok) return cudaErrorInvalidValue;
  const Shape s{static_cast<int>(x.batch),        static_cast<int>(x.kv_heads),
                static_cast<int>(x.head_dim / 8), static_cast<int>(x.block_tokens),
                static_cast<int>(x.blocks_per_seq), static_cast<int>(x.context),
                static_cast<int>(x.tokens_per_block), x.layout};
  const dim3 grid(static_cast<unsigned int>((x.context + x.tokens_per_block - 1) / x.tokens_per_block),
                  static_cast<unsigned int>(x.kv_heads), static_cast<unsigned int>(x.batch));
  kv_read<<<grid, kThreads, 0, stream>>>(static_cast<const uint4*>(k_cache), static_cast<const uint4*>(v_cache),
                                         block_table, sink, s);
  return cudaGetLastError();
}

}  // namespace duplex::bench
