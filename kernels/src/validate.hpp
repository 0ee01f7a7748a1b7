#pragma once
// The contract of ops.hpp, checked once for every backend: ranks, extents, dtypes, contiguity, location.
// Backends add their own limits (e.g. a maximum head_dim) on top.
#include "duplex/kernels/ops.hpp"
#include "duplex/kernels/status.hpp"

namespace duplex::kernels {

Status validate_op(const OpArgs& args, Location backend_memory);

}  // namespace duplex::kernels
