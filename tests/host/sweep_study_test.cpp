// Study YAML: strict parsing, the cross product in a fixed order, and errors naming file and key.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "duplex/base/error.hpp"
#include "duplex/compiler/model_spec.hpp"
#include "sweep_study.hpp"

namespace duplex::host {
namespace {

const std::string kStudy = R"(study: demo
description: two systems, two lengths
models: [tiny-moe]
systems: [gpu, duplex-pe]
lengths: [[64, 32], [128, 16]]
batch: [4, 8]
load: [closed, "poisson:2.5"]
requests: 16
seed: 7
scheduler: {policy: continuous, kv_block_tokens: 8}
record: {timeline_steps: 2, step_samples: 50}
pim_model: analytical
)";

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path) << text;
}

std::string error_of(const std::string& yaml) {
  try {
    parse_study(yaml, "study.yaml");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// One point per setting of the axis in `axis_yaml`: llama3-70b on the gpu, (64, 32), batch 4.
// A study of one gpu point, for the keys added to it.
const std::string kOneGpuPoint =
    "study: d\nmodels: [llama3-70b]\nsystems: [gpu]\nbatch: [1]\nrequests: 4\nlengths: [[8, 8]]\n";

Study gpu_study_with(const std::string& axis_yaml) {
  return parse_study(
      "study: axis\nmodels: [llama3-70b]\nsystems: [gpu]\nlengths: [[64, 32]]\nbatch: [4]\n"
      "requests: 8\n" +
          axis_yaml,
      "study.yaml");
}

TEST(SweepStudy, ExpandsTheCrossProductWithTheLastAxisFastest) {
  const Study s = parse_study(kStudy, "study.yaml");
  EXPECT_EQ(s.name, "demo");
  EXPECT_EQ(s.options.requests, 16);
  EXPECT_EQ(s.options.seed, 7u);
  EXPECT_EQ(s.options.kv_block_tokens, 8);
  EXPECT_EQ(s.options.timeline_steps, 2);
  EXPECT_EQ(s.options.pim_model, "analytical");
  const auto points = s.points();
  ASSERT_EQ(points.size(), 1u * 2 * 2 * 2 * 2);
  EXPECT_EQ(points[0].id, "tiny-moe__gpu__in64-out32__b4__closed");
  EXPECT_EQ(points[1].id, "tiny-moe__gpu__in64-out32__b4__poisson-2.5");
  EXPECT_TRUE(points[1].load.poisson);
  EXPECT_DOUBLE_EQ(points[1].load.rate_per_s, 2.5);
  EXPECT_EQ(points[2].batch, 8);
  EXPECT_EQ(points[4].input_len, 128);
  EXPECT_EQ(points[4].output_len, 16);
  EXPECT_EQ(points[8].system, "duplex-pe");
  EXPECT_EQ(points[0].params(s.options)["options"]["seed"], 7);
  EXPECT_NE(points[0].params(s.options), points[1].params(s.options));
}

// A name longer than 200 characters (many knobs) keeps its first 160 and a digest of the whole, so every
// point's file name fits a file system's 255 bytes and stays distinct.
TEST(SweepStudy, LongPointNamesAreShortenedWithADigest) {
  const Study s =
      parse_study(kOneGpuPoint +
                      "knobs:\n"
                      "  - {key: \"devices_per_model[a-rather-long-model-name-for-a-test]\", values: [8]}\n"
                      "  - {key: expert_load_balancing.window, values: [100]}\n"
                      "  - {key: expert_load_balancing.interval, values: [1000000000, 100]}\n"
                      "  - {key: expert_load_balancing.redundant_experts, values: [0, 32]}\n",
                  "study.yaml");
  const auto points = s.points();
  ASSERT_EQ(points.size(), 4u);
  for (const auto& p : points) {
    EXPECT_EQ(p.id.size(), 160u + 2 + 16) << p.id;
    EXPECT_TRUE(p.id.starts_with("llama3-70b__gpu__devices_per_model-a-rather-long-model-name")) << p.id;
  }
  for (std::size_t i = 1; i < points.size(); ++i) EXPECT_NE(points[i].id, points[0].id);
  // A short name stays whole.
  EXPECT_EQ(parse_study(kOneGpuPoint, "study.yaml").points()[0].id, "llama3-70b__gpu__in8-out8__b1__closed");
}

TEST(SweepStudy, DefaultsAreTheDocumentedOnes) {
  const Study s = parse_study("study: d\nmodels: [m]\nsystems: [s]\nlengths: [[8, 8]]\nbatch: [1]\nrequests: 4\n", "d.yaml");
  ASSERT_EQ(s.loads.size(), 1u);
  EXPECT_EQ(s.loads[0].text, "closed");
  EXPECT_DOUBLE_EQ(s.options.length_spread, 0.10);
  EXPECT_EQ(s.options.policy, "continuous");
  EXPECT_EQ(s.options.pim_model, "cycle");
  EXPECT_EQ(s.options.timeline_steps, 4);
}

TEST(SweepStudy, UnknownKeysAndBadValuesNameFileAndKey) {
  const std::string base = "study: d\nmodels: [m]\nsystems: [s]\nbatch: [1]\nrequests: 4\n";
  EXPECT_NE(error_of(base + "lengths: [[8, 8]]\nturbo: 1\n").find("study.yaml: turbo: unknown key"), std::string::npos);
  EXPECT_NE(error_of(base + "lengths: [[8, 8]]\nscheduler: {polcy: orca}\n").find("scheduler.polcy: unknown key"), std::string::npos);
  EXPECT_NE(error_of(base + "lengths: [[8, 8, 8]]\n").find("lengths[0]: is not a pair"), std::string::npos);
  EXPECT_NE(error_of(base + "lengths: [[8, x]]\n").find("lengths[0][1]: \"x\" is not an integer"), std::string::npos);
  EXPECT_NE(error_of(base + "lengths: [[0, 8]]\n").find("lengths[0][0]: 0 is out of range"), std::string::npos);
  EXPECT_NE(error_of(base + "lengths: []\n").find("lengths: is an empty list"), std::string::npos);
  EXPECT_NE(error_of(base + "lengths: [[8, 8]]\nload: [poisson:-1]\n").find("load[0]"), std::string::npos);
  EXPECT_NE(error_of(base + "lengths: [[8, 8]]\npim_model: rtl\n").find("pim_model: \"rtl\" is not a valid choice"),
            std::string::npos);
  EXPECT_NE(error_of("study: d\nmodels: [m, m]\nsystems: [s]\nbatch: [1]\nrequests: 4\nlengths: [[8, 8]]\n")
                .find("models[1]: \"m\" is listed twice"),
            std::string::npos);
  EXPECT_NE(error_of("study: d\nmodels: [m]\nsystems: [s]\nbatch: [1]\nlengths: [[8, 8]]\n").find("requests: missing required key"),
            std::string::npos);
  EXPECT_NE(error_of("study: a/b\nmodels: [m]\nsystems: [s]\nbatch: [1]\nrequests: 4\nlengths: [[8, 8]]\n")
                .find("study: \"a/b\" is not a plain name"),
            std::string::npos);
}

// routing: trace:FILE (what duplex run --routing-trace writes) is read and checked when the study is; its
// bytes' digest is part of every point's params, so editing the file makes a resumed sweep rerun the points.
TEST(SweepStudy, RoutingTracesAreReadNowAndTheirContentKeysThePoints) {
  namespace fs = std::filesystem;
  const fs::path trace =
      fs::temp_directory_path() / ("duplex_study_routing_" + std::to_string(::getpid()) + ".csv");
  const std::string base =
      "study: d\nmodels: [m]\nsystems: [s]\nbatch: [1]\nrequests: 4\nlengths: [[8, 8]]\n";
  write_text(trace, "step,layer,expert,count\n0,0,0,3\n0,0,1,1\n");
  const Study a = parse_study(base + "routing: trace:" + trace.string() + "\n", "d.yaml");
  EXPECT_EQ(a.options.routing_trace_digest.size(), 16u);
  const auto params_a = a.points()[0].params(a.options);
  EXPECT_EQ(params_a["options"]["routing_trace_digest"], a.options.routing_trace_digest);
  write_text(trace, "step,layer,expert,count\n0,0,0,2\n0,0,1,2\n");
  const Study b = parse_study(base + "routing: trace:" + trace.string() + "\n", "d.yaml");
  EXPECT_NE(b.points()[0].params(b.options), params_a);
  write_text(trace, "step,layer,expert\n0,0,0\n");
  EXPECT_NE(error_of(base + "routing: trace:" + trace.string() + "\n").find(trace.string()),
            std::string::npos);
  fs::remove(trace);
  const std::string missing = error_of(base + "routing: trace:" + trace.string() + "\n");
  EXPECT_NE(missing.find(trace.string()), std::string::npos) << missing;
  EXPECT_NE(error_of(base + "routing: zipf:x\n").find("study.yaml: routing:"), std::string::npos);
  EXPECT_NE(error_of(base + "routing: hot\n").find("expected uniform, zipf:S (S >= 0) or trace:FILE"),
            std::string::npos);
  EXPECT_TRUE(parse_study(base, "d.yaml").options.routing_trace_digest.empty());
}

// load: trace:FILE replays a request trace: read when the study is (the first `requests` rows), its points
// made once (not per lengths pair), their lengths the trace's means, its bytes' digest in their params.
TEST(SweepStudy, TraceLoadsAreReadNowAndTheirContentKeysThePoints) {
  namespace fs = std::filesystem;
  const fs::path trace =
      fs::temp_directory_path() / ("duplex_study_trace_" + std::to_string(::getpid()) + ".csv");
  write_text(trace, "arrival_s,input_tokens,output_tokens\n0,100,10\n0.5,200,20\n1,301,31\n9,4000,400\n");
  const std::string load = "load: [closed, \"trace:" + trace.string() + "\"]\n";
  const std::string base = "study: d\nmodels: [llama3-70b]\nsystems: [gpu]\nbatch: [1]\nrequests: 3\n";
  const Study s = parse_study(base + "lengths: [[64, 32], [128, 16]]\n" + load, "d.yaml");
  const std::vector<SweepPoint> points = s.points();
  ASSERT_EQ(points.size(), 3u);  // closed x 2 lengths, the trace once
  const SweepPoint& t = points[1];
  ASSERT_TRUE(t.load.trace());
  EXPECT_FALSE(points[0].load.trace());
  EXPECT_EQ(t.load.trace_rows->size(), 3u);  // the first `requests`
  EXPECT_EQ(t.input_len, 200);               // (100 + 200 + 301) / 3, rounded
  EXPECT_EQ(t.output_len, 20);
  EXPECT_EQ(t.id.find("llama3-70b__gpu__in200-out20__b1__trace"), 0u) << t.id;
  const nlohmann::json params = t.params(s.options);
  EXPECT_EQ(params["trace_digest"].get<std::string>().size(), 16u);
  EXPECT_FALSE(points[0].params(s.options).contains("trace_digest"));
  write_text(trace, "arrival_s,input_tokens,output_tokens\n0,100,10\n0.5,200,20\n1,301,32\n");
  EXPECT_NE(parse_study(base + "lengths: [[64, 32]]\n" + load, "d.yaml").points()[1].params(s.options),
            params);
  // Only trace loads: no lengths needed; a synthetic load needs them.
  EXPECT_EQ(parse_study(base + "load: [\"trace:" + trace.string() + "\"]\n", "d.yaml").points().size(), 1u);
  EXPECT_NE(error_of(base + load).find("lengths: missing required key"), std::string::npos)
      << error_of(base + load);
  const std::string lengths = "lengths: [[64, 32]]\n";
  EXPECT_NE(error_of(base + lengths + load + "prefix: [{tokens: 64}]\n")
                .find("prefix: shared prompts or conversations beside a trace load"),
            std::string::npos);
  EXPECT_NE(error_of(base + lengths + load + "slo: {ttft_ms: 100}\ncapacity: {duration_s: 10}\n")
                .find("capacity: duration_s beside a trace load"),
            std::string::npos);
  fs::remove(trace);
  const std::string missing = error_of(base + lengths + load);
  EXPECT_NE(missing.find("study.yaml: load[1]"), std::string::npos) << missing;
  EXPECT_NE(missing.find(trace.string()), std::string::npos) << missing;
  EXPECT_NE(error_of(base + lengths + "load: [\"trace:\"]\n").find("load[0]: \"trace:\" is not a load"),
            std::string::npos);
}

TEST(SweepStudy, NamesThatCollideAfterSanitisingAreRejected) {
  EXPECT_NE(error_of("study: d\nmodels: [m]\nsystems: [a/b, a:b]\nbatch: [1]\nrequests: 4\nlengths: [[8, 8]]\n")
                .find("two points get the name"),
            std::string::npos);
}

// Design knobs: the cross product per system, only on the systems a knob names; ids, params and labels
// carry the setting; every system x setting is read at load time, so mistakes stop the study up front.
TEST(SweepStudy, KnobsMultiplyTheSystemsTheyApplyTo) {
  const Study s = parse_study(R"(study: knobs
models: [tiny-moe]
systems: [gpu, duplex-pe]
lengths: [[64, 32]]
batch: [4, 8]
requests: 8
knobs:
  - {key: pim.clock, values: [500MHz, 800MHz], systems: [duplex-pe]}
  - {key: memory.data_rate, values: [5.2Gbps, 6.4Gbps]}
)",
                              "study.yaml");
  const auto points = s.points();
  // gpu: 2 data rates x 2 batches; duplex-pe: 2 clocks x 2 data rates x 2 batches.
  ASSERT_EQ(points.size(), 4u + 8u);
  EXPECT_EQ(points[0].id, "tiny-moe__gpu__memory.data_rate-5.2Gbps__in64-out32__b4__closed");
  EXPECT_EQ(points[4].id, "tiny-moe__duplex-pe__pim.clock-500MHz__memory.data_rate-5.2Gbps__in64-out32__b4__closed");
  EXPECT_EQ(points[6].knobs, (std::vector<std::pair<std::string, std::string>>{{"pim.clock", "500MHz"},
                                                                                {"memory.data_rate", "6.4Gbps"}}));
  EXPECT_EQ(points[8].knobs.front().second, "800MHz");
  const nlohmann::json params = points[6].params(s.options);
  EXPECT_EQ(params["knobs"], nlohmann::json::parse(R"([["pim.clock", "500MHz"], ["memory.data_rate", "6.4Gbps"]])"));
  EXPECT_EQ(system_label(params["system"], &params["knobs"]), "duplex-pe [pim.clock=500MHz, memory.data_rate=6.4Gbps]");
  EXPECT_EQ(knob_settings(&params["knobs"]), "pim.clock=500MHz;memory.data_rate=6.4Gbps");
  ASSERT_EQ(points[6].overrides().size(), 2u);
  EXPECT_EQ(points[6].overrides()[0].origin, "study.yaml: knobs");
  // Without knobs, params keep their old form (stored points of existing studies stay valid).
  EXPECT_FALSE(parse_study(kStudy, "study.yaml").points()[0].params(s.options).contains("knobs"));
}

TEST(SweepStudy, BadKnobsNameFileAndKey) {
  const std::string base = "study: d\nmodels: [tiny-moe]\nsystems: [gpu, duplex]\nbatch: [1]\nrequests: 4\nlengths: [[8, 8]]\n";
  EXPECT_NE(error_of(base + "knobs: []\n").find("knobs: is an empty list"), std::string::npos);
  EXPECT_NE(error_of(base + "knobs: [{key: pim.clock}]\n").find("knobs[0].values: missing required key"),
            std::string::npos);
  EXPECT_NE(error_of(base + "knobs: [{key: pim.clock, values: [1GHz], system: [duplex]}]\n")
                .find("knobs[0].system: unknown key"),
            std::string::npos);
  EXPECT_NE(error_of(base + "knobs: [{key: pim.clock, values: [1GHz], systems: [duplex-pe]}]\n")
                .find("knobs[0].systems: \"duplex-pe\" is not one of the study's systems"),
            std::string::npos);
  EXPECT_NE(error_of(base + "knobs: [{key: a, values: [1]}, {key: a, values: [2]}]\n").find("is a knob twice"),
            std::string::npos);
  // Read against the systems at load time: gpu has no Logic-PIM, and a value must parse.
  EXPECT_NE(error_of(base + "knobs: [{key: pim.clock, values: [1GHz]}]\n").find("study.yaml: knobs: pim.kind: missing required key"),
            std::string::npos);
  EXPECT_NE(error_of(base + "knobs: [{key: pim.clock, values: [fast], systems: [duplex]}]\n")
                .find("study.yaml: knobs: pim.clock: \"fast\" is not a number with a unit"),
            std::string::npos);
}

// A speculative axis: one set of points per setting, after the knobs; off (tokens 0) keeps the plain id, the
// others name their drafts. params state the setting (only when the study has the axis), and so do reports.
TEST(SweepStudy, SpeculativeSettingsMultiplyThePoints) {
  const Study s = parse_study(R"(study: spec
models: [llama3-70b]
systems: [gpu, duplex-pe]
lengths: [[64, 32]]
batch: [4]
requests: 8
speculative:
  - {tokens: 0}
  - {tokens: 3, acceptance: 0.8, draft: ngram}
  - {tokens: 2, acceptance: 0.6, draft: llama-3.2-1b}
  - {tokens: 3, acceptance: [0.9, 0.75, 0.6], draft: ngram}
)",
                              "study.yaml");
  const auto points = s.points();
  ASSERT_EQ(points.size(), 8u);
  EXPECT_EQ(points[0].id, "llama3-70b__gpu__in64-out32__b4__closed");
  EXPECT_EQ(points[1].id, "llama3-70b__gpu__spec3-a0.8-ngram__in64-out32__b4__closed");
  EXPECT_EQ(points[6].id, "llama3-70b__duplex-pe__spec2-a0.6-llama-3.2-1b__in64-out32__b4__closed");
  // Acceptance by draft position: a list in params, "/" between positions in the text.
  EXPECT_EQ(points[3].id, "llama3-70b__gpu__spec3-a0.9_0.75_0.6-ngram__in64-out32__b4__closed");
  const nlohmann::json falling = points[3].params(s.options)["speculative"];
  EXPECT_EQ(falling["acceptance"], nlohmann::json::parse("[0.9, 0.75, 0.6]"));
  EXPECT_EQ(speculative_text(&falling), "speculative=3, acceptance=0.9/0.75/0.6, draft=ngram");
  const nlohmann::json params = points[1].params(s.options);
  EXPECT_EQ(params["speculative"],
            nlohmann::json::parse(R"({"tokens": 3, "acceptance": 0.8, "draft": "ngram"})"));
  EXPECT_EQ(speculative_text(&params["speculative"]), "speculative=3, acceptance=0.8, draft=ngram");
  EXPECT_EQ(speculative_text(&points[0].params(s.options)["speculative"]), "");
  EXPECT_FALSE(parse_study(kStudy, "study.yaml").points()[0].params(s.options).contains("speculative"));
}

// A prefix axis: shared system prompts, with prefix caching on or off, one set of points per setting after
// the speculative ones; none (tokens 0) keeps the plain id and params.
TEST(SweepStudy, PrefixSettingsMultiplyThePoints) {
  const Study s = gpu_study_with(R"(prefix:
  - {tokens: 0}
  - {tokens: 512, groups: 4, caching: false}
  - {tokens: 512, groups: 4}
)");
  const auto points = s.points();
  ASSERT_EQ(points.size(), 3u);
  EXPECT_EQ(points[0].id, "llama3-70b__gpu__in64-out32__b4__closed");
  EXPECT_EQ(points[1].id, "llama3-70b__gpu__prefix512x4-nocache__in64-out32__b4__closed");
  EXPECT_EQ(points[2].id, "llama3-70b__gpu__prefix512x4__in64-out32__b4__closed");
  const nlohmann::json params = points[1].params(s.options);
  EXPECT_EQ(params["prefix"], nlohmann::json::parse(R"({"tokens": 512, "groups": 4, "caching": false})"));
  EXPECT_EQ(prefix_text(&params["prefix"]), "prefix=512x4, no caching");
  EXPECT_EQ(prefix_text(&points[0].params(s.options)["prefix"]), "");
  EXPECT_FALSE(parse_study(kStudy, "study.yaml").points()[0].params(s.options).contains("prefix"));
  const std::string base = kOneGpuPoint;
  EXPECT_NE(error_of(base + "prefix: [{tokens: 0, caching: false}]\n").find("prefix[0].tokens"),
            std::string::npos);
  EXPECT_NE(error_of(base + "prefix: [{tokens: 8, groups: 0}]\n").find("prefix[0].groups"),
            std::string::npos);
  EXPECT_NE(
      error_of(base + "prefix: [{tokens: 8}, {tokens: 8, groups: 1}]\n").find("prefix[1]: is listed twice"),
      std::string::npos);
  EXPECT_NE(error_of(base + "prefix: [{tokens: 8, share: 2}]\n").find("share"), std::string::npos);
  EXPECT_NE(error_of(base + "prefix: [{tokens: 0, think_s: 2}]\n").find("prefix[0].think_s"),
            std::string::npos);
}

// A cluster axis: replicas behind a router, one set of points per setting after the prefix ones; one
// replica keeps the plain id.
TEST(SweepStudy, ClusterSettingsMultiplyThePoints) {
  const Study s = gpu_study_with(R"(cluster:
  - {replicas: 1}
  - {replicas: 4}
  - {replicas: 4, router: cache-aware}
)");
  const auto points = s.points();
  ASSERT_EQ(points.size(), 3u);
  EXPECT_EQ(points[0].id, "llama3-70b__gpu__in64-out32__b4__closed");
  EXPECT_EQ(points[1].id, "llama3-70b__gpu__x4-round-robin__in64-out32__b4__closed");
  EXPECT_EQ(points[2].id, "llama3-70b__gpu__x4-cache-aware__in64-out32__b4__closed");
  const nlohmann::json params = points[2].params(s.options);
  EXPECT_EQ(params["cluster"], nlohmann::json::parse(R"({"replicas": 4, "router": "cache-aware"})"));
  EXPECT_EQ(cluster_text(&params["cluster"]), "replicas=4, router=cache-aware");
  EXPECT_EQ(cluster_text(&points[0].params(s.options)["cluster"]), "");
  EXPECT_FALSE(parse_study(kStudy, "study.yaml").points()[0].params(s.options).contains("cluster"));
  const std::string base = kOneGpuPoint;
  EXPECT_NE(error_of(base + "cluster: [{replicas: 0}]\n").find("cluster[0].replicas"), std::string::npos);
  EXPECT_NE(error_of(base + "cluster: [{replicas: 2, router: random}]\n").find("cluster[0].router"),
            std::string::npos);
  EXPECT_NE(error_of(base + "cluster: [{replicas: 1, router: least-loaded}]\n")
                .find("cluster[0].router: a router for one replica"),
            std::string::npos);
  EXPECT_NE(error_of(base + "cluster: [{replicas: 2}, {replicas: 2, router: round-robin}]\n")
                .find("cluster[1]: is listed twice"),
            std::string::npos);
}

// Latency objectives are a study option: in every point's params only when set, checked when read.
TEST(SweepStudy, LatencyObjectivesAreAnOption) {
  const Study s = gpu_study_with("slo: {ttft_ms: 2000, tpot_ms: 100}\n");
  EXPECT_EQ(s.options.slo_ttft_ms, 2000);
  EXPECT_EQ(s.options.slo_tpot_ms, 100);
  EXPECT_EQ(s.points()[0].params(s.options)["options"]["slo"],
            nlohmann::json::parse(R"({"ttft_ms": 2000.0, "tpot_ms": 100.0})"));
  const Study plain = gpu_study_with("");
  EXPECT_FALSE(plain.points()[0].params(plain.options)["options"].contains("slo"));
  const std::string base = kOneGpuPoint;
  EXPECT_NE(error_of(base + "slo: {ttft_ms: -1}\n").find("slo.ttft_ms"), std::string::npos);
  EXPECT_NE(error_of(base + "slo: {e2e_ms: 5}\n").find("e2e_ms"), std::string::npos);
}

// A capacity search is a study option beside the objectives: in every point's params only when set.
TEST(SweepStudy, CapacitySearchIsAnOptionBesideTheObjectives) {
  const Study s = gpu_study_with("slo: {ttft_ms: 2000}\ncapacity: {attainment: 0.95}\n");
  EXPECT_TRUE(s.options.capacity);
  EXPECT_EQ(s.options.capacity_attainment, 0.95);
  EXPECT_EQ(s.options.capacity_precision, 0.02);
  EXPECT_EQ(s.points()[0].params(s.options)["options"]["capacity"],
            nlohmann::json::parse(R"({"attainment": 0.95, "precision": 0.02})"));
  const Study plain = gpu_study_with("slo: {ttft_ms: 2000}\n");
  EXPECT_FALSE(plain.points()[0].params(plain.options)["options"].contains("capacity"));
  const std::string base = kOneGpuPoint;
  EXPECT_NE(error_of(base + "capacity: {}\n").find("capacity: a capacity search without latency objectives"),
            std::string::npos);
  EXPECT_NE(error_of(base + "slo: {ttft_ms: 5}\ncapacity: {attainment: 0}\n").find("capacity.attainment"),
            std::string::npos);
  EXPECT_NE(error_of(base + "slo: {ttft_ms: 5}\ncapacity: {precision: 2}\n").find("capacity.precision"),
            std::string::npos);
  EXPECT_NE(error_of(base + "slo: {ttft_ms: 5}\ncapacity: {rate: 2}\n").find("rate"), std::string::npos);
  EXPECT_NE(error_of(base + "slo: {ttft_ms: 5}\ncapacity: {duration_s: -3}\n").find("capacity.duration_s"),
            std::string::npos);
  const Study timed = gpu_study_with("slo: {ttft_ms: 2000}\ncapacity: {duration_s: 60}\n");
  EXPECT_EQ(timed.options.capacity_duration_s, 60);
  EXPECT_EQ(timed.points()[0].params(timed.options)["options"]["capacity"]["duration_s"], 60.0);
}

// Conversations are prefix settings too (turns > 1): their id, params and text state turns and think time,
// with or without a system prompt and caching.
TEST(SweepStudy, ConversationsArePrefixSettings) {
  const Study s = gpu_study_with(R"(prefix:
  - {tokens: 0, turns: 8, think_s: 2.5}
  - {tokens: 0, turns: 8, think_s: 2.5, caching: false}
  - {tokens: 512, groups: 2, turns: 4}
)");
  const auto points = s.points();
  ASSERT_EQ(points.size(), 3u);
  EXPECT_EQ(points[0].id, "llama3-70b__gpu__turns8-think2.5__in64-out32__b4__closed");
  EXPECT_EQ(points[1].id, "llama3-70b__gpu__turns8-think2.5-nocache__in64-out32__b4__closed");
  EXPECT_EQ(points[2].id, "llama3-70b__gpu__prefix512x2__turns4-think0__in64-out32__b4__closed");
  const nlohmann::json chat = points[1].params(s.options)["prefix"];
  EXPECT_EQ(chat, nlohmann::json::parse(
                      R"({"tokens": 0, "groups": 1, "caching": false, "turns": 8, "think_s": 2.5})"));
  EXPECT_EQ(prefix_text(&chat), "turns=8, think=2.5s, no caching");
  EXPECT_EQ(prefix_text(&points[2].params(s.options)["prefix"]), "prefix=512x2, turns=4, think=0s");
}

// A draft tree (tree_tokens, draft_topk) is a setting of its own: its id, params and text state its shape; a
// chain's params stay as they were.
TEST(SweepStudy, DraftTreesAreSpeculativeSettings) {
  const Study s = parse_study(R"(study: tree
models: [llama3-70b]
systems: [gpu]
lengths: [[64, 32]]
batch: [4]
requests: 8
speculative:
  - {tokens: 3, acceptance: 0.8, draft: ngram}
  - {tokens: 3, acceptance: 0.8, draft: ngram, tree_tokens: 10, draft_topk: 2}
)",
                              "study.yaml");
  const auto points = s.points();
  ASSERT_EQ(points.size(), 2u);
  EXPECT_EQ(points[1].id, "llama3-70b__gpu__spec3-a0.8-ngram-t10k2__in64-out32__b4__closed");
  const nlohmann::json tree = points[1].params(s.options)["speculative"];
  EXPECT_EQ(tree,
            nlohmann::json::parse(
                R"({"tokens": 3, "acceptance": 0.8, "draft": "ngram", "tree_tokens": 10, "draft_topk": 2})"));
  EXPECT_EQ(speculative_text(&tree),
            "speculative=3, acceptance=0.8, draft=ngram, tree_tokens=10, draft_topk=2");
  EXPECT_FALSE(points[0].params(s.options)["speculative"].contains("tree_tokens"));
  const std::string base = kOneGpuPoint;
  EXPECT_NE(error_of(base + "speculative: [{tokens: 3, acceptance: 0.5, draft: ngram, tree_tokens: 11, "
                            "draft_topk: 2}]\n")
                .find("speculative[0].tree_tokens: scheduler tree_tokens is 11; a tree of depth 3 expanding "
                      "draft_topk 2 nodes per depth proposes at most 10 candidates"),
            std::string::npos);
  EXPECT_NE(error_of(base + "speculative: [{tokens: 3, acceptance: 0.5, draft: ngram, tree_tokens: 2}]\n")
                .find("speculative[0].tree_tokens: scheduler tree_tokens is 2"),
            std::string::npos);
  EXPECT_NE(error_of(base + "speculative: [{tokens: 3, acceptance: 0.5, draft: ngram, draft_topk: 2}]\n")
                .find("speculative[0].draft_topk: scheduler draft_topk is 2"),
            std::string::npos);
  EXPECT_NE(error_of(base + "speculative: [{tokens: 3, acceptance: 0.5, draft: ngram, tree_tokens: 129}]\n")
                .find("speculative[0].tree_tokens"),
            std::string::npos);
  EXPECT_NE(error_of(base + "speculative: [{tokens: 0, tree_tokens: 8}]\n")
                .find("speculative[0].tree_tokens: unknown key"),
            std::string::npos);
}

TEST(SweepStudy, BadSpeculativeSettingsNameFileAndKey) {
  const std::string base = kOneGpuPoint;
  EXPECT_NE(error_of(base + "speculative: []\n").find("speculative: is an empty list"), std::string::npos);
  EXPECT_NE(error_of(base + "speculative: [{tokens: 3, draft: ngram}]\n")
                .find("speculative[0].acceptance: missing required key"),
            std::string::npos);
  EXPECT_NE(error_of(base + "speculative: [{tokens: 3, acceptance: 0.5}]\n")
                .find("speculative[0].draft: missing required key"),
            std::string::npos);
  EXPECT_NE(error_of(base + "speculative: [{tokens: 17, acceptance: 0.5, draft: ngram}]\n")
                .find("speculative[0].tokens"),
            std::string::npos);
  EXPECT_NE(error_of(base + "speculative: [{tokens: 2, acceptance: 1.5, draft: ngram}]\n")
                .find("speculative[0].acceptance: 1.5 is out of range"),
            std::string::npos);
  EXPECT_NE(error_of(base + "speculative: [{tokens: 2, acceptance: [0.9, 1.2], draft: ngram}]\n")
                .find("speculative[0].acceptance[1]: 1.2 is out of range"),
            std::string::npos);
  EXPECT_NE(error_of(base + "speculative: [{tokens: 2, acceptance: [], draft: ngram}]\n")
                .find("speculative[0].acceptance: lists 0 probabilities; expected 1 to 16"),
            std::string::npos);
  EXPECT_NE(error_of(base + "speculative: [{tokens: 2, acceptance: [0.9, high], draft: ngram}]\n")
                .find("speculative[0].acceptance[1]: \"high\" is not a number"),
            std::string::npos);
  EXPECT_NE(error_of(base + "speculative: [{tokens: 0, acceptance: 0.5}]\n")
                .find("speculative[0].acceptance: unknown key"),
            std::string::npos);
  EXPECT_NE(
      error_of(base + "speculative: [{tokens: 2, acceptance: 0.5, draft: tiny-dense}]\n")
          .find(
              "speculative[0].draft: tiny-dense has a vocabulary of 1024 tokens, model llama3-70b of 128256"),
      std::string::npos);
  EXPECT_NE(error_of(base + "speculative: [{tokens: 2, acceptance: 0.5, draft: no-such-model}]\n")
                .find("speculative[0].draft"),
            std::string::npos);
  EXPECT_NE(
      error_of(base + "speculative: [{tokens: 0}, {tokens: 0}]\n").find("speculative[1]: is listed twice"),
      std::string::npos);
  EXPECT_NE(error_of(base + "speculative: [{tokens: 1, acceptance: 0.8, draft: mtp}]\n")
                .find("speculative[0].draft: model llama3-70b has no multi-token-prediction module"),
            std::string::npos);
}

TEST(SweepStudy, MissingFileIsAClearError) {
  try {
    load_study("no/such/study.yaml");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no/such/study.yaml: missing or unreadable"), std::string::npos) << e.what();
  }
}

// Every study shipped in bench/repro and bench/design reads, and so does each of its models (a preset, or a
// file named from the repository root, as the READMEs run them); a YAML there without `study:` is a model
// variant a study names.
TEST(StudyFile, ShippedStudiesAndTheirModelsRead) {
  namespace fs = std::filesystem;
  const fs::path root = DUPLEX_SOURCE_DIR;
  int studies = 0;
  for (const char* dir : {"bench/repro", "bench/design"})
    for (const auto& entry : fs::directory_iterator(root / dir)) {
      if (entry.path().extension() != ".yaml") continue;
      std::ifstream in(entry.path());
      const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (!text.starts_with("study:")) continue;
      SCOPED_TRACE(entry.path().string());
      const Study study = load_study(entry.path().string());
      EXPECT_FALSE(study.points().empty());
      for (const std::string& model : study.models) {
        const std::string name = fs::exists(root / model) ? (root / model).string() : model;
        EXPECT_NO_THROW(compiler::load_model(name)) << model;
      }
      ++studies;
    }
  EXPECT_GE(studies, 15);
}

}  // namespace
}  // namespace duplex::host
