#include "duplex/compiler/parallel.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "duplex/base/error.hpp"

namespace duplex::compiler {

ParallelLayout ParallelLayout::make(const ModelSpec& model, const SystemSpec& system, int devices) {
  if (devices <= 0) throw Error(fmt::format("device count {} must be >= 1", devices));
  ParallelLayout p;
  p.devices = devices;
  const int per_node = system.links.devices_per_node;
  p.nodes = (devices + per_node - 1) / per_node;
  if (devices % p.nodes != 0)
    throw Error(fmt::format("{} devices do not split evenly over {} nodes of up to {} devices", devices,
                            p.nodes, per_node));
  p.tp = devices / p.nodes;
  p.dp = p.nodes;
  if (system.pipeline_parallel > 1) {
    const int stages = system.pipeline_parallel;
    if (model.layers < stages)
      throw Error(fmt::format("model {}: {} layers cannot fill {} pipeline stages", model.name, model.layers,
                              stages));
    if (devices % stages != 0)
      throw Error(fmt::format("{} devices do not split into {} pipeline stages", devices, stages));
    p.pp = stages;
    p.tp = std::min(per_node, devices / stages);
    if (devices % (p.tp * stages) != 0)
      throw Error(
          fmt::format("{} devices do not split into pipelines of {} stages of {} devices (TP within a "
                      "node of up to {})",
                      devices, stages, p.tp, per_node));
    p.dp = devices / p.tp;  // replicas x stages: each replica's batches in flight
    p.pipeline_in_node = p.tp * stages <= per_node;
    p.stage_layers = system.pipeline_partition;
    int layers = 0;
    for (const int l : p.stage_layers) layers += l;
    if (!p.stage_layers.empty() && layers != model.layers)
      throw Error(fmt::format("system {}: pipeline_partition \"{}\" gives {} layers; model {} has {} (expected "
                              "stage counts summing to them)",
                              system.name, fmt::join(p.stage_layers, ","), layers, model.name, model.layers));
  }
  if (system.attention_data_parallel) {  // every device a data-parallel rank of the non-expert layers
    p.attention_dp = true;
    p.tp = 1;
    p.dp = devices;
  }
  if (model.heads % p.tp != 0)
    throw Error(fmt::format("model {}: {} query heads do not split over tensor-parallel degree {}",
                            model.name, model.heads, p.tp));
  p.expert_tp = system.expert_tensor_parallel;
  if (!model.is_moe()) return p;
  // The devices an MoE layer's experts spread over: all of them, or under pipeline parallelism its stage's
  // in each replica of the pipeline (one node at most: their tokens never cross a node).
  const int ep_devices = p.pp > 1 ? p.tp : devices, ep_nodes = p.pp > 1 ? 1 : p.nodes;
  const int slots =
      model.experts + (system.expert_balancing ? system.expert_balancing->redundant_experts : 0);
  p.redundant_experts = slots - model.experts;
  if (system.expert_balancing && !p.expert_tp && model.experts < ep_devices)
    throw Error(
        fmt::format("system {}: expert_load_balancing needs whole experts on each device; model {} "
                    "has {} experts over {} expert-parallel devices (each expert sharded); expected "
                    "at least as many experts as devices, expert_tensor_parallel: true, or no "
                    "expert_load_balancing",
                    system.name, model.name, model.experts, ep_devices));
  const auto slots_fail = [&](int groups, const char* over) {
    throw Error(
        fmt::format("system {}: model {}'s {} experts + {} redundant (expert_load_balancing."
                    "redundant_experts) do not split over {} {}; expected a multiple of {} slots",
                    system.name, model.name, model.experts, p.redundant_experts, groups, over, groups));
  };
  if (p.expert_tp) {
    // EP across nodes, TP inside the node.
    p.expert_groups = ep_nodes;
    if (model.experts % ep_nodes != 0)
      throw Error(fmt::format("model {}: {} experts do not split over {} nodes (+ET)", model.name,
                              model.experts, ep_nodes));
    if (slots % ep_nodes != 0) slots_fail(ep_nodes, "nodes (+ET)");
    p.local_experts = slots / ep_nodes;
    p.expert_shards = p.tp;
  } else if (model.experts >= ep_devices) {
    if (model.experts % ep_devices != 0)
      throw Error(fmt::format("model {}: {} experts do not split over {} devices (expert parallel)",
                              model.name, model.experts, ep_devices));
    if (slots % ep_devices != 0) slots_fail(ep_devices, "devices (expert parallel)");
    p.expert_groups = ep_devices;
    p.local_experts = slots / ep_devices;
    p.expert_shards = 1;
  } else {
    if (ep_devices % model.experts != 0)
      throw Error(fmt::format("model {}: {} devices are not a multiple of {} experts", model.name, ep_devices,
                              model.experts));
    p.expert_groups = model.experts;
    p.local_experts = 1;
    p.expert_shards = ep_devices / model.experts;
  }
  if (model.expert_ffn % p.expert_shards != 0)
    throw Error(fmt::format("model {}: expert width {} does not split into {} shards", model.name,
                            model.expert_ffn, p.expert_shards));
  return p;
}

ParallelLayout::ExpertExchange ParallelLayout::expert_exchange() const {
  ExpertExchange x;
  // One node, or a pipeline stage's devices (in one node): its devices hold all its tokens.
  if (local_experts == 0 || ((nodes == 1 || pp > 1) && !attention_dp)) return x;
  const int per_node = devices_per_node();
  // An expert's shards fill whole nodes when there are more of them than a node's devices.
  const int shards_in_node = std::min(expert_shards, per_node);
  const double spanned_nodes = static_cast<double>(expert_shards) / shards_in_node;
  x.row_share = 1.0 / tp;
  x.infiniband = spanned_nodes * (nodes - 1) / nodes;
  x.nvlink = x.infiniband * (shards_in_node - 1);
  if (attention_dp)  // the expert on its own node: to its shards there, itself excepted
    x.nvlink += spanned_nodes / nodes * shards_in_node * (per_node - 1) / per_node;
  x.infiniband_peers = nodes - 1;
  x.nvlink_peers = attention_dp ? per_node - 1 : shards_in_node - 1;
  return x;
}

std::vector<int> ParallelLayout::stage_ends(int layers) const {
  // source: vLLM's get_pp_indices (vllm/distributed/utils.py): VLLM_PP_LAYER_PARTITION's counts when given
  // (stage_layers), else layers / pp each, the remainder one more each to the stages before the last, from
  // the second to last backwards.
  std::vector<int> sizes = stage_layers;
  if (sizes.empty()) {
    sizes.assign(static_cast<std::size_t>(pp), layers / pp);
    for (int i = 2; i < layers % pp + 2; ++i) ++sizes[static_cast<std::size_t>(pp - i)];
  }
  int total = 0;
  for (const int l : sizes) total += l;
  DUPLEX_ASSERT(static_cast<int>(sizes.size()) == pp && total == layers, "a count per pipeline stage");
  std::vector<int> ends;
  int end = 0;
  for (int s = 0; s + 1 < pp; ++s) {
    end += sizes[static_cast<std::size_t>(s)];
    ends.push_back(end - 1);
  }
  return ends;
}

std::string ParallelLayout::describe() const {
  const std::string stages =
      stage_layers.empty() ? "" : fmt::format(", layers {}", fmt::join(stage_layers, "/"));
  std::string s = pp > 1 ? fmt::format("{} devices: TP{} x PP{} x DP{} ({} batches in flight{}{})", devices,
                                       tp, pp, replicas(), dp, pipeline_in_node ? "" : ", stages over InfiniBand",
                                       stages)
                         : fmt::format("{} device{}: TP{} x DP{}{}", devices, devices == 1 ? "" : "s", tp, dp,
                                       attention_dp ? " (attention data parallel)" : "");
  if (local_experts > 0 && redundant_experts > 0)
    s += fmt::format(", {}EP{} ({} expert slots/{}: {} redundant per layer{})", expert_tp ? "ET " : "",
                     expert_groups, local_experts, expert_tp ? "node" : "device", redundant_experts,
                     expert_shards > 1 ? fmt::format(", each in {} shards", expert_shards) : "");
  else if (local_experts > 0)
    s += fmt::format(", {}EP{} ({} expert{}/device{})", expert_tp ? "ET " : "", expert_groups, local_experts,
                     local_experts == 1 ? "" : "s",
                     expert_shards > 1 ? fmt::format(", each in {} shards", expert_shards) : "");
  return s;
}

}  // namespace duplex::compiler
