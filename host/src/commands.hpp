#pragma once
// Each `duplex` subcommand lives in its own file and registers itself on the CLI app. A command's callback
// throws duplex::Error for bad input; main() prints it and exits non-zero.
#include <CLI/CLI.hpp>
#include <cmath>
#include <exception>
#include <string>

namespace duplex::host {

// A number that is finite (CLI11's ranges let NaN through): chain it after a range, ->check(kFinite).
inline const CLI::Validator kFinite(
    [](std::string& s) -> std::string {
      try {
        std::size_t used = 0;
        const double v = std::stod(s, &used);
        if (used == s.size() && std::isfinite(v)) return {};
      } catch (const std::exception&) {
      }
      return "Value " + s + " is not a finite number";
    },
    "FINITE");

void add_compile_command(CLI::App& app);
void add_config_command(CLI::App& app);
void add_simulate_command(CLI::App& app);
void add_sweep_command(CLI::App& app);
void add_report_command(CLI::App& app);
void add_run_command(CLI::App& app);
void add_memtest_command(CLI::App& app);

}  // namespace duplex::host
