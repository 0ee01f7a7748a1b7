#pragma once
// A read-only kernel with decode attention's memory access pattern (bench/kernels/kv_read_bench.cpp): it reads
// every K and V row a decode-attention call over a paged cache reads, through the block table, and nothing
// else, so its bandwidth is the ceiling of that access pattern on the GPU. Loads are 16 bytes a thread with
// several in flight; the bytes are folded by XOR into one word so the loads cannot be dropped.
#include <cstdint>

#include <cuda_runtime_api.h>

namespace duplex::bench {

// Where token t's row of kv head h sits in a cache of pages of `block_tokens` tokens (page p = table entry):
enum class KvLayout : std::uint8_t {
  kNhd,  // [pages][block_tokens][kv heads][d]: the runtime's layout (a token's heads are contiguous)
  kHnd,  // [pages][kv heads][block_tokens][d]: each page of one head is contiguous (block_tokens x d)
};

struct KvReadShape {
  std::int64_t batch = 0, kv_heads = 0;
  std::int64_t head_dim = 0;          // elements of 2 bytes; a multiple of 8, at most 256
  std::int64_t block_tokens = 16;     // tokens per page
  std::int64_t blocks_per_seq = 0;    // block-table row length
  std::int64_t context = 0;           // tokens read per request
  std::int64_t tokens_per_block = 0;  // tokens one thread block reads (the split size), a multiple of 8
  KvLayout layout = KvLayout::kNhd;
};

// Launches the read of K and V (2-byte elements) on `stream`; folds the bytes into *sink. Returns the launch
// error (cudaSuccess when the launch was accepted) or cudaErrorInvalidValue for a shape it does not take.
cudaError_t launch_kv_read(const void* k_cache, const void* v_cache, const std::int32_t* block_table,
                           unsigned int* sink, const KvReadShape& shape, cudaStream_t stream);

}  // namespace duplex::bench
