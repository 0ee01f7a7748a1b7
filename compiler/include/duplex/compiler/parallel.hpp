#pragma once
// How a model is spread over the devices of a system (DUPLEX.md s.6 "Multi-device"):
//  - non-expert layers: tensor parallel (TP) over the devices of a node, data parallel (DP) across nodes;
//  - experts: expert parallel (EP) over all devices, tensor parallel inside an expert when devices > experts;
//  - +ET (expert_tensor_parallel): every expert of a node's share sharded over the node's devices (TP), EP
//    across nodes;
//  - attention data parallel (SystemSpec::attention_data_parallel): non-expert layers TP1 x DP devices, each
//    device its own requests; experts EP over all devices, exchanged all-to-all among them;
//  - pipeline parallel (SystemSpec::pipeline_parallel): the layers in pp consecutive stages, each on a TP
//    group of up to a node's devices (TP x PP x replicas); each replica of the pipeline serves pp batches at
//    once (vLLM's virtual engines), which count as its data-parallel ranks. An MoE model's experts are expert
//    parallel over each stage's devices, each replica holding every expert (no exchange across nodes);
//  - expert load balancing (SystemSpec::expert_balancing): experts + redundant_experts slots per MoE layer
//    over the EP groups, whole experts in each (expert_placement.hpp).
#include <string>
#include <vector>

#include "duplex/base/device_spec.hpp"
#include "duplex/compiler/model_spec.hpp"

namespace duplex::compiler {

struct ParallelLayout {
  int devices = 1;
  int nodes = 1;
  // Tensor-parallel degree of attention / FC: a node's devices (a pipeline stage's; attention DP: 1).
  int tp = 1;
  int dp = 1;                 // = nodes (attention DP: devices; pipeline parallel: replicas x pp)
  bool attention_dp = false;  // SystemSpec::attention_data_parallel
  // Pipeline stages (SystemSpec::pipeline_parallel). Each of the dp ranks is then one of a replica's pp
  // batches in flight (a virtual engine): its step runs every layer, stage after stage, on a TP group, the
  // activations sent between stages (stage_send ops); a device holds one stage's layers' weights and their
  // K/V for all pp batches. pipeline_in_node: the whole pipeline (tp x pp devices) lies in one node, so the
  // stages exchange over NVLink, else over InfiniBand.
  int pp = 1;
  bool pipeline_in_node = true;
  // Each stage's layers when the system states them (SystemSpec::pipeline_partition); empty: stage_ends'
  // default split.
  std::vector<int> stage_layers;
  int replicas() const { return dp / pp; }  // data-parallel copies of the model (of the pipeline)
  // The last layer of each stage but the last: stage_layers' counts, or by default the layers split evenly,
  // where they do not divide the stages before the last taking one more each from the second to last
  // backwards, as vLLM's get_pp_indices splits them (the last stage holds the final norm and LM head, the
  // first the embedding); empty without pipeline parallelism.
  std::vector<int> stage_ends(int layers) const;
  int devices_per_node() const { return devices / nodes; }
  bool expert_tp = false;  // +ET
  // Expert slots held by one device (one group: +ET a node, each slot sharded over its devices): its
  // distinct experts, or under expert load balancing (SystemSpec::expert_balancing) (experts +
  // redundant_experts) / expert_groups copies, which experts they hold changing over a run.
  int local_experts = 0;
  int redundant_experts = 0;  // expert copies per MoE layer beyond the experts (expert load balancing)
  int expert_shards = 1;   // each local expert split into this many column shards
  int expert_groups = 1;   // devices that hold different experts (EP degree)

  // How an MoE layer's token exchange (the dispatch all-to-all; the combine mirrors it) spreads over the
  // links, per token-expert row a device sends, on average over uniform routing (the lowering scales it by
  // how many more rows the busiest device's experts receive under the step's routing). A device sends its own
  // rows: under tensor parallelism every device of a node holds all the node's tokens, so each sends an
  // equal 1/tp share of them (`row_share`), straight to a device holding the row's expert on another node
  // (InfiniBand, one copy per other node the expert spans); that device forwards it over NVLink to the
  // expert's other shards in its node (+ET: the whole node), as DeepEP's internode kernels forward. Rows
  // for the sender's own node need nothing (its devices hold them) except under attention data
  // parallelism, where each device holds only its requests' rows and sends them over NVLink to the
  // expert's shards on its node. One node without attention DP: no exchange (all zero).
  struct ExpertExchange {
    double row_share = 1;      // of the rows the device holds, the fraction it sends (1 / tp, or 1)
    double infiniband = 0;     // InfiniBand copies per row sent
    double nvlink = 0;         // NVLink copies per row sent (own node + forwarded)
    int infiniband_peers = 0;  // latency steps: other nodes
    int nvlink_peers = 0;      // latency steps: devices of the node reached over NVLink
    // The busiest receiver's copies over the mean device's, per link (deduplicated_exchange; 1 here: the
    // lowering scales this per-row exchange by its busiest device's rows).
    double infiniband_skew = 1, nvlink_skew = 1;
  };
  ExpertExchange expert_exchange() const;

  // Throws duplex::Error when the split is impossible (e.g. devices not a multiple of nodes, experts not
  // divisible by the EP degree, heads not divisible by TP).
  static ParallelLayout make(const ModelSpec& model, const SystemSpec& system, int devices);
  std::string describe() const;  // "4 devices: TP4 x DP1, EP4 (2 experts/device)"
};

}  // namespace duplex::compiler
