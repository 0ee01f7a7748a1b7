#include "duplex/compiler/model_spec.hpp"

#include <algorithm>
#include <cstdlib>
#include <fmt/format.h>

#include "duplex/base/config_store.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/hf_import.hpp"

namespace duplex::compiler {

bool ModelSpec::is_moe_layer(int layer) const {
  if (experts == 0 || layer < first_moe_layer) return false;
  if (std::find(dense_layers.begin(), dense_layers.end(), layer) != dense_layers.end()) return false;
  return (layer - first_moe_layer) % moe_every == moe_every - 1;
}

int ModelSpec::moe_layers_before(int layer) const {
  int n = 0;
  for (int l = 0; l < layer; ++l) n += is_moe_layer(l) ? 1 : 0;
  return n;
}

namespace {
bool listed(const std::vector<int>& layers, int layer) {
  return std::find(layers.begin(), layers.end(), layer) != layers.end();
}
}  // namespace

DType ModelSpec::dense_ffn_matrix_dtype(int layer) const {
  return listed(unquantized_ffn_layers, layer) ? dtype : linear_dtype;
}

int ModelSpec::attention_window(int layer) const {
  return sliding_window == 0 || listed(full_attention_layers, layer) ? 0 : sliding_window;
}

int ModelSpec::attention_chunk_of(int layer) const {
  return attention_chunk == 0 || listed(full_attention_layers, layer) ? 0 : attention_chunk;
}

bool ModelSpec::rotates(int layer) const {
  return learned_positions == 0 && !listed(nope_layers, layer);
}

int ModelSpec::windowed_layers() const {
  int windowed = 0;
  for (int l = 0; l < layers; ++l) windowed += attention_window(l) > 0 || attention_chunk_of(l) > 0 ? 1 : 0;
  return windowed;
}

std::string ModelSpec::window_note() const {
  if (sliding_window == 0 && attention_chunk == 0) return "";
  const std::string what = sliding_window > 0 ? fmt::format("sliding window {}", sliding_window)
                                              : fmt::format("chunked attention {}", attention_chunk);
  const int windowed = windowed_layers();
  return windowed == layers ? fmt::format("{} (every layer)", what)
                            : fmt::format("{} ({} of {} layers)", what, windowed, layers);
}

std::int64_t ModelSpec::kv_elements_per_token_layer() const {
  if (attention == AttentionKind::kMla) return mla.kv_lora_rank + mla.qk_rope_head_dim;
  return 2LL * kv_dim();
}

std::int64_t ModelSpec::attention_params() const {
  const std::int64_t h = hidden;
  if (attention == AttentionKind::kMla) {
    const std::int64_t qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim;
    const std::int64_t q = mla.q_lora_rank > 0
                               ? h * mla.q_lora_rank + mla.q_lora_rank + std::int64_t{mla.q_lora_rank} * heads * qk
                               : h * heads * qk;
    const std::int64_t kv_a = h * (mla.kv_lora_rank + mla.qk_rope_head_dim) + mla.kv_lora_rank;
    const std::int64_t kv_b = std::int64_t{mla.kv_lora_rank} * heads * (mla.qk_nope_head_dim + mla.v_head_dim);
    const std::int64_t o = std::int64_t{heads} * mla.v_head_dim * h;
    return q + kv_a + kv_b + o;
  }
  return h * q_dim() + 2 * h * kv_dim() + std::int64_t{q_dim()} * h;
}

std::int64_t ModelSpec::attention_vector_params() const {
  std::int64_t n =
      (qkv_bias ? q_dim() + 2LL * kv_dim() : 0) + (o_bias ? hidden : 0) + (attn_sinks ? heads : 0);
  if (qk_norm == QkNorm::kPerHead) n += 2LL * head_dim;
  if (qk_norm == QkNorm::kWhole) n += q_dim() + kv_dim();
  return n;
}

std::int64_t ModelSpec::ffn_bias_params(int width) const {
  return mlp_bias ? (ffn_kind == FfnKind::kGated ? 2 : 1) * std::int64_t{width} + hidden : 0;
}

std::int64_t ModelSpec::ffn_params(int width) const {
  return (ffn_kind == FfnKind::kGated ? 3 : 2) * std::int64_t{hidden} * width + ffn_bias_params(width);
}

double ModelSpec::expert_ffn_bytes(int width) const {
  const std::int64_t biases = ffn_bias_params(width);
  return static_cast<double>(ffn_params(width) - biases) * dtype_bytes(expert_dtype, quant_group) +
         static_cast<double>(biases) * dtype_bytes(dtype);
}

std::int64_t ModelSpec::expert_matrix_params() const {
  const std::int64_t per_layer =
      std::int64_t{experts} * (ffn_params(expert_ffn) - ffn_bias_params(expert_ffn)) +
      std::int64_t{shared_experts} * (ffn_params(shared_expert_ffn) - ffn_bias_params(shared_expert_ffn));
  return per_layer * moe_layers_before(layers);
}

namespace {
// MLA's low-rank norm gains, counted in attention_params() but kept in dtype (0 for GQA).
std::int64_t mla_norm_params(const ModelSpec& m) {
  return m.attention == AttentionKind::kMla ? std::int64_t{m.mla.q_lora_rank} + m.mla.kv_lora_rank : 0;
}
}  // namespace

std::int64_t ModelSpec::linear_matrix_params() const {
  const std::int64_t mla_norms = mla_norm_params(*this);
  std::int64_t total = 0;
  for (int l = 0; l < layers; ++l) {
    if (!unquantized_attention) total += attention_params() - mla_norms;
    if (!is_moe_layer(l) && !listed(unquantized_ffn_layers, l))
      total += ffn_params(ffn) - ffn_bias_params(ffn);
  }
  return total;
}

double ModelSpec::weight_bytes() const {
  const auto expert = static_cast<double>(expert_matrix_params());
  const auto linear = static_cast<double>(linear_matrix_params());
  return (static_cast<double>(params()) - expert - linear) * dtype_bytes(dtype) +
         expert * dtype_bytes(expert_dtype, quant_group) + linear * dtype_bytes(linear_dtype, quant_group);
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::kSilu:
      return "silu";
    case Activation::kGelu:
      return "gelu";
    case Activation::kGeluTanh:
      return "gelu_tanh";
    case Activation::kRelu:
      return "relu";
    case Activation::kSwigluOai:
      return "swiglu_oai";
  }
  return "?";
}

const char* weight_naming_name(WeightNaming n) {
  switch (n) {
    case WeightNaming::kMixtral:
      return "mixtral";
    case WeightNaming::kQwenMoe:
      return "qwen_moe";
    case WeightNaming::kOpt:
      return "opt";
    case WeightNaming::kStarcoder2:
      return "starcoder2";
    case WeightNaming::kPhi3:
      return "phi3";
    case WeightNaming::kDeepSeek:
      return "deepseek";
    case WeightNaming::kDbrx:
      return "dbrx";
    case WeightNaming::kGptOss:
      return "gpt_oss";
    case WeightNaming::kLlama4:
      return "llama4";
  }
  return "?";
}

std::int64_t ModelSpec::router_params() const {
  return std::int64_t{hidden} * experts + (router_bias ? experts : 0);
}

std::int64_t ModelSpec::embedding_params() const {
  // A draft head uses the target's embedding and LM head; it holds its fusion instead: the projection
  // [hidden][2 hidden] and the norms of the embedding and of the hidden state (and its own LM head over its
  // draft vocabulary, if it has one).
  if (draft_head) {
    const std::int64_t h = hidden, norms = 2 * h, own_lm_head = std::int64_t{draft_vocab} * h;
    if (draft_states == 3)  // fc [h][3h] and the q / k / v columns over the hidden-state half of their input
      return 3 * h * h + h * (q_dim() + 2 * std::int64_t{kv_dim()}) + norms + own_lm_head;
    return 2 * h * h + norms + own_lm_head;
  }
  const std::int64_t table = std::int64_t{vocab} * hidden;
  return table * (tie_embeddings ? 1 : 2) + std::int64_t{learned_positions} * hidden +
         (lm_head_bias ? std::int64_t{vocab} : 0);
}

const char* router_name(Router r) {
  switch (r) {
    case Router::kSoftmaxTopK:
      return "softmax_topk";
    case Router::kSparseMixer:
      return "sparsemixer";
    case Router::kGroupLimited:
      return "group_limited_greedy";
    case Router::kNoAuxTc:
      return "noaux_tc";
    case Router::kSigmoidTopK:
      return "sigmoid_topk";
  }
  return "?";
}

namespace {
std::int64_t norm_params(const ModelSpec& m) {
  return (m.norm == NormKind::kLayerNorm && m.norm_bias ? 2 : 1) * std::int64_t{m.hidden};
}
}  // namespace

std::int64_t ModelSpec::params() const {
  std::int64_t total = embedding_params() + norm_params(*this);  // + final norm
  for (int l = 0; l < layers; ++l) {
    total += attention_params() + attention_vector_params() + (post_norms ? 4 : 2) * norm_params(*this);
    if (is_moe_layer(l)) {
      total += std::int64_t{experts} * ffn_params(expert_ffn) + router_params();
      total +=
          std::int64_t{shared_experts} * ffn_params(shared_expert_ffn) + (shared_expert_gate ? hidden : 0);
    } else {
      total += ffn_params(ffn);
    }
  }
  return total;
}

double ModelSpec::layer_weight_bytes(int l) const {
  const double in_dtype = dtype_bytes(dtype);
  const std::int64_t mla_norms = mla_norm_params(*this);
  const std::int64_t projections = attention_params() - mla_norms;
  double bytes =
      static_cast<double>(projections) * dtype_bytes(attention_matrix_dtype(), quant_group) +
      static_cast<double>(mla_norms + attention_vector_params() + (post_norms ? 4 : 2) * norm_params(*this)) *
          in_dtype;
  if (!is_moe_layer(l)) {
    const std::int64_t biases = ffn_bias_params(ffn);
    return bytes +
           static_cast<double>(ffn_params(ffn) - biases) *
               dtype_bytes(dense_ffn_matrix_dtype(l), quant_group) +
           static_cast<double>(biases) * in_dtype;
  }
  bytes += static_cast<double>(experts) * expert_ffn_bytes(expert_ffn) +
           static_cast<double>(shared_experts) * expert_ffn_bytes(shared_expert_ffn);
  return bytes + static_cast<double>(router_params() + (shared_expert_gate ? hidden : 0)) * in_dtype;
}

double ModelSpec::input_embedding_bytes() const {
  DUPLEX_ASSERT(!draft_head, "a draft head has no input table of its own");
  return static_cast<double>(std::int64_t{vocab} * hidden + std::int64_t{learned_positions} * hidden) *
         dtype_bytes(dtype);
}

double ModelSpec::lm_head_bytes() const {
  DUPLEX_ASSERT(!draft_head, "a draft head's LM head is its own");
  const std::int64_t head = (tie_embeddings ? 0 : std::int64_t{vocab} * hidden) +
                            (lm_head_bias ? std::int64_t{vocab} : 0) + norm_params(*this);
  return static_cast<double>(head) * dtype_bytes(dtype);
}

std::int64_t ModelSpec::active_params() const {
  std::int64_t total = embedding_params() + norm_params(*this);
  for (int l = 0; l < layers; ++l) {
    total += attention_params() + attention_vector_params() + (post_norms ? 4 : 2) * norm_params(*this);
    if (is_moe_layer(l)) {
      total += std::int64_t{top_k} * ffn_params(expert_ffn) + router_params();
      total +=
          std::int64_t{shared_experts} * ffn_params(shared_expert_ffn) + (shared_expert_gate ? hidden : 0);
    } else {
      total += ffn_params(ffn);
    }
  }
  return total;
}

void ModelSpec::validate() const {
  auto bad = [&](const char* field, const std::string& why) {
    throw ConfigError(file, field, why);
  };
  if (layers <= 0) bad("layers", "must be > 0");
  if (hidden <= 0) bad("hidden", "must be > 0");
  if (heads <= 0) bad("heads", "must be > 0");
  if (vocab <= 0) bad("vocab", "must be > 0");
  if ((draft_states != 1 && draft_states != 3) ||
      (draft_states == 3 && (!draft_head || layers != 1 || attention == AttentionKind::kMla)))
    bad("draft_states",
        fmt::format("is {}; expected 1, or 3 (EAGLE-3) for a one-layer GQA draft_head", draft_states));
  if (draft_vocab < 0 || draft_vocab > vocab || (draft_vocab > 0 && !draft_head))
    bad("draft_vocab", fmt::format("is {}; expected 0 (the target's LM head) or, with draft_head: true, at "
                                   "most vocab ({}) tokens of the draft head's own LM head",
                                   draft_vocab, vocab));
  if (attention == AttentionKind::kGqa) {
    if (kv_heads <= 0 || heads % kv_heads != 0)
      bad("kv_heads", fmt::format("{} does not divide heads ({})", kv_heads, heads));
    if (head_dim <= 0) bad("head_dim", "must be > 0");
  }
  if (experts > 0) {
    if (top_k <= 0 || top_k > experts) bad("top_k", fmt::format("{} is not in [1, experts={}]", top_k, experts));
    if (expert_ffn <= 0) bad("expert_ffn", "must be > 0 for an MoE model");
    if (moe_every <= 0) bad("moe_every", "must be > 0");
  }
  bool any_dense = false;
  for (int l = 0; l < layers; ++l) any_dense = any_dense || !is_moe_layer(l);
  if (any_dense && ffn <= 0) bad("ffn", "must be > 0: the model has dense FFN layers");
  if (shared_experts > 0 && shared_expert_ffn <= 0) bad("shared_expert_ffn", "must be > 0 with shared experts");
  if (shared_expert_gate && shared_experts == 0)
    bad("shared_expert_gate", "is set, but the model has no shared experts");
  if (!router_renormalize && experts == 0)
    bad("router_renormalize", "is set for a dense model (it has no router)");
  if (router == Router::kSparseMixer) {
    if (experts == 0) bad("router", "sparsemixer is set for a dense model (it has no router)");
    if (top_k != 2) bad("router", fmt::format("sparsemixer routes to 2 experts, but top_k is {}", top_k));
    if (!router_renormalize)
      bad("router_renormalize", "is set with sparsemixer, which weighs its experts its own way");
  }
  if (!std::isfinite(router_jitter) || router_jitter < 0)
    bad("router_jitter", "must be a finite number >= 0");
  const bool grouped = router == Router::kGroupLimited || router == Router::kNoAuxTc;
  if (grouped) {
    if (experts == 0)
      bad("router", fmt::format("{} is set for a dense model (it has no router)", router_name(router)));
    if (router_groups < 1 || experts % router_groups != 0)
      bad("router_groups", fmt::format("{} does not divide experts ({})", router_groups, experts));
    if (router_topk_groups < 1 || router_topk_groups > router_groups)
      bad("router_topk_groups",
          fmt::format("{} is not in [1, router_groups={}]", router_topk_groups, router_groups));
    if (top_k > router_topk_groups * (experts / router_groups))
      bad("top_k", fmt::format("{} exceeds the {} experts of the {} kept groups", top_k,
                               router_topk_groups * (experts / router_groups), router_topk_groups));
    if (router == Router::kNoAuxTc && experts / router_groups < 2)
      bad("router_groups",
          "noaux_tc scores a group by its two best experts; expected >= 2 experts per group");
  } else if (router_groups != 1 || router_topk_groups != 1) {
    bad(router_groups != 1 ? "router_groups" : "router_topk_groups",
        fmt::format("is set with router {}; expected 1 (groups are group_limited_greedy's and noaux_tc's)",
                    router_name(router)));
  }
  if (!std::isfinite(routed_scaling) || routed_scaling <= 0)
    bad("routed_scaling", "must be a finite number > 0");
  if (routed_scaling != 1.0 && (experts == 0 || router == Router::kSparseMixer))
    bad("routed_scaling", experts == 0 ? "is set for a dense model (it has no router)"
                                       : "is set with sparsemixer, which weighs its experts its own way");
  if (attention == AttentionKind::kMla && (qkv_bias || o_bias || qk_norm != QkNorm::kNone))
    bad(qkv_bias || o_bias ? "qkv_bias" : "qk_norm", "is set for MLA attention; expected GQA");
  if (activation == Activation::kSwigluOai && ffn_kind != FfnKind::kGated)
    bad("activation", "swiglu_oai is a gated activation; expected ffn_kind: gated");
  if (router_bias && experts == 0) bad("router_bias", "is set for a dense model (it has no router)");
  if (router == Router::kSigmoidTopK && experts == 0)
    bad("router", "sigmoid_topk is set for a dense model (it has no router)");
  if (expert_input_scaled && experts == 0)
    bad("expert_input_scaled", "is set for a dense model (it has no router)");
  if (qk_norm == QkNorm::kL2 && attention != AttentionKind::kGqa)
    bad("qk_norm", "l2 is set for MLA attention; expected GQA");
  if (attn_sinks && attention != AttentionKind::kGqa)
    bad("attn_sinks", "is set for MLA attention; expected GQA");
  if (!quant_group_modelled(quant_group) ||
      (quant_group != kInt4Group && !grouped_int(linear_dtype) && !grouped_int(expert_dtype)))
    bad("quant_group",
        fmt::format(
            "is {}; expected 32, 64, 128 (default) or -1 (one group per row), and other than 128 only "
            "with a grouped integer linear_dtype or expert_dtype (int4_awq, int4_gptq, int4_pack, "
            "int8_gptq, int8_pack)",
            quant_group));
  if ((unquantized_attention || !unquantized_ffn_layers.empty()) && linear_dtype == dtype)
    bad(unquantized_attention ? "unquantized_attention" : "unquantized_ffn_layers",
        fmt::format("keeps matrices in dtype, but linear_dtype is dtype ({}); expected it with a quantized "
                    "linear_dtype",
                    dtype_name(dtype)));
  for (std::size_t i = 0; i < unquantized_ffn_layers.size(); ++i) {
    const int l = unquantized_ffn_layers[i];
    if (l < 0 || l >= layers)
      bad("unquantized_ffn_layers", fmt::format("lists layer {}; expected layers in [0, {})", l, layers));
    if (is_moe_layer(l))
      bad("unquantized_ffn_layers",
          fmt::format("lists layer {}, an MoE layer (its experts are in expert_dtype); expected dense layers",
                      l));
    if (std::find(unquantized_ffn_layers.begin(), unquantized_ffn_layers.begin() + static_cast<long>(i), l) !=
        unquantized_ffn_layers.begin() + static_cast<long>(i))
      bad("unquantized_ffn_layers", fmt::format("lists layer {} twice", l));
  }
  if (!std::isfinite(activation_scale_ub) || activation_scale_ub < 0)
    bad("activation_scale_ub", "must be a finite number >= 0 (0: no bound)");
  if (activation_scale_ub > 0 && linear_dtype != DType::kFp8Channel)
    bad("activation_scale_ub",
        fmt::format("is set with linear_dtype {}; expected fp8_channel (fbgemm's FP8 GEMMs)",
                    dtype_name(linear_dtype)));
  for (auto [key, value] : {std::pair{"llm_int8_threshold", llm_int8_threshold},
                            std::pair{"llm_int8_outlier_columns", llm_int8_outlier_columns}})
    if (!std::isfinite(value) || value < 0)
      bad(key, fmt::format("is {}; expected a finite number >= 0", value));
  if ((llm_int8_threshold != 6.0 || llm_int8_outlier_columns != 6.0) && linear_dtype != DType::kBnbInt8 &&
      expert_dtype != DType::kBnbInt8)
    bad(llm_int8_threshold != 6.0 ? "llm_int8_threshold" : "llm_int8_outlier_columns",
        fmt::format("is set with linear_dtype {}; expected bnb_int8 matrices (LLM.int8())",
                    dtype_name(linear_dtype)));
  if (static_input_scales &&
      (linear_dtype != DType::kFp8Tensor || (is_moe() && expert_dtype != DType::kFp8Tensor)))
    bad("activation_scheme",
        fmt::format("static with linear_dtype {}{}; expected fp8_tensor weights (per-tensor FP8 releases) "
                    "for every quantized matrix",
                    dtype_name(linear_dtype),
                    is_moe() ? fmt::format(" and expert_dtype {}", dtype_name(expert_dtype)) : ""));
  if (matrix_format(kv_dtype))
    bad("kv_dtype",
        fmt::format("{} is a weight format; expected fp16, bf16, fp8 or int8", dtype_name(kv_dtype)));
  if (matrix_format(dtype))
    bad("dtype",
        fmt::format("{} is a matrix format (the norms and embeddings are in dtype); expected fp16, bf16, "
                    "fp8, int8 or int4, with {} as expert_dtype / linear_dtype",
                    dtype_name(dtype), dtype_name(dtype)));
  for (auto [key, cap] : {std::pair{"attn_softcap", attn_softcap}, std::pair{"final_softcap", final_softcap}})
    if (!std::isfinite(cap) || cap < 0) bad(key, "must be a finite number >= 0 (0: no soft-capping)");
  if (attn_softcap > 0 && attention != AttentionKind::kGqa)
    bad("attn_softcap", "is set for MLA attention; expected GQA");
  if (query_pre_attn_scalar < 0)
    bad("query_pre_attn_scalar", "must be >= 0 (0: the softmax scale of head_dim)");
  if (!norm_bias && norm != NormKind::kLayerNorm)
    bad("norm_bias", "is false for RMSNorm, which has no bias; expected it with norm: layernorm only");
  if (!std::isfinite(clip_qkv) || clip_qkv < 0)
    bad("clip_qkv", "must be a finite number >= 0 (0: q, k and v unclamped)");
  if (clip_qkv > 0 && attention != AttentionKind::kGqa)
    bad("clip_qkv", "is set for MLA attention; expected GQA (DBRX clamps its fused q / k / v projection)");
  if (!std::isfinite(norm_weight_offset))
    bad("norm_weight_offset", "must be a finite number (0: the gain alone)");
  if (position_offset < 0 || (position_offset > 0 && learned_positions == 0))
    bad("position_offset", "needs learned_positions > 0 and must be >= 0");
  if (sliding_window < 0) bad("sliding_window", "must be >= 1 (0: no window)");
  if (rotary_dim != 0 && (attention != AttentionKind::kGqa || learned_positions > 0 || rotary_dim < 2 ||
                          rotary_dim % 2 != 0 || rotary_dim > head_dim))
    bad("rotary_dim",
        fmt::format("{} with head_dim {}{}; expected an even number in [2, head_dim] (RoPE with GQA), "
                    "or 0 for the whole head",
                    rotary_dim, head_dim,
                    attention != AttentionKind::kGqa ? " and MLA"
                    : learned_positions > 0          ? " and learned positions"
                                                     : ""));
  if (attention_chunk < 0) bad("attention_chunk", "must be >= 1 (0: no chunked attention)");
  if (attention_chunk > 0 && sliding_window > 0)
    bad("attention_chunk", "is set with sliding_window; expected one of them (a chunk or a window)");
  if (attention_chunk > 0 && attention != AttentionKind::kGqa)
    bad("attention_chunk", "is set for MLA attention; expected GQA");
  if (sliding_window == 0 && attention_chunk == 0 && !full_attention_layers.empty())
    bad("full_attention_layers",
        "is set, but neither sliding_window nor attention_chunk is: every layer already attends to its "
        "whole context");
  if ((sliding_window > 0 || attention_chunk > 0) && windowed_layers() == 0)
    bad("full_attention_layers", fmt::format("lists every layer, so no layer has the {}; expected some layer "
                                             "left out, or no {}",
                                             sliding_window > 0 ? "sliding window" : "chunked attention",
                                             sliding_window > 0 ? "sliding_window" : "attention_chunk"));
  if (!nope_layers.empty() && (attention != AttentionKind::kGqa || learned_positions > 0))
    bad("nope_layers", "is set for a model without RoPE on GQA attention (MLA or learned positions)");
  if (attn_temperature_floor < 0) bad("attn_temperature_floor", "must be >= 1 (0: no temperature tuning)");
  // Llama 4's is 0.1: the temperature 1 + scale x log(floor(position / floor) + 1) multiplies the queries,
  // so a large scale overflows the FP16 scores.
  if (!(attn_temperature_scale >= 0 && attn_temperature_scale <= 10))
    bad("attn_temperature_scale", "must be a number in [0, 10] (Llama 4: 0.1)");
  if (attn_temperature_floor > 0 && nope_layers.empty())
    bad("attn_temperature_floor",
        "is set, but no layer is in nope_layers (the temperature scales their queries only)");
  if (attn_temperature_floor == 0 && attn_temperature_scale != 0)
    bad("attn_temperature_scale", "is set without attn_temperature_floor; expected both, or neither");
}

namespace {
// The optional list `key` of layer indices in [0, layers); each one names its entry when it is not one.
std::vector<int> layer_list(const ConfigNode& n, const char* key, int layers) {
  std::vector<int> out;
  if (!n.has(key)) return out;
  for (const auto& e : n.items(key)) {
    const std::string v = e.scalar();
    char* end = nullptr;
    const long layer = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || layer < 0 || layer >= layers)
      throw ConfigError(e.file(), e.path(), fmt::format("\"{}\" is not a layer index", v),
                        fmt::format("an integer in [0, {})", layers));
    out.push_back(static_cast<int>(layer));
  }
  return out;
}
}  // namespace

ModelSpec read_model(const ConfigNode& n) {
  ModelSpec m;
  m.file = n.file();
  n.ignore("description");
  n.ignore("source");
  m.name = n.get<std::string>("name");
  auto count = [&](const char* k) { return static_cast<int>(n.get_int(k, 1, 1 << 30)); };
  auto count_or = [&](const char* k, int fallback) {
    return n.has(k) ? static_cast<int>(n.get_int(k, 0, 1 << 30)) : fallback;
  };
  m.layers = count("layers");
  m.hidden = count("hidden");
  m.heads = count("heads");
  m.kv_heads = count_or("kv_heads", m.heads);
  m.head_dim = count_or("head_dim", m.hidden / m.heads);
  m.ffn = count_or("ffn", 0);
  m.ffn_kind = n.get_or<std::string>("ffn_kind", "gated") == "gated" ? FfnKind::kGated : FfnKind::kTwoMatrix;
  if (n.has("ffn_kind")) n.get_enum("ffn_kind", {"gated", "two_matrix"});
  if (n.has("activation")) {
    const std::string a = n.get_enum("activation", {"silu", "gelu", "gelu_tanh", "relu", "swiglu_oai"});
    m.activation = a == "gelu"         ? Activation::kGelu
                   : a == "gelu_tanh"  ? Activation::kGeluTanh
                   : a == "relu"       ? Activation::kRelu
                   : a == "swiglu_oai" ? Activation::kSwigluOai
                                       : Activation::kSilu;
  } else if (m.ffn_kind == FfnKind::kTwoMatrix) {
    n.fail("activation", "missing: a two-matrix FFN names its activation", "one of relu, gelu, gelu_tanh");
  }
  m.mlp_bias = n.get_or<bool>("mlp_bias", false);
  m.norm = n.get_or<std::string>("norm", "rmsnorm") == "rmsnorm" ? NormKind::kRmsNorm : NormKind::kLayerNorm;
  if (n.has("norm")) n.get_enum("norm", {"rmsnorm", "layernorm"});
  m.norm_bias = n.get_or<bool>("norm_bias", true);
  m.norm_weight_offset = n.get_or<double>("norm_weight_offset", 0.0);
  m.scale_embedding = n.get_or<bool>("scale_embedding", false);
  m.post_norms = n.get_or<bool>("post_norms", false);
  m.attn_softcap = n.get_or<double>("attn_softcap", 0.0);
  m.final_softcap = n.get_or<double>("final_softcap", 0.0);
  m.query_pre_attn_scalar = count_or("query_pre_attn_scalar", 0);
  m.attn_sinks = n.get_or<bool>("attn_sinks", false);
  m.experts = count_or("experts", 0);
  m.top_k = count_or("top_k", 0);
  m.expert_ffn = count_or("expert_ffn", m.experts > 0 ? m.ffn : 0);
  m.moe_every = count_or("moe_every", 1);
  m.first_moe_layer = count_or("first_moe_layer", 0);
  m.shared_experts = count_or("shared_experts", 0);
  m.shared_expert_ffn = count_or("shared_expert_ffn", m.shared_experts > 0 ? m.expert_ffn : 0);
  m.shared_expert_gate = n.get_or<bool>("shared_expert_gate", false);
  m.router_renormalize = n.get_or<bool>("router_renormalize", true);
  if (n.has("router")) {
    const std::string r = n.get_enum(
        "router", {"softmax_topk", "sparsemixer", "group_limited_greedy", "noaux_tc", "sigmoid_topk"});
    m.router = r == "sparsemixer"            ? Router::kSparseMixer
               : r == "group_limited_greedy" ? Router::kGroupLimited
               : r == "noaux_tc"             ? Router::kNoAuxTc
               : r == "sigmoid_topk"         ? Router::kSigmoidTopK
                                             : Router::kSoftmaxTopK;
  }
  m.router_jitter = n.get_or<double>("router_jitter", m.router_jitter);
  m.router_groups = count_or("router_groups", 1);
  m.router_topk_groups = count_or("router_topk_groups", 1);
  m.routed_scaling = n.get_or<double>("routed_scaling", 1.0);
  m.router_bias = n.get_or<bool>("router_bias", false);
  m.expert_input_scaled = n.get_or<bool>("expert_input_scaled", false);
  m.qkv_bias = n.get_or<bool>("qkv_bias", false);
  m.o_bias = n.get_or<bool>("o_bias", false);
  m.clip_qkv = n.get_or<double>("clip_qkv", 0.0);
  if (n.has("qk_norm")) {
    const std::string k = n.get_enum("qk_norm", {"none", "head", "whole", "l2"});
    m.qk_norm = k == "head"    ? QkNorm::kPerHead
                : k == "whole" ? QkNorm::kWhole
                : k == "l2"    ? QkNorm::kL2
                               : QkNorm::kNone;
  }
  if (n.has("weight_naming")) {
    const std::string w = n.get_enum("weight_naming", {"mixtral", "qwen_moe", "opt", "starcoder2", "phi3",
                                                       "deepseek", "dbrx", "gpt_oss", "llama4"});
    m.weight_naming = w == "qwen_moe"     ? WeightNaming::kQwenMoe
                      : w == "opt"        ? WeightNaming::kOpt
                      : w == "starcoder2" ? WeightNaming::kStarcoder2
                      : w == "phi3"       ? WeightNaming::kPhi3
                      : w == "deepseek"   ? WeightNaming::kDeepSeek
                      : w == "dbrx"       ? WeightNaming::kDbrx
                      : w == "gpt_oss"    ? WeightNaming::kGptOss
                      : w == "llama4"     ? WeightNaming::kLlama4
                                          : WeightNaming::kMixtral;
  }
  m.vocab = count("vocab");
  m.mtp_layers = count_or("mtp_layers", 0);
  m.draft_head = n.get_or<bool>("draft_head", false);
  m.draft_vocab = count_or("draft_vocab", 0);
  m.draft_states = count_or("draft_states", 1);
  m.tie_embeddings = n.get_or<bool>("tie_embeddings", false);
  m.lm_head_bias = n.get_or<bool>("lm_head_bias", false);
  m.learned_positions = count_or("learned_positions", 0);
  m.position_offset = count_or("position_offset", 0);
  try {
    m.dtype = parse_dtype(n.get_or<std::string>("dtype", "fp16"));
  } catch (const ConfigError&) {
    throw;
  } catch (const Error& e) {
    n.fail("dtype", e.what());
  }
  try {
    m.kv_dtype = parse_dtype(n.get_or<std::string>("kv_dtype", "fp16"));
  } catch (const ConfigError&) {
    throw;
  } catch (const Error& e) {
    n.fail("kv_dtype", e.what());
  }
  try {
    m.expert_dtype = n.has("expert_dtype") ? parse_dtype(n.get<std::string>("expert_dtype")) : m.dtype;
    if (n.has("expert_dtype") && m.experts == 0)
      n.fail("expert_dtype", fmt::format("is {} for a dense model (it has no experts)", dtype_name(m.expert_dtype)),
             "absent (a dense model's weights are all in dtype)");
  } catch (const ConfigError&) {
    throw;
  } catch (const Error& e) {
    n.fail("expert_dtype", e.what());
  }
  if (n.has("quant_group")) m.quant_group = static_cast<int>(n.get_int("quant_group", -1, 1 << 20));
  try {
    m.linear_dtype = n.has("linear_dtype") ? parse_dtype(n.get<std::string>("linear_dtype")) : m.dtype;
  } catch (const ConfigError&) {
    throw;
  } catch (const Error& e) {
    n.fail("linear_dtype", e.what());
  }
  if (auto mla = n.find("mla")) {
    m.attention = AttentionKind::kMla;
    m.mla.q_lora_rank = static_cast<int>(mla->get_int("q_lora_rank", 0, 1 << 20));
    m.mla.kv_lora_rank = static_cast<int>(mla->get_int("kv_lora_rank", 1, 1 << 20));
    m.mla.qk_nope_head_dim = static_cast<int>(mla->get_int("qk_nope_head_dim", 1, 1 << 20));
    m.mla.qk_rope_head_dim = static_cast<int>(mla->get_int("qk_rope_head_dim", 0, 1 << 20));
    m.mla.v_head_dim = static_cast<int>(mla->get_int("v_head_dim", 1, 1 << 20));
    mla->finish();
    // A query head is qk_nope_head_dim + qk_rope_head_dim wide; every head reads the one shared latent.
    const int qk = m.mla.qk_nope_head_dim + m.mla.qk_rope_head_dim;
    if (n.has("head_dim") && m.head_dim != qk)
      n.fail("head_dim",
             fmt::format("{} differs from MLA's qk_nope_head_dim + qk_rope_head_dim = {}", m.head_dim, qk),
             "absent, or their sum");
    if (n.has("kv_heads") && m.kv_heads != m.heads)
      n.fail("kv_heads",
             fmt::format("{} differs from heads = {} (MLA: every head has its keys)", m.kv_heads, m.heads),
             "absent, or heads");
    m.head_dim = qk;
    m.kv_heads = m.heads;
  }
  m.dense_layers = layer_list(n, "dense_layers", m.layers);
  m.sliding_window = count_or("sliding_window", 0);
  m.rotary_dim = count_or("rotary_dim", 0);
  m.full_attention_layers = layer_list(n, "full_attention_layers", m.layers);
  m.attention_chunk = count_or("attention_chunk", 0);
  m.nope_layers = layer_list(n, "nope_layers", m.layers);
  m.unquantized_attention = n.get_or<bool>("unquantized_attention", false);
  m.unquantized_ffn_layers = layer_list(n, "unquantized_ffn_layers", m.layers);
  m.activation_scale_ub = n.get_or<double>("activation_scale_ub", 0.0);
  m.llm_int8_threshold = n.get_or<double>("llm_int8_threshold", m.llm_int8_threshold);
  m.llm_int8_outlier_columns = n.get_or<double>("llm_int8_outlier_columns", m.llm_int8_outlier_columns);
  if (n.has("activation_scheme"))  // documented default dynamic
    m.static_input_scales = n.get_enum("activation_scheme", {"dynamic", "static"}) == "static";
  m.attn_temperature_floor = count_or("attn_temperature_floor", 0);
  m.attn_temperature_scale = n.get_or<double>("attn_temperature_scale", 0.0);
  n.finish();
  m.validate();
  return m;
}

ModelSpec mtp_draft(const ModelSpec& m) {
  if (m.mtp_layers < 1)
    throw Error(
        fmt::format("model {} has no multi-token-prediction module (mtp_layers 0); expected a model that "
                    "states one (DeepSeek-V3: num_nextn_predict_layers 1) or another draft",
                    m.name));
  if (m.sliding_window > 0 || m.attention_chunk > 0 || !m.nope_layers.empty())
    throw Error(
        fmt::format("model {}: a multi-token-prediction module of a model with per-layer attention "
                    "patterns (sliding window, chunks, NoPE layers) is not modelled",
                    m.name));
  ModelSpec d = m;
  d.name = m.name + "-mtp";
  d.layers = 1;
  d.mtp_layers = 0;
  d.draft_head = true;
  d.unquantized_ffn_layers =  // its one layer's FFN as m's last layer's
      listed(m.unquantized_ffn_layers, m.layers - 1) ? std::vector<int>{0} : std::vector<int>{};
  if (m.is_moe()) {  // one layer of the kind of m's last
    const bool moe = m.is_moe_layer(m.layers - 1);
    d.first_moe_layer = 0;
    d.moe_every = 1;
    d.dense_layers = moe ? std::vector<int>{} : std::vector<int>{0};
  }
  d.validate();
  return d;
}

ModelSpec load_model(std::string_view name_or_path) {
  const ConfigText t = resolve_config(name_or_path, "models");
  if (t.label.ends_with(".json")) return import_hf_config(t.text, t.label);
  return read_model(ConfigNode::parse(t.text, t.label));
}

}  // namespace duplex::compiler
