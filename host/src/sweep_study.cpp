#include "sweep_study.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <set>

#include "duplex/base/config.hpp"
#include "duplex/base/config_store.hpp"
#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/model_spec.hpp"
#include "duplex/runtime/scheduler/scheduler_config.hpp"
#include "duplex/runtime/workload/request_trace.hpp"
#include "duplex/runtime/workload/synthetic_workload.hpp"
#include "sweep_files.hpp"

namespace duplex::host {
namespace {

// Characters outside [A-Za-z0-9._-] become '-', so a model or system given as a path still names a file.
std::string file_safe(const std::string& s) {
  std::string out;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    out += ok ? c : '-';
  }
  return out;
}

std::int64_t element_int(const ConfigNode& n, std::int64_t min) {
  const std::string text = n.scalar();
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0)
    throw ConfigError(n.file(), n.path(), fmt::format("\"{}\" is not an integer", text), "an integer");
  if (v < min) throw ConfigError(n.file(), n.path(), fmt::format("{} is out of range", v), fmt::format("an integer >= {}", min));
  return v;
}

std::vector<ConfigNode> non_empty_list(const ConfigNode& root, std::string_view key) {
  std::vector<ConfigNode> items = root.items(key);
  if (items.empty()) root.fail(key, "is an empty list", "at least one entry");
  return items;
}

std::vector<std::string> names(const ConfigNode& root, std::string_view key) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const auto& n : non_empty_list(root, key)) {
    out.push_back(n.scalar());
    if (!seen.insert(out.back()).second)
      throw ConfigError(n.file(), n.path(), fmt::format("\"{}\" is listed twice", out.back()), "each entry once");
  }
  return out;
}

void read_scheduler(const ConfigNode& n, StudyOptions& o) {
  o.policy = n.get_or<std::string>("policy", o.policy);
  if (o.policy != "continuous" && o.policy != "orca" && o.policy != "static")
    n.fail("policy", fmt::format("\"{}\" is not a valid choice", o.policy), "one of: continuous, orca, static");
  if (n.has("max_tokens_per_step")) o.max_tokens_per_step = n.get_int("max_tokens_per_step", 0, 1 << 24);
  o.chunked_prefill = n.get_or<bool>("chunked_prefill", o.chunked_prefill);
  if (n.has("kv_block_tokens")) o.kv_block_tokens = n.get_int("kv_block_tokens", 1, 1 << 16);
  n.finish();
}

void read_record(const ConfigNode& n, StudyOptions& o) {
  if (n.has("timeline_steps")) o.timeline_steps = n.get_int("timeline_steps", 0, 64);
  if (n.has("step_samples")) o.step_samples = n.get_int("step_samples", 2, 100000);
  n.finish();
}

// knobs: [{key: pim.clock, values: [500MHz, 800MHz], systems: [duplex-pe]}, ...]
void read_knobs(const ConfigNode& root, Study& s) {
  std::set<std::string> keys;
  for (const auto& n : non_empty_list(root, "knobs")) {
    SweepKnob k;
    k.key = n.get<std::string>("key");
    if (!keys.insert(k.key).second) n.fail("key", fmt::format("\"{}\" is a knob twice", k.key), "each key once");
    k.values = names(n, "values");
    if (n.has("systems")) {
      k.systems = names(n, "systems");
      for (const auto& sys : k.systems)
        if (std::find(s.systems.begin(), s.systems.end(), sys) == s.systems.end())
          n.fail("systems", fmt::format("\"{}\" is not one of the study's systems", sys),
                 fmt::format("a subset of: {}", fmt::join(s.systems, ", ")));
    }
    n.finish();
    s.knobs.push_back(std::move(k));
  }
}

// A speculative setting's acceptance: a probability, or a list of them by draft position (1 to
// kMaxSpeculativeTokens).
std::vector<double> read_acceptance(const ConfigNode& n) {
  const char* kProbability = "a probability in [0, 1]";
  auto probability = [&](const ConfigNode& e) {
    const std::string text = e.scalar();
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0')
      throw ConfigError(e.file(), e.path(), fmt::format("\"{}\" is not a number", text), kProbability);
    if (!(v >= 0 && v <= 1))
      throw ConfigError(e.file(), e.path(), fmt::format("{} is out of range", v), kProbability);
    return v;
  };
  if (!n.has("acceptance") || !n.at("acceptance").is_sequence()) {
    const double v = n.get<double>("acceptance");
    if (!(v >= 0 && v <= 1)) n.fail("acceptance", fmt::format("{} is out of range", v), kProbability);
    return {v};
  }
  std::vector<double> rates;
  for (const ConfigNode& e : n.items("acceptance")) rates.push_back(probability(e));
  if (rates.empty() || rates.size() > static_cast<std::size_t>(runtime::kMaxSpeculativeTokens))
    n.fail("acceptance", fmt::format("lists {} probabilities", rates.size()),
           fmt::format("1 to {} (by draft position, the last repeating)", runtime::kMaxSpeculativeTokens));
  return rates;
}

// speculative: [{tokens: 0}, {tokens: 3, acceptance: 0.8, draft: ngram}, ...]. A draft model is loaded now
// and must share each model's vocabulary.
void read_speculative(const ConfigNode& root, Study& s) {
  std::vector<compiler::ModelSpec> models;  // the study's, loaded once when a setting names a draft
  auto targets = [&]() -> const std::vector<compiler::ModelSpec>& {
    if (models.empty())
      for (const auto& model : s.models) models.push_back(compiler::load_model(model));
    return models;
  };
  for (const auto& n : non_empty_list(root, "speculative")) {
    SpeculativeSetting x;
    x.tokens = static_cast<int>(n.get_int("tokens", 0, runtime::kMaxSpeculativeTokens));
    if (x.tokens == 0) {
      n.finish();
    } else {
      x.acceptance = read_acceptance(n);
      x.draft = n.get<std::string>("draft");
      if (n.has("tree_tokens"))
        x.tree_tokens = static_cast<int>(n.get_int("tree_tokens", 0, runtime::kMaxTreeTokens));
      if (n.has("draft_topk"))
        x.draft_topk = static_cast<int>(n.get_int("draft_topk", 1, runtime::kMaxDraftTopk));
      n.finish();
      runtime::SchedulerConfig tree;  // the tree's shape, checked as the scheduler will
      tree.kv_capacity_blocks = 1;
      tree.speculative_tokens = x.tokens;
      tree.acceptance_rates = x.acceptance;
      tree.tree_tokens = x.tree_tokens;
      tree.draft_topk = x.draft_topk;
      try {
        tree.validate();
      } catch (const Error& e) {
        // get_int bounds draft_topk, so its one error left is a branching without a tree.
        const bool topk = x.draft_topk > 1 && x.tree_tokens == 0;
        n.fail(topk ? "draft_topk" : "tree_tokens", e.what(),
               "a draft tree of depth `tokens` with tokens <= tree_tokens <= draft_topk + (tokens - 1) x "
               "draft_topk^2 nodes, or tree_tokens 0 (a chain) with draft_topk 1");
      }
      if (x.draft == "mtp") {
        for (const auto& model : targets()) {
          try {
            (void)compiler::mtp_draft(model);
          } catch (const ConfigError&) {
            throw;
          } catch (const Error& e) {
            n.fail("draft", e.what(), "mtp only for models with a multi-token-prediction module");
          }
        }
      } else if (x.draft != "ngram") {
        compiler::ModelSpec draft;
        try {
          draft = compiler::load_model(x.draft);
        } catch (const ConfigError&) {
          throw;
        } catch (const Error& e) {
          n.fail("draft", e.what(), "ngram or a draft model preset or file");
        }
        for (std::size_t i = 0; i < targets().size(); ++i)
          if (targets()[i].vocab != draft.vocab)
            n.fail("draft",
                   fmt::format("{} has a vocabulary of {} tokens, model {} of {}", x.draft, draft.vocab,
                               s.models[i], targets()[i].vocab),
                   "a draft model sharing every model's vocabulary");
      }
    }
    if (std::find(s.speculative.begin(), s.speculative.end(), x) != s.speculative.end())
      throw ConfigError(n.file(), n.path(), "is listed twice", "each setting once");
    s.speculative.push_back(std::move(x));
  }
}

// prefix: [{tokens: 0}, {tokens: 2048, groups: 4}, {tokens: 2048, groups: 4, caching: false},
//          {tokens: 0, turns: 8, think_s: 5}, ...]
void read_prefix(const ConfigNode& root, Study& s) {
  for (const auto& n : non_empty_list(root, "prefix")) {
    PrefixSetting x;
    x.tokens = n.get_int("tokens", 0, 100'000'000);
    if (n.has("groups")) x.groups = n.get_int("groups", 1, 1'000'000'000);
    x.caching = n.get_or<bool>("caching", true);
    if (n.has("turns")) x.turns = n.get_int("turns", 1, 1'000'000);
    if (n.has("think_s")) {
      x.think_s = n.get<double>("think_s");
      if (!(x.think_s >= 0 && x.think_s <= 1e6)) n.fail("think_s", "out of range", "seconds in [0, 1e6]");
    }
    n.finish();
    if (x.tokens == 0 && (x.groups != 1 || (x.turns == 1 && !x.caching)))
      n.fail("tokens", "0 (no shared prompt) with groups, or with caching set and no conversation",
             "tokens >= 1 beside groups, or turns > 1 beside caching");
    if (x.turns == 1 && x.think_s > 0)
      n.fail("think_s", "a think time without conversations", "turns > 1 beside it");
    if (std::find(s.prefix.begin(), s.prefix.end(), x) != s.prefix.end())
      throw ConfigError(n.file(), n.path(), "is listed twice", "each setting once");
    s.prefix.push_back(x);
  }
}

// cluster: [{replicas: 1}, {replicas: 4, router: round-robin}, {replicas: 4, router: cache-aware}, ...]
void read_cluster(const ConfigNode& root, Study& s) {
  for (const auto& n : non_empty_list(root, "cluster")) {
    ClusterSetting x;
    x.replicas = static_cast<int>(n.get_int("replicas", 1, 4096));
    if (n.has("router"))
      x.router = n.get_enum(
          "router", {"round-robin", "least-loaded", "cache-aware", "prefix-hash", "cache-aware-device"});
    n.finish();
    if (x.replicas == 1 && n.has("router"))
      n.fail("router", "a router for one replica", "replicas >= 2 beside it");
    if (std::find(s.cluster.begin(), s.cluster.end(), x) != s.cluster.end())
      throw ConfigError(n.file(), n.path(), "is listed twice", "each setting once");
    s.cluster.push_back(x);
  }
}

}  // namespace

std::string ClusterSetting::text() const {
  return replicas == 1 ? "" : fmt::format("replicas={}, router={}", replicas, router);
}

std::string ClusterSetting::id() const {
  return replicas == 1 ? "" : fmt::format("__x{}-{}", replicas, router);
}

nlohmann::json ClusterSetting::to_json() const {
  return {{"replicas", replicas}, {"router", router}};
}

std::string PrefixSetting::text() const {
  if (none()) return "";
  std::string s = tokens > 0 ? fmt::format("prefix={}x{}", tokens, groups) : "";
  if (turns > 1) s += fmt::format("{}turns={}, think={}s", s.empty() ? "" : ", ", turns, think_s);
  return s + (caching ? "" : ", no caching");
}

std::string PrefixSetting::id() const {
  if (none()) return "";
  std::string id = tokens > 0 ? fmt::format("__prefix{}x{}", tokens, groups) : "";
  if (turns > 1) id += fmt::format("__turns{}-think{}", turns, file_safe(fmt::format("{}", think_s)));
  return id + (caching ? "" : "-nocache");
}

nlohmann::json PrefixSetting::to_json() const {
  nlohmann::json j = {{"tokens", tokens}, {"groups", groups}, {"caching", caching}};
  if (turns > 1) {  // only then: system-prompt settings keep their params
    j["turns"] = turns;
    j["think_s"] = think_s;
  }
  return j;
}

std::string SpeculativeSetting::text() const {
  if (tokens == 0) return "";
  std::string s =
      fmt::format("speculative={}, acceptance={}, draft={}", tokens, fmt::join(acceptance, "/"), draft);
  if (tree_tokens > 0) s += fmt::format(", tree_tokens={}, draft_topk={}", tree_tokens, draft_topk);
  return s;
}

nlohmann::json SpeculativeSetting::acceptance_json() const {
  return acceptance.size() == 1 ? nlohmann::json(acceptance[0]) : nlohmann::json(acceptance);
}

std::string speculative_text(const nlohmann::json* speculative) {
  if (speculative == nullptr || speculative->at("tokens").get<int>() == 0) return "";
  const nlohmann::json& a = speculative->at("acceptance");
  return SpeculativeSetting{
      speculative->at("tokens").get<int>(),
      a.is_array() ? a.get<std::vector<double>>() : std::vector<double>{a.get<double>()},
      speculative->at("draft").get<std::string>(), speculative->value("tree_tokens", 0),
      speculative->value("draft_topk", 1)}
      .text();
}

std::string prefix_text(const nlohmann::json* prefix) {
  if (prefix == nullptr) return "";
  return PrefixSetting{prefix->at("tokens").get<std::int64_t>(), prefix->at("groups").get<std::int64_t>(),
                       prefix->at("caching").get<bool>(), prefix->value("turns", std::int64_t{1}),
                       prefix->value("think_s", 0.0)}
      .text();
}

std::string cluster_text(const nlohmann::json* cluster) {
  if (cluster == nullptr) return "";
  return ClusterSetting{cluster->at("replicas").get<int>(), cluster->at("router").get<std::string>()}.text();
}

namespace {
constexpr const char* kLoadsExpected =
    "closed, poisson:RATE (requests/s > 0) or trace:FILE (a request trace)";
}  // namespace

SweepLoad parse_load(const std::string& text, const std::string& where) {
  SweepLoad l;
  l.text = text;
  if (text == "closed") return l;
  if (text.starts_with("trace:") && text.size() > 6) {
    l.trace_file = text.substr(6);
    return l;
  }
  if (text.rfind("poisson:", 0) == 0) {
    const std::string rate = text.substr(8);
    char* end = nullptr;
    l.poisson = true;
    l.rate_per_s = std::strtod(rate.c_str(), &end);
    if (!rate.empty() && *end == '\0' && l.rate_per_s > 0) return l;
  }
  throw Error(fmt::format("{}: load \"{}\" is not valid; expected {}", where, text, kLoadsExpected));
}

namespace {
// FNV-1a, 64-bit, of `bytes`, as 16 hex digits.
std::string fnv1a_hex(const std::string& bytes) {
  std::uint64_t h = 14695981039346656037ULL;  // FNV-1a's 64-bit offset basis (Fowler, Noll, Vo)
  for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ULL;  // FNV's 64-bit prime
  return fmt::format("{:016x}", h);
}

// Reads trace load `l`'s requests (the first `requests` by arrival), digest and mean lengths; a ConfigError
// naming the study's entry `n` when the file cannot be read (a trace's parse error names its file and line).
void read_trace_load(const ConfigNode& n, std::int64_t requests, SweepLoad& l) {
  std::vector<runtime::RequestSpec> rows;
  try {
    rows = runtime::read_request_trace(l.trace_file, requests);
    l.trace_digest = fnv1a_hex(read_text_file(l.trace_file));
  } catch (const ConfigError&) {
    throw;
  } catch (const Error& e) {
    throw ConfigError(n.file(), n.path(), e.what(), "a readable request trace (CSV or Mooncake JSON lines)");
  }
  if (rows.empty()) throw ConfigError(n.file(), n.path(), "the trace has no requests", "at least one");
  double in = 0, out = 0;
  for (const runtime::RequestSpec& r : rows) {
    in += static_cast<double>(r.input_tokens);
    out += static_cast<double>(r.output_tokens);
  }
  l.mean_input = std::llround(in / static_cast<double>(rows.size()));
  l.mean_output = std::llround(out / static_cast<double>(rows.size()));
  l.trace_rows = std::make_shared<const std::vector<runtime::RequestSpec>>(std::move(rows));
}
}  // namespace

nlohmann::json StudyOptions::to_json() const {
  nlohmann::json j = {{"requests", requests},
                      {"seed", seed},
                      {"length_spread", length_spread},
                      {"routing", routing},
                      {"policy", policy},
                      {"max_tokens_per_step", max_tokens_per_step},
                      {"chunked_prefill", chunked_prefill},
                      {"kv_block_tokens", kv_block_tokens},
                      {"memory_reserve", memory_reserve},
                      {"pim_model", pim_model},
                      {"timeline_steps", timeline_steps},
                      {"step_samples", step_samples}};
  if (!routing_trace_digest.empty()) j["routing_trace_digest"] = routing_trace_digest;
  if (slo_ttft_ms > 0 || slo_tpot_ms > 0)  // only then: studies without objectives keep their params
    j["slo"] = {{"ttft_ms", slo_ttft_ms}, {"tpot_ms", slo_tpot_ms}};
  if (capacity) {
    j["capacity"] = {{"attainment", capacity_attainment}, {"precision", capacity_precision}};
    if (capacity_duration_s > 0) j["capacity"]["duration_s"] = capacity_duration_s;
  }
  return j;
}

nlohmann::json SweepPoint::params(const StudyOptions& options) const {
  nlohmann::json p = {{"model", model},         {"system", system}, {"input_len", input_len}, {"output_len", output_len},
                      {"batch", batch},         {"load", load.text}, {"options", options.to_json()}};
  if (load.trace()) p["trace_digest"] = load.trace_digest;  // a changed file reruns the point
  if (!knobs.empty()) {  // only then: studies without knobs keep their params (and resume) as before
    nlohmann::json k = nlohmann::json::array();
    for (const auto& [key, value] : knobs) k.push_back({key, value});
    p["knobs"] = k;
  }
  if (speculative_axis) {  // likewise
    p["speculative"] = {{"tokens", speculative.tokens},
                        {"acceptance", speculative.acceptance_json()},
                        {"draft", speculative.draft}};
    if (speculative.tree_tokens > 0) {  // only then: chains keep their params
      p["speculative"]["tree_tokens"] = speculative.tree_tokens;
      p["speculative"]["draft_topk"] = speculative.draft_topk;
    }
  }
  if (prefix_axis) p["prefix"] = prefix.to_json();
  if (cluster_axis) p["cluster"] = cluster.to_json();
  return p;
}

std::vector<ConfigOverride> knob_overrides(const std::vector<std::pair<std::string, std::string>>& setting,
                                           const std::string& origin) {
  std::vector<ConfigOverride> out;
  for (const auto& [key, value] : setting) out.push_back({key, value, origin});
  return out;
}

std::vector<ConfigOverride> SweepPoint::overrides() const { return knob_overrides(knobs, knob_origin); }

bool SweepKnob::applies_to(const std::string& system) const {
  return systems.empty() || std::find(systems.begin(), systems.end(), system) != systems.end();
}

namespace {
// "key=value" of each [key, value] pair of params' "knobs", joined by `separator`; "" without knobs.
std::string join_knobs(const nlohmann::json* knobs, const char* separator) {
  std::string out;
  if (knobs == nullptr) return out;
  for (const auto& kv : *knobs)
    out += fmt::format("{}{}={}", out.empty() ? "" : separator, kv.at(0).get<std::string>(), kv.at(1).get<std::string>());
  return out;
}
}  // namespace

std::string knob_settings(const nlohmann::json* knobs) { return join_knobs(knobs, ";"); }

std::string system_label(const std::string& system, const nlohmann::json* knobs) {
  if (knobs == nullptr || knobs->empty()) return system;
  return fmt::format("{} [{}]", system, join_knobs(knobs, ", "));
}

namespace {
constexpr std::size_t kPointIdMax = 200, kPointIdKept = 160;
}  // namespace

std::vector<SweepPoint> Study::points() const {
  std::vector<SweepPoint> out;
  std::set<std::string> ids;
  for (const auto& m : models)
    for (const auto& s : systems)
      for (const auto& setting : knob_settings_of(s)) {
        std::string knob_id;
        for (const auto& [key, value] : setting) knob_id += fmt::format("__{}-{}", file_safe(key), file_safe(value));
        const std::vector<SpeculativeSetting> drafts =
            speculative.empty() ? std::vector<SpeculativeSetting>{SpeculativeSetting{}} : speculative;
        for (const SpeculativeSetting& spec : drafts) {
          const std::string spec_id =
              spec.tokens == 0 ? ""
                               : fmt::format("__spec{}-a{}-{}{}", spec.tokens,
                                             fmt::join(spec.acceptance, "_"), file_safe(spec.draft),
                                             spec.tree_tokens > 0
                                                 ? fmt::format("-t{}k{}", spec.tree_tokens, spec.draft_topk)
                                                 : "");
          for (const PrefixSetting& shared : prefix.empty() ? std::vector<PrefixSetting>{{}} : prefix)
            for (const ClusterSetting& copies : cluster.empty() ? std::vector<ClusterSetting>{{}} : cluster) {
              const std::string variant_id = shared.id() + copies.id();  // prompts, then replicas
              for (std::size_t li = 0; li < std::max<std::size_t>(1, lengths.size()); ++li)
                for (const auto b : batches)
                  for (const auto& l : loads) {
                    // A trace's points: once, its mean lengths standing for the lengths; the lengths are
                    // the synthetic loads'.
                    if (l.trace() ? li > 0 : lengths.empty()) continue;
                    const std::int64_t in = l.trace() ? l.mean_input : lengths[li].first;
                    const std::int64_t outl = l.trace() ? l.mean_output : lengths[li].second;
                    SweepPoint p{.id = {},
                                 .model = m,
                                 .system = s,
                                 .knobs = setting,
                                 .knob_origin = file + ": knobs",
                                 .speculative = spec,
                                 .speculative_axis = !speculative.empty(),
                                 .prefix = shared,
                                 .prefix_axis = !prefix.empty(),
                                 .cluster = copies,
                                 .cluster_axis = !cluster.empty(),
                                 .input_len = in,
                                 .output_len = outl,
                                 .batch = b,
                                 .load = l};
                    p.id = fmt::format("{}__{}{}{}{}__in{}-out{}__b{}__{}", file_safe(m), file_safe(s),
                                       knob_id, spec_id, variant_id, in, outl, b, file_safe(l.text));
                    // A file name holds at most 255 bytes, and the point's file adds ".json" and a temporary
                    // suffix: a longer name keeps its first kPointIdKept characters and a digest of the
                    // whole.
                    if (p.id.size() > kPointIdMax)
                      p.id = p.id.substr(0, kPointIdKept) + "__" + fnv1a_hex(p.id);
                    if (!ids.insert(p.id).second)
                      throw Error(fmt::format(
                          "{}: two points get the name \"{}\" (model, system, knob or draft names "
                          "that differ only in characters outside [A-Za-z0-9._-]); rename one",
                          file, p.id));
                    out.push_back(std::move(p));
                  }
            }
        }
      }
  return out;
}

std::vector<std::vector<std::pair<std::string, std::string>>> Study::knob_settings_of(const std::string& system) const {
  std::vector<std::vector<std::pair<std::string, std::string>>> settings(1);
  for (const SweepKnob& k : knobs) {
    if (!k.applies_to(system)) continue;
    std::vector<std::vector<std::pair<std::string, std::string>>> next;
    for (const auto& partial : settings)
      for (const auto& v : k.values) {
        next.push_back(partial);
        next.back().emplace_back(k.key, v);
      }
    settings = std::move(next);
  }
  return settings;
}

Study parse_study(const std::string& yaml_text, const std::string& label) {
  const ConfigNode root = ConfigNode::parse(yaml_text, label);
  if (!root.is_map()) throw ConfigError(label, "", "is not a map", "a study: keys study, models, systems, ...");
  Study s;
  s.file = label;
  s.name = root.get<std::string>("study");
  if (s.name.empty() || file_safe(s.name) != s.name)
    root.fail("study", fmt::format("\"{}\" is not a plain name", s.name), "letters, digits, '.', '_' or '-'");
  s.description = root.get_or<std::string>("description", "");
  s.models = names(root, "models");
  s.systems = names(root, "systems");
  for (const auto& n : non_empty_list(root, "batch")) s.batches.push_back(element_int(n, 1));
  StudyOptions& o = s.options;
  o.requests = root.get_int("requests", 1, 1 << 24);
  if (root.has("load")) {
    for (const auto& n : non_empty_list(root, "load")) {
      try {
        s.loads.push_back(parse_load(n.scalar(), n.file() + ": " + n.path()));
      } catch (const ConfigError&) {
        throw;
      } catch (const Error&) {
        throw ConfigError(n.file(), n.path(), fmt::format("\"{}\" is not a load", n.scalar()),
                          kLoadsExpected);
      }
      if (s.loads.back().trace()) read_trace_load(n, o.requests, s.loads.back());
    }
  } else {
    s.loads.push_back(parse_load("closed", label));
  }
  // Lengths: for the synthetic loads (a trace brings its own); required when there is one.
  if (root.has("lengths") ||
      std::any_of(s.loads.begin(), s.loads.end(), [](const SweepLoad& l) { return !l.trace(); }))
    for (const auto& n : non_empty_list(root, "lengths")) {
      if (!n.is_sequence() || n.size() != 2)
        throw ConfigError(n.file(), n.path(), "is not a pair", "[L_in, L_out], e.g. [1024, 1024]");
      s.lengths.emplace_back(element_int(n.element(0), 1), element_int(n.element(1), 1));
    }
  if (root.has("seed")) o.seed = static_cast<std::uint64_t>(root.get_int("seed", 0, INT64_MAX));
  o.length_spread = root.get_or<double>("length_spread", o.length_spread);
  if (o.length_spread < 0 || o.length_spread > 1) root.fail("length_spread", fmt::format("{} is out of range", o.length_spread), "a fraction in [0, 1]");
  o.routing = root.get_or<std::string>("routing", o.routing);
  try {
    runtime::parse_routing(o.routing);  // a trace file is read and checked now, not at each point
  } catch (const ConfigError&) {
    throw;  // names the trace file and its line
  } catch (const Error& e) {
    // A trace's own error names its file and line; anything else is not a routing.
    if (o.routing.starts_with("trace:")) root.fail("routing", e.what());
    root.fail("routing", e.what(), "uniform, zipf:S (S >= 0) or trace:FILE (a routing trace CSV)");
  }
  if (o.routing.starts_with("trace:"))
    o.routing_trace_digest = fnv1a_hex(read_text_file(o.routing.substr(6)));
  if (auto n = root.find("scheduler")) read_scheduler(*n, o);
  o.memory_reserve = root.get_or<double>("memory_reserve", o.memory_reserve);
  if (o.memory_reserve < 0 || o.memory_reserve >= 1)
    root.fail("memory_reserve", fmt::format("{} is out of range", o.memory_reserve), "a fraction in [0, 1)");
  if (root.has("pim_model")) o.pim_model = root.get_enum("pim_model", {"cycle", "analytical"});
  if (auto n = root.find("record")) read_record(*n, o);
  if (auto n = root.find("slo")) {
    for (auto [key, value] : {std::pair{"ttft_ms", &o.slo_ttft_ms}, std::pair{"tpot_ms", &o.slo_tpot_ms}}) {
      if (!n->has(key)) continue;
      *value = n->get<double>(key);
      if (!(*value >= 0 && *value <= 1e9)) n->fail(key, "out of range", "milliseconds >= 0 (0: no bound)");
    }
    n->finish();
  }
  if (auto n = root.find("capacity")) {
    o.capacity = true;
    o.capacity_attainment = n->get_or<double>("attainment", o.capacity_attainment);
    if (!(o.capacity_attainment > 0 && o.capacity_attainment <= 1))
      n->fail("attainment", "out of range", "a share of the requests in (0, 1]");
    o.capacity_precision = n->get_or<double>("precision", o.capacity_precision);
    if (!(o.capacity_precision > 0 && o.capacity_precision <= 1))
      n->fail("precision", "out of range", "a fraction in (0, 1]");
    o.capacity_duration_s = n->get_or<double>("duration_s", 0.0);
    if (!(o.capacity_duration_s >= 0 && o.capacity_duration_s <= 1e7))
      n->fail("duration_s", "out of range", "seconds in [0, 1e7] (0: the study's requests at every rate)");
    n->finish();
    if (o.slo_ttft_ms == 0 && o.slo_tpot_ms == 0)
      root.fail("capacity", "a capacity search without latency objectives",
                "slo: {ttft_ms, tpot_ms} beside it (the highest rate meeting them)");
  }
  if (root.has("knobs")) read_knobs(root, s);
  if (root.has("speculative")) read_speculative(root, s);
  if (root.has("prefix")) read_prefix(root, s);
  if (root.has("cluster")) read_cluster(root, s);
  if (std::any_of(s.loads.begin(), s.loads.end(), [](const SweepLoad& l) { return l.trace(); })) {
    for (const PrefixSetting& p : s.prefix)
      if (p.tokens > 0 || p.turns > 1)
        root.fail("prefix",
                  "shared prompts or conversations beside a trace load (it replays its own prompts)",
                  "prefix settings of tokens 0 and turns 1 (caching on or off), or no trace load");
    if (o.capacity_duration_s > 0)
      root.fail("capacity",
                "duration_s beside a trace load (a trace keeps its requests; its arrivals are scaled)",
                "no duration_s, or no trace load");
  }
  root.finish();
  // Every system with every knob setting is read now (as strictly as a file): a bad key or value stops the
  // study before any point runs.
  for (const auto& system : s.systems)
    for (const auto& setting : s.knob_settings_of(system))
      if (!setting.empty()) (void)read_system(ConfigNode::load(system, "systems", knob_overrides(setting, label + ": knobs")));
  s.points();  // rejects name collisions now rather than mid-sweep
  return s;
}

Study load_study(const std::string& path) { return parse_study(read_text_file(path), path); }

}  // namespace duplex::host
