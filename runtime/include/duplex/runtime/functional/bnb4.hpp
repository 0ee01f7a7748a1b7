#pragma once
// bitsandbytes' 4-bit blockwise matrices, as transformers' BitsAndBytesConfig load_in_4bit saves them: NF4
// (nf4, nf4_dq; QLoRA's NormalFloat, bnb_4bit_quant_type nf4) and FP4 (bnb_fp4, bnb_fp4_dq; bitsandbytes' own
// 4-bit float, bnb_4bit_quant_type fp4, the config's default). A rows x cols matrix (the model's [out][in])
// is flattened row-major and cut into blocks of `blocksize` elements (64 by default; the last may be short);
// its element i is code[q_i] x absmax[i / blocksize], code the type's 16 values (nf4_code(), fp4_code()).
// With double quantization (bnb_4bit_use_double_quant: nf4_dq, bnb_fp4_dq) each absmax is itself stored in 8
// bits: absmax[b] = nested_map[qa_b] x nested_absmax[b / 256] + offset, nested_map 256 values stored beside
// it. The checkpoint stores, per matrix NAME.weight (source: bitsandbytes' Params4bit /
// QuantState.as_dict(packed= True) and its quantize_4bit), TYPE being nf4 or fp4:
// - NAME.weight U8 [ceil(n / 2), 1]: two fields a byte, element 2j in the high nibble, 2j + 1 in the low;
// - NAME.weight.absmax F32 [blocks] (double quantization: U8, the qa_b), NAME.weight.quant_map F32 [16] (the
//   code);
// - double quantization: NAME.weight.nested_absmax F32 [ceil(blocks / 256)], NAME.weight.nested_quant_map F32
//   [256];
// - NAME.weight.quant_state.bitsandbytes__TYPE U8: the UTF-8 bytes of a JSON object {quant_type: TYPE,
//   blocksize, dtype, shape: [rows, cols]} (double quantization also nested_blocksize: 256, nested_dtype:
//   "float32", nested_offset: the offset).
// The emulation computes in FP16: an element is the float product code[q] x absmax (absmax in float: with
// double quantization the float product nested_map[qa] x nested_absmax plus the offset) rounded once to FP16,
// as bitsandbytes' CUDA dequantization rounds it to the model's dtype.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "duplex/compiler/dtype.hpp"

namespace duplex::runtime::functional {

inline constexpr std::int64_t kBnb4Block = 64;         // bitsandbytes' default blocksize on CUDA
inline constexpr std::int64_t kBnb4NestedBlock = 256;  // absmax values per nested scale (quantize_4bit)

// The NF4 values (bitsandbytes' get_4bit_type("nf4"), source: QLoRA, arXiv 2305.14314): -1 .. 1, 0 at 7.
const std::array<float, 16>& nf4_code();
// The FP4 values (bitsandbytes' get_4bit_type("fp4"): an E2M1 float with exponent bias 3, no infinities or
// NaN, {0, 0.0625, 8, 12, 4, 6, 2, 3} for 0..7 and their negatives for 8..15, divided in float by the
// largest, 12): 0 at 0 (-0 at 8), 1 at 3, -1 at 11.
const std::array<float, 16>& fp4_code();
// The code of a bnb_4bit format (compiler::bnb_4bit): nf4_code() or fp4_code().
const std::array<float, 16>& bnb4_code(compiler::DType format);

// A matrix unpacked: its 4-bit indices, float block scales and the 16 values the indices name (a checkpoint's
// quant_map; bnb4_code() as duplex writes it).
struct Bnb4Matrix {
  std::int64_t rows = 0, cols = 0;
  std::int64_t blocksize = kBnb4Block;
  std::vector<std::uint8_t> q;  // rows x cols, 0..15
  std::vector<float> absmax;    // ceil(rows x cols / blocksize), as dequantization uses them
  std::array<float, 16> code = nf4_code();
  std::int64_t blocks() const { return (rows * cols + blocksize - 1) / blocksize; }
};

// A matrix's checkpoint tensors (above): nested_* empty without double quantization.
struct Bnb4Packed {
  std::vector<std::uint8_t> weight;        // ceil(n / 2) bytes
  std::array<float, 16> quant_map{};       // the code
  std::vector<float> absmax;               // nf4, bnb_fp4: blocks
  std::vector<std::uint8_t> absmax_codes;  // double quantization: blocks
  std::vector<float> nested_absmax;        // double quantization: ceil(blocks / 256)
  std::vector<float> nested_map;           // double quantization: 256
  float offset = 0;                        // double quantization
  std::string quant_state;                 // the JSON's bytes
  bool nested() const { return !nested_map.empty(); }
};

// The 4-bit fields of `weight` (ceil(n / 2) bytes) as n indices.
std::vector<std::uint8_t> unpack_bnb4(const std::uint8_t* weight, std::int64_t n);
// n indices (0..15) as ceil(n / 2) bytes (an odd n's last low nibble 0).
std::vector<std::uint8_t> pack_bnb4(const std::vector<std::uint8_t>& q);
// Double quantization's absmax: nested_map[codes[b]] x nested_absmax[b / 256] + offset, in float.
std::vector<float> nested_absmax_values(const std::vector<std::uint8_t>& codes,
                                        const std::vector<float>& nested_absmax,
                                        const std::vector<float>& nested_map, float offset);

// The FP16 bits of every element (above), m.code[q] x absmax. A non-finite absmax, or a product beyond FP16's
// range, is a duplex::Error naming `what` and the block or element.
std::vector<std::uint16_t> dequantize_bnb4(const Bnb4Matrix& m, const std::string& what);

// FP16 values (rows x cols, row-major) on the grid duplex writes of `format` (a bnb_4bit format), in blocks
// of kBnb4Block, each index the code of value / absmax that bitsandbytes' quantizer takes (NF4: the nearest,
// ties to the lower index, as an argmin; FP4: dQuantizeFP4's sign bit (set for x < 0, and for -0, which
// dQuantizeFP4 takes as +0: code 8 is -0) and its binary search over the magnitudes' midpoints, a tie to the
// smaller magnitude):
// - nf4, bnb_fp4: absmax = the block's largest magnitude (as quantize_4bit takes it);
// - nf4_dq, bnb_fp4_dq (double quantization): absmax a power of two, the least one >= the block's largest
//   magnitude (at least 2^-126), with the block's first element of that magnitude taking code +-1 (its value
//   +-absmax), stored as nested_map index 255 - e of a map of powers of two (nested_map[j] = 2^(j - 255), 0
//   below 2^-126) under a nested_absmax of 2^K, K the largest exponent of its 256 blocks, and offset 0
//   (bitsandbytes' own quantizer uses its dynamic map and the absmax mean: the map is stored, either reads
//   back).
// On that grid writing and reading agree: every value must come back exactly (random weights do);
// otherwise a duplex::Error naming `what` and the element.
Bnb4Matrix quantize_bnb4(const std::uint16_t* values, std::int64_t rows, std::int64_t cols,
                         compiler::DType format, const std::string& what);
// Rounds rows x cols FP16 values in place to that grid.
void round_to_bnb4(std::uint16_t* values, std::int64_t rows, std::int64_t cols, compiler::DType format);
// The checkpoint tensors of m (quantize_bnb4's of `format`), its quant_state naming `dtype` ("float16" or
// "bfloat16").
Bnb4Packed pack_bnb4_matrix(const Bnb4Matrix& m, compiler::DType format, const std::string& dtype);

}  // namespace duplex::runtime::functional
