#include "routing_option.hpp"

#include <cstdlib>
#include <fmt/format.h>

#include "duplex/base/config_store.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/workload/expert_routing.hpp"

namespace duplex::host {

compiler::Routing parse_routing(const std::string& text) {
  const std::string expected = "uniform, zipf:S (S > 0) or counts:a,b,... (tokens per expert)";
  compiler::Routing r;
  if (text == "uniform") return r;
  auto number_list = [&](const std::string& body) {
    std::vector<std::int64_t> out;
    std::size_t pos = 0;
    while (pos <= body.size()) {
      const std::size_t comma = body.find(',', pos);
      const std::string item = body.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      char* end = nullptr;
      const long long v = std::strtoll(item.c_str(), &end, 10);
      if (item.empty() || *end != '\0' || v < 0)
        throw Error(fmt::format("--routing: \"{}\" is not a token count in \"{}\"; expected {}", item, text, expected));
      out.push_back(v);
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
    return out;
  };
  if (text.rfind("zipf:", 0) == 0) {
    const std::string s = text.substr(5);
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0' || !(v > 0)) throw Error(fmt::format("--routing: bad \"{}\"; expected {}", text, expected));
    r.kind = compiler::Routing::Kind::kZipf;
    r.zipf_s = v;
    return r;
  }
  if (text.rfind("counts:", 0) == 0) {
    r.kind = compiler::Routing::Kind::kCounts;
    r.counts.push_back(number_list(text.substr(7)));
    return r;
  }
  throw Error(fmt::format("--routing: unknown routing \"{}\"; expected {}", text, expected));
}

compiler::Routing routing_for_step(const std::string& text, const compiler::ModelSpec& model,
                                   std::int64_t tokens) {
  if (text.rfind("trace:", 0) != 0 || text.size() == 6) return parse_routing(text);
  const std::string path = text.substr(6);
  if (!model.is_moe())
    throw Error(fmt::format("--routing {}: model {} is dense; a routing trace is for an MoE model", text,
                            model.name));
  runtime::RoutingTrace trace = runtime::parse_routing_trace(read_text_file(path), path);
  trace.steps.resize(1);  // the first recorded step
  trace.step_numbers.resize(1);
  runtime::ExpertRouter router = runtime::ExpertRouter::from_trace(std::move(trace));
  compiler::Routing r;
  r.kind = compiler::Routing::Kind::kCounts;
  r.counts = router.route(tokens, model.experts, model.top_k, model.moe_layers_before(model.layers));
  return r;
}

}  // namespace duplex::host
