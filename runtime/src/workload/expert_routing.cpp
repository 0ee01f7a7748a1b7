#include "duplex/runtime/workload/expert_routing.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "duplex/base/error.hpp"
#include "duplex/compiler/router_groups.hpp"
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

void check_shape(std::int64_t tokens, std::int64_t n_experts, std::int64_t top_k, std::int64_t layers) {
  if (tokens < 0) throw Error(fmt::format("expert routing of {} tokens; expected >= 0", tokens));
  if (n_experts < 1) throw Error(fmt::format("expert routing over {} experts; expected >= 1", n_experts));
  if (top_k < 1 || top_k > n_experts)
    throw Error(fmt::format("expert routing top_k {} with {} experts; expected 1 <= top_k <= experts", top_k,
                            n_experts));
  if (layers < 1) throw Error(fmt::format("expert routing over {} MoE layers; expected >= 1", layers));
}

// The group sets of a group-limited router (compiler::router_group_sets). Throws duplex::Error for a limit
// that does not fit the experts or makes more than `max_sets` sets.
std::vector<std::vector<int>> group_sets(std::int64_t n_experts, std::int64_t top_k, int groups, int kept,
                                         int max_sets) {
  if (groups < 1 || n_experts % groups != 0 || kept < 1 || kept > groups ||
      top_k > kept * (n_experts / groups))
    throw Error(
        fmt::format("expert routing with {} router groups, {} kept, of {} experts, top_k {}; expected groups "
                    "dividing the experts, 1 <= kept <= groups, and top_k within the kept groups' experts",
                    groups, kept, n_experts, top_k));
  if (compiler::router_group_set_count(groups, kept) > max_sets)
    throw Error(
        fmt::format("expert routing with {} of {} router groups kept: {:.0f} group sets; expected at most {}",
                    kept, groups, compiler::router_group_set_count(groups, kept), max_sets));
  return compiler::router_group_sets(groups, kept);
}

}  // namespace

RoutingTrace parse_routing_trace(std::string_view text, const std::string& label) {
  const CsvTable table = parse_csv(text, label);
  const char* const names[] = {"step", "layer", "expert", "count"};
  int cols[4];
  for (int i = 0; i < 4; ++i) {
    cols[i] = csv_column(table, names[i]);
    if (cols[i] < 0)
      throw Error(fmt::format("{}:{}: header has no {} column; expected columns step,layer,expert,count",
                              label, table.header.line, names[i]));
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
      throw Error(
          fmt::format("{}:{}: step {} layer {} expert {} appears twice; expected one row per (step, layer, "
                      "expert)",
                      label, row.line, step, layer, expert));
    trace.layers = std::max(trace.layers, layer + 1);
    trace.experts = std::max(trace.experts, expert + 1);
  }
  if (by_step.empty())
    throw Error(fmt::format("{}: no rows after the header; expected routing counts", label));
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
        throw Error(
            fmt::format("{}: step {} has no tokens in layer {}; expected every step to list layers 0..{} "
                        "with a positive count",
                        label, step, layer, trace.layers - 1));
    }
    trace.steps.push_back(std::move(counts));
    trace.step_numbers.push_back(step);
  }
  return trace;
}

ExpertRouter::ExpertRouter(Kind kind, double s, std::uint64_t seed, RoutingTrace trace)
    : kind_(kind), s_(s), rng_(seed), trace_(std::move(trace)) {}

ExpertRouter ExpertRouter::uniform(std::uint64_t seed) {
  return ExpertRouter(Kind::uniform, 0.0, seed, {});
}

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

std::vector<double> ExpertRouter::inclusion_probabilities(std::int64_t n_experts, std::int64_t top_k,
                                                          int groups, int topk_groups) const {
  DUPLEX_ASSERT(kind_ != Kind::trace, "inclusion probabilities of a routing trace");
  check_shape(0, n_experts, top_k, 1);
  group_sets(n_experts, top_k, groups, topk_groups, kMaxGroupSets);  // route()'s checks
  return compiler::top_k_inclusion(weights(n_experts), static_cast<int>(top_k), groups, topk_groups);
}

void ExpertRouter::prepare(std::int64_t n_experts, std::int64_t top_k, int groups, int topk_groups) {
  if (prepared_experts_ == n_experts && prepared_top_k_ == top_k && prepared_groups_ == groups &&
      prepared_topk_groups_ == topk_groups)
    return;
  const std::vector<std::vector<int>> sets = group_sets(n_experts, top_k, groups, topk_groups, kMaxGroupSets);
  const std::vector<double> w = weights(n_experts);
  const auto k = static_cast<std::size_t>(top_k);
  const std::int64_t size = n_experts / groups;
  groups_.clear();
  for (int g = 0; g < groups; ++g) {
    ExpertGroup group;
    group.first = g * size;
    group.weights.assign(w.begin() + group.first, w.begin() + group.first + size);
    const auto suffix = suffix_symmetric(group.weights, top_k);
    group.suffix.assign(suffix.size() * (k + 1), 0.0);
    for (std::size_t i = 0; i < suffix.size(); ++i)
      for (std::size_t j = 0; j <= k; ++j) group.suffix[i * (k + 1) + j] = suffix[i][j];
    group.poly = suffix[0];
    groups_.push_back(std::move(group));
  }
  sets_.clear();
  for (const std::vector<int>& groups_kept : sets) {
    GroupSet set;
    set.groups = groups_kept;
    const std::size_t m = groups_kept.size();
    set.tail.assign((m + 1) * (k + 1), 0.0);
    set.tail[m * (k + 1)] = 1.0;
    for (std::size_t t = m; t-- > 0;) {  // tail_t = poly of group t x tail_{t+1}, truncated at k
      const std::vector<double>& poly = groups_[static_cast<std::size_t>(groups_kept[t])].poly;
      for (std::size_t j = 0; j <= k; ++j)
        for (std::size_t i = 0; i <= j; ++i)
          set.tail[t * (k + 1) + j] += poly[i] * set.tail[(t + 1) * (k + 1) + j - i];
    }
    set.mass = set.tail[k];
    sets_.push_back(std::move(set));
  }
  prepared_experts_ = n_experts;
  prepared_top_k_ = top_k;
  prepared_groups_ = groups;
  prepared_topk_groups_ = topk_groups;
}

void ExpertRouter::deal_over_groups(const GroupSet& set, std::int64_t tokens,
                                    std::vector<std::vector<std::int64_t>>& needing) {
  const auto k = static_cast<std::size_t>(prepared_top_k_);
  const std::size_t m = set.groups.size();
  // state[j]: the set's tokens still needing j experts from its groups t.. .
  std::vector<std::int64_t> state(k + 1, 0), next(k + 1, 0);
  state[k] = tokens;
  for (std::size_t t = 0; t < m; ++t) {
    std::vector<std::int64_t>& group_needing = needing[static_cast<std::size_t>(set.groups[t])];
    if (t + 1 == m) {  // the last group takes what each token still needs
      for (std::size_t j = 1; j <= k; ++j) group_needing[j] += state[j];
      break;
    }
    const ExpertGroup& group = groups_[static_cast<std::size_t>(set.groups[t])];
    const std::size_t size = group.weights.size(), after = (m - t - 1) * size;  // experts in groups t+1..
    std::fill(next.begin(), next.end(), 0);
    for (std::size_t j = 0; j <= k; ++j) {
      std::int64_t left = state[j];
      // P(i from group t) = poly[i] tail_{t+1}[j - i] / tail_t[j] for the i group t and the groups after it
      // can take (i <= size, j - i <= after), drawn as a multinomial, the last i taking what is left.
      double rest = set.tail[t * (k + 1) + j];
      const std::size_t last = std::min(j, size);
      for (std::size_t i = j > after ? j - after : 0; i <= last && left > 0; ++i) {
        const double mass = group.poly[i] * set.tail[(t + 1) * (k + 1) + j - i];
        const std::int64_t here = i == last ? left : rng_.binomial(left, std::clamp(mass / rest, 0.0, 1.0));
        rest -= mass;
        left -= here;
        group_needing[i] += here;
        next[j - i] += here;
      }
    }
    std::swap(state, next);
  }
}

void ExpertRouter::sample_group(const ExpertGroup& group, std::vector<std::int64_t> needing,
                                std::vector<std::int64_t>& counts) {
  const auto k = static_cast<std::size_t>(prepared_top_k_);
  const std::size_t stride = k + 1;
  // needing[j]: tokens that still need j more experts from those not visited yet (needing[0] not used).
  std::vector<std::int64_t> chose(k + 1, 0);
  const std::int64_t tokens = std::accumulate(needing.begin() + 1, needing.end(), std::int64_t{0});
  needing[0] = 0;
  for (std::size_t i = 0; i < group.weights.size(); ++i) {
    std::int64_t& count = counts[static_cast<std::size_t>(group.first) + i];
    for (std::size_t j = 1; j <= k; ++j) {
      chose[j] = 0;
      if (needing[j] == 0) continue;
      const double p = std::min(
          1.0, group.weights[i] * group.suffix[(i + 1) * stride + j - 1] / group.suffix[i * stride + j]);
      chose[j] = rng_.binomial(needing[j], p);
      count += chose[j];
    }
    for (std::size_t j = 1; j <= k; ++j) {
      needing[j] -= chose[j];
      needing[j - 1] += chose[j];
    }
  }
  DUPLEX_ASSERT(needing[0] == tokens, "routing left tokens with fewer experts than they needed");
}

std::vector<std::int64_t> ExpertRouter::sample_layer(std::int64_t tokens) {
  const auto k = static_cast<std::size_t>(prepared_top_k_);
  std::vector<std::int64_t> counts(static_cast<std::size_t>(prepared_experts_), 0);
  // needing[g][i]: tokens taking i experts from group g.
  std::vector<std::vector<std::int64_t>> needing(groups_.size(), std::vector<std::int64_t>(k + 1, 0));
  // Deal the tokens to the group sets in proportion to their masses (one set: all of them), then over each
  // set's groups.
  double rest = 0;
  for (const GroupSet& set : sets_) rest += set.mass;
  std::int64_t left = tokens;
  for (std::size_t i = 0; i < sets_.size() && left > 0; ++i) {
    const std::int64_t here =
        i + 1 == sets_.size() ? left : rng_.binomial(left, std::clamp(sets_[i].mass / rest, 0.0, 1.0));
    rest -= sets_[i].mass;
    left -= here;
    if (here > 0) deal_over_groups(sets_[i], here, needing);
  }
  for (std::size_t g = 0; g < groups_.size(); ++g)
    if (std::any_of(needing[g].begin() + 1, needing[g].end(), [](std::int64_t n) { return n > 0; }))
      sample_group(groups_[g], needing[g], counts);
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
      throw Error(
          fmt::format("{}: recorded step {} layer {}: expert {} has {} of {} assignments; with top_k {} an "
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
                                 std::int64_t layers, int groups, int topk_groups) {
  check_shape(tokens, n_experts, top_k, layers);
  ExpertCounts out;
  out.reserve(static_cast<std::size_t>(layers));
  if (kind_ == Kind::trace) {
    if (trace_.layers != layers || trace_.experts > n_experts)
      throw Error(
          fmt::format("{}: routing trace has {} MoE layers and experts 0..{}; the model has {} MoE layers "
                      "and {} experts (expected equal layers and no expert id beyond the model's)",
                      trace_.label, trace_.layers, trace_.experts - 1, layers, n_experts));
    const std::size_t index = next_trace_step_;
    next_trace_step_ = (next_trace_step_ + 1) % trace_.steps.size();
    for (std::int64_t l = 0; l < layers; ++l)
      out.push_back(scale_trace_layer(trace_.steps[index][static_cast<std::size_t>(l)], tokens, n_experts,
                                      top_k, trace_.step_numbers[index], l));
    return out;
  }
  prepare(n_experts, top_k, groups, topk_groups);
  for (std::int64_t l = 0; l < layers; ++l) out.push_back(sample_layer(tokens));
  return out;
}

}  // namespace duplex::runtime
