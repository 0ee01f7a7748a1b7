// W8A8 activation quantization in functional emulation (activation_quant.hpp): the xPU quantizes the inputs
// of its FP8 / INT8 GEMMs as the serving kernels do, the Logic-PIM does not, and `duplex run --check`'s
// reference quantizes the inputs the executor's record names. Every W8A8 format on an all-xPU system (gpu,
// tensor parallel too) and on duplex-pe (placement moves decode GEMMs to the Logic-PIM): the check passes;
// without the record it fails (the quantization moves the logits beyond the bound); the record follows
// placement; per-tensor scales are kept per device slice; off, nothing is quantized.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "checkpoint_files.hpp"
#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/runtime/functional/activation_quant.hpp"
#include "duplex/runtime/functional/functional_executor.hpp"
#include "duplex/runtime/functional/run_session.hpp"

namespace duplex::runtime::functional {
namespace {

// Token ids every model here has (the smallest vocabulary is 256).
const std::vector<std::vector<std::int32_t>> kPrompts = {{1, 5, 9, 42}, {7, 30, 12, 99, 3, 64}, {200}};
constexpr int kNewTokens = 6;

const char* const kW8a8Models[] = {"tiny-mixtral-w8a8.yaml",       "tiny-mixtral-fp8-dynamic.yaml",
                                   "tiny-mixtral-fp8-tensor.yaml", "tiny-llama-fbgemm-fp8.yaml",
                                   "tiny-qwen3-moe-fp8.yaml",      "tiny-deepseek-v3-fp8.yaml"};

ModelWeights weights_of(const std::string& file) {
  return random_weights(testing::data_model(file), 5);
}

FunctionalResult run_on(const ModelWeights& w, const std::string& system, int devices, bool quantize = true) {
  FunctionalOptions o;
  o.devices = devices;
  o.quantize_activations = quantize;
  return FunctionalExecutor(w, load_system(system), o).run(kPrompts, kNewTokens);
}

CheckResult check(const ModelWeights& w, const FunctionalResult& got) {
  return check_run(w, kPrompts, got, kNewTokens);
}

// Every position of every request ran (prompt and generated tokens but the last).
std::int64_t positions_run() {
  std::int64_t n = 0;
  for (const auto& p : kPrompts) n += static_cast<std::int64_t>(p.size()) + kNewTokens - 1;
  return n;
}

// Every W8A8 format (INT8 per token, FP8 per token with and without fbgemm's bound, per tensor, per
// 128-column group with MLA) on all-xPU systems and on duplex-pe: the check, following the executor's
// quantized inputs, passes, every followed input within the bound.
TEST(ActivationQuantRun, EveryW8a8FormatMatchesTheQuantizingReference) {
  for (const char* file : kW8a8Models)
    for (const auto& [system, devices] :
         {std::pair{"gpu", 0}, std::pair{"gpu", 2}, std::pair{"duplex-pe", 0}}) {
      SCOPED_TRACE(std::string(file) + " on " + system + " x" + std::to_string(devices));
      const ModelWeights w = weights_of(file);
      const FunctionalResult got = run_on(w, system, devices);
      ASSERT_EQ(got.quantization.size(), kPrompts.size());
      // (On duplex-pe's 4 devices placement may send every quantized GEMM to the Logic-PIM: fbgemm's FFNs.)
      if (std::string(system) == "gpu") {
        EXPECT_GT(quantized_inputs(got.quantization), 0);
      }
      const CheckResult c = check(w, got);
      EXPECT_TRUE(c.passed()) << "max |logit err| " << c.max_abs_logit_err << " (bound " << c.logit_bound
                              << "), input err / bound " << c.input_err_ratio;
      EXPECT_EQ(c.followed_inputs, quantized_inputs(got.quantization));
      EXPECT_EQ(c.compared_positions, static_cast<std::int64_t>(kPrompts.size()) * kNewTokens);
    }
}

// The check sees FP8 quantization: the same run held to the FP16 reference (its record dropped) fails, and
// a run with quantization off passes that reference with other logits. (INT8 per token moves these tiny
// models' logits by less than the bound.)
TEST(ActivationQuantRun, TheCheckFailsWithoutTheRecord) {
  for (const char* file : {"tiny-mixtral-fp8-dynamic.yaml", "tiny-qwen3-moe-fp8.yaml"}) {
    SCOPED_TRACE(file);
    const ModelWeights w = weights_of(file);
    FunctionalResult got = run_on(w, "gpu", 0);
    const FunctionalResult unquantized = run_on(w, "gpu", 0, false);
    EXPECT_TRUE(unquantized.quantization.empty());
    EXPECT_TRUE(check(w, unquantized).passed());
    EXPECT_NE(got.logits, unquantized.logits);
    got.quantization.clear();
    const CheckResult blind = check(w, got);
    EXPECT_FALSE(blind.passed()) << "max |logit err| " << blind.max_abs_logit_err << " bound "
                                 << blind.logit_bound;
  }
}

// The record follows placement, op by op: each step's quantized inputs are those of its GEMMs the plan put on
// the xPU (its attention projections and O projection for each of the step's tokens, each expert for the
// tokens routed to it), none of the Logic-PIM's. On gpu all of them; on one duplex-pe device some GEMMs go to
// the Logic-PIM.
TEST(ActivationQuantRun, TheRecordFollowsPlacement) {
  const ModelWeights w = weights_of("tiny-mixtral-fp8-dynamic.yaml");
  std::int64_t on_gpu = 0;
  for (const char* system : {"gpu", "duplex-pe"}) {
    SCOPED_TRACE(system);
    const FunctionalResult got = run_on(w, system, 1);
    std::int64_t expected = 0;
    for (const OpRecord& op : got.ops) {
      if (op.unit != compiler::Unit::kXpu) continue;
      const StepRecord& st = got.steps[static_cast<std::size_t>(op.step)];
      if (op.kind == compiler::OpKind::kQkvProj || op.kind == compiler::OpKind::kOProj) {
        expected += st.prefill_tokens + st.decode_tokens;
      } else if (op.kind == compiler::OpKind::kExpertFfn) {
        const std::size_t at = op.name.rfind("expert");
        ASSERT_NE(at, std::string::npos) << op.name;
        const int expert = std::stoi(op.name.substr(at + 6));
        expected +=
            2 * st.expert_counts[static_cast<std::size_t>(op.layer)][static_cast<std::size_t>(expert)];
      }
    }
    const std::int64_t recorded = quantized_inputs(got.quantization);
    EXPECT_EQ(recorded, expected);
    if (std::string(system) == "gpu") {
      on_gpu = recorded;  // every layer of every position: qkv, o, and each chosen expert's x and h
      EXPECT_EQ(recorded, positions_run() * w.spec.layers * (2 + 2 * w.spec.top_k));
    } else {
      EXPECT_GT(recorded, 0);
      EXPECT_LT(recorded, on_gpu);
    }
    EXPECT_TRUE(check(w, got).passed());
  }
}

// FP8 per tensor (the batch's scale): each device's scale kept, the O projection's and the experts' h per
// tensor-parallel slice; the same run twice, the same record and logits bit for bit.
TEST(ActivationQuantRun, PerTensorScalesAreKeptPerSlice) {
  const ModelWeights w = weights_of("tiny-mixtral-fp8-tensor.yaml");
  const FunctionalResult got = run_on(w, "gpu", 2), again = run_on(w, "gpu", 2);
  EXPECT_EQ(got.logits, again.logits);
  bool expert_seen = false;
  for (const auto& request : got.quantization)
    for (const auto& position : request)
      for (const auto& layer : position)
        for (const QuantizedInput& in : layer) {
          switch (in.gemm) {
            case QuantizedGemm::kQkv:
              EXPECT_EQ(in.slices, 1);
              ASSERT_EQ(in.scales.size(), 1u);
              break;
            case QuantizedGemm::kOProj:
              EXPECT_EQ(in.slices, 2);
              ASSERT_EQ(in.scales.size(), 2u);
              break;
            default:
              expert_seen = true;
              ASSERT_EQ(in.scales.size(), static_cast<std::size_t>(1 + in.slices));
          }
          for (float s : in.scales) EXPECT_GT(s, 0.0f);
        }
  EXPECT_TRUE(expert_seen);
}

// LLM.int8() (bnb_int8: bitsandbytes' MatMul8bitLt at llm_int8_threshold). The tiny model's random
// activations stay below the releases' 6.0, so its threshold is lowered to one they reach in some columns.
constexpr double kLowThreshold = 2.0;

ModelWeights bnb_weights(double threshold) {
  compiler::ModelSpec spec = testing::data_model("tiny-llama-bnb-int8.yaml");
  spec.llm_int8_threshold = threshold;
  return random_weights(spec, 5);
}

// The outlier columns are the batch's: every element of a token's recorded input at or above the threshold
// lies in a recorded column, and some recorded columns are another token's (the token's own element there
// below the threshold). The check follows them (on the gpu system's four devices, two in tensor parallel, and
// one duplex-pe device, whose Logic-PIM GEMVs take FP16 inputs), and the run counts the columns its quantize
// calls found.
TEST(ActivationQuantRun, LlmInt8OutlierColumnsAreTheBatchs) {
  const ModelWeights w = bnb_weights(kLowThreshold);
  for (const auto& [system, devices] :
       {std::pair{"gpu", 0}, std::pair{"gpu", 2}, std::pair{"duplex-pe", 1}}) {
    SCOPED_TRACE(std::string(system) + " x" + std::to_string(devices));
    const FunctionalResult got = run_on(w, system, devices);
    // (On duplex-pe placement may send every GEMM of these short prompts to the Logic-PIM.)
    if (std::string(system) == "gpu") {
      EXPECT_GT(got.outlier_columns.calls, 0);
      EXPECT_GT(got.outlier_columns.columns, 0);
    }
    const CheckResult c = check(w, got);
    EXPECT_TRUE(c.passed()) << "max |logit err| " << c.max_abs_logit_err << " (bound " << c.logit_bound
                            << "), input err / bound " << c.input_err_ratio;
    EXPECT_EQ(c.followed_inputs, quantized_inputs(got.quantization));
  }
  const FunctionalResult got = run_on(w, "gpu", 1);  // one device: input k is call k, unsliced
  std::int64_t own = 0, borrowed = 0;
  for (const auto& request : got.quantization)
    for (const auto& position : request)
      for (const auto& layer : position)
        for (const QuantizedInput& in : layer) {
          ASSERT_EQ(in.outliers.size(), in.inputs.size());
          for (std::size_t k = 0; k < in.inputs.size(); ++k) {
            std::vector<bool> listed(in.inputs[k].size(), false);
            for (std::int32_t col : in.outliers[k]) listed.at(static_cast<std::size_t>(col)) = true;
            for (std::size_t i = 0; i < listed.size(); ++i) {
              const bool reaches = std::abs(half_bits_to_float(in.inputs[k][i])) >= kLowThreshold;
              if (reaches) {
                EXPECT_TRUE(listed[i]) << quantized_gemm_name(in.gemm) << " input " << k << " column " << i;
              }
              own += reaches;
              borrowed += listed[i] && !reaches;
            }
          }
        }
  EXPECT_GT(own, 0);
  EXPECT_GT(borrowed, 0);
}

// A record that leaves out a column where the token's input reaches the threshold cannot be the executor's:
// the check refuses it, naming it.
TEST(ActivationQuantRun, LlmInt8RecordMissingAColumnIsRefused) {
  const ModelWeights w = bnb_weights(kLowThreshold);
  FunctionalResult got = run_on(w, "gpu", 0);
  bool dropped = false;
  for (auto& request : got.quantization)
    for (auto& position : request)
      for (auto& layer : position)
        for (QuantizedInput& in : layer)
          for (std::size_t k = 0; k < in.inputs.size() && !dropped; ++k)
            for (std::size_t i = 0; i < in.inputs[k].size() && !dropped; ++i)
              if (std::abs(half_bits_to_float(in.inputs[k][i])) >= kLowThreshold) {
                std::erase(in.outliers[k], static_cast<std::int32_t>(i));
                dropped = true;
              }
  ASSERT_TRUE(dropped);
  try {
    check(w, got);
    FAIL() << "the check took a record missing an outlier column";
  } catch (const Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("the executor's record of LLM.int8()'s outlier columns leaves out column"),
        std::string::npos)
        << e.what();
  }
}

// A threshold no activation reaches finds no column and is INT8 per token, as threshold 0 (no decomposition)
// is, bit for bit; the low threshold's columns change the logits.
TEST(ActivationQuantRun, LlmInt8WithoutOutliersIsInt8PerToken) {
  const FunctionalResult high = run_on(bnb_weights(1e6), "gpu", 0), none = run_on(bnb_weights(0), "gpu", 0),
                         low = run_on(bnb_weights(kLowThreshold), "gpu", 0);
  EXPECT_GT(high.outlier_columns.calls, 0);
  EXPECT_EQ(high.outlier_columns.columns, 0);
  EXPECT_EQ(none.outlier_columns.calls, 0);
  EXPECT_GT(quantized_inputs(none.quantization), 0);
  EXPECT_EQ(high.logits, none.logits);
  EXPECT_NE(low.logits, none.logits);
}

}  // namespace
}  // namespace duplex::runtime::functional
