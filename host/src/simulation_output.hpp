#pragma once
// Presenting simulation results: the comparison table on stdout, and the result folder (-o DIR).
#include <string>
#include <vector>

#include "duplex/runtime/sim/capacity_search.hpp"
#include "duplex/runtime/sim/serving_simulator.hpp"

namespace duplex::host {

std::string comparison_table(const std::vector<runtime::SystemResult>& results);

// A capacity search's (simulate --max-rate) per system: the max rate, per device, vs the first system, and
// the figures of the run at that rate; then what was searched and every probe.
struct SystemCapacity {
  std::string system;
  int devices = 0;  // all of the system's (replicas x devices)
  runtime::CapacityResult capacity;
};
std::string capacity_table(const std::vector<SystemCapacity>& results, const runtime::WorkloadSpec& workload,
                           const runtime::LatencySlo& slo);

// Writes DIR/summary.json, DIR/<system>/{steps.csv,requests.csv,timeline.json,system.yaml}, DIR/model.txt and
// DIR/workload.txt. Each file is written to a temporary name and renamed, so none is left half-written.
void write_simulation_output(const std::string& dir, const std::vector<runtime::SystemResult>& results,
                             const std::vector<SystemSpec>& systems, const compiler::ModelSpec& model,
                             const runtime::WorkloadSpec& workload);
// A capacity search's folder: write_simulation_output's files for the runs at each system's max rate (those
// that have one), and DIR/capacity.json with every system's search.
void write_capacity_output(const std::string& dir, const std::vector<SystemCapacity>& results,
                           const std::vector<SystemSpec>& systems, const compiler::ModelSpec& model,
                           const runtime::WorkloadSpec& workload);

}  // namespace duplex::host
