// The sweep driver with a stand-in point runner: files per point, resume rules, failed points, and output
// that does not depend on -j.
#include <gtest/gtest.h>
#include <unistd.h>
#include <atomic>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "duplex/base/error.hpp"
#include "sweep_files.hpp"
#include "sweep_runner.hpp"
#include "sweep_study.hpp"

namespace duplex::host {
namespace {
namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("duplex_sweep_test_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  return d;
}

Study demo_study(std::int64_t requests = 8) {
  return parse_study("study: demo\nmodels: [m1, m2]\nsystems: [gpu, bad-system, duplex]\nlengths: [[16, 8], [32, 4]]\n"
                     "batch: [2, 4]\nrequests: " + std::to_string(requests) + "\n",
                     "demo.yaml");
}

// Stand-in for run_point: a result that is a function of the parameters; "bad-system" fails.
struct CountingRunner {
  std::shared_ptr<std::atomic<int>> calls = std::make_shared<std::atomic<int>>(0);
  nlohmann::json operator()(const SweepPoint& p, const StudyOptions& o) const {
    ++*calls;
    nlohmann::json j = {{"id", p.id}, {"params", p.params(o)}};
    if (p.system == "bad-system") {
      j["status"] = "failed";
      j["error"] = "systems \"bad-system\" is neither a file nor a preset";
      return j;
    }
    j["status"] = "ok";
    j["result"] = {{"throughput_tok_s", static_cast<double>(p.batch * 100 + p.input_len) / 3.0}, {"devices", 4}};
    return j;
  }
};

std::map<std::string, std::string> folder_files(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != "wall_times.csv")
      out[fs::relative(e.path(), dir).string()] = read_text_file(e.path());
  return out;
}

TEST(SweepRunner, WritesOneRecordPerPointAndACombinedCsvInStudyOrder) {
  const fs::path dir = fresh_dir("basic");
  CountingRunner run;
  const SweepSummary s = run_sweep(demo_study(), dir.string(), 2, {}, run);
  EXPECT_EQ(s.points, 24);
  EXPECT_EQ(s.ran, 24);
  EXPECT_EQ(s.skipped, 0);
  EXPECT_EQ(s.failed, 8);  // every bad-system point, and the sweep went on
  EXPECT_EQ(*run.calls, 24);
  const auto points = demo_study().points();
  for (const auto& p : points) EXPECT_TRUE(fs::exists(dir / "points" / (p.id + ".json"))) << p.id;
  const std::string csv = read_text_file(dir / "combined.csv");
  std::size_t last = 0;
  for (const auto& p : points) {
    const std::size_t at = csv.find("\n" + p.id + ",");
    ASSERT_NE(at, std::string::npos) << p.id;
    EXPECT_GT(at, last);
    last = at;
  }
  EXPECT_NE(csv.find(",failed,"), std::string::npos);
  EXPECT_NE(csv.find("\"systems \"\"bad-system\"\" is neither a file nor a preset\""), std::string::npos);
  const auto study = read_json_file(dir / "study.json");
  EXPECT_EQ(study["points"].size(), 24u);
  fs::remove_all(dir);
}

// Row `row` (0-based, after the header) of a combined.csv, cell by column name; a quoted cell unquoted.
std::map<std::string, std::string> csv_row(const std::string& csv, std::size_t row) {
  std::vector<std::vector<std::string>> lines(1, std::vector<std::string>(1));
  bool quoted = false;
  for (const char c : csv) {
    if (c == '"') {
      quoted = !quoted;
    } else if (c == ',' && !quoted) {
      lines.back().emplace_back();
    } else if (c == '\n' && !quoted) {
      lines.emplace_back(1);
    } else {
      lines.back().back() += c;
    }
  }
  EXPECT_GT(lines.size(), row + 1) << csv;
  EXPECT_EQ(lines.at(row + 1).size(), lines.at(0).size()) << csv;
  std::map<std::string, std::string> cells;
  for (std::size_t i = 0; i < lines[0].size() && i < lines[row + 1].size(); ++i)
    cells[lines[0][i]] = lines[row + 1][i];
  return cells;
}

const nlohmann::json kParams = {{"model", "m"},    {"system", "gpu"}, {"input_len", 16},
                                {"output_len", 8}, {"batch", 2},      {"load", "closed"}};

// combined.csv states a shared-prompt point's setting and the share of prompt tokens its cache provided.
TEST(SweepRunner, CombinedCsvStatesThePrefixCacheHitRate) {
  nlohmann::json point = {{"id", "p"}, {"params", kParams}, {"status", "ok"}};
  point["params"]["prefix"] = {{"tokens", 2048}, {"groups", 4}, {"caching", true}};
  point["result"] = {{"prefix_cache", {{"hit_rate", 0.75}, {"query_tokens", 4000}}}};
  auto cells = csv_row(combined_csv({point}), 0);
  EXPECT_EQ(cells["prefix"], "prefix=2048x4");
  EXPECT_EQ(cells["prefix_hit_rate"], "0.75");
  EXPECT_EQ(cells["prefix_query_tokens"], "4000");
  EXPECT_EQ(cells["host_hit_tokens"], "");  // no host tier
  point["result"]["prefix_cache"]["host_hit_tokens"] = 1000;
  point["result"]["prefix_cache"]["host_remote_hit_tokens"] = 600;
  point["result"]["prefix_cache"]["disk_hit_tokens"] = 300;
  cells = csv_row(combined_csv({point}), 0);
  EXPECT_EQ(cells["host_hit_tokens"], "1000");
  EXPECT_EQ(cells["host_remote_hit_tokens"], "600");
  EXPECT_EQ(cells["disk_hit_tokens"], "300");
  point["params"]["prefix"]["caching"] = false;
  point["result"] = nlohmann::json::object();
  cells = csv_row(combined_csv({point}), 0);
  EXPECT_EQ(cells["prefix"], "prefix=2048x4, no caching");
  EXPECT_EQ(cells["prefix_hit_rate"], "");
}

// combined.csv states expert load balancing's figures; empty without it.
TEST(SweepRunner, CombinedCsvStatesExpertLoadBalancing) {
  nlohmann::json point = {{"id", "p"}, {"params", kParams}, {"status", "ok"}};
  point["result"] = nlohmann::json::object();
  auto cells = csv_row(combined_csv({point}), 0);
  EXPECT_EQ(cells["expert_imbalance"], "");
  point["result"]["expert_load_balancing"] = {
      {"rebalancings", 7}, {"expert_move_s", 0.25}, {"imbalance_mean", 1.5}};
  cells = csv_row(combined_csv({point}), 0);
  EXPECT_EQ(cells["expert_rebalancings"], "7");
  EXPECT_EQ(cells["expert_move_s"], "0.25");
  EXPECT_EQ(cells["expert_imbalance"], "1.5");
}

// combined.csv states a cluster point's replicas and router; empty for one system.
TEST(SweepRunner, CombinedCsvStatesTheCluster) {
  nlohmann::json point = {{"id", "p"}, {"params", kParams}, {"status", "ok"}};
  EXPECT_EQ(csv_row(combined_csv({point}), 0)["cluster"], "");
  point["params"]["cluster"] = {{"replicas", 4}, {"router", "least-loaded"}};
  EXPECT_EQ(csv_row(combined_csv({point}), 0)["cluster"], "replicas=4, router=least-loaded");
}

// combined.csv states a speculative point's setting and its tokens per verification (EAGLE's acceptance
// length), empty without drafts.
TEST(SweepRunner, CombinedCsvStatesTokensPerVerification) {
  nlohmann::json spec = {{"id", "a"}, {"params", kParams}, {"status", "ok"}};
  spec["params"]["speculative"] = {
      {"tokens", 3}, {"acceptance", 0.8}, {"draft", "ngram"}, {"tree_tokens", 9}, {"draft_topk", 3}};
  spec["result"] = {{"speculative", {{"tokens_per_verify", 2.5}}}};
  const nlohmann::json plain = {
      {"id", "b"}, {"params", kParams}, {"status", "ok"}, {"result", {{"devices", 4}}}};
  const std::string csv = combined_csv({spec, plain});
  auto cells = csv_row(csv, 0);
  EXPECT_EQ(cells["speculative"], "speculative=3, acceptance=0.8, draft=ngram, tree_tokens=9, draft_topk=3");
  EXPECT_EQ(cells["tokens_per_verify"], "2.5");
  cells = csv_row(csv, 1);
  EXPECT_EQ(cells["id"], "b");
  EXPECT_EQ(cells["devices"], "4");
  EXPECT_EQ(cells["speculative"], "");  // no speculative setting, no tokens per verification
  EXPECT_EQ(cells["tokens_per_verify"], "");
}

// combined.csv states the time per output token and, for a study with latency objectives, the share of
// requests meeting them and the goodput; empty cells otherwise.
TEST(SweepRunner, CombinedCsvStatesSloAttainmentAndGoodput) {
  nlohmann::json point = {{"id", "s"}, {"params", kParams}, {"status", "ok"}};
  point["result"] = {{"tpot_ms", {{"p50", 12.5}}}, {"slo", {{"attainment", 0.9}, {"goodput_req_s", 3.5}}}};
  auto cells = csv_row(combined_csv({point}), 0);
  EXPECT_EQ(cells["tpot_p50_ms"], "12.5");
  EXPECT_EQ(cells["slo_attainment"], "0.9");
  EXPECT_EQ(cells["goodput_req_s"], "3.5");
  point["result"].erase("slo");
  cells = csv_row(combined_csv({point}), 0);
  EXPECT_EQ(cells["slo_attainment"], "");
  EXPECT_EQ(cells["goodput_req_s"], "");
}

// combined.csv states a capacity search's rates; the failing one empty where none was found.
TEST(SweepRunner, CombinedCsvStatesTheCapacity) {
  nlohmann::json point = {{"id", "c"}, {"params", kParams}, {"status", "ok"}};
  point["result"] = {{"capacity", {{"max_rate_per_s", 4.5}, {"failing_rate_per_s", 4.55}}}};
  auto cells = csv_row(combined_csv({point}), 0);
  EXPECT_EQ(cells["max_rate_per_s"], "4.5");
  EXPECT_EQ(cells["failing_rate_per_s"], "4.55");
  point["result"]["capacity"]["failing_rate_per_s"] = nullptr;
  cells = csv_row(combined_csv({point}), 0);
  EXPECT_EQ(cells["max_rate_per_s"], "4.5");
  EXPECT_EQ(cells["failing_rate_per_s"], "");
}

TEST(SweepRunner, OutputIsByteIdenticalForAnyNumberOfJobs) {
  const fs::path a = fresh_dir("j1"), b = fresh_dir("j4");
  run_sweep(demo_study(), a.string(), 1, {}, CountingRunner{});
  run_sweep(demo_study(), b.string(), 4, {}, CountingRunner{});
  EXPECT_EQ(folder_files(a), folder_files(b));
  fs::remove_all(a);
  fs::remove_all(b);
}

TEST(SweepRunner, ResumeSkipsFinishedPointsAndRerunsFailedCorruptAndStaleOnes) {
  const fs::path dir = fresh_dir("resume");
  run_sweep(demo_study(), dir.string(), 2, {}, CountingRunner{});
  const auto before = folder_files(dir);

  CountingRunner again;
  const SweepSummary s = run_sweep(demo_study(), dir.string(), 2, {}, again);
  EXPECT_EQ(s.skipped, 16);
  EXPECT_EQ(*again.calls, 8);  // only the failed points
  EXPECT_EQ(folder_files(dir), before);

  const auto points = demo_study().points();
  write_file_atomic(dir / "points" / (points[0].id + ".json"), "{ not json");  // e.g. a killed writer's leftovers
  fs::remove(dir / "points" / (points[1].id + ".json"));
  CountingRunner repair;
  run_sweep(demo_study(), dir.string(), 2, {}, repair);
  EXPECT_EQ(*repair.calls, 8 + 2);
  EXPECT_EQ(folder_files(dir), before);

  CountingRunner changed;  // another request count: every stored point is stale
  const SweepSummary c = run_sweep(demo_study(16), dir.string(), 2, {}, changed);
  EXPECT_EQ(c.skipped, 0);
  EXPECT_EQ(*changed.calls, 24);
  EXPECT_EQ(read_json_file(dir / "points" / (points[0].id + ".json"))["params"]["options"]["requests"], 16);
  fs::remove_all(dir);
}

TEST(SweepRunner, ProgressReportsEveryPointRun) {
  const fs::path dir = fresh_dir("progress");
  std::vector<std::string> lines;
  run_sweep(demo_study(), dir.string(), 3, [&](const std::string& l) { lines.push_back(l); }, CountingRunner{});
  EXPECT_EQ(lines.size(), 24u);
  std::size_t failed = 0;
  for (const auto& l : lines) failed += l.find(" failed ") != std::string::npos && l.find("bad-system") != std::string::npos;
  EXPECT_EQ(failed, 8u);
  fs::remove_all(dir);
}

TEST(SweepRunner, RejectsZeroJobsAndAnUnwritableFolder) {
  EXPECT_THROW(run_sweep(demo_study(), fresh_dir("zero").string(), 0, {}, CountingRunner{}), Error);
  const fs::path file = fresh_dir("file");
  write_file_atomic(file, "x");
  try {
    run_sweep(demo_study(), (file / "sub").string(), 1, {}, CountingRunner{});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot create the result folder"), std::string::npos) << e.what();
  }
  fs::remove(file);
}

}  // namespace
}  // namespace duplex::host
