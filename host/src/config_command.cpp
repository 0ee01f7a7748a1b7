// `duplex config`: list presets, show a fully resolved config, check a file.
#include <cstdio>
#include <fmt/format.h>

#include "commands.hpp"
#include "duplex/base/config_store.hpp"
#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/model_spec.hpp"
#include "duplex/runtime/functional/safetensors.hpp"
#include "duplex/runtime/workload/workload_config.hpp"
#include "system_overrides.hpp"

namespace duplex::host {
namespace {

const std::vector<std::string> kKinds = {"systems", "devices", "models", "energy", "workloads"};

void check_config(const std::string& kind, const std::string& name, const std::vector<std::string>& sets) {
  if (!sets.empty() && kind != "systems")
    throw Error(fmt::format("--set applies to systems only (got kind {})", kind));
  if (kind == "systems") {
    const SystemSpec s = load_system(name, parse_sets(sets));
    std::printf("%s: ok (system %s: %d stacks/device, %s HBM, PIM %s)\n", s.file.c_str(), s.name.c_str(), s.stacks,
                format_bandwidth(s.memory_bandwidth()).c_str(), s.pim ? s.pim->name.c_str() : "none");
  } else if (kind == "models") {
    const compiler::ModelSpec m = compiler::load_model(name);
    // A config.json's numerics (norm epsilon, RoPE base and scaling) are read where `duplex run` computes
    // with them: check them here too.
    if (name.ends_with(".json")) (void)runtime::functional::config_numerics(name);
    std::printf("%s: ok (model %s, %s params)\n", m.file.c_str(), m.name.c_str(),
                format_count(static_cast<double>(m.params())).c_str());
  } else if (kind == "devices") {
    const ConfigNode n = ConfigNode::load(name, "devices");
    const std::string k = n.get<std::string>("kind");
    if (k == "xpu") read_xpu(n);
    else if (k == "hbm3") read_hbm(n);
    else if (k == "links") read_links(n);
    else read_pim(n);
    std::printf("%s: ok (%s)\n", n.file().c_str(), k.c_str());
  } else if (kind == "energy") {
    const EnergyTable e = read_energy(ConfigNode::load(name, "energy"));
    std::printf("%s: ok (%zu actions)\n", e.file.c_str(), e.actions.size());
  } else if (kind == "workloads") {
    const runtime::WorkloadSpec w = runtime::load_workload(name);
    std::printf("%s: ok (%lld requests)\n", w.label.c_str(), static_cast<long long>(w.requests));
  } else {
    throw Error(fmt::format(
        "config check: unknown kind \"{}\"; expected systems, models, devices, energy or workloads", kind));
  }
}

}  // namespace

void add_config_command(CLI::App& app) {
  CLI::App* c = app.add_subcommand("config", "List presets, show a resolved config, check a config file");
  c->require_subcommand(1);
  auto kind = std::make_shared<std::string>("systems");
  auto name = std::make_shared<std::string>();

  CLI::App* list = c->add_subcommand("list", "List the presets of a kind (or of every kind)");
  list->add_option("kind", *kind, "systems | devices | models | energy | workloads")->check(CLI::IsMember(kKinds));
  list->callback([kind, list] {
    const bool all = list->count("kind") == 0;
    for (const auto& k : kKinds) {
      if (!all && k != *kind) continue;
      std::printf("%s: %s\n", k.c_str(), fmt::format("{}", fmt::join(list_presets(k), ", ")).c_str());
    }
  });

  CLI::App* show = c->add_subcommand("show", "Print a config with every preset resolved");
  show->add_option("kind", *kind, "systems | devices | models | energy | workloads")->required()->check(CLI::IsMember(kKinds));
  show->add_option("name", *name, "Preset name or file")->required();
  auto sets = std::make_shared<std::vector<std::string>>();
  add_set_option(show, *sets);
  show->callback([kind, name, sets] {
    if (sets->empty()) {
      std::puts(ConfigNode::load(*name, *kind).dump().c_str());
      return;
    }
    if (*kind != "systems") throw Error(fmt::format("--set applies to systems only (got kind {})", *kind));
    std::puts(load_system(*name, parse_sets(*sets)).resolved_yaml.c_str());  // read strictly first
  });

  CLI::App* check = c->add_subcommand("check", "Read a config strictly (unknown keys, units, ranges) and report");
  check->add_option("kind", *kind, "systems | devices | models | energy")->required()->check(CLI::IsMember(kKinds));
  check->add_option("name", *name, "Preset name or file")->required();
  auto check_sets = std::make_shared<std::vector<std::string>>();
  add_set_option(check, *check_sets);
  check->callback([kind, name, check_sets] { check_config(*kind, *name, *check_sets); });
}

}  // namespace duplex::host
