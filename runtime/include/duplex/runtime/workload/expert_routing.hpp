#pragma once
// Expert routing for MoE layers: how many of a step's tokens each expert receives, per MoE layer.
//
// Synthetic routing draws each token's top-k set (k distinct experts) with probability proportional to the
// product of its experts' weights (conditional Poisson sampling):
//   uniform:  all weights 1, so every k-subset is equally likely (each token picks k distinct experts
//             uniformly; the paper's setting, DUPLEX.md section 8);
//   zipf(s):  expert e (0-based) has weight 1 / (e + 1)^s, so expert 0 is the hottest in every layer; for
//             top_k = 1 this is exactly a Zipf(s) law over experts.
// Counts are sampled in aggregate, exactly: experts are visited in order and, for the tokens still needing
// j experts, the number choosing this one is Binomial(n_j, w_e e_{j-1}(rest) / e_j(this and rest)), e_j the
// elementary symmetric polynomials of the remaining weights. O(experts * top_k) binomial draws per layer,
// independent of the token count.
//
// Group-limited routing (DeepSeek's n_group / topk_group: ModelSpec::router_groups, router_topk_groups, as
// compiler/expert_reach.hpp defines it): a token keeps a set G of `router_topk_groups` of the router's groups
// of consecutive experts and takes its top-k set S among G's experts, the pair (G, S) with probability
// proportional to the product of S's weights, so G has probability proportional to e_k(w_G). Sampled in
// aggregate too: the tokens are dealt to the C(groups, kept) group sets by sequential binomials (a
// multinomial over the sets' masses e_k(w_G)); a set's tokens needing j experts from its groups t.. take i
// from group t with probability e_i(w_t) e_{j-i}(w of groups t+1..) / e_j(w of groups t..) (a multinomial
// over i); then each group's tokens, needing i experts from it, choose among its experts as above. Exact, and
// O(experts * top_k + sets * kept * top_k^2) draws per layer at most, a set without tokens costing none. With
// one group (no limit) the draws are those of the plain sampler. With uniform weights every expert's count
// has the same law as without the limit; under Zipf the limit concentrates the tokens in the sets holding
// the hot experts' group.
//
// Routing trace CSV (recorded routing, replayed): header `step,layer,expert,count`; each row says `count`
// token-to-expert assignments went to `expert` in MoE layer `layer` at recorded step `step`. Steps are used
// in order of their number, cyclically, one per route() call; every step must list layers 0..L-1; experts
// absent from a layer received no tokens. Each (step, layer) is scaled to the requested tokens * top_k
// assignments by largest remainder (ties: lower expert id); an expert may hold at most 1/top_k of a layer's
// assignments (it can take each token once).
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "duplex/runtime/workload/random.hpp"

namespace duplex::runtime {

// counts[layer][expert]: tokens routed to that expert; each layer sums to tokens * top_k and no entry exceeds
// tokens.
using ExpertCounts = std::vector<std::vector<std::int64_t>>;

struct RoutingTrace {
  std::string label;  // the file, for errors
  // steps[i][layer][expert] = recorded assignments, steps in increasing step number.
  std::vector<ExpertCounts> steps;
  std::vector<std::int64_t> step_numbers;  // the recorded step number of each entry of `steps`
  std::int64_t layers = 0;
  std::int64_t experts = 0;  // 1 + the largest expert id seen
};

RoutingTrace parse_routing_trace(std::string_view text, const std::string& label);

class ExpertRouter {
 public:
  enum class Kind : std::uint8_t { uniform, zipf, trace };

  static ExpertRouter uniform(std::uint64_t seed);
  // Throws duplex::Error unless 0 <= s <= 10.
  static ExpertRouter zipf(double s, std::uint64_t seed);
  static ExpertRouter from_trace(RoutingTrace trace);

  // Per-layer counts for `tokens` tokens (>= 0) through `layers` MoE layers of `n_experts` experts, top_k
  // each, the synthetic kinds limited to `topk_groups` of `groups` router groups (1, 1: no limit; a trace's
  // counts are its own). Throws duplex::Error for top_k outside [1, n_experts], layers < 1, groups not
  // dividing the experts, topk_groups outside [1, groups], top_k beyond the kept groups' experts, more than
  // kMaxGroupSets group sets, or a trace that does not fit the model.
  ExpertCounts route(std::int64_t tokens, std::int64_t n_experts, std::int64_t top_k, std::int64_t layers,
                     int groups = 1, int topk_groups = 1);

  // Probability that a token's top-k set contains expert e, for the synthetic kinds (sums to top_k), under
  // the group limit as route() takes it. The expected count of expert e is tokens * this.
  std::vector<double> inclusion_probabilities(std::int64_t n_experts, std::int64_t top_k, int groups = 1,
                                              int topk_groups = 1) const;

  // The most group sets (C(groups, topk_groups)) route() samples over: DeepSeek-V3's are 70, V2's 56.
  static constexpr int kMaxGroupSets = 4096;

  // The weights of a token's top-k set for the synthetic kinds (its probability is proportional to the
  // product of its experts'), one per expert; empty for a trace (its tokens' sets are not recorded).
  std::vector<double> token_weights(std::int64_t n_experts) const;

  Kind kind() const { return kind_; }

 private:
  ExpertRouter(Kind kind, double s, std::uint64_t seed, RoutingTrace trace);
  // A router group of consecutive experts: its weights and what sampling among them needs.
  struct ExpertGroup {
    std::int64_t first = 0;       // its first expert
    std::vector<double> weights;  // its experts'
    std::vector<double> suffix;   // suffix[i * (top_k + 1) + j] = e_j(weights[i], ..., weights[end - 1])
    std::vector<double> poly;     // poly[j] = e_j(weights), j = 0..top_k
  };
  // A group set a token may keep: its groups and, for dealing a token's top_k experts over them, tail[t *
  // (top_k + 1) + j] = e_j of the experts of its groups from the t-th on (t = its group count: 1 at j = 0).
  struct GroupSet {
    std::vector<int> groups;
    std::vector<double> tail;
    double mass = 0;  // e_top_k of its experts' weights (tail[top_k]): its share of the tokens
  };
  std::vector<double> weights(std::int64_t n_experts) const;
  // The groups and group sets for (n_experts, top_k, groups, topk_groups), computed once per shape.
  void prepare(std::int64_t n_experts, std::int64_t top_k, int groups, int topk_groups);
  std::vector<std::int64_t> sample_layer(std::int64_t tokens);
  // Deals `tokens` tokens keeping `set` their top_k experts over its groups: adds to needing[g][i] the tokens
  // that take i experts from group g.
  void deal_over_groups(const GroupSet& set, std::int64_t tokens,
                        std::vector<std::vector<std::int64_t>>& needing);
  // Adds to counts the experts group's tokens choose, needing[i] of them taking i experts from it.
  void sample_group(const ExpertGroup& group, std::vector<std::int64_t> needing,
                    std::vector<std::int64_t>& counts);
  std::vector<std::int64_t> scale_trace_layer(const std::vector<std::int64_t>& recorded, std::int64_t tokens,
                                              std::int64_t n_experts, std::int64_t top_k, std::int64_t step,
                                              std::int64_t layer) const;

  Kind kind_;
  double s_ = 0.0;
  Rng rng_;
  RoutingTrace trace_;
  std::size_t next_trace_step_ = 0;
  std::int64_t prepared_experts_ = 0;
  std::int64_t prepared_top_k_ = 0;
  int prepared_groups_ = 0, prepared_topk_groups_ = 0;
  std::vector<ExpertGroup> groups_;
  std::vector<GroupSet> sets_;
};

}  // namespace duplex::runtime
