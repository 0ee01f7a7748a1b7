#pragma once
// A reproduction study (bench/repro/*.yaml, schema in bench/repro/README.md): the cross product
// models x systems x design knobs x (L_in, L_out) x batch x load, with the options every point shares. Read strictly: an
// unknown key or a bad value is a ConfigError naming the file and the key.
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "duplex/base/config.hpp"
#include "duplex/runtime/scheduler/request.hpp"

namespace duplex::host {

// A design knob: one key of the system config (a ConfigOverride path such as pim.clock) and the values it
// takes, for the listed systems (every system of the study when none are listed; the others run once,
// without it).
struct SweepKnob {
  std::string key;
  std::vector<std::string> values;   // YAML scalars as written, e.g. "800MHz"
  std::vector<std::string> systems;  // empty: all
  bool applies_to(const std::string& system) const;
};

// A speculative-decoding variant: `tokens` draft tokens per step (0: off), draft i accepted with probability
// `acceptance[i]` (beyond the list: its last; SchedulerConfig::acceptance_rates), proposed by `draft`
// ("ngram": on the host; "mtp": the model's multi-token-prediction module; else a model preset or file);
// `tree_tokens` > 0: a draft tree of depth `tokens` with that many nodes, `draft_topk` expanded per depth
// (SchedulerConfig::tree_tokens).
struct SpeculativeSetting {
  int tokens = 0;
  std::vector<double> acceptance;
  std::string draft;
  int tree_tokens = 0;
  int draft_topk = 1;
  // "speculative=3, acceptance=0.8, draft=ngram" ("acceptance=0.9/0.8/0.7" by position; ", tree_tokens=16,
  // draft_topk=4" for a tree); "" when off.
  std::string text() const;
  // The acceptance as params' JSON: a number, or a list by position.
  nlohmann::json acceptance_json() const;
  bool operator==(const SpeculativeSetting&) const = default;
};

// A shared-prompt variant: every prompt begins with one of `groups` system prompts of `tokens` tokens (0:
// none; runtime::SharedPrefix), and with `turns` > 1 requests are the turns of multi-turn conversations
// (runtime::Conversations, `think_s` between an answer and the next turn; a poisson load starts that many
// conversations per second); served with
// prefix caching on or off (`caching`).
struct PrefixSetting {
  std::int64_t tokens = 0;
  std::int64_t groups = 1;
  bool caching = true;
  std::int64_t turns = 1;
  double think_s = 0;
  bool none() const { return tokens == 0 && turns == 1; }
  // "prefix=2048x4", "turns=8, think=5s", joined, + ", no caching"; "" for none.
  std::string text() const;
  // Its part of a point's id: "__prefix2048x4", "__turns8-think5", joined, + "-nocache"; "" for none.
  std::string id() const;
  nlohmann::json to_json() const;  // {tokens, groups, caching} (+ turns, think_s for conversations)
  bool operator==(const PrefixSetting&) const = default;
};

// A cluster variant: `replicas` copies of each system behind a request `router` (runtime::ClusterSpec);
// one replica is the plain system. A point's batch is each replica's, and a closed loop has batch x replicas
// users.
struct ClusterSetting {
  int replicas = 1;
  std::string router = "round-robin";  // round-robin | least-loaded | cache-aware | prefix-hash |
                                       // cache-aware-device
  // "replicas=4, router=cache-aware"; "" for one replica.
  std::string text() const;
  // Its part of a point's id: "__x4-cache-aware"; "" for one replica.
  std::string id() const;
  nlohmann::json to_json() const;  // {replicas, router}
  bool operator==(const ClusterSetting&) const = default;
};

// One arrival variant: "closed" (closed loop, as many users as the max batch), "poisson:RATE" (req/s) or
// "trace:FILE" (a request trace replayed: its arrivals, lengths and prompt hashes, the first `requests` of
// them; its points take no `lengths`).
struct SweepLoad {
  std::string text;
  bool poisson = false;
  double rate_per_s = 0;
  std::string trace_file;  // trace:FILE (a path as given: relative to the working directory)
  // Read when the study loads (parse_study): the requests replayed, FNV-1a (64-bit, hex) of the file's bytes
  // (a resumed sweep reruns the points when the file changed), and their mean prompt / answer tokens
  // (rounded), which stand for the point's lengths.
  std::shared_ptr<const std::vector<runtime::RequestSpec>> trace_rows;
  std::string trace_digest;
  std::int64_t mean_input = 0, mean_output = 0;
  bool trace() const { return !trace_file.empty(); }
};

// Options shared by every point of a study.
struct StudyOptions {
  std::int64_t requests = 0;            // requests served per point
  std::uint64_t seed = 1;
  double length_spread = 0.10;          // Gaussian stddev / mean of L_in and L_out (the paper gives none)
  std::string routing = "uniform";      // uniform | zipf:S | trace:FILE
  // trace:FILE: FNV-1a (64-bit, hex) of the trace file's bytes, so a resumed sweep reruns its points when the
  // file changed; "" otherwise.
  std::string routing_trace_digest;
  std::string policy = "continuous";    // continuous | orca | static
  std::int64_t max_tokens_per_step = 0; // 0: no token budget
  bool chunked_prefill = false;
  std::int64_t kv_block_tokens = 16;
  double memory_reserve = 0.10;
  std::string pim_model = "cycle";      // cycle | analytical (runtime::SimulationOptions::pim_model)
  std::int64_t timeline_steps = 4;      // steps of device 0's lane timeline kept per point
  std::int64_t step_samples = 200;      // per-step rows kept per point (evenly spaced)
  double slo_ttft_ms = 0, slo_tpot_ms = 0;  // latency objectives (runtime::LatencySlo; 0: none)
  // A capacity search per point (study key `capacity`, needs `slo`): the point's load is the first rate
  // probed (closed: the closed loop's throughput) and its result is the run at the max rate found.
  bool capacity = false;
  double capacity_attainment = 0.9, capacity_precision = 0.02,
         capacity_duration_s = 0;  // CapacitySearchSpec's
  nlohmann::json to_json() const;
};

struct SweepPoint {
  std::string id;  // file-name-safe canonical name of the varying parameters
  std::string model, system;
  std::vector<std::pair<std::string, std::string>> knobs;  // (key, value) set on the system, in study order
  std::string knob_origin;                                 // names the study's knobs in config errors
  SpeculativeSetting speculative;                          // off unless the study has a speculative axis
  bool speculative_axis = false;                           // the study lists speculative settings
  PrefixSetting prefix;                                    // none unless the study has a prefix axis
  bool prefix_axis = false;
  ClusterSetting cluster;  // one replica unless the study has a cluster axis
  bool cluster_axis = false;
  std::vector<ConfigOverride> overrides() const;
  std::int64_t input_len = 0, output_len = 0, batch = 0;
  SweepLoad load;
  // Everything that determines the point's result (the varying parameters and the shared options); a
  // resumed sweep reuses a stored point only when its params are equal to these.
  nlohmann::json params(const StudyOptions& options) const;
};

struct Study {
  std::string file;
  std::string name;
  std::string description;
  std::vector<std::string> models, systems;
  std::vector<std::pair<std::int64_t, std::int64_t>> lengths;  // (L_in, L_out)
  std::vector<std::int64_t> batches;
  std::vector<SweepLoad> loads;
  std::vector<SweepKnob> knobs;
  std::vector<SpeculativeSetting> speculative;  // empty: no speculative axis (every point without drafts)
  std::vector<PrefixSetting> prefix;            // empty: no prefix axis (no shared prompts)
  std::vector<ClusterSetting> cluster;          // empty: no cluster axis (one replica)
  StudyOptions options;
  // The points in a fixed order: models, then systems, knob values (the first knob slowest), speculative
  // settings, prefix settings, cluster settings, lengths, batches, loads (the last varies fastest).
  std::vector<SweepPoint> points() const;
  // The knob settings a system runs with: the cross product of the values of the knobs that apply to it
  // (the first knob varies slowest); one empty setting when none applies.
  std::vector<std::vector<std::pair<std::string, std::string>>> knob_settings_of(const std::string& system) const;
};

Study load_study(const std::string& path);
Study parse_study(const std::string& yaml_text, const std::string& label);

// The overrides of one knob setting ([key, value] pairs), each naming `origin` in errors.
std::vector<ConfigOverride> knob_overrides(const std::vector<std::pair<std::string, std::string>>& setting,
                                           const std::string& origin);

// A point's system as reports show it: the system, then its knob settings in brackets when it has any,
// e.g. "duplex-pe [pim.clock=800MHz, memory.data_rate=6.4Gbps]". `knobs` is params' "knobs" (absent: none).
std::string system_label(const std::string& system, const nlohmann::json* knobs);
// "pim.clock=800MHz;memory.data_rate=6.4Gbps" (for CSV cells); "" without knobs.
std::string knob_settings(const nlohmann::json* knobs);
// params' "speculative" ({tokens, acceptance, draft}; absent or tokens 0: "") as SpeculativeSetting::text().
std::string speculative_text(const nlohmann::json* speculative);
// params' "prefix" ({tokens, groups, caching}; absent or tokens 0: "") as PrefixSetting::text().
std::string prefix_text(const nlohmann::json* prefix);
// params' "cluster" ({replicas, router}; absent or one replica: "") as ClusterSetting::text().
std::string cluster_text(const nlohmann::json* cluster);

// "closed", "poisson:RATE" or "trace:FILE" (the file not read); duplex::Error naming `where` otherwise.
SweepLoad parse_load(const std::string& text, const std::string& where);

}  // namespace duplex::host
