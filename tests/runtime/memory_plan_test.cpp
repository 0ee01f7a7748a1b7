// The memory plan's split into memory spaces (DUPLEX.md s.6) on Duplex devices, worked by hand from the plan's
// inputs: expert round-robin, the prefill space choice, the reserve, KV and prefill capacities, errors; and
// the systems without spaces keep one KV pool.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include "closed_loop_options.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/compiler/model_spec.hpp"
#include "duplex/runtime/sim/memory_plan.hpp"
#include "duplex/runtime/sim/serving_simulator.hpp"
#include "error_text.hpp"

namespace duplex::runtime {
namespace {

// tiny-moe with 3 MoE layers of 6 experts: on one device 18 experts round-robin over 4 spaces, 5 / 5 / 4 / 4.
compiler::ModelSpec eighteen_experts() {
  compiler::ModelSpec m = compiler::load_model("tiny-moe");
  m.layers = 3;
  m.experts = 6;
  return m;
}

MemoryPlan plan_on(const compiler::ModelSpec& m, const SystemSpec& sys, int devices, double reserve,
                   std::int64_t block = 1) {
  return plan_memory(m, sys, compiler::ParallelLayout::make(m, sys, devices), reserve, block);
}

using testing::error_of;

TEST(MemorySpaces, ExpertsRoundRobinAndTheHeaviestSpaceTakesThePrefill) {
  const compiler::ModelSpec m = eighteen_experts();
  const SystemSpec sys = load_system("duplex-pe");
  ASSERT_TRUE(sys.uses_prefill_space());
  const MemoryPlan plan = plan_on(m, sys, 1, 0.1);
  const double device = static_cast<double>(sys.memory_capacity().bytes);
  const double expert = static_cast<double>(m.ffn_params(m.expert_ffn)) * 2.0;  // FP16
  const double other = (static_cast<double>(m.params()) - 18.0 * static_cast<double>(m.ffn_params(m.expert_ffn))) * 2.0;
  ASSERT_TRUE(plan.has_spaces());
  EXPECT_DOUBLE_EQ(plan.space_bytes, device / 4);
  ASSERT_EQ(plan.space_weight_bytes.size(), 4u);
  const double experts_in[4] = {5, 5, 4, 4};
  for (std::size_t s = 0; s < 4; ++s)
    EXPECT_NEAR(plan.space_weight_bytes[s], other / 4 + experts_in[s] * expert, 1e-6) << "space " << s;
  EXPECT_NEAR(plan.weight_bytes_per_device, other + 18 * expert, 1e-3);
  // Spaces 0 and 1 hold one expert more; the tie goes to the higher index.
  EXPECT_EQ(plan.prefill_spaces, (std::vector<int>{1}));
  EXPECT_EQ(plan.kv_spaces, (std::vector<int>{0, 2, 3}));
  const double per_token = plan.kv_bytes_per_token;
  const double kv_free = 3 * device / 4 - (3 * other / 4 + 13 * expert);
  EXPECT_EQ(plan.kv_tokens, static_cast<std::int64_t>(std::floor(kv_free / per_token)));
  const double prefill_free = device / 4 - (other / 4 + 5 * expert) - 0.1 * device;
  EXPECT_EQ(plan.prefill_tokens, static_cast<std::int64_t>(std::floor(prefill_free / per_token)));
  EXPECT_EQ(plan.prefill_capacity_tokens, plan.prefill_tokens);  // one replica
  // Conservation: KV + prefill + reserve + weights = the device (up to the two floors).
  EXPECT_NEAR(static_cast<double>(plan.kv_tokens + plan.prefill_tokens) * per_token,
              device - plan.weight_bytes_per_device - plan.reserve_bytes_per_device, 2 * per_token);
}

TEST(MemorySpaces, TwoPrefillSpacesAreTheTwoHeaviest) {
  const compiler::ModelSpec m = eighteen_experts();
  SystemSpec sys = load_system("duplex");
  sys.pim->kv_spaces = 2;
  const MemoryPlan plan = plan_on(m, sys, 1, 0.1);
  EXPECT_EQ(plan.prefill_spaces, (std::vector<int>{0, 1}));
  EXPECT_EQ(plan.kv_spaces, (std::vector<int>{2, 3}));
}

TEST(MemorySpaces, NoPrefillSpaceWhenEverySpaceHoldsKv) {
  const compiler::ModelSpec m = eighteen_experts();
  SystemSpec sys = load_system("duplex");
  sys.pim->kv_spaces = sys.pim->memory_spaces;
  EXPECT_FALSE(sys.uses_prefill_space());
  EXPECT_FALSE(compiler::LowerOptions::for_system(sys).kv_migration);
  EXPECT_TRUE(compiler::LowerOptions::for_system(load_system("duplex")).kv_migration);
  const MemoryPlan plan = plan_on(m, sys, 1, 0.1);
  EXPECT_FALSE(plan.has_spaces());
  EXPECT_EQ(plan.prefill_capacity_tokens, 0);
  const double device = static_cast<double>(sys.memory_capacity().bytes);
  EXPECT_EQ(plan.kv_tokens, static_cast<std::int64_t>((device - plan.weight_bytes_per_device - 0.1 * device) /
                                                      plan.kv_bytes_per_token));
}

TEST(MemorySpaces, OtherSystemsKeepOneKvPool) {
  const compiler::ModelSpec mix = compiler::load_model("mixtral-8x7b");
  for (const char* name : {"gpu", "2xgpu", "bank-pim", "bankgroup-pim", "gpu-pim-hetero", "duplex-split"}) {
    const SystemSpec sys = load_system(name);
    EXPECT_FALSE(sys.uses_prefill_space()) << name;
    const MemoryPlan plan = plan_on(mix, sys, 4, 0.1);
    EXPECT_FALSE(plan.has_spaces()) << name;
    EXPECT_EQ(plan.prefill_tokens, 0) << name;
    EXPECT_EQ(plan.prefill_capacity_tokens, 0) << name;
  }
}

TEST(MemorySpaces, MixtralKvIsThreeQuartersOfWhatWeightsLeave) {
  const compiler::ModelSpec mix = compiler::load_model("mixtral-8x7b");
  const MemoryPlan gpu = plan_on(mix, load_system("gpu"), 4, 0.1);
  const MemoryPlan dup = plan_on(mix, load_system("duplex-pe"), 4, 0.1, 16);
  // 2 experts per device x 32 layers = 64: 16 per space, so the spaces are equal and the prefill space is 3.
  EXPECT_EQ(dup.prefill_spaces, (std::vector<int>{3}));
  const double left = dup.device_bytes - dup.weight_bytes_per_device;  // memory - weights
  EXPECT_NEAR(static_cast<double>(dup.kv_tokens), 0.75 * left / dup.kv_bytes_per_token, 1.0);
  EXPECT_NEAR(static_cast<double>(dup.prefill_tokens),
              (0.25 * left - dup.reserve_bytes_per_device) / dup.kv_bytes_per_token, 1.0);
  // The GPU's one pool: memory - weights - reserve. Duplex keeps the reserve in the prefill space, so its KV
  // is 3/4 (memory - weights) against the GPU's (memory - weights - reserve).
  EXPECT_EQ(gpu.kv_tokens,
            static_cast<std::int64_t>((gpu.device_bytes - gpu.weight_bytes_per_device - gpu.reserve_bytes_per_device) /
                                      gpu.kv_bytes_per_token));
  EXPECT_DOUBLE_EQ(gpu.weight_bytes_per_device, dup.weight_bytes_per_device);
  const double expected_ratio = 0.75 * left / (left - dup.reserve_bytes_per_device);
  EXPECT_NEAR(static_cast<double>(dup.kv_tokens) / static_cast<double>(gpu.kv_tokens), expected_ratio, 1e-4);
  EXPECT_LT(dup.kv_tokens, gpu.kv_tokens);
}

// Attention data parallelism: each of DeepSeek-V3's 16 devices holds whole copies of the non-expert weights
// and the MLA latent of its own requests only; under TP8 x DP2 each node's 8 devices hold the latent of every
// request of the node. Same bytes per token; the pool is every device's free memory.
TEST(MemorySpaces, AttentionDataParallelHoldsEachRequestsLatentOnOneDevice) {
  const compiler::ModelSpec m = compiler::load_model("deepseek-v3-fp8");
  SystemSpec sys = load_system("gpu");
  const MemoryPlan tp = plan_on(m, sys, 16, 0.1);
  sys.attention_data_parallel = true;
  const MemoryPlan dp = plan_on(m, sys, 16, 0.1);
  EXPECT_DOUBLE_EQ(dp.kv_bytes_per_token, tp.kv_bytes_per_token);
  const compiler::ParallelLayout p = compiler::ParallelLayout::make(m, sys, 16);
  // The non-expert weights: 1/8 of them per device under TP8, all of them under attention DP; the experts'
  // the same (16 devices, 16 experts each).
  const double others = m.weight_bytes() - static_cast<double>(m.moe_layers_before(m.layers)) * m.experts *
                                               m.expert_ffn_bytes(m.expert_ffn);
  EXPECT_NEAR(dp.weight_bytes_per_device - tp.weight_bytes_per_device, others * 7 / 8, 1e-6 * others);
  EXPECT_EQ(dp.kv_tokens, static_cast<std::int64_t>(
                              (dp.device_bytes - dp.weight_bytes_per_device - dp.reserve_bytes_per_device) /
                              dp.kv_bytes_per_token) *
                              16);
  EXPECT_EQ(tp.kv_tokens, static_cast<std::int64_t>(
                              (tp.device_bytes - tp.weight_bytes_per_device - tp.reserve_bytes_per_device) /
                              tp.kv_bytes_per_token) *
                              2);
  EXPECT_EQ(p.dp, 16);
  EXPECT_GT(dp.kv_tokens, 3 * tp.kv_tokens);
}

TEST(MemorySpaces, ReserveThatLeavesNoPrefillRoomIsAnError) {
  const compiler::ModelSpec m = eighteen_experts();
  const SystemSpec sys = load_system("duplex");
  // 30 % of the device is more than one space (25 %) can hold besides its weights.
  const std::string e = error_of([&] { plan_on(m, sys, 1, 0.3); });
  EXPECT_NE(e.find("prefill space(s) 1"), std::string::npos) << e;
  EXPECT_NE(e.find("tiny-moe"), std::string::npos) << e;
  EXPECT_NE(e.find("memory reserve of at most"), std::string::npos) << e;
  // The largest reserve the message names does fit.
  const double device = static_cast<double>(sys.memory_capacity().bytes);
  const MemoryPlan ok = plan_on(m, sys, 1, 0.2, 16);
  EXPECT_GE(ok.prefill_tokens, 16);
  EXPECT_LT(static_cast<double>(ok.prefill_tokens) * ok.kv_bytes_per_token, 0.05 * device);
  // A reserve that fits, but leaves less than one KV block of 16 tokens.
  const double space_free = ok.space_bytes - ok.space_weight_bytes[1];
  const double tight = (space_free - 8.5 * ok.kv_bytes_per_token) / device;
  EXPECT_THROW(plan_on(m, sys, 1, tight, 16), Error);
  EXPECT_EQ(plan_on(m, sys, 1, tight, 8).prefill_tokens, 8);
}

TEST(MemorySpaces, ASpaceOverfilledByItsExpertsIsAnError) {
  // Two 21 GiB experts on one device: 42 GiB fits the 80 GiB device, but not a 20 GiB space.
  compiler::ModelSpec m = compiler::load_model("tiny-moe");
  m.layers = 1;
  m.experts = 2;
  m.top_k = 1;
  m.expert_ffn = 14'680'064;  // 3 x 256 x ffn x 2 B = 21 GiB
  EXPECT_NO_THROW(plan_on(m, load_system("gpu"), 1, 0.1));
  const std::string e = error_of([&] { plan_on(m, load_system("duplex"), 1, 0.1); });
  EXPECT_NE(e.find("memory space 0 of 4"), std::string::npos) << e;
  EXPECT_NE(e.find("duplex"), std::string::npos) << e;
}

TEST(MemorySpaces, SimulationResultReportsTheSplit) {
  const compiler::ModelSpec m = compiler::load_model("tiny-moe");
  const SimulationOptions o = testing::closed_loop_options(8, 32, 8, 4, 1, 0);
  const SystemSpec pe = load_system("duplex-pe");
  const nlohmann::json dup = simulate(m, pe, o).to_json();
  const MemoryPlan plan = plan_memory(m, pe, compiler::ParallelLayout::make(m, pe, pe.devices_for(m.name)),
                                      o.memory_reserve, o.scheduler.kv_block_tokens);
  const nlohmann::json& mem = dup.at("memory");
  EXPECT_EQ(mem.at("prefill_capacity_tokens").get<std::int64_t>(), plan.prefill_capacity_tokens);
  EXPECT_GT(plan.prefill_capacity_tokens, 0);
  EXPECT_EQ(mem.at("kv_tokens").get<std::int64_t>(), plan.kv_tokens);
  const nlohmann::json& spaces = mem.at("spaces");
  EXPECT_EQ(spaces.at("kv_spaces").get<std::vector<int>>(), plan.kv_spaces);
  EXPECT_EQ(spaces.at("prefill_spaces").get<std::vector<int>>(), plan.prefill_spaces);
  EXPECT_EQ(spaces.at("weights_gib").size(), 4u);
  const double device_gib = static_cast<double>(pe.memory_capacity().bytes) / (1 << 30);
  EXPECT_DOUBLE_EQ(spaces.at("space_gib").get<double>() * 4, device_gib);
  EXPECT_EQ(spaces.at("prefill_tokens_per_replica").get<std::int64_t>(), plan.prefill_tokens);
  // A GPU has one KV pool: no bound, no spaces.
  const nlohmann::json gpu = simulate(m, load_system("gpu"), o).to_json();
  EXPECT_EQ(gpu.at("memory").at("prefill_capacity_tokens").get<std::int64_t>(), 0);
  EXPECT_FALSE(gpu.at("memory").contains("spaces"));
}

}  // namespace
}  // namespace duplex::runtime
