#pragma once
// bitsandbytes' 4-bit NormalFloat matrices (nf4, nf4_dq; QLoRA's NF4, as transformers' BitsAndBytesConfig
// load_in_4bit with bnb_4bit_quant_type nf4 saves them). A rows x cols matrix (the model's [out][in]) is
// flattened row-major and cut into blocks of `blocksize` elements (64 by default; the last may be short); its
// element i is code[q_i] x absmax[i / blocksize], code the 16 NF4 values (nf4_code()). With double
// quantization (bnb_4bit_use_double_quant, nf4_dq) each absmax is itself stored in 8 bits: absmax[b] =
// nested_map[qa_b] x nested_absmax[b / 256] + offset, nested_map 256 values stored beside it.
// The checkpoint stores, per matrix NAME.weight (source: bitsandbytes' Params4bit /
// QuantState.as_dict(packed= True) and its quantize_4bit):
// - NAME.weight U8 [ceil(n / 2), 1]: two fields a byte, element 2j in the high nibble, 2j + 1 in the low;
// - NAME.weight.absmax F32 [blocks] (nf4_dq: U8, the qa_b), NAME.weight.quant_map F32 [16] (the code);
// - nf4_dq: NAME.weight.nested_absmax F32 [ceil(blocks / 256)], NAME.weight.nested_quant_map F32 [256];
// - NAME.weight.quant_state.bitsandbytes__nf4 U8: the UTF-8 bytes of a JSON object {quant_type: "nf4",
//   blocksize, dtype, shape: [rows, cols]} (nf4_dq also nested_blocksize: 256, nested_dtype: "float32",
//   nested_offset: the offset).
// The emulation computes in FP16: an element is the float product code[q] x absmax (absmax in float: for
// nf4_dq the float product nested_map[qa] x nested_absmax plus the offset) rounded once to FP16, as
// bitsandbytes' CUDA dequantization rounds it to the model's dtype.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace duplex::runtime::functional {

inline constexpr std::int64_t kNf4Block = 64;         // bitsandbytes' default blocksize on CUDA
inline constexpr std::int64_t kNf4NestedBlock = 256;  // absmax values per nested scale (quantize_4bit)

// The NF4 values (bitsandbytes' get_4bit_type("nf4"), source: QLoRA, arXiv 2305.14314): -1 .. 1, 0 at 7.
const std::array<float, 16>& nf4_code();

// A matrix unpacked: its 4-bit indices, float block scales and the 16 values the indices name (a checkpoint's
// quant_map; nf4_code() as duplex writes it).
struct Nf4Matrix {
  std::int64_t rows = 0, cols = 0;
  std::int64_t blocksize = kNf4Block;
  std::vector<std::uint8_t> q;  // rows x cols, 0..15
  std::vector<float> absmax;    // ceil(rows x cols / blocksize), as dequantization uses them
  std::array<float, 16> code = nf4_code();
  std::int64_t blocks() const { return (rows * cols + blocksize - 1) / blocksize; }
};

// A matrix's checkpoint tensors (above): nested_* empty for nf4.
struct Nf4Packed {
  std::vector<std::uint8_t> weight;        // ceil(n / 2) bytes
  std::array<float, 16> quant_map{};       // the code
  std::vector<float> absmax;               // nf4: blocks
  std::vector<std::uint8_t> absmax_codes;  // nf4_dq: blocks
  std::vector<float> nested_absmax;        // nf4_dq: ceil(blocks / 256)
  std::vector<float> nested_map;           // nf4_dq: 256
  float offset = 0;                        // nf4_dq
  std::string quant_state;                 // the JSON's bytes
  bool nested() const { return !nested_map.empty(); }
};

// The 4-bit fields of `weight` (ceil(n / 2) bytes) as n indices.
std::vector<std::uint8_t> unpack_nf4(const std::uint8_t* weight, std::int64_t n);
// n indices (0..15) as ceil(n / 2) bytes (an odd n's last low nibble 0).
std::vector<std::uint8_t> pack_nf4(const std::vector<std::uint8_t>& q);
// Double quantization's absmax: nested_map[codes[b]] x nested_absmax[b / 256] + offset, in float.
std::vector<float> nested_absmax_values(const std::vector<std::uint8_t>& codes,
                                        const std::vector<float>& nested_absmax,
                                        const std::vector<float>& nested_map, float offset);

// The FP16 bits of every element (above), m.code[q] x absmax. A non-finite absmax, or a product beyond FP16's
// range, is a duplex::Error naming `what` and the block or element.
std::vector<std::uint16_t> dequantize_nf4(const Nf4Matrix& m, const std::string& what);

// FP16 values (rows x cols, row-major) on the grid duplex writes, in blocks of kNf4Block:
// - nf4: absmax = the block's largest magnitude (as quantize_4bit takes it), each index the nearest code of
//   value / absmax (ties to the lower index, as its argmin);
// - nf4_dq (`nested`): absmax a power of two, the least one >= the block's largest magnitude (at least
//   2^-126), with the block's first element of that magnitude taking code +-1 (its value +-absmax), stored as
//   nested_map index 255 - e of a map of powers of two (nested_map[j] = 2^(j - 255), 0 below 2^-126) under a
//   nested_absmax of 2^K, K the largest exponent of its 256 blocks, and offset 0 (bitsandbytes' own
//   quantizer uses its dynamic map and the absmax mean: the map is stored, either reads back).
// On that grid writing and reading agree: every value must come back exactly (random weights do);
// otherwise a duplex::Error naming `what` and the element.
Nf4Matrix quantize_nf4(const std::uint16_t* values, std::int64_t rows, std::int64_t cols, bool nested,
                       const std::string& what);
// Rounds rows x cols FP16 values in place to that grid.
void round_to_nf4(std::uint16_t* values, std::int64_t rows, std::int64_t cols, bool nested);
// The checkpoint tensors of m (quantize_nf4's, `nested` as it was given), its quant_state naming `dtype`
// ("float16" or "bfloat16").
Nf4Packed pack_nf4_matrix(const Nf4Matrix& m, bool nested, const std::string& dtype);

}  // namespace duplex::runtime::functional
