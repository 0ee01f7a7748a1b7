#include "step_runner.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/compiler/lower.hpp"
#include "xpu_kernels.hpp"

namespace duplex::runtime::functional {

using compiler::OpKind;
using compiler::Unit;

StepRunner::StepRunner(const compiler::ModelSpec& model, const ModelNumerics& numerics, DeviceWeights& weights,
                       const compiler::ParallelLayout& layout, const compiler::CostModel& cost, kernels::Backend& xpu,
                       PimUnit* pim, PagedKvCache& kv)
    : m_(model), numerics_(numerics), w_(weights), layout_(layout), cost_(cost), xpu_(xpu), pim_(pim), kv_(kv) {}

compiler::ExecutionPlan StepRunner::plan() const {
  return compiler::place(compiler::lower(m_, batch_, layout_, routing_), cost_);
}

int StepRunner::moe_index(int layer) const {
  int idx = 0;
  for (int l = 0; l < layer; ++l) idx += m_.is_moe_layer(l) ? 1 : 0;
  return idx;
}

StepOutput StepRunner::run(const std::vector<StepRequest>& requests) {
  rows_.clear();
  ids_.clear();
  positions_.clear();
  batch_.groups.clear();
  t_ = 0;
  for (const StepRequest& r : requests) {
    DUPLEX_ASSERT(r.tokens >= 1 && r.sequence != nullptr &&
                      static_cast<std::int64_t>(r.sequence->size()) >= r.context + r.tokens,
                  "a step request without its tokens");
    rows_.push_back({t_, &r});
    for (std::int64_t i = 0; i < r.tokens; ++i) {
      ids_.push_back((*r.sequence)[static_cast<std::size_t>(r.context + i)]);
      positions_.push_back(static_cast<std::int32_t>(r.context + i));
    }
    t_ += r.tokens;
    batch_.groups.push_back({1, r.context, r.tokens});
  }
  routing_ = compiler::Routing{};
  routed_.clear();
  const auto h = static_cast<std::size_t>(m_.hidden), t = static_cast<std::size_t>(t_);
  x_.assign(t * h, 0);
  normed_.assign(t * h, 0);
  out_.assign(t * h, 0);
  q_.assign(t * static_cast<std::size_t>(m_.q_dim()), 0);
  attn_.assign(q_.size(), 0);
  k_.assign(t * static_cast<std::size_t>(m_.kv_dim()), 0);
  v_.assign(k_.size(), 0);
  norm_layer_ = -2;
  norms_in_layer_ = 0;
  kv_written_layer_ = -1;

  StepOutput out;
  out.plan = plan();
  out.executed_on.assign(out.plan.graph.ops.size(), Unit::kXpu);
  for (std::size_t i = 0; i < out.plan.graph.ops.size();) {
    const compiler::Op op = out.plan.graph.ops[i];  // a copy: a router replaces the plan
    const compiler::PlannedOp* p = out.plan.find(i);
    DUPLEX_ASSERT(p != nullptr, "op " + op.name + " is in no stage of the plan");
    if (op.kind == OpKind::kExpertFfn) {
      std::vector<Unit> unit_of(static_cast<std::size_t>(m_.experts), Unit::kXpu);
      std::vector<bool> listed(unit_of.size(), false);
      std::size_t j = i;
      for (; j < out.plan.graph.ops.size() && out.plan.graph.ops[j].kind == OpKind::kExpertFfn &&
             out.plan.graph.ops[j].layer == op.layer;
           ++j) {
        const auto e = static_cast<std::size_t>(out.plan.graph.ops[j].expert);
        unit_of[e] = out.executed_on[j] = out.plan.find(j)->unit;
        listed[e] = true;
      }
      for (std::size_t e = 0; e < listed.size(); ++e)
        DUPLEX_ASSERT(listed[e] == (routed_.back()[e] > 0), "the plan's experts differ from the routed ones");
      experts(op.layer, unit_of);
      i = j;
      continue;
    }
    out.executed_on[i] = p->unit;
    if (op.kind == OpKind::kLmHead) {
      lm_head(out);
    } else if (op.kind == OpKind::kRouter) {
      route(op.layer);
      compiler::ExecutionPlan next = plan();
      DUPLEX_ASSERT(next.graph.ops.size() > i && next.graph.ops[i].name == op.name,
                    "re-planning with the routing changed the ops before the router");
      out.plan = std::move(next);
      out.executed_on.resize(out.plan.graph.ops.size(), Unit::kXpu);
    } else {
      execute(op, p->unit);
    }
    ++i;
  }
  // Every op ran on the unit the final plan gives it (re-planning never moved an executed op).
  for (std::size_t i = 0; i < out.plan.graph.ops.size(); ++i)
    DUPLEX_ASSERT(out.plan.find(i)->unit == out.executed_on[i], "op " + out.plan.graph.ops[i].name + " moved");
  return out;
}

void StepRunner::execute(const compiler::Op& op, Unit unit) {
  DUPLEX_ASSERT(unit != Unit::kPim || pim_ != nullptr, "op " + op.name + " placed on a PIM the system lacks");
  const std::int64_t h = m_.hidden;
  switch (op.kind) {
    case OpKind::kEmbedding:
      launch(xpu_, kernels::EmbeddingArgs{f16_view(w_.embedding, {m_.vocab, h}), i32_view(ids_, {t_}), f16_view(x_, {t_, h})});
      return;
    case OpKind::kNorm: norm(op.layer); return;
    case OpKind::kQkvProj: qkv(op.layer, unit); return;
    case OpKind::kRope: rope(); return;
    case OpKind::kAttentionPrefill: attention(op.layer, false, unit); return;
    case OpKind::kAttentionDecode: attention(op.layer, true, unit); return;
    case OpKind::kOProj: o_proj(op.layer, unit); return;
    case OpKind::kResidual:
      launch(xpu_, kernels::ResidualAddArgs{f16_view(x_, {t_, h}), f16_view(out_, {t_, h}), f16_view(x_, {t_, h})});
      return;
    case OpKind::kDenseFfn: dense_ffn(op.layer, unit); return;
    default: DUPLEX_ASSERT(false, "functional emulation cannot execute op " + op.name);
  }
}

void StepRunner::norm(int layer) {
  if (layer != norm_layer_) {
    norm_layer_ = layer;
    norms_in_layer_ = 0;
  }
  std::vector<std::uint16_t>& gain = layer < 0             ? w_.final_norm
                                     : norms_in_layer_ == 0 ? w_.layers[static_cast<std::size_t>(layer)].attn_norm
                                                            : w_.layers[static_cast<std::size_t>(layer)].ffn_norm;
  ++norms_in_layer_;
  const std::int64_t h = m_.hidden;
  launch(xpu_, kernels::NormArgs{kernels::NormKind::kRms, f16_view(x_, {t_, h}), f16_view(gain, {h}), kernels::Tensor{},
                                 f16_view(normed_, {t_, h}), numerics_.rms_norm_eps});
}

void StepRunner::qkv(int layer, Unit unit) {
  const std::int64_t h = m_.hidden, q = m_.q_dim(), kv = m_.kv_dim(), n = q + 2 * kv;
  auto& w = w_.layers[static_cast<std::size_t>(layer)].qkv;
  std::vector<std::uint16_t> fused(static_cast<std::size_t>(t_ * n));
  if (unit == Unit::kPim) {
    pim_->linear(w.data(), normed_.data(), fused.data(), static_cast<std::size_t>(t_), static_cast<std::size_t>(n),
                 static_cast<std::size_t>(h));
  } else {
    launch(xpu_, kernels::GemmArgs{f16_view(normed_, {t_, h}), f16_view(w, {n, h}), f16_view(fused, {t_, n})});
  }
  for (std::int64_t r = 0; r < t_; ++r) {
    const auto* row = fused.data() + r * n;
    std::copy(row, row + q, q_.data() + r * q);
    std::copy(row + q, row + q + kv, k_.data() + r * kv);
    std::copy(row + q + kv, row + n, v_.data() + r * kv);
  }
}

void StepRunner::rope() {
  launch(xpu_, kernels::RopeArgs{f16_view(q_, {t_, m_.heads, m_.head_dim}), i32_view(positions_, {t_}),
                                 numerics_.rope_theta, 0});
  launch(xpu_, kernels::RopeArgs{f16_view(k_, {t_, m_.kv_heads, m_.head_dim}), i32_view(positions_, {t_}),
                                 numerics_.rope_theta, 0});
}

// The new tokens' K/V go into the paged cache (the xPU writes them, DUPLEX.md "K/V migration"), once per layer
// before its first attention op.
void StepRunner::write_kv(int layer) {
  const std::int64_t kv = m_.kv_dim();
  for (const Row& row : rows_)
    for (std::int64_t i = 0; i < row.request->tokens; ++i) {
      const std::int64_t r = row.first + i, pos = row.request->context + i;
      std::copy(k_.data() + r * kv, k_.data() + (r + 1) * kv, kv_.k(layer, row.request->id, pos));
      std::copy(v_.data() + r * kv, v_.data() + (r + 1) * kv, kv_.v(layer, row.request->id, pos));
    }
}

void StepRunner::attention(int layer, bool decode_op, Unit unit) {
  if (kv_written_layer_ != layer) {
    write_kv(layer);
    kv_written_layer_ = layer;
  }
  // The lowering's decode op holds the requests computing one token; the prefill op all others.
  std::vector<const Row*> rows;
  for (const Row& row : rows_)
    if ((row.request->tokens == 1) == decode_op) rows.push_back(&row);
  if (unit == Unit::kPim) {
    pim_attention(layer, rows);
  } else {
    xpu_attention(layer, rows);
  }
}

void StepRunner::xpu_attention(int layer, const std::vector<const Row*>& rows) {
  const std::int64_t hq = m_.heads, hkv = m_.kv_heads, d = m_.head_dim, qd = m_.q_dim(), kvd = m_.kv_dim();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  // Whole prompts (nothing cached before the step) go to the prefill kernel; every other token row attends to
  // the paged cache through the decode kernel, one row per token with its own context length.
  std::vector<const Row*> prompts;
  std::vector<std::pair<const Row*, std::int64_t>> paged;  // (request rows, token index)
  for (const Row* row : rows) {
    if (row->request->context == 0 && row->request->tokens > 1) {
      prompts.push_back(row);
    } else {
      for (std::int64_t i = 0; i < row->request->tokens; ++i) paged.emplace_back(row, i);
    }
  }
  if (!prompts.empty()) {
    std::vector<std::int64_t> starts{0};
    for (const Row* row : prompts) starts.push_back(starts.back() + row->request->tokens);
    const std::int64_t p = starts.back();
    std::vector<std::uint16_t> q(static_cast<std::size_t>(p * qd)), k(static_cast<std::size_t>(p * kvd)),
        v(k.size()), o(q.size());
    for (std::size_t b = 0; b < prompts.size(); ++b) {
      const std::int64_t first = prompts[b]->first, n = prompts[b]->request->tokens;
      std::copy(q_.data() + first * qd, q_.data() + (first + n) * qd, q.data() + starts[b] * qd);
      std::copy(k_.data() + first * kvd, k_.data() + (first + n) * kvd, k.data() + starts[b] * kvd);
      std::copy(v_.data() + first * kvd, v_.data() + (first + n) * kvd, v.data() + starts[b] * kvd);
    }
    launch(xpu_, kernels::PrefillAttentionArgs{f16_view(q, {p, hq, d}), f16_view(k, {p, hkv, d}), f16_view(v, {p, hkv, d}),
                                               f16_view(o, {p, hq, d}), starts, scale});
    for (std::size_t b = 0; b < prompts.size(); ++b)
      std::copy(o.data() + starts[b] * qd, o.data() + starts[b + 1] * qd, attn_.data() + prompts[b]->first * qd);
  }
  if (!paged.empty()) {
    const auto b = static_cast<std::int64_t>(paged.size());
    std::int64_t max_blocks = 1, max_context = 0;
    for (const auto& [row, i] : paged) {
      max_blocks = std::max<std::int64_t>(max_blocks, static_cast<std::int64_t>(kv_.block_table(row->request->id).size()));
      max_context = std::max(max_context, row->request->context + i + 1);
    }
    std::vector<std::uint16_t> q(static_cast<std::size_t>(b * qd)), o(q.size());
    std::vector<std::int32_t> table(static_cast<std::size_t>(b * max_blocks), 0), lens(static_cast<std::size_t>(b));
    for (std::int64_t r = 0; r < b; ++r) {
      const auto& [row, i] = paged[static_cast<std::size_t>(r)];
      std::copy(q_.data() + (row->first + i) * qd, q_.data() + (row->first + i + 1) * qd, q.data() + r * qd);
      const auto& blocks = kv_.block_table(row->request->id);
      std::copy(blocks.begin(), blocks.end(), table.begin() + r * max_blocks);
      lens[static_cast<std::size_t>(r)] = static_cast<std::int32_t>(row->request->context + i + 1);
    }
    const std::int64_t nb = kv_.num_blocks(), bt = kv_.block_tokens();
    kernels::DecodeAttentionArgs a;
    a.q = f16_view(q, {b, hq, d});
    a.k_cache = kernels::Tensor::contiguous(kv_.k_pool(layer), kernels::DType::kF16, {nb, bt, hkv, d});
    a.v_cache = kernels::Tensor::contiguous(kv_.v_pool(layer), kernels::DType::kF16, {nb, bt, hkv, d});
    a.block_table = i32_view(table, {b, max_blocks});
    a.context_lens = i32_view(lens, {b});
    a.out = f16_view(o, {b, hq, d});
    a.scale = scale;
    a.max_context_len = max_context;
    launch(xpu_, a);
    for (std::int64_t r = 0; r < b; ++r) {
      const auto& [row, i] = paged[static_cast<std::size_t>(r)];
      std::copy(o.data() + r * qd, o.data() + (r + 1) * qd, attn_.data() + (row->first + i) * qd);
    }
  }
}

// Logic-PIM decode attention: per token row and KV head, the GQA group's queries against that head's K/V,
// gathered from the paged cache through the request's block table.
void StepRunner::pim_attention(int layer, const std::vector<const Row*>& rows) {
  const auto d = static_cast<std::size_t>(m_.head_dim), hq = static_cast<std::size_t>(m_.heads);
  const auto group = static_cast<std::size_t>(m_.heads / m_.kv_heads);
  const std::uint16_t scale = float_to_half_bits(1.0f / std::sqrt(static_cast<float>(d)));
  std::vector<std::uint16_t> k, v;
  for (const Row* row : rows)
    for (std::int64_t i = 0; i < row->request->tokens; ++i) {
      const auto r = static_cast<std::size_t>(row->first + i);
      const auto t = static_cast<std::size_t>(row->request->context + i + 1);
      k.resize(t * d);
      v.resize(t * d);
      for (std::size_t g = 0; g < static_cast<std::size_t>(m_.kv_heads); ++g) {
        for (std::size_t j = 0; j < t; ++j) {
          const auto pos = static_cast<std::int64_t>(j);
          std::copy_n(kv_.k(layer, row->request->id, pos) + g * d, d, k.data() + j * d);
          std::copy_n(kv_.v(layer, row->request->id, pos) + g * d, d, v.data() + j * d);
        }
        const std::size_t qo = (r * hq + g * group) * d;
        pim_->attention(q_.data() + qo, k.data(), v.data(), group, t, d, scale, attn_.data() + qo);
      }
    }
}

void StepRunner::o_proj(int layer, Unit unit) {
  const std::int64_t h = m_.hidden, q = m_.q_dim();
  auto& w = w_.layers[static_cast<std::size_t>(layer)].o;
  if (unit == Unit::kPim) {
    pim_->linear(w.data(), attn_.data(), out_.data(), static_cast<std::size_t>(t_), static_cast<std::size_t>(h),
                 static_cast<std::size_t>(q));
  } else {
    launch(xpu_, kernels::GemmArgs{f16_view(attn_, {t_, q}), f16_view(w, {h, q}), f16_view(out_, {t_, h})});
  }
}

void StepRunner::route(int layer) {
  const std::int64_t h = m_.hidden, e = m_.experts, k = m_.top_k;
  topk_ids_.assign(static_cast<std::size_t>(t_ * k), 0);
  topk_weights_.assign(topk_ids_.size(), 0.0f);
  kernels::RouterArgs a;
  a.hidden = f16_view(normed_, {t_, h});
  a.gate_weight = f16_view(w_.layers[static_cast<std::size_t>(layer)].router, {e, h});
  a.topk_ids = i32_view(topk_ids_, {t_, k});
  a.topk_weights = f32_view(topk_weights_, {t_, k});
  a.top_k = k;
  a.renormalize = true;
  launch(xpu_, a);
  std::vector<std::int64_t> counts(static_cast<std::size_t>(e), 0);
  for (auto id : topk_ids_) ++counts[static_cast<std::size_t>(id)];
  DUPLEX_ASSERT(static_cast<int>(routed_.size()) == moe_index(layer), "routers out of layer order");
  routed_.push_back(counts);
  // Layers not routed yet keep the compiler's uniform estimate until their router runs.
  int moe_layers = 0;
  for (int l = 0; l < m_.layers; ++l) moe_layers += m_.is_moe_layer(l) ? 1 : 0;
  compiler::Routing r;
  r.kind = compiler::Routing::Kind::kCounts;
  for (int i = 0; i < moe_layers; ++i)
    r.counts.push_back(i < static_cast<int>(routed_.size()) ? routed_[static_cast<std::size_t>(i)]
                                                            : compiler::Routing{}.expert_tokens(i, t_, m_.experts, m_.top_k));
  routing_ = std::move(r);
}

void StepRunner::experts(int layer, const std::vector<Unit>& expert_unit) {
  LayerWeights& lw = w_.layers[static_cast<std::size_t>(layer)];
  const std::int64_t h = m_.hidden, e = m_.experts, k = m_.top_k, f = lw.ffn_width, p = t_ * k;
  std::vector<std::uint16_t> x_perm(static_cast<std::size_t>(p * h)), y_perm(x_perm.size());
  std::vector<std::int32_t> permuted_row(static_cast<std::size_t>(p)), offsets32(static_cast<std::size_t>(e + 1));
  launch(xpu_, kernels::PermuteArgs{f16_view(normed_, {t_, h}), i32_view(topk_ids_, {t_, k}), f16_view(x_perm, {p, h}),
                                    i32_view(permuted_row, {t_, k}), i32_view(offsets32, {e + 1}), e});
  std::vector<std::int64_t> off(offsets32.begin(), offsets32.end());
  // xPU lane: its experts' rows packed into one grouped launch; PIM lane: each of its experts on the PIM.
  std::vector<std::int64_t> xpu_off{0};
  std::vector<std::uint16_t> x_sub, y_sub;
  for (std::int64_t ex = 0; ex < e; ++ex) {
    const auto i = static_cast<std::size_t>(ex);
    const std::int64_t rows = off[i + 1] - off[i];
    DUPLEX_ASSERT(rows == routed_.back()[i], "permute and router disagree on an expert's tokens");
    const bool on_xpu = expert_unit[i] == Unit::kXpu;
    xpu_off.push_back(xpu_off.back() + (on_xpu ? rows : 0));
    if (rows == 0) continue;
    if (on_xpu) {
      x_sub.insert(x_sub.end(), x_perm.begin() + off[i] * h, x_perm.begin() + off[i + 1] * h);
    } else {
      DUPLEX_ASSERT(pim_ != nullptr, "an expert placed on a PIM the system lacks");
      pim_->gated_ffn(lw.gate.data() + ex * f * h, lw.up.data() + ex * f * h, lw.down.data() + ex * h * f,
                      x_perm.data() + off[i] * h, y_perm.data() + off[i] * h, static_cast<std::size_t>(rows),
                      static_cast<std::size_t>(f), static_cast<std::size_t>(h));
    }
  }
  const std::int64_t xpu_rows = xpu_off.back();
  if (xpu_rows > 0) {
    y_sub.resize(x_sub.size());
    kernels::ExpertFfnArgs a;
    a.x = f16_view(x_sub, {xpu_rows, h});
    a.w_in = f16_view(lw.gate, {e, f, h});
    a.w_up = f16_view(lw.up, {e, f, h});
    a.w_down = f16_view(lw.down, {e, h, f});
    a.y = f16_view(y_sub, {xpu_rows, h});
    a.expert_offsets = xpu_off;
    launch(xpu_, a);
    for (std::int64_t ex = 0; ex < e; ++ex) {
      const auto i = static_cast<std::size_t>(ex);
      std::copy(y_sub.begin() + xpu_off[i] * h, y_sub.begin() + xpu_off[i + 1] * h, y_perm.begin() + off[i] * h);
    }
  }
  launch(xpu_, kernels::UnpermuteArgs{f16_view(y_perm, {p, h}), i32_view(permuted_row, {t_, k}),
                                      f32_view(topk_weights_, {t_, k}), f16_view(out_, {t_, h})});
}

void StepRunner::dense_ffn(int layer, Unit unit) {
  LayerWeights& lw = w_.layers[static_cast<std::size_t>(layer)];
  const std::int64_t h = m_.hidden, f = lw.ffn_width;
  if (unit == Unit::kPim) {
    pim_->gated_ffn(lw.gate.data(), lw.up.data(), lw.down.data(), normed_.data(), out_.data(),
                    static_cast<std::size_t>(t_), static_cast<std::size_t>(f), static_cast<std::size_t>(h));
    return;
  }
  const std::vector<std::int64_t> offsets{0, t_};
  kernels::ExpertFfnArgs a;
  a.x = f16_view(normed_, {t_, h});
  a.w_in = f16_view(lw.gate, {1, f, h});
  a.w_up = f16_view(lw.up, {1, f, h});
  a.w_down = f16_view(lw.down, {1, h, f});
  a.y = f16_view(out_, {t_, h});
  a.expert_offsets = offsets;
  launch(xpu_, a);
}

// One next-token row per request: its last token's final-norm output.
void StepRunner::lm_head(StepOutput& out) {
  const std::int64_t h = m_.hidden, vocab = m_.vocab, n = static_cast<std::int64_t>(rows_.size());
  std::vector<std::uint16_t> last(static_cast<std::size_t>(n * h));
  for (std::int64_t r = 0; r < n; ++r) {
    const Row& row = rows_[static_cast<std::size_t>(r)];
    const std::int64_t src = row.first + row.request->tokens - 1;
    std::copy(normed_.data() + src * h, normed_.data() + (src + 1) * h, last.data() + r * h);
  }
  std::vector<std::int32_t> next(static_cast<std::size_t>(n));
  std::vector<float> logits(static_cast<std::size_t>(n * vocab));
  launch(xpu_, kernels::LmHeadArgs{f16_view(last, {n, h}), f16_view(w_.lm_head, {vocab, h}), i32_view(next, {n}),
                                   f32_view(logits, {n, vocab})});
  out.next_ids = next;
  out.logits.clear();
  for (std::int64_t r = 0; r < n; ++r)
    out.logits.emplace_back(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
}

}  // namespace duplex::runtime::functional
