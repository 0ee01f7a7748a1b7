#include "duplex/runtime/functional/functional_executor.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <cmath>
#include <set>

#include "device_pool.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/functional/pim_unit.hpp"
#include "duplex/runtime/functional/reference_forward.hpp"
#include "duplex/runtime/scheduler/ngram_proposer.hpp"
#include "duplex/runtime/scheduler/prefix_cache.hpp"
#include "duplex/runtime/scheduler/scheduler.hpp"
#include "duplex/runtime/sim/energy_ledger.hpp"
#include "duplex/runtime/sim/kv_migration.hpp"
#include "duplex/runtime/workload/random.hpp"

namespace duplex::runtime::functional {

std::map<std::string, std::int64_t> FunctionalResult::ops_per_unit() const {
  std::map<std::string, std::int64_t> n;
  for (const OpRecord& r : ops) ++n[std::string(compiler::unit_name(r.unit))];
  return n;
}

std::map<std::string, std::map<std::string, std::int64_t>> FunctionalResult::ops_per_kind_and_unit() const {
  std::map<std::string, std::map<std::string, std::int64_t>> n;
  for (const OpRecord& r : ops)
    ++n[std::string(compiler::op_kind_name(r.kind))][std::string(compiler::unit_name(r.unit))];
  return n;
}

double FunctionalResult::kv_migrated_bytes() const {
  double bytes = 0;
  for (const KvMigration& m : kv_migrations) bytes += m.bytes;
  return bytes;
}

std::vector<double> FunctionalResult::acceptance_by_position() const {
  std::vector<double> rates;
  for (std::size_t i = 0; i < drafts_reached.size() && drafts_reached[i] > 0; ++i)
    rates.push_back(static_cast<double>(drafts_accepted[i]) / static_cast<double>(drafts_reached[i]));
  return rates;
}

double FunctionalResult::in_device_kv_migrated_bytes() const {
  double bytes = 0;
  for (const InDeviceKvMigration& m : in_device_kv_migrations) bytes += m.bytes;
  return bytes;
}

class FunctionalExecutor::Impl {
 public:
  Impl(const ModelWeights& weights, const SystemSpec& system, FunctionalOptions options)
      : w_(weights), sys_(system), opt_(std::move(options)) {
    if (opt_.max_batch < 1) throw Error(fmt::format("max batch {}; expected >= 1", opt_.max_batch));
    if (opt_.kv_block_tokens < 1)
      throw Error(fmt::format("KV block tokens {}; expected >= 1", opt_.kv_block_tokens));
    if (opt_.max_tokens_per_step < 0)
      throw Error(
          fmt::format("max tokens per step {}; expected >= 0 (0: no budget)", opt_.max_tokens_per_step));
    if (opt_.kv_blocks < 0)
      throw Error(fmt::format("KV blocks {}; expected >= 0 (0: enough for all)", opt_.kv_blocks));
    if (opt_.devices < 0)
      throw Error(fmt::format("devices {}; expected >= 1 (0: the system's)", opt_.devices));
    if (sys_.pipeline_parallel > 1)
      throw Error(
          fmt::format("system {}: pipeline_parallel {} is timed by duplex simulate only; functional "
                      "emulation runs pipeline_parallel 1",
                      sys_.name, sys_.pipeline_parallel));
    if (sys_.expert_balancing && w_.spec.is_moe())
      throw Error(
          fmt::format("system {}: expert_load_balancing is timed by duplex simulate only; functional "
                      "emulation places each expert once (no expert_load_balancing section)",
                      sys_.name));
    if (opt_.pim_unit_factory && !opt_.datapath.empty())
      throw Error(
          fmt::format("PIM datapath {} applies to the datapath PIM unit only, not to a custom one "
                      "(the device computes with its system's pim.datapath)",
                      opt_.datapath));
    if (!sys_.pim && opt_.pim_unit_factory)
      throw Error(fmt::format("system {} has no PIM: a PIM unit does not apply", sys_.name));
    if (!sys_.pim && !opt_.datapath.empty())
      throw Error(
          fmt::format("system {} has no PIM: a PIM datapath ({}) does not apply", sys_.name, opt_.datapath));
    std::shared_ptr<PimUnit> shared_pim;
    std::string kind;
    if (!opt_.rtl_trace.empty() && (!sys_.pim || opt_.pim_unit_factory))
      throw Error(fmt::format(
          "an RTL waveform ({}) needs the Logic-PIM datapath run directly: system {} {}", opt_.rtl_trace,
          sys_.name, sys_.pim ? "runs its PIM ops on a custom unit (the SystemC device)" : "has no PIM"));
    if (sys_.pim && opt_.pim_unit_factory) {
      shared_pim = opt_.pim_unit_factory(sys_);
    } else if (sys_.pim) {
      // Bank-PIM configs name no datapath: its units compute with the same FP16 datapath arithmetic (golden).
      kind = opt_.datapath.empty() ? sys_.pim->datapath : opt_.datapath;
      if (kind.empty() && sys_.pim->kind == PimKind::kBankPim) kind = "golden";
      if (!opt_.rtl_trace.empty() && kind != "rtl")
        throw Error(
            fmt::format("an RTL waveform ({}) needs the rtl datapath; system {} computes with \"{}\" "
                        "(choose --datapath rtl)",
                        opt_.rtl_trace, sys_.name, kind));
    }
    devices_ = opt_.devices > 0 ? opt_.devices : sys_.devices_for(w_.spec.name);
    if (opt_.chunked_prefill && opt_.max_tokens_per_step < 1)
      throw Error(
          fmt::format("chunked prefill splits prompts to fill the token budget; max tokens per step is "
                      "{}, expected >= 1 (--max-tokens-per-step)",
                      opt_.max_tokens_per_step));
    if (sys_.split_prefill_fraction > 0) {
      if (sys_.split_prefill_instances != 1 || sys_.split_decode_instances != 1)
        throw Error(
            fmt::format("system {}: split.prefill_instances {} / decode_instances {}; functional emulation "
                        "runs one prefill and one decode instance (expected 1 and 1; the serving simulator "
                        "models more)",
                        sys_.name, sys_.split_prefill_instances, sys_.split_decode_instances));
      // The serving simulator's split: round(devices x fraction) prefill devices (at least 1), the rest
      // decode.
      const int prefill = std::max(1, static_cast<int>(std::lround(devices_ * sys_.split_prefill_fraction)));
      if (devices_ - prefill < 1)
        throw Error(
            fmt::format("system {}: {} devices leave none for decoding after {} prefill devices; expected "
                        "at least 2 devices",
                        sys_.name, devices_, prefill));
      // The prefill devices may be another system's (split.prefill_system); the waveform is the first PIM
      // device's.
      const SystemSpec& prefill_system = sys_.prefill_pool_system();
      const bool prefill_traces = prefill_system.pim.has_value();
      pools_.push_back(std::make_unique<DevicePool>(w_, prefill_system, prefill, "prefill.", shared_pim, kind,
                                                    prefill_traces ? opt_.rtl_trace : ""));
      pools_.push_back(std::make_unique<DevicePool>(w_, sys_, devices_ - prefill, "decode.", shared_pim, kind,
                                                    prefill_traces ? "" : opt_.rtl_trace));
    } else {
      pools_.push_back(
          std::make_unique<DevicePool>(w_, sys_, devices_, "", shared_pim, kind, opt_.rtl_trace));
    }
    if (data_parallel_nodes() > 1 && sys_.data_parallel_balance == DataParallelBalance::cache_aware)
      throw Error(fmt::format(
          "system {}: data_parallel_balance cache-aware over {} data-parallel ranks; functional emulation "
          "deals its prompts, which arrive at once, by load (expected least-loaded or round-robin; the "
          "serving simulator models cache-aware)",
          sys_.name, data_parallel_nodes()));
    check_speculative();
    // The draft model on each pool's devices (and the same PIM unit, if one is given).
    for (std::size_t i = 0; opt_.draft && i < pools_.size(); ++i)
      draft_pools_.push_back(std::make_unique<DevicePool>(*opt_.draft, pools_[i]->system(),
                                                          pools_[i]->devices(),
                                                          pools_.size() == 1 ? "draft."
                                                          : i == 0           ? "draft.prefill."
                                                                             : "draft.decode.",
                                                          shared_pim, kind));
  }

  // The step's quantized GEMM inputs into res.quantization: every position the step computed holds this
  // run's (a recomputed position forgets its earlier run's, which may have run on other units).
  void record_quantization(const StepPlan& plan, const StepOutput& out, FunctionalResult& res) const {
    res.outlier_columns += out.outlier_columns;
    if (res.quantization.empty()) return;
    const auto layers = static_cast<std::size_t>(w_.spec.layers);
    for (const ScheduledRequest& s : plan.requests) {
      auto& positions = res.quantization[static_cast<std::size_t>(s.id)];
      const auto end = static_cast<std::size_t>(s.context_len + s.tokens);
      if (positions.size() < end) positions.resize(end);
      for (auto p = static_cast<std::size_t>(s.context_len); p < end; ++p) positions[p].assign(layers, {});
    }
    for (const StepOutput::Quantized& q : out.quantized)
      res.quantization[static_cast<std::size_t>(q.id)][static_cast<std::size_t>(q.position)]
                      [static_cast<std::size_t>(q.layer)]
                          .push_back(q.input);
  }

  FunctionalResult run(const std::vector<std::vector<std::int32_t>>& prompts, int max_new_tokens) {
    check_prompts(prompts, w_.spec.vocab);
    if (max_new_tokens < 1) throw Error(fmt::format("max new tokens {}; expected >= 1", max_new_tokens));
    // Learned positions: the last token fed (prompt + max_new_tokens - 1 tokens before it) needs its row.
    for (const ModelWeights* w : {&w_, opt_.draft}) {
      if (w == nullptr || w->spec.learned_positions == 0) continue;
      const std::int64_t positions = w->spec.learned_positions - w->spec.position_offset;
      for (std::size_t r = 0; r < prompts.size(); ++r)
        if (static_cast<std::int64_t>(prompts[r].size()) + max_new_tokens - 1 > positions)
          throw Error(fmt::format(
              "prompt {}: {} tokens + {} new tokens need {} positions; model {} has {} "
              "learned positions",
              r, prompts[r].size(), max_new_tokens,
              static_cast<std::int64_t>(prompts[r].size()) + max_new_tokens - 1, w->spec.name, positions));
    }
    std::int64_t blocks = opt_.kv_blocks;
    if (blocks == 0)
      for (const auto& p : prompts)
        blocks += (static_cast<std::int64_t>(p.size()) + max_new_tokens + opt_.kv_block_tokens - 1) /
                  opt_.kv_block_tokens;
    // The prefill space (memory spaces, DUPLEX.md s.6): with --kv-blocks N for the KV spaces, the prefill
    // space(s) get N x prefill spaces / KV spaces blocks, rounded up, and the scheduler keeps the requests still
    // prefilling within them; with 0, as many as the KV cache and no bound (enough for every request).
    std::int64_t prefill_blocks = blocks;
    prefill_capacity_tokens_ = 0;
    if (sys_.uses_prefill_space() && opt_.kv_blocks > 0) {
      const std::int64_t kv_spaces = sys_.pim->kv_spaces;
      const std::int64_t prefill_spaces = sys_.pim->memory_spaces - kv_spaces;
      prefill_blocks = (opt_.kv_blocks * prefill_spaces + kv_spaces - 1) / kv_spaces;
      prefill_capacity_tokens_ = prefill_blocks * opt_.kv_block_tokens;
    }
    for (auto& pool : pools_)
      pool->start(opt_.kv_block_tokens, blocks, prefill_blocks, opt_.quantize_activations);
    // The draft holds no more K/V per request than the target (it lags the accepted tokens).
    for (auto& pool : draft_pools_)
      pool->start(opt_.kv_block_tokens, blocks, prefill_blocks, opt_.quantize_activations);
    draft_cached_.assign(prompts.size(), 0);
    ngram_drafts_.assign(prompts.size(), {});
    sequences_ = prompts;
    requests_.clear();
    prefix_keys_.clear();
    for (std::size_t r = 0; r < prompts.size(); ++r) {
      RequestSpec spec{static_cast<RequestId>(r), Time{}, static_cast<std::int64_t>(prompts[r].size()),
                       max_new_tokens};
      if (opt_.prefix_caching) {
        spec.content_hashes = block_hashes(prompts[r], opt_.kv_block_tokens);
        spec.hash_block_tokens = opt_.kv_block_tokens;
        spec.hashed_tokens = spec.input_tokens;
      }
      prefix_keys_.push_back(prefix_block_keys(spec, opt_.kv_block_tokens,
                                               data_parallel_rank(spec.id, data_parallel_nodes()),
                                               data_parallel_nodes()));
      requests_.push_back(std::move(spec));
    }
    prompt_tokens_.clear();
    for (const auto& p : prompts) prompt_tokens_.push_back(static_cast<std::int64_t>(p.size()));
    FunctionalResult res;
    res.tokens.resize(prompts.size());
    res.logits.resize(prompts.size());
    if (w_.spec.is_moe()) res.routing.resize(prompts.size());
    if (opt_.quantize_activations && quantizes_activations(w_.spec, !w_.input_scales.empty()))
      res.quantization.resize(prompts.size());
    res.devices = devices_;
    res.layout = pools_.size() == 1 ? pools_[0]->layout().describe()
                 : sys_.split_prefill_system
                     ? fmt::format("prefill pool of {} {} | decode pool of {} {}", pools_[0]->system().name,
                                   pools_[0]->layout().describe(), sys_.name, pools_[1]->layout().describe())
                     : fmt::format("prefill pool {} | decode pool {}", pools_[0]->layout().describe(),
                                   pools_[1]->layout().describe());
    EnergyLedger energy(sys_.energy);
    res.time = pools_.size() == 1 ? run_one_pool(blocks, res, energy)
                                  : run_split(prompts, max_new_tokens, blocks, res, energy);
    res.energy = energy.total();
    res.energy_breakdown = energy.breakdown_json();
    // After the run: a device unit reports its counters.
    res.xpu_backend = pools_.back()->xpu(0).describe();
    const device::IDevice* pim = pools_.back()->pim(0);
    res.pim_unit = pim ? pim->describe() : "none";
    std::vector<const DevicePool*> all;  // the model's pools, then the draft's
    for (const auto& pool : pools_) all.push_back(pool.get());
    for (const auto& pool : draft_pools_) all.push_back(pool.get());
    std::set<const PimUnit*> counted;  // datapath cycles (RTL only) of each distinct unit, once
    for (const DevicePool* pool : all)
      for (const auto& unit : pool->pim_units())
        if (counted.insert(unit.get()).second)
          if (auto cycles = unit->simulated_cycles()) res.pim_cycles = res.pim_cycles.value_or(0) + *cycles;
    for (const DevicePool* pool : all) {
      for (int d = 0; d < pool->devices(); ++d)
        for (const device::IDevice* dev :
             {static_cast<const device::IDevice*>(&pool->xpu(d)), pool->pim(d)}) {
          if (dev == nullptr) continue;
          res.device_classes[dev->name()] = dev->describe();
          res.device_op_counts[dev->name()] = dev->op_counts();
        }
    }
    return res;
  }

 private:
  SchedulerConfig scheduler_config(std::int64_t blocks) const {
    SchedulerConfig sc;
    sc.policy = BatchingPolicy::continuous;
    sc.max_batch = opt_.max_batch;
    sc.max_tokens_per_step = opt_.max_tokens_per_step;
    sc.chunked_prefill = opt_.chunked_prefill;
    sc.kv_block_tokens = opt_.kv_block_tokens;
    // Every device holds `blocks` (and its prefill space): each data-parallel node's share.
    const int nodes = data_parallel_nodes();
    sc.kv_capacity_blocks = blocks * nodes;
    sc.prefill_capacity_tokens =
        prefill_capacity_tokens_ * nodes;  // 0 on split systems: no prefill space there
    sc.prefix_caching = opt_.prefix_caching;
    sc.data_parallel_ranks = nodes;
    sc.data_parallel_balance = sys_.data_parallel_balance;  // prompts arriving at once: dealt id mod ranks
    if (opt_.draft || ngram()) {
      sc.speculative_tokens = opt_.speculative_tokens;
      sc.acceptance_rates = {1.0};  // required by the config, never drawn: every verification reports its own
    }
    return sc;
  }

  // Data-parallel nodes each hold their requests' K/V (DevicePool::node_of: by id, round-robin) in their own
  // memory, and cache their own prefixes: the (first) pool's nodes, the scheduler's data-parallel ranks.
  int data_parallel_nodes() const { return pools_.front()->layout().dp; }

  bool ngram() const { return opt_.ngram_min != 0 || opt_.ngram_max != 0; }

  void check_speculative() const {
    if (opt_.speculative_tokens < 0 || opt_.speculative_tokens > kMaxSpeculativeTokens)
      throw Error(fmt::format("speculative tokens {}; expected 0 (off) to {}", opt_.speculative_tokens,
                              kMaxSpeculativeTokens));
    if (ngram()) {
      if (opt_.draft)
        throw Error(
            fmt::format("n-gram drafts and draft model {}: expected one proposer", opt_.draft->spec.name));
      if (opt_.ngram_min < 1 || opt_.ngram_max < opt_.ngram_min)
        throw Error(
            fmt::format("n-gram drafts from {} to {} tokens (--prompt-lookup-min, --prompt-lookup-max); "
                        "expected 1 <= min <= max",
                        opt_.ngram_min, opt_.ngram_max));
      if (opt_.speculative_tokens < 1)
        throw Error("n-gram drafts need speculative tokens >= 1 (--speculative)");
      return;
    }
    if ((opt_.draft != nullptr) != (opt_.speculative_tokens > 0))
      throw Error(fmt::format(
          "speculative decoding needs a draft model and speculative tokens >= 1 together; "
          "got {} and {} speculative tokens (--draft, --speculative)",
          opt_.draft ? "draft model " + opt_.draft->spec.name : "no draft model", opt_.speculative_tokens));
    if (!opt_.draft) return;
    const compiler::ModelSpec& d = opt_.draft->spec;
    if (d.vocab != w_.spec.vocab)
      throw Error(fmt::format("draft model {} has a vocabulary of {} tokens; expected model {}'s {}", d.name,
                              d.vocab, w_.spec.name, w_.spec.vocab));
    if (d.draft_head)
      throw Error(
          fmt::format("draft model {} is a draft head (EAGLE / MTP: it reads the target's hidden "
                      "states); functional emulation drafts with a whole model",
                      d.name));
  }

  // Chained hashes of a prompt's blocks of `block` tokens (the last one partial),
  // RequestSpec::content_hashes: hash i stands for tokens [0, min((i + 1) x block, size)), so equal hashes
  // mean equal prefixes.
  static std::vector<std::uint64_t> block_hashes(const std::vector<std::int32_t>& prompt,
                                                 std::int64_t block) {
    std::vector<std::uint64_t> hashes;
    std::uint64_t h = 0;
    for (std::size_t i = 0; i < prompt.size(); ++i) {
      h = derive_seed(h, static_cast<std::uint32_t>(prompt[i]));  // SplitMix64 over the chain and the token
      if ((i + 1) % static_cast<std::size_t>(block) == 0 || i + 1 == prompt.size()) hashes.push_back(h);
    }
    return hashes;
  }

  // The pool's view of `scheduler`'s prefix cache (none without prefix caching).
  PrefixView prefix_view(const Scheduler& scheduler) const {
    if (!opt_.prefix_caching) return {};
    PrefixView view{&prefix_keys_, {}};
    for (int node = 0; node < scheduler.ranks(); ++node)
      view.caches.push_back(&scheduler.kv(node).prefix_cache());
    return view;
  }

  void add_prefix_figures(const Scheduler& scheduler, FunctionalResult& res) const {
    for (const auto& [id, record] : scheduler.records()) {
      res.prefix_query_tokens += record.prefix_query_tokens;
      res.prefix_hit_tokens += record.prefix_hit_tokens;
    }
  }

  // Speculative decoding: the draft passes before `plan`'s verification (Pool::add_draft_passes' schedule).
  // Pass 1 prefills the plan's prompt chunks and, for every request verifying a draft, computes the tokens
  // the draft has not cached (its last token; two after a verification that accepted every draft: the
  // scheduler's ScheduledRequest::draft_context, checked here); pass i > 1
  // the draft token pass i - 1 proposed, for the requests whose draft is at least i deep. Each pass appends
  // the proposed token to the request's sequence (the verification reads them there).
  std::vector<DevicePool::Step> draft_passes(const StepPlan& plan, const Scheduler& scheduler,
                                             DevicePool& draft) {
    for (RequestId id : plan.preempted) {
      draft.release(id);
      draft_cached_[static_cast<std::size_t>(id)] = 0;
    }
    std::vector<DevicePool::Step> passes;
    for (std::int64_t i = 1;; ++i) {
      StepPlan pass;
      pass.step = plan.step;
      pass.start = plan.start;
      for (const ScheduledRequest& r : plan.requests) {
        const auto id = static_cast<std::size_t>(r.id);
        if (r.phase == TokenPhase::prefill && i == 1) {
          pass.requests.push_back(r);
        } else if (r.phase == TokenPhase::decode && r.draft_depth >= i) {
          // The scheduler's account of the draft's cache (what the serving simulator times) is this one's.
          DUPLEX_ASSERT(i > 1 || draft_cached_[id] == r.draft_context,
                        "the scheduler's draft context differs from the draft's cache");
          const auto length = static_cast<std::int64_t>(sequences_[id].size());
          pass.requests.push_back(
              {r.id, length - draft_cached_[id], draft_cached_[id], TokenPhase::decode, true});
        }
      }
      if (pass.requests.empty()) return passes;
      passes.push_back(draft.step(pass, sequences_, prompt_tokens_, prefix_view(scheduler)));
      std::size_t row = 0;
      for (const ScheduledRequest& r : pass.requests) {
        row += static_cast<std::size_t>(logit_rows(r));
        const auto id = static_cast<std::size_t>(r.id);
        draft_cached_[id] = r.context_len + r.tokens;
        if (r.phase == TokenPhase::decode) sequences_[id].push_back(passes.back().out.next_ids[row - 1]);
      }
    }
  }

  // The draft model's pool beside `pool` (speculative decoding); null without.
  DevicePool* draft_of(const DevicePool& pool) const {
    for (std::size_t i = 0; i < draft_pools_.size(); ++i)
      if (pools_[i].get() == &pool) return draft_pools_[i].get();
    return nullptr;
  }

  // scheduler.schedule(now), after limiting each request's drafts to the n-gram proposal of its sequence
  // (n-gram drafts; ngram_drafts_ keeps them for step()).
  StepPlan schedule(Scheduler& scheduler, Time now) {
    if (ngram())
      for (const auto& [id, record] : scheduler.records()) {
        if (record.finished()) continue;
        std::vector<std::int32_t>& drafts = ngram_drafts_[static_cast<std::size_t>(id)];
        drafts = propose_ngram_drafts(sequences_[static_cast<std::size_t>(id)], opt_.ngram_min,
                                      opt_.ngram_max, opt_.speculative_tokens);
        scheduler.limit_drafts(id, static_cast<std::int64_t>(drafts.size()));
      }
    return scheduler.schedule(now);
  }

  // Runs one scheduled step on `pool` (with speculative decoding, the draft passes first), records it and
  // appends the emitted tokens; returns the step time and the scheduler's outcome.
  StepOutcome step(DevicePool& pool, const char* pool_name, Scheduler& scheduler, Time& now,
                   FunctionalResult& res, EnergyLedger& energy, const StepPlan& plan) {
    std::vector<std::size_t> lengths;  // per scheduled request: its sequence before the drafts
    for (const ScheduledRequest& s : plan.requests)
      lengths.push_back(sequences_[static_cast<std::size_t>(s.id)].size());
    std::vector<DevicePool::Step> drafts;
    if (DevicePool* draft = draft_of(pool)) drafts = draft_passes(plan, scheduler, *draft);
    if (ngram())  // the proposals schedule() limited the depths to
      for (const ScheduledRequest& s : plan.requests) {
        if (s.draft_depth == 0) continue;
        const std::vector<std::int32_t>& proposed = ngram_drafts_[static_cast<std::size_t>(s.id)];
        DUPLEX_ASSERT(s.draft_depth <= static_cast<std::int64_t>(proposed.size()),
                      "drafts past the proposal");
        sequences_[static_cast<std::size_t>(s.id)].insert(sequences_[static_cast<std::size_t>(s.id)].end(),
                                                          proposed.begin(), proposed.begin() + s.draft_depth);
      }
    const DevicePool::Step st = pool.step(plan, sequences_, prompt_tokens_, prefix_view(scheduler));
    record_step(pool, pool_name, plan, st, drafts, res, energy);
    for (const InDeviceMigration& m : st.out.migrations)
      res.in_device_kv_migrations.push_back({plan.step, m.id, m.tokens, m.bytes});
    record_quantization(plan, st.out, res);
    for (const StepOutput::Routed& t : st.out.routed) {  // a recomputed position keeps its last routing
      auto& positions = res.routing[static_cast<std::size_t>(t.id)];
      if (positions.size() <= static_cast<std::size_t>(t.position))
        positions.resize(static_cast<std::size_t>(t.position) + 1);
      auto& layers = positions[static_cast<std::size_t>(t.position)];
      if (layers.size() <= static_cast<std::size_t>(t.moe_layer))
        layers.resize(static_cast<std::size_t>(t.moe_layer) + 1);
      layers[static_cast<std::size_t>(t.moe_layer)] = t.token;
    }
    std::vector<RequestId> sampled;
    std::vector<AcceptedDrafts> accepted_drafts;
    std::size_t row = 0;  // the request's first logit row
    for (std::size_t i = 0; i < plan.requests.size(); ++i) {
      const ScheduledRequest& s = plan.requests[i];
      const std::size_t rows = static_cast<std::size_t>(logit_rows(s));
      const auto r = static_cast<std::size_t>(s.id);
      // The drafts it verified (appended by the draft passes) leave its sequence; those the target's greedy
      // tokens confirm come back, then the target's own token after them.
      const std::vector<std::int32_t> proposed(
          sequences_[r].begin() + static_cast<std::ptrdiff_t>(lengths[i]), sequences_[r].end());
      sequences_[r].resize(lengths[i]);
      if (s.samples_token) {
        std::size_t accepted = 0;
        while (accepted < proposed.size() && proposed[accepted] == st.out.next_ids[row + accepted])
          ++accepted;
        for (std::size_t e = 0; e <= accepted; ++e) {
          sequences_[r].push_back(st.out.next_ids[row + e]);
          res.tokens[r].push_back(st.out.next_ids[row + e]);
          res.logits[r].push_back(st.out.logits[row + e]);
        }
        if (!proposed.empty()) {
          accepted_drafts.push_back({s.id, static_cast<std::int64_t>(accepted)});
          res.draft_tokens += static_cast<std::int64_t>(proposed.size());
          res.accepted_tokens += static_cast<std::int64_t>(accepted);
          ++res.verify_steps;
          const std::size_t reached = std::min(accepted + 1, proposed.size());
          if (res.drafts_reached.size() < reached) {
            res.drafts_reached.resize(reached, 0);
            res.drafts_accepted.resize(reached, 0);
          }
          for (std::size_t p = 0; p < reached; ++p) {
            ++res.drafts_reached[p];
            if (p < accepted) ++res.drafts_accepted[p];
          }
          // The draft's cache holds the accepted tokens' K/V at most.
          draft_cached_[r] = std::min(draft_cached_[r], static_cast<std::int64_t>(lengths[i] + accepted));
        }
        sampled.push_back(s.id);
      }
      DUPLEX_ASSERT(proposed.size() == static_cast<std::size_t>(s.draft_depth) &&
                        (proposed.empty() || rows == proposed.size() + 1),
                    "a verification's drafts are not its draft depth");
      row += rows;
    }
    now += st.cost.time;
    for (const DevicePool::Step& d : drafts) now += d.cost.time;
    StepOutcome outcome = scheduler.update({plan.step, now}, accepted_drafts);
    std::vector<RequestId> emitted = outcome.emitted;
    std::sort(emitted.begin(), emitted.end());
    std::sort(sampled.begin(), sampled.end());
    DUPLEX_ASSERT(emitted == sampled, "scheduler and executor disagree on the tokens emitted");
    return outcome;
  }

  Time run_one_pool(std::int64_t blocks, FunctionalResult& res, EnergyLedger& energy) {
    DevicePool& pool = *pools_[0];
    Scheduler scheduler(scheduler_config(blocks));
    for (const RequestSpec& spec : requests_) scheduler.add_request(spec);
    Time now;
    while (scheduler.has_unfinished()) {
      const StepPlan plan = schedule(scheduler, now);
      DUPLEX_ASSERT(!plan.empty(), "every request has arrived, yet the scheduler planned nothing");
      for (RequestId id : step(pool, "", scheduler, now, res, energy, plan).finished) {
        pool.release(id);
        if (DevicePool* draft = draft_of(pool)) draft->release(id);
      }
    }
    add_prefix_figures(scheduler, res);
    return now;
  }

  // The split simulator's loop: the pool whose clock is behind steps next; a pool without work waits for its
  // next arrival (the decode pool: a migrated request) or for the other pool.
  Time run_split(const std::vector<std::vector<std::int32_t>>& prompts, int max_new_tokens,
                 std::int64_t blocks, FunctionalResult& res, EnergyLedger& energy) {
    DevicePool& prefill = *pools_[0];
    DevicePool& decode = *pools_[1];
    // The decode pool keeps a migrated request on the node numbered as its prefill node (id mod nodes, as the
    // prefill pool dealt the prompts, which arrive at once): round-robin, whatever data_parallel_balance
    // says.
    SchedulerConfig decode_config = scheduler_config(blocks);
    decode_config.data_parallel_balance = DataParallelBalance::round_robin;
    Scheduler ps(scheduler_config(blocks)), ds(decode_config);
    for (RequestSpec spec : requests_) {  // the prefill pool emits only the first token
      spec.output_tokens = 1;
      ps.add_request(spec);
    }
    const KvLinkMigration link(sys_, devices_);  // the split simulator's cost formula and link queue
    const int streams = kv_transfer_streams(w_.spec, prefill.layout(), decode.layout());
    KvLinkSchedule links(1, 1);
    struct Clock {
      Time now;
      bool waiting = false;
    };
    Clock pc, dc;
    Time end;
    for (;;) {
      if (dc.waiting && ds.has_unfinished()) dc.waiting = false;
      if (pc.waiting && ps.has_unfinished()) pc.waiting = false;
      if (pc.waiting && dc.waiting) break;
      const bool on_prefill = !pc.waiting && (dc.waiting || pc.now <= dc.now);
      Scheduler& scheduler = on_prefill ? ps : ds;
      Clock& clock = on_prefill ? pc : dc;
      const StepPlan plan = schedule(scheduler, clock.now);
      const Time began = clock.now;
      if (plan.empty()) {
        const std::optional<Time> next = scheduler.next_arrival_after(clock.now);
        if (next)
          clock.now = std::max(clock.now, *next);
        else
          clock.waiting = true;
        continue;
      }
      const StepOutcome outcome = step(on_prefill ? prefill : decode, on_prefill ? "prefill" : "decode",
                                       scheduler, clock.now, res, energy, plan);
      end = std::max(end, clock.now);
      for (RequestId id : outcome.finished) {
        DevicePool* draft_decode = draft_of(decode);
        if (!on_prefill) {
          decode.release(id);
          if (draft_decode) draft_decode->release(id);
          continue;
        }
        const auto input = static_cast<std::int64_t>(prompts[static_cast<std::size_t>(id)].size());
        if (max_new_tokens > 1) {
          KvMigration m;
          m.request = id;
          m.tokens = input;
          m.bytes = decode.receive_kv(prefill, id, input);
          if (draft_decode) {  // the draft's K/V of the prompt moves with the target's
            m.bytes += draft_decode->receive_kv(*draft_of(prefill), id, input);
            draft_cached_[static_cast<std::size_t>(id)] = input;
          }
          const KvLinkSchedule::Crossing crossing = links.book_prompt(
              0, 0, link, m.bytes, streams, began, clock.now, sys_.split_kv_layerwise ? w_.spec.layers : 0);
          m.start = crossing.start;
          m.time = crossing.time;
          EnergyLedger one(sys_.energy);
          link.charge(one, m.bytes);
          m.energy = one.total();
          energy.add(one);
          res.kv_migrations.push_back(m);
          ds.add_request({id, m.start + m.time, input + 1, max_new_tokens - 1, input});
        }
        prefill.release(id);
        if (DevicePool* draft_prefill = draft_of(prefill)) draft_prefill->release(id);
      }
    }
    DUPLEX_ASSERT(!ps.has_unfinished() && !ds.has_unfinished(), "split run stopped with requests left");
    add_prefix_figures(ps, res);  // the prefill pool's cache (the decode pool receives whole prompts)
    return end;
  }

  void record_step(const DevicePool& pool, const char* pool_name, const StepPlan& plan,
                   const DevicePool::Step& st, const std::vector<DevicePool::Step>& drafts,
                   FunctionalResult& res, EnergyLedger& energy) const {
    StepRecord s;
    s.pool = pool_name;
    s.step = plan.step;
    s.requests = static_cast<std::int64_t>(plan.requests.size());
    s.prefill_tokens = plan.prefill_tokens;
    s.decode_tokens = plan.decode_requests;
    s.expert_counts = st.out.routing.counts;
    s.draft_passes = static_cast<int>(drafts.size());
    s.micro_batches = st.cost.micro_batches;
    // The draft passes run first (their ops named draft<i>.<op>), then the verification.
    for (std::size_t i = 0; i <= drafts.size(); ++i) {
      const bool verification = i == drafts.size();
      const DevicePool::Step& one = verification ? st : drafts[i];
      const DevicePool& on = verification ? pool : *draft_of(pool);
      const std::string prefix = verification ? "" : fmt::format("draft{}.", i + 1);
      s.time += one.cost.time;
      s.xpu_busy += one.cost.xpu_busy;
      s.pim_busy += one.cost.pim_busy;
      s.link_busy += one.cost.link_busy;
      energy.add(one.cost.energy);
      record_ops(on, plan.step, prefix, one.out.plan, res, verification ? &s : nullptr);
    }
    res.steps.push_back(std::move(s));
  }

  // Appends `executed`'s ops to res.ops (names after `prefix`), each charged on `on`'s system; with `s`, the
  // MoE layers whose experts ran on both units go to s.coprocessed_expert_layers.
  static void record_ops(const DevicePool& on, std::int64_t step, const std::string& prefix,
                         const compiler::ExecutionPlan& executed, FunctionalResult& res, StepRecord* s) {
    for (const compiler::PlanStage& stage : executed.stages) {
      bool xpu_expert = false, pim_expert = false;
      int layer = -1;
      for (const compiler::PlannedOp& p : stage.ops) {
        const compiler::Op& op = executed.graph.ops[p.op];
        EnergyLedger one(on.system().energy);
        charge_op(one, op, p.unit, on.system());
        res.ops.push_back(
            {step, prefix + op.name, op.kind, op.layer, p.unit, p.time, one.total() * on.devices()});
        if (op.kind == compiler::OpKind::kExpertFfn) {
          layer = op.layer;
          (p.unit == compiler::Unit::kPim ? pim_expert : xpu_expert) = true;
        }
      }
      if (s && xpu_expert && pim_expert) s->coprocessed_expert_layers.push_back(layer);
    }
  }

  const ModelWeights& w_;
  SystemSpec sys_;
  FunctionalOptions opt_;
  int devices_ = 1;
  std::vector<std::unique_ptr<DevicePool>> pools_;    // one, or a split system's prefill and decode pools
  std::vector<std::vector<std::int32_t>> sequences_;  // per request: prompt + generated so far
  std::vector<std::int64_t> prompt_tokens_;           // per request: its prompt's length
  std::vector<RequestSpec> requests_;                 // per request: as the scheduler gets it (prompt hashes)
  std::vector<std::vector<std::uint64_t>> prefix_keys_;  // per request: its blocks' keys (prefix caching)
  std::int64_t prefill_capacity_tokens_ = 0;          // the run's prefill-space bound; 0: none
  // Speculative decoding: the draft model on each pool's devices (parallel to pools_); empty without.
  std::vector<std::unique_ptr<DevicePool>> draft_pools_;
  std::vector<std::int64_t> draft_cached_;  // per request: tokens of its sequence in the draft's cache
  std::vector<std::vector<std::int32_t>> ngram_drafts_;  // per request: its last n-gram proposal
};

FunctionalExecutor::FunctionalExecutor(const ModelWeights& weights, const SystemSpec& system,
                                       FunctionalOptions options)
    : impl_(std::make_unique<Impl>(weights, system, std::move(options))) {}
FunctionalExecutor::~FunctionalExecutor() = default;

FunctionalResult FunctionalExecutor::run(const std::vector<std::vector<std::int32_t>>& prompts,
                                         int max_new_tokens) {
  return impl_->run(prompts, max_new_tokens);
}

}  // namespace duplex::runtime::functional
