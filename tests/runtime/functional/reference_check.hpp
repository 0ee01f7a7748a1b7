#pragma once
// Shared by the functional tests that run a model on a system and hold it to `duplex run --check`: their
// prompts, the run, and the check's verdict as an expectation.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "duplex/base/device_spec.hpp"
#include "duplex/runtime/functional/functional_executor.hpp"
#include "duplex/runtime/functional/run_session.hpp"

namespace duplex::runtime::functional::test {

inline const std::vector<std::vector<std::int32_t>> kPrompts = {
    {1, 5, 9, 42}, {7, 300, 12, 999, 3, 64}, {512}};
inline constexpr int kNewTokens = 8;

// kPrompts on `system` with `devices` devices (0: the system's own).
inline FunctionalResult run_on(const ModelWeights& w, const std::string& system, int devices) {
  FunctionalOptions o;
  o.devices = devices;
  return FunctionalExecutor(w, load_system(system), o).run(kPrompts, kNewTokens);
}

// `duplex run --check`'s verdict: tokens identical, or differing only at near ties the logit errors explain
// (routing near ties too), and every compared logit within the bound; every position compared.
inline void expect_matches_reference(const ModelWeights& w, const FunctionalResult& got) {
  const CheckResult check = check_run(w, kPrompts, got, kNewTokens);
  EXPECT_TRUE(check.passed()) << "max |logit err| " << check.max_abs_logit_err << " (bound "
                              << check.logit_bound << "), " << check.near_ties.size()
                              << " near ties, explained " << check.near_ties_explained() << ", "
                              << check.routing_ties.size() << " routing ties, explained "
                              << check.routing_ties_explained();
  EXPECT_EQ(check.compared_positions, static_cast<std::int64_t>(kPrompts.size()) * kNewTokens);
}

}  // namespace duplex::runtime::functional::test
