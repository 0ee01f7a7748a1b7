// `duplex compile`: lower a model + batch to the op graph of one device, place every op, print the table.
#include <cstdio>
#include <fmt/format.h>
#include <string>

#include "commands.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/compiler/micro_batches.hpp"
#include "duplex/compiler/report.hpp"
#include "duplex/runtime/scheduler/scheduler_config.hpp"
#include "routing_option.hpp"
#include "system_overrides.hpp"

namespace duplex::host {
namespace {

struct CompileOptions {
  std::string model = "mixtral-8x7b";
  std::string system = "duplex";
  std::vector<std::string> sets;  // --set KEY=VALUE overrides of the system
  std::int64_t batch = 64;
  std::int64_t context = 2048;
  std::int64_t prefill_tokens = 0;
  int drafts = 0;  // speculative decoding: draft tokens each decoding request verifies (0: plain decodes)
  int devices = 0;
  std::string routing = "uniform";
  int expert_group = -1;  // LowerOptions::expert_group
  bool json = false;
  bool summary = false;
  bool graph = false;
};

void run_compile(const CompileOptions& o) {
  using namespace compiler;
  const ModelSpec model = load_model(o.model);
  const SystemSpec system = load_system(o.system, parse_sets(o.sets));
  const int devices = o.devices > 0 ? o.devices : system.devices_for(model.name);
  const ParallelLayout layout = ParallelLayout::make(model, system, devices);
  BatchState batch = BatchState::decode_batch(o.batch, o.context, o.prefill_tokens);
  if (o.drafts > 0 && o.batch > 0) {  // the decoding requests verify their drafts (RequestGroup::verify)
    batch.groups.front().tokens = 1 + o.drafts;
    batch.groups.front().verify = true;
  }
  const Routing routing = routing_for_step(o.routing, model, batch.tokens());
  if (o.expert_group < -1 || o.expert_group >= layout.expert_groups)
    throw Error(
        fmt::format("--expert-group {}: expected -1 (each MoE layer's busiest group) or 0..{} (the "
                    "expert-parallel groups of {})",
                    o.expert_group, layout.expert_groups - 1, layout.describe()));
  LowerOptions lowering = LowerOptions::for_system(system);
  lowering.expert_group = o.expert_group;
  const CostModel cost(system, layout);
  ExecutionPlan plan = place(lower(model, batch, layout, routing, lowering), cost);
  // Two-batch overlap: the step's two micro-batches' plans interleaved (micro_batches.hpp), where it has two.
  std::string overlap;
  if (const std::optional<MicroBatches> halves = micro_batches(system, layout, batch)) {
    const auto shares =
        split_routing(routing, halves->first.tokens(), batch.tokens(), model.experts, model.top_k);
    // The SMs the collectives hold (micro_batches.hpp).
    const SystemSpec shared =
        collectives_hold_sms(system, layout, batch) ? overlapped_system(system) : system;
    const CostModel overlapped(shared, layout);
    const ExecutionPlan first = place(lower(model, halves->first, layout, shares[0], lowering), overlapped);
    const ExecutionPlan second = place(lower(model, halves->second, layout, shares[1], lowering), overlapped);
    ExecutionPlan both = overlap_micro_batches(first, second);
    overlap = fmt::format(
        "two-batch overlap: micro-batches of {} and {} tokens (ops mb0.* and mb1.*) interleaved on the "
        "lanes, {:.1f} us against {:.1f} us one after the other and {:.1f} us as one batch\n",
        halves->first.tokens(), halves->second.tokens(), to_us(both.total()),
        to_us(first.total() + second.total()), to_us(plan.total()));
    plan = std::move(both);
  } else if (system.two_batch_overlap) {
    overlap = fmt::format("two-batch overlap: not this step, one batch ({})\n",
                          low_latency_prompts(system, layout, batch)
                              ? "a prompt's token exchange on DeepEP's low-latency kernels"
                              : "a micro-batch would hold no tokens");
  }
  if (o.json) {
    std::puts(plan_to_json(plan, model, system, layout).dump(2).c_str());
    return;
  }
  const std::string window = model.window_note();
  std::printf("model %s: %s params (%s active)%s%s, system %s (%s), %s\n", model.name.c_str(),
              format_count(static_cast<double>(model.params())).c_str(),
              format_count(static_cast<double>(model.active_params())).c_str(), window.empty() ? "" : ", ",
              window.c_str(), system.name.c_str(), system.description.c_str(), layout.describe().c_str());
  // Under pipeline parallelism a data-parallel rank is one of the batches in flight, its pass every stage's.
  const char* shown = layout.pp > 1
                          ? "one batch in flight's pass through every stage (one device of each) below"
                          : "one device's share below";
  const std::string experts =
      !model.is_moe() || layout.expert_groups == 1 ? ""
      : o.expert_group >= 0 ? fmt::format(", its experts expert-parallel group {}'s", o.expert_group)
                            : std::string(", each MoE layer's experts its busiest expert-parallel group's");
  const auto x = layout.expert_exchange();
  const bool deduplicated = deduplicates_exchange(lowering.all_to_all, batch);
  const std::string exchange =
      x.infiniband + x.nvlink == 0
          ? ""
          : fmt::format("; the all-to-all {}{}",
                        deduplicated
                            ? "by DeepEP's normal kernels (a token once per node and device holding its "
                              "experts)"
                            : "per token-expert row (low-latency kernels)",
                        lowering.all_to_all != ExpertAllToAll::auto_by_step ? ""
                        : deduplicated ? ", as auto takes for a step with prefill tokens"
                                       : ", as auto takes for a decode-only step");
  std::printf("step: %lld decode requests at context %lld%s + %lld prefill tokens; %s%s%s\n\n",
              static_cast<long long>(o.batch), static_cast<long long>(o.context),
              o.drafts > 0 ? fmt::format(", each verifying {} draft tokens", o.drafts).c_str() : "",
              static_cast<long long>(o.prefill_tokens), shown, experts.c_str(), exchange.c_str());
  std::fputs(overlap.c_str(), stdout);
  if (o.graph) std::fputs(dump_graph(plan.graph).c_str(), stdout);
  if (!o.summary) std::fputs(dump_plan(plan).c_str(), stdout);
  std::puts("");
  std::fputs(summarize_plan(plan).c_str(), stdout);
  std::printf("\nestimated step time %.1f us (xPU busy %.1f us, PIM busy %.1f us, links %.1f us)\n",
              to_us(plan.total()), to_us(plan.busy(Unit::kXpu)), to_us(plan.busy(Unit::kPim)),
              to_us(plan.busy(Unit::kLink)));
}

}  // namespace

void add_compile_command(CLI::App& app) {
  auto opts = std::make_shared<CompileOptions>();
  CLI::App* c = app.add_subcommand("compile", "Lower a model + batch to ops (FLOPs, bytes, Op/B) and place them");
  c->add_option("--model", opts->model, "Model preset (configs/models) or file: our YAML or a HF config.json")
      ->capture_default_str();
  c->add_option("--system", opts->system, "System preset (configs/systems) or YAML file")->capture_default_str();
  add_set_option(c, opts->sets);
  c->add_option("--batch", opts->batch, "Decoding requests in the step")->capture_default_str()->check(CLI::NonNegativeNumber);
  c->add_option("--context", opts->context, "Tokens already in each decoding request's KV cache")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  c->add_option("--prefill-tokens", opts->prefill_tokens, "Tokens of one new request prefilling in the step")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 30));
  c->add_option(
       "--drafts", opts->drafts,
       "Speculative decoding: draft tokens each decoding request verifies in the step, a chain's or a "
       "tree's nodes (0: none)")
      ->capture_default_str()
      ->check(CLI::Range(0, runtime::kMaxTreeTokens));
  c->add_option("--devices", opts->devices, "Devices (default: the system's count for the model)")
      ->check(CLI::PositiveNumber);
  c->add_option("--routing", opts->routing,
                "Expert routing: uniform | zipf:S | counts:a,b,c,... | trace:FILE (its first step, scaled)")
      ->capture_default_str();
  c->add_option("--expert-group", opts->expert_group,
                "MoE layers: plan this expert-parallel group's experts (0 .. groups - 1; -1: each layer's "
                "group receiving the most rows, which times the step)")
      ->capture_default_str();
  c->add_flag("--json", opts->json, "Print JSON: model.params, ops[].{name,kind,layer,flops,bytes,op_b,unit}, totals");
  c->add_flag("--summary", opts->summary, "Print only the per-kind summary, not every op");
  c->add_flag("--graph", opts->graph, "Also print the op-graph IR text");
  c->callback([opts] { run_compile(*opts); });
}

}  // namespace duplex::host
