#include "duplex/compiler/report.hpp"

#include <algorithm>
#include <fmt/format.h>
#include <map>
#include <vector>

namespace duplex::compiler {
namespace {

std::string us(Time t) { return fmt::format("{:.2f}", to_us(t)); }
std::string count(double v) { return v == 0 ? "0" : format_count(v); }

std::string graph_line(const Op& o) {
  return fmt::format("{:<22} {:<13} {:<38} flops={:<8} w={:<8} kv={:<8} act={:<8} op/b={:.2f}", o.name,
                     op_kind_name(o.kind), o.shape(), count(o.flops), count(o.bytes_weights), count(o.bytes_kv),
                     count(o.bytes_act), o.op_b());
}

// Overlapped micro-batches (plan.starts): each op's start on its lane from the step's start, in us; empty for
// a plan whose stages run back to back.
std::vector<double> op_starts_us(const ExecutionPlan& plan) {
  std::vector<double> start_us;
  if (plan.starts.empty()) return start_us;
  for (Time t : plan.op_starts()) start_us.push_back(to_us(t));
  return start_us;
}

}  // namespace

std::string dump_graph(const Graph& g) {
  std::string s = fmt::format("graph {} devices={} ops={}\n", g.model, g.devices, g.ops.size());
  for (const auto& o : g.ops) s += graph_line(o) + "\n";
  s += fmt::format("total flops={} bytes={}\n", count(g.total_flops()), count(g.total_bytes()));
  return s;
}

std::string dump_plan(const ExecutionPlan& plan) {
  // Overlapped micro-batches: a last column with each op's start on its lane.
  const std::vector<double> start_us = op_starts_us(plan);
  std::string s = fmt::format("{:<22} {:<13} {:<38} {:>8} {:>8} {:>9} {:>5} {:>10} {:>10}", "op", "kind", "shape",
                              "FLOPs", "bytes", "Op/B", "unit", "xpu_us", "pim_us");
  s += start_us.empty() ? "\n" : fmt::format(" {:>10}\n", "start_us");
  for (std::size_t i = 0; i < plan.graph.ops.size(); ++i) {
    const Op& o = plan.graph.ops[i];
    const PlannedOp* p = plan.find(i);
    s += fmt::format("{:<22} {:<13} {:<38} {:>8} {:>8} {:>9.2f} {:>5} {:>10} {:>10}", o.name, op_kind_name(o.kind),
                     o.shape(), count(o.flops), count(o.bytes()), o.op_b(), unit_name(p->unit), us(p->xpu_time),
                     p->pim_time ? us(*p->pim_time) : "-");
    s += start_us.empty() ? "\n" : fmt::format(" {:>10.2f}\n", start_us[i]);
  }
  s += fmt::format("stages={} coprocessed={} total_us={} xpu_busy_us={} pim_busy_us={} link_us={}\n",
                   plan.stages.size(),
                   std::count_if(plan.stages.begin(), plan.stages.end(), [](const PlanStage& st) { return st.coprocessed; }),
                   us(plan.total()), us(plan.busy(Unit::kXpu)), us(plan.busy(Unit::kPim)), us(plan.busy(Unit::kLink)));
  return s;
}

std::string summarize_plan(const ExecutionPlan& plan) {
  struct Row {
    int ops = 0, on_xpu = 0, on_pim = 0, on_link = 0;
    double flops = 0, bytes = 0, min_opb = 1e300, max_opb = 0;
    Time time;
  };
  std::map<std::string, Row> rows;
  for (const auto& st : plan.stages)
    for (const auto& p : st.ops) {
      const Op& o = plan.graph.ops[p.op];
      Row& r = rows[std::string(op_kind_name(o.kind))];
      ++r.ops;
      (p.unit == Unit::kXpu ? r.on_xpu : p.unit == Unit::kPim ? r.on_pim : r.on_link)++;
      r.flops += o.flops;
      r.bytes += o.bytes();
      r.min_opb = std::min(r.min_opb, o.op_b());
      r.max_opb = std::max(r.max_opb, o.op_b());
      r.time += p.time;
    }
  std::string s = fmt::format("{:<14} {:>5} {:>9} {:>9} {:>17} {:>5} {:>5} {:>5} {:>10}\n", "kind", "ops", "FLOPs",
                              "bytes", "Op/B range", "xpu", "pim", "link", "time_us");
  for (const auto& [kind, r] : rows)
    s += fmt::format("{:<14} {:>5} {:>9} {:>9} {:>8.2f}-{:<8.2f} {:>5} {:>5} {:>5} {:>10}\n", kind, r.ops, count(r.flops),
                     count(r.bytes), r.min_opb, r.max_opb, r.on_xpu, r.on_pim, r.on_link, us(r.time));
  return s;
}

nlohmann::json plan_to_json(const ExecutionPlan& plan, const ModelSpec& model, const SystemSpec& system,
                            const ParallelLayout& layout) {
  nlohmann::json j;
  j["model"] = {{"name", model.name},
                {"params", model.params()},
                {"active_params", model.active_params()},
                {"layers", model.layers},
                {"experts", model.experts},
                {"top_k", model.top_k},
                {"sliding_window", model.sliding_window},
                {"full_attention_layers", model.full_attention_layers},
                {"qkv_bias", model.qkv_bias},
                {"o_bias", model.o_bias},
                {"qk_norm", model.qk_norm == QkNorm::kPerHead ? "head"
                            : model.qk_norm == QkNorm::kWhole ? "whole"
                            : model.qk_norm == QkNorm::kL2    ? "l2"
                                                              : "none"},
                {"attention_chunk", model.attention_chunk},
                {"nope_layers", model.nope_layers},
                {"attn_temperature_floor", model.attn_temperature_floor},
                {"attn_temperature_scale", model.attn_temperature_scale},
                {"expert_input_scaled", model.expert_input_scaled},
                {"shared_experts", model.shared_experts},
                {"shared_expert_gate", model.shared_expert_gate},
                {"router_renormalize", model.router_renormalize},
                {"router", router_name(model.router)},
                {"router_groups", model.router_groups},
                {"router_topk_groups", model.router_topk_groups},
                {"routed_scaling", model.routed_scaling},
                {"attention", model.attention == AttentionKind::kMla ? "mla" : "gqa"},
                {"rotary_dim", model.rotary_dim},
                {"lm_head_bias", model.lm_head_bias},
                {"ffn_kind", model.ffn_kind == FfnKind::kGated ? "gated" : "two_matrix"},
                {"activation", activation_name(model.activation)},
                {"norm", model.norm == NormKind::kLayerNorm ? "layernorm" : "rmsnorm"},
                {"norm_bias", model.norm == NormKind::kLayerNorm && model.norm_bias},
                {"clip_qkv", model.clip_qkv},
                {"norm_weight_offset", model.norm_weight_offset},
                {"scale_embedding", model.scale_embedding},
                {"post_norms", model.post_norms},
                {"attn_softcap", model.attn_softcap},
                {"final_softcap", model.final_softcap},
                {"query_pre_attn_scalar", model.query_pre_attn_scalar},
                {"attn_sinks", model.attn_sinks},
                {"router_bias", model.router_bias},
                {"mlp_bias", model.mlp_bias},
                {"dtype", dtype_name(model.dtype)},
                {"expert_dtype", dtype_name(model.expert_dtype)},
                {"linear_dtype", dtype_name(model.linear_dtype)},
                {"quant_group", model.quant_group},
                {"unquantized_attention", model.unquantized_attention},
                {"unquantized_ffn_layers", model.unquantized_ffn_layers},
                {"activation_scale_ub", model.activation_scale_ub},
                {"activation_scheme", model.static_input_scales ? "static" : "dynamic"},
                {"llm_int8_threshold", model.llm_int8_threshold},
                {"llm_int8_outlier_columns", model.llm_int8_outlier_columns},
                {"kv_dtype", dtype_name(model.kv_dtype)},
                {"mtp_layers", model.mtp_layers},
                {"draft_head", model.draft_head},
                {"draft_vocab", model.draft_vocab},
                {"draft_states", model.draft_states},
                {"weight_naming", weight_naming_name(model.weight_naming)}};
  j["system"] = {{"name", system.name}, {"devices", layout.devices}, {"layout", layout.describe()}};
  const std::vector<double> start_us = op_starts_us(plan);
  nlohmann::json ops = nlohmann::json::array();
  for (std::size_t i = 0; i < plan.graph.ops.size(); ++i) {
    const Op& o = plan.graph.ops[i];
    const PlannedOp* p = plan.find(i);
    nlohmann::json e = {{"name", o.name},
                        {"kind", op_kind_name(o.kind)},
                        {"layer", o.layer},
                        {"shape", o.shape()},
                        {"flops", o.flops},
                        {"bytes", o.bytes()},
                        {"bytes_weights", o.bytes_weights},
                        {"bytes_kv", o.bytes_kv},
                        {"bytes_act", o.bytes_act},
                        {"op_b", o.op_b()},
                        {"dtype", dtype_name(o.dtype)},
                        {"unit", unit_name(p->unit)},
                        {"time_us", to_us(p->time)},
                        {"xpu_time_us", to_us(p->xpu_time)}};
    e["pim_time_us"] = p->pim_time ? nlohmann::json(to_us(*p->pim_time)) : nlohmann::json(nullptr);
    if (o.expert >= 0) e["expert"] = o.expert;
    if (!start_us.empty()) e["start_us"] = start_us[i];
    ops.push_back(std::move(e));
  }
  j["ops"] = std::move(ops);
  j["totals"] = {{"flops", plan.graph.total_flops()},
                 {"bytes", plan.graph.total_bytes()},
                 {"step_time_us", to_us(plan.total())},
                 {"xpu_busy_us", to_us(plan.busy(Unit::kXpu))},
                 {"pim_busy_us", to_us(plan.busy(Unit::kPim))},
                 {"link_us", to_us(plan.busy(Unit::kLink))},
                 {"stages", plan.stages.size()},
                 {"micro_batches", plan.starts.empty() ? 1 : 2}};
  return j;
}

}  // namespace duplex::compiler
