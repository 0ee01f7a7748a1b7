#pragma once
// The tensor-core decode attention kernel's pipeline shapes (cuda_decode_attention_mma.cu), exposed for
// bench/kernels/decode_tune_bench, which measures them to choose the one decode_attention uses. Host-only.
#include <cuda_runtime_api.h>

#include <span>

#include "cuda_context.hpp"

namespace duplex::kernels::cuda {

// Diagnostic shapes: the kernel's copies without its compute (the output is meaningless), or its compute on
// whatever shared memory holds, without copies.
enum class MmaProbe : int { kNone, kCopiesOnly, kComputeOnly };

// A block of `warps` warps (16 tokens of each tile per warp) streams K / V tiles through a ring of `stages`
// shared-memory stages; early_issue: a tile's copies are issued before the wait for the tile being computed
// (stages tiles in flight while a warp waits) rather than after it (stages - 1); prefetch: tiles whose rows
// are prefetched into L2 ahead of their copies (sm_90 cp.async.bulk.prefetch; 0: none); bulk: a row is one
// sm_90 bulk copy (cp.async.bulk, completing on an mbarrier) instead of 16-byte cp.async chunks.
struct MmaPipeline {
  int warps = 4;
  int stages = 3;
  bool early_issue = false;
  int prefetch = 0;
  bool bulk = false;
  MmaProbe probe = MmaProbe::kNone;
};

// The shapes compiled for FP16 / BF16 head_dim 128; the first is the one decode_attention uses.
std::span<const MmaPipeline> mma_pipelines();

// decode_attention on the tensor-core path with pipeline shape `pipeline` (one of mma_pipelines()): arguments
// as decode_attention_mma_applies and head_dim 128 (else kUnsupportedShape); a shape not compiled is
// kInvalidArgument.
Status decode_attention_mma(Context& ctx, const DecodeAttentionArgs& args, cudaStream_t stream,
                            const MmaPipeline& pipeline);

}  // namespace duplex::kernels::cuda
