#include "reference.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace duplex::kernels::test {
namespace {

std::size_t uz(std::int64_t i) {
  return static_cast<std::size_t>(i);
}

// The tensor's exact values, extracted once (HostTensor::get per element is slow in the O(n^3) references).
std::vector<double> values(const HostTensor& t) {
  std::vector<double> v(uz(t.numel()));
  for (std::int64_t i = 0; i < t.numel(); ++i) v[uz(i)] = t.get(i);
  return v;
}

struct Attended {
  std::vector<double> out, bound;  // [D] each
};

struct Capped {
  double value, bound;
};
// Soft-capping (ops.hpp): c = cap * tanh(x / cap) of an x the kernel computes within `err`, with the bound on
// the kernel's FP32 c: the error of x scaled by the largest slope of c over x +- err (1 - tanh^2 at the
// smallest |x|), the rounding of x / cap (u32 |x|, twice for a margin), tanhf's ulps (2, as CUDA and glibc
// document) and the product by cap (and by log2(e) in the base-2 kernels): 8 u32 |c| in all.
Capped soft_cap(double x, double err, double cap) {
  const double c = cap * std::tanh(x / cap);
  const double t_lo = std::tanh(std::max(0.0, std::abs(x) - err) * (1.0 - 4.0 * kU32) / cap);
  return {c, (1.0 - t_lo * t_lo) * (err + 2.0 * kU32 * std::abs(x)) + 8.0 * kU32 * std::abs(c)};
}

// One query row against keys/values given as row accessors; FP64 softmax attention with its bound. With
// softcap > 0, each scaled score is soft-capped (soft_cap) before the softmax. sink: the row's sink logit
// (exact), or -inf for none: it joins the max and the denominator.
template <class KeyRow, class ValueRow>
Attended attend(const std::vector<double>& q, std::int64_t q_offset, std::int64_t d, std::int64_t length,
                KeyRow key, ValueRow value, double scale, DType out_dtype, double softcap, double sink) {
  Attended r{std::vector<double>(uz(d), 0.0), std::vector<double>(uz(d), 0.0)};
  if (length == 0) return r;
  std::vector<double> s(uz(length));
  double max = -INFINITY, max_err = 0.0;
  for (std::int64_t j = 0; j < length; ++j) {
    double dot = 0.0, mag = 0.0;
    for (std::int64_t c = 0; c < d; ++c) {
      const double term = q[uz(q_offset + c)] * key(j, c);
      dot += term;
      mag += std::abs(term);
    }
    s[uz(j)] = scale * dot;
    double err = 2.0 * static_cast<double>(d + 4) * kU32 * std::abs(scale) * mag;
    if (softcap > 0.0) {
      const Capped c = soft_cap(s[uz(j)], err, softcap);
      s[uz(j)] = c.value;
      err = c.bound;
    }
    max = std::max(max, s[uz(j)]);
    max_err = std::max(max_err, err);
  }
  max = std::max(max, sink);
  double sum = std::exp(sink - max);  // 0 without a sink
  for (double& v : s) sum += (v = std::exp(v - max));
  std::vector<double> mag(uz(d), 0.0);
  for (std::int64_t j = 0; j < length; ++j) {
    const double p = s[uz(j)] / sum;
    for (std::int64_t c = 0; c < d; ++c) {
      const double vv = value(j, c);
      r.out[uz(c)] += p * vv;
      mag[uz(c)] += p * std::abs(vv);
    }
  }
  // Score errors e perturb each p by a factor within exp(+-2e); exp / sum / weighted-sum rounding add
  // O((length + d) u32) relative to sum p |v|.
  const double rel = 4.0 * max_err + 2.0 * static_cast<double>(length + d + 16) * kU32;
  for (std::int64_t c = 0; c < d; ++c)
    r.bound[uz(c)] = unit_roundoff(out_dtype) * std::abs(r.out[uz(c)]) + 2.0 * rel * mag[uz(c)];
  return r;
}

double activate(Activation act, double x) {
  switch (act) {
    case Activation::kSilu:
      return x / (1.0 + std::exp(-x));
    case Activation::kGeluTanh:
      return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
    case Activation::kRelu:
      return x > 0.0 ? x : 0.0;
    case Activation::kGelu:
      return 0.5 * x * std::erfc(-x / std::sqrt(2.0));
    case Activation::kSwigluOai:  // the gate's part, g sigmoid(alpha g) with g = min(x, limit)
      x = std::min(x, static_cast<double>(kSwigluOaiLimit));
      return x / (1.0 + std::exp(-static_cast<double>(kSwigluOaiAlpha) * x));
  }
  return x;
}
// A bound on |d act / dx| over the whole line (SiLU peaks at 1.0998, GELU-tanh at 1.129, GELU at 1.129).
double activate_slope(Activation act) {
  switch (act) {
    case Activation::kSilu:
      return 1.1;
    case Activation::kGeluTanh:
    case Activation::kGelu:
    case Activation::kSwigluOai:  // x sigmoid(1.702 x) peaks at 1.0998 too (the clamp only flattens it)
      return 1.2;
    case Activation::kRelu:
      return 1.0;
  }
  return 1.0;
}

double round_to(DType dtype, double v) {
  HostTensor t(dtype, {1});
  t.set(0, v);
  return t.get(0);
}

}  // namespace

double unit_roundoff(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return 1.0 / 2048.0;
    case DType::kBF16:
      return 1.0 / 256.0;
    case DType::kF32:
      return kU32;
    case DType::kI32:
      return 0.0;
  }
  return 0.0;
}

Expected gemm_ref(const HostTensor& a, const HostTensor& b, const HostTensor* c_before, bool b_transposed,
                  DType out_dtype) {
  const std::int64_t m = a.shape()[0], k = a.shape()[1], n = b_transposed ? b.shape()[0] : b.shape()[1];
  Expected e{std::vector<double>(uz(m * n)), std::vector<double>(uz(m * n))};
  const std::vector<double> av = values(a), bv = values(b);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double acc = c_before ? c_before->get(i * n + j) : 0.0;
      double mag = std::abs(acc);
      for (std::int64_t p = 0; p < k; ++p) {
        const double term = av[uz(i * k + p)] * (b_transposed ? bv[uz(j * k + p)] : bv[uz(p * n + j)]);
        acc += term;
        mag += std::abs(term);
      }
      e.value[uz(i * n + j)] = acc;
      e.bound[uz(i * n + j)] =
          unit_roundoff(out_dtype) * std::abs(acc) + 2.0 * static_cast<double>(k + 2) * kU32 * mag;
    }
  return e;
}

Expected norm_ref(NormKind kind, const HostTensor& x, const HostTensor& weight, const HostTensor* bias,
                  double eps, double weight_offset) {
  const std::int64_t t = x.shape()[0], h = x.shape()[1];
  Expected e{std::vector<double>(uz(t * h)), std::vector<double>(uz(t * h))};
  for (std::int64_t r = 0; r < t; ++r) {
    double mean = 0.0, mean_abs = 0.0;
    for (std::int64_t i = 0; i < h; ++i) mean_abs += std::abs(x.get(r * h + i)) / static_cast<double>(h);
    if (kind == NormKind::kLayer)
      for (std::int64_t i = 0; i < h; ++i) mean += x.get(r * h + i) / static_cast<double>(h);
    double sq = 0.0;
    for (std::int64_t i = 0; i < h; ++i) sq += (x.get(r * h + i) - mean) * (x.get(r * h + i) - mean);
    const double inv = 1.0 / std::sqrt(sq / static_cast<double>(h) + eps);
    for (std::int64_t i = 0; i < h; ++i) {
      const double b = bias ? bias->get(i) : 0.0;
      const double w = weight_offset + weight.get(i);
      const double v = (x.get(r * h + i) - mean) * inv * w + b;
      const double mag = (std::abs(x.get(r * h + i) - mean) + mean_abs) * inv * std::abs(w) + std::abs(b);
      e.value[uz(r * h + i)] = v;
      e.bound[uz(r * h + i)] =
          unit_roundoff(x.dtype()) * std::abs(v) + 2.0 * static_cast<double>(h + 8) * kU32 * mag;
    }
  }
  return e;
}

Expected rope_ref(const HostTensor& x, const HostTensor& positions, double theta, std::int64_t rotary_dim,
                  const std::vector<double>& inv_freq, double scale) {
  const std::int64_t t = x.shape()[0], heads = x.shape()[1], d = x.shape()[2];
  const std::int64_t rd = rotary_dim == 0 ? d : rotary_dim, half = rd / 2;
  Expected e{std::vector<double>(uz(x.numel())), std::vector<double>(uz(x.numel()))};
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    e.value[uz(i)] = x.get(i);
    e.bound[uz(i)] = 0.0;  // dimensions past rotary_dim pass through unchanged
  }
  const double u = unit_roundoff(x.dtype());
  for (std::int64_t r = 0; r < t; ++r)
    for (std::int64_t hd = 0; hd < heads; ++hd)
      for (std::int64_t i = 0; i < half; ++i) {
        const std::int64_t base = (r * heads + hd) * d;
        const double angle =
            positions.get_int(r) *
            (inv_freq.empty() ? std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(rd))
                              : inv_freq[uz(i)]);
        const double x0 = x.get(base + i), x1 = x.get(base + i + half);
        const double y0 = scale * (x0 * std::cos(angle) - x1 * std::sin(angle));
        const double y1 = scale * (x1 * std::cos(angle) + x0 * std::sin(angle));
        // An FP32 angle (powf of a rounded exponent, then a product) is off by up to ~13 u32 |angle| for
        // theta 1e4 (bound: 32, a 2x margin); sin/cos add a few u32.
        const double err =
            scale * (std::abs(x0) + std::abs(x1)) * (32.0 * kU32 * std::abs(angle) + 8.0 * kU32);
        e.value[uz(base + i)] = y0;
        e.value[uz(base + i + half)] = y1;
        e.bound[uz(base + i)] = u * std::abs(y0) + err;
        e.bound[uz(base + i + half)] = u * std::abs(y1) + err;
      }
  return e;
}

std::int64_t first_attended(std::int64_t pos, std::int64_t window, std::int64_t chunk) {
  std::int64_t first = window > 0 ? std::max<std::int64_t>(0, pos + 1 - window) : 0;
  if (chunk > 0) first = std::max(first, pos / chunk * chunk);
  return first;
}

Expected prefill_attention_ref(const HostTensor& q, const HostTensor& k, const HostTensor& v,
                               std::span<const std::int64_t> seq_starts, double scale, std::int64_t window,
                               double softcap, const HostTensor* sinks, std::int64_t chunk) {
  const std::int64_t hq = q.shape()[1], d = q.shape()[2], hkv = k.shape()[1], group = hq / hkv;
  Expected e{std::vector<double>(uz(q.numel())), std::vector<double>(uz(q.numel()))};
  const std::vector<double> qv = values(q), kv = values(k), vv = values(v);
  for (std::size_t s = 0; s + 1 < seq_starts.size(); ++s) {
    const std::int64_t start = seq_starts[s], len = seq_starts[s + 1] - start;
    for (std::int64_t i = 0; i < len; ++i)
      for (std::int64_t head = 0; head < hq; ++head) {
        const std::int64_t g = head / group;
        const std::int64_t offset = ((start + i) * hq + head) * d;
        const std::int64_t from = first_attended(i, window, chunk);  // first key
        auto key = [&](std::int64_t j, std::int64_t c) { return kv[uz(((start + from + j) * hkv + g) * d + c)]; };
        auto value = [&](std::int64_t j, std::int64_t c) { return vv[uz(((start + from + j) * hkv + g) * d + c)]; };
        Attended a = attend(qv, offset, d, i + 1 - from, key, value, scale, q.dtype(), softcap,
                            sinks ? sinks->get(head) : -INFINITY);
        for (std::int64_t c = 0; c < d; ++c) {
          e.value[uz(offset + c)] = a.out[uz(c)];
          e.bound[uz(offset + c)] = a.bound[uz(c)];
        }
      }
  }
  return e;
}

Expected decode_attention_ref(const HostTensor& q, const HostTensor& k_cache, const HostTensor& v_cache,
                              const HostTensor& block_table, const HostTensor& context_lens, double scale,
                              std::int64_t window, double softcap, const HostTensor* sinks,
                              std::int64_t chunk) {
  const std::int64_t batch = q.shape()[0], hq = q.shape()[1], d = q.shape()[2];
  const std::int64_t block_size = k_cache.shape()[1], hkv = k_cache.shape()[2],
                     max_blocks = block_table.shape()[1];
  const std::int64_t group = hq / hkv;
  Expected e{std::vector<double>(uz(q.numel())), std::vector<double>(uz(q.numel()))};
  const std::vector<double> qv = values(q), kv = values(k_cache), vv = values(v_cache);
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t head = 0; head < hq; ++head) {
      const std::int64_t g = head / group, offset = (b * hq + head) * d;
      const std::int64_t context = context_lens.get_int(b);
      const std::int64_t from = context > 0 ? first_attended(context - 1, window, chunk) : 0;  // first token
      auto row = [&](std::int64_t j) {
        j += from;
        const std::int64_t block = block_table.get_int(b * max_blocks + j / block_size);
        return ((block * block_size + j % block_size) * hkv + g) * d;
      };
      auto key = [&](std::int64_t j, std::int64_t c) { return kv[uz(row(j) + c)]; };
      auto value = [&](std::int64_t j, std::int64_t c) { return vv[uz(row(j) + c)]; };
      Attended a = attend(qv, offset, d, context - from, key, value, scale, q.dtype(), softcap,
                          sinks ? sinks->get(head) : -INFINITY);
      for (std::int64_t c = 0; c < d; ++c) {
        e.value[uz(offset + c)] = a.out[uz(c)];
        e.bound[uz(offset + c)] = a.bound[uz(c)];
      }
    }
  return e;
}

Expected softcap_ref(const Expected& x, double cap) {
  Expected e{std::vector<double>(x.value.size()), std::vector<double>(x.value.size())};
  for (std::size_t i = 0; i < x.value.size(); ++i) {
    const Capped c = soft_cap(x.value[i], x.bound[i], cap);
    e.value[i] = c.value;
    e.bound[i] = c.bound;
  }
  return e;
}

Expected softmax_ref(const HostTensor& x, double scale) {
  const std::int64_t rows = x.shape()[0], cols = x.shape()[1];
  Expected e{std::vector<double>(uz(x.numel())), std::vector<double>(uz(x.numel()))};
  for (std::int64_t r = 0; r < rows; ++r) {
    double max = -INFINITY;
    for (std::int64_t c = 0; c < cols; ++c) max = std::max(max, scale * x.get(r * cols + c));
    double sum = 0.0;
    for (std::int64_t c = 0; c < cols; ++c) sum += std::exp(scale * x.get(r * cols + c) - max);
    for (std::int64_t c = 0; c < cols; ++c) {
      const double s = scale * x.get(r * cols + c);
      const double p = std::exp(s - max) / sum;
      e.value[uz(r * cols + c)] = p;
      e.bound[uz(r * cols + c)] =
          unit_roundoff(x.dtype()) * p +
          p * (4.0 * kU32 * (std::abs(s) + std::abs(max)) + 2.0 * static_cast<double>(cols + 8) * kU32);
    }
  }
  return e;
}

Expected router_logits_ref(const HostTensor& hidden, const HostTensor& gate_weight,
                           const HostTensor* logit_bias) {
  Expected logits = gemm_ref(hidden, gate_weight, nullptr, true, DType::kF32);
  if (logit_bias == nullptr) return logits;
  const std::int64_t experts = gate_weight.shape()[0];
  for (std::size_t i = 0; i < logits.value.size(); ++i) {
    const double b = logit_bias->get(static_cast<std::int64_t>(i) % experts);
    logits.value[i] += b;
    logits.bound[i] += 2.0 * kU32 * (std::abs(logits.value[i]) + std::abs(b));  // the FP32 add
  }
  return logits;
}

Expected router_probs_ref(const HostTensor& hidden, const HostTensor& gate_weight,
                          const HostTensor* logit_bias) {
  const std::int64_t t = hidden.shape()[0], h = hidden.shape()[1], experts = gate_weight.shape()[0];
  Expected logits = router_logits_ref(hidden, gate_weight, logit_bias);
  Expected e{std::vector<double>(uz(t * experts)), std::vector<double>(uz(t * experts))};
  for (std::int64_t r = 0; r < t; ++r) {
    double max = -INFINITY, max_err = 0.0;
    for (std::int64_t j = 0; j < experts; ++j) {
      max = std::max(max, logits.value[uz(r * experts + j)]);
      max_err = std::max(max_err, logits.bound[uz(r * experts + j)]);
    }
    double sum = 0.0;
    for (std::int64_t j = 0; j < experts; ++j) sum += std::exp(logits.value[uz(r * experts + j)] - max);
    for (std::int64_t j = 0; j < experts; ++j) {
      const double p = std::exp(logits.value[uz(r * experts + j)] - max) / sum;
      e.value[uz(r * experts + j)] = p;
      e.bound[uz(r * experts + j)] = p * (4.0 * max_err + 2.0 * static_cast<double>(experts + h + 8) * kU32);
    }
  }
  return e;
}

Expected router_sigmoid_ref(const HostTensor& hidden, const HostTensor& gate_weight,
                            const HostTensor* logit_bias) {
  Expected s = router_logits_ref(hidden, gate_weight, logit_bias);
  for (std::size_t i = 0; i < s.value.size(); ++i) {
    const double v = 1.0 / (1.0 + std::exp(-s.value[i]));
    // The slope s (1 - s) at the logit, with a margin for the logit's error (it is at most 1/4); expf's
    // ulps, the add and the division: a few u32 of s.
    s.bound[i] = std::min(0.25, v * (1.0 - v) * 1.5) * s.bound[i] + 8.0 * kU32 * v;
    s.value[i] = v;
  }
  return s;
}

Expected permute_scaled_ref(const HostTensor& x, const HostTensor& permuted_row,
                            const HostTensor& topk_weights) {
  const std::int64_t t = permuted_row.shape()[0], k = permuted_row.shape()[1], h = x.shape()[1];
  Expected e{std::vector<double>(uz(t * k * h)), std::vector<double>(uz(t * k * h))};
  for (std::int64_t i = 0; i < t; ++i)
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t row = permuted_row.get_int(i * k + j);
      for (std::int64_t c = 0; c < h; ++c) {
        const double v = x.get(i * h + c) * topk_weights.get(i * k + j);
        e.value[uz(row * h + c)] = v;
        // The FP32 product's rounding, then the dtype's (f32: that one rounding), with a margin.
        e.bound[uz(row * h + c)] = unit_roundoff(x.dtype()) * std::abs(v) + 2.0 * kU32 * std::abs(v);
      }
    }
  return e;
}

Expected unpermute_ref(const HostTensor& y_perm, const HostTensor& permuted_row,
                       const HostTensor& topk_weights, DType out_dtype) {
  const std::int64_t t = permuted_row.shape()[0], k = permuted_row.shape()[1], h = y_perm.shape()[1];
  Expected e{std::vector<double>(uz(t * h)), std::vector<double>(uz(t * h))};
  for (std::int64_t i = 0; i < t; ++i)
    for (std::int64_t c = 0; c < h; ++c) {
      double acc = 0.0, mag = 0.0;
      for (std::int64_t j = 0; j < k; ++j) {
        const double term = topk_weights.get(i * k + j) * y_perm.get(permuted_row.get_int(i * k + j) * h + c);
        acc += term;
        mag += std::abs(term);
      }
      e.value[uz(i * h + c)] = acc;
      e.bound[uz(i * h + c)] =
          unit_roundoff(out_dtype) * std::abs(acc) + 2.0 * static_cast<double>(k + 2) * kU32 * mag;
    }
  return e;
}

namespace {

// An expert FFN's h [P, F] as the reference expects the kernel to hold it, rounded to the dtype, with two
// bounds on the kernel's: err, the error the down projection propagates (the FP32 error before the rounding,
// plus an ulp where that error may cross a rounding boundary), and dev, how far the kernel's rounded h can
// actually be from value (f16 / bf16: 0 away from a rounding boundary, where it rounds as the reference
// does).
struct Hidden {
  std::vector<double> value, err, dev;
};

Hidden ffn_hidden(FfnKind kind, Activation act, const HostTensor& x, const HostTensor& w_in,
                  const HostTensor* w_up, std::span<const std::int64_t> offsets, const HostTensor* b_in,
                  const HostTensor* b_up) {
  const std::int64_t h = x.shape()[1], f = w_in.shape()[1], p = x.shape()[0];
  const DType dtype = x.dtype();
  const double u = unit_roundoff(dtype);
  Hidden hd{std::vector<double>(uz(p * f)), std::vector<double>(uz(p * f)), std::vector<double>(uz(p * f))};
  for (std::size_t expert = 0; expert + 1 < offsets.size(); ++expert) {
    const auto ex = static_cast<std::int64_t>(expert);
    for (std::int64_t r = offsets[expert]; r < offsets[expert + 1]; ++r) {
      for (std::int64_t j = 0; j < f; ++j) {
        double g = 0.0, g_mag = 0.0, up = 1.0, up_mag = 0.0;
        for (std::int64_t c = 0; c < h; ++c) {
          const double term = x.get(r * h + c) * w_in.get((ex * f + j) * h + c);
          g += term;
          g_mag += std::abs(term);
        }
        if (b_in != nullptr) {
          g += b_in->get(ex * f + j);
          g_mag += std::abs(b_in->get(ex * f + j));
        }
        if (kind == FfnKind::kGated) {
          up = 0.0;
          for (std::int64_t c = 0; c < h; ++c) {
            const double term = x.get(r * h + c) * w_up->get((ex * f + j) * h + c);
            up += term;
            up_mag += std::abs(term);
          }
          if (b_up != nullptr) {
            up += b_up->get(ex * f + j);
            up_mag += std::abs(b_up->get(ex * f + j));
          }
        }
        const double acc_rel = 2.0 * static_cast<double>(h + 4) * kU32;
        // gpt-oss's SwiGLU multiplies by clamp(up) + 1 (its FP32 add rounds too); the others by up. The clamp
        // has slope 0 or 1, so up's error passes through it at most unchanged.
        const bool oai = act == Activation::kSwigluOai;
        const double limit = kSwigluOaiLimit;
        const double factor = oai ? std::clamp(up, -limit, limit) + 1.0 : up;
        const double exact = activate(act, g) * factor;
        // Error of the FP32 value before it is rounded to the storage dtype.
        const double pre_err = activate_slope(act) * std::abs(factor) * acc_rel * g_mag +
                               std::abs(activate(act, g)) * acc_rel * up_mag + 8.0 * kU32 * std::abs(exact) +
                               (oai ? 2.0 * kU32 * std::abs(activate(act, g)) * (std::abs(up) + 1.0) : 0.0);
        const double rounded = round_to(dtype, exact);
        const double ulp = std::abs(exact) > 0.0 ? 2.0 * u * std::abs(rounded) + 1e-45 : 0.0;
        // The kernel's h may round to a neighbouring value when the pre-rounding error crosses a rounding
        // boundary: halfway between two neighbours of the dtype, which lie `spacing` apart in exact's binade
        // [2^(e-1), 2^e) (u 2^e, at least the subnormals' spacing; ulp above may be up to twice it).
        int binade = 0;
        std::frexp(exact, &binade);
        const double spacing = std::max(std::ldexp(u, binade), 2.0 * underflow_floor(dtype));
        const bool near_boundary =
            std::abs(std::abs(exact - rounded) - spacing / 2.0) <= pre_err + u * 1e-3 * std::abs(exact);
        const std::size_t i = uz(r * f + j);
        hd.value[i] = rounded;
        hd.err[i] =
            pre_err + (near_boundary ? ulp : 0.0) + (dtype == DType::kF32 ? u * std::abs(exact) : 0.0);
        hd.dev[i] = dtype == DType::kF32 ? hd.err[i] : near_boundary ? ulp : 0.0;
      }
    }
  }
  return hd;
}

// y = w_down[e] . h (+ b_down) per row of expert e, from h's values and the errors they propagate.
Expected ffn_down(const Hidden& hd, const HostTensor& w_down, std::span<const std::int64_t> offsets,
                  const HostTensor* b_down, DType dtype) {
  const std::int64_t h = w_down.shape()[1], f = w_down.shape()[2], p = offsets.back();
  const double u = unit_roundoff(dtype);
  Expected e{std::vector<double>(uz(p * h), 0.0), std::vector<double>(uz(p * h), 0.0)};
  for (std::size_t expert = 0; expert + 1 < offsets.size(); ++expert) {
    const auto ex = static_cast<std::int64_t>(expert);
    for (std::int64_t r = offsets[expert]; r < offsets[expert + 1]; ++r)
      for (std::int64_t c = 0; c < h; ++c) {
        double acc = 0.0, mag = 0.0, propagated = 0.0;
        for (std::int64_t j = 0; j < f; ++j) {
          const double w = w_down.get((ex * h + c) * f + j), hv = hd.value[uz(r * f + j)];
          acc += hv * w;
          mag += std::abs(hv * w);
          propagated += hd.err[uz(r * f + j)] * std::abs(w);
        }
        if (b_down != nullptr) {
          acc += b_down->get(ex * h + c);
          mag += std::abs(b_down->get(ex * h + c));
        }
        e.value[uz(r * h + c)] = acc;
        e.bound[uz(r * h + c)] =
            u * std::abs(acc) + 2.0 * static_cast<double>(f + 2) * kU32 * mag + 1.01 * propagated;
      }
  }
  return e;
}

double fp32(double v) {
  return static_cast<double>(static_cast<float>(v));
}

double grid_max(QuantFormat format) {
  return format == QuantFormat::kInt8 ? 127.0 : 448.0;
}

// q put on the format's grid: E4M3 (clamped to +-448), or the integers in [-128, 127] (ties to even).
double on_grid(QuantFormat format, double q) {
  return format == QuantFormat::kInt8 ? std::clamp(std::nearbyint(q), -128.0, 127.0) : e4m3_round_ref(q);
}

// The reaches of a spec over rows of `cols`: one for a call scale, one per row, or ceil(cols / group) per row
// (the last group the shorter rest).
struct Reaches {
  std::int64_t per_row, width;
  bool call;
  std::int64_t of(std::int64_t row, std::int64_t col) const { return call ? 0 : row * per_row + col / width; }
};
Reaches reaches_of(const ActivationQuant& quant, std::int64_t cols) {
  const bool call = quant.static_scale > 0.0f || quant.per_tensor;
  const bool grouped = !call && quant.group > 0;
  const std::int64_t per_row = grouped ? (cols + quant.group - 1) / quant.group : 1;
  return {per_row, grouped ? quant.group : std::max<std::int64_t>(1, cols), call};
}

}  // namespace

Expected expert_ffn_ref(FfnKind kind, Activation act, const HostTensor& x, const HostTensor& w_in,
                        const HostTensor* w_up, const HostTensor& w_down,
                        std::span<const std::int64_t> offsets, const HostTensor* b_in, const HostTensor* b_up,
                        const HostTensor* b_down) {
  return ffn_down(ffn_hidden(kind, act, x, w_in, w_up, offsets, b_in, b_up), w_down, offsets, b_down,
                  x.dtype());
}

ExpertFfnQuantRef expert_ffn_quant_ref(FfnKind kind, Activation act, const HostTensor& x,
                                       const HostTensor& w_in, const HostTensor* w_up,
                                       const HostTensor& w_down, std::span<const std::int64_t> offsets,
                                       const ActivationQuant& quant_h, const HostTensor* b_in) {
  const std::int64_t p = x.shape()[0], f = w_in.shape()[1];
  const DType dtype = x.dtype();
  Hidden hd = ffn_hidden(kind, act, x, w_in, w_up, offsets, b_in, nullptr);
  ExpertFfnQuantRef out;
  // h_out: within its error bound, one ulp more where the FP32 value lay near a rounding boundary.
  out.h = {hd.value, hd.err};
  for (std::size_t i = 0; i < out.h.bound.size(); ++i)
    out.h.bound[i] += 2.0 * unit_roundoff(x.dtype()) * std::abs(hd.value[i]);
  const Reaches reach = reaches_of(quant_h, f);
  const std::int64_t count = reach.call ? 1 : p * reach.per_row;
  // LLM.int8(): an element is surely an outlier when |h| - dev >= threshold, surely not when |h| + dev <
  // threshold; its column is marked when one element surely is, unmarked when none may be.
  const double threshold = quant_h.outlier_threshold;
  const bool decomposes = threshold > 0.0;
  if (decomposes) out.h_outliers.assign(uz(f), 0);
  auto surely_outlier = [&](std::size_t i) { return std::abs(hd.value[i]) - hd.dev[i] >= threshold; };
  auto maybe_outlier = [&](std::size_t i) { return std::abs(hd.value[i]) + hd.dev[i] >= threshold; };
  // Each reach's amax as the reference has it, and how far the kernel's may be from it.
  // amax_up: the most an element that may or may not count gives its reach (below the threshold).
  std::vector<double> amax(uz(count), 0.0), amax_dev(uz(count), 0.0), amax_up(uz(count), 0.0);
  for (std::int64_t r = 0; r < p; ++r)
    for (std::int64_t j = 0; j < f; ++j) {
      const std::size_t i = uz(r * f + j), g = uz(reach.of(r, j));
      if (decomposes && maybe_outlier(i)) {
        int& mark = out.h_outliers[uz(j)];
        mark = surely_outlier(i) || mark == 1 ? 1 : -1;
        if (!surely_outlier(i)) amax_up[g] = threshold;
        continue;
      }
      amax[g] = std::max(amax[g], std::abs(hd.value[i]));
      amax_dev[g] = std::max(amax_dev[g], hd.dev[i]);
    }
  for (std::size_t g = 0; g < uz(count); ++g) amax_dev[g] = std::max(amax_dev[g], amax_up[g] - amax[g]);
  const QuantFormat format = quant_h.format;
  if (reach.call) {  // the scale is monotone in amax: the kernel's lies in the bracket
    out.h_scale_lo = quant_scale_ref(quant_h, std::max(0.0, amax[0] - amax_dev[0]));
    out.h_scale_hi = quant_scale_ref(quant_h, amax[0] + amax_dev[0]);
  }
  for (std::int64_t r = 0; r < p; ++r)
    for (std::int64_t j = 0; j < f; ++j) {
      const std::size_t i = uz(r * f + j), g = uz(reach.of(r, j));
      // The scale is monotone in amax: the kernel's lies in [s_lo, s_hi].
      const double s = quant_scale_ref(quant_h, amax[g]);
      const double s_lo = quant_scale_ref(quant_h, std::max(0.0, amax[g] - amax_dev[g]));
      const double s_hi = quant_scale_ref(quant_h, amax[g] + amax_dev[g]);
      // The grid value is monotone in h and in 1 / s, and q x s is bilinear: the corners bracket the
      // kernel's quantized h over h +- dev and s in [s_lo, s_hi] (0 too when the scale may be 0).
      const double hv = hd.value[i], dv = hd.dev[i];
      double r_lo = format == QuantFormat::kInt8 ? -128.0 : -448.0, r_hi = grid_max(format);
      std::vector<double> corners;
      if (s_lo == 0.0) {
        corners.push_back(0.0);
      } else {
        const double q[] = {fp32((hv - dv) / s_lo), fp32((hv - dv) / s_hi), fp32((hv + dv) / s_lo),
                            fp32((hv + dv) / s_hi)};
        r_lo = on_grid(format, *std::min_element(std::begin(q), std::end(q)));
        r_hi = on_grid(format, *std::max_element(std::begin(q), std::end(q)));
      }
      for (double grid_value : {r_lo, r_hi})
        for (double scale : {s_lo, s_hi})
          if (scale > 0.0) corners.push_back(round_to(dtype, fp32(grid_value * scale)));
      const int mark = decomposes ? out.h_outliers[uz(j)] : 0;
      if (mark == 1) corners.clear();
      if (mark != 0) {  // passing through: h itself, within its bound
        corners.push_back(hv - dv);
        corners.push_back(hv + dv);
      }
      const double value = mark == 1 ? hv : fake_quantize_ref(format, hv, s, dtype);
      const double lo = *std::min_element(corners.begin(), corners.end()),
                   hi = *std::max_element(corners.begin(), corners.end());
      hd.value[i] = value;
      hd.err[i] = std::max(value - lo, hi - value);
    }
  out.y = ffn_down(hd, w_down, offsets, nullptr, dtype);
  return out;
}

Expected residual_add_ref(const HostTensor& a, const HostTensor& b) {
  Expected e{std::vector<double>(uz(a.numel())), std::vector<double>(uz(a.numel()))};
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    const double v = a.get(i) + b.get(i);
    e.value[uz(i)] = v;
    e.bound[uz(i)] =
        unit_roundoff(a.dtype()) * std::abs(v) + kU32 * (std::abs(a.get(i)) + std::abs(b.get(i)));
  }
  return e;
}

Expected clamp_ref(const HostTensor& x, float limit) {
  HostTensor rounded(x.dtype(), {1});
  rounded.set(0, limit);
  const double l = rounded.get(0);
  Expected e{std::vector<double>(uz(x.numel())), std::vector<double>(uz(x.numel()), 0.0)};
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const double v = x.get(i);
    e.value[uz(i)] = std::isnan(v) ? v : v < -l ? -l : v > l ? l : v;
  }
  return e;
}

Expected partial_sum_ref(const HostTensor& partials) {
  const std::int64_t p = partials.shape()[0], n = partials.shape()[1];
  Expected e{std::vector<double>(uz(n)), std::vector<double>(uz(n))};
  for (std::int64_t i = 0; i < n; ++i) {
    double acc = 0.0, mag = 0.0;
    for (std::int64_t j = 0; j < p; ++j) {
      acc += partials.get(j * n + i);
      mag += std::abs(partials.get(j * n + i));
    }
    e.value[uz(i)] = acc;
    e.bound[uz(i)] =
        unit_roundoff(partials.dtype()) * std::abs(acc) + 2.0 * static_cast<double>(p + 1) * kU32 * mag;
  }
  return e;
}

Expected attn_temperature_ref(const HostTensor& x, const HostTensor& positions, float floor_scale,
                              float attn_scale) {
  const std::int64_t t = x.shape()[0], row = x.shape()[1] * x.shape()[2];
  Expected e{std::vector<double>(uz(x.numel())), std::vector<double>(uz(x.numel()))};
  const double u = unit_roundoff(x.dtype());
  for (std::int64_t r = 0; r < t; ++r) {
    // The floor's argument as FP32 computes it (each step one IEEE operation; the floor then is exact).
    const float quotient = (static_cast<float>(positions.get_int(r)) + 1.0f) / floor_scale;
    const double steps = std::floor(static_cast<double>(quotient));
    const double term = static_cast<double>(attn_scale) * std::log1p(steps);
    const double f = 1.0 + term;
    // log1pf within 2 ulps, then the product by attn_scale and the sum each rounded: 4 u32 of the term, u32
    // of f; the product x * f one more u32 before the dtype's rounding.
    const double f_err = 4.0 * kU32 * term + kU32 * f;
    for (std::int64_t c = 0; c < row; ++c) {
      const double xv = x.get(r * row + c), v = xv * f;
      e.value[uz(r * row + c)] = v;
      e.bound[uz(r * row + c)] = u * std::abs(v) + std::abs(xv) * f_err + kU32 * std::abs(v);
    }
  }
  return e;
}

double e4m3_round_ref(double v) {
  // The non-negative E4M3 values in code order (codes 0 to 126; 127, all ones, is NaN): exponent field E =
  // code >> 3, mantissa M = code & 7; E = 0: M/8 x 2^-6 (subnormal), else (1 + M/8) x 2^(E - 7).
  static const std::vector<double> values = [] {
    std::vector<double> g;
    for (int code = 0; code < 127; ++code) {
      const int exponent = code >> 3, mantissa = code & 7;
      g.push_back(exponent == 0 ? mantissa / 8.0 * std::ldexp(1.0, -6)
                                : (1.0 + mantissa / 8.0) * std::ldexp(1.0, exponent - 7));
    }
    return g;
  }();
  const double a = std::min(std::abs(v), values.back());
  const auto above = std::upper_bound(values.begin(), values.end(), a);
  const auto below = static_cast<std::size_t>(above - values.begin()) - 1;
  double nearest = values[below];
  if (below + 1 < values.size()) {
    const double down = a - values[below], up = values[below + 1] - a;
    // A tie goes to the even mantissa: the code's low bit is the mantissa's.
    if (up < down || (up == down && below % 2 == 1)) nearest = values[below + 1];
  }
  return std::copysign(nearest, v);
}

double quant_scale_ref(const ActivationQuant& quant, double amax) {
  if (quant.static_scale > 0.0f) return quant.static_scale;
  const double a = quant.scale_ub > 0.0f ? std::min(amax, static_cast<double>(quant.scale_ub)) : amax;
  double s = std::max(fp32(a / grid_max(quant.format)), static_cast<double>(quant.min_scale));
  if (quant.pow2_scale && s > 0.0) {  // the least power of two >= s
    double p = 1.0;
    while (p < s) p *= 2.0;
    while (p / 2.0 >= s) p /= 2.0;
    s = p;
  }
  return s;
}

double fake_quantize_ref(QuantFormat format, double x, double s, DType dtype) {
  if (s == 0.0) return 0.0;
  return round_to(dtype, fp32(on_grid(format, fp32(x / s)) * s));
}

QuantizeRef quantize_ref(const HostTensor& x, const ActivationQuant& quant,
                         std::vector<std::int32_t> marked) {
  const std::int64_t t = x.shape()[0], c = x.shape()[1];
  const Reaches reach = reaches_of(quant, c);
  const std::int64_t count = reach.call ? 1 : t * reach.per_row;
  const double threshold = quant.outlier_threshold;
  const bool decomposes = threshold > 0.0;
  if (decomposes && marked.empty()) marked.assign(uz(c), 0);
  std::vector<double> amax(uz(count), 0.0);
  for (std::int64_t r = 0; r < t; ++r)
    for (std::int64_t j = 0; j < c; ++j) {
      const std::size_t g = uz(reach.of(r, j));
      const double a = std::abs(x.get(r * c + j));
      if (decomposes && a >= threshold) {
        marked[uz(j)] = 1;
        continue;
      }
      amax[g] = std::max(amax[g], a);
    }
  QuantizeRef out{{std::vector<double>(uz(x.numel())), std::vector<double>(uz(x.numel()), 0.0)},
                  std::vector<double>(uz(count)),
                  decomposes ? marked : std::vector<std::int32_t>{}};
  for (std::size_t g = 0; g < uz(count); ++g) out.scales[g] = quant_scale_ref(quant, amax[g]);
  for (std::int64_t r = 0; r < t; ++r)
    for (std::int64_t j = 0; j < c; ++j)
      out.y.value[uz(r * c + j)] =
          decomposes && marked[uz(j)] != 0
              ? x.get(r * c + j)
              : fake_quantize_ref(quant.format, x.get(r * c + j), out.scales[uz(reach.of(r, j))], x.dtype());
  return out;
}

double underflow_floor(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return std::ldexp(1.0, -25);  // half the subnormal spacing 2^-24
    case DType::kBF16:
      return std::ldexp(1.0, -134);  // half of 2^-133
    case DType::kF32:
      return std::ldexp(1.0, -150);  // half of 2^-149
    case DType::kI32:
      break;
  }
  return 0.0;
}

::testing::AssertionResult within_bound(const HostTensor& got, const Expected& expected) {
  if (static_cast<std::size_t>(got.numel()) != expected.value.size())
    return ::testing::AssertionFailure()
           << "size " << got.numel() << " vs expected " << expected.value.size();
  std::int64_t failures = 0;
  double worst_ratio = 0.0;
  std::ostringstream detail;
  for (std::int64_t i = 0; i < got.numel(); ++i) {
    const double g = got.get(i), v = expected.value[uz(i)],
                 bound = expected.bound[uz(i)] + underflow_floor(got.dtype());
    const double err = std::abs(g - v);
    const bool ok = std::isfinite(g) && err <= bound;
    if (std::isfinite(g)) worst_ratio = std::max(worst_ratio, err / bound);
    if (!ok && failures++ < 5)
      detail << "\n  [" << i << "] got " << g << " expected " << v << " bound " << bound;
  }
  fprintf(stderr, "worst %g\n", worst_ratio);
  if (failures == 0) return ::testing::AssertionSuccess() << "worst error/bound " << worst_ratio;
  return ::testing::AssertionFailure()
         << failures << " of " << got.numel() << " elements outside the bound (worst "
         << "error/bound " << worst_ratio << ")" << detail.str();
}

}  // namespace duplex::kernels::test
