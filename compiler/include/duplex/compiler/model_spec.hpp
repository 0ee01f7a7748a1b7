#pragma once
// ModelSpec: the shape of a decoder-only LLM / MoE model, enough to lower it to ops and count its
// parameters. Read from configs/models/*.yaml (read_model) or a HuggingFace config.json (import_hf_config).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "duplex/base/config.hpp"
#include "duplex/compiler/dtype.hpp"

namespace duplex::compiler {

enum class FfnKind { kGated, kTwoMatrix };   // gated: gate+up+down (SwiGLU); two-matrix: up+down
enum class NormKind { kRmsNorm, kLayerNorm };  // LayerNorm with a gain and a bias
// The FFN's activation: gated, h = act(gate) * up; two-matrix, h = act(fc1 . x). kGelu is the exact (erf)
// form (GLaM, HF "gelu"); kGeluTanh its tanh approximation (HF "gelu_pytorch_tanh", "gelu_new"); kRelu OPT's.
// kSwigluOai: gpt-oss's clamped SwiGLU, gated only: g = min(gate, 7), u = clamp(up, -7, 7),
// h = g sigmoid(1.702 g) (u + 1) (HF GptOssExperts' alpha and limit, kSwigluOaiAlpha / kSwigluOaiLimit).
enum class Activation { kSilu, kGelu, kGeluTanh, kRelu, kSwigluOai };
inline constexpr double kSwigluOaiAlpha = 1.702;  // source: HF GptOssExperts.alpha (OpenAI gpt-oss swiglu)
inline constexpr double kSwigluOaiLimit = 7.0;    // source: HF GptOssExperts.limit (config swiglu_limit)
enum class AttentionKind { kGqa, kMla };     // MLA: DeepSeek-V2/V3 multi-head latent attention
// RMSNorm of the projected queries and keys before RoPE: per head over head_dim (Qwen3: q_norm / k_norm
// weights [head_dim]) or over each projection's whole width (OLMoE: [q_dim] and [kv_dim]). kL2: Llama 4's
// Llama4TextL2Norm, per head over head_dim without a gain (no weights), after RoPE and only in the layers
// that rotate (not in nope_layers); RoPE keeps a head's norm, so before or after differs by rounding only.
enum class QkNorm { kNone, kPerHead, kWhole, kL2 };
// The tensor names of a checkpoint's MoE layers (HF safetensors): Mixtral's block_sparse_moe.gate /
// experts.E.w1|w2|w3, or Qwen-MoE's (also OLMoE, Qwen3-MoE) mlp.gate / experts.E.gate_proj|up_proj|down_proj
// with mlp.shared_expert.* and mlp.shared_expert_gate. Dense layers are named alike in both. Two dense
// families name every tensor their own way: OPT (model.decoder.*, fc1 / fc2, learned positions) and
// StarCoder2 (mlp.c_fc / mlp.c_proj). Gemma uses the Llama names (kMixtral).
// Phi-3 stores q / k / v as one self_attn.qkv_proj and gate / up as one mlp.gate_up_proj (rows stacked).
// DeepSeek-V2 / V3: MLA's self_attn.q_proj (or q_a_proj, q_a_layernorm, q_b_proj), kv_a_proj_with_mqa,
// kv_a_layernorm, kv_b_proj and o_proj; Qwen-MoE's expert names with mlp.shared_experts.* (plural) and
// mlp.gate.e_score_correction_bias.
// gpt-oss: Llama's attention names (+ self_attn.sinks); mlp.router.weight / bias; every expert stacked in
// mlp.experts.gate_up_proj [E, hidden, 2 ffn] (gate and up interleaved: columns 2i and 2i + 1) and
// down_proj [E, ffn, hidden] (both stored input-major), with their _bias tensors.
// Llama 4: Llama's attention names; the FFN is feed_forward.*: dense layers' gate_proj / up_proj /
// down_proj, MoE layers' router.weight, experts.gate_up_proj [E, hidden, 2 ffn] (gate the first ffn columns,
// up the last) and experts.down_proj [E, ffn, hidden] (input-major, no biases), shared_expert.*_proj.
enum class WeightNaming { kMixtral, kQwenMoe, kOpt, kStarcoder2, kPhi3, kDeepSeek, kDbrx, kGptOss, kLlama4 };
// How a token's experts and their weights are chosen: the softmax's top_k (optionally renormalised), or
// Phi-3.5-MoE's sparsemixer (top 2; each expert's weight is the softmax over the logits within 2 x
// router_jitter, relative, of its own; HF sparsemixer in inference); DeepSeek-V2's group-limited greedy
// (the softmax's top_k among the experts of the router_topk_groups groups, of router_groups, whose highest
// probability is highest); or DeepSeek-V3's noaux_tc (sigmoid scores; the choice adds a per-expert
// correction bias and keeps the groups with the highest sum of their two best; the weights are the scores).
// Llama 4's sigmoid top-k: the top_k experts by logit, each weighted by the sigmoid of its logit.
// Every router but the sparsemixer multiplies the chosen weights by routed_scaling.
enum class Router { kSoftmaxTopK, kSparseMixer, kGroupLimited, kNoAuxTc, kSigmoidTopK };

struct MlaSpec {                // only for AttentionKind::kMla (DeepSeek field names)
  int q_lora_rank = 0;          // 0: q projected directly from hidden
  int kv_lora_rank = 0;
  int qk_nope_head_dim = 0;
  int qk_rope_head_dim = 0;
  int v_head_dim = 0;
};

struct ModelSpec {
  std::string name;
  std::string file;             // where it was read from (for messages)
  int layers = 0;
  int hidden = 0;
  int heads = 0;                // query heads
  int kv_heads = 0;
  int head_dim = 0;
  AttentionKind attention = AttentionKind::kGqa;
  MlaSpec mla;
  int ffn = 0;                  // dense FFN width (dense layers)
  FfnKind ffn_kind = FfnKind::kGated;
  Activation activation = Activation::kSilu;
  // The FFN's matrices carry biases: dense (OPT fc1 / fc2, StarCoder2 c_fc / c_proj) and routed experts
  // alike (gpt-oss: gate, up and down); a gated FFN biases gate and up.
  bool mlp_bias = false;
  NormKind norm = NormKind::kRmsNorm;
  bool norm_bias = true;  // LayerNorm adds a bias (DBRX's nn.LayerNorm(bias=False): false); RMSNorm has none
  // Every norm scales by (norm_weight_offset + gain), the offset added in FP32: Gemma's RMSNorm stores its
  // gain less 1 (offset 1); 0 for every other family.
  double norm_weight_offset = 0;
  // The embedding rows are multiplied by sqrt(hidden), rounded to the compute dtype first (Gemma).
  bool scale_embedding = false;
  // Each block's output is normed before its residual add (Gemma 2's post_attention_layernorm and
  // post_feedforward_layernorm), beside the norms before the blocks.
  bool post_norms = false;
  // Soft-capping (Gemma 2): the attention's scaled scores s -> attn_softcap x tanh(s / attn_softcap) before
  // the mask and softmax; the LM head's logits likewise with final_softcap. 0 = none.
  double attn_softcap = 0;
  double final_softcap = 0;
  // The softmax scale is 1 / sqrt(query_pre_attn_scalar) (Gemma 2); 0 = 1 / sqrt(head_dim).
  int query_pre_attn_scalar = 0;
  // Attention sinks (gpt-oss): a learned logit per query head joins each softmax's max and denominator, its
  // own probability dropped, so a query may attend to nothing. GQA only.
  bool attn_sinks = false;
  int experts = 0;              // routed experts; 0 = dense model
  int top_k = 0;
  int expert_ffn = 0;           // width of one routed expert
  int moe_every = 1;            // MoE in layer l when l >= first_moe_layer and (l - first) % moe_every == moe_every - 1
  int first_moe_layer = 0;      // layers before this are dense (DeepSeek first_k_dense_replace)
  std::vector<int> dense_layers;  // explicit dense layers among MoE ones (Qwen mlp_only_layers)
  int shared_experts = 0;       // always-active experts (DeepSeek n_shared_experts / Qwen2-MoE shared expert)
  int shared_expert_ffn = 0;    // width of one shared expert
  // Qwen2-MoE: the shared experts' output is scaled by sigmoid(x . w) per token, w [1, hidden].
  bool shared_expert_gate = false;
  // Top-k routing weights renormalised to sum 1 (HF norm_topk_prob; Mixtral always); else the softmax
  // probabilities of the chosen experts as they are (Qwen2-MoE, OLMoE defaults).
  bool router_renormalize = true;
  Router router = Router::kSoftmaxTopK;
  double router_jitter = 0.01;  // kSparseMixer's eps (HF router_jitter_noise; source: PhimoeConfig default)
  int router_groups = 1;        // kGroupLimited / kNoAuxTc: groups of consecutive experts (DeepSeek n_group)
  int router_topk_groups = 1;   // ... of which the best this many are kept (DeepSeek topk_group)
  double routed_scaling = 1.0;  // the routed experts' weights x this (DeepSeek routed_scaling_factor)
  bool router_bias = false;     // the router's gate adds a bias [experts] to its logits (gpt-oss)
  // The routing weight multiplies the routed expert's input instead of its output (Llama 4's
  // routed_in = hidden x router_scores): y = sum over chosen e of Expert_e(w_e x).
  bool expert_input_scaled = false;
  bool qkv_bias = false;  // q / k / v projections carry a bias (Qwen2; Llama attention_bias)
  bool o_bias = false;    // the output projection carries one (Llama / Qwen3 / OLMoE attention_bias)
  QkNorm qk_norm = QkNorm::kNone;
  // The q / k / v projections' outputs are clamped to [-clip_qkv, clip_qkv] (after their biases, before
  // q / k norms and RoPE; DBRX attn_config.clip_qkv); 0 = unclamped. GQA only.
  double clip_qkv = 0;
  WeightNaming weight_naming = WeightNaming::kMixtral;
  // Multi-token-prediction modules the release carries after its layers (DeepSeek-V3's
  // num_nextn_predict_layers: 1); not in params() or the weights: they serve only as a speculative draft
  // (mtp_draft, `duplex simulate --draft mtp`).
  int mtp_layers = 0;
  // This spec is a speculative draft head on the target's hidden state: such a module (mtp_draft sets it) or
  // an EAGLE head (YAML draft_head: true). Before its layers it normalizes the token's embedding and the
  // target's last hidden state and projects the pair back to hidden ([hidden][2 hidden]: the MTP module's
  // eh_proj, EAGLE's fc); it uses the target's embedding and LM head, which it does not hold.
  bool draft_head = false;
  // A draft head's own LM head over the first draft_vocab tokens of a frequency-ranked subset of the target's
  // vocabulary (EAGLE-3's draft_vocab_size, FR-Spec), which it holds ([draft_vocab][hidden], in dtype); 0:
  // the target's LM head.
  int draft_vocab = 0;
  // The target's hidden states a draft head fuses: 1 (an MTP module, EAGLE: the last layer's, with the
  // token's embedding, every pass, as draft_head states) or 3 (EAGLE-3: a low, a middle and a high layer's,
  // projected to hidden by its fc [hidden][3 hidden] in a step's first draft pass only; its layer's q / k / v
  // then read the normalized embedding and hidden state side by side, [.][2 hidden], every pass).
  int draft_states = 1;
  int vocab = 0;
  bool tie_embeddings = false;
  bool lm_head_bias = false;    // the LM head adds a bias [vocab] to the logits (Phi-3.5-MoE lm_head_bias)
  int learned_positions = 0;    // OPT-style learned position embeddings (rows); 0 = RoPE
  // RoPE rotates the first rotary_dim elements of each head (pairs (i, i + rotary_dim / 2)), the rest pass
  // unrotated (HF partial_rotary_factor: Phi-4-mini's 0.75); 0 = the whole head. GQA only (MLA rotates its
  // qk_rope_head_dim part).
  int rotary_dim = 0;
  // Row of the position table that position 0 reads (OPT: 2, its table has max_position_embeddings + 2 rows).
  int position_offset = 0;
  // Sliding-window attention (Mistral, Qwen2 with use_sliding_window, Phi-3): a query attends to the last
  // `sliding_window` tokens (itself included) in every layer but `full_attention_layers`; 0 = every layer
  // attends to its whole context. Lowering windows the attention's reads and FLOPs; the serving scheduler
  // frees the windowed layers' KV blocks behind the window (runtime KvBlockManager).
  int sliding_window = 0;
  std::vector<int> full_attention_layers;
  // Chunked attention (Llama 4's attention_chunk_size): a query at position p attends only to the tokens of
  // its own chunk, [p - p % attention_chunk, p], in every layer but `full_attention_layers`; 0 = none. Not
  // with sliding_window. The serving scheduler frees a chunked layer's KV blocks of past chunks.
  int attention_chunk = 0;
  // Layers whose q and k are not rotated (Llama 4's NoPE layers: no_rope_layers[l] == 0). GQA with RoPE only.
  std::vector<int> nope_layers;
  // Attention temperature tuning on the nope_layers (Llama 4): a query at position p is scaled by
  // 1 + attn_temperature_scale x log(1 + floor((p + 1) / attn_temperature_floor)) before its scores;
  // attn_temperature_floor 0 = none (HF attn_temperature_tuning, attn_scale, floor_scale).
  double attn_temperature_scale = 0;
  int attn_temperature_floor = 0;
  DType dtype = DType::kFp16;   // weights
  DType kv_dtype = DType::kFp16;
  // The routed and shared experts' weight matrices (their biases stay in dtype): gpt-oss ships them in MXFP4.
  // Equal to dtype unless a config says otherwise (readers set it; a dense model ignores it).
  DType expert_dtype = DType::kFp16;
  // The attention projections' and dense FFNs' weight matrices (their biases, the norms, the embeddings, the
  // routers and the LM head stay in dtype): FP8 releases (fp8_block128) quantize them with the experts.
  // Equal to dtype unless a config says otherwise (readers set it).
  DType linear_dtype = DType::kFp16;
  // Inputs per scale (and zero point) of the grouped 4-bit formats (int4_awq / int4_gptq / int4_pack): 32, 64
  // or 128 (a release's group_size), or kPerRowGroup (-1: a row's inputs one group; GPTQ's formats and
  // int4_pack's strategy channel, not AWQ); it applies to both expert_dtype and linear_dtype.
  int quant_group = kInt4Group;
  // Matrices a release leaves in dtype beside a quantized linear_dtype (Meta's Llama 3.1 FP8 release,
  // quant_method fbgemm_fp8, quantizes the FFNs only, and not those of its first and last layers): every
  // layer's attention projections when unquantized_attention; the dense FFN matrices of the layers in
  // unquantized_ffn_layers.
  bool unquantized_attention = false;
  std::vector<int> unquantized_ffn_layers;
  // The upper bound of the per-token activation scales of fbgemm's FP8 GEMMs (activation_scale_ub: each
  // token's inputs are scaled by min(max |x|, bound) / 448 and clipped) with linear_dtype fp8_channel; 0 =
  // none (llm-compressor's FP8-dynamic scheme). It names the release's layout (each FP8 matrix's module
  // stores it as NAME.input_scale_ub) and leaves the timing alone; the functional emulation bounds the xPU's
  // per-token scales by it (runtime activation_quant.hpp).
  double activation_scale_ub = 0;
  // Static activation scales of an fp8_tensor release (activation_scheme: static; AutoFP8's and
  // llm-compressor's static FP8 releases): each FP8 matrix's module stores its calibrated per-tensor scale as
  // NAME.input_scale. It names the release's layout and leaves the timing alone (the xPU's FP8 GEMMs are
  // timed alike under either scheme); the functional emulation quantizes the xPU's GEMM inputs at them (a
  // checkpoint's; runtime activation_quant.hpp). False: dynamic (activation_scheme: dynamic, the default), no
  // input scales stored.
  bool static_input_scales = false;
  // LLM.int8() (bnb_int8 matrices): bitsandbytes' MatMul8bitLt multiplies an input column in 16 bits when
  // some row of the call reaches llm_int8_threshold in it (BitsAndBytesConfig's; 0: pure INT8, no outlier
  // path). source: transformers BitsAndBytesConfig, llm_int8_threshold default 6.0. Functional emulation
  // finds the columns in the activations (runtime activation_quant.hpp); timing cannot, and charges each call
  // with llm_int8_outlier_columns of them (Op::xpu_bytes): a mean per GEMM input, which `duplex run` measures
  // on a checkpoint (its "LLM.int8() outlier columns" line). source: Dettmers et al., LLM.int8() (2022,
  // arXiv 2208.07339), introduction: at 6.7B parameters a sequence's outliers lie in 6 feature dimensions.
  double llm_int8_threshold = 6.0;
  double llm_int8_outlier_columns = 6.0;

  bool is_moe() const { return experts > 0; }
  bool is_moe_layer(int layer) const;
  // The MoE layers before `layer`: its index among the MoE layers when it is one.
  int moe_layers_before(int layer) const;
  // Tokens a query of this layer attends to at most; 0 = its whole context.
  int attention_window(int layer) const;
  // The chunk a query of this layer attends within (attention_chunk in the chunked layers); 0 = none.
  int attention_chunk_of(int layer) const;
  bool rotates(int layer) const;  // RoPE rotates its q and k: a RoPE model's layer not in nope_layers
  int windowed_layers() const;    // layers with a sliding window or chunked attention (0 without one)
  // "" without a window or chunk, else "sliding window 4096 (28 of 32 layers)" / "sliding window 4096
  // (every layer)" / "chunked attention 8192 (36 of 48 layers)".
  std::string window_note() const;
  int q_dim() const { return heads * head_dim; }
  int kv_dim() const { return kv_heads * head_dim; }
  // Elements of K and V cached per token per layer (GQA: 2 kv_dim; MLA: the compressed latent + rope key).
  std::int64_t kv_elements_per_token_layer() const;

  // Parameter counts (elements).
  std::int64_t attention_params() const;         // one layer's projection matrices
  std::int64_t attention_vector_params() const;  // one layer's attention biases and q / k norm gains
  std::int64_t ffn_params(int width) const;  // one FFN of this width (gated: 3 matrices, else 2; + biases)
  std::int64_t ffn_bias_params(int width) const;  // of which biases (mlp_bias: gate + up or fc1, and down)
  // Bytes of one expert FFN of this width: its matrices in expert_dtype, its biases in dtype.
  double expert_ffn_bytes(int width) const;
  std::int64_t embedding_params() const;  // input embedding + LM head (+ positions)
  // One MoE layer's router: its gate [experts, hidden] (+ the bias [experts] with router_bias).
  std::int64_t router_params() const;
  std::int64_t params() const;            // total
  std::int64_t active_params() const;     // per token (top_k experts + shared)
  // Parameters in expert_dtype: every routed and shared expert's matrices (biases excluded).
  std::int64_t expert_matrix_params() const;
  // The format of layer `layer`'s attention projection matrices and of its dense FFN matrices: linear_dtype,
  // or dtype where unquantized_attention / unquantized_ffn_layers keep them so.
  DType attention_matrix_dtype() const { return unquantized_attention ? dtype : linear_dtype; }
  DType dense_ffn_matrix_dtype(int layer) const;
  // Parameters in linear_dtype: every layer's attention projection matrices (MLA's low-rank norms excluded)
  // and the dense layers' FFN matrices (biases excluded), but those unquantized_attention and
  // unquantized_ffn_layers keep in dtype.
  std::int64_t linear_matrix_params() const;
  // Bytes of all weights: expert matrices in expert_dtype, linear matrices in linear_dtype, the rest in
  // dtype.
  double weight_bytes() const;
  // weight_bytes() by where the weights lie: layer `l`'s (attention, norms, its FFN, or its experts, router
  // and shared experts; each matrix in its format), the input embedding table (+ learned positions), and the
  // LM head (+ its bias) with the final norm (all in dtype). Their sum over the layers is weight_bytes() (a
  // tied LM head is the input table, counted there).
  double layer_weight_bytes(int l) const;
  double input_embedding_bytes() const;
  double lm_head_bytes() const;
  void validate() const;                  // throws duplex::Error naming file and field
};

// "silu", "gelu", "gelu_tanh", "relu", "swiglu_oai" (our YAML's names).
const char* activation_name(Activation a);
// "mixtral", "qwen_moe", "opt", "starcoder2", "phi3", "deepseek", "dbrx", "gpt_oss", "llama4"
const char* weight_naming_name(WeightNaming n);
// "softmax_topk", "sparsemixer", "group_limited_greedy", "noaux_tc", "sigmoid_topk"
const char* router_name(Router r);

// The first multi-token-prediction module of `m` (m.mtp_layers >= 1) as a draft model, "<name>-mtp": one
// decoder layer of the kind of m's last layer (MoE when that is), draft_head set. duplex::Error naming the
// model when it has no such module, or per-layer attention patterns (windows, chunks, NoPE layers) the
// module's single layer could not state.
ModelSpec mtp_draft(const ModelSpec& m);

// Strict reader of our YAML schema (configs/models/README.md).
ModelSpec read_model(const ConfigNode& n);
// Loads a preset name (configs/models/<name>.yaml) or a file: *.yaml (ours) or a HF config.json.
ModelSpec load_model(std::string_view name_or_path);

}  // namespace duplex::compiler
