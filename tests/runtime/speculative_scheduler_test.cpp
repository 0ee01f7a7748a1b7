// Speculative decoding in the scheduler, worked by hand: a decoding request computes its last token plus up
// to speculative_tokens drafts (a chain, or a tree's nodes), capped by its output and the token budget; it
// emits the accepted drafts plus one token at the step's end, keeps their K/V, and the draws follow the
// acceptance rate.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>

#include "duplex/base/error.hpp"
#include "duplex/runtime/scheduler/scheduler.hpp"

namespace duplex::runtime {
namespace {

SchedulerConfig speculative(int tokens, double acceptance, std::int64_t blocks = 64) {
  SchedulerConfig c;
  c.kv_capacity_blocks = blocks;
  c.kv_block_tokens = 4;
  c.speculative_tokens = tokens;
  c.acceptance_rates = {acceptance};
  c.acceptance_seed = 7;
  return c;
}

// Runs every step at 1 ms intervals until done; returns the plans.
std::vector<StepPlan> run(Scheduler& s) {
  std::vector<StepPlan> plans;
  Time now;
  while (s.has_unfinished()) {
    plans.push_back(s.schedule(now));
    now += ms(1);
    s.update({plans.back().step, now});
  }
  return plans;
}

// Every draft accepted: after its prefill (1 token) a request of 10 output tokens drafts 3 per step and emits
// 4, 4, then 1 (no drafts left: only 1 token remains); its K/V keeps every accepted draft. The draft model
// cached the prompt (5 tokens: its first pass computes 1), then after each full acceptance lacks its last
// draft and the bonus token (2).
TEST(SpeculativeScheduler, AllAcceptedEmitsDraftsPlusOne) {
  Scheduler s(speculative(3, 1.0));
  s.add_request({0, Time{}, 5, 10});
  const std::vector<StepPlan> plans = run(s);
  ASSERT_EQ(plans.size(), 4u);
  EXPECT_EQ(plans[1].requests[0], (ScheduledRequest{0, 4, 5, TokenPhase::decode, true, 3, 0, 0, 5}));
  EXPECT_EQ(plans[2].requests[0], (ScheduledRequest{0, 4, 9, TokenPhase::decode, true, 3, 0, 0, 8}));
  EXPECT_EQ(plans[3].requests[0], (ScheduledRequest{0, 1, 13, TokenPhase::decode, true, 0, 0, 0, 12}));
  EXPECT_EQ(plans[1].decode_requests, 1);
  EXPECT_EQ(plans[1].total_tokens, 4);
  const RequestRecord& r = s.records().at(0);
  EXPECT_EQ(r.token_times,
            (std::vector<Time>{ms(1), ms(2), ms(2), ms(2), ms(2), ms(3), ms(3), ms(3), ms(3), ms(4)}));
  EXPECT_EQ(r.draft_tokens, 6);
  EXPECT_EQ(r.accepted_tokens, 6);
  EXPECT_EQ(r.verify_steps, 2);
  EXPECT_EQ(s.kv().used_blocks(), 0);
}

// No draft accepted: every step still verifies 3 drafts (until the output cap) and emits one token; the
// rejected drafts' K/V is dropped, so the next step's context grows by one, and the draft model lacks only
// the last token.
TEST(SpeculativeScheduler, NoneAcceptedEmitsOneTokenPerStep) {
  Scheduler s(speculative(3, 0.0));
  s.add_request({0, Time{}, 5, 6});
  const std::vector<StepPlan> plans = run(s);
  ASSERT_EQ(plans.size(), 6u);
  for (std::size_t i = 1; i < plans.size(); ++i) {
    const std::int64_t remaining = 6 - static_cast<std::int64_t>(i);  // outputs left before step i
    EXPECT_EQ(plans[i].requests[0],
              (ScheduledRequest{0, 1 + std::min<std::int64_t>(3, remaining - 1),
                                5 + static_cast<std::int64_t>(i) - 1, TokenPhase::decode, true,
                                std::min<std::int64_t>(3, remaining - 1), 0, 0,
                                5 + static_cast<std::int64_t>(i) - 1}))
        << i;
  }
  EXPECT_EQ(s.records().at(0).draft_tokens, 3 + 3 + 2 + 1);
  EXPECT_EQ(s.records().at(0).accepted_tokens, 0);
}

// An acceptance given with the step's result (functional emulation checks the drafts) replaces the draw: with
// a rate of 1, a verification told 1 of 3 was accepted emits 2 tokens and keeps 1 draft's K/V; more than the
// draft's depth is refused.
TEST(SpeculativeScheduler, GivenAcceptanceReplacesTheDraw) {
  Scheduler s(speculative(3, 1.0));
  s.add_request({0, Time{}, 5, 10});
  s.update({s.schedule(Time{}).step, ms(1)});
  const StepPlan verify = s.schedule(ms(1));
  ASSERT_EQ(verify.requests[0].draft_depth, 3);
  s.update({verify.step, ms(2)}, {{0, 1}});
  EXPECT_EQ(s.records().at(0).token_times.size(), 1u + 2u);
  EXPECT_EQ(s.records().at(0).accepted_tokens, 1);
  EXPECT_EQ(s.schedule(ms(2)).requests[0].context_len, 5 + 1 + 1);
  Scheduler t(speculative(3, 1.0));
  t.add_request({0, Time{}, 5, 10});
  t.update({t.schedule(Time{}).step, ms(1)});
  const StepPlan too_many = t.schedule(ms(1));
  try {
    t.update({too_many.step, ms(2)}, {{0, 4}});
    FAIL() << "accepted more drafts than the draft holds";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("request 0 accepted 4 draft tokens of a draft 3 deep"),
              std::string::npos)
        << e.what();
  }
}

// What the draft's first pass computes (ScheduledRequest::draft_context) after a verification that accepted 1
// of 3 drafts, then after one that accepted all 3: a draft model lacks 1 token, then 2 (its last draft and
// the bonus token); a draft head (MTP, EAGLE) recomputes every kept token, 2 then 4. A request the token
// budget leaves undrafted (the draft passes skip it) falls further behind: its draft holds the prompt until
// it drafts. (Functional emulation checks draft_context against a real draft's cache in every run.)
TEST(SpeculativeScheduler, DraftContextFollowsTheDraftsCache) {
  for (const bool head : {false, true}) {
    SchedulerConfig c = speculative(3, 1.0);
    c.draft_head = head;
    Scheduler s(c);
    s.add_request({0, Time{}, 5, 20});
    s.update({s.schedule(Time{}).step, ms(1)});  // prefill: 6 tokens, the draft caches the prompt's 5
    StepPlan p = s.schedule(ms(1));
    EXPECT_EQ(p.requests[0].draft_context, 5) << head;
    s.update({p.step, ms(2)}, {{0, 1}});  // context 5 + 1 + 1
    p = s.schedule(ms(2));
    ASSERT_EQ(p.requests[0].context_len, 7);
    EXPECT_EQ(p.requests[0].context_len + 1 - p.requests[0].draft_context, head ? 2 : 1) << head;
    s.update({p.step, ms(3)}, {{0, 3}});  // context 7 + 1 + 3
    p = s.schedule(ms(3));
    ASSERT_EQ(p.requests[0].context_len, 11);
    ASSERT_EQ(p.requests[0].draft_depth, 3);
    EXPECT_EQ(p.requests[0].context_len + 1 - p.requests[0].draft_context, head ? 4 : 2) << head;
  }
  SchedulerConfig c = speculative(3, 0.0);
  c.max_tokens_per_step = 5;  // request 0 verifies 3 drafts, request 1 its last token only
  Scheduler s(c);
  s.add_request({0, Time{}, 2, 8});
  s.add_request({1, Time{}, 2, 8});
  Time now;
  int undrafted = 0;
  for (;;) {
    const StepPlan p = s.schedule(now);
    now += ms(1);
    s.update({p.step, now});
    if (p.requests.size() < 2 || p.requests[1].phase != TokenPhase::decode) continue;
    ASSERT_EQ(p.requests[1].draft_context, 2);
    if (p.requests[1].draft_depth > 0) {
      EXPECT_EQ(p.requests[1].context_len, 2 + undrafted);
      break;
    }
    ++undrafted;
  }
  EXPECT_EQ(undrafted, 4);
}

// A proposer that found fewer drafts (n-gram lookup) limits a request's depth until it says otherwise: 1, 1
// again, none (its last token alone), then the configured 3; an unknown request or a negative limit is
// refused.
TEST(SpeculativeScheduler, ALimitCapsTheDraftsUntilTheNextOne) {
  Scheduler s(speculative(3, 1.0));
  s.add_request({0, Time{}, 5, 40});
  s.update({s.schedule(Time{}).step, ms(1)});
  s.limit_drafts(0, 1);
  Time now = ms(1);
  auto next = [&] {
    const StepPlan p = s.schedule(now);
    now += ms(1);
    s.update({p.step, now});
    return p.requests.at(0);
  };
  EXPECT_EQ(next().draft_depth, 1);
  const ScheduledRequest again = next();
  EXPECT_EQ(again.draft_depth, 1);
  EXPECT_EQ(again.tokens, 2);
  s.limit_drafts(0, 0);
  const ScheduledRequest none = next();
  EXPECT_EQ(none.draft_depth, 0);
  EXPECT_EQ(none.tokens, 1);
  s.limit_drafts(0, 5);
  EXPECT_EQ(next().draft_depth, 3);
  for (const auto& [id, drafts, text] :
       {std::tuple{RequestId{7}, std::int64_t{1}, "request 7 is neither queued"},
        std::tuple{RequestId{0}, std::int64_t{-1}, "expected >= 0"}}) {
    try {
      s.limit_drafts(id, drafts);
      ADD_FAILURE() << id << " " << drafts;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  }
}

// The K/V a step needs covers the drafts: a request at 8 tokens in 4-token blocks verifying 3 drafts holds 3
// blocks during the step.
TEST(SpeculativeScheduler, KvCoversTheDrafts) {
  Scheduler s(speculative(3, 0.0));
  s.add_request({0, Time{}, 8, 5});
  StepPlan p = s.schedule(Time{});
  s.update({p.step, ms(1)});
  p = s.schedule(ms(1));
  EXPECT_EQ(p.requests[0].tokens, 4);
  EXPECT_EQ(p.kv_blocks_used, 3);  // 8 + 4 tokens
}

// A token budget cuts the drafts: two decoding requests share a budget of 5 tokens, the older verifies 3
// drafts (4 tokens), the younger only its last token.
TEST(SpeculativeScheduler, TokenBudgetCutsDrafts) {
  SchedulerConfig c = speculative(3, 0.0);
  c.max_tokens_per_step = 5;
  Scheduler s(c);
  s.add_request({0, Time{}, 2, 8});
  s.add_request({1, Time{}, 2, 8});
  StepPlan p = s.schedule(Time{});
  ASSERT_EQ(p.requests.size(), 2u);
  s.update({p.step, ms(1)});
  p = s.schedule(ms(1));
  ASSERT_EQ(p.requests.size(), 2u);
  EXPECT_EQ(p.requests[0].tokens, 4);
  EXPECT_EQ(p.requests[1].tokens, 1);
  EXPECT_EQ(p.total_tokens, 5);
}

// Accepted drafts per verification follow min(Geometric, drafts): over many requests the mean accepted
// fraction of 4 drafts at acceptance 0.7 is (0.7 + 0.49 + 0.343 + 0.2401) / 4 = 0.4433. The draws are
// a function of the seed, the request and its tokens so far: another seed draws differently.
TEST(SpeculativeScheduler, AcceptanceFollowsTheRateAndTheSeed) {
  auto fraction = [](std::uint64_t seed) {
    SchedulerConfig c = speculative(4, 0.7, 4096);
    c.acceptance_seed = seed;
    c.max_batch = 400;
    Scheduler s(c);
    for (RequestId id = 0; id < 400; ++id)
      s.add_request({id, Time{}, 4, 41});  // 40 outputs after the prefill
    run(s);
    std::int64_t drafts = 0, accepted = 0;
    for (const auto& [id, r] : s.records()) {
      drafts += r.draft_tokens;
      accepted += r.accepted_tokens;
    }
    return std::pair{drafts, accepted};
  };
  const auto [drafts, accepted] = fraction(7);
  // Capped verifications near the end of each request accept a slightly larger share; about 6000 draws.
  EXPECT_NEAR(static_cast<double>(accepted) / static_cast<double>(drafts), 0.4433, 0.02);
  EXPECT_EQ(fraction(7), fraction(7));
  EXPECT_NE(fraction(7), fraction(8));
}

TEST(SpeculativeScheduler, BadSettingsAreErrors) {
  auto error = [](int tokens, double acceptance) {
    try {
      Scheduler s(speculative(tokens, acceptance));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error(17, 0.5).find("speculative_tokens is 17; expected 0 (off) to 16"), std::string::npos);
  EXPECT_NE(error(-1, 0.5).find("speculative_tokens is -1"), std::string::npos);
  EXPECT_NE(error(2, 1.5).find("acceptance_rates[0] is 1.5; expected a probability in [0, 1]"),
            std::string::npos);
  EXPECT_NE(error(2, std::nan("")).find("acceptance_rates[0] is nan"), std::string::npos);
  EXPECT_EQ(error(16, 1.0), "no error");
  SchedulerConfig none = speculative(2, 0.5);
  none.acceptance_rates.clear();
  EXPECT_THROW(Scheduler{none}, Error);
  SchedulerConfig many = speculative(2, 0.5);
  many.acceptance_rates.assign(17, 0.5);
  try {
    Scheduler s(many);
    ADD_FAILURE() << "17 rates accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("acceptance_rates holds 17 values; expected 1 to 16"),
              std::string::npos)
        << e.what();
  }
  SchedulerConfig off = speculative(0, 0.5);
  off.acceptance_rates.clear();
  EXPECT_NO_THROW(Scheduler{off});  // no drafts, no rates needed
}

// Rates by draft position: draft i accepted with rates[i] (the last repeating) given the drafts before it
// were. With {0.9, 0.5} and 4 drafts a verification accepts 0.9 + 0.9 x 0.5 + 0.9 x 0.5^2 + 0.9 x 0.5^3 =
// 1.6875 drafts on average, a fraction of 0.4219 (0.774 if every draft were accepted with 0.9).
TEST(SpeculativeScheduler, AcceptanceMayFallAlongTheDraft) {
  SchedulerConfig c = speculative(4, 0.9, 4096);
  c.acceptance_rates = {0.9, 0.5};
  c.max_batch = 400;
  Scheduler s(c);
  for (RequestId id = 0; id < 400; ++id) s.add_request({id, Time{}, 4, 41});
  run(s);
  std::int64_t drafts = 0, accepted = 0;
  for (const auto& [id, r] : s.records()) {
    drafts += r.draft_tokens;
    accepted += r.accepted_tokens;
  }
  EXPECT_NEAR(static_cast<double>(accepted) / static_cast<double>(drafts), 0.4219, 0.02);
}

// Tree verification (SchedulerConfig::tree_tokens): a draft tree of depth `depth` with `nodes` nodes,
// `topk` expanded per depth.
SchedulerConfig tree(int depth, int nodes, int topk, double acceptance, std::int64_t blocks = 64) {
  SchedulerConfig c = speculative(depth, acceptance, blocks);
  c.tree_tokens = nodes;
  c.draft_topk = topk;
  return c;
}

// Tree verification, worked by hand: a decoding request verifies its last token plus the tree's nodes,
// accepts at most the tree's depth of them with the per-depth rates, keeps the accepted path's K/V; output
// caps and the token budget shrink the tree with its depth.

// Depth 4, 16 nodes: its extra 12 nodes in proportion to the depth, 4 per level below the first.
TEST(TreeSpeculativeScheduler, NodesGrowWithTheDepth) {
  const SchedulerConfig c = tree(4, 16, 4, 0.5);
  EXPECT_EQ(c.tree_nodes(0), 0);
  EXPECT_EQ(c.tree_nodes(1), 4);
  EXPECT_EQ(c.tree_nodes(2), 8);
  EXPECT_EQ(c.tree_nodes(3), 12);
  EXPECT_EQ(c.tree_nodes(4), 16);
  const SchedulerConfig chain = tree(4, 0, 1, 0.5);
  for (int d = 0; d <= 4; ++d) EXPECT_EQ(chain.tree_nodes(d), d);
  EXPECT_EQ(tree(3, 5, 2, 0.5).tree_nodes(1), 1);  // floor(2 x 1 / 3) = 0 extra
  EXPECT_EQ(SchedulerConfig::tree_candidates(4, 4), 4 + 3 * 16);
  EXPECT_EQ(SchedulerConfig::tree_candidates(3, 1), 3);
}

// Every node of the accepted path accepted: a request of 10 outputs verifies 9 tree nodes (depth 3) per step
// at contexts 5 and 9, emits 4 each time (3 drafts + 1), then its last token alone; the K/V keeps the path.
TEST(TreeSpeculativeScheduler, AcceptsAtMostTheDepth) {
  Scheduler s(tree(3, 9, 3, 1.0));
  s.add_request({0, Time{}, 5, 10});
  const std::vector<StepPlan> plans = run(s);
  ASSERT_EQ(plans.size(), 4u);
  EXPECT_EQ(plans[1].requests[0], (ScheduledRequest{0, 10, 5, TokenPhase::decode, true, 3, 0, 0, 5}));
  EXPECT_EQ(plans[2].requests[0], (ScheduledRequest{0, 10, 9, TokenPhase::decode, true, 3, 0, 0, 8}));
  EXPECT_EQ(plans[3].requests[0], (ScheduledRequest{0, 1, 13, TokenPhase::decode, true, 0, 0, 0, 12}));
  EXPECT_EQ(plans[1].total_tokens, 10);
  const RequestRecord& r = s.records().at(0);
  EXPECT_EQ(r.draft_tokens, 18);
  EXPECT_EQ(r.accepted_tokens, 6);
  EXPECT_EQ(r.verify_steps, 2);
  EXPECT_EQ(r.token_times.size(), 10u);
  EXPECT_EQ(s.kv().used_blocks(), 0);
}

// The output caps the depth, and the tree shrinks with it: 3 outputs leave room for one draft after the
// prefill's token, so the tree of depth 3 / 9 nodes verifies 1 + floor(6 x 1 / 3) = 3 nodes.
TEST(TreeSpeculativeScheduler, OutputCapShrinksTheTree) {
  Scheduler s(tree(3, 9, 3, 0.0));
  s.add_request({0, Time{}, 5, 3});
  const std::vector<StepPlan> plans = run(s);
  ASSERT_GE(plans.size(), 2u);
  EXPECT_EQ(plans[1].requests[0], (ScheduledRequest{0, 4, 5, TokenPhase::decode, true, 1, 0, 0, 5}));
}

// A budget of 6 tokens: depth 2 would verify 1 + 6 tokens, so the older request's tree is cut to depth 1
// (1 + 3 tokens); the younger, with 2 tokens of the budget left, verifies its last token only.
TEST(TreeSpeculativeScheduler, TokenBudgetCutsTheDepth) {
  SchedulerConfig c = tree(3, 9, 3, 0.0);
  c.max_tokens_per_step = 6;
  Scheduler s(c);
  s.add_request({0, Time{}, 2, 8});
  s.add_request({1, Time{}, 2, 8});
  StepPlan p = s.schedule(Time{});
  s.update({p.step, ms(1)});
  p = s.schedule(ms(1));
  ASSERT_EQ(p.requests.size(), 2u);
  EXPECT_EQ(p.requests[0], (ScheduledRequest{0, 4, 2, TokenPhase::decode, true, 1, 0, 0, 2}));
  EXPECT_EQ(p.requests[1], (ScheduledRequest{1, 1, 2, TokenPhase::decode, true, 0, 0, 0, 2}));
}

// The K/V of every node is held while verified: 8 tokens + 1 + 9 nodes in 4-token blocks is 5 blocks.
TEST(TreeSpeculativeScheduler, KvCoversTheTree) {
  Scheduler s(tree(3, 9, 3, 0.0));
  s.add_request({0, Time{}, 8, 5});
  StepPlan p = s.schedule(Time{});
  s.update({p.step, ms(1)});
  p = s.schedule(ms(1));
  EXPECT_EQ(p.requests[0].tokens, 10);
  EXPECT_EQ(p.kv_blocks_used, 5);
}

// The acceptance depends on the depth only (the rates are per depth of the tree): a tree and a chain of the
// same depth draw the same accepted paths and emit the same tokens at the same steps, verifying more nodes.
TEST(TreeSpeculativeScheduler, SameDepthSameDrawsAsAChain) {
  auto records = [](int nodes, int topk) {
    SchedulerConfig c = tree(4, nodes, topk, 0.7, 4096);
    c.acceptance_rates = {0.9, 0.7, 0.5};
    c.max_batch = 64;
    Scheduler s(c);
    for (RequestId id = 0; id < 64; ++id) s.add_request({id, Time{}, 4, 33});
    run(s);
    return s.records();
  };
  const auto chain = records(0, 1), wide = records(20, 3);
  std::int64_t chain_drafts = 0, wide_drafts = 0, accepted = 0;
  for (const auto& [id, r] : chain) {
    EXPECT_EQ(r.accepted_tokens, wide.at(id).accepted_tokens) << id;
    EXPECT_EQ(r.token_times, wide.at(id).token_times) << id;
    EXPECT_EQ(r.verify_steps, wide.at(id).verify_steps) << id;
    chain_drafts += r.draft_tokens;
    wide_drafts += wide.at(id).draft_tokens;
    accepted += r.accepted_tokens;
  }
  EXPECT_GT(accepted, 0);
  EXPECT_GT(wide_drafts, 4 * chain_drafts);  // 20 nodes per full-depth step against 4
}

// Orca reserves the tree's extra nodes with the request's K/V at admission (never running out of it), and a
// request whose tree cannot fit the whole cache is refused up front.
TEST(TreeSpeculativeScheduler, ReservationsAndCapacityCountTheTree) {
  SchedulerConfig c = tree(3, 9, 3, 0.5, 5);
  c.policy = BatchingPolicy::orca;
  Scheduler s(c);
  s.add_request({0, Time{}, 8, 7});  // 8 + 6 + 6 extra nodes = 20 tokens: 5 blocks
  run(s);
  EXPECT_TRUE(s.records().at(0).finished());
  Scheduler small(tree(3, 9, 3, 0.5, 4));
  try {
    small.add_request({0, Time{}, 8, 7});
    ADD_FAILURE() << "a request larger than the cache was accepted";
  } catch (const Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("(8 input + 7 output tokens + 6 draft tree nodes) needs 5 KV blocks"),
        std::string::npos)
        << e.what();
  }
}

TEST(TreeSpeculativeScheduler, BadSettingsAreErrors) {
  auto error = [](SchedulerConfig c) {
    try {
      Scheduler s(c);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error(tree(4, 3, 2, 0.5))
                .find("tree_tokens is 3; expected 0 (a chain of drafts) or, with "
                      "speculative decoding, the depth (4) to 128"),
            std::string::npos);
  EXPECT_NE(error(tree(4, 129, 16, 0.5)).find("tree_tokens is 129"), std::string::npos);
  SchedulerConfig off = tree(0, 8, 2, 0.5);
  EXPECT_NE(error(off).find("tree_tokens is 8"), std::string::npos);
  EXPECT_NE(error(tree(3, 0, 2, 0.5)).find("draft_topk is 2; expected 1, or with tree_tokens 2 to 16"),
            std::string::npos);
  EXPECT_NE(error(tree(3, 8, 17, 0.5)).find("draft_topk is 17"), std::string::npos);
  EXPECT_NE(error(tree(3, 8, 0, 0.5)).find("draft_topk is 0"), std::string::npos);
  EXPECT_NE(error(tree(3, 11, 2, 0.5)).find("proposes at most 10 candidates; expected tree_tokens <= 10"),
            std::string::npos);
  EXPECT_EQ(error(tree(3, 10, 2, 0.5)), "no error");
  EXPECT_EQ(error(tree(3, 3, 1, 0.5)), "no error");  // a chain written as a tree
}

}  // namespace
}  // namespace duplex::runtime
