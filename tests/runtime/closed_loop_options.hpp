#pragma once
// Test helper: serving-simulator options for a closed loop of `requests` requests at max batch `batch`,
// lengths around (in, out) with a Gaussian spread of `spread` x the mean (0: fixed lengths), uniform routing.
#include <cstdint>

#include "duplex/runtime/sim/serving_simulator.hpp"

namespace duplex::runtime::testing {

inline SimulationOptions closed_loop_options(std::int64_t requests, std::int64_t in, std::int64_t out,
                                             std::int64_t batch, std::uint64_t seed, double spread) {
  SimulationOptions o;
  o.workload.label = "test";
  o.workload.seed = seed;
  o.workload.requests = requests;
  o.workload.arrival.kind = ArrivalSpec::Kind::closed;
  o.workload.arrival.concurrency = batch;
  LengthDistribution len;
  len.kind = spread > 0 ? LengthDistribution::Kind::gaussian : LengthDistribution::Kind::fixed;
  len.input = in;
  len.output = out;
  if (spread > 0) {
    len.input_stddev = spread * static_cast<double>(in);
    len.output_stddev = spread * static_cast<double>(out);
  }
  o.workload.lengths = len;
  o.workload.routing = RoutingSpec{};
  o.scheduler.max_batch = batch;
  return o;
}

}  // namespace duplex::runtime::testing
