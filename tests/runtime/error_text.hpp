#pragma once
// Test helper: the message of the duplex::Error a call throws.
#include <functional>
#include <string>

#include "duplex/base/error.hpp"

namespace duplex::runtime::testing {

// The message of the duplex::Error f throws, or "no error".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace duplex::runtime::testing
