// `duplex run`: functional emulation of a (small) model on a system: real tensors on every device of its
// parallel layout (--devices), xPU ops on the kernels, PIM ops on the Logic-PIM datapath (or, with --pim-path
// device, on the SystemC device through the C driver), continuous batching over the prompts. Prints the
// generated tokens per request, the placement summary (ops per unit), simulated time and energy; `--check`
// also runs the plain CPU reference and compares (identical greedy tokens or explained near ties, logits within
// the stated bound), failing the command otherwise. --trace writes device 0's RTL datapath waveform.
#include <fmt/format.h>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/functional/device_pim_unit.hpp"
#include "duplex/runtime/functional/run_session.hpp"
#include "system_overrides.hpp"

namespace duplex::host {
namespace {

struct RunCliOptions {
  runtime::functional::RunOptions run;
  std::vector<std::string> sets;  // --set KEY=VALUE overrides of the system
  std::vector<std::string> prompts = {"1,5,9,42"};
  std::string prompts_file;  // --prompts: replaces --prompt
  std::string pim_path = "datapath";
  std::string activation_quant = "on";
  bool json = false;
};

void run_run(RunCliOptions& o) {
  o.run.system_overrides = parse_sets(o.sets);
  o.run.prompts.clear();
  if (!o.prompts_file.empty()) {
    o.run.prompts = runtime::functional::read_prompts(o.prompts_file, &o.run.prompt_lines);
    o.run.prompts_file = o.prompts_file;
  } else {
    for (const auto& p : o.prompts) o.run.prompts.push_back(runtime::functional::parse_prompt(p));
  }
  o.run.executor.quantize_activations = o.activation_quant == "on";
  if (o.pim_path == "device") o.run.executor.pim_unit_factory = runtime::functional::make_device_pim_unit;
  const runtime::functional::RunReport report = runtime::functional::run_functional(o.run);
  std::fputs(o.json ? (report.to_json().dump(2) + "\n").c_str() : report.to_text().c_str(), stdout);
  if (report.check && !report.check->passed())
    throw Error(fmt::format("--check failed: tokens {}, max |logit err| {:.3g} (bound {:.3g})",
                            report.check->tokens_match            ? "identical"
                            : report.check->near_ties_explained() ? "differ at near ties"
                                                                  : "differ",
                            report.check->max_abs_logit_err, report.check->logit_bound));
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto o = std::make_shared<RunCliOptions>();
  CLI::App* c =
      app.add_subcommand("run", "Functional emulation: run a small model on real tensors, check tokens");
  c->add_option("--model", o->run.model,
                "Model preset or file (YAML or HF config.json); ignored with --weights")
      ->capture_default_str();
  c->add_option("--system", o->run.system, "System preset or file")->capture_default_str();
  add_set_option(c, o->sets);
  auto* prompt = c->add_option("--prompt", o->prompts,
                               "Comma-separated token ids; repeat for several requests (batched)")
                     ->capture_default_str();
  c->add_option("--prompts", o->prompts_file,
                "File of prompts, one per line as --prompt takes them ('#' lines skipped); replaces --prompt")
      ->excludes(prompt);
  c->add_option("--max-new-tokens", o->run.max_new_tokens, "Tokens to generate per request")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--weights", o->run.weights,
                "Checkpoint: a directory with config.json and model.safetensors or a sharded "
                "model.safetensors.index.json (or that file); default: random weights from --seed");
  c->add_option("--seed", o->run.seed, "Seed of the random weights")->capture_default_str()->check(kUint64);
  c->add_option(
      "--save-weights", o->run.save_weights,
      "Also write the weights as a HuggingFace checkpoint directory (config.json + safetensors), e.g. "
      "to compare with transformers");
  c->add_option("--save-shards", o->run.save_shards,
                "Safetensors files --save-weights writes (> 1: model-0000i-of-0000n + index.json)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option(
      "--trace", o->run.executor.rtl_trace,
      "Waveform of device 0's Logic-PIM RTL datapath: FILE.vcd (FILE.fst in a DUPLEX_RTL_TRACE_FST build); "
      "needs the rtl datapath");
  c->add_option("--datapath", o->run.executor.datapath, "PIM datapath: golden | rtl (default: the system's)")
      ->check(CLI::IsMember({"golden", "rtl"}));
  c->add_option(
       "--pim-path", o->pim_path,
       "PIM ops on: datapath (the Logic-PIM datapath, directly) | device (the SystemC device via the driver)")
      ->capture_default_str()
      ->check(CLI::IsMember({"datapath", "device"}));
  c->add_option("--devices", o->run.executor.devices,
                "Devices to run on, in the compiler's parallel layout (0: the system's for the model); more than "
                "links.devices_per_node make data-parallel nodes, each serving its own requests")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  c->add_option("--max-batch", o->run.executor.max_batch, "Requests running at once")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--max-tokens-per-step", o->run.executor.max_tokens_per_step,
                "Token budget per step (0: none)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  c->add_flag("--chunked-prefill", o->run.executor.chunked_prefill,
              "Split prefills to fill the token budget (Sarathi-Serve)");
  c->add_option("--kv-block", o->run.executor.kv_block_tokens, "Tokens per paged-KV block")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--kv-blocks", o->run.executor.kv_blocks,
                "KV blocks per device: a data-parallel node's K/V memory (0: enough for all requests)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  c->add_option(
       "--activation-quant", o->activation_quant,
       "W8A8 models (FP8 / INT8 GEMMs): on, the xPU quantizes their inputs as the serving kernels do "
       "(the Logic-PIM's take FP16); off, FP16 inputs everywhere (weight-only)")
      ->capture_default_str()
      ->check(CLI::IsMember({"on", "off"}));
  c->add_flag("--prefix-caching", o->run.executor.prefix_caching,
              "Reuse the cached K/V of whole --kv-block blocks a prompt shares with earlier prompts (each "
              "data-parallel node its own)");
  c->add_option(
       "--speculative", o->run.executor.speculative_tokens,
       "Speculative decoding: draft tokens each decoding request verifies per step, proposed greedily by "
       "--draft (0: off)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  c->add_option("--draft", o->run.draft,
                "Draft model (preset or file) with random weights from --draft-seed, for --speculative; or "
                "ngram (prompt lookup on the host)");
  c->add_option("--prompt-lookup-min", o->run.prompt_lookup_min,
                "--draft ngram: shortest suffix matched (default 5, or --prompt-lookup-max)")
      ->check(CLI::PositiveNumber);
  c->add_option("--prompt-lookup-max", o->run.prompt_lookup_max,
                "--draft ngram: longest suffix matched (default 5, or --prompt-lookup-min)")
      ->check(CLI::PositiveNumber);
  c->add_option("--draft-weights", o->run.draft_weights,
                "Draft model checkpoint (as --weights), for --speculative; instead of --draft");
  c->add_option(
       "--draft-seed", o->run.draft_seed,
       "Seed of the draft's random weights (default: --seed, so --draft equal to --model drafts with "
       "the model's own weights)")
      ->check(kUint64);
  c->add_flag("--check", o->run.check, "Also run the plain CPU reference and compare tokens and logits");
  c->add_option("--routing-trace", o->run.routing_trace,
                "MoE: write each step's expert counts there as CSV (step,layer,expert,count), a workload "
                "routing trace for duplex simulate");
  c->add_flag(
      "--json", o->json,
      "Print JSON (tokens, reference_tokens, max_abs_logit_err, placement, time, energy; MoE: routing, "
      "expert_load)");
  c->add_flag("--logits", o->run.logits,
              "With --json: also every generated token's logits (\"logits\": [request][token][vocab])");
  c->callback([o] { run_run(*o); });
}

}  // namespace duplex::host
