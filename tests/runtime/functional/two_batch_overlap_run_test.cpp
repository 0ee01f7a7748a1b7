// Two-batch overlap in functional emulation (SystemSpec::two_batch_overlap; DevicePool::step): a step the
// timing model splits runs as its two micro-batches, each lowered, placed, routed and quantized as the batch
// it is, and is timed as their overlapped plans. The check passes on dense, MoE and W8A8 models; a lone
// prompt is split into two chunks; a micro-batch's per-tensor FP8 scales are its own batch's; and the step
// times are the serving simulator's for the same steps.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "checkpoint_files.hpp"
#include "duplex/base/device_spec.hpp"
#include "duplex/compiler/micro_batches.hpp"
#include "duplex/runtime/functional/activation_quant.hpp"
#include "duplex/runtime/functional/functional_executor.hpp"
#include "duplex/runtime/functional/run_session.hpp"
#include "duplex/runtime/sim/step_executor.hpp"

namespace duplex::runtime::functional {
namespace {

const std::vector<std::vector<std::int32_t>> kPrompts = {{1, 5, 9, 42}, {7, 30, 12, 99, 3, 64}, {200}};
constexpr int kNewTokens = 5;

SystemSpec overlapped(const char* name) {
  SystemSpec s = load_system(name);
  s.two_batch_overlap = true;
  return s;
}

FunctionalResult run_on(const ModelWeights& w, const SystemSpec& system, int devices,
                        const std::vector<std::vector<std::int32_t>>& prompts = kPrompts) {
  FunctionalOptions o;
  o.devices = devices;
  return FunctionalExecutor(w, system, o).run(prompts, kNewTokens);
}

std::int64_t overlapped_steps(const FunctionalResult& r) {
  return std::count_if(r.steps.begin(), r.steps.end(), [](const StepRecord& s) { return s.micro_batches; });
}

// Ops of both micro-batches ran, each named after its half ("mb0." / "mb1.").
bool both_halves_ran(const FunctionalResult& r) {
  bool first = false, second = false;
  for (const OpRecord& op : r.ops) {
    first = first || op.name.rfind("mb0.", 0) == 0;
    second = second || op.name.rfind("mb1.", 0) == 0;
  }
  return first && second;
}

// Dense and MoE models, FP16 and W8A8 (FP8 per tensor, LLM.int8()), on tensor-parallel GPUs, a duplex-pe
// device and a Duplex device: steps run as two micro-batches, the check (following each half's quantized
// inputs) passes.
TEST(TwoBatchOverlapRun, MicroBatchedStepsMatchTheReference) {
  struct Case {
    const char* model;
    const char* system;
    int devices;
  };
  for (const Case& c :
       {Case{"tiny-dense", "gpu", 0}, Case{"tiny-moe", "gpu", 2}, Case{"tiny-moe", "duplex", 1},
        Case{"tiny-mixtral-fp8-tensor.yaml", "gpu", 2}, Case{"tiny-llama-bnb-int8.yaml", "duplex-pe", 1}}) {
    SCOPED_TRACE(std::string(c.model) + " on " + c.system);
    const std::string model(c.model);
    const ModelWeights w = random_weights(
        model.find(".yaml") != std::string::npos ? testing::data_model(model) : compiler::load_model(model),
        4);
    const FunctionalResult got = run_on(w, overlapped(c.system), c.devices);
    EXPECT_GT(overlapped_steps(got), 0);
    EXPECT_TRUE(both_halves_ran(got));
    const CheckResult check = check_run(w, kPrompts, got, kNewTokens);
    EXPECT_TRUE(check.passed()) << "max |logit err| " << check.max_abs_logit_err << " (bound "
                                << check.logit_bound << "), input err / bound " << check.input_err_ratio;
    EXPECT_EQ(check.followed_inputs, quantized_inputs(got.quantization));
  }
}

// A lone prompt is split at its middle token into two chunks (SGLang's two-chunk split): the first half
// computes the first chunk without completing the prompt, the second attends to its K/V and samples; the
// tokens are those of the run without overlap (an FP16 model: each row's arithmetic is the batch's).
TEST(TwoBatchOverlapRun, ALonePromptRunsAsTwoChunks) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-dense"), 4);
  const std::vector<std::vector<std::int32_t>> prompt = {{3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46}};
  const FunctionalResult got = run_on(w, overlapped("gpu"), 1, prompt),
                         plain = run_on(w, load_system("gpu"), 1, prompt);
  ASSERT_FALSE(got.steps.empty());
  EXPECT_TRUE(got.steps.front().micro_batches);  // the prompt's step
  EXPECT_EQ(got.steps.front().prefill_tokens, 11);
  for (std::size_t s = 1; s < got.steps.size(); ++s)  // one decoding request: nothing to split
    EXPECT_FALSE(got.steps[s].micro_batches) << s;
  EXPECT_EQ(got.tokens, plain.tokens);
  EXPECT_TRUE(check_run(w, prompt, got, kNewTokens).passed());
}

// A micro-batch quantizes as the batch it is: FP8 per tensor takes each half's own scale, so a step's
// recorded scales differ from the same run's without overlap, and the logits with them.
TEST(TwoBatchOverlapRun, PerTensorScalesAreEachHalfs) {
  const ModelWeights w = random_weights(testing::data_model("tiny-mixtral-fp8-tensor.yaml"), 4);
  const FunctionalResult got = run_on(w, overlapped("gpu"), 1), plain = run_on(w, load_system("gpu"), 1);
  ASSERT_GT(overlapped_steps(got), 0);
  std::int64_t differing = 0;
  for (std::size_t r = 0; r < got.quantization.size(); ++r)
    for (std::size_t p = 0; p < got.quantization[r].size() && p < plain.quantization[r].size(); ++p)
      for (std::size_t l = 0; l < got.quantization[r][p].size(); ++l)
        for (std::size_t i = 0; i < got.quantization[r][p][l].size(); ++i)
          differing += got.quantization[r][p][l][i].scales != plain.quantization[r][p][l][i].scales;
  EXPECT_GT(differing, 0);
  EXPECT_NE(got.logits, plain.logits);
}

// The emulation's step times are the serving simulator's for the same steps: the run's total against the
// same steps without overlap differs only where steps ran as two micro-batches, and a dense model's
// micro-batched step takes the time StepExecutor gives its plan (which splits and overlaps it itself).
TEST(TwoBatchOverlapRun, StepsAreTimedAsOverlappedMicroBatches) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-dense"), 4);
  const SystemSpec system = overlapped("gpu");
  const FunctionalResult got = run_on(w, system, 0);
  ASSERT_FALSE(got.steps.empty());
  const StepRecord& first = got.steps.front();  // all three prompts: 11 tokens
  ASSERT_TRUE(first.micro_batches);
  const compiler::ParallelLayout layout = compiler::ParallelLayout::make(w.spec, system, got.devices);
  StepPlan plan;
  for (std::size_t r = 0; r < kPrompts.size(); ++r)
    plan.requests.push_back({static_cast<RequestId>(r), static_cast<std::int64_t>(kPrompts[r].size()), 0,
                             TokenPhase::prefill, true});
  StepExecutor executor(w.spec, system, layout, nullptr);
  executor.lower_every_group_per_replica();
  const StepCost cost = executor.execute(plan);
  ASSERT_TRUE(cost.micro_batches);
  EXPECT_EQ(first.time, cost.time);
}

}  // namespace
}  // namespace duplex::runtime::functional
