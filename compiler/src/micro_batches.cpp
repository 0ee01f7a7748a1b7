#include "duplex/compiler/micro_batches.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "duplex/base/error.hpp"

namespace duplex::compiler {

namespace {

// One rank's groups split into `out`: the boundary whose first half's tokens A minimises |2A - T|, ties to
// A > T / 2, then to the earliest boundary.
void split_rank(const std::vector<const RequestGroup*>& groups, MicroBatches& out) {
  std::int64_t total = 0;
  for (const RequestGroup* g : groups) total += g->count * g->tokens;
  std::size_t best_group = 0;
  std::int64_t best_take = 0, best_gap = -1;
  bool best_short = true;  // the best first half is below half the tokens
  std::int64_t before = 0;
  for (std::size_t i = 0; i < groups.size(); ++i) {
    const RequestGroup& g = *groups[i];
    // A(j) = before + j x tokens is linear in j: |2A - T| is least at the floor or ceiling of its root.
    const std::int64_t root = g.tokens > 0 ? (total - 2 * before) / (2 * g.tokens) : 0;
    for (std::int64_t j : {root, root + 1}) {
      j = std::clamp<std::int64_t>(j, 0, g.count);
      const std::int64_t gap = 2 * (before + j * g.tokens) - total;
      const bool short_half = gap < 0;
      if (best_gap < 0 || std::llabs(gap) < best_gap ||
          (std::llabs(gap) == best_gap && best_short && !short_half)) {
        best_gap = std::llabs(gap);
        best_short = short_half;
        best_group = i;
        best_take = j;
      }
    }
    before += g.count * g.tokens;
  }
  for (std::size_t i = 0; i < groups.size(); ++i) {
    RequestGroup g = *groups[i];
    const std::int64_t first = i < best_group ? g.count : i == best_group ? best_take : 0;
    if (first > 0) {
      out.first.groups.push_back(g);
      out.first.groups.back().count = first;
    }
    if (g.count - first > 0) {
      g.count -= first;
      out.second.groups.push_back(g);
    }
  }
}

}  // namespace

MicroBatches split_micro_batches(const BatchState& batch) {
  MicroBatches out;
  out.first.first_draft_pass = out.second.first_draft_pass = batch.first_draft_pass;
  std::vector<int> ranks;  // in order of first appearance
  for (const RequestGroup& g : batch.groups)
    if (std::find(ranks.begin(), ranks.end(), g.rank) == ranks.end()) ranks.push_back(g.rank);
  for (int rank : ranks) {
    std::vector<const RequestGroup*> groups;
    for (const RequestGroup& g : batch.groups)
      if (g.rank == rank && g.count > 0) groups.push_back(&g);
    split_rank(groups, out);
  }
  return out;
}

std::array<Routing, 2> split_routing(const Routing& step, std::int64_t first_tokens, std::int64_t step_tokens,
                                     int experts, int top_k) {
  if (first_tokens < 0 || first_tokens > step_tokens)
    throw Error(fmt::format("routing split: a first micro-batch of {} tokens of a step's {}; expected 0..{}",
                            first_tokens, step_tokens, step_tokens));
  std::array<Routing, 2> out{step, step};
  if (step.kind != Routing::Kind::kCounts) return out;
  const std::int64_t second_tokens = step_tokens - first_tokens;
  for (std::size_t l = 0; l < step.counts.size(); ++l) {
    const std::vector<std::int64_t>& row = step.counts[l];
    out[0].counts[l] = step.expert_tokens_of(static_cast<int>(l), first_tokens, step_tokens, experts, top_k);
    for (std::size_t e = 0; e < row.size(); ++e) {
      out[1].counts[l][e] = row[e] - out[0].counts[l][e];
      DUPLEX_ASSERT(out[1].counts[l][e] >= 0 && out[1].counts[l][e] <= second_tokens,
                    "a micro-batch's expert count within its tokens");
    }
  }
  return out;
}

ExecutionPlan overlap_micro_batches(const ExecutionPlan& first, const ExecutionPlan& second) {
  DUPLEX_ASSERT(first.starts.empty() && second.starts.empty(), "micro-batch plans not overlapped already");
  ExecutionPlan out;
  out.graph.model = first.graph.model;
  out.graph.devices = first.graph.devices;
  const ExecutionPlan* plans[2] = {&first, &second};
  std::size_t offset[2] = {0, first.graph.ops.size()};
  for (int m = 0; m < 2; ++m)
    for (Op op : plans[m]->graph.ops) {
      op.name = fmt::format("mb{}.{}", m, op.name);
      out.graph.ops.push_back(std::move(op));
    }
  constexpr Unit kLanes[] = {Unit::kXpu, Unit::kPim, Unit::kLink};
  Time lane_free[3];
  std::size_t next[2] = {0, 0};
  Time ready[2];
  auto start_of = [&](const PlanStage& s, Time at) {
    for (int u = 0; u < 3; ++u)
      if (s.lane(kLanes[u]) > Time{}) at = std::max(at, lane_free[u]);
    return at;
  };
  for (;;) {
    const bool left[2] = {next[0] < first.stages.size(), next[1] < second.stages.size()};
    if (!left[0] && !left[1]) break;
    int m = left[0] ? 0 : 1;
    if (left[0] && left[1] &&
        start_of(second.stages[next[1]], ready[1]) < start_of(first.stages[next[0]], ready[0]))
      m = 1;
    const PlanStage& s = plans[m]->stages[next[m]++];
    const Time start = start_of(s, ready[m]);
    for (int u = 0; u < 3; ++u)
      if (s.lane(kLanes[u]) > Time{}) lane_free[u] = start + s.lane(kLanes[u]);
    ready[m] = start + s.time();
    PlanStage placed = s;
    for (PlannedOp& p : placed.ops) p.op += offset[m];
    out.stages.push_back(std::move(placed));
    out.starts.push_back(start);
  }
  return out;
}

}  // namespace duplex::compiler
