// Pipeline parallelism in the compiler (SystemSpec::pipeline_parallel): the layout (TP groups of up to a
// node's devices, pp stages, each replica's pp batches in flight as its data-parallel ranks), the stages'
// layers, the stage_send ops lowering adds and their link time, and the configurations refused.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "duplex/base/config.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/cost_model.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/compiler/model_spec.hpp"
#include "duplex/compiler/parallel.hpp"
#include "duplex/compiler/placement.hpp"

namespace duplex::compiler {
namespace {

SystemSpec gpu_with_stages(int stages) {
  SystemSpec s = load_system("gpu");
  s.pipeline_parallel = stages;
  return s;
}

std::string layout_error(const ModelSpec& m, const SystemSpec& s, int devices) {
  try {
    ParallelLayout::make(m, s, devices);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(PipelineParallel, LayoutSplitsTheDevicesIntoStagesOfTensorParallelGroups) {
  const ModelSpec m = load_model("llama3-405b");
  struct Case {
    int stages, devices, tp, dp, replicas;
    bool in_node;
    std::string describe;
  };
  for (const Case& c : {
           Case{2, 16, 8, 2, 1, false,
                "16 devices: TP8 x PP2 x DP1 (2 batches in flight, stages over InfiniBand)"},
           Case{2, 8, 4, 2, 1, true, "8 devices: TP4 x PP2 x DP1 (2 batches in flight)"},
           Case{2, 32, 8, 4, 2, false,
                "32 devices: TP8 x PP2 x DP2 (4 batches in flight, stages over InfiniBand)"},
           Case{4, 32, 8, 4, 1, false,
                "32 devices: TP8 x PP4 x DP1 (4 batches in flight, stages over InfiniBand)"},
       }) {
    const ParallelLayout p = ParallelLayout::make(m, gpu_with_stages(c.stages), c.devices);
    EXPECT_EQ(p.pp, c.stages);
    EXPECT_EQ(p.tp, c.tp);
    EXPECT_EQ(p.dp, c.dp);
    EXPECT_EQ(p.replicas(), c.replicas);
    EXPECT_EQ(p.pipeline_in_node, c.in_node);
    EXPECT_EQ(p.describe(), c.describe);
  }
  // Without pipeline parallelism the layout is the usual one: one stage, every rank a replica.
  const ParallelLayout one = ParallelLayout::make(m, load_system("gpu"), 16);
  EXPECT_EQ(one.pp, 1);
  EXPECT_EQ(one.replicas(), one.dp);
  EXPECT_TRUE(one.stage_ends(126).empty());
}

// An MoE model's experts are expert parallel over each stage's devices, whose tokens never leave their node:
// no exchange across nodes, as on one node.
TEST(PipelineParallel, ExpertsSpreadOverEachStagesDevices) {
  const ParallelLayout mixtral = ParallelLayout::make(load_model("mixtral-8x7b"), gpu_with_stages(2), 8);
  EXPECT_EQ(mixtral.describe(), "8 devices: TP4 x PP2 x DP1 (2 batches in flight), EP4 (2 experts/device)");
  const ParallelLayout grok = ParallelLayout::make(load_model("grok-1"), gpu_with_stages(2), 16);
  EXPECT_EQ(
      grok.describe(),
      "16 devices: TP8 x PP2 x DP1 (2 batches in flight, stages over InfiniBand), EP8 (1 expert/device)");
  SystemSpec et = gpu_with_stages(2);
  et.expert_tensor_parallel = true;
  const ParallelLayout sharded = ParallelLayout::make(load_model("grok-1"), et, 16);
  EXPECT_EQ(sharded.local_experts, 8);
  EXPECT_EQ(sharded.expert_shards, 8);
  for (const ParallelLayout& p : {mixtral, grok, sharded}) {
    const ParallelLayout::ExpertExchange x = p.expert_exchange();
    EXPECT_EQ(x.infiniband, 0);
    EXPECT_EQ(x.nvlink, 0);
  }
  // Each batch in flight routes its own tokens: 16 decodes in two batches of 8, top 2 of 8 experts evenly,
  // give each of a device's 2 experts 2 rows (4 would be the whole step's); the step's given counts are
  // shared in proportion.
  const ModelSpec m = load_model("mixtral-8x7b");
  auto expert_rows = [&](const Routing& r) {
    std::vector<std::int64_t> rows;
    for (const Op& o : lower(m, BatchState::decode_batch(16, 512), mixtral, r).ops)
      if (o.kind == OpKind::kExpertFfn && o.layer == 0) rows.push_back(o.m);
    return rows;
  };
  EXPECT_EQ(expert_rows(Routing{}), (std::vector<std::int64_t>{2, 2}));
  Routing given;
  given.kind = Routing::Kind::kCounts;
  given.counts = {{12, 4, 4, 4, 2, 2, 2, 2}};  // 16 tokens x top 2
  EXPECT_EQ(expert_rows(given), (std::vector<std::int64_t>{6, 2}));
  // Data-parallel copies of the pipeline each hold every expert over their stages' devices: Mixtral on 32
  // devices is two copies of TP8 x PP2, four batches in flight; each batch routes its own tokens (32
  // decodes, 8 each: 2 rows per expert), none crossing a node.
  const ParallelLayout copies = ParallelLayout::make(m, gpu_with_stages(2), 32);
  EXPECT_EQ(copies.describe(),
            "32 devices: TP8 x PP2 x DP2 (4 batches in flight, stages over InfiniBand), EP8 (1 expert/device)");
  EXPECT_EQ(copies.replicas(), 2);
  EXPECT_EQ(copies.expert_exchange().infiniband, 0);
  EXPECT_EQ(copies.expert_exchange().nvlink, 0);
  std::vector<std::int64_t> rows;
  for (const Op& o : lower(m, BatchState::decode_batch(32, 512), copies, Routing{}).ops)
    if (o.kind == OpKind::kExpertFfn && o.layer == 0) rows.push_back(o.m);
  EXPECT_EQ(rows, std::vector<std::int64_t>{2});
  // Without stages Grok-1's 16 devices exchange tokens across the two nodes.
  EXPECT_GT(ParallelLayout::make(load_model("grok-1"), load_system("gpu"), 16).expert_exchange().infiniband,
            0);
}

TEST(PipelineParallel, StagesSplitTheLayersAsVllmDoes) {
  ParallelLayout p;
  p.pp = 2;
  EXPECT_EQ(p.stage_ends(126), std::vector<int>{62});
  p.pp = 3;
  EXPECT_EQ(p.stage_ends(10), (std::vector<int>{2, 6}));  // 3, 4, 3 layers: vLLM's get_pp_indices
  p.pp = 4;
  EXPECT_EQ(p.stage_ends(80), (std::vector<int>{19, 39, 59}));
  EXPECT_EQ(p.stage_ends(61), (std::vector<int>{14, 29, 45}));   // 15, 15, 16, 15 (vLLM's docs' example)
  EXPECT_EQ(p.stage_ends(126), (std::vector<int>{30, 62, 94}));  // 31, 32, 32, 31
  p.pp = 3;
  EXPECT_EQ(p.stage_ends(5), (std::vector<int>{1, 3}));  // 2, 2, 1: the last stage never takes one more
}

TEST(PipelineParallel, ImpossibleLayoutsAreRefused) {
  const ModelSpec dense = load_model("llama3-70b");
  EXPECT_NE(layout_error(dense, gpu_with_stages(3), 8).find("8 devices do not split into 3 pipeline stages"),
            std::string::npos);
  EXPECT_NE(layout_error(dense, gpu_with_stages(2), 24)
                .find("24 devices do not split into pipelines of 2 stages of 8"),
            std::string::npos);
  ModelSpec shallow = dense;
  shallow.layers = 2;
  EXPECT_NE(layout_error(shallow, gpu_with_stages(4), 4).find("2 layers cannot fill 4 pipeline stages"),
            std::string::npos);
}

// A rank's step runs every layer on one TP group, so its plan is the TP group's plan of its batch plus one
// stage_send after each stage but the last: the stage's tokens x hidden activations, each device's
// 1/tp share sent to the next stage (InfiniBand across nodes), the shares all-gathered over NVLink.
TEST(PipelineParallel, LoweringAddsAStageSendBetweenStages) {
  const ModelSpec m = load_model("llama3-405b");
  const SystemSpec s = gpu_with_stages(2);
  const ParallelLayout pp = ParallelLayout::make(m, s, 16),
                       tp = ParallelLayout::make(m, load_system("gpu"), 8);
  // 32 decodes unranked: each of the 2 batches in flight (ranks) takes 16, as a TP8 group without stages.
  const BatchState batch = BatchState::decode_batch(32, 1024);
  const Graph piped = lower(m, batch, pp, Routing{}),
              flat = lower(m, BatchState::decode_batch(16, 1024), tp, Routing{});
  ASSERT_EQ(piped.ops.size(), flat.ops.size() + 1);
  std::size_t j = 0;
  for (const Op& o : piped.ops) {
    if (o.kind == OpKind::kStageSend) {
      EXPECT_EQ(o.layer, 62);
      EXPECT_EQ(o.m, 16);
      EXPECT_EQ(o.n, 16384);
      const double data = 16.0 * 16384 * 2;
      EXPECT_DOUBLE_EQ(o.link_bytes, data);  // the share sent + the (tp - 1) shares of the gather
      EXPECT_DOUBLE_EQ(o.link_bytes_in_node, data * 7 / 8);
      const CostModel cost(s, pp);
      const LinkSpec& l = s.links;
      EXPECT_NEAR(cost.link_time(o).si(),
                  (transfer_time(data / 8, l.infiniband_bandwidth) + l.infiniband_latency +
                   transfer_time(data * 7 / 8, l.nvlink_bandwidth) + l.nvlink_latency * 7)
                      .si(),
                  1e-15);
      continue;
    }
    ASSERT_LT(j, flat.ops.size());
    EXPECT_EQ(o.name, flat.ops[j].name);
    EXPECT_EQ(o.bytes(), flat.ops[j].bytes()) << o.name;
    EXPECT_EQ(o.flops, flat.ops[j].flops) << o.name;
    ++j;
  }
  // A pipeline in one node sends over NVLink.
  const ParallelLayout in_node = ParallelLayout::make(m, s, 8);
  for (const Op& o : lower(m, batch, in_node, Routing{}).ops)
    if (o.kind == OpKind::kStageSend) {
      EXPECT_DOUBLE_EQ(o.link_bytes_in_node, o.link_bytes);
    }
}

// A round of the batches in flight ticks at the slowest stage's pace: 4 layers in 2 stages, the embedding
// counted with the first, the stage send with the stage it leaves, the final ops with the last.
TEST(PipelineParallel, ARoundTicksAtTheSlowestStagesPace) {
  ExecutionPlan plan;
  auto stage = [&](int layer, double us) {
    Op o;
    o.layer = layer;
    plan.graph.ops.push_back(o);
    PlannedOp placed;
    placed.op = plan.graph.ops.size() - 1;
    placed.time = Time::from_si(us * 1e-6);
    PlanStage s;
    s.ops.push_back(placed);
    plan.stages.push_back(s);
  };
  for (const auto& [layer, us] :
       {std::pair{-1, 1.0}, {0, 2.0}, {1, 2.0}, {1, 1.0}, {2, 2.0}, {3, 2.0}, {-1, 3.0}})
    stage(layer, us);
  ParallelLayout p;
  p.pp = 2;
  EXPECT_NEAR(plan.total().si(), 13e-6, 1e-15);
  EXPECT_NEAR(pipeline_round(plan, p, 4).si(), 2 * 7e-6, 1e-15);  // stages 1 + 2 + 2 + 1, 2 + 2 + 3
  p.pp = 1;
  EXPECT_EQ(pipeline_round(plan, p, 4), plan.total());
}

// The system key: default 1, 1 to 64; refused beside attention data parallelism and on split systems.
TEST(PipelineParallel, SystemKey) {
  auto load = [](const char* preset, const std::vector<std::string>& sets) {
    std::vector<ConfigOverride> overrides;
    for (const std::string& s : sets) overrides.push_back(parse_override(s, "--set"));
    return read_system(ConfigNode::load(preset, "systems", overrides));
  };
  auto error_of = [&](const char* preset, const std::vector<std::string>& sets) {
    try {
      load(preset, sets);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(load_system("gpu").pipeline_parallel, 1);
  EXPECT_EQ(load("gpu", {"pipeline_parallel=4"}).pipeline_parallel, 4);
  EXPECT_NE(error_of("gpu", {"pipeline_parallel=0"}).find("pipeline_parallel"), std::string::npos);
  EXPECT_NE(error_of("gpu", {"pipeline_parallel=2", "attention_data_parallel=true"})
                .find("pipeline_parallel: 2 beside attention_data_parallel: true is not modelled"),
            std::string::npos);
  EXPECT_NE(error_of("duplex-split", {"pipeline_parallel=2"})
                .find("pipeline_parallel: 2 on a split system is not modelled"),
            std::string::npos);
  // pipeline_partition (vLLM's VLLM_PP_LAYER_PARTITION): absent by default, one count >= 1 per stage.
  EXPECT_TRUE(load_system("gpu").pipeline_partition.empty());
  EXPECT_EQ(load("gpu", {"pipeline_parallel=4", "pipeline_partition=16,15, 15 ,15"}).pipeline_partition,
            (std::vector<int>{16, 15, 15, 15}));
  const std::pair<std::vector<std::string>, std::string> refused[] = {
      {{"pipeline_parallel=4", "pipeline_partition=15,16"},
       "pipeline_partition: \"15,16\" gives 2 stages; expected the layers of each of pipeline_parallel's 4 "
       "stages"},
      {{"pipeline_parallel=2", "pipeline_partition=63,0"},
       "pipeline_partition: \"63,0\": \"0\" is not a layer count >= 1"},
      {{"pipeline_parallel=2", "pipeline_partition=63,,"},
       "pipeline_partition: \"63,,\": \"\" is not a layer count >= 1"},
      {{"pipeline_parallel=2", "pipeline_partition=63,x3"},
       "pipeline_partition: \"63,x3\": \"x3\" is not a layer count >= 1"},
      {{"pipeline_partition=126"}, "pipeline_partition: \"126\" beside pipeline_parallel 1"},
  };
  for (const auto& [sets, expected] : refused)
    EXPECT_NE(error_of("gpu", sets).find(expected), std::string::npos) << error_of("gpu", sets);
}

// A stated partition sets each stage's layers (the layout names them); its counts must sum to the model's.
TEST(PipelineParallel, APartitionSetsEachStagesLayers) {
  SystemSpec s = gpu_with_stages(4);
  s.pipeline_partition = {16, 15, 15, 15};
  const ParallelLayout p = ParallelLayout::make(load_model("deepseek-v3"), s, 32);
  EXPECT_EQ(p.stage_ends(61), (std::vector<int>{15, 30, 45}));  // vLLM's default: 14, 29, 45
  EXPECT_NE(p.describe().find("(4 batches in flight, stages over InfiniBand, layers 16/15/15/15)"),
            std::string::npos)
      << p.describe();
  s.pipeline_partition = {16, 15, 15, 14};
  EXPECT_NE(layout_error(load_model("deepseek-v3"), s, 32)
                .find("system gpu: pipeline_partition \"16,15,15,14\" gives 60 layers; model deepseek-v3 has 61"),
            std::string::npos);
}

}  // namespace
}  // namespace duplex::compiler
