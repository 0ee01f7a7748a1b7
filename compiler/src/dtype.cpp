#include "duplex/compiler/dtype.hpp"

#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::compiler {

bool quant_group_modelled(long long group) {
  return group == 32 || group == 64 || group == 128 || group == kPerRowGroup;
}

double dtype_bytes(DType t, int quant_group) {
  DUPLEX_ASSERT(!grouped_int(t) || quant_group_modelled(quant_group), "a group size not modelled");
  const double per_group = quant_group == kPerRowGroup ? 0.0 : 1.0 / quant_group;  // per row: left out
  switch (t) {
    case DType::kFp16:
    case DType::kBf16: return 2.0;
    case DType::kFp8:
    case DType::kFp8Channel:
    case DType::kFp8Tensor:
    case DType::kInt8Channel:
    case DType::kBnbInt8:
    case DType::kInt8: return 1.0;
    case DType::kInt4: return 0.5;
    case DType::kMxfp4:
      return (32 * 4 + 8) / 8.0 / 32;  // 32 FP4 elements + one 8-bit scale
    case DType::kFp8Block128:
      return 1.0 + 4.0 / (128 * 128);  // + one FP32 scale per 128 x 128 block
    case DType::kInt4Awq:
    case DType::kInt4Gptq:
      return 0.5 + (2.0 + 0.5) * per_group;  // + one FP16 scale and one 4-bit zero per group
    case DType::kInt4Pack:
      return 0.5 + 2.0 * per_group;  // + one 16-bit scale per group
    case DType::kInt8Gptq:
      return 1.0 + (2.0 + 1.0) * per_group;  // + one FP16 scale and one 8-bit zero per group
    case DType::kInt8Pack:
      return 1.0 + 2.0 * per_group;  // + one 16-bit scale per group
    case DType::kNf4:
    case DType::kBnbFp4:
      return 0.5 + 4.0 / 64;  // + one FP32 absmax per block of 64
    case DType::kNf4Dq:
    case DType::kBnbFp4Dq:
      return 0.5 + (1.0 + 4.0 / 256) / 64;  // + one 8-bit absmax per 64, one FP32 scale per 256 of those
  }
  DUPLEX_ASSERT(false, "unhandled dtype");
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::kFp16: return "fp16";
    case DType::kBf16: return "bf16";
    case DType::kFp8: return "fp8";
    case DType::kInt8: return "int8";
    case DType::kInt4: return "int4";
    case DType::kMxfp4:
      return "mxfp4";
    case DType::kFp8Block128:
      return "fp8_block128";
    case DType::kFp8Channel:
      return "fp8_channel";
    case DType::kInt4Awq:
      return "int4_awq";
    case DType::kInt4Gptq:
      return "int4_gptq";
    case DType::kInt4Pack:
      return "int4_pack";
    case DType::kInt8Channel:
      return "int8_channel";
    case DType::kInt8Gptq:
      return "int8_gptq";
    case DType::kInt8Pack:
      return "int8_pack";
    case DType::kNf4:
      return "nf4";
    case DType::kNf4Dq:
      return "nf4_dq";
    case DType::kFp8Tensor:
      return "fp8_tensor";
    case DType::kBnbFp4:
      return "bnb_fp4";
    case DType::kBnbFp4Dq:
      return "bnb_fp4_dq";
    case DType::kBnbInt8:
      return "bnb_int8";
  }
  DUPLEX_ASSERT(false, "unhandled dtype");
}

DType parse_dtype(std::string_view s) {
  if (s == "fp16" || s == "float16") return DType::kFp16;
  if (s == "bf16" || s == "bfloat16") return DType::kBf16;
  if (s == "fp8" || s == "float8_e4m3fn") return DType::kFp8;
  if (s == "int8") return DType::kInt8;
  if (s == "int4") return DType::kInt4;
  if (s == "mxfp4") return DType::kMxfp4;
  if (s == "fp8_block128") return DType::kFp8Block128;
  if (s == "fp8_channel") return DType::kFp8Channel;
  if (s == "fp8_tensor") return DType::kFp8Tensor;
  if (s == "int4_awq") return DType::kInt4Awq;
  if (s == "int4_gptq") return DType::kInt4Gptq;
  if (s == "int4_pack") return DType::kInt4Pack;
  if (s == "int8_channel") return DType::kInt8Channel;
  if (s == "int8_gptq") return DType::kInt8Gptq;
  if (s == "int8_pack") return DType::kInt8Pack;
  if (s == "nf4") return DType::kNf4;
  if (s == "nf4_dq") return DType::kNf4Dq;
  if (s == "bnb_fp4") return DType::kBnbFp4;
  if (s == "bnb_fp4_dq") return DType::kBnbFp4Dq;
  if (s == "bnb_int8") return DType::kBnbInt8;
  throw Error(
      fmt::format("unknown dtype \"{}\"; expected fp16, bf16, fp8, int8, int4, or mxfp4, fp8_block128, "
                  "fp8_channel, fp8_tensor, int4_awq, int4_gptq, int4_pack, int8_channel, int8_gptq, "
                  "int8_pack, nf4, nf4_dq, bnb_fp4, bnb_fp4_dq or bnb_int8 (weight matrices only)",
                  s));
}

bool scaled_fp8(DType t) {
  return t == DType::kFp8Block128 || t == DType::kFp8Channel || t == DType::kFp8Tensor;
}

bool fp8_weights(DType t) {
  return t == DType::kFp8 || scaled_fp8(t);
}

bool scaled_8bit(DType t) {
  return scaled_fp8(t) || t == DType::kInt8Channel;
}

bool grouped_int4(DType t) {
  return t == DType::kInt4Awq || t == DType::kInt4Gptq || t == DType::kInt4Pack;
}

bool grouped_int(DType t) {
  return grouped_int4(t) || t == DType::kInt8Gptq || t == DType::kInt8Pack;
}

int grouped_int_bits(DType t) {
  DUPLEX_ASSERT(grouped_int(t), "not a grouped integer format");
  return t == DType::kInt8Gptq || t == DType::kInt8Pack ? 8 : 4;
}

bool bnb_4bit(DType t) {
  return t == DType::kNf4 || t == DType::kNf4Dq || t == DType::kBnbFp4 || t == DType::kBnbFp4Dq;
}

bool bnb_nested(DType t) {
  return t == DType::kNf4Dq || t == DType::kBnbFp4Dq;
}

std::string_view bnb_quant_type(DType t) {
  DUPLEX_ASSERT(bnb_4bit(t), "not a bitsandbytes 4-bit format");
  return t == DType::kNf4 || t == DType::kNf4Dq ? "nf4" : "fp4";
}

bool bitsandbytes(DType t) {
  return bnb_4bit(t) || t == DType::kBnbInt8;
}

bool int8_weights(DType t) {
  return t == DType::kInt8Channel || t == DType::kBnbInt8;
}

bool matrix_format(DType t) {
  return t == DType::kMxfp4 || scaled_8bit(t) || grouped_int(t) || bitsandbytes(t);
}

}  // namespace duplex::compiler
