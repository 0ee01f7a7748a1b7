#include "pool.hpp"

#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::runtime::detail {

Pool::Pool(const compiler::ModelSpec& model, const SystemSpec& system, const SimulationOptions& o,
           int devices, ExpertRouter* router, SystemResult& result, RunTotals& totals, std::string name,
           SharedHostTier* shared_host, int first_device, SharedHostTier* shared_disk)
    : options_(o),
      layout_(compiler::ParallelLayout::make(model, system, devices)),
      result_(result),
      totals_(totals),
      name_(std::move(name)),
      devices_(devices) {
  totals_.overlap = totals_.overlap || system.two_batch_overlap;
  DraftFootprint draft;
  if (layout_.pp > 1 && o.draft_model)
    throw Error(
        fmt::format("system {}: a draft model ({}) under pipeline parallelism (pipeline_parallel {}) is "
                    "not modelled; expected pipeline_parallel 1, or n-gram drafts",
                    system.name, o.draft_model->name, layout_.pp));
  if (o.draft_model) {
    draft_layout_ = compiler::ParallelLayout::make(*o.draft_model, system, devices);
    draft = draft_footprint(*o.draft_model, *draft_layout_);
  }
  memory_ = plan_memory(model, system, layout_, o.memory_reserve, o.scheduler.kv_block_tokens, draft);
  compiler::PimTimeFn pim_fn;
  // The cycle model times one device's Logic-PIM stacks: BankGroup-PIM / Bank-PIM (other unit placement) and
  // a GPU spread over several PIM devices use the analytical roofline.
  const bool one_logic_pim_device =
      system.pim && system.pim->kind == PimKind::kLogicPim && system.pim_devices_per_gpu <= 1;
  if (o.pim_model == "cycle" && one_logic_pim_device) {
    cycle_ = std::make_unique<CyclePimModel>(system, o.pim_memos ? o.pim_memos->for_system(system) : nullptr);
    pim_fn = [model = cycle_.get()](const compiler::Op& op) { return model->time(op); };
  }
  SchedulerConfig sched = o.scheduler;
  sched.kv_capacity_blocks = memory_.kv_blocks(sched.kv_block_tokens);
  // The windowed layers' blocks behind a sliding window, or before a chunked layer's chunk, are freed
  // (KvBlockManager).
  if (model.sliding_window > 0 || model.attention_chunk > 0)
    sched.kv_window = {model.sliding_window > 0 ? model.sliding_window : model.attention_chunk,
                       model.layers - model.windowed_layers(), model.windowed_layers(),
                       model.attention_chunk > 0};
  sched.prefill_capacity_tokens = memory_.prefill_capacity_tokens;  // 0 without a prefill space
  sched.draft_head = o.draft_model && o.draft_model->draft_head;
  sched.data_parallel_ranks = layout_.dp;  // each data-parallel rank holds and caches its requests' K/V
  // DeepEP's low-latency kernels dispatch at most expert_all_to_all_max_tokens tokens per device, and a
  // device sends row_share of its rank's (1 / tp under tensor parallelism): a decoding step, every running
  // request's token (and drafts), must fit, so a rank runs at most T / row_share / (1 + verified drafts)
  // requests (as SGLang's decode batch per rank must fit SGLANG_DEEPEP_NUM_MAX_DISPATCH_TOKENS_PER_RANK).
  if (memory_.deepep_buffer_bytes_per_device > 0) {
    const double dispatched =
        static_cast<double>(system.expert_all_to_all_max_tokens) / layout_.expert_exchange().row_share;
    const std::int64_t per_request =
        1 + (sched.speculative_tokens > 0 ? sched.tree_nodes(sched.speculative_tokens) : 0);
    sched.rank_batch_cap = static_cast<std::int64_t>(dispatched) / per_request;
    if (sched.rank_batch_cap < 1)
      throw Error(fmt::format(
          "system {}: expert_all_to_all_max_tokens {} holds no decoding request of {} tokens per device on "
          "DeepEP's low-latency kernels; expected >= {}",
          system.name, system.expert_all_to_all_max_tokens, per_request, per_request));
  }
  sched.data_parallel_balance = system.data_parallel_balance;
  // A cache-aware router in front (a cluster's, a split system's prompt router) sees the prompts it routed.
  sched.count_routed_prefixes = routes_by_cache(o.cluster.router);
  // A host tier for the prefix cache: links.host_kv_offload of host memory per device, in whole blocks of
  // this device's share of the K/V.
  const LinkSpec& links = system.links;
  if (links.host_kv_offload.bytes > 0 && sched.prefix_caching) {
    (void)system.energy.price("links.host_per_byte");  // a missing price fails here, not mid-run
    sched.host_kv_blocks =
        static_cast<std::int64_t>(static_cast<double>(links.host_kv_offload.bytes) /
                                  (memory_.kv_bytes_per_token * static_cast<double>(sched.kv_block_tokens)));
    host_link_ = HostLink{.bandwidth = links.host_bandwidth,
                          .latency = links.host_latency,
                          .remote_bandwidth = links.infiniband_bandwidth,
                          .remote_latency = links.infiniband_latency,
                          .disk_bandwidth = links.disk_bandwidth,
                          .disk_latency = links.disk_latency,
                          .kv_bytes_per_token = memory_.kv_bytes_per_token,
                          .block_tokens = sched.kv_block_tokens,
                          .layerwise = links.host_kv_layerwise,
                          .layers = model.layers};
    // A disk tier behind it: links.disk_kv_offload per device, in blocks likewise.
    if (links.disk_kv_offload.bytes > 0) {
      (void)system.energy.price("links.disk_per_byte");
      sched.disk_kv_blocks = static_cast<std::int64_t>(
          static_cast<double>(links.disk_kv_offload.bytes) /
          (memory_.kv_bytes_per_token * static_cast<double>(sched.kv_block_tokens)));
    }
    // Pipeline parallelism: a replica's batches in flight (its ranks) share its devices' host memory and
    // drives, each an equal part (as they share its K/V space); each stage's devices hold their layers' share
    // of a block (kv_bytes_per_token is the stage's) and load it side by side.
    sched.host_kv_blocks /= layout_.pp;
    sched.disk_kv_blocks /= layout_.pp;
    // A store spanning nodes: each rank's copies go to its replica's first device's node (under pipeline
    // parallelism each stage's share to its own node: another replica's copies are remote alike).
    if (links.host_kv_scope == HostKvScope::cluster ||
        (sched.disk_kv_blocks > 0 && links.disk_kv_scope == HostKvScope::cluster))
      for (int r = 0; r < layout_.dp; ++r)
        sched.host_kv_nodes.push_back((first_device + r / layout_.pp * (devices / layout_.replicas())) /
                                      links.devices_per_node);
  }
  kv_blocks_ = sched.kv_capacity_blocks;
  if (kv_blocks_ < layout_.dp)
    throw Error(fmt::format("system {} on {} devices: the KV cache holds less than one block of {} tokens{}",
                            system.name, devices, sched.kv_block_tokens,
                            layout_.dp > 1 ? " per data-parallel rank" : ""));
  // A shared tier: every pool's data-parallel ranks there (attention DP: its devices) bring theirs.
  auto shared = [&](SharedHostTier* s, std::int64_t blocks) -> std::shared_ptr<HostKvTier> {
    if (!s || blocks == 0) return nullptr;
    if (!s->tier) s->tier = std::make_shared<HostKvTier>(blocks * s->pools * layout_.dp);
    return s->tier;
  };
  scheduler_ = std::make_unique<Scheduler>(sched, shared(shared_host, sched.host_kv_blocks),
                                           shared(shared_disk, sched.disk_kv_blocks));
  if (system.data_parallel_balance == DataParallelBalance::cache_aware && layout_.dp > 1) {
    // The cluster router's cache-aware policy and thresholds (SimulationOptions::cluster) over the ranks.
    rank_router_ = std::make_unique<RequestRouter>(
        ClusterSpec{layout_.dp, RouterPolicy::cache_aware, o.cluster.thresholds});
    scheduler_->set_dealer(
        [router = rank_router_.get()](const RequestSpec& spec, std::span<const RankLoad> ranks) {
          std::vector<ReplicaLoad> loads;
          for (const RankLoad& r : ranks)
            loads.push_back({r.unfinished, r.cached_tokens, r.offloaded_tokens});
          return router->route(spec.input_tokens, loads);
        });
  }
  compiler::XpuTimeFn xpu_fn;
  if (!o.xpu_profile.empty()) {
    xpu_profile_ = std::make_unique<XpuProfile>(XpuProfile::load(o.xpu_profile));
    xpu_fn = [profile = xpu_profile_.get()](const compiler::Op& op) { return profile->lookup(op); };
  }
  executor_ = std::make_unique<StepExecutor>(model, system, layout_, router, pim_fn, xpu_fn);
  if (o.draft_model)
    draft_executor_ =
        std::make_unique<StepExecutor>(*o.draft_model, system, *draft_layout_, router, pim_fn, xpu_fn);
}

void Pool::add_draft_passes(const StepPlan& plan, StepCost& c, std::vector<compiler::ExecutionPlan>* plans) {
  if (!draft_executor_) return;
  // Draft pass i (1-based) proposes the i-th level of the draft of every request whose draft is at least i
  // deep: pass 1 computes the tokens through its last that the draft has not cached (ScheduledRequest::
  // draft_context: one, or two after a draft model's fully accepted verification, or a draft head's a + 1
  // after one that accepted a), a later pass of a tree the draft_topk nodes it expands at depth i - 1, as
  // query rows over the context and their ancestors (a chain: one). The draft caches the prompts too: pass 1
  // also prefills every prompt chunk the step prefills, as vLLM batches it.
  const std::int64_t topk = options_.scheduler.draft_topk;
  for (std::int64_t i = 1;; ++i) {
    StepPlan pass;
    pass.step = plan.step;
    pass.start = plan.start;
    for (const ScheduledRequest& r : plan.requests)
      if (r.phase == TokenPhase::prefill && i == 1)
        pass.requests.push_back(r);
      else if (r.phase == TokenPhase::decode && r.draft_depth >= i)
        pass.requests.push_back(
            i == 1 ? ScheduledRequest{r.id, r.context_len + 1 - r.draft_context, r.draft_context,
                                      TokenPhase::decode, true}
                   : ScheduledRequest{r.id, topk, r.context_len + i - 1, TokenPhase::decode, true});
    if (pass.requests.empty()) return;
    StepCost d = draft_executor_->execute(pass, i == 1);
    c.time += d.time;
    c.xpu_busy += d.xpu_busy;
    c.pim_busy += d.pim_busy;
    c.link_busy += d.link_busy;
    c.expert_move += d.expert_move;  // an MoE draft's own expert copies (its own ExpertBalancer)
    c.energy.add(d.energy);
    if (plans == nullptr) continue;
    for (compiler::Op& op : d.plan.graph.ops) op.name = "draft" + std::to_string(i) + "." + op.name;
    plans->push_back(std::move(d.plan));
  }
}

Time Pool::step(const StepPlan& plan) {
  StepCost c = executor_->execute(plan);
  add_host_transfers(plan, c);
  // Speculative decoding: the draft passes run before the verification, on the same devices; a recorded step
  // shows them in its timeline first.
  const bool recorded = totals_.steps < options_.timeline_steps;
  std::vector<compiler::ExecutionPlan> drafts;
  add_draft_passes(plan, c, recorded ? &drafts : nullptr);
  totals_.energy.add(c.energy);
  totals_.overlapped_steps += c.micro_batches ? 1 : 0;
  if (executor_->balances_experts()) {
    ++totals_.balanced_steps;
    totals_.rebalancings += c.experts_rebalanced ? 1 : 0;
    totals_.expert_move += c.expert_move;
    totals_.imbalance_sum += c.expert_imbalance;
  }
  totals_.xpu_busy += c.xpu_busy * devices_;
  totals_.pim_busy += c.pim_busy * devices_;
  xpu_busy_ += c.xpu_busy;
  pim_busy_ += c.pim_busy;
  const auto batch = static_cast<std::int64_t>(plan.requests.size());
  batch_sum_ += static_cast<double>(batch);
  batch_max_ = std::max(batch_max_, batch);
  ++steps_;
  totals_.batch_sum += static_cast<double>(batch);
  totals_.batch_max = std::max(totals_.batch_max, batch);
  const std::int64_t index = totals_.steps++;
  if (options_.record_steps) {
    StepRow row;
    row.step = index;
    row.start_s = plan.start.si();
    row.end_s = (plan.start + c.time).si();
    row.requests = batch;
    row.decode_requests = plan.decode_requests;
    row.prefill_tokens = plan.prefill_tokens;
    row.tokens = plan.total_tokens;
    row.kv_blocks_used = plan.kv_blocks_used;
    row.kv_blocks_capacity = plan.kv_blocks_capacity;
    row.xpu_busy_us = to_us(c.xpu_busy);
    row.pim_busy_us = to_us(c.pim_busy);
    row.link_us = to_us(c.link_busy);
    row.energy_j = c.energy.total().si();
    row.pool = name_;
    result_.step_rows.push_back(row);
  }
  if (recorded) {
    Time at = plan.start;
    for (compiler::ExecutionPlan& d : drafts) {
      const Time length = d.total();
      result_.timeline.push_back({index, at.si(), std::move(d)});
      at += length;
    }
    result_.timeline.push_back({index, at.si(), std::move(c.plan)});
  }
  return c.time;
}

void Pool::add_host_transfers(const StepPlan& plan, StepCost& c) const {
  if (!host_link_ ||
      (plan.host_loaded_tokens == 0 && plan.host_stored_blocks == 0 && plan.disk_stored_blocks == 0))
    return;
  const HostLink& h = *host_link_;
  // Per device: the loaded tokens' K/V share, and the stored blocks' copies beside the step (asynchronous:
  // energy only). Serial: the forward waits for the whole load (H = bytes / bandwidth) and the latency.
  // Layerwise, L layers: layer i's K/V (H / L) loads while layer i - 1 computes (S / L of the step's time S,
  // layers taken as equal), so the step takes latency + H / L + (L - 1) x max(H, S) / L + S / L, i.e. S plus
  // latency + H / L + (L - 1) / L x max(0, H - S).
  // A store spanning nodes: another node's copies (R of the bytes: in its host memory, or with a disk store
  // over the nodes on its drives) come over InfiniBand into the same PCIe link, so the load takes max(H, R /
  // InfiniBand bandwidth) after the InfiniBand latency on top of the host's, and R is charged at the
  // network's price too. A disk tier's blocks (D of the bytes) are read into host memory and on over PCIe as
  // they come: the load takes max(H, R / InfiniBand, D / disk bandwidth) after the disk's latency (or the
  // network's, the longer), D charged at the disk's price too; the blocks written to disk beside the step are
  // charged there.
  const double loaded = static_cast<double>(plan.host_loaded_tokens) * h.kv_bytes_per_token;
  const double remote = static_cast<double>(plan.host_remote_loaded_tokens + plan.disk_remote_loaded_tokens) *
                        h.kv_bytes_per_token;
  const double disk = static_cast<double>(plan.disk_loaded_tokens) * h.kv_bytes_per_token;
  const double stored = static_cast<double>(plan.host_stored_blocks * h.block_tokens) * h.kv_bytes_per_token;
  const double written = static_cast<double>(plan.disk_stored_blocks * h.block_tokens) * h.kv_bytes_per_token;
  if (loaded > 0) {
    const Time load = std::max({transfer_time(loaded, h.bandwidth),
                                remote > 0 ? transfer_time(remote, h.remote_bandwidth) : Time{},
                                disk > 0 ? transfer_time(disk, h.disk_bandwidth) : Time{}});
    const Time latency =
        h.latency + std::max(remote > 0 ? h.remote_latency : Time{}, disk > 0 ? h.disk_latency : Time{});
    Time wait = load + latency;
    if (h.layerwise) {
      const double layers = h.layers;
      wait = latency + load * (1.0 / layers) + std::max(Time{}, load - c.time) * ((layers - 1) / layers);
    }
    c.time += wait;
    c.link_busy += load + latency;
  }
  c.energy.charge(EnergyCategory::kCommunication, "links.host_per_byte", (loaded + stored) * devices_);
  if (remote > 0)
    c.energy.charge(EnergyCategory::kCommunication, "links.infiniband_per_byte", remote * devices_);
  if (disk + written > 0)
    c.energy.charge(EnergyCategory::kCommunication, "links.disk_per_byte", (disk + written) * devices_);
}

PoolFigures Pool::figures(Time simulated) const {
  PoolFigures f;
  f.name = name_;
  f.devices = devices_;
  f.requests = static_cast<std::int64_t>(scheduler_->records().size());
  f.steps = steps_;
  f.batch_mean = steps_ > 0 ? batch_sum_ / static_cast<double>(steps_) : 0;
  f.batch_max = batch_max_;
  f.xpu_utilization = simulated.si() > 0 ? xpu_busy_.si() / simulated.si() : 0;
  f.pim_utilization = simulated.si() > 0 ? pim_busy_.si() / simulated.si() : 0;
  const Scheduler& s = *scheduler_;
  if (s.ranks() > 1) {
    f.ranks.resize(static_cast<std::size_t>(s.ranks()));
    for (int r = 0; r < s.ranks(); ++r) {
      RankFigures& rank = f.ranks[static_cast<std::size_t>(r)];
      rank.kv_peak_blocks = s.kv_peak_blocks(r);
      rank.kv_capacity_blocks = s.kv(r).capacity_blocks();
      rank.batch_peak = s.batch_peak(r);
      rank.max_batch = s.config().rank_max_batch();
    }
    for (const auto& [id, record] : s.records()) {
      RankFigures& rank = f.ranks[static_cast<std::size_t>(s.rank_of(id))];
      ++rank.requests;
      rank.preemptions += record.preemptions;
    }
  }
  return f;
}

void describe_memory_and_timing(SystemResult& r, const Pool& pool, const SystemSpec& system) {
  r.memory = pool.memory();
  r.pim_area = system.pim ? logic_pim_area(*system.pim) : std::nullopt;
  r.kv_capacity_blocks = pool.kv_blocks();
  r.rank_batch_cap = pool.rank_batch_cap();
  r.host_kv_blocks = pool.host_kv_blocks();
  r.disk_kv_blocks = pool.disk_kv_blocks();
  r.host_kv_scope = to_string(system.links.host_kv_scope);
  r.disk_kv_scope = to_string(system.links.disk_kv_scope);
  r.pim_model = !system.pim ? "none" : pool.cycle_model() ? "cycle" : "analytical";
  r.data_parallel_balance = to_string(system.data_parallel_balance);
  const auto x = pool.layout().expert_exchange();
  if (x.infiniband + x.nvlink > 0) r.expert_all_to_all = to_string(system.expert_all_to_all);
}

RequestTimeline finished_timeline(const RequestRecord& rec, std::string pool) {
  if (!rec.finished()) throw InternalError(fmt::format("request {} did not finish", rec.spec.id));
  return {rec.spec,
          rec.token_times,
          rec.preemptions,
          rec.draft_tokens,
          rec.accepted_tokens,
          rec.verify_steps,
          rec.prefix_query_tokens,
          rec.prefix_hit_tokens,
          rec.host_hit_tokens,
          rec.host_remote_hit_tokens,
          rec.disk_hit_tokens,
          rec.disk_remote_hit_tokens,
          std::move(pool)};
}

void charge_static_energy(RunTotals& totals, const SystemSpec& system, int devices, Time end) {
  totals.energy.charge_static("xpu", end, devices);
  totals.energy.charge_static("hbm_stack", end, static_cast<double>(devices) * system.stacks);
  if (system.heterogeneous()) {
    // The GPUs' PIM devices: the same stacks, each with a Logic-PIM logic die, and no xPU.
    const double pim_stacks = static_cast<double>(devices) * system.pim_devices_per_gpu * system.stacks;
    totals.energy.charge_static("hbm_stack", end, pim_stacks);
    totals.energy.charge_static("logic_pim_stack", end, pim_stacks);
  } else if (system.pim && system.pim->has_logic_pim_units()) {
    // BankGroup-PIM has Logic-PIM's GEMM modules and buffers (on the DRAM dies): taken to leak the same.
    totals.energy.charge_static("logic_pim_stack", end, static_cast<double>(devices) * system.stacks);
  }
}

void finish_result(SystemResult& r, const std::vector<RequestTimeline>& timelines, RunTotals& totals,
                   Time end, const SystemSpec& system, int devices, bool record_requests,
                   const LatencySlo& slo, std::optional<int> static_devices) {
  r.steps = totals.steps;
  r.simulated_s = end.si();
  charge_static_energy(totals, system, static_devices.value_or(devices), end);
  std::vector<double> ttft, tbt, e2e, tpot;
  std::int64_t slo_met = 0, slo_met_tokens = 0;
  for (const RequestTimeline& t : timelines) {
    if (static_cast<std::int64_t>(t.token_times.size()) != t.spec.output_tokens)
      throw InternalError(fmt::format("request {} emitted {} of its {} tokens", t.spec.id, t.token_times.size(),
                                      t.spec.output_tokens));
    ++r.requests;
    r.generated_tokens += t.spec.output_tokens;
    r.preemptions += t.preemptions;
    r.draft_tokens += t.draft_tokens;
    r.accepted_tokens += t.accepted_tokens;
    r.verify_steps += t.verify_steps;
    r.prefix_query_tokens += t.prefix_query_tokens;
    r.prefix_hit_tokens += t.prefix_hit_tokens;
    r.host_hit_tokens += t.host_hit_tokens;
    r.host_remote_hit_tokens += t.host_remote_hit_tokens;
    r.disk_hit_tokens += t.disk_hit_tokens;
    r.disk_remote_hit_tokens += t.disk_remote_hit_tokens;
    const double first = to_ms(t.token_times.front() - t.spec.arrival);
    const double total = to_ms(t.token_times.back() - t.spec.arrival);
    ttft.push_back(first);
    e2e.push_back(total);
    const auto outputs = static_cast<double>(t.token_times.size());
    if (outputs > 1) tpot.push_back((total - first) / (outputs - 1));
    if ((slo.ttft_ms == 0 || first <= slo.ttft_ms) &&
        (slo.tpot_ms == 0 || outputs <= 1 || (total - first) / (outputs - 1) <= slo.tpot_ms)) {
      ++slo_met;
      slo_met_tokens += t.spec.output_tokens;
    }
    // Between tokens: a step that emits n tokens at once (speculative decoding) gives each of them 1 / n of
    // the time since the previous emission, so the gaps still add up to the decode time.
    double gap_sum = 0;
    for (std::size_t i = 1; i < t.token_times.size();) {
      std::size_t n = 1;
      while (i + n < t.token_times.size() && t.token_times[i + n] == t.token_times[i]) ++n;
      const double gap = to_ms(t.token_times[i] - t.token_times[i - 1]);
      for (std::size_t k = 0; k < n; ++k) tbt.push_back(gap / static_cast<double>(n));
      gap_sum += gap;
      i += n;
    }
    if (record_requests) {
      const auto gaps = static_cast<double>(t.token_times.size() - 1);
      r.request_rows[t.spec.id] = {{"id", t.spec.id},
                                   {"arrival_s", t.spec.arrival.si()},
                                   {"input_tokens", t.spec.input_tokens},
                                   {"output_tokens", t.spec.output_tokens},
                                   {"ttft_ms", first},
                                   {"e2e_ms", total},
                                   {"mean_tbt_ms", gaps > 0 ? gap_sum / gaps : 0.0},
                                   {"preemptions", t.preemptions},
                                   {"prefix_hit_tokens", t.prefix_hit_tokens},
                                   {"pool", t.pool}};
    }
  }
  r.ttft_ms = percentiles(ttft);
  r.tbt_ms = percentiles(tbt);
  r.e2e_ms = percentiles(e2e);
  r.tpot_ms = percentiles(tpot);
  r.throughput_tok_s = r.simulated_s > 0 ? static_cast<double>(r.generated_tokens) / r.simulated_s : 0;
  if (slo.any()) {
    SloResult s{.slo = slo, .met = slo_met};
    s.attainment = r.requests > 0 ? static_cast<double>(slo_met) / static_cast<double>(r.requests) : 0;
    s.goodput_req_s = r.simulated_s > 0 ? static_cast<double>(slo_met) / r.simulated_s : 0;
    s.goodput_tok_s = r.simulated_s > 0 ? static_cast<double>(slo_met_tokens) / r.simulated_s : 0;
    r.slo = s;
  }
  r.batch_mean = r.steps > 0 ? totals.batch_sum / static_cast<double>(r.steps) : 0;
  r.batch_max = totals.batch_max;
  if (totals.overlap) r.two_batch_overlap = MicroBatchFigures{totals.overlapped_steps, r.steps};
  if (totals.balanced_steps > 0)
    r.expert_balancing =
        ExpertBalancingFigures{totals.rebalancings, totals.expert_move.si(),
                               totals.imbalance_sum / static_cast<double>(totals.balanced_steps)};
  r.energy_j = totals.energy.total().si();
  r.energy_j_per_token = r.generated_tokens > 0 ? r.energy_j / static_cast<double>(r.generated_tokens) : 0;
  r.energy_breakdown = totals.energy.breakdown_json();
  // Utilisation: busy device-time over devices x run time (pools add their devices' busy device-time).
  const double device_s = static_cast<double>(devices) * r.simulated_s;
  r.xpu_utilization = device_s > 0 ? totals.xpu_busy.si() / device_s : 0;
  r.pim_utilization = device_s > 0 ? totals.pim_busy.si() / device_s : 0;
}

}  // namespace duplex::runtime::detail
