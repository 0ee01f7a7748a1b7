#include "duplex/kernels/tensor.hpp"

#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::kernels {

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kF32:
    case DType::kI32:
      return 4;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
    case DType::kF32:
      return "f32";
    case DType::kI32:
      return "i32";
  }
  return "?";
}

const char* location_name(Location location) {
  return location == Location::kHost ? "host" : "device";
}

bool is_floating(DType dtype) {
  return dtype != DType::kI32;
}

Tensor Tensor::contiguous(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                          Location location) {
  if (shape.size() > static_cast<std::size_t>(kMaxRank))
    throw Error(fmt::format("Tensor::contiguous: rank {} is above the maximum {}", shape.size(), kMaxRank));
  Tensor t;
  t.data = data;
  t.dtype = dtype;
  t.location = location;
  t.rank = static_cast<int>(shape.size());
  std::size_t i = 0;
  for (std::int64_t extent : shape) {
    if (extent < 0)
      throw Error(fmt::format("Tensor::contiguous: extent {} of dimension {} is negative", extent, i));
    t.shape[i++] = extent;
  }
  std::int64_t stride = 1;
  for (int d = t.rank - 1; d >= 0; --d) {
    t.strides[static_cast<std::size_t>(d)] = stride;
    stride *= t.shape[static_cast<std::size_t>(d)];
  }
  return t;
}

Tensor Tensor::strided(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                       std::initializer_list<std::int64_t> strides, Location location) {
  if (strides.size() != shape.size())
    throw Error(fmt::format("Tensor::strided: {} strides for {} dimensions; expected one per dimension",
                            strides.size(), shape.size()));
  Tensor t = contiguous(data, dtype, shape, location);
  std::size_t i = 0;
  for (std::int64_t stride : strides) {
    if (stride < 0)
      throw Error(fmt::format("Tensor::strided: stride {} of dimension {} is negative", stride, i));
    t.strides[i++] = stride;
  }
  return t;
}

std::int64_t Tensor::numel() const {
  std::int64_t n = 1;
  for (int d = 0; d < rank; ++d) n *= shape[static_cast<std::size_t>(d)];
  return n;
}

bool Tensor::is_contiguous() const {
  std::int64_t stride = 1;
  for (int d = rank - 1; d >= 0; --d) {
    const auto i = static_cast<std::size_t>(d);
    if (shape[i] != 1 && strides[i] != stride) return false;
    stride *= shape[i];
  }
  return true;
}

std::string Tensor::describe() const {
  std::string dims;
  for (int d = 0; d < rank; ++d)
    dims += fmt::format("{}{}", d ? "," : "", shape[static_cast<std::size_t>(d)]);
  return fmt::format("{}[{}]@{}", dtype_name(dtype), dims, location_name(location));
}

}  // namespace duplex::kernels
