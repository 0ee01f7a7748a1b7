// N-gram drafts in functional emulation (prompt lookup, vLLM's "ngram" method): before each step a decoding
// request's drafts are the tokens that followed the longest earlier match of its sequence's suffix; the
// target verifies them as a draft model's. The tokens are a plain run's; the steps, verifications and draft
// tokens follow from those tokens, which the test replays request by request.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/functional/functional_executor.hpp"
#include "duplex/runtime/functional/run_session.hpp"
#include "duplex/runtime/scheduler/ngram_proposer.hpp"

namespace duplex::runtime::functional {
namespace {

// Prompts that repeat themselves, and one that does not.
const std::vector<std::vector<std::int32_t>> kPrompts = {
    {1, 5, 9, 42, 1, 5, 9, 42, 1, 5}, {7, 7, 7, 7}, {300, 17, 900, 44, 3}};
constexpr int kNewTokens = 24;
constexpr int kDrafts = 3;

FunctionalResult run(const ModelWeights& w, const char* system, int ngram_min, int ngram_max,
                     FunctionalOptions o = {}) {
  o.kv_block_tokens = 4;
  o.speculative_tokens = ngram_max > 0 ? kDrafts : 0;
  o.ngram_min = ngram_min;
  o.ngram_max = ngram_max;
  FunctionalExecutor exec(w, load_system(system), o);
  return exec.run(kPrompts, kNewTokens);
}

// What n-gram drafting does to one request whose greedy output is `tokens`: after the prefill's token, each
// step proposes from prompt + tokens so far, verifies min(proposal, drafts, tokens left - 1) of them, accepts
// those that match the output, and emits one more.
struct Replay {
  std::int64_t steps = 1;  // the prefill
  std::int64_t verify_steps = 0, draft_tokens = 0, accepted_tokens = 0;
};
Replay replay(const std::vector<std::int32_t>& prompt, const std::vector<std::int32_t>& tokens, int ngram_min,
              int ngram_max) {
  Replay r;
  std::vector<std::int32_t> seq = prompt;
  seq.push_back(tokens[0]);
  for (std::size_t g = 1; g < tokens.size(); ++r.steps) {
    const std::vector<std::int32_t> proposed = propose_ngram_drafts(seq, ngram_min, ngram_max, kDrafts);
    const std::size_t depth = std::min(proposed.size(), tokens.size() - g - 1);
    std::size_t accepted = 0;
    while (accepted < depth && proposed[accepted] == tokens[g + accepted]) ++accepted;
    if (depth > 0) {
      ++r.verify_steps;
      r.draft_tokens += static_cast<std::int64_t>(depth);
      r.accepted_tokens += static_cast<std::int64_t>(accepted);
    }
    seq.insert(seq.end(), tokens.begin() + static_cast<std::ptrdiff_t>(g),
               tokens.begin() + static_cast<std::ptrdiff_t>(g + accepted + 1));
    g += accepted + 1;
  }
  return r;
}

// tiny-opt's random weights fall into a cycle, which n-gram drafts then predict: the plain run's tokens in
// fewer steps, and exactly the verifications the replay predicts; no draft pass, no draft op, no draft
// device.
TEST(NgramRun, DraftsFromTheSequenceKeepTheTokensInFewerSteps) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-opt"), 1);
  for (const char* system : {"gpu", "duplex-pe"}) {
    SCOPED_TRACE(system);
    const FunctionalResult plain = run(w, system, 0, 0);
    const FunctionalResult spec = run(w, system, 1, 3);
    EXPECT_EQ(spec.tokens, plain.tokens);
    Replay want;
    for (std::size_t r = 0; r < kPrompts.size(); ++r) {
      const Replay one = replay(kPrompts[r], plain.tokens[r], 1, 3);
      want.steps = std::max(want.steps, one.steps);
      want.verify_steps += one.verify_steps;
      want.draft_tokens += one.draft_tokens;
      want.accepted_tokens += one.accepted_tokens;
    }
    EXPECT_EQ(static_cast<std::int64_t>(spec.steps.size()), want.steps);
    EXPECT_EQ(spec.verify_steps, want.verify_steps);
    EXPECT_EQ(spec.draft_tokens, want.draft_tokens);
    EXPECT_EQ(spec.accepted_tokens, want.accepted_tokens);
    EXPECT_GT(spec.accepted_tokens, kNewTokens);  // the cycles are predicted
    EXPECT_LT(spec.steps.size(), plain.steps.size());
    for (const StepRecord& s : spec.steps) EXPECT_EQ(s.draft_passes, 0);
    EXPECT_TRUE(std::none_of(spec.ops.begin(), spec.ops.end(),
                             [](const OpRecord& op) { return op.name.starts_with("draft"); }));
    for (const auto& [name, description] : spec.device_classes)
      EXPECT_FALSE(name.starts_with("draft")) << name;
    const CheckResult check = check_run(w, kPrompts, spec, kNewTokens);
    EXPECT_TRUE(check.passed()) << check.max_abs_logit_err;
  }
}

// Suffixes of 5 tokens: only the repeating prompts ever match, fewer drafts than with 1..3 tokens; a split
// system (the decode pool proposes) and a pool small enough to preempt keep the tokens.
TEST(NgramRun, LongerSuffixesAndOtherSchedulesKeepTheTokens) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-opt"), 1);
  const FunctionalResult plain = run(w, "gpu", 0, 0);
  const FunctionalResult five = run(w, "gpu", 5, 5);
  EXPECT_EQ(five.tokens, plain.tokens);
  EXPECT_LT(five.draft_tokens, run(w, "gpu", 1, 3).draft_tokens);
  std::int64_t drafts = 0;
  for (std::size_t r = 0; r < kPrompts.size(); ++r)
    drafts += replay(kPrompts[r], plain.tokens[r], 5, 5).draft_tokens;
  EXPECT_EQ(five.draft_tokens, drafts);
  const FunctionalResult split = run(w, "duplex-split", 1, 3);
  EXPECT_EQ(split.tokens, run(w, "duplex-split", 0, 0).tokens);
  EXPECT_GT(split.accepted_tokens, 0);
  FunctionalOptions tight;
  tight.kv_blocks = 12;  // 48 slots for 33, 27 and 28 tokens of K/V
  const FunctionalResult pressed = run(w, "gpu", 1, 3, tight);
  EXPECT_EQ(pressed.tokens, plain.tokens);
  std::int64_t prefilled = 0;
  for (const StepRecord& s : pressed.steps) prefilled += s.prefill_tokens;
  EXPECT_GT(prefilled, 10 + 4 + 5);  // something was recomputed
}

TEST(NgramRun, BadSettingsAreRefused) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-dense"), 3);
  auto refused = [&](const ModelWeights* draft, int speculative, int ngram_min, int ngram_max,
                     const std::string& says) {
    FunctionalOptions o;
    o.draft = draft;
    o.speculative_tokens = speculative;
    o.ngram_min = ngram_min;
    o.ngram_max = ngram_max;
    try {
      FunctionalExecutor exec(w, load_system("gpu"), o);
      ADD_FAILURE() << "accepted: " << says;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
  };
  refused(&w, 2, 1, 3, "n-gram drafts and draft model tiny-dense: expected one proposer");
  refused(nullptr, 2, 3, 2, "n-gram drafts from 3 to 2 tokens");
  refused(nullptr, 2, 0, 2, "expected 1 <= min <= max");
  refused(nullptr, 0, 1, 2, "n-gram drafts need speculative tokens >= 1");
}

}  // namespace
}  // namespace duplex::runtime::functional
