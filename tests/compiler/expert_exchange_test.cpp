// An MoE layer's token exchange across nodes under tensor parallelism (ParallelLayout::expert_exchange):
// every device of a node holds the node's tokens and sends 1/tp of them, once over InfiniBand to a device
// holding the row's expert on the other node, which forwards it over NVLink to the expert's other shards.
#include <gtest/gtest.h>

#include "duplex/base/config.hpp"
#include "duplex/compiler/cost_model.hpp"
#include "duplex/compiler/lower.hpp"

namespace duplex::compiler {
namespace {

std::vector<Op> all_to_alls(const Graph& g, int layer) {
  std::vector<Op> out;
  for (const Op& o : g.ops)
    if (o.kind == OpKind::kAllToAll && o.layer == layer) out.push_back(o);
  return out;
}

// Per token-expert row a device sends, by hand for each layout.
TEST(ExpertExchange, CopiesPerRowFollowTheLayout) {
  const SystemSpec gpu = load_system("gpu");
  // One node: every device holds every token, nothing to send.
  const auto one = ParallelLayout::make(load_model("mixtral-8x7b"), gpu, 8).expert_exchange();
  EXPECT_EQ(one.infiniband + one.nvlink, 0.0);
  // GLaM's 64 experts on two nodes of 8 (EP16, whole experts): half of a device's 1/8 share of the node's
  // rows crosses InfiniBand to the expert's device, nothing to forward.
  const auto glam = ParallelLayout::make(load_model("glam"), gpu, 16).expert_exchange();
  EXPECT_DOUBLE_EQ(glam.row_share, 1.0 / 8);
  EXPECT_DOUBLE_EQ(glam.infiniband, 0.5);
  EXPECT_DOUBLE_EQ(glam.nvlink, 0.0);
  EXPECT_EQ(glam.infiniband_peers, 1);
  EXPECT_EQ(glam.nvlink_peers, 0);
  // Grok-1's 8 experts on 16 devices, each in 2 shards on one node: forwarded to the second shard.
  const auto grok = ParallelLayout::make(load_model("grok-1"), gpu, 16).expert_exchange();
  EXPECT_DOUBLE_EQ(grok.infiniband, 0.5);
  EXPECT_DOUBLE_EQ(grok.nvlink, 0.5);
  EXPECT_EQ(grok.nvlink_peers, 1);
  // +ET: every expert sharded over its node's 8 devices: forwarded to the 7 others.
  const auto et =
      ParallelLayout::make(load_model("grok-1"), load_system("duplex-pe-et"), 16).expert_exchange();
  EXPECT_DOUBLE_EQ(et.infiniband, 0.5);
  EXPECT_DOUBLE_EQ(et.nvlink, 0.5 * 7);
  EXPECT_EQ(et.nvlink_peers, 7);
  // Four nodes of 8, 2 experts each in 16 shards: an expert spans 2 whole nodes. A row's node is one of
  // them half the time (1 copy out) and none otherwise (2): 1.5 copies cross InfiniBand, each forwarded to
  // the node's 7 other devices.
  ParallelLayout wide;
  wide.devices = 32;
  wide.nodes = 4;
  wide.tp = 8;
  wide.dp = 4;
  wide.local_experts = 1;
  wide.expert_groups = 2;
  wide.expert_shards = 16;
  const auto w = wide.expert_exchange();
  EXPECT_DOUBLE_EQ(w.infiniband, 1.5);
  EXPECT_DOUBLE_EQ(w.nvlink, 1.5 * 7);
  EXPECT_EQ(w.infiniband_peers, 3);
  // A dense model exchanges nothing.
  EXPECT_EQ(ParallelLayout::make(load_model("llama3-70b"), gpu, 16).expert_exchange().infiniband, 0.0);
}

// Grok-1 on two nodes of 8 GPUs, a decode step of 64 requests (32 per node): a device sends 32 / 8 = 4 rows
// x top-2, half of them to the other node over InfiniBand and forwards as many to a second shard over
// NVLink, both at once; the node sends each of its rows for the other node's experts over InfiniBand once.
TEST(ExpertExchange, TensorParallelNodesSplitTheirRowsOverTheirDevices) {
  const ModelSpec m = load_model("grok-1");
  const SystemSpec s = load_system("gpu");
  const ParallelLayout p = ParallelLayout::make(m, s, 16);
  const Graph g = lower(m, BatchState::decode_batch(64, 512), p, Routing{});
  const std::vector<Op> a2a = all_to_alls(g, 0);
  ASSERT_EQ(a2a.size(), 2u);          // dispatch and combine
  const double row = m.hidden * 2.0;  // FP16 activations
  const double ib = 4 * 2 * row / 2, nvlink = 4 * 2 * row / 2;
  const CostModel cost(s, p);
  for (const Op& o : a2a) {
    EXPECT_EQ(o.m, 8);
    EXPECT_DOUBLE_EQ(o.link_bytes - o.link_bytes_in_node, ib);
    EXPECT_DOUBLE_EQ(o.link_bytes_in_node, nvlink);
    EXPECT_DOUBLE_EQ(p.tp * (o.link_bytes - o.link_bytes_in_node), 32 * 2 * row / 2);
    EXPECT_EQ(cost.link_time(o),
              std::max(transfer_time(ib, s.links.infiniband_bandwidth) + s.links.infiniband_latency,
                       transfer_time(nvlink, s.links.nvlink_bandwidth) + s.links.nvlink_latency));
  }
  // The node's all-reduce after the experts still sums the whole node's rows.
  int all_reduces = 0;
  for (const Op& o : g.ops) {
    if (o.name != "L0.ffn_all_reduce") continue;
    EXPECT_EQ(o.m, 32);
    ++all_reduces;
  }
  EXPECT_EQ(all_reduces, 1);
}

// +ET, 8,192 decode requests (large enough for bandwidth to outweigh the 7 NVLink steps' latency): the
// forwarded copies ride NVLink beside InfiniBand (7 copies at 450 GB/s against one at 50), so the exchange
// waits for InfiniBand alone; with NVLink as slow as InfiniBand, for the 7 forwarded copies.
TEST(ExpertExchange, ForwardingOverNvlinkOverlapsInfiniband) {
  const ModelSpec m = load_model("grok-1");
  SystemSpec s = load_system("duplex-pe-et");
  const ParallelLayout p = ParallelLayout::make(m, s, 16);
  const Op o = all_to_alls(lower(m, BatchState::decode_batch(8192, 64), p, Routing{}), 0).at(0);
  const double ib = o.link_bytes - o.link_bytes_in_node;
  EXPECT_DOUBLE_EQ(o.link_bytes_in_node, 7 * ib);
  EXPECT_EQ(CostModel(s, p).link_time(o),
            transfer_time(ib, s.links.infiniband_bandwidth) + s.links.infiniband_latency);
  s.links.nvlink_bandwidth = s.links.infiniband_bandwidth;
  EXPECT_EQ(CostModel(s, p).link_time(o),
            transfer_time(7 * ib, s.links.nvlink_bandwidth) + s.links.nvlink_latency * 7);
}

// Skewed routing: the representative device's experts (the busiest under Zipf) receive more rows than the
// device sends, and the exchange waits for them: GLaM's 64 experts on two nodes (4 a device), 64 decode
// requests, top-2. Zipf(1.2) counts give experts 0..3 R rows against the even 64 x 2 x 4 / 64 = 8, so both
// links wait for R / 8 times the even routing's bytes, which every device still sends on average (energy);
// given counts that even out, exactly the even exchange.
TEST(ExpertExchange, SkewedRoutingWaitsForTheBusiestDevicesRows) {
  const ModelSpec m = load_model("glam");
  const SystemSpec s = load_system("gpu");
  const ParallelLayout p = ParallelLayout::make(m, s, 16);
  ASSERT_EQ(p.local_experts, 4);
  const BatchState batch = BatchState::decode_batch(64, 512);
  const Op even = all_to_alls(lower(m, batch, p, Routing{}), 1).at(0);
  EXPECT_EQ(even.exchange.infiniband_skew, 1.0);
  Routing zipf;
  zipf.kind = Routing::Kind::kZipf;
  zipf.zipf_s = 1.2;
  const std::vector<std::int64_t> counts = zipf.expert_tokens(0, 64, m.experts, m.top_k);
  const double rows = static_cast<double>(counts[0] + counts[1] + counts[2] + counts[3]);
  ASSERT_GT(rows, 8.0 * 2);
  for (const Op& o : all_to_alls(lower(m, batch, p, zipf), 1)) {
    EXPECT_DOUBLE_EQ(o.link_bytes, even.link_bytes) << o.name;
    EXPECT_DOUBLE_EQ(o.exchange.infiniband_skew, rows / 8) << o.name;
    EXPECT_DOUBLE_EQ(o.exchange.nvlink_skew, rows / 8) << o.name;
    EXPECT_EQ(
        CostModel(s, p).link_time(o),
        transfer_time(o.link_bytes * rows / 8, s.links.infiniband_bandwidth) + s.links.infiniband_latency);
  }
  Routing given;
  given.kind = Routing::Kind::kCounts;
  given.counts = {std::vector<std::int64_t>(static_cast<std::size_t>(m.experts), 2)};
  const Op g = all_to_alls(lower(m, batch, p, given), 1).at(0);
  EXPECT_DOUBLE_EQ(g.link_bytes, even.link_bytes);
  EXPECT_EQ(g.exchange.infiniband_skew, 1.0);
}

// DeepEP's normal kernels (expert_all_to_all: normal): GLaM on two nodes of 8 (4 experts a device, top-2;
// layer 1 MoE), 64 decode requests, 32 a node, each device sending 4 of them. A token crosses to the other
// node when one of its experts is there, 1 - C(32,2) / C(64,2) of them, once, where the device of the
// sender's rank forwards it to each of the other 7 devices holding one of its experts (each 1 - C(60,2) /
// C(64,2)); the per-row kernels send each of its 2 rows for the other node's experts (half of them) across
// instead.
TEST(ExpertExchange, NormalKernelsSendATokenOncePerNodeAndDevice) {
  const ModelSpec m = load_model("glam");
  const SystemSpec s = load_system("gpu");
  const ParallelLayout p = ParallelLayout::make(m, s, 16);
  const BatchState batch = BatchState::decode_batch(64, 512);
  LowerOptions normal;
  normal.all_to_all = ExpertAllToAll::normal;
  const std::vector<Op> a2a = all_to_alls(lower(m, batch, p, Routing{}, normal), 1);
  ASSERT_EQ(a2a.size(), 2u);
  const double token = m.hidden * 2.0 * 4;  // FP16 activations, 4 tokens
  const double ib = token * (1 - 496.0 / 2016), nvlink = token * 7 * (1 - 1770.0 / 2016);
  for (const Op& o : a2a) {
    EXPECT_EQ(o.m, 4);
    EXPECT_NEAR(o.link_bytes - o.link_bytes_in_node, ib, 1e-9 * ib);
    EXPECT_NEAR(o.link_bytes_in_node, nvlink, 1e-9 * nvlink);
    EXPECT_EQ(o.exchange.infiniband_peers, 1);
    EXPECT_EQ(o.exchange.nvlink_peers, 7);
    EXPECT_NEAR(o.exchange.infiniband_skew, 1.0, 1e-12);
    EXPECT_NEAR(o.exchange.nvlink_skew, 1.0, 1e-12);
  }
  LowerOptions low_latency;
  low_latency.all_to_all = ExpertAllToAll::low_latency;
  const Op per_row = all_to_alls(lower(m, batch, p, Routing{}, low_latency), 1).at(0);
  EXPECT_DOUBLE_EQ(per_row.link_bytes - per_row.link_bytes_in_node, token * 2 / 2);
  EXPECT_LT(a2a[0].link_bytes - a2a[0].link_bytes_in_node,
            0.76 * (per_row.link_bytes - per_row.link_bytes_in_node));
  // auto (the default): the normal kernels for a step with prefill tokens, the per-row ones for a
  // decode-only step.
  LowerOptions by_step;
  EXPECT_EQ(by_step.all_to_all, ExpertAllToAll::auto_by_step);
  EXPECT_EQ(s.expert_all_to_all, ExpertAllToAll::auto_by_step);
  EXPECT_EQ(all_to_alls(lower(m, batch, p, Routing{}, by_step), 1).at(0).link_bytes, per_row.link_bytes);
  const BatchState mixed = BatchState::decode_batch(64, 512, 512);
  EXPECT_EQ(all_to_alls(lower(m, mixed, p, Routing{}, by_step), 1).at(0).link_bytes,
            all_to_alls(lower(m, mixed, p, Routing{}, normal), 1).at(0).link_bytes);
  EXPECT_NE(all_to_alls(lower(m, mixed, p, Routing{}, by_step), 1).at(0).link_bytes,
            all_to_alls(lower(m, mixed, p, Routing{}, low_latency), 1).at(0).link_bytes);
  // The system's key reaches the lowering.
  SystemSpec keyed = s;
  keyed.expert_all_to_all = ExpertAllToAll::normal;
  EXPECT_EQ(LowerOptions::for_system(keyed).all_to_all, ExpertAllToAll::normal);
}

}  // namespace
}  // namespace duplex::compiler
