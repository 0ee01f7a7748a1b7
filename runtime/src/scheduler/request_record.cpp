#include "duplex/runtime/scheduler/request_record.hpp"

#include "duplex/base/error.hpp"

namespace duplex::runtime {

Time RequestRecord::ttft() const {
  DUPLEX_ASSERT(!token_times.empty(), "TTFT of a request that has emitted no token");
  return token_times.front() - spec.arrival;
}

Time RequestRecord::e2e() const {
  DUPLEX_ASSERT(finish.has_value(), "E2E latency of an unfinished request");
  return *finish - spec.arrival;
}

std::vector<Time> RequestRecord::tbt() const {
  std::vector<Time> gaps;
  for (std::size_t i = 1; i < token_times.size(); ++i) gaps.push_back(token_times[i] - token_times[i - 1]);
  return gaps;
}

}  // namespace duplex::runtime
