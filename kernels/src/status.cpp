#include "duplex/kernels/status.hpp"

namespace duplex::kernels {

const char* status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "ok";
    case StatusCode::kInvalidArgument:
      return "invalid_argument";
    case StatusCode::kUnsupportedDType:
      return "unsupported_dtype";
    case StatusCode::kUnsupportedShape:
      return "unsupported_shape";
    case StatusCode::kUnsupportedLayout:
      return "unsupported_layout";
    case StatusCode::kWrongLocation:
      return "wrong_location";
    case StatusCode::kNoDevice:
      return "no_device";
    case StatusCode::kDeviceError:
      return "device_error";
  }
  return "?";
}

std::string Status::to_string() const {
  if (ok()) return "ok";
  return std::string(status_code_name(code_)) + ": " + message_;
}

}  // namespace duplex::kernels
