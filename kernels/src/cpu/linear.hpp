#pragma once
// FP32 matrix products the CPU ops share. OpenBLAS sgemm does the arithmetic; storage-dtype operands are
// converted to FP32 at the edges (a few rows against a weight are done as parallel dot products on the stored
// weight instead, which reads it once and converts on the fly).
#include <cstdint>

#include "duplex/kernels/tensor.hpp"

namespace duplex::kernels::cpu {

// y[m,n] = x[m,k] . w[n,k]^T (+ y when accumulate). x, y: FP32 row-major; w: `dtype` storage, row-major
// [n,k], starting at element w_offset of w.
void linear_nt(const float* x, std::int64_t m, std::int64_t k, const void* w, DType dtype,
               std::int64_t w_offset, std::int64_t n, float* y, bool accumulate);
// y[m,n] = x[m,k] . w[k,n] (+ y when accumulate); w as above but [k,n].
void linear_nn(const float* x, std::int64_t m, std::int64_t k, const void* w, DType dtype, std::int64_t n,
               float* y, bool accumulate);

}  // namespace duplex::kernels::cpu
