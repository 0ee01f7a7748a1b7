#pragma once
// OCP microscaling FP4 (MXFP4), as gpt-oss's checkpoints store their experts: blocks of 32 E2M1 elements
// (1 sign, 2 exponent, 1 mantissa bit: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives) sharing one E8M0 scale
// 2^(s - 127). A byte holds two elements, the first in its low nibble (HF's convert_moe_packed_tensors).
// The emulation computes in FP16, which holds every MXFP4 value whose scale is within its range exactly.
#include <cstdint>
#include <string>
#include <vector>

namespace duplex::runtime::functional {

inline constexpr std::int64_t kMxfp4Block = 32;  // elements per shared scale (OCP MX)

// The FP16 bits of rows x cols elements stored as blocks [rows][cols / 32][16] (bytes) and scales
// [rows][cols / 32]; cols a multiple of 32. A value FP16 cannot hold exactly is a duplex::Error naming `what`
// and the element.
std::vector<std::uint16_t> dequantize_mxfp4(const std::uint8_t* blocks, const std::uint8_t* scales,
                                            std::int64_t rows, std::int64_t cols, const std::string& what);

// rows x cols FP16 values (row-major, cols a multiple of 32) as MXFP4 blocks [rows][cols / 32][16] and scales
// [rows][cols / 32], each block's scale 2^(floor(log2 max|x|) - 2) (a block of zeros: 2^0, codes 0). Every
// value must be its E2M1 code times that scale exactly (random weights of an MXFP4 model and MXFP4
// checkpoints are); otherwise a duplex::Error naming `what` and the element.
struct Mxfp4Blocks {
  std::vector<std::uint8_t> blocks, scales;
};
Mxfp4Blocks quantize_mxfp4(const std::uint16_t* values, std::int64_t rows, std::int64_t cols,
                           const std::string& what);

// Rounds rows x cols FP16 values (row-major, cols a multiple of 32) in place to the nearest MXFP4 value of
// their block: the shared scale 2^(floor(log2 max|x|) - 2) (OCP MX: E2M1's largest exponent is 2), each
// element the nearest E2M1 value times it (ties to the even code), saturating at +-6; a block of zeros stays
// zero.
void round_to_mxfp4(std::uint16_t* values, std::int64_t rows, std::int64_t cols);

}  // namespace duplex::runtime::functional
