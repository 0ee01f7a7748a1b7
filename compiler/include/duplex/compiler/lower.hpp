#pragma once
// Lowering: (model, batch, parallel layout, routing) -> the op graph of one device for one step, with
// FLOPs and DRAM bytes by source on every op (the analysis is part of lowering: each op's formulas sit
// beside its construction in lower.cpp).
#include "duplex/compiler/batch.hpp"
#include "duplex/compiler/model_spec.hpp"
#include "duplex/compiler/op.hpp"
#include "duplex/compiler/parallel.hpp"

namespace duplex::compiler {

struct LowerOptions {
  // Heterogeneous GPU + PIM devices (SystemSpec::heterogeneous()): the KV cache and the routed experts live on
  // the GPU's PIM devices, so lowering adds the NVLink transfers (all-to-all ops, one device's share) around
  // what runs there, per layer:
  //   to_pim_attn   = decode tokens x (q + new k + v elements) + prefill tokens x (k + v elements)  [KV write]
  //   from_pim_attn = decode tokens x q elements  (the attention output; q width = output width)
  //   to_pim_experts = from_pim_experts = tokens routed to this device's experts x hidden
  // (elements of this device's heads; activations 2 B, K/V in the model's kv dtype). Only one node is
  // supported: across nodes the expert all-to-all would share the all-to-all op kind.
  bool pim_devices = false;
  static LowerOptions for_system(const SystemSpec& system) { return {system.heterogeneous()}; }
};

// Throws duplex::Error for an empty batch or a routing that does not fit the model.
Graph lower(const ModelSpec& model, const BatchState& batch, const ParallelLayout& layout, const Routing& routing,
            const LowerOptions& options = {});

}  // namespace duplex::compiler
