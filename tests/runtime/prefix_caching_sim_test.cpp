// Prefix caching in the serving simulator: shared system prompts taken from the cache cut the prefill work
// (fewer xPU-busy seconds, earlier first tokens, more throughput) without changing what is generated; the
// figures are reported, deterministic, and zero when caching is off; split systems cache in their prefill
// pool.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

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

// Data-parallel nodes cache their own requests' K/V (requests dealt to the least-loaded node): Mixtral-8x7B
// on 16 devices (two nodes of 8) computes each system prompt once per node, so one more miss per prompt and
// node than on one node of 8: exactly 2 x 64 whole blocks fewer hits, the same tokens. Dealt cache-aware,
// each prompt's requests go to the node that cached it (the first of each to a node of its own, the loads
// never imbalanced past the thresholds): one miss per prompt, as on one node.
TEST(PrefixCachingSim, EachDataParallelNodeCachesItsOwnRequests) {
  const auto model = compiler::load_model("mixtral-8x7b");
  SimulationOptions o = shared_prompts(true);
  o.devices = 8;
  const SystemResult one = simulate(model, load_system("gpu"), o);
  o.devices = 16;
  SystemSpec gpu = load_system("gpu");
  const SystemResult two = simulate(model, gpu, o);
  ASSERT_NE(two.layout.find("DP2"), std::string::npos) << two.layout;
  EXPECT_EQ(two.generated_tokens, one.generated_tokens);
  EXPECT_EQ(two.prefix_query_tokens, one.prefix_query_tokens);
  EXPECT_EQ(one.prefix_hit_tokens - two.prefix_hit_tokens, 2 * 1024);
  gpu.data_parallel_balance = DataParallelBalance::cache_aware;
  const SystemResult cache_aware = simulate(model, gpu, o);
  EXPECT_EQ(cache_aware.data_parallel_balance, "cache-aware");
  EXPECT_EQ(cache_aware.generated_tokens, one.generated_tokens);
  EXPECT_EQ(cache_aware.prefix_hit_tokens, one.prefix_hit_tokens);
  for (const RankFigures& k : cache_aware.ranks) EXPECT_GT(k.requests, 0);
}

// Under attention data parallelism every device is a rank with its own cache: Mixtral-8x7B on 8 devices
// computes each of the 2 system prompts once per device, 7 more times each than under TP8 (one rank).
TEST(PrefixCachingSim, EachAttentionDataParallelRankCachesItsOwnRequests) {
  const auto model = compiler::load_model("mixtral-8x7b");
  SimulationOptions o = shared_prompts(true);
  o.devices = 8;
  SystemSpec system = load_system("gpu");
  const SystemResult tp = simulate(model, system, o);
  system.attention_data_parallel = true;
  const SystemResult dp = simulate(model, system, o);
  ASSERT_NE(dp.layout.find("TP1 x DP8"), std::string::npos) << dp.layout;
  EXPECT_EQ(dp.generated_tokens, tp.generated_tokens);
  EXPECT_EQ(dp.prefix_query_tokens, tp.prefix_query_tokens);
  EXPECT_EQ(tp.prefix_hit_tokens - dp.prefix_hit_tokens, 2 * 7 * 1024);
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

// A split system's prefill instance holds each turn's prompt and first token, never the answer (decoded
// elsewhere), so a turn finds only its previous turn's prompt cached: with fixed 64-token messages and
// 48-token answers, turn t's prompt is (t - 1) x 112 + 64 tokens and turn t + 1 reuses its whole 16-token
// blocks. (It used to fail: the prefill pool's copy of a request carried hashes of its answer, which that
// copy does not generate.)
TEST(PrefixCachingSim, SplitSystemConversationsReuseTheirPreviousPrompts) {
  const auto model = compiler::load_model("llama3-70b");
  SimulationOptions o = testing::closed_loop_options(24, 64, 48, 4, 3, 0.0);
  o.workload.conversation = Conversations{.turns = 3, .think_s = 0.05};
  o.scheduler.prefix_caching = true;
  const SystemResult r = simulate(model, load_system("duplex-split"), o);
  EXPECT_EQ(r.requests, 24);
  // 8 conversations: turn 2 reuses turn 1's 64 prompt tokens, turn 3 turn 2's 176 (11 blocks).
  EXPECT_EQ(r.prefix_hit_tokens, 8 * (64 + 176));
  EXPECT_EQ(r.prefix_query_tokens, 8 * (64 + 176 + 288));
}

// A sliding-window model caches each layer group's blocks (gpt-oss-20b: a 128-token window in 12 of its 24
// layers): with memory to spare, its turns reuse exactly what a full-attention model's would, every whole
// block of the previous turn's prompt and answer: 8 conversations of fixed 64-token messages and 48-token
// answers, turn 2 (176 tokens) the 6 whole blocks of turn 1's 111 tokens of K/V, turn 3 (288) the 13 of turn
// 2's 223. Turn 3's window needs only blocks 5..12 of those; turn 2 gave blocks 0..5 of its windowed layers
// back to the cache as it decoded.
TEST(PrefixCachingSim, SlidingWindowConversationsReuseTheirWholeHistory) {
  const auto model = compiler::load_model("gpt-oss-20b");
  ASSERT_EQ(model.sliding_window, 128);
  SimulationOptions o = testing::closed_loop_options(24, 64, 48, 4, 3, 0.0);
  o.workload.conversation = Conversations{.turns = 3, .think_s = 0.05};
  for (const char* name : {"gpu", "duplex-pe"}) {
    SCOPED_TRACE(name);
    const SystemResult r = simulate(model, load_system(name), o);
    EXPECT_EQ(r.requests, 24);
    EXPECT_EQ(r.prefix_hit_tokens, 8 * (96 + 208));
    EXPECT_EQ(r.prefix_query_tokens, 8 * (64 + 176 + 288));
  }
}

// More conversations than the device's KV cache holds (half its memory reserved): histories are evicted while
// their users think. A host tier (links.host_kv_offload) keeps copies: later turns load them over PCIe
// instead of recomputing them, which takes link time and energy but much less time than the prefill.
// 96 users in conversations of 6 turns (1 s of think time), steps recorded, `reserve` of the memory kept from
// the KV cache.
SimulationOptions conversations(double reserve) {
  SimulationOptions o = testing::closed_loop_options(384, 256, 64, 16, 5, 0.1);
  o.workload.arrival.concurrency = 96;
  o.workload.conversation = Conversations{.turns = 6, .think_s = 1};
  o.memory_reserve = reserve;
  o.record_steps = true;
  return o;
}

// `run` (of `system`) charged some bytes at `price`: doubled, the same run costs more link energy and no
// time.
void expect_charged_at(const compiler::ModelSpec& model, const SystemSpec& system, const SimulationOptions& o,
                       const char* price, const SystemResult& run) {
  SystemSpec dearer = system;
  dearer.energy.actions[price] = 2.0 * system.energy.price(price);
  const SystemResult pricier = simulate(model, dearer, o);
  EXPECT_EQ(pricier.simulated_s, run.simulated_s) << price;
  EXPECT_GT(pricier.energy_breakdown.value("communication.links", 0.0),
            run.energy_breakdown.value("communication.links", 0.0))
      << price;
}

// `o` served by `model` on the GPU without a host tier and with 64 GiB of host memory per device for one.
struct HostTierRuns {
  SystemSpec system;  // with the tier
  SystemResult device_only, tiered;
};
HostTierRuns with_and_without_host_tier(const compiler::ModelSpec& model, const SimulationOptions& o) {
  HostTierRuns r{load_system("gpu"), {}, {}};
  r.device_only = simulate(model, r.system, o);
  r.system.links.host_kv_offload = gib(64);
  r.tiered = simulate(model, r.system, o);
  return r;
}

TEST(PrefixCachingSim, AHostTierServesHistoriesTheDeviceEvicted) {
  const auto model = compiler::load_model("llama3-70b");
  const SimulationOptions o = conversations(0.5);
  const auto [system, device_only, tiered] = with_and_without_host_tier(model, o);
  EXPECT_EQ(device_only.host_kv_blocks, 0);
  EXPECT_EQ(device_only.host_hit_tokens, 0);
  // 64 GiB per device in blocks of 16 tokens of this device's K/V share (80 KiB per token).
  EXPECT_EQ(tiered.host_kv_blocks, static_cast<std::int64_t>(64.0 * (1 << 30) / (16 * 81920.0)));
  EXPECT_GT(tiered.host_hit_tokens, 0);
  EXPECT_GT(tiered.prefix_hit_tokens, device_only.prefix_hit_tokens + tiered.host_hit_tokens / 2);
  EXPECT_LT(tiered.simulated_s, device_only.simulated_s);
  EXPECT_LT(tiered.ttft_ms.p50, device_only.ttft_ms.p50);
  // The copies are charged at links.host_per_byte: a dearer host link costs energy, not time.
  expect_charged_at(model, system, o, "links.host_per_byte", tiered);
  double link_us = 0;
  for (const StepRow& r : tiered.step_rows) link_us += r.link_us;
  EXPECT_GT(link_us, 0);  // the loads' time
  const nlohmann::json j = tiered.to_json();
  EXPECT_EQ(j["prefix_cache"]["host_hit_tokens"].get<std::int64_t>(), tiered.host_hit_tokens);
  EXPECT_FALSE(device_only.to_json()["prefix_cache"].contains("host_hit_tokens"));
  EXPECT_EQ(simulate(model, system, o).to_json().dump(), j.dump());
}

// A disk tier behind a host tier too small for the histories (links.disk_kv_offload; LMCache's local disk):
// every copy is also written to disk, and a history the host tier dropped is read back from there, at the
// disk's bandwidth, instead of recomputed. A slower disk makes those loads, and so the first tokens, slower;
// the disk's reads and writes are charged at links.disk_per_byte.
TEST(PrefixCachingSim, ADiskTierServesWhatTheHostTierDropped) {
  const auto model = compiler::load_model("llama3-70b");
  const SimulationOptions o = conversations(0.5);
  SystemSpec system = load_system("gpu");
  system.links.host_kv_offload = gib(1);
  const SystemResult host_only = simulate(model, system, o);
  system.links.disk_kv_offload = gib(256);
  const SystemResult disk = simulate(model, system, o);
  EXPECT_EQ(host_only.disk_kv_blocks, 0);
  EXPECT_EQ(disk.disk_kv_blocks, static_cast<std::int64_t>(256.0 * (1 << 30) / (16 * 81920.0)));
  EXPECT_GT(disk.disk_hit_tokens, host_only.host_hit_tokens);
  EXPECT_LE(disk.disk_hit_tokens, disk.host_hit_tokens);
  EXPECT_GT(disk.prefix_hit_tokens, host_only.prefix_hit_tokens + disk.disk_hit_tokens / 2);
  const nlohmann::json j = disk.to_json();
  EXPECT_EQ(j["prefix_cache"]["disk_hit_tokens"].get<std::int64_t>(), disk.disk_hit_tokens);
  EXPECT_FALSE(host_only.to_json()["prefix_cache"].contains("disk_hit_tokens"));
  SystemSpec slow = system;
  slow.links.disk_bandwidth = gb_per_s(0.5);
  EXPECT_GT(simulate(model, slow, o).ttft_ms.p50, disk.ttft_ms.p50);
  expect_charged_at(model, system, o, "links.disk_per_byte", disk);
}

// A sliding-window model's host tier (gpt-oss-20b: 12 of 24 layers windowed at 128 tokens) keeps whole
// blocks, every layer: with most of its memory reserved, histories the device evicted come back from host
// memory, and the turns' first tokens sooner than when they are recomputed.
TEST(PrefixCachingSim, ASlidingWindowModelLoadsEvictedHistoriesFromTheHost) {
  const auto model = compiler::load_model("gpt-oss-20b");
  SimulationOptions o = conversations(0.83);  // on one device: about 1 GiB of K/V
  o.devices = 1;
  const auto [system, device_only, tiered] = with_and_without_host_tier(model, o);
  EXPECT_EQ(device_only.host_hit_tokens, 0);
  EXPECT_GT(tiered.host_hit_tokens, 0);
  EXPECT_GT(tiered.prefix_hit_tokens, device_only.prefix_hit_tokens);
  EXPECT_LT(tiered.ttft_ms.p50, device_only.ttft_ms.p50);
}

// Layerwise loads (links.host_kv_load: layerwise): a step's host K/V arrives layer by layer while the layers
// before compute. On one device (no collectives: a step's link time is its host load's), the first step that
// loads is the same plan in both modes (nothing differed before it): its serial duration is S + H + latency
// (link time H + latency), its layerwise one S + latency + H / L + (L - 1) / L x max(0, H - S).
TEST(PrefixCachingSim, LayerwiseHostLoadsOverlapTheForward) {
  const auto model = compiler::load_model("llama-3.2-1b");
  SimulationOptions o = conversations(0.96);  // about 0.9 GiB of KV cache
  o.devices = 1;
  SystemSpec system = load_system("gpu");
  system.links.host_kv_offload = gib(64);
  const SystemResult serial = simulate(model, system, o);
  system.links.host_kv_layerwise = true;
  const SystemResult layerwise = simulate(model, system, o);
  auto first_load = [](const SystemResult& r) {
    return std::find_if(r.step_rows.begin(), r.step_rows.end(),
                        [](const StepRow& s) { return s.link_us > 0; });
  };
  const auto s = first_load(serial), l = first_load(layerwise);
  ASSERT_NE(s, serial.step_rows.end());
  ASSERT_EQ(s - serial.step_rows.begin(), l - layerwise.step_rows.begin());
  EXPECT_EQ(s->start_s, l->start_s);
  EXPECT_EQ(s->link_us, l->link_us);  // the link is busy as long either way
  const double latency = to_us(system.links.host_latency), load = s->link_us - latency;
  const double step = (s->end_s - s->start_s) * 1e6 - s->link_us, layers = model.layers;
  EXPECT_NEAR((l->end_s - l->start_s) * 1e6,
              step + latency + load / layers + (layers - 1) / layers * std::max(0.0, load - step), 1e-6);
  EXPECT_LT(l->end_s - l->start_s, s->end_s - s->start_s);
  EXPECT_GT(layerwise.host_hit_tokens, 0);
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
