#pragma once
// Element types of weights / activations / KV cache, and their storage size.
#include <cstdint>
#include <string>
#include <string_view>

namespace duplex::compiler {

// kMxfp4: OCP microscaling FP4, E2M1 elements in blocks of 32 sharing one E8M0 scale (4.25 bits per element;
// gpt-oss's expert weights). kFp8Block128: FP8 E4M3 weights with one FP32 scale per 128 x 128 block of a
// matrix (DeepSeek-V3's and Qwen3's FP8 releases: HF quant_method "fp8", weight_block_size [128, 128];
// 1 + 4 / 16384 bytes per element). kFp8Channel: FP8 E4M3 weights with one scale per output channel (row)
// of a matrix (llm-compressor's FP8-dynamic releases: HF quant_method "compressed-tensors", weights strategy
// channel). kInt4Awq / kInt4Gptq: 4-bit unsigned integer weights with one FP16 scale and one 4-bit zero point
// per group of 128 inputs of an output row (w = (q - zero) x scale), as AutoAWQ's and GPTQ's releases store
// them (HF quant_method "awq" version gemm, "gptq"): the same size, packed differently (the runtime's
// int4.hpp). kInt4Pack: 4-bit signed integers with one 16-bit scale per group of 128 inputs of a row, no
// zero point (w = q x scale), as llm-compressor's W4A16 releases store them (quant_method
// "compressed-tensors", format pack-quantized). kInt8Channel: 8-bit signed integer weights with one scale per
// output channel (row), w = q x scale, as llm-compressor's W8A8-INT8 releases store them (quant_method
// "compressed-tensors", format int-quantized, weights strategy channel, activations INT8 per token, dynamic).
// kInt8Gptq: GPTQ's 8-bit releases (quant_method "gptq", bits 8: Qwen's GPTQ-Int8), as int4_gptq with 8-bit
// integers and zero points (w = (q - zero) x scale). kNf4 / kNf4Dq: bitsandbytes' 4-bit NormalFloat (QLoRA's
// NF4: 16 fixed values in [-1, 1]) in blocks of 64 elements of the flattened matrix with one FP32 absmax each
// (kNf4Dq: that absmax in 8 bits, with an FP32 scale per 256 of them: bnb_4bit_use_double_quant), as
// transformers' load_in_4bit releases store them (HF quant_method "bitsandbytes"; the runtime's bnb4.hpp).
// kBnbFp4 / kBnbFp4Dq: the same layout with bitsandbytes' FP4 code (E2M1 without infinities or NaN, scaled to
// [-1, 1]: bnb_4bit_quant_type fp4, BitsAndBytesConfig's default); not OCP's MXFP4 (kMxfp4).
// kBnbInt8: bitsandbytes' LLM.int8() weights (transformers' load_in_8bit releases): 8-bit signed integers
// with one FP32 absmax per output channel (row), w = q x absmax / 127, the activations quantized per row on
// the fly, their outlier columns (any |x| above llm_int8_threshold) multiplied in 16 bits instead.
// kFp8Tensor: FP8 E4M3 weights with one FP32 scale per matrix (AutoFP8's releases: HF quant_method "fp8"
// without weight_block_size; llm-compressor's FP8 scheme: "compressed-tensors", weights strategy tensor),
// their activations FP8 too, with a static (calibrated: ModelSpec::static_input_scales) or dynamic
// per-tensor scale; functional emulation reads the matrices as the scaled_fp8 formats, one block a matrix.
// These are matrix formats only (matrix_format).
enum class DType {
  kFp16,
  kBf16,
  kFp8,
  kInt8,
  kInt4,
  kMxfp4,
  kFp8Block128,
  kFp8Channel,
  kInt4Awq,
  kInt4Gptq,
  kInt4Pack,
  kInt8Channel,
  kInt8Gptq,
  kInt8Pack,
  kNf4,
  kNf4Dq,
  kFp8Tensor,
  kBnbFp4,
  kBnbFp4Dq,
  kBnbInt8
};
// Inputs of a row per scale (and zero point) of int4_awq / int4_gptq / int4_pack: group_size 128, the common
// one and the default; 32 and 64 are modelled too (ModelSpec::quant_group), and GPTQ's -1 (kPerRowGroup).
inline constexpr int kInt4Group = 128;
// group_size -1: one scale (and zero point) per row, all its inputs one group (GPTQ's "no group" releases).
inline constexpr int kPerRowGroup = -1;
// Whether `group` is a modelled group_size of the grouped integer formats: 32, 64, 128 or -1 (per row).
bool quant_group_modelled(long long group);
// The inputs per group of a matrix of `cols` inputs: quant_group, or cols for kPerRowGroup.
inline std::int64_t group_inputs(int quant_group, std::int64_t cols) {
  return quant_group == kPerRowGroup ? cols : quant_group;
}

// Bytes per element (int4: 0.5; mxfp4: 0.53125, fp8_block128: 1.000244, int4_awq / int4_gptq: 0.519531 (a
// 16-bit scale and a 4-bit zero per 128) and int4_pack 0.515625 (a 16-bit scale per 128), their scales
// included; fp8_tensor: 1, its one scale per matrix left out; fp8_channel, int8_channel and bnb_int8: 1, its
// one scale per row of `in` elements, 2 / in bytes per element in BF16 (bnb_int8: 4 / in, FP32), left out:
// < 0.2% for any row of 2048 or more;
// so is GPTQ's g_idx, 4 bytes per input column, 4 / out per element; nf4 and bnb_fp4: 0.5625 (an FP32
// absmax per 64), nf4_dq and bnb_fp4_dq: 0.515686 (an 8-bit absmax per 64, an FP32 scale per 256 of them),
// their 16- and 256-entry maps and quant_state left out).
// The grouped integer formats' scales (and zero points) are counted at `quant_group` inputs per group; per
// row (kPerRowGroup) they are left out as fp8_channel's are (2.5 / in bytes per element for int4_gptq:
// < 0.25% of its 0.5 for rows of 2048 inputs or more).
double dtype_bytes(DType t, int quant_group = kInt4Group);
// Whether t is FP8 E4M3 with scales stored beside it (fp8_block128, fp8_channel, fp8_tensor) that
// functional emulation reads.
bool scaled_fp8(DType t);
// Whether t holds FP8 E4M3 weights the xPU multiplies on its FP8 tensor cores (fp8, fp8_tensor and the
// scaled_fp8 formats).
bool fp8_weights(DType t);
// Whether t is 8-bit codes with scales stored beside it (the scaled FP8 formats and int8_channel).
bool scaled_8bit(DType t);
// Whether t is 4-bit integers in groups with scales (int4_awq, int4_gptq, int4_pack).
bool grouped_int4(DType t);
// Whether t is integers in groups with scales, packed in 32-bit words: the 4-bit ones, int8_gptq and
// int8_pack (compressed-tensors' pack-quantized W8A16: 8-bit words of signed values + 128, one 16-bit scale
// per group, no zero points).
bool grouped_int(DType t);
// The bits per element of a grouped integer format (4, or 8 for int8_gptq and int8_pack).
int grouped_int_bits(DType t);
// Whether t is bitsandbytes' 4-bit blockwise format (nf4, nf4_dq, bnb_fp4, bnb_fp4_dq).
bool bnb_4bit(DType t);
// Whether t is a bnb_4bit format with double quantization (nf4_dq, bnb_fp4_dq).
bool bnb_nested(DType t);
// A bnb_4bit format's bnb_4bit_quant_type: "nf4" or "fp4".
std::string_view bnb_quant_type(DType t);
// Whether t is one of bitsandbytes' formats: bnb_4bit, or LLM.int8()'s bnb_int8.
bool bitsandbytes(DType t);
// Whether t holds INT8 weights the xPU multiplies on its INT8 tensor cores (int8_channel, bnb_int8).
bool int8_weights(DType t);
// Whether t is a format of weight matrices only (mxfp4, fp8_block128, fp8_channel, fp8_tensor, int4_awq,
// int4_gptq, int4_pack, int8_channel, int8_gptq, int8_pack, nf4, nf4_dq, bnb_fp4, bnb_fp4_dq, bnb_int8):
// not for norms, embeddings or a KV cache.
bool matrix_format(DType t);
std::string_view dtype_name(DType t);
// Parses "fp16", "bf16", "fp8", "int8", "int4", "mxfp4", "fp8_block128", "fp8_channel", "fp8_tensor",
// "int4_awq", "int4_gptq", "int4_pack", "int8_channel", "int8_gptq", "int8_pack", "nf4", "nf4_dq", "bnb_fp4",
// "bnb_fp4_dq", "bnb_int8" (also HF's "float16", "bfloat16"); throws duplex::Error.
DType parse_dtype(std::string_view s);

}  // namespace duplex::compiler
