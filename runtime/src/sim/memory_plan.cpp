#include "duplex/runtime/sim/memory_plan.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "duplex/base/error.hpp"

namespace duplex::runtime {
namespace {

// The fraction of a model's layers on the fullest pipeline stage of layout p (1 without pipeline
// parallelism): where they do not divide, stages before the last take one layer more
// (ParallelLayout::stage_ends).
double fullest_stage(const compiler::ModelSpec& m, const compiler::ParallelLayout& p) {
  return static_cast<double>((m.layers + p.pp - 1) / p.pp) / m.layers;
}

// A model's weight bytes on one device of layout p: the non-expert ones split by tensor parallelism
// (replicated across nodes), each routed expert's shard, and the MoE layers they repeat over (bytes, not
// parameters: experts may be in their own dtype). Under pipeline parallelism those of the stage whose devices
// hold the most: its layers' weights, the input table on the first stage, the LM head and final norm on the
// last (a tied head as a copy of the table there, as vLLM's last pipeline rank holds it).
struct WeightShares {
  std::int64_t moe_layers = 0;
  double other_per_device = 0;
  double expert_shard_bytes = 0;
  double experts_per_device(const compiler::ParallelLayout& p) const {
    return static_cast<double>(moe_layers) * p.local_experts * expert_shard_bytes;
  }
};
WeightShares weight_shares(const compiler::ModelSpec& m, const compiler::ParallelLayout& p) {
  WeightShares w;
  const double expert_bytes = m.is_moe() ? m.expert_ffn_bytes(m.expert_ffn) : 0.0;
  w.expert_shard_bytes = expert_bytes / p.expert_shards;
  if (p.pp == 1) {
    w.moe_layers = m.moe_layers_before(m.layers);
    const double all_experts = static_cast<double>(w.moe_layers) * m.experts * expert_bytes;
    w.other_per_device = (m.weight_bytes() - all_experts) / p.tp;
    return w;
  }
  std::vector<int> ends = p.stage_ends(m.layers);
  ends.push_back(m.layers - 1);
  double most = -1;
  const double shard = w.expert_shard_bytes;
  for (std::size_t s = 0, first = 0; s < ends.size(); first = static_cast<std::size_t>(ends[s]) + 1, ++s) {
    WeightShares stage;
    stage.expert_shard_bytes = shard;
    double other = 0;
    for (int l = static_cast<int>(first); l <= ends[s]; ++l) {
      other += m.layer_weight_bytes(l);
      if (m.is_moe_layer(l)) {
        other -= m.experts * expert_bytes;  // the routed experts: their shards below
        ++stage.moe_layers;
      }
    }
    if (s == 0) other += m.input_embedding_bytes();
    if (s + 1 == ends.size())
      other += m.lm_head_bytes() + (m.tie_embeddings ? static_cast<double>(std::int64_t{m.vocab} * m.hidden) *
                                                           compiler::dtype_bytes(m.dtype)
                                                     : 0.0);
    stage.other_per_device = other / p.tp;
    const double bytes = stage.other_per_device + stage.experts_per_device(p);
    if (bytes > most) {
      most = bytes;
      w = stage;
    }
  }
  return w;
}

std::string bytes_text(double bytes) { return format_byte_size({static_cast<std::uint64_t>(std::max(0.0, bytes))}); }

// Weights of each of the `spaces` spaces of one device: the device's expert shards round-robin by running
// index over its MoE layers, the non-expert weights spread evenly.
std::vector<double> weights_per_space(int spaces, std::int64_t moe_layers, int local_experts, double expert_shard_bytes,
                                      double other_bytes) {
  std::vector<double> w(static_cast<std::size_t>(spaces), other_bytes / spaces);
  const std::int64_t experts = moe_layers * local_experts;
  for (std::int64_t k = 0; k < experts; ++k) w[static_cast<std::size_t>(k % spaces)] += expert_shard_bytes;
  return w;
}

// Fills the memory-space figures, kv_tokens and prefill_tokens of `plan` (its device, weight, reserve and
// per-token figures already set).
void plan_spaces(MemoryPlan& plan, const compiler::ModelSpec& m, const SystemSpec& system,
                 const compiler::ParallelLayout& p, std::int64_t moe_layers, double expert_shard_bytes,
                 double other_bytes, std::int64_t kv_block_tokens) {
  const int spaces = system.pim->memory_spaces;
  const int kv_count = system.pim->kv_spaces;
  plan.space_bytes = plan.device_bytes / spaces;
  plan.space_weight_bytes = weights_per_space(spaces, moe_layers, p.local_experts, expert_shard_bytes, other_bytes);
  for (int s = 0; s < spaces; ++s) {
    const double w = plan.space_weight_bytes[static_cast<std::size_t>(s)];
    if (w > plan.space_bytes)
      throw Error(fmt::format("model {} does not fit system {} on {} devices: memory space {} of {} (each {}) holds "
                              "{} of weights (its round-robin experts + 1/{} of the rest); expected more devices or "
                              "fewer, smaller experts per device",
                              m.name, system.name, p.devices, s, spaces, bytes_text(plan.space_bytes), bytes_text(w),
                              spaces));
  }
  // Prefill spaces: the most weight bytes first, ties to the highest index.
  std::vector<int> order(static_cast<std::size_t>(spaces));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    const double wa = plan.space_weight_bytes[static_cast<std::size_t>(a)];
    const double wb = plan.space_weight_bytes[static_cast<std::size_t>(b)];
    return wa != wb ? wa > wb : a > b;
  });
  const auto prefill_count = static_cast<std::size_t>(spaces - kv_count);
  plan.prefill_spaces.assign(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(prefill_count));
  plan.kv_spaces.assign(order.begin() + static_cast<std::ptrdiff_t>(prefill_count), order.end());
  std::sort(plan.prefill_spaces.begin(), plan.prefill_spaces.end());
  std::sort(plan.kv_spaces.begin(), plan.kv_spaces.end());
  auto free_in = [&](const std::vector<int>& which) {
    double free = 0;
    for (int s : which) free += plan.space_bytes - plan.space_weight_bytes[static_cast<std::size_t>(s)];
    return free;
  };
  // The reserve (the xPU's activations and workspace) lives with the prefill Q/K/V in the prefill spaces. A
  // reserve larger than their room would spill into the KV spaces, but it would also leave the prefill spaces
  // no room for a single prefill, so that case (and any prefill room under one KV block) is an error.
  const double prefill_free = free_in(plan.prefill_spaces);
  const double prefill_left = prefill_free - plan.reserved_bytes_per_device();
  const double block_bytes = static_cast<double>(kv_block_tokens) * plan.kv_bytes_per_token;
  if (prefill_left < block_bytes)
    throw Error(
        fmt::format("model {} does not fit system {} on {} devices: prefill space(s) {} ({} each) keep {} "
                    "after {} of weights, less than the {} reserve plus one KV block of {} tokens ({}); "
                    "expected a memory reserve of at most {:.4f} of the device, or more devices",
                    m.name, system.name, p.devices, fmt::join(plan.prefill_spaces, ", "),
                    bytes_text(plan.space_bytes), bytes_text(prefill_free),
                    bytes_text(static_cast<double>(prefill_count) * plan.space_bytes - prefill_free),
                    bytes_text(plan.reserved_bytes_per_device()), kv_block_tokens, bytes_text(block_bytes),
                    std::max(0.0, (prefill_free - block_bytes) / plan.device_bytes)));
  const double kv_free = free_in(plan.kv_spaces);
  if (kv_free <= plan.kv_bytes_per_token)
    throw Error(fmt::format("model {} does not fit system {} on {} devices: the {} KV spaces of {} each hold {} of "
                            "weights together, no room for the KV cache",
                            m.name, system.name, p.devices, kv_count, bytes_text(plan.space_bytes),
                            bytes_text(kv_count * plan.space_bytes - kv_free)));
  plan.kv_tokens = static_cast<std::int64_t>(kv_free / plan.kv_bytes_per_token) * p.replicas();
  plan.prefill_tokens = static_cast<std::int64_t>(prefill_left / plan.kv_bytes_per_token);
  plan.prefill_capacity_tokens = plan.prefill_tokens * p.replicas();
}

// x rounded up to a multiple of 128 (DeepEP's NUM_BUFFER_ALIGNMENT_BYTES).
double align128(double x) {
  return std::ceil(x / 128.0) * 128.0;
}

}  // namespace

double deepep_low_latency_bytes(const compiler::ModelSpec& m, const SystemSpec& system,
                                const compiler::ParallelLayout& p) {
  const compiler::ParallelLayout::ExpertExchange x = p.expert_exchange();
  if (!m.is_moe() || system.expert_all_to_all_max_tokens == 0 ||
      system.expert_all_to_all == ExpertAllToAll::normal || x.infiniband + x.nvlink <= 0)
    return 0.0;
  const auto h = static_cast<double>(m.hidden), t = static_cast<double>(system.expert_all_to_all_max_tokens),
             experts = static_cast<double>(p.local_experts) * p.expert_groups;
  const double scales = std::floor(h / 128.0);
  const double dispatch = 16.0 + std::max(2.0 * h, h + 4.0 * scales), combine = 4.0 * scales + 2.0 * h;
  const double send = std::max(t * dispatch, experts * t * combine);
  const double receive = experts * t * std::max(dispatch, combine);
  const double signaling = align128(8.0 * experts + 4.0 * p.local_experts);
  return align128(2.0 * send + 2.0 * receive + 2.0 * signaling);
}

double kv_bytes_per_token(const compiler::ModelSpec& m, const compiler::ParallelLayout& p) {
  const double kv_heads_share = m.attention == compiler::AttentionKind::kMla
                                    ? 1.0
                                    : static_cast<double>(std::max(1, m.kv_heads / p.tp)) / m.kv_heads;
  return static_cast<double>(m.layers) * fullest_stage(m, p) *
         static_cast<double>(m.kv_elements_per_token_layer()) * kv_heads_share *
         compiler::dtype_bytes(m.kv_dtype);
}

DraftFootprint draft_footprint(const compiler::ModelSpec& draft, const compiler::ParallelLayout& layout) {
  const WeightShares w = weight_shares(draft, layout);
  return {w.other_per_device + w.experts_per_device(layout), kv_bytes_per_token(draft, layout)};
}

MemoryPlan plan_memory(const compiler::ModelSpec& m, const SystemSpec& system,
                       const compiler::ParallelLayout& p, double reserve_fraction,
                       std::int64_t kv_block_tokens, const DraftFootprint& draft) {
  if (!(reserve_fraction >= 0 && reserve_fraction < 1))
    throw Error(fmt::format("memory reserve fraction {} is not in [0, 1)", reserve_fraction));
  if (kv_block_tokens < 1) throw Error(fmt::format("KV block tokens {}; expected >= 1", kv_block_tokens));
  MemoryPlan plan;
  plan.device_bytes = static_cast<double>(system.memory_capacity().bytes);
  const WeightShares shares = weight_shares(m, p);
  const std::int64_t moe_layers = shares.moe_layers;
  // A draft model's weights beside the non-expert ones.
  const double per_device = shares.other_per_device + draft.weight_bytes_per_device;
  plan.draft_weight_bytes_per_device = draft.weight_bytes_per_device;
  const double expert_shard_bytes = shares.expert_shard_bytes;
  const double experts_per_device = shares.experts_per_device(p);
  plan.reserve_bytes_per_device = reserve_fraction * plan.device_bytes;
  plan.deepep_buffer_bytes_per_device = deepep_low_latency_bytes(m, system, p);
  plan.kv_bytes_per_token = kv_bytes_per_token(m, p) + draft.kv_bytes_per_token;
  if (system.uses_prefill_space()) {
    plan.weight_bytes_per_device = per_device + experts_per_device;
    plan_spaces(plan, m, system, p, moe_layers, expert_shard_bytes, per_device, kv_block_tokens);
    return plan;
  }
  double free = 0;
  if (system.heterogeneous()) {
    plan.weight_bytes_per_device = per_device;
    plan.pim_device_bytes = plan.device_bytes * system.pim_devices_per_gpu;  // same stacks as a GPU, no xPU
    plan.pim_weight_bytes = experts_per_device;
    if (plan.weight_bytes_per_device + plan.reserved_bytes_per_device() > plan.device_bytes)
      throw Error(
          fmt::format("model {} does not fit system {} on {} GPUs: the non-expert weights take {} of {} per "
                      "GPU ({} reserved)",
                      m.name, system.name, p.devices,
                      format_byte_size({static_cast<std::uint64_t>(plan.weight_bytes_per_device)}),
                      format_byte_size(system.memory_capacity()),
                      format_byte_size({static_cast<std::uint64_t>(plan.reserved_bytes_per_device())})));
    free = plan.pim_device_bytes - plan.pim_weight_bytes;  // the PIM devices keep no activation reserve
  } else {
    plan.weight_bytes_per_device = per_device + experts_per_device;
    free = plan.device_bytes - plan.weight_bytes_per_device - plan.reserved_bytes_per_device();
  }
  if (free <= plan.kv_bytes_per_token)
    throw Error(fmt::format(
        "model {} does not fit system {} on {} devices: weights take {} of {} per device "
        "({} reserved), no room for the KV cache",
        m.name, system.name, p.devices,
        format_byte_size({static_cast<std::uint64_t>(plan.weight_bytes_per_device + plan.pim_weight_bytes)}),
        format_byte_size(system.memory_capacity()),
        format_byte_size({static_cast<std::uint64_t>(plan.reserved_bytes_per_device())})));
  // Each data-parallel replica's devices hold their requests' K/V; a pipeline's pp batches in flight share
  // its devices' (the scheduler gives each rank an equal part).
  plan.kv_tokens = static_cast<std::int64_t>(free / plan.kv_bytes_per_token) * p.replicas();
  return plan;
}

}  // namespace duplex::runtime
