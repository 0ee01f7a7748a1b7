#include "duplex/runtime/sim/serving_simulator.hpp"

#include <gtest/gtest.h>

#include "duplex/base/error.hpp"
#include "duplex/runtime/sim/memory_plan.hpp"
#include "duplex/runtime/scheduler/scheduler.hpp"
#include "duplex/runtime/sim/step_executor.hpp"
#include "closed_loop_options.hpp"

namespace duplex::runtime {
namespace {

SimulationOptions small_run(std::int64_t requests, std::int64_t in, std::int64_t out, std::int64_t batch) {
  SimulationOptions o = testing::closed_loop_options(requests, in, out, batch, 7, 0.1);
  o.record_steps = true;
  return o;
}

TEST(ServingSimulator, EveryRequestFinishesOnceWithItsTokensAndTimeIsMonotone) {
  const auto model = compiler::load_model("mixtral-8x7b");
  const SystemResult r = simulate(model, load_system("duplex-pe"), small_run(96, 128, 64, 32));
  EXPECT_EQ(r.requests, 96);
  std::int64_t expected_tokens = 0;
  for (const auto& [id, row] : r.request_rows) expected_tokens += row["output_tokens"].get<std::int64_t>();
  EXPECT_EQ(r.generated_tokens, expected_tokens);
  double last_end = 0;
  for (const auto& s : r.step_rows) {
    EXPECT_GE(s.start_s, last_end - 1e-15);
    EXPECT_GT(s.end_s, s.start_s);
    EXPECT_LE(s.kv_blocks_used, s.kv_blocks_capacity);
    last_end = s.end_s;
  }
  EXPECT_DOUBLE_EQ(last_end, r.simulated_s);
}

// Sharing the cycle model's memos across runs (as a sweep does) changes nothing in the results, whatever ran
// before with the same memos.
TEST(ServingSimulator, SharedPimMemosGiveIdenticalResults) {
  const auto model = compiler::load_model("mixtral-8x7b");
  const auto sys = load_system("duplex-pe");
  const SystemResult alone = simulate(model, sys, small_run(48, 256, 32, 16));
  SimulationOptions shared = small_run(48, 256, 32, 16);
  shared.pim_memos = std::make_shared<PimTimingMemos>();
  SimulationOptions other = small_run(32, 512, 16, 32);  // warms the memo with other shapes first
  other.pim_memos = shared.pim_memos;
  (void)simulate(model, sys, other);
  EXPECT_EQ(simulate(model, sys, shared).to_json(), alone.to_json());
  EXPECT_EQ(simulate(model, sys, shared).to_json(), alone.to_json());  // and with a warm memo
}

TEST(ServingSimulator, SameSeedGivesIdenticalResultsAndAnotherSeedDiffers) {
  const auto model = compiler::load_model("mixtral-8x7b");
  const auto sys = load_system("duplex-pe");
  auto o = small_run(48, 64, 32, 16);
  const auto a = simulate(model, sys, o).to_json().dump();
  const auto b = simulate(model, sys, o).to_json().dump();
  EXPECT_EQ(a, b);
  o.workload.seed = 8;
  EXPECT_NE(simulate(model, sys, o).to_json().dump(), a);
}

TEST(ServingSimulator, KvCapacityLimitsTheBatchAndForcesPreemptionNotLoss) {
  // Llama-3-70B on 2 devices leaves little HBM for KV: long requests cannot all run at batch 128.
  const auto model = compiler::load_model("llama3-70b");
  auto o = small_run(64, 4096, 256, 128);
  o.devices = 2;
  const SystemResult r = simulate(model, load_system("gpu"), o);
  EXPECT_EQ(r.requests, 64);
  const double tokens_per_request = 4096 + 256;
  EXPECT_LT(static_cast<double>(r.batch_max), static_cast<double>(r.memory.kv_tokens) / tokens_per_request * 1.3 + 1);
  EXPECT_LT(r.batch_max, 64);
}

TEST(ServingSimulator, DuplexPeBeatsGpuOnMixtralDecodeHeavyServing) {
  const auto model = compiler::load_model("mixtral-8x7b");
  const auto o = small_run(128, 256, 256, 64);
  const SystemResult gpu = simulate(model, load_system("gpu"), o);
  const SystemResult pe = simulate(model, load_system("duplex-pe"), o);
  EXPECT_GT(pe.throughput_tok_s, gpu.throughput_tok_s);
  EXPECT_LT(pe.energy_j_per_token, gpu.energy_j_per_token);
  EXPECT_GT(pe.pim_utilization, 0.0);
  EXPECT_EQ(gpu.pim_utilization, 0.0);
}

TEST(ServingSimulator, EnergyBreakdownSumsToTheTotal) {
  const auto model = compiler::load_model("mixtral-8x7b");
  const SystemResult r = simulate(model, load_system("duplex"), small_run(32, 64, 32, 16));
  double sum = 0;
  for (const auto& [k, v] : r.energy_breakdown.items()) sum += v.get<double>();
  EXPECT_NEAR(sum, r.energy_j, 1e-9 * r.energy_j);
  EXPECT_TRUE(r.energy_breakdown.contains("moe.dram"));
  EXPECT_TRUE(r.energy_breakdown.contains("attention.compute"));
  EXPECT_TRUE(r.energy_breakdown.contains("static.xpu"));
}

TEST(ServingSimulator, NoOpIsFasterThanItsUnitsPeakRoofline) {
  const auto model = compiler::load_model("grok-1");
  const auto sys = load_system("duplex-pe");
  const auto layout = compiler::ParallelLayout::make(model, sys, 16);
  ExpertRouter router = ExpertRouter::uniform(3);
  StepExecutor exec(model, sys, layout, &router);
  StepPlan plan;
  plan.requests = {{0, 1, 2048, TokenPhase::decode, true}, {1, 1, 100, TokenPhase::decode, true},
                   {2, 512, 0, TokenPhase::prefill, true}};
  const StepCost c = exec.execute(plan);
  for (const auto& st : c.plan.stages)
    for (const auto& p : st.ops) {
      const auto& op = c.plan.graph.ops[p.op];
      if (p.unit == compiler::Unit::kXpu) {
        EXPECT_GE(p.time.si(), std::max(op.flops / sys.xpu.peak_fp16.si(), op.bytes() / sys.memory_bandwidth().si()));
      } else if (p.unit == compiler::Unit::kPim) {
        EXPECT_GE(p.time.si(), std::max(op.flops / sys.pim_peak_flops().si(), op.bytes() / sys.pim_bandwidth().si()));
      }
    }
}

TEST(MemoryPlan, WeightsThatDoNotFitAreAClearError) {
  const auto model = compiler::load_model("grok-1");
  const auto sys = load_system("gpu");
  EXPECT_THROW(plan_memory(model, sys, compiler::ParallelLayout::make(model, sys, 4), 0.1), Error);
  const auto ok = plan_memory(model, sys, compiler::ParallelLayout::make(model, sys, 16), 0.1);
  EXPECT_GT(ok.kv_tokens, 0);
  // Mixtral on 4 devices: ~23.4 GB of weights per device (46.7B x 2 B / 4).
  const auto mix = compiler::load_model("mixtral-8x7b");
  const auto mp = plan_memory(mix, sys, compiler::ParallelLayout::make(mix, sys, 4), 0.1);
  EXPECT_NEAR(mp.weight_bytes_per_device / 1e9, 46.7 * 2 / 4, 0.5);
  // KV per token per device: 32 layers x 2 (K,V) x 2 kv heads x 128 x 2 B = 32 KiB.
  EXPECT_DOUBLE_EQ(mp.kv_bytes_per_token, 32.0 * 2 * 2 * 128 * 2);
}


TEST(SplitSystem, EveryRequestGetsItsFirstTokenFromThePrefillPoolAndTheRestFromTheDecodePool) {
  const auto model = compiler::load_model("mixtral-8x7b");
  const auto sys = load_system("duplex-split");
  auto o = small_run(64, 256, 64, 32);
  const SystemResult r = simulate(model, sys, o);
  EXPECT_EQ(r.requests, 64);
  std::int64_t expected = 0;
  for (const auto& [id, row] : r.request_rows) {
    expected += row["output_tokens"].get<std::int64_t>();
    EXPECT_LE(row["ttft_ms"].get<double>(), row["e2e_ms"].get<double>());
  }
  EXPECT_EQ(r.generated_tokens, expected);
  EXPECT_NE(r.layout.find("prefill pool"), std::string::npos);
  EXPECT_GT(r.energy_breakdown["communication.links"].get<double>(), 0.0);  // KV migrations over the links
  EXPECT_EQ(simulate(model, sys, o).to_json().dump(), r.to_json().dump());
}

TEST(Scheduler, MigratedRequestStartsDecodingWithItsCachedPrompt) {
  SchedulerConfig c;
  c.kv_capacity_blocks = 100;
  Scheduler s(c);
  s.add_request(RequestSpec{1, Time{}, 33, 4, 32});  // 32 prompt tokens cached + the first output token
  const StepPlan p = s.schedule(Time{});
  ASSERT_EQ(p.requests.size(), 1u);
  EXPECT_EQ(p.requests[0].tokens, 1);
  EXPECT_EQ(p.requests[0].context_len, 32);
  EXPECT_EQ(p.requests[0].phase, TokenPhase::decode);
  EXPECT_THROW(s.add_request(RequestSpec{2, Time{}, 8, 4, 8}), Error);   // nothing left to compute
  EXPECT_THROW(s.add_request(RequestSpec{3, Time{}, 8, 4, -1}), Error);
}

// ---- BankGroup-PIM and the heterogeneous GPU + PIM-device system ----

TEST(BankGroupPim, PimReadEnergyPerByteLiesBetweenLogicPimAndTheXpuPath) {
  compiler::Op op;
  op.kind = compiler::OpKind::kExpertFfn;
  op.flops = 2.0e6;
  op.bytes_weights = 32.0e6;
  auto dram_joules = [&](const SystemSpec& sys, compiler::Unit unit) {
    EnergyLedger ledger(sys.energy);
    charge_op(ledger, op, unit, sys);
    return ledger.breakdown_json()["moe.dram"].get<double>();
  };
  const SystemSpec logic = load_system("duplex-pe"), bankgroup = load_system("bankgroup-pim");
  const double on_logic = dram_joules(logic, compiler::Unit::kPim);
  const double on_bankgroup = dram_joules(bankgroup, compiler::Unit::kPim);
  const double on_xpu = dram_joules(bankgroup, compiler::Unit::kXpu);
  EXPECT_LT(on_logic, on_bankgroup);
  EXPECT_LT(on_bankgroup, on_xpu);
  // 1e6 accesses of 32 B at 0.686 nJ (energy/duplex.yaml) + 32e6 / 1 KiB rows x 0.909 nJ.
  EXPECT_NEAR(on_bankgroup, 1.0e6 * 0.686e-9 + 32.0e6 / 1024 * 0.909e-9, 1e-12);
}

TEST(BankGroupPim, SimulatesLikeDuplexPeWithTheAnalyticalModelAndCostlierPimReads) {
  const auto model = compiler::load_model("mixtral-8x7b");
  SimulationOptions o = small_run(32, 64, 32, 16);
  const SystemResult bg = simulate(model, load_system("bankgroup-pim"), o);  // asks for "cycle"
  EXPECT_EQ(bg.pim_model, "analytical");  // the Logic-PIM bundle cycle model does not apply
  EXPECT_EQ(bg.requests, 32);
  o.pim_model = "analytical";
  const SystemResult pe = simulate(model, load_system("duplex-pe"), o);
  EXPECT_EQ(bg.steps, pe.steps);
  // Same compute, bandwidth and placement; Duplex-PE also copies each prompt's K/V from its prefill memory
  // space into the KV spaces (BankGroup-PIM has no Logic-PIM memory spaces): a little slower.
  EXPECT_GT(pe.simulated_s, bg.simulated_s);
  EXPECT_LT(pe.simulated_s, 1.01 * bg.simulated_s);
  EXPECT_GT(bg.pim_utilization, 0.0);
  EXPECT_GT(bg.energy_j, pe.energy_j);                // only the PIM reads cost more
}

TEST(Heterogeneous, KvCapacityComesFromThePimDevicesAndWeightsAreSplit) {
  // tiny-moe on one GPU: experts 2 layers x 8 x (3 x 256 x 512) params x 2 B = 12 MiB on the PIM device;
  // KV 2 layers x (2 x 2 heads x 32) x 2 B = 512 B per token.
  const auto model = compiler::load_model("tiny-moe");
  const SystemSpec h = load_system("gpu-pim-hetero");
  const auto layout = compiler::ParallelLayout::make(model, h, 1);
  const MemoryPlan plan = plan_memory(model, h, layout, 0.1);
  const double capacity = static_cast<double>(h.memory_capacity().bytes);
  const double experts = 2.0 * 8 * 3 * 256 * 512 * 2;
  EXPECT_DOUBLE_EQ(plan.pim_weight_bytes, experts);
  EXPECT_DOUBLE_EQ(plan.pim_device_bytes, capacity);
  EXPECT_DOUBLE_EQ(plan.kv_bytes_per_token, 512);
  EXPECT_EQ(plan.kv_tokens, static_cast<std::int64_t>((capacity - experts) / 512));
  // The GPU's reserve does not shrink the KV cache; the GPU holds everything but the experts.
  EXPECT_EQ(plan_memory(model, h, layout, 0.5).kv_tokens, plan.kv_tokens);
  EXPECT_DOUBLE_EQ(plan.weight_bytes_per_device,
                   (static_cast<double>(model.params()) - 2.0 * 8 * 3 * 256 * 512) * 2);
  // Two PIM devices per GPU: twice the memory for experts + KV.
  const SystemSpec h2 =
      read_system(ConfigNode::parse("preset: systems/gpu-pim-hetero\nheterogeneous: {pim_devices_per_gpu: 2}\n", "h2.yaml"));
  EXPECT_EQ(plan_memory(model, h2, layout, 0.1).kv_tokens, static_cast<std::int64_t>((2 * capacity - experts) / 512));
}

TEST(Heterogeneous, EveryRequestCompletesWithLinkTrafficAndBothDeviceKindsCharged) {
  const auto model = compiler::load_model("mixtral-8x7b");
  const SystemSpec h = load_system("gpu-pim-hetero");
  const SystemResult r = simulate(model, h, small_run(32, 64, 32, 16));
  EXPECT_EQ(r.requests, 32);
  EXPECT_GT(r.generated_tokens, 0);
  EXPECT_EQ(r.pim_model, "cycle");  // one PIM device per GPU: the same stacks the cycle model times
  EXPECT_GT(r.pim_utilization, 0.0);
  EXPECT_GT(r.energy_breakdown["communication.links"].get<double>(), 0.0);  // GPU <-> PIM-device transfers
  // Static power: 2 GPUs (xPU + 5 stacks) and 2 PIM devices (5 stacks + 5 Logic-PIM dies each): the paper's
  // two + two against four GPUs.
  const double t = r.simulated_s;
  EXPECT_NEAR(r.energy_breakdown["static.xpu"].get<double>(), 100.0 * t * 2, 1e-9 * t);
  EXPECT_NEAR(r.energy_breakdown["static.hbm_stack"].get<double>(), 2.0 * t * 2 * 5 * 2, 1e-9 * t);
  EXPECT_NEAR(r.energy_breakdown["static.logic_pim_stack"].get<double>(), 1.0 * t * 2 * 5, 1e-9 * t);
  // KV capacity from the 2 PIM devices, which also hold all experts: less than Duplex-PE's 4 devices (the
  // paper's capacity-limited batch, Fig. 5(c)).
  SimulationOptions o = small_run(32, 64, 32, 16);
  EXPECT_LT(r.memory.kv_tokens, simulate(model, load_system("duplex-pe"), o).memory.kv_tokens);
}

TEST(Heterogeneous, TwoNodesServeAsDataParallelReplicasWithTheirOwnPimDevices) {
  // tiny-moe on 16 GPUs + 16 PIM devices: two nodes, TP8 x DP2, EP8 with each expert in 2 shards.
  const auto model = compiler::load_model("tiny-moe");
  const SystemSpec h = load_system("gpu-pim-hetero");
  SimulationOptions o = small_run(48, 64, 24, 16);
  o.devices = 16;
  const SystemResult r = simulate(model, h, o);
  EXPECT_EQ(r.requests, 48);
  EXPECT_EQ(r.devices, 16);
  // Each PIM device holds its GPU's expert shard: 2 layers x 1 expert x (3 x 256 x 512) / 2 params x 2 B;
  // K/V per token on a GPU's PIM device: 2 layers x 2 (k, v) x 1 of the 2 kv heads x 32 x 2 B = 256 B; the
  // two replicas' caches add up.
  const double capacity = static_cast<double>(h.memory_capacity().bytes);
  const double experts = 2.0 * 3 * 256 * 512 / 2 * 2;
  EXPECT_EQ(r.memory.kv_tokens, 2 * static_cast<std::int64_t>((capacity - experts) / 256));
  // Static power: 16 GPUs (xPU + 5 stacks) and 16 PIM devices (5 stacks + 5 Logic-PIM dies).
  const double t = r.simulated_s;
  EXPECT_NEAR(r.energy_breakdown["static.xpu"].get<double>(), 100.0 * t * 16, 1e-9 * t);
  EXPECT_NEAR(r.energy_breakdown["static.logic_pim_stack"].get<double>(), 1.0 * t * 16 * 5, 1e-9 * t);
  // On one node (8 GPUs) the same requests move the same NVLink bytes in all (half the GPUs, each with twice
  // the tokens) but no InfiniBand all-to-all: less link energy.
  o.devices = 8;
  const SystemResult one_node = simulate(model, h, o);
  EXPECT_EQ(one_node.generated_tokens, r.generated_tokens);
  EXPECT_LT(one_node.energy_breakdown["communication.links"].get<double>(),
            r.energy_breakdown["communication.links"].get<double>());
}

}  // namespace
}  // namespace duplex::runtime
