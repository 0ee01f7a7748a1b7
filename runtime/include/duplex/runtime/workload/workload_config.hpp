#pragma once
// Workload YAML files (configs/workloads/, schema in configs/workloads/README.md): arrivals, lengths, request
// count, seed, expert routing. Read strictly: unknown keys and bad values are ConfigErrors naming the key.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "duplex/runtime/scheduler/request.hpp"
#include "duplex/runtime/workload/conversation_source.hpp"
#include "duplex/runtime/workload/expert_routing.hpp"
#include "duplex/runtime/workload/length_distribution.hpp"
#include "duplex/runtime/workload/request_source.hpp"

namespace duplex {
class ConfigNode;
}

namespace duplex::runtime {

struct ArrivalSpec {
  enum class Kind : std::uint8_t { closed, poisson, trace };
  Kind kind = Kind::closed;
  std::int64_t concurrency = 0;         // closed: users
  double rate_per_s = 0.0;              // poisson: requests per second
  std::vector<RequestSpec> trace_rows;  // trace: the parsed file
  std::string trace_file;               // trace: where it was read from
};

struct RoutingSpec {
  ExpertRouter::Kind kind = ExpertRouter::Kind::uniform;
  double zipf_s = 0.0;
  RoutingTrace trace;
};

struct WorkloadSpec {
  std::string label;                          // the workload file
  ArrivalSpec arrival;
  std::optional<LengthDistribution> lengths;  // nullopt: lengths from the trace
  std::int64_t requests = 0;                  // total requests (trace: rows used; all when the key is absent)
  std::uint64_t seed = 0;
  std::optional<RoutingSpec> routing;         // absent for dense models
  std::optional<SharedPrefix> shared_prefix;  // shared system prompts (prefix caching), when given
                                              // Multi-turn conversations (closed arrivals: users; poisson:
                                              // conversations started per second; not a trace):
  // turns and think time; their system prompt is shared_prefix (ignored here).
  std::optional<Conversations> conversation;
};

WorkloadSpec read_workload(const ConfigNode& node);
// Loads configs/workloads/<name>.yaml or a path.
WorkloadSpec load_workload(std::string_view name_or_path);

// The source the spec describes; seeded from spec.seed (separate streams for gaps, lengths and prefix
// groups).
std::unique_ptr<RequestSource> make_request_source(const WorkloadSpec& spec);
// The router the spec describes (duplex::Error when the spec has no routing section).
ExpertRouter make_expert_router(const WorkloadSpec& spec);

}  // namespace duplex::runtime
