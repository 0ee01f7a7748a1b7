#include "duplex/compiler/hf_import.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "duplex/base/error.hpp"
#include "hf_fields.hpp"
#include "hf_quantization.hpp"

namespace duplex::compiler {
namespace {

using nlohmann::json;

void read_dtype(const Fields& f, ModelSpec& m) {
  const std::string dtype = f.string_or("torch_dtype", f.string_or("dtype", "float16"));
  try {
    m.dtype = parse_dtype(dtype == "float32" ? "fp16" : dtype);  // fp32 checkpoints are served in fp16
    if (m.dtype == DType::kBf16) m.kv_dtype = DType::kBf16;      // HF caches K / V in the model's dtype
  } catch (const Error& e) {
    throw ConfigError(f.file(), "torch_dtype", e.what());
  }
}

// Sliding-window attention: on when sliding_window is set, use_sliding_window is not false and the window is
// shorter than max_position_embeddings (a window covering every position is full attention). Its layers:
// layer_types ("sliding_attention" / "full_attention" per layer) when given, else Qwen2's max_window_layers
// (the layers below it attend fully) when given, else every layer.
void read_window_layers(const Fields& f, ModelSpec& m) {
  const int window = f.integer_or("sliding_window", 0);
  if (window == 0 || !f.boolean_or("use_sliding_window", true)) return;
  const int positions = f.integer_or("max_position_embeddings", 0);
  if (positions > 0 && window >= positions) return;
  m.sliding_window = window;
  const char* kTypes = "a list of \"sliding_attention\" / \"full_attention\", one per layer";
  const std::vector<std::string> types = f.string_list_or_empty("layer_types", kTypes);
  if (!types.empty()) {
    if (static_cast<int>(types.size()) != m.layers)
      throw ConfigError(f.file(), "layer_types", fmt::format("has {} entries for {} layers", types.size(), m.layers),
                        kTypes);
    for (int l = 0; l < m.layers; ++l) {
      const std::string& t = types[static_cast<std::size_t>(l)];
      if (t == "full_attention") {
        m.full_attention_layers.push_back(l);
      } else if (t != "sliding_attention") {
        throw ConfigError(f.file(), fmt::format("layer_types[{}]", l), fmt::format("\"{}\" is not a layer type", t),
                          kTypes);
      }
    }
    return;
  }
  const int full_below = std::min(f.integer_or("max_window_layers", 0), m.layers);
  for (int l = 0; l < full_below; ++l) m.full_attention_layers.push_back(l);
}

// The window on the even layers only, the odd ones attending fully (Gemma2Config's and GptOssConfig's default
// layer_types).
void window_even_layers(ModelSpec& m) {
  m.full_attention_layers.clear();
  for (int l = 1; l < m.layers; l += 2) m.full_attention_layers.push_back(l);
}

// The window as read_window_layers states it; a window on no layer is no window.
void read_sliding_window(const Fields& f, ModelSpec& m) {
  read_window_layers(f, m);
  if (m.sliding_window > 0 && static_cast<int>(m.full_attention_layers.size()) == m.layers) {
    m.sliding_window = 0;
    m.full_attention_layers.clear();
  }
}

// HF's activation name (ACT2FN keys) at `key`.
Activation read_activation(const Fields& f, const char* key, const std::string& fallback) {
  const std::string a = f.string_or(key, fallback);
  if (a == "silu" || a == "swish") return Activation::kSilu;
  if (a == "gelu") return Activation::kGelu;
  // gelu_fast is the same tanh formula, factored differently.
  if (a == "gelu_pytorch_tanh" || a == "gelu_new" || a == "gelu_fast") return Activation::kGeluTanh;
  if (a == "relu") return Activation::kRelu;
  throw ConfigError(f.file(), f.path(key), fmt::format("\"{}\" is not a supported activation", a),
                    "one of silu, gelu, gelu_pytorch_tanh, gelu_new, gelu_fast, relu");
}

void read_common(const Fields& f, ModelSpec& m) {
  m.layers = f.integer("num_hidden_layers");
  m.hidden = f.integer("hidden_size");
  m.heads = f.integer("num_attention_heads");
  m.kv_heads = f.integer_or("num_key_value_heads", m.heads);
  m.head_dim = f.integer_or("head_dim", m.heads > 0 ? m.hidden / m.heads : 0);
  m.vocab = f.integer("vocab_size");
  m.tie_embeddings = f.boolean_or("tie_word_embeddings", false);
  m.ffn_kind = FfnKind::kGated;
  m.activation = read_activation(f, "hidden_act", "silu");
  m.norm = NormKind::kRmsNorm;
  read_dtype(f, m);
  read_sliding_window(f, m);
}

// Llama 4's text model (HF Llama4TextConfig's defaults): MoE on the moe_layers (else every
// interleave_moe_layer_step-th layer), each a shared expert beside the routed ones (both intermediate_size
// wide; dense layers intermediate_size_mlp), routed by the sigmoid of the top-k logits that scale the
// experts' inputs; no RoPE on the no_rope_layers zeros (else every no_rope_layer_interval-th layer), their
// queries temperature-tuned (attn_temperature_tuning, floor_scale, attn_scale); q / k L2-normed after RoPE
// (use_qk_norm) in the other layers, which attend within chunks of attention_chunk_size unless layer_types
// says otherwise.
void read_llama4_text(const Fields& f, const json& j, ModelSpec& m) {
  read_common(f, m);
  m.ffn = f.integer_or("intermediate_size_mlp", 16384);
  m.experts = f.integer_or("num_local_experts", 16);
  m.top_k = f.integer_or("num_experts_per_tok", 1);
  m.expert_ffn = f.integer_or("intermediate_size", 8192);
  m.shared_experts = 1;
  m.shared_expert_ffn = m.expert_ffn;
  m.router = Router::kSigmoidTopK;
  m.router_renormalize = false;
  m.expert_input_scaled = true;
  m.weight_naming = WeightNaming::kLlama4;
  const int step = f.integer_or("interleave_moe_layer_step", 1);
  if (step < 1) throw ConfigError(f.file(), f.path("interleave_moe_layer_step"), "is 0", "an integer >= 1");
  std::vector<int> moe = f.int_list_or_empty("moe_layers");
  if (!j.contains("moe_layers") || j["moe_layers"].is_null()) {
    m.moe_every = step;  // HF: range(step - 1, layers, step), which is_moe_layer's moe_every states
  } else {
    // An explicit list: every layer MoE but the ones it leaves out (dense_layers).
    std::sort(moe.begin(), moe.end());
    for (int l = 0; l < m.layers; ++l)
      if (!std::binary_search(moe.begin(), moe.end(), l)) m.dense_layers.push_back(l);
    for (int l : moe)
      if (l < 0 || l >= m.layers)
        throw ConfigError(f.file(), f.path("moe_layers"), fmt::format("holds {}", l),
                          fmt::format("layer indices in [0, {})", m.layers));
    if (moe.empty()) {  // a dense model: no router
      m.experts = m.top_k = m.expert_ffn = m.shared_experts = m.shared_expert_ffn = 0;
      m.router = Router::kSoftmaxTopK;
      m.router_renormalize = true;
      m.expert_input_scaled = false;
      m.dense_layers.clear();
    }
  }
  // no_rope_layers: 1 = the layer rotates, 0 = NoPE; absent or [] (HF's backward compatibility): every
  // no_rope_layer_interval-th layer is NoPE.
  std::vector<int> rope = f.int_list_or_empty("no_rope_layers");
  if (rope.empty()) {
    const int interval = f.integer_or("no_rope_layer_interval", 4);
    if (interval < 1)
      throw ConfigError(f.file(), f.path("no_rope_layer_interval"), "is 0", "an integer >= 1");
    for (int l = 0; l < m.layers; ++l) rope.push_back((l + 1) % interval != 0 ? 1 : 0);
  }
  if (static_cast<int>(rope.size()) != m.layers)
    throw ConfigError(f.file(), f.path("no_rope_layers"),
                      fmt::format("has {} entries for {} layers", rope.size(), m.layers),
                      "one 0 (NoPE) or 1 (RoPE) per layer");
  for (int l = 0; l < m.layers; ++l) {
    const int r = rope[static_cast<std::size_t>(l)];
    if (r != 0 && r != 1)
      throw ConfigError(f.file(), fmt::format("{}[{}]", f.path("no_rope_layers"), l), fmt::format("is {}", r),
                        "0 (NoPE) or 1 (RoPE)");
    if (r == 0) m.nope_layers.push_back(l);
  }
  if (f.boolean_or("use_qk_norm", true)) m.qk_norm = QkNorm::kL2;
  // attn_temperature_tuning is a boolean in Llama4TextConfig, an integer (4) in the released configs.
  const bool tuning =
      !j.contains("attn_temperature_tuning") || j["attn_temperature_tuning"].is_null() ||
      (j["attn_temperature_tuning"].is_boolean() ? j["attn_temperature_tuning"].get<bool>()
                                                 : f.number_or("attn_temperature_tuning", 1) != 0);
  if (tuning && !m.nope_layers.empty()) {
    m.attn_temperature_floor = f.integer_or("floor_scale", 8192);
    m.attn_temperature_scale = f.number_or("attn_scale", 0.1);
    if (m.attn_temperature_floor < 1)
      throw ConfigError(f.file(), f.path("floor_scale"), "is 0", "an integer >= 1");
  }
  // Chunked attention on the layers layer_types calls "chunked_attention", else on the RoPE layers.
  const int chunk = f.integer_or("attention_chunk_size", 8192);
  const char* kTypes = "a list of \"chunked_attention\" / \"full_attention\", one per layer";
  const std::vector<std::string> types = f.string_list_or_empty("layer_types", kTypes);
  if (!types.empty() && static_cast<int>(types.size()) != m.layers)
    throw ConfigError(f.file(), f.path("layer_types"),
                      fmt::format("has {} entries for {} layers", types.size(), m.layers), kTypes);
  for (int l = 0; l < m.layers; ++l) {
    bool chunked = rope[static_cast<std::size_t>(l)] == 1;
    if (!types.empty()) {
      const std::string& t = types[static_cast<std::size_t>(l)];
      if (t != "chunked_attention" && t != "full_attention")
        throw ConfigError(f.file(), fmt::format("{}[{}]", f.path("layer_types"), l),
                          fmt::format("\"{}\" is not a layer type", t), kTypes);
      chunked = t == "chunked_attention";
    }
    if (!chunked) m.full_attention_layers.push_back(l);
  }
  const int positions = f.integer_or("max_position_embeddings", 4096 * 32);
  if (chunk > 0 && chunk < positions && static_cast<int>(m.full_attention_layers.size()) < m.layers) {
    m.attention_chunk = chunk;
  } else {
    m.full_attention_layers.clear();  // a chunk covering every position is full attention
  }
  m.qkv_bias = m.o_bias = false;  // Llama4TextConfig.attention_bias is always false
}

}  // namespace

namespace {

// An EAGLE-3 draft head's config.json (architectures [LlamaForCausalLMEagle3]: SpecForge's and the EAGLE
// authors' releases): one Llama layer fusing three target states, with its own LM head over
// draft_vocab_size tokens (ModelSpec::draft_states, draft_vocab; absent: vocab_size, as vLLM and SGLang read
// it: the head still holds its own LM head). A target_hidden_size other than
// hidden_size (an fc over a wider target) is refused.
void read_eagle3_head(const Fields& f, ModelSpec& m) {
  const std::vector<std::string> architectures =
      f.string_list_or_empty("architectures", "a list of transformers class names");
  if (std::find(architectures.begin(), architectures.end(), "LlamaForCausalLMEagle3") == architectures.end())
    return;
  if (f.integer_or("target_hidden_size", m.hidden) != m.hidden)
    throw ConfigError(f.file(), "target_hidden_size",
                      fmt::format("{} with hidden_size {}: an fc over a wider target is not modelled",
                                  f.integer_or("target_hidden_size", m.hidden), m.hidden),
                      "absent or hidden_size");
  if (m.layers != 1)
    throw ConfigError(f.file(), "num_hidden_layers",
                      fmt::format("{} layers in an EAGLE-3 head are not modelled", m.layers), "1");
  m.draft_head = true;
  m.draft_states = 3;
  m.draft_vocab = f.integer_or("draft_vocab_size", m.vocab);
}

}  // namespace

ModelSpec import_hf_config(const std::string& json_text, const std::string& file) {
  json j;
  // A key written twice takes its last value, as Python's json module (and so transformers) reads it.
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {  // a syntax error, or a number past a double's range
    throw ConfigError(file, "", fmt::format("not valid JSON: {}", e.what()), "a HuggingFace config.json");
  }
  if (!j.is_object()) throw ConfigError(file, "", "the top level is not an object", "a HuggingFace config.json");
  const Fields f(j, file);
  const std::string type = f.string_or("model_type", "");
  ModelSpec m;
  m.file = file;
  m.name = f.string_or("_name_or_path", type);
  if (m.name.empty()) m.name = type;

  if (type == "llama" || type == "mistral" || type == "qwen2" || type == "qwen3" || type == "phi3") {
    read_common(f, m);
    m.ffn = f.integer("intermediate_size");
    if (type == "qwen3") m.qk_norm = QkNorm::kPerHead;
    if (type == "phi3") {
      m.weight_naming = WeightNaming::kPhi3;  // Llama's layout, fused qkv / gate_up
      // Phi-4-mini rotates 0.75 of each head (HF Phi3's q_rot / q_pass split: int(head_dim x factor)).
      const double factor = f.number_or("partial_rotary_factor", 1.0);
      if (!(factor > 0.0 && factor <= 1.0))
        throw ConfigError(file, "partial_rotary_factor", fmt::format("{} is not in (0, 1]", factor),
                          "the share of each head RoPE rotates");
      const int rotary = static_cast<int>(m.head_dim * factor);
      if (rotary != m.head_dim) m.rotary_dim = rotary;
    }
  } else if (type == "gemma" || type == "gemma2" || type == "gemma3_text" || type == "gemma3") {
    // Gemma: the Llama layout and names with a GeGLU FFN, RMSNorm scaling by (1 + weight), the embedding rows
    // times sqrt(hidden_size), tied embeddings (GemmaConfig's default) and a head_dim of its own. The
    // activation is hidden_activation, or GELU's tanh form when that is absent: HF's GemmaMLP ignores
    // hidden_act, which the first checkpoints set to "gelu" (transformers PR 29402). gemma3 is Gemma 3's
    // multimodal config: its language model's fields are in text_config (the vision tower is not modelled).
    const bool multimodal = type == "gemma3";
    const Fields g = multimodal ? f.child("text_config") : f;
    const json& gj = multimodal ? j["text_config"] : j;
    read_common(g, m);
    m.ffn = g.integer("intermediate_size");
    m.activation = read_activation(g, "hidden_activation", "gelu_pytorch_tanh");
    m.tie_embeddings = g.boolean_or("tie_word_embeddings", true);
    m.norm_weight_offset = 1.0;
    m.scale_embedding = true;
    if (type == "gemma3_text" || multimodal) {
      // Gemma 3 (HF Gemma3TextConfig's defaults): Gemma 2's norms after each block and query_pre_attn_scalar,
      // q / k RMSNorm per head, no soft-capping unless stated, a window (4096) on every layer but each
      // sliding_window_pattern-th (6) unless layer_types says otherwise. Its windowed layers rotate with
      // rope_local_base_freq and the others with rope_theta and rope_scaling: timing does not depend on it
      // (functional emulation reads it: runtime config_numerics).
      m.post_norms = true;
      m.qk_norm = QkNorm::kPerHead;
      m.attn_softcap = g.number_or("attn_logit_softcapping", 0.0);
      m.final_softcap = g.number_or("final_logit_softcapping", 0.0);
      m.query_pre_attn_scalar = g.integer_or("query_pre_attn_scalar", 256);
      if (!gj.contains("sliding_window") && g.integer_or("max_position_embeddings", 131072) > 4096)
        m.sliding_window = 4096;
      if (m.sliding_window > 0 && !gj.contains("layer_types")) {
        const int pattern = g.integer_or("sliding_window_pattern", 6);
        if (pattern < 1)
          throw ConfigError(file, g.path("sliding_window_pattern"), "is 0", "every n-th layer full: n >= 1");
        m.full_attention_layers.clear();
        for (int l = pattern - 1; l < m.layers; l += pattern) m.full_attention_layers.push_back(l);
        if (static_cast<int>(m.full_attention_layers.size()) == m.layers) {
          m.sliding_window = 0;  // a pattern of 1: every layer full
          m.full_attention_layers.clear();
        }
      }
    }
    if (type == "gemma2") {
      // Gemma 2 adds a norm after each block (post_attention_layernorm / post_feedforward_layernorm),
      // soft-capped attention scores and logits, the softmax scale of query_pre_attn_scalar, and a sliding
      // window on the layers layer_types names, else on every even layer (HF Gemma2Config's defaults).
      m.post_norms = true;
      // Absent: Gemma2Config's caps; null: none.
      auto cap = [&](const char* key, double fallback) {
        return j.contains(key) && j[key].is_null() ? 0.0 : f.number_or(key, fallback);
      };
      m.attn_softcap = cap("attn_logit_softcapping", 50.0);
      m.final_softcap = cap("final_logit_softcapping", 30.0);
      m.query_pre_attn_scalar = f.integer_or("query_pre_attn_scalar", 256);
      if (!j.contains("sliding_window") && f.integer_or("max_position_embeddings", 8192) > 4096)
        m.sliding_window = 4096;  // Gemma2Config's default window
      if (m.sliding_window > 0 && !j.contains("layer_types")) {
        window_even_layers(m);
      }
    }
  } else if (type == "starcoder2") {
    // StarCoder2: GQA + RoPE, LayerNorm, a two-matrix GELU (tanh) FFN (mlp.c_fc / c_proj); use_bias puts a
    // bias on every projection.
    read_common(f, m);
    m.ffn = f.integer("intermediate_size");
    m.ffn_kind = FfnKind::kTwoMatrix;
    m.activation = read_activation(f, "hidden_act", "gelu_pytorch_tanh");
    m.norm = NormKind::kLayerNorm;
    m.tie_embeddings = f.boolean_or("tie_word_embeddings", true);  // Starcoder2Config's default
    m.qkv_bias = m.o_bias = m.mlp_bias = f.boolean_or("use_bias", true);
    m.weight_naming = WeightNaming::kStarcoder2;
  } else if (type == "opt") {
    // OPT: MHA, learned positions (a table of max_position_embeddings + 2 rows, position p reads row p + 2),
    // LayerNorm before each block, a two-matrix FFN (fc1 / fc2), biases everywhere with enable_bias.
    m.layers = f.integer("num_hidden_layers");
    m.hidden = f.integer("hidden_size");
    m.heads = f.integer("num_attention_heads");
    m.kv_heads = m.heads;
    m.head_dim = m.heads > 0 ? m.hidden / m.heads : 0;
    m.vocab = f.integer("vocab_size");
    m.ffn = f.integer("ffn_dim");
    m.ffn_kind = FfnKind::kTwoMatrix;
    m.activation = read_activation(f, "activation_function", "relu");
    m.norm = NormKind::kLayerNorm;
    m.tie_embeddings = f.boolean_or("tie_word_embeddings", true);  // OPTConfig's default
    m.learned_positions = f.integer("max_position_embeddings") + 2;
    m.position_offset = 2;
    m.qkv_bias = m.o_bias = m.mlp_bias = f.boolean_or("enable_bias", true);
    m.weight_naming = WeightNaming::kOpt;
    if (f.integer_or("word_embed_proj_dim", m.hidden) != m.hidden)
      throw ConfigError(file, "word_embed_proj_dim", "differs from hidden_size (project_in / project_out)",
                        "hidden_size");
    if (!f.boolean_or("do_layer_norm_before", true))
      throw ConfigError(file, "do_layer_norm_before", "false (post-block LayerNorm) is not modelled", "true");
    if (!f.boolean_or("layer_norm_elementwise_affine", true))
      throw ConfigError(file, "layer_norm_elementwise_affine", "false is not modelled", "true");
    read_dtype(f, m);
  } else if (type == "mixtral" || type == "phimoe") {
    // Phi-3.5-MoE has Mixtral's field names, LayerNorm instead of RMSNorm, the sparsemixer router (eps
    // router_jitter_noise) and optionally a bias on the LM head.
    read_common(f, m);
    m.experts = f.integer("num_local_experts");
    m.top_k = f.integer("num_experts_per_tok");
    m.expert_ffn = f.integer("intermediate_size");
    if (type == "phimoe") {
      m.norm = NormKind::kLayerNorm;
      m.router = Router::kSparseMixer;
      m.router_jitter = f.number_or("router_jitter_noise", m.router_jitter);
      m.lm_head_bias = f.boolean_or("lm_head_bias", false);
    }
  } else if (type == "olmoe") {
    // OLMoE: every layer MoE; q / k RMSNorm over each projection's whole width; routing weights renormalised
    // only with norm_topk_prob (default false).
    read_common(f, m);
    m.experts = f.integer("num_experts");
    m.top_k = f.integer("num_experts_per_tok");
    m.expert_ffn = f.integer("intermediate_size");
    m.qk_norm = QkNorm::kWhole;
    m.router_renormalize = f.boolean_or("norm_topk_prob", false);
    m.weight_naming = WeightNaming::kQwenMoe;
  } else if (type == "dbrx") {
    // DBRX: MPT-style names, attention and FFN fields in nested objects (HF DbrxConfig's defaults);
    // LayerNorm without a bias; every layer MoE; q / k / v optionally clamped (clip_qkv).
    m.layers = f.integer("n_layers");
    m.hidden = f.integer("d_model");
    m.heads = f.integer("n_heads");
    const Fields attn = f.child("attn_config");
    m.kv_heads = attn.integer_or("kv_n_heads", 1);
    m.head_dim = m.heads > 0 ? m.hidden / m.heads : 0;
    m.clip_qkv = attn.number_or("clip_qkv", 0.0);
    if (!(m.clip_qkv >= 0))
      throw ConfigError(file, "attn_config.clip_qkv", fmt::format("{} is negative", m.clip_qkv),
                        "a number > 0, or null (unclamped)");
    m.vocab = f.integer("vocab_size");
    m.tie_embeddings = f.boolean_or("tie_word_embeddings", false);
    m.ffn_kind = FfnKind::kGated;
    m.norm = NormKind::kLayerNorm;
    m.norm_bias = false;
    const Fields ffn = f.child("ffn_config");
    m.experts = ffn.integer("moe_num_experts");
    m.top_k = ffn.integer("moe_top_k");
    m.expert_ffn = ffn.integer("ffn_hidden_size");
    if (j["ffn_config"].contains("ffn_act_fn") && !j["ffn_config"]["ffn_act_fn"].is_null())
      m.activation = read_activation(ffn.child("ffn_act_fn"), "name", "silu");
    // The chosen experts' softmax probabilities are divided by their p-norm (DbrxRouter; default p = 1, the
    // renormalisation to sum 1), or kept as they are when it is null. Other p are not modelled.
    const json& p = j["ffn_config"].contains("moe_normalize_expert_weights")
                        ? j["ffn_config"]["moe_normalize_expert_weights"]
                        : json(1.0);
    if (!p.is_null() && !(p.is_number() && p.get<double>() == 1.0))
      throw ConfigError(file, "ffn_config.moe_normalize_expert_weights",
                        fmt::format("{} is not modelled", p.dump()),
                        "1 (the weights renormalised to sum 1) or null (kept as they are)");
    m.router_renormalize = !p.is_null();
    m.weight_naming = WeightNaming::kDbrx;
    read_dtype(f, m);
  } else if (type == "gpt_oss") {
    // gpt-oss (HF GptOssConfig's defaults): every layer MoE with biased experts (gate and up fused and
    // interleaved) under gpt-oss's clamped SwiGLU, whatever hidden_act says (GptOssExperts ignores it); a
    // router with a bias whose top-k logits are softmaxed (the renormalised softmax top-k); q / k / v / o
    // biases; a sink logit per query head; a window (128) on the layers layer_types names, else on every
    // even layer. Experts in MXFP4 when quantization_config says so (the release checkpoints).
    read_common(f, m);
    m.experts = f.integer("num_local_experts");
    m.top_k = f.integer_or("num_experts_per_tok", f.integer_or("experts_per_token", 4));
    m.expert_ffn = f.integer("intermediate_size");
    m.activation = Activation::kSwigluOai;
    m.mlp_bias = true;
    m.router_bias = true;
    m.attn_sinks = true;
    m.weight_naming = WeightNaming::kGptOss;
    const double limit = f.number_or("swiglu_limit", kSwigluOaiLimit);
    if (limit != kSwigluOaiLimit)
      throw ConfigError(file, "swiglu_limit", fmt::format("{} is not modelled", limit),
                        fmt::format("{} (HF GptOssExperts' clamp)", kSwigluOaiLimit));
    if (!j.contains("sliding_window")) {  // GptOssConfig's default window, on the layers layer_types names
      json with_window = j;
      with_window["sliding_window"] = 128;
      read_sliding_window(Fields(with_window, file), m);
    }
    if (m.sliding_window > 0 && !j.contains("layer_types")) {
      window_even_layers(m);
    }
  } else if (type == "llama4_text" || type == "llama4") {
    // llama4 is Llama 4's multimodal config (Llama4ForConditionalGeneration): its language model's fields
    // are in text_config (the vision tower is not modelled).
    const bool multimodal = type == "llama4";
    const Fields text = multimodal ? f.child("text_config") : f;  // checks text_config before it is read
    read_llama4_text(text, multimodal ? j.at("text_config") : j, m);
  } else if (type == "qwen2_moe" || type == "qwen3_moe") {
    read_common(f, m);
    m.experts = f.integer("num_experts");
    m.top_k = f.integer("num_experts_per_tok");
    m.expert_ffn = f.integer("moe_intermediate_size");
    m.moe_every = f.integer_or("decoder_sparse_step", 1);
    m.dense_layers = f.int_list_or_empty("mlp_only_layers");
    m.ffn = f.integer_or("intermediate_size", 0);
    m.router_renormalize = f.boolean_or("norm_topk_prob", false);  // HF's default for both
    m.weight_naming = WeightNaming::kQwenMoe;
    if (type == "qwen2_moe") {
      // One shared expert, its output scaled by sigmoid(shared_expert_gate . x).
      m.shared_expert_ffn = f.integer_or("shared_expert_intermediate_size", 0);
      m.shared_experts = m.shared_expert_ffn > 0 ? 1 : 0;
      m.shared_expert_gate = m.shared_experts > 0;
    } else {
      m.qk_norm = QkNorm::kPerHead;
    }
  } else if (type == "deepseek_v2" || type == "deepseek_v3") {
    read_common(f, m);
    m.attention = AttentionKind::kMla;
    m.mla.q_lora_rank = f.integer_or("q_lora_rank", 0);
    m.mla.kv_lora_rank = f.integer("kv_lora_rank");
    m.mla.qk_nope_head_dim = f.integer("qk_nope_head_dim");
    m.mla.qk_rope_head_dim = f.integer("qk_rope_head_dim");
    m.mla.v_head_dim = f.integer("v_head_dim");
    m.head_dim = m.mla.qk_nope_head_dim + m.mla.qk_rope_head_dim;
    m.kv_heads = m.heads;
    m.ffn = f.integer("intermediate_size");
    m.experts = f.integer("n_routed_experts");
    m.top_k = f.integer("num_experts_per_tok");
    m.expert_ffn = f.integer("moe_intermediate_size");
    m.shared_experts = f.integer_or("n_shared_experts", 0);
    m.shared_expert_ffn = m.expert_ffn;
    m.first_moe_layer = f.integer_or("first_k_dense_replace", 0);
    m.mtp_layers = f.integer_or("num_nextn_predict_layers", 0);  // V3's multi-token prediction (a draft)
    if (f.integer_or("moe_layer_freq", 1) != 1)
      throw ConfigError(file, "moe_layer_freq", "values other than 1 are not supported", "1");
    m.weight_naming = WeightNaming::kDeepSeek;
    // Routing (DeepSeek's MoEGate; defaults: DeepseekV2Config / DeepseekV3Config). V2: softmax, greedy or
    // group-limited; V3: sigmoid scores with the noaux_tc choice. The remote code's V2 default is spelled
    // "gready".
    const bool v3 = type == "deepseek_v3";
    std::string method = f.string_or("topk_method", v3 ? "noaux_tc" : "greedy");
    if (method == "gready") method = "greedy";
    const std::string scoring = f.string_or("scoring_func", v3 ? "sigmoid" : "softmax");
    if (method == "greedy" && scoring == "softmax") {
      m.router = Router::kSoftmaxTopK;
    } else if (method == "group_limited_greedy" && scoring == "softmax") {
      m.router = Router::kGroupLimited;
    } else if (method == "noaux_tc" && scoring == "sigmoid") {
      m.router = Router::kNoAuxTc;
    } else {
      throw ConfigError(
          file, "topk_method",
          fmt::format("\"{}\" with scoring_func \"{}\" is not a DeepSeek router", method, scoring),
          "greedy or group_limited_greedy with softmax, or noaux_tc with sigmoid");
    }
    if (m.router != Router::kSoftmaxTopK) {
      m.router_groups = f.integer_or("n_group", v3 ? 8 : 1);
      m.router_topk_groups = f.integer_or("topk_group", v3 ? 4 : 1);
    }
    // DeepSeek's MoEGate renormalises only when it picks more than one expert.
    m.router_renormalize = f.boolean_or("norm_topk_prob", v3) && m.top_k > 1;
    m.routed_scaling = f.number_or("routed_scaling_factor", v3 ? 2.5 : 1.0);
  } else {
    throw ConfigError(
        file, "model_type", type.empty() ? "missing" : fmt::format("unsupported architecture \"{}\"", type),
        "one of llama, mistral, qwen2, qwen3, phi3, gemma, gemma2, gemma3_text, gemma3, starcoder2, opt, "
        "mixtral, phimoe, olmoe, dbrx, gpt_oss, llama4_text, llama4, qwen2_moe, qwen3_moe, deepseek_v2, "
        "deepseek_v3");
  }
  // Attention biases: Qwen2 / Qwen2-MoE always bias q, k and v (not o); the others bias all four projections
  // when attention_bias says so (default false).
  if (type == "qwen2" || type == "qwen2_moe") {
    m.qkv_bias = true;
  } else if (type == "gemma3") {
    m.qkv_bias = m.o_bias = f.child("text_config").boolean_or("attention_bias", false);
  } else if (type == "gpt_oss") {
    m.qkv_bias = m.o_bias = f.boolean_or("attention_bias", true);  // GptOssConfig's default
  } else if (type != "dbrx" && type != "deepseek_v2" && type != "deepseek_v3" && type != "starcoder2" &&
             type != "opt" && type != "llama4_text" && type != "llama4") {
    m.qkv_bias = m.o_bias = f.boolean_or("attention_bias", false);
  }
  read_quantization(f, type, m);
  read_eagle3_head(f, m);
  m.validate();
  return m;
}

}  // namespace duplex::compiler
