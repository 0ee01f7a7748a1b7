#pragma once
// Element conversion at the edges of the CPU kernels: storage (f16 / bf16 / f32) <-> FP32 compute.
// f16 -> f32 goes through a 64 Ki-entry table built once from duplex::half_bits_to_float (exact);
// f32 -> f16/bf16 rounds to nearest even via duplex_base (the conversions every duplex component shares).
#include <cstdint>

#include "duplex/base/fp16.hpp"
#include "duplex/kernels/tensor.hpp"

namespace duplex::kernels::cpu {

const float* half_to_float_table();

inline float load_element(const void* base, DType dtype, std::int64_t i) {
  switch (dtype) {
    case DType::kF16:
      return half_to_float_table()[static_cast<const std::uint16_t*>(base)[i]];
    case DType::kBF16:
      return bf16_bits_to_float(static_cast<const std::uint16_t*>(base)[i]);
    case DType::kF32:
      return static_cast<const float*>(base)[i];
    case DType::kI32:
      break;
  }
  return 0.0f;  // unreachable: validation admits floating dtypes only
}

inline void store_element(void* base, DType dtype, std::int64_t i, float value) {
  switch (dtype) {
    case DType::kF16:
      static_cast<std::uint16_t*>(base)[i] = float_to_half_bits(value);
      return;
    case DType::kBF16:
      static_cast<std::uint16_t*>(base)[i] = float_to_bf16_bits(value);
      return;
    case DType::kF32:
      static_cast<float*>(base)[i] = value;
      return;
    case DType::kI32:
      return;  // unreachable: validation admits floating dtypes only
  }
}

// dst[0..n) = float(src[offset .. offset+n)).
void load_floats(const void* src, DType dtype, std::int64_t offset, std::int64_t n, float* dst);
// dst[offset .. offset+n) = round(src[0..n)).
void store_floats(const float* src, std::int64_t n, void* dst, DType dtype, std::int64_t offset);
// value rounded to the storage dtype and back (what writing it to memory and reading it again gives).
float round_to_dtype(float value, DType dtype);

}  // namespace duplex::kernels::cpu
