#include "duplex/runtime/workload/expert_routing.hpp"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <map>
#include <numeric>

#include "duplex/base/error.hpp"
#include "duplex/runtime/workload/csv.hpp"

namespace duplex::runtime {
namespace {

constexpr std::int64_t kMaxId = 1'000'000;
constexpr std::int64_t kMaxCount = 1'000'000'000'000;
__extension__ typedef __int128 Int128;  // exact products of counts (GCC/Clang extension)

// suffix[e][j] = e_j(w[e], ..., w[E-1]), the elementary symmetric polynomial of degree j of the weights from
// expert e on; suffix[E][0] = 1.
std::vector<std::vector<double>> suffix_symmetric(const std::vector<double>& w, std::int64_t top_k) {
  const std::size_t n = w.size();
  const auto k = static_cast<std::size_t>(top_k);
  std::vector<std::vector<double>> suffix(n + 1, std::vector<double>(k + 1, 0.0));
  suffix[n][0] = 1.0;
  for (std::size_t e = n; e-- > 0;) {
    suffix[e][0] = 1.0;
    for (std::size_t j = 1; j <= k; ++j) suffix[e][j] = suffix[e + 1][j] + w[e] * suffix[e + 1][j - 1];
  }
  return suffix;
}

// e_j of all weights but one, j = 0..k.
std::vector<double> symmetric_without(const std::vector<double>& w, std::size_t skip, std::size_t k) {
  std::vector<double> e(k + 1, 0.0);
  e[0] = 1.0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    if (i == skip) continue;
    for (std::size_t j = k; j >= 1; --j) e[j] += w[i] * e[j - 1];
  }
  return e;
}

void check_shape(std::int64_t tokens, std::int64_t n_experts, std::int64_t top_k, std::int64_t layers) {
  if (tokens < 0) throw Error(fmt::format("expert routing of {} tokens; expected >= 0", tokens));
  if (n_experts < 1) throw Error(fmt::format("expert routing over {} experts; expected >= 1", n_experts));
  if (top_k < 1 || top_k > n_experts)
    throw Error(fmt::format("expert routing top_k {} with {} experts; expected 1 <= top_k <= experts", top_k,
                            n_experts));
  if (layers < 1) throw Error(fmt::format("expert routing over {} MoE layers; expected >= 1", layers));
}

}  // namespace

RoutingTrace parse_routing_trace(std::string_view text, const std::string& label) {
  const CsvTable table = parse_csv(text, label);
  const char* const names[] = {"step", "layer", "expert", "count"};
  int cols[4];
  for (int i = 0; i < 4; ++i) {
    cols[i] = csv_column(table, names[i]);
    if (cols[i] < 0)
      throw Error(fmt::format("{}:{}: header has no {} column; expected columns step,layer,expert,count", label,
                              table.header.line, names[i]));
  }
  std::map<std::int64_t, std::map<std::int64_t, std::map<std::int64_t, std::int64_t>>> by_step;
  RoutingTrace trace;
  trace.label = label;
  for (const CsvRow& row : table.rows) {
    const std::int64_t step = csv_int(row, cols[0], "step", label, 0, kMaxId);
    const std::int64_t layer = csv_int(row, cols[1], "layer", label, 0, kMaxId);
    const std::int64_t expert = csv_int(row, cols[2], "expert", label, 0, kMaxId);
    const std::int64_t count = csv_int(row, cols[3], "count", label, 0, kMaxCount);
    auto [it, inserted] = by_step[step][layer].emplace(expert, count);
    if (!inserted)
      throw Error(fmt::format("{}:{}: step {} layer {} expert {} appears twice; expected one row per (step, layer, "
                              "expert)", label, row.line, step, layer, expert));
    trace.layers = std::max(trace.layers, layer + 1);
    trace.experts = std::max(trace.experts, expert + 1);
  }
  if (by_step.empty()) throw Error(fmt::format("{}: no rows after the header; expected routing counts", label));
  for (const auto& [step, layers] : by_step) {
    ExpertCounts counts(static_cast<std::size_t>(trace.layers),
                        std::vector<std::int64_t>(static_cast<std::size_t>(trace.experts), 0));
    for (std::int64_t layer = 0; layer < trace.layers; ++layer) {
      const auto it = layers.find(layer);
      std::int64_t total = 0;
      if (it != layers.end())
        for (const auto& [expert, count] : it->second) {
          counts[static_cast<std::size_t>(layer)][static_cast<std::size_t>(expert)] = count;
          total += count;
        }
      if (total == 0)
        throw Error(fmt::format("{}: step {} has no tokens in layer {}; expected every step to list layers 0..{} "
                                "with a positive count", label, step, layer, trace.layers - 1));
    }
    trace.steps.push_back(std::move(counts));
    trace.step_numbers.push_back(step);
  }
  return trace;
}

ExpertRouter::ExpertRouter(Kind kind, double s, std::uint64_t seed, RoutingTrace trace)
    : kind_(kind), s_(s), rng_(seed), trace_(std::move(trace)) {}

ExpertRouter ExpertRouter::uniform(std::uint64_t seed) { return ExpertRouter(Kind::uniform, 0.0, seed, {}); }

ExpertRouter ExpertRouter::zipf(double s, std::uint64_t seed) {
  // Above s = 10 the tail weights (256^-10) approach double underflow in the symmetric polynomials.
  if (!(s >= 0.0 && s <= 10.0)) throw Error(fmt::format("Zipf exponent s = {}; expected 0 <= s <= 10", s));
  return ExpertRouter(Kind::zipf, s, seed, {});
}

ExpertRouter ExpertRouter::from_trace(RoutingTrace trace) {
  DUPLEX_ASSERT(!trace.steps.empty(), "routing trace without steps");
  return ExpertRouter(Kind::trace, 0.0, 0, std::move(trace));
}

std::vector<double> ExpertRouter::weights(std::int64_t n_experts) const {
  std::vector<double> w(static_cast<std::size_t>(n_experts), 1.0);
  if (kind_ == Kind::zipf)
    for (std::size_t e = 0; e < w.size(); ++e) w[e] = std::pow(static_cast<double>(e + 1), -s_);
  return w;
}

std::vector<double> ExpertRouter::token_weights(std::int64_t n_experts) const {
  return kind_ == Kind::trace ? std::vector<double>{} : weights(n_experts);
}

std::vector<double> ExpertRouter::inclusion_probabilities(std::int64_t n_experts, std::int64_t top_k) const {
  DUPLEX_ASSERT(kind_ != Kind::trace, "inclusion probabilities of a routing trace");
  check_shape(0, n_experts, top_k, 1);
  const std::vector<double> w = weights(n_experts);
  const auto k = static_cast<std::size_t>(top_k);
  const double all = suffix_symmetric(w, top_k)[0][k];
  std::vector<double> p(w.size());
  for (std::size_t e = 0; e < w.size(); ++e) p[e] = w[e] * symmetric_without(w, e, k)[k - 1] / all;
  return p;
}

void ExpertRouter::prepare(std::int64_t n_experts, std::int64_t top_k) {
  if (prepared_experts_ == n_experts && prepared_top_k_ == top_k) return;
  weights_ = weights(n_experts);
  const auto suffix = suffix_symmetric(weights_, top_k);
  const auto k = static_cast<std::size_t>(top_k);
  suffix_.assign((weights_.size() + 1) * (k + 1), 0.0);
  for (std::size_t e = 0; e <= weights_.size(); ++e)
    for (std::size_t j = 0; j <= k; ++j) suffix_[e * (k + 1) + j] = suffix[e][j];
  prepared_experts_ = n_experts;
  prepared_top_k_ = top_k;
}

std::vector<std::int64_t> ExpertRouter::sample_layer(std::int64_t tokens) {
  const auto k = static_cast<std::size_t>(prepared_top_k_);
  const std::size_t stride = k + 1;
  // needing[j]: tokens that still need j more experts from those not visited yet.
  std::vector<std::int64_t> needing(k + 1, 0);
  needing[k] = tokens;
  std::vector<std::int64_t> counts(weights_.size(), 0);
  std::vector<std::int64_t> chose(k + 1, 0);
  for (std::size_t e = 0; e < weights_.size(); ++e) {
    for (std::size_t j = 1; j <= k; ++j) {
      chose[j] = 0;
      if (needing[j] == 0) continue;
      const double p = std::min(1.0, weights_[e] * suffix_[(e + 1) * stride + j - 1] / suffix_[e * stride + j]);
      chose[j] = rng_.binomial(needing[j], p);
      counts[e] += chose[j];
    }
    for (std::size_t j = 1; j <= k; ++j) {
      needing[j] -= chose[j];
      needing[j - 1] += chose[j];
    }
  }
  DUPLEX_ASSERT(needing[0] == tokens, "routing left tokens with fewer than top_k experts");
  return counts;
}

std::vector<std::int64_t> ExpertRouter::scale_trace_layer(const std::vector<std::int64_t>& recorded,
                                                          std::int64_t tokens, std::int64_t n_experts,
                                                          std::int64_t top_k, std::int64_t step,
                                                          std::int64_t layer) const {
  const std::int64_t total = std::accumulate(recorded.begin(), recorded.end(), std::int64_t{0});
  const std::int64_t target = tokens * top_k;
  std::vector<std::int64_t> out(static_cast<std::size_t>(n_experts), 0);
  std::vector<std::pair<std::int64_t, std::size_t>> remainders;  // (remainder, expert)
  std::int64_t assigned = 0;
  for (std::size_t e = 0; e < recorded.size(); ++e) {
    if (recorded[e] * top_k > total)
      throw Error(fmt::format("{}: recorded step {} layer {}: expert {} has {} of {} assignments; with top_k {} an "
                              "expert takes each token at most once, so at most {}",
                              trace_.label, step, layer, e, recorded[e], total, top_k, total / top_k));
    // Exact in 128 bits: recorded * target can exceed 2^63 for long traces.
    const Int128 scaled = static_cast<Int128>(recorded[e]) * target;
    out[e] = static_cast<std::int64_t>(scaled / total);
    remainders.emplace_back(static_cast<std::int64_t>(scaled % total), e);
    assigned += out[e];
  }
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (std::size_t i = 0; assigned < target; ++i, ++assigned) ++out[remainders[i].second];
  return out;
}

ExpertCounts ExpertRouter::route(std::int64_t tokens, std::int64_t n_experts, std::int64_t top_k,
                                 std::int64_t layers) {
  check_shape(tokens, n_experts, top_k, layers);
  ExpertCounts out;
  out.reserve(static_cast<std::size_t>(layers));
  if (kind_ == Kind::trace) {
    if (trace_.layers != layers || trace_.experts > n_experts)
      throw Error(fmt::format("{}: routing trace has {} MoE layers and experts 0..{}; the model has {} MoE layers "
                              "and {} experts (expected equal layers and no expert id beyond the model's)",
                              trace_.label, trace_.layers, trace_.experts - 1, layers, n_experts));
    const std::size_t index = next_trace_step_;
    next_trace_step_ = (next_trace_step_ + 1) % trace_.steps.size();
    for (std::int64_t l = 0; l < layers; ++l)
      out.push_back(scale_trace_layer(trace_.steps[index][static_cast<std::size_t>(l)], tokens, n_experts, top_k,
                                      trace_.step_numbers[index], l));
    return out;
  }
  prepare(n_experts, top_k);
  for (std::int64_t l = 0; l < layers; ++l) out.push_back(sample_layer(tokens));
  return out;
}

}  // namespace duplex::runtime
