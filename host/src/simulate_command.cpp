// `duplex simulate`: serve a request stream on one or more systems and compare throughput, latency and
// energy. With no arguments it runs the embedded default: Mixtral-8x7B on 4 devices, gpu vs duplex-pe, a
// short closed-loop run.
#include <fmt/format.h>
#include <unistd.h>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "commands.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/sim/serving_simulator.hpp"
#include "duplex/runtime/workload/request_trace.hpp"
#include "duplex/runtime/workload/synthetic_workload.hpp"
#include "simulation_output.hpp"
#include "system_overrides.hpp"

namespace duplex::host {
namespace {

// A one-line progress bar on stderr (only when stderr is a terminal), redrawn at most ten times a second.
std::function<void(std::int64_t, std::int64_t)> progress_bar(const std::string& label) {
  auto last = std::make_shared<std::chrono::steady_clock::time_point>();
  return [label, last](std::int64_t done, std::int64_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (done < total && now - *last < std::chrono::milliseconds(100)) return;
    *last = now;
    constexpr int kWidth = 30;
    const double f = total > 0 ? static_cast<double>(done) / static_cast<double>(total) : 0.0;
    const int filled = static_cast<int>(f * kWidth);
    std::fprintf(stderr, "\r%s [%s%s] %lld/%lld requests", label.c_str(), std::string(static_cast<std::size_t>(filled), '#').c_str(),
                 std::string(static_cast<std::size_t>(kWidth - filled), '.').c_str(), static_cast<long long>(done),
                 static_cast<long long>(total));
  };
}

struct SimulateOptions {
  std::string model = "mixtral-8x7b";
  std::vector<std::string> systems = {"gpu", "duplex-pe"};
  std::vector<std::string> sets;   // --set KEY=VALUE overrides of every system
  std::string workload;            // preset or file; replaces the stream flags below
  std::int64_t requests = 512;
  std::int64_t input_len = 512;
  std::int64_t output_len = 512;
  double length_spread = 0.10;     // Gaussian stddev as a fraction of the mean (the paper gives none)
  std::int64_t batch = 128;        // max running requests
  std::string arrival = "closed";  // closed | poisson:RATE | trace:FILE
  std::int64_t concurrency = 0;    // closed-loop users; 0 = --batch
  std::int64_t shared_prefix = 0;  // tokens of shared system prompt before each prompt (0: none)
  std::int64_t prefix_groups = 1;  // distinct shared system prompts
  bool no_prefix_caching = false;
  double slo_ttft_ms = 0;  // latency objectives (0: none)
  double slo_tpot_ms = 0;
  bool max_rate = false;            // capacity search instead of one run per system
  double attainment = 0.9;          // its target share of requests within the objectives
  double rate_precision = 0.02;     // its bracket's relative width
  double rate_duration_s = 0;       // > 0: each probe serves the requests arriving in this many seconds
  std::int64_t turns = 1;           // > 1: multi-turn conversations
  double think_time_s = 0;          // between a turn's answer and the next turn
  std::string routing = "uniform";  // uniform | zipf:S | trace:FILE
  std::uint64_t seed = 1;
  std::string policy = "continuous";
  std::int64_t max_tokens_per_step = 0;
  bool chunked_prefill = false;
  std::int64_t kv_block_tokens = 16;
  double memory_reserve = 0.10;
  std::string pim_model = "cycle";
  std::string xpu_profile;
  int speculative = 0;     // draft tokens per step (0: off)
  // Per-draft acceptance probabilities, "P" or "P0,P1,..." by draft position; required with --speculative.
  std::string acceptance;
  std::string draft;       // ngram | mtp | a model preset or file; required with --speculative
  int tree_tokens = 0;     // draft tokens verified per request in a tree (0: a chain of --speculative)
  int draft_topk = 1;      // nodes a draft tree expands per depth
  int devices = 0;
  int replicas = 1;  // copies of each system behind a request router
  std::string router = "round-robin";
  std::string out_dir;
  std::int64_t timeline_steps = 64;
  bool json = false;
};

runtime::WorkloadSpec workload_from_flags(const SimulateOptions& o) {
  if (o.arrival.rfind("trace:", 0) == 0) {
    const std::string file = o.arrival.substr(6);
    runtime::WorkloadSpec w =
        runtime::trace_workload("command line", o.seed, file, runtime::read_request_trace(file), o.routing);
    if (o.turns > 1 || o.think_time_s > 0)
      throw Error(
          fmt::format("--turns / --think-time: conversations follow their own turns; expected closed or "
                      "poisson:RATE (conversations per second) --arrival beside them, not a trace ({})",
                      w.arrival.trace_file));
    if (o.shared_prefix > 0) {
      for (const runtime::RequestSpec& r : w.arrival.trace_rows)
        if (!r.content_hashes.empty())
          throw Error(
              fmt::format("--shared-prefix: the trace {} carries its own prompt hashes (hash_ids); "
                          "expected a trace without them, or no --shared-prefix",
                          w.arrival.trace_file));
      w.shared_prefix = runtime::SharedPrefix{o.shared_prefix, o.prefix_groups};
    }
    return w;
  }
  runtime::SyntheticStream s;
  s.label = "command line";
  s.seed = o.seed;
  s.requests = o.requests;
  s.input_len = o.input_len;
  s.output_len = o.output_len;
  s.length_spread = o.length_spread;
  s.concurrency = o.concurrency > 0 ? o.concurrency : o.batch * o.replicas;  // --batch is per replica
  s.routing = o.routing;
  s.prefix_tokens = o.shared_prefix;
  s.prefix_groups = o.prefix_groups;
  s.turns = o.turns;
  s.think_s = o.think_time_s;
  if (o.arrival.rfind("poisson:", 0) == 0) {
    char* end = nullptr;
    const std::string rate = o.arrival.substr(8);
    s.poisson_rate_per_s = std::strtod(rate.c_str(), &end);
    if (rate.empty() || *end != '\0' || !(s.poisson_rate_per_s > 0))
      throw Error(fmt::format("--arrival: \"{}\" has no positive rate; expected poisson:RATE (requests/s)", o.arrival));
  } else if (o.arrival != "closed") {
    throw Error(fmt::format("--arrival: unknown \"{}\"; expected closed, poisson:RATE or trace:FILE", o.arrival));
  }
  return runtime::synthetic_workload(s);
}

// --acceptance's value: one probability, or one per draft position, comma-separated.
std::vector<double> parse_acceptance(const std::string& text) {
  const std::string expected = fmt::format(
      "P or P0,P1,...: 1 to {} probabilities in [0, 1], comma-separated (by draft position, the last "
      "repeating)",
      runtime::kMaxSpeculativeTokens);
  std::vector<double> rates;
  for (std::size_t start = 0;;) {
    const std::size_t comma = text.find(',', start);
    const std::string item =
        text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    double v = -1;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (item.empty() || ec != std::errc() || end != item.data() + item.size() || !(v >= 0 && v <= 1))
      throw Error(
          fmt::format("--acceptance {}: \"{}\" is not a probability; expected {}", text, item, expected));
    rates.push_back(v);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (rates.size() > static_cast<std::size_t>(runtime::kMaxSpeculativeTokens))
    throw Error(fmt::format("--acceptance {}: {} probabilities; expected {}", text, rates.size(), expected));
  return rates;
}

runtime::SchedulerConfig scheduler_from_flags(const SimulateOptions& o) {
  runtime::SchedulerConfig s;
  s.policy = runtime::parse_batching_policy(o.policy);
  s.max_batch = o.batch;
  s.max_tokens_per_step = o.max_tokens_per_step;
  s.chunked_prefill = o.chunked_prefill;
  s.kv_block_tokens = o.kv_block_tokens;
  s.speculative_tokens = o.speculative;
  if (!o.acceptance.empty()) s.acceptance_rates = parse_acceptance(o.acceptance);
  s.tree_tokens = o.tree_tokens;
  s.draft_topk = o.draft_topk;
  s.prefix_caching = !o.no_prefix_caching;
  return s;
}

// --speculative needs --acceptance and --draft, which mean nothing without it.
void check_speculative_flags(const SimulateOptions& o) {
  if (o.speculative == 0) {
    if (!o.acceptance.empty() || !o.draft.empty() || o.tree_tokens != 0 || o.draft_topk != 1)
      throw Error(
          "--acceptance, --draft, --tree-tokens and --draft-topk describe speculative decoding; expected "
          "--speculative K (K >= 1) beside them");
    return;
  }
  if (o.acceptance.empty())
    throw Error(
        "--speculative needs --acceptance P: the probability that a draft token is accepted, in [0, 1], or "
        "P0,P1,... by draft position (it depends on the draft and the workload; no default)");
  if (o.draft.empty())
    throw Error(
        "--speculative needs --draft: ngram (drafts proposed on the host, no device time), mtp (the model's "
        "multi-token-prediction module) or a draft model preset or file");
  if (o.tree_tokens > 0 && o.tree_tokens < o.speculative)
    throw Error(fmt::format(
        "--tree-tokens {} is less than the draft's depth --speculative {}; expected --tree-tokens "
        ">= {} (a tree holds its longest path)",
        o.tree_tokens, o.speculative, o.speculative));
  if (o.draft_topk > 1 && o.tree_tokens == 0)
    throw Error(
        fmt::format("--draft-topk {} expands a draft tree; expected --tree-tokens T (the tree's nodes "
                    "verified per request) beside it",
                    o.draft_topk));
  const std::int64_t candidates = runtime::SchedulerConfig::tree_candidates(o.speculative, o.draft_topk);
  if (o.tree_tokens > candidates)
    throw Error(
        fmt::format("--tree-tokens {}: a tree of depth {} (--speculative) expanding {} nodes per depth "
                    "(--draft-topk) proposes at most {} candidates; expected --tree-tokens <= {} or a "
                    "larger --draft-topk",
                    o.tree_tokens, o.speculative, o.draft_topk, candidates, candidates));
}

void run_simulate(const SimulateOptions& o) {
  const compiler::ModelSpec model = compiler::load_model(o.model);
  if (!model.is_moe() && o.routing != "uniform")
    throw Error(fmt::format("--routing {}: model {} is dense; expert routing is for an MoE model", o.routing,
                            model.name));
  runtime::SimulationOptions sim;
  sim.workload = o.workload.empty() ? workload_from_flags(o) : runtime::load_workload(o.workload);
  sim.scheduler = scheduler_from_flags(o);
  sim.scheduler.acceptance_seed = sim.workload.seed;
  if (o.speculative > 0 && o.draft != "ngram")
    sim.draft_model = o.draft == "mtp" ? compiler::mtp_draft(model) : compiler::load_model(o.draft);
  sim.devices = o.devices;
  sim.memory_reserve = o.memory_reserve;
  sim.pim_model = o.pim_model;
  sim.xpu_profile = o.xpu_profile;
  sim.slo = runtime::LatencySlo{o.slo_ttft_ms, o.slo_tpot_ms};
  sim.cluster.replicas = o.replicas;
  sim.cluster.router = runtime::parse_router_policy(o.router);
  sim.record_steps = !o.out_dir.empty();
  sim.timeline_steps = o.out_dir.empty() ? 0 : o.timeline_steps;
  std::vector<SystemSpec> systems;
  const std::vector<ConfigOverride> overrides = parse_sets(o.sets);
  for (const auto& name : o.systems) systems.push_back(load_system(name, overrides));  // all checked up front
  const bool progress = isatty(fileno(stderr)) != 0;
  if (o.max_rate) {
    runtime::CapacitySearchSpec search;
    search.attainment = o.attainment;
    search.precision = o.rate_precision;
    search.duration_s = o.rate_duration_s;
    std::vector<SystemCapacity> found;
    for (const auto& system : systems) {
      // One progress bar per simulation of the search (a new one when the finished count starts over).
      struct Bar {
        std::function<void(std::int64_t, std::int64_t)> draw;
        std::int64_t done = 0, total = 0;
        int runs = 0;
      };
      if (progress)
        sim.progress = [&, bar = std::make_shared<Bar>()](std::int64_t done, std::int64_t total) {
          if (!bar->draw || done < bar->done || total != bar->total) {
            if (bar->draw) std::fputs("\n", stderr);
            bar->draw = progress_bar(fmt::format("{} on {} run {}", model.name, system.name, ++bar->runs));
          }
          bar->done = done;
          bar->total = total;
          bar->draw(done, total);
        };
      runtime::CapacityResult c = runtime::find_capacity(model, system, sim, search);
      if (progress) std::fputs("\n", stderr);
      const int devices = c.at_max
                              ? c.at_max->devices
                              : (o.devices > 0 ? o.devices : system.devices_for(model.name)) * o.replicas;
      found.push_back({system.name, devices, std::move(c)});
    }
    if (!o.out_dir.empty()) write_capacity_output(o.out_dir, found, systems, model, sim.workload);
    if (o.json) {
      nlohmann::json a = nlohmann::json::array();
      for (const SystemCapacity& c : found) {
        nlohmann::json j = c.capacity.to_json();
        j["system"] = c.system;
        j["devices"] = c.devices;
        a.push_back(std::move(j));
      }
      std::puts((found.size() == 1 ? a.front() : nlohmann::json{{"systems", a}}).dump(2).c_str());
      return;
    }
    std::fputs(capacity_table(found, sim.workload, sim.slo).c_str(), stdout);
    return;
  }
  std::vector<runtime::SystemResult> results;
  for (const auto& system : systems) {
    if (progress) sim.progress = progress_bar(model.name + " on " + system.name);
    results.push_back(runtime::simulate(model, system, sim));
    if (progress) std::fputs("\n", stderr);
  }
  if (!o.out_dir.empty()) write_simulation_output(o.out_dir, results, systems, model, sim.workload);
  if (o.json) {
    std::puts((results.size() == 1 ? results.front().to_json()
                                   : nlohmann::json{{"systems", [&] {
                                                       nlohmann::json a = nlohmann::json::array();
                                                       for (const auto& r : results) a.push_back(r.to_json());
                                                       return a;
                                                     }()}})
                  .dump(2)
                  .c_str());
    return;
  }
  std::fputs(comparison_table(results).c_str(), stdout);
  if (const std::string window = model.window_note(); !window.empty())
    std::printf("attention %s: %s\n", model.name.c_str(), window.c_str());
}

}  // namespace

void add_simulate_command(CLI::App& app) {
  auto o = std::make_shared<SimulateOptions>();
  CLI::App* c = app.add_subcommand("simulate", "Serve a request stream on systems; compare throughput, latency, energy");
  c->add_option("--model", o->model, "Model preset or file (YAML or HF config.json)")->capture_default_str();
  c->add_option("--system", o->systems, "System preset or file; repeat to compare")->capture_default_str();
  add_set_option(c, o->sets);
  c->add_option("--workload", o->workload, "Workload preset (configs/workloads) or file; replaces the stream flags");
  c->add_option("--requests", o->requests, "Requests to serve")->capture_default_str();
  c->add_option("--input-len", o->input_len, "Mean prompt tokens")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--output-len", o->output_len, "Mean generated tokens")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--length-spread", o->length_spread, "Gaussian stddev / mean of the lengths (0: fixed)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0))
      ->check(kFinite);
  c->add_option("--batch", o->batch, "Max running requests (max batch)")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--arrival", o->arrival,
                "closed | poisson:RATE | trace:FILE (CSV arrival_s,input_tokens,output_tokens or Azure "
                "TIMESTAMP,ContextTokens,GeneratedTokens; or a Mooncake JSONL trace with hash_ids)")
      ->capture_default_str();
  c->add_option("--concurrency", o->concurrency, "Closed-loop users (default: --batch per replica)")
      ->check(CLI::PositiveNumber);
  c->add_option("--shared-prefix", o->shared_prefix,
                "Tokens of shared system prompt each prompt begins with, before its --input-len tokens (0: "
                "none); its K/V is reused by prefix caching")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 30));
  c->add_option("--prefix-groups", o->prefix_groups,
                "Distinct shared system prompts, one picked uniformly per request (with --shared-prefix)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option(
       "--turns", o->turns,
       "Multi-turn conversations: turns per conversation, each prompt the conversation so far plus a "
       "--input-len message (closed loop: --concurrency users; poisson:RATE: conversations started per "
       "second; 1: independent requests)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--think-time", o->think_time_s,
                "Seconds between a turn's answer and the conversation's next turn")
      ->capture_default_str()
      ->check(kFinite);
  c->add_flag("--no-prefix-caching", o->no_prefix_caching,
              "Compute every prompt in full, though requests share prefixes (--shared-prefix, a Mooncake "
              "trace's hash_ids)");
  c->add_option(
       "--routing", o->routing,
       "Expert routing: uniform | zipf:S | trace:FILE (step,layer,expert,count, e.g. from duplex run "
       "--routing-trace)")
      ->capture_default_str();
  c->add_option("--seed", o->seed, "Seed for lengths, arrivals and routing")
      ->capture_default_str()
      ->check(kUint64);
  c->add_option("--policy", o->policy, "continuous | orca | static")->capture_default_str();
  c->add_option("--max-tokens-per-step", o->max_tokens_per_step, "Token budget per step (0: none)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  c->add_flag("--chunked-prefill", o->chunked_prefill, "Split prefills to fill the token budget (Sarathi-Serve)");
  c->add_option("--kv-block", o->kv_block_tokens, "Tokens per KV block")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--memory-reserve", o->memory_reserve, "Fraction of HBM kept from the KV cache")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.99))
      ->check(kFinite);
  c->add_option("--pim-model", o->pim_model, "Logic-PIM op timing: cycle (SystemC timing engine, memoized) | analytical")
      ->capture_default_str()->check(CLI::IsMember({"cycle", "analytical"}));
  c->add_option("--xpu-profile", o->xpu_profile,
                 "Measured xPU op times (CSV kind,m,n,k,time_us) replacing the xPU roofline where they apply");
  c->add_option(
       "--speculative", o->speculative,
       fmt::format("Speculative decoding: draft tokens each decoding request verifies per step (0: off, "
                   "at most {})",
                   runtime::kMaxSpeculativeTokens))
      ->capture_default_str()
      ->check(CLI::Range(0, runtime::kMaxSpeculativeTokens));
  c->add_option(
      "--acceptance", o->acceptance,
      "Probability that a draft token is accepted, given the drafts before it were (up to the first "
      "rejection): P, or P0,P1,... by draft position (the last repeating)");
  c->add_option(
      "--draft", o->draft,
      "Who proposes the drafts: ngram (on the host, no device time), mtp (the model's multi-token-prediction "
      "module, DeepSeek-V3's) or a draft model preset or file, run on the same devices");
  c->add_option(
       "--tree-tokens", o->tree_tokens,
       fmt::format("Tree verification: draft tokens each decoding request verifies per step, a tree of "
                   "depth --speculative (0: a chain; at most {}); --acceptance is then per depth",
                   runtime::kMaxTreeTokens))
      ->capture_default_str()
      ->check(CLI::Range(0, runtime::kMaxTreeTokens));
  c->add_option("--draft-topk", o->draft_topk, "Nodes a draft tree expands per depth (EAGLE-2's top-k)")
      ->capture_default_str()
      ->check(CLI::Range(1, runtime::kMaxDraftTopk));
  c->add_option("--slo-ttft", o->slo_ttft_ms,
                "Latency objective: time to first token, ms (0: none); reports the requests meeting the "
                "objectives and the goodput")
      ->capture_default_str()
      ->check(kFinite);
  c->add_option("--slo-tpot", o->slo_tpot_ms,
                "Latency objective: time per output token after the first, ms (0: none)")
      ->capture_default_str()
      ->check(kFinite);
  c->add_flag(
      "--max-rate", o->max_rate,
      "Capacity search: the highest arrival rate at which --attainment of the requests meet the "
      "objectives (--slo-ttft / --slo-tpot), per system: Poisson arrivals from --arrival's rate or the "
      "closed loop's throughput, or a trace's arrivals scaled in time from its own rate");
  c->add_option("--attainment", o->attainment,
                "With --max-rate: the share of requests that must meet the objectives (DistServe's 90%)")
      ->capture_default_str()
      ->check(kFinite);
  c->add_option("--rate-precision", o->rate_precision,
                "With --max-rate: stop when the rate that falls short is within this fraction above the one "
                "that meets")
      ->capture_default_str()
      ->check(kFinite);
  c->add_option("--rate-duration", o->rate_duration_s,
                "With --max-rate: each probe serves the requests arriving in this many seconds at its rate "
                "(rate x S, instead of --requests at every rate)")
      ->capture_default_str()
      ->check(kFinite);
  c->add_option("--devices", o->devices, "Devices (default: the system's count for the model)")->check(CLI::PositiveNumber);
  c->add_option(
       "--replicas", o->replicas,
       "Copies of each system, each of --devices devices with its own scheduler and KV cache, behind "
       "a request router (a split system: copies of its prefill and decode instances, the router picking "
       "each prompt's prefill instance)")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  c->add_option(
       "--router", o->router,
       "Which replica serves a request, decided at its arrival: round-robin | least-loaded (fewest "
       "outstanding requests) | cache-aware (the longest prefix held, in device memory or after it in "
       "the host and disk tiers, unless the load is imbalanced: SGLang's policy over LMCache's view) | "
       "prefix-hash (by the prompt's first block: a conversation or a system prompt sticks to one "
       "replica) | cache-aware-device (cache-aware seeing only the device caches)")
      ->capture_default_str();
  c->add_option("-o,--out", o->out_dir, "Write steps.csv, requests.csv, timeline.json (Perfetto), summary.json and "
                                        "the resolved configs to this directory");
  c->add_option("--timeline-steps", o->timeline_steps, "Steps in the lane timeline (with -o)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  c->add_flag("--json", o->json, "Print JSON (one object, or {systems: [...]} for several)");
  c->callback([o, c] {
    if (!o->workload.empty())
      for (const char* flag :
           {"--requests", "--input-len", "--output-len", "--length-spread", "--arrival", "--concurrency",
            "--routing", "--seed", "--shared-prefix", "--prefix-groups", "--turns", "--think-time"})
        if (c->count(flag) > 0)
          throw Error(fmt::format("{} cannot be combined with --workload: the workload file defines the request "
                                  "stream (edit a copy of it instead)", flag));
    check_speculative_flags(*o);
    for (const auto& [flag, value, unit] : {std::tuple{"--slo-ttft", o->slo_ttft_ms, "milliseconds"},
                                            std::tuple{"--slo-tpot", o->slo_tpot_ms, "milliseconds"},
                                            std::tuple{"--think-time", o->think_time_s, "seconds"}})
      if (!(value >= 0 && value <= 1e9))
        throw Error(fmt::format("{} {}: expected {} in [0, 1e9]", flag, value, unit));
    if (!o->max_rate)
      for (const char* flag : {"--attainment", "--rate-precision", "--rate-duration"})
        if (c->count(flag) > 0)
          throw Error(fmt::format("{} describes a capacity search; expected --max-rate beside it", flag));
    if (!(o->attainment > 0 && o->attainment <= 1))
      throw Error(fmt::format("--attainment {}: expected a share of the requests in (0, 1]", o->attainment));
    if (!(o->rate_precision > 0 && o->rate_precision <= 1))
      throw Error(fmt::format("--rate-precision {}: expected a fraction in (0, 1]", o->rate_precision));
    if (!(o->rate_duration_s >= 0 && o->rate_duration_s <= 1e7))
      throw Error(
          fmt::format("--rate-duration {}: expected seconds in [0, 1e7] (0: --requests at every rate)",
                      o->rate_duration_s));
    if (o->max_rate && o->slo_ttft_ms == 0 && o->slo_tpot_ms == 0)
      throw Error(
          "--max-rate searches the highest rate meeting latency objectives; expected --slo-ttft MS and / or "
          "--slo-tpot MS beside it");
    if (c->count("--prefix-groups") > 0 && o->shared_prefix == 0)
      throw Error(
          fmt::format("--prefix-groups {} picks among shared system prompts; expected --shared-prefix N "
                      "(N >= 1 tokens) beside it",
                      o->prefix_groups));
    try {
      runtime::parse_router_policy(o->router);
    } catch (const Error& e) {
      throw Error(fmt::format("--router: {}", e.what()));
    }
    if (c->count("--router") > 0 && o->replicas == 1)
      throw Error(fmt::format(
          "--router {} routes requests over replicas; expected --replicas N (N >= 2) beside it", o->router));
    run_simulate(*o);
  });
}

}  // namespace duplex::host
