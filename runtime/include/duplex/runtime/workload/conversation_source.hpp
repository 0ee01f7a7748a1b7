#pragma once
// Multi-turn conversations (chat, agents) of `turns` turns: closed-loop users each hold one conversation at a
// time and start a new one at once after its last turn, or (open loop) conversations start at Poisson times.
// A turn's prompt is the whole conversation so far (an optional shared system prompt, every earlier turn's
// message and answer) plus a new message; the next turn arrives `think_s` after the turn's last token.
// Message and answer lengths are drawn from the length distribution (input: the new message's tokens).
// Requests carry content hashes over their prompt and their answer (blocks of kConversationHashTokens; the
// system prompt's blocks shared by its group, the rest the conversation's own), so prefix caching finds each
// turn's history cached by the turn before. Conversation k (0, 1, 2, ... in start order) draws its lengths
// from its own stream of the seed, so it is the same conversation whichever system serves it and whenever it
// starts. Deterministic for a seed and a finish order; ids 0, 1, 2, ... in issue order.
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <unordered_map>

#include "duplex/runtime/workload/length_distribution.hpp"
#include "duplex/runtime/workload/request_source.hpp"

namespace duplex::runtime {

// Tokens per content hash of a conversation: vLLM's default KV block (our granularity; any KV block size
// works, a block keyed by the hash of its last token's hash block).
inline constexpr std::int64_t kConversationHashTokens = 16;

struct Conversations {
  std::int64_t turns = 1;            // >= 1
  double think_s = 0;                // seconds between a turn's answer and the next turn, >= 0
  SharedPrefix system_prompt{0, 1};  // tokens 0: none; else one of `groups`, picked per conversation
};

class ConversationSource final : public RequestSource {
 public:
  // Throws duplex::Error unless users >= 1, total >= 1, turns >= 1, think_s finite and >= 0, system prompt
  // tokens >= 0 and groups >= 1.
  ConversationSource(std::int64_t users, std::int64_t total, LengthDistribution lengths, Conversations chats,
                     std::uint64_t seed);
  // Open loop: conversations start at Poisson times, `rate_per_s` per second from t = 0 (exponential gaps);
  // throws duplex::Error unless the rate is finite and > 0 (and as above).
  static std::unique_ptr<ConversationSource> poisson(double rate_per_s, std::int64_t total,
                                                     LengthDistribution lengths, Conversations chats,
                                                     std::uint64_t seed);
  std::vector<RequestSpec> take_arrived(Time now) override;
  std::optional<Time> next_arrival() const override;
  void on_finished(RequestId id, Time when) override;
  bool exhausted() const override {
    return issued_ == total_ && pending_.empty();
  }  // every turn issued, taken
  std::int64_t total_requests() const override { return total_; }

 private:
  struct Chat {
    std::uint64_t id = 0;
    std::uint64_t group = 0;   // its system prompt
    std::int64_t turn = 0;     // 0-based, of the turn in flight
    std::int64_t history = 0;  // tokens before this turn's message: system prompt, earlier turns
    LengthSampler lengths;     // its own stream
  };
  ConversationSource(std::int64_t users, double rate_per_s, std::int64_t total, LengthDistribution lengths,
                     Conversations chats, std::uint64_t seed);
  void start_chat(Time arrival);
  void issue_turn(Chat chat, Time arrival);
  std::optional<Time> next_start() const;  // open loop: when the next conversation starts, while any will

  std::int64_t total_;
  std::int64_t issued_ = 0;
  std::uint64_t next_chat_ = 0;
  Conversations chats_;
  std::uint64_t seed_;
  LengthDistribution lengths_;
  std::uint64_t lengths_seed_;
  double rate_per_s_ = 0;  // open loop: conversations per second; 0: closed loop
  Rng gaps_;
  double clock_s_ = 0;                             // open loop: the next conversation's start, seconds
  std::unordered_map<RequestId, Chat> in_flight_;  // by the request of its current turn
  std::deque<RequestSpec> pending_;                // issued, not yet taken; arrival order
};

}  // namespace duplex::runtime
