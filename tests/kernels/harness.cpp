#include "harness.hpp"

#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>

#include "duplex/base/fp16.hpp"

namespace duplex::kernels::test {

HostTensor::HostTensor(DType dtype, std::vector<std::int64_t> shape)
    : dtype_(dtype), shape_(std::move(shape)) {
  bytes_.assign(static_cast<std::size_t>(numel()) * dtype_size(dtype_), 0);
}

std::int64_t HostTensor::numel() const {
  std::int64_t n = 1;
  for (auto e : shape_) n *= e;
  return n;
}

double HostTensor::get(std::int64_t i) const {
  const auto u = static_cast<std::size_t>(i);
  std::uint16_t h = 0;
  float f = 0.0f;
  switch (dtype_) {
    case DType::kF16:
      std::memcpy(&h, bytes_.data() + 2 * u, 2);
      return half_bits_to_float(h);
    case DType::kBF16:
      std::memcpy(&h, bytes_.data() + 2 * u, 2);
      return bf16_bits_to_float(h);
    case DType::kF32:
      std::memcpy(&f, bytes_.data() + 4 * u, 4);
      return f;
    case DType::kI32:
      return get_int(i);
  }
  return 0.0;
}

void HostTensor::set(std::int64_t i, double value) {
  const auto u = static_cast<std::size_t>(i);
  const auto f = static_cast<float>(value);
  std::uint16_t h = 0;
  switch (dtype_) {
    case DType::kF16:
      h = float_to_half_bits(f);
      std::memcpy(bytes_.data() + 2 * u, &h, 2);
      return;
    case DType::kBF16:
      h = float_to_bf16_bits(f);
      std::memcpy(bytes_.data() + 2 * u, &h, 2);
      return;
    case DType::kF32:
      std::memcpy(bytes_.data() + 4 * u, &f, 4);
      return;
    case DType::kI32:
      set_int(i, static_cast<std::int32_t>(value));
      return;
  }
}

std::int32_t HostTensor::get_int(std::int64_t i) const {
  std::int32_t v = 0;
  std::memcpy(&v, bytes_.data() + 4 * static_cast<std::size_t>(i), 4);
  return v;
}

void HostTensor::set_int(std::int64_t i, std::int32_t value) {
  std::memcpy(bytes_.data() + 4 * static_cast<std::size_t>(i), &value, 4);
}

void fill_uniform(HostTensor& t, std::mt19937_64& rng, double lo, double hi) {
  std::uniform_real_distribution<double> dist(lo, hi);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, dist(rng));
}

DeviceArena::~DeviceArena() {
  (void)backend_.synchronize(stream_);
  for (void* p : allocations_) backend_.deallocate(p);
}

Tensor DeviceArena::upload(const HostTensor& host) {
  Tensor t = empty(host.dtype(), host.shape());
  const Status s = backend_.copy_from_host(t.data, host.data(), host.bytes(), stream_);
  EXPECT_TRUE(s.ok()) << s.to_string();
  return t;
}

Tensor DeviceArena::empty(DType dtype, const std::vector<std::int64_t>& shape) {
  HostTensor host(dtype, shape);
  std::memset(host.data(), 0xFF,
              host.bytes());  // NaN in every float dtype, -1 in i32: unwritten output shows
  void* p = backend_.allocate(host.bytes());
  allocations_.push_back(p);
  const Status s = backend_.copy_from_host(p, host.data(), host.bytes(), stream_);
  EXPECT_TRUE(s.ok()) << s.to_string();
  Tensor t;
  t.data = p;
  t.dtype = dtype;
  t.location = backend_.memory_location();
  t.rank = static_cast<int>(shape.size());
  std::int64_t stride = 1;
  for (int d = t.rank - 1; d >= 0; --d) {
    t.shape[static_cast<std::size_t>(d)] = shape[static_cast<std::size_t>(d)];
    t.strides[static_cast<std::size_t>(d)] = stride;
    stride *= shape[static_cast<std::size_t>(d)];
  }
  return t;
}

HostTensor DeviceArena::download(const Tensor& t) {
  std::vector<std::int64_t> shape(t.shape.begin(), t.shape.begin() + t.rank);
  HostTensor host(t.dtype, shape);
  Status s = backend_.copy_to_host(host.data(), t.data, host.bytes(), stream_);
  EXPECT_TRUE(s.ok()) << s.to_string();
  s = backend_.synchronize(stream_);
  EXPECT_TRUE(s.ok()) << s.to_string();
  return host;
}

Backend* backend_under_test(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Backend>> backends;
  auto it = backends.find(name);
  if (it == backends.end()) {
    std::unique_ptr<Backend> b = name == "cpu" ? make_cpu_backend() : make_cuda_backend(nullptr, cuda_options_under_test());
    it = backends.emplace(name, std::move(b)).first;
  }
  return it->second.get();
}

CudaOptions cuda_options_under_test() {
  const char* v = std::getenv("DUPLEX_TEST_CUDA_DECODE_KERNEL");
  const std::string kernel = v != nullptr ? v : "";
  CudaOptions options;
  if (kernel == "registers") {
    options.decode_attention = CudaDecodeKernel::kRegisters;
  } else if (!kernel.empty() && kernel != "shared-ring") {
    throw std::invalid_argument("DUPLEX_TEST_CUDA_DECODE_KERNEL is '" + kernel +
                                "'; expected shared-ring (the default) or registers");
  }
  return options;
}

bool gpu_required() {
  const char* v = std::getenv("DUPLEX_REQUIRE_GPU");
  return v != nullptr && std::string(v) == "1";
}

}  // namespace duplex::kernels::test
