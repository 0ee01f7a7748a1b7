#pragma once
// Device memory split between weights, a reserve (activations, workspace) and the paged KV cache, per
// system and parallel layout. The KV capacity bounds admission, so it bounds the batch (DUPLEX.md s.8:
// "batch sizes limited by memory capacity").
#include <cstdint>

#include "duplex/base/device_spec.hpp"
#include "duplex/compiler/model_spec.hpp"
#include "duplex/compiler/parallel.hpp"

namespace duplex::runtime {

// Heterogeneous GPU + PIM devices (SystemSpec::heterogeneous()): the GPU holds the non-expert weights and
// the reserve; its PIM devices hold its share of the routed experts and the KV cache (kv_tokens comes from
// their memory only).
struct MemoryPlan {
  double device_bytes = 0;              // HBM capacity of one device (heterogeneous: one GPU)
  double weight_bytes_per_device = 0;   // this device's shard of the weights (heterogeneous: the GPU's)
  double pim_device_bytes = 0;          // heterogeneous: HBM of one GPU's PIM devices together; else 0
  double pim_weight_bytes = 0;          // heterogeneous: expert weights on one GPU's PIM devices; else 0
  double reserve_bytes_per_device = 0;  // reserve_fraction x device_bytes
  double kv_bytes_per_token = 0;        // one token of one request, all layers, on one device (its heads)
  std::int64_t kv_tokens = 0;           // KV tokens the whole system holds (all data-parallel replicas)
  std::int64_t kv_blocks(std::int64_t block_tokens) const { return kv_tokens / block_tokens; }
};

// Throws duplex::Error naming model, system and the figures when the weights do not fit.
MemoryPlan plan_memory(const compiler::ModelSpec& model, const SystemSpec& system,
                       const compiler::ParallelLayout& layout, double reserve_fraction);

}  // namespace duplex::runtime
