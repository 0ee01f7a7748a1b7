#include "duplex/runtime/functional/functional_executor.hpp"

#include <algorithm>
#include <fmt/format.h>

#include "device_weights.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/cost_model.hpp"
#include "duplex/compiler/parallel.hpp"
#include "duplex/kernels/backend.hpp"
#include "duplex/runtime/functional/paged_kv_cache.hpp"
#include "duplex/runtime/functional/pim_unit.hpp"
#include "duplex/runtime/functional/reference_forward.hpp"
#include "duplex/runtime/scheduler/scheduler.hpp"
#include "duplex/runtime/sim/energy_ledger.hpp"
#include "step_runner.hpp"

namespace duplex::runtime::functional {

std::map<std::string, std::int64_t> FunctionalResult::ops_per_unit() const {
  std::map<std::string, std::int64_t> n;
  for (const OpRecord& r : ops) ++n[std::string(compiler::unit_name(r.unit))];
  return n;
}

std::map<std::string, std::map<std::string, std::int64_t>> FunctionalResult::ops_per_kind_and_unit() const {
  std::map<std::string, std::map<std::string, std::int64_t>> n;
  for (const OpRecord& r : ops) ++n[std::string(compiler::op_kind_name(r.kind))][std::string(compiler::unit_name(r.unit))];
  return n;
}

class FunctionalExecutor::Impl {
 public:
  Impl(const ModelWeights& weights, const SystemSpec& system, FunctionalOptions options)
      : w_(weights),
        sys_(system),
        opt_(std::move(options)),
        layout_(compiler::ParallelLayout::make(weights.spec, sys_, 1)),
        cost_(sys_, layout_),
        dev_(lay_out_weights(weights)),
        xpu_(kernels::make_cpu_backend()) {
    if (opt_.max_batch < 1) throw Error(fmt::format("max batch {}; expected >= 1", opt_.max_batch));
    if (opt_.kv_block_tokens < 1) throw Error(fmt::format("KV block tokens {}; expected >= 1", opt_.kv_block_tokens));
    if (opt_.max_tokens_per_step < 0)
      throw Error(fmt::format("max tokens per step {}; expected >= 0 (0: no budget)", opt_.max_tokens_per_step));
    if (opt_.kv_blocks < 0) throw Error(fmt::format("KV blocks {}; expected >= 0 (0: enough for all)", opt_.kv_blocks));
    if (opt_.pim_unit_factory && !opt_.datapath.empty())
      throw Error(fmt::format("PIM datapath {} applies to the datapath PIM unit only, not to a custom one "
                              "(the device computes with its system's pim.datapath)",
                              opt_.datapath));
    if (sys_.pim && opt_.pim_unit_factory) {
      pim_ = opt_.pim_unit_factory(sys_);
    } else if (sys_.pim) {
      // Bank-PIM configs name no datapath: its units compute with the same FP16 datapath arithmetic (golden).
      std::string kind = opt_.datapath.empty() ? sys_.pim->datapath : opt_.datapath;
      if (kind.empty() && sys_.pim->kind == PimKind::kBankPim) kind = "golden";
      pim_ = make_datapath_pim_unit(kind);
    } else if (opt_.pim_unit_factory) {
      throw Error(fmt::format("system {} has no PIM: a PIM unit does not apply", sys_.name));
    } else if (!opt_.datapath.empty()) {
      throw Error(fmt::format("system {} has no PIM: a PIM datapath ({}) does not apply", sys_.name, opt_.datapath));
    }
  }

  FunctionalResult run(const std::vector<std::vector<std::int32_t>>& prompts, int max_new_tokens) {
    const compiler::ModelSpec& m = w_.spec;
    check_prompts(prompts, m.vocab);
    if (max_new_tokens < 1) throw Error(fmt::format("max new tokens {}; expected >= 1", max_new_tokens));
    std::int64_t blocks = opt_.kv_blocks;
    if (blocks == 0)
      for (const auto& p : prompts)
        blocks += (static_cast<std::int64_t>(p.size()) + max_new_tokens + opt_.kv_block_tokens - 1) / opt_.kv_block_tokens;
    SchedulerConfig sc;
    sc.policy = BatchingPolicy::continuous;
    sc.max_batch = opt_.max_batch;
    sc.max_tokens_per_step = opt_.max_tokens_per_step;
    sc.kv_block_tokens = opt_.kv_block_tokens;
    sc.kv_capacity_blocks = blocks;
    Scheduler scheduler(sc);
    std::vector<std::vector<std::int32_t>> sequences = prompts;
    for (std::size_t r = 0; r < prompts.size(); ++r)
      scheduler.add_request({static_cast<RequestId>(r), Time{}, static_cast<std::int64_t>(prompts[r].size()), max_new_tokens});
    PagedKvCache kv(m.layers, m.kv_heads, m.head_dim, opt_.kv_block_tokens, blocks);
    StepRunner runner(m, w_.numerics, dev_, layout_, cost_, *xpu_, pim_.get(), kv);
    EnergyLedger energy(sys_.energy);

    FunctionalResult res;
    res.tokens.resize(prompts.size());
    res.logits.resize(prompts.size());
    res.xpu_backend = xpu_->description();
    Time now;
    while (scheduler.has_unfinished()) {
      const StepPlan plan = scheduler.schedule(now);
      DUPLEX_ASSERT(!plan.empty(), "every request has arrived, yet the scheduler planned nothing");
      for (RequestId id : plan.preempted) kv.release(id);
      std::vector<StepRequest> reqs;
      for (const ScheduledRequest& s : plan.requests) {
        kv.reserve(s.id, s.context_len + s.tokens);
        reqs.push_back({s.id, s.context_len, s.tokens, &sequences[static_cast<std::size_t>(s.id)]});
      }
      const StepOutput out = runner.run(reqs);
      record_step(plan, out, res, energy);
      std::vector<RequestId> sampled;
      for (std::size_t i = 0; i < plan.requests.size(); ++i) {
        const ScheduledRequest& s = plan.requests[i];
        if (!s.samples_token) continue;
        const auto r = static_cast<std::size_t>(s.id);
        sequences[r].push_back(out.next_ids[i]);
        res.tokens[r].push_back(out.next_ids[i]);
        res.logits[r].push_back(out.logits[i]);
        sampled.push_back(s.id);
      }
      now += out.plan.total();
      const StepOutcome outcome = scheduler.update({plan.step, now});
      std::vector<RequestId> emitted = outcome.emitted;
      std::sort(emitted.begin(), emitted.end());
      std::sort(sampled.begin(), sampled.end());
      DUPLEX_ASSERT(emitted == sampled, "scheduler and executor disagree on the tokens emitted");
      for (RequestId id : outcome.finished) kv.release(id);
    }
    res.time = now;
    res.energy = energy.total();
    res.energy_breakdown = energy.breakdown_json();
    res.pim_unit = pim_ ? pim_->describe() : "none";  // after the run: a device unit reports its counters
    if (pim_) res.pim_cycles = pim_->simulated_cycles();
    return res;
  }

 private:
  void record_step(const StepPlan& plan, const StepOutput& out, FunctionalResult& res, EnergyLedger& energy) const {
    StepRecord s;
    s.step = plan.step;
    s.requests = static_cast<std::int64_t>(plan.requests.size());
    s.prefill_tokens = plan.prefill_tokens;
    s.decode_tokens = plan.decode_requests;
    s.time = out.plan.total();
    s.xpu_busy = out.plan.busy(compiler::Unit::kXpu);
    s.pim_busy = out.plan.busy(compiler::Unit::kPim);
    for (const compiler::PlanStage& stage : out.plan.stages) {
      bool xpu_expert = false, pim_expert = false;
      int layer = -1;
      for (const compiler::PlannedOp& p : stage.ops) {
        const compiler::Op& op = out.plan.graph.ops[p.op];
        EnergyLedger one(sys_.energy);
        charge_op(one, op, p.unit, sys_);
        energy.add(one);
        res.ops.push_back({plan.step, op.name, op.kind, op.layer, p.unit, p.time, one.total()});
        if (op.kind == compiler::OpKind::kExpertFfn) {
          layer = op.layer;
          (p.unit == compiler::Unit::kPim ? pim_expert : xpu_expert) = true;
        }
      }
      if (xpu_expert && pim_expert) s.coprocessed_expert_layers.push_back(layer);
    }
    res.steps.push_back(std::move(s));
  }

  const ModelWeights& w_;
  SystemSpec sys_;
  FunctionalOptions opt_;
  compiler::ParallelLayout layout_;
  compiler::CostModel cost_;
  DeviceWeights dev_;
  std::unique_ptr<kernels::Backend> xpu_;
  std::unique_ptr<PimUnit> pim_;
};

FunctionalExecutor::FunctionalExecutor(const ModelWeights& weights, const SystemSpec& system, FunctionalOptions options)
    : impl_(std::make_unique<Impl>(weights, system, std::move(options))) {}
FunctionalExecutor::~FunctionalExecutor() = default;

FunctionalResult FunctionalExecutor::run(const std::vector<std::vector<std::int32_t>>& prompts, int max_new_tokens) {
  return impl_->run(prompts, max_new_tokens);
}

}  // namespace duplex::runtime::functional
