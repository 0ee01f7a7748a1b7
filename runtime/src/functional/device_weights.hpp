#pragma once
// Private to the functional executor: the model's weights in the layout the units compute on (a copy in
// "device memory"): q/k/v concatenated into one QKV matrix (MLA: its projections, kv_b_proj split per head
// for the absorbed form), each FFN's gate / up / down matrices stacked over its experts ([E,F,H] / [E,H,F], E
// = 1 for a dense FFN) as kernels::ExpertFfnArgs takes them.
#include <cstdint>
#include <vector>

#include "duplex/runtime/functional/model_weights.hpp"

namespace duplex::runtime::functional {

// A static FP8 release's activation scales of one layer's GEMM inputs (ModelWeights::input_scales; 0
// without), fused as vLLM fuses the modules: the QKV input's the largest of q / k / v's (MLA: q_a's or q's
// and kv_a's, their shared input, the larger; q_b's its own), o's; an FFN's input the larger of gate's and
// up's, h down's; per expert (global index, every device keeps all) the same pair; the shared experts' as a
// dense FFN.
struct InputScales {
  float qkv = 0, q_b = 0, o = 0, ffn = 0, down = 0, shared = 0, shared_down = 0;
  std::vector<float> expert, expert_down;  // [experts]; empty for a dense layer
};

struct LayerWeights {
  std::vector<std::uint16_t> attn_norm, ffn_norm;
  std::vector<std::uint16_t> attn_norm_bias, ffn_norm_bias;  // [hidden] with a biased LayerNorm; else empty
  // The norms after each block (ModelSpec::post_norms; empty without) and their biases, as above.
  std::vector<std::uint16_t> post_attn_norm, post_ffn_norm, post_attn_norm_bias, post_ffn_norm_bias;
  std::vector<std::uint16_t> qkv;     // [q_dim + 2 kv_dim, hidden]
  std::vector<std::uint16_t> o;       // [hidden, q_dim]
  std::vector<std::uint16_t> qkv_bias;  // [q_dim + 2 kv_dim] (q, k, v as the QKV rows); empty without
  std::vector<std::uint16_t> o_bias;    // [hidden]; empty without
  std::vector<std::uint16_t> q_norm,
      k_norm;                         // [head_dim] per head, or [q_dim] / [kv_dim] whole; empty without
  // MLA (empty with GQA; qkv is then empty and o is [hidden, heads x v_head_dim]). mla_q: q_proj, or q_b_proj
  // after q_a [q_lora_rank, hidden] and its RMSNorm gain q_a_norm; each head's rows [nope..., rope...].
  // kv_a [kv_lora_rank + rope, hidden] (the latent, then the rope key) and its norm's gain kv_a_norm
  // [kv_lora_rank]. kv_b_proj split per head: w_uk_t [heads][kv_lora_rank][nope] (its k_nope rows,
  // transposed: the query's absorption) and w_uv [heads][v_head_dim][kv_lora_rank] (its v rows).
  std::vector<std::uint16_t> mla_q, q_a, q_a_norm, kv_a, kv_a_norm, w_uk_t, w_uv;
  std::vector<std::uint16_t> correction_bias;  // [experts]: DeepSeek-V3's noaux_tc choice; empty without
  std::vector<std::uint16_t> router;  // [experts, hidden]; empty for a dense layer
  // gate: the matrix the activation reads (gated: gate_proj; two-matrix: up_proj / fc1 / c_fc); up: the
  // gated FFN's up_proj (empty for a two-matrix FFN).
  std::vector<std::uint16_t> gate, up, down;  // [E,F,H], [E,F,H], [E,H,F]
  std::int64_t ffn_experts = 1, ffn_width = 0;
  // A dense FFN's biases (ModelSpec::mlp_bias; empty without): before the activation [F], after the down
  // projection [H] (added once, after the tensor-parallel sum).
  std::vector<std::uint16_t> ffn_bias_in, ffn_bias_out;
  // An MoE layer's expert biases (gpt-oss; empty without): gate [E,F] in ffn_bias_in, up [E,F], down [E,H]
  // (a device keeps the down biases on its experts' first shard only: the shards' outputs are summed).
  std::vector<std::uint16_t> expert_bias_up, expert_bias_down;
  std::vector<std::uint16_t> router_bias;  // [experts] (gpt-oss); empty without
  std::vector<std::uint16_t> sinks;        // [heads] attention sink logits (gpt-oss); empty without
  // The shared experts of an MoE layer as one FFN ([Fs,H], [Fs,H], [H,Fs]; empty without) and their gate
  // ([1,H]; empty without).
  std::vector<std::uint16_t> shared_gate_proj, shared_up, shared_down, shared_gate;
  std::int64_t shared_width = 0;
  InputScales input_scales;
};

struct DeviceWeights {
  std::vector<std::uint16_t> embedding;  // [vocab, hidden]
  std::vector<std::uint16_t> positions;  // [learned_positions, hidden]; empty with RoPE
  std::vector<std::uint16_t> final_norm, final_norm_bias;  // [hidden]; the bias with a biased LayerNorm only
  std::vector<std::uint16_t> lm_head;    // [vocab, hidden]
  std::vector<std::uint16_t> lm_head_bias;  // [vocab]; empty without one
  std::vector<LayerWeights> layers;
};

DeviceWeights lay_out_weights(const ModelWeights& w);

}  // namespace duplex::runtime::functional
