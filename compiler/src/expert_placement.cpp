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

SlotExperts balance_experts(const std::vector<double>& load, int slots, int groups) {
  const auto experts = static_cast<int>(load.size());
  if (experts < 1 || slots < experts || groups < 1 || slots % groups != 0)
    throw Error(
        fmt::format("expert placement: {} slots for {} experts over {} groups; expected slots >= "
                    "experts >= 1 and slots a multiple of groups",
                    slots, experts, groups));
  for (int e = 0; e < experts; ++e)
    if (!(std::isfinite(load[static_cast<std::size_t>(e)]) && load[static_cast<std::size_t>(e)] >= 0))
      throw Error(fmt::format("expert placement: expert {} has load {}; expected a finite load >= 0", e,
                              load[static_cast<std::size_t>(e)]));
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
  // balanced_packing: the copies heaviest first (ties: the earlier copy) to the lightest group with room.
  std::vector<int> order(static_cast<std::size_t>(slots));
  std::iota(order.begin(), order.end(), 0);
  auto weight = [&](int c) {
    const int e = copy_of[static_cast<std::size_t>(c)];
    return load[static_cast<std::size_t>(e)] / copies[static_cast<std::size_t>(e)];
  };
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return weight(a) > weight(b); });
  const int per_group = slots / groups;
  std::vector<double> group_load(static_cast<std::size_t>(groups), 0.0);
  std::vector<int> filled(static_cast<std::size_t>(groups), 0);
  SlotExperts placement(static_cast<std::size_t>(slots), -1);
  for (const int c : order) {
    int g = -1;
    for (int h = 0; h < groups; ++h)
      if (filled[static_cast<std::size_t>(h)] < per_group &&
          (g < 0 || group_load[static_cast<std::size_t>(h)] < group_load[static_cast<std::size_t>(g)]))
        g = h;
    const auto gi = static_cast<std::size_t>(g);
    placement[static_cast<std::size_t>(g * per_group + filled[gi])] = copy_of[static_cast<std::size_t>(c)];
    ++filled[gi];
    group_load[gi] += weight(c);
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
