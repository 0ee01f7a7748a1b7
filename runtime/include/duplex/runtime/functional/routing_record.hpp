#pragma once
// The routing an MoE router chose for one token in one layer, as the executor recorded it, and what the
// reference's check makes of a token whose routing differs from the reference's own (run_session.hpp).
#include <cstddef>
#include <cstdint>
#include <vector>

namespace duplex::runtime::functional {

struct RoutedToken {
  std::vector<float> logits;          // the router's FP32 logits [experts]
  std::vector<std::int32_t> experts;  // the chosen experts, in the router's order
};

// Per request, per position of its sequence that ran (prompt and fed tokens; a recomputed position: its last
// run), per MoE layer in layer order. Empty for a dense model.
using ExecutedRouting = std::vector<std::vector<std::vector<RoutedToken>>>;

// Tokens routed to each expert, per MoE layer ([MoE layer][expert], `experts` wide), summed over every
// request and position of `routing` (a token counts once per expert it chose; a recomputed position once).
std::vector<std::vector<std::int64_t>> expert_load(const ExecutedRouting& routing, int experts);

// A token whose executed routing (experts, or the sparsemixer's masks) differs from the one the reference
// chooses at the same point of the executor's path. The flip is a routing near tie when the executor's router
// logits are within the bound of the reference's (router_logit_err <= bound) and the reference's router,
// given the executor's logits, chooses the executor's experts (consistent): the two choices then differ only
// by what the logit error allows, as NearTie's tokens do. The reference follows the executor's experts at an
// explained tie.
struct RoutingTie {
  std::size_t request = 0, position = 0;
  int layer = 0;                                         // model layer
  std::vector<std::int32_t> experts, reference_experts;  // executor's and reference's, each in its order
  // The same experts, a slot's mask differing: the sparsemixer, whose weights depend on which logits lie
  // within its jitter of the slot's top (a discontinuity as the choice of experts is).
  bool mask_only = false;
  double router_logit_err = 0;  // max |executor router logit - reference router logit|
  double bound = 0;             // the logit bound for the reference's router logits
  bool consistent = false;
  bool explained() const { return consistent && router_logit_err <= bound; }
};

}  // namespace duplex::runtime::functional
