#pragma once
// Placement and co-processing: Graph -> ExecutionPlan.
//  - place: every op goes to the unit where the cost model says it finishes first (no Op/B threshold), unless
//    the cost model requires a unit because the op's data lives there (heterogeneous GPU + PIM devices).
//  - expert co-processing (system.coprocess_experts): the experts of one MoE layer are split over xPU and PIM
//    by the greedy of DUPLEX.md s.6: start with all on the xPU, move the expert with the fewest tokens to
//    the PIM one at a time, keep the split with the lowest max(xPU time, PIM time); both lanes run at once.
//  - attention co-processing (system.coprocess_attention): in a mixed step, prefill attention on the xPU and
//    decode attention on its unit run at the same time; the layer's K/V migration (an xPU op, lower.hpp)
//    joins the xPU lane of that stage.
// An ExecutionPlan is a sequence of stages; inside a stage the xPU, PIM and link lanes run concurrently and
// the stage ends at a sync point when its slowest lane finishes.
#include <optional>
#include <vector>

#include "duplex/compiler/cost_model.hpp"
#include "duplex/compiler/op.hpp"

namespace duplex::compiler {

struct PlannedOp {
  std::size_t op = 0;  // index into ExecutionPlan::graph.ops
  Unit unit = Unit::kXpu;
  Time time;                   // on the chosen unit
  Time xpu_time;               // for reports
  std::optional<Time> pim_time;
};

struct PlanStage {
  std::vector<PlannedOp> ops;
  bool coprocessed = false;    // both compute lanes busy by design (an expert or attention split)
  Time lane(Unit u) const;     // busy time of one lane
  Time time() const;           // max over lanes
};

struct ExecutionPlan {
  Graph graph;
  std::vector<PlanStage> stages;
  // Each stage's start from the plan's, where stages overlap (two micro-batches' plans interleaved on the
  // lanes: micro_batches.hpp); empty: each stage starts when the one before it ends.
  std::vector<Time> starts;
  std::vector<Time> stage_starts() const;  // one per stage, either way
  // Each op's start from the plan's (indexed like graph.ops; 0 for an op in no stage): its stage's start plus
  // the times of the ops before it on its unit in that stage (a lane runs its ops of a stage one by one).
  std::vector<Time> op_starts() const;
  Time total() const;                      // the latest stage end
  Time busy(Unit u) const;
  const PlannedOp* find(std::size_t op_index) const;
};

ExecutionPlan place(Graph graph, const CostModel& cost);

// Pipeline parallelism (layout pp > 1): the time `plan` (one batch in flight's pass through every stage of a
// model of `layers` layers) takes per round of pp ticks in steady state, each tick as long as its slowest
// stage: pp x the longest of its stages' times (a plan stage counted with the pipeline stage of its first
// op's layer; the ops before the first layer, the embedding, with the first stage, those after the last, the
// final norm and LM head, with the last; a stage_send with the stage it leaves). Equal stages give the pass's
// total(). Without pipeline parallelism: total().
Time pipeline_round(const ExecutionPlan& plan, const ParallelLayout& layout, int layers);

// The greedy expert split on its own (for tests and the runtime): given each expert's time on both units
// (pim_time empty = PIM cannot run it), returns for each expert whether it goes to the PIM.
std::vector<bool> split_experts(const std::vector<Time>& xpu_time, const std::vector<std::optional<Time>>& pim_time,
                                const std::vector<std::int64_t>& tokens);

}  // namespace duplex::compiler
