// A tiny real sweep (run_point over the serving simulator), its HTML report, bad result folders, and the
// page opened in headless Chromium.
#include <gtest/gtest.h>
#include <unistd.h>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <fmt/format.h>
#include "duplex/base/error.hpp"
#include "report_data.hpp"
#include "report_html.hpp"
#include "sweep_files.hpp"
#include "sweep_runner.hpp"
#include "sweep_study.hpp"

namespace duplex::host {
namespace {
namespace fs = std::filesystem;

const std::string kTinyStudy = R"(study: tiny
description: test study (seconds)
models: [tiny-moe]
systems: [gpu, duplex-pe, no-such-system]
lengths: [[32, 16]]
batch: [4]
load: [closed, "poisson:200", "poisson:400"]
requests: 12
seed: 3
pim_model: analytical
record: {timeline_steps: 2, step_samples: 20}
)";

fs::path temp_path(const std::string& name) {
  return fs::temp_directory_path() / ("duplex_report_test_" + name + "_" + std::to_string(getpid()));
}

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

// Runs a study `name` of tiny-dense on `systems` ((16, 8) tokens, batch 4, 12 requests, analytical PIM
// timing) with the study lines `axes`, into a fresh temporary folder; returns the folder.
fs::path run_tiny_dense_study(const std::string& name, const std::string& systems, const std::string& axes) {
  const fs::path dir = temp_path(name);
  fs::remove_all(dir);
  run_sweep(parse_study("study: " + name + "\nmodels: [tiny-dense]\nsystems: " + systems +
                            "\nlengths: [[16, 8]]\nbatch: [4]\nrequests: 12\npim_model: analytical\n" + axes,
                        name + ".yaml"),
            dir.string(), 1);
  return dir;
}

class TinySweep : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(temp_path("sweep"));
    fs::remove_all(*dir_);
    run_sweep(parse_study(kTinyStudy, "tiny.yaml"), dir_->string(), 2);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  // A copy of the result folder to damage.
  static fs::path copy(const std::string& name) {
    const fs::path c = temp_path(name);
    fs::remove_all(c);
    fs::copy(*dir_, c, fs::copy_options::recursive);
    return c;
  }
  static std::string point_file(const fs::path& folder, std::size_t i) {
    return (folder / "points" / (parse_study(kTinyStudy, "tiny.yaml").points()[i].id + ".json")).string();
  }
  static std::string report_error(const fs::path& folder) {
    try {
      load_result_folder(folder.string());
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  }
  static fs::path* dir_;
};
fs::path* TinySweep::dir_ = nullptr;

TEST_F(TinySweep, PointsRunAndAnUnknownSystemIsRecordedAsFailed) {
  const ResultFolder f = load_result_folder(dir_->string());
  ASSERT_EQ(f.points.size(), 9u);
  for (const auto& p : f.points) {
    if (p.system == "no-such-system") {
      EXPECT_FALSE(p.ok);
      EXPECT_NE(p.error.find("\"no-such-system\" is neither a file nor a preset"), std::string::npos) << p.error;
      continue;
    }
    ASSERT_TRUE(p.ok) << p.id << ": " << p.error;
    EXPECT_GT(p.metric("throughput_tok_s"), 0);
    EXPECT_GT(p.metric("energy_j_per_token"), 0);
    EXPECT_FALSE(p.steps.empty());
    EXPECT_FALSE(p.op_kinds.empty());
    EXPECT_FALSE(p.timeline.empty());
  }
  const std::string csv = read_text_file(*dir_ / "combined.csv");
  EXPECT_EQ(count(csv, "\n"), 10u);
  EXPECT_EQ(count(csv, ",failed,"), 3u);
}

TEST_F(TinySweep, RealPointsAreIdenticalForAnyNumberOfJobs) {
  const fs::path other = temp_path("j1");
  fs::remove_all(other);
  run_sweep(parse_study(kTinyStudy, "tiny.yaml"), other.string(), 1);
  for (std::size_t i = 0; i < 9; ++i) EXPECT_EQ(read_text_file(point_file(other, i)), read_text_file(point_file(*dir_, i))) << i;
  EXPECT_EQ(read_text_file(other / "combined.csv"), read_text_file(*dir_ / "combined.csv"));
  fs::remove_all(other);
}

TEST_F(TinySweep, ReportHasEveryChartSection) {
  const std::string html = build_report(load_result_folder(dir_->string()));
  for (const char* id : {"summary", "throughput", "latency", "energy", "roofline", "occupancy", "timeline"})
    EXPECT_NE(html.find(std::string("<section id=\"") + id + "\">"), std::string::npos) << id;
  EXPECT_GE(count(html, "<svg "), 1u + 6 + 1 + 1 + 2 + 1);
  EXPECT_GT(count(html, "class=\"bar\""), 0u);
  EXPECT_GT(count(html, "class=\"segment\""), 0u);
  EXPECT_GT(count(html, "class=\"op\""), 0u);
  EXPECT_EQ(count(html, "class=\"roof\""), 2u);  // xPU and Logic-PIM of the duplex-pe point
  EXPECT_GT(count(html, "class=\"span\""), 0u);
  EXPECT_GT(count(html, "class=\"line\""), 0u);
  EXPECT_NE(html.find("failed: "), std::string::npos);
  EXPECT_NE(html.find("<td>17.81 (14.7% of die)</td>"), std::string::npos);  // duplex-pe's Logic-PIM area
  EXPECT_NE(html.find("<td>-</td><td>"), std::string::npos);  // gpu: no PIM, no area (then its TPOT)
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("http://"), html.find("http://www.w3.org/2000/svg"));  // no external resources
}

// A prefix axis: each shared-prompt setting is its own series, labelled with its setting; a point whose
// params.prefix is malformed is named.
TEST(PrefixSweep, SettingsAreSeriesOfTheirOwn) {
  const fs::path dir = run_tiny_dense_study(
      "prefix", "[gpu]",
      "prefix: [{tokens: 0}, {tokens: 64, groups: 2, caching: false}, {tokens: 64, groups: 2}]\n");
  const ResultFolder f = load_result_folder(dir.string());
  ASSERT_EQ(f.points.size(), 3u);
  EXPECT_EQ(f.points[0].system, "gpu");
  EXPECT_EQ(f.points[1].system, "gpu [prefix=64x2, no caching]");
  EXPECT_EQ(f.points[2].system, "gpu [prefix=64x2]");
  for (const auto& p : f.points) EXPECT_TRUE(p.ok) << p.id << ": " << p.error;
  const std::string csv = read_text_file(dir / "combined.csv");
  EXPECT_EQ(count(csv, ",prefix=64x2,0."), 1u) << csv;  // the cached point's hit rate
  // Damage one point's params (and study.json's, so they still agree): the report names the key.
  for (const fs::path& file : {dir / "study.json", dir / "points" / (f.points[0].id + ".json")}) {
    std::string text = read_text_file(file);
    const std::size_t at = text.find("\"caching\": true");
    ASSERT_NE(at, std::string::npos) << file;
    text.replace(at, 15, "\"caching\": 1   ");
    std::ofstream(file) << text;
  }
  try {
    load_result_folder(dir.string());
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("params.prefix"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

// A speculative axis with its no-draft variant (tokens 0, no acceptance): the report reads every point, each
// setting its own series. A file whose value has another type than a chart reads fails naming the folder, and
// a report never replaces a file that is not a regular one.
TEST(SpeculativeSweep, TheNoDraftVariantIsASeriesToo) {
  const fs::path dir = run_tiny_dense_study(
      "speculative", "[gpu]", "speculative: [{tokens: 0}, {tokens: 2, acceptance: 0.7, draft: ngram}]\n");
  const ResultFolder f = load_result_folder(dir.string());
  ASSERT_EQ(f.points.size(), 2u);
  EXPECT_EQ(f.points[0].system, "gpu");
  EXPECT_NE(f.points[1].system, "gpu");
  for (const auto& p : f.points) EXPECT_TRUE(p.ok) << p.id << ": " << p.error;
  EXPECT_FALSE(build_report(f).empty());
  EXPECT_THROW(write_file_atomic("/dev/null", "x"), Error);
  fs::remove_all(dir);
}

// A cluster axis: each setting is its own series, labelled with its replicas and router; the cluster point
// runs on twice the devices.
TEST(ClusterSweep, SettingsAreSeriesOfTheirOwn) {
  const fs::path dir = run_tiny_dense_study(
      "cluster", "[gpu]",
      "prefix: [{tokens: 0, turns: 3}]\ncluster: [{replicas: 1}, {replicas: 2, router: cache-aware}]\n");
  const ResultFolder f = load_result_folder(dir.string());
  ASSERT_EQ(f.points.size(), 2u);
  for (const auto& p : f.points) EXPECT_TRUE(p.ok) << p.id << ": " << p.error;
  EXPECT_EQ(f.points[0].system, "gpu [turns=3, think=0s]");
  EXPECT_EQ(f.points[1].system, "gpu [turns=3, think=0s] [replicas=2, router=cache-aware]");
  const nlohmann::json one = read_json_file((dir / "points" / (f.points[0].id + ".json")).string());
  const nlohmann::json two = read_json_file((dir / "points" / (f.points[1].id + ".json")).string());
  EXPECT_EQ(two["result"]["devices"].get<int>(), 2 * one["result"]["devices"].get<int>());
  EXPECT_EQ(two["result"]["cluster"]["router"], "cache-aware");
  const std::string csv = read_text_file(dir / "combined.csv");
  EXPECT_EQ(count(csv, ",replicas=2, router=cache-aware"), 0u) << csv;  // quoted: it holds a comma
  // No capacity search (two empty columns), then the prefix cache's query tokens, no host tier.
  EXPECT_EQ(count(csv, ",\"replicas=2, router=cache-aware\",,,"), 1u) << csv;
  EXPECT_EQ(count(csv, ",,,\n"), 2u) << csv;
  fs::remove_all(dir);
}

// A trace load's point serves the trace's requests (the first `requests`) at their arrivals, and the result
// folder and its report read back.
TEST(TraceSweep, PointsReplayTheTrace) {
  const fs::path trace = temp_path("trace") += ".csv";
  std::ofstream(trace) << "arrival_s,input_tokens,output_tokens\n0,20,4\n0.01,12,8\n0.02,16,6\n5,16,6\n";
  const fs::path dir =
      run_tiny_dense_study("tracesweep", "[gpu]", "load: [\"trace:" + trace.string() + "\"]\n");
  const ResultFolder f = load_result_folder(dir.string());
  ASSERT_EQ(f.points.size(), 1u);
  ASSERT_TRUE(f.points[0].ok) << f.points[0].error;
  const nlohmann::json j = read_json_file((dir / "points" / (f.points[0].id + ".json")).string());
  EXPECT_EQ(j["result"]["requests"], 4);  // the trace's 4 (fewer than the study's 12)
  EXPECT_EQ(j["result"]["generated_tokens"], 4 + 8 + 6 + 6);
  EXPECT_GT(j["result"]["simulated_s"].get<double>(), 5.0);  // the last arrives at 5 s
  EXPECT_EQ(j["params"]["input_len"], 16);
  EXPECT_NE(build_report(f).find("trace:"), std::string::npos);
  fs::remove_all(dir);
  // A capacity search over a trace of 6 requests (more than the batch of 4, so a fast enough rate queues
  // them): its arrivals scaled in time, the same 6 requests at every probe.
  std::ofstream(trace) << "arrival_s,input_tokens,output_tokens\n0,20,4\n0.01,12,8\n0.02,16,6\n0.05,16,6\n"
                          "0.08,24,4\n0.1,16,6\n";
  const fs::path searched = run_tiny_dense_study(
      "tracecapacity", "[gpu]",
      "load: [\"trace:" + trace.string() + "\"]\nslo: {ttft_ms: 0.2}\ncapacity: {precision: 0.1}\n");
  const ResultFolder g = load_result_folder(searched.string());
  ASSERT_EQ(g.points.size(), 1u);
  ASSERT_TRUE(g.points[0].ok) << g.points[0].error;
  const nlohmann::json& c = g.points[0].result["capacity"];
  EXPECT_TRUE(c["converged"].get<bool>()) << c.dump(1);
  EXPECT_EQ(g.points[0].result["requests"], 6);
  EXPECT_GE(g.points[0].metric("slo", "attainment"), 0.9);
  EXPECT_LE(c["failing_rate_per_s"].get<double>(), 1.1 * c["max_rate_per_s"].get<double>());
  fs::remove_all(searched);
  fs::remove(trace);
}

// TPOT, the prefix cache's share and the latency objectives are in the report where the points have them:
// summary columns (with the measured values), TPOT among the latency charts, and an objectives section with
// attainment and goodput against the request rate.
TEST(ObjectivesReport, TpotCacheHitsAndObjectivesAreShown) {
  const fs::path dir =
      run_tiny_dense_study("objectives", "[gpu, duplex-pe]",
                           "load: [\"poisson:100\", \"poisson:400\"]\n"
                           "slo: {ttft_ms: 5, tpot_ms: 2}\nprefix: [{tokens: 64, groups: 2}]\n");
  const ResultFolder f = load_result_folder(dir.string());
  for (const auto& p : f.points) ASSERT_TRUE(p.ok) << p.id << ": " << p.error;
  const std::string html = build_report(f);
  EXPECT_EQ(
      count(html,
            "<th>TPOT p50 ms</th><th>prompt tokens from cache</th><th>within SLO</th><th>goodput req/s</th>"),
      1u);
  const PointRecord& first = f.points.front();
  EXPECT_NE(html.find(fmt::format("<td>{:.2f}</td><td>{:.1f}%</td><td>{:.1f}%</td><td>{:.2f}</td></tr>",
                                  first.metric("tpot_ms", "p50"),
                                  100 * first.result["prefix_cache"]["hit_rate"].get<double>(),
                                  100 * first.result["slo"]["attainment"].get<double>(),
                                  first.result["slo"]["goodput_req_s"].get<double>())),
            std::string::npos);
  EXPECT_NE(html.find("<h2>Latency objectives: TTFT 5 ms, TPOT 2 ms</h2>"), std::string::npos);
  // One chart each, as the TTFT p50 one (a chart names its title more than once).
  const std::size_t one_chart = count(html, ": TTFT p50 vs request rate");
  ASSERT_GT(one_chart, 0u);
  EXPECT_EQ(count(html, ": requests within the objectives vs request rate"), one_chart);
  EXPECT_EQ(count(html, ": goodput vs request rate"), one_chart);
  EXPECT_EQ(count(html, ": TPOT p50 vs request rate"), one_chart);
  // A study without them keeps the plain table and no objectives section.
  ResultFolder without = f;
  for (PointRecord& p : without.points) {
    p.result.erase("slo");
    p.result.erase("prefix_cache");
    p.result.erase("tpot_ms");
  }
  const std::string plain = build_report(without);
  EXPECT_EQ(plain.find("within SLO"), std::string::npos);
  EXPECT_EQ(plain.find("id=\"slo\""), std::string::npos);
  EXPECT_EQ(plain.find("TPOT"), std::string::npos);
  fs::remove_all(dir);
}

// Expert load balancing's figures (a point's JSON `expert_load_balancing`) get two summary columns, "-" on
// the points without them; a study without any keeps the plain table.
TEST(ExpertBalancingReport, ImbalanceAndRebalancingsAreShown) {
  const fs::path dir = run_tiny_dense_study("eplb", "[gpu]", "load: [closed, \"poisson:100\"]\n");
  ResultFolder f = load_result_folder(dir.string());
  ASSERT_GE(f.points.size(), 2u);
  const std::string plain = build_report(f);
  EXPECT_EQ(plain.find("expert rows busiest / mean"), std::string::npos);
  f.points.front().result["expert_load_balancing"] = {
      {"rebalancings", 12}, {"expert_move_s", 0.5}, {"imbalance_mean", 1.375}};
  const std::string html = build_report(f);
  EXPECT_EQ(count(html, "<th>expert rows busiest / mean</th><th>rebalancings</th>"), 1u);
  EXPECT_EQ(count(html, "<td>1.38</td><td>12</td></tr>"), 1u);
  EXPECT_EQ(count(html, "<td>-</td><td>-</td></tr>"), f.points.size() - 1);
  fs::remove_all(dir);
}

// A capacity study: each point is the run at its max rate, which meets the objectives; the report shows the
// rate in the summary and charts it with the objectives.
TEST(CapacityReport, EachPointIsTheRunAtItsMaxRate) {
  const fs::path dir = run_tiny_dense_study("capacity", "[gpu, duplex-pe]",
                                            "slo: {ttft_ms: 0.2}\ncapacity: {precision: 0.1}\n");
  const ResultFolder f = load_result_folder(dir.string());
  ASSERT_EQ(f.points.size(), 2u);
  for (const auto& p : f.points) {
    ASSERT_TRUE(p.ok) << p.id << ": " << p.error;
    const nlohmann::json& c = p.result["capacity"];
    ASSERT_TRUE(c["converged"].get<bool>()) << c.dump(1);
    EXPECT_GE(p.metric("slo", "attainment"), 0.9);
    EXPECT_LE(c["failing_rate_per_s"].get<double>(), 1.1 * c["max_rate_per_s"].get<double>());
    EXPECT_FALSE(c.contains("at_max"));  // the point's result is that run
  }
  const std::string html = build_report(f);
  EXPECT_EQ(count(html, "<th>max rate req/s</th>"), 1u);
  EXPECT_NE(html.find(fmt::format("<td>{:.3f}</td></tr>", f.points[1].metric("capacity", "max_rate_per_s"))),
            std::string::npos);
  EXPECT_NE(html.find(": highest rate within the objectives (requests/s)"), std::string::npos);
  EXPECT_NE(html.find("Capacity: the highest Poisson rate at which 90% of the requests meet both objectives "
                      "(bracketed to 10%)"),
            std::string::npos);
  const std::string csv = read_text_file(dir / "combined.csv");
  EXPECT_NE(csv.find(fmt::format(",{}", f.points[0].result["capacity"]["max_rate_per_s"].dump())),
            std::string::npos);
  fs::remove_all(dir);
}

TEST_F(TinySweep, BadOrPartialFoldersNameTheBadFile) {
  EXPECT_NE(report_error(temp_path("nothing")).find("not a folder"), std::string::npos);

  const fs::path missing = copy("missing");
  fs::remove(point_file(missing, 4));
  EXPECT_NE(report_error(missing).find(point_file(missing, 4) + ": missing"), std::string::npos) << report_error(missing);

  const fs::path corrupt = copy("corrupt");
  write_file_atomic(point_file(corrupt, 2), "{\"id\": ");
  EXPECT_NE(report_error(corrupt).find(point_file(corrupt, 2) + ": not valid JSON"), std::string::npos) << report_error(corrupt);

  const fs::path field = copy("field");
  nlohmann::json j = read_json_file(point_file(field, 0));
  j["result"]["tbt_ms"].erase("p99");
  write_file_atomic(point_file(field, 0), j.dump());
  EXPECT_NE(report_error(field).find(point_file(field, 0) + ": result.tbt_ms.p99: missing"), std::string::npos) << report_error(field);

  const fs::path study = copy("study");
  fs::remove(study / "study.json");
  EXPECT_NE(report_error(study).find((study / "study.json").string() + ": missing"), std::string::npos) << report_error(study);

  const fs::path stale = copy("stale");
  j = read_json_file(point_file(stale, 1));
  j["params"]["batch"] = 99;
  write_file_atomic(point_file(stale, 1), j.dump());
  EXPECT_NE(report_error(stale).find(point_file(stale, 1) + ": params: differ"), std::string::npos) << report_error(stale);

  for (const auto& d : {missing, corrupt, field, study, stale}) fs::remove_all(d);
}

std::string find_chromium() {
  if (const char* env = std::getenv("DUPLEX_CHROMIUM")) return env;
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"})
    if (fs::exists(p)) return p;
  return "";
}

std::string run_command(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  std::array<char, 4096> buf{};
  std::size_t n = 0;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  pclose(p);
  return out;
}

// The report has no script; the test appends one that asks the browser's layout engine for every chart's
// bounding box and counts the drawn marks, then reads the result from the serialised DOM.
TEST_F(TinySweep, ChromiumRendersEveryChart) {
  const std::string chromium = find_chromium();
  if (chromium.empty()) GTEST_SKIP() << "chromium not installed (apt-get install chromium); set DUPLEX_CHROMIUM to use another";
  const std::string html = build_report(load_result_folder(dir_->string()));
  const std::size_t charts = count(html, "<svg ");
  const std::string probe =
      "<script>(function(){const s=[...document.querySelectorAll('svg.chart')];"
      "const drawn=s.filter(e=>{const b=e.getBBox();return b.width>100&&b.height>50;}).length;"
      "const marks=document.querySelectorAll('svg.chart rect.bar,svg.chart rect.segment,svg.chart circle.op,"
      "svg.chart rect.span,svg.chart polyline.line').length;"
      "document.body.setAttribute('data-probe','charts='+s.length+' drawn='+drawn+' marks='+marks);})();</script>";
  const fs::path page = temp_path("page").string() + ".html";  // the extension makes Chromium parse it as HTML
  write_file_atomic(page, html.substr(0, html.rfind("</body>")) + probe + "</body></html>\n");
  const fs::path profile = temp_path("chromium-profile");
  const std::string dom = run_command("'" + chromium + "' --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir='" +
                                      profile.string() + "' --dump-dom 'file://" + page.string() + "' 2>/dev/null");
  fs::remove(page);
  fs::remove_all(profile);
  const std::string expect = "data-probe=\"charts=" + std::to_string(charts) + " drawn=" + std::to_string(charts) + " marks=";
  const std::size_t at = dom.find(expect);
  ASSERT_NE(at, std::string::npos) << "expected " << expect << "; DOM starts: " << dom.substr(0, 300);
  EXPECT_GT(std::stoi(dom.substr(at + expect.size())), 100);  // bars, segments, op dots, spans and lines
}

}  // namespace
}  // namespace duplex::host
