// The CUDA entry points of a build without CUDA (DUPLEX_HAVE_CUDA off): the backend is never available.
#include "duplex/kernels/backend.hpp"

namespace duplex::kernels {

bool cuda_backend_compiled() {
  return false;
}

Status cuda_device_status() {
  return {StatusCode::kNoDevice,
          "cuda: this build has no CUDA backend (configured with DUPLEX_CUDA=OFF or "
          "without nvcc)"};
}

std::unique_ptr<Backend> make_cuda_backend(Status* why, const CudaOptions& /*options*/) {
  if (why != nullptr) *why = cuda_device_status();
  return nullptr;
}

}  // namespace duplex::kernels
