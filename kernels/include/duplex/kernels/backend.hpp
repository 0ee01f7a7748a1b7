#pragma once
// Backend: one implementation of every op in ops.hpp (CUTLASS-style: can_implement(args) before run(args,
// stream)), with one dispatch per backend, plus the memory, stream and event calls a caller needs to feed it.
//
// Backends: the CPU reference (always built, oneTBB + OpenBLAS) and CUDA (built when DUPLEX_HAVE_CUDA, usable
// when a GPU and driver are present). make_best_backend() picks CUDA when it can run, else the CPU.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "duplex/kernels/ops.hpp"
#include "duplex/kernels/status.hpp"

namespace duplex::kernels {

enum class BackendKind : std::uint8_t { kCpu, kCuda };
const char* backend_kind_name(BackendKind kind);

// An ordered queue of work. CPU: every run completes before it returns; the handle is ignored.
// CUDA: a cudaStream_t; the null handle is the legacy default stream.
struct Stream {
  void* handle = nullptr;
};
// A point in a stream's work that another stream (or the host) can wait for.
struct Event {
  void* handle = nullptr;
};

// A backend object is used from one host thread at a time (the CUDA one shares a cuBLAS handle).
class Backend {
 public:
  virtual ~Backend() = default;
  Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  virtual BackendKind kind() const = 0;
  // "cpu (2 threads, OpenBLAS 0.3.21)", "cuda (NVIDIA H200, sm_90)".
  virtual std::string description() const = 0;
  // Where this backend's tensors must live.
  virtual Location memory_location() const = 0;

  // ok, or why run would refuse these arguments (kInvalidArgument, kUnsupported*, kWrongLocation).
  // Checks shapes and dtypes only, never tensor contents.
  [[nodiscard]] virtual Status can_implement(const OpArgs& args) const = 0;
  // Enqueues the op on the stream. Data-dependent errors (an index out of range in ids / block_table /
  // topk_ids) are reported by run on the CPU and by the next synchronize on CUDA.
  [[nodiscard]] virtual Status run(const OpArgs& args, Stream stream) = 0;

  // Memory in memory_location(). allocate throws duplex::Error when the memory is exhausted.
  virtual void* allocate(std::size_t bytes) = 0;
  virtual void deallocate(void* ptr) noexcept = 0;
  // Host <-> backend copies, ordered on the stream (CPU: immediate).
  [[nodiscard]] virtual Status copy_from_host(void* dst, const void* src, std::size_t bytes,
                                              Stream stream) = 0;
  [[nodiscard]] virtual Status copy_to_host(void* dst, const void* src, std::size_t bytes, Stream stream) = 0;

  virtual Stream create_stream() = 0;
  virtual void destroy_stream(Stream stream) noexcept = 0;
  virtual Event create_event() = 0;
  virtual void destroy_event(Event event) noexcept = 0;
  [[nodiscard]] virtual Status record_event(Event event, Stream stream) = 0;
  [[nodiscard]] virtual Status stream_wait_event(Stream stream, Event event) = 0;
  // Blocks until the stream's work is done; returns the first error it raised since the last synchronize.
  [[nodiscard]] virtual Status synchronize(Stream stream) = 0;
};

std::unique_ptr<Backend> make_cpu_backend();

// True when this build has the CUDA backend compiled in.
bool cuda_backend_compiled();
// ok when a CUDA device can be used; else kNoDevice with the reason (not compiled, no driver, no GPU).
[[nodiscard]] Status cuda_device_status();

// The kernel decode attention runs on for FP16 / BF16 caches with head_dim 128 (other shapes and types keep
// their kernels): tensor cores fed through a shared-memory ring of K / V tiles (the measured default), or
// tensor cores fed by loads straight into registers (a candidate: bench/kernels/README.md).
enum class CudaDecodeKernel : std::uint8_t { kSharedRing, kRegisters };
struct CudaOptions {
  CudaDecodeKernel decode_attention = CudaDecodeKernel::kSharedRing;
};

// The CUDA backend on device 0, or nullptr (with *why set when given) when cuda_device_status() is not ok.
std::unique_ptr<Backend> make_cuda_backend(Status* why = nullptr, const CudaOptions& options = {});

// CUDA when usable, else the CPU.
std::unique_ptr<Backend> make_best_backend();

}  // namespace duplex::kernels
