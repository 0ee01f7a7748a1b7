#pragma once
// Private helpers of the functional executor: kernels::Tensor views of host vectors (launched through
// device::XpuDevice::run, which asserts the backend accepts them).
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "duplex/kernels/backend.hpp"

namespace duplex::runtime::functional {

inline kernels::Tensor f16_view(std::vector<std::uint16_t>& v, std::initializer_list<std::int64_t> shape) {
  return kernels::Tensor::contiguous(v.data(), kernels::DType::kF16, shape);
}
inline kernels::Tensor f32_view(std::vector<float>& v, std::initializer_list<std::int64_t> shape) {
  return kernels::Tensor::contiguous(v.data(), kernels::DType::kF32, shape);
}
inline kernels::Tensor i32_view(std::vector<std::int32_t>& v, std::initializer_list<std::int64_t> shape) {
  return kernels::Tensor::contiguous(v.data(), kernels::DType::kI32, shape);
}

}  // namespace duplex::runtime::functional
