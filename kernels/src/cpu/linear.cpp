#include "linear.hpp"

#include <cblas.h>
#include <tbb/parallel_for.h>

#include <vector>

#include "convert.hpp"
#include "vector_math.hpp"

namespace duplex::kernels::cpu {
namespace {

// Up to this many rows, a product against a stored f16/bf16 weight is done as dot products (no FP32 copy of
// the weight): decode-time linears and small expert groups.
constexpr std::int64_t kDirectRowsMax = 4;
constexpr std::int64_t kDirectColumnsPerTask = 32;

int blas_int(std::int64_t v) {
  return static_cast<int>(v);
}

void direct_nt(const float* x, std::int64_t m, std::int64_t k, const void* w, DType dtype,
               std::int64_t w_offset, std::int64_t n, float* y, bool accumulate) {
  tbb::parallel_for(tbb::blocked_range<std::int64_t>(0, n, kDirectColumnsPerTask),
                    [&](const tbb::blocked_range<std::int64_t>& cols) {
                      std::vector<float> row(static_cast<std::size_t>(k));
                      for (std::int64_t j = cols.begin(); j != cols.end(); ++j) {
                        load_floats(w, dtype, w_offset + j * k, k, row.data());
                        for (std::int64_t i = 0; i < m; ++i) {
                          const float acc = dot(x + i * k, row.data(), k);
                          float& out = y[i * n + j];
                          out = accumulate ? out + acc : acc;
                        }
                      }
                    });
}

// Products with nothing to compute: no output (m or n is 0), or an empty sum (k = 0: y = 0 unless
// accumulating). True when handled.
bool empty_product(std::int64_t m, std::int64_t n, std::int64_t k, float* y, bool accumulate) {
  if (m == 0 || n == 0) return true;
  if (k != 0) return false;
  if (!accumulate)
    for (std::int64_t i = 0; i < m * n; ++i) y[i] = 0.0f;
  return true;
}

}  // namespace

void linear_nt(const float* x, std::int64_t m, std::int64_t k, const void* w, DType dtype,
               std::int64_t w_offset, std::int64_t n, float* y, bool accumulate) {
  if (empty_product(m, n, k, y, accumulate)) return;
  const float beta = accumulate ? 1.0f : 0.0f;
  if (dtype == DType::kF32) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blas_int(m), blas_int(n), blas_int(k), 1.0f, x,
                blas_int(k), static_cast<const float*>(w) + w_offset, blas_int(k), beta, y, blas_int(n));
    return;
  }
  if (m <= kDirectRowsMax) {
    direct_nt(x, m, k, w, dtype, w_offset, n, y, accumulate);
    return;
  }
  std::vector<float> wf(static_cast<std::size_t>(n * k));
  tbb::parallel_for(
      tbb::blocked_range<std::int64_t>(0, n, 64), [&](const tbb::blocked_range<std::int64_t>& r) {
        load_floats(w, dtype, w_offset + r.begin() * k, (r.end() - r.begin()) * k, wf.data() + r.begin() * k);
      });
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blas_int(m), blas_int(n), blas_int(k), 1.0f, x,
              blas_int(k), wf.data(), blas_int(k), beta, y, blas_int(n));
}

void linear_nn(const float* x, std::int64_t m, std::int64_t k, const void* w, DType dtype, std::int64_t n,
               float* y, bool accumulate) {
  if (empty_product(m, n, k, y, accumulate)) return;
  const float beta = accumulate ? 1.0f : 0.0f;
  const float* wf = static_cast<const float*>(w);
  std::vector<float> converted;
  if (dtype != DType::kF32) {
    converted.resize(static_cast<std::size_t>(n * k));
    tbb::parallel_for(
        tbb::blocked_range<std::int64_t>(0, k, 64), [&](const tbb::blocked_range<std::int64_t>& r) {
          load_floats(w, dtype, r.begin() * n, (r.end() - r.begin()) * n, converted.data() + r.begin() * n);
        });
    wf = converted.data();
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blas_int(m), blas_int(n), blas_int(k), 1.0f, x,
              blas_int(k), wf, blas_int(n), beta, y, blas_int(n));
}

}  // namespace duplex::kernels::cpu
