// CPU GEMM, GEMV and LM head (linear, optional bias and soft-cap, greedy argmax).
#include <tbb/parallel_for.h>

#include <cmath>
#include <vector>

#include "convert.hpp"
#include "cpu_ops.hpp"
#include "linear.hpp"

namespace duplex::kernels::cpu {
namespace {

std::vector<float> to_floats(const Tensor& t) {
  std::vector<float> out(static_cast<std::size_t>(t.numel()));
  tbb::parallel_for(tbb::blocked_range<std::int64_t>(0, t.numel(), 1 << 14),
                    [&](const tbb::blocked_range<std::int64_t>& r) {
                      load_floats(t.data, t.dtype, r.begin(), r.end() - r.begin(), out.data() + r.begin());
                    });
  return out;
}

void store_all(const std::vector<float>& values, const Tensor& t) {
  tbb::parallel_for(tbb::blocked_range<std::int64_t>(0, t.numel(), 1 << 14),
                    [&](const tbb::blocked_range<std::int64_t>& r) {
                      store_floats(values.data() + r.begin(), r.end() - r.begin(), t.data, t.dtype,
                                   r.begin());
                    });
}

}  // namespace

Status gemm(const GemmArgs& args) {
  const std::int64_t m = args.a.dim(0), k = args.a.dim(1), n = args.c.dim(1);
  if (args.a.dtype == DType::kF32) {
    const auto* a = args.a.as<const float>();
    if (args.b_transposed)
      linear_nt(a, m, k, args.b.data, DType::kF32, 0, n, args.c.as<float>(), args.accumulate);
    else
      linear_nn(a, m, k, args.b.data, DType::kF32, n, args.c.as<float>(), args.accumulate);
    return {};
  }
  const std::vector<float> a = to_floats(args.a);
  std::vector<float> c =
      args.accumulate ? to_floats(args.c) : std::vector<float>(static_cast<std::size_t>(m * n));
  if (args.b_transposed)
    linear_nt(a.data(), m, k, args.b.data, args.b.dtype, 0, n, c.data(), args.accumulate);
  else
    linear_nn(a.data(), m, k, args.b.data, args.b.dtype, n, c.data(), args.accumulate);
  store_all(c, args.c);
  return {};
}

Status gemv(const GemvArgs& args) {
  const std::int64_t n = args.w.dim(0), k = args.w.dim(1);
  const std::vector<float> x = to_floats(args.x);
  std::vector<float> y(static_cast<std::size_t>(n));
  linear_nt(x.data(), 1, k, args.w.data, args.w.dtype, 0, n, y.data(), false);
  store_all(y, args.y);
  return {};
}

Status lm_head(const LmHeadArgs& args) {
  const std::int64_t t = args.hidden.dim(0), h = args.hidden.dim(1), v = args.weight.dim(0);
  const std::vector<float> x = to_floats(args.hidden);
  std::vector<float> logits(static_cast<std::size_t>(t * v));
  linear_nt(x.data(), t, h, args.weight.data, args.weight.dtype, 0, v, logits.data(), false);
  if (args.bias.present()) {
    std::vector<float> bias(static_cast<std::size_t>(v));
    load_floats(args.bias.data, args.bias.dtype, 0, v, bias.data());
    for (std::int64_t i = 0; i < t; ++i)
      for (std::int64_t j = 0; j < v; ++j)
        logits[static_cast<std::size_t>(i * v + j)] += bias[static_cast<std::size_t>(j)];
  }
  if (args.softcap > 0.0f)  // Gemma 2's final soft-cap, in FP32 (std::tanh's float overload)
    tbb::parallel_for(tbb::blocked_range<std::size_t>(0, logits.size(), 1 << 14),
                      [&](const tbb::blocked_range<std::size_t>& r) {
                        for (std::size_t i = r.begin(); i != r.end(); ++i)
                          logits[i] = args.softcap * std::tanh(logits[i] / args.softcap);
                      });
  auto* ids = args.next_ids.as<std::int32_t>();
  for (std::int64_t i = 0; i < t; ++i) {
    const float* row = logits.data() + i * v;
    std::int64_t best = 0;
    for (std::int64_t j = 1; j < v; ++j)
      if (row[j] > row[best]) best = j;  // strict: ties keep the lowest id
    ids[i] = static_cast<std::int32_t>(best);
  }
  if (args.logits.present()) std::copy(logits.begin(), logits.end(), args.logits.as<float>());
  return {};
}

}  // namespace duplex::kernels::cpu
