// Functional emulation vs the plain CPU reference: identical greedy tokens and logits within the stated
// bound on every system, tokens identical across systems, co-processing observed, determinism.
#include <gtest/gtest.h>

#include <ostream>

#include "duplex/base/device_spec.hpp"
#include "duplex/runtime/functional/functional_executor.hpp"
#include "duplex/runtime/functional/reference_forward.hpp"
#include "duplex/runtime/functional/run_session.hpp"

namespace duplex::runtime::functional {
namespace {

const std::vector<std::vector<std::int32_t>> kPrompts = {{1, 5, 9, 42}, {7, 300, 12, 999, 3, 64}, {512}, {2, 2, 2}};
constexpr int kNewTokens = 12;

struct Case {
  const char* model;
  const char* system;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.model << " on " << c.system; }

std::string case_name(const ::testing::TestParamInfo<Case>& p) {
  std::string n = std::string(p.param.model) + "_" + p.param.system;
  for (char& ch : n)
    if (ch == '-') ch = '_';
  return n;
}

class ExecutorVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(ExecutorVsReference, TokensIdenticalLogitsWithinBound) {
  const Case c = GetParam();
  const ModelWeights w = random_weights(compiler::load_model(c.model), 11);
  const SystemSpec sys = load_system(c.system);
  FunctionalExecutor exec(w, sys);
  const FunctionalResult got = exec.run(kPrompts, kNewTokens);
  const ReferenceOutput ref = reference_generate(w, kPrompts, kNewTokens);
  const CheckResult check = compare(got, ref);
  EXPECT_TRUE(check.tokens_match);
  EXPECT_EQ(check.compared_positions, static_cast<std::int64_t>(kPrompts.size()) * kNewTokens);
  EXPECT_LE(check.max_abs_logit_err, check.logit_bound);
  std::printf("%s on %s: max |logit err| %.4g, bound %.4g, time %.2f us\n", c.model, c.system,
              check.max_abs_logit_err, check.logit_bound, to_us(got.time));
}

INSTANTIATE_TEST_SUITE_P(Systems, ExecutorVsReference,
                         ::testing::Values(Case{"tiny-moe", "gpu"}, Case{"tiny-moe", "duplex"},
                                           Case{"tiny-moe", "duplex-pe"}, Case{"tiny-moe", "bank-pim"},
                                           Case{"tiny-dense", "gpu"}, Case{"tiny-dense", "duplex"},
                                           Case{"tiny-dense", "duplex-pe"}, Case{"tiny-dense", "bank-pim"}),
                         case_name);

// Sliding-window attention (a 5-token window over contexts up to 18): tokens identical to the reference's
// and logits within its bound on the xPU path (gpu) and the Logic-PIM attention path (duplex, duplex-pe),
// with every layer windowed and with layer 0 attending fully; and the window changes the logits (it is used).
TEST(ExecutorSlidingWindow, MatchesTheReferenceOnEveryAttentionPath) {
  for (const char* model : {"tiny-dense", "tiny-moe"})
    for (const std::vector<int>& full_layers : {std::vector<int>{}, std::vector<int>{0}})
      for (const char* system : {"gpu", "duplex", "duplex-pe"}) {
        SCOPED_TRACE(std::string(model) + " on " + system + (full_layers.empty() ? "" : ", layer 0 full"));
        compiler::ModelSpec m = compiler::load_model(model);
        const ModelWeights full_w = random_weights(m, 11);
        m.sliding_window = 5;
        m.full_attention_layers = full_layers;
        const ModelWeights w = random_weights(m, 11);
        const SystemSpec sys = load_system(system);
        const FunctionalResult got = FunctionalExecutor(w, sys).run(kPrompts, kNewTokens);
        const CheckResult check = compare(got, reference_generate(w, kPrompts, kNewTokens));
        EXPECT_TRUE(check.tokens_match);
        EXPECT_LE(check.max_abs_logit_err, check.logit_bound);
        const FunctionalResult unwindowed = FunctionalExecutor(full_w, sys).run(kPrompts, kNewTokens);
        EXPECT_NE(got.logits, unwindowed.logits);
      }
}

}  // namespace
}  // namespace duplex::runtime::functional
