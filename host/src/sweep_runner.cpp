#include "sweep_runner.hpp"

#include <chrono>
#include <filesystem>
#include <fmt/format.h>
#include <mutex>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>

#include "duplex/base/error.hpp"
#include "sweep_files.hpp"
#include "sweep_point.hpp"

namespace duplex::host {
namespace fs = std::filesystem;
namespace {

enum class Stored { none, reusable, rerun };

// Whether the stored record of `point` can be reused; `why` says why not.
Stored stored_state(const fs::path& file, const nlohmann::json& params, std::string& why) {
  if (!fs::exists(file)) return Stored::none;
  nlohmann::json j;
  try {
    j = read_json_file(file);
  } catch (const Error&) {
    why = "unreadable record";
    return Stored::rerun;
  }
  if (!j.is_object() || j.value("params", nlohmann::json()) != params) {
    why = "parameters changed";
    return Stored::rerun;
  }
  if (j.value("status", "") != "ok") {
    why = "failed before";
    return Stored::rerun;
  }
  return Stored::reusable;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) {
    if (c == '"') q += '"';
    q += c == '\n' ? ' ' : c;
  }
  return q + "\"";
}

std::string number(const nlohmann::json& j, const char* a, const char* b = nullptr, const char* c = nullptr) {
  const nlohmann::json* v = &j;
  for (const char* k : {a, b, c}) {
    if (!k) break;
    if (!v->is_object() || !v->contains(k)) return "";
    v = &(*v)[k];
  }
  return v->is_number() ? v->dump() : "";
}

}  // namespace

std::string combined_csv(const std::vector<nlohmann::json>& records) {
  std::string s =
      "id,model,system,input_len,output_len,batch,load,status,devices,throughput_tok_s,ttft_p50_ms,ttft_p99_"
      "ms,"
      "tbt_p50_ms,tbt_p90_ms,tbt_p99_ms,e2e_p50_ms,e2e_p99_ms,energy_j_per_token,batch_mean,batch_max,"
      "preemptions,"
      "generated_tokens,simulated_s,xpu_utilization,pim_utilization,error,knobs,pim_area_mm2,speculative,"
      "tokens_per_verify,prefix,prefix_hit_rate,tpot_p50_ms,slo_attainment,goodput_req_s,cluster,"
      "max_rate_per_s,failing_rate_per_s,prefix_query_tokens,host_hit_tokens,host_remote_hit_tokens,"
      "disk_hit_tokens,expert_rebalancings,expert_move_s,expert_imbalance\n";
  for (const auto& j : records) {
    const auto& p = j.at("params");
    const nlohmann::json r = j.value("result", nlohmann::json::object());
    s += fmt::format("{},{},{},{},{},{},{},{},", csv_field(j.at("id").get<std::string>()),
                     csv_field(p.at("model").get<std::string>()), csv_field(p.at("system").get<std::string>()),
                     p.at("input_len").dump(), p.at("output_len").dump(), p.at("batch").dump(),
                     csv_field(p.at("load").get<std::string>()), j.at("status").get<std::string>());
    s += fmt::format(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{"
        "},"
        "{},{},{}\n",
        number(r, "devices"), number(r, "throughput_tok_s"), number(r, "ttft_ms", "p50"),
        number(r, "ttft_ms", "p99"), number(r, "tbt_ms", "p50"), number(r, "tbt_ms", "p90"),
        number(r, "tbt_ms", "p99"), number(r, "e2e_ms", "p50"), number(r, "e2e_ms", "p99"),
        number(r, "energy_j_per_token"), number(r, "batch_size", "mean"), number(r, "batch_size", "max"),
        number(r, "preemptions"), number(r, "generated_tokens"), number(r, "simulated_s"),
        number(r, "utilization", "xpu"), number(r, "utilization", "pim"), csv_field(j.value("error", "")),
        csv_field(knob_settings(p.contains("knobs") ? &p.at("knobs") : nullptr)),
        number(r, "pim_area", "per_stack_mm2", "total"),
        csv_field(speculative_text(p.contains("speculative") ? &p.at("speculative") : nullptr)),
        number(r, "speculative", "tokens_per_verify"),
        csv_field(prefix_text(p.contains("prefix") ? &p.at("prefix") : nullptr)),
        number(r, "prefix_cache", "hit_rate"), number(r, "tpot_ms", "p50"), number(r, "slo", "attainment"),
        number(r, "slo", "goodput_req_s"),
        csv_field(cluster_text(p.contains("cluster") ? &p.at("cluster") : nullptr)),
        number(r, "capacity", "max_rate_per_s"), number(r, "capacity", "failing_rate_per_s"),
        number(r, "prefix_cache", "query_tokens"), number(r, "prefix_cache", "host_hit_tokens"),
        number(r, "prefix_cache", "host_remote_hit_tokens"), number(r, "prefix_cache", "disk_hit_tokens"),
        number(r, "expert_load_balancing", "rebalancings"),
        number(r, "expert_load_balancing", "expert_move_s"),
        number(r, "expert_load_balancing", "imbalance_mean"));
  }
  return s;
}

SweepSummary run_sweep(const Study& study, const std::string& out_dir, int jobs,
                       const std::function<void(const std::string&)>& progress, const PointRunner& runner) {
  if (jobs < 1) throw Error(fmt::format("-j {}: expected at least 1 parallel point", jobs));
  const auto t0 = std::chrono::steady_clock::now();
  const fs::path out(out_dir), points_dir = out / "points";
  std::error_code ec;
  fs::create_directories(points_dir, ec);
  if (ec) throw Error(fmt::format("{}: cannot create the result folder: {}", points_dir.string(), ec.message()));

  const std::vector<SweepPoint> points = study.points();
  nlohmann::json listing = nlohmann::json::array();
  for (const auto& p : points) listing.push_back({{"id", p.id}, {"params", p.params(study.options)}});
  write_file_atomic(out / "study.json", nlohmann::json{{"study", study.name},
                                                       {"description", study.description},
                                                       {"file", study.file},
                                                       {"options", study.options.to_json()},
                                                       {"points", listing}}
                                                .dump(1) + "\n");

  SweepSummary summary;
  summary.points = static_cast<std::int64_t>(points.size());
  std::vector<std::size_t> todo;
  std::vector<std::string> reason(points.size());
  for (std::size_t i = 0; i < points.size(); ++i) {
    const Stored s = stored_state(points_dir / (points[i].id + ".json"), points[i].params(study.options), reason[i]);
    if (s == Stored::reusable) ++summary.skipped;
    else todo.push_back(i);
  }
  if (progress && summary.skipped > 0)
    progress(fmt::format("{} of {} points already done; running {}", summary.skipped, points.size(), todo.size()));

  std::vector<double> wall(points.size(), 0.0);
  std::mutex lock;
  std::size_t done = 0;
  const PointRunner run = runner ? runner : PointRunner(run_point);
  tbb::global_control limit(tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(jobs));
  tbb::parallel_for(std::size_t{0}, todo.size(), [&](std::size_t t) {
    const std::size_t i = todo[t];
    const auto start = std::chrono::steady_clock::now();
    const nlohmann::json record = run(points[i], study.options);
    write_file_atomic(points_dir / (points[i].id + ".json"), record.dump(1) + "\n");
    wall[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!progress) return;
    const std::lock_guard<std::mutex> g(lock);
    ++done;
    progress(fmt::format("[{}/{}] {} {} ({:.1f} s{}){}", done, todo.size(), points[i].id,
                         record.value("status", "?"), wall[i], reason[i].empty() ? "" : "; rerun: " + reason[i],
                         record.contains("error") ? ": " + record["error"].get<std::string>() : ""));
  });
  summary.ran = static_cast<std::int64_t>(todo.size());

  std::vector<nlohmann::json> records;
  for (const auto& p : points) {
    records.push_back(read_json_file(points_dir / (p.id + ".json")));
    summary.failed += records.back().value("status", "") != "ok";
  }
  write_file_atomic(out / "combined.csv", combined_csv(records));
  std::string times = "id,wall_s\n";
  for (const std::size_t i : todo) times += fmt::format("{},{:.3f}\n", points[i].id, wall[i]);
  write_file_atomic(out / "wall_times.csv", times);
  summary.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summary;
}

}  // namespace duplex::host
