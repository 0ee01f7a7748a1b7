// Attention data parallelism (system attention_data_parallel): every device a TP1 data-parallel rank of the
// non-expert layers, experts expert parallel over all devices, their tokens exchanged all-to-all among all
// devices: the node's share over NVLink, the rest over InfiniBand, at once.
#include <gtest/gtest.h>

#include "duplex/base/config.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/cost_model.hpp"
#include "duplex/compiler/lower.hpp"

namespace duplex::compiler {
namespace {

SystemSpec attention_dp(const char* name) {
  SystemSpec s = load_system(name);
  s.attention_data_parallel = true;
  return s;
}

std::vector<Op> ops_of(const Graph& g, OpKind k, int layer) {
  std::vector<Op> out;
  for (const Op& o : g.ops)
    if (o.kind == k && o.layer == layer) out.push_back(o);
  return out;
}

TEST(AttentionDataParallel, EveryDeviceIsARankOfItsOwn) {
  const ModelSpec m = load_model("mixtral-8x7b");
  const ParallelLayout p = ParallelLayout::make(m, attention_dp("gpu"), 8);
  EXPECT_TRUE(p.attention_dp);
  EXPECT_EQ(p.tp, 1);
  EXPECT_EQ(p.dp, 8);
  EXPECT_EQ(p.nodes, 1);
  EXPECT_EQ(p.local_experts, 1);
  EXPECT_EQ(p.describe(), "8 devices: TP1 x DP8 (attention data parallel), EP8 (1 expert/device)");
  const ParallelLayout two = ParallelLayout::make(m, attention_dp("gpu"), 16);  // 8 per node
  EXPECT_EQ(two.nodes, 2);
  EXPECT_EQ(two.devices_per_node(), 8);
  EXPECT_EQ(two.dp, 16);
}

// A decode step of 64 requests on 8 devices: each device attends to 8 with all 32 query heads and all 8 KV
// heads, no all-reduce; its FFN's experts take the tokens of every device, exchanged all-to-all with the
// other 7 (7/8 of its 8 tokens x top-2 x hidden, all in its node).
TEST(AttentionDataParallel, EachDeviceAttendsToItsShareAndExchangesExpertTokens) {
  const ModelSpec m = load_model("mixtral-8x7b");
  const BatchState b = BatchState::decode_batch(64, 512);
  const Graph tp = lower(m, b, ParallelLayout::make(m, load_system("gpu"), 8), Routing{});
  const Graph dp = lower(m, b, ParallelLayout::make(m, attention_dp("gpu"), 8), Routing{});
  const Op attn = ops_of(dp, OpKind::kAttentionDecode, 0).at(0);
  EXPECT_EQ(attn.q_heads, 32);
  EXPECT_EQ(attn.kv_heads, 8);
  EXPECT_EQ(attn.requests, 8);
  EXPECT_TRUE(ops_of(dp, OpKind::kAllReduce, 0).empty());
  EXPECT_EQ(ops_of(tp, OpKind::kAllReduce, 0).size(), 2u);
  EXPECT_TRUE(ops_of(tp, OpKind::kAllToAll, 0).empty());  // one node: TP holds the node's tokens
  const std::vector<Op> a2a = ops_of(dp, OpKind::kAllToAll, 0);
  ASSERT_EQ(a2a.size(), 2u);  // dispatch and combine
  const double data = 8.0 * 2 * 4096 * 2;
  for (const Op& o : a2a) {
    EXPECT_DOUBLE_EQ(o.link_bytes, data * 7 / 8);
    EXPECT_DOUBLE_EQ(o.link_bytes_in_node, data * 7 / 8);
  }
  // The dense parts are whole on each device: the QKV projection's weights are all of them.
  EXPECT_DOUBLE_EQ(ops_of(dp, OpKind::kQkvProj, 0).at(0).bytes_weights,
                   8 * ops_of(tp, OpKind::kQkvProj, 0).at(0).bytes_weights);
  // Routed over the whole batch's tokens, as under TP.
  EXPECT_EQ(ops_of(dp, OpKind::kExpertFfn, 0).at(0).m, ops_of(tp, OpKind::kExpertFfn, 0).at(0).m);
}

// Attention DP on two nodes of 8 GPUs: `model`'s layout and the dispatch all-to-all of its MoE layer `layer`
// in a decode step of 64 requests (4 per device).
struct TwoNodeExchange {
  ModelSpec model;
  SystemSpec system = attention_dp("gpu");
  ParallelLayout layout;
  Op dispatch;
  TwoNodeExchange(const char* name, int layer)
      : model(load_model(name)),
        layout(ParallelLayout::make(model, system, 16)),
        dispatch(ops_of(lower(model, BatchState::decode_batch(64, 512), layout, Routing{}), OpKind::kAllToAll,
                        layer)
                     .at(0)) {}
};

// Two nodes of 8, GLaM's 64 experts one device each: 7/16 of a device's rows go to its node's other devices
// over NVLink, 8/16 to the other node over InfiniBand, at the same time: the longer of the two, each with a
// latency per peer step.
TEST(AttentionDataParallel, AllToAllCrossesNvlinkAndInfinibandAtOnce) {
  const TwoNodeExchange x("glam", 1);  // GLaM's odd layers are MoE
  const SystemSpec& s = x.system;
  const ParallelLayout& p = x.layout;
  const Op& o = x.dispatch;
  ASSERT_EQ(p.expert_shards, 1);
  const double data = 4.0 * 2 * 4096 * 2;              // 4 tokens per device x top-2 x hidden x 2 B
  EXPECT_DOUBLE_EQ(o.link_bytes, data * 15 / 16);
  EXPECT_DOUBLE_EQ(o.link_bytes_in_node, data * 7 / 16);
  const CostModel cost(s, p);
  const Time nvlink = transfer_time(data * 7 / 16, s.links.nvlink_bandwidth) + s.links.nvlink_latency * 7;
  const Time infiniband =
      transfer_time(data * 8 / 16, s.links.infiniband_bandwidth) + s.links.infiniband_latency;
  EXPECT_EQ(cost.link_time(o), std::max(nvlink, infiniband));
  // Slow NVLink: its share takes longer.
  SystemSpec slow = s;
  slow.links.nvlink_bandwidth = Bandwidth::from_si(1e6);
  EXPECT_EQ(CostModel(slow, p).link_time(o),
            transfer_time(data * 7 / 16, slow.links.nvlink_bandwidth) + s.links.nvlink_latency * 7);
}

// Mixtral's 8 experts on 16 devices, each in 2 shards on one node: a row for an expert of the device's own
// node (1/2 of them) goes to both shards, itself excepted (2 x 7/8 copies); one for the other node crosses
// InfiniBand once and is forwarded over NVLink to the expert's second shard. Per row: 1/2 InfiniBand,
// 7/8 + 1/2 NVLink.
TEST(AttentionDataParallel, AnExpertInShardsGetsEveryRowOnEachShard) {
  const TwoNodeExchange x("mixtral-8x7b", 0);
  const SystemSpec& s = x.system;
  const Op& o = x.dispatch;
  ASSERT_EQ(x.layout.expert_shards, 2);
  const double data = 4.0 * 2 * 4096 * 2;
  EXPECT_DOUBLE_EQ(o.link_bytes_in_node, data * (7.0 / 8 + 1.0 / 2));
  EXPECT_DOUBLE_EQ(o.link_bytes - o.link_bytes_in_node, data / 2);
  const Time nvlink = transfer_time(data * 11 / 8, s.links.nvlink_bandwidth) + s.links.nvlink_latency * 7;
  const Time infiniband = transfer_time(data / 2, s.links.infiniband_bandwidth) + s.links.infiniband_latency;
  EXPECT_EQ(CostModel(s, x.layout).link_time(o), std::max(nvlink, infiniband));
}

// Read from a config: true or false (absent: false); refused beside +ET and on a heterogeneous system, naming
// the file and the key.
TEST(AttentionDataParallel, ReadFromTheSystemConfigNotBesideExpertTensorParallelismOrHeterogeneous) {
  auto error = [](const std::string& preset) {
    try {
      read_system(ConfigNode::parse("preset: " + preset + "\nattention_data_parallel: true\n", "mine.yaml"));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error("systems/duplex-pe"), "no error");
  EXPECT_TRUE(read_system(ConfigNode::parse("preset: systems/gpu\nattention_data_parallel: true\n", "m.yaml"))
                  .attention_data_parallel);
  EXPECT_FALSE(load_system("gpu").attention_data_parallel);
  for (const auto& [preset, why] : {std::pair{"systems/duplex-pe-et", "expert_tensor_parallel"},
                                    std::pair{"systems/gpu-pim-hetero", "heterogeneous"}}) {
    const std::string e = error(preset);
    EXPECT_NE(e.find("mine.yaml"), std::string::npos) << e;
    EXPECT_NE(e.find("attention_data_parallel"), std::string::npos) << e;
    EXPECT_NE(e.find(why), std::string::npos) << e;
  }
}

}  // namespace
}  // namespace duplex::compiler
