#include "step_runner.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <map>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"
#include "xpu_kernels.hpp"

namespace duplex::runtime::functional {

using compiler::OpKind;
using compiler::Unit;

StepRunner::StepRunner(const compiler::ModelSpec& model, const ModelNumerics& numerics,
                       const compiler::ParallelLayout& layout, compiler::LowerOptions lowering,
                       const compiler::CostModel& cost, std::vector<DeviceContext> devices,
                       bool quantize_activations)
    : m_(model),
      numerics_(numerics),
      layout_(layout),
      lowering_(lowering),
      cost_(cost),
      dev_(std::move(devices)),
      quantize_activations_(quantize_activations),
      xpu0_(*dev_.at(0).xpu),
      w0_(*dev_.at(0).weights) {
  DUPLEX_ASSERT(static_cast<int>(dev_.size()) == layout.devices,
                "one device context per device of the layout");
  for (const DeviceContext& c : dev_)
    DUPLEX_ASSERT((c.kv->prefill_blocks() > 0) == lowering_.kv_migration,
                  "a prefill space in the KV cache exactly where lowering migrates K/V");
  if (numerics_.rope_scaling.kind != RopeScaling::Kind::kNone && !rope_depends_on_length(numerics_))
    for (double f : rope_inv_freq(numerics_, rotary_dim(m_))) rope_freq_.push_back(static_cast<float>(f));
  rope_scale_ = static_cast<float>(rope_attention_factor(numerics_));
  attn_scale_ = static_cast<float>(attention_scale(m_, numerics_));
  attn_dim_ = kv_cache_shape(m_).head_dim;
}

// The step's plan: each MoE layer's experts those of its busiest expert group (the step's time); with
// `expert_group` g >= 0, group g's (the experts a device of that group executes).
compiler::ExecutionPlan StepRunner::plan(int expert_group) const {
  compiler::LowerOptions lowering = lowering_;
  lowering.expert_group = expert_group;
  return compiler::place(compiler::lower(m_, batch_, layout_, routing_, lowering),
                         step_cost_ != nullptr ? *step_cost_ : cost_);
}

device::IDevice& StepRunner::on(std::size_t d, Unit unit) const {
  const DeviceContext& c = dev_[d];
  DUPLEX_ASSERT(unit != Unit::kPim || c.pim != nullptr, "an op placed on a PIM the system lacks");
  return unit == Unit::kPim ? *c.pim : static_cast<device::IDevice&>(*c.xpu);
}

// Device d's output of a sharded op before the all-reduce; with one device, the reduced output itself.
std::uint16_t* StepRunner::partial(std::size_t d) {
  if (dev_.size() == 1) return out_.data();
  return partials_.data() + d * static_cast<std::size_t>(t_ * m_.hidden);
}

template <class Compute>
void StepRunner::on_node_rows(std::size_t d, const std::uint16_t* in, std::int64_t in_cols, std::uint16_t* out,
                              std::int64_t out_cols, Compute&& compute) {
  if (layout_.dp == 1) {
    compute(in, out, t_);
    return;
  }
  const std::vector<std::int64_t>& rows = node_rows_[static_cast<std::size_t>(dev_[d].shard.node)];
  const auto n = static_cast<std::int64_t>(rows.size());
  std::vector<std::uint16_t> x(static_cast<std::size_t>(n * in_cols)), y(static_cast<std::size_t>(n * out_cols));
  for (std::int64_t i = 0; i < n; ++i)
    std::copy_n(in + rows[static_cast<std::size_t>(i)] * in_cols, in_cols, x.data() + i * in_cols);
  compute(x.data(), y.data(), n);
  std::fill_n(out, t_ * out_cols, std::uint16_t{0});
  for (std::int64_t i = 0; i < n; ++i)
    std::copy_n(y.data() + i * out_cols, out_cols, out + rows[static_cast<std::size_t>(i)] * out_cols);
}

CallQuant StepRunner::node_linear(std::size_t d, Unit unit, OpKind kind, const std::uint16_t* w,
                                  const std::uint16_t* x, std::int64_t k, std::uint16_t* y, std::int64_t n,
                                  const kernels::ActivationQuant& quant) {
  CallQuant call;
  on_node_rows(d, x, k, y, n, [&](const std::uint16_t* xi, std::uint16_t* yi, std::int64_t rows) {
    std::vector<std::uint16_t> quantized;
    if (quant.enabled()) {
      quantized.assign(xi, xi + rows * k);
      call = quantize(d, kind, quant, quantized.data(), rows, k);
      xi = quantized.data();
    }
    on(d, unit).linear(kind, w, xi, yi, static_cast<std::size_t>(rows), static_cast<std::size_t>(n),
                       static_cast<std::size_t>(k));
  });
  return call;
}

kernels::ActivationQuant StepRunner::input_quant(Unit unit, compiler::DType format, float static_scale,
                                                 bool expert) const {
  if (!quantize_activations_ || unit != Unit::kXpu) return {};
  return expert ? w8a8_expert_input_quant(m_, format, static_scale)
                : w8a8_input_quant(m_, format, static_scale);
}

namespace {

// The columns `marks` (n of them) flags, ascending.
std::vector<std::int32_t> marked_columns(const std::int32_t* marks, std::int64_t n) {
  std::vector<std::int32_t> columns;
  for (std::int64_t c = 0; c < n; ++c)
    if (marks[c] != 0) columns.push_back(static_cast<std::int32_t>(c));
  return columns;
}

}  // namespace

CallQuant StepRunner::quantize(std::size_t d, OpKind kind, const kernels::ActivationQuant& quant,
                               std::uint16_t* x, std::int64_t rows, std::int64_t cols) {
  DUPLEX_ASSERT(quant.enabled(), "quantizing without a format");
  const kernels::Tensor view = kernels::Tensor::contiguous(x, kernels::DType::kF16, {rows, cols});
  kernels::QuantizeArgs a{view, view, quant};
  CallQuant call;
  if (quant.per_tensor || quant.static_scale > 0)
    a.scales = kernels::Tensor::contiguous(&call.scale, kernels::DType::kF32, {1});
  std::vector<std::int32_t> marks(quant.decomposes() ? static_cast<std::size_t>(cols) : 0, 0);
  if (quant.decomposes())
    a.outliers = kernels::Tensor::contiguous(marks.data(), kernels::DType::kI32, {cols});
  dev_[d].xpu->run(kind, a);
  call.outliers = marked_columns(marks.data(), static_cast<std::int64_t>(marks.size()));
  if (quant.decomposes()) outlier_columns_.add(call.outliers);
  return call;
}

QuantizedInput StepRunner::quantized_input(QuantizedGemm gemm, const kernels::ActivationQuant& quant,
                                           int slices, const std::vector<CallQuant>& calls, int expert) {
  QuantizedInput in;
  in.gemm = gemm;
  in.expert = expert;
  in.slices = slices;
  for (const CallQuant& call : calls) {
    if (quant.per_tensor || quant.static_scale > 0) in.scales.push_back(call.scale);
    if (quant.decomposes()) in.outliers.push_back(call.outliers);
  }
  return in;
}

void StepRunner::record_quantized(int layer, const std::vector<std::int64_t>& rows,
                                  const QuantizedInput& input, std::initializer_list<InputRows> inputs) {
  for (std::int64_t r : rows) {
    QuantizedInput q = input;
    for (const InputRows& in : inputs)
      q.inputs.emplace_back(in.data + r * in.width, in.data + (r + 1) * in.width);
    record_row(layer, r, std::move(q));
  }
}

void StepRunner::record_row(int layer, std::int64_t row, QuantizedInput input) {
  quantized_.push_back({row_request_[static_cast<std::size_t>(row)],
                        positions_[static_cast<std::size_t>(row)], layer, std::move(input)});
}

void copy_slice(const std::uint16_t* slice, std::int64_t width, std::int64_t c0, std::uint16_t* full,
                std::int64_t full_width, const std::vector<std::int64_t>& rows) {
  for (std::int64_t r : rows) std::copy_n(slice + r * width, width, full + r * full_width + c0);
}

StepOutput StepRunner::run(const std::vector<StepRequest>& requests, const compiler::BatchState& batch,
                           const compiler::CostModel* cost) {
  step_cost_ = cost;
  rows_.clear();
  row_request_.clear();
  quantized_.clear();
  outlier_columns_ = {};
  ids_.clear();
  positions_.clear();
  batch_ = batch;
  t_ = 0;
  for (const StepRequest& r : requests) {
    DUPLEX_ASSERT(r.tokens >= 1 && r.sequence != nullptr &&
                      static_cast<std::int64_t>(r.sequence->size()) >= r.context + r.tokens,
                  "a step request without its tokens");
    rows_.push_back({t_, &r});
    for (std::int64_t i = 0; i < r.tokens; ++i) {
      row_request_.push_back(r.id);
      ids_.push_back((*r.sequence)[static_cast<std::size_t>(r.context + i)]);
      positions_.push_back(static_cast<std::int32_t>(r.context + i));
    }
    t_ += r.tokens;
    DUPLEX_ASSERT(r.prefill || !r.completes_prefill, "a decode request cannot complete a prefill");
    DUPLEX_ASSERT(r.node >= 0 && r.node < layout_.dp, "a request on a data-parallel rank the layout lacks");
  }
  node_rows_.assign(static_cast<std::size_t>(layout_.dp), {});
  for (const Row& row : rows_)
    for (std::int64_t i = 0; i < row.request->tokens; ++i)
      node_rows_[static_cast<std::size_t>(row.request->node)].push_back(row.first + i);
  DUPLEX_ASSERT(batch_.tokens() == t_, "the step's batch and its requests differ in tokens");
  routing_ = compiler::Routing{};
  routed_.clear();
  const auto h = static_cast<std::size_t>(m_.hidden), t = static_cast<std::size_t>(t_);
  x_.assign(t * h, 0);
  normed_.assign(t * h, 0);
  out_.assign(t * h, 0);
  partials_.assign(dev_.size() > 1 ? dev_.size() * t * h : 0, 0);
  lanes_.assign(dev_.size(), Lane{});
  for (std::size_t d = 0; d < dev_.size(); ++d) {
    const DeviceShard& s = dev_[d].shard;
    Lane& lane = lanes_[d];
    lane.q.assign(t * static_cast<std::size_t>(s.q_heads * attn_dim_), 0);
    lane.attn.assign(lane.q.size(), 0);
    lane.k.assign(t * static_cast<std::size_t>(s.kv_heads * attn_dim_), 0);
    lane.v.assign(mla() ? 0 : lane.k.size(), 0);
  }
  norm_layer_ = -2;
  norms_in_layer_ = 0;
  kv_written_layer_ = -1;

  StepOutput out;
  out.plan = plan();
  out.executed_on.assign(out.plan.graph.ops.size(), Unit::kXpu);
  for (std::size_t i = 0; i < out.plan.graph.ops.size(); ++i) {
    const compiler::Op op = out.plan.graph.ops[i];  // a copy: a router replaces the plan
    const compiler::PlannedOp* p = out.plan.find(i);
    DUPLEX_ASSERT(p != nullptr, "op " + op.name + " is in no stage of the plan");
    out.executed_on[i] = p->unit;
    // Every device's experts and shared experts ran right after the router.
    if (op.kind == OpKind::kExpertFfn || op.kind == OpKind::kSharedExpertFfn) continue;
    if (op.kind == OpKind::kLmHead) {
      lm_head(out);
    } else if (op.kind == OpKind::kRouter) {
      route(op.layer, out);
      compiler::ExecutionPlan next = plan();
      DUPLEX_ASSERT(next.graph.ops.size() > i && next.graph.ops[i].name == op.name,
                    "re-planning with the routing changed the ops before the router");
      out.plan = std::move(next);
      out.executed_on.resize(out.plan.graph.ops.size(), Unit::kXpu);
      experts(op.layer, out.plan);
    } else if (op.kind == OpKind::kKvMigration) {
      DUPLEX_ASSERT(p->unit == Unit::kXpu, "the K/V migration is the xPU's copy");
      migrate_kv(op.layer, out);
    } else {
      execute(op, p->unit);
    }
  }
  DUPLEX_ASSERT(migrating_.empty(), "a migration did not reach the last layer");
  for (const Row& row : rows_)  // a completed prompt left the prefill space at the last layer's migration
    for (const DeviceContext& c : dev_)
      DUPLEX_ASSERT(!row.request->completes_prefill || c.kv->own_prefill_blocks(row.request->id) == 0,
                    "a completed prefill still holds prefill-space blocks");
  // Every op ran on the unit the final plan gives it (re-planning never moved an executed op).
  for (std::size_t i = 0; i < out.plan.graph.ops.size(); ++i)
    DUPLEX_ASSERT(out.plan.find(i)->unit == out.executed_on[i],
                  "op " + out.plan.graph.ops[i].name + " moved");
  out.routing = routing_;
  out.quantized = std::move(quantized_);
  quantized_.clear();
  out.outlier_columns = outlier_columns_;
  return out;
}

void StepRunner::execute(const compiler::Op& op, Unit unit) {
  switch (op.kind) {
    case OpKind::kEmbedding:
      embedding();
      return;
    case OpKind::kNorm:
      if (op.name.ends_with("post_attn_norm") || op.name.ends_with("post_ffn_norm")) {
        gather_partials();
        post_norm(op.layer, op.name.ends_with("post_attn_norm"));
      } else {
        norm(op.layer);
      }
      return;
    case OpKind::kQkvProj:
      qkv(op.layer, unit);
      return;
    case OpKind::kRope:
      if (op.name.ends_with("attn_temperature")) {
        attn_temperature(op.layer);
      } else {
        rope(op.layer);
      }
      return;
    case OpKind::kAttentionPrefill:
      attention(op.layer, false, unit);
      return;
    case OpKind::kAttentionDecode:
      attention(op.layer, true, unit);
      return;
    case OpKind::kOProj:
      o_proj(op.layer, unit);
      return;
    case OpKind::kAllReduce:
      // The q / k sums of squares of a whole-projection norm: the rope pass reduces them (whole_qk_norm).
      if (!op.name.ends_with(compiler::kQkNormAllReduce)) all_reduce();
      return;
    case OpKind::kResidual:
      gather_partials();
      residual();
      partials_gathered_ = false;
      return;
    case OpKind::kDenseFfn:
      dense_ffn(op.layer, unit);
      return;
    // Data movement only: the emulation's devices share host memory (the plan times the transfer).
    case OpKind::kAllToAll:
    case OpKind::kPimTransfer:
      return;
    default:
      DUPLEX_ASSERT(false, "functional emulation cannot execute op " + op.name);
  }
}

// x = the tokens' embedding rows, times embedding_scale (Gemma), + their position rows with learned
// positions (row position_offset + p).
void StepRunner::embedding() {
  const std::int64_t h = m_.hidden;
  xpu0_.run(OpKind::kEmbedding,
            kernels::EmbeddingArgs{f16_view(w0_.embedding, {m_.vocab, h}), i32_view(ids_, {t_}),
                                   f16_view(x_, {t_, h}), embedding_scale(m_)});
  if (m_.learned_positions == 0) return;
  std::vector<std::int32_t> rows(positions_.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    rows[i] = positions_[i] + m_.position_offset;
    DUPLEX_ASSERT(rows[i] < m_.learned_positions,
                  "a position beyond the learned positions (the executor checks prompts up front)");
  }
  std::vector<std::uint16_t> pos(static_cast<std::size_t>(t_ * h));
  xpu0_.run(OpKind::kEmbedding, kernels::EmbeddingArgs{f16_view(w0_.positions, {m_.learned_positions, h}),
                                                       i32_view(rows, {t_}), f16_view(pos, {t_, h})});
  xpu0_.run(OpKind::kEmbedding,
            kernels::ResidualAddArgs{f16_view(x_, {t_, h}), f16_view(pos, {t_, h}), f16_view(x_, {t_, h})});
}

void StepRunner::norm(int layer) {
  if (layer != norm_layer_) {
    norm_layer_ = layer;
    norms_in_layer_ = 0;
  }
  LayerWeights* lw = layer < 0 ? nullptr : &w0_.layers[static_cast<std::size_t>(layer)];
  const bool first = norms_in_layer_ == 0;
  std::vector<std::uint16_t>& gain = lw == nullptr ? w0_.final_norm : first ? lw->attn_norm : lw->ffn_norm;
  std::vector<std::uint16_t>& bias = lw == nullptr ? w0_.final_norm_bias
                                     : first       ? lw->attn_norm_bias
                                                   : lw->ffn_norm_bias;
  ++norms_in_layer_;
  run_norm(x_, normed_, gain, bias);
}

// y = the model's norm of every row of x [t_, hidden] (y may be x) with `gain` and, unless empty, `bias`.
void StepRunner::run_norm(std::vector<std::uint16_t>& x, std::vector<std::uint16_t>& y,
                          std::vector<std::uint16_t>& gain, std::vector<std::uint16_t>& bias) {
  const std::int64_t h = m_.hidden;
  const bool layer_norm = m_.norm == compiler::NormKind::kLayerNorm;
  xpu0_.run(OpKind::kNorm, kernels::NormArgs{layer_norm ? kernels::NormKind::kLayer : kernels::NormKind::kRms,
                                             f16_view(x, {t_, h}), f16_view(gain, {h}),
                                             bias.empty() ? kernels::Tensor{} : f16_view(bias, {h}),
                                             f16_view(y, {t_, h}), numerics_.norm_eps, norm_offset()});
}

// The norm after a block (ModelSpec::post_norms), on its output `out_` (after the all-reduce and any output
// bias) in place, before the residual add.
void StepRunner::post_norm(int layer, bool after_attention) {
  add_out_bias();
  LayerWeights& lw = w0_.layers[static_cast<std::size_t>(layer)];
  run_norm(out_, out_, after_attention ? lw.post_attn_norm : lw.post_ffn_norm,
           after_attention ? lw.post_attn_norm_bias : lw.post_ffn_norm_bias);
}

void StepRunner::qkv(int layer, Unit unit) {
  if (mla()) {
    mla_qkv(layer, unit);
    return;
  }
  const std::int64_t h = m_.hidden, hd = m_.head_dim;
  const kernels::ActivationQuant quant = input_quant(
      unit, m_.attention_matrix_dtype(), w0_.layers[static_cast<std::size_t>(layer)].input_scales.qkv);
  std::vector<bool> recorded(static_cast<std::size_t>(layout_.dp), false);
  for (std::size_t d = 0; d < dev_.size(); ++d) {
    if (!active(d)) continue;
    const DeviceShard& s = dev_[d].shard;
    Lane& lane = lanes_[d];
    const std::int64_t q = s.q_heads * hd, kv = s.kv_heads * hd, n = q + 2 * kv;
    auto& w = dev_[d].weights->layers[static_cast<std::size_t>(layer)].qkv;
    std::vector<std::uint16_t> fused(static_cast<std::size_t>(t_ * n));
    const CallQuant call =
        node_linear(d, unit, OpKind::kQkvProj, w.data(), normed_.data(), h, fused.data(), n, quant);
    // The node's devices quantize the same rows alike: its first records them.
    if (quant.enabled() && !recorded[static_cast<std::size_t>(s.node)]) {
      recorded[static_cast<std::size_t>(s.node)] = true;
      record_quantized(layer, node_rows_[static_cast<std::size_t>(s.node)],
                       quantized_input(QuantizedGemm::kQkv, quant, 1, {call}), {{normed_.data(), h}});
    }
    for (std::int64_t r = 0; r < t_; ++r) {
      const auto* row = fused.data() + r * n;
      std::copy(row, row + q, lane.q.data() + r * q);
      std::copy(row + q, row + q + kv, lane.k.data() + r * kv);
      std::copy(row + q + kv, row + n, lane.v.data() + r * kv);
    }
  }
}

void StepRunner::add_bias(std::size_t d, std::vector<std::uint16_t>& x, std::int64_t rows,
                          const std::uint16_t* bias, std::int64_t cols) {
  std::vector<std::uint16_t> b(static_cast<std::size_t>(rows * cols));
  for (std::int64_t r = 0; r < rows; ++r) std::copy_n(bias, cols, b.data() + r * cols);
  dev_[d].xpu->run(OpKind::kResidual,
                   kernels::ResidualAddArgs{f16_view(x, {rows, cols}), f16_view(b, {rows, cols}),
                                            f16_view(x, {rows, cols})});
}

// RMSNorm of every token's whole q (k) projection when its heads are spread over the node's devices (OLMoE's
// q / k norms under tensor parallelism): each device's rows are normalised by the root mean square over all
// the node's heads (the per-token sums of squares the plan's qk_norm_all_reduce op sums), with its slice of
// the gain. Emulated by gathering the node's full rows (each KV head once) onto each device, which runs the
// norm kernel on them and keeps its slice.
void StepRunner::whole_qk_norm(int layer) {
  const std::int64_t hd = m_.head_dim;
  const LayerWeights& lw0 = w0_.layers[static_cast<std::size_t>(layer)];
  for (bool is_q : {true, false}) {
    const std::int64_t width = (is_q ? m_.heads : m_.kv_heads) * hd;
    for (int node = 0; node < layout_.dp; ++node) {
      std::vector<std::uint16_t> full(static_cast<std::size_t>(t_ * width));
      std::vector<std::size_t> members;
      for (std::size_t d = 0; d < dev_.size(); ++d) {
        const DeviceShard& s = dev_[d].shard;
        if (s.node != node || !active(d)) continue;
        members.push_back(d);
        const std::int64_t c0 = (is_q ? s.q_head0 : s.kv_head0) * hd,
                           n = (is_q ? s.q_heads : s.kv_heads) * hd;
        const std::vector<std::uint16_t>& x = is_q ? lanes_[d].q : lanes_[d].k;
        for (std::int64_t r = 0; r < t_; ++r) std::copy_n(x.data() + r * n, n, full.data() + r * width + c0);
      }
      for (std::size_t d : members) {
        const DeviceShard& s = dev_[d].shard;
        std::vector<std::uint16_t> normed(full.size()), gain = is_q ? lw0.q_norm : lw0.k_norm;
        dev_[d].xpu->run(OpKind::kNorm,
                         kernels::NormArgs{kernels::NormKind::kRms, f16_view(full, {t_, width}),
                                           f16_view(gain, {width}), kernels::Tensor{},
                                           f16_view(normed, {t_, width}), numerics_.norm_eps, norm_offset()});
        const std::int64_t c0 = (is_q ? s.q_head0 : s.kv_head0) * hd,
                           n = (is_q ? s.q_heads : s.kv_heads) * hd;
        std::vector<std::uint16_t>& x = is_q ? lanes_[d].q : lanes_[d].k;
        for (std::int64_t r = 0; r < t_; ++r)
          std::copy_n(normed.data() + r * width + c0, n, x.data() + r * n);
      }
    }
  }
}

void StepRunner::rope(int layer) {
  const std::int64_t hd = m_.head_dim;
  // Across devices only when a node's heads are split (a whole-projection norm on one device is local).
  const bool gathered_norm = m_.qk_norm == compiler::QkNorm::kWhole && layout_.tp > 1;
  for (std::size_t d = 0; d < dev_.size(); ++d) {
    if (!active(d)) continue;
    const DeviceShard& s = dev_[d].shard;
    LayerWeights& lw = dev_[d].weights->layers[static_cast<std::size_t>(layer)];
    Lane& lane = lanes_[d];
    const std::int64_t q = s.q_heads * hd, kv = s.kv_heads * hd;
    if (!lw.qkv_bias.empty()) {
      add_bias(d, lane.q, t_, lw.qkv_bias.data(), q);
      add_bias(d, lane.k, t_, lw.qkv_bias.data() + q, kv);
      add_bias(d, lane.v, t_, lw.qkv_bias.data() + q + kv, kv);
    }
    if (m_.clip_qkv > 0)  // DBRX: the projections' outputs clamped to +-clip_qkv, in place
      for (auto [x, cols] : {std::pair{&lane.q, q}, std::pair{&lane.k, kv}, std::pair{&lane.v, kv}})
        dev_[d].xpu->run(OpKind::kRope, kernels::ClampArgs{f16_view(*x, {t_, cols}), f16_view(*x, {t_, cols}),
                                                           static_cast<float>(m_.clip_qkv)});
    const bool gained_norm =
        m_.qk_norm == compiler::QkNorm::kPerHead || m_.qk_norm == compiler::QkNorm::kWhole;
    if (gained_norm && !gathered_norm) {
      // Per head: each head's row of head_dim is normed; whole (every head here): each token's q (k) row.
      const bool per_head = m_.qk_norm == compiler::QkNorm::kPerHead;
      for (auto [x, heads, gain] :
           {std::tuple{&lane.q, s.q_heads, &lw.q_norm}, std::tuple{&lane.k, s.kv_heads, &lw.k_norm}}) {
        const std::int64_t rows = per_head ? t_ * heads : t_, cols = per_head ? hd : heads * hd;
        dev_[d].xpu->run(OpKind::kNorm,
                         kernels::NormArgs{kernels::NormKind::kRms, f16_view(*x, {rows, cols}),
                                           f16_view(*gain, {cols}), kernels::Tensor{},
                                           f16_view(*x, {rows, cols}), numerics_.norm_eps, norm_offset()});
      }
    }
  }
  if (gathered_norm) whole_qk_norm(layer);
  // No rotation with learned positions (added to the embeddings) and in Llama 4's NoPE layers.
  if (!m_.rotates(layer)) return;
  if (rope_depends_on_length(numerics_)) {
    rope_by_length();
  } else {
    rope_rotate(layer);
  }
  if (m_.qk_norm == compiler::QkNorm::kL2) l2_qk_norm();
}

void StepRunner::l2_qk_norm() {
  const std::int64_t hd = m_.head_dim;
  if (unit_gain_.empty()) unit_gain_.assign(static_cast<std::size_t>(hd), float_to_half_bits(1.0f));
  for (std::size_t d = 0; d < dev_.size(); ++d) {
    if (!active(d)) continue;
    const DeviceShard& s = dev_[d].shard;
    for (auto [x, heads] : {std::pair{&lanes_[d].q, s.q_heads}, std::pair{&lanes_[d].k, s.kv_heads}})
      dev_[d].xpu->run(OpKind::kNorm,
                       kernels::NormArgs{kernels::NormKind::kRms, f16_view(*x, {t_ * heads, hd}),
                                         f16_view(unit_gain_, {hd}), kernels::Tensor{},
                                         f16_view(*x, {t_ * heads, hd}), numerics_.norm_eps, 0.0f});
  }
}

void StepRunner::attn_temperature(int layer) {
  DUPLEX_ASSERT(!m_.rotates(layer) && m_.attn_temperature_floor > 0,
                "temperature tuning of a rotating layer");
  for (std::size_t d = 0; d < dev_.size(); ++d) {
    if (!active(d)) continue;
    const DeviceShard& s = dev_[d].shard;
    dev_[d].xpu->run(OpKind::kRope,
                     kernels::AttnTemperatureArgs{f16_view(lanes_[d].q, {t_, s.q_heads, m_.head_dim}),
                                                  i32_view(positions_, {t_}),
                                                  static_cast<float>(m_.attn_temperature_floor),
                                                  static_cast<float>(m_.attn_temperature_scale)});
  }
}

void StepRunner::rope_rotate(int layer) {
  // The rotated part leads each head (MLA: q_pe and k_pe, mla_qkv); GQA rotates the whole head. A windowed
  // layer of a model with a local base (Gemma 3) rotates with it, unscaled (layer_rope_numerics).
  const std::int64_t dim = attn_dim_, rotary = rotary_dim(m_);
  const bool local = rotates_locally(numerics_, m_, layer);
  const float theta = local ? numerics_.local_rope_theta : numerics_.rope_theta,
              scale = local ? 1.0f : rope_scale_;
  const std::span<const float> freq = local ? std::span<const float>{} : std::span<const float>(rope_freq_);
  for (std::size_t d = 0; d < dev_.size(); ++d) {
    if (!active(d)) continue;
    const DeviceShard& s = dev_[d].shard;
    dev_[d].xpu->run(OpKind::kRope,
                     kernels::RopeArgs{f16_view(lanes_[d].q, {t_, s.q_heads, dim}),
                                       i32_view(positions_, {t_}), theta, rotary, freq, scale});
    dev_[d].xpu->run(OpKind::kRope,
                     kernels::RopeArgs{f16_view(lanes_[d].k, {t_, s.kv_heads, dim}),
                                       i32_view(positions_, {t_}), theta, rotary, freq, scale});
  }
}

void StepRunner::rope_by_length() {
  const std::int64_t dim = attn_dim_, rotary = rotary_dim(m_);
  for (const Row& row : rows_)
    for (std::int64_t i = 0; i < row.request->tokens; ++i) {
      const std::int64_t r = row.first + i,
                         length = dynamic_rope_length(row.request->prompt_tokens, row.request->context + i);
      auto it = rope_by_length_.find(length);
      if (it == rope_by_length_.end()) {
        LengthRope f{{}, static_cast<float>(rope_attention_factor(numerics_, length))};
        for (double v : rope_inv_freq(numerics_, static_cast<int>(rotary), length))
          f.inv_freq.push_back(static_cast<float>(v));
        it = rope_by_length_.emplace(length, std::move(f)).first;
      }
      for (std::size_t d = 0; d < dev_.size(); ++d) {
        if (!serves(d, *row.request)) continue;
        const DeviceShard& s = dev_[d].shard;
        Lane& lane = lanes_[d];
        for (auto [x, heads] : {std::pair{&lane.q, s.q_heads}, std::pair{&lane.k, s.kv_heads}})
          dev_[d].xpu->run(
              OpKind::kRope,
              kernels::RopeArgs{kernels::Tensor::contiguous(x->data() + r * heads * dim, kernels::DType::kF16,
                                                            {1, heads, dim}),
                                kernels::Tensor::contiguous(positions_.data() + r, kernels::DType::kI32, {1}),
                                numerics_.rope_theta, rotary, it->second.inv_freq, it->second.scale});
      }
    }
}

// out += the pending output bias (the attention's o bias or the FFN's), once per row after the all-reduce.
void StepRunner::add_out_bias() {
  if (out_bias_ == nullptr) return;
  add_bias(0, out_, t_, out_bias_, m_.hidden);
  out_bias_ = nullptr;
}

// x += out (+ the attention's o bias or the FFN's output bias, once per row after the all-reduce, when the
// model has one).
void StepRunner::residual() {
  const std::int64_t h = m_.hidden;
  add_out_bias();
  xpu0_.run(OpKind::kResidual,
            kernels::ResidualAddArgs{f16_view(x_, {t_, h}), f16_view(out_, {t_, h}), f16_view(x_, {t_, h})});
}

// The new tokens' K/V go into each device's paged cache (the xPU writes them, DUPLEX.md "K/V migration"),
// once per layer before its first attention op (MLA: the latent, into the one pool).
void StepRunner::write_kv(int layer) {
  for (std::size_t d = 0; d < dev_.size(); ++d) {
    const std::int64_t kv = dev_[d].shard.kv_heads * attn_dim_;
    const Lane& lane = lanes_[d];
    for (const Row& row : rows_) {
      if (!serves(d, *row.request)) continue;
      for (std::int64_t i = 0; i < row.request->tokens; ++i) {
        const std::int64_t r = row.first + i, pos = row.request->context + i;
        PagedKvCache& cache = *dev_[d].kv;
        std::copy(lane.k.data() + r * kv, lane.k.data() + (r + 1) * kv, cache.k(layer, row.request->id, pos));
        if (!cache.shared_kv())
          std::copy(lane.v.data() + r * kv, lane.v.data() + (r + 1) * kv,
                    cache.v(layer, row.request->id, pos));
      }
    }
  }
}

// One layer of the in-device K/V migration (the plan's kv_migration op, on the xPU): each request completing
// its prefill this step takes, at its first layer, a KV-space block for each prefill-space block it
// allocated; each layer copies that layer's K/V of those blocks; after the last layer its table (and every
// table sharing a block, and the prefix cache's kept marks) holds the KV-space blocks and the prefill-space
// ones are free. Blocks it took from the prefix cache stay where they are (KV spaces, or the prefill space of
// a prompt still prefilling, which moves them when it migrates).
void StepRunner::migrate_kv(int layer, StepOutput& out) {
  for (const Row& row : rows_) {
    const StepRequest& r = *row.request;
    if (!r.completes_prefill) continue;
    const std::int64_t tokens = r.context + r.tokens - r.cached;  // the K/V the prompt computed itself
    double bytes = 0;
    for (std::size_t d = 0; d < dev_.size(); ++d) {
      if (!serves(d, r)) continue;
      PagedKvCache& kv = *dev_[d].kv;
      const auto [it, first_layer] = migrating_.try_emplace({d, r.id});
      if (first_layer) it->second = kv.plan_migration(r.id);
      for (const BlockMove& move : it->second) kv.copy_block(layer, move);
      const double pools = kv.shared_kv() ? 1.0 : 2.0;                         // K + V, or MLA's one latent
      bytes += pools * static_cast<double>(tokens * kv.token_values()) * 2.0;  // FP16
      if (layer == m_.layers - 1) {
        kv.complete_migration(it->second);
        migrating_.erase(it);
      }
    }
    auto it = std::find_if(out.migrations.begin(), out.migrations.end(),
                           [&](const InDeviceMigration& m) { return m.id == r.id; });
    if (it == out.migrations.end()) it = out.migrations.insert(out.migrations.end(), {r.id, tokens, 0});
    it->bytes += bytes;
  }
}

// The lowering's decode op holds the requests computing one token; the prefill op all others. On the xPU,
// whole prompts (nothing cached before the step) go to the prefill kernel; every other token row attends to
// the paged cache through decode attention, one row per token with its own context length (PIM: every row).
void StepRunner::attention(int layer, bool decode_op, Unit unit) {
  if (kv_written_layer_ != layer) {
    write_kv(layer);
    kv_written_layer_ = layer;
  }
  std::vector<const Row*> prompts;
  std::vector<std::pair<const Row*, std::int64_t>> paged;  // (request rows, token index)
  for (const Row& row : rows_) {
    const bool decodes = row.request->tokens == 1 || !row.request->prefill;  // (RequestGroup::decodes)
    if (decodes != decode_op) continue;
    if (unit == Unit::kXpu && row.request->context == 0 && row.request->tokens > 1) {
      prompts.push_back(&row);
    } else {
      for (std::int64_t i = 0; i < row.request->tokens; ++i) paged.emplace_back(&row, i);
    }
  }
  for (std::size_t d = 0; d < dev_.size(); ++d) {
    std::vector<const Row*> own_prompts;  // of this device's node
    for (const Row* row : prompts)
      if (serves(d, *row->request)) own_prompts.push_back(row);
    if (!own_prompts.empty()) prefill_attention(d, layer, own_prompts);
    // One batch over the device's pool (the KV spaces and the prefill space are blocks of one pool).
    std::vector<std::pair<const Row*, std::int64_t>> rows;
    for (const auto& pr : paged)
      if (serves(d, *pr.first->request)) rows.push_back(pr);
    if (!rows.empty()) paged_attention(d, layer, unit, *dev_[d].kv, rows);
  }
}

void StepRunner::paged_attention(std::size_t d, int layer, Unit unit, PagedKvCache& kv,
                                 const std::vector<std::pair<const Row*, std::int64_t>>& paged) {
  const DeviceShard& s = dev_[d].shard;
  Lane& lane = lanes_[d];
  const std::int64_t qd = s.q_heads * attn_dim_, b = static_cast<std::int64_t>(paged.size());
  std::vector<std::uint16_t> q(static_cast<std::size_t>(b * qd)), o(q.size());
  device::DecodeAttentionBatch batch;
  for (std::int64_t r = 0; r < b; ++r) {
    const auto& [row, i] = paged[static_cast<std::size_t>(r)];
    std::copy(lane.q.data() + (row->first + i) * qd, lane.q.data() + (row->first + i + 1) * qd,
              q.data() + r * qd);
    batch.block_tables.push_back(&kv.block_table(row->request->id));
    batch.context_lens.push_back(static_cast<std::int32_t>(row->request->context + i + 1));
  }
  batch.q = q.data();
  batch.out = o.data();
  batch.rows = b;
  batch.q_heads = s.q_heads;
  batch.kv = {kv.k_pool(layer), kv.v_pool(layer), kv.num_blocks(), kv.block_tokens(), s.kv_heads, attn_dim_};
  batch.scale = attn_scale_;
  batch.softcap = static_cast<float>(m_.attn_softcap);
  batch.window = m_.attention_window(layer);
  batch.chunk = m_.attention_chunk_of(layer);
  const std::vector<std::uint16_t>& sinks = dev_[d].weights->layers[static_cast<std::size_t>(layer)].sinks;
  if (!sinks.empty()) batch.sinks = sinks.data();
  on(d, unit).decode_attention(batch);
  for (std::int64_t r = 0; r < b; ++r) {
    const auto& [row, i] = paged[static_cast<std::size_t>(r)];
    std::copy(o.data() + r * qd, o.data() + (r + 1) * qd, lane.attn.data() + (row->first + i) * qd);
  }
}

void StepRunner::prefill_attention(std::size_t d, int layer, const std::vector<const Row*>& prompts) {
  const DeviceShard& s = dev_[d].shard;
  Lane& lane = lanes_[d];
  const std::int64_t hd = attn_dim_, qd = s.q_heads * hd, kvd = s.kv_heads * hd;
  std::vector<std::int64_t> starts{0};
  for (const Row* row : prompts) starts.push_back(starts.back() + row->request->tokens);
  const std::int64_t p = starts.back();
  std::vector<std::uint16_t> q(static_cast<std::size_t>(p * qd)), k(static_cast<std::size_t>(p * kvd)),
      v(mla() ? 0 : k.size()), o(q.size());
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    const std::int64_t first = prompts[b]->first, n = prompts[b]->request->tokens;
    std::copy(lane.q.data() + first * qd, lane.q.data() + (first + n) * qd, q.data() + starts[b] * qd);
    std::copy(lane.k.data() + first * kvd, lane.k.data() + (first + n) * kvd, k.data() + starts[b] * kvd);
    if (!mla())
      std::copy(lane.v.data() + first * kvd, lane.v.data() + (first + n) * kvd, v.data() + starts[b] * kvd);
  }
  std::vector<std::uint16_t>& values = mla() ? k : v;  // MLA: the latent is the keys and the values
  kernels::PrefillAttentionArgs args{f16_view(q, {p, s.q_heads, hd}),
                                     f16_view(k, {p, s.kv_heads, hd}),
                                     f16_view(values, {p, s.kv_heads, hd}),
                                     f16_view(o, {p, s.q_heads, hd}),
                                     starts,
                                     attn_scale_,
                                     m_.attention_window(layer)};
  args.softcap = static_cast<float>(m_.attn_softcap);
  args.chunk = m_.attention_chunk_of(layer);
  std::vector<std::uint16_t>& sinks = dev_[d].weights->layers[static_cast<std::size_t>(layer)].sinks;
  if (!sinks.empty()) args.sinks = f16_view(sinks, {s.q_heads});
  dev_[d].xpu->run(OpKind::kAttentionPrefill, args);
  for (std::size_t b = 0; b < prompts.size(); ++b)
    std::copy(o.data() + starts[b] * qd, o.data() + starts[b + 1] * qd,
              lane.attn.data() + prompts[b]->first * qd);
}

// The stand-in for the tensor-parallel all-reduce: out = sum over devices of their partial outputs (FP32, in
// device order), on device 0's xPU; every device would compute the same sum.
void StepRunner::all_reduce() {
  DUPLEX_ASSERT(dev_.size() > 1, "an all-reduce in a one-device plan");
  const std::int64_t n = t_ * m_.hidden, p = static_cast<std::int64_t>(dev_.size());
  xpu0_.run(OpKind::kAllReduce, kernels::PartialSumArgs{f16_view(partials_, {p, n}), f16_view(out_, {n})});
}

void StepRunner::gather_partials() {
  if (layout_.tp > 1 || dev_.size() == 1 || partials_gathered_) return;  // tp > 1: the plan all-reduces
  all_reduce();
  partials_gathered_ = true;
}

void StepRunner::o_proj(int layer, Unit unit) {
  if (mla()) {
    mla_o_proj(layer, unit);
    return;
  }
  const std::int64_t h = m_.hidden;
  if (m_.o_bias) out_bias_ = w0_.layers[static_cast<std::size_t>(layer)].o_bias.data();
  const kernels::ActivationQuant quant = input_quant(
      unit, m_.attention_matrix_dtype(), w0_.layers[static_cast<std::size_t>(layer)].input_scales.o);
  std::vector<CallQuant> slice_calls(dev_.size());
  const std::int64_t width = m_.heads * m_.head_dim;
  std::vector<std::uint16_t> full(quant.enabled() ? static_cast<std::size_t>(t_ * width) : 0);
  for (std::size_t d = 0; d < dev_.size(); ++d) {
    if (!active(d)) {
      std::fill_n(partial(d), t_ * h, std::uint16_t{0});
      continue;
    }
    const DeviceShard& s = dev_[d].shard;
    const std::int64_t q = s.q_heads * m_.head_dim;
    const auto& w = dev_[d].weights->layers[static_cast<std::size_t>(layer)].o;
    slice_calls[d] =
        node_linear(d, unit, OpKind::kOProj, w.data(), lanes_[d].attn.data(), q, partial(d), h, quant);
    if (quant.enabled())
      copy_slice(lanes_[d].attn.data(), q, s.q_head0 * m_.head_dim, full.data(), width,
                 node_rows_[static_cast<std::size_t>(s.node)]);
  }
  record_row_parallel(layer, QuantizedGemm::kOProj, quant, slice_calls, {full.data(), width});
}

// The node's devices each quantized their slice of a row-parallel input (their heads): one record per node,
// the scales in slice order.
void StepRunner::record_row_parallel(int layer, QuantizedGemm gemm, const kernels::ActivationQuant& quant,
                                     const std::vector<CallQuant>& device_calls, InputRows input) {
  record_per_node(layer, gemm, quant, false,
                  [&](std::size_t d) {
                    const DeviceShard& s = dev_[d].shard;
                    return SliceQuant{m_.heads / s.q_heads, s.q_head0 / s.q_heads, nullptr, &device_calls[d]};
                  },
                  {input});
}

void StepRunner::record_per_node(int layer, QuantizedGemm gemm, const kernels::ActivationQuant& quant,
                                 bool lead, const std::function<SliceQuant(std::size_t)>& slice_of,
                                 std::initializer_list<InputRows> inputs) {
  if (!quant.enabled()) return;
  const std::size_t first = lead ? 1 : 0;
  for (int node = 0; node < layout_.dp; ++node) {
    if (node_rows_[static_cast<std::size_t>(node)].empty()) continue;
    int slices = 1;
    std::vector<CallQuant> calls;
    for (std::size_t d = 0; d < dev_.size(); ++d) {
      if (dev_[d].shard.node != node) continue;
      const SliceQuant sq = slice_of(d);
      slices = sq.slices;
      calls.resize(first + static_cast<std::size_t>(slices));
      if (lead) calls[0] = *sq.lead;
      calls[first + static_cast<std::size_t>(sq.slice)] = *sq.call;
    }
    record_quantized(layer, node_rows_[static_cast<std::size_t>(node)],
                     quantized_input(gemm, quant, slices, calls), inputs);
  }
}

void StepRunner::route(int layer, StepOutput& out) {
  const std::int64_t h = m_.hidden, e = m_.experts, k = m_.top_k;
  topk_ids_.assign(static_cast<std::size_t>(t_ * k), 0);
  topk_weights_.assign(topk_ids_.size(), 0.0f);
  std::vector<float> logits(static_cast<std::size_t>(t_ * e));
  kernels::RouterArgs a;
  a.logits = f32_view(logits, {t_, e});
  a.hidden = f16_view(normed_, {t_, h});
  a.gate_weight = f16_view(w0_.layers[static_cast<std::size_t>(layer)].router, {e, h});
  a.topk_ids = i32_view(topk_ids_, {t_, k});
  a.topk_weights = f32_view(topk_weights_, {t_, k});
  a.top_k = k;
  a.renormalize = m_.router_renormalize;
  a.kind = device::kernel_router(m_.router);
  a.jitter_eps = static_cast<float>(m_.router_jitter);
  a.num_groups = m_.router_groups;
  a.topk_groups = m_.router_topk_groups;
  a.routed_scaling = static_cast<float>(m_.routed_scaling);
  std::vector<std::uint16_t>& bias = w0_.layers[static_cast<std::size_t>(layer)].correction_bias;
  if (!bias.empty()) a.correction_bias = f16_view(bias, {e});
  std::vector<std::uint16_t>& logit_bias = w0_.layers[static_cast<std::size_t>(layer)].router_bias;
  if (!logit_bias.empty()) a.logit_bias = f16_view(logit_bias, {e});
  std::vector<std::uint16_t>& shared_gate = w0_.layers[static_cast<std::size_t>(layer)].shared_gate;
  shared_gate_.assign(static_cast<std::size_t>(t_), 1.0f);
  if (!shared_gate.empty()) {
    a.shared_gate_weight = f16_view(shared_gate, {1, h});
    a.shared_gate = f32_view(shared_gate_, {t_});
  }
  xpu0_.run(OpKind::kRouter, a);
  for (const Row& row : rows_)  // what --check compares with the reference's routing
    for (std::int64_t i = 0; i < row.request->tokens; ++i) {
      const std::int64_t r = row.first + i;
      out.routed.push_back(
          {row.request->id,
           row.request->context + i,
           m_.moe_layers_before(layer),
           {std::vector<float>(logits.begin() + r * e, logits.begin() + (r + 1) * e),
            std::vector<std::int32_t>(topk_ids_.begin() + r * k, topk_ids_.begin() + (r + 1) * k)}});
    }
  std::vector<std::int64_t> counts(static_cast<std::size_t>(e), 0);
  for (auto id : topk_ids_) ++counts[static_cast<std::size_t>(id)];
  DUPLEX_ASSERT(static_cast<int>(routed_.size()) == m_.moe_layers_before(layer),
                "routers out of layer order");
  routed_.push_back(counts);
  // Layers not routed yet keep the compiler's uniform estimate until their router runs.
  const int moe_layers = m_.moe_layers_before(m_.layers);
  compiler::Routing r;
  r.kind = compiler::Routing::Kind::kCounts;
  for (int i = 0; i < moe_layers; ++i)
    r.counts.push_back(i < static_cast<int>(routed_.size())
                           ? routed_[static_cast<std::size_t>(i)]
                           : compiler::Routing{}.expert_tokens(i, t_, m_.experts, m_.top_k));
  routing_ = std::move(r);
}

// The unit of each local expert of device d in `layer` (experts with no tokens: kXpu, never run), from its
// expert group's plan `p` (plan(group)).
std::vector<Unit> StepRunner::expert_units(std::size_t d, int layer, const compiler::ExecutionPlan& p) const {
  const DeviceShard& s = dev_[d].shard;
  std::vector<Unit> unit(static_cast<std::size_t>(s.local_experts), Unit::kXpu);
  std::vector<bool> listed(unit.size(), false);
  for (std::size_t j = 0; j < p.graph.ops.size(); ++j) {
    const compiler::Op& op = p.graph.ops[j];
    if (op.kind != OpKind::kExpertFfn || op.layer != layer) continue;
    DUPLEX_ASSERT(op.expert >= s.expert0 && op.expert < s.expert0 + s.local_experts,
                  "a planned expert beyond the device's local experts");
    const auto i = static_cast<std::size_t>(op.expert - s.expert0);
    unit[i] = p.find(j)->unit;
    listed[i] = true;
  }
  for (std::size_t i = 0; i < listed.size(); ++i)
    DUPLEX_ASSERT(listed[i] == (routed_.back()[static_cast<std::size_t>(s.expert0) + i] > 0),
                  "the plan's experts differ from the routed ones");
  return unit;
}

// Every device runs its local experts (or their column shards) on the tokens routed to them, on the units its
// plan gives: xPU experts packed into one grouped launch, PIM experts one by one; and its column shard of the
// shared experts (if any) on its node's rows, on the unit of the plan's shared_experts op. Then it combines
// its experts' rows with the routing weights, and its shared-expert rows with the shared gate (1 without
// one), into its partial output (rows of other devices' experts are zero).
void StepRunner::experts(int layer, const compiler::ExecutionPlan& device0) {
  const std::int64_t h = m_.hidden, e = m_.experts, k = m_.top_k, p = t_ * k;
  Unit shared_unit = Unit::kXpu;
  for (std::size_t j = 0; j < device0.graph.ops.size(); ++j)
    if (device0.graph.ops[j].kind == OpKind::kSharedExpertFfn && device0.graph.ops[j].layer == layer)
      shared_unit = device0.find(j)->unit;
  std::vector<std::uint16_t> x_perm(static_cast<std::size_t>(p * h));
  std::vector<std::int32_t> permuted_row(static_cast<std::size_t>(p)),
      offsets32(static_cast<std::size_t>(e + 1));
  kernels::PermuteArgs permute{f16_view(normed_, {t_, h}),   i32_view(topk_ids_, {t_, k}),
                               f16_view(x_perm, {p, h}),     i32_view(permuted_row, {t_, k}),
                               i32_view(offsets32, {e + 1}), e};
  // Llama 4: each expert's input is the token scaled by its routing weight, its output combined with 1.
  std::vector<float> ones;
  if (m_.expert_input_scaled) {
    permute.topk_weights = f32_view(topk_weights_, {t_, k});
    ones.assign(topk_weights_.size(), 1.0f);
  }
  std::vector<float>& combine_weights = m_.expert_input_scaled ? ones : topk_weights_;
  xpu0_.run(OpKind::kExpertFfn, permute);
  const std::vector<std::int64_t> off(offsets32.begin(), offsets32.end());
  std::map<int, compiler::ExecutionPlan> group_plans;
  // The shared experts (each device its columns, over its node's rows), before the routed ones.
  const LayerWeights& lw0 = w0_.layers[static_cast<std::size_t>(layer)];
  std::vector<std::vector<std::uint16_t>> shared_out(
      lw0.shared_width > 0 ? dev_.size() : 0,
      std::vector<std::uint16_t>(static_cast<std::size_t>(t_ * h), 0));
  if (lw0.shared_width > 0)
    ffn_on_devices(
        layer, shared_unit, OpKind::kSharedExpertFfn, QuantizedGemm::kSharedFfn, m_.expert_dtype,
        lw0.input_scales.shared, lw0.input_scales.shared_down, lw0.shared_width * dev_[0].shard.ffn_shards,
        [&](std::size_t d) {
          LayerWeights& lw = dev_[d].weights->layers[static_cast<std::size_t>(layer)];
          return ffn_weights(lw.shared_gate_proj, lw.shared_up, lw.shared_down, nullptr, 0, lw.shared_width);
        },
        [&](std::size_t d) { return shared_out[d].data(); });
  // W8A8 experts: the xPU's experts quantize their inputs (the Logic-PIM's do not); each expert's rows of h
  // before the quantization ([its rows, every shard's columns]) are kept for the record.
  std::map<std::int64_t, QuantizedInput> expert_inputs;  // per global expert the xPU ran
  std::map<std::int64_t, std::vector<std::uint16_t>> expert_h;
  for (std::size_t d = 0; d < dev_.size(); ++d) {
    const DeviceShard& s = dev_[d].shard;
    LayerWeights& lw = dev_[d].weights->layers[static_cast<std::size_t>(layer)];
    const std::int64_t f = lw.ffn_width, local = s.local_experts;
    // The devices of one expert group (+ET: a node) share its plan: lowered once per group and layer.
    const int group = s.expert0 / s.local_experts;
    auto own = group_plans.find(group);
    if (own == group_plans.end()) own = group_plans.emplace(group, plan(group)).first;
    const std::vector<Unit> unit = expert_units(d, layer, own->second);
    // A static release's scales: the largest of the device's experts' (vLLM's fused MoE, per rank).
    float x_scale = 0, h_scale = 0;
    for (std::int64_t i = 0; i < local && !lw.input_scales.expert.empty(); ++i) {
      x_scale = std::max(x_scale, lw.input_scales.expert[static_cast<std::size_t>(s.expert0 + i)]);
      h_scale = std::max(h_scale, lw.input_scales.expert_down[static_cast<std::size_t>(s.expert0 + i)]);
    }
    const kernels::ActivationQuant expert_quant = input_quant(Unit::kXpu, m_.expert_dtype, x_scale, true),
                                   expert_quant_h = input_quant(Unit::kXpu, m_.expert_dtype, h_scale, true);
    DUPLEX_ASSERT(expert_quant.enabled() == expert_quant_h.enabled(),
                  "experts' x quantized without h, or h alone");
    std::vector<std::uint16_t> y_perm(x_perm.size(), 0), x_sub, y_sub;
    std::vector<std::int64_t> xpu_off{0};
    for (std::int64_t i = 0; i < local; ++i) {
      const auto ge = static_cast<std::size_t>(s.expert0 + i);
      const std::int64_t rows = off[ge + 1] - off[ge];
      DUPLEX_ASSERT(rows == routed_.back()[ge], "permute and router disagree on an expert's tokens");
      const bool on_xpu = unit[static_cast<std::size_t>(i)] == Unit::kXpu;
      xpu_off.push_back(xpu_off.back() + (on_xpu ? rows : 0));
      if (rows == 0) continue;
      if (on_xpu) {
        x_sub.insert(x_sub.end(), x_perm.begin() + off[ge] * h, x_perm.begin() + off[ge + 1] * h);
      } else {
        on(d, Unit::kPim)
            .ffn(OpKind::kExpertFfn, expert_weights(lw, i), x_perm.data() + off[ge] * h,
                 y_perm.data() + off[ge] * h, static_cast<std::size_t>(rows));
      }
    }
    const std::int64_t xpu_rows = xpu_off.back();
    if (xpu_rows > 0) {
      y_sub.resize(x_sub.size());
      kernels::ExpertFfnArgs a;
      const bool gated = m_.ffn_kind == compiler::FfnKind::kGated;
      a.kind = gated ? kernels::FfnKind::kGated : kernels::FfnKind::kTwoMatrix;
      a.activation = device::kernel_activation(m_.activation);
      a.x = f16_view(x_sub, {xpu_rows, h});
      a.w_in = f16_view(lw.gate, {local, f, h});
      if (gated) a.w_up = f16_view(lw.up, {local, f, h});
      a.w_down = f16_view(lw.down, {local, h, f});
      if (!lw.ffn_bias_in.empty()) a.b_in = f16_view(lw.ffn_bias_in, {local, f});
      if (!lw.expert_bias_up.empty()) a.b_up = f16_view(lw.expert_bias_up, {local, f});
      if (!lw.expert_bias_down.empty()) a.b_down = f16_view(lw.expert_bias_down, {local, h});
      a.y = f16_view(y_sub, {xpu_rows, h});
      a.expert_offsets = xpu_off;
      std::array<float, 2> scales{0.0f, 0.0f};
      std::vector<std::uint16_t> h_sub;
      a.quant_x = expert_quant;
      a.quant_h = expert_quant_h;
      if (expert_quant.enabled()) {
        a.quant_scales = kernels::Tensor::contiguous(scales.data(), kernels::DType::kF32, {2});
        h_sub.resize(static_cast<std::size_t>(xpu_rows * f));
        a.h_out = f16_view(h_sub, {xpu_rows, f});
      }
      dev_[d].xpu->run(OpKind::kExpertFfn, a);
      for (std::int64_t i = 0; expert_quant.enabled() && i < local; ++i) {
        const auto li = static_cast<std::size_t>(i);
        if (xpu_off[li + 1] == xpu_off[li]) continue;
        const std::int64_t rows = xpu_off[li + 1] - xpu_off[li], full = f * s.expert_shards;
        std::vector<std::uint16_t>& h_rows = expert_h[s.expert0 + i];
        h_rows.resize(static_cast<std::size_t>(rows * full));
        for (std::int64_t r = 0; r < rows; ++r)
          std::copy_n(h_sub.data() + (xpu_off[li] + r) * f, f, h_rows.data() + r * full + s.expert_shard * f);
        QuantizedInput& in =
            expert_inputs
                .try_emplace(
                    s.expert0 + i,
                    quantized_input(QuantizedGemm::kExpert, expert_quant, s.expert_shards,
                                    std::vector<CallQuant>(static_cast<std::size_t>(1 + s.expert_shards)),
                                    s.expert0 + static_cast<int>(i)))
                .first->second;
        if (in.scales.empty()) continue;
        in.scales[0] = scales[0];
        in.scales[static_cast<std::size_t>(1 + s.expert_shard)] = scales[1];
      }
      for (std::int64_t i = 0; i < local; ++i) {
        const auto ge = static_cast<std::size_t>(s.expert0 + i), li = static_cast<std::size_t>(i);
        std::copy(y_sub.begin() + xpu_off[li] * h, y_sub.begin() + xpu_off[li + 1] * h,
                  y_perm.begin() + off[ge] * h);
      }
    }
    const kernels::Tensor out = kernels::Tensor::contiguous(partial(d), kernels::DType::kF16, {t_, h});
    if (lw.shared_width == 0) {
      dev_[d].xpu->run(OpKind::kExpertFfn,
                       kernels::UnpermuteArgs{f16_view(y_perm, {p, h}), i32_view(permuted_row, {t_, k}),
                                              f32_view(combine_weights, {t_, k}), out});
      continue;
    }
    // Shared experts: rows [p, p + t) of the combined rows, each token's slot k, weighted by its gate.
    y_perm.resize(static_cast<std::size_t>((p + t_) * h), 0);
    std::copy(shared_out[d].begin(), shared_out[d].end(), y_perm.begin() + p * h);
    std::vector<std::int32_t> rows_ext(static_cast<std::size_t>(t_ * (k + 1)));
    std::vector<float> weights_ext(rows_ext.size());
    for (std::int64_t i = 0; i < t_; ++i) {
      for (std::int64_t j = 0; j < k; ++j) {
        rows_ext[static_cast<std::size_t>(i * (k + 1) + j)] =
            permuted_row[static_cast<std::size_t>(i * k + j)];
        weights_ext[static_cast<std::size_t>(i * (k + 1) + j)] =
            combine_weights[static_cast<std::size_t>(i * k + j)];
      }
      rows_ext[static_cast<std::size_t>(i * (k + 1) + k)] = static_cast<std::int32_t>(p + i);
      weights_ext[static_cast<std::size_t>(i * (k + 1) + k)] = shared_gate_[static_cast<std::size_t>(i)];
    }
    dev_[d].xpu->run(OpKind::kExpertFfn,
                     kernels::UnpermuteArgs{f16_view(y_perm, {p + t_, h}), i32_view(rows_ext, {t_, k + 1}),
                                            f32_view(weights_ext, {t_, k + 1}), out});
  }
  if (expert_inputs.empty()) return;
  // Each routed row's token and its inputs: x_perm's row, and the expert's row of h.
  std::vector<std::int64_t> token_of(static_cast<std::size_t>(p));
  for (std::int64_t i = 0; i < p; ++i)
    token_of[static_cast<std::size_t>(permuted_row[static_cast<std::size_t>(i)])] = i / k;
  for (const auto& [expert, input] : expert_inputs) {
    const auto ge = static_cast<std::size_t>(expert);
    const std::vector<std::uint16_t>& h_rows = expert_h.at(expert);
    const auto full = static_cast<std::int64_t>(h_rows.size()) / (off[ge + 1] - off[ge]);
    for (std::int64_t r = off[ge]; r < off[ge + 1]; ++r) {
      QuantizedInput in = input;
      in.inputs.emplace_back(x_perm.begin() + r * h, x_perm.begin() + (r + 1) * h);
      in.inputs.emplace_back(h_rows.begin() + (r - off[ge]) * full,
                             h_rows.begin() + (r - off[ge] + 1) * full);
      record_row(layer, token_of[static_cast<std::size_t>(r)], std::move(in));
    }
  }
}

void StepRunner::dense_ffn(int layer, Unit unit) {
  const std::int64_t h = m_.hidden;
  for (std::size_t d = 0; d < dev_.size(); ++d)
    if (!active(d)) std::fill_n(partial(d), t_ * h, std::uint16_t{0});
  const LayerWeights& lw0 = w0_.layers[static_cast<std::size_t>(layer)];
  ffn_on_devices(
      layer, unit, OpKind::kDenseFfn, QuantizedGemm::kFfn, m_.dense_ffn_matrix_dtype(layer),
      lw0.input_scales.ffn, lw0.input_scales.down, lw0.ffn_width * dev_[0].shard.ffn_shards,
      [&](std::size_t d) {
        LayerWeights& lw = dev_[d].weights->layers[static_cast<std::size_t>(layer)];
        return ffn_weights(lw.gate, lw.up, lw.down, lw.ffn_bias_in.empty() ? nullptr : lw.ffn_bias_in.data(),
                           0, lw.ffn_width);
      },
      [&](std::size_t d) { return partial(d); });
  if (m_.mlp_bias) out_bias_ = lw0.ffn_bias_out.data();
}

template <class Out>
void StepRunner::ffn_on_devices(int layer, Unit unit, OpKind kind, QuantizedGemm gemm, compiler::DType format,
                                float x_scale, float h_scale, std::int64_t width,
                                const std::function<FfnWeights(std::size_t)>& weights_of, Out&& out) {
  const std::int64_t h = m_.hidden;
  const bool expert = gemm != QuantizedGemm::kFfn;  // the shared experts
  const kernels::ActivationQuant quant = input_quant(unit, format, x_scale, expert),
                                 quant_h = input_quant(unit, format, h_scale, expert);
  DUPLEX_ASSERT(quant.enabled() == quant_h.enabled(), "an FFN's x quantized without its h, or h without x");
  std::vector<std::array<CallQuant, 2>> calls(dev_.size());
  std::vector<std::uint16_t> h_full(quant.enabled() ? static_cast<std::size_t>(t_ * width) : 0);
  for (std::size_t d = 0; d < dev_.size(); ++d) {
    if (!active(d)) continue;
    const FfnWeights w = weights_of(d);
    const auto f = static_cast<std::int64_t>(w.f);
    const std::vector<std::int64_t>& rows_of_node = node_rows_[static_cast<std::size_t>(dev_[d].shard.node)];
    on_node_rows(
        d, normed_.data(), h, out(d), h, [&](const std::uint16_t* x, std::uint16_t* y, std::int64_t rows) {
          std::vector<std::uint16_t> h_rows(quant.enabled() ? static_cast<std::size_t>(rows * f) : 0);
          node_ffn(d, unit, kind, w, x, y, rows, quant, quant_h, calls[d], h_rows.data());
          // h's rows (the node's, in order) into its slice of the whole rows.
          for (std::int64_t i = 0; quant.enabled() && i < rows; ++i)
            std::copy_n(h_rows.data() + i * f, f,
                        h_full.data() + rows_of_node[static_cast<std::size_t>(i)] * width +
                            dev_[d].shard.ffn_shard * f);
        });
  }
  record_ffn(layer, gemm, quant, calls, h_full, width);
}

void StepRunner::node_ffn(std::size_t d, Unit unit, OpKind kind, const FfnWeights& w, const std::uint16_t* x,
                          std::uint16_t* y, std::int64_t rows, const kernels::ActivationQuant& quant_x,
                          const kernels::ActivationQuant& quant_h, std::array<CallQuant, 2>& calls,
                          std::uint16_t* h_out) {
  if (quant_x.enabled()) {
    std::array<float, 2> scales{0.0f, 0.0f};
    const bool decomposes = quant_x.decomposes() || quant_h.decomposes();
    const auto hi = static_cast<std::int64_t>(w.h), fi = static_cast<std::int64_t>(w.f);
    std::vector<std::int32_t> marks(decomposes ? static_cast<std::size_t>(hi + fi) : 0, 0);
    dev_[d].xpu->quantized_ffn(kind, w, x, y, static_cast<std::size_t>(rows), quant_x, quant_h, scales.data(),
                               h_out, decomposes ? marks.data() : nullptr);
    calls[0].scale = scales[0];
    calls[1].scale = scales[1];
    if (quant_x.decomposes()) {
      calls[0].outliers = marked_columns(marks.data(), hi);
      outlier_columns_.add(calls[0].outliers);
    }
    if (quant_h.decomposes()) {
      calls[1].outliers = marked_columns(marks.data() + hi, fi);
      outlier_columns_.add(calls[1].outliers);
    }
  } else {
    on(d, unit).ffn(kind, w, x, y, static_cast<std::size_t>(rows));
  }
}

void StepRunner::record_ffn(int layer, QuantizedGemm gemm, const kernels::ActivationQuant& quant,
                            const std::vector<std::array<CallQuant, 2>>& device_calls,
                            const std::vector<std::uint16_t>& h_full, std::int64_t width) {
  record_per_node(layer, gemm, quant, true,
                  [&](std::size_t d) {
                    const DeviceShard& s = dev_[d].shard;
                    return SliceQuant{s.ffn_shards, s.ffn_shard, &device_calls[d][0], &device_calls[d][1]};
                  },
                  {{normed_.data(), m_.hidden}, {h_full.data(), width}});
}

// Local expert `expert` of a MoE layer's weights, with its biases where it has them (gpt-oss).
FfnWeights StepRunner::expert_weights(const LayerWeights& lw, std::int64_t expert) const {
  const std::int64_t f = lw.ffn_width, h = m_.hidden;
  FfnWeights w =
      ffn_weights(lw.gate, lw.up, lw.down,
                  lw.ffn_bias_in.empty() ? nullptr : lw.ffn_bias_in.data() + expert * f, expert, f);
  if (!lw.expert_bias_up.empty()) w.b_up = lw.expert_bias_up.data() + expert * f;
  if (!lw.expert_bias_down.empty()) w.b_down = lw.expert_bias_down.data() + expert * h;
  return w;
}

// Expert `expert` of stacked FFN matrices [E,F,H] / [E,H,F] `width` wide (no up matrix: two-matrix).
FfnWeights StepRunner::ffn_weights(const std::vector<std::uint16_t>& in, const std::vector<std::uint16_t>& up,
                                   const std::vector<std::uint16_t>& down, const std::uint16_t* bias_in,
                                   std::int64_t expert, std::int64_t width) const {
  const std::int64_t h = m_.hidden;
  FfnWeights w;
  w.w_in = in.data() + expert * width * h;
  w.w_up = up.empty() ? nullptr : up.data() + expert * width * h;
  w.w_down = down.data() + expert * h * width;
  w.b_in = bias_in;
  w.f = static_cast<std::size_t>(width);
  w.h = static_cast<std::size_t>(h);
  w.activation = m_.activation;
  return w;
}

// Each request's logit rows (the final-norm outputs of its last logit_rows tokens: its last token, or a
// verification's every row); each device of the request's node computes the logits of its vocabulary rows,
// gathered in vocabulary order; greedy: the first largest logit.
void StepRunner::lm_head(StepOutput& out) {
  const std::int64_t h = m_.hidden, vocab = m_.vocab;
  std::vector<const Row*> owner;  // per logit row: its request's row
  std::vector<std::uint16_t> last;
  for (const Row& row : rows_)
    for (std::int64_t src = row.first + row.request->tokens - row.request->logit_rows;
         src < row.first + row.request->tokens; ++src) {
      owner.push_back(&row);
      last.insert(last.end(), normed_.begin() + src * h, normed_.begin() + (src + 1) * h);
    }
  const auto n = static_cast<std::int64_t>(owner.size());
  std::vector<float> logits(static_cast<std::size_t>(n * vocab));
  std::vector<std::int32_t> next(static_cast<std::size_t>(n));
  for (std::size_t d = 0; d < dev_.size(); ++d) {
    if (!active(d)) continue;
    const DeviceShard& s = dev_[d].shard;
    std::vector<std::int64_t> mine;  // the requests of this device's node
    std::vector<std::uint16_t> x;
    for (std::int64_t r = 0; r < n; ++r)
      if (serves(d, *owner[static_cast<std::size_t>(r)]->request)) {
        mine.push_back(r);
        x.insert(x.end(), last.begin() + r * h, last.begin() + (r + 1) * h);
      }
    const auto k = static_cast<std::int64_t>(mine.size());
    std::vector<std::int32_t> local_next(static_cast<std::size_t>(k));
    std::vector<float> local(static_cast<std::size_t>(k * s.vocab));
    std::vector<std::uint16_t>& bias = dev_[d].weights->lm_head_bias;  // this device's vocabulary slice
    kernels::LmHeadArgs args{f16_view(x, {k, h}), f16_view(dev_[d].weights->lm_head, {s.vocab, h}),
                             i32_view(local_next, {k}), f32_view(local, {k, s.vocab}),
                             bias.empty() ? kernels::Tensor{} : f16_view(bias, {s.vocab})};
    args.softcap = static_cast<float>(m_.final_softcap);  // Gemma 2's logit soft-cap
    dev_[d].xpu->run(OpKind::kLmHead, args);
    for (std::int64_t i = 0; i < k; ++i)
      std::copy(local.begin() + i * s.vocab, local.begin() + (i + 1) * s.vocab,
                logits.begin() + mine[static_cast<std::size_t>(i)] * vocab + s.vocab0);
    if (dev_.size() == 1) next = local_next;
  }
  out.logits.clear();
  for (std::int64_t r = 0; r < n; ++r) {
    out.logits.emplace_back(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
    if (dev_.size() > 1) {
      const auto& row = out.logits.back();
      next[static_cast<std::size_t>(r)] =
          static_cast<std::int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
    }
  }
  out.next_ids = next;
}

}  // namespace duplex::runtime::functional
