#pragma once
// Lowering: (model, batch, parallel layout, routing) -> the op graph of one device for one step, with
// FLOPs and DRAM bytes by source on every op (the analysis is part of lowering: each op's formulas sit
// beside its construction in lower.cpp).
#include "duplex/compiler/batch.hpp"
#include "duplex/compiler/model_spec.hpp"
#include "duplex/compiler/op.hpp"
#include "duplex/compiler/parallel.hpp"

namespace duplex::compiler {

// Throws duplex::Error for an empty batch or a routing that does not fit the model.
Graph lower(const ModelSpec& model, const BatchState& batch, const ParallelLayout& layout, const Routing& routing);

}  // namespace duplex::compiler
