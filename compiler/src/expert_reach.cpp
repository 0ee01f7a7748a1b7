#include "duplex/compiler/expert_reach.hpp"

#include <algorithm>
#include <numeric>

#include <fmt/format.h>

#include "duplex/base/error.hpp"
#include "duplex/compiler/router_groups.hpp"

namespace duplex::compiler {
namespace {

using Poly = SymmetricPoly;

// e_k of the weights of the experts in a group set, from its groups' polynomials.
double set_symmetric(const std::vector<Poly>& polys, const std::vector<int>& set) {
  Poly p = polys[static_cast<std::size_t>(set[0])];
  for (std::size_t i = 1; i < set.size(); ++i)
    p = multiply_truncated(p, polys[static_cast<std::size_t>(set[i])]);
  return p.back();
}

}  // namespace

ExpertReach expert_reach(const std::vector<double>& weights, int top_k, const SlotExperts& placement,
                         const ParallelLayout& layout, int router_groups, int router_topk_groups) {
  const auto experts = static_cast<int>(weights.size());
  if (top_k < 1 || top_k > experts)
    throw Error(fmt::format("expert reach: top_k {} with {} experts; expected 1 <= top_k <= experts", top_k,
                            experts));
  if (router_groups < 1 || experts % router_groups != 0 || router_topk_groups < 1 ||
      router_topk_groups > router_groups || top_k > router_topk_groups * (experts / router_groups))
    throw Error(
        fmt::format("expert reach: {} router groups, {} kept, of {} experts, top_k {}; expected groups "
                    "dividing the experts, 1 <= kept <= groups, and top_k within the kept groups' "
                    "experts",
                    router_groups, router_topk_groups, experts, top_k));
  const double set_count = router_group_set_count(router_groups, router_topk_groups);
  if (set_count > 100'000)
    throw Error(
        fmt::format("expert reach: {} of {} router groups make {:.0f} group sets; expected at most 100000",
                    router_topk_groups, router_groups, set_count));
  const std::vector<std::vector<int>> sets = router_group_sets(router_groups, router_topk_groups);
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
  // Each group set's e_k, its top-k sets' summed weight (0: it holds fewer than top_k experts with a
  // positive weight).
  const auto size = static_cast<std::size_t>(experts / router_groups);
  const auto k = static_cast<std::size_t>(top_k);
  std::vector<Poly> polys;
  for (int g = 0; g < router_groups; ++g)
    polys.push_back(elementary_symmetric(weights, static_cast<std::size_t>(g) * size, size, k));
  std::vector<double> set_all;
  double total = 0;
  for (const auto& set : sets) {
    set_all.push_back(set_symmetric(polys, set));
    total += set_all.back();
  }
  if (!(total > 0.0))
    throw Error(
        fmt::format("expert reach: fewer than top_k = {} experts with a positive weight in any {} "
                    "router groups",
                    top_k, router_topk_groups));
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
  // A token misses L with probability sum_G e_k(w_G (1 - h_L)) / sum_G e_k(w_G).
  const auto reach = [&](const std::vector<double>& h) {
    std::vector<double> missed(weights.size());
    for (std::size_t e = 0; e < weights.size(); ++e) missed[e] = weights[e] * (1.0 - h[e]);
    std::vector<Poly> missed_polys = polys;
    for (int g = 0; g < router_groups; ++g) {
      const auto first = static_cast<std::size_t>(g) * size;
      if (std::any_of(h.begin() + static_cast<std::ptrdiff_t>(first),
                      h.begin() + static_cast<std::ptrdiff_t>(first + size), [](double x) { return x > 0; }))
        missed_polys[static_cast<std::size_t>(g)] = elementary_symmetric(missed, first, size, k);
    }
    double missed_sum = 0;
    for (std::size_t i = 0; i < sets.size(); ++i)
      if (set_all[i] > 0) missed_sum += set_symmetric(missed_polys, sets[i]);
    return std::clamp(1.0 - missed_sum / total, 0.0, 1.0);
  };
  ExpertReach r;
  for (const auto& h : node_share) r.node.push_back(reach(h));
  for (const auto& h : device_share) r.device.push_back(reach(h));
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
  const int nodes = static_cast<int>(reach.node.size()), per_node = layout.devices_per_node();
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
