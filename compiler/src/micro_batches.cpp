#include "duplex/compiler/micro_batches.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "duplex/base/error.hpp"
#include "duplex/compiler/lower.hpp"

namespace duplex::compiler {

namespace {

// Where a rank's requests split: the first `take` requests of group `group` (and every earlier group's)
// go first, and with `chunk` > 0 the next request's first `chunk` tokens too (a prompt in two chunks).
struct Boundary {
  std::size_t group = 0;
  std::int64_t take = 0, chunk = 0;
};

// The boundary after the first `n` requests (0 <= n <= the rank's requests).
Boundary after_requests(const std::vector<const RequestGroup*>& groups, std::int64_t n) {
  Boundary b;
  for (; b.group < groups.size(); ++b.group) {
    if (n <= groups[b.group]->count) break;
    n -= groups[b.group]->count;
  }
  b.take = n;
  return b;
}

// A prefill rank's boundary between whole requests (at least one on each side) whose first half's tokens L
// minimise |2L - T|, ties to the larger L; with one request, none (L = 0). Its first half's tokens in `left`.
Boundary balanced(const std::vector<const RequestGroup*>& groups, std::int64_t requests, std::int64_t total,
                  std::int64_t& left) {
  left = 0;
  if (requests < 2) return Boundary{};
  Boundary best;
  std::int64_t best_gap = -1, before = 0, index = 0;  // tokens and requests before the group
  for (std::size_t i = 0; i < groups.size(); ++i) {
    const RequestGroup& g = *groups[i];
    // L(j) = before + j x tokens is linear in j: |2L - T| is least at the floor or ceiling of its root.
    const std::int64_t root = (total - 2 * before) / (2 * g.tokens);
    for (std::int64_t j : {root, root + 1}) {
      j = std::clamp<std::int64_t>(j, std::max<std::int64_t>(0, 1 - index),
                                   std::min(g.count, requests - 1 - index));
      const std::int64_t l = before + j * g.tokens, gap = std::llabs(2 * l - total);
      if (best_gap < 0 || gap < best_gap || (gap == best_gap && l > left)) {
        best_gap = gap;
        best = {i, j, 0};
        left = l;
      }
    }
    before += g.count * g.tokens;
    index += g.count;
  }
  return best;
}

// The boundary at token `at` of the rank (SGLang's two-chunk split): the request holding that token split
// into two chunks when it is a prompt (else the boundary before it).
Boundary at_token(const std::vector<const RequestGroup*>& groups, std::int64_t at) {
  Boundary b;
  for (; b.group < groups.size(); ++b.group) {
    const RequestGroup& g = *groups[b.group];
    if (at < g.count * g.tokens) {
      b.take = at / g.tokens;
      b.chunk = g.decodes() ? 0 : at % g.tokens;
      return b;
    }
    at -= g.count * g.tokens;
  }
  return b;
}

// One rank's groups split into `out` at `b`.
void split_at(const std::vector<const RequestGroup*>& groups, const Boundary& b, MicroBatches& out) {
  for (std::size_t i = 0; i < groups.size(); ++i) {
    RequestGroup g = *groups[i];
    const std::int64_t first = i < b.group ? g.count : i == b.group ? b.take : 0;
    if (first > 0) {
      out.first.groups.push_back(g);
      out.first.groups.back().count = first;
    }
    std::int64_t rest = g.count - first;
    if (i == b.group && b.chunk > 0) {  // its next request's first chunk first, not completing its prompt
      RequestGroup head = g, tail = g;
      head.count = tail.count = 1;
      head.tokens = b.chunk;
      head.completes_prefill = false;
      tail.context += b.chunk;
      tail.tokens -= b.chunk;
      out.first.groups.push_back(head);
      out.second.groups.push_back(tail);
      --rest;
    }
    if (rest > 0) {
      g.count = rest;
      out.second.groups.push_back(g);
    }
  }
}

void split_rank(const std::vector<const RequestGroup*>& groups, double chunk_threshold, MicroBatches& out) {
  std::int64_t total = 0, requests = 0;
  bool prefill = false;
  for (const RequestGroup* g : groups) {
    total += g->count * g->tokens;
    requests += g->count;
    prefill = prefill || !g->decodes();
  }
  if (!prefill) {  // decoding (or verifying) requests: half of them, rounded down, first
    split_at(groups, after_requests(groups, requests / 2), out);
    return;
  }
  std::int64_t left = 0;
  const Boundary b = balanced(groups, requests, total, left);
  const auto t = static_cast<double>(total), l = static_cast<double>(left);
  split_at(groups, l < chunk_threshold * t || l > (1 - chunk_threshold) * t ? at_token(groups, total / 2) : b,
           out);
}

}  // namespace

MicroBatches split_micro_batches(const BatchState& batch, double chunk_threshold) {
  if (!(chunk_threshold >= 0 && chunk_threshold <= 0.5))
    throw Error(fmt::format("micro-batch split: chunk threshold {}; expected 0..0.5", chunk_threshold));
  MicroBatches out;
  out.first.first_draft_pass = out.second.first_draft_pass = batch.first_draft_pass;
  std::vector<int> ranks;  // in order of first appearance
  for (const RequestGroup& g : batch.groups)
    if (std::find(ranks.begin(), ranks.end(), g.rank) == ranks.end()) ranks.push_back(g.rank);
  for (int rank : ranks) {
    std::vector<const RequestGroup*> groups;
    for (const RequestGroup& g : batch.groups)
      if (g.rank == rank && g.count > 0 && g.tokens > 0) groups.push_back(&g);
    split_rank(groups, chunk_threshold, out);
  }
  return out;
}

bool low_latency_prompts(const SystemSpec& system, const ParallelLayout& layout, const BatchState& batch) {
  const ParallelLayout::ExpertExchange x = layout.expert_exchange();
  return batch.prefill_tokens() > 0 && system.expert_all_to_all == ExpertAllToAll::low_latency &&
         x.infiniband + x.nvlink > 0;
}

std::optional<MicroBatches> micro_batches(const SystemSpec& system, const ParallelLayout& layout,
                                          const BatchState& batch) {
  if (!system.two_batch_overlap || low_latency_prompts(system, layout, batch)) return std::nullopt;
  MicroBatches halves = split_micro_batches(batch, system.two_batch_overlap_threshold);
  if (halves.first.tokens() == 0 || halves.second.tokens() == 0) return std::nullopt;
  return halves;
}

bool collectives_hold_sms(const SystemSpec& system, const ParallelLayout& layout, const BatchState& batch) {
  const ParallelLayout::ExpertExchange x = layout.expert_exchange();
  return layout.tp > 1 ||
         (x.infiniband + x.nvlink > 0 && deduplicates_exchange(system.expert_all_to_all, batch));
}

SystemSpec overlapped_system(const SystemSpec& system) {
  if (system.links.comm_sms >= system.xpu.sms)
    throw Error(
        fmt::format("system {}: links.comm_sms {} leaves none of the xPU's {} SMs to compute; expected "
                    "0..{}",
                    system.name, system.links.comm_sms, system.xpu.sms, system.xpu.sms - 1));
  SystemSpec s = system;
  const double left = static_cast<double>(system.xpu.sms - system.links.comm_sms) / system.xpu.sms;
  for (FlopRate* r : {&s.xpu.peak_fp16, &s.xpu.peak_fp8, &s.xpu.peak_int8, &s.xpu.peak_fp32}) *r = *r * left;
  return s;
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
  // Each stage's busy time per lane (xPU, PIM, link), summed once.
  using Lanes = std::array<Time, 3>;
  std::vector<Lanes> busy[2];
  for (int m = 0; m < 2; ++m)
    for (const PlanStage& s : plans[m]->stages)
      busy[m].push_back({s.lane(Unit::kXpu), s.lane(Unit::kPim), s.lane(Unit::kLink)});
  Time lane_free[3];
  std::size_t next[2] = {0, 0};
  Time ready[2];
  auto start_of = [&](int m) {
    Time at = ready[m];
    for (int u = 0; u < 3; ++u)
      if (busy[m][next[m]][static_cast<std::size_t>(u)] > Time{}) at = std::max(at, lane_free[u]);
    return at;
  };
  for (;;) {
    const bool left[2] = {next[0] < first.stages.size(), next[1] < second.stages.size()};
    if (!left[0] && !left[1]) break;
    int m = left[0] ? 0 : 1;
    if (left[0] && left[1] && start_of(1) < start_of(0)) m = 1;
    const Time start = start_of(m);
    const Lanes& lanes = busy[m][next[m]];
    for (int u = 0; u < 3; ++u)
      if (lanes[static_cast<std::size_t>(u)] > Time{})
        lane_free[u] = start + lanes[static_cast<std::size_t>(u)];
    ready[m] = start + *std::max_element(lanes.begin(), lanes.end());  // PlanStage::time()
    PlanStage placed = plans[m]->stages[next[m]++];
    for (PlannedOp& p : placed.ops) p.op += offset[m];
    out.stages.push_back(std::move(placed));
    out.starts.push_back(start);
  }
  return out;
}

}  // namespace duplex::compiler
