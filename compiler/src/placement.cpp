#include "duplex/compiler/placement.hpp"

#include <algorithm>
#include <numeric>

#include "duplex/base/error.hpp"

namespace duplex::compiler {

Time PlanStage::lane(Unit u) const {
  Time t;
  for (const auto& p : ops)
    if (p.unit == u) t += p.time;
  return t;
}

Time PlanStage::time() const { return std::max({lane(Unit::kXpu), lane(Unit::kPim), lane(Unit::kLink)}); }

std::vector<Time> ExecutionPlan::stage_starts() const {
  if (!starts.empty()) {
    DUPLEX_ASSERT(starts.size() == stages.size(), "a start for every stage of an overlapped plan");
    return starts;
  }
  std::vector<Time> out;
  Time t;
  for (const auto& s : stages) {
    out.push_back(t);
    t += s.time();
  }
  return out;
}

std::vector<Time> ExecutionPlan::op_starts() const {
  std::vector<Time> out(graph.ops.size());
  const std::vector<Time> stage = stage_starts();
  for (std::size_t s = 0; s < stages.size(); ++s) {
    Time lane[3] = {stage[s], stage[s], stage[s]};
    for (const PlannedOp& p : stages[s].ops) {
      Time& at = lane[static_cast<int>(p.unit)];
      out[p.op] = at;
      at += p.time;
    }
  }
  return out;
}

Time ExecutionPlan::total() const {
  Time t;
  if (starts.empty()) {
    for (const auto& s : stages) t += s.time();
    return t;
  }
  DUPLEX_ASSERT(starts.size() == stages.size(), "a start for every stage of an overlapped plan");
  for (std::size_t i = 0; i < stages.size(); ++i) t = std::max(t, starts[i] + stages[i].time());
  return t;
}

Time pipeline_round(const ExecutionPlan& plan, const ParallelLayout& layout, int layers) {
  if (layout.pp <= 1) return plan.total();
  DUPLEX_ASSERT(plan.starts.empty(), "a pipeline stage's plan of overlapped micro-batches (not modelled)");
  const std::vector<int> ends = layout.stage_ends(layers);
  std::vector<Time> stage(static_cast<std::size_t>(layout.pp));
  std::size_t at = 0;  // the pipeline stage of the plan stages so far
  bool in_layers = false;
  for (const PlanStage& s : plan.stages) {
    if (!s.ops.empty()) {
      const int layer = plan.graph.ops[s.ops.front().op].layer;
      if (layer >= 0) {
        at = static_cast<std::size_t>(std::lower_bound(ends.begin(), ends.end(), layer) - ends.begin());
        in_layers = true;
      } else if (in_layers) {
        at = stage.size() - 1;  // the final norm and LM head, after the layers
      }
    }
    stage[at] += s.time();
  }
  return *std::max_element(stage.begin(), stage.end()) * static_cast<double>(layout.pp);
}

Time ExecutionPlan::busy(Unit u) const {
  Time t;
  for (const auto& s : stages) t += s.lane(u);
  return t;
}

const PlannedOp* ExecutionPlan::find(std::size_t op_index) const {
  for (const auto& s : stages)
    for (const auto& p : s.ops)
      if (p.op == op_index) return &p;
  return nullptr;
}

std::vector<bool> split_experts(const std::vector<Time>& xpu_time, const std::vector<std::optional<Time>>& pim_time,
                                const std::vector<std::int64_t>& tokens) {
  const std::size_t n = xpu_time.size();
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  // Fewest tokens first; ties by index so the split is deterministic.
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return tokens[a] < tokens[b]; });
  Time xpu = std::accumulate(xpu_time.begin(), xpu_time.end(), Time{});
  Time pim;
  std::vector<bool> on_pim(n, false), best = on_pim;
  Time best_time = xpu;
  for (std::size_t i : order) {
    if (!pim_time[i]) break;  // the ones after it have more tokens: keep them (and it) on the xPU
    on_pim[i] = true;
    xpu -= xpu_time[i];
    pim += *pim_time[i];
    if (std::max(xpu, pim) < best_time) {
      best_time = std::max(xpu, pim);
      best = on_pim;
    }
  }
  return best;
}

namespace {

PlannedOp plan_op(const Graph& g, std::size_t i, const CostModel& cost) {
  const Op& op = g.ops[i];
  PlannedOp p;
  p.op = i;
  if (op.kind == OpKind::kAllReduce || op.kind == OpKind::kAllToAll || op.kind == OpKind::kPimTransfer ||
      op.kind == OpKind::kStageSend || op.kind == OpKind::kExpertMove) {
    p.unit = Unit::kLink;
    p.time = p.xpu_time = cost.link_time(op);
    return p;
  }
  p.xpu_time = cost.xpu_time(op);
  p.pim_time = cost.pim_time(op);
  if (const auto required = cost.required_unit(op)) {
    p.unit = *required;  // heterogeneous system: the op runs where its weights / KV live, whatever the times
  } else {
    p.unit = p.pim_time && *p.pim_time < p.xpu_time ? Unit::kPim : Unit::kXpu;
  }
  p.time = p.unit == Unit::kPim ? *p.pim_time : p.xpu_time;
  return p;
}

class Placer {
 public:
  Placer(const Graph& g, const CostModel& c) : g_(g), cost_(c) {}

  std::vector<PlanStage> run() {
    const auto& ops = g_.ops;
    const SystemSpec& sys = cost_.system();
    for (std::size_t i = 0; i < ops.size();) {
      const Op& op = ops[i];
      if (op.kind == OpKind::kExpertFfn && sys.coprocess_experts) {
        std::size_t j = i;
        while (j < ops.size() && ops[j].kind == OpKind::kExpertFfn && ops[j].layer == op.layer) ++j;
        expert_stage(i, j);
        i = j;
        continue;
      }
      if (op.kind == OpKind::kAttentionPrefill && sys.coprocess_attention && i + 1 < ops.size() &&
          ops[i + 1].kind == OpKind::kAttentionDecode) {
        PlanStage s;
        s.coprocessed = true;
        PlannedOp pre = plan_op(g_, i, cost_);
        pre.unit = Unit::kXpu;  // prefill attention stays on the xPU while decode attention uses its unit
        pre.time = pre.xpu_time;
        s.ops.push_back(pre);
        s.ops.push_back(plan_op(g_, i + 1, cost_));
        i += 2;
        // The layer's K/V migration (xPU) overlaps decode attention too: it copies K/V this step already wrote.
        if (i < ops.size() && ops[i].kind == OpKind::kKvMigration) s.ops.push_back(plan_op(g_, i++, cost_));
        flush();
        stages_.push_back(std::move(s));
        continue;
      }
      append(plan_op(g_, i, cost_));
      ++i;
    }
    flush();
    return std::move(stages_);
  }

 private:
  // One unit at a time: consecutive ops on the same unit share a stage; a unit change is a sync point.
  void append(const PlannedOp& p) {
    if (!open_.ops.empty() && open_.ops.back().unit != p.unit) flush();
    open_.ops.push_back(p);
  }
  void flush() {
    if (!open_.ops.empty()) stages_.push_back(std::move(open_));
    open_ = PlanStage{};
  }

  void expert_stage(std::size_t begin, std::size_t end) {
    std::vector<PlannedOp> planned;
    std::vector<Time> xt;
    std::vector<std::optional<Time>> pt;
    std::vector<std::int64_t> tokens;
    for (std::size_t i = begin; i < end; ++i) {
      planned.push_back(plan_op(g_, i, cost_));
      xt.push_back(planned.back().xpu_time);
      pt.push_back(planned.back().pim_time);
      tokens.push_back(g_.ops[i].m);
    }
    const auto on_pim = split_experts(xt, pt, tokens);
    PlanStage s;
    for (std::size_t k = 0; k < planned.size(); ++k) {
      PlannedOp p = planned[k];
      p.unit = on_pim[k] ? Unit::kPim : Unit::kXpu;
      p.time = on_pim[k] ? *p.pim_time : p.xpu_time;
      s.ops.push_back(p);
    }
    s.coprocessed = s.lane(Unit::kXpu) > Time{} && s.lane(Unit::kPim) > Time{};
    flush();
    stages_.push_back(std::move(s));
  }

  const Graph& g_;
  const CostModel& cost_;
  std::vector<PlanStage> stages_;
  PlanStage open_;
};

}  // namespace

ExecutionPlan place(Graph graph, const CostModel& cost) {
  ExecutionPlan plan;
  plan.stages = Placer(graph, cost).run();
  plan.graph = std::move(graph);
  return plan;
}

}  // namespace duplex::compiler
