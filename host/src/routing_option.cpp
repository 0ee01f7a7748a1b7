#include "routing_option.hpp"

#include <cstdlib>
#include <fmt/format.h>

#include "duplex/base/error.hpp"

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

}  // namespace duplex::host
