// `datapath: rtl` on every system: the Verilated Logic-PIM datapath behind every PIM device (Logic-PIM and
// Bank-PIM alike) gives tokens that pass the check against the plain reference, identical across systems and
// to the golden datapath. Small prompts: the RTL clocks every GEMM lane cycle by cycle.
// Weights seed 5: with seed 17, tiny-moe's reference has a near-tie (tokens 255 / 334, logits 0.0009 apart at
// request 0, position 3) that the FP16 rounding of the 4-device partial sums (0.0015) flips on gpu; greedy
// tokens are only comparable away from such ties.
#include <gtest/gtest.h>

#include "duplex/base/device_spec.hpp"
#include "duplex/runtime/functional/functional_executor.hpp"
#include "duplex/runtime/functional/run_session.hpp"

namespace duplex::runtime::functional {
namespace {

const std::vector<std::vector<std::int32_t>> kPrompts = {{3, 14, 15, 92}, {65, 35}};
constexpr int kNewTokens = 4;

class RtlOnEverySystem : public ::testing::TestWithParam<const char*> {};

TEST_P(RtlOnEverySystem, CheckPassesAndTokensIdenticalAcrossSystemsAndDatapaths) {
  const ModelWeights w = random_weights(compiler::load_model(GetParam()), 5);
  const ReferenceOutput ref = reference_generate(w, kPrompts, kNewTokens);
  FunctionalExecutor gpu(w, load_system("gpu"));
  const FunctionalResult on_gpu = gpu.run(kPrompts, kNewTokens);
  EXPECT_TRUE(compare(on_gpu, ref).passed());
  for (const char* system : {"duplex", "duplex-pe", "bank-pim"})
    for (const char* datapath : {"golden", "rtl"}) {
      FunctionalOptions o;
      o.datapath = datapath;
      FunctionalExecutor exec(w, load_system(system), o);
      const FunctionalResult r = exec.run(kPrompts, kNewTokens);
      const CheckResult check = compare(r, ref);
      EXPECT_TRUE(check.passed()) << system << " " << datapath << ": max |logit err| "
                                  << check.max_abs_logit_err;
      EXPECT_EQ(r.tokens, on_gpu.tokens) << system << " " << datapath;
      EXPECT_NE(r.pim_unit.find(std::string("datapath ") + datapath), std::string::npos) << r.pim_unit;
      // The RTL clocks its datapath: cycles are reported, and only for it.
      EXPECT_EQ(r.pim_cycles.has_value(), std::string(datapath) == "rtl") << system;
    }
}

INSTANTIATE_TEST_SUITE_P(Models, RtlOnEverySystem,
                         // GELU tanh + bias (StarCoder2), gated GELU tanh (Gemma), exact GELU experts, MLA
                         // (decode attention over the latent: one KV head of kv_lora_rank + rope), Gemma 2
                         // (the softmax unit's soft-cap), gpt-oss (its sinks, the GEMM lane's bias, the
                         // swiglu-oai-gate mode), Llama 4 (decode attention within chunks, experts on
                         // inputs scaled by their routing weights)
                         ::testing::Values("tiny-moe", "tiny-dense", "tiny-starcoder2", "tiny-gemma",
                                           "tiny-gelu-moe", "tiny-deepseek-v3", "tiny-gemma2", "tiny-gpt-oss",
                                           "tiny-llama4"),
                         [](const ::testing::TestParamInfo<const char*>& p) {
                           std::string n = p.param;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

}  // namespace
}  // namespace duplex::runtime::functional
