#include "duplex/compiler/router_groups.hpp"

#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::compiler {

SymmetricPoly elementary_symmetric(const std::vector<double>& w, std::size_t first, std::size_t count,
                                   std::size_t k, std::size_t skip) {
  SymmetricPoly e(k + 1, 0.0);
  e[0] = 1.0;
  for (std::size_t i = first; i < first + count; ++i) {
    if (i == skip) continue;
    for (std::size_t j = k; j >= 1; --j) e[j] += w[i] * e[j - 1];
  }
  return e;
}

SymmetricPoly multiply_truncated(const SymmetricPoly& a, const SymmetricPoly& b) {
  SymmetricPoly c(a.size(), 0.0);
  for (std::size_t i = 0; i < a.size(); ++i)
    for (std::size_t j = 0; i + j < c.size() && j < b.size(); ++j) c[i + j] += a[i] * b[j];
  return c;
}

std::vector<std::vector<int>> router_group_sets(int groups, int kept) {
  DUPLEX_ASSERT(kept >= 1 && kept <= groups, "router group sets of kept in [1, groups]");
  std::vector<std::vector<int>> sets;
  std::vector<int> set;
  const auto extend = [&](const auto& self, int from) -> void {
    if (static_cast<int>(set.size()) == kept) {
      sets.push_back(set);
      return;
    }
    for (int g = from; g < groups; ++g) {
      set.push_back(g);
      self(self, g + 1);
      set.pop_back();
    }
  };
  extend(extend, 0);
  return sets;
}

double router_group_set_count(int groups, int kept) {
  double count = 1;
  for (int i = 0; i < kept; ++i) count = count * (groups - i) / (i + 1);
  return count;
}

std::vector<double> top_k_inclusion(const std::vector<double>& weights, int top_k, int groups, int kept) {
  const auto experts = static_cast<int>(weights.size());
  if (top_k < 1 || top_k > experts)
    throw Error(
        fmt::format("routing: top_k {} with {} experts; expected 1 <= top_k <= experts", top_k, experts));
  if (groups < 1 || experts % groups != 0 || kept < 1 || kept > groups || top_k > kept * (experts / groups))
    throw Error(
        fmt::format("routing: {} router groups, {} kept, of {} experts, top_k {}; expected groups dividing "
                    "the experts, 1 "
                    "<= kept <= groups, and top_k within the kept groups' experts",
                    groups, kept, experts, top_k));
  if (router_group_set_count(groups, kept) > 100'000)
    throw Error(fmt::format("routing: {} of {} router groups make {:.0f} group sets; expected at most 100000",
                            kept, groups, router_group_set_count(groups, kept)));
  const auto k = static_cast<std::size_t>(top_k);
  const auto size = static_cast<std::size_t>(experts / groups);
  std::vector<SymmetricPoly> polys, without;  // each group's e_0..e_k; each expert's group's without it
  for (int g = 0; g < groups; ++g) {
    const std::size_t first = static_cast<std::size_t>(g) * size;
    polys.push_back(elementary_symmetric(weights, first, size, k));
    for (std::size_t e = first; e < first + size; ++e)
      without.push_back(elementary_symmetric(weights, first, size, k, e));
  }
  std::vector<double> p(weights.size(), 0.0);
  double total = 0;
  for (const std::vector<int>& set : router_group_sets(groups, kept)) {
    // e_j of the set's other groups, times each expert's e_{k-1} within its own group without it.
    for (std::size_t a = 0; a < set.size(); ++a) {
      SymmetricPoly others(k + 1, 0.0);
      others[0] = 1.0;
      for (std::size_t b = 0; b < set.size(); ++b)
        if (b != a) others = multiply_truncated(others, polys[static_cast<std::size_t>(set[b])]);
      const std::size_t first = static_cast<std::size_t>(set[a]) * size;
      if (a == 0) total += multiply_truncated(others, polys[static_cast<std::size_t>(set[a])])[k];
      for (std::size_t e = first; e < first + size; ++e)
        p[e] += weights[e] * multiply_truncated(others, without[e])[k - 1];
    }
  }
  if (!(total > 0.0))
    throw Error(
        fmt::format("routing: fewer than top_k = {} experts with a positive weight in any {} router "
                    "groups",
                    top_k, kept));
  for (double& x : p) x /= total;
  return p;
}

}  // namespace duplex::compiler
