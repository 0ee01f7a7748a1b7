#pragma once
// What the compiler lowers besides the model: the current batch, as a shape histogram (work per step is
// O(distinct shapes), not O(requests)), and how tokens are routed to experts.
#include <cstdint>
#include <string>
#include <vector>

namespace duplex::compiler {

// `count` requests that each have `context` tokens already in their KV cache and process `tokens` new
// tokens this step (1 = decode; > 1 = a prefill or a prefill chunk, or a speculative verification).
// `completes_prefill`: this step computes the last prompt token of each of these requests (a whole prefill,
// or the last chunk of a chunked one), so their prompt's K/V is complete after it (what lowering's K/V
// migration moves; lower.hpp). `verify`: decoding requests verifying tokens - 1 draft tokens (speculative
// decoding): their attention is decode attention with `tokens` query rows per request over the cached
// context (on the Logic-PIM: a GQA group of tokens x heads per K/V head), and every token gets logits.
// `cached`: of a prefill's `context`, the tokens whose K/V came from the prefix cache (in the KV spaces from
// the start: the migration moves only context - cached + tokens). `rank`: the data-parallel replica whose
// requests these are (the scheduler's rank: request id mod dp), or -1 when the lowering deals the step's
// requests to the replicas itself (LowerOptions::replica); a batch's groups either all have one or none does.
struct RequestGroup {
  std::int64_t count = 0;
  std::int64_t context = 0;
  std::int64_t tokens = 0;
  bool completes_prefill = false;
  bool verify = false;
  std::int64_t cached = 0;
  int rank = -1;
  bool decodes() const { return tokens == 1 || verify; }  // attends as decode attention
  bool operator==(const RequestGroup&) const = default;
};

struct BatchState {
  std::vector<RequestGroup> groups;
  // A draft head's first pass of a step, which fuses the target's hidden states (ModelSpec::draft_states 3).
  bool first_draft_pass = false;
  std::int64_t tokens() const;  // new tokens this step, all requests
  std::int64_t requests() const;
  std::int64_t decode_requests() const;  // requests of the groups that decode (tokens == 1 or verify)
  std::int64_t prefill_tokens() const;   // tokens of the other groups
  // A step of `batch` decoding requests at context `context`, plus optionally one whole prefill of
  // `prefill_tokens` tokens (the mixed stage of the paper; it completes this step).
  static BatchState decode_batch(std::int64_t batch, std::int64_t context, std::int64_t prefill_tokens = 0);
};

// Tokens routed to each expert in each MoE layer.
struct Routing {
  enum class Kind { kUniform, kZipf, kCounts };
  Kind kind = Kind::kUniform;
  double zipf_s = 1.0;
  std::vector<std::vector<std::int64_t>> counts;  // kCounts: [moe layer][expert]; a single row repeats
  // kCounts: the weights of the router the counts were drawn from, one per expert, every MoE layer's (a
  // token's top-k set has probability proportional to the product of its experts' weights; the runtime's
  // synthetic routers). Empty: unknown (a trace, given counts): token_weights derives them from the counts.
  std::vector<double> weights;
  // Expert load balancing (expert_placement.hpp): [moe layer] the expert each slot holds, layout
  // local_experts x expert_groups slots (ParallelLayout); the lowering plans the group whose slots receive
  // the most rows. Empty: no balancing, vLLM's initial placement (default_placement: each expert one slot,
  // group g holds experts [g x local_experts, (g + 1) x local_experts)), the busiest group's planned too.
  std::vector<std::vector<int>> placement;
  // Expected, integral counts summing exactly to tokens * top_k for one MoE layer (index `moe_layer`).
  // Uniform: floor + the remainder spread one by one from expert 0. Zipf: largest-remainder rounding of
  // tokens x P(e in a token's top-k set), the probability under the synthetic routers' model with weights
  // (e + 1)^-s and the router's group limit (router_groups, router_topk_groups: 1, 1 for none;
  // router_groups.hpp's top_k_inclusion); the expected counts of the simulator's sampled ones. Given counts:
  // the row.
  std::vector<std::int64_t> expert_tokens(int moe_layer, std::int64_t tokens, int experts, int top_k,
                                          int router_groups = 1, int router_topk_groups = 1) const;
  // The counts of `tokens` of a step's `step_tokens` (one pipeline batch in flight's): Uniform and Zipf as
  // expert_tokens over `tokens`; given counts (over the step's tokens) apportioned to tokens * top_k in
  // proportion to them (largest remainder, each at most `tokens`).
  std::vector<std::int64_t> expert_tokens_of(int moe_layer, std::int64_t tokens, std::int64_t step_tokens,
                                             int experts, int top_k, int router_groups = 1,
                                             int router_topk_groups = 1) const;
  // The conditional Poisson weights of a token's top-k set in a layer whose experts received `layer_counts`
  // of `tokens` x top_k rows: uniform 1 each; Zipf (e + 1)^-s; kCounts `weights` where given, else derived
  // from the counts, each expert's share pi = count / tokens of the tokens mapped to pi / (1 - pi) (Hajek's
  // approximation of the weights whose inclusion probabilities are pi; exact for equal counts; pi capped
  // at 1 - 1e-6). What the node-deduplicated all-to-all needs (expert_reach.hpp).
  std::vector<double> token_weights(const std::vector<std::int64_t>& layer_counts, std::int64_t tokens) const;
};

}  // namespace duplex::compiler
