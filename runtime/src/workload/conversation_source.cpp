#include "duplex/runtime/workload/conversation_source.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <cmath>

#include "duplex/base/error.hpp"

namespace duplex::runtime {

ConversationSource::ConversationSource(std::int64_t users, std::int64_t total, LengthDistribution lengths,
                                       Conversations chats, std::uint64_t seed)
    : ConversationSource(users, 0.0, total, lengths, chats, seed) {}

std::unique_ptr<ConversationSource> ConversationSource::poisson(double rate_per_s, std::int64_t total,
                                                                LengthDistribution lengths,
                                                                Conversations chats, std::uint64_t seed) {
  if (!(rate_per_s > 0.0) || !std::isfinite(rate_per_s))
    throw Error(
        fmt::format("conversations starting at {} per second; expected a finite rate > 0", rate_per_s));
  return std::unique_ptr<ConversationSource>(
      new ConversationSource(0, rate_per_s, total, lengths, chats, seed));
}

ConversationSource::ConversationSource(std::int64_t users, double rate_per_s, std::int64_t total,
                                       LengthDistribution lengths, Conversations chats, std::uint64_t seed)
    : total_(total),
      chats_(chats),
      seed_(derive_seed(seed, seed_stream::prefix_groups)),
      lengths_(lengths),
      lengths_seed_(derive_seed(seed, seed_stream::lengths)),
      rate_per_s_(rate_per_s),
      gaps_(derive_seed(seed, seed_stream::arrival_gaps)) {
  if (rate_per_s == 0 && users < 1)
    throw Error(fmt::format("conversations of {} users; expected >= 1 user", users));
  if (total < 1) throw Error(fmt::format("conversation request count is {}; expected >= 1", total));
  if (chats.turns < 1) throw Error(fmt::format("conversations of {} turns; expected >= 1 turn", chats.turns));
  if (!std::isfinite(chats.think_s) || chats.think_s < 0)
    throw Error(fmt::format("conversation think time of {} s; expected a finite time >= 0", chats.think_s));
  if (chats.system_prompt.tokens < 0 || chats.system_prompt.groups < 1)
    throw Error(
        fmt::format("conversation system prompt of {} tokens in {} groups; expected >= 0 tokens (0: none) "
                    "and >= 1 group",
                    chats.system_prompt.tokens, chats.system_prompt.groups));
  if (rate_per_s_ > 0) {
    clock_s_ = gaps_.exponential(rate_per_s_);
  } else {
    for (std::int64_t i = 0; i < std::min(users, total); ++i) start_chat(Time{});
  }
}

std::optional<Time> ConversationSource::next_start() const {
  if (rate_per_s_ == 0 || issued_ == total_) return std::nullopt;
  return seconds(clock_s_);
}

void ConversationSource::start_chat(Time arrival) {
  const std::uint64_t id = next_chat_++;
  issue_turn(Chat{.id = id,
                  .group = shared_prompt_group(chats_.system_prompt, seed_, id),
                  .turn = 0,
                  .history = chats_.system_prompt.tokens,
                  .lengths = LengthSampler(lengths_, derive_seed(lengths_seed_, id))},
             arrival);
}

void ConversationSource::issue_turn(Chat chat, Time arrival) {
  const SampledLengths l = chat.lengths.sample();
  RequestSpec r{issued_, arrival, chat.history + l.input_tokens, l.output_tokens};
  // Hash block i stands for tokens [0, (i + 1) H): the group's while it lies in the system prompt, else this
  // conversation's (which began with that group's system prompt). Over the prompt and the answer: the next
  // turn's prompt repeats both.
  const std::int64_t system = chats_.system_prompt.tokens, sequence = r.input_tokens + r.output_tokens;
  const std::uint64_t group_hash = shared_prompt_hash(chats_.system_prompt, chat.group);
  const std::uint64_t chat_hash = derive_seed(seed_ ^ 0xc4a7c4a7c4a7c4a7ULL, chat.id);
  for (std::int64_t i = 0; i * kConversationHashTokens < sequence; ++i)
    r.content_hashes.push_back(derive_seed(
        (i + 1) * kConversationHashTokens <= system ? group_hash : chat_hash, static_cast<std::uint64_t>(i)));
  r.hash_block_tokens = kConversationHashTokens;
  r.hashed_tokens = sequence;
  chat.history = sequence;
  in_flight_.emplace(r.id, chat);
  const auto at = std::upper_bound(pending_.begin(), pending_.end(), arrival,
                                   [](Time t, const RequestSpec& p) { return t < p.arrival; });
  pending_.insert(at, std::move(r));
  ++issued_;
}

std::vector<RequestSpec> ConversationSource::take_arrived(Time now) {
  for (std::optional<Time> start = next_start(); start && *start <= now; start = next_start()) {
    start_chat(*start);
    clock_s_ += gaps_.exponential(rate_per_s_);
  }
  return take_until(pending_, now);
}

std::optional<Time> ConversationSource::next_arrival() const {
  std::optional<Time> next = next_start();
  if (!pending_.empty() && (!next || pending_.front().arrival < *next)) next = pending_.front().arrival;
  return next;
}

void ConversationSource::on_finished(RequestId id, Time when) {
  const auto it = in_flight_.find(id);
  DUPLEX_ASSERT(it != in_flight_.end(), fmt::format("request {} finished but is no conversation's turn", id));
  Chat chat = std::move(it->second);
  in_flight_.erase(it);
  if (issued_ == total_) return;
  if (++chat.turn < chats_.turns) {
    issue_turn(std::move(chat), when + seconds(chats_.think_s));
  } else if (rate_per_s_ == 0) {
    start_chat(when);  // closed loop: the user's next conversation
  }
}

}  // namespace duplex::runtime
