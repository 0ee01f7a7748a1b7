#pragma once
// Analytical time of an op on each unit of a system (a roofline per unit):
//   xPU:  max(FLOPs / (peak x gemm efficiency), bytes / (HBM bandwidth x memory efficiency)) + launch
//   overhead
//         (element-wise ops use the FP32 vector peak instead of the tensor-core peak);
//   PIM:  max(FLOPs / PIM peak, bytes / PIM internal bandwidth, softmax elements / softmax rate) + command
//         latency, over all stacks of the device (the softmax term: decode attention on Logic-PIM); a GEMM
//         whose token count exceeds what the PIM input buffer holds is done in several passes, each
//         re-reading the weights (Logic-PIM: tokens per pass = input_buffer / (k x 2 B));
//   link: bytes / link bandwidth + per-step latency (ring all-reduce 2(p-1) steps on NVLink inside a node;
//         an MoE layer's all-to-all (ParallelLayout::expert_exchange) the busiest device's InfiniBand copies
//         (nodes-1 steps) while its NVLink copies (to its node's expert shards; each step a device) go at
//         once, the longer of the two (Op::exchange: the mean device's bytes x each link's skew); on a
//         heterogeneous system the GPU <-> PIM-device transfers (kPimTransfer) are one
//         NVLink step each, inside the node).
// Heterogeneous GPU + PIM devices (system.heterogeneous()): an op runs where its data lives (required_unit):
// decode attention (KV cache) and routed experts (their weights) only on the PIM devices, everything else
// only on the GPU; the PIM roofline covers the GPU's pim_devices_per_gpu PIM devices.
// The efficiencies are the config's documented choices (configs/devices/h100.yaml).
#include <functional>
#include <optional>

#include "duplex/base/device_spec.hpp"
#include "duplex/compiler/op.hpp"
#include "duplex/compiler/parallel.hpp"

namespace duplex::compiler {

// A slower, more faithful PIM timing model (e.g. the cycle-level SystemC model, memoized) can replace the
// analytical PIM roofline: it gets a supported op and returns its time on the device's PIM units.
using PimTimeFn = std::function<Time(const Op&)>;
// A measured xPU profile can replace the xPU roofline for the ops it covers: it returns the op's time
// (launch included), or nullopt to fall back to the roofline.
using XpuTimeFn = std::function<std::optional<Time>(const Op&)>;

class CostModel {
 public:
  CostModel(const SystemSpec& system, const ParallelLayout& layout, PimTimeFn pim_model = {},
            XpuTimeFn xpu_model = {});
  Time xpu_time(const Op& op) const;
  bool pim_supports(const Op& op) const;           // false when the system has no PIM
  std::optional<Time> pim_time(const Op& op) const;  // nullopt when unsupported; the injected model if any
  Time analytical_pim_time(const Op& op) const;    // the roofline above; op must be supported
  Time link_time(const Op& op) const;
  // A device's copies over NVLink and InfiniBand at once, each after its link's latency (an expert move).
  static Time concurrent_copy_time(const LinkSpec& links, double nvlink_bytes, double infiniband_bytes);
  // The unit an op must run on because its data lives there (heterogeneous systems, link ops excluded);
  // nullopt when placement may choose by cost.
  std::optional<Unit> required_unit(const Op& op) const;
  // Tokens one Logic-PIM (or BankGroup-PIM) pass can hold for a GEMM with k inputs (>= 1); 0 without one.
  std::int64_t pim_tokens_per_pass(std::int64_t k) const;
  const SystemSpec& system() const { return sys_; }

 private:
  const SystemSpec& sys_;
  ParallelLayout layout_;
  PimTimeFn pim_model_;
  XpuTimeFn xpu_model_;
};

}  // namespace duplex::compiler
