#pragma once
// Block-scaled FP8 matrices, as DeepSeek-V3's and Qwen3's FP8 checkpoints store them (HF FineGrainedFP8,
// quant_method "fp8"): NAME [rows][cols] in E4M3 (OCP FP8 E4M3FN: 1 sign, 4 exponent bits of bias 7, 3
// mantissa bits; no infinities, S.1111.111 is NaN; largest 448, smallest subnormal 2^-9) and NAME_scale_inv
// [ceil(rows / 128)][ceil(cols / 128)] in FP32: element (r, c) is e4m3 x scale[r / 128][c / 128] (DeepSeek's
// weight_dequant; the last blocks of a row or column may be partial).
// The emulation computes in FP16: a dequantized element is rounded once to FP16 (exact when the scales are
// powers of two, as scale_fmt ue8m0's are and as duplex writes them).
#include <cstdint>
#include <string>
#include <vector>

namespace duplex::runtime::functional {

inline constexpr std::int64_t kFp8Block = 128;  // rows and columns per scale (weight_block_size [128, 128])

float e4m3_value(std::uint8_t code);             // NaN for 0x7f and 0xff
std::int64_t fp8_block_count(std::int64_t n);    // blocks along n rows or columns: ceil(n / 128)

// The FP16 bits of the rows x cols E4M3 `codes` (row-major) times their block's scale (`scales`,
// [ceil(rows / 128)][ceil(cols / 128)]), each rounded to the nearest FP16 (ties to even). A NaN code, a
// negative or non-finite scale, or a product beyond FP16's range is a duplex::Error naming `what` and the
// element or block.
std::vector<std::uint16_t> dequantize_fp8_blocks(const std::uint8_t* codes, const float* scales,
                                                 std::int64_t rows, std::int64_t cols,
                                                 const std::string& what);

// FP16 values in E4M3 codes and power-of-two block scales: each 128 x 128 block's scale is the least 2^k with
// 448 x 2^k >= its largest magnitude (1 for a block of zeros), each code the nearest E4M3 value of
// value / scale (ties to the even code).
struct Fp8Blocks {
  std::vector<std::uint8_t> codes;  // rows x cols
  std::vector<float> scales;        // ceil(rows / 128) x ceil(cols / 128)
};
// Every value must come back exactly from its code and scale (random weights of an FP8 model and
// power-of-two-scaled checkpoints do); otherwise a duplex::Error naming `what` and the element.
Fp8Blocks quantize_fp8_blocks(const std::uint16_t* values, std::int64_t rows, std::int64_t cols,
                              const std::string& what);
// Rounds rows x cols FP16 values in place to that grid: each to its nearest code times its block's scale
// (then exact in FP16 unless the scale is below 2^-15, where FP16's subnormals round it once more).
void round_to_fp8_blocks(std::uint16_t* values, std::int64_t rows, std::int64_t cols);

}  // namespace duplex::runtime::functional
