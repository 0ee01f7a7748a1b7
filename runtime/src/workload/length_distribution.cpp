#include "duplex/runtime/workload/length_distribution.hpp"

#include <cmath>
#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::runtime {

void LengthDistribution::validate() const {
  if (input < 1 || output < 1)
    throw Error(fmt::format("request lengths input {} / output {} tokens; expected >= 1 each", input, output));
  if (!(input_stddev >= 0.0) || !(output_stddev >= 0.0) || !(input_stddev <= kMaxStddev) ||
      !(output_stddev <= kMaxStddev))
    throw Error(fmt::format("request length stddev input {} / output {}; expected values in [0, 1e6] tokens",
                            input_stddev, output_stddev));
}

LengthSampler::LengthSampler(LengthDistribution dist, std::uint64_t seed) : dist_(dist), rng_(seed) {
  dist_.validate();
}

std::int64_t LengthSampler::draw(double mean, double stddev) {
  const double x = std::nearbyint(mean + stddev * rng_.normal());
  return x < 1.0 ? 1 : static_cast<std::int64_t>(x);
}

SampledLengths LengthSampler::sample() {
  if (dist_.kind == LengthDistribution::Kind::fixed) return {dist_.input, dist_.output};
  const std::int64_t in = draw(static_cast<double>(dist_.input), dist_.input_stddev);
  const std::int64_t out = draw(static_cast<double>(dist_.output), dist_.output_stddev);
  return {in, out};
}

}  // namespace duplex::runtime
