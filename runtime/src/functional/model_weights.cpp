#include "duplex/runtime/functional/model_weights.hpp"

#include <fmt/format.h>
#include <tbb/parallel_for.h>
#include <algorithm>
#include <cmath>
#include <numbers>

#include <unistd.h>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/runtime/functional/safetensors.hpp"
#include "duplex/runtime/workload/random.hpp"
#include "mxfp4.hpp"

namespace duplex::runtime::functional {

std::int64_t WeightTensor::numel() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

namespace weight_name {
std::string embedding() { return "model.embed_tokens.weight"; }
std::string final_norm() { return "model.norm.weight"; }
std::string lm_head() { return "lm_head.weight"; }
std::string lm_head_bias() { return "lm_head.bias"; }
std::string attn_norm(int layer) { return fmt::format("model.layers.{}.input_layernorm.weight", layer); }
std::string ffn_norm(int layer) { return fmt::format("model.layers.{}.post_attention_layernorm.weight", layer); }
std::string post_attn_norm(int layer) {
  return fmt::format("model.layers.{}.post_attn_norm.weight", layer);
}
std::string post_ffn_norm(int layer) {
  return fmt::format("model.layers.{}.post_ffn_norm.weight", layer);
}
std::string attn_proj(int layer, char which) {
  return fmt::format("model.layers.{}.self_attn.{}_proj.weight", layer, which);
}
std::string attn_bias(int layer, char which) {
  return fmt::format("model.layers.{}.self_attn.{}_proj.bias", layer, which);
}
std::string qk_norm(int layer, char which) {
  return fmt::format("model.layers.{}.self_attn.{}_norm.weight", layer, which);
}
std::string mla(int layer, const char* name) {
  return fmt::format("model.layers.{}.self_attn.{}.weight", layer, name);
}
std::string router_correction_bias(int layer) {
  return fmt::format("model.layers.{}.mlp.gate.e_score_correction_bias", layer);
}
std::string router(compiler::WeightNaming naming, int layer) {
  if (naming == compiler::WeightNaming::kLlama4)
    return fmt::format("model.layers.{}.feed_forward.router.weight", layer);
  if (naming == compiler::WeightNaming::kGptOss)
    return fmt::format("model.layers.{}.mlp.router.weight", layer);
  return naming == compiler::WeightNaming::kQwenMoe || naming == compiler::WeightNaming::kDeepSeek
             ? fmt::format("model.layers.{}.mlp.gate.weight", layer)
             : fmt::format("model.layers.{}.block_sparse_moe.gate.weight", layer);
}
std::string router_bias(int layer) {
  return fmt::format("model.layers.{}.mlp.router.bias", layer);
}
std::string sinks(int layer) {
  return fmt::format("model.layers.{}.self_attn.sinks", layer);
}
std::string expert(compiler::WeightNaming naming, int layer, int expert, const char* which) {
  if (naming == compiler::WeightNaming::kQwenMoe || naming == compiler::WeightNaming::kDeepSeek ||
      naming == compiler::WeightNaming::kGptOss || naming == compiler::WeightNaming::kLlama4)
    return fmt::format("model.layers.{}.mlp.experts.{}.{}_proj.weight", layer, expert, which);
  const std::string_view w = which;
  const int matrix = w == "gate" ? 1 : w == "down" ? 2 : 3;  // Mixtral: w1 gate, w2 down, w3 up
  return fmt::format("model.layers.{}.block_sparse_moe.experts.{}.w{}.weight", layer, expert, matrix);
}
std::string expert_bias(int layer, int expert, const char* which) {
  return fmt::format("model.layers.{}.mlp.experts.{}.{}_proj.bias", layer, expert, which);
}
std::string shared_expert(int layer, const char* which) {
  return fmt::format("model.layers.{}.mlp.shared_expert.{}_proj.weight", layer, which);
}
std::string shared_expert_gate(int layer) {
  return fmt::format("model.layers.{}.mlp.shared_expert_gate.weight", layer);
}
std::string dense_mlp(int layer, const char* which) {
  return fmt::format("model.layers.{}.mlp.{}_proj.weight", layer, which);
}
std::string dense_mlp_bias(int layer, const char* which) {
  return fmt::format("model.layers.{}.mlp.{}_proj.bias", layer, which);
}
std::string positions() {
  return "model.embed_positions.weight";
}
std::string norm_bias(const std::string& gain_name) {
  DUPLEX_ASSERT(gain_name.ends_with(".weight"), "a norm gain's name ends in .weight");
  return gain_name.substr(0, gain_name.size() - 6) + "bias";
}
}  // namespace weight_name

namespace {
// DBRX (HF DbrxForCausalLM): transformer.wte / blocks.L / norm_f; per block norm_attn_norm.{norm_1, attn.Wqkv
// (q, k and v stacked), attn.out_proj, norm_2} and ffn.{router.layer, experts.mlp.{w1, v1, w2}} (every
// expert's gate, up, down stacked; the three without ".weight": they are nn.Parameters).
std::string dbrx_checkpoint_name(const std::string& name) {
  if (name == weight_name::embedding()) return "transformer.wte.weight";
  if (name == weight_name::final_norm()) return "transformer.norm_f.weight";
  const std::string layers = "model.layers.";
  if (!name.starts_with(layers)) return name;  // lm_head.weight
  const std::size_t dot = name.find('.', layers.size());
  DUPLEX_ASSERT(dot != std::string::npos, "a layer tensor name without its layer index");
  const std::string block = "transformer.blocks." + name.substr(layers.size(), dot - layers.size()) + ".";
  const std::string rest = name.substr(dot + 1);
  if (rest == "input_layernorm.weight") return block + "norm_attn_norm.norm_1.weight";
  if (rest == "post_attention_layernorm.weight") return block + "norm_attn_norm.norm_2.weight";
  if (rest == "self_attn.o_proj.weight") return block + "norm_attn_norm.attn.out_proj.weight";
  if (rest.starts_with("self_attn.") && rest.ends_with("_proj.weight"))
    return block + "norm_attn_norm.attn.Wqkv.weight";
  if (rest == "block_sparse_moe.gate.weight") return block + "ffn.router.layer.weight";
  const std::string experts = "block_sparse_moe.experts.";
  DUPLEX_ASSERT(rest.starts_with(experts), "DBRX names no tensor " + name);
  // Mixtral's w1 (gate), w3 (up), w2 (down) -> DBRX's w1, v1, w2.
  const std::string matrix = rest.substr(rest.find('.', experts.size()) + 1);
  return block + "ffn.experts.mlp." + (matrix == "w3.weight" ? "v1" : matrix.substr(0, 2));
}
}  // namespace

// gpt-oss (HF GptOssForCausalLM): Llama's names but its experts', every expert of a layer in one tensor per
// kind: mlp.experts.gate_up_proj (gate and up, interleaved), down_proj, gate_up_proj_bias, down_proj_bias.
std::string gpt_oss_checkpoint_name(const std::string& name) {
  const std::size_t experts = name.find(".mlp.experts.");
  if (experts == std::string::npos) return name;
  const std::string layer = name.substr(0, experts) + ".mlp.experts.";
  const bool bias = name.ends_with(".bias");
  const bool down = name.find(".down_proj.") != std::string::npos;
  return layer + (down ? "down_proj" : "gate_up_proj") + (bias ? "_bias" : "");
}

namespace {
// Llama 4 (HF Llama4ForCausalLM): Llama's names with the FFN under feed_forward. (dense gate / up /
// down_proj, shared_expert.*, router), every routed expert of a layer in experts.gate_up_proj (gate and up,
// stacked) and experts.down_proj.
std::string llama4_checkpoint_name(const std::string& name) {
  if (const std::size_t experts = name.find(".mlp.experts."); experts != std::string::npos)
    return name.substr(0, experts) + ".feed_forward.experts." +
           (name.find(".down_proj.") != std::string::npos ? "down_proj" : "gate_up_proj");
  const std::size_t mlp = name.find(".mlp.");
  if (mlp == std::string::npos) return name;
  return name.substr(0, mlp) + ".feed_forward." + name.substr(mlp + 5);
}
}  // namespace

std::string checkpoint_name(const compiler::ModelSpec& m, const std::string& name) {
  using compiler::WeightNaming;
  if (m.weight_naming == WeightNaming::kDbrx) return dbrx_checkpoint_name(name);
  if (m.weight_naming == WeightNaming::kGptOss) return gpt_oss_checkpoint_name(name);
  if (m.weight_naming == WeightNaming::kLlama4) return llama4_checkpoint_name(name);
  if (m.post_norms) {
    // Gemma 2: the norm before the FFN is pre_feedforward_layernorm, and post_attention_layernorm is the one
    // after attention (Llama's name for the norm before the FFN).
    for (auto [from, to] : {std::pair{".post_attention_layernorm.", ".pre_feedforward_layernorm."},
                            std::pair{".post_attn_norm.", ".post_attention_layernorm."},
                            std::pair{".post_ffn_norm.", ".post_feedforward_layernorm."}})
      if (const std::size_t at = name.find(from); at != std::string::npos)
        return name.substr(0, at) + to + name.substr(at + std::string_view(from).size());
  }
  if (m.weight_naming != WeightNaming::kOpt && m.weight_naming != WeightNaming::kStarcoder2 &&
      m.weight_naming != WeightNaming::kPhi3 && m.weight_naming != WeightNaming::kDeepSeek)
    return name;
  // Within a layer: "model.layers.L." + the rest.
  const std::string layers = "model.layers.";
  std::string prefix = name, rest;
  if (name.starts_with(layers)) {
    const std::size_t dot = name.find('.', layers.size());
    DUPLEX_ASSERT(dot != std::string::npos, "a layer tensor name without its layer index");
    prefix = name.substr(0, dot + 1);
    rest = name.substr(dot + 1);
  }
  auto replace_start = [](std::string& s, std::string_view from, std::string_view to) {
    if (!s.starts_with(from)) return false;
    s = std::string(to) + s.substr(from.size());
    return true;
  };
  if (m.weight_naming == WeightNaming::kDeepSeek) {
    replace_start(rest, "mlp.shared_expert.", "mlp.shared_experts.");
    return prefix + rest;
  }
  if (m.weight_naming == WeightNaming::kStarcoder2) {
    replace_start(rest, "mlp.up_proj.", "mlp.c_fc.") || replace_start(rest, "mlp.down_proj.", "mlp.c_proj.");
    return prefix + rest;
  }
  if (m.weight_naming == WeightNaming::kPhi3) {  // several tensors share one stacked checkpoint tensor
    replace_start(rest, "self_attn.q_proj.", "self_attn.qkv_proj.") ||
        replace_start(rest, "self_attn.k_proj.", "self_attn.qkv_proj.") ||
        replace_start(rest, "self_attn.v_proj.", "self_attn.qkv_proj.") ||
        replace_start(rest, "mlp.gate_proj.", "mlp.gate_up_proj.") ||
        replace_start(rest, "mlp.up_proj.", "mlp.gate_up_proj.");
    return prefix + rest;
  }
  // OPT: everything under model.decoder.
  if (rest.empty()) {
    std::string top = name;
    if (replace_start(top, "model.norm.", "model.decoder.final_layer_norm.") ||
        replace_start(top, "model.", "model.decoder."))
      return top;
    return name;  // lm_head.weight / .bias
  }
  replace_start(rest, "input_layernorm.", "self_attn_layer_norm.") ||
      replace_start(rest, "post_attention_layernorm.", "final_layer_norm.") ||
      replace_start(rest, "self_attn.o_proj.", "self_attn.out_proj.") ||
      replace_start(rest, "mlp.up_proj.", "fc1.") || replace_start(rest, "mlp.down_proj.", "fc2.");
  return "model.decoder." + prefix.substr(std::string("model.").size()) + rest;
}

std::int64_t shared_ffn_width(const compiler::ModelSpec& m) {
  return std::int64_t{m.shared_experts} * m.shared_expert_ffn;
}

bool rotates_locally(const ModelNumerics& n, const compiler::ModelSpec& spec, int layer) {
  return n.local_rope_theta > 0 && spec.attention_window(layer) > 0;
}

ModelNumerics layer_rope_numerics(const ModelNumerics& n, const compiler::ModelSpec& spec, int layer) {
  if (!rotates_locally(n, spec, layer)) return n;
  ModelNumerics local = n;
  local.rope_theta = n.local_rope_theta;
  local.rope_scaling = RopeScaling{};
  local.local_rope_theta = 0;
  return local;
}

std::int64_t dynamic_rope_length(std::int64_t prompt_tokens, std::int64_t position) {
  return std::max(prompt_tokens, position + 1);
}

std::vector<double> rope_inv_freq(const ModelNumerics& n, int rotary_dim, std::int64_t seq_len) {
  const RopeScaling& s = n.rope_scaling;
  std::vector<double> f(static_cast<std::size_t>(rotary_dim / 2));
  // Dynamic NTK: a larger base beyond the original context (HF _compute_dynamic_ntk_parameters).
  double theta = n.rope_theta;
  if (s.kind == RopeScaling::Kind::kDynamic &&
      static_cast<double>(seq_len) > s.original_max_position_embeddings)
    theta *= std::pow(
        s.factor * static_cast<double>(seq_len) / s.original_max_position_embeddings - (s.factor - 1.0),
        static_cast<double>(rotary_dim) / (rotary_dim - 2));
  // YaRN's ramp: the dimension index where a frequency turns `rotations` times within the original context,
  // its range floored / ceiled and clamped to [0, rotary_dim - 1], then a linear 0..1 ramp over it.
  double low = 0, high = 0;
  if (s.kind == RopeScaling::Kind::kYarn) {
    const double base = n.rope_theta;
    auto correction_dim = [&](double rotations) {
      return rotary_dim *
             std::log(s.original_max_position_embeddings / (rotations * 2.0 * std::numbers::pi)) /
             (2.0 * std::log(base));
    };
    // HF find_correction_range: the bounds rounded out to whole dimensions unless truncate is false
    // (gpt-oss).
    low = s.truncate ? std::floor(correction_dim(s.beta_fast)) : correction_dim(s.beta_fast);
    high = s.truncate ? std::ceil(correction_dim(s.beta_slow)) : correction_dim(s.beta_slow);
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(rotary_dim - 1));
    if (low == high) high += 0.001;  // HF: prevents a singular ramp
  }
  for (std::size_t i = 0; i < f.size(); ++i) {
    const double base = std::pow(theta, -2.0 * static_cast<double>(i) / rotary_dim);
    switch (s.kind) {
      case RopeScaling::Kind::kNone:
      case RopeScaling::Kind::kDynamic:
        f[i] = base;
        break;
      case RopeScaling::Kind::kLinear:
        f[i] = base / s.factor;
        break;
      case RopeScaling::Kind::kYarn: {
        const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
        const double extrapolation = 1.0 - ramp;  // the share of the unscaled frequency
        f[i] = base / s.factor * (1.0 - extrapolation) + base * extrapolation;
        break;
      }
      case RopeScaling::Kind::kLongRope: {
        const bool long_regime = static_cast<double>(seq_len) > s.original_max_position_embeddings;
        const std::vector<double>& factors = long_regime ? s.long_factor : s.short_factor;
        DUPLEX_ASSERT(factors.size() == f.size(), "one LongRoPE factor per frequency");
        f[i] = base / factors[i];
        break;
      }
      case RopeScaling::Kind::kLlama3: {
        const double wavelen = 2.0 * std::numbers::pi / base;
        const double low_wavelen = s.original_max_position_embeddings / s.low_freq_factor,
                     high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
        if (wavelen > low_wavelen) {
          f[i] = base / s.factor;
        } else if (wavelen < high_wavelen) {
          f[i] = base;
        } else {  // between: smooth from base / factor to base
          const double smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
                                (s.high_freq_factor - s.low_freq_factor);
          f[i] = (1.0 - smooth) * base / s.factor + smooth * base;
        }
        break;
      }
    }
  }
  return f;
}

double rope_attention_factor(const ModelNumerics& n, std::int64_t seq_len) {
  const RopeScaling& s = n.rope_scaling;
  if (s.kind == RopeScaling::Kind::kLongRope)
    return static_cast<double>(seq_len) > s.original_max_position_embeddings ? s.long_attention_factor
                                                                             : s.attention_factor;
  return s.kind == RopeScaling::Kind::kYarn ? s.attention_factor : 1.0;
}

bool rope_depends_on_length(const ModelNumerics& n) {
  return n.rope_scaling.kind == RopeScaling::Kind::kDynamic ||
         n.rope_scaling.kind == RopeScaling::Kind::kLongRope;
}

int rotary_dim(const compiler::ModelSpec& m) {
  if (m.attention == compiler::AttentionKind::kMla) return m.mla.qk_rope_head_dim;
  return m.rotary_dim > 0 ? m.rotary_dim : m.head_dim;
}

double attention_scale(const compiler::ModelSpec& m, const ModelNumerics& n) {
  const RopeScaling& s = n.rope_scaling;
  double mscale = 1.0;
  if (s.kind == RopeScaling::Kind::kYarn && s.mscale_all_dim > 0 && s.factor > 1.0)
    mscale = 0.1 * s.mscale_all_dim * std::log(s.factor) + 1.0;
  const int dim = m.query_pre_attn_scalar > 0 ? m.query_pre_attn_scalar : m.head_dim;  // Gemma 2's scalar
  return mscale * mscale / std::sqrt(static_cast<double>(dim));
}

KvCacheShape kv_cache_shape(const compiler::ModelSpec& m) {
  if (m.attention == compiler::AttentionKind::kMla)
    return {1, m.mla.kv_lora_rank + m.mla.qk_rope_head_dim, true};
  return {m.kv_heads, m.head_dim, false};
}

float embedding_scale(const compiler::ModelSpec& m) {
  if (!m.scale_embedding) return 1.0f;
  return half_bits_to_float(float_to_half_bits(std::sqrt(static_cast<float>(m.hidden))));
}

void check_functional_support(const compiler::ModelSpec& m) {
  auto reject = [&](const char* field, const std::string& problem) {
    throw Error(fmt::format(
        "{}: {}: {}; functional emulation supports GQA with RoPE or learned positions, or DeepSeek's MLA "
        "with RoPE; RMSNorm or LayerNorm, gated or two-matrix FFNs with SiLU, GELU (erf or tanh) or ReLU, "
        "dense or MoE layers (shared experts under Qwen-MoE or DeepSeek names), q / k / v / o and dense-FFN "
        "biases, q / k norms, gpt-oss's sinks, router bias and biased experts, fp16 or bf16 weights and KV "
        "(computed in FP16; MXFP4 experts, FP8 and 4-bit integer matrices as released)",
        m.file.empty() ? m.name : m.file, field, problem));
  };
  const bool mla = m.attention == compiler::AttentionKind::kMla,
             deepseek = m.weight_naming == compiler::WeightNaming::kDeepSeek;
  if (mla != deepseek)
    reject(mla ? "attention" : "weight_naming",
           mla ? "MLA with another family's tensor names; expected weight_naming: deepseek"
               : "deepseek names MLA's tensors, but the model has GQA attention; expected an mla block");
  if (mla) {
    if (m.norm != compiler::NormKind::kRmsNorm) reject("norm", "LayerNorm with MLA; expected rmsnorm");
    if (m.learned_positions > 0) reject("learned_positions", "set with MLA, which rotates q_pe and k_pe");
    if (m.sliding_window > 0) reject("sliding_window", "set with MLA; expected 0");
    if (m.mla.qk_rope_head_dim < 2)
      reject("mla.qk_rope_head_dim",
             fmt::format("{}; expected >= 2 (RoPE rotates pairs)", m.mla.qk_rope_head_dim));
  }
  const bool gpt_oss = m.weight_naming == compiler::WeightNaming::kGptOss;
  if (m.mlp_bias && m.is_moe() && !gpt_oss)
    reject("mlp_bias", "true for an MoE model not named gpt_oss (expert biases have gpt-oss's names only)");
  if (m.mlp_bias && m.ffn_kind == compiler::FfnKind::kGated && !m.is_moe())
    reject("mlp_bias",
           "true with a gated dense FFN (biased gate / up / down projections); expected false (only "
           "gpt-oss's experts carry gated biases)");
  if (m.router_bias && !gpt_oss)
    reject("router_bias", "true with another family's names (a router bias is gpt-oss's mlp.router.bias)");
  if (gpt_oss) {
    // What gpt-oss's tensor names hold: every layer MoE, gated experts with biases, no shared experts.
    if (!m.is_moe() || !m.dense_layers.empty() || m.moe_every != 1 || m.first_moe_layer != 0)
      reject("experts", "gpt-oss's checkpoint names hold MoE layers only; expected every layer MoE");
    if (m.ffn_kind != compiler::FfnKind::kGated || m.shared_experts > 0)
      reject(m.shared_experts > 0 ? "shared_experts" : "ffn_kind",
             "gpt-oss's fused gate_up_proj holds gated routed experts only");
  }
  auto half_width = [](compiler::DType t) {
    return t == compiler::DType::kFp16 || t == compiler::DType::kBf16;
  };
  // MXFP4 experts (gpt-oss's release format) are read and computed exactly in FP16 (mxfp4.hpp); their rows
  // are whole blocks of 32.
  const bool mxfp4 = m.expert_dtype == compiler::DType::kMxfp4;
  // Per-matrix formats: FP8 (DeepSeek-V3's and Qwen3's block-scaled releases, llm-compressor's per-channel
  // ones, AutoFP8's and llm-compressor's per-tensor ones; fp8.hpp), INT8 per channel (llm-compressor's
  // W8A8-INT8; fp8.hpp) and 4-bit groups (AutoAWQ's, GPTQ's and W4A16 releases; 8-bit groups of GPTQ's and
  // W8A16 releases; int4.hpp), NF4 / FP4 and LLM.int8() (bitsandbytes' releases of dense models; bnb4.hpp,
  // bnb_int8.hpp), dequantized to FP16.
  auto per_matrix = [](compiler::DType t) {
    return compiler::scaled_8bit(t) || compiler::grouped_int(t) || compiler::bitsandbytes(t);
  };
  if (!half_width(m.expert_dtype) && !(mxfp4 && gpt_oss) && !per_matrix(m.expert_dtype))
    reject("expert_dtype",
           fmt::format(
               "experts in {}; expected fp16, bf16, fp8_block128, fp8_channel, fp8_tensor, int8_channel, "
               "int4_awq, int4_gptq, int4_pack, int8_gptq, int8_pack (mxfp4 with gpt-oss's names)",
               compiler::dtype_name(m.expert_dtype)));
  if (m.is_moe() && (compiler::bitsandbytes(m.expert_dtype) || compiler::bitsandbytes(m.linear_dtype)))
    reject(compiler::bitsandbytes(m.expert_dtype) ? "expert_dtype" : "linear_dtype",
           fmt::format("{} in an MoE model: bitsandbytes' releases quantize the routers too, which is not "
                       "modelled; expected a dense model",
                       compiler::dtype_name(compiler::bitsandbytes(m.expert_dtype) ? m.expert_dtype
                                                                                    : m.linear_dtype)));
  // They are stored one matrix each: not in the fused expert tensors of gpt-oss, Llama 4 and DBRX (their
  // quantized forms are not modelled).
  const bool fused = gpt_oss || m.weight_naming == compiler::WeightNaming::kLlama4 ||
                     m.weight_naming == compiler::WeightNaming::kDbrx;
  if (per_matrix(m.expert_dtype) && fused && m.is_moe())
    reject(
        "expert_dtype",
        fmt::format("{} experts under {}'s fused expert tensors; expected them in fp16 or bf16 (duplex reads "
                    "quantized experts one matrix each)",
                    compiler::dtype_name(m.expert_dtype), compiler::weight_naming_name(m.weight_naming)));
  if (!half_width(m.linear_dtype) && !per_matrix(m.linear_dtype))
    reject("linear_dtype",
           fmt::format("projections in {}; expected fp16, bf16, fp8_block128, fp8_channel, fp8_tensor, "
                       "int8_channel, int4_awq, int4_gptq, int4_pack, int8_gptq, int8_pack, "
                       "nf4, nf4_dq, bnb_fp4, bnb_fp4_dq or bnb_int8",
                       compiler::dtype_name(m.linear_dtype)));
  if (mxfp4 && (m.hidden % kMxfp4Block != 0 || m.expert_ffn % kMxfp4Block != 0))
    reject("expert_dtype",
           fmt::format("mxfp4 experts of hidden {} and ffn {}: MXFP4 rows are whole blocks of {}", m.hidden,
                       m.expert_ffn, kMxfp4Block));
  const bool llama4 = m.weight_naming == compiler::WeightNaming::kLlama4;
  if (m.shared_experts > 0 && m.weight_naming != compiler::WeightNaming::kQwenMoe && !deepseek && !llama4)
    reject("shared_experts",
           fmt::format("{} shared experts with Mixtral weight names (no HF checkpoint has them); "
                       "expected weight_naming: qwen_moe (mlp.shared_expert.*), deepseek or llama4",
                       m.shared_experts));
  if (llama4) {
    // What Llama 4's tensor names hold: gated SiLU FFNs without biases, one shared expert beside the routed
    // ones, RMSNorm, Llama's attention without biases, RoPE.
    auto llama4_lacks = [&](bool differs, const char* field, const char* expected) {
      if (differs)
        reject(field, fmt::format("Llama 4's checkpoint names have no place for it; expected {}", expected));
    };
    llama4_lacks(m.ffn_kind != compiler::FfnKind::kGated || m.mlp_bias, "ffn_kind", "gated, no mlp_bias");
    llama4_lacks(m.is_moe() && m.shared_experts != 1, "shared_experts", "1 (feed_forward.shared_expert)");
    llama4_lacks(m.shared_expert_gate, "shared_expert_gate", "false");
    llama4_lacks(m.norm != compiler::NormKind::kRmsNorm, "norm", "rmsnorm");
    llama4_lacks(m.qkv_bias || m.o_bias, m.qkv_bias ? "qkv_bias" : "o_bias", "false");
    llama4_lacks(m.qk_norm != compiler::QkNorm::kNone && m.qk_norm != compiler::QkNorm::kL2, "qk_norm",
                 "l2 or none (Llama4TextL2Norm has no weights)");
    llama4_lacks(m.learned_positions > 0, "learned_positions", "0 (RoPE)");
  }
  if (m.shared_expert_gate && deepseek)
    reject("shared_expert_gate", "set with DeepSeek names (DeepSeek's shared experts have no gate)");
  if (m.weight_naming == compiler::WeightNaming::kDbrx) {
    // What DBRX's tensor names hold: every layer MoE, its experts gated, LayerNorm without a bias, no other
    // bias, no q / k norm, RoPE.
    auto dbrx_lacks = [&](bool differs, const char* field, const char* expected) {
      if (differs)
        reject(field, fmt::format("DBRX's checkpoint names have no place for it; expected {}", expected));
    };
    dbrx_lacks(!m.is_moe() || !m.dense_layers.empty() || m.moe_every != 1 || m.first_moe_layer != 0,
               "experts", "every layer MoE (experts > 0, no dense layers)");
    dbrx_lacks(m.ffn_kind != compiler::FfnKind::kGated, "ffn_kind", "gated (w1 / v1 / w2)");
    dbrx_lacks(m.norm != compiler::NormKind::kLayerNorm || m.norm_bias, "norm_bias",
               "norm: layernorm with norm_bias: false");
    dbrx_lacks(m.qkv_bias || m.o_bias, m.qkv_bias ? "qkv_bias" : "o_bias", "false");
    dbrx_lacks(m.qk_norm != compiler::QkNorm::kNone, "qk_norm", "none");
    dbrx_lacks(m.lm_head_bias, "lm_head_bias", "false");
    dbrx_lacks(m.learned_positions > 0, "learned_positions", "0 (RoPE)");
  }
  if (m.router == compiler::Router::kNoAuxTc && !deepseek)
    reject("router",
           "noaux_tc's correction bias is named by DeepSeek's checkpoints; expected weight_naming: "
           "deepseek");
  if (m.weight_naming == compiler::WeightNaming::kPhi3 &&
      (m.ffn_kind != compiler::FfnKind::kGated || m.qkv_bias || m.o_bias))
    reject("weight_naming", "phi3 names a gated FFN without biases (its fused qkv_proj / gate_up_proj)");
  if (m.is_moe() && (m.weight_naming == compiler::WeightNaming::kOpt ||
                     m.weight_naming == compiler::WeightNaming::kStarcoder2 ||
                     m.weight_naming == compiler::WeightNaming::kPhi3))
    reject("weight_naming",
           fmt::format("{} names dense models only; expected mixtral, qwen_moe or deepseek for MoE",
                       compiler::weight_naming_name(m.weight_naming)));
  if (!half_width(m.dtype)) reject("dtype", fmt::format("weights are {}", compiler::dtype_name(m.dtype)));
  if (!half_width(m.kv_dtype)) reject("kv_dtype", fmt::format("the KV cache is {}", compiler::dtype_name(m.kv_dtype)));
  if (m.learned_positions == 0 && rotary_dim(m) % 2 != 0)
    reject(mla ? "mla.qk_rope_head_dim" : "head_dim",
           fmt::format("{} is odd (RoPE rotates pairs)", rotary_dim(m)));
  if (m.kv_heads <= 0 || m.heads % m.kv_heads != 0)
    reject("kv_heads", fmt::format("{} does not divide heads = {}", m.kv_heads, m.heads));
  if (m.is_moe() && (m.top_k < 1 || m.top_k > m.experts))
    reject("top_k", fmt::format("{} is not in 1..experts = {}", m.top_k, m.experts));
}

void check_weights_fit(const compiler::ModelSpec& spec, double memory_bytes) {
  const double bytes = 2.0 * static_cast<double>(spec.params());
  if (memory_bytes > 0 && bytes > memory_bytes)
    throw Error(fmt::format(
        "{}: model {} has {:.4g}B parameters, {:.4g} GB in FP16, more than this machine's {:.4g} GB of "
        "memory; "
        "functional emulation (duplex run) runs models whose weights fit in host memory, e.g. the tiny-* "
        "presets (duplex simulate and compile time any model)",
        spec.file.empty() ? spec.name : spec.file, spec.name, static_cast<double>(spec.params()) / 1e9,
        bytes / 1e9, memory_bytes / 1e9));
}

double host_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<double>(pages) * static_cast<double>(page) : 0.0;
}

std::vector<WeightShape> expected_weights(const compiler::ModelSpec& m) {
  check_functional_support(m);
  using Role = WeightShape::Role;
  const std::int64_t h = m.hidden, q = m.q_dim(), kv = m.kv_dim();
  const bool norm_biased = m.norm == compiler::NormKind::kLayerNorm && m.norm_bias;
  std::vector<WeightShape> w;
  // Indices of the matrices in linear_dtype / expert_dtype; the rest stay in dtype (null: those the spec
  // keeps unquantized).
  std::vector<std::size_t> linear, expert;
  std::vector<std::size_t>* const attention = m.unquantized_attention ? nullptr : &linear;
  auto in = [&](std::vector<std::size_t>* which) {
    if (which != nullptr) which->push_back(w.size() - 1);
  };
  // A norm's gain, and its bias with LayerNorm (unless norm_bias is false).
  auto norm = [&](const std::string& gain) {
    w.push_back({gain, {h}, Role::kNormGain});
    if (norm_biased) w.push_back({weight_name::norm_bias(gain), {h}, Role::kBias});
  };
  w.push_back({weight_name::embedding(), {m.vocab, h}, Role::kMatrix});
  if (m.learned_positions > 0)
    w.push_back({weight_name::positions(), {m.learned_positions, h}, Role::kMatrix});
  for (int l = 0; l < m.layers; ++l) {
    norm(weight_name::attn_norm(l));
    if (m.attention == compiler::AttentionKind::kMla) {
      // DeepSeek's MLA (HF DeepseekV2Attention): q from hidden or through the q_a / q_b low-rank pair; the
      // latent and the rope key from kv_a_proj_with_mqa; per head k_nope and v from kv_b_proj.
      const compiler::MlaSpec& a = m.mla;
      const std::int64_t qk = a.qk_nope_head_dim + a.qk_rope_head_dim, heads = m.heads;
      if (a.q_lora_rank == 0) {
        w.push_back({weight_name::mla(l, "q_proj"), {heads * qk, h}, Role::kMatrix});
        in(attention);
      } else {
        w.push_back({weight_name::mla(l, "q_a_proj"), {a.q_lora_rank, h}, Role::kMatrix});
        in(attention);
        w.push_back({weight_name::mla(l, "q_a_layernorm"), {a.q_lora_rank}, Role::kNormGain});
        w.push_back({weight_name::mla(l, "q_b_proj"), {heads * qk, a.q_lora_rank}, Role::kMatrix});
        in(attention);
      }
      w.push_back({weight_name::mla(l, "kv_a_proj_with_mqa"),
                   {a.kv_lora_rank + a.qk_rope_head_dim, h},
                   Role::kMatrix});
      in(attention);
      w.push_back({weight_name::mla(l, "kv_a_layernorm"), {a.kv_lora_rank}, Role::kNormGain});
      w.push_back({weight_name::mla(l, "kv_b_proj"),
                   {heads * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank},
                   Role::kMatrix});
      in(attention);
      w.push_back({weight_name::attn_proj(l, 'o'), {h, heads * a.v_head_dim}, Role::kMatrix});
      in(attention);
    } else {
      for (auto [which, rows, cols] :
           {std::tuple{'q', q, h}, std::tuple{'k', kv, h}, std::tuple{'v', kv, h}, std::tuple{'o', h, q}}) {
        w.push_back({weight_name::attn_proj(l, which), {rows, cols}, Role::kMatrix});
        in(attention);
      }
    }
    if (m.qkv_bias) {
      w.push_back({weight_name::attn_bias(l, 'q'), {q}, Role::kBias});
      w.push_back({weight_name::attn_bias(l, 'k'), {kv}, Role::kBias});
      w.push_back({weight_name::attn_bias(l, 'v'), {kv}, Role::kBias});
    }
    if (m.o_bias) w.push_back({weight_name::attn_bias(l, 'o'), {h}, Role::kBias});
    if (m.attn_sinks) w.push_back({weight_name::sinks(l), {m.heads}, Role::kBias});
    if (m.qk_norm == compiler::QkNorm::kPerHead || m.qk_norm == compiler::QkNorm::kWhole) {
      const bool per_head = m.qk_norm == compiler::QkNorm::kPerHead;
      w.push_back({weight_name::qk_norm(l, 'q'), {per_head ? m.head_dim : q}, Role::kNormGain});
      w.push_back({weight_name::qk_norm(l, 'k'), {per_head ? m.head_dim : kv}, Role::kNormGain});
    }
    norm(weight_name::ffn_norm(l));
    if (m.post_norms) {
      norm(weight_name::post_attn_norm(l));
      norm(weight_name::post_ffn_norm(l));
    }
    const bool gated = m.ffn_kind == compiler::FfnKind::kGated;
    if (m.is_moe_layer(l)) {
      const std::int64_t f = m.expert_ffn;
      w.push_back({weight_name::router(m.weight_naming, l), {m.experts, h}, Role::kMatrix});
      if (m.router == compiler::Router::kNoAuxTc)
        w.push_back({weight_name::router_correction_bias(l), {m.experts}, Role::kBias});
      if (m.router_bias) w.push_back({weight_name::router_bias(l), {m.experts}, Role::kBias});
      for (int e = 0; e < m.experts; ++e) {
        if (gated) {
          w.push_back({weight_name::expert(m.weight_naming, l, e, "gate"), {f, h}, Role::kMatrix});
          in(&expert);
        }
        w.push_back({weight_name::expert(m.weight_naming, l, e, "down"), {h, f}, Role::kMatrix});
        in(&expert);
        w.push_back({weight_name::expert(m.weight_naming, l, e, "up"), {f, h}, Role::kMatrix});
        in(&expert);
      }
      if (m.mlp_bias)  // gpt-oss: after every expert's matrices (its checkpoint's _bias tensors)
        for (int e = 0; e < m.experts; ++e) {
          w.push_back({weight_name::expert_bias(l, e, "gate"), {f}, Role::kBias});
          w.push_back({weight_name::expert_bias(l, e, "up"), {f}, Role::kBias});
          w.push_back({weight_name::expert_bias(l, e, "down"), {h}, Role::kBias});
        }
      if (m.shared_experts > 0) {  // one FFN as wide as all of them (as HF stores DeepSeek's too)
        const std::int64_t fs = shared_ffn_width(m);
        if (gated) {
          w.push_back({weight_name::shared_expert(l, "gate"), {fs, h}, Role::kMatrix});
          in(&expert);
        }
        w.push_back({weight_name::shared_expert(l, "up"), {fs, h}, Role::kMatrix});
        in(&expert);
        w.push_back({weight_name::shared_expert(l, "down"), {h, fs}, Role::kMatrix});
        in(&expert);
        if (m.shared_expert_gate) w.push_back({weight_name::shared_expert_gate(l), {1, h}, Role::kMatrix});
      }
    } else {
      const std::int64_t f = m.ffn;
      std::vector<std::size_t>* const ffn = m.dense_ffn_matrix_dtype(l) == m.linear_dtype ? &linear : nullptr;
      if (gated) {
        w.push_back({weight_name::dense_mlp(l, "gate"), {f, h}, Role::kMatrix});
        in(ffn);
      }
      w.push_back({weight_name::dense_mlp(l, "up"), {f, h}, Role::kMatrix});
      in(ffn);
      w.push_back({weight_name::dense_mlp(l, "down"), {h, f}, Role::kMatrix});
      in(ffn);
      if (m.mlp_bias) {
        w.push_back({weight_name::dense_mlp_bias(l, "up"), {f}, Role::kBias});
        w.push_back({weight_name::dense_mlp_bias(l, "down"), {h}, Role::kBias});
      }
    }
  }
  norm(weight_name::final_norm());
  if (!m.tie_embeddings) w.push_back({weight_name::lm_head(), {m.vocab, h}, Role::kMatrix});
  if (m.lm_head_bias) w.push_back({weight_name::lm_head_bias(), {m.vocab}, Role::kBias});
  for (WeightShape& s : w) s.format = m.dtype;
  for (std::size_t i : linear) w[i].format = m.linear_dtype;
  for (std::size_t i : expert) w[i].format = m.expert_dtype;
  // Group matrices pack 32 / bits outputs per word (their zero points) and share a scale among quant_group
  // inputs (int4.hpp).
  auto whole_groups = [&](const std::vector<std::size_t>& which, const char* field) {
    for (std::size_t i : which) {
      if (!compiler::grouped_int(w[i].format)) continue;
      const int per_word = 32 / compiler::grouped_int_bits(w[i].format);
      if (w[i].shape[1] % compiler::group_inputs(m.quant_group, w[i].shape[1]) != 0 ||
          w[i].shape[0] % per_word != 0)
        throw Error(
            fmt::format("{}: {}: {} has {} outputs and {} inputs; {} matrices need their inputs in whole "
                        "groups of {} and their outputs in whole words of {}",
                        m.file.empty() ? m.name : m.file, field, w[i].name, w[i].shape[0], w[i].shape[1],
                        compiler::dtype_name(w[i].format), m.quant_group, per_word));
    }
  };
  whole_groups(linear, "linear_dtype");
  whole_groups(expert, "expert_dtype");
  return w;
}

const WeightTensor& ModelWeights::get(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) throw Error(fmt::format("{}: tensor {} is missing", source, name));
  return it->second;
}

const WeightTensor& ModelWeights::lm_head() const {
  return get(spec.tie_embeddings ? weight_name::embedding() : weight_name::lm_head());
}

ModelWeights random_weights(const compiler::ModelSpec& spec, std::uint64_t seed) {
  check_weights_fit(spec, host_memory_bytes());
  ModelWeights w;
  w.spec = spec;
  w.source = fmt::format("random weights (seed {})", seed);
  const auto shapes = expected_weights(spec);
  // One stream per tensor (by its index in expected_weights), so tensors do not shift each other; a tensor
  // beyond kChunk elements continues in one more stream per chunk (its first chunk keeps the tensor's own),
  // so the chunks fill in parallel and the result does not depend on the threads.
  constexpr std::int64_t kChunk = std::int64_t{1} << 20;
  struct Task {
    std::size_t tensor;
    std::int64_t chunk;
  };
  std::vector<Task> tasks;
  std::vector<WeightTensor*> out;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    WeightTensor& t = w.tensors[shapes[i].name];
    t.shape = shapes[i].shape;
    t.data.resize(static_cast<std::size_t>(t.numel()));
    out.push_back(&t);
    for (std::int64_t c = 0; c * kChunk < t.numel(); ++c) tasks.push_back({i, c});
  }
  tbb::parallel_for(std::size_t{0}, tasks.size(), [&](std::size_t k) {
    const auto [i, c] = tasks[k];
    const WeightShape& s = shapes[i];
    WeightTensor& t = *out[i];
    const std::uint64_t stream = derive_seed(seed, i);
    Rng rng(c == 0 ? stream : derive_seed(stream, static_cast<std::uint64_t>(c)));
    const bool embedding = s.name == weight_name::embedding() || s.name == weight_name::positions();
    const double stddev = s.role != WeightShape::Role::kMatrix ? 0.1
                          : embedding                          ? 1.0
                                      : 1.0 / std::sqrt(static_cast<double>(s.shape.back()));
    // Gains around 1 as the norm applies them: (offset + gain) with Gemma's offset 1.
    const double mean = s.role == WeightShape::Role::kNormGain ? 1.0 - spec.norm_weight_offset : 0.0;
    const std::int64_t end = std::min(t.numel(), (c + 1) * kChunk);
    for (std::int64_t e = c * kChunk; e < end; ++e)
      t.data[static_cast<std::size_t>(e)] =
          float_to_half_bits(static_cast<float>(mean + stddev * rng.normal()));
  });
  // Matrices in a quantized format on its grid, as released: MXFP4 per matrix row block; FP8 per block (128 x
  // 128, or row), 4-bit integers per group of 128 inputs of a row, of the checkpoint tensor that stores them
  // (put_on_checkpoint_grid).
  for (std::size_t i = 0; i < shapes.size(); ++i)
    if (shapes[i].format == compiler::DType::kMxfp4)
      round_to_mxfp4(out[i]->data.data(), out[i]->shape[0], out[i]->shape[1]);
  put_on_checkpoint_grid(w);
  return w;
}

}  // namespace duplex::runtime::functional
