// DeepEP's low-latency kernels in the serving simulator (SystemSpec::expert_all_to_all_max_tokens > 0; 0, the
// default, models neither): the buffers every device reserves for them (deepep_low_latency_bytes, DeepEP's
// LowLatencyLayout) come out of the KV cache, and a data-parallel rank runs at most the requests one
// low-latency dispatch holds.
#include <gtest/gtest.h>

#include "closed_loop_options.hpp"
#include "duplex/runtime/sim/memory_plan.hpp"
#include "duplex/runtime/sim/serving_simulator.hpp"

namespace duplex::runtime {
namespace {

// SGLang's 128 tokens (SGLANG_DEEPEP_NUM_MAX_DISPATCH_TOKENS_PER_RANK's default).
SystemSpec with_deepep_limit(SystemSpec s) {
  EXPECT_EQ(s.expert_all_to_all_max_tokens, 0);  // the presets' default: not modelled
  s.expert_all_to_all_max_tokens = 128;
  return s;
}

SystemSpec attention_dp(ExpertAllToAll kernels) {
  SystemSpec s = with_deepep_limit(load_system("gpu"));
  s.attention_data_parallel = true;
  s.expert_all_to_all = kernels;
  return s;
}

// DeepSeek-V3 (hidden 7168, 256 experts) on 32 devices under attention data parallelism, 128 tokens: worked
// by hand from DeepEP's LowLatencyLayout. 56 scales per token; a dispatch message 16 + max(14336, 7168 +
// 224) = 14352 bytes, a combine message 224 + 14336 = 14560; send max(128 x 14352, 256 x 128 x 14560) =
// 477,102,080, receive 256 x 128 x 14560 = 477,102,080; signaling 8 x 256 + 4 x 8 = 2080, aligned 2176; total
// 2 x (477,102,080 + 477,102,080 + 2176) = 1,908,412,672 (a multiple of 128). Half the tokens, about half
// the bytes. None for the normal kernels, a dense model, or a layout that exchanges no tokens.
TEST(DeepEpBuffers, SizedAsDeepEpsLowLatencyLayout) {
  const compiler::ModelSpec m = compiler::load_model("deepseek-v3");
  ASSERT_EQ(m.hidden, 7168);
  ASSERT_EQ(m.experts, 256);
  for (ExpertAllToAll kernels : {ExpertAllToAll::low_latency, ExpertAllToAll::auto_by_step}) {
    SystemSpec s = attention_dp(kernels);
    const compiler::ParallelLayout p = compiler::ParallelLayout::make(m, s, 32);
    ASSERT_EQ(p.local_experts, 8);
    EXPECT_EQ(deepep_low_latency_bytes(m, s, p), 1'908'412'672.0);
    s.expert_all_to_all_max_tokens = 64;
    EXPECT_EQ(deepep_low_latency_bytes(m, s, p), 2.0 * (2 * 238'551'040.0 + 2176));
  }
  const SystemSpec normal = attention_dp(ExpertAllToAll::normal);
  EXPECT_EQ(deepep_low_latency_bytes(m, normal, compiler::ParallelLayout::make(m, normal, 32)), 0.0);
  SystemSpec unset = attention_dp(ExpertAllToAll::auto_by_step);
  unset.expert_all_to_all_max_tokens = 0;
  EXPECT_EQ(deepep_low_latency_bytes(m, unset, compiler::ParallelLayout::make(m, unset, 32)), 0.0);
  // One node under tensor parallelism: its devices hold every token, none crosses.
  const SystemSpec tp = with_deepep_limit(load_system("gpu"));
  const compiler::ModelSpec glam = compiler::load_model("glam");
  EXPECT_EQ(deepep_low_latency_bytes(glam, tp, compiler::ParallelLayout::make(glam, tp, 8)), 0.0);
  EXPECT_GT(deepep_low_latency_bytes(glam, tp, compiler::ParallelLayout::make(glam, tp, 16)),
            0.0);  // 2 nodes
  const compiler::ModelSpec dense = compiler::load_model("llama3-70b");
  EXPECT_EQ(deepep_low_latency_bytes(dense, tp, compiler::ParallelLayout::make(dense, tp, 16)), 0.0);
}

// The buffers sit beside the reserve: the KV cache loses their bytes on every device (each replica's
// whole tokens: within one token per replica of rounding).
TEST(DeepEpBuffers, TheBuffersComeOutOfTheKvCache) {
  const compiler::ModelSpec m = compiler::load_model("deepseek-v3-fp8");
  const SystemSpec ll = attention_dp(ExpertAllToAll::auto_by_step),
                   normal = attention_dp(ExpertAllToAll::normal);
  const compiler::ParallelLayout p = compiler::ParallelLayout::make(m, ll, 32);
  const MemoryPlan with = plan_memory(m, ll, p, 0.05), without = plan_memory(m, normal, p, 0.05);
  EXPECT_EQ(with.deepep_buffer_bytes_per_device, deepep_low_latency_bytes(m, ll, p));
  EXPECT_EQ(without.deepep_buffer_bytes_per_device, 0.0);
  EXPECT_EQ(with.reserved_bytes_per_device(),
            with.reserve_bytes_per_device + with.deepep_buffer_bytes_per_device);
  const double lost = with.deepep_buffer_bytes_per_device / with.kv_bytes_per_token * p.replicas();
  EXPECT_NEAR(static_cast<double>(without.kv_tokens - with.kv_tokens), lost, p.replicas());
}

// GLaM on 16 devices under attention data parallelism (each device a rank that sends its own tokens), 256
// users per rank: on the low-latency kernels a rank runs at most 128 requests (64 with 64 tokens), so the
// step batch stays within 16 x 128; the normal kernels have no such bound. The result states it.
TEST(DeepEpBuffers, ARankRunsAtMostTheDispatchableRequests) {
  const compiler::ModelSpec m = compiler::load_model("glam");
  SimulationOptions o = testing::closed_loop_options(16 * 300, 32, 4, 16 * 256, 3, 0.0);
  o.devices = 16;
  SystemSpec s = attention_dp(ExpertAllToAll::auto_by_step);
  const SystemResult capped = simulate(m, s, o);
  EXPECT_EQ(capped.rank_batch_cap, 128);
  EXPECT_LE(capped.batch_max, 16 * 128);
  EXPECT_GT(capped.batch_max, 16 * 64);
  EXPECT_EQ(capped.to_json().at("deepep_rank_max_requests"), 128);
  EXPECT_GT(capped.to_json().at("memory").at("deepep_low_latency_gib_per_device").get<double>(), 0.0);
  s.expert_all_to_all_max_tokens = 64;
  const SystemResult half = simulate(m, s, o);
  EXPECT_EQ(half.rank_batch_cap, 64);
  EXPECT_LE(half.batch_max, 16 * 64);
  s.expert_all_to_all = ExpertAllToAll::normal;
  const SystemResult free = simulate(m, s, o);
  EXPECT_EQ(free.rank_batch_cap, 0);
  EXPECT_GT(free.batch_max, 16 * 128);
  EXPECT_FALSE(free.to_json().contains("deepep_rank_max_requests"));
  s.expert_all_to_all = ExpertAllToAll::auto_by_step;
  s.expert_all_to_all_max_tokens = 0;  // not modelled: as the normal kernels here
  const SystemResult unbounded = simulate(m, s, o);
  EXPECT_EQ(unbounded.rank_batch_cap, 0);
  EXPECT_GT(unbounded.batch_max, 16 * 128);
  EXPECT_FALSE(unbounded.to_json().at("memory").contains("deepep_low_latency_gib_per_device"));
}

}  // namespace
}  // namespace duplex::runtime
