// Speculative decoding in the serving simulator: a verification is decode attention with the drafts as more
// query rows (one K/V stream), drafts from the host (ngram) cost no device time, a draft model's passes and
// memory are charged, and the latency figures stay consistent.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <utility>

#include "closed_loop_options.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/cost_model.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/runtime/sim/cycle_pim_model.hpp"
#include "duplex/runtime/sim/memory_plan.hpp"
#include "duplex/runtime/sim/serving_simulator.hpp"

namespace duplex::runtime {
namespace {

// Layer 0's decode attention of 8 requests at context 1000 verifying `tokens` - 1 drafts each.
compiler::Op verify_attention(const compiler::ModelSpec& model, const SystemSpec& sys, std::int64_t tokens) {
  const auto layout = compiler::ParallelLayout::make(model, sys, 4);
  compiler::BatchState b;
  b.groups.push_back({8, 1000, tokens, false, tokens > 1});
  for (const compiler::Op& op : compiler::lower(model, b, layout, compiler::Routing{}).ops)
    if (op.layer == 0 && op.kind == compiler::OpKind::kAttentionDecode) return op;
  ADD_FAILURE() << "no decode attention";
  return {};
}

// On the Logic-PIM the drafts join the GQA group (8 heads per K/V head x 4 query tokens = 32 rows): the K/V
// stream is read once, so verifying 3 drafts costs more than a decode and less than 4 decodes. Each K/V
// head's softmax now takes 4x the rows, which the unit's pipeline (V(h) waits for softmax(h)) does not hide:
// the cycle model lies above the analytical roofline, which overlaps them perfectly. (32 rows of FP16 scores
// fill the 128 KiB softmax buffer at 2048 tokens: longer contexts run in passes.)
TEST(SpeculativeTiming, VerificationReadsTheKvOnceForAllItsQueryRows) {
  const auto model = compiler::load_model("llama3-70b");
  const auto sys = load_system("duplex-pe");
  CyclePimModel cycle(sys);
  const compiler::Op one = verify_attention(model, sys, 1), four = verify_attention(model, sys, 4);
  EXPECT_EQ(four.requests, 8);
  EXPECT_EQ(four.query_tokens, 32);
  const double t1 = cycle.time(one).si(), t4 = cycle.time(four).si();
  EXPECT_GT(t4, 1.05 * t1);
  EXPECT_LT(t4, 4.0 * t1);
  const compiler::CostModel analytical(sys, compiler::ParallelLayout::make(model, sys, 4));
  const double a1 = analytical.analytical_pim_time(one).si(), a4 = analytical.analytical_pim_time(four).si();
  EXPECT_GT(a4, a1);
  EXPECT_LT(a4, 4.0 * a1);
  EXPECT_GT(t4, 0.99 * a4);
}

SimulationOptions run_options(int speculative, double acceptance) {
  SimulationOptions o = testing::closed_loop_options(48, 256, 96, 16, 5, 0.0);
  o.scheduler.speculative_tokens = speculative;
  o.scheduler.acceptance_rates = {acceptance};
  o.scheduler.acceptance_seed = 5;
  o.record_steps = true;
  return o;
}

// Host drafts (ngram) all accepted: the same tokens in about a quarter of the decode steps, faster; none
// accepted: the same tokens in as many steps as without drafts, each verifying 3 drafts for nothing, slower.
TEST(SpeculativeSimulation, HostDraftsTradeVerificationWorkForSteps) {
  const auto model = compiler::load_model("llama3-70b");
  const SystemSpec gpu = load_system("gpu");
  const SystemResult base = simulate(model, gpu, run_options(0, 0));
  const SystemResult all = simulate(model, gpu, run_options(3, 1.0));
  const SystemResult none = simulate(model, gpu, run_options(3, 0.0));
  EXPECT_EQ(all.generated_tokens, base.generated_tokens);
  EXPECT_EQ(none.generated_tokens, base.generated_tokens);
  EXPECT_EQ(base.draft_tokens, 0);
  EXPECT_EQ(all.accepted_tokens, all.draft_tokens);
  EXPECT_GT(all.draft_tokens, 0);
  EXPECT_EQ(none.accepted_tokens, 0);
  EXPECT_LT(all.steps, base.steps / 3);
  EXPECT_EQ(none.steps, base.steps);
  EXPECT_GT(all.throughput_tok_s, 2.0 * base.throughput_tok_s);
  EXPECT_LT(none.throughput_tok_s, base.throughput_tok_s);
  EXPECT_EQ(all.to_json()["speculative"]["accepted_fraction"], 1.0);
  EXPECT_FALSE(base.to_json().contains("speculative"));
}

// A step that emits n tokens gives each 1 / n of the time since the previous one: the mean gap times the gaps
// is the time between first and last tokens, summed over requests.
TEST(SpeculativeSimulation, TimeBetweenTokensSharesAStepAmongItsTokens) {
  const auto model = compiler::load_model("llama3-70b");
  const SystemResult r = simulate(model, load_system("duplex-pe"), run_options(3, 0.6));
  double decode_ms = 0, gaps = 0;
  for (const auto& [id, row] : r.request_rows) {
    decode_ms += row["e2e_ms"].get<double>() - row["ttft_ms"].get<double>();
    gaps += row["output_tokens"].get<double>() - 1;
  }
  EXPECT_NEAR(r.tbt_ms.mean * gaps, decode_ms, 1e-6 * decode_ms);
  EXPECT_GT(r.tbt_ms.p50, 0.0);
}

// A draft model runs one decode pass per draft token on the same devices, prefills the prompts with the
// target, and keeps its weights and K/V there: fewer KV blocks, more time per step than host drafts with the
// same acceptance draws.
TEST(SpeculativeSimulation, ADraftModelCostsMemoryAndTime) {
  const auto model = compiler::load_model("llama3-70b");
  const SystemSpec gpu = load_system("gpu");
  SimulationOptions o = run_options(3, 0.8);
  const SystemResult host = simulate(model, gpu, o);
  o.draft_model = compiler::load_model("llama-3.2-1b");
  o.timeline_steps = 3;
  const SystemResult drafted = simulate(model, gpu, o);
  // The timeline shows a step's draft passes first (ops "draft<i>.*"), then its verification, end to end.
  int draft_plans = 0;
  for (std::size_t i = 0; i < drafted.timeline.size(); ++i) {
    const TimelineStep& t = drafted.timeline[i];
    const bool draft = t.plan.graph.ops.front().name.starts_with("draft");
    draft_plans += draft;
    if (i + 1 < drafted.timeline.size() && drafted.timeline[i + 1].step == t.step) {
      EXPECT_TRUE(draft) << i;
      EXPECT_NEAR(drafted.timeline[i + 1].start_s, t.start_s + t.plan.total().si(), 1e-12) << i;
    }
  }
  EXPECT_EQ(drafted.timeline.back().step, 2);
  EXPECT_GT(draft_plans, 0);
  // The draft model caches the prompts as the target does: the first step, all prefill, has a draft pass
  // too, which prefills them (prefill attention over the same tokens).
  ASSERT_EQ(drafted.timeline[0].step, 0);
  ASSERT_EQ(drafted.timeline[1].step, 0);
  auto prefill_tokens = [](const compiler::ExecutionPlan& p) {
    for (const compiler::Op& op : p.graph.ops)
      if (op.kind == compiler::OpKind::kAttentionPrefill) return op.query_tokens;
    return std::int64_t{0};
  };
  EXPECT_GT(prefill_tokens(drafted.timeline[1].plan), 0);
  EXPECT_EQ(prefill_tokens(drafted.timeline[0].plan), prefill_tokens(drafted.timeline[1].plan));
  EXPECT_TRUE(drafted.timeline[0].plan.graph.ops.front().name.starts_with("draft1."));
  EXPECT_EQ(drafted.draft_tokens, host.draft_tokens);  // the same draws: per request and tokens so far
  EXPECT_EQ(drafted.accepted_tokens, host.accepted_tokens);
  EXPECT_LT(drafted.kv_capacity_blocks, host.kv_capacity_blocks);
  // Llama-3.2-1B's 1.236G parameters in BF16 over TP4.
  EXPECT_NEAR(drafted.memory.draft_weight_bytes_per_device, o.draft_model->weight_bytes() / 4, 1.0);
  EXPECT_GT(drafted.simulated_s, 1.05 * host.simulated_s);
  EXPECT_GT(drafted.energy_j, host.energy_j);
}

// A multi-token-prediction module drafts like a one-layer draft model that holds no embedding or LM head:
// its weights in memory are its layer and fusion only.
TEST(SpeculativeSimulation, TheMtpModuleDraftsWithItsOneLayer) {
  compiler::ModelSpec model = compiler::load_model("tiny-deepseek-v3");
  model.mtp_layers = 1;
  SimulationOptions o = testing::closed_loop_options(16, 64, 24, 8, 3, 0.0);
  o.scheduler.speculative_tokens = 2;
  o.scheduler.acceptance_rates = {0.85};
  const SystemResult host = simulate(model, load_system("duplex-pe"), o);
  o.draft_model = compiler::mtp_draft(model);
  const SystemResult mtp = simulate(model, load_system("duplex-pe"), o);
  EXPECT_EQ(mtp.accepted_tokens, host.accepted_tokens);
  EXPECT_GT(mtp.simulated_s, host.simulated_s);
  const compiler::ParallelLayout layout =
      compiler::ParallelLayout::make(*o.draft_model, load_system("duplex-pe"), 4);
  EXPECT_DOUBLE_EQ(mtp.memory.draft_weight_bytes_per_device,
                   draft_footprint(*o.draft_model, layout).weight_bytes_per_device);
  const double tables = 2.0 * model.vocab * model.hidden * 2;  // what a draft with its own tables would add
  EXPECT_LT(o.draft_model->weight_bytes(), model.weight_bytes() / model.layers * 2 + tables / 4);
  EXPECT_EQ(o.draft_model->embedding_params(),
            2 * std::int64_t{model.hidden} * model.hidden + 2 * model.hidden);
}

// An EAGLE head (draft_head: true) holds its layer and fusion only: 0.99G parameters for Llama-3-70B, in
// memory beside the target's; it drafts faster than Llama-3.2-1B's 16 layers and its own LM head.
TEST(SpeculativeSimulation, AnEagleHeadIsADraftHead) {
  const auto model = compiler::load_model("llama3-70b");
  const compiler::ModelSpec eagle = compiler::load_model("eagle-llama3-70b");
  EXPECT_TRUE(eagle.draft_head);
  EXPECT_NEAR(static_cast<double>(eagle.params()) / 1e9, 0.990, 0.001);
  EXPECT_EQ(eagle.embedding_params(), 2 * std::int64_t{8192} * 8192 + 2 * 8192);
  const SystemSpec gpu = load_system("gpu");
  SimulationOptions o = run_options(3, 0.8);
  o.draft_model = eagle;
  const SystemResult head = simulate(model, gpu, o);
  o.draft_model = compiler::load_model("llama-3.2-1b");
  const SystemResult small = simulate(model, gpu, o);
  EXPECT_NEAR(head.memory.draft_weight_bytes_per_device, eagle.weight_bytes() / 4, 1.0);
  EXPECT_EQ(head.accepted_tokens, small.accepted_tokens);
  EXPECT_LT(head.simulated_s, small.simulated_s);
}

// An EAGLE-3 head (draft_states 3): its fc over the target's three states runs in each step's first draft
// pass only (ops "draft1.head.fc"), none in later passes.
TEST(SpeculativeSimulation, AnEagle3HeadFusesInItsFirstPassOnly) {
  const auto model = compiler::load_model("llama3-70b");
  compiler::ModelSpec eagle3 = compiler::load_model("eagle-llama3-70b");
  eagle3.name = "eagle3";
  eagle3.draft_states = 3;
  eagle3.draft_vocab = 32000;
  eagle3.validate();
  SimulationOptions o = run_options(3, 0.8);
  o.draft_model = eagle3;
  o.timeline_steps = 3;
  const SystemResult r = simulate(model, load_system("gpu"), o);
  int fc_first = 0, fc_later = 0;
  for (const TimelineStep& t : r.timeline)
    for (const compiler::Op& op : t.plan.graph.ops) {
      fc_first += op.name == "draft1.head.fc";
      fc_later += op.name.ends_with(".head.fc") && !op.name.starts_with("draft1.");
    }
  EXPECT_EQ(fc_first, 3);  // one per recorded step
  EXPECT_EQ(fc_later, 0);
  o.draft_model = compiler::load_model("eagle-llama3-70b");
  EXPECT_EQ(simulate(model, load_system("gpu"), o).accepted_tokens, r.accepted_tokens);
}

// Tree verification (EAGLE-2): depth 3, 16 nodes, 4 expanded per depth. The same accepted paths as a chain
// of 3 (the rates are per depth), 16 nodes verified per request and step (17 query rows of decode attention
// each), the draft head's first pass over each request's last token and its later passes over 4 nodes each;
// the wider verification costs time.
TEST(SpeculativeSimulation, ATreeVerifiesItsNodesAndDraftsTopkRows) {
  const auto model = compiler::load_model("llama3-70b");
  SimulationOptions o = run_options(3, 0.8);
  o.draft_model = compiler::load_model("eagle-llama3-70b");
  o.timeline_steps = 3;
  const SystemResult chain = simulate(model, load_system("gpu"), o);
  o.scheduler.tree_tokens = 16;
  o.scheduler.draft_topk = 4;
  const SystemResult tree = simulate(model, load_system("gpu"), o);
  EXPECT_EQ(tree.accepted_tokens, chain.accepted_tokens);
  EXPECT_EQ(tree.verify_steps, chain.verify_steps);
  EXPECT_GT(tree.draft_tokens, 4 * chain.draft_tokens);
  EXPECT_GT(tree.simulated_s, chain.simulated_s);
  const nlohmann::json spec = tree.to_json()["speculative"];
  EXPECT_DOUBLE_EQ(spec["tokens_per_verify"].get<double>(),
                   1.0 + static_cast<double>(tree.accepted_tokens) / static_cast<double>(tree.verify_steps));
  // Step 1 (all 16 requests decoding at full depth): draft passes 1, 2, 3, then the verification.
  auto attention = [](const compiler::ExecutionPlan& p) {
    for (const compiler::Op& op : p.graph.ops)
      if (op.layer == 0 && op.kind == compiler::OpKind::kAttentionDecode) return op;
    ADD_FAILURE() << "no decode attention";
    return compiler::Op{};
  };
  std::vector<const TimelineStep*> step1;
  for (const TimelineStep& t : tree.timeline)
    if (t.step == 1) step1.push_back(&t);
  ASSERT_EQ(step1.size(), 4u);
  const compiler::Op first = attention(step1[0]->plan), second = attention(step1[1]->plan),
                     verify = attention(step1[3]->plan);
  EXPECT_TRUE(step1[1]->plan.graph.ops.front().name.starts_with("draft2."));
  EXPECT_EQ(first.requests, 16);
  EXPECT_EQ(first.query_tokens, 16);
  EXPECT_EQ(second.query_tokens, 4 * 16);
  EXPECT_EQ(verify.query_tokens, 17 * 16);
  const compiler::Op third = attention(step1[2]->plan);
  EXPECT_EQ(third.query_tokens, 4 * 16);
  EXPECT_GT(third.context_tokens, second.context_tokens);  // depth 2's nodes over one more ancestor
}

// Every draft accepted: after step 1's verification the draft model lacks its last draft and the bonus token,
// so step 2's first draft pass computes 2 rows per request; an EAGLE head recomputes the 4 tokens the target
// kept (ScheduledRequest::draft_context). Step 1, after the prefill, computes 1 for either.
TEST(SpeculativeSimulation, TheFirstDraftPassCatchesUpWithTheVerifiedTokens) {
  const auto model = compiler::load_model("llama3-70b");
  SimulationOptions o = run_options(3, 1.0);
  o.timeline_steps = 3;
  for (const auto& [draft, rows] :
       {std::pair<const char*, int>{"llama-3.2-1b", 2}, {"eagle-llama3-70b", 4}}) {
    o.draft_model = compiler::load_model(draft);
    const SystemResult r = simulate(model, load_system("gpu"), o);
    std::map<std::int64_t, compiler::Op> first_pass;  // per step: draft pass 1's layer-0 decode attention
    for (const TimelineStep& t : r.timeline)
      for (const compiler::Op& op : t.plan.graph.ops)
        if (op.name.starts_with("draft1.") && op.layer == 0 && op.kind == compiler::OpKind::kAttentionDecode)
          first_pass.emplace(t.step, op);
    ASSERT_EQ(first_pass.size(), 2u) << draft;  // steps 1 and 2 (step 0 prefills)
    EXPECT_EQ(first_pass.at(1).requests, 16) << draft;
    EXPECT_EQ(first_pass.at(1).query_tokens, 16) << draft;
    EXPECT_EQ(first_pass.at(2).requests, 16) << draft;
    EXPECT_EQ(first_pass.at(2).query_tokens, rows * 16) << draft;
  }
}

TEST(SpeculativeSimulation, SameSeedSameResults) {
  const auto model = compiler::load_model("llama3-70b");
  SimulationOptions o = run_options(2, 0.7);
  o.draft_model = compiler::load_model("llama-3.2-1b");
  EXPECT_EQ(simulate(model, load_system("duplex-pe"), o).to_json(),
            simulate(model, load_system("duplex-pe"), o).to_json());
}

TEST(SpeculativeSimulation, UnsupportedSetupsAreErrors) {
  const auto llama = compiler::load_model("llama3-70b");
  auto error = [&](const SystemSpec& sys, const SimulationOptions& o) {
    try {
      simulate(llama, sys, o);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  SimulationOptions o = run_options(3, 0.8);
  o.draft_model = compiler::load_model("tiny-dense");
  EXPECT_NE(error(load_system("gpu"), o).find("draft model tiny-dense has a vocabulary of"),
            std::string::npos);
  o.draft_model = compiler::load_model("llama-3.2-1b");
  o.scheduler.speculative_tokens = 0;
  EXPECT_NE(error(load_system("gpu"), o).find("a draft model (llama-3.2-1b) without speculative decoding"),
            std::string::npos);
}

// A split system (prefill and decode pools) speculates in its decode pool: the same draws as one pool, fewer
// decode steps than without drafts; a draft model's weights sit in both pools (the prefill pool prefills it)
// and its prompt K/V moves with the target's.
TEST(SpeculativeSimulation, SplitSystemsSpeculateInTheirDecodePool) {
  const auto llama = compiler::load_model("llama3-70b");
  const SystemSpec split = load_system("duplex-split");
  const SystemResult plain = simulate(llama, split, run_options(0, 0.8));
  const SystemResult host = simulate(llama, split, run_options(3, 0.8));
  const SystemResult pooled = simulate(llama, load_system("duplex-pe"), run_options(3, 0.8));
  EXPECT_GT(host.draft_tokens, 0);
  // Per request and tokens in its sequence so far (a migrated request's first token is in its input): the
  // same draws as on one pool.
  EXPECT_EQ(host.draft_tokens, pooled.draft_tokens);
  EXPECT_EQ(host.accepted_tokens, pooled.accepted_tokens);
  EXPECT_EQ(host.generated_tokens, plain.generated_tokens);
  ASSERT_EQ(host.pools.size(), 2u);
  EXPECT_LT(host.pools[1].steps, plain.pools[1].steps);  // several tokens per decode step
  SimulationOptions o = run_options(3, 0.8);
  o.draft_model = compiler::load_model("llama-3.2-1b");
  const SystemResult drafted = simulate(llama, split, o);
  EXPECT_EQ(drafted.accepted_tokens, host.accepted_tokens);
  EXPECT_GT(drafted.memory.draft_weight_bytes_per_device, 0);
  EXPECT_GT(drafted.energy_j, host.energy_j);
}

}  // namespace
}  // namespace duplex::runtime
