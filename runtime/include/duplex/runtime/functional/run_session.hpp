#pragma once
// `duplex run` as a library call: load the model and its weights, run the prompts on the functional executor,
// and with `check` also the plain CPU reference (reference_forward.hpp), then compare.
//
// The check passes when, for every request, the greedy tokens are identical and the largest absolute logit
// difference over every generated position is within `logit_bound(...)` (see there).
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "duplex/base/config.hpp"
#include "duplex/runtime/functional/functional_executor.hpp"
#include "duplex/runtime/functional/reference_forward.hpp"

namespace duplex::runtime::functional {

struct RunOptions {
  std::string model = "tiny-moe";  // preset or file; ignored when `weights` is a checkpoint
  std::string system = "duplex-pe";
  std::vector<ConfigOverride> system_overrides;  // applied to the system's config, in order (--set)
  std::vector<std::vector<std::int32_t>> prompts;  // one request each
  // Where the prompts came from (read_prompts): a token outside the model's vocabulary is named by file and
  // line. Empty: given on the command line.
  std::string prompts_file;
  std::vector<int> prompt_lines;
  int max_new_tokens = 32;
  std::string weights;  // empty: random from `seed`; else a checkpoint (safetensors + config.json)
  std::uint64_t seed = 1;
  // Non-empty: the weights (random or loaded) are written there as a HF checkpoint (write_checkpoint), in
  // `save_shards` safetensors files, once the run has succeeded.
  std::string save_weights;
  int save_shards = 1;
  bool logits = false;  // the JSON report holds every generated token's logits ([request][token][vocab])
  // Non-empty (MoE models): each step's routing written there after the run as CSV step,layer,expert,count
  // (step: the run's step index; layer: the MoE layer index), the schema of a workload's routing trace
  // (configs/workloads/README.md), so that duplex simulate can replay the routing this model chose.
  std::string routing_trace;
  bool check = false;
  // Speculative decoding (executor.speculative_tokens >= 1): the draft model, a preset or file with random
  // weights from `draft_seed` (unset: `seed`), or the checkpoint `draft_weights` (not both); or "ngram":
  // n-gram drafts of prompt_lookup_min .. _max tokens (vLLM's defaults: both 5 when neither is given, one
  // given sets the other).
  std::string draft;
  std::string draft_weights;
  std::optional<std::uint64_t> draft_seed;
  std::optional<int> prompt_lookup_min, prompt_lookup_max;
  FunctionalOptions executor;  // its `draft` and ngram_* are set from the above
};

// Writes r's per-step expert counts as a routing trace (RunOptions::routing_trace) to `path`: whole or not at
// all (a temporary file renamed into place); duplex::Error naming the path for a dense model or a write
// failure.
void write_routing_trace(const std::string& path, const FunctionalResult& r);

// A position where the executor's greedy token is not the reference's choice given the same preceding tokens.
struct NearTie {
  std::size_t request = 0, position = 0;
  std::int32_t token = 0, reference_token = 0;
  double margin = 0;     // reference logit of reference_token minus that of token (>= 0)
  double logit_err = 0;  // largest |executor logit - reference logit| at this position
  // The flip is what the logit errors allow: the executor's token can outrank the reference's choice only if
  // margin <= err(reference_token) + err(token) <= 2 x logit_err.
  bool explained() const { return margin <= 2.0 * logit_err; }
};

struct CheckResult {
  std::vector<std::vector<std::int32_t>> reference_tokens;  // the reference's own greedy run
  bool tokens_match = false;
  // Only from check_run, when tokens differ: every position where the executor's token differs from the
  // reference's choice on the executor's path (the reference fed the executor's tokens); empty otherwise.
  std::vector<NearTie> near_ties;
  // Over the compared positions: with identical tokens every position; when tokens differ, compare() stops at
  // a request's first difference and check_run compares every position on the executor's path.
  double max_abs_logit_err = 0;
  double logit_bound = 0;
  std::int64_t compared_positions = 0;
  // Only from check_run, when compare() does not pass: every token whose executed experts differ from the
  // reference's choice on the executor's path (routing_record.hpp); the reference followed the explained
  // ones.
  std::vector<RoutingTie> routing_ties;
  bool routing_ties_explained() const {
    for (const RoutingTie& t : routing_ties)
      if (!t.explained()) return false;
    return true;
  }
  bool on_path = false;  // check_run compared every position on the executor's path (reference_follow)
  // W8A8 activation quantization: the GEMM inputs the reference followed (ReferenceOutput::followed_inputs),
  // the largest |executor input - reference input| and its largest ratio to the bound (<= 1 to pass).
  std::int64_t followed_inputs = 0;
  double max_input_err = 0, input_err_ratio = 0;
  // On the executor's path, every differing token is an explained near tie (false before that comparison).
  bool near_ties_explained() const {
    if (!on_path) return false;
    for (const NearTie& t : near_ties)
      if (!t.explained()) return false;
    return true;
  }
  // Logits within the bound, tokens identical or differing only at explained near ties, and routing
  // identical or differing only at explained routing near ties.
  bool passed() const {
    return (tokens_match || near_ties_explained()) && routing_ties_explained() &&
           std::isfinite(max_abs_logit_err) && max_abs_logit_err <= logit_bound && input_err_ratio <= 1.0;
  }
};

struct RunReport {
  std::string model, system, weights;
  std::string attention;  // ModelSpec::window_note(): "" without a sliding window
  std::string draft;      // speculative decoding's draft model; empty: none
  // W8A8 activation quantization (activation_quant.hpp): what the run did, "" for a model without W8A8
  // matrices.
  std::string activations;
  // LLM.int8(): the model's llm_int8_outlier_columns, which timing charges (set beside the measured count).
  double llm_int8_outlier_columns = 0;
  FunctionalResult result;
  std::optional<CheckResult> check;
  double host_seconds = 0;  // wall time of the emulation (not simulated time)
  bool with_logits = false;  // to_json() includes "logits" (RunOptions::logits)
  std::vector<int> moe_layers;  // the model's MoE layers (expert_load's rows); empty for a dense model
  int experts = 0;

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

// Executor vs the reference's greedy run; positions after a request's first differing token are not compared.
CheckResult compare(const FunctionalResult& result, const ReferenceOutput& reference);

// `duplex run --check`: compare() when it passes; otherwise the reference is also run on the executor's path
// (reference_follow, with the executor's routing) so that every position is compared, each differing token is
// recorded as a NearTie and each differing routing as a RoutingTie (the check passes only if all are
// explained and the logits stay within the bound).
CheckResult check_run(const ModelWeights& weights, const std::vector<std::vector<std::int32_t>>& prompts,
                      const FunctionalResult& result, int max_new_tokens);

// Throws duplex::Error for bad options, models, systems or weight files.
RunReport run_functional(const RunOptions& options);

// "1,5,9,42" -> {1, 5, 9, 42}; duplex::Error naming the text for anything else.
std::vector<std::int32_t> parse_prompt(const std::string& text);
// A prompts file: one prompt per line in parse_prompt's form (blank lines and lines starting with '#'
// skipped). duplex::Error naming the file (and the line) when it cannot be read, a line is not a prompt, or
// it holds none. `lines`, when given, receives each prompt's line number.
std::vector<std::vector<std::int32_t>> read_prompts(const std::string& path,
                                                    std::vector<int>* lines = nullptr);

}  // namespace duplex::runtime::functional
