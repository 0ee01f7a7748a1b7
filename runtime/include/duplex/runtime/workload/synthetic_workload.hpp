#pragma once
// A synthetic request stream described by a few numbers (the command line's and the sweep studies' form):
// lengths around (input, output) with a Gaussian spread, closed-loop users or Poisson arrivals, and the
// expert routing by name. Throws duplex::Error naming the bad value.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "duplex/runtime/scheduler/scheduler_config.hpp"
#include "duplex/runtime/workload/workload_config.hpp"

namespace duplex::runtime {

struct SyntheticStream {
  std::string label;                 // names the stream in errors
  std::uint64_t seed = 1;
  std::int64_t requests = 0;
  std::int64_t input_len = 0;        // mean prompt tokens
  std::int64_t output_len = 0;       // mean generated tokens
  double length_spread = 0;          // Gaussian stddev / mean; 0: fixed lengths
  double poisson_rate_per_s = 0;     // > 0: Poisson arrivals at this rate; 0: closed loop
  std::int64_t concurrency = 0;      // closed-loop users
  std::string routing = "uniform";   // uniform | zipf:S | trace:FILE (a routing trace CSV)
  std::int64_t prefix_tokens = 0;    // > 0: shared system prompts of this many tokens before each prompt
  std::int64_t prefix_groups = 1;    // how many distinct ones (SharedPrefix)
  std::int64_t turns = 1;            // > 1: multi-turn conversations (Poisson: conversations per second)
  double think_s = 0;                // seconds between a turn's answer and the next turn
};

WorkloadSpec synthetic_workload(const SyntheticStream& stream);
// A recorded stream: `rows` (a request trace's, read_request_trace(`file`)) replayed at their arrivals with
// their lengths and prompt hashes; expert routing by name (`routing`, as SyntheticStream's).
WorkloadSpec trace_workload(std::string label, std::uint64_t seed, std::string file,
                            std::vector<RequestSpec> rows, std::string_view routing);
// "uniform" or "zipf:S" (S >= 0).
RoutingSpec parse_routing(std::string_view text);
// "continuous" | "orca" | "static".
BatchingPolicy parse_batching_policy(std::string_view text);

}  // namespace duplex::runtime
