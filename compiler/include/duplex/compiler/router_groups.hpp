#pragma once
// Routing's token model (the runtime's synthetic routers, runtime/workload/expert_routing.hpp; the
// all-to-all's reach, expert_reach.hpp): a token's top-k set S of experts has probability proportional to the
// product of its experts' weights w (conditional Poisson). Under a group-limited router (DeepSeek's n_group /
// topk_group: ModelSpec::router_groups, router_topk_groups) a token keeps a set G of `kept` of the router's
// `groups` groups of consecutive experts and takes S among G's experts, the pair (G, S) with probability
// proportional to the product of S's weights (G with probability proportional to e_k(w_G)).
#include <cstddef>
#include <vector>

namespace duplex::compiler {

// Polynomials in x truncated at degree k, coefficient j at [j]: e_0..e_k of a set of weights.
using SymmetricPoly = std::vector<double>;

// e_0..e_k of the weights w[first, first + count), but w[skip] (none when skip is outside the range).
SymmetricPoly elementary_symmetric(const std::vector<double>& w, std::size_t first, std::size_t count,
                                   std::size_t k, std::size_t skip = static_cast<std::size_t>(-1));

// a x b truncated at a's degree (e_j of two disjoint sets' union from theirs).
SymmetricPoly multiply_truncated(const SymmetricPoly& a, const SymmetricPoly& b);

// The group sets of a group-limited router: each `kept` of `groups` (ascending), in lexicographic order;
// one set {0} for (1, 1). Expects 1 <= kept <= groups.
std::vector<std::vector<int>> router_group_sets(int groups, int kept);

// C(groups, kept), in double (the group sets' count before they are listed).
double router_group_set_count(int groups, int kept);

// P(e in S) for every expert e under that model (sums to top_k): sum_G w_e e_{k-1}(w_G without e) / sum_G
// e_k(w_G), e_j the elementary symmetric polynomials. `weights` >= 0, at least top_k of every group set's
// positive. Throws duplex::Error for top_k outside [1, experts], groups not dividing the experts, kept
// outside [1, groups], top_k beyond the kept groups' experts, or more than 100,000 group sets.
std::vector<double> top_k_inclusion(const std::vector<double>& weights, int top_k, int groups = 1,
                                    int kept = 1);

}  // namespace duplex::compiler
