// CPU MoE ops: router (gate GEMM + softmax or sigmoid + top-k, group-limited or not), token permute (rows
// copied, or scaled by their routing weights) / unpermute, grouped expert FFN (W8A8 experts: x and h rows
// fake-quantized by quantize.cpp).
#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "convert.hpp"
#include "cpu_ops.hpp"
#include "linear.hpp"

namespace duplex::kernels::cpu {
namespace {

using Range = tbb::blocked_range<std::int64_t>;

float activate(Activation act, float x) {
  switch (act) {
    case Activation::kSilu:
      return x / (1.0f + std::exp(-x));
    case Activation::kGeluTanh: {
      constexpr float kSqrt2OverPi = 0.7978845608028654f;
      return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
    }
    case Activation::kRelu:
      return x > 0.0f ? x : 0.0f;
    case Activation::kGelu:
      return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f));
    case Activation::kSwigluOai:
      break;  // gated with its own up term: swiglu_oai below
  }
  return x;
}

// gpt-oss's clamped SwiGLU of one (gate, up) pair (ops.hpp); the clamps keep NaN, as torch.clamp does.
float swiglu_oai(float gate, float up) {
  const float g = gate > kSwigluOaiLimit ? kSwigluOaiLimit : gate;
  const float u = up > kSwigluOaiLimit ? kSwigluOaiLimit : up < -kSwigluOaiLimit ? -kSwigluOaiLimit : up;
  return g / (1.0f + std::exp(-kSwigluOaiAlpha * g)) * (u + 1.0f);
}

// rows x cols values += the bias row `row` of bias [*, cols] (FP32), when it is present.
void add_bias_rows(const Tensor& bias, std::int64_t row, std::vector<float>& values, std::int64_t cols) {
  if (!bias.present()) return;
  std::vector<float> b(static_cast<std::size_t>(cols));
  load_floats(bias.data, bias.dtype, row * cols, cols, b.data());
  for (std::size_t i = 0; i < values.size(); ++i) values[i] += b[i % static_cast<std::size_t>(cols)];
}

std::vector<float> rows_to_floats(const Tensor& t, std::int64_t first_row, std::int64_t rows) {
  const std::int64_t cols = t.dim(1);
  std::vector<float> out(static_cast<std::size_t>(rows * cols));
  load_floats(t.data, t.dtype, first_row * cols, rows * cols, out.data());
  return out;
}

// Phi-3.5-MoE's sparsemixer (inference) for one token's logits l[e]: ids / weights of its two experts.
void sparsemixer(const float* l, std::int64_t e, float jitter_eps, std::int32_t* ids, float* weights) {
  std::int64_t first = 0;
  for (std::int64_t j = 1; j < e; ++j)
    if (l[j] > l[first]) first = j;
  std::int64_t second = first == 0 ? 1 : 0;
  for (std::int64_t j = 0; j < e; ++j)
    if (j != first && l[j] > l[second]) second = j;
  // The softmax at `top` over the experts whose logit is within 2 jitter_eps (relative) of l[top]
  // (`skip` left out); the masked ones contribute nothing.
  auto weight = [&](std::int64_t top, std::int64_t skip) {
    const float m = l[top];
    float sum = 0.0f;
    for (std::int64_t j = 0; j < e; ++j) {
      if (j == skip) continue;
      const bool masked = (m - l[j]) / std::max(std::abs(l[j]), m) > 2.0f * jitter_eps;
      if (!masked) sum += std::exp(l[j] - m);
    }
    return 1.0f / sum;
  };
  ids[0] = static_cast<std::int32_t>(first);
  ids[1] = static_cast<std::int32_t>(second);
  weights[0] = weight(first, -1);
  weights[1] = weight(second, first);
}

// Orders the experts by `choice` (descending; ties: the lower index); the first k of `order` are the top k.
void top_experts(const std::vector<float>& choice, std::int64_t k, std::vector<std::int32_t>& order) {
  for (std::size_t j = 0; j < order.size(); ++j) order[j] = static_cast<std::int32_t>(j);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](std::int32_t a, std::int32_t b) {
    const float ca = choice[static_cast<std::size_t>(a)], cb = choice[static_cast<std::size_t>(b)];
    return ca > cb || (ca == cb && a < b);
  });
}

// The group routers' group-limited choice (ops.hpp RouterArgs): a group's score is its largest choice value
// (kGroupLimited) or the sum of its two largest (kNoAuxTc); the experts of all but the kept_groups groups of
// highest score (ties: the lower group) get choice value 0.
void mask_dropped_groups(RouterKind kind, std::int64_t groups, std::int64_t kept_groups,
                         std::vector<float>& choice, std::vector<float>& score,
                         std::vector<std::int32_t>& group_order) {
  const auto size = static_cast<std::int64_t>(choice.size()) / groups;
  for (std::int64_t g = 0; g < groups; ++g) {
    float first = -INFINITY, second = -INFINITY;
    for (std::int64_t j = g * size; j < (g + 1) * size; ++j) {
      const float v = choice[static_cast<std::size_t>(j)];
      if (v > first) {
        second = first;
        first = v;
      } else if (v > second) {
        second = v;
      }
    }
    score[static_cast<std::size_t>(g)] = kind == RouterKind::kNoAuxTc ? first + second : first;
  }
  top_experts(score, kept_groups, group_order);
  for (std::int64_t j = kept_groups; j < groups; ++j) {
    float* c = choice.data() + group_order[static_cast<std::size_t>(j)] * size;
    std::fill(c, c + size, 0.0f);
  }
}

}  // namespace

Status router(const RouterArgs& args) {
  const std::int64_t t = args.hidden.dim(0), h = args.hidden.dim(1), e = args.gate_weight.dim(0),
                     k = args.top_k;
  const std::vector<float> x = rows_to_floats(args.hidden, 0, t);
  std::vector<float> logits(static_cast<std::size_t>(t * e));
  linear_nt(x.data(), t, h, args.gate_weight.data, args.gate_weight.dtype, 0, e, logits.data(), false);
  add_bias_rows(args.logit_bias, 0, logits, e);  // gpt-oss: before everything, in the logits written too
  std::vector<float> bias;
  if (args.correction_bias.present()) {
    bias.resize(static_cast<std::size_t>(e));
    load_floats(args.correction_bias.data, args.correction_bias.dtype, 0, e, bias.data());
  }
  const bool grouped = args.kind == RouterKind::kGroupLimited || args.kind == RouterKind::kNoAuxTc;
  const bool noaux = args.kind == RouterKind::kNoAuxTc;
  const bool sigmoid = noaux || args.kind == RouterKind::kSigmoidTopK;
  auto* ids = args.topk_ids.as<std::int32_t>();
  auto* weights = args.topk_weights.as<float>();
  tbb::parallel_for(Range(0, t, 64), [&](const Range& rows) {
    // p: the probability the weights come from (softmax or sigmoid); choice: what the experts are chosen by.
    std::vector<float> p(static_cast<std::size_t>(e)), choice(static_cast<std::size_t>(e)),
        group_score(static_cast<std::size_t>(args.num_groups));
    std::vector<std::int32_t> order(static_cast<std::size_t>(e)),
        group_order(static_cast<std::size_t>(args.num_groups));
    for (std::int64_t i = rows.begin(); i != rows.end(); ++i) {
      const float* l = logits.data() + i * e;
      if (args.kind == RouterKind::kSparseMixer) {
        sparsemixer(l, e, args.jitter_eps, ids + i * k, weights + i * k);
        continue;
      }
      if (sigmoid) {  // kNoAuxTc chooses by s + bias, kSigmoidTopK (Llama 4) by the logit
        for (std::int64_t j = 0; j < e; ++j) {
          const auto u = static_cast<std::size_t>(j);
          p[u] = 1.0f / (1.0f + std::exp(-l[j]));
          choice[u] = noaux ? p[u] + bias[u] : l[j];
        }
      } else {
        const float max = *std::max_element(l, l + e);
        float sum = 0.0f;
        for (std::int64_t j = 0; j < e; ++j) sum += (p[static_cast<std::size_t>(j)] = std::exp(l[j] - max));
        for (float& v : p) v /= sum;
        choice = p;
      }
      if (grouped)
        mask_dropped_groups(args.kind, args.num_groups, args.topk_groups, choice, group_score, group_order);
      top_experts(choice, k, order);
      float chosen = 0.0f;
      for (std::int64_t j = 0; j < k; ++j)
        chosen += p[static_cast<std::size_t>(order[static_cast<std::size_t>(j)])];
      if (noaux) chosen += 1e-20f;  // HF's guard against an all-zero sum
      for (std::int64_t j = 0; j < k; ++j) {
        const std::int32_t expert = order[static_cast<std::size_t>(j)];
        ids[i * k + j] = expert;
        const float w = p[static_cast<std::size_t>(expert)];
        weights[i * k + j] = (args.renormalize ? w / chosen : w) * args.routed_scaling;
      }
    }
  });
  if (args.logits.present()) std::copy(logits.begin(), logits.end(), args.logits.as<float>());
  if (args.shared_gate_weight.present()) {
    float* gate = args.shared_gate.as<float>();
    linear_nt(x.data(), t, h, args.shared_gate_weight.data, args.shared_gate_weight.dtype, 0, 1, gate, false);
    for (std::int64_t i = 0; i < t; ++i) gate[i] = 1.0f / (1.0f + std::exp(-gate[i]));
  }
  return {};
}

Status permute(const PermuteArgs& args) {
  const std::int64_t t = args.x.dim(0), h = args.x.dim(1), k = args.topk_ids.dim(1), e = args.num_experts;
  const auto* ids = args.topk_ids.as<const std::int32_t>();
  auto* offsets = args.expert_offsets.as<std::int32_t>();
  auto* rows = args.permuted_row.as<std::int32_t>();
  std::vector<std::int64_t> count(static_cast<std::size_t>(e) + 1, 0);
  for (std::int64_t i = 0; i < t * k; ++i) {
    if (ids[i] < 0 || ids[i] >= e)
      return {StatusCode::kInvalidArgument,
              fmt::format("permute: topk_ids[{}][{}] = {} is outside [0, num_experts "
                          "= {})",
                          i / k, i % k, ids[i], e)};
    ++count[static_cast<std::size_t>(ids[i]) + 1];
  }
  for (std::int64_t j = 0; j < e; ++j)
    count[static_cast<std::size_t>(j) + 1] += count[static_cast<std::size_t>(j)];
  for (std::int64_t j = 0; j <= e; ++j)
    offsets[j] = static_cast<std::int32_t>(count[static_cast<std::size_t>(j)]);
  for (std::int64_t i = 0; i < t * k; ++i)
    rows[i] = static_cast<std::int32_t>(count[static_cast<std::size_t>(ids[i])]++);
  const std::size_t row_bytes = static_cast<std::size_t>(h) * dtype_size(args.x.dtype);
  const auto* weights = args.topk_weights.as<const float>();  // null: rows copied
  tbb::parallel_for(Range(0, t * k, 16), [&](const Range& pairs) {
    std::vector<float> row(weights != nullptr ? static_cast<std::size_t>(h) : 0);
    for (std::int64_t i = pairs.begin(); i != pairs.end(); ++i) {
      if (weights == nullptr) {
        std::memcpy(static_cast<char*>(args.x_perm.data) + static_cast<std::size_t>(rows[i]) * row_bytes,
                    static_cast<const char*>(args.x.data) + static_cast<std::size_t>(i / k) * row_bytes,
                    row_bytes);
        continue;
      }
      // Llama 4: each element times the pair's routing weight in FP32, rounded once.
      load_floats(args.x.data, args.x.dtype, (i / k) * h, h, row.data());
      for (float& v : row) v *= weights[i];
      store_floats(row.data(), h, args.x_perm.data, args.x_perm.dtype,
                   static_cast<std::int64_t>(rows[i]) * h);
    }
  });
  return {};
}

Status unpermute(const UnpermuteArgs& args) {
  const std::int64_t t = args.out.dim(0), h = args.out.dim(1), k = args.permuted_row.dim(1);
  const std::int64_t p = args.y_perm.dim(0);
  const auto* rows = args.permuted_row.as<const std::int32_t>();
  const auto* weights = args.topk_weights.as<const float>();
  for (std::int64_t i = 0; i < t * k; ++i)
    if (rows[i] < 0 || rows[i] >= p)
      return {
          StatusCode::kInvalidArgument,
          fmt::format("unpermute: permuted_row[{}][{}] = {} is outside [0, {})", i / k, i % k, rows[i], p)};
  tbb::parallel_for(Range(0, t, 16), [&](const Range& tokens) {
    std::vector<float> acc(static_cast<std::size_t>(h)), row(static_cast<std::size_t>(h));
    for (std::int64_t i = tokens.begin(); i != tokens.end(); ++i) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (std::int64_t j = 0; j < k; ++j) {
        load_floats(args.y_perm.data, args.y_perm.dtype, rows[i * k + j] * h, h, row.data());
        const float w = weights[i * k + j];
        for (std::int64_t c = 0; c < h; ++c)
          acc[static_cast<std::size_t>(c)] += w * row[static_cast<std::size_t>(c)];
      }
      store_floats(acc.data(), h, args.out.data, args.out.dtype, i * h);
    }
  });
  return {};
}

namespace {

// h of an expert's `rows` rows from x row `first` on (ops.hpp ExpertFfnArgs), rounded to the dtype: x's rows
// fake-quantized by quant_x first when it is enabled (x_scale: its call scale, has_call_scale).
std::vector<float> expert_hidden(const ExpertFfnArgs& args, std::int64_t expert, std::int64_t first,
                                 std::int64_t rows, float x_scale, const std::int32_t* x_outliers) {
  const std::int64_t h = args.x.dim(1), f = args.w_in.dim(1);
  const bool gated = args.kind == FfnKind::kGated;
  const DType dtype = args.x.dtype;
  std::vector<float> x = rows_to_floats(args.x, first, rows);
  if (args.quant_x.enabled()) fake_quantize_rows(args.quant_x, x_scale, x.data(), rows, h, dtype, x_outliers);
  std::vector<float> hidden(static_cast<std::size_t>(rows * f)), up;
  linear_nt(x.data(), rows, h, args.w_in.data, dtype, expert * f * h, f, hidden.data(), false);
  if (gated) {
    up.resize(hidden.size());
    linear_nt(x.data(), rows, h, args.w_up.data, dtype, expert * f * h, f, up.data(), false);
  }
  add_bias_rows(args.b_in, expert, hidden, f);
  if (gated) add_bias_rows(args.b_up, expert, up, f);
  for (std::size_t i = 0; i < hidden.size(); ++i) {
    const float a = args.activation == Activation::kSwigluOai ? swiglu_oai(hidden[i], up[i])
                    : gated                                   ? activate(args.activation, hidden[i]) * up[i]
                                                              : activate(args.activation, hidden[i]);
    hidden[i] = round_to_dtype(a, dtype);
  }
  return hidden;
}

// y's rows of an expert = w_down[e] . hidden (+ b_down), rounded to the dtype.
void expert_down(const ExpertFfnArgs& args, std::int64_t expert, std::int64_t first, std::int64_t rows,
                 const std::vector<float>& hidden) {
  const std::int64_t h = args.x.dim(1), f = args.w_in.dim(1);
  std::vector<float> y(static_cast<std::size_t>(rows * h));
  linear_nt(hidden.data(), rows, f, args.w_down.data, args.x.dtype, expert * h * f, h, y.data(), false);
  add_bias_rows(args.b_down, expert, y, h);
  store_floats(y.data(), rows * h, args.y.data, args.y.dtype, first * h);
}

}  // namespace

Status expert_ffn(const ExpertFfnArgs& args) {
  const std::int64_t e = args.w_in.dim(0), f = args.w_in.dim(1);
  const DType dtype = args.x.dtype;
  const ActivationQuant &quant_x = args.quant_x, &quant_h = args.quant_h;
  // The call scales (static, or per tensor over every row of the call); 0 for a spec without one.
  float x_scale = 0.0f, h_scale = 0.0f;
  if (quant_x.enabled() && has_call_scale(quant_x))
    x_scale = quant_scale(quant_x, quant_x.static_scale > 0.0f ? 0.0f : max_magnitude(args.x));
  if (quant_h.enabled() && quant_h.static_scale > 0.0f) h_scale = quant_h.static_scale;
  // LLM.int8()'s outlier-column marks: x's [H], then h's [F] (null unless one decomposes).
  auto* x_outliers = args.quant_outliers.as<std::int32_t>();
  std::int32_t* h_outliers = x_outliers != nullptr ? x_outliers + args.x.dim(1) : nullptr;
  if (quant_x.decomposes()) mark_outlier_columns(args.x, quant_x.outlier_threshold, x_outliers);
  // A dynamic per-tensor h scale, or h's outlier columns, needs every expert's h before the first down
  // projection: they are held (P x F FP32) until the amax or the columns of all of them are known.
  const bool hold_h =
      quant_h.enabled() && ((quant_h.per_tensor && !(quant_h.static_scale > 0.0f)) || quant_h.decomposes());
  std::vector<std::vector<float>> held(hold_h ? static_cast<std::size_t>(e) : 0);
  auto rows_of = [&](std::int64_t expert) {
    const auto i = static_cast<std::size_t>(expert);
    return std::pair{args.expert_offsets[i], args.expert_offsets[i + 1] - args.expert_offsets[i]};
  };
  for (std::int64_t expert = 0; expert < e; ++expert) {
    const auto [first, rows] = rows_of(expert);
    if (rows == 0) continue;
    std::vector<float> hidden = expert_hidden(args, expert, first, rows, x_scale, x_outliers);
    if (args.h_out.present()) store_floats(hidden.data(), rows * f, args.h_out.data, dtype, first * f);
    if (hold_h) {
      held[static_cast<std::size_t>(expert)] = std::move(hidden);
      continue;
    }
    if (quant_h.enabled()) fake_quantize_rows(quant_h, h_scale, hidden.data(), rows, f, dtype);
    expert_down(args, expert, first, rows, hidden);
  }
  if (hold_h) {
    if (quant_h.decomposes()) {
      for (const std::vector<float>& hidden : held)
        mark_outlier_columns(hidden.data(), static_cast<std::int64_t>(hidden.size()) / f, f,
                             quant_h.outlier_threshold, h_outliers);
    } else {
      float amax = 0.0f;
      for (const std::vector<float>& hidden : held)
        amax = std::max(amax, max_magnitude(hidden.data(), static_cast<std::int64_t>(hidden.size())));
      h_scale = quant_scale(quant_h, amax);
    }
    for (std::int64_t expert = 0; expert < e; ++expert) {
      const auto [first, rows] = rows_of(expert);
      if (rows == 0) continue;
      std::vector<float>& hidden = held[static_cast<std::size_t>(expert)];
      fake_quantize_rows(quant_h, h_scale, hidden.data(), rows, f, dtype, h_outliers);
      expert_down(args, expert, first, rows, hidden);
    }
  }
  if (args.quant_scales.present()) {
    auto* out = args.quant_scales.as<float>();
    out[0] = x_scale;
    out[1] = h_scale;
  }
  return {};
}

}  // namespace duplex::kernels::cpu
