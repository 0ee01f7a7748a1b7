// CPU row-wise and elementwise ops: norms, RoPE, softmax, residual add, clamp, Llama 4's attention
// temperature, embedding, sum of partials.
#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "convert.hpp"
#include "cpu_ops.hpp"

namespace duplex::kernels::cpu {
namespace {

using Range = tbb::blocked_range<std::int64_t>;

// Rows per task so that a task touches at least ~16 Ki elements (small tensors stay on one thread).
std::int64_t rows_per_task(std::int64_t row_length) {
  return std::max<std::int64_t>(1, (1 << 14) / std::max<std::int64_t>(1, row_length));
}

}  // namespace

Status norm(const NormArgs& args) {
  const std::int64_t t = args.x.dim(0), h = args.x.dim(1);
  std::vector<float> weight(static_cast<std::size_t>(h)), bias(static_cast<std::size_t>(h), 0.0f);
  load_floats(args.weight.data, args.weight.dtype, 0, h, weight.data());
  for (float& w : weight) w += args.weight_offset;
  if (args.bias.present()) load_floats(args.bias.data, args.bias.dtype, 0, h, bias.data());
  const bool layer = args.kind == NormKind::kLayer;
  tbb::parallel_for(Range(0, t, rows_per_task(h)), [&](const Range& rows) {
    std::vector<float> x(static_cast<std::size_t>(h));
    for (std::int64_t r = rows.begin(); r != rows.end(); ++r) {
      load_floats(args.x.data, args.x.dtype, r * h, h, x.data());
      float mean = 0.0f;
      if (layer) {
        for (float v : x) mean += v;
        mean /= static_cast<float>(h);
      }
      float sq = 0.0f;
      for (float v : x) sq += (v - mean) * (v - mean);
      const float inv = 1.0f / std::sqrt(sq / static_cast<float>(h) + args.eps);
      for (std::int64_t i = 0; i < h; ++i) {
        const auto ui = static_cast<std::size_t>(i);
        store_element(args.y.data, args.y.dtype, r * h + i, (x[ui] - mean) * inv * weight[ui] + bias[ui]);
      }
    }
  });
  return {};
}

Status rope(const RopeArgs& args) {
  const std::int64_t t = args.x.dim(0), heads = args.x.dim(1), d = args.x.dim(2);
  const std::int64_t rd = args.rotary_dim == 0 ? d : args.rotary_dim;
  const std::int64_t half = rd / 2;
  const auto* positions = args.positions.as<const std::int32_t>();
  tbb::parallel_for(Range(0, t, rows_per_task(heads * d)), [&](const Range& rows) {
    std::vector<double> cos_v(static_cast<std::size_t>(half)), sin_v(static_cast<std::size_t>(half));
    for (std::int64_t r = rows.begin(); r != rows.end(); ++r) {
      for (std::int64_t i = 0; i < half; ++i) {
        const double inv_freq = args.inv_freq.empty()
                                    ? std::pow(static_cast<double>(args.theta),
                                               -2.0 * static_cast<double>(i) / static_cast<double>(rd))
                                    : static_cast<double>(args.inv_freq[static_cast<std::size_t>(i)]);
        const double angle = static_cast<double>(positions[r]) * inv_freq;
        cos_v[static_cast<std::size_t>(i)] = std::cos(angle) * static_cast<double>(args.scale);
        sin_v[static_cast<std::size_t>(i)] = std::sin(angle) * static_cast<double>(args.scale);
      }
      for (std::int64_t hd = 0; hd < heads; ++hd) {
        const std::int64_t base = (r * heads + hd) * d;
        for (std::int64_t i = 0; i < half; ++i) {
          const double x0 = load_element(args.x.data, args.x.dtype, base + i);
          const double x1 = load_element(args.x.data, args.x.dtype, base + i + half);
          const double c = cos_v[static_cast<std::size_t>(i)], s = sin_v[static_cast<std::size_t>(i)];
          store_element(args.x.data, args.x.dtype, base + i, static_cast<float>(x0 * c - x1 * s));
          store_element(args.x.data, args.x.dtype, base + i + half, static_cast<float>(x1 * c + x0 * s));
        }
      }
    }
  });
  return {};
}

Status softmax(const SoftmaxArgs& args) {
  const std::int64_t rows = args.x.dim(0), cols = args.x.dim(1);
  tbb::parallel_for(Range(0, rows, rows_per_task(cols)), [&](const Range& range) {
    std::vector<float> x(static_cast<std::size_t>(cols));
    for (std::int64_t r = range.begin(); r != range.end(); ++r) {
      load_floats(args.x.data, args.x.dtype, r * cols, cols, x.data());
      float max = -INFINITY;
      for (float& v : x) {
        v *= args.scale;
        max = std::max(max, v);
      }
      float sum = 0.0f;
      for (float& v : x) {
        v = std::exp(v - max);
        sum += v;
      }
      const float inv = 1.0f / sum;
      for (float& v : x) v *= inv;
      store_floats(x.data(), cols, args.y.data, args.y.dtype, r * cols);
    }
  });
  return {};
}

Status residual_add(const ResidualAddArgs& args) {
  const std::int64_t n = args.a.numel();
  tbb::parallel_for(Range(0, n, 1 << 14), [&](const Range& r) {
    for (std::int64_t i = r.begin(); i != r.end(); ++i)
      store_element(args.out.data, args.out.dtype, i,
                    load_element(args.a.data, args.a.dtype, i) + load_element(args.b.data, args.b.dtype, i));
  });
  return {};
}

Status clamp(const ClampArgs& args) {
  // The bounds in the storage dtype (as torch converts the scalar): every output is then x itself (copied as
  // stored, NaN included) or a bound, and nothing is rounded.
  const DType dtype = args.x.dtype;
  const float hi = round_to_dtype(args.limit, dtype), lo = -hi;
  const std::size_t size = dtype_size(dtype);
  const std::int64_t n = args.x.numel();
  const auto* x = static_cast<const char*>(args.x.data);
  auto* y = static_cast<char*>(args.y.data);
  tbb::parallel_for(Range(0, n, 1 << 14), [&](const Range& r) {
    for (std::int64_t i = r.begin(); i != r.end(); ++i) {
      const float v = load_element(x, dtype, i);
      if (v < lo)
        store_element(y, dtype, i, lo);
      else if (v > hi)
        store_element(y, dtype, i, hi);
      else if (y != x)  // in range or NaN
        std::memcpy(y + static_cast<std::size_t>(i) * size, x + static_cast<std::size_t>(i) * size, size);
    }
  });
  return {};
}

Status attn_temperature(const AttnTemperatureArgs& args) {
  const std::int64_t t = args.x.dim(0), row_elems = args.x.dim(1) * args.x.dim(2);
  const auto* positions = args.positions.as<const std::int32_t>();
  for (std::int64_t i = 0; i < t; ++i)
    if (positions[i] < 0)
      return {
          StatusCode::kInvalidArgument,
          fmt::format("attn_temperature: positions[{}] = {} is negative; expected >= 0", i, positions[i])};
  tbb::parallel_for(Range(0, t, rows_per_task(row_elems)), [&](const Range& rows) {
    std::vector<float> x(static_cast<std::size_t>(row_elems));
    for (std::int64_t r = rows.begin(); r != rows.end(); ++r) {
      // f(t) in FP32, in HF's order (ops.hpp): floor((position + 1) / floor_scale), log1p, * attn_scale, + 1.
      const float steps = std::floor((static_cast<float>(positions[r]) + 1.0f) / args.floor_scale);
      const float f = std::log1p(steps) * args.attn_scale + 1.0f;
      load_floats(args.x.data, args.x.dtype, r * row_elems, row_elems, x.data());
      for (float& v : x) v *= f;
      store_floats(x.data(), row_elems, args.x.data, args.x.dtype, r * row_elems);
    }
  });
  return {};
}

Status embedding(const EmbeddingArgs& args) {
  const std::int64_t t = args.ids.dim(0), v = args.table.dim(0), h = args.table.dim(1);
  const auto* ids = args.ids.as<const std::int32_t>();
  for (std::int64_t i = 0; i < t; ++i)
    if (ids[i] < 0 || ids[i] >= v)
      return {StatusCode::kInvalidArgument,
              fmt::format("embedding: ids[{}] = {} is outside the vocabulary [0, {})", i, ids[i], v)};
  const std::size_t row_bytes = static_cast<std::size_t>(h) * dtype_size(args.table.dtype);
  tbb::parallel_for(Range(0, t, rows_per_task(h)), [&](const Range& r) {
    std::vector<float> row(args.scale == 1.0f ? 0 : static_cast<std::size_t>(h));
    for (std::int64_t i = r.begin(); i != r.end(); ++i) {
      if (args.scale == 1.0f) {
        std::memcpy(static_cast<char*>(args.out.data) + static_cast<std::size_t>(i) * row_bytes,
                    static_cast<const char*>(args.table.data) + static_cast<std::size_t>(ids[i]) * row_bytes,
                    row_bytes);
        continue;
      }
      load_floats(args.table.data, args.table.dtype, ids[i] * h, h, row.data());
      for (std::int64_t c = 0; c < h; ++c)
        store_element(args.out.data, args.out.dtype, i * h + c,
                      row[static_cast<std::size_t>(c)] * args.scale);
    }
  });
  return {};
}

Status partial_sum(const PartialSumArgs& args) {
  const std::int64_t p = args.partials.dim(0), n = args.partials.dim(1);
  tbb::parallel_for(Range(0, n, 1 << 12), [&](const Range& r) {
    for (std::int64_t i = r.begin(); i != r.end(); ++i) {
      float acc = 0.0f;
      for (std::int64_t j = 0; j < p; ++j)
        acc += load_element(args.partials.data, args.partials.dtype, j * n + i);
      store_element(args.out.data, args.out.dtype, i, acc);
    }
  });
  return {};
}

}  // namespace duplex::kernels::cpu
