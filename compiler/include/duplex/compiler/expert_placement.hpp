#pragma once
// Expert load balancing (EPLB): which expert each physical expert slot of an MoE layer holds when the
// experts may have redundant copies, and how a layer's routed tokens split over the copies.
// An MoE layer has `slots` >= experts slots spread evenly over `groups` expert-parallel groups (a device, or
// under +ET a node): group g holds slots [g * S, (g + 1) * S), S = slots / groups.
#include <cstdint>
#include <vector>

namespace duplex::compiler {

// One MoE layer's placement: the expert each slot holds.
using SlotExperts = std::vector<int>;

// vLLM's initial placement: slot s holds expert s mod experts (the experts in order, then the redundant slots
// copies of experts 0, 1, ...). Throws duplex::Error unless experts >= 1 and slots >= experts.
SlotExperts default_placement(int experts, int slots);

// DeepSeek's EPLB, its global policy (eplb.py's rebalance_experts with one node and one expert group), from
// `load[e]` >= 0, the tokens expert e received: each of the slots - experts redundant slots goes in turn to
// the expert with the most load per copy (replicate_experts); then the copies, each carrying its expert's
// load / copies, heaviest first, each to the group with the least load among those with a free slot
// (balanced_packing), in a group in the order they arrive. Ties go to the lower expert and the lower group.
// Throws duplex::Error unless slots >= load.size() >= 1, slots divisible by groups >= 1, loads finite >= 0.
SlotExperts balance_experts(const std::vector<double>& load, int slots, int groups);

// DeepSeek's hierarchical policy (eplb.py's rebalance_experts_hierarchical), which vLLM's EPLB uses when the
// model's expert groups divide over the nodes: the experts in `expert_groups` groups of consecutive experts
// (the router's groups, ModelSpec::router_groups) are packed to the `nodes` by their summed load
// (balanced_packing, expert_groups / nodes each, heaviest first to the lightest node with room), so a
// token's group-limited routing reaches few nodes; then in each node its groups' experts (in the order the
// groups arrived there) are replicated to slots / nodes slots and packed to its groups / nodes groups as the
// global policy does. Slots are node-major (node n holds groups [n G / nodes, (n + 1) G / nodes)). With one
// expert group and one node it is balance_experts. Throws duplex::Error unless slots >= experts >= 1, slots
// divisible by groups, experts by expert_groups, expert_groups and groups by nodes, loads finite >= 0.
SlotExperts balance_experts_hierarchical(const std::vector<double>& load, int slots, int groups,
                                         int expert_groups, int nodes);

// The token-expert rows of each slot: expert e's counts[e] rows split evenly over its copies, the copies in
// slot order taking one more where they do not divide (vLLM sends a token's pick of an expert to one of its
// copies, spreading them evenly). Throws duplex::Error when a slot names an expert outside counts or an
// expert with rows has no copy.
std::vector<std::int64_t> slot_rows(const SlotExperts& placement, const std::vector<std::int64_t>& counts);

// The group whose slots receive the most rows (the lowest of equals) and those rows.
struct BusiestGroup {
  int group = 0;
  std::int64_t rows = 0;
};
BusiestGroup busiest_group(const std::vector<std::int64_t>& rows_of_slots, int groups);

}  // namespace duplex::compiler
