#pragma once
// The tensor-core decode attention kernels' pipeline shapes (cuda_decode_attention_mma.cu: K / V through a
// shared-memory ring; cuda_decode_attention_regs.cu: straight into registers), exposed for
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
// kInvalidArgument. A soft-capped call (softcap > 0) runs on the first shape only (the others refuse it:
// kUnsupportedShape).
Status decode_attention_mma(Context& ctx, const DecodeAttentionArgs& args, cudaStream_t stream,
                            const MmaPipeline& pipeline);

// The register-direct kernel (cuda_decode_attention_regs.cu, not used by decode_attention yet): blocks of
// `warps` warps, each walking its own 16-token tiles; registers per thread capped so that `min_blocks` blocks
// fit an SM (__launch_bounds__); `issue`: when a warp loads its next tile, after computing the current one
// (kAfter), as the current one's registers free up (kInterleaved: its K after Q.K^T, its V after P.V), or
// before computing the current one, into a second tile of registers (kAhead).
enum class RegsIssue : int { kAfter, kInterleaved, kAhead };
struct RegsPipeline {
  int warps = 4;
  int min_blocks = 3;
  RegsIssue issue = RegsIssue::kInterleaved;
};

// The register-direct shapes compiled (FP16 / BF16, head_dim 128).
std::span<const RegsPipeline> regs_pipelines();

// decode_attention on the register-direct kernel with shape `pipeline` (one of regs_pipelines()): arguments
// as decode_attention_mma_applies and head_dim 128 (else kUnsupportedShape); a shape not compiled is
// kInvalidArgument. A soft-capped call (softcap > 0) runs on the first shape only (the others refuse it:
// kUnsupportedShape).
Status decode_attention_regs(Context& ctx, const DecodeAttentionArgs& args, cudaStream_t stream,
                             const RegsPipeline& pipeline);

}  // namespace duplex::kernels::cuda
