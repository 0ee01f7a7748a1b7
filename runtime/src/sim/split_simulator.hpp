#pragma once
// Internal: the serving simulation of a split (Splitwise-style) system.
#include "duplex/runtime/sim/serving_simulator.hpp"

namespace duplex::runtime::detail {

// A prefill pool (split_prefill_fraction of the devices) runs every prompt and emits its first token; the
// prompt's KV then migrates over the links (NVLink inside a node, InfiniBand across nodes; transfers are not
// modelled as contending with each other) to the decode pool, which generates the rest. Each pool has its
// own scheduler and KV cache; both advance in simulated-time order.
SystemResult simulate_split(const compiler::ModelSpec& model, const SystemSpec& system, const SimulationOptions& o);

}  // namespace duplex::runtime::detail
