// Prefix caching in functional emulation: prompts that share whole KV blocks reuse the cached K/V (shared by
// their block tables) instead of computing it, and generate exactly the tokens of a run without caching; on
// systems with a prefill space too, where a cached block may still lie in the prefill space.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/parallel.hpp"
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

INSTANTIATE_TEST_SUITE_P(
    Systems, PrefixCachingRun,
    ::testing::Values(std::pair{"tiny-dense", "gpu"}, std::pair{"tiny-moe", "gpu"},
                      std::pair{"tiny-dense", "bank-pim"}, std::pair{"tiny-moe", "duplex-split"},
                      std::pair{"tiny-dense", "duplex-pe"}, std::pair{"tiny-moe", "duplex"},
                      std::pair{"tiny-deepseek", "duplex-pe"},
                      // Sliding windows (Gemma 2, gpt-oss with its sinks) and chunked
                      // attention (Llama 4) read their window out of cached blocks.
                      std::pair{"tiny-gemma2", "gpu"}, std::pair{"tiny-gpt-oss", "duplex-pe"},
                      std::pair{"tiny-llama4", "duplex-pe"}),
    [](const auto& p) {
      std::string n = std::string(p.param.first) + "_" + p.param.second;
      for (char& c : n)
        if (c == '-') c = '_';
      return n;
    });

// One request at a time, in a pool too small to keep every block: later prompts find the shared blocks cached
// by finished requests, until eviction frees them; the tokens stay those of a run without caching. duplex-pe:
// 13 KV blocks leave 5 to the prefill space (a prompt of 34 tokens and its recompute fit).
TEST(PrefixCachingRunEdges, CachedBlocksOutliveTheirRequestsUntilEvicted) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-dense"), 5);
  for (const auto& [system, blocks] : {std::pair{"gpu", 6}, std::pair{"duplex-pe", 13}}) {
    SCOPED_TRACE(system);
    const FunctionalResult off = run(w, system, false, 1, blocks);
    const FunctionalResult on = run(w, system, true, 1, blocks);
    EXPECT_EQ(on.tokens, off.tokens);
    EXPECT_GT(on.prefix_hit_tokens, 0);
    EXPECT_LT(prefill_tokens(on), prefill_tokens(off));
    const FunctionalResult roomy = run(w, system, true, 1, 0);
    EXPECT_EQ(roomy.tokens, off.tokens);
    EXPECT_GE(roomy.prefix_hit_tokens, on.prefix_hit_tokens);
  }
}

// A prompt prefilled in chunks over two steps while two others take its blocks in its last step, before its
// K/V leaves the prefill space: their attention reads blocks in its prefill space, which its migration moves
// to the KV spaces under every table holding them. Each prompt migrates only the K/V it computed: A its 40
// tokens, B the 5 behind its 3 cached blocks, C (2 whole blocks, all cached) its last token, recomputed.
class PrefixCachingPrefillSpace : public ::testing::TestWithParam<int> {};

TEST_P(PrefixCachingPrefillSpace, SharedBlocksFollowTheirPromptOutOfThePrefillSpace) {
  const int devices = GetParam();
  const ModelWeights w = random_weights(compiler::load_model("tiny-dense"), 11);
  std::vector<std::int32_t> a(40);
  std::iota(a.begin(), a.end(), 100);
  std::vector<std::int32_t> b(a.begin(), a.begin() + 24), c(a.begin(), a.begin() + 16);
  for (std::int32_t t : {3, 1, 4, 1, 5}) b.push_back(t);
  const std::vector<std::vector<std::int32_t>> prompts = {a, b, c};
  auto go = [&](bool caching) {
    FunctionalOptions o;
    o.kv_block_tokens = 8;
    o.max_tokens_per_step = 24;  // step 0: A's first 24 tokens; step 1: its last 16, then B and C
    o.chunked_prefill = true;
    o.prefix_caching = caching;
    o.devices = devices;
    FunctionalExecutor exec(w, load_system("duplex-pe"), o);
    return exec.run(prompts, 4);
  };
  const FunctionalResult off = go(false), on = go(true);
  EXPECT_EQ(on.tokens, off.tokens);
  const CheckResult check = compare(on, reference_generate(w, prompts, 4));
  EXPECT_TRUE(check.passed()) << check.max_abs_logit_err;
  EXPECT_EQ(on.prefix_hit_tokens, 24 + 15);
  ASSERT_EQ(on.in_device_kv_migrations.size(), 3u);
  using StepTokens = std::pair<std::int64_t, std::int64_t>;
  std::map<std::int64_t, StepTokens> migrated;  // request -> (step, tokens)
  for (const InDeviceKvMigration& m : on.in_device_kv_migrations) migrated[m.request] = {m.step, m.tokens};
  EXPECT_EQ(migrated[0], StepTokens(1, 40));
  EXPECT_EQ(migrated[1], StepTokens(1, 5));
  EXPECT_EQ(migrated[2], StepTokens(1, 1));
  // The bytes follow the tokens: K and V, every layer, each device's KV heads, FP16.
  const compiler::ModelSpec& m = w.spec;
  const auto layout = compiler::ParallelLayout::make(m, load_system("duplex-pe"), devices);
  const double per_token =
      2.0 * m.layers * std::max(1, m.kv_heads / layout.tp) * layout.devices * m.head_dim * 2.0;
  for (const InDeviceKvMigration& mig : on.in_device_kv_migrations)
    EXPECT_EQ(mig.bytes, per_token * static_cast<double>(mig.tokens));
}

INSTANTIATE_TEST_SUITE_P(Devices, PrefixCachingPrefillSpace, ::testing::Values(1, 2));

// Two data-parallel nodes (16 devices): requests 0 and 2 on node 0, 1 and 3 on node 1, each node's devices
// holding its requests' K/V and caching them. Request 2 takes request 0's 2 shared blocks; request 3 (prompt
// 0 again) finds only request 1's 2 on its node, not prompt 0's 3; request 1 nothing. The tokens stay those
// of a run without caching, on 16 devices as on 8.
TEST(PrefixCachingRunEdges, EachDataParallelNodeCachesItsOwnRequests) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-moe"), 3);
  auto run_on = [&](int devices, bool caching) {
    FunctionalOptions o;
    o.kv_block_tokens = 8;
    o.prefix_caching = caching;
    o.devices = devices;
    FunctionalExecutor exec(w, load_system("gpu"), o);
    return exec.run(shared_prompts(), 5);
  };
  const FunctionalResult one = run_on(8, true), two = run_on(16, true), off = run_on(16, false);
  EXPECT_EQ(two.tokens, off.tokens);
  EXPECT_EQ(two.tokens, one.tokens);
  EXPECT_EQ(one.prefix_hit_tokens, 16 + 16 + 24);
  EXPECT_EQ(two.prefix_hit_tokens, 16 + 16);
  EXPECT_EQ(prefill_tokens(two), prefill_tokens(off) - two.prefix_hit_tokens);
}

}  // namespace
}  // namespace duplex::runtime::functional
