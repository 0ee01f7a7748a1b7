#pragma once
// Element types of weights / activations / KV cache, and their storage size.
#include <string>
#include <string_view>

namespace duplex::compiler {

// kMxfp4: OCP microscaling FP4, E2M1 elements in blocks of 32 sharing one E8M0 scale (4.25 bits per element;
// gpt-oss's expert weights).
enum class DType { kFp16, kBf16, kFp8, kInt8, kInt4, kMxfp4 };

double dtype_bytes(DType t);  // bytes per element (int4: 0.5; mxfp4: 0.53125, its scales included)
std::string_view dtype_name(DType t);
// Parses "fp16", "bf16", "fp8", "int8", "int4", "mxfp4" (also HF's "float16", "bfloat16"); throws
// duplex::Error.
DType parse_dtype(std::string_view s);

}  // namespace duplex::compiler
