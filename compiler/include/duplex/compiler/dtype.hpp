#pragma once
// Element types of weights / activations / KV cache, and their storage size.
#include <string>
#include <string_view>

namespace duplex::compiler {

// kMxfp4: OCP microscaling FP4, E2M1 elements in blocks of 32 sharing one E8M0 scale (4.25 bits per element;
// gpt-oss's expert weights). kFp8Block128: FP8 E4M3 weights with one FP32 scale per 128 x 128 block of a
// matrix (DeepSeek-V3's and Qwen3's FP8 releases: HF quant_method "fp8", weight_block_size [128, 128];
// 1 + 4 / 16384 bytes per element). kFp8Channel: FP8 E4M3 weights with one scale per output channel (row)
// of a matrix (llm-compressor's FP8-dynamic releases: HF quant_method "compressed-tensors", weights strategy
// channel). These three are matrix formats only (matrix_format).
enum class DType { kFp16, kBf16, kFp8, kInt8, kInt4, kMxfp4, kFp8Block128, kFp8Channel };

// Bytes per element (int4: 0.5; mxfp4: 0.53125 and fp8_block128: 1.000244, their scales included;
// fp8_channel: 1, its one scale per row of `in` elements, 2 / in bytes per element in BF16, left out: < 0.1%
// for any row of 2048 or more).
double dtype_bytes(DType t);
// Whether t is FP8 E4M3 with scales stored beside it (fp8_block128, fp8_channel).
bool scaled_fp8(DType t);
// Whether t is a format of weight matrices only (mxfp4, fp8_block128, fp8_channel): not for norms,
// embeddings or a KV cache.
bool matrix_format(DType t);
std::string_view dtype_name(DType t);
// Parses "fp16", "bf16", "fp8", "int8", "int4", "mxfp4", "fp8_block128", "fp8_channel" (also HF's "float16",
// "bfloat16"); throws duplex::Error.
DType parse_dtype(std::string_view s);

}  // namespace duplex::compiler
