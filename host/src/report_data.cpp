#include "report_data.hpp"

#include <algorithm>
#include <filesystem>
#include <fmt/format.h>

#include "duplex/base/error.hpp"
#include "sweep_files.hpp"
#include "sweep_study.hpp"

namespace duplex::host {
namespace fs = std::filesystem;
namespace {

enum class Want { number, string, object, array };

const char* want_name(Want w) {
  switch (w) {
    case Want::number: return "a number";
    case Want::string: return "a string";
    case Want::object: return "an object";
    case Want::array: return "an array";
  }
  return "?";
}

bool is(const nlohmann::json& j, Want w) {
  switch (w) {
    case Want::number: return j.is_number();
    case Want::string: return j.is_string();
    case Want::object: return j.is_object();
    case Want::array: return j.is_array();
  }
  return false;
}

// j at the dotted `path`, which must exist and be of kind `w`.
const nlohmann::json& need(const nlohmann::json& j, const std::string& path, Want w, const std::string& file) {
  const nlohmann::json* v = &j;
  std::size_t from = 0;
  while (true) {
    const std::size_t dot = path.find('.', from);
    const std::string key = path.substr(from, dot == std::string::npos ? std::string::npos : dot - from);
    if (!v->is_object() || !v->contains(key))
      throw Error(fmt::format("{}: {}: missing; expected {} (is this a folder written by duplex sweep?)", file, path, want_name(w)));
    v = &(*v)[key];
    if (dot == std::string::npos) break;
    from = dot + 1;
  }
  if (!is(*v, w)) throw Error(fmt::format("{}: {}: is {}; expected {}", file, path, v->type_name(), want_name(w)));
  return *v;
}

void check_result(const nlohmann::json& r, const std::string& file) {
  for (const char* k : {"throughput_tok_s", "energy_j_per_token", "generated_tokens", "devices"}) need(r, std::string("result.") + k, Want::number, file);
  for (const char* m : {"ttft_ms", "tbt_ms", "e2e_ms"})
    for (const char* p : {"p50", "p90", "p99"}) need(r, fmt::format("result.{}.{}", m, p), Want::number, file);
  for (const auto& [k, v] : need(r, "result.energy_breakdown", Want::object, file).items())
    if (!v.is_number()) throw Error(fmt::format("{}: result.energy_breakdown.{}: is {}; expected a number (joules)", file, k, v.type_name()));
  for (const char* k : {"xpu_peak_flops", "xpu_bandwidth", "pim_peak_flops", "pim_bandwidth"}) need(r, std::string("roofs.") + k, Want::number, file);
  for (const auto& row : need(r, "steps", Want::array, file))
    if (!row.is_array() || row.size() != 6 || !std::all_of(row.begin(), row.end(), [](const auto& x) { return x.is_number(); }))
      throw Error(fmt::format("{}: steps: a row is not 6 numbers; expected [start_s, requests, decode_requests, prefill_tokens, "
                              "kv_blocks_used, kv_blocks_capacity]", file));
  for (const auto& o : need(r, "op_kinds", Want::array, file)) {
    need(o, "kind", Want::string, file + ": op_kinds[]");
    need(o, "unit", Want::string, file + ": op_kinds[]");
    for (const char* k : {"flops", "bytes", "time_s"}) need(o, k, Want::number, file + ": op_kinds[]");
  }
  for (const auto& e : need(r, "timeline", Want::array, file)) {
    for (const char* k : {"lane", "kind", "name"}) need(e, k, Want::string, file + ": timeline[]");
    for (const char* k : {"step", "start_us", "dur_us"}) need(e, k, Want::number, file + ": timeline[]");
  }
}

PointRecord read_point(const fs::path& file, const std::string& id, const nlohmann::json& params) {
  const std::string name = file.string();
  if (!fs::exists(file))
    throw Error(fmt::format("{}: missing: the sweep has not finished this point; rerun duplex sweep on the same study "
                            "and folder (finished points are kept)", name));
  const nlohmann::json j = read_json_file(file);
  PointRecord p;
  p.file = name;
  p.id = need(j, "id", Want::string, name).get<std::string>();
  if (p.id != id) throw Error(fmt::format("{}: id: \"{}\"; expected \"{}\" (as listed in study.json)", name, p.id, id));
  if (need(j, "params", Want::object, name) != params)
    throw Error(fmt::format("{}: params: differ from study.json (the study changed since this point ran); rerun duplex sweep", name));
  p.model = need(j, "params.model", Want::string, name).get<std::string>();
  p.system = need(j, "params.system", Want::string, name).get<std::string>();
  if (j.at("params").contains("knobs")) {  // a design variant: its own series in every chart
    const nlohmann::json& knobs = need(j, "params.knobs", Want::array, name);
    for (const auto& kv : knobs)
      if (!kv.is_array() || kv.size() != 2 || !kv.at(0).is_string() || !kv.at(1).is_string())
        throw Error(fmt::format("{}: params.knobs: {} is not a [key, value] pair of strings", name, kv.dump()));
    p.system = system_label(p.system, &knobs);
  }
  if (j.at("params").contains("speculative")) {  // a speculative variant: its own series too
    const nlohmann::json& spec = need(j, "params.speculative", Want::object, name);
    auto numbers = [](const nlohmann::json& a) {
      return a.is_number() || (a.is_array() && !a.empty() &&
                               std::all_of(a.begin(), a.end(), [](const auto& x) { return x.is_number(); }));
    };
    auto optional_integer = [&](const char* key) {
      return !spec.contains(key) || spec[key].is_number_integer();
    };
    // The variant without drafts (tokens 0) has no acceptance: an empty list.
    const bool off = spec.contains("tokens") && spec["tokens"] == 0 && spec.contains("acceptance") &&
                     spec["acceptance"] == nlohmann::json::array();
    if (!spec.contains("tokens") || !spec["tokens"].is_number_integer() || !spec.contains("acceptance") ||
        !(off || numbers(spec["acceptance"])) || !spec.contains("draft") || !spec["draft"].is_string() ||
        !optional_integer("tree_tokens") || !optional_integer("draft_topk"))
      throw Error(
          fmt::format("{}: params.speculative: {} is not {{tokens: integer, acceptance: number or list of "
                      "numbers, draft: string, and optionally tree_tokens, draft_topk: integers}}",
                      name, spec.dump()));
    if (const std::string text = speculative_text(&spec); !text.empty())
      p.system = fmt::format("{} [{}]", p.system, text);
  }
  if (j.at("params").contains("prefix")) {  // a shared-prompt variant: its own series too
    const nlohmann::json& prefix = need(j, "params.prefix", Want::object, name);
    if (!prefix.contains("tokens") || !prefix["tokens"].is_number_integer() || !prefix.contains("groups") ||
        !prefix["groups"].is_number_integer() || !prefix.contains("caching") ||
        !prefix["caching"].is_boolean() ||
        (prefix.contains("turns") && !prefix["turns"].is_number_integer()) ||
        (prefix.contains("think_s") && !prefix["think_s"].is_number()))
      throw Error(
          fmt::format("{}: params.prefix: {} is not {{tokens: integer, groups: integer, caching: boolean, "
                      "and optionally turns: integer, think_s: number}}",
                      name, prefix.dump()));
    if (const std::string text = prefix_text(&prefix); !text.empty())
      p.system = fmt::format("{} [{}]", p.system, text);
  }
  if (j.at("params").contains("cluster")) {  // a cluster variant: its own series too
    const nlohmann::json& cluster = need(j, "params.cluster", Want::object, name);
    if (!cluster.contains("replicas") || !cluster["replicas"].is_number_integer() ||
        !cluster.contains("router") || !cluster["router"].is_string())
      throw Error(fmt::format("{}: params.cluster: {} is not {{replicas: integer, router: string}}", name,
                              cluster.dump()));
    if (const std::string text = cluster_text(&cluster); !text.empty())
      p.system = fmt::format("{} [{}]", p.system, text);
  }
  p.load = need(j, "params.load", Want::string, name).get<std::string>();
  parse_load(p.load, name + ": params.load");  // throws for anything but closed / poisson:RATE
  p.input_len = need(j, "params.input_len", Want::number, name).get<std::int64_t>();
  p.output_len = need(j, "params.output_len", Want::number, name).get<std::int64_t>();
  p.batch = need(j, "params.batch", Want::number, name).get<std::int64_t>();
  const std::string status = need(j, "status", Want::string, name).get<std::string>();
  if (status == "failed") {
    p.error = need(j, "error", Want::string, name).get<std::string>();
    return p;
  }
  if (status != "ok") throw Error(fmt::format("{}: status: \"{}\"; expected ok or failed", name, status));
  check_result(j, name);
  p.ok = true;
  p.result = j["result"];
  p.roofs = j["roofs"];
  p.steps = j["steps"];
  p.op_kinds = j["op_kinds"];
  p.timeline = j["timeline"];
  return p;
}

void add_unique(std::vector<std::string>& v, const std::string& s) {
  if (std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
}

}  // namespace

std::string PointRecord::setting() const { return fmt::format("{}/{} b{} {}", input_len, output_len, batch, load); }

double PointRecord::metric(const char* key, const char* sub) const {
  const nlohmann::json& v = sub ? result.at(key).at(sub) : result.at(key);
  return v.get<double>();
}

ResultFolder load_result_folder(const std::string& dir) {
  if (!fs::is_directory(dir)) throw Error(fmt::format("{}: not a folder; expected a result folder written by duplex sweep", dir));
  const fs::path study_file = fs::path(dir) / "study.json";
  const std::string name = study_file.string();
  const nlohmann::json s = read_json_file(study_file);
  ResultFolder f;
  f.dir = dir;
  f.study = need(s, "study", Want::string, name).get<std::string>();
  f.description = s.value("description", "");
  f.options = need(s, "options", Want::object, name);
  const nlohmann::json& listing = need(s, "points", Want::array, name);
  if (listing.empty()) throw Error(fmt::format("{}: points: empty; expected the study's design points", name));
  for (const auto& entry : listing) {
    const std::string id = need(entry, "id", Want::string, name + ": points[]").get<std::string>();
    const nlohmann::json& params = need(entry, "params", Want::object, name + ": points[]");
    f.points.push_back(read_point(fs::path(dir) / "points" / (id + ".json"), id, params));
    add_unique(f.models, f.points.back().model);
    add_unique(f.systems, f.points.back().system);
  }
  return f;
}

}  // namespace duplex::host
