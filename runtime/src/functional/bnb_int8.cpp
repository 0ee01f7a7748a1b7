#include "duplex/runtime/functional/bnb_int8.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"

namespace duplex::runtime::functional {
namespace {

// 1 / 127 as bitsandbytes' int8_vectorwise_dequant multiplies by it (7.874015718698502e-3, in FP32).
constexpr float kInverse127 = 7.874015718698502e-3f;

// The FP32 value of code q under absmax scb, as int8_vectorwise_dequant computes it: (q x SCB) x (1 / 127).
float dequantized(std::int8_t q, float scb) {
  return static_cast<float>(q) * scb * kInverse127;
}

// Row r's largest magnitude (FP32: exact for FP16 values).
float row_absmax(const std::uint16_t* values, std::int64_t r, std::int64_t cols) {
  float m = 0;
  for (std::int64_t c = 0; c < cols; ++c)
    m = std::max(m, std::fabs(half_bits_to_float(values[r * cols + c])));
  return m;
}

// The nearest integer of x x 127 / scb (ties to even), in -127..127 (|x| <= scb).
std::int8_t nearest_code(float x, float scb) {
  DUPLEX_ASSERT(std::isfinite(x) && std::isfinite(scb), "LLM.int8() codes of finite values");
  if (scb == 0) return 0;
  const double v = std::nearbyint(static_cast<double>(x) * 127.0 / static_cast<double>(scb));
  return static_cast<std::int8_t>(std::clamp(v, -127.0, 127.0));
}

}  // namespace

std::vector<std::uint16_t> dequantize_bnb_int8(const BnbInt8Matrix& m, const std::string& what) {
  DUPLEX_ASSERT(static_cast<std::int64_t>(m.codes.size()) == m.rows * m.cols &&
                    static_cast<std::int64_t>(m.scb.size()) == m.rows,
                "an LLM.int8() matrix's codes and SCB match its shape");
  std::vector<std::uint16_t> out(m.codes.size());
  for (std::int64_t r = 0; r < m.rows; ++r) {
    const float scb = m.scb[static_cast<std::size_t>(r)];
    if (!std::isfinite(scb) || scb < 0)
      throw Error(fmt::format("{}: SCB[{}] is {}; expected a finite absmax >= 0", what, r, scb));
    for (std::int64_t c = 0; c < m.cols; ++c) {
      const std::size_t i = static_cast<std::size_t>(r * m.cols + c);
      out[i] = float_to_half_bits(dequantized(m.codes[i], scb));
      if (!std::isfinite(half_bits_to_float(out[i])))
        throw Error(fmt::format("{}: element ({}, {}) = {} x {} / 127 is beyond FP16's range", what, r, c,
                                m.codes[i], scb));
    }
  }
  return out;
}

BnbInt8Matrix quantize_bnb_int8(const std::uint16_t* values, std::int64_t rows, std::int64_t cols,
                                const std::string& what) {
  BnbInt8Matrix m{rows, cols, std::vector<std::int8_t>(static_cast<std::size_t>(rows * cols)),
                  std::vector<float>(static_cast<std::size_t>(rows))};
  for (std::int64_t i = 0; i < rows * cols; ++i)
    if (!std::isfinite(half_bits_to_float(values[i])))
      throw Error(fmt::format("{}: element ({}, {}) is not finite", what, i / cols, i % cols));
  for (std::int64_t r = 0; r < rows; ++r) {
    const float scb = m.scb[static_cast<std::size_t>(r)] = row_absmax(values, r, cols);
    for (std::int64_t c = 0; c < cols; ++c) {
      const std::size_t i = static_cast<std::size_t>(r * cols + c);
      const float x = half_bits_to_float(values[i]);
      m.codes[i] = nearest_code(x, scb);
      if (half_bits_to_float(float_to_half_bits(dequantized(m.codes[i], scb))) != x)
        throw Error(fmt::format(
            "{}: element ({}, {}) = {} is not an LLM.int8() value of its row (absmax {}: code x absmax / "
            "127); duplex writes 8-bit checkpoints of weights on that grid, as random weights of a "
            "bnb_int8 model are",
            what, r, c, x, scb));
    }
  }
  return m;
}

void round_to_bnb_int8(std::uint16_t* values, std::int64_t rows, std::int64_t cols) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float scb = row_absmax(values, r, cols);
    for (std::int64_t c = 0; c < cols; ++c) {
      std::uint16_t& v = values[r * cols + c];
      v = float_to_half_bits(dequantized(nearest_code(half_bits_to_float(v), scb), scb));
    }
  }
}

}  // namespace duplex::runtime::functional
