#pragma once
// Lowering: (model, batch, parallel layout, routing) -> the op graph of one device for one step, with
// FLOPs and DRAM bytes by source on every op (the analysis is part of lowering: each op's formulas sit
// beside its construction in lower.cpp).
#include <string_view>

#include "duplex/compiler/batch.hpp"
#include "duplex/compiler/model_spec.hpp"
#include "duplex/compiler/op.hpp"
#include "duplex/compiler/parallel.hpp"

namespace duplex::compiler {

// The name (after "L<layer>.") of the all-reduce a whole-projection q / k norm (ModelSpec::qk_norm kWhole,
// OLMoE) needs when a node's heads are over several devices: per token, the sums of squares of q and of k
// (2 FP32 values) summed over the tensor-parallel devices before each normalises its slice.
inline constexpr std::string_view kQkNormAllReduce = "qk_norm_all_reduce";

struct LowerOptions {
  // Heterogeneous GPU + PIM devices (SystemSpec::heterogeneous()): the KV cache and the routed experts live on
  // the GPU's PIM devices, so lowering adds the NVLink transfers (kPimTransfer ops, one device's share) around
  // what runs there, per layer:
  //   to_pim_attn   = decode tokens x (q + new k + v elements) + prefill tokens x (k + v elements)  [KV write]
  //   from_pim_attn = decode tokens x q elements  (the attention output; q width = output width)
  //   to_pim_experts = from_pim_experts = tokens routed to this device's experts x hidden
  // (elements of this device's heads; activations 2 B, K/V in the model's kv dtype). Across nodes the
  // expert all-to-all (kAllToAll, InfiniBand, GPU to GPU as on the GPU system) precedes to_pim_experts and
  // follows from_pim_experts: the PIM devices are reached only over their node's NVLink.
  bool pim_devices = false;
  // In-device K/V migration (DUPLEX.md s.6, memory spaces): on a Duplex device with Logic-PIM on its own stacks,
  // memory is split into 4 spaces by bank-bundle index; decode K/V lives in 3 of them and a prefill writes its
  // Q/K/V into the 4th, so once a request's prefill completes (the step computing its last prompt token:
  // RequestGroup::completes_prefill) the xPU copies its K/V into the KV spaces. Lowering then adds, per layer
  // right after the attention ops, one kKvMigration op (xPU, memory-bound, FLOPs 0) covering every completing
  // request of the step (per layer so that, with attention co-processing, it overlaps PIM decode attention):
  //   bytes_kv = 2 (read + write) x completing prompt tokens (context + tokens) x this device's K/V elements
  //              of one layer (k + v, its kv heads) x kv dtype bytes
  // Exactly when SystemSpec::uses_prefill_space() (the memory plan sizes the spaces by the same predicate).
  // Not for: systems without PIM or with Bank-PIM / BankGroup-PIM (no bank-bundle spaces), heterogeneous
  // GPU + PIM devices (the K/V goes to the PIM devices with to_pim_attn), split systems (the K/V leaves the
  // prefill device over the links and is written straight into the decode device's KV spaces), and a
  // Logic-PIM config with kv_spaces == memory_spaces (no prefill space).
  bool kv_migration = false;
  // Data-parallel replicas (layout dp > 1): the lowering is one device's of one replica. With ranked groups
  // (RequestGroup::rank) a replica's share is its own groups; without, the requests are dealt to the replicas
  // in turn, heaviest first (replica 0's share is then the busiest). Functional
  // emulation executes that one plan for every replica's requests, so it needs every group in it: with
  // `every_group_per_replica` each group's requests are split over the replicas separately, rounded up (every
  // group on the device: an upper bound of the busiest replica's work).
  bool every_group_per_replica = false;
  // Which replica's share to lower (0 <= replica < dp): its ranked groups, or requests replica, replica + dp,
  // ... of the dealing order. A replica with no request runs only its devices' routed experts for the others'
  // tokens (no op over zero token rows). The serving simulator lowers every replica: the slowest times the
  // step, and each is charged its energy.
  int replica = 0;
  // Which expert-parallel group's expert slots an MoE layer plans (ParallelLayout::expert_groups): -1 the
  // group whose slots receive the most rows that layer (every device waits for it at the all-to-all: the
  // step's time); 0 <= g < expert_groups that group's (functional emulation executes each device's own).
  int expert_group = -1;
  // The MoE all-to-all's kernels (SystemSpec::expert_all_to_all): per token-expert row (low_latency), or
  // each token once per node and device holding any of its experts (normal: deduplicated_exchange), or
  // normal for a step with prefill tokens and low_latency otherwise (auto).
  ExpertAllToAll all_to_all = ExpertAllToAll::auto_by_step;
  static LowerOptions for_system(const SystemSpec& system) {
    return {.pim_devices = system.heterogeneous(),
            .kv_migration = system.uses_prefill_space(),
            .all_to_all = system.expert_all_to_all};
  }
};

// Whether a step's all-to-all runs DeepEP's normal kernels (node-deduplicated): `normal`, or `auto` with
// prefill tokens in the batch.
inline bool deduplicates_exchange(ExpertAllToAll kernels, const BatchState& batch) {
  return kernels == ExpertAllToAll::normal ||
         (kernels == ExpertAllToAll::auto_by_step && batch.prefill_tokens() > 0);
}

// Throws duplex::Error for an empty batch or a routing that does not fit the model.
Graph lower(const ModelSpec& model, const BatchState& batch, const ParallelLayout& layout, const Routing& routing,
            const LowerOptions& options = {});

}  // namespace duplex::compiler
