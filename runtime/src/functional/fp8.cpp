#include "duplex/runtime/functional/fp8.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"

namespace duplex::runtime::functional {
namespace {

// The 127 non-negative finite E4M3 values, by code (0x00..0x7e): increasing with the code.
const std::array<float, 127>& magnitudes() {
  static const std::array<float, 127> table = [] {
    std::array<float, 127> t{};
    for (std::size_t c = 0; c < t.size(); ++c) t[c] = e4m3_value(static_cast<std::uint8_t>(c));
    return t;
  }();
  return table;
}

// The E4M3 code nearest x (|x| saturating at 448; ties to the even code, as IEEE rounding does).
std::uint8_t nearest_e4m3(double x) {
  const std::array<float, 127>& t = magnitudes();
  const double a = std::min(std::fabs(x), 448.0);
  const auto above = std::lower_bound(t.begin(), t.end(), a);  // first value >= a
  auto code = static_cast<std::uint8_t>(above - t.begin());
  if (code > 0 && static_cast<double>(*above) != a) {
    const double up = static_cast<double>(*above) - a, down = a - static_cast<double>(t[code - 1u]);
    if (down < up || (down == up && (code - 1u) % 2 == 0)) --code;
  }
  return static_cast<std::uint8_t>(code | (std::signbit(x) && code != 0 ? 0x80u : 0u));
}

// Sets `out` to the FP16 nearest v (ties to even); false when that is beyond FP16's finite range.
bool nearest_half(double v, std::uint16_t& out) {
  std::uint16_t h = float_to_half_bits(static_cast<float>(v));  // within one FP16 step of the nearest
  if (!std::isfinite(half_bits_to_float(h))) return false;      // overflow (IEEE: to infinity)
  auto error = [&](std::uint16_t c) { return std::fabs(static_cast<double>(half_bits_to_float(c)) - v); };
  for (int step : {-1, 1}) {  // a neighbour nearer (the float rounding may have moved v onto a midpoint)
    const auto c = static_cast<std::uint16_t>(h + step);
    if ((c & 0x7c00u) == 0x7c00u || (c & 0x8000u) != (h & 0x8000u)) continue;
    if (error(c) < error(h) || (error(c) == error(h) && c % 2 == 0)) h = c;
  }
  out = h;
  return true;
}

constexpr const char* kOffGrid =
    "8-bit checkpoints are written with power-of-two scales, which random weights of an FP8 or INT8 model "
    "and checkpoints with such scales (scale_fmt ue8m0) are on";

// The largest code magnitude of the grid's codes: E4M3's 448, INT8's 127 (symmetric: -127..127 written).
double code_max(Fp8Grid grid) {
  return grid.int8 ? 127.0 : 448.0;
}

// The value of an 8-bit code of the grid's kind.
float code_value(Fp8Grid grid, std::uint8_t code) {
  return grid.int8 ? static_cast<float>(static_cast<std::int8_t>(code)) : e4m3_value(code);
}

// The code nearest x: E4M3's (saturating), or the nearest integer in -127..127 (ties to even).
std::uint8_t nearest_code(Fp8Grid grid, double x) {
  if (!grid.int8) return nearest_e4m3(x);
  const double q = std::clamp(std::nearbyint(x), -127.0, 127.0);  // default rounding: to nearest, ties even
  return static_cast<std::uint8_t>(static_cast<std::int8_t>(q));
}

// The least power of two 2^k with max_code x 2^k >= amax (amax > 0).
int scale_exponent(double amax, double max_code) {
  int k = static_cast<int>(std::ceil(std::log2(amax / max_code)));
  while (std::ldexp(max_code, k) < amax) ++k;
  while (std::ldexp(max_code, k - 1) >= amax) --k;
  return k;
}

// Calls f(r0, r1, c0, c1, block index) for each block of `grid` in a rows x cols matrix, row-major.
template <typename F>
void for_each_block(std::int64_t rows, std::int64_t cols, Fp8Grid grid, F&& f) {
  DUPLEX_ASSERT(grid.rows > 0 && grid.cols > 0, "an FP8 grid of empty blocks");
  const std::int64_t per_row = fp8_scale_shape(grid, rows, cols)[1];
  for (std::int64_t br = 0; br * grid.rows < rows; ++br)
    for (std::int64_t bc = 0; bc * grid.cols < cols; ++bc)
      f(br * grid.rows, std::min(rows, (br + 1) * grid.rows), bc * grid.cols,
        std::min(cols, (bc + 1) * grid.cols), br * per_row + bc);
}

double block_amax(const std::uint16_t* values, std::int64_t cols, std::int64_t r0, std::int64_t r1,
                  std::int64_t c0, std::int64_t c1) {
  double amax = 0;
  for (std::int64_t r = r0; r < r1; ++r)
    for (std::int64_t c = c0; c < c1; ++c)
      amax = std::max(amax, static_cast<double>(std::fabs(half_bits_to_float(values[r * cols + c]))));
  return amax;
}

}  // namespace

float e4m3_value(std::uint8_t code) {
  const int exponent = (code >> 3) & 0xf, mantissa = code & 7;
  if (exponent == 0xf && mantissa == 7) return std::nanf("");
  const float m = exponent == 0 ? std::ldexp(static_cast<float>(mantissa), -9)
                                : std::ldexp(static_cast<float>(8 + mantissa), exponent - 10);
  return (code & 0x80u) != 0 ? -m : m;
}

Fp8Grid fp8_grid(compiler::DType format, std::int64_t rows, std::int64_t cols) {
  if (format == compiler::DType::kFp8Block128) return {kFp8Block, kFp8Block};
  if (format == compiler::DType::kFp8Tensor)
    return {std::max<std::int64_t>(rows, 1), std::max<std::int64_t>(cols, 1)};
  DUPLEX_ASSERT(format == compiler::DType::kFp8Channel || format == compiler::DType::kInt8Channel,
                "not a scaled 8-bit matrix format");
  return {1, std::max<std::int64_t>(cols, 1), format == compiler::DType::kInt8Channel};
}

std::array<std::int64_t, 2> fp8_scale_shape(Fp8Grid grid, std::int64_t rows, std::int64_t cols) {
  return {(rows + grid.rows - 1) / grid.rows, (cols + grid.cols - 1) / grid.cols};
}

std::vector<std::uint16_t> dequantize_fp8_blocks(const std::uint8_t* codes, const float* scales,
                                                 std::int64_t rows, std::int64_t cols, Fp8Grid grid,
                                                 const std::string& what) {
  std::vector<std::uint16_t> out(static_cast<std::size_t>(rows * cols));
  for_each_block(
      rows, cols, grid,
      [&](std::int64_t r0, std::int64_t r1, std::int64_t c0, std::int64_t c1, std::int64_t b) {
        const float scale = scales[b];
        if (!std::isfinite(scale) || scale < 0)
          throw Error(fmt::format("{}: the scale of block [{}][{}] is {}; expected a finite number >= 0",
                                  what, r0 / grid.rows, c0 / grid.cols, scale));
        for (std::int64_t r = r0; r < r1; ++r)
          for (std::int64_t c = c0; c < c1; ++c) {
            const std::uint8_t code = codes[r * cols + c];
            const float q = code_value(grid, code);
            if (std::isnan(q))
              throw Error(fmt::format("{}: element [{}][{}] is NaN (E4M3 code 0x{:02x})", what, r, c, code));
            const double v = static_cast<double>(q) * static_cast<double>(scale);  // exact in double
            if (!nearest_half(v, out[static_cast<std::size_t>(r * cols + c)]))
              throw Error(
                  fmt::format("{}: element [{}][{}] is {} ({} {} x scale {}), outside FP16's finite range "
                              "(+-65504); functional emulation computes in FP16",
                              what, r, c, v, grid.int8 ? "INT8" : "E4M3", q, scale));
          }
      });
  return out;
}

Fp8Blocks quantize_fp8_blocks(const std::uint16_t* values, std::int64_t rows, std::int64_t cols, Fp8Grid grid,
                              const std::string& what) {
  Fp8Blocks q;
  q.codes.resize(static_cast<std::size_t>(rows * cols));
  const std::array<std::int64_t, 2> shape = fp8_scale_shape(grid, rows, cols);
  q.scales.resize(static_cast<std::size_t>(shape[0] * shape[1]));
  for_each_block(rows, cols, grid,
                 [&](std::int64_t r0, std::int64_t r1, std::int64_t c0, std::int64_t c1, std::int64_t b) {
                   const double amax = block_amax(values, cols, r0, r1, c0, c1);
                   const int k = amax > 0 ? scale_exponent(amax, code_max(grid)) : 0;
                   q.scales[static_cast<std::size_t>(b)] = std::ldexp(1.0f, k);
                   for (std::int64_t r = r0; r < r1; ++r)
                     for (std::int64_t c = c0; c < c1; ++c) {
                       const double v = half_bits_to_float(values[r * cols + c]);
                       const std::uint8_t code = nearest_code(grid, std::ldexp(v, -k));
                       if (std::ldexp(static_cast<double>(code_value(grid, code)), k) != v)
                         throw Error(
                             fmt::format("{}: element [{}][{}] = {} is not on the {} grid of its {} x {} "
                                         "block ({} x 2^{}); {}",
                                         what, r, c, v, grid.int8 ? "INT8" : "FP8", r1 - r0, c1 - c0,
                                         grid.int8 ? "INT8" : "E4M3", k, kOffGrid));
                       q.codes[static_cast<std::size_t>(r * cols + c)] = code;
                     }
                 });
  return q;
}

void round_to_fp8_blocks(std::uint16_t* values, std::int64_t rows, std::int64_t cols, Fp8Grid grid) {
  for_each_block(rows, cols, grid,
                 [&](std::int64_t r0, std::int64_t r1, std::int64_t c0, std::int64_t c1, std::int64_t) {
                   const double amax = block_amax(values, cols, r0, r1, c0, c1);
                   // Zeros, -0 too, become +0 codes.
                   const int k = amax > 0 ? scale_exponent(amax, code_max(grid)) : 0;
                   for (std::int64_t r = r0; r < r1; ++r)
                     for (std::int64_t c = c0; c < c1; ++c) {
                       std::uint16_t& h = values[r * cols + c];
                       const std::uint8_t code =
                           nearest_code(grid, std::ldexp(static_cast<double>(half_bits_to_float(h)), -k));
                       nearest_half(std::ldexp(static_cast<double>(code_value(grid, code)), k), h);
                     }
                 });
}

}  // namespace duplex::runtime::functional
