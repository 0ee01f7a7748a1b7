#pragma once
// Two-batch overlap (SystemSpec::two_batch_overlap; SGLang's --enable-two-batch-overlap, DeepSeek's dual
// micro-batch overlap, NeuPIMs' sub-batch interleaving): a step's requests split into two micro-batches, each
// lowered and placed on its own (each reading the weights once), their plans interleaved on a device's xPU,
// PIM and link lanes so that one micro-batch's all-reduce, all-to-all and PIM work run while the other
// computes. What overlaps is decided here, from the two placed plans' stages; lowering and placement do not
// change.
#include <array>
#include <cstdint>
#include <optional>

#include "duplex/base/device_spec.hpp"
#include "duplex/compiler/batch.hpp"
#include "duplex/compiler/parallel.hpp"
#include "duplex/compiler/placement.hpp"

namespace duplex::compiler {

struct MicroBatches {
  BatchState first, second;
};

// Each data-parallel rank's requests (all of them when the groups carry no rank) split in two, in the groups'
// order, as SGLang's two_batch_overlap.py splits a batch (compute_split_seq_index,
// compute_split_token_index):
//  - decoding (or verifying) requests only: the first half of them, rounded down, first (a rank of one
//    request leaves its first half empty);
//  - with a prompt (SGLang's extend batches; decoding requests count as their tokens): at the request
//    boundary, one request at least on each side, whose first half's tokens L come closest to half the rank's
//    T, ties to the larger L (_split_array_by_balanced_sum); where L < chunk_threshold x T or L > (1 -
//    chunk_threshold) x T (SGLang's tbo_token_distribution_threshold, 0.48 by default; a single prompt
//    always), at token T / 2 (rounded down) instead, the prompt holding it split into two chunks: the first
//    ends the first half without completing its prompt, the second starts the second half with the first's
//    tokens in its context (a decoding request there is not split: the boundary before it).
// A group split between the halves becomes one in each with its count shared. Both halves keep
// first_draft_pass. A step where either half has no tokens runs as one batch (nothing to overlap). Throws
// duplex::Error for a threshold outside 0..0.5.
MicroBatches split_micro_batches(const BatchState& batch, double chunk_threshold);

// A step's two micro-batches on `system` (split_micro_batches at its two_batch_overlap_threshold), or none
// where it runs as one batch: two_batch_overlap off; a step with prefill tokens whose MoE token exchange runs
// DeepEP's low-latency kernels (expert_all_to_all low_latency, on a layout that exchanges tokens), which
// SGLang does not overlap (TboDPAttentionPreparer: an extend batch on them cannot run two-batch overlap); or
// a half without tokens.
std::optional<MicroBatches> micro_batches(const SystemSpec& system, const ParallelLayout& layout,
                                          const BatchState& batch);

// Whether a step of `batch` has prompts whose MoE tokens cross devices on DeepEP's low-latency kernels
// (expert_all_to_all low_latency, on a layout that exchanges tokens): such a step runs as one batch.
bool low_latency_prompts(const SystemSpec& system, const ParallelLayout& layout, const BatchState& batch);

// Whether a step of `batch` has collectives that run as kernels on the xPU's SMs while the other micro-batch
// computes: a tensor-parallel all-reduce (tp > 1; NCCL's), or an expert exchange across devices on DeepEP's
// normal kernels (expert_all_to_all normal, or auto for a step with prefill tokens). DeepEP's low-latency
// kernels hold none (its README: a hook-based communication-computation overlap "that does not occupy any SM
// resource").
bool collectives_hold_sms(const SystemSpec& system, const ParallelLayout& layout, const BatchState& batch);

// The system as two micro-batches' computation sees it where collectives_hold_sms: they hold links.comm_sms
// of the xPU's xpu.sms SMs, so every xPU compute rate (peak_fp16 / fp8 / int8 / fp32) scales by (sms -
// comm_sms) / sms (SGLang sizes DeepGEMM's grid to the SMs DeepEP leaves: configure_deep_gemm_num_sms); its
// memory bandwidth stays. A measured xPU profile (CostModel's xpu_model) times ops as measured, unscaled.
// Throws duplex::Error where comm_sms leaves no SM (read_system refuses it too).
SystemSpec overlapped_system(const SystemSpec& system);

// A step's routing split between its micro-batches of `first_tokens` and `step_tokens - first_tokens`
// tokens. Given counts (Routing::kCounts, the runtime's sampled or traced routing of the whole step): the
// first half's each layer's counts in proportion to the step's (Routing::expert_tokens_of: largest
// remainder, each at most first_tokens), the second half's the rest (each at most its tokens), so a step
// routes the same tokens to each expert with and without overlap. Uniform and Zipf routing: unchanged (each
// half's expected counts). Weights and expert placement are the step's.
std::array<Routing, 2> split_routing(const Routing& step, std::int64_t first_tokens, std::int64_t step_tokens,
                                     int experts, int top_k);

// The two micro-batches' placed plans interleaved on one device's lanes. Each plan's stages run in their
// order, a stage starting once the one before it in its plan has ended and every lane it keeps busy (xPU,
// PIM, link: a lane with time in the stage) has finished the stages placed on it earlier; lanes run one
// stage's ops at a time (a unit's kernels of the two micro-batches do not share it). Greedy list
// scheduling: the next stage placed is whichever of the two plans' next stages can start first (ties: the
// first micro-batch's), so the second trails the first by a stage and its communication runs under the
// first's compute. The result holds the first plan's ops then the second's (names prefixed "mb0." and
// "mb1."), its stages in the order placed with ExecutionPlan::starts; total() is the later plan's end and
// each lane's busy time the sum of both plans'. Not modelled: a GPU's communication kernels taking SMs from
// the computation they overlap (DeepEP's normal kernels use some; its low-latency ones none).
ExecutionPlan overlap_micro_batches(const ExecutionPlan& first, const ExecutionPlan& second);

}  // namespace duplex::compiler
