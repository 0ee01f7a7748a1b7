// The serving simulator's side of K/V migration: the in-device copy after prefill is an op of the step's plan
// (timed by the cost model, charged by charge_op), and the split system's link migration and utilisation.
#include <gtest/gtest.h>

#include "duplex/runtime/sim/kv_migration.hpp"
#include "duplex/runtime/sim/serving_simulator.hpp"
#include "duplex/runtime/sim/step_executor.hpp"
#include "closed_loop_options.hpp"

namespace duplex::runtime {
namespace {

using compiler::OpKind;

// 8 decodes at context 300, plus request 9's prompt chunk of 512 tokens at context 512; `last_chunk`: its
// prompt ends with this chunk (it samples its first token).
StepPlan mixed_plan(bool last_chunk) {
  StepPlan p;
  for (RequestId id = 0; id < 8; ++id) p.requests.push_back({id, 1, 300, TokenPhase::decode, true});
  p.requests.push_back({9, 512, 512, TokenPhase::prefill, last_chunk});
  return p;
}

std::vector<std::size_t> migrations(const compiler::ExecutionPlan& plan) {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < plan.graph.ops.size(); ++i)
    if (plan.graph.ops[i].kind == OpKind::kKvMigration) out.push_back(i);
  return out;
}

TEST(KvMigrationSim, StepCompletingAPrefillTimesTheCopyAsAMemoryBoundXpuOp) {
  const auto model = compiler::load_model("mixtral-8x7b");
  const SystemSpec sys = load_system("duplex-pe");
  const auto layout = compiler::ParallelLayout::make(model, sys, sys.devices_for(model.name));
  // One router per step, same seed: both steps route alike.
  ExpertRouter router = ExpertRouter::uniform(5), router2 = ExpertRouter::uniform(5);
  StepExecutor exec(model, sys, layout, &router), exec2(model, sys, layout, &router2);
  const StepCost done = exec.execute(mixed_plan(true));
  const auto ops = migrations(done.plan);
  ASSERT_EQ(static_cast<int>(ops.size()), model.layers);
  const double kv_heads_here = static_cast<double>(model.kv_heads / layout.tp);
  // read + write x (K + V) x heads x head_dim x 2 B x all 1024 prompt tokens
  const double bytes = 2.0 * 2.0 * kv_heads_here * model.head_dim * 2.0 * 1024;
  const Time expected = transfer_time(bytes, sys.memory_bandwidth() * sys.xpu.memory_efficiency) +
                        sys.xpu.launch_overhead;
  for (std::size_t i : ops) {
    EXPECT_EQ(done.plan.graph.ops[i].bytes(), bytes);
    EXPECT_EQ(done.plan.find(i)->unit, compiler::Unit::kXpu);
    EXPECT_DOUBLE_EQ(done.plan.find(i)->time.si(), expected.si());
  }
  // An earlier chunk moves nothing yet; its step differs only by the migrations.
  const StepCost chunk = exec2.execute(mixed_plan(false));
  EXPECT_TRUE(migrations(chunk.plan).empty());
  EXPECT_EQ(chunk.plan.graph.ops.size() + ops.size(), done.plan.graph.ops.size());
  EXPECT_GT(done.xpu_busy, chunk.xpu_busy);
  EXPECT_NEAR((done.xpu_busy - chunk.xpu_busy).si(), (expected * model.layers).si(), 1e-12);
  // Energy: the copy's DRAM traffic on the xPU path, in the attention category.
  EXPECT_GT(done.energy.breakdown_json()["attention.dram"].get<double>(),
            chunk.energy.breakdown_json()["attention.dram"].get<double>());
}

TEST(KvMigrationSim, NoInDeviceMigrationOnGpuOrSplitSystems) {
  const auto model = compiler::load_model("mixtral-8x7b");
  for (const char* name : {"gpu", "duplex-split", "bank-pim"}) {
    const SystemSpec sys = load_system(name);
    const auto layout = compiler::ParallelLayout::make(model, sys, sys.devices_for(model.name));
    ExpertRouter router = ExpertRouter::uniform(5);
    StepExecutor exec(model, sys, layout, &router);
    EXPECT_TRUE(migrations(exec.execute(mixed_plan(true)).plan).empty()) << name;
  }
}

TEST(KvMigrationSim, LinkMigrationCostIsBytesOverTheLinkPlusLatency) {
  const SystemSpec sys = load_system("duplex-split");
  const KvLinkMigration nvlink(sys, sys.links.devices_per_node);
  EXPECT_TRUE(nvlink.one_node());
  EXPECT_EQ(nvlink.time(1e6), transfer_time(1e6, sys.links.nvlink_bandwidth) + sys.links.nvlink_latency);
  const KvLinkMigration ib(sys, sys.links.devices_per_node + 1);
  EXPECT_FALSE(ib.one_node());
  EXPECT_EQ(ib.time(1e6), transfer_time(1e6, sys.links.infiniband_bandwidth) + sys.links.infiniband_latency);
  // Four devices' links side by side.
  EXPECT_EQ(ib.transfer(4e6, 4), transfer_time(1e6, sys.links.infiniband_bandwidth));
  EXPECT_EQ(ib.time(4e6, 4), ib.transfer(4e6, 4) + sys.links.infiniband_latency);
  EnergyLedger ledger(sys.energy);
  nvlink.charge(ledger, 1e6);
  EXPECT_DOUBLE_EQ(ledger.total().si(), (sys.energy.price("links.nvlink_per_byte") * 1e6).si());
  const auto m = compiler::load_model("mixtral-8x7b");
  EXPECT_EQ(kv_bytes_per_token(m), 32.0 * 2 * 8 * 128 * 2);  // 32 layers x (K, V) x 8 heads x 128 x FP16
}

// The streams of one prompt's transfer: the distinct K/V shards of the smaller tensor-parallel group.
TEST(KvMigrationSim, TransferStreamsAreTheShardsBothGroupsHold) {
  const SystemSpec sys = load_system("duplex-split");
  auto streams = [&](const char* model, int from, int to) {
    const auto m = compiler::load_model(model);
    return kv_transfer_streams(m, compiler::ParallelLayout::make(m, sys, from),
                               compiler::ParallelLayout::make(m, sys, to));
  };
  EXPECT_EQ(streams("llama3-70b", 4, 4), 4);  // 8 KV heads, 2 per device
  EXPECT_EQ(streams("llama3-70b", 8, 2), 2);  // the receivers' two links
  EXPECT_EQ(streams("llama3-70b", 1, 1), 1);
  EXPECT_EQ(streams("tiny-dense", 4, 4), 2);   // 2 KV heads: two shards, each on two devices
  EXPECT_EQ(streams("deepseek-v3", 8, 8), 8);  // MLA's latent, whole on every device: tokens split 8 ways
}

// Each end's links carry one transfer at a time, first asked first served.
TEST(KvMigrationSim, LinkScheduleQueuesTransfersSharingAnEnd) {
  KvLinkSchedule links(2, 2);
  const Time ms = Time::from_si(1e-3);
  EXPECT_EQ(links.book(0, 0, 0 * ms, 5 * ms), 0 * ms);
  EXPECT_EQ(links.book(0, 1, 1 * ms, 5 * ms), 5 * ms);    // the sender busy until 5 ms
  EXPECT_EQ(links.book(1, 0, 2 * ms, 5 * ms), 5 * ms);    // the receiver busy until 5 ms
  EXPECT_EQ(links.book(1, 1, 20 * ms, 1 * ms), 20 * ms);  // both free by then
  EXPECT_EQ(links.book(1, 1, 20 * ms, 1 * ms), 21 * ms);
}

// A prompt whose prefill ended with a step from 10 to 18 ms, over a link of 1 us latency, 8 layers.
TEST(KvMigrationSim, LayerwiseTransfersStreamDuringThePromptsLastStep) {
  SystemSpec sys = load_system("duplex-split");
  sys.links.infiniband_latency = Time::from_si(1e-6);
  const KvLinkMigration link(sys, false);
  const Time ms = Time::from_si(1e-3);
  const double bytes_per_ms = sys.links.infiniband_bandwidth.si() * 1e-3;  // one stream
  // After the prefill: it leaves at the step's end.
  KvLinkSchedule after(1, 1);
  const KvLinkSchedule::Crossing a = after.book_prompt(0, 0, link, 4 * bytes_per_ms, 1, 10 * ms, 18 * ms, 0);
  EXPECT_EQ(a.start, 18 * ms);
  EXPECT_NEAR((a.arrival() - (22 * ms + link.latency())).si(), 0.0, 1e-15);
  // Layer by layer, a fast link (4 ms for the prompt, 0.5 ms a layer; a layer computed every 1 ms): the first
  // layer leaves at 11 ms, the last once computed at 18 ms, arriving 0.5 ms later.
  KvLinkSchedule fast(1, 1);
  const KvLinkSchedule::Crossing f = fast.book_prompt(0, 0, link, 4 * bytes_per_ms, 1, 10 * ms, 18 * ms, 8);
  EXPECT_NEAR((f.start - 11 * ms).si(), 0.0, 1e-15);
  EXPECT_NEAR((f.arrival() - (18.5 * ms + link.latency())).si(), 0.0, 1e-15);
  // A slow link (16 ms for the prompt): the layers queue behind the first, all sent by 11 + 16 ms.
  const KvLinkSchedule::Crossing s = fast.book_prompt(0, 0, link, 16 * bytes_per_ms, 1, 10 * ms, 18 * ms, 8);
  EXPECT_NEAR((s.start - 18.5 * ms).si(), 0.0, 1e-15);  // the links are busy with the first prompt until then
  EXPECT_NEAR((s.arrival() - (34.5 * ms + link.latency())).si(), 0.0, 1e-15);
  KvLinkSchedule slow(1, 1);
  EXPECT_NEAR((slow.book_prompt(0, 0, link, 16 * bytes_per_ms, 1, 10 * ms, 18 * ms, 8).arrival() -
               (27 * ms + link.latency()))
                  .si(),
              0.0, 1e-15);
}

SimulationOptions closed_run(std::int64_t requests, std::int64_t in, std::int64_t out, std::int64_t batch) {
  return testing::closed_loop_options(requests, in, out, batch, 11, 0.0);
}

// The split simulator used to add both pools' per-device busy time over the run (xpu_utilization 1.03-1.10
// on Mixtral duplex-split); now: busy device-time / (devices x time), and per pool busy / time.
TEST(KvMigrationSim, SplitUtilisationIsPerPoolAndBoundedByOne) {
  const auto model = compiler::load_model("mixtral-8x7b");
  const SystemResult r = simulate(model, load_system("duplex-split"), closed_run(96, 512, 64, 32));
  ASSERT_EQ(r.pools.size(), 2u);
  EXPECT_EQ(r.pools[0].name, "prefill");
  EXPECT_EQ(r.pools[1].name, "decode");
  EXPECT_EQ(r.pools[0].devices + r.pools[1].devices, r.devices);
  EXPECT_EQ(r.pools[0].steps + r.pools[1].steps, r.steps);
  double weighted = 0;
  for (const PoolFigures& p : r.pools) {
    EXPECT_GT(p.xpu_utilization, 0.0) << p.name;
    EXPECT_LE(p.xpu_utilization, 1.0) << p.name;
    EXPECT_LE(p.pim_utilization, 1.0) << p.name;
    EXPECT_GT(p.batch_mean, 0.0);
    EXPECT_LE(p.batch_mean, 32.0);
    weighted += p.xpu_utilization * p.devices;
  }
  EXPECT_LE(r.xpu_utilization, 1.0);
  EXPECT_LE(r.pim_utilization, 1.0);
  EXPECT_NEAR(r.xpu_utilization, weighted / r.devices, 1e-12);
  const nlohmann::json j = r.to_json();
  EXPECT_DOUBLE_EQ(j["pools"]["decode"]["utilization"]["xpu"].get<double>(), r.pools[1].xpu_utilization);
  // A system without a split reports no pools and the same bound.
  const SystemResult pe = simulate(model, load_system("duplex-pe"), closed_run(32, 128, 16, 16));
  EXPECT_TRUE(pe.pools.empty());
  EXPECT_FALSE(pe.to_json().contains("pools"));
  EXPECT_LE(pe.xpu_utilization, 1.0);
}

// GPUs prefilling for Duplex devices (split.prefill_system: split-gpu-duplex): the prefill pool runs the
// GPU's plans (no PIM), and its devices leak as GPUs (no Logic-PIM dies); the decode pool is duplex-split's.
TEST(KvMigrationSim, PrefillDevicesOfAnotherSystem) {
  const auto model = compiler::load_model("mixtral-8x7b");
  const SystemSpec hetero = load_system("split-gpu-duplex");
  ASSERT_TRUE(hetero.split_prefill_system != nullptr);
  EXPECT_EQ(hetero.prefill_pool_system().name, "gpu");
  const SystemResult r = simulate(model, hetero, closed_run(96, 512, 64, 32));
  const SystemResult same = simulate(model, load_system("duplex-split"), closed_run(96, 512, 64, 32));
  ASSERT_EQ(r.pools.size(), 2u);
  EXPECT_EQ(r.pools[0].pim_utilization, 0.0);
  EXPECT_GT(r.pools[1].pim_utilization, 0.0);
  EXPECT_NE(r.layout.find("prefill pool of gpu"), std::string::npos) << r.layout;
  EXPECT_NE(r.layout.find("decode pool of split-gpu-duplex"), std::string::npos) << r.layout;
  // Static energy: xPUs and stacks on every device, Logic-PIM dies only on the decode pool's (a half).
  auto per_second = [](const SystemResult& x, const char* key) {
    return x.energy_breakdown.value(key, 0.0) / x.simulated_s;
  };
  EXPECT_NEAR(per_second(r, "static.xpu"), per_second(same, "static.xpu"),
              1e-9 * per_second(same, "static.xpu"));
  EXPECT_NEAR(per_second(r, "static.logic_pim_stack"), 0.5 * per_second(same, "static.logic_pim_stack"),
              1e-9 * per_second(same, "static.logic_pim_stack"));
  EXPECT_EQ(r.generated_tokens, same.generated_tokens);
}

}  // namespace
}  // namespace duplex::runtime
