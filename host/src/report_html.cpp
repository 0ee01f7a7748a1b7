#include "report_html.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include "report_charts.hpp"
#include "report_svg_frame.hpp"
#include "sweep_study.hpp"

namespace duplex::host {
namespace {

using svg::escape;

constexpr std::size_t kMaxTimelineEvents = 4000;  // keeps the page light; the excerpt says how many it shows

struct ModelView {
  const ResultFolder& f;
  std::string model;
  std::vector<std::string> settings;  // in study order

  const PointRecord* find(const std::string& system, const std::string& setting) const {
    for (const auto& p : f.points)
      if (p.model == model && p.system == system && p.setting() == setting) return &p;
    return nullptr;
  }
  std::optional<double> ok_metric(const std::string& system, const std::string& setting, const char* key,
                                  const char* sub = nullptr) const {
    const PointRecord* p = find(system, setting);
    if (!p || !p->ok) return std::nullopt;
    return p->metric(key, sub);
  }
  // Like ok_metric, for a figure only some results have (TPOT, SLO): nullopt where it is absent.
  std::optional<double> optional_metric(const std::string& system, const std::string& setting,
                                        const char* key, const char* sub) const {
    const PointRecord* p = find(system, setting);
    if (!p || !p->ok || !p->result.contains(key) || !p->result[key].contains(sub)) return std::nullopt;
    return p->metric(key, sub);
  }
  // The point drawn in the roofline, occupancy and timeline sections: the first successful point of a
  // system with Logic-PIM (it has both roofs), else the first successful point.
  const PointRecord* reference() const {
    const PointRecord* first = nullptr;
    for (const auto& p : f.points) {
      if (p.model != model || !p.ok) continue;
      if (!first) first = &p;
      if (p.roofs.at("pim_peak_flops").get<double>() > 0 && !p.op_kinds.empty()) return &p;
    }
    return first;
  }
};

std::string figure(const std::string& svg, const std::string& caption) {
  return "<figure>" + svg + "<figcaption>" + escape(caption) + "</figcaption></figure>\n";
}

std::string baseline_system(const ResultFolder& f) {
  return std::find(f.systems.begin(), f.systems.end(), "gpu") != f.systems.end() ? "gpu" : f.systems.front();
}

// Whether any successful point's result has `key` (figures newer or optional: tpot_ms, prefix_cache, slo).
bool any_result_has(const ResultFolder& f, const char* key) {
  return std::any_of(f.points.begin(), f.points.end(),
                     [&](const PointRecord& p) { return p.ok && p.result.contains(key); });
}

std::string summary_section(const ResultFolder& f) {
  std::size_t failed = 0;
  for (const auto& p : f.points) failed += !p.ok;
  std::string s = fmt::format("<section id=\"summary\"><h2>Points</h2><p>{} points, {} failed. Options: <code>{}</code></p>",
                              f.points.size(), failed, escape(f.options.dump()));
  // Optional columns, where some point has the figure: time per output token, the prefix cache's share of
  // the prompt tokens, the latency objectives met and the goodput, expert load balancing's busiest device's
  // rows over the mean and rebalancings.
  const bool tpot = any_result_has(f, "tpot_ms"), cache = any_result_has(f, "prefix_cache"),
             slo = any_result_has(f, "slo"), capacity = any_result_has(f, "capacity"),
             eplb = any_result_has(f, "expert_load_balancing");
  s += "<table><tr><th>model</th><th>system</th><th>setting</th><th>status</th><th>tok/s</th><th>TTFT p50 "
       "ms</th>"
       "<th>TBT p50 ms</th><th>TBT p99 ms</th><th>E2E p50 ms</th><th>J/token</th><th>batch mean</th>"
       "<th>PIM area mm2/stack</th>";
  if (tpot) s += "<th>TPOT p50 ms</th>";
  if (cache) s += "<th>prompt tokens from cache</th>";
  if (slo) s += "<th>within SLO</th><th>goodput req/s</th>";
  if (capacity) s += "<th>max rate req/s</th>";
  if (eplb) s += "<th>expert rows busiest / mean</th><th>rebalancings</th>";
  s += "</tr>\n";
  const int columns =
      9 + (tpot ? 1 : 0) + (cache ? 1 : 0) + (slo ? 2 : 0) + (capacity ? 1 : 0) + (eplb ? 2 : 0);
  for (const auto& p : f.points) {
    s += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td>", escape(p.model), escape(p.system), escape(p.setting()));
    if (!p.ok) {
      s +=
          fmt::format("<td class=\"failed\" colspan=\"{}\">failed: {}</td></tr>\n", columns, escape(p.error));
      continue;
    }
    // Area: Logic-PIM systems only (base/pim_area.hpp); "-" where the system has no area model.
    const nlohmann::json* area = p.result.contains("pim_area") ? &p.result["pim_area"] : nullptr;
    const std::string area_cell =
        area != nullptr ? fmt::format("{:.2f} ({:.1f}% of die)", (*area)["per_stack_mm2"].value("total", 0.0),
                                      100.0 * area->value("die_fraction", 0.0))
                        : "-";
    s += fmt::format(
        "<td>ok</td><td>{:.1f}</td><td>{:.1f}</td><td>{:.2f}</td><td>{:.2f}</td><td>{:.1f}</td><td>{:.4f}</"
        "td><td>{:.1f}</td><td>{}</td>",
        p.metric("throughput_tok_s"), p.metric("ttft_ms", "p50"), p.metric("tbt_ms", "p50"),
        p.metric("tbt_ms", "p99"), p.metric("e2e_ms", "p50"), p.metric("energy_j_per_token"),
        p.result.contains("batch_size") ? p.result["batch_size"].value("mean", 0.0) : 0.0, area_cell);
    // "-" where this point lacks a figure others have (no prompt hashes, no objectives, an older result).
    auto cell = [&](const char* key, const char* sub, const char* format, double scale) {
      return p.result.contains(key) && p.result[key].contains(sub)
                 ? fmt::format(fmt::runtime(format), scale * p.metric(key, sub))
                 : std::string("-");
    };
    if (tpot) s += "<td>" + cell("tpot_ms", "p50", "{:.2f}", 1.0) + "</td>";
    if (cache) s += "<td>" + cell("prefix_cache", "hit_rate", "{:.1f}%", 100.0) + "</td>";
    if (slo)
      s += "<td>" + cell("slo", "attainment", "{:.1f}%", 100.0) + "</td><td>" +
           cell("slo", "goodput_req_s", "{:.2f}", 1.0) + "</td>";
    if (capacity) {  // ">=" where no probe above it fell short (no upper bound found)
      const bool bounded = p.result.contains("capacity") &&
                           p.result["capacity"].contains("failing_rate_per_s") &&
                           p.result["capacity"]["failing_rate_per_s"].is_number();
      s += "<td>" + std::string(bounded ? "" : ">=") + cell("capacity", "max_rate_per_s", "{:.3f}", 1.0) +
           "</td>";
    }
    if (eplb)
      s += "<td>" + cell("expert_load_balancing", "imbalance_mean", "{:.2f}", 1.0) + "</td><td>" +
           cell("expert_load_balancing", "rebalancings", "{:.0f}", 1.0) + "</td>";
    s += "</tr>\n";
  }
  return s + "</table></section>\n";
}

std::string throughput_section(const ResultFolder& f, const std::vector<ModelView>& views) {
  const std::string base = baseline_system(f);
  std::string s = fmt::format("<section id=\"throughput\"><h2>Throughput normalised to {}</h2>", escape(base));
  for (const auto& v : views) {
    svg::BarChart c{.title = fmt::format("{}: generated tokens/s relative to {}", v.model, base),
                    .y_label = "x " + base, .categories = v.settings, .series = {}, .reference = 1.0};
    for (const auto& sys : f.systems) {
      svg::BarSeries se{.name = sys, .values = {}};
      for (const auto& st : v.settings) {
        const auto t = v.ok_metric(sys, st, "throughput_tok_s"), b = v.ok_metric(base, st, "throughput_tok_s");
        se.values.push_back(t && b && *b > 0 ? std::optional<double>(*t / *b) : std::nullopt);
      }
      c.series.push_back(std::move(se));
    }
    s += figure(svg::bar_chart(c), "Settings are L_in/L_out, max batch, arrivals. n/a: the point or its " + base + " point failed.");
  }
  return s + "</section>\n";
}

// Settings of a model that differ only in their Poisson rate, grouped: "1024/512 b128" -> [(rate, setting)].
std::map<std::string, std::vector<std::pair<double, std::string>>> load_groups(const ResultFolder& f, const std::string& model) {
  std::map<std::string, std::vector<std::pair<double, std::string>>> g;
  std::set<std::string> seen;
  for (const auto& p : f.points) {
    if (p.model != model || p.load.rfind("poisson:", 0) != 0 || !seen.insert(p.setting()).second) continue;
    g[fmt::format("{}/{} b{}", p.input_len, p.output_len, p.batch)].emplace_back(parse_load(p.load, p.file).rate_per_s, p.setting());
  }
  for (auto it = g.begin(); it != g.end();) it = it->second.size() < 2 ? g.erase(it) : std::next(it);
  for (auto& [k, rates] : g) std::sort(rates.begin(), rates.end());
  return g;
}

// One charted figure of a result: result[key][sub] x scale, titled `title`, in `unit`.
struct ChartedMetric {
  const char* key;
  const char* sub;
  std::string title;
  std::string unit;
  double scale = 1.0;
};

// Charts of each of `metrics` for one model: against the request rate for the settings that differ only in
// their Poisson rate (lines), and per setting for the others (bars, captioned `bar_caption`).
std::string metric_charts(const ResultFolder& f, const ModelView& v,
                          const std::vector<ChartedMetric>& metrics, const std::string& bar_caption) {
  std::string s;
  auto value = [&](const std::string& sys, const std::string& st, const ChartedMetric& m) {
    const auto x = v.optional_metric(sys, st, m.key, m.sub);
    return x ? std::optional<double>(m.scale * *x) : std::nullopt;
  };
  const auto groups = load_groups(f, v.model);
  std::set<std::string> in_load_sweep;
  for (const auto& [name, rates] : groups) {
    for (const auto& [rate, st] : rates) in_load_sweep.insert(st);
    for (const ChartedMetric& m : metrics) {
      svg::LineChart c{.title = fmt::format("{} {}: {} vs request rate", v.model, name, m.title),
                       .x_label = "requests/s (Poisson)",
                       .y_label = m.unit,
                       .series = {}};
      for (const auto& sys : f.systems) {
        svg::LineSeries se{.name = sys, .points = {}};
        for (const auto& [rate, st] : rates)
          if (const auto x = value(sys, st, m)) se.points.emplace_back(rate, *x);
        c.series.push_back(std::move(se));
      }
      s += figure(svg::line_chart(c), "Failed points are left out of the lines.");
    }
  }
  std::vector<std::string> rest;
  for (const auto& st : v.settings)
    if (!in_load_sweep.count(st)) rest.push_back(st);
  if (rest.empty()) return s;
  for (const ChartedMetric& m : metrics) {
    svg::BarChart c{.title = fmt::format("{}: {} ({})", v.model, m.title, m.unit),
                    .y_label = m.unit,
                    .categories = rest,
                    .series = {},
                    .reference = std::nullopt};
    for (const auto& sys : f.systems) {
      svg::BarSeries se{.name = sys, .values = {}};
      for (const auto& st : rest) se.values.push_back(value(sys, st, m));
      c.series.push_back(std::move(se));
    }
    s += figure(svg::bar_chart(c), bar_caption);
  }
  return s;
}

std::string latency_section(const ResultFolder& f, const std::vector<ModelView>& views) {
  std::string s = "<section id=\"latency\"><h2>Latency percentiles</h2>";
  std::vector<std::pair<const char*, const char*>> kinds = {
      {"ttft_ms", "TTFT"}, {"tbt_ms", "TBT"}, {"e2e_ms", "E2E"}};
  if (any_result_has(f, "tpot_ms")) kinds.emplace_back("tpot_ms", "TPOT");
  std::vector<ChartedMetric> metrics;
  for (const auto& [key, title] : kinds)
    for (const char* pct : {"p50", "p99"})
      metrics.push_back({key, pct, fmt::format("{} {}", title, pct), "ms"});
  for (const auto& v : views)
    s += metric_charts(f, v, metrics,
                       "Percentile over all requests (TBT: over all decode steps of all requests; TPOT: per "
                       "request, (finish - first token) / (outputs - 1)).");
  return s + "</section>\n";
}

// With latency objectives (a study's slo): the share of requests meeting them and the goodput, against the
// request rate where the study sweeps it, else per setting.
std::string slo_section(const ResultFolder& f, const std::vector<ModelView>& views) {
  if (!any_result_has(f, "slo")) return "";
  const nlohmann::json objectives = f.options.value("slo", nlohmann::json::object());
  auto bound = [&](const char* key) {
    const double ms = objectives.value(key, 0.0);
    return ms > 0 ? fmt::format("{:g} ms", ms) : std::string("unbounded");
  };
  std::string s = fmt::format("<section id=\"slo\"><h2>Latency objectives: TTFT {}, TPOT {}</h2>",
                              bound("ttft_ms"), bound("tpot_ms"));
  std::vector<ChartedMetric> metrics = {{"slo", "attainment", "requests within the objectives", "%", 100.0},
                                        {"slo", "goodput_req_s", "goodput", "requests/s", 1.0}};
  std::string caption = "Goodput: requests meeting both objectives per simulated second.";
  if (any_result_has(f, "capacity")) {
    const nlohmann::json search = f.options.value("capacity", nlohmann::json::object());
    metrics.insert(metrics.begin(),
                   {"capacity", "max_rate_per_s", "highest rate within the objectives", "requests/s", 1.0});
    caption = fmt::format(
                  "Capacity: the highest Poisson rate at which {:g}% of the requests meet both objectives "
                  "(bracketed to "
                  "{:g}%); the other figures are the runs at that rate. ",
                  100.0 * search.value("attainment", 0.0), 100.0 * search.value("precision", 0.0)) +
              caption;
  }
  for (const auto& v : views) s += metric_charts(f, v, metrics, caption);
  return s + "</section>\n";
}

std::string energy_section(const ResultFolder& f, const std::vector<ModelView>& views) {
  std::string s = "<section id=\"energy\"><h2>Energy per generated token</h2>";
  for (const auto& v : views) {
    svg::StackedBarChart c{.title = v.model + ": energy per generated token by category", .y_label = "J / token",
                           .categories = {}, .parts = {}, .values = {}};
    std::set<std::string> parts;
    for (const auto& p : f.points)
      if (p.model == v.model && p.ok)
        for (const auto& [k, val] : p.result["energy_breakdown"].items()) parts.insert(k);
    c.parts.assign(parts.begin(), parts.end());
    for (const auto& st : v.settings)
      for (const auto& sys : f.systems) {
        const PointRecord* p = v.find(sys, st);
        if (!p || !p->ok) continue;
        const double tokens = std::max(p->metric("generated_tokens"), 1.0);
        c.categories.push_back(sys + " " + st);
        std::vector<double> row;
        for (const auto& part : c.parts) row.push_back(p->result["energy_breakdown"].value(part, 0.0) / tokens);
        c.values.push_back(std::move(row));
      }
    if (c.categories.empty()) continue;
    s += figure(svg::stacked_bar_chart(c), "Breakdown keys are <component>.<kind> from the energy ledger (dram: DRAM "
                                           "access energy, compute: arithmetic, static: background power x time).");
  }
  return s + "</section>\n";
}

std::string roofline_section(const std::vector<ModelView>& views) {
  std::string s = "<section id=\"roofline\"><h2>Op/B per op kind vs the units' ridge points</h2>";
  for (const auto& v : views) {
    const PointRecord* p = v.reference();
    if (!p || p->op_kinds.empty()) continue;
    svg::RooflineChart c{.title = fmt::format("{} on {} ({})", v.model, p->system, p->setting()), .roofs = {}, .dots = {}};
    c.roofs.push_back({"xpu", p->roofs["xpu_peak_flops"].get<double>(), p->roofs["xpu_bandwidth"].get<double>()});
    if (p->roofs["pim_peak_flops"].get<double>() > 0)
      c.roofs.push_back({"pim", p->roofs["pim_peak_flops"].get<double>(), p->roofs["pim_bandwidth"].get<double>()});
    for (const auto& o : p->op_kinds) {
      const double flops = o["flops"].get<double>(), bytes = o["bytes"].get<double>(), t = o["time_s"].get<double>();
      if (o["unit"] == "link" || flops <= 0 || bytes <= 0 || t <= 0) continue;
      c.dots.push_back({o["kind"].get<std::string>(), o["unit"].get<std::string>(), flops / bytes, flops / t});
    }
    s += figure(svg::roofline_chart(c), fmt::format("Each dot: one op kind on one unit, summed over the first {} recorded "
                                                    "steps of device 0 (Op/B = FLOPs / DRAM bytes; height = FLOPs / modelled time).",
                                                    v.f.options.value("timeline_steps", 0)));
  }
  return s + "</section>\n";
}

std::string occupancy_section(const ResultFolder& f, const std::vector<ModelView>& views) {
  std::string s = "<section id=\"occupancy\"><h2>Batch size and KV-cache use over time</h2>";
  for (const auto& v : views) {
    const PointRecord* ref = v.reference();
    if (!ref) continue;
    const std::string st = ref->setting();
    svg::LineChart batch{.title = fmt::format("{} {}: running requests per step", v.model, st), .x_label = "simulated time (s)",
                         .y_label = "requests", .series = {}};
    svg::LineChart kv{.title = fmt::format("{} {}: KV-cache blocks in use", v.model, st), .x_label = "simulated time (s)",
                      .y_label = "% of capacity", .series = {}};
    for (const auto& sys : f.systems) {
      const PointRecord* p = v.find(sys, st);
      if (!p || !p->ok) continue;
      svg::LineSeries b{.name = sys, .points = {}}, k{.name = sys, .points = {}};
      for (const auto& row : p->steps) {
        const double t = row[0].get<double>(), cap = row[5].get<double>();
        b.points.emplace_back(t, row[1].get<double>());
        if (cap > 0) k.points.emplace_back(t, 100.0 * row[4].get<double>() / cap);
      }
      batch.series.push_back(std::move(b));
      kv.series.push_back(std::move(k));
    }
    s += figure(svg::line_chart(batch), "Evenly spaced samples of the per-step rows.");
    s += figure(svg::line_chart(kv), "KV capacity comes from the memory plan (HBM minus weights and the reserve).");
  }
  return s + "</section>\n";
}

std::string timeline_section(const std::vector<ModelView>& views) {
  std::string s = "<section id=\"timeline\"><h2>xPU / Logic-PIM lane timeline (excerpt)</h2>";
  for (const auto& v : views) {
    const PointRecord* p = v.reference();
    if (!p || p->timeline.empty()) continue;
    svg::TimelineChart c{.title = fmt::format("{} on {} ({}), device 0", v.model, p->system, p->setting()), .lanes = {}, .events = {}};
    for (const char* lane : {"xpu", "pim", "link"})
      for (const auto& e : p->timeline)
        if (e["lane"] == lane) {
          c.lanes.emplace_back(lane);
          break;
        }
    // A closed-loop run starts with one step that prefills every request; when later steps were recorded the
    // excerpt starts after it, so the decode steps (where Logic-PIM works) are visible.
    const std::int64_t first_step = p->timeline.front()["step"].get<std::int64_t>();
    const bool skip_first = p->timeline.back()["step"].get<std::int64_t>() != first_step;
    double origin_us = -1;
    for (const auto& e : p->timeline) {
      if (c.events.size() == kMaxTimelineEvents) break;
      if (skip_first && e["step"].get<std::int64_t>() == first_step) continue;
      if (origin_us < 0) origin_us = e["start_us"].get<double>();
      c.events.push_back({e["lane"].get<std::string>(), e["kind"].get<std::string>(), e["name"].get<std::string>(),
                          e["start_us"].get<double>() - origin_us, e["dur_us"].get<double>()});
    }
    s += figure(svg::timeline_chart(c), fmt::format("{} op(s) of the first recorded steps{}; hover a span for the op.",
                                                    c.events.size(), skip_first ? " after the first (all-prefill) step" : ""));
  }
  return s + "</section>\n";
}

constexpr const char* kStyle =
    "body{font-family:sans-serif;margin:24px;color:#222}h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:"
    "1px solid #ccc}figure{margin:12px 0;overflow-x:auto}figcaption{font-size:12px;color:#555}table{border-collapse:"
    "collapse;font-size:12px}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}td:first-child,td:nth-child(2),"
    "td:nth-child(3){text-align:left}.failed{color:#b00;text-align:left}code{font-size:11px}";

}  // namespace

std::string build_report(const ResultFolder& f) {
  std::vector<ModelView> views;
  for (const auto& m : f.models) {
    ModelView v{f, m, {}};
    for (const auto& p : f.points)
      if (p.model == m && std::find(v.settings.begin(), v.settings.end(), p.setting()) == v.settings.end())
        v.settings.push_back(p.setting());
    views.push_back(std::move(v));
  }
  std::string s = fmt::format("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>duplex report: {0}</title>"
                              "<style>{1}</style></head><body>\n<h1>duplex report: {0}</h1><p>{2}</p>\n",
                              escape(f.study), kStyle, escape(f.description));
  s += summary_section(f) + throughput_section(f, views) + latency_section(f, views) + slo_section(f, views) +
       energy_section(f, views) + roofline_section(views) + occupancy_section(f, views) +
       timeline_section(views);
  return s + "</body></html>\n";
}

}  // namespace duplex::host
