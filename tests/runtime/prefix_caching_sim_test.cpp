// Prefix caching in the serving simulator: shared system prompts taken from the cache cut the prefill work
// (fewer xPU-busy seconds, earlier first tokens, more throughput) without changing what is generated; the
// figures are reported, deterministic, and zero when caching is off; split systems cache in their prefill
// pool.
#include <gtest/gtest.h>

#include "closed_loop_options.hpp"
#include "duplex/runtime/sim/serving_simulator.hpp"

namespace duplex::runtime {
namespace {

// 96 requests, 16 running, prompts of a 1,024-token system prompt (one of 2) + 128 own tokens, 64 outputs.
SimulationOptions shared_prompts(bool caching) {
  SimulationOptions o = testing::closed_loop_options(96, 128, 64, 16, 7, 0.1);
  o.workload.shared_prefix = SharedPrefix{1024, 2};
  o.scheduler.prefix_caching = caching;
  return o;
}

TEST(PrefixCachingSim, CachedPromptsCutPrefillWorkAndFirstTokenLatency) {
  const auto model = compiler::load_model("mixtral-8x7b");
  for (const char* name : {"gpu", "duplex-pe"}) {
    SCOPED_TRACE(name);
    const SystemSpec system = load_system(name);
    const SystemResult on = simulate(model, system, shared_prompts(true));
    const SystemResult off = simulate(model, system, shared_prompts(false));
    EXPECT_EQ(on.generated_tokens, off.generated_tokens);
    EXPECT_EQ(off.prefix_query_tokens, 0);  // caching off: nothing looked up
    EXPECT_EQ(off.prefix_hit_tokens, 0);
    // All but the first requests of each system prompt take its 64 whole blocks: well over half the prompts.
    const double hit_rate =
        static_cast<double>(on.prefix_hit_tokens) / static_cast<double>(on.prefix_query_tokens);
    EXPECT_GT(hit_rate, 0.6);
    EXPECT_LT(hit_rate, 1024.0 / 1152.0);
    EXPECT_GT(on.throughput_tok_s, 1.1 * off.throughput_tok_s);
    EXPECT_LT(on.ttft_ms.p50, off.ttft_ms.p50);
    EXPECT_LT(on.xpu_utilization * on.simulated_s, off.xpu_utilization * off.simulated_s);
    const nlohmann::json j = on.to_json();
    ASSERT_TRUE(j.contains("prefix_cache"));
    EXPECT_EQ(j["prefix_cache"]["hit_tokens"].get<std::int64_t>(), on.prefix_hit_tokens);
    EXPECT_DOUBLE_EQ(j["prefix_cache"]["hit_rate"].get<double>(), hit_rate);
    EXPECT_FALSE(off.to_json().contains("prefix_cache"));
    // Same inputs, same results.
    const SystemResult again = simulate(model, system, shared_prompts(true));
    EXPECT_EQ(again.simulated_s, on.simulated_s);
    EXPECT_EQ(again.prefix_hit_tokens, on.prefix_hit_tokens);
  }
}

// Conversations of 6 turns (64-token messages, 48-token answers, 0.05 s think time): each turn finds the
// history its previous turn left in the cache, so first tokens come much sooner than when every turn
// recomputes its whole conversation.
TEST(PrefixCachingSim, ConversationTurnsFindTheirHistoryCached) {
  const auto model = compiler::load_model("llama3-70b");
  const auto chats = [](bool caching) {
    SimulationOptions o = testing::closed_loop_options(96, 64, 48, 16, 3, 0.1);
    o.workload.conversation = Conversations{.turns = 6, .think_s = 0.05};
    o.scheduler.prefix_caching = caching;
    return o;
  };
  for (const char* name : {"gpu", "duplex-pe"}) {
    SCOPED_TRACE(name);
    const SystemSpec system = load_system(name);
    const SystemResult on = simulate(model, system, chats(true)), off = simulate(model, system, chats(false));
    EXPECT_EQ(on.requests, 96);
    // Turns 2..6 reuse all but their new message and the last block: well over half the prompt tokens.
    EXPECT_GT(static_cast<double>(on.prefix_hit_tokens) / static_cast<double>(on.prefix_query_tokens), 0.6);
    EXPECT_LT(on.ttft_ms.p50, 0.7 * off.ttft_ms.p50);
    EXPECT_LT(on.simulated_s, off.simulated_s);
  }
}

TEST(PrefixCachingSim, WithoutSharedPromptsNothingIsReported) {
  const auto model = compiler::load_model("mixtral-8x7b");
  const SystemResult r =
      simulate(model, load_system("gpu"), testing::closed_loop_options(32, 128, 16, 8, 7, 0.0));
  EXPECT_EQ(r.prefix_query_tokens, 0);
  EXPECT_FALSE(r.to_json().contains("prefix_cache"));
}

TEST(PrefixCachingSim, SplitSystemsCacheInTheirPrefillPool) {
  const auto model = compiler::load_model("mixtral-8x7b");
  const SystemSpec split = load_system("duplex-split");
  const SystemResult on = simulate(model, split, shared_prompts(true));
  const SystemResult off = simulate(model, split, shared_prompts(false));
  EXPECT_GT(on.prefix_hit_tokens, 0);
  EXPECT_EQ(on.generated_tokens, off.generated_tokens);
  EXPECT_LT(on.ttft_ms.p50, off.ttft_ms.p50);
}

}  // namespace
}  // namespace duplex::runtime
