#pragma once
// Private to the functional executor: runs the ops of one scheduled step on tensors, each on the unit its
// execution plan gives it (see functional_executor.hpp for the contract).
#include <cstdint>
#include <vector>

#include "device_weights.hpp"
#include "duplex/compiler/batch.hpp"
#include "duplex/compiler/cost_model.hpp"
#include "duplex/compiler/placement.hpp"
#include "duplex/kernels/backend.hpp"
#include "duplex/runtime/functional/paged_kv_cache.hpp"
#include "duplex/runtime/functional/pim_unit.hpp"

namespace duplex::runtime::functional {

struct StepRequest {
  std::int64_t id = 0;
  std::int64_t context = 0;  // tokens already in its KV cache
  std::int64_t tokens = 0;   // tokens computed this step
  const std::vector<std::int32_t>* sequence = nullptr;  // prompt + generated so far (>= context + tokens)
};

struct StepOutput {
  compiler::ExecutionPlan plan;             // the final plan (routing of every MoE layer known)
  std::vector<compiler::Unit> executed_on;  // per op of plan.graph: the unit that ran it
  std::vector<std::int32_t> next_ids;       // per request: greedy next token after its last row
  std::vector<std::vector<float>> logits;   // per request: [vocab]
};

class StepRunner {
 public:
  StepRunner(const compiler::ModelSpec& model, const ModelNumerics& numerics, DeviceWeights& weights,
             const compiler::ParallelLayout& layout, const compiler::CostModel& cost, kernels::Backend& xpu,
             PimUnit* pim, PagedKvCache& kv);
  // The KV of every request must already be reserved for context + tokens slots.
  StepOutput run(const std::vector<StepRequest>& requests);

 private:
  struct Row {  // one request's rows in the step's token matrix
    std::int64_t first = 0;
    const StepRequest* request = nullptr;
  };

  compiler::ExecutionPlan plan() const;
  void execute(const compiler::Op& op, compiler::Unit unit);
  void norm(int layer);
  void qkv(int layer, compiler::Unit unit);
  void rope();
  void write_kv(int layer);
  void attention(int layer, bool decode_op, compiler::Unit unit);
  void xpu_attention(int layer, const std::vector<const Row*>& rows);
  void pim_attention(int layer, const std::vector<const Row*>& rows);
  void o_proj(int layer, compiler::Unit unit);
  void route(int layer);
  void experts(int layer, const std::vector<compiler::Unit>& expert_unit);
  void dense_ffn(int layer, compiler::Unit unit);
  void lm_head(StepOutput& out);
  int moe_index(int layer) const;

  const compiler::ModelSpec& m_;
  const ModelNumerics& numerics_;
  DeviceWeights& w_;
  const compiler::ParallelLayout& layout_;
  const compiler::CostModel& cost_;
  kernels::Backend& xpu_;
  PimUnit* pim_;
  PagedKvCache& kv_;

  // Per step.
  compiler::BatchState batch_;
  compiler::Routing routing_;
  std::vector<std::vector<std::int64_t>> routed_;  // per MoE layer seen so far: tokens per expert
  std::vector<Row> rows_;
  std::int64_t t_ = 0;  // tokens in the step
  std::vector<std::int32_t> ids_, positions_;
  std::vector<std::uint16_t> x_, normed_, q_, k_, v_, attn_, out_;  // FP16 activations
  std::vector<std::int32_t> topk_ids_;
  std::vector<float> topk_weights_;
  int norms_in_layer_ = 0, norm_layer_ = -2, kv_written_layer_ = -1;
};

}  // namespace duplex::runtime::functional
