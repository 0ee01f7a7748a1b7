#pragma once
// 4-bit integer matrices in groups (int4_awq, int4_gptq, int4_pack): element (r, c) of a rows x cols matrix
// (the model's [out][in]) is (q[r][c] - zero) x scale, the zero (4 bits) and 16-bit scale those of group g of
// row r, g the group of input c: c / G, or a GPTQ checkpoint's g_idx[c] (act-order releases permute them). G,
// the inputs per group, is the release's group_size: 128 below (kInt4Group), or 32 or 64, or all of a row's
// inputs (group_size -1, W4A16's strategy channel: compiler::group_inputs of ModelSpec::quant_group; every
// function takes it, 128 by default).
// The checkpoints store, per matrix NAME (the module's name, without ".weight"), I32 words of eight 4-bit
// fields, the first in the low bits:
// - AutoAWQ (GEMM packing): NAME.qweight [in][out / 8], NAME.qzeros [in / 128][out / 8], NAME.scales
//   [in / 128][out] F16; a word holds outputs 8j..8j + 7 in the field order 0, 2, 4, 6, 1, 3, 5, 7.
// - GPTQ (checkpoint_format gptq): NAME.qweight [in / 8][out] (a word: inputs 8i..8i + 7 of one output, in
//   order), NAME.qzeros [in / 128][out / 8] holding zero - 1 (AutoGPTQ's: it reads field + 1, 1..16),
//   NAME.scales [in / 128][out] F16, NAME.g_idx [in] I32.
// - compressed-tensors pack-quantized (llm-compressor's W4A16): NAME.weight_packed [out][in / 8] (a word:
//   inputs 8i..8i + 7 of one output, in order; each field the signed value + 8: zero 8), NAME.weight_scale
//   [out][in / 128] in the model's dtype, NAME.weight_shape [2] = {out, in}.
// GPTQ's 8-bit releases (int8_gptq) are stored as its 4-bit ones with 8-bit fields, four a word: qweight
// [in / 4][out], qzeros [in / G][out / 4] (zero 128 stored as 127), and llm-compressor's W8A16 (int8_pack) as
// W4A16 with 8-bit fields: weight_packed [out][in / 4], each field the signed value + 128; every function
// here takes them (the matrix's `bits`, the format's).
// The emulation computes in FP16: a dequantized element is (q - zero) x scale rounded once to FP16, as
// AutoAWQ's and AutoGPTQ's dequantization do (compressed-tensors' rounds to the scale's dtype; both exact for
// the power-of-two scales duplex writes).
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "duplex/compiler/dtype.hpp"

namespace duplex::runtime::functional {

// A matrix unpacked: one value per field, in the model's orientation.
struct Int4Matrix {
  std::int64_t rows = 0, cols = 0;                 // out, in; cols a multiple of group_size
  std::int64_t group_size = compiler::kInt4Group;  // inputs per group
  int bits = 4;                                    // per field: 4, or 8 (int8_gptq)
  std::vector<std::uint8_t> q;                     // rows x cols, 0..2^bits - 1
  std::vector<std::uint16_t> zeros;  // rows x groups, 0..2^bits (GPTQ's stored field + 1 may reach 2^bits)
  std::vector<float> scales;        // rows x groups, FP16 or BF16 values
  std::vector<std::int32_t> group;  // cols: the group of each input, 0..groups - 1
  std::int64_t groups() const { return cols / group_size; }
};

// The checkpoint tensors of one matrix in `format` (qweight is int4_pack's weight_packed): qzeros empty for
// int4_pack, g_idx empty but for GPTQ; the scales' FP16 bits.
struct Int4Packed {
  std::vector<std::int32_t> qweight, qzeros, g_idx;
  std::vector<std::uint16_t> scales;
};
// Whether `format` is stored as GPTQ stores it (int4_gptq, int8_gptq: zero points minus 1, a g_idx).
bool gptq_layout(compiler::DType format);
// Whether `format` is compressed-tensors' pack-quantized (int4_pack, int8_pack: weight_packed [out][in /
// per word], scales [out][groups], no zero points: symmetric, zero at mid).
bool pack_layout(compiler::DType format);
// The shapes of a rows x cols matrix's qweight (weight_packed), qzeros (AWQ, GPTQ) and scales in `format`.
std::array<std::int64_t, 2> int4_qweight_shape(compiler::DType format, std::int64_t rows, std::int64_t cols);
std::array<std::int64_t, 2> int4_qzeros_shape(compiler::DType format, std::int64_t rows, std::int64_t cols,
                                              std::int64_t group_size = compiler::kInt4Group);
std::array<std::int64_t, 2> int4_scales_shape(compiler::DType format, std::int64_t rows, std::int64_t cols,
                                              std::int64_t group_size = compiler::kInt4Group);

// m's scales must be FP16 values (duplex writes powers of two), and int4_pack's zeros 8.
Int4Packed pack_int4(compiler::DType format, const Int4Matrix& m);
// One matrix's checkpoint data in `format`, of the shapes above: qzeros null for int4_pack (zero 8), g_idx
// (`cols` entries) null but for GPTQ; the scales as floats (FP16 or BF16 values).
struct Int4Parts {
  const std::int32_t* qweight = nullptr;
  const std::int32_t* qzeros = nullptr;
  const float* scales = nullptr;
  const std::int32_t* g_idx = nullptr;
};
// A g_idx entry outside 0..groups - 1 is a duplex::Error naming `what` and the entry.
Int4Matrix unpack_int4(compiler::DType format, std::int64_t rows, std::int64_t cols, const Int4Parts& parts,
                       const std::string& what, std::int64_t group_size = compiler::kInt4Group);

// The FP16 bits of every element, each (q - zero) x scale rounded to the nearest FP16 (ties to even). A
// negative or non-finite scale, or a product beyond FP16's range, is a duplex::Error naming `what` and the
// element or group.
std::vector<std::uint16_t> dequantize_int4(const Int4Matrix& m, const std::string& what);

// FP16 values (rows x cols, row-major) as 4-bit fields with zero 8 and power-of-two scales, groups
// c / group_size (every format stores them):
// each group's scale is the least 2^k (k >= -24) with 8 x 2^k >= its largest magnitude and 7 x 2^k >= its
// largest value (1 for a group of zeros), each field 8 + the nearest integer of value / scale (ties to
// even). Every value must come back exactly (random weights of a 4-bit model do); otherwise a duplex::Error
// naming `what` and the element.
// With `bits` 8: zero 128, 128 x 2^k >= -min and 127 x 2^k >= max.
Int4Matrix quantize_int4(const std::uint16_t* values, std::int64_t rows, std::int64_t cols,
                         const std::string& what, std::int64_t group_size = compiler::kInt4Group,
                         int bits = 4);
// Rounds rows x cols FP16 values in place to that grid (fields clamped to 0..2^bits - 1).
void round_to_int4_groups(std::uint16_t* values, std::int64_t rows, std::int64_t cols,
                          std::int64_t group_size = compiler::kInt4Group, int bits = 4);

}  // namespace duplex::runtime::functional
