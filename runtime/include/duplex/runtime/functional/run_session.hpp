#pragma once
// `duplex run` as a library call: load the model and its weights, run the prompts on the functional executor,
// and with `check` also the plain CPU reference (reference_forward.hpp), then compare.
//
// The check passes when, for every request, the greedy tokens are identical and the largest absolute logit
// difference over every generated position is within `logit_bound(...)` (see there).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

#include "duplex/runtime/functional/functional_executor.hpp"
#include "duplex/runtime/functional/reference_forward.hpp"

namespace duplex::runtime::functional {

struct RunOptions {
  std::string model = "tiny-moe";   // preset or file; ignored when `weights` is a checkpoint
  std::string system = "duplex-pe";
  std::vector<std::vector<std::int32_t>> prompts;  // one request each
  int max_new_tokens = 32;
  std::string weights;              // empty: random from `seed`; else a checkpoint (safetensors + config.json)
  std::uint64_t seed = 1;
  bool check = false;
  FunctionalOptions executor;
};

struct CheckResult {
  std::vector<std::vector<std::int32_t>> reference_tokens;
  bool tokens_match = false;
  // Over every position where executor and reference had generated the same tokens so far (the logits at a
  // position depend only on the tokens before it).
  double max_abs_logit_err = 0;
  double logit_bound = 0;
  std::int64_t compared_positions = 0;
  bool passed() const { return tokens_match && max_abs_logit_err <= logit_bound; }
};

struct RunReport {
  std::string model, system, weights;
  FunctionalResult result;
  std::optional<CheckResult> check;
  double host_seconds = 0;  // wall time of the emulation (not simulated time)

  nlohmann::json to_json() const;
  std::string to_text() const;
};

// The stated bound on |executor logit - reference logit|:
//   bound = kLogitRelativeBound x max(1, largest |reference logit|),  kLogitRelativeBound = 2^-6.
// Why: both sides store every activation in FP16 (unit roundoff u = 2^-11) and accumulate in FP32 or better,
// so they differ by the order of FP32 sums (a 1-ulp FP16 flip where a sum lands near a rounding boundary) and
// by the Logic-PIM units' approximations (softmax / SiLU within 1 FP16 ulp, probabilities rounded to FP16,
// the FP16 attention scale). Each op adds O(u) relative error to its output and the residual stream passes
// ~10 ops per layer; 2^-6 = 32 u leaves headroom for 2-4 layers without hiding a real bug (a wrong expert,
// a wrong KV position or a dropped residual moves logits by O(1)).
inline constexpr double kLogitRelativeBound = 1.0 / 64.0;
double logit_bound(const ReferenceOutput& reference);

CheckResult compare(const FunctionalResult& result, const ReferenceOutput& reference);

// Throws duplex::Error for bad options, models, systems or weight files.
RunReport run_functional(const RunOptions& options);

// "1,5,9,42" -> {1, 5, 9, 42}; duplex::Error naming the text for anything else.
std::vector<std::int32_t> parse_prompt(const std::string& text);

}  // namespace duplex::runtime::functional
