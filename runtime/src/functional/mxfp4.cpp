#include "mxfp4.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"

namespace duplex::runtime::functional {
namespace {

// E2M1 magnitudes by their 3 low bits; bit 3 is the sign.
constexpr float kE2m1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

float e2m1(std::uint8_t code) {
  const float m = kE2m1[code & 7u];
  return (code & 8u) != 0 ? -m : m;
}

// The E2M1 code nearest x (|x| saturating at 6; ties to the even code, as IEEE rounding does).
std::uint8_t nearest_e2m1(float x) {
  const float a = std::min(std::fabs(x), 6.0f);
  std::uint8_t best = 0;
  for (std::uint8_t c = 1; c < 8; ++c) {
    const float d = std::fabs(kE2m1[c] - a), db = std::fabs(kE2m1[best] - a);
    if (d < db || (d == db && c % 2 == 0)) best = c;
  }
  return static_cast<std::uint8_t>(best | (std::signbit(x) && best != 0 ? 8u : 0u));
}

}  // namespace

std::vector<std::uint16_t> dequantize_mxfp4(const std::uint8_t* blocks, const std::uint8_t* scales,
                                            std::int64_t rows, std::int64_t cols, const std::string& what) {
  DUPLEX_ASSERT(cols % kMxfp4Block == 0, "MXFP4 rows of whole blocks");
  const std::int64_t per_row = cols / kMxfp4Block;
  std::vector<std::uint16_t> out(static_cast<std::size_t>(rows * cols));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t b = 0; b < per_row; ++b) {
      const int exponent = static_cast<int>(scales[r * per_row + b]) - 127;
      const std::uint8_t* bytes = blocks + (r * per_row + b) * (kMxfp4Block / 2);
      for (std::int64_t i = 0; i < kMxfp4Block; ++i) {
        const std::uint8_t code = i % 2 == 0 ? bytes[i / 2] & 0x0Fu : bytes[i / 2] >> 4;
        const double v = std::ldexp(static_cast<double>(e2m1(code)), exponent);
        const std::uint16_t h = float_to_half_bits(static_cast<float>(v));
        if (static_cast<double>(half_bits_to_float(h)) != v)
          throw Error(
              fmt::format("{}: element [{}][{}] is {} (E2M1 {} x 2^{}), which FP16 cannot hold exactly; "
                          "functional emulation computes in FP16",
                          what, r, b * kMxfp4Block + i, v, e2m1(code), exponent));
        out[static_cast<std::size_t>(r * cols + b * kMxfp4Block + i)] = h;
      }
    }
  return out;
}

Mxfp4Blocks quantize_mxfp4(const std::uint16_t* values, std::int64_t rows, std::int64_t cols,
                           const std::string& what) {
  DUPLEX_ASSERT(cols % kMxfp4Block == 0, "MXFP4 rows of whole blocks");
  Mxfp4Blocks q;
  q.blocks.assign(static_cast<std::size_t>(rows * cols / 2), 0);
  q.scales.resize(static_cast<std::size_t>(rows * cols / kMxfp4Block));
  for (std::int64_t start = 0, b = 0; start < rows * cols; start += kMxfp4Block, ++b) {
    const std::uint16_t* block = values + start;
    float max = 0.0f;
    for (std::int64_t i = 0; i < kMxfp4Block; ++i)
      max = std::max(max, std::fabs(half_bits_to_float(block[i])));
    const int exponent = max == 0.0f ? 0 : static_cast<int>(std::floor(std::log2(max))) - 2;
    q.scales[static_cast<std::size_t>(b)] = static_cast<std::uint8_t>(exponent + 127);
    for (std::int64_t i = 0; i < kMxfp4Block; ++i) {
      const float x = half_bits_to_float(block[i]);
      const std::uint8_t code = nearest_e2m1(std::ldexp(x, -exponent));
      if (std::ldexp(e2m1(code), exponent) != x)
        throw Error(
            fmt::format("{}: element [{}][{}] = {} is not on the MXFP4 grid of its block of 32 (E2M1 x 2^{})",
                        what, (start + i) / cols, (start + i) % cols, x, exponent));
      q.blocks[static_cast<std::size_t>((start + i) / 2)] |=
          static_cast<std::uint8_t>(i % 2 == 0 ? code : code << 4);
    }
  }
  return q;
}

void round_to_mxfp4(std::uint16_t* values, std::int64_t rows, std::int64_t cols) {
  DUPLEX_ASSERT(cols % kMxfp4Block == 0, "MXFP4 rows of whole blocks");
  for (std::int64_t start = 0; start < rows * cols; start += kMxfp4Block) {
    std::uint16_t* block = values + start;
    float max = 0.0f;
    for (std::int64_t i = 0; i < kMxfp4Block; ++i)
      max = std::max(max, std::fabs(half_bits_to_float(block[i])));
    if (max == 0.0f) continue;
    const int exponent = static_cast<int>(std::floor(std::log2(max))) - 2;
    for (std::int64_t i = 0; i < kMxfp4Block; ++i) {
      const float x = std::ldexp(half_bits_to_float(block[i]), -exponent);
      block[i] = float_to_half_bits(static_cast<float>(std::ldexp(e2m1(nearest_e2m1(x)), exponent)));
    }
  }
}

}  // namespace duplex::runtime::functional
