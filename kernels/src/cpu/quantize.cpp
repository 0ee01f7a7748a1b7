// CPU fake quantization (ops.hpp ActivationQuant / QuantizeArgs): the scale of each reach (static, per
// tensor, per row or per group of columns), each element put on the FP8 E4M3 or INT8 grid and written back as
// q x s rounded to the storage dtype; LLM.int8()'s outlier columns marked over the call and passed through.
// expert_ffn (moe.cpp) quantizes its x and h rows with the same pieces.
#include <tbb/parallel_for.h>
#include <tbb/parallel_reduce.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "convert.hpp"
#include "cpu_ops.hpp"

namespace duplex::kernels::cpu {
namespace {

using Range = tbb::blocked_range<std::int64_t>;

constexpr float kFp8Max = 448.0f;  // the largest finite E4M3 value
constexpr float kInt8Max = 127.0f;

// Rows per task so that a task touches at least ~16 Ki elements (small tensors stay on one thread).
std::int64_t rows_per_task(std::int64_t row_length) {
  return std::max<std::int64_t>(1, (1 << 14) / std::max<std::int64_t>(1, row_length));
}

float grid_max(QuantFormat format) {
  return format == QuantFormat::kInt8 ? kInt8Max : kFp8Max;
}

// v (|v| <= 448) rounded to the nearest E4M3 value, ties to the even mantissa: E4M3 has 3 mantissa bits, so
// in the binade [2^(e-1), 2^e) its values are the multiples of 2^(e-4); below the smallest normal 2^-6 the
// subnormals are the multiples of 2^-9. Scaling by powers of two is exact; nearbyint rounds ties to even
// (the default rounding mode), and an even multiple of the quantum is an even mantissa.
float round_to_e4m3(float v) {
  int e = 0;
  std::frexp(v, &e);  // |v| in [2^(e-1), 2^e); v = 0 gives e = 0
  const int quantum = std::max(e - 4, -9);
  return std::ldexp(std::nearbyint(std::ldexp(v, -quantum)), quantum);
}

// x fake-quantized at scale s (ops.hpp): q = x / s on the format's grid, written back as q x s (FP32).
// s == 0: 0.
float fake_quantize(QuantFormat format, float x, float s) {
  if (s == 0.0f) return 0.0f;
  const float q = x / s;
  const float on_grid = format == QuantFormat::kInt8 ? std::clamp(std::nearbyint(q), -128.0f, kInt8Max)
                                                     : round_to_e4m3(std::clamp(q, -kFp8Max, kFp8Max));
  return on_grid * s;
}

}  // namespace

bool has_call_scale(const ActivationQuant& quant) {
  return quant.static_scale > 0.0f || quant.per_tensor;
}

float quant_scale(const ActivationQuant& quant, float amax) {
  if (quant.static_scale > 0.0f) return quant.static_scale;
  const float a = quant.scale_ub > 0.0f ? std::min(amax, quant.scale_ub) : amax;
  float s = std::max(a / grid_max(quant.format), quant.min_scale);
  if (quant.pow2_scale && s > 0.0f) {
    int e = 0;
    const float m = std::frexp(s, &e);       // s = m 2^e, m in [0.5, 1)
    if (m != 0.5f) s = std::ldexp(1.0f, e);  // 2^ceil(log2 s); a power of two stays itself
  }
  return s;
}

float max_magnitude(const float* values, std::int64_t n) {
  float amax = 0.0f;
  for (std::int64_t i = 0; i < n; ++i) amax = std::max(amax, std::abs(values[i]));
  return amax;
}

float max_magnitude(const Tensor& x) {
  // max is exact and order-independent: the result does not depend on the split.
  return tbb::parallel_reduce(
      Range(0, x.numel(), 1 << 14), 0.0f,
      [&](const Range& r, float amax) {
        for (std::int64_t i = r.begin(); i != r.end(); ++i)
          amax = std::max(amax, std::abs(load_element(x.data, x.dtype, i)));
        return amax;
      },
      [](float a, float b) { return std::max(a, b); });
}

namespace {

// The largest magnitude of n FP32 values below `threshold` (LLM.int8()'s row absmax without its outliers).
float max_magnitude_below(const float* values, std::int64_t n, float threshold) {
  float amax = 0.0f;
  for (std::int64_t i = 0; i < n; ++i)
    if (std::abs(values[i]) < threshold) amax = std::max(amax, std::abs(values[i]));
  return amax;
}

// mark_outlier_columns over rows x cols values, at(i, c) the value of row i, column c. Each task owns a range
// of columns: no two write one mark.
template <class At>
void mark_columns(std::int64_t rows, std::int64_t cols, float threshold, std::int32_t* outliers, At at) {
  tbb::parallel_for(Range(0, cols, std::max<std::int64_t>(1, (1 << 14) / std::max<std::int64_t>(1, rows))),
                    [&](const Range& r) {
                      for (std::int64_t c = r.begin(); c != r.end(); ++c)
                        for (std::int64_t i = 0; i < rows; ++i)
                          if (std::abs(at(i, c)) >= threshold) {
                            outliers[c] = 1;
                            break;
                          }
                    });
}

}  // namespace

void mark_outlier_columns(const float* values, std::int64_t rows, std::int64_t cols, float threshold,
                          std::int32_t* outliers) {
  mark_columns(rows, cols, threshold, outliers,
               [&](std::int64_t i, std::int64_t c) { return values[i * cols + c]; });
}

void mark_outlier_columns(const Tensor& x, float threshold, std::int32_t* outliers) {
  const std::int64_t cols = x.dim(1);
  mark_columns(x.dim(0), cols, threshold, outliers,
               [&](std::int64_t i, std::int64_t c) { return load_element(x.data, x.dtype, i * cols + c); });
}

void fake_quantize_row(const ActivationQuant& quant, float call_scale, float* row, std::int64_t cols,
                       DType dtype, float* row_scales, const std::int32_t* outliers) {
  if (quant.decomposes()) {  // per row (check_quant): the row's scale below the threshold, outliers pass
    const float s = quant_scale(quant, max_magnitude_below(row, cols, quant.outlier_threshold));
    if (row_scales != nullptr) row_scales[0] = s;
    for (std::int64_t i = 0; i < cols; ++i)
      row[i] = outliers[i] != 0 ? row[i] : round_to_dtype(fake_quantize(quant.format, row[i], s), dtype);
    return;
  }
  const bool call = has_call_scale(quant);
  // The row's reaches: one (the call's scale, or the row's), or ceil(C / group) groups, the last the shorter
  // rest (none when C = 0).
  const bool grouped = !call && quant.group > 0;
  const std::int64_t groups = grouped ? (cols + quant.group - 1) / quant.group : 1;
  const std::int64_t step = grouped ? quant.group : cols;
  for (std::int64_t g = 0; g < groups; ++g) {
    float* reach = row + g * step;
    const std::int64_t width = std::min(step, cols - g * step);
    const float s = call ? call_scale : quant_scale(quant, max_magnitude(reach, width));
    if (row_scales != nullptr) row_scales[g] = s;
    for (std::int64_t i = 0; i < width; ++i)
      reach[i] = round_to_dtype(fake_quantize(quant.format, reach[i], s), dtype);
  }
}

void fake_quantize_rows(const ActivationQuant& quant, float call_scale, float* values, std::int64_t rows,
                        std::int64_t cols, DType dtype, const std::int32_t* outliers) {
  tbb::parallel_for(Range(0, rows, rows_per_task(cols)), [&](const Range& r) {
    for (std::int64_t i = r.begin(); i != r.end(); ++i)
      fake_quantize_row(quant, call_scale, values + i * cols, cols, dtype, nullptr, outliers);
  });
}

Status quantize(const QuantizeArgs& args) {
  const ActivationQuant& quant = args.quant;
  const std::int64_t t = args.x.dim(0), c = args.x.dim(1);
  auto* scales = args.scales.as<float>();  // null when absent
  const bool call = has_call_scale(quant);
  float call_scale = 0.0f;
  if (call) {
    call_scale = quant_scale(quant, quant.static_scale > 0.0f ? 0.0f : max_magnitude(args.x));
    if (scales != nullptr) scales[0] = call_scale;
  }
  auto* outliers = args.outliers.as<std::int32_t>();  // null unless quant.decomposes()
  if (quant.decomposes()) mark_outlier_columns(args.x, quant.outlier_threshold, outliers);
  // Scales per row: 1, or ceil(C / group) with groups.
  const std::int64_t row_scales = !call && quant.group > 0 ? (c + quant.group - 1) / quant.group : 1;
  tbb::parallel_for(Range(0, t, rows_per_task(c)), [&](const Range& rows) {
    std::vector<float> row(static_cast<std::size_t>(c));
    for (std::int64_t r = rows.begin(); r != rows.end(); ++r) {
      load_floats(args.x.data, args.x.dtype, r * c, c, row.data());
      fake_quantize_row(quant, call_scale, row.data(), c, args.x.dtype,
                        call || scales == nullptr ? nullptr : scales + r * row_scales, outliers);
      store_floats(row.data(), c, args.y.data, args.y.dtype, r * c);
    }
  });
  return {};
}

}  // namespace duplex::kernels::cpu
