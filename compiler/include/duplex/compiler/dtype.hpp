#pragma once
// Element types of weights / activations / KV cache, and their storage size.
#include <string>
#include <string_view>

namespace duplex::compiler {

enum class DType { kFp16, kBf16, kFp8, kInt8, kInt4 };

double dtype_bytes(DType t);  // bytes per element (int4: 0.5)
std::string_view dtype_name(DType t);
// Parses "fp16", "bf16", "fp8", "int8", "int4" (also HF's "float16", "bfloat16"); throws duplex::Error.
DType parse_dtype(std::string_view s);

}  // namespace duplex::compiler
