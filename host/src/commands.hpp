#pragma once
// Each `duplex` subcommand lives in its own file and registers itself on the CLI app. A command's callback
// throws duplex::Error for bad input; main() prints it and exits non-zero.
#include <CLI/CLI.hpp>

namespace duplex::host {

void add_compile_command(CLI::App& app);
void add_config_command(CLI::App& app);
void add_simulate_command(CLI::App& app);
void add_sweep_command(CLI::App& app);
void add_report_command(CLI::App& app);
void add_run_command(CLI::App& app);
void add_memtest_command(CLI::App& app);

}  // namespace duplex::host
