#pragma once
// Expert load balancing over a run (SystemSpec::expert_balancing; vLLM's EPLB): the expert placement each
// step's lowering uses (compiler::Routing::placement), placed again every `interval` steps from the tokens
// each expert received over the last `window` steps (DeepSeek's EPLB as vLLM calls it: the hierarchical
// policy, compiler::balance_experts_hierarchical, when the model's router groups divide over the nodes the
// expert-parallel groups span, else the global one, compiler::balance_experts), and the expert weights each
// new placement copies between devices.
#include <cstdint>
#include <map>
#include <vector>

#include "duplex/base/device_spec.hpp"
#include "duplex/compiler/expert_placement.hpp"
#include "duplex/compiler/model_spec.hpp"
#include "duplex/compiler/parallel.hpp"
#include "duplex/runtime/workload/expert_routing.hpp"

namespace duplex::runtime {

class ExpertBalancer {
 public:
  // What a new placement copies. An expert-parallel group (a device, +ET a node) copies in each expert its
  // new slots hold more times than its old ones did: one shard of the expert per device of the group, from a
  // group of its node that held the expert (over NVLink), else from another node (over InfiniBand). A
  // device's copies over both links run at once, each after its link's latency; the step waits for the
  // slowest device (vLLM rearranges the weights of every rank before the next forward).
  struct Move {
    bool rebalanced = false;         // this step placed the experts again
    Time time;                       // the slowest device's copying
    std::int64_t device_slots = 0;   // slots the slowest device copied in (all MoE layers)
    double device_nvlink_bytes = 0;  // its bytes over NVLink
    double device_infiniband_bytes = 0;
    double nvlink_bytes = 0;  // all devices together
    double infiniband_bytes = 0;
  };

  // Throws duplex::Error unless `model` is MoE and `layout` holds whole experts per group.
  ExpertBalancer(const compiler::ModelSpec& model, const ExpertBalancing& config,
                 const compiler::ParallelLayout& layout, const LinkSpec& links);

  // Called once per step, before it is lowered, with its routing ([moe layer][expert], the whole step's
  // tokens): on step interval, 2 x interval, ... (counting from 0) the experts are placed again from the
  // summed counts of the `window` steps before it (a layer whose window routed nothing keeps its placement),
  // then this step's counts are recorded for the windows that hold it.
  Move step(const ExpertCounts& counts);

  // The busiest expert-parallel group's rows over the mean group's under the current placement, averaged
  // over the MoE layers that route any (1: even; 0 when none does). Under pipeline parallelism each stage's
  // groups over its own layers.
  double imbalance(const ExpertCounts& counts) const;

  // [moe layer] the expert each slot holds (layout.local_experts x expert_groups slots; group-major).
  const std::vector<compiler::SlotExperts>& placement() const { return placement_; }
  std::int64_t rebalancings() const { return rebalancings_; }

 private:
  Move move_to(std::vector<compiler::SlotExperts> next);
  int node_of(int group) const;  // the node of an expert-parallel group

  ExpertBalancing config_;
  compiler::ParallelLayout layout_;
  LinkSpec links_;
  int experts_ = 0;
  int router_groups_ = 1;      // the model's expert groups (ModelSpec::router_groups)
  int nodes_ = 1;              // the nodes the expert-parallel groups span
  bool hierarchical_ = false;  // DeepSeek's hierarchical policy (else the global one)
  double shard_bytes_ = 0;     // one slot's expert shard on one device, one MoE layer
  std::vector<int> stage_of_;  // [moe layer] its pipeline stage (0 without pipeline parallelism)
  std::vector<compiler::SlotExperts> placement_;
  std::int64_t steps_ = 0;  // steps seen
  std::int64_t rebalancings_ = 0;
  std::map<std::int64_t, ExpertCounts> windows_;  // rebalancing step -> the counts summed for it so far
};

}  // namespace duplex::runtime
