// Multi-device functional emulation: every device of the parallel layout holds its shard of the weights and
// KV heads and runs its shard of each op; partial outputs are summed where the plan all-reduces. Tokens must
// not depend on the device count, the check against the plain reference must pass, and the simulated time
// must come from the multi-device plan (links included).
#include <gtest/gtest.h>

#include <ostream>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/functional/functional_executor.hpp"
#include "duplex/runtime/functional/run_session.hpp"

namespace duplex::runtime::functional {
namespace {

const std::vector<std::vector<std::int32_t>> kPrompts = {{1, 5, 9, 42}, {7, 300, 12, 999, 3, 64}, {512}};
constexpr int kNewTokens = 6;

FunctionalResult run_on(const ModelWeights& w, const std::string& system, int devices) {
  FunctionalOptions o;
  o.devices = devices;
  FunctionalExecutor exec(w, load_system(system), o);
  return exec.run(kPrompts, kNewTokens);
}

Time link_busy(const FunctionalResult& r) {
  Time t;
  for (const StepRecord& s : r.steps) t += s.link_busy;
  return t;
}

struct Case {
  const char* model;
  const char* system;
  int devices;  // 0: the system's (2xgpu: 2 x 4 = 8 for the tiny models)
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.model << " on " << c.system << " x" << c.devices;
}

std::string case_name(const ::testing::TestParamInfo<Case>& p) {
  std::string n = std::string(p.param.model) + "_" + p.param.system + "_" + std::to_string(p.param.devices);
  for (char& ch : n)
    if (ch == '-') ch = '_';
  return n;
}

class MultiDevice : public ::testing::TestWithParam<Case> {};

TEST_P(MultiDevice, TokensAsOnOneDeviceCheckPassesTimeFromTheLayout) {
  const Case c = GetParam();
  const ModelWeights w = random_weights(compiler::load_model(c.model), 5);
  const FunctionalResult one = run_on(w, c.system, 1);
  const FunctionalResult many = run_on(w, c.system, c.devices);
  const int expected_devices = c.devices > 0 ? c.devices : load_system(c.system).devices_for(c.model);
  ASSERT_EQ(many.devices, expected_devices);
  ASSERT_GT(many.devices, 1);
  EXPECT_EQ(one.devices, 1);
  EXPECT_EQ(many.tokens, one.tokens);
  const CheckResult check = compare(many, reference_generate(w, kPrompts, kNewTokens));
  EXPECT_TRUE(check.tokens_match);
  EXPECT_LE(check.max_abs_logit_err, check.logit_bound);
  // The step time is the multi-device plan's: sharded ops shrink, all-reduces over the links appear.
  EXPECT_NE(many.time.si(), one.time.si());
  // (One device crosses no link, but on the heterogeneous system, to its PIM devices.)
  EXPECT_GT(link_busy(many).si(), link_busy(one).si());
  if (!load_system(c.system).heterogeneous()) {
    EXPECT_EQ(link_busy(one).si(), 0.0);
  }
  EXPECT_GT(many.ops_per_unit().at("link"), 0);
  // Every device's xPU ran its shard (QKV on the xPU or its PIM, the LM head always on its xPU).
  for (int d = 0; d < many.devices; ++d) {
    const std::string xpu = "dev" + std::to_string(d) + ".xpu";
    ASSERT_TRUE(many.device_op_counts.count(xpu)) << xpu;
    EXPECT_GT(many.device_op_counts.at(xpu).at("lm_head"), 0) << xpu;
    EXPECT_NE(many.device_classes.at(xpu).find("XpuDevice"), std::string::npos);
  }
  std::printf("%s on %s: 1 device %.2f us, %s: %.2f us (links %.2f us), max |logit err| %.4g\n", c.model,
              c.system, to_us(one.time), many.layout.c_str(), to_us(many.time), to_us(link_busy(many)),
              check.max_abs_logit_err);
}

INSTANTIATE_TEST_SUITE_P(Layouts, MultiDevice,
                         ::testing::Values(Case{"tiny-moe", "2xgpu", 0}, Case{"tiny-dense", "2xgpu", 0},
                                           Case{"tiny-moe", "duplex-pe", 2},
                                           Case{"tiny-dense", "duplex-pe", 2},
                                           Case{"tiny-moe", "duplex-pe-et", 4},
                                           Case{"tiny-moe", "bank-pim", 2},
                                           // Two nodes of 8: TP8 x DP2, experts over all 16 devices.
                                           Case{"tiny-moe", "duplex-pe", 16}, Case{"tiny-dense", "gpu", 16},
                                           Case{"tiny-moe", "gpu-pim-hetero", 16}),
                         case_name);

TEST(MultiDevice, EveryDevicesPimRunsItsShardOnDuplexPe) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-moe"), 5);
  const FunctionalResult r = run_on(w, "duplex-pe", 2);
  for (const char* pim : {"dev0.pim", "dev1.pim"}) {
    ASSERT_TRUE(r.device_op_counts.count(pim)) << pim;
    EXPECT_GT(r.device_op_counts.at(pim).at("attn_decode"), 0) << pim;
    EXPECT_NE(r.device_classes.at(pim).find("LogicPimDevice"), std::string::npos);
  }
  const FunctionalResult bank = run_on(w, "bank-pim", 2);
  EXPECT_NE(bank.device_classes.at("dev1.pim").find("BankPimDevice"), std::string::npos);
  EXPECT_EQ(r.pim_unit.rfind("LogicPimDevice", 0), 0u);
}

TEST(MultiDevice, LayoutsFunctionalEmulationCannotRunAreClearErrors) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-moe"), 5);
  const SystemSpec sys = load_system("duplex-pe");
  FunctionalOptions o;
  o.devices = 3;  // 8 query heads do not split over TP3
  EXPECT_THROW(FunctionalExecutor(w, sys, o), Error);
  o.devices = 12;  // two nodes of 6: 8 query heads do not split over TP6
  EXPECT_THROW(FunctionalExecutor(w, sys, o), Error);
  o.devices = -1;
  EXPECT_THROW(FunctionalExecutor(w, sys, o), Error);
}

// Two nodes: a request is served by one node (round-robin by id), whose devices alone run its attention, QKV /
// O projections and logits; the experts of every node's devices take the tokens of both.
TEST(MultiDevice, OnTwoNodesEachRequestIsServedByOneNodeAndTheExpertsByAll) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-moe"), 5);
  FunctionalOptions o;
  o.devices = 16;
  const std::vector<std::vector<std::int32_t>> one_prompt = {{1, 5, 9, 42}};
  const FunctionalResult r = FunctionalExecutor(w, load_system("duplex-pe"), o).run(one_prompt, 4);
  EXPECT_EQ(r.layout, "16 devices: TP8 x DP2, EP8 (1 expert/device, each in 2 shards)");
  const CheckResult check = compare(r, reference_generate(w, one_prompt, 4));
  EXPECT_TRUE(check.tokens_match);
  EXPECT_LE(check.max_abs_logit_err, check.logit_bound);
  std::int64_t node1_experts = 0;
  for (int d = 0; d < 16; ++d)
    for (const char* unit : {"xpu", "pim"}) {
      const std::string name = "dev" + std::to_string(d) + "." + unit;
      const auto& counts = r.device_op_counts.at(name);
      for (const auto& [op, n] : counts) {
        if (d >= 8) {  // node 1: request 0 is node 0's
          EXPECT_EQ(op, "expert_ffn") << name << " ran " << op;
          node1_experts += n;
        }
      }
      if (d < 8 && std::string(unit) == "xpu") {
        EXPECT_GT(counts.at("lm_head"), 0) << name;
      }
    }
  EXPECT_GT(node1_experts, 0);
  // Request 1 is node 1's: its devices run attention too.
  const FunctionalResult both = FunctionalExecutor(w, load_system("duplex-pe"), o).run(kPrompts, kNewTokens);
  EXPECT_GT(both.device_op_counts.at("dev8.pim").at("attn_decode"), 0);
  // Split pools of two nodes each: K/V moves from the prefill pool's node to the decode pool's.
  o.devices = 32;
  const FunctionalResult split = FunctionalExecutor(w, load_system("duplex-split"), o).run(kPrompts, kNewTokens);
  const CheckResult split_check = compare(split, reference_generate(w, kPrompts, kNewTokens));
  EXPECT_TRUE(split_check.tokens_match);
  EXPECT_LE(split_check.max_abs_logit_err, split_check.logit_bound);
  EXPECT_EQ(split.kv_migrations.size(), kPrompts.size());
}

// Each node's devices hold --kv-blocks blocks of their own requests' K/V (the scheduler's data-parallel
// ranks): 4 prompts of 4 tokens + 6 new tokens (3 blocks of 4 each at their peak) on two nodes, 2 per node,
// run together in 6 steps with 6 blocks per device. (A single pool of 6 blocks for both nodes held only two.)
TEST(MultiDevice, EachNodeHoldsItsRequestsInItsOwnMemory) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-moe"), 5);
  const std::vector<std::vector<std::int32_t>> prompts = {
      {1, 5, 9, 42}, {7, 300, 12, 999}, {2, 4, 6, 8}, {3, 5, 7, 11}};
  FunctionalOptions o;
  o.devices = 16;
  o.kv_block_tokens = 4;
  o.kv_blocks = 6;
  const FunctionalResult r = FunctionalExecutor(w, load_system("gpu"), o).run(prompts, kNewTokens);
  ASSERT_EQ(r.layout.substr(0, 23), "16 devices: TP8 x DP2, ");
  ASSERT_EQ(r.steps.size(), 6u);
  for (const StepRecord& s : r.steps) EXPECT_EQ(s.requests, 4);
  EXPECT_TRUE(compare(r, reference_generate(w, prompts, kNewTokens)).tokens_match);
  // 5 blocks per device: each node's pair no longer fits at once; the tokens stay.
  o.kv_blocks = 5;
  const FunctionalResult tight = FunctionalExecutor(w, load_system("gpu"), o).run(prompts, kNewTokens);
  EXPECT_GT(tight.steps.size(), 6u);
  EXPECT_EQ(tight.tokens, r.tokens);
}

// Attention data parallelism: every device is a rank of its own (TP1), serving the requests dealt to it by id
// (here 4 devices, 3 prompts: device 3 serves none) with whole copies of the attention, dense and LM-head
// weights; the experts of all four take every rank's tokens. Tokens as on one device and the check passes,
// for GQA, MLA (DeepSeek's latent, whole on its rank only), an MoE with shared experts, post-norms (Gemma 2)
// and a dense model; no all-reduce in the plan, the all-to-all among the 4 devices on MoE models.
TEST(MultiDevice, AttentionDataParallelServesEachRequestOnOneDevice) {
  SystemSpec dp = load_system("duplex-pe");
  dp.attention_data_parallel = true;
  for (const char* model : {"tiny-moe", "tiny-deepseek", "tiny-qwen-moe", "tiny-gemma2", "tiny-dense"}) {
    SCOPED_TRACE(model);
    const ModelWeights w = random_weights(compiler::load_model(model), 5);
    FunctionalOptions o;
    o.devices = 4;
    const FunctionalResult r = FunctionalExecutor(w, dp, o).run(kPrompts, kNewTokens);
    EXPECT_NE(r.layout.find("4 devices: TP1 x DP4 (attention data parallel)"), std::string::npos) << r.layout;
    const CheckResult check = compare(r, reference_generate(w, kPrompts, kNewTokens));
    EXPECT_TRUE(check.passed()) << check.max_abs_logit_err;
    EXPECT_EQ(r.tokens, run_on(w, "duplex-pe", 1).tokens);
    const bool moe = w.spec.is_moe();
    const auto kinds = r.ops_per_kind_and_unit();  // the plan's ops: no all-reduce, the all-to-all on MoE
    EXPECT_EQ(kinds.count("all_reduce"), 0u);
    EXPECT_EQ(kinds.count("all_to_all") > 0, moe);
    for (int d = 0; d < 4; ++d) {
      const auto it = r.device_op_counts.find("dev" + std::to_string(d) + ".xpu");
      const std::map<std::string, std::int64_t> xpu =
          it == r.device_op_counts.end() ? std::map<std::string, std::int64_t>{} : it->second;
      if (d < 3) {
        EXPECT_GT(xpu.at("lm_head"), 0) << d;
      } else {  // no request of its own: only its experts' share of the others' tokens
        EXPECT_EQ(xpu.count("lm_head"), 0u);
        EXPECT_EQ(xpu.count("qkv_proj"), 0u);
      }
    }
  }
}

// Nodes of one device (links.devices_per_node 1: TP1 x DP2 without attention data parallelism) have no
// all-reduce in their plan either; their partial outputs are gathered the same way (the check used to fail).
TEST(MultiDevice, NodesOfOneDeviceGatherTheirRows) {
  SystemSpec sys = load_system("gpu");
  sys.links.devices_per_node = 1;
  const ModelWeights w = random_weights(compiler::load_model("tiny-moe"), 5);
  FunctionalOptions o;
  o.devices = 2;
  const FunctionalResult r = FunctionalExecutor(w, sys, o).run(kPrompts, kNewTokens);
  EXPECT_EQ(r.layout, "2 devices: TP1 x DP2, EP2 (4 experts/device)");
  const CheckResult check = compare(r, reference_generate(w, kPrompts, kNewTokens));
  EXPECT_TRUE(check.passed()) << check.max_abs_logit_err;
  EXPECT_EQ(r.tokens, run_on(w, "gpu", 1).tokens);
}

}  // namespace
}  // namespace duplex::runtime::functional
