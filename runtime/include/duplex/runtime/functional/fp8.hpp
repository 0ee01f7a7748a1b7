#pragma once
// FP8 matrices as the FP8 releases store them: NAME [rows][cols] in E4M3 (OCP FP8 E4M3FN: 1 sign, 4 exponent
// bits of bias 7, 3 mantissa bits; no infinities, S.1111.111 is NaN; largest 448, smallest subnormal 2^-9)
// and one scale per block of a grid (Fp8Grid) beside it, [ceil(rows / grid.rows)][ceil(cols / grid.cols)]:
// element (r, c) is e4m3 x scale[r / grid.rows][c / grid.cols] (the last blocks of a row or column may be
// partial).
// - 128 x 128 blocks (fp8_block128): DeepSeek-V3's and Qwen3's releases (HF FineGrainedFP8, quant_method
//   "fp8"), FP32 scales in NAME_scale_inv (DeepSeek's weight_dequant).
// - one row each (fp8_channel): llm-compressor's FP8-dynamic releases (quant_method "compressed-tensors",
//   strategy channel), scales [rows][1] in NAME_scale.
// - one block the whole matrix (fp8_tensor): AutoFP8's releases (quant_method "fp8" without
//   weight_block_size) and llm-compressor's FP8 scheme (strategy tensor), one scale in NAME_scale (stored as
//   shape [] or [1]).
// INT8 matrices per row (int8_channel: llm-compressor's W8A8-INT8 releases, format int-quantized) are stored
// alike, NAME in I8 (two's complement, -128..127) and scales [rows][1] in NAME_scale: the functions below
// take either code (Fp8Grid::int8). The emulation computes in FP16: a dequantized element is rounded once to
// FP16 (exact when the scales are powers of two, as scale_fmt ue8m0's are and as duplex writes them).
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "duplex/compiler/dtype.hpp"

namespace duplex::runtime::functional {

// The rows and columns of a matrix that share one scale, and the kind of its 8-bit codes.
struct Fp8Grid {
  std::int64_t rows = 0, cols = 0;
  bool int8 = false;  // codes are INT8 (int8_channel), else E4M3
};
inline constexpr std::int64_t kFp8Block = 128;  // weight_block_size [128, 128]
// The grid of format fp8_block128 (128 x 128), fp8_channel or int8_channel (1 x cols) or fp8_tensor (rows x
// cols) for a matrix of `rows` x `cols`.
Fp8Grid fp8_grid(compiler::DType format, std::int64_t rows, std::int64_t cols);
// The scales' shape for a rows x cols matrix: {ceil(rows / grid.rows), ceil(cols / grid.cols)}.
std::array<std::int64_t, 2> fp8_scale_shape(Fp8Grid grid, std::int64_t rows, std::int64_t cols);

float e4m3_value(std::uint8_t code);  // NaN for 0x7f and 0xff

// The FP16 bits of the rows x cols E4M3 (or INT8) `codes` (row-major) times their block's scale (`scales`,
// row-major in fp8_scale_shape), each rounded to the nearest FP16 (ties to even). A NaN code, a negative or
// non-finite scale, or a product beyond FP16's range is a duplex::Error naming `what` and the element or
// block.
std::vector<std::uint16_t> dequantize_fp8_blocks(const std::uint8_t* codes, const float* scales,
                                                 std::int64_t rows, std::int64_t cols, Fp8Grid grid,
                                                 const std::string& what);

// FP16 values in E4M3 codes and power-of-two block scales: each block's scale is the least 2^k with
// 448 x 2^k >= its largest magnitude (1 for a block of zeros), each code the nearest E4M3 value of
// value / scale (ties to the even code). INT8 alike with 127 for 448 and the nearest integer.
struct Fp8Blocks {
  std::vector<std::uint8_t> codes;  // rows x cols
  std::vector<float> scales;        // fp8_scale_shape
};
// Every value must come back exactly from its code and scale (random weights of an FP8 model and
// power-of-two-scaled checkpoints do); otherwise a duplex::Error naming `what` and the element.
Fp8Blocks quantize_fp8_blocks(const std::uint16_t* values, std::int64_t rows, std::int64_t cols, Fp8Grid grid,
                              const std::string& what);
// Rounds rows x cols FP16 values in place to that grid: each to its nearest code times its block's scale
// (then exact in FP16 unless the scale is below 2^-15, where FP16's subnormals round it once more).
void round_to_fp8_blocks(std::uint16_t* values, std::int64_t rows, std::int64_t cols, Fp8Grid grid);

}  // namespace duplex::runtime::functional
