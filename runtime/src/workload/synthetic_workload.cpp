#include "duplex/runtime/workload/synthetic_workload.hpp"

#include <fmt/format.h>
#include <cmath>
#include <cstdlib>

#include "duplex/base/config_store.hpp"
#include "duplex/base/error.hpp"

namespace duplex::runtime {

RoutingSpec parse_routing(std::string_view text) {
  RoutingSpec r;
  if (text == "uniform") {
    r.kind = ExpertRouter::Kind::uniform;
    return r;
  }
  if (text.starts_with("zipf:")) {
    const std::string s(text.substr(5));
    char* end = nullptr;
    r.kind = ExpertRouter::Kind::zipf;
    r.zipf_s = std::strtod(s.c_str(), &end);
    if (!s.empty() && *end == '\0' && r.zipf_s >= 0) return r;
  }
  if (text.starts_with("trace:") && text.size() > 6) {  // e.g. what duplex run --routing-trace wrote
    const std::string path(text.substr(6));
    r.kind = ExpertRouter::Kind::trace;
    r.trace = parse_routing_trace(read_text_file(path), path);
    return r;
  }
  throw Error(fmt::format("routing \"{}\": expected uniform, zipf:S with S >= 0, or trace:FILE", text));
}

BatchingPolicy parse_batching_policy(std::string_view text) {
  if (text == "continuous") return BatchingPolicy::continuous;
  if (text == "orca") return BatchingPolicy::orca;
  if (text == "static") return BatchingPolicy::static_batch;
  throw Error(fmt::format("batching policy \"{}\": expected continuous, orca or static", text));
}

WorkloadSpec synthetic_workload(const SyntheticStream& s) {
  if (s.requests < 1) throw Error(fmt::format("{}: requests must be >= 1 (got {})", s.label, s.requests));
  WorkloadSpec w;
  w.label = s.label;
  w.seed = s.seed;
  w.requests = s.requests;
  LengthDistribution len;
  len.kind = s.length_spread > 0 ? LengthDistribution::Kind::gaussian : LengthDistribution::Kind::fixed;
  len.input = s.input_len;
  len.output = s.output_len;
  len.input_stddev = s.length_spread * static_cast<double>(s.input_len);
  len.output_stddev = s.length_spread * static_cast<double>(s.output_len);
  len.validate();
  w.lengths = len;
  if (s.poisson_rate_per_s > 0) {
    w.arrival.kind = ArrivalSpec::Kind::poisson;
    w.arrival.rate_per_s = s.poisson_rate_per_s;
  } else {
    if (s.concurrency < 1) throw Error(fmt::format("{}: closed-loop concurrency must be >= 1", s.label));
    w.arrival.kind = ArrivalSpec::Kind::closed;
    w.arrival.concurrency = s.concurrency;
  }
  w.routing = parse_routing(s.routing);
  if (s.prefix_tokens < 0 || s.prefix_groups < 1)
    throw Error(
        fmt::format("{}: shared prefix of {} tokens in {} groups; expected >= 0 tokens (0: none) and >= 1 "
                    "group",
                    s.label, s.prefix_tokens, s.prefix_groups));
  if (s.prefix_tokens > 0) w.shared_prefix = SharedPrefix{s.prefix_tokens, s.prefix_groups};
  if (s.turns < 1 || !std::isfinite(s.think_s) || s.think_s < 0)
    throw Error(
        fmt::format("{}: conversations of {} turns with {} s think time; expected >= 1 turn and >= 0 s",
                    s.label, s.turns, s.think_s));
  if (s.turns > 1 || s.think_s > 0) w.conversation = Conversations{.turns = s.turns, .think_s = s.think_s};
  return w;
}

WorkloadSpec trace_workload(std::string label, std::uint64_t seed, std::string file,
                            std::vector<RequestSpec> rows, std::string_view routing) {
  WorkloadSpec w;
  w.label = std::move(label);
  w.seed = seed;
  w.arrival.kind = ArrivalSpec::Kind::trace;
  w.arrival.trace_file = std::move(file);
  w.arrival.trace_rows = std::move(rows);
  w.requests = static_cast<std::int64_t>(w.arrival.trace_rows.size());  // lengths from the trace
  w.routing = parse_routing(routing);
  return w;
}

}  // namespace duplex::runtime
