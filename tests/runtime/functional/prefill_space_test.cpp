// The prefill-space cache in functional emulation (Duplex memory spaces, DUPLEX.md s.6): with --kv-blocks N
// for the KV spaces, the prefill space gets ceil(N x 1 / 3) blocks and the scheduler keeps the unfinished
// prefills within them; tokens stay those of an unbounded run.
#include <gtest/gtest.h>

#include <string>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/functional/functional_executor.hpp"
#include "duplex/runtime/functional/model_weights.hpp"

namespace duplex::runtime::functional {
namespace {

// 18 + 4 + 1 prompt tokens: 5 + 1 + 1 blocks of 4.
const std::vector<std::vector<std::int32_t>> kPrompts = {
    {7, 300, 12, 999, 3, 64, 8, 8, 21, 4, 4, 17, 90, 2, 11, 6, 5, 33}, {1, 5, 9, 42}, {512}};
constexpr int kNewTokens = 5;

FunctionalResult run_on(const ModelWeights& w, const char* system, std::int64_t kv_blocks) {
  FunctionalOptions o;
  o.kv_block_tokens = 4;
  o.kv_blocks = kv_blocks;
  FunctionalExecutor exec(w, load_system(system), o);
  return exec.run(kPrompts, kNewTokens);
}

std::int64_t migration_step(const FunctionalResult& r, std::int64_t id) {
  for (const auto& m : r.in_device_kv_migrations)
    if (m.request == id) return m.step;
  return -1;
}

TEST(PrefillSpaceCache, BoundDelaysAPromptAndKeepsTheTokens) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-moe"), 5);
  // 18 KV blocks: the prefill space gets 6 (24 tokens). The first two prompts take all 6 blocks in step 0,
  // so the third prefills (and migrates) in step 1; without a bound all three go in step 0.
  const FunctionalResult bounded = run_on(w, "duplex-pe", 18);
  const FunctionalResult roomy = run_on(w, "duplex-pe", 0);
  EXPECT_EQ(bounded.tokens, roomy.tokens);
  EXPECT_EQ(migration_step(roomy, 2), 0);
  EXPECT_EQ(migration_step(bounded, 0), 0);
  EXPECT_EQ(migration_step(bounded, 1), 0);
  EXPECT_EQ(migration_step(bounded, 2), 1);
  // The GPU has no prefill space: the same KV blocks admit all three at once.
  const FunctionalResult gpu = run_on(w, "gpu", 18);
  EXPECT_EQ(gpu.tokens, roomy.tokens);
  EXPECT_TRUE(gpu.in_device_kv_migrations.empty());
}

TEST(PrefillSpaceCache, PromptLargerThanThePrefillSpaceIsRejected) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-moe"), 5);
  // 15 KV blocks -> 5 prefill blocks (20 tokens): the 18-token prompt may recompute 22 tokens after a
  // preemption, more than the space; the GPU's 15 blocks hold it.
  EXPECT_NO_THROW(run_on(w, "gpu", 15));
  try {
    run_on(w, "duplex-pe", 15);
    FAIL() << "expected the request to be rejected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("prefill space holds 5 blocks"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace duplex::runtime::functional
