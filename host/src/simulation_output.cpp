#include "simulation_output.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <filesystem>
#include <fstream>

#include "duplex/base/error.hpp"

namespace duplex::host {
namespace fs = std::filesystem;

namespace {

// The system column's width: 14, or the longest name.
template <typename Rows>
std::size_t system_width(const Rows& rows) {
  std::size_t w = 14;
  for (const auto& r : rows) w = std::max(w, r.system.size());
  return w;
}

// The prefix cache line's host (and disk) tier part: ", H of them loaded from host memory ...", or "".
std::string host_tier_note(const runtime::SystemResult& r) {
  if (r.host_kv_blocks == 0) return "";
  std::string where = r.host_kv_scope == "node"      ? ", one tier per node"
                      : r.host_kv_scope == "cluster" ? fmt::format(
                                                           ", one store over the nodes: {} tokens from "
                                                           "other nodes",
                                                           r.host_remote_hit_tokens)
                                                     : "";
  if (r.disk_kv_blocks > 0)
    where += fmt::format("; a disk tier of {} blocks per device{}: {} tokens from disk{}", r.disk_kv_blocks,
                         r.disk_kv_scope == "node"      ? ", one per node"
                         : r.disk_kv_scope == "cluster" ? ", one store over the nodes"
                                                        : "",
                         r.disk_hit_tokens,
                         r.disk_kv_scope == "cluster"
                             ? fmt::format(" ({} from other nodes' drives)", r.disk_remote_hit_tokens)
                             : "");
  return fmt::format(", {} of them loaded from host memory{} ({} blocks per device{})", r.host_hit_tokens,
                     r.disk_kv_blocks > 0 ? " or disk" : "", r.host_kv_blocks, where);
}

}  // namespace

std::string comparison_table(const std::vector<runtime::SystemResult>& results) {
  const std::size_t w = system_width(results);
  std::string s = fmt::format("{:<{}} {:>4} {:>10} {:>7} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>10} {:>11}\n",
                              "system", w, "dev", "tok/s", "x", "TTFT p50", "TTFT p99", "TBT p50", "TBT p99",
                              "E2E p50", "J/token", "batch avg", "preemptions");
  const double base = results.empty() ? 0 : results.front().throughput_tok_s;
  for (const auto& r : results)
    s += fmt::format(
        "{:<{}} {:>4} {:>10.1f} {:>7.2f} {:>9.1f} {:>9.1f} {:>8.2f} {:>8.2f} {:>9.1f} {:>9.3f} {:>10.1f} "
        "{:>11}\n",
        r.system, w, r.devices, r.throughput_tok_s, base > 0 ? r.throughput_tok_s / base : 0.0, r.ttft_ms.p50,
        r.ttft_ms.p99, r.tbt_ms.p50, r.tbt_ms.p99, r.e2e_ms.p50, r.energy_j_per_token, r.batch_mean,
        r.preemptions);
  if (!results.empty())
    s += fmt::format("model {} | {} requests, {} generated tokens | latencies in ms | x = throughput vs {} | PIM "
                     "timing: {}\n",
                     results.front().model, results.front().requests, results.front().generated_tokens,
                     results.front().system, results.back().pim_model);
  for (const auto& r : results) {
    const runtime::MemoryPlan& m = r.memory;
    // A split system's pools: prefill then decode instances ("prefill" / "decode" when there are only two).
    const bool instances = r.pools.size() > 2 && r.pools.front().name.starts_with("prefill");
    s += fmt::format("memory {}: KV cache {} tokens ({} blocks){}", r.system, m.kv_tokens,
                     r.kv_capacity_blocks,
                     instances        ? " per decode instance"
                     : r.replicas > 1 ? " per replica"
                                      : "");
    if (m.has_spaces())
      s += fmt::format(" in spaces {}, prefill space {} holds {} tokens per replica (scheduler bound {})",
                       fmt::join(m.kv_spaces, ","), fmt::join(m.prefill_spaces, ","), m.prefill_tokens,
                       m.prefill_capacity_tokens);
    if (m.draft_weight_bytes_per_device > 0)
      s += fmt::format(", draft model weights {:.2f} GiB per device",
                       m.draft_weight_bytes_per_device / 1073741824.0);
    if (m.deepep_buffer_bytes_per_device > 0)
      s += fmt::format(", DeepEP low-latency buffers {:.2f} GiB per device (a rank runs at most {} requests)",
                       m.deepep_buffer_bytes_per_device / 1073741824.0, r.rank_batch_cap);
    s += "\n";
    if (r.draft_tokens > 0)
      s += fmt::format(
          "speculative {}: {} of {} draft tokens accepted ({:.1f}%), {:.2f} tokens per verification\n",
          r.system, r.accepted_tokens, r.draft_tokens,
          100.0 * static_cast<double>(r.accepted_tokens) / static_cast<double>(r.draft_tokens),
          1.0 + static_cast<double>(r.accepted_tokens) / static_cast<double>(r.verify_steps));
    if (r.two_batch_overlap)
      s += fmt::format("two-batch overlap {}: {} of {} steps as two micro-batches\n", r.system,
                       r.two_batch_overlap->overlapped_steps, r.two_batch_overlap->steps);
    if (r.expert_balancing)
      s += fmt::format(
          "expert load balancing {}: {} rebalancing{}, steps waited {:.2f} ms for expert copies; the busiest "
          "device's expert rows {:.3f}x the mean\n",
          r.system, r.expert_balancing->rebalancings, r.expert_balancing->rebalancings == 1 ? "" : "s",
          1e3 * r.expert_balancing->move_s, r.expert_balancing->imbalance_mean);
    if (r.slo)
      s += fmt::format(
          "slo {}: {} of {} requests ({:.1f}%) within TTFT {} and TPOT {}; goodput {:.2f} req/s, "
          "{:.1f} tok/s\n",
          r.system, r.slo->met, r.requests, 100.0 * r.slo->attainment,
          r.slo->slo.ttft_ms > 0 ? fmt::format("{:g} ms", r.slo->slo.ttft_ms) : "unbounded",
          r.slo->slo.tpot_ms > 0 ? fmt::format("{:g} ms", r.slo->slo.tpot_ms) : "unbounded",
          r.slo->goodput_req_s, r.slo->goodput_tok_s);
    if (instances) {
      // Per instance of the role: requests served, and the share of the run its xPUs (and Logic-PIM, where
      // any) were busy.
      auto role = [&](const char* name) {
        std::vector<std::int64_t> requests;
        std::vector<std::string> xpu, pim;
        bool any_pim = false;
        int devices = 0;
        for (const runtime::PoolFigures& p : r.pools)
          if (p.name.starts_with(name)) {
            requests.push_back(p.requests);
            xpu.push_back(fmt::format("{:.0f}%", 100.0 * p.xpu_utilization));
            pim.push_back(fmt::format("{:.0f}%", 100.0 * p.pim_utilization));
            any_pim |= p.pim_utilization > 0;
            devices = p.devices;
          }
        return fmt::format("{} {} instance{} of {} device{}, requests {}, xPU busy {}{}", requests.size(),
                           name, requests.size() > 1 ? "s" : "", devices, devices > 1 ? "s" : "",
                           fmt::join(requests, " "), fmt::join(xpu, " "),
                           any_pim ? fmt::format(", PIM busy {}", fmt::join(pim, " ")) : "");
      };
      s += fmt::format("split {}: {} replica{}; {}{}; {}\n", r.system, r.replicas, r.replicas > 1 ? "s" : "",
                       role("prefill"), r.router.empty() ? "" : fmt::format(" ({} router)", r.router),
                       role("decode"));
    } else if (r.replicas > 1) {
      s += fmt::format("cluster {}: {} replicas of {} devices, {} router; requests per replica", r.system,
                       r.replicas, r.devices / r.replicas, r.router);
      for (const runtime::PoolFigures& p : r.pools) s += fmt::format(" {}", p.requests);
      s += "\n";
    }
    if (!r.ranks.empty()) {
      // Over the data-parallel ranks: the least and most of each figure.
      auto span = [&](auto figure) {
        std::int64_t lo = figure(r.ranks.front()), hi = lo;
        for (const runtime::RankFigures& k : r.ranks) {
          lo = std::min(lo, figure(k));
          hi = std::max(hi, figure(k));
        }
        return lo == hi ? fmt::format("{}", lo) : fmt::format("{}-{}", lo, hi);
      };
      s += fmt::format(
          "ranks {}: {} data-parallel ranks ({}), requests {}, batch peak {} of {}, preemptions {}, KV peak "
          "{} "
          "of {} blocks each\n",
          r.system, r.ranks.size(), r.data_parallel_balance, span([](const auto& k) { return k.requests; }),
          span([](const auto& k) { return k.batch_peak; }), r.ranks.front().max_batch,
          span([](const auto& k) { return k.preemptions; }),
          span([](const auto& k) { return k.kv_peak_blocks; }), r.ranks.front().kv_capacity_blocks);
    }
    if (!r.expert_all_to_all.empty())
      s += fmt::format("all-to-all {}: {} kernels ({})\n", r.system, r.expert_all_to_all,
                       r.expert_all_to_all == "low_latency" ? "each token-expert row to its expert's device"
                       : r.expert_all_to_all == "normal"
                           ? "each token once per node and device holding its experts"
                           : "normal for steps with prefill tokens, low_latency for decode-only steps");
    if (r.prefix_query_tokens > 0)
      s += fmt::format(
          "prefix cache {}: {} of {} prompt tokens taken from the cache ({:.1f}%){}\n", r.system,
          r.prefix_hit_tokens, r.prefix_query_tokens,
          100.0 * static_cast<double>(r.prefix_hit_tokens) / static_cast<double>(r.prefix_query_tokens),
          host_tier_note(r));
    if (r.pim_area)
      s += fmt::format("area {}: Logic-PIM {:.2f} mm2 per stack, {:.1f}% of the {:.0f} mm2 logic die (TSVs {:.2f}, GEMM "
                       "modules {:.2f}, buffers {:.2f}, softmax {:.2f})\n",
                       r.system, to_mm2(r.pim_area->total()), 100.0 * r.pim_area->die_fraction(),
                       to_mm2(r.pim_area->logic_die), to_mm2(r.pim_area->tsv), to_mm2(r.pim_area->gemm_modules),
                       to_mm2(r.pim_area->buffers), to_mm2(r.pim_area->softmax));
  }
  return s;
}

namespace {

std::string objective_text(double ms) {
  return ms > 0 ? fmt::format("{:g} ms", ms) : "unbounded";
}

}  // namespace

std::string capacity_table(const std::vector<SystemCapacity>& results, const runtime::WorkloadSpec& workload,
                           const runtime::LatencySlo& slo) {
  const char* unit = workload.conversation ? "conv/s" : "req/s";
  const std::size_t w = system_width(results);
  std::string s =
      fmt::format("{:<{}} {:>4} {:>11} {:>10} {:>6} {:>10} {:>10} {:>9} {:>9} {:>10} {:>8} {:>6}\n", "system",
                  w, "dev", fmt::format("max {}", unit), "per device", "x", "within SLO", "goodput/s",
                  "TTFT p99", "TPOT p99", "tok/s", "J/token", "probes");
  const std::optional<double> base = results.empty() ? std::nullopt : results.front().capacity.max_rate;
  for (const SystemCapacity& c : results) {
    const runtime::CapacityResult& r = c.capacity;
    if (!r.at_max) {
      s += fmt::format("{:<{}} {:>4} {:>11} {:>10} {:>6} {:>10} {:>10} {:>9} {:>9} {:>10} {:>8} {:>6}\n",
                       c.system, w, c.devices, "none", "-", "-", "-", "-", "-", "-", "-", "-",
                       r.probes.size());
      continue;
    }
    const runtime::SystemResult& m = *r.at_max;
    const std::string rate = fmt::format("{}{:.3f}", r.failing_rate ? "" : ">=", *r.max_rate);
    s += fmt::format(
        "{:<{}} {:>4} {:>11} {:>10.4f} {:>6} {:>9.1f}% {:>10.3f} {:>9.1f} {:>9.2f} {:>10.1f} {:>8.3f} "
        "{:>6}\n",
        c.system, w, c.devices, rate, *r.max_rate / c.devices,
        base ? fmt::format("{:.2f}", *r.max_rate / *base) : "-", 100.0 * m.slo->attainment,
        m.slo->goodput_req_s, m.ttft_ms.p99, m.tpot_ms.p99, m.throughput_tok_s, m.energy_j_per_token,
        r.probes.size());
  }
  if (results.empty()) return s;
  const runtime::CapacitySearchSpec& spec = results.front().capacity.spec;
  s += fmt::format(
      "capacity: the highest {} ({}) at which >= {:g}% of {} {} meet TTFT {} and TPOT {}, "
      "bracketed to {:g}% | figures at that rate, latencies in ms | x = max rate vs {}\n",
      workload.arrival.kind == runtime::ArrivalSpec::Kind::trace
          ? fmt::format("arrival rate of the trace {} scaled in time", workload.arrival.trace_file)
          : std::string("Poisson arrival rate"),
      unit, 100.0 * spec.attainment, workload.requests, workload.conversation ? "turns" : "requests",
      objective_text(slo.ttft_ms), objective_text(slo.tpot_ms), 100.0 * spec.precision,
      results.front().system);
  for (const SystemCapacity& c : results) {
    const runtime::CapacityResult& r = c.capacity;
    std::vector<std::string> probes;
    for (const runtime::CapacityProbe& p : r.probes)
      probes.push_back(fmt::format("{:.4g} {:.1f}%", p.rate_per_s, 100.0 * p.attainment));
    s += fmt::format(
        "probes {}{}: {}\n", c.system,
        r.closed_loop_rate ? fmt::format(" (from the closed loop's {:.4g})", *r.closed_loop_rate) : "",
        fmt::join(probes, " | "));
    if (!r.max_rate)
      s += fmt::format("capacity {}: no rate probed meets the objectives (down to {:.4g} {})\n", c.system,
                       *r.failing_rate, unit);
    else if (!r.failing_rate)
      s += fmt::format(
          "capacity {}: every rate probed meets the objectives (up to {:.4g} {}): no upper bound found\n",
          c.system, *r.max_rate, unit);
    else if (!r.converged())
      s += fmt::format("capacity {}: bracket {:.4g} - {:.4g} {} after {} probes, wider than {:g}%\n",
                       c.system, *r.max_rate, *r.failing_rate, unit, r.probes.size(), 100.0 * spec.precision);
  }
  return s;
}

namespace {

void write_file(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) throw Error(fmt::format("{}: cannot write", tmp.string()));
    out << text;
    if (!out) throw Error(fmt::format("{}: write failed", tmp.string()));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error(fmt::format("{}: cannot rename into place: {}", path.string(), ec.message()));
}

std::string steps_csv(const runtime::SystemResult& r) {
  std::string s =
      "step,start_s,end_s,requests,decode_requests,prefill_tokens,tokens,kv_blocks_used,kv_blocks_capacity,"
      "xpu_busy_us,pim_busy_us,link_us,energy_j,pool\n";
  for (const auto& x : r.step_rows)
    s += fmt::format("{},{:.9f},{:.9f},{},{},{},{},{},{},{:.3f},{:.3f},{:.3f},{:.6g},{}\n", x.step, x.start_s,
                     x.end_s, x.requests, x.decode_requests, x.prefill_tokens, x.tokens, x.kv_blocks_used,
                     x.kv_blocks_capacity, x.xpu_busy_us, x.pim_busy_us, x.link_us, x.energy_j, x.pool);
  return s;
}

std::string requests_csv(const runtime::SystemResult& r) {
  std::string s =
      "id,arrival_s,input_tokens,output_tokens,ttft_ms,e2e_ms,mean_tbt_ms,preemptions,prefix_hit_tokens,"
      "pool\n";
  for (const auto& [id, j] : r.request_rows)
    s += fmt::format("{},{:.9f},{},{},{:.4f},{:.4f},{:.4f},{},{},{}\n", id, j["arrival_s"].get<double>(),
                     j["input_tokens"].get<std::int64_t>(), j["output_tokens"].get<std::int64_t>(),
                     j["ttft_ms"].get<double>(), j["e2e_ms"].get<double>(), j["mean_tbt_ms"].get<double>(),
                     j["preemptions"].get<std::int64_t>(), j["prefix_hit_tokens"].get<std::int64_t>(),
                     j["pool"].get<std::string>());
  return s;
}

// Chrome / Perfetto trace-event JSON: device 0's xPU, PIM and link lanes for the recorded steps.
std::string timeline_json(const runtime::SystemResult& r) {
  nlohmann::json events = nlohmann::json::array();
  const char* lanes[] = {"xPU", "Logic-PIM", "links"};
  for (int t = 0; t < 3; ++t)
    events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", 0}, {"tid", t}, {"args", {{"name", lanes[t]}}}});
  events.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", 0}, {"args", {{"name", r.system + " device 0"}}}});
  for (const auto& step : r.timeline) {
    const std::vector<Time> starts = step.plan.op_starts();  // overlapped micro-batches' stages overlap
    for (const auto& stage : step.plan.stages)
      for (const auto& p : stage.ops) {
        const auto& op = step.plan.graph.ops[p.op];
        events.push_back({{"ph", "X"},
                          {"name", op.name},
                          {"cat", std::string(compiler::op_kind_name(op.kind))},
                          {"pid", 0},
                          {"tid", static_cast<int>(p.unit)},
                          {"ts", step.start_s * 1e6 + to_us(starts[p.op])},
                          {"dur", to_us(p.time)},
                          {"args", {{"step", step.step}, {"shape", op.shape()}, {"op_b", op.op_b()}}}});
      }
  }
  return nlohmann::json{{"traceEvents", events}, {"displayTimeUnit", "ns"}}.dump();
}

}  // namespace

void write_simulation_output(const std::string& dir, const std::vector<runtime::SystemResult>& results,
                             const std::vector<SystemSpec>& systems, const compiler::ModelSpec& model,
                             const runtime::WorkloadSpec& workload) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(fmt::format("{}: cannot create the output directory: {}", dir, ec.message()));
  nlohmann::json summary = nlohmann::json::array();
  for (std::size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    const fs::path sub = fs::path(dir) / r.system;
    fs::create_directories(sub, ec);
    if (ec) throw Error(fmt::format("{}: cannot create: {}", sub.string(), ec.message()));
    write_file(sub / "steps.csv", steps_csv(r));
    write_file(sub / "requests.csv", requests_csv(r));
    write_file(sub / "timeline.json", timeline_json(r));
    write_file(sub / "system.yaml", systems[i].resolved_yaml + "\n");
    summary.push_back(r.to_json());
  }
  write_file(fs::path(dir) / "summary.json", nlohmann::json{{"systems", summary}}.dump(2) + "\n");
  write_file(fs::path(dir) / "model.txt",
             fmt::format("{} (from {}): {} layers, hidden {}, {} params\n", model.name, model.file, model.layers,
                         model.hidden, model.params()));
  write_file(fs::path(dir) / "workload.txt",
             fmt::format("{}: {} requests, seed {}\n", workload.label, workload.requests, workload.seed));
}

void write_capacity_output(const std::string& dir, const std::vector<SystemCapacity>& results,
                           const std::vector<SystemSpec>& systems, const compiler::ModelSpec& model,
                           const runtime::WorkloadSpec& workload) {
  std::vector<runtime::SystemResult> at_max;
  std::vector<SystemSpec> with_rate;
  nlohmann::json searches = nlohmann::json::array();
  for (std::size_t i = 0; i < results.size(); ++i) {
    nlohmann::json j = results[i].capacity.to_json();
    j["system"] = results[i].system;
    searches.push_back(std::move(j));
    if (!results[i].capacity.at_max) continue;
    at_max.push_back(*results[i].capacity.at_max);
    with_rate.push_back(systems[i]);
  }
  write_simulation_output(dir, at_max, with_rate, model, workload);
  write_file(fs::path(dir) / "capacity.json", nlohmann::json{{"systems", searches}}.dump(2) + "\n");
}

}  // namespace duplex::host
