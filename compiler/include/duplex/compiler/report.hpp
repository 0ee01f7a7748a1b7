#pragma once
// Text and JSON forms of graphs and plans. The text form is stable (golden-tested): one line per op.
#include <nlohmann/json.hpp>
#include <string>

#include "duplex/compiler/model_spec.hpp"
#include "duplex/compiler/parallel.hpp"
#include "duplex/compiler/placement.hpp"

namespace duplex::compiler {

// One line per op: name kind shape flops bytes(w/kv/act) op/b.
std::string dump_graph(const Graph& g);
// The op table with the unit chosen and the time on each unit (two micro-batches' plan: each op's start on its
// lane too, column start_us), then stages and totals.
std::string dump_plan(const ExecutionPlan& plan);
// A per-op-kind summary (ops, FLOPs, bytes, Op/B range, units used, time).
std::string summarize_plan(const ExecutionPlan& plan);

nlohmann::json plan_to_json(const ExecutionPlan& plan, const ModelSpec& model, const SystemSpec& system,
                            const ParallelLayout& layout);

}  // namespace duplex::compiler
