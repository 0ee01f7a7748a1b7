#include "duplex/runtime/sim/memory_plan.hpp"

#include <algorithm>
#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::runtime {

MemoryPlan plan_memory(const compiler::ModelSpec& m, const SystemSpec& system, const compiler::ParallelLayout& p,
                       double reserve_fraction) {
  if (!(reserve_fraction >= 0 && reserve_fraction < 1))
    throw Error(fmt::format("memory reserve fraction {} is not in [0, 1)", reserve_fraction));
  MemoryPlan plan;
  plan.device_bytes = static_cast<double>(system.memory_capacity().bytes);
  const double wbytes = compiler::dtype_bytes(m.dtype);
  std::int64_t moe_layers = 0;
  for (int l = 0; l < m.layers; ++l) moe_layers += m.is_moe_layer(l) ? 1 : 0;
  const double expert_params = static_cast<double>(moe_layers) * m.experts * static_cast<double>(m.ffn_params(m.expert_ffn));
  const double other_params = static_cast<double>(m.params()) - expert_params;
  const double per_device = other_params / p.tp;  // tensor parallel inside a node, replicated across nodes
  const double experts_per_device =
      m.is_moe() ? static_cast<double>(moe_layers) * p.local_experts * static_cast<double>(m.ffn_params(m.expert_ffn)) /
                       p.expert_shards
                 : 0.0;
  plan.reserve_bytes_per_device = reserve_fraction * plan.device_bytes;
  const double kv_heads_share =
      m.attention == compiler::AttentionKind::kMla ? 1.0
                                                   : static_cast<double>(std::max(1, m.kv_heads / p.tp)) / m.kv_heads;
  plan.kv_bytes_per_token = static_cast<double>(m.layers) * static_cast<double>(m.kv_elements_per_token_layer()) *
                            kv_heads_share * compiler::dtype_bytes(m.kv_dtype);
  double free = 0;
  if (system.heterogeneous()) {
    plan.weight_bytes_per_device = per_device * wbytes;
    plan.pim_device_bytes = plan.device_bytes * system.pim_devices_per_gpu;  // same stacks as a GPU, no xPU
    plan.pim_weight_bytes = experts_per_device * wbytes;
    if (plan.weight_bytes_per_device + plan.reserve_bytes_per_device > plan.device_bytes)
      throw Error(fmt::format("model {} does not fit system {} on {} GPUs: the non-expert weights take {} of {} per "
                              "GPU ({} reserved)",
                              m.name, system.name, p.devices,
                              format_byte_size({static_cast<std::uint64_t>(plan.weight_bytes_per_device)}),
                              format_byte_size(system.memory_capacity()),
                              format_byte_size({static_cast<std::uint64_t>(plan.reserve_bytes_per_device)})));
    free = plan.pim_device_bytes - plan.pim_weight_bytes;  // the PIM devices keep no activation reserve
  } else {
    plan.weight_bytes_per_device = (per_device + experts_per_device) * wbytes;
    free = plan.device_bytes - plan.weight_bytes_per_device - plan.reserve_bytes_per_device;
  }
  if (free <= plan.kv_bytes_per_token)
    throw Error(fmt::format("model {} does not fit system {} on {} devices: weights take {} of {} per device "
                            "({} reserved), no room for the KV cache",
                            m.name, system.name, p.devices,
                            format_byte_size({static_cast<std::uint64_t>(plan.weight_bytes_per_device +
                                                                         plan.pim_weight_bytes)}),
                            format_byte_size(system.memory_capacity()),
                            format_byte_size({static_cast<std::uint64_t>(plan.reserve_bytes_per_device)})));
  plan.kv_tokens = static_cast<std::int64_t>(free / plan.kv_bytes_per_token) * p.dp;
  return plan;
}

}  // namespace duplex::runtime
