#pragma once
// Status: what can_implement / run answer. A code the caller can branch on (fall back to another backend for
// the kUnsupported* codes) and a message that names the operand and what was expected.
#include <string>
#include <utility>

namespace duplex::kernels {

enum class StatusCode {
  kOk,
  kInvalidArgument,    // operands disagree (shapes, aliasing, index out of range): a caller bug
  kUnsupportedDType,   // this backend has no kernel for these element types
  kUnsupportedShape,   // valid, but outside what this backend's kernels handle (e.g. head_dim too large)
  kUnsupportedLayout,  // non-contiguous strides this backend does not take
  kWrongLocation,      // a tensor lives in the other backend's memory
  kNoDevice,           // the backend cannot run here (no GPU / no driver)
  kDeviceError,        // the device or a library (cuBLAS) reported a failure
};

const char* status_code_name(StatusCode code);

// Functions returning a Status are [[nodiscard]] where they are declared.
class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status success() { return {}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "unsupported_dtype: gemm: a is f32[...]; expected ..." (or "ok").
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

}  // namespace duplex::kernels
