#pragma once
// A serving request as the scheduler sees it: lengths and an arrival time, no tokens' contents.
#include <cstdint>

#include "duplex/base/units.hpp"

namespace duplex::runtime {

using RequestId = std::int64_t;

struct RequestSpec {
  RequestId id = 0;
  Time arrival;                     // simulated time the request reaches the server
  std::int64_t input_tokens = 0;    // prompt length, >= 1
  std::int64_t output_tokens = 0;   // tokens to generate, >= 1 (the request finishes after exactly this many)

  bool operator==(const RequestSpec&) const = default;
};

}  // namespace duplex::runtime
