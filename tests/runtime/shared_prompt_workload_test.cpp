// Workloads whose prompts share content (prefix caching's input): Mooncake traces with hash_ids, synthetic
// shared system prompts (SharedPrefixSource), the workload YAML's shared_prefix, and their errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <string>

#include "duplex/base/config.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/scheduler/prefix_cache.hpp"
#include "duplex/runtime/workload/conversation_source.hpp"
#include "duplex/runtime/workload/request_trace.hpp"
#include "duplex/runtime/workload/workload_config.hpp"
#include "error_text.hpp"

namespace duplex::runtime {
namespace {

using testing::error_of;

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
  EXPECT_EQ(rows[0].content_hashes, (std::vector<std::uint64_t>{46, 47}));
  EXPECT_EQ(rows[0].hash_block_tokens, kMooncakeHashBlockTokens);
  EXPECT_EQ(rows[1].arrival, ms(10.5));
  EXPECT_TRUE(rows[1].content_hashes.empty());
  EXPECT_EQ(rows[2].arrival, ms(3052));
  EXPECT_EQ(rows[2].content_hashes.size(), 5u);
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
    ASSERT_EQ(r.content_hashes.size(), 1u);
    EXPECT_EQ(r.hash_block_tokens, 2048);
    ++groups[r.content_hashes[0]];
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
  EXPECT_EQ(rows[0].content_hashes, (std::vector<std::uint64_t>{0, 1, 2}));
  EXPECT_EQ(rows[4].content_hashes, (std::vector<std::uint64_t>{5}));
  const std::string text =
      "seed: 1\narrival: {kind: trace, file: mooncake-format-example.jsonl}\n"
      "lengths: {kind: trace}\nshared_prefix: {tokens: 64}\n";
  EXPECT_NE(error_of([&] { read_workload(ConfigNode::parse(text, "w.yaml")); }).find("hash_ids"),
            std::string::npos);
  // Lengths other than the trace's would not match its hash_ids: refused, naming the key.
  const std::string fixed =
      "seed: 1\narrival: {kind: trace, file: mooncake-format-example.jsonl}\n"
      "lengths: {kind: fixed, input: 64, output: 8}\n";
  EXPECT_NE(error_of([&] { read_workload(ConfigNode::parse(fixed, "w.yaml")); }).find("lengths.kind"),
            std::string::npos);
}

const LengthDistribution kTurn{LengthDistribution::Kind::fixed, 40, 24, 0.0, 0.0};

TEST(ConversationSource, EachTurnIsTheConversationSoFarPlusAMessage) {
  // 2 users, conversations of 3 turns, a 32-token system prompt (one group), 2 s of think time.
  ConversationSource source(2, 20, kTurn, Conversations{3, 2.0, SharedPrefix{32, 1}}, 5);
  auto first = source.take_arrived(Time{});
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0].input_tokens, 32 + 40);
  EXPECT_EQ(first[0].output_tokens, 24);
  EXPECT_EQ(first[0].hash_block_tokens, kConversationHashTokens);
  EXPECT_EQ(first[0].hashed_tokens, 32 + 40 + 24);
  EXPECT_EQ(first[0].content_hashes.size(), 6u);  // ceil(96 / 16)
  // The system prompt's 2 blocks are shared by both conversations (one group); the rest are each its own.
  for (std::size_t i = 0; i < 2; ++i) EXPECT_EQ(first[0].content_hashes[i], first[1].content_hashes[i]) << i;
  for (std::size_t i = 2; i < 6; ++i) EXPECT_NE(first[0].content_hashes[i], first[1].content_hashes[i]) << i;
  EXPECT_FALSE(source.next_arrival().has_value());
  // Turn 2 of conversation 0 arrives 2 s after turn 1 finished: its prompt is turn 1's prompt and answer plus
  // a new message, and its hashes begin with turn 1's (so turn 1's blocks, answer included, are its prefix).
  source.on_finished(first[0].id, seconds(1));
  EXPECT_EQ(source.next_arrival(), seconds(3));
  EXPECT_TRUE(source.take_arrived(seconds(2.9)).empty());
  const auto second = source.take_arrived(seconds(3));
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].id, 2);
  EXPECT_EQ(second[0].input_tokens, 96 + 40);
  EXPECT_EQ(second[0].hashed_tokens, 96 + 40 + 24);
  for (std::size_t i = 0; i < 6; ++i) EXPECT_EQ(second[0].content_hashes[i], first[0].content_hashes[i]) << i;
  const auto turn1 = prefix_block_keys(first[0], 16), turn2 = prefix_block_keys(second[0], 16);
  ASSERT_EQ(turn1.size(), 5u);  // 95 tokens with K/V (the last answer token has none): 5 whole blocks
  for (std::size_t j = 0; j < turn1.size(); ++j) EXPECT_EQ(turn1[j], turn2[j]) << j;
  // Turn 3, then a new conversation of the same user, at once, with only the system prompt as history.
  source.on_finished(second[0].id, seconds(4));
  const auto third = source.take_arrived(seconds(6));
  ASSERT_EQ(third.size(), 1u);
  EXPECT_EQ(third[0].input_tokens, 160 + 40);
  source.on_finished(third[0].id, seconds(7));
  const auto fresh = source.take_arrived(seconds(7));
  ASSERT_EQ(fresh.size(), 1u);
  EXPECT_EQ(fresh[0].input_tokens, 72);
  EXPECT_EQ(fresh[0].content_hashes[0], first[0].content_hashes[0]);
  EXPECT_NE(fresh[0].content_hashes[2], first[0].content_hashes[2]);
}

TEST(ConversationSource, StopsAtTheTotalAndRefusesBadSettings) {
  ConversationSource source(3, 4, kTurn, Conversations{5, 0.0, SharedPrefix{0, 1}}, 1);
  auto arrived = source.take_arrived(Time{});
  ASSERT_EQ(arrived.size(), 3u);
  EXPECT_EQ(arrived[0].input_tokens, 40);
  source.on_finished(arrived[0].id, ms(1));
  const auto next = source.take_arrived(ms(1));
  ASSERT_EQ(next.size(), 1u);
  for (const RequestSpec& r : {arrived[1], arrived[2], next[0]}) source.on_finished(r.id, ms(2));
  EXPECT_TRUE(source.take_arrived(seconds(1)).empty());
  EXPECT_TRUE(source.exhausted());
  const auto make = [](Conversations c, std::int64_t users) { ConversationSource s(users, 10, kTurn, c, 1); };
  EXPECT_THROW(make(Conversations{0, 0.0, SharedPrefix{0, 1}}, 1), Error);
  EXPECT_THROW(make(Conversations{2, -1.0, SharedPrefix{0, 1}}, 1), Error);
  EXPECT_THROW(make(Conversations{2, 0.0, SharedPrefix{-1, 1}}, 1), Error);
  EXPECT_THROW(make(Conversations{2, 0.0, SharedPrefix{0, 1}}, 0), Error);
}

TEST(ConversationWorkload, YamlKeyNotWithATrace) {
  const std::string lengths = "seed: 1\nrequests: 8\nlengths: {kind: fixed, input: 4, output: 4}\n";
  const WorkloadSpec w = read_workload(ConfigNode::parse(
      lengths + "arrival: {kind: closed, concurrency: 2}\nconversation: {turns: 3, think_s: 1.5}\n"
                "shared_prefix: {tokens: 16}\n",
      "w.yaml"));
  ASSERT_TRUE(w.conversation.has_value());
  EXPECT_EQ(w.conversation->turns, 3);
  EXPECT_EQ(w.conversation->think_s, 1.5);
  const auto first = make_request_source(w)->take_arrived(Time{});
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0].input_tokens, 20);  // the system prompt, then the first message
  EXPECT_EQ(first[0].hash_block_tokens, kConversationHashTokens);
  // Poisson arrivals start conversations.
  const WorkloadSpec open = read_workload(ConfigNode::parse(
      lengths + "arrival: {kind: poisson, rate_per_s: 2}\nconversation: {turns: 3}\n", "w.yaml"));
  auto source = make_request_source(open);
  EXPECT_TRUE(source->take_arrived(Time{}).empty());
  ASSERT_TRUE(source->next_arrival().has_value());
  EXPECT_EQ(source->take_arrived(*source->next_arrival()).front().content_hashes.size(), 1u);  // 8 tokens
  const auto error = [&](const std::string& text) {
    return error_of([&] { read_workload(ConfigNode::parse(lengths + text, "w.yaml")); });
  };
  EXPECT_NE(
      error("arrival: {kind: closed, concurrency: 2}\nconversation: {turns: 0}\n").find("conversation.turns"),
      std::string::npos);
  EXPECT_NE(error("arrival: {kind: closed, concurrency: 2}\nconversation: {turns: 2, think_s: -1}\n")
                .find("conversation.think_s"),
            std::string::npos);
  const std::string trace =
      "seed: 1\narrival: {kind: trace, file: example-trace.csv}\nlengths: {kind: trace}\n";
  EXPECT_NE(error_of([&] {
              read_workload(ConfigNode::parse(trace + "conversation: {turns: 2}\n", "w.yaml"));
            }).find("conversation.turns"),
            std::string::npos);
}

// Open loop: conversations start at Poisson times and their later turns follow their answers; a conversation
// is the same (its turns' lengths) whatever order the turns finish in, and no more turns than the total.
TEST(ConversationSource, PoissonStartsAndConversationsIndependentOfFinishOrder) {
  const LengthDistribution varied{LengthDistribution::Kind::gaussian, 40, 24, 10.0, 8.0};
  const auto serve = [&](bool reverse) {
    auto source = ConversationSource::poisson(50.0, 30, varied, Conversations{3, 0.0, SharedPrefix{0, 1}}, 9);
    std::map<std::uint64_t, std::vector<std::pair<std::int64_t, std::int64_t>>>
        by_chat;  // first hash -> turns
    std::vector<RequestSpec> all;
    Time t{};
    for (int round = 0; round < 1000 && !source->exhausted(); ++round) {
      if (const auto next = source->next_arrival()) t = std::max(t, *next);
      std::vector<RequestSpec> batch = source->take_arrived(t);
      if (reverse) std::reverse(batch.begin(), batch.end());
      for (const RequestSpec& r : batch) {
        EXPECT_LE(r.arrival, t);
        by_chat[r.content_hashes[0]].push_back({r.input_tokens, r.output_tokens});
        all.push_back(r);
      }
      t = t + ms(1);
      for (const RequestSpec& r : batch) source->on_finished(r.id, t);
    }
    EXPECT_TRUE(source->exhausted());
    EXPECT_EQ(all.size(), 30u);
    return by_chat;
  };
  const auto a = serve(false), b = serve(true);
  EXPECT_EQ(a, b);
  EXPECT_GE(a.size(), 10u);  // 30 turns of conversations of at most 3
  EXPECT_THROW(ConversationSource::poisson(0.0, 4, varied, Conversations{2, 0.0, SharedPrefix{0, 1}}, 1),
               Error);
}

}  // namespace
}  // namespace duplex::runtime
