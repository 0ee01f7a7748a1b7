#pragma once
// bitsandbytes' LLM.int8() matrices (bnb_int8), as transformers' BitsAndBytesConfig load_in_8bit saves them
// (source: bitsandbytes' Linear8bitLt._save_to_state_dict and int8_vectorwise_quant / _dequant): a rows x
// cols matrix (the model's [out][in]) is one INT8 code per element and one FP32 absmax per row (SCB),
// element (r, c) = q[r][c] x SCB[r] / 127. The checkpoint stores, per module NAME:
// - NAME.weight I8 [rows, cols]: the codes, row-major (bitsandbytes >= 0.41 saves every matrix so);
// - NAME.SCB F32 [rows]: each row's largest magnitude;
// - NAME.weight_format U8 []: the codes' layout, 0 (row-major; 1..3 were bitsandbytes' tiled col32,
//   col_turing and col_ampere layouts, not read); absent (bitsandbytes before 0.41): row-major.
// The emulation computes in FP16, weight-only: an element is q x SCB x (1 / 127 in FP32), computed in FP32
// as int8_vectorwise_dequant does, rounded once to FP16. (bitsandbytes' kernels instead quantize each row
// of activations to INT8 and multiply the columns holding an activation above llm_int8_threshold in 16
// bits: that rounding of the activations is not emulated.)
#include <cstdint>
#include <string>
#include <vector>

namespace duplex::runtime::functional {

// weight_format's value for row-major codes (bitsandbytes' LINEAR_8BIT_WEIGHTS_FORMAT_MAPPING["row"]).
inline constexpr std::uint8_t kBnbInt8RowFormat = 0;

struct BnbInt8Matrix {
  std::int64_t rows = 0, cols = 0;
  std::vector<std::int8_t> codes;  // rows x cols, row-major
  std::vector<float> scb;          // rows: each row's absmax
};

// The FP16 bits of m's elements, each rounded to the nearest FP16 (ties to even). A negative or
// non-finite SCB, or an element beyond FP16's range, is a duplex::Error naming `what` and the row.
std::vector<std::uint16_t> dequantize_bnb_int8(const BnbInt8Matrix& m, const std::string& what);

// FP16 values (rows x cols, row-major) as LLM.int8() codes: each row's SCB its largest magnitude, each code
// the nearest integer of value x 127 / SCB (ties to even; a row of zeros: SCB 0, codes 0). Every value must
// come back exactly (dequantize_bnb_int8) from its code, as values on round_to_bnb_int8's grid do; otherwise
// a duplex::Error naming `what` and the element.
BnbInt8Matrix quantize_bnb_int8(const std::uint16_t* values, std::int64_t rows, std::int64_t cols,
                                const std::string& what);

// Rounds rows x cols FP16 values in place onto that grid: each to its code's dequantized value (a row's
// largest magnitude stays as it is).
void round_to_bnb_int8(std::uint16_t* values, std::int64_t rows, std::int64_t cols);

}  // namespace duplex::runtime::functional
