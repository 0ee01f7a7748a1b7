#include "hf_quantization.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "duplex/base/error.hpp"

namespace duplex::compiler {
namespace {

using nlohmann::json;

// Whether a module a release leaves unquantized is one the model keeps in dtype anyway: the LM head, the
// embeddings, a router's gate (HF names: lm_head, embed_tokens, *.gate, *.router, *.shared_expert_gate). A
// compressed-tensors "re:" regex names modules by its last name; unless anchored by "$" it also matches
// longer names (".*mlp.gate" matches mlp.gate_proj), so only lm_head and embed_tokens, which no name extends,
// may go unanchored.
bool kept_in_dtype(const std::string& module) {
  std::string name = module;
  bool anchored = true;
  if (name.starts_with("re:")) {
    anchored = name.ends_with("$");
    name = name.substr(3, name.size() - 3 - (anchored ? 1 : 0));
  }
  const std::size_t cut = name.find_last_of(".*\\");
  const std::string last = cut == std::string::npos ? name : name.substr(cut + 1);
  if (last == "lm_head" || last == "embed_tokens") return true;
  return anchored && (last == "gate" || last == "router" || last == "shared_expert_gate");
}

// Refuses a list of unquantized modules (`key` of q) naming one the model does not keep in dtype.
void expect_kept_in_dtype(const Fields& q, const char* key) {
  const char* kModules =
      "a list of module names the model keeps in its dtype (lm_head, embed_tokens, routers)";
  const std::vector<std::string> modules = q.string_list_or_empty(key, kModules);
  for (std::size_t i = 0; i < modules.size(); ++i)
    if (!kept_in_dtype(modules[i]))
      throw ConfigError(q.file(), fmt::format("{}[{}]", q.path(key), i),
                        fmt::format("\"{}\": a projection left unquantized is not modelled", modules[i]),
                        kModules);
}

// HF FineGrainedFP8 (quant_method "fp8"): fp8_block128, or AutoFP8's fp8_tensor (hf_quantization.hpp).
void read_fine_grained_fp8(const Fields& q, ModelSpec& m) {
  auto refuse = [&](const char* key, const std::string& what, const std::string& expected) {
    throw ConfigError(q.file(), q.path(key), what, expected);
  };
  if (q.string_or("fmt", "e4m3") != "e4m3")
    refuse("fmt", fmt::format("\"{}\" is not modelled", q.string_or("fmt", "")), "e4m3");
  const std::string activations = q.string_or("activation_scheme", "dynamic");
  const bool blocks = q.has("weight_block_size");
  if (activations != "dynamic" && (activations != "static" || blocks))
    refuse("activation_scheme",
           fmt::format("\"{}\" is not modelled{}", activations,
                       blocks ? " beside weight_block_size (static scales of 128 x 128 blocks)" : ""),
           blocks ? "dynamic" : "dynamic or static (AutoFP8's per-tensor scales)");
  const std::string scale_fmt = q.string_or("scale_fmt", "");
  if (!scale_fmt.empty() && scale_fmt != "ue8m0")
    refuse("scale_fmt", fmt::format("\"{}\" is not modelled", scale_fmt), "ue8m0 or absent (FP32 scales)");
  for (const char* key : {"modules_to_not_convert", "ignored_layers"}) expect_kept_in_dtype(q, key);
  // Absent, vLLM and AutoFP8 read one scale per tensor (transformers' FineGrainedFP8 would take [128, 128];
  // the block releases state it).
  if (!blocks) {
    m.expert_dtype = m.linear_dtype = DType::kFp8Tensor;
    m.static_input_scales = activations == "static";
    return;
  }
  if (q.raw()["weight_block_size"] != json::array({128, 128}))
    refuse("weight_block_size", fmt::format("{} is not modelled", q.raw()["weight_block_size"].dump()),
           "[128, 128], or absent (one scale per tensor)");
  m.expert_dtype = m.linear_dtype = DType::kFp8Block128;
}

// A compressed-tensors QuantizationArgs object s (QuantizationArgs' defaults where a field is absent: 8 bits,
// type int, symmetric, static) must be 8-bit of `type` (float or int), symmetric, with `strategy` and
// `dynamic`; `expected` says so in an error.
void expect_8bit_args(const Fields& s, const char* type, const char* strategy, bool dynamic,
                      const std::string& expected) {
  auto refuse = [&](const char* key, const std::string& what) {
    throw ConfigError(s.file(), s.path(key), what, expected);
  };
  if (s.integer_or("num_bits", 8) != 8)
    refuse("num_bits", fmt::format("{} bits are not modelled", s.integer_or("num_bits", 8)));
  if (s.string_or("type", "int") != type)
    refuse("type", fmt::format("\"{}\" is not modelled", s.string_or("type", "int")));
  if (!s.boolean_or("symmetric", true)) refuse("symmetric", "false (a zero point) is not modelled");
  const std::string got = s.string_or("strategy", "");
  if (got != strategy)
    refuse("strategy", got.empty() ? "missing" : fmt::format("\"{}\" is not modelled", got));
  if (s.boolean_or("dynamic", false) != dynamic)
    refuse("dynamic", dynamic ? "false (static scales) is not modelled" : "true is not modelled");
}

// The group_size `key` of q when it is a modelled one (quant_group_modelled: 32, 64 or 128; -1, one group per
// row, only where `per_row`); else a ConfigError naming it, `expected` saying what is.
int quant_group_of(const Fields& q, const char* key, const std::string& expected, bool per_row = false) {
  const bool integer = q.has(key) && q.raw()[key].is_number_integer();
  if (!integer || !quant_group_modelled(q.raw()[key].get<long long>()) ||
      (!per_row && q.raw()[key].get<long long>() == kPerRowGroup))
    throw ConfigError(
        q.file(), q.path(key),
        q.has(key) ? fmt::format("{} is not modelled", q.raw()[key].dump()) : "missing required field",
        expected);
  return static_cast<int>(q.raw()[key].get<long long>());
}

// compressed-tensors' QuantizationArgs s of llm-compressor's W4A16 or W8A16 weights (int4_pack, int8_pack):
// 4- or 8-bit int, symmetric, static, strategy group of 32, 64 or 128, or strategy channel (one scale per
// row, group_size null: kPerRowGroup); actorder null, weight or static (the groups stay in order: no g_idx).
// Returns the group size; `bits` the bits.
int expect_packed_int_args(const Fields& s, int& bits) {
  const std::string kExpected =
      "4- or 8-bit weights: num_bits 4 or 8, type int, symmetric, strategy group with group_size 32, 64 or "
      "128 or strategy channel with group_size null, not dynamic, actorder null, weight or static";
  auto refuse = [&](const char* key, const std::string& what) {
    throw ConfigError(s.file(), s.path(key), what, kExpected);
  };
  bits = static_cast<int>(s.integer_or("num_bits", 8));
  if (bits != 4 && bits != 8) refuse("num_bits", fmt::format("{} bits are not modelled", bits));
  if (s.string_or("type", "int") != "int")
    refuse("type", fmt::format("\"{}\" is not modelled", s.string_or("type", "int")));
  if (!s.boolean_or("symmetric", true)) refuse("symmetric", "false (a zero point) is not modelled");
  const std::string strategy = s.string_or("strategy", "");
  if (strategy != "group" && strategy != "channel")
    refuse("strategy", strategy.empty() ? "missing" : fmt::format("\"{}\" is not modelled", strategy));
  const bool per_row = strategy == "channel";
  if (per_row && s.has("group_size") && !s.raw()["group_size"].is_null())
    refuse("group_size",
           fmt::format("{} beside strategy channel is not modelled", s.raw()["group_size"].dump()));
  const int group = per_row ? kPerRowGroup : quant_group_of(s, "group_size", kExpected);
  if (s.boolean_or("dynamic", false)) refuse("dynamic", "true is not modelled");
  const std::string actorder = s.raw().contains("actorder") && s.raw()["actorder"].is_string()
                                   ? s.raw()["actorder"].get<std::string>()
                                   : "";
  if (s.has("actorder") && actorder != "weight" && actorder != "static")
    refuse("actorder",
           fmt::format("{} is not modelled (permuted groups: weight_g_idx)", s.raw()["actorder"].dump()));
  return group;
}

// quant_method "compressed-tensors": fp8_channel or int8_channel, and an fp8 KV cache under kv_cache_scheme;
// int4_pack (hf_quantization.hpp).
void read_compressed_tensors(const Fields& q, ModelSpec& m) {
  auto refuse = [&](const std::string& path, const std::string& what, const std::string& expected) {
    throw ConfigError(q.file(), path, what, expected);
  };
  const std::string format = q.string_or("format", "");
  if (format != "float-quantized" && format != "int-quantized" && format != "pack-quantized")
    refuse(q.path("format"), format.empty() ? "missing" : fmt::format("\"{}\" is not modelled", format),
           "float-quantized (FP8 weights), int-quantized (INT8 weights) or pack-quantized (4- or 8-bit "
           "weights)");
  const std::string status = q.string_or("quantization_status", "compressed");
  if (status != "compressed")
    refuse(q.path("quantization_status"),
           fmt::format("\"{}\": the checkpoint does not store its weights quantized", status), "compressed");
  if (q.has("sparsity_config"))
    refuse(q.path("sparsity_config"), "is set: sparse weights are not modelled", "null or absent");
  const Fields groups = q.child("config_groups");
  if (groups.raw().size() != 1)
    refuse(q.path("config_groups"),
           fmt::format("has {} groups: several schemes in one model are not modelled", groups.raw().size()),
           "one group (every Linear in one scheme)");
  const Fields g = groups.child(groups.raw().begin().key());
  const char* kTargets = "[\"Linear\"] (every linear layer)";
  if (g.string_list_or_empty("targets", kTargets) != std::vector<std::string>{"Linear"})
    refuse(g.path("targets"), fmt::format("{} is not modelled", g.raw().value("targets", json()).dump()),
           kTargets);
  if (g.has("output_activations"))
    refuse(g.path("output_activations"), "is set: quantized outputs are not modelled", "null or absent");
  expect_kept_in_dtype(q, "ignore");
  if (format == "pack-quantized") {  // W4A16, W8A16
    int bits = 4;
    m.quant_group = expect_packed_int_args(g.child("weights"), bits);
    if (g.has("input_activations"))
      refuse(g.path("input_activations"),
             fmt::format("is set: {}-bit weights under quantized activations are not modelled", bits),
             fmt::format("null or absent (W{}A16: 16-bit activations)", bits));
    if (q.has("kv_cache_scheme"))
      refuse(q.path("kv_cache_scheme"),
             fmt::format("is set: a quantized KV cache beside {}-bit weights is not modelled", bits),
             "null or absent");
    m.expert_dtype = m.linear_dtype = bits == 8 ? DType::kInt8Pack : DType::kInt4Pack;
    return;
  }
  // FP8-dynamic (float-quantized) or W8A8-INT8 (int-quantized): 8-bit weights per channel, 8-bit activations
  // per token, dynamic. llm-compressor's FP8 scheme: FP8 weights per tensor, FP8 activations per tensor,
  // static (or per token, dynamic).
  const bool int8 = format == "int-quantized";
  const char* type = int8 ? "int" : "float";
  const std::string kind = int8 ? "INT8" : "FP8";
  const bool per_tensor = !int8 && g.child("weights").string_or("strategy", "") == "tensor";
  expect_8bit_args(g.child("weights"), type, per_tensor ? "tensor" : "channel", false,
                   fmt::format("{} weights: num_bits 8, type {}, symmetric, strategy channel{}, not dynamic",
                               kind, type, int8 ? "" : " or tensor"));
  const std::string kActivations =
      per_tensor ? "FP8 activations beside per-tensor weights: num_bits 8, type float, symmetric, strategy "
                   "tensor and not dynamic (static), or strategy token and dynamic"
                 : fmt::format("{} activations: num_bits 8, type {}, symmetric, strategy token, dynamic",
                               kind, type);
  if (!g.has("input_activations"))
    refuse(g.path("input_activations"),
           fmt::format("absent or null: {} weights under 16-bit activations (weight-only) are not modelled",
                       kind),
           kActivations);
  const bool static_tensor = per_tensor && g.child("input_activations").string_or("strategy", "") == "tensor";
  expect_8bit_args(g.child("input_activations"), type, static_tensor ? "tensor" : "token", !static_tensor,
                   kActivations);
  if (q.has("kv_cache_scheme")) {
    expect_8bit_args(q.child("kv_cache_scheme"), "float", "tensor", false,
                     "an FP8 KV cache: num_bits 8, type float, symmetric, strategy tensor, not dynamic");
    m.kv_dtype = DType::kFp8;
  }
  m.expert_dtype = m.linear_dtype = int8         ? DType::kInt8Channel
                                    : per_tensor ? DType::kFp8Tensor
                                                 : DType::kFp8Channel;
  m.static_input_scales = static_tensor;
}

// The bits and group_size of an AutoAWQ or GPTQ quantization_config: `bits` (4, or also 8 where `eight`:
// GPTQ), and 32, 64 or 128 (m.quant_group), or -1 (one group per row: AutoAWQ's and GPTQ's per-channel
// weights, whose linear layers take the group as all their inputs). Returns the bits.
int expect_int_groups(const Fields& q, ModelSpec& m, bool eight) {
  const char* kBits = eight ? "4 or 8" : "4";
  if (!q.has("bits")) throw ConfigError(q.file(), q.path("bits"), "missing required field", kBits);
  const long long bits = q.integer("bits");
  if (bits != 4 && !(eight && bits == 8))
    throw ConfigError(q.file(), q.path("bits"), fmt::format("{} bits are not modelled", bits), kBits);
  m.quant_group = quant_group_of(
      q, "group_size", "32, 64 or 128 (one scale and zero point per that many inputs), or -1 (one per row)",
      true);
  return static_cast<int>(bits);
}

// quant_method "awq": int4_awq (hf_quantization.hpp).
void read_awq(const Fields& q, ModelSpec& m) {
  expect_int_groups(q, m, false);
  if (!q.boolean_or("zero_point", true))
    throw ConfigError(q.file(), q.path("zero_point"), "false (no zero points) is not modelled", "true");
  std::string version = q.string_or("version", "gemm");
  std::transform(version.begin(), version.end(), version.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (version != "gemm")
    throw ConfigError(q.file(), q.path("version"),
                      fmt::format("\"{}\": that packing is not modelled", q.string_or("version", "")),
                      "gemm (AutoAWQ's GEMM packing, which most releases use)");
  expect_kept_in_dtype(q, "modules_to_not_convert");
  m.expert_dtype = m.linear_dtype = DType::kInt4Awq;
}

// optimum's modules_in_block_to_quantize (`key` of q; TheBloke's Mixtral releases state it): the modules of a
// layer in 4 bits, as lists of names under the layer (or one list). Every projection and expert is modelled
// quantized, a router not: the list must name no router, the attention's output projection (o_proj or
// out_proj) and, for an MoE model, its experts. (duplex run checks the rest: a projection the list leaves
// out has no NAME.qweight in the checkpoint.)
void expect_every_projection(const Fields& q, const char* key, const ModelSpec& m) {
  const char* kExpected =
      "lists of a layer's module names naming its attention and expert projections and no router";
  std::vector<std::string> names;
  const nlohmann::json& lists = q.raw()[key];
  if (!lists.is_array()) throw ConfigError(q.file(), q.path(key), "is not a list", kExpected);
  for (const json& l : lists)
    for (const json& name : l.is_array() ? l : json::array({l})) {
      if (!name.is_string())
        throw ConfigError(q.file(), q.path(key), fmt::format("holds {}", name.dump()), kExpected);
      names.push_back(name.get<std::string>());
    }
  auto last = [](const std::string& n) { return n.substr(n.find_last_of('.') + 1); };
  for (const std::string& n : names)
    if (last(n) == "gate" || last(n) == "router" || last(n) == "shared_expert_gate")
      throw ConfigError(q.file(), q.path(key),
                        fmt::format("names \"{}\": a router in 4 bits is not modelled", n), kExpected);
  auto named = [&](auto&& pred) { return std::any_of(names.begin(), names.end(), pred); };
  if (!named([&](const std::string& n) { return last(n) == "o_proj" || last(n) == "out_proj"; }))
    throw ConfigError(q.file(), q.path(key),
                      "names no attention output projection: attention in 16 bits is not modelled",
                      kExpected);
  if (m.is_moe() && !named([](const std::string& n) { return n.find("experts.") != std::string::npos; }))
    throw ConfigError(q.file(), q.path(key), "names no expert: experts in 16 bits are not modelled",
                      kExpected);
}

// quant_method "gptq": int4_gptq (hf_quantization.hpp).
void read_gptq(const Fields& q, ModelSpec& m) {
  const int bits = expect_int_groups(q, m, true);
  const std::string format = q.string_or("checkpoint_format", "gptq");
  if (format != "gptq")
    throw ConfigError(q.file(), q.path("checkpoint_format"),
                      fmt::format("\"{}\": zero points stored as they are are not modelled", format),
                      "gptq (zero points stored minus 1, as AutoGPTQ and GPTQModel save them by default)");
  if (q.boolean_or("lm_head", false))
    throw ConfigError(q.file(), q.path("lm_head"), "true: a quantized LM head is not modelled", "false");
  if (q.has("modules_in_block_to_quantize")) expect_every_projection(q, "modules_in_block_to_quantize", m);
  m.expert_dtype = m.linear_dtype = bits == 8 ? DType::kInt8Gptq : DType::kInt4Gptq;
}

// quant_method "bitsandbytes": nf4 / nf4_dq, bnb_fp4 / bnb_fp4_dq, or LLM.int8()'s bnb_int8
// (hf_quantization.hpp).
void read_bitsandbytes(const Fields& q, ModelSpec& m) {
  auto refuse = [&](const char* key, const std::string& what, const std::string& expected) {
    throw ConfigError(q.file(), q.path(key), what, expected);
  };
  const bool int8 = q.boolean_or("load_in_8bit", false), int4 = q.boolean_or("load_in_4bit", false);
  if (int8 && int4)
    refuse("load_in_8bit", "true beside load_in_4bit true: one release is in one format",
           "one of load_in_8bit (LLM.int8()) and load_in_4bit (NF4 or FP4) true");
  if (!int8 && !int4)
    refuse("load_in_4bit", "false or absent, as load_in_8bit: a bitsandbytes release that quantizes nothing",
           "load_in_4bit true (NF4 or FP4) or load_in_8bit true (LLM.int8())");
  if (m.is_moe())
    refuse("quant_method",
           fmt::format(
               "bitsandbytes on an MoE model quantizes its routers' gates too: a router in {} bits is not "
               "modelled",
               int8 ? 8 : 4),
           "a dense model, or another quant_method");
  expect_kept_in_dtype(q, "llm_int8_skip_modules");
  if (int8) {
    if (q.boolean_or("llm_int8_has_fp16_weight", false))
      refuse("llm_int8_has_fp16_weight",
             "true: 16-bit weights quantized again at every step (LLM.int8() for training) are not modelled",
             "false (the weights stored in 8 bits)");
    const double threshold = q.number_or("llm_int8_threshold", 6.0);
    if (!std::isfinite(threshold) || threshold < 0)
      refuse("llm_int8_threshold", fmt::format("{}", threshold),
             "a number >= 0: the magnitude above which an activation's column is multiplied in 16 bits (0: "
             "none; BitsAndBytesConfig's default 6.0)");
    m.expert_dtype = m.linear_dtype = DType::kBnbInt8;
    m.llm_int8_threshold = threshold;
    return;
  }
  const std::string type = q.string_or("bnb_4bit_quant_type", "fp4");  // BitsAndBytesConfig's default
  if (type != "nf4" && type != "fp4")
    refuse("bnb_4bit_quant_type", fmt::format("\"{}\" is not a bitsandbytes 4-bit type", type),
           "nf4 (NormalFloat 4) or fp4 (bitsandbytes' FP4, the default)");
  const std::string storage = q.string_or("bnb_4bit_quant_storage", "uint8");
  if (storage != "uint8")
    refuse("bnb_4bit_quant_storage", fmt::format("\"{}\" is not modelled", storage),
           "uint8 (two 4-bit fields a byte)");
  const bool nested = q.boolean_or("bnb_4bit_use_double_quant", false);
  m.expert_dtype = m.linear_dtype =
      type == "nf4" ? (nested ? DType::kNf4Dq : DType::kNf4) : (nested ? DType::kBnbFp4Dq : DType::kBnbFp4);
}

// quant_method "fbgemm_fp8": fp8_channel under activation_scale_ub, with unquantized_attention and
// unquantized_ffn_layers from modules_to_not_convert (hf_quantization.hpp).
void read_fbgemm_fp8(const Fields& q, const std::string& type, ModelSpec& m) {
  auto refuse = [&](const std::string& path, const std::string& what, const std::string& expected) {
    throw ConfigError(q.file(), path, what, expected);
  };
  const bool phi3 = type == "phi3";
  const std::vector<std::string> llama_like = {"llama", "mistral", "qwen2",       "qwen3",     "phi3",
                                               "gemma", "gemma2",  "gemma3_text", "starcoder2"};
  if (m.is_moe() || std::find(llama_like.begin(), llama_like.end(), type) == llama_like.end())
    refuse(q.path("quant_method"), fmt::format("fbgemm_fp8 on model_type \"{}\" is not modelled", type),
           "a dense model named as Llama's layers are (llama, mistral, qwen2, qwen3, phi3, gemma, gemma2, "
           "gemma3_text, starcoder2), as Meta's Llama 3.1 FP8 releases are");
  const char* kBound = "a number > 0: the bound of the per-token activation scales (Meta's releases: 1200.0)";
  if (!q.has("activation_scale_ub") || !q.raw()["activation_scale_ub"].is_number())
    refuse(q.path("activation_scale_ub"), q.has("activation_scale_ub") ? "is not a number" : "missing",
           kBound);
  const double bound = q.raw()["activation_scale_ub"].get<double>();
  if (!std::isfinite(bound) || bound <= 0)
    refuse(q.path("activation_scale_ub"), fmt::format("is {}", bound), kBound);
  // The modules of a layer's groups (transformers' module names under model.layers.<l>.).
  const std::vector<std::string> attention =
      phi3 ? std::vector<std::string>{"qkv_proj", "o_proj"}
           : std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj"};
  const std::vector<std::string> ffn = phi3 ? std::vector<std::string>{"gate_up_proj", "down_proj"}
                                       : type == "starcoder2"
                                           ? std::vector<std::string>{"c_fc", "c_proj"}
                                           : std::vector<std::string>{"gate_proj", "up_proj", "down_proj"};
  const std::string kModules = fmt::format(
      "a list of modules: lm_head, embed_tokens, or model.layers.<l>.self_attn.<{}> or "
      "model.layers.<l>.mlp.<{}>, l in [0, {}) (each layer's attention projections all or none, and the same "
      "in every layer; a layer's FFN matrices all or none)",
      fmt::join(attention, " | "), fmt::join(ffn, " | "), m.layers);
  const std::vector<std::string> modules = q.string_list_or_empty("modules_to_not_convert", kModules.c_str());
  std::vector<std::vector<std::string>> attention_kept(m.layers), ffn_kept(m.layers);
  for (std::size_t i = 0; i < modules.size(); ++i) {
    const std::string path = fmt::format("{}[{}]", q.path("modules_to_not_convert"), i);
    if (kept_in_dtype(modules[i])) continue;
    std::string rest = modules[i].starts_with("model.") ? modules[i].substr(6) : modules[i];
    int layer = -1;
    std::size_t digits = 0;
    if (rest.starts_with("layers.")) {
      rest = rest.substr(7);
      while (digits < rest.size() && std::isdigit(static_cast<unsigned char>(rest[digits])) != 0) ++digits;
      if (digits > 0 && digits < 8) layer = std::stoi(rest.substr(0, digits));
      rest = rest.substr(digits);
    }
    const bool in_attention = rest.starts_with(".self_attn."), in_ffn = rest.starts_with(".mlp.");
    const std::string name = in_attention ? rest.substr(11) : in_ffn ? rest.substr(5) : "";
    const std::vector<std::string>& group = in_attention ? attention : ffn;
    if (layer < 0 || layer >= m.layers || name.empty() ||
        std::find(group.begin(), group.end(), name) == group.end())
      refuse(path, fmt::format("\"{}\" is not a module of this model left unquantized", modules[i]),
             kModules);
    std::vector<std::string>& kept =
        (in_attention ? attention_kept : ffn_kept)[static_cast<std::size_t>(layer)];
    if (std::find(kept.begin(), kept.end(), name) == kept.end()) kept.push_back(name);
  }
  const std::string list = q.path("modules_to_not_convert");
  auto expect_whole = [&](std::size_t kept, std::size_t of, int l, const char* group) {
    if (kept != 0 && kept != of)
      refuse(list,
             fmt::format("names {} of layer {}'s {} {}: a group partly in FP8 is not modelled", kept, l, of,
                         group),
             kModules);
  };
  int attention_layers = 0;
  for (int l = 0; l < m.layers; ++l) {
    const std::size_t a = attention_kept[static_cast<std::size_t>(l)].size(),
                      f = ffn_kept[static_cast<std::size_t>(l)].size();
    expect_whole(a, attention.size(), l, "attention projections");
    expect_whole(f, ffn.size(), l, "FFN matrices");
    attention_layers += a != 0 ? 1 : 0;
    if (f != 0) m.unquantized_ffn_layers.push_back(l);
  }
  if (attention_layers != 0 && attention_layers != m.layers)
    refuse(
        list,
        fmt::format("keeps the attention projections of {} of {} layers in {}: per-layer attention formats "
                    "are not modelled",
                    attention_layers, m.layers, dtype_name(m.dtype)),
        kModules);
  m.unquantized_attention = attention_layers == m.layers;
  m.activation_scale_ub = bound;
  m.linear_dtype = DType::kFp8Channel;
}

}  // namespace

void read_quantization(const Fields& f, const std::string& type, ModelSpec& m) {
  m.expert_dtype = m.linear_dtype = m.dtype;
  if (!f.has("quantization_config")) return;
  const Fields q = f.child("quantization_config");
  const std::string method = q.string_or("quant_method", "");
  if (method == "mxfp4" && type == "gpt_oss") {
    m.expert_dtype = DType::kMxfp4;
    return;
  }
  if (method == "fp8") return read_fine_grained_fp8(q, m);
  if (method == "compressed-tensors") return read_compressed_tensors(q, m);
  if (method == "awq") return read_awq(q, m);
  if (method == "gptq") return read_gptq(q, m);
  // transformers before 4.32 wrote BitsAndBytesConfig without quant_method; it still reads load_in_8bit or
  // load_in_4bit true as bitsandbytes (AutoHfQuantizer.from_config).
  if (method == "bitsandbytes" ||
      (method.empty() && (q.boolean_or("load_in_8bit", false) || q.boolean_or("load_in_4bit", false))))
    return read_bitsandbytes(q, m);
  if (method == "fbgemm_fp8") return read_fbgemm_fp8(q, type, m);
  throw ConfigError(
      f.file(), q.path("quant_method"),
      method.empty() ? "missing" : fmt::format("\"{}\" is not modelled", method),
      "fp8 (block-scaled FP8 weights), compressed-tensors (FP8 or INT8 weights with a scale per "
      "output channel, or W4A16 / W8A16 weights in groups of 32, 64 or 128), awq or gptq (4-bit weights in "
      "groups of 32, 64 or 128), bitsandbytes (NF4, FP4 or LLM.int8() weights), fbgemm_fp8 (FP8 weights "
      "with a scale per output channel, Meta's Llama 3.1 FP8 releases), mxfp4 (gpt-oss's experts), or no "
      "quantization_config");
}

}  // namespace duplex::compiler
