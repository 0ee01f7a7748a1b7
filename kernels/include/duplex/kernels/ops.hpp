#pragma once
// The xPU ops, one argument struct each, and OpArgs (the variant a backend dispatches on).
//
// Common contract (checked by can_implement):
//  - Floating operands of one op share one storage dtype (f16, bf16 or f32) unless a field says otherwise;
//    arithmetic accumulates in FP32. Index operands are i32. All tensors are row-major contiguous and live in
//    the backend's memory (Location::kHost for the CPU backend, kDevice for CUDA).
//  - Outputs never alias inputs unless a field says so.
//  - Shapes are written [outer, ..., inner]. T = tokens, H = hidden, D = head_dim, E = experts, F = ffn
//  width.
#include <cstdint>
#include <span>
#include <variant>

#include "duplex/kernels/tensor.hpp"

namespace duplex::kernels {

// c[M,N] = a[M,K] . op(b) (+ c when accumulate). op(b) = b^T when b_transposed (b is [N,K]: a linear layer's
// weight, bias-free), else b is [K,N].
struct GemmArgs {
  Tensor a, b, c;
  bool b_transposed = true;
  bool accumulate = false;
};

// y[N] = w[N,K] . x[K] (a decode-time linear layer for one token; bandwidth bound).
struct GemvArgs {
  Tensor w, x, y;
};

enum class NormKind : std::uint8_t { kRms, kLayer };
// Per row of x[T,H]: RMSNorm y = x / sqrt(mean(x^2) + eps) * (weight_offset + weight);
// LayerNorm y = (x - mean) / sqrt(var + eps) * (weight_offset + weight) + bias (bias may be absent).
// weight_offset is added in FP32 (Gemma's RMSNorm scales by 1 + weight; 0 for everyone else). y[T,H] may
// alias x.
struct NormArgs {
  NormKind kind = NormKind::kRms;
  Tensor x, weight, bias, y;
  float eps = 1e-5f;
  float weight_offset = 0.0f;
};

// Rotary embedding, rotate-half (GPT-NeoX / HF Llama) form, in place on x[T, heads, D]:
// for i < rotary_dim/2, angle = positions[t] * inv_freq[i], the pair (x[i], x[i + rotary_dim/2]) is rotated
// by angle; inv_freq[i] = theta^(-2i/rotary_dim), or the caller's frequencies (host memory, rotary_dim/2 of
// them, at most kMaxRopeFrequencies, finite and > 0: a scaled RoPE, e.g. Llama 3's). cos and sin are
// multiplied by `scale` (finite, > 0; LongRoPE's attention factor, 1 otherwise). positions: i32[T].
// rotary_dim 0 means D; it must be even and <= D.
inline constexpr std::int64_t kMaxRopeFrequencies = 256;
struct RopeArgs {
  Tensor x, positions;
  float theta = 10000.0f;
  std::int64_t rotary_dim = 0;
  std::span<const float> inv_freq{};
  float scale = 1.0f;
};

// Causal self-attention for a batch of prompts packed along tokens (prefill).
// q[T,Hq,D], k/v[T,Hkv,D], out[T,Hq,D]; Hq = G * Hkv (GQA group G). Sequence b holds tokens
// [seq_starts[b], seq_starts[b+1]); seq_starts is host memory, non-decreasing, first 0, last T.
// out = softmax(scale * q k^T + causal mask) v per sequence and head. window > 0: sliding-window attention,
// token i of a sequence attends to its tokens (i - window, i] only; 0: to every earlier token.
// softcap > 0: Gemma 2's attention logit soft-capping, each scaled score s = scale * q.k (FP32) becomes
// softcap * tanh(s / softcap) before the mask and the softmax; 0: none. softcap must be finite and >= 0
// (else kInvalidArgument).
// sinks [Hq] (optional, the op's dtype): gpt-oss's attention sinks. Head h's sink logit S (FP32, neither
// scaled nor capped) joins every row's softmax: m = max(S, the row's scores), p_j = exp(s_j - m) /
// (exp(S - m) + sum_i exp(s_i - m)); its own share is dropped, so the row's weights sum below 1.
// chunk > 0 (tokens): Llama 4's chunked attention (HF attention_chunk_size), token i of a sequence attends to
// the tokens j <= i of its own chunk only (j / chunk == i / chunk: [i - i % chunk, i]); with a window too, to
// the tokens both allow (the later of the two first tokens on). 0: no chunking; negative: kInvalidArgument.
struct PrefillAttentionArgs {
  Tensor q, k, v, out;
  std::span<const std::int64_t> seq_starts;
  float scale = 1.0f;
  std::int64_t window = 0;
  float softcap = 0.0f;
  Tensor sinks{};
  std::int64_t chunk = 0;
};

// One new token per request attending to its paged KV cache (decode), GQA.
// q[B,Hq,D]; k_cache/v_cache[num_blocks, block_size, Hkv, D]; block_table i32[B, max_blocks] (request b's
// token j lives in block block_table[b][j / block_size], slot j % block_size); context_lens i32[B] (tokens to
// attend, the new one included, each <= max_context_len and <= max_blocks*block_size); out[B,Hq,D].
// The caches are views: rows (D) contiguous, the page / slot / head strides free and shared by K and V, so
// the runtime's layout (contiguous [pages][block][heads][D]), head-major pages ([pages][heads][block][D]
// through Tensor::strided) and K and V interleaved in one buffer all run without a copy.
// max_context_len (host) bounds context_lens; kernels size their work split by it.
// A request with context_len 0 gets out = 0. window > 0: sliding-window attention over the last
// min(context_len, window) tokens only (block_table entries of the tokens before them are never read);
// 0: every token. softcap > 0: Gemma 2's attention logit soft-capping, as in PrefillAttentionArgs (each
// scaled score s = scale * q.k (FP32) becomes softcap * tanh(s / softcap) before the softmax; 0: none;
// finite and >= 0, else kInvalidArgument). sinks [Hq] (optional, q's dtype): gpt-oss's attention sinks, as
// in PrefillAttentionArgs (a request with context_len 0 still gets out = 0). chunk > 0 (tokens): Llama 4's
// chunked attention, as in PrefillAttentionArgs with the new token at position p = context_len - 1: it
// attends to tokens [p - p % chunk, p] only (with a window too, from the later of the two first tokens);
// block_table entries of the tokens before them are never read. 0: no chunking; negative: kInvalidArgument.
struct DecodeAttentionArgs {
  Tensor q, k_cache, v_cache, block_table, context_lens, out;
  float scale = 1.0f;
  std::int64_t max_context_len = 0;
  std::int64_t window = 0;
  float softcap = 0.0f;
  Tensor sinks{};
  std::int64_t chunk = 0;

  // Tokens a request attends to at most: max_context_len, or the window or the chunk when shorter (kernels
  // size their work split by it).
  std::int64_t max_attended() const {
    std::int64_t n = max_context_len;
    if (window > 0 && window < n) n = window;
    if (chunk > 0 && chunk < n) n = chunk;
    return n;
  }
};

// Row softmax: y[R,C] = softmax(scale * x[R,C]) per row. y may alias x.
struct SoftmaxArgs {
  Tensor x, y;
  float scale = 1.0f;
};

// MoE router: logits = hidden[T,H] . gate_weight[E,H]^T (FP32), then per token, by `kind`, top_k experts
// to topk_ids i32[T,k] in descending order of the value they are chosen by (ties: the lower expert index
// first), their weights to topk_weights f32[T,k]:
//  kSoftmaxTopK: p = softmax(logits); the top_k experts by p; weight = p_e (divided by the sum of the chosen
//    p when renormalize) x routed_scaling.
//  kGroupLimited (DeepSeek-V2 group_limited_greedy): the E experts form num_groups groups of E / num_groups
//    consecutive experts. p = softmax(logits); a group's score is its largest p; the topk_groups groups of
//    highest score are kept (ties: the lower group index); c_e = p_e in kept groups, 0 in the others; the
//    top_k experts by c; weight = p_e (divided by the sum of the chosen p when renormalize) x routed_scaling.
//  kNoAuxTc (DeepSeek-V3 noaux_tc): groups as above. s = sigmoid(logits), c = s + correction_bias (FP32); a
//    group's score is the sum of its two largest c; the topk_groups groups of highest score are kept (ties:
//    the lower group index); c_e = 0 in the dropped groups (HF's masked_fill, so a kept expert with c < 0
//    ranks below a dropped one); the top_k experts by c; weight = s_e, the sigmoid without the bias (divided
//    by the sum of the chosen s + 1e-20 when renormalize) x routed_scaling.
//  kSigmoidTopK (Llama 4's Llama4Router): the top_k experts by logit l itself (ties: the lower index);
//    weight = sigmoid(l_e) in FP32 (divided by the sum of the chosen sigmoids when renormalize, without
//    kNoAuxTc's 1e-20) x routed_scaling.
//  kSparseMixer (Phi-3.5-MoE inference; top_k must be 2, renormalize is not used, routed_scaling must be 1):
//    expert 1 = argmax l, m = l[1]; the experts j with (m - l_j) / max(|l_j|, m) > 2 jitter_eps are masked
//    out; weight 1 = the softmax of the unmasked logits at expert 1. Expert 2 = argmax over the others, and
//    its weight likewise with m = l[2] over the experts but expert 1. (Ties: the lower index.)
// The group kinds need num_groups >= 1 dividing E, topk_groups in [1, num_groups] and
// top_k <= topk_groups * E / num_groups; kNoAuxTc at least 2 experts per group. Both are 1 for the other
// kinds. correction_bias [E] (gate_weight's dtype) is present for kNoAuxTc only. routed_scaling: finite, > 0.
// logits f32[T,E] (the raw logits, for every kind) is written when present. Qwen2-MoE's shared-expert gate,
// when shared_gate_weight [1,H] is present: shared_gate f32[T] = sigmoid(hidden . shared_gate_weight) (the
// weight the shared expert's output is scaled by). logit_bias [E] (optional, gate_weight's dtype; gpt-oss's
// router bias) is added to the logits in FP32 before anything else (the logits written include it).
enum class RouterKind : std::uint8_t { kSoftmaxTopK, kSparseMixer, kGroupLimited, kNoAuxTc, kSigmoidTopK };
struct RouterArgs {
  Tensor hidden, gate_weight, topk_ids, topk_weights, logits;
  std::int64_t top_k = 2;
  bool renormalize = true;
  Tensor shared_gate_weight{}, shared_gate{};
  RouterKind kind = RouterKind::kSoftmaxTopK;
  float jitter_eps = 0.01f;                      // kSparseMixer (HF router_jitter_noise)
  std::int64_t num_groups = 1, topk_groups = 1;  // kGroupLimited / kNoAuxTc (HF n_group, topk_group)
  Tensor correction_bias{};                      // kNoAuxTc (HF e_score_correction_bias)
  float routed_scaling = 1.0f;                   // HF routed_scaling_factor
  Tensor logit_bias{};                           // gpt-oss (HF GptOssTopKRouter.bias)
};

// MoE token permute: the T*k (token, slot) pairs are grouped by expert (stable: by expert, then t*k + j).
// x[T,H], topk_ids i32[T,k] -> x_perm[T*k,H] (row r = x of the r-th pair in that order),
// permuted_row i32[T,k] (the row of pair (t,j) in x_perm), expert_offsets i32[E+1] (expert e's rows are
// [offsets[e], offsets[e+1])). An id outside [0, num_experts) is kInvalidArgument.
// topk_weights f32[T,k] (optional; Llama 4, whose experts take their input scaled by the routing weight: HF
// routed_in = hidden_states * router_scores): row r of x_perm is then x[t] * topk_weights[t,j] for its pair
// (t,j), each element's product in FP32 rounded once to the dtype (the caller unpermutes with weights 1).
// Absent: the rows are copied.
struct PermuteArgs {
  Tensor x, topk_ids, x_perm, permuted_row, expert_offsets;
  std::int64_t num_experts = 0;
  Tensor topk_weights{};
};

// MoE token unpermute: out[t] = sum_j topk_weights[t,j] * y_perm[permuted_row[t,j]] (j in order, FP32).
// y_perm[T*k,H], permuted_row i32[T,k], topk_weights f32[T,k], out[T,H].
struct UnpermuteArgs {
  Tensor y_perm, permuted_row, topk_weights, out;
};

// A W8A8 GEMM's activation quantization: the serving kernels' quantization of a linear layer's input before
// an FP8 / INT8 tensor-core GEMM (vLLM's scaled_fp8_quant, per_token_group_quant_fp8 and
// scaled_int8_quant), emulated as fake quantization: each element x is written back as q x s (FP32), rounded
// once to the storage dtype, where s is the scale of its reach and q = x / s (an FP32 division) on the
// format's grid:
//   kFp8E4M3: x / s clamped to [-448, 448], rounded to the nearest E4M3 value (ties to even); q_max = 448.
//   kInt8:    x / s rounded to the nearest integer (ties to even), clamped to [-128, 127]; q_max = 127.
// The scale (FP32) is static_scale when > 0 (a static release's calibrated input_scale, one for the call);
// else dynamic, from the largest magnitude a of its reach: every element of the call (per_tensor), a row's
// `group` consecutive columns (group > 0: DeepSeek-V3's 1 x 128 groups; where group does not divide the
// columns, a row's last group is the shorter rest, which the serving kernels, requiring whole groups, never
// see) or a row (per token, the default):
//   a' = min(a, scale_ub) when scale_ub > 0 (fbgemm's activation_scale_ub), else a;
//   s = max(a' / q_max, min_scale); with pow2_scale, s = 2^ceil(log2 s) (UE8M0 scales).
// A reach whose scale is 0 (all zeros, min_scale 0) is written as zeros. Every field finite; static_scale,
// scale_ub and min_scale >= 0; group >= 0; per_tensor with group 0; a static scale with group 0, no
// scale_ub and no min_scale (else kInvalidArgument).
// LLM.int8()'s mixed-precision decomposition (bitsandbytes' MatMul8bitLt: int8_vectorwise_quant with its
// threshold, then int8_mixed_scaled_mm), outlier_threshold > 0: the call's outlier columns are those where
// some row of the call has |x| >= outlier_threshold (and those the caller marks: the op's outliers tensor);
// their elements pass through unquantized (bitsandbytes multiplies those columns in 16 bits); every other
// element is quantized per row with a = the row's largest magnitude below the threshold (bitsandbytes zeroes
// the outliers before its row absmax). Only with kInt8 per row: group 0, not per_tensor, no static_scale,
// scale_ub, min_scale or pow2_scale (else kInvalidArgument). bitsandbytes scales by 127 / a where this
// divides by a / 127: a value within an FP32 rounding of a half-integer code may round the other way.
enum class QuantFormat : std::uint8_t { kNone, kFp8E4M3, kInt8 };
struct ActivationQuant {
  QuantFormat format = QuantFormat::kNone;
  std::int64_t group = 0;
  bool per_tensor = false;
  float static_scale = 0.0f;
  float scale_ub = 0.0f;
  float min_scale = 0.0f;
  bool pow2_scale = false;
  float outlier_threshold = 0.0f;
  bool decomposes() const { return outlier_threshold > 0.0f; }
  bool enabled() const { return format != QuantFormat::kNone; }
};

// y[T,C] = x[T,C] fake-quantized by `quant` (its format not kNone). y may alias x. scales f32 (optional)
// receives the scales used: [1] for a static or per-tensor scale, [T] per row, [T, ceil(C / group)] per
// group. outliers i32[C], required with quant.decomposes() (absent otherwise): on entry a nonzero entry marks
// a column the caller makes an outlier column (another part of the batch reached the threshold there); on
// exit every column where some row of x reaches the threshold is 1 as well, the others unchanged.
struct QuantizeArgs {
  Tensor x, y;
  ActivationQuant quant;
  Tensor scales{};
  Tensor outliers{};
};

enum class FfnKind : std::uint8_t { kGated, kTwoMatrix };
// SiLU, GELU's tanh form (gelu_pytorch_tanh), ReLU, GELU's exact form x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)),
// and gpt-oss's clamped SwiGLU (gated only; kSwigluOaiAlpha / kSwigluOaiLimit below).
enum class Activation : std::uint8_t { kSilu, kGeluTanh, kRelu, kGelu, kSwigluOai };
inline constexpr float kSwigluOaiAlpha = 1.702f;  // source: HF GptOssExperts.alpha
inline constexpr float kSwigluOaiLimit = 7.0f;    // source: HF GptOssExperts.limit
// Expert FFN for a group of E experts over permuted tokens x[P,H]; expert e owns rows
// [expert_offsets[e], expert_offsets[e+1]) (host memory, E+1 entries, non-decreasing, first 0, last P;
// an expert with no rows is skipped). Per row of expert e:
//   kGated:     h = act(w_in[e] . x) * (w_up[e] . x), y = w_down[e] . h   (Mixtral: act = SiLU)
//   kTwoMatrix: h = act(w_in[e] . x),                 y = w_down[e] . h   (GLaM/OPT: GELU/ReLU; w_up absent)
// Every activation goes with either kind (Gemma's GeGLU is kGated with kGeluTanh) but kSwigluOai, gated only:
//   g = min(w_in[e] . x, 7), u = min(max(w_up[e] . x, -7), 7), h = g sigmoid(1.702 g) (u + 1)   (gpt-oss)
// w_in/w_up [E,F,H], w_down [E,H,F], y[P,H]. h is rounded to the storage dtype before the down projection
// (as an intermediate written to memory is). Optional biases, added in FP32 (gpt-oss's experts carry all
// three): b_in [E,F] to w_in[e] . x before the activation (OPT fc1, StarCoder2 c_fc), b_up [E,F] to
// w_up[e] . x (kGated only), b_down [E,H] to w_down[e] . h before y is rounded. A dense FFN's down bias is
// the caller's (added once after a tensor-parallel sum); with experts split over shards, pass b_down to one.
// W8A8 experts (quant_x / quant_h enabled, QuantizeArgs' contract): the rows of x are fake-quantized by
// quant_x before the first projections, and the rows of h (after their rounding to the dtype) by quant_h
// before the down projection; a per-tensor scale reaches every row of the call (all its experts'); groups
// tile a row of H (quant_x) or F (quant_h). quant_scales f32[2] (optional) receives the per-tensor or static
// scales used, x's then h's (0 for one not per tensor or static). h_out [P,F] (optional, the dtype) receives
// h as rounded to the dtype, before quant_h (the functional emulation's check follows the GEMM inputs it
// quantizes). LLM.int8()'s decomposition (quant_x / quant_h decomposes()): the outlier columns reach every
// row of the call, as a per-tensor scale does; quant_outliers i32[H + F] (required then, absent otherwise)
// holds x's columns' marks then h's, each in and out as QuantizeArgs' outliers (a spec that does not
// decompose leaves its part alone).
struct ExpertFfnArgs {
  FfnKind kind = FfnKind::kGated;
  Activation activation = Activation::kSilu;
  Tensor x, w_in, w_up, w_down, y;
  std::span<const std::int64_t> expert_offsets;
  Tensor b_in;
  Tensor b_up{}, b_down{};
  ActivationQuant quant_x{}, quant_h{};
  Tensor quant_scales{};
  Tensor h_out{};
  Tensor quant_outliers{};
};

// out = a + b, elementwise, same shape (any rank). out may alias a or b.
struct ResidualAddArgs {
  Tensor a, b, out;
};

// y = min(max(x, -limit), limit), elementwise, same shape (any rank); limit is rounded to the storage dtype
// first (as torch clamps an FP16 tensor by a Python scalar); NaN stays NaN. y may alias x (in place, as the
// runtime uses it). limit must be finite and > 0 (else kInvalidArgument). (DBRX's clip_qkv on the fused QKV.)
struct ClampArgs {
  Tensor x, y;
  float limit = 0.0f;
};

// out[T,H] = table[ids[t]] * scale; ids i32[T]; an id outside [0, V) is kInvalidArgument. scale = 1 copies
// the rows; otherwise each element is multiplied in FP32 and rounded once (Gemma: sqrt(H) in the dtype).
struct EmbeddingArgs {
  Tensor table, ids, out;
  float scale = 1.0f;
};

// Greedy decoding head: logits = hidden[T,H] . weight[V,H]^T (FP32) + bias[V] (optional, the weight's dtype,
// added in FP32: Phi-3.5-MoE's lm_head bias); next_ids i32[T] = argmax (ties: lowest id). logits f32[T,V] is
// written when present. softcap > 0: Gemma 2's final logit soft-capping, each logit (after the bias) becomes
// softcap * tanh(logit / softcap) in FP32; next_ids is the argmax of the capped logits (ties: lowest id, so
// logits that round to the same capped value tie) and logits holds the capped values. 0: none. softcap must
// be finite and >= 0 (else kInvalidArgument).
struct LmHeadArgs {
  Tensor hidden, weight, next_ids, logits;
  Tensor bias{};
  float softcap = 0.0f;
};

// Llama 4's attention temperature tuning (HF Llama4TextAttention, on the queries of its layers without RoPE),
// in place on x[T, heads, D]; positions i32[T] (each >= 0, else kInvalidArgument). Every element of row t
// (all heads) is multiplied by f(t) = 1 + attn_scale * log1p(floor((positions[t] + 1) / floor_scale)),
// computed in FP32 in that order (HF: log1p(floor((cache_position.float() + 1.0) / floor_scale)) *
// attn_scale + 1.0); the product x * f is in FP32, rounded once to the storage dtype. floor_scale (HF
// floor_scale, tokens) must be finite and > 0, attn_scale (HF attn_scale) finite and >= 0 (else
// kInvalidArgument).
struct AttnTemperatureArgs {
  Tensor x, positions;
  float floor_scale = 8192.0f;
  float attn_scale = 0.1f;
};

// The sum of partial results that stands for an all-reduce across stacks / devices:
// out[N] = sum_p partials[p, N] in order p = 0..P-1, in FP32. partials[P,N], out[N].
struct PartialSumArgs {
  Tensor partials, out;
};

using OpArgs =
    std::variant<GemmArgs, GemvArgs, NormArgs, RopeArgs, PrefillAttentionArgs, DecodeAttentionArgs,
                 SoftmaxArgs, RouterArgs, PermuteArgs, UnpermuteArgs, ExpertFfnArgs, ResidualAddArgs,
                 EmbeddingArgs, LmHeadArgs, PartialSumArgs, ClampArgs, AttnTemperatureArgs, QuantizeArgs>;

// "gemm", "decode_attention", ...
const char* op_name(const OpArgs& args);

}  // namespace duplex::kernels
