#pragma once
// Private to the functional executor: which part of the model one device of a multi-device layout holds
// (compiler::ParallelLayout, DUPLEX.md s.6 "Multi-device"), and that part of the weights.
// Device d is in node d / tp with rank r = d % tp in the node's tensor-parallel group; each node is a
// data-parallel replica of the non-expert layers, serving its own requests. ("Node" here is the layout's
// data-parallel rank: a machine node, or under attention data parallelism (tp 1) one device.)
//  - attention: TP over the node's devices: rank r holds query heads [r*H/tp, (r+1)*H/tp) and the KV heads
//    they read (KV heads replicated when tp > kv_heads), the matching QKV rows and O-projection columns;
//  - dense FFN: columns [r*F/tp, (r+1)*F/tp) of gate / up (and of the fc1 bias), the same rows of down;
//  - experts (over every node's devices): device d is in expert group d / (devices / expert_groups), holding
//    that group's local_experts consecutive experts, each as column shard d % expert_shards;
//  - LM head: vocabulary rows [r*V/tp, (r+1)*V/tp);
//  - shared experts: columns [r*Fs/tp, (r+1)*Fs/tp), as the dense FFN;
//  - embedding, position table, norms and their biases (q / k norm gains too: a whole-projection norm takes
//  its slice), router, shared-expert gate, o bias and the FFN's output bias: replicated; q / k / v biases:
//    the rows of its QKV rows.
#include <vector>

#include "device_weights.hpp"
#include "duplex/compiler/parallel.hpp"

namespace duplex::runtime::functional {

struct DeviceShard {
  int device = 0;
  int node = 0;                             // the data-parallel replica whose requests it serves
  int q_head0 = 0, q_heads = 0;             // local query heads [q_head0, q_head0 + q_heads)
  int kv_head0 = 0, kv_heads = 0;           // local KV heads
  int ffn_shard = 0, ffn_shards = 1;        // dense FFN column shard
  int expert0 = 0, local_experts = 0;       // global experts [expert0, expert0 + local_experts); 0 for dense
  int expert_shard = 0, expert_shards = 1;  // column shard of each local expert
  std::int64_t vocab0 = 0, vocab = 0;       // LM-head rows [vocab0, vocab0 + vocab)
};

// One shard per device of `layout`. Throws duplex::Error when the heads, KV heads, FFN width or vocabulary do
// not split evenly over its tensor-parallel degree.
std::vector<DeviceShard> shard_devices(const compiler::ModelSpec& model,
                                       const compiler::ParallelLayout& layout);

// The weights device `shard` holds, cut out of the whole model's (lay_out_weights).
DeviceWeights shard_weights(const DeviceWeights& full, const compiler::ModelSpec& model,
                            const DeviceShard& shard);

}  // namespace duplex::runtime::functional
