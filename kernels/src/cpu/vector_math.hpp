#pragma once
// Small FP32 loops the CPU kernels spend their time in, written so the compiler vectorises them without
// -ffast-math: the dot product keeps 8 independent partial sums in a fixed order (so the result is the same
// on every run and thread count).
#include <cstdint>

namespace duplex::kernels::cpu {

inline float dot(const float* a, const float* b, std::int64_t n) {
  float lanes[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) lanes[l] += a[i + l] * b[i + l];
  float acc =
      ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  for (; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// y += alpha * x
inline void axpy(float alpha, const float* x, float* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

}  // namespace duplex::kernels::cpu
