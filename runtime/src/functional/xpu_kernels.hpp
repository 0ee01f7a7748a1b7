#pragma once
// Private helpers of the functional executor: kernels::Tensor views of host vectors and a checked launch on
// the kernels backend. A kernel refusing its arguments is a bug in the executor (shapes are derived from the
// model), hence DUPLEX_ASSERT.
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "duplex/base/error.hpp"
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

inline void launch(kernels::Backend& backend, const kernels::OpArgs& args) {
  kernels::Status s = backend.can_implement(args);
  if (s.ok()) s = backend.run(args, kernels::Stream{});
  DUPLEX_ASSERT(s.ok(), s.to_string());
}

}  // namespace duplex::runtime::functional
