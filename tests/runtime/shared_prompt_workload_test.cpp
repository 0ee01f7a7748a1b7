// Workloads whose prompts share content (prefix caching's input): Mooncake traces with hash_ids, synthetic
// shared system prompts (SharedPrefixSource), the workload YAML's shared_prefix, and their errors.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <string>

#include "duplex/base/config.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/workload/request_trace.hpp"
#include "duplex/runtime/workload/workload_config.hpp"

namespace duplex::runtime {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(MooncakeTrace, RowsWithHashIdsSortedAndNumbered) {
  const auto rows = parse_request_trace(
      "# comment\n"
      "{\"timestamp\": 3052, \"input_length\": 2287, \"output_length\": 316, \"hash_ids\": [0, 42, 43, 44, "
      "45]}\n"
      "\n"
      "{\"timestamp\": 0, \"input_length\": 655, \"output_length\": 52, \"hash_ids\": [46, 47], \"extra\": "
      "1}\r\n"
      "{\"timestamp\": 10.5, \"input_length\": 9, \"output_length\": 1}\n",
      "m.jsonl");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].id, 0);
  EXPECT_EQ(rows[0].arrival, ms(0));
  EXPECT_EQ(rows[0].input_tokens, 655);
  EXPECT_EQ(rows[0].output_tokens, 52);
  EXPECT_EQ(rows[0].prompt_hashes, (std::vector<std::uint64_t>{46, 47}));
  EXPECT_EQ(rows[0].hash_block_tokens, kMooncakeHashBlockTokens);
  EXPECT_EQ(rows[1].arrival, ms(10.5));
  EXPECT_TRUE(rows[1].prompt_hashes.empty());
  EXPECT_EQ(rows[2].arrival, ms(3052));
  EXPECT_EQ(rows[2].prompt_hashes.size(), 5u);
  EXPECT_EQ(parse_request_trace("{\"timestamp\": 1, \"input_length\": 5, \"output_length\": 2}\n"
                                "{\"timestamp\": 0, \"input_length\": 6, \"output_length\": 2}\n",
                                "m.jsonl", 1)
                .front()
                .input_tokens,
            6);  // the limit keeps the earliest
}

TEST(MooncakeTrace, ErrorsNameFileLineAndKey) {
  const auto error = [](const std::string& line) {
    return error_of([&] {
      parse_request_trace("{\"timestamp\": 0, \"input_length\": 5, \"output_length\": 2}\n" + line,
                          "m.jsonl");
    });
  };
  EXPECT_NE(error("{\"timestamp\": 0, \"input_length\": 5}").find("m.jsonl:2: key \"output_length\""),
            std::string::npos);
  EXPECT_NE(error("{\"timestamp\": 0, \"input_length\": 5, \"output_length\": 0}").find("\"output_length\""),
            std::string::npos);
  EXPECT_NE(error("{\"timestamp\": -1, \"input_length\": 5, \"output_length\": 2}").find("\"timestamp\""),
            std::string::npos);
  EXPECT_NE(error("{\"timestamp\": 0, \"input_length\": 5.5, \"output_length\": 2}").find("\"input_length\""),
            std::string::npos);
  // 600 tokens span 2 blocks of 512: 3 ids are too many.
  EXPECT_NE(error("{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 2, \"hash_ids\": [1, 2, 3]}")
                .find("at most 2 ids"),
            std::string::npos);
  EXPECT_NE(error("{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 2, \"hash_ids\": [1, -2]}")
                .find("\"hash_ids\""),
            std::string::npos);
  EXPECT_NE(error("{\"timestamp\": 0, \"input_length\": 6").find("m.jsonl:2: not a JSON object"),
            std::string::npos);
  EXPECT_NE(error("[1, 2]").find("m.jsonl:2"), std::string::npos);
}

TEST(SharedPrefixSource, AddsTheSharedTokensAndOneOfTheGroupsHashes) {
  const LengthDistribution lengths{LengthDistribution::Kind::fixed, 100, 10, 0.0, 0.0};
  SharedPrefixSource source(std::make_unique<ClosedLoopSource>(400, 400, lengths, 3), SharedPrefix{2048, 4},
                            3);
  const auto requests = source.take_arrived(Time{});
  ASSERT_EQ(requests.size(), 400u);
  std::map<std::uint64_t, int> groups;
  for (const RequestSpec& r : requests) {
    EXPECT_EQ(r.input_tokens, 2148);
    ASSERT_EQ(r.prompt_hashes.size(), 1u);
    EXPECT_EQ(r.hash_block_tokens, 2048);
    ++groups[r.prompt_hashes[0]];
  }
  ASSERT_EQ(groups.size(), 4u);
  for (const auto& [hash, n] : groups) EXPECT_NEAR(n, 100, 35) << hash;  // uniform: 100 +- 3.5 sigma
  // Same seed, same groups; another seed, other groups.
  SharedPrefixSource again(std::make_unique<ClosedLoopSource>(400, 400, lengths, 3), SharedPrefix{2048, 4},
                           3);
  SharedPrefixSource other(std::make_unique<ClosedLoopSource>(400, 400, lengths, 3), SharedPrefix{2048, 4},
                           4);
  EXPECT_EQ(again.take_arrived(Time{}), requests);
  EXPECT_NE(other.take_arrived(Time{}), requests);
  EXPECT_THROW(
      SharedPrefixSource(std::make_unique<ClosedLoopSource>(1, 1, lengths, 3), SharedPrefix{0, 4}, 3), Error);
  EXPECT_THROW(
      SharedPrefixSource(std::make_unique<ClosedLoopSource>(1, 1, lengths, 3), SharedPrefix{8, 0}, 3), Error);
}

TEST(SharedPrefixWorkload, YamlKeyAndItsErrors) {
  const std::string base =
      "seed: 1\nrequests: 8\narrival: {kind: closed, concurrency: 2}\n"
      "lengths: {kind: fixed, input: 4, output: 4}\n";
  const WorkloadSpec w =
      read_workload(ConfigNode::parse(base + "shared_prefix: {tokens: 64, groups: 2}\n", "w.yaml"));
  ASSERT_TRUE(w.shared_prefix.has_value());
  EXPECT_EQ(w.shared_prefix->tokens, 64);
  EXPECT_EQ(w.shared_prefix->groups, 2);
  const auto first = make_request_source(w)->take_arrived(Time{});
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0].input_tokens, 68);
  EXPECT_FALSE(read_workload(ConfigNode::parse(base, "w.yaml")).shared_prefix.has_value());
  const auto error = [&](const std::string& extra) {
    return error_of([&] { read_workload(ConfigNode::parse(base + extra, "w.yaml")); });
  };
  EXPECT_NE(error("shared_prefix: {tokens: 0}\n").find("shared_prefix.tokens"), std::string::npos);
  EXPECT_NE(error("shared_prefix: {tokens: 8, groups: 0}\n").find("shared_prefix.groups"), std::string::npos);
  EXPECT_NE(error("shared_prefix: {tokens: 8, users: 3}\n").find("users"), std::string::npos);
}

TEST(SharedPrefixWorkload, MooncakePresetCarriesHashesAndRefusesASharedPrefixBeside) {
  const WorkloadSpec w = load_workload("mooncake-format-example");
  ASSERT_EQ(w.requests, 6);
  const auto rows = make_request_source(w)->take_arrived(seconds(10));
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_EQ(rows[0].prompt_hashes, (std::vector<std::uint64_t>{0, 1, 2}));
  EXPECT_EQ(rows[4].prompt_hashes, (std::vector<std::uint64_t>{5}));
  const std::string text =
      "seed: 1\narrival: {kind: trace, file: mooncake-format-example.jsonl}\n"
      "lengths: {kind: trace}\nshared_prefix: {tokens: 64}\n";
  EXPECT_NE(error_of([&] { read_workload(ConfigNode::parse(text, "w.yaml")); }).find("hash_ids"),
            std::string::npos);
}

}  // namespace
}  // namespace duplex::runtime
