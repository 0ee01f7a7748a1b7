#pragma once
// Where a token's top-k experts live: for the node-deduplicated all-to-all (DeepEP's normal kernels,
// base/device_spec.hpp ExpertAllToAll), which sends a token once to each node holding any of its experts and
// forwards it there once to each device holding one.
//
// Routing is conditional Poisson (the runtime's synthetic routers, runtime/workload/expert_routing.hpp): a
// token's top-k set S has probability proportional to the product of its experts' weights w. A token's row
// for expert e goes to one of e's copies (slots), each equally likely, and reaches every device holding a
// shard of that copy. The probability that a token reaches a location L (a node, a device) is then exactly
//   1 - e_k(w * (1 - h_L)) / e_k(w),
// e_k the elementary symmetric polynomial of degree k and h_L[e] the fraction of e's copies with a shard on L
// (for each set S the token misses L with probability prod_{e in S} (1 - h_L[e])).
//
// Group-limited routing (DeepSeek's n_group / topk_group: ModelSpec::router_groups, router_topk_groups): a
// token keeps a set G of `router_topk_groups` of the router's groups of consecutive experts and takes its
// top-k set S among G's experts, the pair (G, S) with probability proportional to the product of S's weights
// (G with probability proportional to e_k(w_G), S within G as above); it misses L with probability
// sum_G e_k(w_G (1 - h_L)) / sum_G e_k(w_G). With uniform weights every G and every expert are equally
// likely, as without the limit; a token then reaches fewer nodes where a node holds whole router groups.
#include <vector>

#include "duplex/compiler/expert_placement.hpp"
#include "duplex/compiler/parallel.hpp"

namespace duplex::compiler {

struct ExpertReach {
  std::vector<double> node;    // [node]: the probability that a token reaches it
  std::vector<double> device;  // [device]
};

// The reach of every node and device the layout's experts spread over (its expert-parallel devices, slot s
// of `placement` in group s / local_experts, group g on devices [g x expert_shards, (g + 1) x
// expert_shards), device d on node d / devices_per_node). `weights`: one per expert, >= 0, at least top_k
// of them positive. Throws duplex::Error when the placement does not fit the layout or the weights the
// placement's experts, or top_k is outside [1, experts].
// Group-limited routing: `router_groups` (dividing the experts) of which `router_topk_groups` are kept (1, 1:
// none); refused beyond 100,000 group sets.
ExpertReach expert_reach(const std::vector<double>& weights, int top_k, const SlotExperts& placement,
                         const ParallelLayout& layout, int router_groups = 1, int router_topk_groups = 1);

// The node-deduplicated exchange of a layout with an exchange (ParallelLayout::expert_exchange not all zero),
// per token a device sends (row_share of those it holds, as expert_exchange's), on average over the senders:
//   infiniband = (nodes - 1) x the mean node's reach  (once to each other node reached)
//   nvlink     = (nodes - 1, + 1 under attention data parallelism) x (devices_per_node - 1) x the mean
//                device's reach  (at each node reached, from the device that received it to the others
//                reached: it is each of them with probability 1 / devices_per_node; under attention data
//                parallelism the sender's own node alike, the sender forwarding)
// and the skews: the busiest node's reach over the mean node's (InfiniBand: a node's receipts spread over its
// devices), the busiest device's over the mean device's (NVLink). Peers: the other nodes; the node's other
// devices where anything is forwarded.
ParallelLayout::ExpertExchange deduplicated_exchange(const ParallelLayout& layout, const ExpertReach& reach);

}  // namespace duplex::compiler
