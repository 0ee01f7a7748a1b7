#include "duplex/runtime/workload/workload_config.hpp"

#include <fmt/format.h>
#include <cmath>
#include <filesystem>
#include <limits>

#include "duplex/base/config.hpp"
#include "duplex/base/config_store.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/workload/request_trace.hpp"

namespace duplex::runtime {
namespace {

constexpr std::int64_t kMaxRequests = 1'000'000'000;

// A data file named in a workload: a path as written (absolute or relative to the working directory), then
// relative to the workload file's folder, then configs/workloads/<name> in the config store.
ConfigText read_data_file(const ConfigNode& node, std::string_view key) {
  const std::string name = node.get<std::string>(key);
  std::error_code ec;
  if (std::filesystem::is_regular_file(name, ec)) return ConfigText{read_text_file(name), name};
  const std::filesystem::path beside = std::filesystem::path(node.file_of(key)).parent_path() / name;
  if (!beside.empty() && std::filesystem::is_regular_file(beside, ec))
    return ConfigText{read_text_file(beside.string()), beside.string()};
  if (auto stored = read_store_file("workloads/" + name)) return *stored;
  node.fail(key, fmt::format("file \"{}\" not found", name),
            "a path, relative to the working directory or the workload file, or a file in configs/workloads/");
}

LengthDistribution read_lengths(const ConfigNode& n) {
  LengthDistribution d;
  const std::string kind = n.get_enum("kind", {"fixed", "gaussian", "trace"});
  d.kind = kind == "gaussian" ? LengthDistribution::Kind::gaussian : LengthDistribution::Kind::fixed;
  d.input = n.get_int("input", 1, 100'000'000);
  d.output = n.get_int("output", 1, 100'000'000);
  if (d.kind == LengthDistribution::Kind::gaussian) {
    auto stddev = [&](const char* key) {  // LengthDistribution::validate's range, named here
      const double v = n.get<double>(key);
      if (!(v >= 0.0 && v <= LengthDistribution::kMaxStddev))
        n.fail(key, fmt::format("is {}", v), "a number of tokens in [0, 1e6]");
      return v;
    };
    d.input_stddev = stddev("input_stddev");
    d.output_stddev = stddev("output_stddev");
  }
  n.finish();
  return d;
}

RoutingSpec read_routing(const ConfigNode& n) {
  RoutingSpec r;
  const std::string kind = n.get_enum("kind", {"uniform", "zipf", "trace"});
  if (kind == "zipf") {
    r.kind = ExpertRouter::Kind::zipf;
    r.zipf_s = n.get<double>("s");
    if (!(r.zipf_s >= 0.0 && r.zipf_s <= 10.0)) n.fail("s", "Zipf exponent out of range", "0 <= s <= 10");
  } else if (kind == "trace") {
    r.kind = ExpertRouter::Kind::trace;
    const ConfigText file = read_data_file(n, "file");
    r.trace = parse_routing_trace(file.text, file.label);
  }
  n.finish();
  return r;
}

}  // namespace

// The arrivals and lengths `spec` describes, before any shared prefix.
std::unique_ptr<RequestSource> make_arrivals(const WorkloadSpec& spec);

WorkloadSpec read_workload(const ConfigNode& node) {
  WorkloadSpec w;
  w.label = node.file();
  node.ignore("description");
  w.seed = static_cast<std::uint64_t>(node.get_int("seed", 0, std::numeric_limits<std::int64_t>::max()));

  const ConfigNode arrival = node.at("arrival");
  const std::string kind = arrival.get_enum("kind", {"closed", "poisson", "trace"});
  if (kind == "closed") {
    w.arrival.kind = ArrivalSpec::Kind::closed;
    w.arrival.concurrency = arrival.get_int("concurrency", 1, 10'000'000);
  } else if (kind == "poisson") {
    w.arrival.kind = ArrivalSpec::Kind::poisson;
    w.arrival.rate_per_s = arrival.get_positive<double>("rate_per_s");
  } else {
    w.arrival.kind = ArrivalSpec::Kind::trace;
    const ConfigText file = read_data_file(arrival, "file");
    w.arrival.trace_file = file.label;
    w.arrival.trace_rows = parse_request_trace(file.text, file.label);
  }
  arrival.finish();

  const bool is_trace = w.arrival.kind == ArrivalSpec::Kind::trace;
  if (is_trace) {
    const auto rows = static_cast<std::int64_t>(w.arrival.trace_rows.size());
    w.requests = node.has("requests") ? node.get_int("requests", 1, rows) : rows;
  } else {
    w.requests = node.get_int("requests", 1, kMaxRequests);
  }

  const std::optional<ConfigNode> lengths = node.find("lengths");
  if (lengths && lengths->get_or<std::string>("kind", "") != "trace") {
    w.lengths = read_lengths(*lengths);
    for (const RequestSpec& r : w.arrival.trace_rows)
      if (!r.content_hashes.empty())
        lengths->fail("kind",
                      "the trace's hash_ids describe its own prompts, which other lengths would not be",
                      "trace (lengths from the trace) for a trace with hash_ids");
  } else if (lengths) {
    lengths->get_enum("kind", {"trace"});
    lengths->finish();
    if (!is_trace) lengths->fail("kind", "lengths from a trace need trace arrivals", "fixed or gaussian");
  } else if (!is_trace) {
    node.fail("lengths", "missing", "a lengths map (kind: fixed | gaussian, input, output)");
  }

  if (const std::optional<ConfigNode> routing = node.find("routing")) w.routing = read_routing(*routing);
  if (const std::optional<ConfigNode> prefix = node.find("shared_prefix")) {
    w.shared_prefix = SharedPrefix{prefix->get_int("tokens", 1, 100'000'000),
                                   prefix->has("groups") ? prefix->get_int("groups", 1, 1'000'000'000) : 1};
    prefix->finish();
    for (const RequestSpec& r : w.arrival.trace_rows)
      if (!r.content_hashes.empty())
        prefix->fail("tokens", "the trace's requests carry their own prompt hashes (hash_ids)",
                     "no shared_prefix with a trace that has hash_ids");
  }
  if (const std::optional<ConfigNode> chat = node.find("conversation")) {
    Conversations c;
    c.turns = chat->get_int("turns", 1, 1'000'000);
    c.think_s = chat->has("think_s") ? chat->get<double>("think_s") : 0.0;
    if (!std::isfinite(c.think_s) || c.think_s < 0) chat->fail("think_s", "out of range", "seconds >= 0");
    chat->finish();
    if (w.arrival.kind == ArrivalSpec::Kind::trace)
      chat->fail("turns", "conversations follow their own turns, not a trace's arrivals",
                 "arrival kind closed (users) or poisson (conversations per second)");
    w.conversation = c;
  }
  node.finish();
  return w;
}

WorkloadSpec load_workload(std::string_view name_or_path) {
  return read_workload(ConfigNode::load(name_or_path, "workloads"));
}

std::unique_ptr<RequestSource> make_request_source(const WorkloadSpec& spec) {
  if (spec.conversation) {
    DUPLEX_ASSERT(spec.arrival.kind != ArrivalSpec::Kind::trace, "conversations with trace arrivals");
    Conversations chats = *spec.conversation;
    chats.system_prompt = spec.shared_prefix.value_or(SharedPrefix{0, 1});
    if (spec.arrival.kind == ArrivalSpec::Kind::poisson)
      return ConversationSource::poisson(spec.arrival.rate_per_s, spec.requests, *spec.lengths, chats,
                                         spec.seed);
    return std::make_unique<ConversationSource>(spec.arrival.concurrency, spec.requests, *spec.lengths, chats,
                                                spec.seed);
  }
  std::unique_ptr<RequestSource> source = make_arrivals(spec);
  if (!spec.shared_prefix) return source;
  return std::make_unique<SharedPrefixSource>(std::move(source), *spec.shared_prefix, spec.seed);
}

std::unique_ptr<RequestSource> make_arrivals(const WorkloadSpec& spec) {
  switch (spec.arrival.kind) {
    case ArrivalSpec::Kind::closed:
      return std::make_unique<ClosedLoopSource>(spec.arrival.concurrency, spec.requests, *spec.lengths, spec.seed);
    case ArrivalSpec::Kind::poisson:
      return std::make_unique<PoissonSource>(spec.arrival.rate_per_s, spec.requests, *spec.lengths, spec.seed);
    case ArrivalSpec::Kind::trace: {
      std::vector<RequestSpec> rows(spec.arrival.trace_rows.begin(),
                                    spec.arrival.trace_rows.begin() + static_cast<std::ptrdiff_t>(spec.requests));
      if (spec.lengths) {
        // Trace arrivals with synthetic lengths: lengths drawn in arrival order (read_workload refuses a
        // trace with content hashes here).
        LengthSampler sampler(*spec.lengths, derive_seed(spec.seed, seed_stream::lengths));
        for (RequestSpec& r : rows) {
          const SampledLengths l = sampler.sample();
          r.input_tokens = l.input_tokens;
          r.output_tokens = l.output_tokens;
          DUPLEX_ASSERT(r.content_hashes.empty(), "synthetic lengths for a trace with content hashes");
        }
      }
      return std::make_unique<TraceSource>(std::move(rows));
    }
  }
  DUPLEX_ASSERT(false, "unknown arrival kind");
  return nullptr;
}

ExpertRouter make_expert_router(const WorkloadSpec& spec) {
  if (!spec.routing)
    throw Error(fmt::format("{}: the workload has no routing section; expected routing: {{kind: uniform | zipf | "
                            "trace}} for an MoE model", spec.label));
  const std::uint64_t seed = derive_seed(spec.seed, seed_stream::routing);
  switch (spec.routing->kind) {
    case ExpertRouter::Kind::uniform: return ExpertRouter::uniform(seed);
    case ExpertRouter::Kind::zipf: return ExpertRouter::zipf(spec.routing->zipf_s, seed);
    case ExpertRouter::Kind::trace: return ExpertRouter::from_trace(spec.routing->trace);
  }
  DUPLEX_ASSERT(false, "unknown routing kind");
  return ExpertRouter::uniform(seed);
}

}  // namespace duplex::runtime
