// Llama 4 in the compiler: its config.json (HF Llama4TextConfig's defaults; the multimodal wrapper), our
// YAML keys, and what lowering charges for chunked attention, NoPE layers and their temperature tuning.
#include <gtest/gtest.h>

#include <string>

#include "config_errors.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/hf_import.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/compiler/model_spec.hpp"

namespace duplex::compiler {
namespace {

// meta-llama/Llama-4-Scout-17B-16E's text_config, trimmed to the fields the importer reads.
std::string scout_text(const std::string& extra = "") {
  std::string rope;
  for (int l = 0; l < 48; ++l) rope += std::string(l ? ", " : "") + ((l + 1) % 4 ? "1" : "0");
  return R"({"model_type": "llama4_text", "hidden_size": 5120, "intermediate_size": 8192,
    "intermediate_size_mlp": 16384, "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8,
    "head_dim": 128, "num_local_experts": 16, "num_experts_per_tok": 1, "interleave_moe_layer_step": 1,
    "attention_chunk_size": 8192, "use_qk_norm": true, "attn_temperature_tuning": 4, "floor_scale": 8192,
    "attn_scale": 0.1, "max_position_embeddings": 10485760, "vocab_size": 202048, "tie_word_embeddings": false,
    "torch_dtype": "bfloat16", "rope_theta": 500000.0, "no_rope_layers": [)" +
         rope + "]" + extra + "}";
}

using testing::hf_config_error;

TEST(Llama4, ScoutImportMatchesTheModelCardAndThePreset) {
  const ModelSpec m = import_hf_config(scout_text(), "scout.json");
  // The card's 109B counts the vision encoder too; the language model holds 107.8B, 17.2B active.
  EXPECT_NEAR(static_cast<double>(m.params()) / 1e9, 107.8, 0.1);
  EXPECT_NEAR(static_cast<double>(m.active_params()) / 1e9, 17.2, 0.1);
  EXPECT_EQ(m.router, Router::kSigmoidTopK);
  EXPECT_TRUE(m.expert_input_scaled);
  EXPECT_FALSE(m.router_renormalize);
  EXPECT_EQ(m.shared_experts, 1);
  EXPECT_EQ(m.qk_norm, QkNorm::kL2);
  EXPECT_EQ(m.weight_naming, WeightNaming::kLlama4);
  EXPECT_EQ(m.nope_layers.size(), 12u);
  EXPECT_EQ(m.nope_layers.front(), 3);
  EXPECT_EQ(m.attention_chunk, 8192);
  EXPECT_EQ(m.attention_chunk_of(0), 8192);
  EXPECT_EQ(m.attention_chunk_of(3), 0);  // a NoPE layer attends fully
  EXPECT_FALSE(m.rotates(3));
  EXPECT_TRUE(m.rotates(4));
  EXPECT_EQ(m.windowed_layers(), 36);
  EXPECT_EQ(m.window_note(), "chunked attention 8192 (36 of 48 layers)");
  EXPECT_EQ(m.attn_temperature_floor, 8192);
  EXPECT_DOUBLE_EQ(m.attn_temperature_scale, 0.1);
  const ModelSpec preset = load_model("llama-4-scout");
  EXPECT_EQ(preset.params(), m.params());
  EXPECT_EQ(preset.active_params(), m.active_params());
  EXPECT_EQ(preset.nope_layers, m.nope_layers);
  EXPECT_EQ(preset.full_attention_layers, m.full_attention_layers);
  // The multimodal config (Llama4ForConditionalGeneration) holds the same model in text_config.
  const ModelSpec wrapped =
      import_hf_config(R"({"model_type": "llama4", "vision_config": {"hidden_size": 1408}, "text_config": )" +
                           scout_text() + "}",
                       "scout-multimodal.json");
  EXPECT_EQ(wrapped.params(), m.params());
  EXPECT_EQ(wrapped.full_attention_layers, m.full_attention_layers);
}

// Maverick: MoE on every other layer (interleave_moe_layer_step 2: 1, 3, ...), dense 16384-wide FFNs between,
// no q / k norm.
TEST(Llama4, MaverickInterleavesDenseAndMoeLayers) {
  const ModelSpec m = import_hf_config(
      scout_text(R"(, "num_local_experts": 128, "interleave_moe_layer_step": 2, "use_qk_norm": false)"),
      "maverick.json");
  EXPECT_FALSE(m.is_moe_layer(0));
  EXPECT_TRUE(m.is_moe_layer(1));
  EXPECT_EQ(m.moe_layers_before(48), 24);
  EXPECT_EQ(m.qk_norm, QkNorm::kNone);
  EXPECT_NEAR(static_cast<double>(m.params()) / 1e9, 400.7, 0.1);  // the card: 400B total, 17B active
  EXPECT_NEAR(static_cast<double>(m.active_params()) / 1e9, 17.2, 0.1);
  EXPECT_EQ(load_model("llama-4-maverick").params(), m.params());
  // An explicit moe_layers list wins over the step.
  const ModelSpec listed = import_hf_config(scout_text(R"(, "moe_layers": [0, 47])"), "config.json");
  EXPECT_TRUE(listed.is_moe_layer(0) && listed.is_moe_layer(47));
  EXPECT_EQ(listed.moe_layers_before(48), 2);
}

// Llama4TextConfig's defaults: every 4th layer NoPE (no_rope_layer_interval) and fully attending, the others
// chunked (8192); layer_types overrides the chunked layers; [] for no_rope_layers means the default.
TEST(Llama4, DefaultsAndLayerTypes) {
  const std::string tiny = R"({"model_type": "llama4_text", "hidden_size": 64, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 32,
    "intermediate_size_mlp": 48, "vocab_size": 100, "max_position_embeddings": 65536)";
  const ModelSpec m = import_hf_config(tiny + R"(, "no_rope_layers": []})", "config.json");
  EXPECT_EQ(m.nope_layers, (std::vector<int>{3}));
  EXPECT_EQ(m.full_attention_layers, (std::vector<int>{3}));
  EXPECT_EQ(m.attention_chunk, 8192);
  EXPECT_EQ(m.experts, 16);
  EXPECT_EQ(m.top_k, 1);
  EXPECT_EQ(m.qk_norm, QkNorm::kL2);
  const ModelSpec typed = import_hf_config(
      tiny +
          R"(, "layer_types": ["full_attention", "chunked_attention", "full_attention", "full_attention"]})",
      "config.json");
  EXPECT_EQ(typed.full_attention_layers, (std::vector<int>{0, 2, 3}));
  // A chunk covering every position is no chunk; so is temperature tuning turned off.
  const ModelSpec unchunked = import_hf_config(
      tiny + R"(, "attention_chunk_size": 65536, "attn_temperature_tuning": false})", "c.json");
  EXPECT_EQ(unchunked.attention_chunk, 0);
  EXPECT_TRUE(unchunked.full_attention_layers.empty());
  EXPECT_EQ(unchunked.attn_temperature_floor, 0);
  EXPECT_NE(hf_config_error(tiny + R"(, "no_rope_layers": [1, 1, 2, 0]})")
                .find("config.json: no_rope_layers[2]: is 2"),
            std::string::npos);
  EXPECT_NE(hf_config_error(tiny + R"(, "no_rope_layers": [1, 0]})").find("has 2 entries for 4 layers"),
            std::string::npos);
  EXPECT_NE(
      hf_config_error(tiny + R"(, "layer_types": ["sliding_attention", "full_attention", "full_attention",
    "full_attention"]})")
          .find("layer_types[0]: \"sliding_attention\" is not a layer type"),
      std::string::npos);
  const std::string no_text = hf_config_error(R"({"model_type": "llama4", "hidden_size": 64})");
  EXPECT_NE(no_text.find("config.json: text_config: missing"), std::string::npos) << no_text;
}

TEST(Llama4, YamlKeysAndTheirErrors) {
  auto yaml_error = [](const std::string& extra) {
    return testing::model_yaml_error("name: x\nlayers: 4\nhidden: 64\nheads: 4\nvocab: 10\nffn: 32\n" +
                                     extra);
  };
  EXPECT_NE(yaml_error("attention_chunk: 8\nsliding_window: 4\n")
                .find("attention_chunk: is set with sliding_window"),
            std::string::npos);
  EXPECT_NE(yaml_error("attention_chunk: 8\nfull_attention_layers: [0, 1, 2, 3]\n")
                .find("no layer has the chunked"),
            std::string::npos);
  EXPECT_NE(yaml_error("router: sigmoid_topk\n").find("router: sigmoid_topk is set for a dense model"),
            std::string::npos);
  EXPECT_NE(yaml_error("expert_input_scaled: true\n").find("expert_input_scaled: is set for a dense model"),
            std::string::npos);
  EXPECT_NE(yaml_error("attn_temperature_floor: 4\n").find("no layer is in nope_layers"), std::string::npos);
  EXPECT_NE(
      yaml_error("nope_layers: [1]\nattn_temperature_scale: 0.1\n").find("without attn_temperature_floor"),
      std::string::npos);
  EXPECT_NE(yaml_error("nope_layers: [1]\nattn_temperature_floor: 4\nattn_temperature_scale: 1e30\n")
                .find("attn_temperature_scale: must be a number in [0, 10]"),
            std::string::npos);
  EXPECT_NE(yaml_error("nope_layers: [4]\n").find("nope_layers"), std::string::npos);
  EXPECT_NE(yaml_error("qk_norm: l3\n").find("qk_norm"), std::string::npos);
  EXPECT_EQ(yaml_error("attention_chunk: 8\nfull_attention_layers: [3]\nnope_layers: [3]\nqk_norm: l2\n"
                       "attn_temperature_floor: 4\nattn_temperature_scale: 0.1\n"),
            "no error");
}

// Lowering: a chunked layer's decode query reads only its chunk's tokens (context % chunk + 1), a prefill the
// pairs within each chunk; a NoPE layer is not rotated and its queries pass a temperature op.
TEST(Llama4, LoweringChargesChunksNopeAndTemperature) {
  ModelSpec m = load_model("tiny-llama4");  // chunk 3 on layers 0, 1, 3; layer 2 NoPE; 8 heads of 16
  auto attention = [&](const BatchState& b, int layer, OpKind kind) {
    const Graph g = lower(m, b, ParallelLayout::make(m, load_system("gpu"), 1), Routing{});
    for (const Op& o : g.ops)
      if (o.kind == kind && o.layer == layer) return o;
    throw Error("no such op");
  };
  const double pair_flops = 4.0 * 8 * 16;
  // Decode at context 10 (position 10: chunk [9, 10]): 2 tokens in a chunked layer, 11 in the NoPE one.
  const BatchState decode = BatchState::decode_batch(1, 10);
  EXPECT_EQ(attention(decode, 0, OpKind::kAttentionDecode).context_tokens, 2);
  EXPECT_DOUBLE_EQ(attention(decode, 0, OpKind::kAttentionDecode).flops, 2 * pair_flops);
  EXPECT_EQ(attention(decode, 2, OpKind::kAttentionDecode).context_tokens, 11);
  // A prompt of 7 tokens: chunks of 3, 3 and 1 tokens attend 6 + 6 + 1 pairs.
  BatchState prefill;
  prefill.groups.push_back({1, 0, 7, true});
  EXPECT_DOUBLE_EQ(attention(prefill, 0, OpKind::kAttentionPrefill).flops, 13 * pair_flops);
  EXPECT_DOUBLE_EQ(attention(prefill, 2, OpKind::kAttentionPrefill).flops, 28 * pair_flops);
  // Layer 2 has no RoPE pass (no q / k norm there either) but a temperature op; the others the reverse.
  const Graph g = lower(m, decode, ParallelLayout::make(m, load_system("gpu"), 1), Routing{});
  int rope = 0, temperature = 0;
  for (const Op& o : g.ops) {
    if (o.kind != OpKind::kRope) continue;
    (o.name.ends_with("attn_temperature") ? temperature : rope) += 1;
    EXPECT_EQ(o.layer == 2, o.name.ends_with("attn_temperature")) << o.name;
  }
  EXPECT_EQ(rope, 3);
  EXPECT_EQ(temperature, 1);
}

}  // namespace
}  // namespace duplex::compiler
