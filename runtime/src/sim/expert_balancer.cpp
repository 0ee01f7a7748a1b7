#include "duplex/runtime/sim/expert_balancer.hpp"

#include <algorithm>
#include <cstddef>

#include <fmt/format.h>

#include "duplex/base/error.hpp"
#include "duplex/compiler/cost_model.hpp"

namespace duplex::runtime {

ExpertBalancer::ExpertBalancer(const compiler::ModelSpec& model, const ExpertBalancing& config,
                               const compiler::ParallelLayout& layout, const LinkSpec& links)
    : config_(config),
      layout_(layout),
      links_(links),
      experts_(model.experts),
      router_groups_(model.router_groups) {
  if (!model.is_moe()) throw Error(fmt::format("expert load balancing: model {} has no experts", model.name));
  const int slots = layout.local_experts * layout.expert_groups;
  if (slots != model.experts + config.redundant_experts)
    throw Error(
        fmt::format("expert load balancing: layout {} holds {} expert slots per layer; expected {} "
                    "experts + {} redundant, whole on each device",
                    layout.describe(), slots, model.experts, config.redundant_experts));
  shard_bytes_ = model.expert_ffn_bytes(model.expert_ffn) / layout.expert_shards;
  const std::vector<int> ends = layout.stage_ends(model.layers);
  for (int l = 0; l < model.layers; ++l)
    if (model.is_moe_layer(l))
      stage_of_.push_back(static_cast<int>(std::lower_bound(ends.begin(), ends.end(), l) - ends.begin()));
  placement_.assign(stage_of_.size(), compiler::default_placement(model.experts, slots));
  nodes_ = node_of(layout.expert_groups - 1) + 1;
  // vLLM's EPLB takes DeepSeek's hierarchical policy when the model's expert groups divide over the nodes
  // (with one group on one node it is the global one), else the global policy.
  hierarchical_ = router_groups_ % nodes_ == 0 && experts_ % router_groups_ == 0;
}

int ExpertBalancer::node_of(int group) const {
  // A pipeline stage's devices lie in one node; else groups of expert_shards devices each.
  return layout_.pp > 1 ? 0 : group * layout_.expert_shards / layout_.devices_per_node();
}

ExpertBalancer::Move ExpertBalancer::step(const ExpertCounts& counts) {
  DUPLEX_ASSERT(counts.size() == placement_.size(), "expert balancer: routing of another model's MoE layers");
  Move move;
  const std::int64_t k = steps_++;
  if (k > 0 && k % config_.interval == 0) {
    const auto window = windows_.find(k);
    std::vector<compiler::SlotExperts> next = placement_;
    if (window != windows_.end()) {
      for (std::size_t l = 0; l < next.size(); ++l) {
        const std::vector<std::int64_t>& sum = window->second[l];
        std::vector<double> load(sum.begin(), sum.end());
        if (std::any_of(sum.begin(), sum.end(), [](std::int64_t c) { return c > 0; }))
          next[l] =
              hierarchical_
                  ? compiler::balance_experts_hierarchical(load, static_cast<int>(next[l].size()),
                                                           layout_.expert_groups, router_groups_, nodes_)
                  : compiler::balance_experts(load, static_cast<int>(next[l].size()), layout_.expert_groups);
      }
      windows_.erase(window);
    }
    move = move_to(std::move(next));
    move.rebalanced = true;
    ++rebalancings_;
  }
  // This step counts in the windows of the rebalancings r with k < r <= k + window.
  for (std::int64_t r = (k / config_.interval + 1) * config_.interval; r <= k + config_.window;
       r += config_.interval) {
    ExpertCounts& sum = windows_[r];
    if (sum.empty())
      sum.assign(counts.size(), std::vector<std::int64_t>(static_cast<std::size_t>(experts_), 0));
    for (std::size_t l = 0; l < counts.size(); ++l) {
      DUPLEX_ASSERT(counts[l].size() == static_cast<std::size_t>(experts_),
                    "expert balancer: routing of another expert count");
      for (std::size_t e = 0; e < counts[l].size(); ++e) sum[l][e] += counts[l][e];
    }
  }
  return move;
}

double ExpertBalancer::imbalance(const ExpertCounts& counts) const {
  double sum = 0;
  int layers = 0;
  for (std::size_t l = 0; l < counts.size(); ++l) {
    const std::vector<std::int64_t> rows = compiler::slot_rows(placement_[l], counts[l]);
    std::int64_t total = 0;
    for (const std::int64_t r : rows) total += r;
    if (total == 0) continue;
    const double mean = static_cast<double>(total) / layout_.expert_groups;
    sum += static_cast<double>(compiler::busiest_group(rows, layout_.expert_groups).rows) / mean;
    ++layers;
  }
  return layers > 0 ? sum / layers : 0.0;
}

ExpertBalancer::Move ExpertBalancer::move_to(std::vector<compiler::SlotExperts> next) {
  const int groups = layout_.expert_groups, per_group = layout_.local_experts;
  struct Copies {
    double nvlink = 0, infiniband = 0;
    std::int64_t slots = 0;
  };
  std::map<std::pair<int, int>, Copies> device;  // (stage, group) -> one of its devices' copies
  Move m;
  const int nodes = nodes_;
  const auto ex = static_cast<std::size_t>(experts_);
  for (std::size_t l = 0; l < next.size(); ++l) {
    // Copies of each expert per group before and after, and per node before.
    std::vector<int> before(static_cast<std::size_t>(groups) * ex, 0), after(before.size(), 0),
        node_before(static_cast<std::size_t>(nodes) * ex, 0);
    for (std::size_t s = 0; s < next[l].size(); ++s) {
      const auto g = s / static_cast<std::size_t>(per_group);
      ++before[g * ex + static_cast<std::size_t>(placement_[l][s])];
      ++after[g * ex + static_cast<std::size_t>(next[l][s])];
      ++node_before[static_cast<std::size_t>(node_of(static_cast<int>(g))) * ex +
                    static_cast<std::size_t>(placement_[l][s])];
    }
    for (int g = 0; g < groups; ++g)
      for (std::size_t e = 0; e < ex; ++e) {
        const std::size_t i = static_cast<std::size_t>(g) * ex + e;
        const int in = after[i] - before[i];
        if (in <= 0) continue;
        // Another group of this node held it: over NVLink.
        const bool near = node_before[static_cast<std::size_t>(node_of(g)) * ex + e] > before[i];
        Copies& c = device[{stage_of_[l], g}];
        (near ? c.nvlink : c.infiniband) += static_cast<double>(in) * shard_bytes_;
        c.slots += in;
      }
  }
  for (const auto& [key, c] : device) {
    m.nvlink_bytes += c.nvlink * layout_.expert_shards;
    m.infiniband_bytes += c.infiniband * layout_.expert_shards;
    const Time t = compiler::CostModel::concurrent_copy_time(links_, c.nvlink, c.infiniband);
    if (t > m.time) {
      m.time = t;
      m.device_slots = c.slots;
      m.device_nvlink_bytes = c.nvlink;
      m.device_infiniband_bytes = c.infiniband;
    }
  }
  placement_ = std::move(next);
  return m;
}

}  // namespace duplex::runtime
