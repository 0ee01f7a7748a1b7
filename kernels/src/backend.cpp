#include "duplex/kernels/backend.hpp"

namespace duplex::kernels {

const char* backend_kind_name(BackendKind kind) {
  return kind == BackendKind::kCpu ? "cpu" : "cuda";
}

std::unique_ptr<Backend> make_best_backend() {
  if (auto cuda = make_cuda_backend()) return cuda;
  return make_cpu_backend();
}

}  // namespace duplex::kernels
