#include "system_overrides.hpp"

namespace duplex::host {

void add_set_option(CLI::App* command, std::vector<std::string>& sets) {
  command
      ->add_option(
          "--set", sets,
          "Override a key of the system config, KEY=VALUE with KEY a dotted path (a key holding dots "
          "in brackets: devices_per_model[llama-3.2-1b]), e.g. "
          "pim.clock=800MHz; repeatable, applied in order")
      ->type_name("KEY=VALUE");
}

std::vector<ConfigOverride> parse_sets(const std::vector<std::string>& sets) {
  std::vector<ConfigOverride> out;
  out.reserve(sets.size());
  for (const auto& text : sets) out.push_back(parse_override(text, "--set"));
  return out;
}

SystemSpec load_system(const std::string& name_or_path, const std::vector<ConfigOverride>& overrides) {
  return read_system(ConfigNode::load(name_or_path, "systems", overrides));
}

}  // namespace duplex::host
