#pragma once
// The oracle of functional emulation: a plain CPU forward pass written independently of kernels/, the
// runtime and the devices. Straightforward loops, one request at a time, one token at a time, K/V kept as
// plain per-request arrays, greedy decoding.
//
// Numerics (the contract `duplex run --check` compares against): weights are FP16; arithmetic inside an op is
// done in double; every activation an op writes to memory is stored as FP16 (rounded to nearest even), as on
// both Duplex units (embedding rows, norm outputs, q/k/v before and after RoPE, K/V cache, attention output,
// projections, the gated-FFN intermediate, FFN / MoE outputs, the residual stream); router probabilities and
// logits stay in full precision.
#include <cstdint>
#include <vector>

#include "duplex/runtime/functional/activation_quant.hpp"
#include "duplex/runtime/functional/model_weights.hpp"
#include "duplex/runtime/functional/routing_record.hpp"

namespace duplex::runtime::functional {

struct ReferenceOutput {
  // Per request: the generated tokens, and the logits [vocab] that chose each of them.
  std::vector<std::vector<std::int32_t>> tokens;
  std::vector<std::vector<std::vector<float>>> logits;
  // reference_follow with the executor's routing: every token whose executed experts differ from the
  // reference's own choice (it followed the executor's where the tie is explained).
  std::vector<RoutingTie> routing_ties;
  // reference_follow with the executor's quantization: the GEMM inputs the reference took from the executor
  // (the ones its xPU quantized), and over them the largest |executor input - reference input| and its
  // largest ratio to the bound relative_bound x max(1, largest |reference input|) of its vector.
  std::int64_t followed_inputs = 0;
  double max_input_err = 0, input_err_ratio = 0;
};

// Greedy generation of `max_new_tokens` (>= 1) tokens for every prompt (each non-empty, ids in [0, vocab)).
// Throws duplex::Error for an empty prompt or an id out of range.
ReferenceOutput reference_generate(const ModelWeights& weights,
                                   const std::vector<std::vector<std::int32_t>>& prompts, int max_new_tokens);

// The reference along given paths (teacher forcing): request r is prompt r followed by paths[r] (each
// non-empty); logits[r][i] is the reference's distribution for the token at paths[r][i] given everything
// before it, and tokens[r][i] the reference's greedy choice there. With paths = reference_generate's tokens,
// the same output as reference_generate.
// With `routing` (the executor's, FunctionalResult::routing; one entry per prompt), each MoE layer's choice
// is compared with the executor's at the same position: where they differ, a RoutingTie is recorded with the
// router-logit bound relative_bound x max(1, largest |reference router logit|), and at an explained tie the
// reference continues with the executor's experts (weighed by its own logits), so that the rest of the path
// compares like with like.
// With `quantization` (the executor's, FunctionalResult::quantization; one entry per prompt, or empty), at
// every GEMM input the executor's xPU quantized (W8A8 activation quantization, activation_quant.hpp) the
// reference compares its own input with the executor's (followed_inputs, input_err_ratio), then continues
// from the executor's, which it quantizes itself (its own code: the scale per token or group from the values,
// or the executor's per-tensor scale, which depends on the batch): an 8-bit grid's rounding flips at a
// boundary, and FP8's 3 mantissa bits make one flip move an output by more than FP16 storage does, so the
// reference takes the executor's side of such ties, as it does at routing near ties. Its other inputs stay
// FP16.
ReferenceOutput reference_follow(const ModelWeights& weights,
                                 const std::vector<std::vector<std::int32_t>>& prompts,
                                 const std::vector<std::vector<std::int32_t>>& paths,
                                 const ExecutedRouting* routing = nullptr, double relative_bound = 0.0,
                                 const ExecutedQuantization* quantization = nullptr);

// Throws duplex::Error naming the request and token when a prompt is empty or holds an id outside [0, vocab).
void check_prompts(const std::vector<std::vector<std::int32_t>>& prompts, int vocab);

}  // namespace duplex::runtime::functional
