// Expert load balancing in the compiler: vLLM's initial placement, DeepSeek's EPLB (copies to the experts
// with the most load per copy, balanced packing), how an expert's rows split over its copies, the layout's
// slots (SystemSpec::expert_balancing), and the lowering's plan of the busiest group.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "duplex/base/config.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/expert_placement.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/compiler/model_spec.hpp"
#include "duplex/compiler/parallel.hpp"

namespace duplex::compiler {
namespace {

template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

SystemSpec gpu_balancing(int redundant) {
  SystemSpec s = load_system("gpu");
  s.expert_balancing = ExpertBalancing{redundant, 10, 10};
  return s;
}

TEST(ExpertPlacement, DefaultIsVllmsInitialPlacement) {
  EXPECT_EQ(default_placement(4, 6), (SlotExperts{0, 1, 2, 3, 0, 1}));
  EXPECT_EQ(default_placement(3, 3), (SlotExperts{0, 1, 2}));
  EXPECT_NE(error_of([] { default_placement(4, 3); }).find("3 slots for 4 experts"), std::string::npos);
}

// By hand: loads {8, 4, 2, 2}, 6 slots in 3 groups. Copies: expert 0 (8 > 4), then experts 0 and 1 tie at 4
// per copy and the lower takes it: expert 0 has 3 copies of 8/3. Packing heaviest first: expert 1 (4) to
// group 0, expert 0's copies to groups 1 and 2, its third to group 1 (2.67 < 4, ties to the lower), expert 2
// to group 2 (2.67 < 4), expert 3 to group 0, the only one with room.
TEST(ExpertPlacement, BalanceCopiesTheHeaviestAndPacksTheLightestGroupFirst) {
  EXPECT_EQ(balance_experts({8, 4, 2, 2}, 6, 3), (SlotExperts{1, 3, 0, 0, 0, 2}));
  // No redundant slots: a permutation that pairs heavy with light experts.
  EXPECT_EQ(balance_experts({8, 4, 2, 1}, 4, 2), (SlotExperts{0, 3, 1, 2}));
  // Even load: the experts in order, one per slot.
  EXPECT_EQ(balance_experts({1, 1, 1, 1}, 4, 4), (SlotExperts{0, 1, 2, 3}));
}

// Any loads: every expert keeps a copy, the groups are full, and the busiest group's load per copy sum is
// never above the default placement's.
TEST(ExpertPlacement, BalancedPlacementsHoldEveryExpertAndNeverLoadAGroupMoreThanTheDefault) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int experts = 4 + static_cast<int>(rng() % 60), groups = 1 + static_cast<int>(rng() % 8);
    const int slots = (experts + groups - 1) / groups * groups + groups * static_cast<int>(rng() % 3);
    std::vector<std::int64_t> counts(static_cast<std::size_t>(experts));
    for (auto& c : counts) c = static_cast<std::int64_t>(rng() % 1000) * static_cast<std::int64_t>(rng() % 3);
    const SlotExperts p = balance_experts(std::vector<double>(counts.begin(), counts.end()), slots, groups);
    ASSERT_EQ(p.size(), static_cast<std::size_t>(slots));
    for (int e = 0; e < experts; ++e) EXPECT_GE(std::count(p.begin(), p.end(), e), 1);
    const auto rows = slot_rows(p, counts);
    EXPECT_EQ(std::accumulate(rows.begin(), rows.end(), std::int64_t{0}),
              std::accumulate(counts.begin(), counts.end(), std::int64_t{0}));
    const auto busiest = busiest_group(rows, groups).rows;
    const auto default_busiest =
        busiest_group(slot_rows(default_placement(experts, slots), counts), groups).rows;
    // Integer rows may round a copy up by one row.
    EXPECT_LE(busiest, default_busiest + slots / groups) << "trial " << trial;
  }
}

// DeepSeek's hierarchical policy by hand: 8 experts in 4 expert groups of 2, 4 devices on 2 nodes, no
// redundancy, loads {10, 8 | 9, 0 | 7, 0 | 0, 0}. Groups 18, 9, 7, 0 packed to the nodes heaviest first: G0
// node 0, G1 node 1, G2 node 1 (9 < 18), G3 node 0 (node 1 full). Node 0 holds experts {0 1 6 7} (loads 10 8
// 0 0): 0 to device 0, 1 to device 1, 6 to device 1 (8 < 10), 7 to device 0; node 1 {2 3 4 5} (9 0 7 0): 2 to
// device 2, 4 to device 3, 3 to device 3 (7 < 9), 5 to device 2. The global policy splits group 0 over the
// nodes.
TEST(ExpertPlacement, HierarchicalPolicyPacksExpertGroupsToNodesFirst) {
  const std::vector<double> load{10, 8, 9, 0, 7, 0, 0, 0};
  EXPECT_EQ(balance_experts_hierarchical(load, 8, 4, 4, 2), (SlotExperts{0, 7, 1, 6, 2, 5, 4, 3}));
  EXPECT_EQ(balance_experts(load, 8, 4), (SlotExperts{0, 7, 2, 6, 1, 5, 4, 3}));
}

// With one expert group on one node the hierarchical policy is the global one; with several, every node
// holds whole expert groups (each expert's copies on its group's node), every expert at least once.
TEST(ExpertPlacement, HierarchicalPlacementsKeepEachExpertGroupOnOneNode) {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    const int nodes = 1 + static_cast<int>(rng() % 4),
              expert_groups = nodes * (1 + static_cast<int>(rng() % 3));
    const int experts = expert_groups * (1 + static_cast<int>(rng() % 8));
    const int groups = nodes * (1 + static_cast<int>(rng() % 4));
    const int slots = (experts + groups - 1) / groups * groups + groups * static_cast<int>(rng() % 3);
    std::vector<double> load(static_cast<std::size_t>(experts));
    for (auto& l : load) l = static_cast<double>(rng() % 1000) * static_cast<double>(rng() % 3);
    EXPECT_EQ(balance_experts_hierarchical(load, slots, groups, 1, 1), balance_experts(load, slots, groups));
    const SlotExperts p = balance_experts_hierarchical(load, slots, groups, expert_groups, nodes);
    ASSERT_EQ(p.size(), static_cast<std::size_t>(slots));
    const int group_size = experts / expert_groups, node_slots = slots / nodes;
    for (int e = 0; e < experts; ++e) EXPECT_GE(std::count(p.begin(), p.end(), e), 1) << "trial " << trial;
    for (std::size_t s = 0; s < p.size(); ++s) {
      const int node = static_cast<int>(s) / node_slots, group = p[s] / group_size;
      for (std::size_t t = 0; t < p.size(); ++t)
        if (p[t] / group_size == group) {
          EXPECT_EQ(static_cast<int>(t) / node_slots, node) << "trial " << trial;
        }
    }
  }
}

TEST(ExpertPlacement, BadArgumentsAreRefused) {
  for (const auto& [experts, expert_groups, groups, nodes] :
       std::vector<std::array<int, 4>>{{6, 4, 2, 2}, {8, 3, 2, 2}, {8, 4, 3, 2}, {8, 2, 2, 4}})
    EXPECT_NE(
        error_of([&] {
          balance_experts_hierarchical(std::vector<double>(static_cast<std::size_t>(experts), 1.0),
                                       groups * experts, groups, expert_groups, nodes);
        }).find(fmt::format("in {} expert groups over {} groups on {} nodes", expert_groups, groups, nodes)),
        std::string::npos);
  EXPECT_NE(error_of([] {
              balance_experts({1, 2, 3}, 4, 3);
            }).find("4 slots for 3 experts over 3 groups"),
            std::string::npos);
  EXPECT_NE(error_of([] { balance_experts({1, -2}, 2, 1); }).find("expert 1 has load -2"), std::string::npos);
  EXPECT_NE(error_of([] {
              balance_experts({1, NAN}, 2, 1);
            }).find("expert 1 has load nan"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              slot_rows({0, 2}, {1, 1});
            }).find("slot 1 holds expert 2; expected 0..1"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              slot_rows({0, 0}, {1, 3});
            }).find("expert 1 receives 3 rows but no slot holds it"),
            std::string::npos);
}

// An expert's rows split evenly over its copies, the first in slot order taking the remainder.
TEST(ExpertPlacement, RowsSplitOverCopiesInSlotOrder) {
  EXPECT_EQ(slot_rows({0, 1, 0, 0}, {10, 3}), (std::vector<std::int64_t>{4, 3, 3, 3}));
  EXPECT_EQ(slot_rows({1, 0, 0}, {5, 2}), (std::vector<std::int64_t>{2, 3, 2}));
  const std::vector<std::int64_t> rows{4, 3, 5, 2, 1, 6};
  EXPECT_EQ(busiest_group(rows, 3).group, 0);  // 4 + 3, 5 + 2, 1 + 6: the lowest of equals
  EXPECT_EQ(busiest_group(rows, 3).rows, 7);
  EXPECT_EQ(busiest_group(rows, 2).group, 0);  // 12 against 9
  EXPECT_EQ(busiest_group(rows, 2).rows, 12);
}

// The layout: experts + redundant slots over the expert-parallel groups, refused where experts are sharded or
// the slots do not divide.
TEST(ExpertBalancingLayout, SlotsSpreadOverTheGroups) {
  const ModelSpec mixtral = load_model("mixtral-8x7b");
  const ParallelLayout p = ParallelLayout::make(mixtral, gpu_balancing(4), 4);
  EXPECT_EQ(p.local_experts, 3);
  EXPECT_EQ(p.redundant_experts, 4);
  EXPECT_EQ(p.expert_groups, 4);
  EXPECT_EQ(p.describe(), "4 devices: TP4 x DP1, EP4 (3 expert slots/device: 4 redundant per layer)");
  const ParallelLayout none = ParallelLayout::make(mixtral, gpu_balancing(0), 4);
  EXPECT_EQ(none.local_experts, 2);
  EXPECT_EQ(none.describe(), ParallelLayout::make(mixtral, load_system("gpu"), 4).describe());
  SystemSpec et = gpu_balancing(8);
  et.expert_tensor_parallel = true;
  const ParallelLayout ep = ParallelLayout::make(load_model("qwen3-30b-a3b"), et, 16);
  EXPECT_EQ(ep.local_experts, 68);  // (128 + 8) / 2 nodes, each sharded over the node's 8 devices
  EXPECT_EQ(ep.expert_shards, 8);
  EXPECT_NE(
      error_of([&] { ParallelLayout::make(mixtral, gpu_balancing(3), 4); })
          .find("model mixtral-8x7b's 8 experts + 3 redundant (expert_load_balancing.redundant_experts) "
                "do not split over 4 devices"),
      std::string::npos);
  EXPECT_NE(error_of([&] { ParallelLayout::make(mixtral, gpu_balancing(0), 16); })
                .find("expert_load_balancing needs whole experts on each device; model mixtral-8x7b has 8 "
                      "experts over 16 expert-parallel devices"),
            std::string::npos);
}

Routing counts_routing(const ModelSpec& m, const std::vector<std::int64_t>& row) {
  Routing r;
  r.kind = Routing::Kind::kCounts;
  r.counts = {row};  // a single row repeats over the MoE layers
  (void)m;
  return r;
}

std::vector<const Op*> experts_of_layer(const Graph& g, int layer) {
  std::vector<const Op*> ops;
  for (const Op& o : g.ops)
    if (o.kind == OpKind::kExpertFfn && o.layer == layer) ops.push_back(&o);
  return ops;
}

// Mixtral on 4 GPUs, 4 redundant slots, 16 decodes (32 rows): counts {10, 6, 4, 5, 2, 2, 2, 1}; placement
// {0 1 4 | 0 2 5 | 0 3 6 | 1 7 2}. Expert 0's 10 rows split 4, 3, 3 over slots 0, 3, 6; expert 1's 6 as 3, 3;
// expert 2's 4 as 2, 2. Groups: 4+3+2 = 9, 3+2+2 = 7, 3+5+2 = 10, 3+1+2 = 6: group 2 is planned.
TEST(ExpertBalancingLowering, PlansTheBusiestGroupsSlots) {
  const ModelSpec m = load_model("mixtral-8x7b");
  const ParallelLayout p = ParallelLayout::make(m, gpu_balancing(4), 4);
  Routing r = counts_routing(m, {10, 6, 4, 5, 2, 2, 2, 1});
  r.placement.assign(static_cast<std::size_t>(m.moe_layers_before(m.layers)),
                     SlotExperts{0, 1, 4, 0, 2, 5, 0, 3, 6, 1, 7, 2});
  const Graph g = lower(m, BatchState::decode_batch(16, 512), p, r);
  const auto ops = experts_of_layer(g, 0);
  ASSERT_EQ(ops.size(), 3U);
  const std::vector<std::pair<int, std::int64_t>> expected{{0, 3}, {3, 5}, {6, 2}};
  for (std::size_t i = 0; i < ops.size(); ++i) {
    EXPECT_EQ(ops[i]->expert, expected[i].first);
    EXPECT_EQ(ops[i]->m, expected[i].second);
    EXPECT_EQ(ops[i]->name, "L0.expert" + std::to_string(expected[i].first));
  }
  // Two copies of an expert on the busiest device: each its own op (its own weights), the second named so.
  r.placement.assign(r.placement.size(), SlotExperts{0, 0, 1, 2, 3, 4, 5, 6, 7, 1, 2, 3});
  const Graph twice_graph = lower(m, BatchState::decode_batch(16, 512), p, r);
  const auto twice = experts_of_layer(twice_graph, 0);
  ASSERT_EQ(twice.size(), 3U);  // group 0: 5 + 5 + 3 = 13 rows
  EXPECT_EQ(twice[0]->name, "L0.expert0");
  EXPECT_EQ(twice[1]->name, "L0.expert0.copy1");
  EXPECT_EQ(twice[0]->m + twice[1]->m, 10);
  EXPECT_EQ(twice[0]->bytes_weights, twice[1]->bytes_weights);
  // A placement of the wrong size is refused naming the layer.
  r.placement.assign(r.placement.size(), SlotExperts{0, 1, 2, 3, 4, 5, 6, 7});
  EXPECT_NE(error_of([&] {
              lower(m, BatchState::decode_batch(16, 512), p, r);
            }).find("the expert placement of MoE layer 0 has 8 slots; expected 12"),
            std::string::npos);
}

// Without expert load balancing each MoE layer plans the experts of the device that receives the most rows
// (every device waits for it at the all-to-all): Mixtral on 4 GPUs, 16 decodes (32 rows), counts {1, 2 | 3,
// 4 | 10, 6 | 2, 4}: devices receive 3, 7, 16, 6 rows, so experts 4 and 5. LowerOptions::expert_group plans
// a given device's (functional emulation executes each device's own).
TEST(ExpertBalancingLowering, WithoutBalancingTheBusiestDeviceIsPlanned) {
  const ModelSpec m = load_model("mixtral-8x7b");
  const ParallelLayout p = ParallelLayout::make(m, load_system("gpu"), 4);
  const Routing r = counts_routing(m, {1, 2, 3, 4, 10, 6, 2, 4});
  const auto batch = BatchState::decode_batch(16, 512);
  auto experts = [&](const LowerOptions& o) {
    std::vector<std::pair<int, std::int64_t>> e;
    const Graph g = lower(m, batch, p, r, o);
    for (const Op* op : experts_of_layer(g, 0)) e.emplace_back(op->expert, op->m);
    return e;
  };
  using Planned = std::vector<std::pair<int, std::int64_t>>;
  EXPECT_EQ(experts({}), (Planned{{4, 10}, {5, 6}}));
  EXPECT_EQ(experts({.expert_group = 1}), (Planned{{2, 3}, {3, 4}}));
  EXPECT_EQ(experts({.expert_group = 0}), (Planned{{0, 1}, {1, 2}}));
  // Energy charges the mean device's work: 8 rows over the planned 16, 2 experts with rows over 2.
  for (const Op* op : experts_of_layer(lower(m, batch, p, r), 0)) {
    EXPECT_EQ(op->energy_rows_scale, 0.5);
    EXPECT_EQ(op->energy_weights_scale, 1.0);
  }
  for (int bad : {-2, 4})
    EXPECT_NE(
        error_of([&] {
          lower(m, batch, p, r, {.expert_group = bad});
        }).find("lowering: expert group " + std::to_string(bad) + "; expected -1 (the busiest) or 0..3"),
        std::string::npos);
}

// Without a placement redundant slots hold vLLM's initial one; with no redundancy the identity placement
// gives the unbalanced plan (both the busiest device's experts: here devices receive 3, 7, 16, 6 rows).
TEST(ExpertBalancingLowering, DefaultPlacementAndIdentityMatchTheUnbalancedPlan) {
  const ModelSpec m = load_model("mixtral-8x7b");
  const Routing r = counts_routing(m, {10, 6, 4, 4, 3, 2, 2, 1});
  const auto batch = BatchState::decode_batch(16, 512);
  const Graph g = lower(m, batch, ParallelLayout::make(m, gpu_balancing(4), 4), r);
  const auto ops = experts_of_layer(g, 0);
  ASSERT_EQ(ops.size(), 3U);  // default {0 1 2 | 3 4 5 | 6 7 0 | 1 2 3}: group 0 = 5 + 3 + 2
  EXPECT_EQ(ops[0]->m, 5);
  EXPECT_EQ(ops[1]->m, 3);
  EXPECT_EQ(ops[2]->m, 2);
  Routing identity = counts_routing(m, {1, 2, 3, 4, 10, 6, 2, 4});
  identity.placement.assign(static_cast<std::size_t>(m.moe_layers_before(m.layers)),
                            SlotExperts{0, 1, 2, 3, 4, 5, 6, 7});
  const ParallelLayout p = ParallelLayout::make(m, load_system("gpu"), 4);
  Routing unbalanced = identity;
  unbalanced.placement.clear();
  const Graph a = lower(m, batch, p, unbalanced), b = lower(m, batch, p, identity);
  ASSERT_EQ(a.ops.size(), b.ops.size());
  ASSERT_EQ(experts_of_layer(a, 0).size(), 2U);
  EXPECT_EQ(experts_of_layer(a, 0)[0]->expert, 4);
  for (std::size_t i = 0; i < a.ops.size(); ++i) {
    EXPECT_EQ(a.ops[i].name, b.ops[i].name);
    EXPECT_EQ(a.ops[i].bytes(), b.ops[i].bytes());
    EXPECT_EQ(a.ops[i].flops, b.ops[i].flops);
  }
}

// Across nodes the all-to-all waits for the busiest group's rows over an even share (tokens x top_k /
// groups): balancing lowers it.
TEST(ExpertBalancingLowering, TheExchangeWaitsForTheBusiestGroup) {
  const ModelSpec m = load_model("qwen3-30b-a3b");                         // 128 experts, top 8
  const ParallelLayout p = ParallelLayout::make(m, gpu_balancing(0), 16);  // 2 nodes, 8 experts/device
  ASSERT_EQ(p.local_experts, 8);
  Routing zipf;
  zipf.kind = Routing::Kind::kZipf;
  const auto batch = BatchState::decode_batch(128, 512);  // two nodes' 64 tokens each
  const auto counts = zipf.expert_tokens(0, 128, 128, 8);
  Routing r = counts_routing(m, counts);
  auto dispatch = [&](const Routing& routing) {
    for (const Op& o : lower(m, batch, p, routing).ops)
      if (o.kind == OpKind::kAllToAll && o.layer == 0) return o;
    return Op{};
  };
  const double even = 128.0 * 8 / 16, sent = 64.0 * 8 / 8;  // rows per group; a device's 1/tp of its node's
  const auto skew = [&](const SlotExperts& placement) {
    return std::max(1.0, static_cast<double>(busiest_group(slot_rows(placement, counts), 16).rows) / even);
  };
  // A device sends its own rows (the mean device's bytes, what energy charges); both links wait for the
  // busiest group's.
  const SlotExperts identity = default_placement(128, 128);
  const Op skewed = dispatch(r);
  EXPECT_EQ(skewed.m, static_cast<std::int64_t>(sent));
  EXPECT_DOUBLE_EQ(skewed.exchange.infiniband_skew, skew(identity));
  EXPECT_DOUBLE_EQ(skewed.exchange.nvlink_skew, skew(identity));
  EXPECT_EQ(skewed.energy_rows_scale, 1.0);
  const SlotExperts balanced = balance_experts(std::vector<double>(counts.begin(), counts.end()), 128, 16);
  r.placement.assign(static_cast<std::size_t>(m.moe_layers_before(m.layers)), balanced);
  EXPECT_LT(skew(balanced), skew(identity));
  EXPECT_DOUBLE_EQ(dispatch(r).exchange.infiniband_skew, skew(balanced));
  EXPECT_EQ(dispatch(r).link_bytes, skewed.link_bytes);
}

// The system section: absent = none; each key's documented default; refused on heterogeneous systems.
TEST(ExpertBalancingLayout, SystemSection) {
  auto load = [](const char* preset, const std::vector<std::string>& sets) {
    std::vector<ConfigOverride> overrides;
    for (const std::string& s : sets) overrides.push_back(parse_override(s, "--set"));
    return read_system(ConfigNode::load(preset, "systems", overrides));
  };
  EXPECT_FALSE(load_system("gpu").expert_balancing.has_value());
  const SystemSpec s = load("gpu", {"expert_load_balancing.redundant_experts=8"});
  ASSERT_TRUE(s.expert_balancing.has_value());
  EXPECT_EQ(s.expert_balancing->redundant_experts, 8);
  EXPECT_EQ(s.expert_balancing->window, 1000);    // vLLM's window_size
  EXPECT_EQ(s.expert_balancing->interval, 3000);  // vLLM's step_interval
  const SystemSpec t = load("gpu", {"expert_load_balancing.window=20", "expert_load_balancing.interval=50"});
  EXPECT_EQ(t.expert_balancing->redundant_experts, 0);
  EXPECT_EQ(t.expert_balancing->window, 20);
  EXPECT_EQ(t.expert_balancing->interval, 50);
  EXPECT_NE(error_of([&] {
              load("gpu", {"expert_load_balancing.interval=0"});
            }).find("expert_load_balancing.interval"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              load("gpu", {"expert_load_balancing.window=6401", "expert_load_balancing.interval=100"});
            }).find("expert_load_balancing.window: 6401 steps span more than 64 intervals of 100"),
            std::string::npos);
  EXPECT_EQ(load("gpu", {"expert_load_balancing.window=6400", "expert_load_balancing.interval=100"})
                .expert_balancing->window,
            6400);
  EXPECT_NE(error_of([&] {
              load("gpu", {"expert_load_balancing.redundant_experts=-1"});
            }).find("expert_load_balancing.redundant_experts"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              load("gpu-pim-hetero", {"expert_load_balancing.window=5"});
            }).find("expert_load_balancing: on a heterogeneous system is not modelled"),
            std::string::npos);
}

}  // namespace
}  // namespace duplex::compiler
