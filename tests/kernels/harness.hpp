#pragma once
// Test harness for the kernels: host tensors with exact double views, upload/download through a backend,
// deterministic random data, and the backend under test (with the GPU skip/fail rule).
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "duplex/kernels/backend.hpp"

namespace duplex::kernels::test {

// A host tensor in a storage dtype. get() is exact; set() rounds to the dtype (nearest even).
class HostTensor {
 public:
  HostTensor() = default;
  HostTensor(DType dtype, std::vector<std::int64_t> shape);

  DType dtype() const { return dtype_; }
  const std::vector<std::int64_t>& shape() const { return shape_; }
  std::int64_t numel() const;
  double get(std::int64_t i) const;
  void set(std::int64_t i, double value);
  std::int32_t get_int(std::int64_t i) const;
  void set_int(std::int64_t i, std::int32_t value);
  void* data() { return bytes_.data(); }
  const void* data() const { return bytes_.data(); }
  std::size_t bytes() const { return bytes_.size(); }

 private:
  DType dtype_ = DType::kF32;
  std::vector<std::int64_t> shape_;
  std::vector<unsigned char> bytes_;
};

// Uniform values in [lo, hi), rounded to the tensor's dtype, from a seeded generator.
void fill_uniform(HostTensor& t, std::mt19937_64& rng, double lo = -1.0, double hi = 1.0);

// Copies host tensors into a backend's memory and back; frees everything it allocated.
class DeviceArena {
 public:
  explicit DeviceArena(Backend& backend) : backend_(backend) {}
  ~DeviceArena();
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;

  Tensor upload(const HostTensor& host);
  // An uninitialised (filled with a NaN pattern) tensor of that dtype and shape.
  Tensor empty(DType dtype, const std::vector<std::int64_t>& shape);
  HostTensor download(const Tensor& t);
  Stream stream() const { return stream_; }

 private:
  Backend& backend_;
  Stream stream_{};
  std::vector<void*> allocations_;
};

// The backend a test binary checks: "cpu", or "cuda". Null when CUDA is not usable (the caller skips, or
// fails when DUPLEX_REQUIRE_GPU=1).
Backend* backend_under_test(const std::string& name);
// The CUDA backend's options under test: DUPLEX_TEST_CUDA_DECODE_KERNEL = shared-ring (default) | registers
// (scripts/gpu_check.sh runs the decode-attention tests with each); another value throws
// std::invalid_argument naming the variable.
CudaOptions cuda_options_under_test();
bool gpu_required();

// ASSERT-style: sets `backend` or skips / fails the test.
#define DUPLEX_GET_BACKEND(backend)                                                                   \
  Backend* backend = ::duplex::kernels::test::backend_under_test(DUPLEX_TEST_BACKEND);                \
  if (backend == nullptr) {                                                                           \
    if (::duplex::kernels::test::gpu_required()) {                                                    \
      FAIL() << "DUPLEX_REQUIRE_GPU=1 but the " DUPLEX_TEST_BACKEND " backend is unavailable: "       \
             << cuda_device_status().to_string();                                                     \
    }                                                                                                 \
    GTEST_SKIP() << DUPLEX_TEST_BACKEND " backend unavailable: " << cuda_device_status().to_string(); \
  }

}  // namespace duplex::kernels::test
