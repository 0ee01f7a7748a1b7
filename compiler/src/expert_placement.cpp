#include "duplex/compiler/expert_placement.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>

#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::compiler {

SlotExperts default_placement(int experts, int slots) {
  if (experts < 1 || slots < experts)
    throw Error(fmt::format("expert placement: {} slots for {} experts; expected slots >= experts >= 1",
                            slots, experts));
  SlotExperts p(static_cast<std::size_t>(slots));
  for (int s = 0; s < slots; ++s) p[static_cast<std::size_t>(s)] = s % experts;
  return p;
}

namespace {

// balanced_packing: items of `weight`, heaviest first (ties: the earlier item), each to the pack with the
// least weight among those with fewer than items / packs items (ties: the lower pack). Returns each item's
// pack and its rank in it (the order it arrived).
struct Packed {
  std::vector<int> pack, rank;
};
Packed balanced_packing(const std::vector<double>& weight, int packs) {
  const auto items = static_cast<int>(weight.size());
  std::vector<int> order(static_cast<std::size_t>(items));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return weight[static_cast<std::size_t>(a)] > weight[static_cast<std::size_t>(b)];
  });
  const int per_pack = items / packs;
  std::vector<double> load(static_cast<std::size_t>(packs), 0.0);
  std::vector<int> filled(static_cast<std::size_t>(packs), 0);
  Packed out{std::vector<int>(static_cast<std::size_t>(items)),
             std::vector<int>(static_cast<std::size_t>(items))};
  for (const int i : order) {
    int g = -1;
    for (int h = 0; h < packs; ++h)
      if (filled[static_cast<std::size_t>(h)] < per_pack &&
          (g < 0 || load[static_cast<std::size_t>(h)] < load[static_cast<std::size_t>(g)]))
        g = h;
    const auto gi = static_cast<std::size_t>(g);
    out.pack[static_cast<std::size_t>(i)] = g;
    out.rank[static_cast<std::size_t>(i)] = filled[gi]++;
    load[gi] += weight[static_cast<std::size_t>(i)];
  }
  return out;
}

// DeepSeek's replicate_experts then balanced_packing of the copies over `groups` (the global policy's body,
// the hierarchical policy's per node): the placement of `load.size()` experts (indices into `load`).
SlotExperts replicate_and_pack(const std::vector<double>& load, int slots, int groups) {
  const auto experts = static_cast<int>(load.size());
  // replicate_experts: each redundant slot to the expert with the most load per copy.
  std::vector<int> copies(static_cast<std::size_t>(experts), 1);
  std::vector<int> copy_of(
      static_cast<std::size_t>(experts));  // the expert of each copy, in order of creation
  std::iota(copy_of.begin(), copy_of.end(), 0);
  for (int r = experts; r < slots; ++r) {
    int best = 0;
    for (int e = 1; e < experts; ++e)
      if (load[static_cast<std::size_t>(e)] / copies[static_cast<std::size_t>(e)] >
          load[static_cast<std::size_t>(best)] / copies[static_cast<std::size_t>(best)])
        best = e;
    ++copies[static_cast<std::size_t>(best)];
    copy_of.push_back(best);
  }
  // balanced_packing of the copies, each carrying its expert's load / copies.
  std::vector<double> weight(static_cast<std::size_t>(slots));
  for (int c = 0; c < slots; ++c) {
    const auto e = static_cast<std::size_t>(copy_of[static_cast<std::size_t>(c)]);
    weight[static_cast<std::size_t>(c)] = load[e] / copies[e];
  }
  const Packed packed = balanced_packing(weight, groups);
  const int per_group = slots / groups;
  SlotExperts placement(static_cast<std::size_t>(slots), -1);
  for (int c = 0; c < slots; ++c)
    placement[static_cast<std::size_t>(packed.pack[static_cast<std::size_t>(c)] * per_group +
                                       packed.rank[static_cast<std::size_t>(c)])] =
        copy_of[static_cast<std::size_t>(c)];
  return placement;
}

void check_loads(const std::vector<double>& load) {
  for (std::size_t e = 0; e < load.size(); ++e)
    if (!(std::isfinite(load[e]) && load[e] >= 0))
      throw Error(
          fmt::format("expert placement: expert {} has load {}; expected a finite load >= 0", e, load[e]));
}

}  // namespace

SlotExperts balance_experts(const std::vector<double>& load, int slots, int groups) {
  const auto experts = static_cast<int>(load.size());
  if (experts < 1 || slots < experts || groups < 1 || slots % groups != 0)
    throw Error(
        fmt::format("expert placement: {} slots for {} experts over {} groups; expected slots >= "
                    "experts >= 1 and slots a multiple of groups",
                    slots, experts, groups));
  check_loads(load);
  return replicate_and_pack(load, slots, groups);
}

SlotExperts balance_experts_hierarchical(const std::vector<double>& load, int slots, int groups,
                                         int expert_groups, int nodes) {
  const auto experts = static_cast<int>(load.size());
  if (experts < 1 || slots < experts || groups < 1 || slots % groups != 0 || expert_groups < 1 ||
      experts % expert_groups != 0 || nodes < 1 || expert_groups % nodes != 0 || groups % nodes != 0)
    throw Error(fmt::format(
        "expert placement: {} slots for {} experts in {} expert groups over {} groups on {} nodes; expected "
        "slots >= experts >= 1, slots a multiple of groups, experts of expert groups, expert groups and "
        "groups of nodes",
        slots, experts, expert_groups, groups, nodes));
  check_loads(load);
  // The expert groups (consecutive experts) packed to the nodes by their summed load.
  const int group_size = experts / expert_groups;
  std::vector<double> group_load(static_cast<std::size_t>(expert_groups), 0.0);
  for (int e = 0; e < experts; ++e)
    group_load[static_cast<std::size_t>(e / group_size)] += load[static_cast<std::size_t>(e)];
  const Packed to_node = balanced_packing(group_load, nodes);
  // Each node's experts (its expert groups in the order they arrived), replicated and packed to its groups.
  const int node_experts = experts / nodes, node_slots = slots / nodes;
  SlotExperts placement(static_cast<std::size_t>(slots), -1);
  for (int n = 0; n < nodes; ++n) {
    std::vector<int> expert_of(static_cast<std::size_t>(node_experts), -1);
    for (int x = 0; x < expert_groups; ++x)
      if (to_node.pack[static_cast<std::size_t>(x)] == n)
        for (int j = 0; j < group_size; ++j)
          expert_of[static_cast<std::size_t>(to_node.rank[static_cast<std::size_t>(x)] * group_size + j)] =
              x * group_size + j;
    std::vector<double> node_load(static_cast<std::size_t>(node_experts));
    for (int m = 0; m < node_experts; ++m)
      node_load[static_cast<std::size_t>(m)] =
          load[static_cast<std::size_t>(expert_of[static_cast<std::size_t>(m)])];
    const SlotExperts node = replicate_and_pack(node_load, node_slots, groups / nodes);
    for (int s = 0; s < node_slots; ++s)
      placement[static_cast<std::size_t>(n * node_slots + s)] =
          expert_of[static_cast<std::size_t>(node[static_cast<std::size_t>(s)])];
  }
  return placement;
}

std::vector<std::int64_t> slot_rows(const SlotExperts& placement, const std::vector<std::int64_t>& counts) {
  const auto experts = static_cast<int>(counts.size());
  std::vector<std::int64_t> copies(counts.size(), 0);
  for (std::size_t s = 0; s < placement.size(); ++s) {
    const int e = placement[s];
    if (e < 0 || e >= experts)
      throw Error(
          fmt::format("expert placement: slot {} holds expert {}; expected 0..{}", s, e, experts - 1));
    ++copies[static_cast<std::size_t>(e)];
  }
  for (int e = 0; e < experts; ++e)
    if (counts[static_cast<std::size_t>(e)] > 0 && copies[static_cast<std::size_t>(e)] == 0)
      throw Error(fmt::format("expert placement: expert {} receives {} rows but no slot holds it", e,
                              counts[static_cast<std::size_t>(e)]));
  std::vector<std::int64_t> rows(placement.size(), 0), seen(counts.size(), 0);
  for (std::size_t s = 0; s < placement.size(); ++s) {
    const auto e = static_cast<std::size_t>(placement[s]);
    const std::int64_t n = counts[e], k = copies[e];
    rows[s] = n / k + (seen[e]++ < n % k ? 1 : 0);
  }
  return rows;
}

BusiestGroup busiest_group(const std::vector<std::int64_t>& rows_of_slots, int groups) {
  DUPLEX_ASSERT(groups >= 1 && rows_of_slots.size() % static_cast<std::size_t>(groups) == 0,
                "busiest_group: slots not divisible by groups");
  const std::size_t per_group = rows_of_slots.size() / static_cast<std::size_t>(groups);
  BusiestGroup best{0, -1};
  for (int g = 0; g < groups; ++g) {
    std::int64_t rows = 0;
    for (std::size_t s = 0; s < per_group; ++s)
      rows += rows_of_slots[static_cast<std::size_t>(g) * per_group + s];
    if (rows > best.rows) best = {g, rows};
  }
  return best;
}

}  // namespace duplex::compiler
