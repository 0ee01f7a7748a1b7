// Prefix caching in functional emulation: prompts that share whole KV blocks reuse the cached K/V (shared by
// their block tables) instead of computing it, and generate exactly the tokens of a run without caching.
#include <gtest/gtest.h>

#include <numeric>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/functional/functional_executor.hpp"
#include "duplex/runtime/functional/run_session.hpp"

namespace duplex::runtime::functional {
namespace {

// Four prompts opening with the same 20 tokens (2 whole blocks of 8), then their own tokens; the last repeats
// the first prompt whole.
std::vector<std::vector<std::int32_t>> shared_prompts() {
  std::vector<std::int32_t> system(20);
  std::iota(system.begin(), system.end(), 100);
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::int32_t r = 0; r < 3; ++r) {
    std::vector<std::int32_t> p = system;
    for (std::int32_t t = 0; t < 5 + 3 * r; ++t) p.push_back(7 * r + t + 1);
    prompts.push_back(p);
  }
  prompts.push_back(prompts.front());
  return prompts;
}

FunctionalResult run(const ModelWeights& w, const char* system, bool caching, std::int64_t max_batch = 8,
                     std::int64_t kv_blocks = 0) {
  FunctionalOptions o;
  o.kv_block_tokens = 8;
  o.prefix_caching = caching;
  o.max_batch = max_batch;
  o.kv_blocks = kv_blocks;
  FunctionalExecutor exec(w, load_system(system), o);
  return exec.run(shared_prompts(), 5);
}

std::int64_t prefill_tokens(const FunctionalResult& r) {
  std::int64_t n = 0;
  for (const StepRecord& s : r.steps) n += s.prefill_tokens;
  return n;
}

class PrefixCachingRun : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

// All four admitted in the first step: the first request's blocks are cached as that step is planned, and the
// others take them in the same step (their attention reads the K/V the step writes, layer by layer).
TEST_P(PrefixCachingRun, SharedBlocksGiveTheTokensOfARunWithoutCaching) {
  const auto [model, system] = GetParam();
  const ModelWeights w = random_weights(compiler::load_model(model), 3);
  const FunctionalResult off = run(w, system, false);
  const FunctionalResult on = run(w, system, true);
  EXPECT_EQ(on.tokens, off.tokens);
  EXPECT_EQ(off.prefix_query_tokens, 0);
  const std::vector<std::vector<std::int32_t>> prompts = shared_prompts();
  std::int64_t prompt_tokens = 0;
  for (const auto& p : prompts) prompt_tokens += static_cast<std::int64_t>(p.size());
  EXPECT_EQ(on.prefix_query_tokens, prompt_tokens);
  // Requests 1 and 2 take the 2 shared blocks; request 3 (the first prompt again, 25 tokens) its 3 whole
  // blocks.
  EXPECT_EQ(on.prefix_hit_tokens, 16 + 16 + 24);
  EXPECT_EQ(prefill_tokens(on), prefill_tokens(off) - on.prefix_hit_tokens);
  const CheckResult check = compare(on, reference_generate(w, prompts, 5));
  EXPECT_TRUE(check.passed()) << check.max_abs_logit_err;
}

INSTANTIATE_TEST_SUITE_P(Systems, PrefixCachingRun,
                         ::testing::Values(std::pair{"tiny-dense", "gpu"}, std::pair{"tiny-moe", "gpu"},
                                           std::pair{"tiny-dense", "bank-pim"},
                                           std::pair{"tiny-moe", "duplex-split"}),
                         [](const auto& p) {
                           std::string n = std::string(p.param.first) + "_" + p.param.second;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

// One request at a time, in a pool too small to keep every block: later prompts find the shared blocks cached
// by finished requests, until eviction frees them; the tokens stay those of a run without caching.
TEST(PrefixCachingRunEdges, CachedBlocksOutliveTheirRequestsUntilEvicted) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-dense"), 5);
  const FunctionalResult off = run(w, "gpu", false, 1, 6);
  const FunctionalResult on = run(w, "gpu", true, 1, 6);
  EXPECT_EQ(on.tokens, off.tokens);
  EXPECT_GT(on.prefix_hit_tokens, 0);
  EXPECT_LT(prefill_tokens(on), prefill_tokens(off));
  const FunctionalResult roomy = run(w, "gpu", true, 1, 0);
  EXPECT_EQ(roomy.tokens, off.tokens);
  EXPECT_GE(roomy.prefix_hit_tokens, on.prefix_hit_tokens);
}

TEST(PrefixCachingRunEdges, RefusedWhereItIsNotEmulated) {
  const ModelWeights dense = random_weights(compiler::load_model("tiny-dense"), 5);
  FunctionalOptions o;
  o.prefix_caching = true;
  try {
    FunctionalExecutor exec(dense, load_system("duplex-pe"), o);
    FAIL() << "a prefill-space system was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("prefill space"), std::string::npos) << e.what();
  }
  const ModelWeights windowed = random_weights(compiler::load_model("tiny-gemma2"), 5);
  EXPECT_THROW(FunctionalExecutor(windowed, load_system("gpu"), o), Error);
  FunctionalOptions across = o;
  across.devices = 16;  // two nodes of 8
  FunctionalExecutor exec(dense, load_system("gpu"), across);
  try {
    exec.run(shared_prompts(), 2);
    FAIL() << "two nodes were accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data-parallel nodes"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace duplex::runtime::functional
