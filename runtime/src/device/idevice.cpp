#include "duplex/runtime/device/idevice.hpp"

#include "duplex/base/error.hpp"

namespace duplex::runtime::device {

void IDevice::admit(compiler::OpKind kind) {
  DUPLEX_ASSERT(executes(kind), name() + " does not execute " + std::string(compiler::op_kind_name(kind)));
  ++op_counts_[std::string(compiler::op_kind_name(kind))];
}

}  // namespace duplex::runtime::device
