#pragma once
// Test helper: load a model and a system preset, lower one batch for `devices` devices (0: the system's count
// for the model) and place it; keeps everything the plan refers to alive together.
#include <string>

#include "duplex/compiler/lower.hpp"
#include "duplex/compiler/placement.hpp"

namespace duplex::compiler::testing {

struct Compiled {
  ModelSpec model;
  SystemSpec system;
  ParallelLayout layout;
  ExecutionPlan plan;
};

inline Compiled compile(const std::string& model, const std::string& system, const BatchState& b, int devices = 0) {
  Compiled c{load_model(model), load_system(system), {}, {}};
  c.layout = ParallelLayout::make(c.model, c.system, devices > 0 ? devices : c.system.devices_for(c.model.name));
  const CostModel cost(c.system, c.layout);
  c.plan = place(lower(c.model, b, c.layout, Routing{}, LowerOptions::for_system(c.system)), cost);
  return c;
}

}  // namespace duplex::compiler::testing
