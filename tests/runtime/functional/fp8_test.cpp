// The FP8 codec (fp8.hpp) against the E4M3 definition: every code's value, nearest rounding with ties to
// even, power-of-two scales over partial 128 x 128 blocks and per row, exact round trips, FP16 rounding of
// arbitrary scales, and the errors; and its INT8 codes per row (int8_channel).
#include "duplex/runtime/functional/fp8.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "checkpoint_files.hpp"
#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"

namespace duplex::runtime::functional {
namespace {

using testing::error_of;

constexpr Fp8Grid k128{kFp8Block, kFp8Block};
constexpr Fp8Grid kRow{1, 5};  // one scale for each row of 5

std::vector<std::uint16_t> halves(const std::vector<float>& v) {
  std::vector<std::uint16_t> out;
  for (float x : v) out.push_back(float_to_half_bits(x));
  return out;
}

// OCP E4M3FN: bias 7, subnormals m x 2^-9, largest 448, S.1111.111 NaN, no infinities.
TEST(Fp8Codec, EveryCodeHasItsE4m3Value) {
  EXPECT_EQ(e4m3_value(0x00), 0.0f);
  EXPECT_EQ(e4m3_value(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(e4m3_value(0x07), 7 * std::ldexp(1.0f, -9));
  EXPECT_EQ(e4m3_value(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(e4m3_value(0x38), 1.0f);
  EXPECT_EQ(e4m3_value(0x39), 1.125f);
  EXPECT_EQ(e4m3_value(0x7e), 448.0f);
  EXPECT_EQ(e4m3_value(0xfe), -448.0f);
  EXPECT_TRUE(std::signbit(e4m3_value(0x80)));
  EXPECT_TRUE(std::isnan(e4m3_value(0x7f)));
  EXPECT_TRUE(std::isnan(e4m3_value(0xff)));
  for (int c = 1; c < 0x7f; ++c)
    EXPECT_GT(e4m3_value(static_cast<std::uint8_t>(c)), e4m3_value(static_cast<std::uint8_t>(c - 1))) << c;
}

// A 300 x 200 matrix has 3 x 2 blocks, the last ones partial. Values rounded onto the grid come back bit for
// bit through codes and power-of-two scales, each scale the least 2^k with 448 x 2^k >= the block's maximum.
TEST(Fp8Codec, RoundedValuesComeBackExactlyOverPartialBlocks) {
  const std::int64_t rows = 300, cols = 200;
  std::vector<std::uint16_t> v(rows * cols);
  for (std::int64_t i = 0; i < rows * cols; ++i)  // magnitudes spread over several octaves, per block
    v[static_cast<std::size_t>(i)] = float_to_half_bits(
        static_cast<float>(std::sin(0.37 * static_cast<double>(i)) *
                           static_cast<double>(1 + (i / cols) / 128 + 3 * ((i % cols) / 128))));
  std::vector<std::uint16_t> rounded = v;
  round_to_fp8_blocks(rounded.data(), rows, cols, k128);
  EXPECT_NE(rounded, v);
  const Fp8Blocks q = quantize_fp8_blocks(rounded.data(), rows, cols, k128, "m");
  ASSERT_EQ(q.scales.size(), 3u * 2u);
  ASSERT_EQ(q.codes.size(), static_cast<std::size_t>(rows * cols));
  for (float s : q.scales) {
    int e = 0;
    EXPECT_EQ(std::frexp(s, &e), 0.5f) << s;  // a power of two
  }
  // Block [2][1] (rows 256..299, columns 128..199): the least 2^k over its maximum.
  double amax = 0;
  for (std::int64_t r = 256; r < rows; ++r)
    for (std::int64_t c = 128; c < cols; ++c)
      amax = std::max(amax, static_cast<double>(std::fabs(half_bits_to_float(rounded[r * cols + c]))));
  const double s = q.scales[2 * 2 + 1];
  EXPECT_GE(448 * s, amax);
  EXPECT_LT(448 * s / 2, amax);
  EXPECT_EQ(dequantize_fp8_blocks(q.codes.data(), q.scales.data(), rows, cols, k128, "m"), rounded);
  // Rounding is idempotent, and every rounded value is within half an E4M3 step of where it was.
  std::vector<std::uint16_t> again = rounded;
  round_to_fp8_blocks(again.data(), rows, cols, k128);
  EXPECT_EQ(again, rounded);
  for (std::size_t i = 0; i < v.size(); ++i) {
    const double x = half_bits_to_float(v[i]), y = half_bits_to_float(rounded[i]);
    EXPECT_LE(std::fabs(x - y), std::max(std::fabs(x) / 16, 4.0 / 512)) << i;  // 3 mantissa bits; subnormals
  }
}

// Per channel (fp8_channel: one scale per row, [rows][1]): each row's scale the least 2^k over that row's
// maximum, whatever the other rows hold; a row of zeros keeps scale 1.
TEST(Fp8Codec, ChannelScalesFollowEachRow) {
  const std::int64_t rows = 4, cols = 300;
  EXPECT_EQ(fp8_grid(compiler::DType::kFp8Channel, 1, cols).rows, 1);
  EXPECT_EQ(fp8_grid(compiler::DType::kFp8Channel, 1, cols).cols, cols);
  EXPECT_EQ(fp8_grid(compiler::DType::kFp8Block128, 1, cols).cols, kFp8Block);
  const Fp8Grid grid = fp8_grid(compiler::DType::kFp8Channel, 1, cols);
  EXPECT_EQ(fp8_scale_shape(grid, rows, cols), (std::array<std::int64_t, 2>{rows, 1}));
  EXPECT_EQ(fp8_scale_shape(k128, 300, 200), (std::array<std::int64_t, 2>{3, 2}));
  const double row_max[rows] = {0.05, 300.0, 0.0, 1.0};
  std::vector<std::uint16_t> v(rows * cols);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      v[static_cast<std::size_t>(r * cols + c)] =
          float_to_half_bits(static_cast<float>(row_max[r] * std::cos(0.1 * static_cast<double>(c))));
  round_to_fp8_blocks(v.data(), rows, cols, grid);
  const Fp8Blocks q = quantize_fp8_blocks(v.data(), rows, cols, grid, "m");
  ASSERT_EQ(q.scales.size(), static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) {
    double amax = 0;
    for (std::int64_t c = 0; c < cols; ++c)
      amax = std::max(amax, static_cast<double>(std::fabs(half_bits_to_float(v[r * cols + c]))));
    const double s = q.scales[static_cast<std::size_t>(r)];
    if (amax == 0) {
      EXPECT_EQ(s, 1.0) << r;
      continue;
    }
    EXPECT_GE(448 * s, amax) << r;
    EXPECT_LT(448 * s / 2, amax) << r;
  }
  EXPECT_EQ(dequantize_fp8_blocks(q.codes.data(), q.scales.data(), rows, cols, grid, "m"), v);
}

// Nearest with ties to the even code: 1.0625 lies between 1 (0x38) and 1.125 (0x39), 1.1875 between 1.125
// and 1.25 (0x3a); beyond 448 x scale a value saturates. A block of zeros keeps scale 1.
TEST(Fp8Codec, RoundingIsNearestTiesToEvenAndSaturates) {
  std::vector<std::uint16_t> v = halves({448, 1.0625f, 1.1875f, -1.0625f, 0.0f});
  round_to_fp8_blocks(v.data(), 1, 5, kRow);
  EXPECT_EQ(v, halves({448, 1.0f, 1.25f, -1.0f, 0.0f}));
  const Fp8Blocks zeros = quantize_fp8_blocks(halves({0, 0}).data(), 1, 2, k128, "z");
  EXPECT_EQ(zeros.scales, std::vector<float>{1.0f});
  EXPECT_EQ(zeros.codes, (std::vector<std::uint8_t>{0, 0}));
}

// Checkpoint scales need not be powers of two: each product is rounded once to the nearest FP16.
TEST(Fp8Codec, ArbitraryScalesRoundOnceToFp16) {
  const std::vector<std::uint8_t> codes{0x38, 0x39, 0x7e, 0x01, 0xb9};
  const float scale = 0.0123456789f;
  const std::vector<std::uint16_t> h = dequantize_fp8_blocks(codes.data(), &scale, 1, 5, kRow, "w");
  for (std::size_t i = 0; i < codes.size(); ++i) {
    const double exact = static_cast<double>(e4m3_value(codes[i])) * scale;
    const double got = half_bits_to_float(h[i]);
    const double ulp = std::ldexp(1.0, std::ilogb(std::max(std::fabs(exact), std::ldexp(1.0, -14))) - 10);
    EXPECT_LE(std::fabs(got - exact), ulp / 2) << i;
  }
}

// INT8 per row (int8_channel, W8A8-INT8): a code is its two's complement value, -128..127; a row's scale the
// least 2^k with 127 x 2^k >= its maximum; values round to the nearest integer multiple (ties to even) within
// -127..127, and come back bit for bit; arbitrary scales round once to FP16; off-grid values are named.
TEST(Fp8Codec, Int8CodesPerRow) {
  const Fp8Grid grid = fp8_grid(compiler::DType::kInt8Channel, 1, 5);
  EXPECT_TRUE(grid.int8);
  EXPECT_EQ(grid.rows, 1);
  EXPECT_EQ(grid.cols, 5);
  EXPECT_FALSE(fp8_grid(compiler::DType::kFp8Channel, 1, 5).int8);
  const std::vector<std::uint8_t> codes{0x00, 0x01, 0x7f, 0x80, 0xff};  // 0, 1, 127, -128, -1
  const float scale = 0.5f;
  EXPECT_EQ(dequantize_fp8_blocks(codes.data(), &scale, 1, 5, grid, "w"),
            halves({0.0f, 0.5f, 63.5f, -64.0f, -0.5f}));
  // Row maximum 127: scale 1; 2.5 and 3.5 tie to 2 and 4, -0.5 to 0 (code 0: +0), 126.625 to 127.
  std::vector<std::uint16_t> v = halves({127, 2.5f, 3.5f, -0.5f, 126.625f});
  round_to_fp8_blocks(v.data(), 1, 5, grid);
  EXPECT_EQ(v, halves({127, 2.0f, 4.0f, 0.0f, 127.0f}));
  // Row maximum 300: scale 4 (127 x 2 = 254 < 300 <= 508).
  std::vector<std::uint16_t> w = halves({300, -7, 1, 0, 9});
  round_to_fp8_blocks(w.data(), 1, 5, grid);
  EXPECT_EQ(w, halves({300, -8, 0, 0, 8}));
  const Fp8Blocks q = quantize_fp8_blocks(w.data(), 1, 5, grid, "w");
  EXPECT_EQ(q.scales, std::vector<float>{4.0f});
  EXPECT_EQ(q.codes, (std::vector<std::uint8_t>{75, 0xfe, 0, 0, 2}));
  EXPECT_EQ(dequantize_fp8_blocks(q.codes.data(), q.scales.data(), 1, 5, grid, "w"), w);
  const float odd = 0.0123456789f;
  const std::vector<std::uint16_t> h = dequantize_fp8_blocks(codes.data(), &odd, 1, 5, grid, "w");
  const double exact = 127.0 * static_cast<double>(odd);
  EXPECT_LE(std::fabs(half_bits_to_float(h[2]) - exact), std::ldexp(1.0, std::ilogb(exact) - 11)) << exact;
  const std::vector<std::uint16_t> off = halves({127, 1.5f});
  EXPECT_NE(error_of([&] {
              quantize_fp8_blocks(off.data(), 1, 2, fp8_grid(compiler::DType::kInt8Channel, 1, 2), "w");
            }).find("w: element [0][1] = 1.5 is not on the INT8 grid of its 1 x 2 block (INT8 x 2^0)"),
            std::string::npos);
}

TEST(Fp8Codec, BadCodesScalesAndOffGridValuesAreNamed) {
  const std::vector<std::uint8_t> nan{0x38, 0x7f};
  const float one = 1.0f, negative = -1.0f, big = 1000.0f;
  EXPECT_NE(error_of([&] {
              dequantize_fp8_blocks(nan.data(), &one, 1, 2, k128, "w");
            }).find("w: element [0][1] is NaN (E4M3 code 0x7f)"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              dequantize_fp8_blocks(nan.data(), &negative, 1, 1, k128, "w");
            }).find("w: the scale of block [0][0] is -1"),
            std::string::npos);
  const std::uint8_t max = 0x7e;
  EXPECT_NE(error_of([&] {
              dequantize_fp8_blocks(&max, &big, 1, 1, k128, "w");
            }).find("outside FP16's finite range"),
            std::string::npos);
  const std::vector<std::uint16_t> off = halves({448, 1.0009765625f});  // 1 + 2^-10 is no E4M3 value
  EXPECT_NE(error_of([&] {
              quantize_fp8_blocks(off.data(), 1, 2, k128, "w");
            }).find("w: element [0][1] = 1.0009765625 is not on the FP8 grid"),
            std::string::npos);
}

}  // namespace
}  // namespace duplex::runtime::functional
