#include "duplex/compiler/expert_reach.hpp"

#include <algorithm>
#include <numeric>

#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::compiler {
namespace {

// e_k of `w`: the sum over k-subsets of the products of their weights.
double symmetric(const std::vector<double>& w, int k) {
  std::vector<double> e(static_cast<std::size_t>(k) + 1, 0.0);
  e[0] = 1.0;
  for (const double x : w)
    for (std::size_t j = e.size() - 1; j >= 1; --j) e[j] += x * e[j - 1];
  return e.back();
}

// 1 - e_k(w * (1 - h)) / e_k(w), clamped to [0, 1] against rounding.
double reach(const std::vector<double>& w, const std::vector<double>& h, int k, double all) {
  std::vector<double> missed(w.size());
  for (std::size_t e = 0; e < w.size(); ++e) missed[e] = w[e] * (1.0 - h[e]);
  return std::clamp(1.0 - symmetric(missed, k) / all, 0.0, 1.0);
}

}  // namespace

ExpertReach expert_reach(const std::vector<double>& weights, int top_k, const SlotExperts& placement,
                         const ParallelLayout& layout) {
  const auto experts = static_cast<int>(weights.size());
  if (top_k < 1 || top_k > experts)
    throw Error(fmt::format("expert reach: top_k {} with {} experts; expected 1 <= top_k <= experts", top_k,
                            experts));
  const int groups = layout.expert_groups, shards = layout.expert_shards;
  if (layout.local_experts < 1 || static_cast<int>(placement.size()) != layout.local_experts * groups)
    throw Error(fmt::format("expert reach: a placement of {} slots; expected {} ({} per group x {} groups)",
                            placement.size(), layout.local_experts * groups, layout.local_experts, groups));
  const int devices = groups * shards, per_node = layout.devices_per_node();
  const int nodes = (devices + per_node - 1) / per_node;
  std::vector<int> copies(weights.size(), 0);
  for (const int e : placement) {
    if (e < 0 || e >= experts)
      throw Error(fmt::format("expert reach: a slot holds expert {}; expected 0..{}", e, experts - 1));
    ++copies[static_cast<std::size_t>(e)];
  }
  for (std::size_t e = 0; e < weights.size(); ++e)
    if (!(weights[e] >= 0.0) || (weights[e] > 0.0 && copies[e] == 0))
      throw Error(
          fmt::format("expert reach: expert {} has weight {} and {} copies; expected a weight >= 0, "
                      "and a copy where it is positive",
                      e, weights[e], copies[e]));
  const double all = symmetric(weights, top_k);
  if (!(all > 0.0))
    throw Error(fmt::format("expert reach: fewer than top_k = {} experts with a positive weight", top_k));
  // h[location][expert]: each copy's group covers `shards` consecutive devices, counted once per node.
  std::vector<std::vector<double>> node_share(static_cast<std::size_t>(nodes),
                                              std::vector<double>(weights.size(), 0.0));
  std::vector<std::vector<double>> device_share(static_cast<std::size_t>(devices),
                                                std::vector<double>(weights.size(), 0.0));
  for (std::size_t s = 0; s < placement.size(); ++s) {
    const auto e = static_cast<std::size_t>(placement[s]);
    const double share = 1.0 / copies[e];
    const int first = static_cast<int>(s) / layout.local_experts * shards;
    for (int d = first; d < first + shards; ++d) device_share[static_cast<std::size_t>(d)][e] += share;
    for (int n = first / per_node; n <= (first + shards - 1) / per_node; ++n)
      node_share[static_cast<std::size_t>(n)][e] += share;
  }
  ExpertReach r;
  for (const auto& h : node_share) r.node.push_back(reach(weights, h, top_k, all));
  for (const auto& h : device_share) r.device.push_back(reach(weights, h, top_k, all));
  return r;
}

ParallelLayout::ExpertExchange deduplicated_exchange(const ParallelLayout& layout, const ExpertReach& reach) {
  const auto mean = [](const std::vector<double>& v) {
    return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  };
  const auto skew = [&](const std::vector<double>& v) {
    const double m = mean(v);
    return m > 0 ? *std::max_element(v.begin(), v.end()) / m : 1.0;
  };
  DUPLEX_ASSERT(!reach.node.empty() && !reach.device.empty(), "deduplicated exchange without reach");
  const int nodes = static_cast<int>(reach.node.size());
  const int per_node = static_cast<int>(reach.device.size()) / nodes;
  ParallelLayout::ExpertExchange x;
  x.row_share = 1.0 / layout.tp;
  x.infiniband = (nodes - 1) * mean(reach.node);
  x.nvlink = (nodes - 1 + (layout.attention_dp ? 1 : 0)) * (per_node - 1) * mean(reach.device);
  x.infiniband_peers = nodes - 1;
  x.nvlink_peers = x.nvlink > 0 ? per_node - 1 : 0;
  x.infiniband_skew = skew(reach.node);
  x.nvlink_skew = skew(reach.device);
  return x;
}

}  // namespace duplex::compiler
