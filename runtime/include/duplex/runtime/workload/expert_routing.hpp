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
// Routing trace CSV (recorded routing, replayed): header `step,layer,expert,count`; each row says `count`
// token-to-expert assignments went to `expert` in MoE layer `layer` at recorded step `step`. Steps are used in
// order of their number, cyclically, one per route() call; every step must list layers 0..L-1; experts absent
// from a layer received no tokens. Each (step, layer) is scaled to the requested tokens * top_k assignments by
// largest remainder (ties: lower expert id); an expert may hold at most 1/top_k of a layer's assignments
// (it can take each token once).
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

  // Per-layer counts for `tokens` tokens (>= 0) through `layers` MoE layers of `n_experts` experts, top_k each.
  // Throws duplex::Error for top_k outside [1, n_experts], layers < 1, or a trace that does not fit the model.
  ExpertCounts route(std::int64_t tokens, std::int64_t n_experts, std::int64_t top_k, std::int64_t layers);

  // Probability that a token's top-k set contains expert e, for the synthetic kinds (sums to top_k). The
  // expected count of expert e is tokens * this.
  std::vector<double> inclusion_probabilities(std::int64_t n_experts, std::int64_t top_k) const;

  // The weights of a token's top-k set for the synthetic kinds (its probability is proportional to the
  // product of its experts'), one per expert; empty for a trace (its tokens' sets are not recorded).
  std::vector<double> token_weights(std::int64_t n_experts) const;

  Kind kind() const { return kind_; }

 private:
  ExpertRouter(Kind kind, double s, std::uint64_t seed, RoutingTrace trace);
  std::vector<double> weights(std::int64_t n_experts) const;
  // Weights and suffix symmetric polynomials for (n_experts, top_k), computed once per shape.
  void prepare(std::int64_t n_experts, std::int64_t top_k);
  std::vector<std::int64_t> sample_layer(std::int64_t tokens);
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
  std::vector<double> weights_;
  std::vector<double> suffix_;  // suffix_[e * (top_k + 1) + j] = e_j(w[e], ..., w[E-1])
};

}  // namespace duplex::runtime
