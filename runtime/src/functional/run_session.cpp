#include "duplex/runtime/functional/run_session.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/runtime/functional/safetensors.hpp"

namespace duplex::runtime::functional {

double logit_bound(const ReferenceOutput& reference) {
  double largest = 1.0;
  for (const auto& request : reference.logits)
    for (const auto& position : request)
      for (float v : position) largest = std::max(largest, static_cast<double>(std::fabs(v)));
  return kLogitRelativeBound * largest;
}

namespace {

// max_v |a[v] - b[v]| over two logit rows of one vocabulary; infinite where either holds a NaN or an
// infinity (a check never passes on them).
double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  DUPLEX_ASSERT(a.size() == b.size(), "logit rows of different vocabularies");
  double err = 0;
  for (std::size_t v = 0; v < a.size(); ++v) {
    if (!std::isfinite(a[v]) || !std::isfinite(b[v])) return std::numeric_limits<double>::infinity();
    err = std::max(err, std::fabs(static_cast<double>(a[v]) - b[v]));
  }
  return err;
}

}  // namespace

CheckResult compare(const FunctionalResult& result, const ReferenceOutput& reference) {
  DUPLEX_ASSERT(result.tokens.size() == reference.tokens.size(),
                "executor and reference ran different requests");
  CheckResult c;
  c.reference_tokens = reference.tokens;
  c.tokens_match = result.tokens == reference.tokens;
  c.logit_bound = logit_bound(reference);
  for (std::size_t r = 0; r < result.tokens.size(); ++r) {
    const auto& got = result.tokens[r];
    const auto& want = reference.tokens[r];
    for (std::size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
      c.max_abs_logit_err =
          std::max(c.max_abs_logit_err, max_abs_diff(result.logits[r][i], reference.logits[r][i]));
      ++c.compared_positions;
      if (got[i] != want[i]) break;  // later positions see different tokens: not comparable
    }
  }
  return c;
}

CheckResult check_run(const ModelWeights& weights, const std::vector<std::vector<std::int32_t>>& prompts,
                      const FunctionalResult& result, int max_new_tokens) {
  // W8A8 activation quantization: the reference quantizes the inputs the executor's xPU quantized, along the
  // executor's path (which inputs depends on each step's placement).
  const bool quantized = !result.quantization.empty();
  CheckResult c;
  if (!quantized) {
    c = compare(result, reference_generate(weights, prompts, max_new_tokens));
    if (c.passed()) return c;
  }
  // A routing near tie (a token's experts chosen differently within the logit error) makes the two sides
  // compute different experts from there on: the reference follows the executor's routing where explained.
  const ReferenceOutput on_path =
      reference_follow(weights, prompts, result.tokens, &result.routing, kLogitRelativeBound,
                       quantized ? &result.quantization : nullptr);
  c.routing_ties = on_path.routing_ties;
  c.on_path = true;
  if (quantized) {  // no comparison of the reference's own greedy run: its tokens are those on the path
    c.reference_tokens = on_path.tokens;
    c.tokens_match = on_path.tokens == result.tokens;
    c.followed_inputs = on_path.followed_inputs;
    c.max_input_err = on_path.max_input_err;
    c.input_err_ratio = on_path.input_err_ratio;
  }
  c.max_abs_logit_err = 0;
  c.compared_positions = 0;
  c.logit_bound = logit_bound(on_path);
  for (std::size_t r = 0; r < result.tokens.size(); ++r)
    for (std::size_t i = 0; i < result.tokens[r].size(); ++i) {
      const auto& b = on_path.logits[r][i];
      const double err = max_abs_diff(result.logits[r][i], b);
      c.max_abs_logit_err = std::max(c.max_abs_logit_err, err);
      ++c.compared_positions;
      const std::int32_t got = result.tokens[r][i], want = on_path.tokens[r][i];
      if (got != want)
        c.near_ties.push_back(
            {r, i, got, want,
             static_cast<double>(b[static_cast<std::size_t>(want)]) - b[static_cast<std::size_t>(got)], err});
    }
  DUPLEX_ASSERT(c.tokens_match || !c.near_ties.empty() || !c.routing_ties.empty(),
                "tokens differ from the greedy reference, yet match it on their own path");
  return c;
}

std::vector<std::int32_t> parse_prompt(const std::string& text) {
  std::vector<std::int32_t> ids;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const std::size_t comma = std::min(text.find(',', pos), text.size());
    const std::string item = text.substr(pos, comma - pos);
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < 0 || v > INT32_MAX)
      throw Error(fmt::format(
          "prompt \"{}\": \"{}\" is not a token id; expected comma-separated non-negative integers", text,
          item));
    ids.push_back(static_cast<std::int32_t>(v));
    pos = comma + 1;
  }
  return ids;
}

std::vector<std::vector<std::int32_t>> read_prompts(const std::string& path, std::vector<int>* lines) {
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("{}: cannot read the prompts file", path));
  std::vector<std::vector<std::int32_t>> prompts;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    const auto last = line.find_last_not_of(" \t");
    try {
      prompts.push_back(parse_prompt(line.substr(first, last - first + 1)));
      if (lines) lines->push_back(number);
    } catch (const Error& e) {
      throw Error(fmt::format("{}:{}: {}", path, number, e.what()));
    }
  }
  if (prompts.empty())
    throw Error(
        fmt::format("{}: no prompts; expected one line of comma-separated token ids per request", path));
  return prompts;
}

void write_routing_trace(const std::string& path, const FunctionalResult& r) {
  std::string csv = "step,layer,expert,count\n";
  for (std::size_t s = 0; s < r.steps.size(); ++s) {
    const auto& counts = r.steps[s].expert_counts;
    if (counts.empty()) throw Error(fmt::format("{}: the run recorded no routing (a dense model?)", path));
    for (std::size_t l = 0; l < counts.size(); ++l)
      for (std::size_t e = 0; e < counts[l].size(); ++e)
        csv += fmt::format("{},{},{},{}\n", s, l, e, counts[l][e]);
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << csv;
    if (!out) throw Error(fmt::format("{}: cannot write the routing trace", path));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw Error(fmt::format("{}: cannot write the routing trace ({})", path, ec.message()));
  }
}

RunReport run_functional(const RunOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  RunReport rep;
  ModelWeights weights =
      o.weights.empty() ? random_weights(compiler::load_model(o.model), o.seed) : load_checkpoint(o.weights);
  // A HF config.json with random weights: its numerics too (a checkpoint's come with it).
  if (o.weights.empty() && o.model.ends_with(".json")) weights.numerics = config_numerics(o.model);
  const SystemSpec system = read_system(ConfigNode::load(o.system, "systems", o.system_overrides));
  if (!o.routing_trace.empty() && !weights.spec.is_moe())
    throw Error(
        fmt::format("--routing-trace {}: model {} is dense; expected an MoE model (it has no routing)",
                    o.routing_trace, weights.spec.name));
  if (!o.routing_trace.empty()) {  // a folder that is not there fails now, not after the run
    const std::filesystem::path trace(o.routing_trace), parent = trace.parent_path();
    if (!parent.empty() && !std::filesystem::is_directory(parent))
      throw Error(
          fmt::format("{}: cannot write the routing trace (no folder {})", o.routing_trace, parent.string()));
    if (std::filesystem::exists(trace) && !std::filesystem::is_regular_file(trace))
      throw Error(
          fmt::format("{}: cannot write the routing trace there (not a regular file)", o.routing_trace));
  }
  rep.model = weights.spec.name;
  rep.attention = weights.spec.window_note();
  rep.system = system.name;
  rep.weights = weights.source;
  rep.activations =
      describe_activation_quant(weights.spec, o.executor.quantize_activations, !weights.input_scales.empty());
  rep.llm_int8_outlier_columns = weights.spec.llm_int8_outlier_columns;
  rep.with_logits = o.logits;
  for (int l = 0; l < weights.spec.layers; ++l)
    if (weights.spec.is_moe_layer(l)) rep.moe_layers.push_back(l);
  rep.experts = weights.spec.experts;
  // Speculative decoding's draft model: random weights (from --draft-seed, else the target's seed: a draft
  // preset equal to the model then has the target's weights) or a checkpoint.
  std::optional<ModelWeights> draft;
  if (!o.draft.empty() && !o.draft_weights.empty())
    throw Error(fmt::format("--draft {} and --draft-weights {} name two drafts; expected one", o.draft,
                            o.draft_weights));
  FunctionalOptions executor = o.executor;
  const bool ngram = o.draft == "ngram";
  if ((o.prompt_lookup_min || o.prompt_lookup_max) && !ngram)
    throw Error(
        fmt::format("--prompt-lookup-min / --prompt-lookup-max size n-gram drafts; expected --draft "
                    "ngram, got {}",
                    o.draft.empty() ? "no --draft" : "--draft " + o.draft));
  if (o.draft_seed && (o.draft.empty() || ngram || !o.draft_weights.empty()))
    throw Error(fmt::format("--draft-seed {} seeds a draft model's random weights; expected --draft MODEL",
                            *o.draft_seed));
  if (ngram) {  // vLLM's defaults
    executor.ngram_min = o.prompt_lookup_min.value_or(o.prompt_lookup_max.value_or(5));
    executor.ngram_max = o.prompt_lookup_max.value_or(o.prompt_lookup_min.value_or(5));
    rep.draft = "ngram";
  } else if (!o.draft.empty() || !o.draft_weights.empty()) {
    if (o.draft == "mtp")
      throw Error(
          "--draft mtp: functional emulation drafts with a model (a preset, a file or --draft-weights) or "
          "ngram; mtp drafts are the serving simulator's");
    draft = o.draft_weights.empty()
                ? random_weights(compiler::load_model(o.draft), o.draft_seed.value_or(o.seed))
                : load_checkpoint(o.draft_weights);
    if (o.draft_weights.empty() && o.draft.ends_with(".json")) draft->numerics = config_numerics(o.draft);
    rep.draft = draft->spec.name;
  }
  executor.draft = draft ? &*draft : nullptr;
  if (!o.prompts_file.empty())  // the file's line names a token the model does not have
    for (std::size_t r = 0; r < o.prompts.size() && r < o.prompt_lines.size(); ++r)
      for (std::size_t i = 0; i < o.prompts[r].size(); ++i)
        if (o.prompts[r][i] < 0 || o.prompts[r][i] >= weights.spec.vocab)
          throw Error(fmt::format("{}:{}: token {}: id {} is outside model {}'s vocabulary [0, {})",
                                  o.prompts_file, o.prompt_lines[r], i, o.prompts[r][i], weights.spec.name,
                                  weights.spec.vocab));
  FunctionalExecutor exec(weights, system, executor);
  rep.result = exec.run(o.prompts, o.max_new_tokens);
  if (o.check) rep.check = check_run(weights, o.prompts, rep.result, o.max_new_tokens);
  if (!o.routing_trace.empty()) write_routing_trace(o.routing_trace, rep.result);
  // After the run: a run refused (a bad prompt, a setting) leaves no checkpoint behind.
  if (!o.save_weights.empty()) write_checkpoint(o.save_weights, weights, o.save_shards);
  rep.host_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return rep;
}

namespace {

// [request][position][layer] -> [{gemm, expert (experts only), slices, scales (per-tensor ones only),
// outlier_columns (LLM.int8()'s, per call), inputs (the executor's input vectors before their quantization,
// in GEMM order)}].
nlohmann::json quantization_json(const ExecutedQuantization& q) {
  nlohmann::json requests = nlohmann::json::array();
  for (const auto& request : q) {
    nlohmann::json positions = nlohmann::json::array();
    for (const auto& position : request) {
      nlohmann::json layers = nlohmann::json::array();
      for (const auto& layer : position) {
        nlohmann::json inputs = nlohmann::json::array();
        for (const QuantizedInput& in : layer) {
          nlohmann::json e = {{"gemm", quantized_gemm_name(in.gemm)}, {"slices", in.slices}};
          if (in.gemm == QuantizedGemm::kExpert) e["expert"] = in.expert;
          if (!in.scales.empty()) e["scales"] = in.scales;
          if (!in.outliers.empty()) e["outlier_columns"] = in.outliers;
          nlohmann::json values = nlohmann::json::array();
          for (const std::vector<std::uint16_t>& v : in.inputs) {
            std::vector<float> f(v.size());
            for (std::size_t i = 0; i < v.size(); ++i) f[i] = half_bits_to_float(v[i]);
            values.push_back(std::move(f));
          }
          e["inputs"] = std::move(values);
          inputs.push_back(std::move(e));
        }
        layers.push_back(std::move(inputs));
      }
      positions.push_back(std::move(layers));
    }
    requests.push_back(std::move(positions));
  }
  return requests;
}

}  // namespace

nlohmann::json RunReport::to_json() const {
  const FunctionalResult& r = result;
  nlohmann::json steps = nlohmann::json::array();
  std::vector<nlohmann::json> coprocessed;
  for (const StepRecord& s : r.steps) {
    steps.push_back({{"pool", s.pool},
                     {"step", s.step},
                     {"requests", s.requests},
                     {"prefill_tokens", s.prefill_tokens},
                     {"decode_tokens", s.decode_tokens},
                     {"time_us", to_us(s.time)},
                     {"xpu_busy_us", to_us(s.xpu_busy)},
                     {"pim_busy_us", to_us(s.pim_busy)},
                     {"link_busy_us", to_us(s.link_busy)},
                     {"coprocessed_expert_layers", s.coprocessed_expert_layers}});
    if (!draft.empty()) steps.back()["draft_passes"] = s.draft_passes;  // timed before the verification
    steps.back()["micro_batches"] = s.micro_batches;
    for (int l : s.coprocessed_expert_layers) coprocessed.push_back({{"step", s.step}, {"layer", l}});
  }
  nlohmann::json migrations = nlohmann::json::array();
  for (const KvMigration& m : r.kv_migrations)
    migrations.push_back({{"request", m.request},
                          {"tokens", m.tokens},
                          {"bytes", m.bytes},
                          {"start_us", to_us(m.start)},
                          {"time_us", to_us(m.time)},
                          {"energy_j", m.energy.si()}});
  nlohmann::json in_device = nlohmann::json::array();
  for (const InDeviceKvMigration& m : r.in_device_kv_migrations)
    in_device.push_back({{"step", m.step}, {"request", m.request}, {"tokens", m.tokens}, {"bytes", m.bytes}});
  nlohmann::json j = {
      {"model", model},
      {"attention", attention},
      {"activations", activations},
      {"quantized_inputs", quantized_inputs(r.quantization)},
      {"llm_int8_outlier_columns", r.outlier_columns.calls > 0
                                       ? nlohmann::json{{"calls", r.outlier_columns.calls},
                                                        {"columns", r.outlier_columns.columns},
                                                        {"mean", r.outlier_columns.mean()}}
                                       : nlohmann::json(nullptr)},
      {"system", system},
      {"weights", weights},
      {"xpu", r.xpu_backend},
      {"pim", r.pim_unit},
      {"devices", r.devices},
      {"layout", r.layout},
      {"device_classes", r.device_classes},
      {"device_op_counts", r.device_op_counts},
      {"kv_migrations", migrations},
      {"kv_migrated_bytes", r.kv_migrated_bytes()},
      {"in_device_kv_migrations", in_device},
      {"in_device_kv_migrated_bytes", r.in_device_kv_migrated_bytes()},
      {"tokens", r.tokens},
      {"placement", {{"ops_per_unit", r.ops_per_unit()}, {"ops_per_kind", r.ops_per_kind_and_unit()}}},
      {"expert_coprocessing", coprocessed},
      {"simulated_time_us", to_us(r.time)},
      {"energy_j", r.energy.si()},
      {"energy_breakdown_j", r.energy_breakdown},
      {"steps", steps},
      {"host_seconds", host_seconds}};
  if (r.pim_cycles) j["pim_datapath_cycles"] = *r.pim_cycles;
  if (r.prefix_query_tokens > 0)
    j["prefix_cache"] = {{"query_tokens", r.prefix_query_tokens}, {"hit_tokens", r.prefix_hit_tokens}};
  if (!draft.empty())
    j["speculative"] = {{"draft", draft},
                        {"verify_steps", r.verify_steps},
                        {"draft_tokens", r.draft_tokens},
                        {"accepted_tokens", r.accepted_tokens},
                        {"acceptance_by_position", r.acceptance_by_position()}};
  if (with_logits) {
    j["logits"] = r.logits;
    j["quantization"] = quantization_json(r.quantization);
  }
  if (!moe_layers.empty()) {
    // Each token's experts per MoE layer ([request][position][MoE layer]), and their load per layer.
    nlohmann::json routed = nlohmann::json::array();
    for (const auto& request : r.routing) {
      nlohmann::json positions = nlohmann::json::array();
      for (const auto& position : request) {
        nlohmann::json layers = nlohmann::json::array();
        for (const RoutedToken& t : position) layers.push_back(t.experts);
        positions.push_back(layers);
      }
      routed.push_back(positions);
    }
    j["routing"] = routed;
    j["expert_load"] = {{"layers", moe_layers}, {"tokens", expert_load(r.routing, experts)}};
  }
  if (check) {
    j["reference_tokens"] = check->reference_tokens;
    j["tokens_match"] = check->tokens_match;
    j["max_abs_logit_err"] = check->max_abs_logit_err;
    j["logit_bound"] = check->logit_bound;
    j["quantized_inputs_followed"] = {{"inputs", check->followed_inputs},
                                      {"max_abs_err", check->max_input_err},
                                      {"err_to_bound", check->input_err_ratio}};
    nlohmann::json ties = nlohmann::json::array();
    for (const NearTie& t : check->near_ties)
      ties.push_back({{"request", t.request},
                      {"position", t.position},
                      {"token", t.token},
                      {"reference_token", t.reference_token},
                      {"margin", t.margin},
                      {"logit_err", t.logit_err},
                      {"explained", t.explained()}});
    j["near_ties"] = ties;
    nlohmann::json routing = nlohmann::json::array();
    for (const RoutingTie& t : check->routing_ties)
      routing.push_back({{"request", t.request},
                         {"position", t.position},
                         {"layer", t.layer},
                         {"experts", t.experts},
                         {"reference_experts", t.reference_experts},
                         {"mask_only", t.mask_only},
                         {"router_logit_err", t.router_logit_err},
                         {"bound", t.bound},
                         {"consistent", t.consistent},
                         {"explained", t.explained()}});
    j["routing_ties"] = routing;
    j["check_passed"] = check->passed();
  }
  return j;
}

std::string RunReport::to_text() const {
  const FunctionalResult& r = result;
  std::string s =
      fmt::format("{} on {} ({}; xPU: {}; PIM: {})\n", model, system, weights, r.xpu_backend, r.pim_unit);
  s += fmt::format("layout: {}\n", r.layout);
  if (!attention.empty()) s += fmt::format("attention: {}\n", attention);
  if (!activations.empty())
    s += fmt::format("activations: {}; {} GEMM input vectors quantized\n", activations,
                     quantized_inputs(r.quantization));
  if (r.outlier_columns.calls > 0)
    s += fmt::format(
        "LLM.int8() outlier columns: {:.2f} per GEMM input ({} in {} quantize calls; timing charges "
        "llm_int8_outlier_columns = {} per call)\n",
        r.outlier_columns.mean(), r.outlier_columns.columns, r.outlier_columns.calls,
        llm_int8_outlier_columns);
  for (std::size_t i = 0; i < r.tokens.size(); ++i)
    s += fmt::format("  request {}: {}\n", i, fmt::join(r.tokens[i], ","));
  s += "placement (ops per unit):";
  for (const auto& [unit, n] : r.ops_per_unit()) s += fmt::format(" {} {}", unit, n);
  s += "\n";
  for (const auto& [kind, units] : r.ops_per_kind_and_unit()) {
    s += fmt::format("  {:<18}", kind);
    for (const auto& [unit, n] : units) s += fmt::format(" {} {}", unit, n);
    s += "\n";
  }
  std::int64_t coprocessed = 0;
  for (const StepRecord& st : r.steps)
    coprocessed += static_cast<std::int64_t>(st.coprocessed_expert_layers.size());
  if (!r.kv_migrations.empty())
    s += fmt::format("K/V migrated prefill -> decode pool: {} requests, {:.0f} bytes\n",
                     r.kv_migrations.size(), r.kv_migrated_bytes());
  if (!r.in_device_kv_migrations.empty())
    s += fmt::format("K/V migrated prefill space -> KV spaces (in device): {} requests, {:.0f} bytes\n",
                     r.in_device_kv_migrations.size(), r.in_device_kv_migrated_bytes());
  if (r.prefix_query_tokens > 0)
    s += fmt::format(
        "prefix cache: {} of {} prompt tokens taken from the cache ({:.1f}%)\n", r.prefix_hit_tokens,
        r.prefix_query_tokens,
        100.0 * static_cast<double>(r.prefix_hit_tokens) / static_cast<double>(r.prefix_query_tokens));
  if (!draft.empty())
    s += fmt::format("speculative: draft {}, {} of {} draft tokens accepted ({:.1f}%) in {} verifications\n",
                     draft, r.accepted_tokens, r.draft_tokens,
                     r.draft_tokens > 0 ? 100.0 * static_cast<double>(r.accepted_tokens) /
                                              static_cast<double>(r.draft_tokens)
                                        : 0.0,
                     r.verify_steps);
  if (!r.drafts_reached.empty()) {
    std::string rates;
    for (double p : r.acceptance_by_position()) rates += fmt::format("{}{:.3f}", rates.empty() ? "" : ",", p);
    s += fmt::format("  acceptance by draft position (duplex simulate --acceptance): {}\n", rates);
  }
  const auto overlapped =
      std::count_if(r.steps.begin(), r.steps.end(), [](const StepRecord& st) { return st.micro_batches; });
  s += fmt::format("steps {}{}, expert co-processing in {} (step, layer) pairs\n", r.steps.size(),
                   overlapped > 0 ? fmt::format(" ({} as two micro-batches)", overlapped) : "", coprocessed);
  // Tokens per expert in each MoE layer, and the busiest expert against the mean (1: balanced).
  const std::vector<std::vector<std::int64_t>> load = expert_load(r.routing, experts);
  for (std::size_t i = 0; i < load.size() && i < moe_layers.size(); ++i) {
    std::int64_t total = 0, most = 0;
    for (std::int64_t n : load[i]) {
      total += n;
      most = std::max(most, n);
    }
    s += fmt::format(
        "expert load, layer {}: {} (busiest / mean {:.2f})\n", moe_layers[i], fmt::join(load[i], ","),
        total > 0
            ? static_cast<double>(most) * static_cast<double>(load[i].size()) / static_cast<double>(total)
            : 0.0);
  }
  s += fmt::format("simulated time {:.3f} us, energy {:.6g} J, host time {:.2f} s\n", to_us(r.time),
                   r.energy.si(), host_seconds);
  if (check) {
    const char* tokens =
        check->tokens_match ? "identical"
        : check->near_ties_explained()
            ? (check->near_ties.empty()
                   ? "follow the reference on their own path (after routing near ties)"
                   : "differ only at near ties (the reference's margin within 2 x the logit error there)")
            : "DIFFER";
    s += fmt::format("check: tokens {}, max |logit err| {:.3g} (bound {:.3g}) over {} positions{}: {}\n",
                     tokens, check->max_abs_logit_err, check->logit_bound, check->compared_positions,
                     check->on_path ? " of the executor's path" : "", check->passed() ? "PASS" : "FAIL");
    if (check->followed_inputs > 0)
      s += fmt::format(
          "  quantized GEMM inputs followed: {}, max |input err| {:.3g} ({:.2f} of its bound){}\n",
          check->followed_inputs, check->max_input_err, check->input_err_ratio,
          check->input_err_ratio <= 1.0 ? "" : ": BEYOND THE BOUND");
    for (const NearTie& t : check->near_ties)
      s += fmt::format(
          "  request {} position {}: token {} where the reference picks {} (margin {:.3g}, logit error "
          "{:.3g}: {})\n",
          t.request, t.position, t.token, t.reference_token, t.margin, t.logit_err,
          t.explained() ? "a near tie" : "NOT explained by the logit error");
    for (const RoutingTie& t : check->routing_ties)
      s += fmt::format(
          "  request {} position {} layer {}: experts {} where the reference picks {}{} (router logit error "
          "{:.3g}, bound {:.3g}; the reference's router on the executor's logits picks {}: {})\n",
          t.request, t.position, t.layer, fmt::join(t.experts, ","), fmt::join(t.reference_experts, ","),
          t.mask_only ? " with another sparsemixer mask" : "", t.router_logit_err, t.bound,
          t.consistent ? "the executor's" : "others",
          t.explained() ? "a routing near tie, followed" : "NOT explained");
    if (!check->tokens_match)
      for (std::size_t i = 0; i < check->reference_tokens.size(); ++i)
        s += fmt::format("  reference {}: {}\n", i, fmt::join(check->reference_tokens[i], ","));
  }
  return s;
}

}  // namespace duplex::runtime::functional
