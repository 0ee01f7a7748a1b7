// Speculative decoding in functional emulation: a draft model proposes tokens greedily on its own paged
// cache, the target verifies them in one step and keeps those its greedy choice confirms. Whatever the draft
// proposes, the tokens are those of a run without speculation; the draft only changes how many steps it
// takes.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/functional/functional_executor.hpp"
#include "duplex/runtime/functional/run_session.hpp"

namespace duplex::runtime::functional {
namespace {

const std::vector<std::vector<std::int32_t>> kPrompts = {
    {1, 2, 3, 4, 5}, {9, 8, 7}, {100, 200, 300, 400, 500, 600, 700, 800, 900, 17, 33}};
constexpr int kNewTokens = 14;

FunctionalResult run(const ModelWeights& w, const char* system, const ModelWeights* draft,
                     int speculative = 3, FunctionalOptions o = {}) {
  o.kv_block_tokens = 4;
  o.draft = draft;
  o.speculative_tokens = draft ? speculative : 0;
  FunctionalExecutor exec(w, load_system(system), o);
  return exec.run(kPrompts, kNewTokens);
}

std::int64_t prefill_tokens(const FunctionalResult& r) {
  std::int64_t n = 0;
  for (const StepRecord& s : r.steps) n += s.prefill_tokens;
  return n;
}

// The target's weights with the LM-head rows of `a` and `b` swapped: the draft proposes b where the target
// chooses a (and a for b), and agrees everywhere else.
ModelWeights swap_lm_head_rows(const ModelWeights& w, std::int32_t a, std::int32_t b) {
  ModelWeights d = w;
  WeightTensor& head = d.tensors.count("lm_head.weight") ? d.tensors.at("lm_head.weight")
                                                         : d.tensors.at("model.embed_tokens.weight");
  const auto h = static_cast<std::ptrdiff_t>(head.shape.at(1));
  std::swap_ranges(head.data.begin() + a * h, head.data.begin() + (a + 1) * h, head.data.begin() + b * h);
  return d;
}

class SpeculativeRun : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

// The target drafting for itself: every draft is accepted, each verification emits its drafts + 1 tokens.
TEST_P(SpeculativeRun, SelfDraftAcceptsEveryDraftAndKeepsTheTokens) {
  const auto [model, system] = GetParam();
  const ModelWeights w = random_weights(compiler::load_model(model), 3);
  const FunctionalResult plain = run(w, system, nullptr);
  const FunctionalResult spec = run(w, system, &w);
  EXPECT_EQ(spec.tokens, plain.tokens);
  EXPECT_GT(spec.draft_tokens, 0);
  EXPECT_EQ(spec.accepted_tokens, spec.draft_tokens);
  // Step 0 prefills (one token each); then 13 tokens per request in verifications of up to 3 drafts: 4 + 4 +
  // 4 + 1 (the last token has nothing left to draft for).
  EXPECT_EQ(spec.steps.size(), 5u);
  EXPECT_EQ(plain.steps.size(), static_cast<std::size_t>(kNewTokens));
  EXPECT_EQ(spec.verify_steps, 3 * 3);
  EXPECT_EQ(spec.draft_tokens, 3 * 9);
  EXPECT_EQ(spec.acceptance_by_position(), std::vector<double>({1.0, 1.0, 1.0}));
  // (On duplex a verification batches differently from the reference: an MoE routing near tie may flip, which
  // check_run follows and explains.)
  const CheckResult check = check_run(w, kPrompts, spec, kNewTokens);
  EXPECT_TRUE(check.passed()) << check.max_abs_logit_err;
  // Each step runs the draft passes before the verification: step 0 one (the prompts), a verification of 3
  // drafts three; the draft's ops are recorded under draft<i>.
  EXPECT_EQ(spec.steps[0].draft_passes, 1);
  EXPECT_EQ(spec.steps[1].draft_passes, 3);
  EXPECT_EQ(spec.steps[4].draft_passes, 0);
  const auto drafted = std::count_if(spec.ops.begin(), spec.ops.end(),
                                     [](const OpRecord& op) { return op.name.rfind("draft3.", 0) == 0; });
  EXPECT_GT(drafted, 0);
  EXPECT_GT(spec.steps[1].time, plain.steps[1].time);
}

INSTANTIATE_TEST_SUITE_P(Systems, SpeculativeRun,
                         ::testing::Values(std::pair{"tiny-dense", "gpu"},
                                           std::pair{"tiny-dense", "duplex-pe"},
                                           std::pair{"tiny-moe", "duplex"}),
                         [](const auto& p) {
                           std::string n = std::string(p.param.first) + "_" + p.param.second;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

// What a draft proposing swap(t) where the target chooses t (swap exchanging a and b) gets accepted over
// `tokens`, the target's greedy output: each verification after the prefill checks depth = min(k, tokens left
// - 1) drafts and accepts them up to the first position whose token is a or b, then emits one more. Adds each
// draft position's verifications that reached it and accepted it (FunctionalResult::drafts_reached /
// _accepted).
void expect_acceptance(const std::vector<std::int32_t>& tokens, int k, std::int32_t a, std::int32_t b,
                       std::vector<std::int64_t>& reached, std::vector<std::int64_t>& accepted) {
  reached.resize(static_cast<std::size_t>(k), 0);
  accepted.resize(static_cast<std::size_t>(k), 0);
  for (std::size_t g = 1; g < tokens.size();) {
    const std::size_t depth = std::min<std::size_t>(static_cast<std::size_t>(k), tokens.size() - g - 1);
    std::size_t j = 0;
    while (j < depth && tokens[g + j] != a && tokens[g + j] != b) ++accepted[j++];
    for (std::size_t p = 0; p < std::min(j + 1, depth); ++p) ++reached[p];
    g += j + 1;
  }
  while (!reached.empty() && reached.back() == 0) {
    reached.pop_back();
    accepted.pop_back();
  }
}

// A draft that disagrees with the target on two tokens: verifications accept some drafts and reject others
// (the target's K/V of the rejected ones is overwritten, the draft recomputes from the accepted tokens), and
// the tokens stay the plain run's. The draft's K/V is the target's on the accepted tokens, so it accepts
// exactly what the target's tokens predict (expect_acceptance). A draft of random other weights is rejected
// throughout, same tokens.
TEST(SpeculativeRunEdges, RejectedDraftsLeaveTheTokensOfAPlainRun) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-dense"), 3);
  for (const char* system : {"gpu", "duplex-pe"}) {
    SCOPED_TRACE(system);
    const FunctionalResult plain = run(w, system, nullptr);
    std::map<std::int32_t, int> count;
    for (const auto& tokens : plain.tokens)
      for (std::int32_t t : tokens) ++count[t];
    const std::int32_t frequent = std::max_element(count.begin(), count.end(), [](auto& x, auto& y) {
                                    return x.second < y.second;
                                  })->first;
    const std::int32_t other = (frequent + 1) % w.spec.vocab;
    const ModelWeights swapped = swap_lm_head_rows(w, frequent, other);
    const FunctionalResult some = run(w, system, &swapped, 4);
    EXPECT_EQ(some.tokens, plain.tokens);
    std::vector<std::int64_t> reached, accepted;
    for (const auto& tokens : plain.tokens) expect_acceptance(tokens, 4, frequent, other, reached, accepted);
    EXPECT_EQ(some.drafts_reached, reached);
    EXPECT_EQ(some.drafts_accepted, accepted);
    EXPECT_EQ(some.accepted_tokens, std::accumulate(accepted.begin(), accepted.end(), std::int64_t{0}));
    EXPECT_GT(some.accepted_tokens, 0);
    EXPECT_LT(some.accepted_tokens, some.draft_tokens);
    const CheckResult check = compare(some, reference_generate(w, kPrompts, kNewTokens));
    EXPECT_TRUE(check.passed()) << check.max_abs_logit_err;
    const ModelWeights unrelated = random_weights(compiler::load_model("tiny-dense"), 99);
    const FunctionalResult none = run(w, system, &unrelated);
    EXPECT_EQ(none.tokens, plain.tokens);
    EXPECT_EQ(none.accepted_tokens, 0);
    EXPECT_EQ(none.steps.size(), plain.steps.size());
  }
}

// With prefix caching (the draft's cache follows the same blocks) and in a KV pool small enough to preempt
// (the draft releases and recomputes with the target): still the plain run's tokens.
TEST(SpeculativeRunEdges, PrefixCachingAndPreemptionKeepTheTokens) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-dense"), 3);
  for (const char* system : {"gpu", "duplex-pe"}) {
    SCOPED_TRACE(system);
    FunctionalOptions cached;
    cached.prefix_caching = true;
    const FunctionalResult plain = run(w, system, nullptr, 0, cached);
    const FunctionalResult spec = run(w, system, &w, 3, cached);
    EXPECT_EQ(spec.tokens, plain.tokens);
    EXPECT_EQ(spec.accepted_tokens, spec.draft_tokens);
  }
  // 10 blocks (40 token slots) for requests of 18, 16 and 24 tokens of K/V: the youngest is preempted and
  // recomputed, by the draft too.
  FunctionalOptions tight;
  tight.kv_blocks = 10;
  const FunctionalResult pressed = run(w, "gpu", &w, 3, tight);
  EXPECT_EQ(pressed.tokens, run(w, "gpu", nullptr).tokens);
  std::int64_t prompts = 0;
  for (const auto& p : kPrompts) prompts += static_cast<std::int64_t>(p.size());
  EXPECT_GT(prefill_tokens(pressed), prompts);
}

// A split system: the draft prefills beside the prefill pool, its K/V of each prompt migrates with the
// target's (twice the bytes for a self-draft), and the decode pool drafts and verifies.
TEST(SpeculativeRunEdges, SplitSystemsMigrateTheDraftsKvToo) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-moe"), 3);
  const FunctionalResult plain = run(w, "duplex-split", nullptr);
  const FunctionalResult spec = run(w, "duplex-split", &w);
  EXPECT_EQ(spec.tokens, plain.tokens);
  EXPECT_GT(spec.draft_tokens, 0);
  EXPECT_EQ(spec.accepted_tokens, spec.draft_tokens);
  EXPECT_LT(spec.steps.size(), plain.steps.size());
  ASSERT_EQ(spec.kv_migrations.size(), plain.kv_migrations.size());
  for (std::size_t i = 0; i < spec.kv_migrations.size(); ++i)
    EXPECT_EQ(spec.kv_migrations[i].bytes, 2 * plain.kv_migrations[i].bytes);
  const CheckResult check = check_run(w, kPrompts, spec, kNewTokens);
  EXPECT_TRUE(check.passed()) << check.max_abs_logit_err;
  EXPECT_TRUE(spec.device_classes.count("draft.decode.dev0.pim"));
}

TEST(SpeculativeRunEdges, BadSettingsAreRefused) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-dense"), 3);
  auto refused = [&](const char* system, const ModelWeights* draft, int speculative,
                     const std::string& says) {
    FunctionalOptions o;
    o.draft = draft;
    o.speculative_tokens = speculative;
    try {
      FunctionalExecutor exec(w, load_system(system), o);
      ADD_FAILURE() << "accepted: " << says;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
  };
  refused("gpu", nullptr, 2, "needs a draft model and speculative tokens >= 1 together");
  refused("gpu", &w, 0, "needs a draft model and speculative tokens >= 1 together");
  refused("gpu", &w, 17, "expected 0 (off) to 16");
  compiler::ModelSpec wide = w.spec;
  wide.vocab = 2048;
  const ModelWeights other_vocab = random_weights(wide, 3);
  refused("gpu", &other_vocab, 2, "has a vocabulary of 2048 tokens; expected model tiny-dense's 1024");
}

}  // namespace
}  // namespace duplex::runtime::functional
