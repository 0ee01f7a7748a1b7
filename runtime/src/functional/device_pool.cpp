#include "device_pool.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <array>
#include <iterator>
#include <map>
#include <optional>

#include "duplex/base/error.hpp"
#include "duplex/compiler/micro_batches.hpp"
#include "duplex/runtime/device/bank_pim_device.hpp"
#include "duplex/runtime/device/logic_pim_device.hpp"
#include "duplex/runtime/sim/kv_migration.hpp"
#include "duplex/runtime/workload/expert_routing.hpp"

namespace duplex::runtime::functional {

namespace {

// The step's requests (in plan order) as compiler::split_micro_batches splits their groups: in the groups'
// order (StepPlan::shape_order; functional emulation's one rank), the first `first_tokens` tokens in the
// first micro-batch; a prompt holding the boundary split into two chunks, the first not completing it.
std::array<std::vector<StepRequest>, 2> split_requests(const StepPlan& plan,
                                                       const std::vector<StepRequest>& requests,
                                                       std::int64_t first_tokens) {
  std::array<std::vector<StepRequest>, 2> halves;
  std::int64_t before = 0;
  for (std::size_t i : plan.shape_order()) {
    const StepRequest& r = requests[i];
    if (before + r.tokens <= first_tokens) {
      halves[0].push_back(r);
    } else if (before < first_tokens) {
      DUPLEX_ASSERT(r.prefill, "a micro-batch boundary inside a decoding request");
      StepRequest head = r, tail = r;
      head.tokens = first_tokens - before;
      head.completes_prefill = false;
      tail.context += head.tokens;
      tail.tokens -= head.tokens;
      halves[0].push_back(head);
      halves[1].push_back(tail);
    } else {
      halves[1].push_back(r);
    }
    before += r.tokens;
  }
  return halves;
}

// The step's output from its two micro-batches' (`halves`: their requests), in the plan's request order: a
// request's logit rows from the half that holds its last tokens; the executed plan as the timing model
// overlaps the two (compiler::overlap_micro_batches); the routing counts summed.
StepOutput merge_micro_batches(const StepPlan& plan, const std::array<std::vector<StepRequest>, 2>& halves,
                               std::array<StepOutput, 2>& outs) {
  StepOutput out;
  out.plan = compiler::overlap_micro_batches(outs[0].plan, outs[1].plan);
  out.executed_on = outs[0].executed_on;
  out.executed_on.insert(out.executed_on.end(), outs[1].executed_on.begin(), outs[1].executed_on.end());
  out.routing = outs[0].routing;
  for (std::size_t l = 0; l < out.routing.counts.size(); ++l)
    for (std::size_t e = 0; e < out.routing.counts[l].size(); ++e)
      out.routing.counts[l][e] += outs[1].routing.counts.at(l).at(e);
  // Each request's logit rows (its last ones: a prompt split in two samples from its second chunk).
  std::map<std::int64_t, std::pair<std::size_t, std::size_t>> rows;  // id -> (half, first row)
  for (std::size_t m = 0; m < 2; ++m) {
    std::size_t row = 0;
    for (const StepRequest& r : halves[m]) {
      rows[r.id] = {m, row};
      row += static_cast<std::size_t>(r.logit_rows);
    }
  }
  for (const ScheduledRequest& s : plan.requests) {
    const auto [m, first] = rows.at(s.id);
    for (std::int64_t i = 0; i < logit_rows(s); ++i) {
      out.next_ids.push_back(outs[m].next_ids.at(first + static_cast<std::size_t>(i)));
      out.logits.push_back(std::move(outs[m].logits.at(first + static_cast<std::size_t>(i))));
    }
  }
  for (StepOutput& o : outs) {
    out.migrations.insert(out.migrations.end(), o.migrations.begin(), o.migrations.end());
    out.routed.insert(out.routed.end(), o.routed.begin(), o.routed.end());
    out.quantized.insert(out.quantized.end(), std::make_move_iterator(o.quantized.begin()),
                         std::make_move_iterator(o.quantized.end()));
    out.outlier_columns += o.outlier_columns;
  }
  return out;
}

}  // namespace

DevicePool::DevicePool(const ModelWeights& weights, const SystemSpec& system, int devices,
                       const std::string& prefix, const std::shared_ptr<PimUnit>& shared_pim,
                       const std::string& datapath_kind, const std::string& rtl_trace)
    : w_(weights),
      sys_(system),
      layout_(compiler::ParallelLayout::make(weights.spec, system, devices)),
      cost_(sys_, layout_),
      overlap_system_(sys_.two_batch_overlap ? compiler::overlapped_system(sys_) : sys_),
      overlap_cost_(overlap_system_, layout_),
      shards_(shard_devices(weights.spec, layout_)) {
  const DeviceWeights full = lay_out_weights(w_);
  for (const DeviceShard& s : shards_) {
    weights_.push_back(shard_weights(full, w_.spec, s));
    xpus_.push_back(std::make_unique<device::XpuDevice>(fmt::format("{}dev{}.xpu", prefix, s.device),
                                                        kernels::make_cpu_backend()));
    if (!sys_.pim) continue;
    // The waveform, if any, is device 0's (the first unit made).
    std::shared_ptr<PimUnit> unit = shared_pim ? shared_pim
                                               : std::shared_ptr<PimUnit>(make_datapath_pim_unit(
                                                     datapath_kind, pim_units_.empty() ? rtl_trace : ""));
    if (pim_units_.empty() || pim_units_.back() != unit) pim_units_.push_back(unit);
    const std::string name = fmt::format("{}dev{}.pim", prefix, s.device);
    if (sys_.pim->kind == PimKind::kLogicPim) {
      pims_.push_back(std::make_unique<device::LogicPimDevice>(name, unit));
    } else {
      pims_.push_back(std::make_unique<device::BankPimDevice>(name, sys_.pim->kind, unit));
    }
  }
}

void DevicePool::start(std::int64_t block_tokens, std::int64_t blocks, std::int64_t prefill_blocks,
                       bool quantize_activations) {
  const compiler::ModelSpec& m = w_.spec;
  compiler::LowerOptions lowering = compiler::LowerOptions::for_system(sys_);
  lowering.every_group_per_replica = true;  // one plan executes every data-parallel rank's requests
  runner_.reset();
  kv_.clear();
  cached_.clear();
  next_shared_.clear();
  prefill_space_ = lowering.kv_migration;
  const KvCacheShape cache = kv_cache_shape(m);
  for (const DeviceShard& s : shards_)
    kv_.emplace_back(m.layers, s.kv_heads, cache.head_dim, block_tokens, blocks, cache.shared_kv,
                     prefill_space_ ? prefill_blocks : 0);
  std::vector<DeviceContext> contexts;
  for (std::size_t d = 0; d < shards_.size(); ++d)
    contexts.push_back(
        {shards_[d], xpus_[d].get(), pims_.empty() ? nullptr : pims_[d].get(), &weights_[d], &kv_[d]});
  runner_ = std::make_unique<StepRunner>(m, w_.numerics, layout_, lowering, cost_, std::move(contexts),
                                         quantize_activations);
}

DevicePool::Step DevicePool::step(const StepPlan& plan,
                                  const std::vector<std::vector<std::int32_t>>& sequences,
                                  const std::vector<std::int64_t>& prompt_tokens, const PrefixView& prefix) {
  DUPLEX_ASSERT(runner_ != nullptr, "a step before start()");
  DUPLEX_ASSERT(prefix.caches.empty() || prefix.keys, "prefix caching needs the requests' keys");
  for (RequestId id : plan.preempted) release(id);
  if (!prefix.caches.empty())  // blocks the scheduler evicted while planning
    for (auto it = cached_.begin(); it != cached_.end();) {
      if (prefix.caches.at(static_cast<std::size_t>(it->second.node))->contains(it->first)) {
        ++it;
        continue;
      }
      each_cache_of(it->second.node, [&](PagedKvCache& c) { c.drop(it->second.block); });
      it = cached_.erase(it);
    }
  std::vector<StepRequest> reqs;
  for (const ScheduledRequest& s : plan.requests) {
    const bool prefill = s.phase == TokenPhase::prefill;
    const int node = node_of(s.id);
    DUPLEX_ASSERT(layout_.dp == 1 || s.rank == node,
                  fmt::format("request {} was dealt to rank {}, not to node {} (id mod nodes) that holds it",
                              s.id, s.rank, node));
    const KvSpace space = prefill && prefill_space_ ? KvSpace::prefill : KvSpace::kv;
    const std::vector<std::uint64_t>* keys =
        !prefix.caches.empty() ? &prefix.keys->at(static_cast<std::size_t>(s.id)) : nullptr;
    const PagedKvCache& first = kv_[first_device(node)];
    if (keys && s.cached_context > 0 && first.block_table(s.id).empty()) {
      // Admitted after its cached blocks (the last one partly recomputed when the whole prompt was cached).
      std::vector<std::int32_t> blocks;
      const std::int64_t n = (s.cached_context + first.block_tokens() - 1) / first.block_tokens();
      for (std::int64_t j = 0; j < n; ++j) {
        const auto it = cached_.find(keys->at(static_cast<std::size_t>(j)));
        DUPLEX_ASSERT(it != cached_.end() && it->second.node == node,
                      fmt::format("request {}'s cached block {} is not on its node", s.id, j));
        blocks.push_back(it->second.block);
      }
      each_cache_of(node, [&](PagedKvCache& c) { c.attach(s.id, blocks); });
    }
    each_cache_of(node, [&](PagedKvCache& c) { c.reserve(s.id, s.context_len + s.tokens, space); });
    if (keys) share_computed(s.id, *keys, s.context_len + s.tokens);
    reqs.push_back({s.id, s.context_len, s.tokens, &sequences[static_cast<std::size_t>(s.id)], prefill,
                    prefill && s.samples_token, prefill ? s.cached_context : 0, logit_rows(s), node,
                    prompt_tokens.at(static_cast<std::size_t>(s.id))});
  }
  const compiler::BatchState batch = StepExecutor::batch_of(plan);
  const std::optional<compiler::MicroBatches> micro = compiler::micro_batches(sys_, layout_, batch);
  StepOutput out;
  std::array<std::vector<std::vector<std::int64_t>>, 2> micro_counts;
  if (micro) {
    // Each half lowered and placed as the timing model does (micro_batches.hpp: on the overlapped system
    // where the other half's collectives hold SMs).
    const compiler::CostModel* cost =
        compiler::collectives_hold_sms(sys_, layout_, batch) ? &overlap_cost_ : &cost_;
    const std::array<std::vector<StepRequest>, 2> halves = split_requests(plan, reqs, micro->first.tokens());
    std::array<StepOutput, 2> outs;
    outs[0] = runner_->run(halves[0], micro->first, cost);
    outs[1] = runner_->run(halves[1], micro->second, cost);
    micro_counts = {outs[0].routing.counts, outs[1].routing.counts};
    out = merge_micro_batches(plan, halves, outs);
  } else {
    out = runner_->run(reqs, batch);
  }
  follow_moves();
  // The step's time and energy from the serving simulator's step model on this layout, routed as the step's
  // routers routed (a one-step routing trace, replayed exactly).
  std::optional<ExpertRouter> router;
  if (w_.spec.is_moe()) {
    RoutingTrace trace;
    trace.label = "the functional step's routing";
    trace.steps = {out.routing.counts};
    trace.step_numbers = {plan.step};
    trace.layers = static_cast<std::int64_t>(out.routing.counts.size());
    trace.experts = w_.spec.experts;
    router.emplace(ExpertRouter::from_trace(std::move(trace)));
  }
  StepExecutor executor(w_.spec, sys_, layout_, router ? &*router : nullptr);
  executor.lower_every_group_per_replica();  // as the runner lowered it
  if (micro) executor.replay_micro_batch_routing(std::move(micro_counts));
  StepCost cost = executor.execute(plan);
  // The timed plan is the executed one: same ops, each on the unit it ran on.
  DUPLEX_ASSERT(cost.plan.graph.ops.size() == out.plan.graph.ops.size(),
                "timed and executed plans differ in ops");
  for (std::size_t i = 0; i < out.plan.graph.ops.size(); ++i)
    DUPLEX_ASSERT(cost.plan.graph.ops[i].name == out.plan.graph.ops[i].name &&
                      cost.plan.find(i)->unit == out.plan.find(i)->unit,
                  "op " + out.plan.graph.ops[i].name + " is timed on another unit than it ran on");
  return {std::move(out), std::move(cost)};
}

void DevicePool::release(std::int64_t id) {
  for (PagedKvCache& c : kv_) c.release(id);
  next_shared_.erase(id);
  follow_moves();
}

void DevicePool::follow_moves() {
  std::map<int, std::vector<BlockMove>> moves;  // per node: its first device's
  for (std::size_t d = 0; d < kv_.size(); ++d) {
    std::vector<BlockMove> these = kv_[d].take_moves();
    const auto it = moves.find(shards_[d].node);
    if (it == moves.end())
      moves.emplace(shards_[d].node, std::move(these));
    else
      DUPLEX_ASSERT(it->second == these, "devices of a node moved a request's blocks differently");
  }
  for (const auto& [node, node_moves] : moves) {
    if (cached_.empty() || node_moves.empty()) continue;
    // A step (or a release) frees the prefill-space blocks it moves and takes none: each moves once.
    std::unordered_map<std::int32_t, std::int32_t> to;
    for (const BlockMove& m : node_moves)
      DUPLEX_ASSERT(to.emplace(m.from, m.to).second, "a block moved twice between two looks at the log");
    for (auto& [key, cached] : cached_)
      if (const auto it = to.find(cached.block); cached.node == node && it != to.end())
        cached.block = it->second;
  }
}

std::size_t DevicePool::first_device(int node) const {
  for (std::size_t d = 0; d < shards_.size(); ++d)
    if (shards_[d].node == node) return d;
  throw InternalError(fmt::format("no device of node {}", node));
}

void DevicePool::share_computed(std::int64_t id, const std::vector<std::uint64_t>& keys,
                                std::int64_t computed) {
  const int node = node_of(id);
  const PagedKvCache& first = kv_[first_device(node)];
  const auto full = std::min(keys.size(), static_cast<std::size_t>(computed / first.block_tokens()));
  const std::vector<std::int32_t>& table = first.block_table(id);
  for (std::size_t& j = next_shared_[id]; j < full; ++j) {
    each_cache_of(node, [&](const PagedKvCache& c) {
      DUPLEX_ASSERT(c.block_table(id)[j] == table[j], "devices allocated a request's blocks differently");
    });
    if (cached_.emplace(keys[j], CachedBlock{node, table[j]}).second)  // else cached first by another: own
      each_cache_of(node, [&](PagedKvCache& c) { c.keep(table[j]); });
  }
}

double DevicePool::receive_kv(const DevicePool& source, std::int64_t id, std::int64_t tokens) {
  const compiler::ModelSpec& m = w_.spec;
  const KvCacheShape cache = kv_cache_shape(m);
  const auto hd = static_cast<std::size_t>(cache.head_dim);
  const int node = node_of(id), source_node = source.node_of(id);
  each_cache_of(node, [&](PagedKvCache& c) { c.reserve(id, tokens); });
  // The next device from `from` on of the request's node holding KV head `head`, or shards.size().
  auto holder = [](const std::vector<DeviceShard>& shards, int on_node, int head, std::size_t from) {
    for (std::size_t d = from; d < shards.size(); ++d)
      if (shards[d].node == on_node && head >= shards[d].kv_head0 && head < shards[d].kv_head0 + shards[d].kv_heads)
        return d;
    return shards.size();
  };
  const std::int64_t block_tokens = source.kv_.front().block_tokens();
  for (int head = 0; head < cache.heads; ++head) {
    const std::size_t src = holder(source.shards_, source_node, head, 0);
    DUPLEX_ASSERT(src < source.shards_.size(), "no source device holds a KV head");
    const auto src_off = static_cast<std::size_t>(head - source.shards_[src].kv_head0) * hd;
    for (std::size_t dst = holder(shards_, node, head, 0); dst < shards_.size();
         dst = holder(shards_, node, head, dst + 1)) {
      const auto dst_off = static_cast<std::size_t>(head - shards_[dst].kv_head0) * hd;
      for (int layer = 0; layer < m.layers; ++layer)
        for (std::int64_t first = 0; first < tokens; first += block_tokens)  // one source block at a time
          for (std::int64_t pos = first; pos < std::min(tokens, first + block_tokens); ++pos) {
            std::copy_n(source.kv_[src].k(layer, id, pos) + src_off, hd,
                        kv_[dst].k(layer, id, pos) + dst_off);
            if (!cache.shared_kv)
              std::copy_n(source.kv_[src].v(layer, id, pos) + src_off, hd,
                          kv_[dst].v(layer, id, pos) + dst_off);
          }
    }
  }
  return kv_bytes_per_token(m) * static_cast<double>(tokens);
}

}  // namespace duplex::runtime::functional
