#include "duplex/runtime/functional/reference_forward.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <numeric>
#include <optional>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"

namespace duplex::runtime::functional {
namespace {

using Vec = std::vector<float>;

float to_fp16(double v) {
  return half_bits_to_float(float_to_half_bits(static_cast<float>(v)));
}

float w_at(const WeightTensor& w, std::int64_t i) {
  return half_bits_to_float(w.data[static_cast<std::size_t>(i)]);
}

// y[n] = W[n][k] . x[k], W row-major [rows][cols]; `row0` selects a block of rows.
std::vector<double> matvec(const WeightTensor& w, const Vec& x, std::int64_t rows, std::int64_t row0 = 0) {
  const std::int64_t cols = w.shape.back();
  std::vector<double> y(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) {
    double acc = 0;
    for (std::int64_t c = 0; c < cols; ++c)
      acc += static_cast<double>(w_at(w, (row0 + r) * cols + c)) * x[static_cast<std::size_t>(c)];
    y[static_cast<std::size_t>(r)] = acc;
  }
  return y;
}

Vec stored(const std::vector<double>& v) {
  Vec out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = to_fp16(v[i]);
  return out;
}

// The norms scale by (offset + gain): offset = ModelSpec::norm_weight_offset (Gemma: 1).
Vec rms_norm(const Vec& x, const WeightTensor& gain, float eps, double offset) {
  double sq = 0;
  for (float v : x) sq += static_cast<double>(v) * v;
  const double inv = 1.0 / std::sqrt(sq / static_cast<double>(x.size()) + eps);
  Vec y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    y[i] = to_fp16(x[i] * inv * (offset + w_at(gain, static_cast<std::int64_t>(i))));
  return y;
}

// LayerNorm: (x - mean) / sqrt(var + eps) * gain + bias (biased variance, as torch.nn.LayerNorm); `bias`
// null: none (DBRX).
Vec layer_norm(const Vec& x, const WeightTensor& gain, const WeightTensor* bias, float eps, double offset) {
  double mean = 0;
  for (float v : x) mean += v;
  mean /= static_cast<double>(x.size());
  double var = 0;
  for (float v : x) var += (v - mean) * (v - mean);
  const double inv = 1.0 / std::sqrt(var / static_cast<double>(x.size()) + eps);
  Vec y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    y[i] = to_fp16((x[i] - mean) * inv * (offset + w_at(gain, static_cast<std::int64_t>(i))) +
                   (bias != nullptr ? w_at(*bias, static_cast<std::int64_t>(i)) : 0.0));
  return y;
}

// In place: RMSNorm of each `width`-element row of v with gain[width] (Qwen3's per-head q / k norm: rows of
// head_dim; OLMoE's: one row of the whole projection).
void rms_norm_rows(Vec& v, std::int64_t width, const WeightTensor& gain, float eps, double offset) {
  for (std::size_t r0 = 0; r0 < v.size(); r0 += static_cast<std::size_t>(width)) {
    double sq = 0;
    for (std::int64_t i = 0; i < width; ++i)
      sq += static_cast<double>(v[r0 + static_cast<std::size_t>(i)]) * v[r0 + static_cast<std::size_t>(i)];
    const double inv = 1.0 / std::sqrt(sq / static_cast<double>(width) + eps);
    for (std::int64_t i = 0; i < width; ++i) {
      float& x = v[r0 + static_cast<std::size_t>(i)];
      x = to_fp16(x * inv * (offset + w_at(gain, i)));
    }
  }
}

// W x (+ b when the model has the bias `bias_name`), rounded once to FP16 (an HF Linear with bias).
Vec linear(const ModelWeights& w, const std::string& weight, const std::string* bias_name, const Vec& x,
           std::int64_t rows) {
  std::vector<double> y = matvec(w.get(weight), x, rows);
  if (bias_name != nullptr) {
    const WeightTensor& b = w.get(*bias_name);
    for (std::size_t i = 0; i < y.size(); ++i) y[i] += w_at(b, static_cast<std::int64_t>(i));
  }
  return stored(y);
}

// An E4M3 value's nearest (ties to even) to v, |v| <= 448: 3 mantissa bits below the leading one, normal down
// to 2^-6, subnormal steps of 2^-9 below it (OCP FP8 E4M3FN).
float round_e4m3(float v) {
  if (v == 0.0f) return 0.0f;
  int e = 0;
  std::frexp(v, &e);                            // |v| = m 2^e, m in [0.5, 1): leading bit 2^(e - 1)
  const int quantum = std::max(e - 1, -6) - 3;  // the value of the last mantissa bit
  return std::ldexp(std::nearbyint(std::ldexp(v, -quantum)), quantum);  // exact scalings by powers of two
}

// The xPU's W8A8 activation quantization as kernels::QuantizeArgs states it, written here from that contract:
// x's elements [c0, c0 + n), with the scale `given` (a per-tensor or static scale the executor used) or else
// their own per token (the whole slice) or per group scale; each written back as q x s (FP32), rounded to
// FP16. LLM.int8() (q.decomposes()): `passes` [n] marks the slice's outlier columns, whose elements pass;
// the others are quantized per token at the largest magnitude below the threshold.
void fake_quantize(Vec& x, std::size_t c0, std::size_t n, const kernels::ActivationQuant& q,
                   std::optional<float> given, const std::vector<bool>& passes) {
  const bool fp8 = q.format == kernels::QuantFormat::kFp8E4M3;
  const float q_max = fp8 ? 448.0f : 127.0f;
  const std::size_t reach = given || q.group <= 0 ? n : static_cast<std::size_t>(q.group);
  for (std::size_t r0 = c0; r0 < c0 + n; r0 += reach) {
    const std::size_t r1 = std::min(r0 + reach, c0 + n);
    float s = 0;
    if (given) {
      s = *given;
    } else {
      float a = 0;
      for (std::size_t i = r0; i < r1; ++i)
        if (!q.decomposes() || std::abs(x[i]) < q.outlier_threshold) a = std::max(a, std::abs(x[i]));
      if (q.scale_ub > 0) a = std::min(a, q.scale_ub);
      s = std::max(a / q_max, q.min_scale);
      if (q.pow2_scale && s > 0) {  // s = m 2^e, m in [0.5, 1): 2^ceil(log2 s) is 2^(e - 1) when m is 0.5
        int e = 0;
        const float m = std::frexp(s, &e);
        s = std::ldexp(1.0f, m == 0.5f ? e - 1 : e);
      }
    }
    for (std::size_t i = r0; i < r1; ++i) {
      if (q.decomposes() && passes[i - c0]) continue;
      if (s == 0) {
        x[i] = 0;
        continue;
      }
      const float v = x[i] / s;
      const float code =
          fp8 ? round_e4m3(std::clamp(v, -448.0f, 448.0f)) : std::clamp(std::nearbyint(v), -128.0f, 127.0f);
      x[i] = to_fp16(code * s);
    }
  }
}

// HF rotate-half RoPE on `heads` vectors of `d` elements each, the first `rotary` of them rotated (pairs
// (i, i + rotary / 2); the rest pass, as HF's partial RoPE), frequencies inv_freq[rotary / 2], cos and sin
// times `scale`.
void rope(Vec& v, int heads, int d, int rotary, std::int64_t pos, const std::vector<double>& inv_freq,
          double scale) {
  const int half = rotary / 2;
  for (int h = 0; h < heads; ++h) {
    float* x = v.data() + static_cast<std::size_t>(h) * static_cast<std::size_t>(d);
    for (int i = 0; i < half; ++i) {
      const double angle = static_cast<double>(pos) * inv_freq[static_cast<std::size_t>(i)];
      const double x1 = x[i], x2 = x[i + half];
      const double c = std::cos(angle) * scale, s = std::sin(angle) * scale;
      x[i] = to_fp16(x1 * c - x2 * s);
      x[i + half] = to_fp16(x2 * c + x1 * s);
    }
  }
}

// The FFN's activation, as HF's ACT2FN computes it: silu, gelu (exact, erf), gelu_pytorch_tanh, relu.
double activate(compiler::Activation a, double x) {
  switch (a) {
    case compiler::Activation::kSilu:
      return x / (1.0 + std::exp(-x));
    case compiler::Activation::kGelu:
      return 0.5 * x * std::erfc(-x / std::sqrt(2.0));
    case compiler::Activation::kGeluTanh:
      return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case compiler::Activation::kRelu:
      return x > 0 ? x : 0.0;
    case compiler::Activation::kSwigluOai:  // the gate's part, g sigmoid(alpha g), g = min(x, limit)
      x = std::min(x, compiler::kSwigluOaiLimit);
      return x / (1.0 + std::exp(-compiler::kSwigluOaiAlpha * x));
  }
  DUPLEX_ASSERT(false, "an activation outside compiler::Activation");
  return 0.0;
}

// What the xPU does to an FFN's intermediate h before its down projection (W8A8 quantization), or nothing.
using HiddenQuant = std::function<void(Vec&)>;

// One two-matrix FFN: down(act(in x + b_in)) (b_in: nullptr without a bias).
Vec two_matrix_ffn(compiler::Activation a, const WeightTensor& in, const WeightTensor* b_in,
                   const WeightTensor& down, const Vec& x, const HiddenQuant& quantize_h = {}) {
  const std::int64_t f = in.shape[0];
  const std::vector<double> g = matvec(in, x, f);
  Vec h(static_cast<std::size_t>(f));
  for (std::size_t i = 0; i < h.size(); ++i)
    h[i] = to_fp16(activate(a, to_fp16(g[i] + (b_in ? w_at(*b_in, static_cast<std::int64_t>(i)) : 0.0))));
  if (quantize_h) quantize_h(h);
  return stored(matvec(down, h, down.shape[0]));
}

// A gated FFN's biases (gpt-oss's experts; nullptr: none).
struct GatedBiases {
  const WeightTensor *gate = nullptr, *up = nullptr, *down = nullptr;
};

// One gated FFN: down(act(gate x) * up x) (SwiGLU, GeGLU, ReGLU); gpt-oss's clamped SwiGLU multiplies by
// clamp(up x, -limit, limit) + 1 instead. With biases, each projection adds its own (as HF's experts do).
Vec gated_ffn(compiler::Activation a, const WeightTensor& gate, const WeightTensor& up,
              const WeightTensor& down, const Vec& x, const GatedBiases& b = {},
              const HiddenQuant& quantize_h = {}) {
  const std::int64_t f = gate.shape[0];
  std::vector<double> g = matvec(gate, x, f), u = matvec(up, x, f);
  auto add = [](std::vector<double>& v, const WeightTensor* bias) {
    if (bias != nullptr)
      for (std::size_t i = 0; i < v.size(); ++i) v[i] += w_at(*bias, static_cast<std::int64_t>(i));
  };
  add(g, b.gate);
  add(u, b.up);
  const double limit = compiler::kSwigluOaiLimit;
  Vec h(static_cast<std::size_t>(f));
  for (std::size_t i = 0; i < h.size(); ++i)
    h[i] = to_fp16(activate(a, g[i]) *
                   (a == compiler::Activation::kSwigluOai ? std::clamp(u[i], -limit, limit) + 1.0 : u[i]));
  if (quantize_h) quantize_h(h);
  std::vector<double> y = matvec(down, h, down.shape[0]);
  add(y, b.down);
  return stored(y);
}

// The executor's GEMM inputs the reference followed (ReferenceOutput::followed_inputs and the errors).
struct InputFollow {
  std::int64_t count = 0;
  double max_err = 0, worst_ratio = 0;
};

class Sequence {
 public:
  // The executor's quantized GEMM inputs of one request: [position][layer] (activation_quant.hpp).
  using Quantized = std::vector<std::vector<std::vector<QuantizedInput>>>;
  // follow: the executor's routing of request `request`, or null (routing_record.hpp); quantized: its
  // quantized inputs, which the reference quantizes alike, or null (none quantized).
  Sequence(const ModelWeights& w, std::int64_t prompt_tokens,
           const std::vector<std::vector<RoutedToken>>* follow, std::vector<RoutingTie>* ties,
           std::size_t request, double relative_bound, const Quantized* quantized,
           InputFollow* inputs_followed)
      : follow_(follow),
        quantized_(quantized),
        inputs_followed_(inputs_followed),
        ties_(ties),
        request_(request),
        relative_bound_(relative_bound),
        prompt_tokens_(prompt_tokens),
        w_(w),
        m_(w.spec),
        k_(static_cast<std::size_t>(m_.layers)),
        v_(k_.size()),
        scale_(attention_scale(w.spec, w.numerics)),
        unit_gain_{
            {m_.head_dim},
            std::vector<std::uint16_t>(static_cast<std::size_t>(m_.head_dim), float_to_half_bits(1.0f))} {}

  // Runs one token at position `pos` (= tokens fed so far) and returns the logits after it.
  std::vector<float> feed(std::int32_t token, std::int64_t pos) {
    pos_ = pos;
    const std::int64_t h = m_.hidden;
    const WeightTensor& emb = w_.get(weight_name::embedding());
    Vec x(static_cast<std::size_t>(h));
    const double scale = embedding_scale(m_);  // Gemma: sqrt(hidden) in FP16; else 1
    for (std::int64_t i = 0; i < h; ++i)
      x[static_cast<std::size_t>(i)] = to_fp16(w_at(emb, token * h + i) * scale);
    if (m_.learned_positions > 0) {  // + the position's row (OPT: row pos + 2)
      const WeightTensor& table = w_.get(weight_name::positions());
      const std::int64_t row = pos + m_.position_offset;
      if (row >= m_.learned_positions)
        throw Error(fmt::format("position {} is beyond the model's {} learned positions", pos,
                                m_.learned_positions - m_.position_offset));
      for (std::int64_t i = 0; i < h; ++i)
        x[static_cast<std::size_t>(i)] =
            to_fp16(static_cast<double>(x[static_cast<std::size_t>(i)]) + w_at(table, row * h + i));
    }
    for (int l = 0; l < m_.layers; ++l) {
      const Vec attn_in = norm(x, weight_name::attn_norm(l));
      Vec a = m_.attention == compiler::AttentionKind::kMla ? mla_attention(l, attn_in, pos)
                                                            : attention(l, attn_in, pos);
      if (m_.post_norms) a = norm(a, weight_name::post_attn_norm(l));  // Gemma 2: each block's output normed
      for (std::size_t i = 0; i < x.size(); ++i) x[i] = to_fp16(static_cast<double>(x[i]) + a[i]);
      const Vec n = norm(x, weight_name::ffn_norm(l));
      Vec f = m_.is_moe_layer(l) ? moe(l, n, pos) : dense_ffn(l, n);
      if (m_.post_norms) f = norm(f, weight_name::post_ffn_norm(l));
      for (std::size_t i = 0; i < x.size(); ++i) x[i] = to_fp16(static_cast<double>(x[i]) + f[i]);
    }
    const Vec n = norm(x, weight_name::final_norm());
    std::vector<double> logits = matvec(w_.lm_head(), n, m_.vocab);
    if (m_.lm_head_bias) {
      const WeightTensor& b = w_.get(weight_name::lm_head_bias());
      for (std::int64_t v = 0; v < m_.vocab; ++v) logits[static_cast<std::size_t>(v)] += w_at(b, v);
    }
    if (m_.final_softcap > 0)  // Gemma 2: cap x tanh(logit / cap)
      for (double& v : logits) v = m_.final_softcap * std::tanh(v / m_.final_softcap);
    return {logits.begin(), logits.end()};
  }

 private:
  // The model's norm with gain `gain_name` (and, for LayerNorm, the bias beside it).
  Vec norm(const Vec& x, const std::string& gain_name) const {
    if (m_.norm == compiler::NormKind::kLayerNorm)
      return layer_norm(x, w_.get(gain_name),
                        m_.norm_bias ? &w_.get(weight_name::norm_bias(gain_name)) : nullptr,
                        w_.numerics.norm_eps, m_.norm_weight_offset);
    return rms_norm(x, w_.get(gain_name), w_.numerics.norm_eps, m_.norm_weight_offset);
  }

  // The executor's record of the current token's input to `gemm` (expert `expert`) in layer l: null where the
  // executor did not quantize it.
  const QuantizedInput* quantized(int l, QuantizedGemm gemm, int expert = -1) const {
    if (quantized_ == nullptr || static_cast<std::size_t>(pos_) >= quantized_->size()) return nullptr;
    const auto& layers = (*quantized_)[static_cast<std::size_t>(pos_)];
    if (static_cast<std::size_t>(l) >= layers.size()) return nullptr;
    for (const QuantizedInput& in : layers[static_cast<std::size_t>(l)])
      if (in.gemm == gemm && in.expert == expert) return &in;
    return nullptr;
  }

  // The reference's GEMM input x where the record `in` says the executor quantized it (x itself without one),
  // for matrices in `format`: the executor's input `index` (its record's inputs), compared with x against
  // the bound, quantized in `slices` equal slices, slice s with the record's scale index + s where it kept
  // per-tensor scales.
  Vec quantize(const Vec& x, const QuantizedInput* in, compiler::DType format, std::size_t index,
               int slices) const {
    if (in == nullptr) return x;
    // (A static release's scale: the record's, the executor's fusion of its modules' scales.)
    const kernels::ActivationQuant q = w8a8_input_quant(
        m_, format, in->scales.empty() ? 0.0f : in->scales.at(std::min(index, in->scales.size() - 1)));
    if (!q.enabled() || slices < 1 || x.size() % static_cast<std::size_t>(slices) != 0 ||
        index >= in->inputs.size() || in->inputs[index].size() != x.size())
      throw Error(
          fmt::format("model {}: the executor's record of a quantized {} input does not fit the "
                      "reference's ({} values in {} slices; expected a W8A8 format's input)",
                      m_.name, compiler::dtype_name(format), x.size(), slices));
    Vec y(x.size());
    double largest = 0, err = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      y[i] = half_bits_to_float(in->inputs[index][i]);
      largest = std::max(largest, static_cast<double>(std::abs(x[i])));
      err = std::max(err, std::abs(static_cast<double>(y[i]) - x[i]));
    }
    InputFollow& f = *inputs_followed_;
    ++f.count;
    f.max_err = std::max(f.max_err, err);
    f.worst_ratio = std::max(f.worst_ratio, err / (relative_bound_ * std::max(1.0, largest)));
    const std::size_t first = index;
    const std::size_t n = x.size() / static_cast<std::size_t>(slices);
    for (std::size_t s = 0; s < static_cast<std::size_t>(slices); ++s) {
      std::optional<float> given;
      if (!in->scales.empty()) given = in->scales.at(first + s);
      const std::vector<bool> passes =
          q.decomposes() ? outlier_columns(*in, first + s, y, s * n, n, q) : std::vector<bool>{};
      fake_quantize(y, s * n, n, q, given, passes);
    }
    return y;
  }

  // LLM.int8()'s outlier columns of call `call` of the record `in` (the batch's, which the reference cannot
  // find) as marks [n], checked against the followed input y's slice [c0, c0 + n): each a column of the
  // slice, and every element of the slice at or above the threshold in one of them (the token was part of
  // that batch).
  std::vector<bool> outlier_columns(const QuantizedInput& in, std::size_t call, const Vec& y, std::size_t c0,
                                    std::size_t n, const kernels::ActivationQuant& q) const {
    auto bad = [&](const std::string& what) {
      return Error(
          fmt::format("model {}: the executor's record of LLM.int8()'s outlier columns {}", m_.name, what));
    };
    if (call >= in.outliers.size())
      throw bad(fmt::format("has {} calls; expected one for call {}", in.outliers.size(), call));
    const std::vector<std::int32_t>& columns = in.outliers[call];
    std::vector<bool> listed(n, false);
    for (std::int32_t c : columns) {
      if (c < 0 || static_cast<std::size_t>(c) >= n)
        throw bad(fmt::format("lists column {}; expected columns of a {}-wide input", c, n));
      listed[static_cast<std::size_t>(c)] = true;
    }
    for (std::size_t i = 0; i < n; ++i)
      if (std::abs(y[c0 + i]) >= q.outlier_threshold && !listed[i])
        throw bad(fmt::format("leaves out column {}, where the input reaches {} (threshold {})", i, y[c0 + i],
                              q.outlier_threshold));
    return listed;
  }

  // What the executor did to an FFN's intermediate h in its record `in` (inputs and scales: x's first, then
  // h's).
  HiddenQuant hidden_quant(const QuantizedInput* in, compiler::DType format) const {
    if (in == nullptr) return {};
    return [this, in, format](Vec& h) { h = quantize(h, in, format, 1, in->slices); };
  }

  // A dense layer's FFN: gated, or two-matrix (+ its biases: fc1's before the activation, fc2's on the
  // output, as HF's Linear layers add them).
  Vec dense_ffn(int l, const Vec& x) const {
    const QuantizedInput* in = quantized(l, QuantizedGemm::kFfn);
    const compiler::DType format = m_.dense_ffn_matrix_dtype(l);
    const Vec n = quantize(x, in, format, 0, 1);
    if (m_.ffn_kind == compiler::FfnKind::kGated)
      return gated_ffn(m_.activation, w_.get(weight_name::dense_mlp(l, "gate")),
                       w_.get(weight_name::dense_mlp(l, "up")), w_.get(weight_name::dense_mlp(l, "down")), n,
                       {}, hidden_quant(in, format));
    const WeightTensor* b_in = m_.mlp_bias ? &w_.get(weight_name::dense_mlp_bias(l, "up")) : nullptr;
    Vec y = two_matrix_ffn(m_.activation, w_.get(weight_name::dense_mlp(l, "up")), b_in,
                           w_.get(weight_name::dense_mlp(l, "down")), n, hidden_quant(in, format));
    if (m_.mlp_bias) {
      const WeightTensor& b_out = w_.get(weight_name::dense_mlp_bias(l, "down"));
      for (std::size_t i = 0; i < y.size(); ++i)
        y[i] = to_fp16(static_cast<double>(y[i]) + w_at(b_out, static_cast<std::int64_t>(i)));
    }
    return y;
  }

  // One expert (or the shared experts' FFN, `expert` < 0) of an MoE layer.
  Vec expert_ffn(int l, int expert, const Vec& x) const {
    const QuantizedInput* in =
        expert < 0 ? quantized(l, QuantizedGemm::kSharedFfn) : quantized(l, QuantizedGemm::kExpert, expert);
    const Vec n = quantize(x, in, m_.expert_dtype, 0, 1);
    const HiddenQuant quantize_h = hidden_quant(in, m_.expert_dtype);
    const compiler::WeightNaming names = m_.weight_naming;
    auto get = [&](const char* which) -> const WeightTensor& {
      return w_.get(expert < 0 ? weight_name::shared_expert(l, which)
                               : weight_name::expert(names, l, expert, which));
    };
    GatedBiases b;
    if (m_.mlp_bias && expert >= 0)  // gpt-oss's experts
      b = {&w_.get(weight_name::expert_bias(l, expert, "gate")),
           &w_.get(weight_name::expert_bias(l, expert, "up")),
           &w_.get(weight_name::expert_bias(l, expert, "down"))};
    if (m_.ffn_kind == compiler::FfnKind::kGated)
      return gated_ffn(m_.activation, get("gate"), get("up"), get("down"), n, b, quantize_h);
    return two_matrix_ffn(m_.activation, get("up"), nullptr, get("down"), n, quantize_h);
  }

  Vec attention(int l, const Vec& normed, std::int64_t pos) {
    const int d = m_.head_dim, hq = m_.heads, hkv = m_.kv_heads, group = hq / hkv;
    const Vec n = quantize(normed, quantized(l, QuantizedGemm::kQkv), m_.attention_matrix_dtype(), 0, 1);
    auto proj = [&](char which, std::int64_t rows, bool bias) {
      const std::string b = weight_name::attn_bias(l, which);
      return linear(w_, weight_name::attn_proj(l, which), bias ? &b : nullptr, n, rows);
    };
    Vec q = proj('q', m_.q_dim(), m_.qkv_bias), k = proj('k', m_.kv_dim(), m_.qkv_bias),
        v = proj('v', m_.kv_dim(), m_.qkv_bias);
    if (m_.clip_qkv > 0) {  // DBRX: clamped to +-clip_qkv, the bound in FP16 (torch clamps a half tensor so)
      const float c = to_fp16(m_.clip_qkv);
      for (Vec* x : {&q, &k, &v})
        for (float& e : *x) e = std::clamp(e, -c, c);
    }
    if (m_.qk_norm == compiler::QkNorm::kPerHead || m_.qk_norm == compiler::QkNorm::kWhole) {
      const bool per_head = m_.qk_norm == compiler::QkNorm::kPerHead;
      rms_norm_rows(q, per_head ? d : m_.q_dim(), w_.get(weight_name::qk_norm(l, 'q')), w_.numerics.norm_eps,
                    m_.norm_weight_offset);
      rms_norm_rows(k, per_head ? d : m_.kv_dim(), w_.get(weight_name::qk_norm(l, 'k')), w_.numerics.norm_eps,
                    m_.norm_weight_offset);
    }
    if (m_.rotates(l)) {
      const auto& [f, scale] = frequencies(l, pos);
      rope(q, hq, d, rotary_dim(m_), pos, f, scale);
      rope(k, hkv, d, rotary_dim(m_), pos, f, scale);
      if (m_.qk_norm == compiler::QkNorm::kL2) {  // Llama 4: each head / its RMS, after the rotation
        rms_norm_rows(q, d, unit_gain_, w_.numerics.norm_eps, 0.0);
        rms_norm_rows(k, d, unit_gain_, w_.numerics.norm_eps, 0.0);
      }
    } else if (m_.attn_temperature_floor > 0) {  // Llama 4's NoPE layers: the queries' temperature
      const double f =
          1.0 + m_.attn_temperature_scale *
                    std::log1p(std::floor(static_cast<double>(pos + 1) / m_.attn_temperature_floor));
      for (float& e : q) e = to_fp16(e * f);
    }
    k_[static_cast<std::size_t>(l)].push_back(k);
    v_[static_cast<std::size_t>(l)].push_back(v);
    const Vec out = o_input(l, attend(l, q, hq, group, d, d));
    const std::string o_bias = weight_name::attn_bias(l, 'o');
    return linear(w_, weight_name::attn_proj(l, 'o'), m_.o_bias ? &o_bias : nullptr, out, m_.hidden);
  }

  // The O projection's input as the executor quantized it (each device its heads' slice), or as it is.
  Vec o_input(int l, const Vec& out) const {
    const QuantizedInput* in = quantized(l, QuantizedGemm::kOProj);
    return quantize(out, in, m_.attention_matrix_dtype(), 0, in ? in->slices : 1);
  }

  // DeepSeek's MLA as HF's DeepseekV2Attention computes it (no absorption): q (through the q_a / q_b pair
  // with q_lora_rank), the latent c and k_pe from kv_a_proj_with_mqa, each head's k_nope and v from
  // kv_b_proj(RMSNorm(c)); RoPE on q_pe and the shared k_pe; per head keys [k_nope, k_pe], values v.
  Vec mla_attention(int l, const Vec& n, std::int64_t pos) {
    const compiler::MlaSpec& a = m_.mla;
    const int heads = m_.heads, nope = a.qk_nope_head_dim, rope_dim = a.qk_rope_head_dim,
              rank = a.kv_lora_rank, vd = a.v_head_dim, qk = nope + rope_dim;
    const auto at = [](int i) { return static_cast<std::size_t>(i); };
    // W8A8: the executor quantized q_a's (or q's), q_b's and kv_a's inputs, per-tensor scales in that order.
    const QuantizedInput* in = quantized(l, QuantizedGemm::kQkv);
    const compiler::DType format = m_.attention_matrix_dtype();
    const Vec nq = quantize(n, in, format, 0, 1);
    Vec q;
    if (a.q_lora_rank == 0) {
      q = stored(matvec(w_.get(weight_name::mla(l, "q_proj")), nq, std::int64_t{heads} * qk));
    } else {
      const Vec qa = rms_norm(stored(matvec(w_.get(weight_name::mla(l, "q_a_proj")), nq, a.q_lora_rank)),
                              w_.get(weight_name::mla(l, "q_a_layernorm")), kMlaLatentNormEps, 0.0);
      q = stored(matvec(w_.get(weight_name::mla(l, "q_b_proj")), quantize(qa, in, format, 1, 1),
                        std::int64_t{heads} * qk));
    }
    const Vec kv = stored(matvec(w_.get(weight_name::mla(l, "kv_a_proj_with_mqa")),
                                 quantize(n, in, format, a.q_lora_rank == 0 ? 1 : 2, 1), rank + rope_dim));
    const Vec c = rms_norm(Vec(kv.begin(), kv.begin() + rank), w_.get(weight_name::mla(l, "kv_a_layernorm")),
                           kMlaLatentNormEps, 0.0);
    Vec k_pe(kv.begin() + rank, kv.end());
    const Vec kv_b =
        stored(matvec(w_.get(weight_name::mla(l, "kv_b_proj")), c, std::int64_t{heads} * (nope + vd)));
    Vec q_pe(at(heads * rope_dim));
    for (int h = 0; h < heads; ++h)
      std::copy_n(q.begin() + h * qk + nope, rope_dim, q_pe.begin() + h * rope_dim);
    const auto& [f, scale] = frequencies(l, pos);
    rope(q_pe, heads, rope_dim, rope_dim, pos, f, scale);
    rope(k_pe, 1, rope_dim, rope_dim, pos, f, scale);
    Vec q_full(at(heads * qk)), k(at(heads * qk)), v(at(heads * vd));
    for (int h = 0; h < heads; ++h) {
      std::copy_n(q.begin() + h * qk, nope, q_full.begin() + h * qk);
      std::copy_n(q_pe.begin() + h * rope_dim, rope_dim, q_full.begin() + h * qk + nope);
      std::copy_n(kv_b.begin() + h * (nope + vd), nope, k.begin() + h * qk);
      std::copy_n(k_pe.begin(), rope_dim, k.begin() + h * qk + nope);
      std::copy_n(kv_b.begin() + h * (nope + vd) + nope, vd, v.begin() + h * vd);
    }
    k_[static_cast<std::size_t>(l)].push_back(k);
    v_[static_cast<std::size_t>(l)].push_back(v);
    return linear(w_, weight_name::attn_proj(l, 'o'), nullptr,
                  o_input(l, attend(l, q_full, heads, 1, qk, vd)), m_.hidden);
  }

  // The RoPE frequencies and cos / sin factor of layer l's token at `pos`: the model's (a windowed layer's
  // with a local base: layer_rope_numerics), or, where they depend on the sequence length (dynamic NTK,
  // LongRoPE), those of its dynamic_rope_length (computed once per length and kind of layer).
  const std::pair<std::vector<double>, double>& frequencies(int l, std::int64_t pos) {
    const ModelNumerics n = layer_rope_numerics(w_.numerics, m_, l);
    const std::int64_t length = rope_depends_on_length(n) ? dynamic_rope_length(prompt_tokens_, pos) : 0;
    const std::pair<bool, std::int64_t> key{rotates_locally(w_.numerics, m_, l), length};
    auto it = rope_by_length_.find(key);
    if (it == rope_by_length_.end())
      it = rope_by_length_
               .emplace(key,
                        std::pair{rope_inv_freq(n, rotary_dim(m_), length), rope_attention_factor(n, length)})
               .first;
    return it->second;
  }

  // softmax(scale_ q . k) v per query head over layer l's cached tokens (the last `window` with a sliding
  // window): q [heads][dk], cached keys [kv heads][dk] and values [kv heads][dv], heads / `group` KV heads.
  // With attn_softcap each scaled score s becomes attn_softcap x tanh(s / attn_softcap) first; with
  // attn_sinks, the head's sink logit joins the max and the denominator (gpt-oss).
  Vec attend(int l, const Vec& q, int heads, int group, int dk, int dv) const {
    const WeightTensor* sinks = m_.attn_sinks ? &w_.get(weight_name::sinks(l)) : nullptr;
    const auto& kc = k_[static_cast<std::size_t>(l)];
    const auto& vc = v_[static_cast<std::size_t>(l)];
    const std::size_t window = static_cast<std::size_t>(m_.attention_window(l));
    std::size_t first = window > 0 && kc.size() > window ? kc.size() - window : 0;
    // Chunked attention (Llama 4): the query at position p = kc.size() - 1 sees its chunk's tokens only.
    if (const auto chunk = static_cast<std::size_t>(m_.attention_chunk_of(l)); chunk > 0)
      first = std::max(first, (kc.size() - 1) - (kc.size() - 1) % chunk);
    Vec out(static_cast<std::size_t>(heads) * static_cast<std::size_t>(dv));
    std::vector<double> p(kc.size(), -INFINITY);
    for (int head = 0; head < heads; ++head) {
      const std::size_t qo = static_cast<std::size_t>(head) * static_cast<std::size_t>(dk);
      const std::size_t ko = static_cast<std::size_t>(head / group) * static_cast<std::size_t>(dk);
      const std::size_t vo = static_cast<std::size_t>(head / group) * static_cast<std::size_t>(dv);
      double max_s = -INFINITY;
      for (std::size_t t = first; t < kc.size(); ++t) {
        double s = 0;
        for (int j = 0; j < dk; ++j)
          s += static_cast<double>(q[qo + static_cast<std::size_t>(j)]) *
               kc[t][ko + static_cast<std::size_t>(j)];
        p[t] = s * scale_;
        if (m_.attn_softcap > 0) p[t] = m_.attn_softcap * std::tanh(p[t] / m_.attn_softcap);  // Gemma 2
        max_s = std::max(max_s, p[t]);
      }
      double sum = 0;
      if (sinks != nullptr) {
        const double sink = w_at(*sinks, head);
        max_s = std::max(max_s, sink);
        sum = std::exp(sink - max_s);
      }
      for (std::size_t t = first; t < kc.size(); ++t) sum += (p[t] = std::exp(p[t] - max_s));
      for (int j = 0; j < dv; ++j) {
        double acc = 0;
        for (std::size_t t = first; t < kc.size(); ++t)
          acc += p[t] / sum * vc[t][vo + static_cast<std::size_t>(j)];
        out[static_cast<std::size_t>(head) * static_cast<std::size_t>(dv) + static_cast<std::size_t>(j)] =
            to_fp16(acc);
      }
    }
    return out;
  }

  // The probabilities the weights come from: the softmax of the logits, or noaux_tc's and Llama 4's sigmoids.
  std::vector<double> scores(const std::vector<double>& logits) const {
    std::vector<double> p(logits.size());
    if (m_.router == compiler::Router::kNoAuxTc || m_.router == compiler::Router::kSigmoidTopK) {
      for (std::size_t e = 0; e < p.size(); ++e) p[e] = 1.0 / (1.0 + std::exp(-logits[e]));
      return p;
    }
    const double max_l = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (std::size_t e = 0; e < p.size(); ++e) sum += (p[e] = std::exp(logits[e] - max_l));
    for (double& e : p) e /= sum;
    return p;
  }

  // The sparsemixer's mask for the slot of expert `top`: the experts but `skip` within 2 eps (relative to
  // max(|l_j|, l_top)) of it (HF sparsemixer in inference); the slot's weight is 1 / the sum of exp(l_j -
  // l_top) over them.
  std::vector<bool> sparsemixer_mask(const std::vector<double>& logits, int top, int skip) const {
    const double m = logits[static_cast<std::size_t>(top)];
    std::vector<bool> in(logits.size(), false);
    for (int e = 0; e < m_.experts; ++e) {
      const double x = logits[static_cast<std::size_t>(e)];
      in[static_cast<std::size_t>(e)] =
          e != skip && !((m - x) / std::max(std::abs(x), m) > 2.0 * m_.router_jitter);
    }
    return in;
  }

  // A token's discrete routing decision: its experts in the router's order and, for the sparsemixer, each
  // slot's mask (the weights are continuous in the logits given these).
  struct Decision {
    std::vector<int> experts;
    std::vector<std::vector<bool>> masks;
    bool same_as(const Decision& o) const {
      std::vector<int> a = experts, b = o.experts;
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      return a == b && (masks.empty() || (experts == o.experts && masks == o.masks));
    }
  };
  Decision decide(const std::vector<double>& logits, const WeightTensor* bias) const {
    return with_masks(logits, choose(logits, bias));
  }
  Decision with_masks(const std::vector<double>& logits, std::vector<int> experts) const {
    Decision d{std::move(experts), {}};
    if (m_.router == compiler::Router::kSparseMixer)
      for (std::size_t slot = 0; slot < d.experts.size(); ++slot)
        d.masks.push_back(sparsemixer_mask(logits, d.experts[slot], slot == 0 ? -1 : d.experts[0]));
    return d;
  }

  // The token's experts, in the router's order: the softmax's top_k; DeepSeek's group-limited or noaux_tc
  // choice (`bias`: its correction bias); or the sparsemixer's two argmaxes.
  std::vector<int> choose(const std::vector<double>& logits, const WeightTensor* bias) const {
    const std::size_t experts = logits.size();
    if (m_.router == compiler::Router::kSparseMixer) {
      std::vector<int> chosen;
      for (int slot = 0; slot < 2; ++slot) {
        int top = -1;
        for (int e = 0; e < m_.experts; ++e)
          if ((chosen.empty() || e != chosen[0]) &&
              (top < 0 || logits[static_cast<std::size_t>(e)] > logits[static_cast<std::size_t>(top)]))
            top = e;
        chosen.push_back(top);
      }
      return chosen;
    }
    // What the choice ranks: the scores, + the correction bias with noaux_tc; with groups, 0 for the experts
    // of the groups not kept (the groups ranked by their best score, or noaux_tc's two best summed).
    std::vector<double> choice = scores(logits);
    if (m_.router == compiler::Router::kNoAuxTc)
      for (std::size_t e = 0; e < experts; ++e) choice[e] += w_at(*bias, static_cast<std::int64_t>(e));
    if (m_.router == compiler::Router::kGroupLimited || m_.router == compiler::Router::kNoAuxTc) {
      const std::size_t groups = static_cast<std::size_t>(m_.router_groups), size = experts / groups;
      std::vector<double> score(groups);
      for (std::size_t g = 0; g < groups; ++g) {
        std::vector<double> members(choice.begin() + static_cast<std::ptrdiff_t>(g * size),
                                    choice.begin() + static_cast<std::ptrdiff_t>((g + 1) * size));
        std::sort(members.rbegin(), members.rend());
        score[g] = m_.router == compiler::Router::kNoAuxTc ? members[0] + members[1] : members[0];
      }
      std::vector<std::size_t> rank(groups);
      std::iota(rank.begin(), rank.end(), std::size_t{0});
      std::stable_sort(rank.begin(), rank.end(),
                       [&](std::size_t a, std::size_t b) { return score[a] > score[b]; });
      std::vector<bool> kept(groups, false);
      for (int g = 0; g < m_.router_topk_groups; ++g) kept[rank[static_cast<std::size_t>(g)]] = true;
      for (std::size_t e = 0; e < experts; ++e)
        if (!kept[e / size]) choice[e] = 0.0;
    }
    std::vector<int> order(experts);
    std::iota(order.begin(), order.end(), 0);
    // Highest first; ties: the lower expert index first.
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return choice[static_cast<std::size_t>(a)] > choice[static_cast<std::size_t>(b)];
    });
    order.resize(static_cast<std::size_t>(m_.top_k));
    return order;
  }

  // The weights of a decision (its experts in the router's order): the scores (renormalised over them with
  // norm_topk_prob; noaux_tc's sum guarded by 1e-20) times routed_scaling, or the sparsemixer's slot weights
  // over its masks.
  std::vector<std::pair<int, double>> weigh(const std::vector<double>& logits, const Decision& d) const {
    std::vector<std::pair<int, double>> out;
    if (m_.router == compiler::Router::kSparseMixer) {
      for (std::size_t slot = 0; slot < d.experts.size(); ++slot) {
        const double top = logits[static_cast<std::size_t>(d.experts[slot])];
        double sum = 0;
        for (std::size_t e = 0; e < logits.size(); ++e)
          if (d.masks[slot][e]) sum += std::exp(logits[e] - top);
        out.emplace_back(d.experts[slot], 1.0 / sum);
      }
      return out;
    }
    const std::vector<double> p = scores(logits);
    double top_sum = m_.router == compiler::Router::kNoAuxTc ? 1e-20 : 0.0;  // noaux_tc's guard
    for (int e : d.experts) top_sum += p[static_cast<std::size_t>(e)];
    for (int e : d.experts)
      out.emplace_back(
          e, p[static_cast<std::size_t>(e)] / (m_.router_renormalize ? top_sum : 1.0) * m_.routed_scaling);
    return out;
  }

  // The routing of MoE layer l at position `pos`: the reference's own decision, or, where the executor's
  // differs at an explained routing near tie (routing_record.hpp), the executor's (its experts, and the
  // sparsemixer's masks as its logits give them).
  Decision decision_at(int l, std::int64_t pos, const std::vector<double>& logits, const WeightTensor* bias) {
    Decision own = decide(logits, bias);
    const std::size_t mi = static_cast<std::size_t>(m_.moe_layers_before(l)),
                      at = static_cast<std::size_t>(pos);
    if (follow_ == nullptr || at >= follow_->size() || mi >= (*follow_)[at].size()) return own;
    const RoutedToken& ran = (*follow_)[at][mi];
    const std::vector<double> ran_logits(ran.logits.begin(), ran.logits.end());
    Decision executed = with_masks(ran_logits, std::vector<int>(ran.experts.begin(), ran.experts.end()));
    if (executed.same_as(own)) return own;
    RoutingTie tie;
    tie.request = request_;
    tie.position = at;
    tie.layer = l;
    tie.experts = ran.experts;
    tie.reference_experts.assign(own.experts.begin(), own.experts.end());
    tie.mask_only = executed.experts == own.experts;
    double largest = 0;
    for (std::size_t e = 0; e < logits.size(); ++e) {
      tie.router_logit_err = std::max(tie.router_logit_err, std::abs(ran_logits[e] - logits[e]));
      largest = std::max(largest, std::abs(logits[e]));
    }
    tie.bound = relative_bound_ * std::max(1.0, largest);
    tie.consistent = decide(ran_logits, bias).same_as(executed);
    ties_->push_back(tie);
    return tie.explained() ? executed : own;
  }

  Vec moe(int l, const Vec& n, std::int64_t pos) {
    const compiler::WeightNaming names = m_.weight_naming;
    std::vector<double> logits = matvec(w_.get(weight_name::router(names, l)), n, m_.experts);
    if (m_.router_bias)  // gpt-oss
      for (int e = 0; e < m_.experts; ++e)
        logits[static_cast<std::size_t>(e)] += w_at(w_.get(weight_name::router_bias(l)), e);
    std::vector<double> acc(n.size(), 0.0);
    const WeightTensor* bias =
        m_.router == compiler::Router::kNoAuxTc ? &w_.get(weight_name::router_correction_bias(l)) : nullptr;
    for (const auto& [e, weight] : weigh(logits, decision_at(l, pos, logits, bias))) {
      if (m_.expert_input_scaled) {  // Llama 4: the expert's input is the token times its weight (in FP16)
        std::vector<double> scaled(n.size());
        for (std::size_t i = 0; i < n.size(); ++i) scaled[i] = static_cast<double>(n[i]) * weight;
        const Vec y = expert_ffn(l, e, stored(scaled));
        for (std::size_t i = 0; i < acc.size(); ++i) acc[i] += y[i];
        continue;
      }
      const Vec y = expert_ffn(l, e, n);
      for (std::size_t i = 0; i < acc.size(); ++i) acc[i] += weight * y[i];
    }
    if (m_.shared_experts > 0) {  // + the shared experts' FFN, scaled by sigmoid(gate . x) when gated
      const Vec y = expert_ffn(l, -1, n);
      const double g =
          m_.shared_expert_gate
              ? 1.0 / (1.0 + std::exp(-matvec(w_.get(weight_name::shared_expert_gate(l)), n, 1)[0]))
              : 1.0;
      for (std::size_t i = 0; i < acc.size(); ++i) acc[i] += g * y[i];
    }
    return stored(acc);
  }

  // With follow_: the executor's routing of this request ([position][MoE layer]), followed at explained
  // routing near ties, each difference recorded in *ties_ (relative_bound_: the check's logit bound).
  const std::vector<std::vector<RoutedToken>>* follow_ = nullptr;
  const Quantized* quantized_ = nullptr;
  InputFollow* inputs_followed_ = nullptr;
  std::int64_t pos_ = 0;  // the position feed() runs
  std::vector<RoutingTie>* ties_ = nullptr;
  std::size_t request_ = 0;
  double relative_bound_ = 0;
  std::int64_t prompt_tokens_ = 0;  // length-dependent RoPE rotates by it (dynamic_rope_length)
  const ModelWeights& w_;
  const compiler::ModelSpec& m_;
  std::vector<std::vector<Vec>> k_, v_;  // [layer][position][kv_dim]
  const double scale_;                   // the softmax scale (attention_scale)
  const WeightTensor unit_gain_;  // head_dim ones: Llama 4's L2 q / k norm is an RMSNorm without a gain
  // frequencies(): RoPE frequencies and cos / sin factor per sequence length (0 where RoPE does not depend on
  // it)
  std::map<std::pair<bool, std::int64_t>, std::pair<std::vector<double>, double>>
      rope_by_length_;  // (local, length)
};

}  // namespace

void check_prompts(const std::vector<std::vector<std::int32_t>>& prompts, int vocab) {
  if (prompts.empty()) throw Error("no prompts: expected at least one request");
  for (std::size_t r = 0; r < prompts.size(); ++r) {
    if (prompts[r].empty()) throw Error(fmt::format("prompt {} is empty; expected at least one token id", r));
    for (std::size_t i = 0; i < prompts[r].size(); ++i)
      if (prompts[r][i] < 0 || prompts[r][i] >= vocab)
        throw Error(fmt::format("prompt {}, token {}: id {} is outside the vocabulary [0, {})", r, i,
                                prompts[r][i], vocab));
  }
}

namespace {

// Greedy generation (paths == nullptr) or teacher forcing along (*paths)[r], following `routing` at explained
// routing near ties when given.
ReferenceOutput run_reference(const ModelWeights& weights,
                              const std::vector<std::vector<std::int32_t>>& prompts, int max_new_tokens,
                              const std::vector<std::vector<std::int32_t>>* paths,
                              const ExecutedRouting* routing, double relative_bound,
                              const ExecutedQuantization* quantization) {
  check_functional_support(weights.spec);
  check_prompts(prompts, weights.spec.vocab);
  ReferenceOutput out;
  InputFollow followed;
  for (std::size_t r = 0; r < prompts.size(); ++r) {
    const int steps = paths ? static_cast<int>((*paths)[r].size()) : max_new_tokens;
    const bool follow = routing != nullptr && r < routing->size();
    const bool quantized = quantization != nullptr && r < quantization->size();
    Sequence seq(weights, static_cast<std::int64_t>(prompts[r].size()), follow ? &(*routing)[r] : nullptr,
                 &out.routing_ties, r, relative_bound, quantized ? &(*quantization)[r] : nullptr, &followed);
    std::vector<float> logits;
    std::int64_t pos = 0;
    for (std::int32_t t : prompts[r]) logits = seq.feed(t, pos++);
    std::vector<std::int32_t> tokens;
    std::vector<std::vector<float>> all_logits;
    for (int i = 0; i < steps; ++i) {
      // Greedy: the highest logit, ties to the lowest id.
      const auto next =
          static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      tokens.push_back(next);
      all_logits.push_back(logits);
      if (i + 1 < steps) logits = seq.feed(paths ? (*paths)[r][static_cast<std::size_t>(i)] : next, pos++);
    }
    out.tokens.push_back(std::move(tokens));
    out.logits.push_back(std::move(all_logits));
  }
  out.followed_inputs = followed.count;
  out.max_input_err = followed.max_err;
  out.input_err_ratio = followed.worst_ratio;
  return out;
}

}  // namespace

ReferenceOutput reference_generate(const ModelWeights& weights,
                                   const std::vector<std::vector<std::int32_t>>& prompts,
                                   int max_new_tokens) {
  if (max_new_tokens < 1) throw Error(fmt::format("max new tokens {}; expected >= 1", max_new_tokens));
  return run_reference(weights, prompts, max_new_tokens, nullptr, nullptr, 0.0, nullptr);
}

ReferenceOutput reference_follow(const ModelWeights& weights,
                                 const std::vector<std::vector<std::int32_t>>& prompts,
                                 const std::vector<std::vector<std::int32_t>>& paths,
                                 const ExecutedRouting* routing, double relative_bound,
                                 const ExecutedQuantization* quantization) {
  if (paths.size() != prompts.size())
    throw Error(
        fmt::format("{} token paths for {} prompts; expected one per prompt", paths.size(), prompts.size()));
  for (std::size_t r = 0; r < paths.size(); ++r) {
    if (paths[r].empty())
      throw Error(fmt::format("token path of request {} is empty; expected >= 1 token", r));
    for (std::int32_t t : paths[r])
      if (t < 0 || t >= weights.spec.vocab)
        throw Error(fmt::format("token path of request {}: id {} outside [0, {})", r, t, weights.spec.vocab));
  }
  if (routing != nullptr && !routing->empty() && routing->size() != prompts.size())
    throw Error(fmt::format("routing of {} requests for {} prompts; expected one per prompt", routing->size(),
                            prompts.size()));
  if (quantization != nullptr && !quantization->empty() && quantization->size() != prompts.size())
    throw Error(fmt::format("quantized inputs of {} requests for {} prompts; expected one per prompt",
                            quantization->size(), prompts.size()));
  return run_reference(weights, prompts, 0, &paths, routing, relative_bound, quantization);
}

}  // namespace duplex::runtime::functional
