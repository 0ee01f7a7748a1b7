#pragma once
// Device memory split between weights, a reserve (activations, workspace) and the paged KV cache, per
// system and parallel layout. The KV capacity bounds admission, so it bounds the batch (DUPLEX.md s.8:
// "batch sizes limited by memory capacity").
//
// Memory spaces (SystemSpec::uses_prefill_space(): Duplex with Logic-PIM on its own stacks, DUPLEX.md s.6):
// each device's memory is S = pim.memory_spaces equal spaces of device_bytes / S. Weights per space: the
// device's local expert shards of each MoE layer round-robin over the spaces (expert j of the device's
// experts in the i-th MoE layer has running index i x local_experts + j and goes to space index mod S), plus
// 1/S of the non-expert weights in every space. The S - kv_spaces spaces holding the most weight bytes (ties:
// the highest index) are the prefill spaces, so the KV spaces keep the most room. The activation reserve
// lives in the prefill spaces (the xPU's activations and workspace sit with the prefill Q/K/V). It must leave
// them room for at least one KV block: a reserve spilling into the KV spaces would leave the prefill spaces
// none, so that is an error rather than a plan. Then
//   kv_tokens      = floor(sum over KV spaces of (space_bytes - weights there) / kv_bytes_per_token)
//                    x replicas (data-parallel copies of the model: dp, or dp / pp under pipeline
//                    parallelism)
//   prefill_tokens = floor((sum over prefill spaces of (space_bytes - weights there) - reserve in them)
//                          / kv_bytes_per_token)       (one replica: bounds its in-flight prefill)
// Other systems: one KV pool of device - weights - reserve, prefill_tokens = 0 (no bound), no spaces.
// Pipeline parallelism (layout pp > 1): a device holds the fullest stage's share of the weights and of every
// token's K/V (ceil(layers / pp) of the layers), for all of its pipeline's pp batches in flight.
#include <cstdint>
#include <vector>

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
  // DeepEP's low-latency buffers on each device (deepep_low_latency_bytes; 0 where no step uses them), held
  // beside the reserve (with it in the prefill spaces; on a heterogeneous system's GPU).
  double deepep_buffer_bytes_per_device = 0;
  double reserved_bytes_per_device() const {
    return reserve_bytes_per_device + deepep_buffer_bytes_per_device;
  }
  double kv_bytes_per_token = 0;        // one token of one request, all layers, on one device (its heads;
                                        // its stage's layers), a draft model's included
  double draft_weight_bytes_per_device = 0;  // a draft model's, in weight_bytes_per_device
  std::int64_t kv_tokens = 0;           // KV tokens the whole system holds (all data-parallel replicas)
  std::int64_t kv_blocks(std::int64_t block_tokens) const { return kv_tokens / block_tokens; }

  // Memory spaces (uses_prefill_space() systems only; empty / 0 elsewhere). Indices are space numbers.
  double space_bytes = 0;                       // device_bytes / memory_spaces
  std::vector<double> space_weight_bytes;       // per space: its experts + 1/S of the non-expert weights
  std::vector<int> kv_spaces;                   // ascending
  std::vector<int> prefill_spaces;              // ascending
  std::int64_t prefill_tokens = 0;              // per replica; 0 = no bound (no prefill space)
  std::int64_t prefill_capacity_tokens =
      0;  // the scheduler's bound: prefill_tokens x replicas (the scheduler
          // pools the replicas as it pools their KV); 0 = no bound
  bool has_spaces() const { return !space_weight_bytes.empty(); }
};

// A speculative-decoding draft model on the same devices as the target: its weights (counted as non-expert
// weights, spread evenly over the memory spaces) and its K/V per token join the target's.
struct DraftFootprint {
  double weight_bytes_per_device = 0;
  double kv_bytes_per_token = 0;  // one token of one request, all its layers, on one device
};
DraftFootprint draft_footprint(const compiler::ModelSpec& draft, const compiler::ParallelLayout& layout);

// The bytes DeepEP's low-latency kernels reserve on every device (Buffer's num_rdma_bytes for them:
// get_low_latency_rdma_size_hint) where an MoE model's steps may exchange tokens on them (expert_all_to_all
// low_latency or auto, on a layout that exchanges tokens) and expert_all_to_all_max_tokens > 0; else 0. With
// T = expert_all_to_all_max_tokens, h the hidden size, E the expert slots of all devices (local_experts x
// expert_groups) and s = h / 128 scales per token: a dispatch message 16 + max(2h, h + 4s) bytes (the token
// in BF16, or FP8 with its scales, after a 16-byte header), a combine message 4s + 2h; two send buffers of
// max(T x dispatch, E x T x combine), two receive buffers of E x T x max(dispatch, combine), two signaling
// buffers of 8E + 4 local_experts (aligned to 128), the total aligned to 128. source: deepseek-ai/DeepEP
// csrc/config.hpp LowLatencyLayout (commit 030cdf0), NUM_BUFFER_ALIGNMENT_BYTES 128 (kernels/configs.cuh).
// The normal kernels' NVLink and RDMA buffers (smaller, sized by their chunk settings) are not counted.
double deepep_low_latency_bytes(const compiler::ModelSpec& model, const SystemSpec& system,
                                const compiler::ParallelLayout& layout);

// K/V bytes of one token of one request, all layers, on one device of `layout` (its share of the heads; its
// pipeline stage's layers, the fullest stage's).
double kv_bytes_per_token(const compiler::ModelSpec& model, const compiler::ParallelLayout& layout);

// Throws duplex::Error naming model, system and the figures when the weights do not fit; on a system with
// memory spaces also when one space's weights exceed the space, or the prefill space(s) cannot hold the
// reserve plus one KV block of `kv_block_tokens` tokens (>= 1).
MemoryPlan plan_memory(const compiler::ModelSpec& model, const SystemSpec& system,
                       const compiler::ParallelLayout& layout, double reserve_fraction,
                       std::int64_t kv_block_tokens = 1, const DraftFootprint& draft = {});

}  // namespace duplex::runtime
