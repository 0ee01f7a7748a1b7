#pragma once
// `--set KEY=VALUE` on the commands that load a system (simulate, compile, run, memtest, config show / check):
// each is a ConfigOverride applied to the resolved system config, e.g. --set pim.clock=800MHz
// --set memory.data_rate=6.4Gbps --set xpu.efficiency.gemm=0.8. The system is then read as strictly as
// a file, so a key the reader does not know is an error naming "--set".
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "duplex/base/config.hpp"
#include "duplex/base/device_spec.hpp"

namespace duplex::host {

// Adds the repeatable --set option, collecting its texts into `sets`.
void add_set_option(CLI::App* command, std::vector<std::string>& sets);
// The overrides of the --set texts, in order; duplex::Error for a text without '='.
std::vector<ConfigOverride> parse_sets(const std::vector<std::string>& sets);
SystemSpec load_system(const std::string& name_or_path, const std::vector<ConfigOverride>& overrides);

}  // namespace duplex::host
