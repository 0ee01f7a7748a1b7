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

// A whole number that fits 64 bits unsigned (a seed): digits only, at most 2^64 - 1 (CLI11's conversion
// saturates a larger one silently).
inline const CLI::Validator kUint64(
    [](std::string& s) -> std::string {
      const bool digits = !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
      try {
        if (digits) {
          (void)std::stoull(s);
          return {};
        }
      } catch (const std::exception&) {
      }
      return "Value " + s + " is not a whole number in [0, 18446744073709551615]";
    },
    "UINT64");

void add_compile_command(CLI::App& app);
void add_config_command(CLI::App& app);
void add_simulate_command(CLI::App& app);
void add_sweep_command(CLI::App& app);
void add_report_command(CLI::App& app);
void add_run_command(CLI::App& app);
void add_memtest_command(CLI::App& app);

}  // namespace duplex::host
