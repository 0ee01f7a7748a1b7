#pragma once
// Tensor: a non-owning view the kernels compute on (pointer, element type, shape, strides, memory location).
// Kernels know only tensors: no model, no request, no device object. Strides count elements, not bytes.
// A tensor whose data is null is "absent" (used for optional operands such as a LayerNorm bias).
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace duplex::kernels {

enum class DType : std::uint8_t { kF16, kBF16, kF32, kI32 };
enum class Location : std::uint8_t { kHost, kDevice };

std::size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
const char* location_name(Location location);
bool is_floating(DType dtype);

inline constexpr int kMaxRank = 4;

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Location location = Location::kHost;
  int rank = 0;
  std::array<std::int64_t, kMaxRank> shape{};
  std::array<std::int64_t, kMaxRank> strides{};  // in elements

  // A row-major contiguous view. Throws duplex::Error for a rank above kMaxRank or a negative extent.
  static Tensor contiguous(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                           Location location = Location::kHost);

  // A view with explicit strides (elements). Throws duplex::Error when shape and strides differ in rank,
  // the rank is above kMaxRank, or an extent or stride is negative.
  static Tensor strided(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                        std::initializer_list<std::int64_t> strides, Location location = Location::kHost);

  bool present() const { return data != nullptr; }
  std::int64_t dim(int i) const { return shape[static_cast<std::size_t>(i)]; }
  std::int64_t numel() const;
  std::size_t bytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype); }
  bool is_contiguous() const;
  // "f16[4,8]@host" - for status messages.
  std::string describe() const;

  template <class T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

}  // namespace duplex::kernels
