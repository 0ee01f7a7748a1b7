#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>

#include "duplex/base/config.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/scheduler/scheduler_config.hpp"
#include "duplex/runtime/workload/workload_config.hpp"

namespace duplex::runtime {
namespace {

WorkloadSpec parse(const std::string& yaml) { return read_workload(ConfigNode::parse(yaml, "w.yaml")); }

std::string error_of(const std::string& yaml) {
  try {
    parse(yaml);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(WorkloadConfig, ClosedGaussianUniform) {
  const WorkloadSpec w = parse(R"(
seed: 5
requests: 100
arrival: {kind: closed, concurrency: 8}
lengths: {kind: gaussian, input: 256, output: 128, input_stddev: 25.6, output_stddev: {value: 12.8, source: x}}
routing: {kind: uniform}
)");
  EXPECT_EQ(w.seed, 5u);
  EXPECT_EQ(w.requests, 100);
  EXPECT_EQ(w.arrival.kind, ArrivalSpec::Kind::closed);
  EXPECT_EQ(w.arrival.concurrency, 8);
  ASSERT_TRUE(w.lengths.has_value());
  EXPECT_EQ(w.lengths->kind, LengthDistribution::Kind::gaussian);
  EXPECT_EQ(w.lengths->output_stddev, 12.8);
  ASSERT_TRUE(w.routing.has_value());
  auto source = make_request_source(w);
  EXPECT_EQ(source->total_requests(), 100);
  EXPECT_EQ(source->take_arrived(Time{}).size(), 8u);
  ExpertRouter router = make_expert_router(w);
  EXPECT_EQ(router.kind(), ExpertRouter::Kind::uniform);
}

TEST(WorkloadConfig, PoissonFixedZipfAndNoRouting) {
  WorkloadSpec w = parse(R"(
seed: 1
requests: 10
arrival: {kind: poisson, rate_per_s: 4.5}
lengths: {kind: fixed, input: 64, output: 16}
routing: {kind: zipf, s: 1.1}
)");
  EXPECT_EQ(w.arrival.rate_per_s, 4.5);
  EXPECT_EQ(w.routing->zipf_s, 1.1);
  w = parse("seed: 1\nrequests: 3\narrival: {kind: poisson, rate_per_s: 1}\nlengths: {kind: fixed, input: 1, "
            "output: 1}\n");
  EXPECT_FALSE(w.routing.has_value());
  EXPECT_THROW(make_expert_router(w), Error);
}

TEST(WorkloadConfig, SameSeedSameRequests) {
  const std::string yaml = "seed: 3\nrequests: 50\narrival: {kind: poisson, rate_per_s: 10}\n"
                           "lengths: {kind: gaussian, input: 100, output: 50, input_stddev: 10, output_stddev: 5}\n";
  auto a = make_request_source(parse(yaml));
  auto b = make_request_source(parse(yaml));
  EXPECT_EQ(a->take_arrived(seconds(1e6)), b->take_arrived(seconds(1e6)));
}

TEST(WorkloadConfig, StrictErrorsNameTheKey) {
  const std::string base = "seed: 1\nrequests: 3\nlengths: {kind: fixed, input: 4, output: 4}\n";
  EXPECT_NE(error_of(base + "arrival: {kind: closed, concurrency: 2, users: 3}\n").find("users"), std::string::npos);
  EXPECT_NE(error_of(base + "arrival: {kind: burst}\n").find("arrival.kind"), std::string::npos);
  EXPECT_NE(error_of(base + "arrival: {kind: poisson, rate_per_s: 0}\n").find("rate_per_s"), std::string::npos);
  EXPECT_NE(error_of(base + "arrival: {kind: closed, concurrency: 2}\nrouting: {kind: zipf, s: 20}\n").find("routing.s"),
            std::string::npos);
  EXPECT_NE(error_of("seed: 1\nrequests: 3\narrival: {kind: closed, concurrency: 2}\n").find("lengths"),
            std::string::npos);
  EXPECT_NE(error_of("seed: 1\nrequests: 3\narrival: {kind: closed, concurrency: 2}\nlengths: {kind: trace}\n")
                .find("lengths.kind"),
            std::string::npos);
  EXPECT_NE(error_of("seed: 1\narrival: {kind: closed, concurrency: 2}\nlengths: {kind: fixed, input: 4, output: 4}\n")
                .find("requests"),
            std::string::npos);
  EXPECT_NE(error_of(base + "arrival: {kind: trace, file: /nonexistent.csv}\n").find("arrival.file"),
            std::string::npos);
  EXPECT_NE(error_of(base + "arrival: {kind: closed, concurrency: 2}\nextra: 1\n").find("extra"), std::string::npos);
}

TEST(WorkloadConfig, TraceFileBesideTheWorkload) {
  const auto dir = std::filesystem::temp_directory_path() / "duplex_runtime_workload_test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "t.csv") << "arrival_s,input_tokens,output_tokens\n0.1,10,5\n0.2,20,6\n0.3,30,7\n";
  std::ofstream(dir / "w.yaml") << "seed: 2\nrequests: 2\narrival: {kind: trace, file: t.csv}\n";
  const WorkloadSpec w = load_workload((dir / "w.yaml").string());
  EXPECT_EQ(w.requests, 2);
  EXPECT_FALSE(w.lengths.has_value());
  auto source = make_request_source(w);
  const auto all = source->take_arrived(seconds(1));
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1], (RequestSpec{1, seconds(0.2), 20, 6}));
  std::filesystem::remove_all(dir);
}

TEST(WorkloadConfig, ShippedPresetsLoad) {
  for (const char* name : {"closed-1024", "poisson-mixtral-4096-512", "trace-example", "azure-format-example"}) {
    SCOPED_TRACE(name);
    const WorkloadSpec w = load_workload(name);
    auto source = make_request_source(w);
    EXPECT_GT(source->total_requests(), 0);
    ASSERT_TRUE(w.routing.has_value());
    ExpertRouter router = make_expert_router(w);
    const ExpertCounts counts = router.route(100, 8, 2, 2);
    for (const auto& layer : counts) EXPECT_EQ(std::accumulate(layer.begin(), layer.end(), std::int64_t{0}), 200);
  }
  const WorkloadSpec trace = load_workload("trace-example");
  EXPECT_EQ(trace.requests, 6);
  const WorkloadSpec azure = load_workload("azure-format-example");
  EXPECT_EQ(azure.arrival.trace_rows.back().arrival, seconds(1.75));
}

TEST(SchedulerConfigYaml, ReadsAndRejects) {
  const ConfigNode n = ConfigNode::parse(
      "policy: continuous\nmax_batch: 128\nmax_tokens_per_step: 2048\nchunked_prefill: true\n", "s.yaml");
  const SchedulerConfig c = read_scheduler_config(n);
  EXPECT_EQ(c.policy, BatchingPolicy::continuous);
  EXPECT_EQ(c.max_batch, 128);
  EXPECT_EQ(c.max_tokens_per_step, 2048);
  EXPECT_TRUE(c.chunked_prefill);
  EXPECT_EQ(c.kv_block_tokens, 16);
  EXPECT_THROW(read_scheduler_config(ConfigNode::parse("policy: fifo\nmax_batch: 1\n", "s.yaml")), ConfigError);
  EXPECT_THROW(read_scheduler_config(ConfigNode::parse("policy: orca\nmax_batch: 4\nchunked_prefill: true\n"
                                                       "max_tokens_per_step: 8\n", "s.yaml")),
               ConfigError);
  EXPECT_THROW(read_scheduler_config(ConfigNode::parse("policy: orca\nmax_batch: 4\nbatch: 3\n", "s.yaml")),
               ConfigError);
}

}  // namespace
}  // namespace duplex::runtime
