#pragma once
// Presenting simulation results: the comparison table on stdout, and the result folder (-o DIR).
#include <string>
#include <vector>

#include "duplex/runtime/sim/serving_simulator.hpp"

namespace duplex::host {

std::string comparison_table(const std::vector<runtime::SystemResult>& results);

// Writes DIR/summary.json, DIR/<system>/{steps.csv,requests.csv,timeline.json,system.yaml}, DIR/model.txt and
// DIR/workload.txt. Each file is written to a temporary name and renamed, so none is left half-written.
void write_simulation_output(const std::string& dir, const std::vector<runtime::SystemResult>& results,
                             const std::vector<SystemSpec>& systems, const compiler::ModelSpec& model,
                             const runtime::WorkloadSpec& workload);

}  // namespace duplex::host
