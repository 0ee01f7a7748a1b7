#pragma once
// Private to the functional executor: runs the ops of one scheduled step on tensors, on every device of the
// layout, each op on the unit its execution plan gives it (see functional_executor.hpp for the contract).
//
// The plan is device 0's (compiler::lower's representative device, as the serving simulator times it); the
// other devices run their shard of the same ops on the same units (TP devices are symmetric), except the
// routed experts, whose split over xPU and PIM each expert group plans for the experts it holds. Ops every
// device computes identically (embedding, norms, residuals, the router: replicated) run once, on device 0's
// xPU. Ops sharded over devices (QKV, attention, O projection, FFN / experts, LM head) run per device; their
// partial outputs [devices, tokens, hidden] are combined where the plan all-reduces, by the kernels' sum of
// partials.
//
// Several nodes (data-parallel replicas of the non-expert layers, experts parallel over every node's
// devices; under attention data parallelism every device is such a "node", of tp 1): each request is served
// by one node, whose devices alone hold its K/V and compute its attention, dense FFN and logits on its node's
// token rows only (a device's partial output is zero on other nodes' rows, so the one sum of partials reduces
// each row over its own node; a node without requests in the step skips them); every device computes its
// experts for the tokens of every node routed to them (the all-to-all's effect). The plan is device 0's, as
// the timing model lowers it for the busiest replica.
#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <vector>

#include "device_shard.hpp"
#include "device_weights.hpp"
#include "duplex/compiler/batch.hpp"
#include "duplex/compiler/cost_model.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/compiler/placement.hpp"
#include "duplex/runtime/device/xpu_device.hpp"
#include "duplex/runtime/functional/activation_quant.hpp"
#include "duplex/runtime/functional/paged_kv_cache.hpp"
#include "duplex/runtime/functional/routing_record.hpp"

namespace duplex::runtime::functional {

struct StepRequest {
  std::int64_t id = 0;
  std::int64_t context = 0;                             // tokens already in its KV cache
  std::int64_t tokens = 0;                              // tokens computed this step
  const std::vector<std::int32_t>* sequence = nullptr;  // prompt + generated so far (>= context + tokens)
  bool prefill = false;            // a prompt (or recompute) chunk: its K/V lives in the prefill space, if any
  bool completes_prefill = false;  // the step computes its last prompt token (then its K/V migrates)
  std::int64_t cached = 0;  // prefill: of `context`, the tokens the prefix cache gave it (never migrate)
  // Its last rows whose logits the step returns: 1, or a speculative verification's every row (the drafts and
  // the token before them); a decoding request of several tokens attends as decode attention (the lowering's
  // RequestGroup::verify).
  std::int64_t logit_rows = 1;
  int node = 0;                    // the node (data-parallel replica) that serves it and holds its K/V
  // Its prompt's length: RoPE whose frequencies depend on the sequence length rotates by it
  // (dynamic_rope_length).
  std::int64_t prompt_tokens = 0;
};

// One request's in-device K/V migration in a step: every layer, all devices' KV heads.
struct InDeviceMigration {
  std::int64_t id = 0;
  std::int64_t tokens =
      0;  // prompt tokens moved (its context and tokens, less those the prefix cache gave it)
  double bytes = 0;         // K + V bytes copied, summed over layers and devices (each read once, written once)
};

struct StepOutput {
  // The step's final plan (routing of every MoE layer known), each MoE layer's experts those of
  // its busiest expert group (the step's time; LowerOptions::expert_group).
  compiler::ExecutionPlan plan;
  compiler::Routing routing;                // the routing the router computed, every MoE layer
  std::vector<compiler::Unit> executed_on;  // per op of plan.graph: the unit that ran it on device 0
  // Per logit row (each request's last logit_rows rows, requests in order): the greedy next token and the
  // logits [vocab].
  std::vector<std::int32_t> next_ids;
  std::vector<std::vector<float>> logits;
  std::vector<InDeviceMigration> migrations;  // requests whose K/V moved prefill space -> KV spaces
  // Every token row's routing in every MoE layer (the router's logits and experts): request id, position in
  // its sequence, MoE layer index.
  struct Routed {
    std::int64_t id = 0, position = 0;
    int moe_layer = 0;
    RoutedToken token;
  };
  std::vector<Routed> routed;
  // W8A8 activation quantization: each token row's GEMM inputs the xPU quantized (activation_quant.hpp):
  // request id, position in its sequence, model layer.
  struct Quantized {
    std::int64_t id = 0, position = 0;
    int layer = 0;
    QuantizedInput input;
  };
  std::vector<Quantized> quantized;
  OutlierColumns outlier_columns;  // LLM.int8(): the step's decomposing quantize calls, every device
};

// One device as the step runner drives it; everything outlives the runner.
struct DeviceContext {
  DeviceShard shard;
  device::XpuDevice* xpu = nullptr;
  device::IDevice* pim = nullptr;  // null on a system without PIM
  DeviceWeights* weights = nullptr;
  // This device's KV heads. With a prefill space (LowerOptions::kv_migration, and then only), its pool ends
  // with the prefill space's blocks: prefill-phase requests write their K/V there, and the plan's
  // kv_migration ops move a completed prompt's blocks to the KV spaces (PagedKvCache::plan_migration).
  PagedKvCache* kv = nullptr;
};

// A row-parallel input's slice (cols [c0, c0 + width) of a [t, full_width] matrix): the token rows `rows` of
// `slice` [t, width] copied there.
void copy_slice(const std::uint16_t* slice, std::int64_t width, std::int64_t c0, std::uint16_t* full,
                std::int64_t full_width, const std::vector<std::int64_t>& rows);

class StepRunner {
 public:
  // quantize_activations: the xPU quantizes the inputs of its W8A8 GEMMs as the serving kernels do
  // (activation_quant.hpp); false: FP16 inputs everywhere.
  StepRunner(const compiler::ModelSpec& model, const ModelNumerics& numerics,
             const compiler::ParallelLayout& layout, compiler::LowerOptions lowering,
             const compiler::CostModel& cost, std::vector<DeviceContext> devices, bool quantize_activations);
  // The KV of every request must already be reserved for context + tokens slots on every device of its node
  // (a prefill request in the prefill space where the devices have one). `batch` is the step as the timing
  // model lowers it (StepExecutor::batch_of): the plan is lowered from it, so executed and timed plans agree.
  // `cost` (optional) places this step's plan in place of the runner's cost model (a micro-batch under
  // two-batch overlap, whose computation sees fewer SMs: compiler::overlapped_system).
  StepOutput run(const std::vector<StepRequest>& requests, const compiler::BatchState& batch,
                 const compiler::CostModel* cost = nullptr);

 private:
  // A quantized GEMM input of the step before its quantization: `width` FP16 values per token row of the
  // step (the rows of the nodes that computed it).
  struct InputRows {
    const std::uint16_t* data = nullptr;
    std::int64_t width = 0;
  };
  struct Row {  // one request's rows in the step's token matrix
    std::int64_t first = 0;
    const StepRequest* request = nullptr;
  };
  struct Lane {  // one device's activations of its heads [t, heads, attn_dim_] (MLA: no v)
    std::vector<std::uint16_t> q, k, v, attn;
  };

  compiler::ExecutionPlan plan(int expert_group = -1) const;
  bool serves(std::size_t d, const StepRequest& r) const { return dev_[d].shard.node == r.node; }
  // Device d's node has requests in the step (else its non-expert ops are skipped, their partials zero).
  bool active(std::size_t d) const { return !node_rows_[static_cast<std::size_t>(dev_[d].shard.node)].empty(); }
  // Runs compute(x, y, rows) on the token rows of device d's node: x holds those rows of `in` (in_cols wide), y
  // takes their outputs (out_cols wide), which land in `out` at the same rows, the other rows zero. With one
  // node, `in` and `out` themselves (every row is the node's).
  template <class Compute>
  void on_node_rows(std::size_t d, const std::uint16_t* in, std::int64_t in_cols, std::uint16_t* out,
                    std::int64_t out_cols, Compute&& compute);
  // y [t, n] = w [n, k] . x [t, k] on device d's `unit` as an op of `kind`, over its node's rows (the others'
  // zero). With `quant` enabled (an xPU op), the node's rows of x are quantized first (quantize); returns
  // what the quantization used beyond each row's values (its per-tensor or static scale, LLM.int8()'s outlier
  // columns).
  CallQuant node_linear(std::size_t d, compiler::Unit unit, compiler::OpKind kind, const std::uint16_t* w,
                        const std::uint16_t* x, std::int64_t k, std::uint16_t* y, std::int64_t n,
                        const kernels::ActivationQuant& quant = {});
  // W8A8 activation quantization (activation_quant.hpp). The quantization of a GEMM input whose matrix is in
  // `format`, the GEMM on `unit`: none off the xPU, for another format or with quantization off.
  // static_scale: a static release's scale of the input (InputScales). expert: an MoE layer's experts' input
  // (w8a8_expert_input_quant).
  kernels::ActivationQuant input_quant(compiler::Unit unit, compiler::DType format, float static_scale,
                                       bool expert = false) const;
  // Fake-quantizes x [rows, cols] in place on device d's xPU, as part of an op of `kind`; returns what it
  // used beyond each row's values.
  CallQuant quantize(std::size_t d, compiler::OpKind kind, const kernels::ActivationQuant& quant,
                     std::uint16_t* x, std::int64_t rows, std::int64_t cols);
  // An FFN (dense or shared) over device d's rows x [rows, hidden] on `unit`, quantized by `quant` (both x
  // and h) when enabled; `calls` receives what x's and h's quantizations used. With quant enabled, h_out
  // [rows, f] receives h before its quantization.
  void node_ffn(std::size_t d, compiler::Unit unit, compiler::OpKind kind, const FfnWeights& w,
                const std::uint16_t* x, std::uint16_t* y, std::int64_t rows,
                const kernels::ActivationQuant& quant_x, const kernels::ActivationQuant& quant_h,
                std::array<CallQuant, 2>& calls, std::uint16_t* h_out);
  // An FFN (dense or shared, `width` wide) of layer `layer` over every active device's node rows, on `unit`;
  // its partial outputs to out(d) (device d's [t, hidden]). With W8A8 quantization the inputs are recorded:
  // x, and h assembled from the devices' slices.
  template <class Out>
  // x_scale, h_scale: a static release's scales of its input and h (InputScales).
  void ffn_on_devices(int layer, compiler::Unit unit, compiler::OpKind kind, QuantizedGemm gemm,
                      compiler::DType format, float x_scale, float h_scale, std::int64_t width,
                      const std::function<FfnWeights(std::size_t)>& weights_of, Out&& out);
  // Records an FFN's quantized inputs once per node: x's call, then h's per tensor-parallel slice
  // (device_calls[d]: device d's x and h calls); h_full [t, width]: h before its quantization.
  void record_ffn(int layer, QuantizedGemm gemm, const kernels::ActivationQuant& quant,
                  const std::vector<std::array<CallQuant, 2>>& device_calls,
                  const std::vector<std::uint16_t>& h_full, std::int64_t width);
  // Records a row-parallel input over the query heads (the O projection's), each device's slice quantized
  // by its call device_calls[d], once per node.
  void record_row_parallel(int layer, QuantizedGemm gemm, const kernels::ActivationQuant& quant,
                           const std::vector<CallQuant>& device_calls, InputRows input);
  // A device's slice of a row-parallel input: `slices` in all, its index, its call, and the call of an input
  // before the slices (an FFN's x).
  struct SliceQuant {
    int slices = 1, slice = 0;
    const CallQuant* lead = nullptr;
    const CallQuant* call = nullptr;
  };
  // One record per node of a quantized `gemm` of `layer` whose last input is in slices over the node's
  // devices (slice_of(d): device d's), the calls in order (with `lead`, the lead call first), for every
  // token row of the node, each with its rows of `inputs`.
  void record_per_node(int layer, QuantizedGemm gemm, const kernels::ActivationQuant& quant, bool lead,
                       const std::function<SliceQuant(std::size_t)>& slice_of,
                       std::initializer_list<InputRows> inputs);
  // Records `input` of `layer` for the token rows `rows` of the step, each with its rows of `inputs`.
  void record_quantized(int layer, const std::vector<std::int64_t>& rows, const QuantizedInput& input,
                        std::initializer_list<InputRows> inputs);
  // Records `input` (its inputs filled) of `layer` for the step's token row `row`.
  void record_row(int layer, std::int64_t row, QuantizedInput input);
  // The QuantizedInput of a GEMM input of `slices` slices quantized by `quant` in `calls` (their per-tensor
  // or static scales kept, none for per-token and group scales; LLM.int8()'s outlier columns).
  static QuantizedInput quantized_input(QuantizedGemm gemm, const kernels::ActivationQuant& quant, int slices,
                                        const std::vector<CallQuant>& calls, int expert = -1);
  device::IDevice& on(std::size_t d, compiler::Unit unit) const;
  std::uint16_t* partial(std::size_t d);
  void execute(const compiler::Op& op, compiler::Unit unit);
  void embedding();
  // Added to every norm's gain (ModelSpec::norm_weight_offset: Gemma's 1).
  float norm_offset() const { return static_cast<float>(m_.norm_weight_offset); }
  void post_norm(int layer, bool after_attention);
  void add_out_bias();
  void run_norm(std::vector<std::uint16_t>& x, std::vector<std::uint16_t>& y,
                std::vector<std::uint16_t>& gain, std::vector<std::uint16_t>& bias);
  void norm(int layer);
  void qkv(int layer, compiler::Unit unit);
  bool mla() const { return m_.attention == compiler::AttentionKind::kMla; }
  // MLA (step_runner_mla.cpp): the plan's qkv_proj op computes each device's absorbed queries [q_pe,
  // W_UK^T q_nope] per local head and the token's latent [k_pe, kv_a_layernorm(c)]; its o_proj op takes each
  // head's attention-weighted latent through W_UV, then o_proj.
  void mla_qkv(int layer, compiler::Unit unit);
  void mla_o_proj(int layer, compiler::Unit unit);
  // The xPU's elementwise pass over device d's projections (the plan's rope op): q / k / v biases, q / k
  // norms, rotation.
  void rope(int layer);
  void whole_qk_norm(int layer);
  // Llama 4's L2 norm of each q and k head (an RMSNorm with unit gain), after the rotation.
  void l2_qk_norm();
  // Llama 4's temperature tuning of a NoPE layer's queries (the plan's attn_temperature op).
  void attn_temperature(int layer);
  // RoPE whose frequencies depend on the sequence length (dynamic NTK, LongRoPE): each token rotated with the
  // frequencies and factor of its dynamic_rope_length, one kernel launch per token row and device.
  void rope_by_length();
  // RoPE with the frequencies of the whole run (or, Gemma 3, of the layer's local base).
  void rope_rotate(int layer);
  // x[rows, cols] += bias[cols] on device d's xPU (the bias broadcast over the rows).
  void add_bias(std::size_t d, std::vector<std::uint16_t>& x, std::int64_t rows, const std::uint16_t* bias,
                std::int64_t cols);
  void residual();
  void write_kv(int layer);
  void migrate_kv(int layer, StepOutput& out);
  void attention(int layer, bool decode_op, compiler::Unit unit);
  void paged_attention(std::size_t d, int layer, compiler::Unit unit, PagedKvCache& kv,
                       const std::vector<std::pair<const Row*, std::int64_t>>& rows);
  void prefill_attention(std::size_t d, int layer, const std::vector<const Row*>& prompts);
  void all_reduce();
  // Data-parallel ranks of one device each (tp 1: attention data parallelism, or nodes of one device; no
  // all-reduce in the plan): the devices' partial outputs, each zero
  // outside its own requests' rows (its experts' outputs: on every row routed to them), summed into the
  // block's output before its post-norm or residual, once per block: the emulation's assembly of the rows the
  // plan's all-to-all combine returns, not a collective of its own.
  void gather_partials();
  bool partials_gathered_ = false;
  void o_proj(int layer, compiler::Unit unit);
  void route(int layer, StepOutput& out);
  std::vector<compiler::Unit> expert_units(std::size_t d, int layer, const compiler::ExecutionPlan& p) const;
  void experts(int layer, const compiler::ExecutionPlan& device0);
  void dense_ffn(int layer, compiler::Unit unit);
  FfnWeights expert_weights(const LayerWeights& lw, std::int64_t expert) const;
  FfnWeights ffn_weights(const std::vector<std::uint16_t>& in, const std::vector<std::uint16_t>& up,
                         const std::vector<std::uint16_t>& down, const std::uint16_t* bias_in,
                         std::int64_t expert, std::int64_t width) const;
  void lm_head(StepOutput& out);

  const compiler::ModelSpec& m_;
  const ModelNumerics& numerics_;
  // The RoPE frequencies with a scaled RoPE (rope_inv_freq); empty: the kernel's theta^(-2i/d) (or, where
  // they depend on the sequence length, rope_by_length's).
  std::vector<float> rope_freq_;
  struct LengthRope {  // rope_by_length's frequencies and cos / sin factor of one sequence length
    std::vector<float> inv_freq;
    float scale = 1.0f;
  };
  std::map<std::int64_t, LengthRope> rope_by_length_;  // computed once per length
  float rope_scale_ = 1.0f;  // on cos and sin (rope_attention_factor)
  std::vector<std::uint16_t> unit_gain_;  // head_dim FP16 ones: l2_qk_norm's gain
  float attn_scale_ = 1.0f;  // the softmax scale (attention_scale)
  int attn_dim_ = 0;         // a q / k head's width in the lanes and the cache (MLA: rope + kv_lora_rank)
  const compiler::ParallelLayout& layout_;
  compiler::LowerOptions lowering_;
  const compiler::CostModel& cost_;
  const compiler::CostModel* step_cost_ = nullptr;  // run()'s cost model for its step, when given
  std::vector<DeviceContext> dev_;
  bool quantize_activations_ = false;
  device::XpuDevice& xpu0_;  // runs the replicated ops
  DeviceWeights& w0_;        // replicated weights (embedding, norms, router)

  // Per step.
  compiler::BatchState batch_;
  compiler::Routing routing_;
  std::vector<std::vector<std::int64_t>> routed_;  // per MoE layer seen so far: tokens per expert
  std::vector<Row> rows_;
  std::vector<std::int64_t> row_request_;  // per token row: its request's id
  std::vector<StepOutput::Quantized> quantized_;
  OutlierColumns outlier_columns_;
  std::vector<std::vector<std::int64_t>> node_rows_;  // per node: the token rows of its requests, in order
  std::int64_t t_ = 0;  // tokens in the step
  std::vector<std::int32_t> ids_, positions_;
  std::vector<std::uint16_t> x_, normed_, out_, partials_;  // FP16; partials_ [devices, t, hidden]
  std::vector<Lane> lanes_;
  std::map<std::pair<std::size_t, std::int64_t>, std::vector<BlockMove>> migrating_;  // (device, request)
  std::vector<std::int32_t> topk_ids_;
  std::vector<float> topk_weights_;
  std::vector<float> shared_gate_;  // per token: the shared experts' gate (1 without one)
  const std::uint16_t* out_bias_ = nullptr;  // the bias the next residual adds (o / FFN output; [hidden])
  int norms_in_layer_ = 0, norm_layer_ = -2, kv_written_layer_ = -1;
};

}  // namespace duplex::runtime::functional
