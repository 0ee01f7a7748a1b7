#pragma once
// Internal: the serving simulation of a split (Splitwise-style) system.
#include "duplex/runtime/sim/serving_simulator.hpp"

namespace duplex::runtime::detail {

// A prefill pool (split_prefill_fraction of the devices) runs every prompt and emits its first token; the
// prompt's KV migrates over the links (NVLink between instances inside one node, InfiniBand otherwise; one
// transfer at a time per instance) to the decode pool, which generates the rest: after the prefill, or layer
// by layer during its last step (split_kv_layerwise; the decode instance is then chosen at that step's
// start). Each pool is split_prefill_instances / split_decode_instances instances of equal size, each with
// its own scheduler and KV cache, and o.cluster.replicas copies of the whole (xPyD): o.cluster.router picks a
// prompt's prefill instance at its arrival, the decode instance with the fewest outstanding requests (then
// one in the same node, then the lowest index) takes it when its prefill ends. All advance in simulated-time
// order; a request's `pool` names its two instances ("prefill0>decode1") when there are more than two.
SystemResult simulate_split(const compiler::ModelSpec& model, const SystemSpec& system, const SimulationOptions& o);

}  // namespace duplex::runtime::detail
