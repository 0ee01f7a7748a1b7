#pragma once
// Request length distributions (DUPLEX.md section 8: lengths Gaussian around (L_in, L_out)).
#include <cstdint>

#include "duplex/runtime/workload/random.hpp"

namespace duplex::runtime {

struct LengthDistribution {
  enum class Kind : std::uint8_t {
    fixed,     // every request has exactly (input, output) tokens
    gaussian,  // round(N(mean, stddev)), clipped to >= 1, input and output drawn independently
  };
  Kind kind = Kind::fixed;
  std::int64_t input = 0;      // mean input tokens, >= 1
  std::int64_t output = 0;     // mean output tokens, >= 1
  double input_stddev = 0.0;   // gaussian only, in [0, kMaxStddev]
  double output_stddev = 0.0;
  // A million tokens of spread is past any context window; drawn lengths stay far inside 64-bit counts.
  static constexpr double kMaxStddev = 1e6;  // the messages say 1e6

  void validate() const;  // throws duplex::Error naming the bad field
};

struct SampledLengths {
  std::int64_t input_tokens = 0;
  std::int64_t output_tokens = 0;
};

class LengthSampler {
 public:
  LengthSampler(LengthDistribution dist, std::uint64_t seed);
  SampledLengths sample();

 private:
  std::int64_t draw(double mean, double stddev);
  LengthDistribution dist_;
  Rng rng_;
};

}  // namespace duplex::runtime
