#pragma once
// `duplex report`: one self-contained HTML page (inline CSS and SVG, no script, no network) from a sweep's
// result folder. Sections (ids): summary, throughput (normalised to gpu per setting), latency (percentiles;
// lines over the request rate for load sweeps), energy (stacked J/token by category), roofline (Op/B per op
// kind against the units' ridge points), occupancy (batch size and KV use over time), timeline (an excerpt
// of device 0's xPU / PIM / link lanes).
#include <string>

#include "report_data.hpp"

namespace duplex::host {

std::string build_report(const ResultFolder& folder);

}  // namespace duplex::host
