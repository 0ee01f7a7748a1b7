#pragma once
// Internal: the serving simulation of a cluster, several replicas of one system behind a request router.
#include "duplex/runtime/sim/serving_simulator.hpp"

namespace duplex::runtime::detail {

// o.cluster.replicas copies of `system` (each of o.devices devices, or the system's count for the model),
// each with its own scheduler, KV cache and prefix cache, advance in simulated-time order. A request is
// routed when it arrives (o.cluster.router): the router sees each replica's outstanding requests at that
// instant and its prefix cache as of the replica's last step boundary (which may lie up to one step past the
// arrival). The result adds the replicas' devices, energy and requests; `pools` holds one entry per replica,
// and the lane timeline shows replica 0 only.
SystemResult simulate_cluster(const compiler::ModelSpec& model, const SystemSpec& system,
                              const SimulationOptions& o);

}  // namespace duplex::runtime::detail
