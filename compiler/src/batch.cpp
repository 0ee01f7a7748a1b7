#include "duplex/compiler/batch.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "duplex/base/error.hpp"
#include "duplex/compiler/router_groups.hpp"

namespace duplex::compiler {

std::int64_t BatchState::tokens() const {
  std::int64_t t = 0;
  for (const auto& g : groups) t += g.count * g.tokens;
  return t;
}
std::int64_t BatchState::requests() const {
  std::int64_t r = 0;
  for (const auto& g : groups) r += g.count;
  return r;
}
std::int64_t BatchState::decode_requests() const {
  std::int64_t r = 0;
  for (const auto& g : groups) r += g.decodes() ? g.count : 0;
  return r;
}
std::int64_t BatchState::prefill_tokens() const {
  std::int64_t t = 0;
  for (const auto& g : groups) t += g.decodes() ? 0 : g.count * g.tokens;
  return t;
}

BatchState BatchState::decode_batch(std::int64_t batch, std::int64_t context, std::int64_t prefill_tokens) {
  BatchState b;
  if (batch > 0) b.groups.push_back({batch, context, 1, false, false});
  if (prefill_tokens > 0) b.groups.push_back({1, 0, prefill_tokens, true, false});
  return b;
}

namespace {

// Splits `total` into integers proportional to `weights`, capped at `cap` each, summing to `total`
// (largest-remainder rounding; capped shares are redistributed over the others). Deterministic.
std::vector<std::int64_t> apportion(const std::vector<double>& weights, std::int64_t total,
                                    std::int64_t cap) {
  const std::size_t n = weights.size();
  std::vector<std::int64_t> out(n, 0);
  std::vector<bool> capped(n, false);
  std::int64_t left = total;
  for (std::size_t round = 0; round <= n && left > 0; ++round) {
    double wsum = 0;
    for (std::size_t i = 0; i < n; ++i) wsum += capped[i] ? 0.0 : weights[i];
    if (wsum <= 0) break;
    std::vector<double> share(n, 0.0);
    std::int64_t given = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (capped[i]) continue;
      share[i] = static_cast<double>(left) * weights[i] / wsum;
      const auto whole =
          std::min<std::int64_t>(static_cast<std::int64_t>(std::floor(share[i])), cap - out[i]);
      out[i] += whole;
      given += whole;
      share[i] -= static_cast<double>(whole);
    }
    left -= given;
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return share[a] > share[b]; });
    for (std::size_t i : order) {
      if (left == 0) break;
      if (capped[i] || out[i] >= cap || share[i] <= 0) continue;
      ++out[i];
      --left;
    }
    for (std::size_t i = 0; i < n; ++i) capped[i] = out[i] >= cap;
  }
  DUPLEX_ASSERT(left == 0, "routing could not place every token (tokens*top_k > tokens*experts?)");
  return out;
}

}  // namespace

std::vector<std::int64_t> Routing::expert_tokens(int moe_layer, std::int64_t tokens, int experts, int top_k,
                                                 int router_groups, int router_topk_groups) const {
  const std::int64_t total = tokens * top_k;
  if (kind == Kind::kCounts) {
    if (counts.empty()) throw Error("routing: given counts are empty");
    const auto& row = counts[static_cast<std::size_t>(moe_layer) % counts.size()];
    if (static_cast<int>(row.size()) != experts)
      throw Error("routing: a counts row has " + std::to_string(row.size()) +
                  " entries; expected one per expert (" + std::to_string(experts) + ")");
    return row;
  }
  std::vector<double> w(static_cast<std::size_t>(experts), 1.0);
  if (kind == Kind::kZipf) {  // each expert's share: the probability that a token takes it
    for (int i = 0; i < experts; ++i) w[static_cast<std::size_t>(i)] = std::pow(i + 1.0, -zipf_s);
    w = top_k_inclusion(w, top_k, router_groups, router_topk_groups);
  }
  return apportion(w, total, tokens);
}

std::vector<std::int64_t> Routing::expert_tokens_of(int moe_layer, std::int64_t tokens,
                                                    std::int64_t step_tokens, int experts, int top_k,
                                                    int router_groups, int router_topk_groups) const {
  if (kind != Kind::kCounts || tokens == step_tokens)
    return expert_tokens(moe_layer, tokens, experts, top_k, router_groups, router_topk_groups);
  const std::vector<std::int64_t> step = expert_tokens(moe_layer, step_tokens, experts, top_k);
  return apportion(std::vector<double>(step.begin(), step.end()), tokens * top_k, tokens);
}

std::vector<double> Routing::token_weights(const std::vector<std::int64_t>& layer_counts,
                                           std::int64_t tokens) const {
  std::vector<double> w(layer_counts.size(), 1.0);
  if (kind == Kind::kZipf) {
    for (std::size_t e = 0; e < w.size(); ++e) w[e] = std::pow(static_cast<double>(e + 1), -zipf_s);
  } else if (kind == Kind::kCounts && !weights.empty()) {
    if (weights.size() != layer_counts.size())
      throw Error("routing: " + std::to_string(weights.size()) +
                  " router weights; expected one per expert (" + std::to_string(layer_counts.size()) + ")");
    w = weights;
  } else if (kind == Kind::kCounts && tokens > 0) {
    for (std::size_t e = 0; e < w.size(); ++e) {
      const double pi =
          std::min(static_cast<double>(layer_counts[e]) / static_cast<double>(tokens), 1.0 - 1e-6);
      w[e] = pi / (1.0 - pi);
    }
  }
  return w;
}

}  // namespace duplex::compiler
