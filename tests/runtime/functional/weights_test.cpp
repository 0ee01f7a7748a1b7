// Weights for functional emulation: deterministic random init, safetensors round trip, and every error class
// of the reader (each naming the file and the tensor).
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <unistd.h>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/runtime/functional/reference_forward.hpp"
#include "duplex/runtime/functional/safetensors.hpp"

namespace duplex::runtime::functional {
namespace {

namespace fs = std::filesystem;

compiler::ModelSpec tiny_moe() { return compiler::load_model("tiny-moe"); }

fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / fmt::format("duplex_weights_{}_{}", name, ::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void spit(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary | std::ios::trunc) << s; }

// Writes `config` as dir's config.json and expects load_checkpoint(dir) to refuse it with an error that holds
// "<config.json path>: <want>".
void expect_refused(const fs::path& dir, const nlohmann::json& config, const std::string& want) {
  SCOPED_TRACE(want);
  const fs::path file = dir / "config.json";
  spit(file, config.dump());
  try {
    load_checkpoint(dir.string());
    ADD_FAILURE() << "no error for " << config.dump();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(file.string() + ": " + want), std::string::npos) << e.what();
  }
}

// Splits a safetensors file into (header JSON, data bytes).
std::pair<nlohmann::json, std::string> split(const std::string& file) {
  std::uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  return {nlohmann::json::parse(file.substr(8, n)), file.substr(8 + n)};
}
std::string join(const nlohmann::json& header, const std::string& data) {
  const std::string h = header.dump();
  const std::uint64_t n = h.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  return out + h + data;
}

// The FP16 data of tensor `name` as the safetensors file stores it.
std::vector<std::uint16_t> read_tensor_data(const fs::path& file, const std::string& name) {
  const auto [header, data] = split(slurp(file));
  const auto& offsets = header.at(name).at("data_offsets");
  const auto begin = offsets[0].get<std::size_t>(), end = offsets[1].get<std::size_t>();
  std::vector<std::uint16_t> out((end - begin) / 2);
  std::memcpy(out.data(), data.data() + begin, end - begin);
  return out;
}

// Expects read_safetensors(path) to throw duplex::Error whose message holds every fragment.
void expect_error(const fs::path& path, const std::vector<std::string>& fragments) {
  try {
    read_safetensors(path.string(), tiny_moe());
    FAIL() << "no error for " << path;
  } catch (const Error& e) {
    const std::string what = e.what();
    for (const auto& f : fragments) EXPECT_NE(what.find(f), std::string::npos) << what << "\n  lacks: " << f;
  }
}

TEST(RandomWeights, DeterministicShapedAndScaled) {
  const ModelWeights a = random_weights(tiny_moe(), 7), b = random_weights(tiny_moe(), 7), c = random_weights(tiny_moe(), 8);
  ASSERT_EQ(a.tensors.size(), expected_weights(tiny_moe()).size());
  for (const auto& s : expected_weights(tiny_moe())) EXPECT_EQ(a.get(s.name).shape, s.shape) << s.name;
  for (const auto& [name, t] : a.tensors) EXPECT_EQ(t.data, b.tensors.at(name).data) << name;
  EXPECT_NE(a.get(weight_name::embedding()).data, c.get(weight_name::embedding()).data);
  // q_proj: N(0, 1/hidden): sample std within 5% of 1/16.
  const auto& q = a.get(weight_name::attn_proj(0, 'q')).data;
  double sq = 0;
  for (auto v : q) sq += std::pow(half_bits_to_float(v), 2);
  EXPECT_NEAR(std::sqrt(sq / static_cast<double>(q.size())), 1.0 / 16, 0.05 / 16);
}

// A tensor beyond one random stream's chunk (2^20 elements) continues in another stream: deterministic,
// not a repeat of the first chunk, and still N(0, 1) for the embedding.
TEST(RandomWeights, LargeTensorsAreFilledByChunkStreamsDeterministically) {
  compiler::ModelSpec m = compiler::load_model("tiny-dense");
  m.vocab = 8192;  // embedding 8192 x 256 = 2^21 elements: two chunks
  const ModelWeights a = random_weights(m, 3), b = random_weights(m, 3);
  const auto& e = a.get(weight_name::embedding()).data;
  ASSERT_EQ(e.size(), std::size_t{1} << 21);
  EXPECT_EQ(e, b.get(weight_name::embedding()).data);
  const std::size_t half = e.size() / 2;
  EXPECT_FALSE(std::equal(e.begin(), e.begin() + 1000, e.begin() + static_cast<std::ptrdiff_t>(half)));
  double sq = 0;
  for (std::size_t i = half; i < e.size(); ++i) sq += std::pow(half_bits_to_float(e[i]), 2);
  EXPECT_NEAR(std::sqrt(sq / static_cast<double>(half)), 1.0, 0.01);
  // The first chunk is the tensor's own stream: a tensor under one chunk is as before chunking.
  compiler::ModelSpec small = m;
  small.vocab = 1024;
  const ModelWeights s = random_weights(small, 3);
  const auto& first = s.get(weight_name::embedding()).data;
  EXPECT_TRUE(std::equal(first.begin(), first.end(), e.begin()));
}

// The weights must fit in host memory as FP16 (2 bytes per parameter): a model that does not is refused
// before anything is allocated, naming it and both sizes; Llama 4 Maverick's 801 GB on this machine too.
TEST(RandomWeights, ModelsLargerThanHostMemoryAreRefused) {
  const compiler::ModelSpec m = tiny_moe();
  const double bytes = 2.0 * static_cast<double>(m.params());
  EXPECT_NO_THROW(check_weights_fit(m, bytes));
  try {
    check_weights_fit(m, bytes - 1);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fmt::format("model {} has", m.name)), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("more than this machine's"), std::string::npos) << e.what();
  }
  const compiler::ModelSpec maverick = compiler::load_model("llama-4-maverick");
  ASSERT_GT(host_memory_bytes(), 0.0);
  if (host_memory_bytes() < 2.0 * static_cast<double>(maverick.params())) {
    EXPECT_THROW(random_weights(maverick, 1), Error);
  }
}

TEST(RandomWeights, UnsupportedModelsAreRejected) {
  compiler::ModelSpec m = tiny_moe();
  m.dtype = m.kv_dtype = compiler::DType::kBf16;  // computed in FP16
  EXPECT_NO_THROW(random_weights(m, 1));
  m.dtype = compiler::DType::kFp8;
  EXPECT_THROW(random_weights(m, 1), Error);
  m = tiny_moe();
  m.attention = compiler::AttentionKind::kMla;
  EXPECT_THROW(random_weights(m, 1), Error);
  m = tiny_moe();
  m.shared_experts = 1;
  EXPECT_THROW(random_weights(m, 1), Error);
  // Every activation in either FFN form (the Logic-PIM's activation unit has all eight).
  for (const auto kind : {compiler::FfnKind::kGated, compiler::FfnKind::kTwoMatrix})
    for (const auto act : {compiler::Activation::kSilu, compiler::Activation::kGelu,
                           compiler::Activation::kGeluTanh, compiler::Activation::kRelu}) {
      m = tiny_moe();
      m.ffn_kind = kind;
      m.activation = act;
      EXPECT_NO_THROW(random_weights(m, 1)) << compiler::activation_name(act);
    }
  // DBRX's names hold every layer's experts, bias-free LayerNorms and nothing else.
  m = compiler::load_model("tiny-dense");
  m.weight_naming = compiler::WeightNaming::kDbrx;
  EXPECT_THROW(random_weights(m, 1), Error);
  m = compiler::load_model("tiny-dbrx");
  m.qkv_bias = true;
  EXPECT_THROW(random_weights(m, 1), Error);
  m = compiler::load_model("tiny-dbrx");
  m.norm_bias = true;
  try {
    random_weights(m, 1);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("norm_bias: DBRX's checkpoint names have no place for it"),
              std::string::npos)
        << e.what();
  }
  m = compiler::load_model("tiny-dense");
  m.mlp_bias = true;  // a gated dense FFN with biases (Llama's mlp_bias): no checkpoint names them here
  try {
    random_weights(m, 1);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mlp_bias: true with a gated dense FFN"), std::string::npos)
        << e.what();
  }
  // MXFP4 experts outside gpt-oss's names, or in rows that are not whole MXFP4 blocks; gpt-oss's expert biases
  // under another family's names.
  for (auto [change, text] :
       {std::pair<void (*)(compiler::ModelSpec&), const char*>{
            [](compiler::ModelSpec& s) {
              s.expert_dtype = compiler::DType::kMxfp4;
              s.weight_naming = compiler::WeightNaming::kMixtral;
              s.mlp_bias = false;
              s.router_bias = false;
            },
            "expert_dtype: experts in mxfp4; expected fp16, bf16, fp8_block128, fp8_channel, fp8_tensor, "
            "int8_channel, "
            "int4_awq, int4_gptq, int4_pack, int8_gptq, int8_pack (mxfp4 with gpt-oss's names)"},
        {[](compiler::ModelSpec& s) {
           s.expert_dtype = compiler::DType::kMxfp4;
           s.expert_ffn = 48;
         },
         "MXFP4 rows are whole blocks of 32"},
        {[](compiler::ModelSpec& s) { s.weight_naming = compiler::WeightNaming::kMixtral; },
         "mlp_bias: true for an MoE model not named gpt_oss"}}) {
    m = compiler::load_model("tiny-gpt-oss");
    change(m);
    try {
      random_weights(m, 1);
      ADD_FAILURE() << "no error: " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  }
}

TEST(Safetensors, RoundTripIsExactAndGivesTheSameTokens) {
  const fs::path dir = temp_dir("roundtrip");
  ModelWeights w = random_weights(tiny_moe(), 4);
  w.numerics.norm_eps = 1e-6f;
  w.numerics.rope_theta = 500000.0f;
  write_checkpoint(dir.string(), w);
  const ModelWeights back = load_checkpoint(dir.string());
  EXPECT_EQ(back.spec.experts, 8);
  EXPECT_EQ(back.spec.top_k, 2);
  EXPECT_EQ(back.numerics.norm_eps, 1e-6f);
  EXPECT_EQ(back.numerics.rope_theta, 500000.0f);
  ASSERT_EQ(back.tensors.size(), w.tensors.size());
  for (const auto& [name, t] : w.tensors) {
    EXPECT_EQ(back.get(name).shape, t.shape) << name;
    EXPECT_EQ(back.get(name).data, t.data) << name;
  }
  const std::vector<std::vector<std::int32_t>> prompt{{3, 1, 4}};
  EXPECT_EQ(reference_generate(w, prompt, 3).tokens, reference_generate(back, prompt, 3).tokens);
  // The header length is little-endian and the data starts 8-byte aligned.
  const std::string file = slurp(dir / "model.safetensors");
  std::uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  fs::remove_all(dir);
}

// Every HF family write_checkpoint states: the config.json it writes reads back as the same ModelSpec (each
// field the functional emulation depends on), in one file or sharded, with identical tensors.
TEST(Safetensors, EveryFamilyRoundTripsThroughConfigJsonOneFileOrSharded) {
  struct Family {
    const char* type;
    std::function<compiler::ModelSpec()> spec;
  };
  // tiny-moe under Qwen-MoE names with q / k norms of `norm` and routing renormalised or not.
  auto qwen_named_moe = [](compiler::QkNorm norm, bool renormalize) {
    return [=] {
      auto m = compiler::load_model("tiny-moe");
      m.weight_naming = compiler::WeightNaming::kQwenMoe;
      m.qk_norm = norm;
      m.router_renormalize = renormalize;
      return m;
    };
  };
  const std::vector<Family> families = {
      {"llama", [] { return compiler::load_model("tiny-dense"); }},
      {"llama",
       [] {  // attention_bias: all four projections
         auto m = compiler::load_model("tiny-dense");
         m.qkv_bias = m.o_bias = true;
         return m;
       }},
      {"qwen2",
       [] {
         auto m = compiler::load_model("tiny-dense");
         m.qkv_bias = true;
         m.sliding_window = 8;
         m.full_attention_layers = {0};
         return m;
       }},
      {"mistral",
       [] {  // a window on every layer
         auto m = compiler::load_model("tiny-dense");
         m.sliding_window = 8;
         return m;
       }},
      {"qwen3",
       [] {
         auto m = compiler::load_model("tiny-dense");
         m.qk_norm = compiler::QkNorm::kPerHead;
         return m;
       }},
      {"mixtral", [] { return compiler::load_model("tiny-moe"); }},
      {"qwen2_moe", [] { return compiler::load_model("tiny-qwen-moe"); }},
      {"qwen3_moe", qwen_named_moe(compiler::QkNorm::kPerHead, true)},
      {"olmoe", qwen_named_moe(compiler::QkNorm::kWhole, false)},
      {"opt", [] { return compiler::load_model("tiny-opt"); }},
      {"starcoder2", [] { return compiler::load_model("tiny-starcoder2"); }},
      {"gemma", [] { return compiler::load_model("tiny-gemma"); }},
      {"phimoe", [] { return compiler::load_model("tiny-phimoe"); }},
      {"phi3",
       [] {  // fused qkv_proj / gate_up_proj, a window on every layer
         auto m = compiler::load_model("tiny-dense");
         m.weight_naming = compiler::WeightNaming::kPhi3;
         m.sliding_window = 8;
         return m;
       }},
      {"phi3",
       [] {  // Phi-4-mini's partial RoPE: 12 of 16 elements rotated
         auto m = compiler::load_model("tiny-dense");
         m.weight_naming = compiler::WeightNaming::kPhi3;
         m.rotary_dim = 12;
         return m;
       }},
      {"deepseek_v2", [] { return compiler::load_model("tiny-deepseek"); }},
      {"deepseek_v2",
       [] {  // V2-Lite's greedy routing
         auto m = compiler::load_model("tiny-deepseek");
         m.router = compiler::Router::kSoftmaxTopK;
         m.router_groups = m.router_topk_groups = 1;
         return m;
       }},
      {"deepseek_v3", [] { return compiler::load_model("tiny-deepseek-v3"); }},
      {"dbrx", [] { return compiler::load_model("tiny-dbrx"); }},
      {"gpt_oss", [] { return compiler::load_model("tiny-gpt-oss"); }},
      {"gpt_oss",
       [] {  // no window
         auto m = compiler::load_model("tiny-gpt-oss");
         m.sliding_window = 0;
         m.full_attention_layers.clear();
         return m;
       }},
      {"gemma2", [] { return compiler::load_model("tiny-gemma2"); }},
      {"llama4_text", [] { return compiler::load_model("tiny-llama4"); }},
      {"llama4_text",
       [] { return compiler::load_model(std::string(DUPLEX_TEST_DATA_DIR) + "/tiny-llama4-scout.json"); }},
      {"llama4_text",
       [] {  // MoE on layers 0 and 3 only (moe_layers), no chunks, no temperature, no q / k norm
         auto m = compiler::load_model("tiny-llama4");
         m.moe_every = 1;
         m.dense_layers = {1, 2};
         m.attention_chunk = 0;
         m.full_attention_layers.clear();
         m.attn_temperature_floor = 0;
         m.attn_temperature_scale = 0;
         m.qk_norm = compiler::QkNorm::kNone;
         return m;
       }},
      {"gemma3_text",
       [] { return compiler::load_model(std::string(DUPLEX_TEST_DATA_DIR) + "/tiny-gemma3.json"); }},
      {"gemma2",
       [] {  // uncapped, no window, the scale of head_dim
         auto m = compiler::load_model("tiny-gemma2");
         m.attn_softcap = m.final_softcap = 0;
         m.sliding_window = 0;
         m.full_attention_layers.clear();
         m.query_pre_attn_scalar = 0;
         return m;
       }},
      {"dbrx",
       [] {  // moe_normalize_expert_weights null, unclamped, a GELU ffn_act_fn
         auto m = compiler::load_model("tiny-dbrx");
         m.router_renormalize = false;
         m.clip_qkv = 0;
         m.activation = compiler::Activation::kGelu;
         return m;
       }},
  };
  for (const Family& f : families)
    for (int shards : {1, 3}) {
      const compiler::ModelSpec spec = f.spec();
      SCOPED_TRACE(std::string(f.type) + " in " + std::to_string(shards) + " file(s)");
      EXPECT_EQ(hf_model_type(spec), f.type);
      const fs::path dir = temp_dir("family");
      const ModelWeights w = random_weights(spec, 5);
      write_checkpoint(dir.string(), w, shards);
      EXPECT_EQ(fs::exists(dir / "model.safetensors.index.json"), shards > 1);
      const nlohmann::json config = nlohmann::json::parse(slurp(dir / "config.json"));
      EXPECT_EQ(config["model_type"], f.type);
      EXPECT_EQ(config["architectures"].size(), 1u);
      EXPECT_TRUE(config["architectures"][0].get<std::string>().ends_with("ForCausalLM"));
      const ModelWeights back = load_checkpoint(dir.string());
      const compiler::ModelSpec& b = back.spec;
      EXPECT_EQ(b.qkv_bias, spec.qkv_bias);
      EXPECT_EQ(b.o_bias, spec.o_bias);
      EXPECT_EQ(b.qk_norm, spec.qk_norm);
      EXPECT_EQ(b.router_renormalize, spec.router_renormalize);
      EXPECT_EQ(b.shared_experts, spec.shared_experts);
      EXPECT_EQ(b.shared_expert_ffn, spec.shared_expert_ffn);
      EXPECT_EQ(b.shared_expert_gate, spec.shared_expert_gate);
      EXPECT_EQ(b.weight_naming, spec.weight_naming);
      EXPECT_EQ(b.dense_layers, spec.dense_layers);
      EXPECT_EQ(b.ffn, spec.ffn);
      EXPECT_EQ(b.expert_ffn, spec.expert_ffn);
      EXPECT_EQ(b.sliding_window, spec.sliding_window);
      EXPECT_EQ(b.full_attention_layers, spec.full_attention_layers);
      EXPECT_EQ(b.ffn_kind, spec.ffn_kind);
      EXPECT_EQ(b.activation, spec.activation);
      EXPECT_EQ(b.mlp_bias, spec.mlp_bias);
      EXPECT_EQ(b.norm, spec.norm);
      EXPECT_EQ(b.learned_positions, spec.learned_positions);
      EXPECT_EQ(b.position_offset, spec.position_offset);
      EXPECT_EQ(b.norm_weight_offset, spec.norm_weight_offset);
      EXPECT_EQ(b.router, spec.router);
      EXPECT_EQ(b.router_jitter, spec.router_jitter);
      EXPECT_EQ(b.lm_head_bias, spec.lm_head_bias);
      EXPECT_EQ(b.scale_embedding, spec.scale_embedding);
      EXPECT_EQ(b.head_dim, spec.head_dim);
      EXPECT_EQ(b.tie_embeddings, spec.tie_embeddings);
      EXPECT_EQ(b.attention, spec.attention);
      EXPECT_EQ(b.rotary_dim, spec.rotary_dim);
      EXPECT_EQ(b.mla.q_lora_rank, spec.mla.q_lora_rank);
      EXPECT_EQ(b.mla.kv_lora_rank, spec.mla.kv_lora_rank);
      EXPECT_EQ(b.mla.qk_rope_head_dim, spec.mla.qk_rope_head_dim);
      EXPECT_EQ(b.first_moe_layer, spec.first_moe_layer);
      EXPECT_EQ(b.router_groups, spec.router_groups);
      EXPECT_EQ(b.router_topk_groups, spec.router_topk_groups);
      EXPECT_EQ(b.routed_scaling, spec.routed_scaling);
      EXPECT_EQ(b.clip_qkv, spec.clip_qkv);
      EXPECT_EQ(b.post_norms, spec.post_norms);
      EXPECT_EQ(b.attn_softcap, spec.attn_softcap);
      EXPECT_EQ(b.final_softcap, spec.final_softcap);
      EXPECT_EQ(b.attention_chunk, spec.attention_chunk);
      EXPECT_EQ(b.nope_layers, spec.nope_layers);
      EXPECT_EQ(b.attn_temperature_floor, spec.attn_temperature_floor);
      EXPECT_EQ(b.attn_temperature_scale, spec.attn_temperature_scale);
      EXPECT_EQ(b.expert_input_scaled, spec.expert_input_scaled);
      EXPECT_EQ(b.moe_every, spec.moe_every);
      // 0 is written as the head_dim it stands for
      EXPECT_EQ(b.query_pre_attn_scalar > 0 ? b.query_pre_attn_scalar : b.head_dim,
                spec.query_pre_attn_scalar > 0 ? spec.query_pre_attn_scalar : spec.head_dim);
      EXPECT_EQ(b.norm_bias, spec.norm_bias);
      EXPECT_EQ(b.kv_heads, spec.kv_heads);
      EXPECT_EQ(b.params(), spec.params());
      EXPECT_EQ(back.numerics.norm_eps, w.numerics.norm_eps);
      ASSERT_EQ(back.tensors.size(), w.tensors.size());
      for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
      fs::remove_all(dir);
    }
}

// DeepSeek's checkpoints hold each head's rope rows of q_proj / q_b_proj and kv_a_proj_with_mqa's interleaved
// (HF rotates pairs (2i, 2i + 1)); the emulation's rotate-half rows are permuted on writing and back on
// reading: checkpoint row 2i is row i, 2i + 1 is rope / 2 + i; the other rows stay.
TEST(Safetensors, DeepSeekRopeRowsAreInterleavedInTheCheckpoint) {
  for (const char* model : {"tiny-deepseek", "tiny-deepseek-v3"}) {
    SCOPED_TRACE(model);
    const ModelWeights w = random_weights(compiler::load_model(model), 8);
    const compiler::MlaSpec& a = w.spec.mla;
    const fs::path dir = temp_dir("deepseek");
    write_checkpoint(dir.string(), w);
    const std::string q = a.q_lora_rank > 0 ? "q_b_proj" : "q_proj";
    const std::int64_t rope = a.qk_rope_head_dim, half = rope / 2;
    struct Block {
      std::string name;
      std::int64_t first_rope_row;
    };
    // Head 1's rope rows of q, and the latent's rope rows, in layer 2.
    for (const Block& b :
         {Block{weight_name::mla(2, q.c_str()), (a.qk_nope_head_dim + rope) + a.qk_nope_head_dim},
          Block{weight_name::mla(2, "kv_a_proj_with_mqa"), a.kv_lora_rank}}) {
      SCOPED_TRACE(b.name);
      const std::vector<std::uint16_t> stored = read_tensor_data(dir / "model.safetensors", b.name);
      const WeightTensor& mine = w.get(b.name);
      const std::int64_t cols = mine.shape.back();
      auto row = [&](const std::vector<std::uint16_t>& d, std::int64_t r) {
        return std::vector<std::uint16_t>(d.begin() + r * cols, d.begin() + (r + 1) * cols);
      };
      const std::int64_t f = b.first_rope_row;
      for (std::int64_t i = 0; i < half; ++i) {
        EXPECT_EQ(row(stored, f + 2 * i), row(mine.data, f + i));
        EXPECT_EQ(row(stored, f + 2 * i + 1), row(mine.data, f + half + i));
      }
      EXPECT_EQ(row(stored, f - 1), row(mine.data, f - 1));  // a nope / latent row
      EXPECT_NE(row(stored, f + 1), row(mine.data, f + 1));
    }
    const ModelWeights back = load_checkpoint(dir.string());
    for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
    fs::remove_all(dir);
  }
}

// Llama 4's checkpoints: the experts fused input-major in feed_forward.experts.gate_up_proj [E, hidden,
// 2 ffn] (each expert's gate columns, then its up columns) and down_proj [E, ffn, hidden]; q_proj's and
// k_proj's rows of every head interleaved as HF's complex RoPE pairs them (checkpoint row 2i is row i, 2i + 1
// is head_dim / 2 + i); the FFNs under feed_forward.
TEST(Safetensors, Llama4FusesItsExpertsAndInterleavesItsHeads) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-llama4"), 8);
  const compiler::ModelSpec& m = w.spec;
  const fs::path dir = temp_dir("llama4");
  write_checkpoint(dir.string(), w);
  const fs::path file = dir / "model.safetensors";
  const std::int64_t h = m.hidden, f = m.expert_ffn, d = m.head_dim;
  const std::vector<std::uint16_t> gate_up =
      read_tensor_data(file, "model.layers.1.feed_forward.experts.gate_up_proj");
  const std::vector<std::uint16_t> down =
      read_tensor_data(file, "model.layers.1.feed_forward.experts.down_proj");
  ASSERT_EQ(gate_up.size(), static_cast<std::size_t>(m.experts * h * 2 * f));
  const WeightTensor& gate2 = w.get(weight_name::expert(m.weight_naming, 1, 2, "gate"));
  const WeightTensor& up2 = w.get(weight_name::expert(m.weight_naming, 1, 2, "up"));
  const WeightTensor& down2 = w.get(weight_name::expert(m.weight_naming, 1, 2, "down"));
  auto at = [](std::int64_t i) { return static_cast<std::size_t>(i); };
  for (std::int64_t i : {std::int64_t{0}, h - 1})
    for (std::int64_t o : {std::int64_t{0}, f - 1}) {
      EXPECT_EQ(gate_up[at((2 * h + i) * 2 * f + o)], gate2.data[at(o * h + i)]);
      EXPECT_EQ(gate_up[at((2 * h + i) * 2 * f + f + o)], up2.data[at(o * h + i)]);
      EXPECT_EQ(down[at((2 * f + o) * h + i)], down2.data[at(i * f + o)]);
    }
  for (const char* name :
       {"model.layers.0.feed_forward.gate_proj.weight", "model.layers.1.feed_forward.router.weight",
        "model.layers.1.feed_forward.shared_expert.down_proj.weight"})
    EXPECT_NO_THROW(read_tensor_data(file, name)) << name;
  // Head 1 of layer 2's k_proj (a NoPE layer is permuted alike).
  const WeightTensor& k = w.get(weight_name::attn_proj(2, 'k'));
  const std::vector<std::uint16_t> stored = read_tensor_data(file, weight_name::attn_proj(2, 'k'));
  auto row = [&](const std::vector<std::uint16_t>& x, std::int64_t r) {
    return std::vector<std::uint16_t>(x.begin() + r * h, x.begin() + (r + 1) * h);
  };
  for (std::int64_t i = 0; i < d / 2; ++i) {
    EXPECT_EQ(row(stored, d + 2 * i), row(k.data, d + i));
    EXPECT_EQ(row(stored, d + 2 * i + 1), row(k.data, d + d / 2 + i));
  }
  const ModelWeights back = load_checkpoint(dir.string());
  for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
  fs::remove_all(dir);
}

// A scaled RoPE travels in config.json's rope_scaling and reads back the same.
TEST(Safetensors, RopeScalingRoundTrips) {
  for (const auto kind :
       {RopeScaling::Kind::kLinear, RopeScaling::Kind::kLlama3, RopeScaling::Kind::kDynamic}) {
    ModelWeights w = random_weights(compiler::load_model("tiny-dense"), 6);
    w.numerics.rope_scaling.kind = kind;
    w.numerics.rope_scaling.factor = 8.0;
    w.numerics.rope_scaling.original_max_position_embeddings = 64.0;
    const fs::path dir = temp_dir("rope");
    write_checkpoint(dir.string(), w);
    const RopeScaling back = load_checkpoint(dir.string()).numerics.rope_scaling;
    EXPECT_EQ(back.kind, kind);
    EXPECT_EQ(back.factor, 8.0);
    if (kind != RopeScaling::Kind::kLinear) {  // dynamic NTK's, the config's max_position_embeddings
      EXPECT_EQ(back.original_max_position_embeddings, 64.0);
    }
    if (kind == RopeScaling::Kind::kLlama3) {
      EXPECT_EQ(back.low_freq_factor, 1.0);
      EXPECT_EQ(back.high_freq_factor, 4.0);
    }
    fs::remove_all(dir);
  }
}

// A config.json without rms_norm_eps gets its model_type's transformers default: 1e-6 for Llama, Qwen, Gemma
// and DeepSeek, 1e-5 for Mixtral, Phi-3, OLMoE, gpt-oss, Llama 4; a Gemma 3 multimodal config its
// text_config's.
TEST(Safetensors, AbsentNormEpsIsTheFamilysDefault) {
  const fs::path dir = temp_dir("eps");
  fs::create_directories(dir);
  auto eps_of = [&](const nlohmann::json& config) {
    std::ofstream(dir / "config.json") << config.dump();
    return config_numerics((dir / "config.json").string()).norm_eps;
  };
  for (const char* type : {"llama", "mistral", "qwen2", "qwen3_moe", "gemma2", "gemma3_text", "deepseek_v3"})
    EXPECT_EQ(eps_of({{"model_type", type}}), 1e-6f) << type;
  for (const char* type : {"mixtral", "phi3", "olmoe", "gpt_oss", "llama4_text", "starcoder2"})
    EXPECT_EQ(eps_of({{"model_type", type}}), 1e-5f) << type;
  EXPECT_EQ(eps_of({{"model_type", "llama"}, {"rms_norm_eps", 1e-5}}), 1e-5f);
  EXPECT_EQ(eps_of({{"model_type", "gemma3"}, {"text_config", {{"hidden_size", 8}}}}), 1e-6f);
  EXPECT_EQ(eps_of({{"model_type", "llama4"}, {"text_config", {{"rms_norm_eps", 2e-5}}}}), 2e-5f);
  fs::remove_all(dir);
}

// LongRoPE from config.json: the short and long factors (head_dim / 2 each), the original context, and the
// attention factor: Phi-3.5-MoE's short_mscale, else attention_factor, else HF's
// sqrt(1 + ln(max / original) / ln(original)); a checkpoint states it back outright.
TEST(Safetensors, LongRopeIsReadWithItsAttentionFactor) {
  const fs::path data = fs::path(DUPLEX_TEST_DATA_DIR);
  const ModelNumerics phi3 = config_numerics((data / "tiny-phi3-longrope.json").string());
  ASSERT_EQ(phi3.rope_scaling.kind, RopeScaling::Kind::kLongRope);
  EXPECT_EQ(phi3.rope_scaling.short_factor.size(), 8u);
  EXPECT_EQ(phi3.rope_scaling.original_max_position_embeddings, 4096.0);
  EXPECT_NEAR(phi3.rope_scaling.attention_factor, std::sqrt(1.0 + std::log(32.0) / std::log(4096.0)), 1e-12);
  // Phi-4-mini: RoPE over 0.75 of a head of 16, so 6 factors (one per rotated pair).
  const ModelNumerics phi4 = config_numerics((data / "tiny-phi4-mini.json").string());
  EXPECT_EQ(phi4.rope_scaling.short_factor.size(), 6u);
  EXPECT_EQ(phi4.rope_scaling.long_factor.size(), 6u);
  const ModelNumerics phimoe = config_numerics((data / "tiny-phimoe-longrope.json").string());
  EXPECT_EQ(phimoe.rope_scaling.attention_factor, 1.243);
  EXPECT_EQ(phimoe.rope_scaling.long_factor[7], 40.0);
  EXPECT_DOUBLE_EQ(rope_inv_freq(phimoe, 16)[3], std::pow(10000.0, -6.0 / 16) / 1.5);
  EXPECT_EQ(rope_attention_factor(phimoe), 1.243);
  EXPECT_EQ(phimoe.rope_scaling.long_attention_factor, 1.243);                             // its long_mscale
  EXPECT_EQ(phi3.rope_scaling.long_attention_factor, phi3.rope_scaling.attention_factor);  // one factor
  // Round trip through a checkpoint, and the factor count checked against head_dim.
  ModelWeights w = random_weights(compiler::load_model("tiny-dense"), 6);
  w.numerics = phi3;
  w.numerics.rope_scaling.short_factor.resize(static_cast<std::size_t>(w.spec.head_dim / 2), 1.5);
  w.numerics.rope_scaling.long_factor.resize(w.numerics.rope_scaling.short_factor.size(), 3.0);
  const fs::path dir = temp_dir("longrope");
  write_checkpoint(dir.string(), w);
  const RopeScaling back = load_checkpoint(dir.string()).numerics.rope_scaling;
  EXPECT_EQ(back.kind, RopeScaling::Kind::kLongRope);
  EXPECT_EQ(back.short_factor, w.numerics.rope_scaling.short_factor);
  EXPECT_EQ(back.attention_factor, w.numerics.rope_scaling.attention_factor);
  EXPECT_EQ(back.original_max_position_embeddings, 4096.0);
  nlohmann::json c = nlohmann::json::parse(slurp(dir / "config.json"));
  c["rope_scaling"]["short_factor"] = {1.0, 2.0};
  spit(dir / "config.json", c.dump());
  try {
    load_checkpoint(dir.string());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rope_scaling.short_factor: [1.0,2.0]"), std::string::npos)
        << e.what();
  }
  // Neither an attention factor nor max_position_embeddings to derive one from: refused, not taken as 1.
  c = nlohmann::json::parse(slurp(dir / "config.json"));
  c["rope_scaling"]["short_factor"] = c["rope_scaling"]["long_factor"];
  c["rope_scaling"].erase("attention_factor");
  c.erase("max_position_embeddings");
  spit(dir / "config.json", c.dump());
  try {
    load_checkpoint(dir.string());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("max_position_embeddings to derive it from"), std::string::npos)
        << e.what();
  }
  fs::remove_all(dir);
}

// OPT's and StarCoder2's checkpoints name their tensors their own way (checkpoint_name).
TEST(Safetensors, OptAndStarcoder2TensorsCarryTheirFamilysNames) {
  const compiler::ModelSpec opt = compiler::load_model("tiny-opt"),
                            sc2 = compiler::load_model("tiny-starcoder2");
  EXPECT_EQ(checkpoint_name(opt, weight_name::embedding()), "model.decoder.embed_tokens.weight");
  EXPECT_EQ(checkpoint_name(opt, weight_name::positions()), "model.decoder.embed_positions.weight");
  EXPECT_EQ(checkpoint_name(opt, weight_name::norm_bias(weight_name::final_norm())),
            "model.decoder.final_layer_norm.bias");
  EXPECT_EQ(checkpoint_name(opt, weight_name::attn_norm(1)),
            "model.decoder.layers.1.self_attn_layer_norm.weight");
  EXPECT_EQ(checkpoint_name(opt, weight_name::ffn_norm(1)), "model.decoder.layers.1.final_layer_norm.weight");
  EXPECT_EQ(checkpoint_name(opt, weight_name::attn_bias(0, 'o')),
            "model.decoder.layers.0.self_attn.out_proj.bias");
  EXPECT_EQ(checkpoint_name(opt, weight_name::attn_proj(0, 'k')),
            "model.decoder.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(checkpoint_name(opt, weight_name::dense_mlp(0, "up")), "model.decoder.layers.0.fc1.weight");
  EXPECT_EQ(checkpoint_name(opt, weight_name::dense_mlp_bias(0, "down")), "model.decoder.layers.0.fc2.bias");
  EXPECT_EQ(checkpoint_name(sc2, weight_name::dense_mlp(1, "up")), "model.layers.1.mlp.c_fc.weight");
  EXPECT_EQ(checkpoint_name(sc2, weight_name::dense_mlp_bias(1, "down")), "model.layers.1.mlp.c_proj.bias");
  EXPECT_EQ(checkpoint_name(sc2, weight_name::norm_bias(weight_name::attn_norm(0))),
            "model.layers.0.input_layernorm.bias");
  const compiler::ModelSpec llama = compiler::load_model("tiny-dense");
  EXPECT_EQ(checkpoint_name(llama, weight_name::dense_mlp(0, "up")), weight_name::dense_mlp(0, "up"));
  compiler::ModelSpec phi3 = llama;  // several tensors to one stacked checkpoint tensor
  phi3.weight_naming = compiler::WeightNaming::kPhi3;
  for (char p : {'q', 'k', 'v'})
    EXPECT_EQ(checkpoint_name(phi3, weight_name::attn_proj(1, p)),
              "model.layers.1.self_attn.qkv_proj.weight");
  EXPECT_EQ(checkpoint_name(phi3, weight_name::attn_proj(1, 'o')), "model.layers.1.self_attn.o_proj.weight");
  for (const char* p : {"gate", "up"})
    EXPECT_EQ(checkpoint_name(phi3, weight_name::dense_mlp(0, p)), "model.layers.0.mlp.gate_up_proj.weight");
  EXPECT_EQ(checkpoint_name(phi3, weight_name::dense_mlp(0, "down")), "model.layers.0.mlp.down_proj.weight");
  // Gemma 2: post_attention_layernorm is the norm after attention; the FFN's are pre_ / post_feedforward_.
  const compiler::ModelSpec gemma2 = compiler::load_model("tiny-gemma2");
  EXPECT_EQ(checkpoint_name(gemma2, weight_name::attn_norm(1)), "model.layers.1.input_layernorm.weight");
  EXPECT_EQ(checkpoint_name(gemma2, weight_name::post_attn_norm(1)),
            "model.layers.1.post_attention_layernorm.weight");
  EXPECT_EQ(checkpoint_name(gemma2, weight_name::ffn_norm(1)),
            "model.layers.1.pre_feedforward_layernorm.weight");
  EXPECT_EQ(checkpoint_name(gemma2, weight_name::post_ffn_norm(1)),
            "model.layers.1.post_feedforward_layernorm.weight");
  EXPECT_EQ(checkpoint_name(gemma2, weight_name::dense_mlp(0, "up")), weight_name::dense_mlp(0, "up"));
}

// DBRX's checkpoint (HF DbrxForCausalLM): q, k and v stacked in Wqkv; every expert's gate, up and down
// stacked in ffn.experts.mlp.w1 / v1 / w2 (nn.Parameters: no ".weight"), w2 holding each down projection
// transposed ([ffn, hidden] per expert); the bias-free LayerNorms have no bias tensor.
TEST(Safetensors, DbrxStacksItsProjectionsAndTransposesItsDownProjections) {
  const compiler::ModelSpec m = compiler::load_model("tiny-dbrx");
  const std::int64_t h = m.hidden, f = m.expert_ffn, experts = m.experts, q = m.q_dim(), kv = m.kv_dim();
  EXPECT_EQ(checkpoint_name(m, weight_name::embedding()), "transformer.wte.weight");
  EXPECT_EQ(checkpoint_name(m, weight_name::final_norm()), "transformer.norm_f.weight");
  EXPECT_EQ(checkpoint_name(m, weight_name::attn_norm(1)),
            "transformer.blocks.1.norm_attn_norm.norm_1.weight");
  EXPECT_EQ(checkpoint_name(m, weight_name::ffn_norm(1)),
            "transformer.blocks.1.norm_attn_norm.norm_2.weight");
  for (char p : {'q', 'k', 'v'})
    EXPECT_EQ(checkpoint_name(m, weight_name::attn_proj(0, p)),
              "transformer.blocks.0.norm_attn_norm.attn.Wqkv.weight");
  EXPECT_EQ(checkpoint_name(m, weight_name::attn_proj(0, 'o')),
            "transformer.blocks.0.norm_attn_norm.attn.out_proj.weight");
  EXPECT_EQ(checkpoint_name(m, weight_name::router(m.weight_naming, 1)),
            "transformer.blocks.1.ffn.router.layer.weight");
  EXPECT_EQ(checkpoint_name(m, weight_name::expert(m.weight_naming, 1, 7, "gate")),
            "transformer.blocks.1.ffn.experts.mlp.w1");
  EXPECT_EQ(checkpoint_name(m, weight_name::expert(m.weight_naming, 1, 7, "up")),
            "transformer.blocks.1.ffn.experts.mlp.v1");
  EXPECT_EQ(checkpoint_name(m, weight_name::expert(m.weight_naming, 1, 7, "down")),
            "transformer.blocks.1.ffn.experts.mlp.w2");
  EXPECT_EQ(checkpoint_name(m, weight_name::lm_head()), "lm_head.weight");

  const fs::path dir = temp_dir("dbrx");
  const ModelWeights w = random_weights(m, 5);
  write_checkpoint(dir.string(), w);
  const fs::path file = dir / "model.safetensors";
  const nlohmann::json header = split(slurp(file)).first;
  // wte, norm_f, lm_head; per block norm_1, norm_2, Wqkv, out_proj, router, w1, v1, w2.
  EXPECT_EQ(header.size() - header.count("__metadata__"), 3u + 2 * 8);
  EXPECT_FALSE(header.contains("transformer.norm_f.bias"));
  EXPECT_EQ(header.at("transformer.blocks.0.norm_attn_norm.attn.Wqkv.weight").at("shape"),
            nlohmann::json({q + 2 * kv, h}));
  for (const char* p : {"w1", "v1", "w2"})
    EXPECT_EQ(header.at(std::string("transformer.blocks.1.ffn.experts.mlp.") + p).at("shape"),
              nlohmann::json({experts * f, h}));
  // Wqkv's rows: q's, then k's, then v's.
  const std::vector<std::uint16_t> qkv =
      read_tensor_data(file, "transformer.blocks.0.norm_attn_norm.attn.Wqkv.weight");
  const WeightTensor& k = w.get(weight_name::attn_proj(0, 'k'));
  EXPECT_TRUE(std::equal(k.data.begin(), k.data.end(), qkv.begin() + q * h));
  // w2's rows e f + i: expert e's down projection [hidden, ffn] column i; v1's: its up projection's rows.
  const std::vector<std::uint16_t> w2 = read_tensor_data(file, "transformer.blocks.1.ffn.experts.mlp.w2"),
                                   v1 = read_tensor_data(file, "transformer.blocks.1.ffn.experts.mlp.v1");
  for (int x : {0, 7, 15}) {
    const WeightTensor& down = w.get(weight_name::expert(m.weight_naming, 1, x, "down"));
    const WeightTensor& up = w.get(weight_name::expert(m.weight_naming, 1, x, "up"));
    for (std::int64_t i : {std::int64_t{0}, f / 3, f - 1})
      for (std::int64_t c : {std::int64_t{0}, h / 2 + 1, h - 1}) {
        EXPECT_EQ(w2[static_cast<std::size_t>((x * f + i) * h + c)],
                  down.data[static_cast<std::size_t>(c * f + i)]);
        EXPECT_EQ(v1[static_cast<std::size_t>((x * f + i) * h + c)],
                  up.data[static_cast<std::size_t>(i * h + c)]);
      }
  }
  // The config: DBRX's own fields, attention and FFN ones nested; rope_theta read back from attn_config.
  nlohmann::json config = nlohmann::json::parse(slurp(dir / "config.json"));
  EXPECT_EQ(config["d_model"], h);
  EXPECT_EQ(config["attn_config"]["clip_qkv"], 1.5);
  EXPECT_EQ(config["attn_config"]["kv_n_heads"], m.kv_heads);
  EXPECT_EQ(config["ffn_config"]["moe_normalize_expert_weights"], 1);
  EXPECT_EQ(config["ffn_config"]["ffn_act_fn"]["name"], "silu");
  EXPECT_FALSE(config.contains("hidden_size"));
  config["attn_config"]["rope_theta"] = 500000;
  std::ofstream(dir / "config.json") << config.dump();
  EXPECT_EQ(config_numerics((dir / "config.json").string()).rope_theta, 500000.0f);
  EXPECT_EQ(load_checkpoint(dir.string()).numerics.rope_theta, 500000.0f);
  config["attn_config"]["rope_theta"] = "high";
  std::ofstream(dir / "config.json") << config.dump();
  try {
    config_numerics((dir / "config.json").string());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("config.json: attn_config.rope_theta: \"high\""), std::string::npos)
        << e.what();
  }
  fs::remove_all(dir);
}

TEST(Safetensors, AModelNoArchitectureStatesIsRefusedBeforeAnythingIsWritten) {
  compiler::ModelSpec m = compiler::load_model("tiny-moe");
  m.qkv_bias = true;  // Mixtral names with biases: no HF architecture
  const fs::path dir = fs::temp_directory_path() / fmt::format("duplex_weights_refused_{}", ::getpid());
  fs::remove_all(dir);
  try {
    write_checkpoint(dir.string(), random_weights(m, 1));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no HuggingFace architecture"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir));
  m = compiler::load_model("tiny-moe");  // sparsemixer with RMSNorm: not Phi-3.5-MoE
  m.router = compiler::Router::kSparseMixer;
  EXPECT_THROW(write_checkpoint(dir.string(), random_weights(m, 1)), Error);
  EXPECT_FALSE(fs::exists(dir));
  m = compiler::load_model("tiny-dense");  // Gemma's (1 + weight) norms without its embedding scale
  m.norm_weight_offset = 1.0;
  EXPECT_THROW(write_checkpoint(dir.string(), random_weights(m, 1)), Error);
  EXPECT_FALSE(fs::exists(dir));
  m = compiler::load_model("tiny-dense");  // a window on some layers only: Mistral windows all, Llama none
  m.sliding_window = 8;
  m.full_attention_layers = {0};
  EXPECT_THROW(write_checkpoint(dir.string(), random_weights(m, 1)), Error);
  EXPECT_FALSE(fs::exists(dir));
  m = compiler::load_model(
      "tiny-dense");  // a partial RoPE under Llama's names: Phi-3's config alone states it
  m.rotary_dim = 8;
  EXPECT_THROW(write_checkpoint(dir.string(), random_weights(m, 1)), Error);
  EXPECT_FALSE(fs::exists(dir));
  // Gemma 2's soft-cap and post norms on a model unlike Gemma 2 or 3 (Gemma 3's q / k norms are per head).
  m = compiler::load_model("tiny-dense");
  m.attn_softcap = 50;
  EXPECT_THROW(write_checkpoint(dir.string(), random_weights(m, 1)), Error);
  EXPECT_FALSE(fs::exists(dir));
  m = compiler::load_model("tiny-gemma2");
  m.qk_norm = compiler::QkNorm::kWhole;
  EXPECT_THROW(write_checkpoint(dir.string(), random_weights(m, 1)), Error);
  EXPECT_FALSE(fs::exists(dir));
  // DBRX's clamp and bias-free LayerNorm under another family's names; DBRX's names on a model unlike DBRX.
  m = compiler::load_model("tiny-dense");
  m.clip_qkv = 8;
  EXPECT_THROW(write_checkpoint(dir.string(), random_weights(m, 1)), Error);
  EXPECT_FALSE(fs::exists(dir));
  m = compiler::load_model("tiny-starcoder2");
  m.norm_bias = false;
  EXPECT_THROW(write_checkpoint(dir.string(), random_weights(m, 1)), Error);
  EXPECT_FALSE(fs::exists(dir));
  m = compiler::load_model("tiny-dbrx");
  m.sliding_window = 8;
  EXPECT_THROW(write_checkpoint(dir.string(), random_weights(m, 1)), Error);
  EXPECT_FALSE(fs::exists(dir));
  // Llama 4's chunked attention under Llama's names; Llama 4's names with a softmax router.
  m = compiler::load_model("tiny-dense");
  m.attention_chunk = 4;
  EXPECT_THROW(write_checkpoint(dir.string(), random_weights(m, 1)), Error);
  EXPECT_FALSE(fs::exists(dir));
  m = compiler::load_model("tiny-llama4");
  m.router = compiler::Router::kSoftmaxTopK;
  try {
    write_checkpoint(dir.string(), random_weights(m, 1));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("are Llama 4's, but the model differs"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_THROW(write_checkpoint(dir.string(), random_weights(compiler::load_model("tiny-moe"), 1), 0), Error);
  EXPECT_FALSE(fs::exists(dir));
}

// config.json fields the emulation would silently compute differently are refused, naming the file and key;
// the numerics it reads must be positive numbers.
TEST(Safetensors, ConfigFieldsTheEmulationDoesNotComputeAreRefused) {
  const fs::path dir = temp_dir("config_fields");
  write_checkpoint(dir.string(), random_weights(compiler::load_model("tiny-dense"), 3));
  const fs::path config = dir / "config.json";
  const nlohmann::json good = nlohmann::json::parse(slurp(config));
  EXPECT_EQ(good["hidden_act"], "silu");
  // (hidden_activation: Gemma's config reads it, a Llama's must not have it.)
  const std::vector<std::pair<std::string, nlohmann::json>> bad = {
      {"rope_scaling", "linear"},
      {"partial_rotary_factor", 0.5},
      {"hidden_act", "gelu_10"},
      {"hidden_activation", "gelu_pytorch_tanh"},
      {"mlp_bias", true},
      {"clip_qkv", 8.0},
      {"rms_norm_eps", "tiny"},
      {"rope_theta", -1.0},
  };
  for (const auto& [key, value] : bad) {
    nlohmann::json c = good;
    c[key] = value;
    expect_refused(dir, c, key + ": ");
  }
  // gemma3_text: the windowed layers' base rope_local_base_freq (10000), the full ones' rope_theta (1e6); a
  // length-dependent RoPE on them is refused. Gemma 3's multimodal config: the same, from its text_config,
  // errors naming it.
  nlohmann::json g3 = good;
  g3["model_type"] = "gemma3_text";
  g3.erase("rope_theta");
  std::ofstream(config) << g3.dump();
  const ModelNumerics n3 = config_numerics(config.string());
  EXPECT_EQ(n3.rope_theta, 1e6f);
  EXPECT_EQ(n3.local_rope_theta, 10000.0f);
  std::ofstream(config, std::ios::trunc)
      << nlohmann::json{{"model_type", "gemma3"}, {"text_config", g3}}.dump();
  EXPECT_EQ(config_numerics(config.string()).local_rope_theta, 10000.0f);
  nlohmann::json bad_text = g3;
  bad_text["rope_theta"] = -1.0;
  std::ofstream(config, std::ios::trunc)
      << nlohmann::json{{"model_type", "gemma3"}, {"text_config", bad_text}}.dump();
  try {
    config_numerics(config.string());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(config.string() + " (text_config): rope_theta: -1.0"),
              std::string::npos)
        << e.what();
  }
  g3["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  g3["max_position_embeddings"] = 64;
  expect_refused(dir, g3, "rope_scaling: ");
  // rope_scaling: linear and llama3 are read; another kind or a bad field names rope_scaling.<field>.
  const std::vector<std::pair<nlohmann::json, std::string>> bad_scaling = {
      {{{"rope_type", "yarn"}, {"factor", 40.0}, {"mscale", 1.0}}, "rope_scaling.mscale: 1.0"},
      {{{"rope_type", "ntk"}, {"factor", 4.0}}, "rope_scaling.rope_type: \"ntk\""},
      {{{"type", "dynamic"},
        {"factor", 4.0}},  // dynamic NTK scales beyond max_position_embeddings: none here
       "rope_scaling: {\"factor\":4.0,\"type\":\"dynamic\"} is not what functional emulation computes; "
       "expected "
       "dynamic with the config's max_position_embeddings"},
      {{{"rope_type", "llama3"}, {"factor", 8.0}}, "rope_scaling.low_freq_factor: missing"},
      {{{"rope_type", "linear"}, {"factor", -2.0}}, "rope_scaling.factor: -2.0"},
      {{{"rope_type", "llama3"},
        {"factor", 8.0},
        {"low_freq_factor", 4.0},
        {"high_freq_factor", 1.0},
        {"original_max_position_embeddings", 8192}},
       "rope_scaling.high_freq_factor: 1.0"}};
  for (const auto& [scaling, want] : bad_scaling) {
    nlohmann::json c = good;
    c["rope_scaling"] = scaling;
    expect_refused(dir, c, want);
  }
  for (const nlohmann::json& scaling :
       {nlohmann::json{{"rope_type", "linear"}, {"factor", 2.0}},
        nlohmann::json{{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}},
        nlohmann::json{{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}},
        nlohmann::json{{"type", "default"}}}) {
    nlohmann::json c = good;
    c["rope_scaling"] = scaling;
    spit(config, c.dump());
    EXPECT_NO_THROW(load_checkpoint(dir.string())) << scaling.dump();
  }
  nlohmann::json c = good;  // null means "not used" for each of them
  c["rope_scaling"] = nullptr;
  c["clip_qkv"] = nullptr;
  c["partial_rotary_factor"] = 1.0;
  c["mlp_bias"] = false;
  spit(config, c.dump());
  EXPECT_NO_THROW(load_checkpoint(dir.string()));
  fs::remove_all(dir);
}

// A sharded checkpoint's index and shards disagreeing, each named.
// DeepSeek's config.json: what the emulation does not compute is refused naming the field (biased MLA
// projections, rotate-half RoPE, V2's renormalised routing, which DeepSeek's code and HF's weigh apart, a
// RoPE scaling other than YaRN, one of YaRN's two mscales without the other); DeepSeek's YaRN is read.
TEST(Safetensors, DeepSeekConfigFieldsTheEmulationDoesNotComputeAreRefused) {
  const fs::path dir = temp_dir("deepseek_fields");
  write_checkpoint(dir.string(), random_weights(compiler::load_model("tiny-deepseek"), 3));
  const fs::path config = dir / "config.json";
  const nlohmann::json good = nlohmann::json::parse(slurp(config));
  EXPECT_EQ(good["model_type"], "deepseek_v2");
  const nlohmann::json yarn = {{"type", "yarn"},
                               {"factor", 40.0},
                               {"original_max_position_embeddings", 4096},
                               {"mscale", 0.707},
                               {"mscale_all_dim", 0.707}};
  nlohmann::json only_mscale = yarn, with_factor = yarn;
  only_mscale.erase("mscale_all_dim");
  with_factor["attention_factor"] = 1.2;
  const std::vector<std::tuple<std::string, nlohmann::json, std::string>> bad = {
      {"attention_bias", true, "attention_bias: true"},
      {"rope_interleave", false, "rope_interleave: false"},
      {"norm_topk_prob", true, "norm_topk_prob: true"},
      {"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}, "rope_scaling.type: \"linear\""},
      {"rope_scaling", only_mscale, "rope_scaling.mscale_all_dim: missing"},
      {"rope_scaling", with_factor, "rope_scaling.attention_factor: 1.2"},
  };
  for (const auto& [key, value, want] : bad) {
    nlohmann::json c = good;
    c[key] = value;
    expect_refused(dir, c, want);
  }
  nlohmann::json c = good;
  c["rope_scaling"] = yarn;  // DeepSeek-V2-Lite's: cos / sin unscaled (equal mscales), the softmax by m^2
  spit(config, c.dump());
  const ModelWeights w = load_checkpoint(dir.string());
  EXPECT_EQ(w.numerics.rope_scaling.mscale_all_dim, 0.707);
  EXPECT_DOUBLE_EQ(rope_attention_factor(w.numerics), 1.0);
  const double m = 0.1 * 0.707 * std::log(40.0) + 1.0;
  EXPECT_DOUBLE_EQ(attention_scale(w.spec, w.numerics), m * m / std::sqrt(48.0));
  fs::remove_all(dir);
}

TEST(Safetensors, ShardedCheckpointErrorsNameTheIndexOrShardAndTheTensor) {
  const fs::path dir = temp_dir("sharded");
  write_checkpoint(dir.string(), random_weights(tiny_moe(), 2), 2);
  const fs::path index_path = dir / "model.safetensors.index.json";
  const nlohmann::json index = nlohmann::json::parse(slurp(index_path));
  auto expect_load_error = [&](const nlohmann::json& changed, const std::vector<std::string>& fragments) {
    spit(index_path, changed.dump());
    try {
      load_checkpoint(dir.string());
      ADD_FAILURE() << "no error for " << changed.dump().substr(0, 200);
    } catch (const Error& e) {
      for (const auto& f : fragments)
        EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what() << "\n  lacks: " << f;
    }
  };
  const std::string emb = weight_name::embedding();
  nlohmann::json j = index;
  j["weight_map"].erase(emb);
  expect_load_error(j, {index_path.string(), "weight_map: tensor " + emb + " is missing"});
  j = index;
  j["weight_map"]["lm_head.bias"] = "model-00001-of-00002.safetensors";
  expect_load_error(j, {"unexpected tensor lm_head.bias"});
  j = index;
  j["weight_map"][emb] = "../elsewhere.safetensors";
  expect_load_error(j, {"weight_map." + emb, "is not a file name"});
  // Tensors in name order, consecutive per shard: the embedding is in the first, the last name in the second.
  const std::string first = "model-00001-of-00002.safetensors", last = (--index["weight_map"].end()).key();
  ASSERT_EQ(index["weight_map"][emb], first);
  j = index;  // the last tensor sent to the first shard, read first: it is not there
  j["weight_map"][last] = first;
  expect_load_error(j, {first, "tensor " + last + " is missing"});
  j = index;  // the embedding sent to the second shard: the first holds a tensor the index sends elsewhere
  j["weight_map"][emb] = "model-00002-of-00002.safetensors";
  expect_load_error(j, {first, "unexpected tensor " + emb, "does not map it to this shard"});
  j = index;
  j.erase("weight_map");
  expect_load_error(j, {"weight_map: missing or not an object"});
  spit(index_path, index.dump());
  EXPECT_NO_THROW(load_checkpoint(dir.string()));
  EXPECT_NO_THROW(load_checkpoint(index_path.string()));
  fs::remove(index_path);
  try {
    load_checkpoint(dir.string());
    FAIL() << "no error without model.safetensors or an index";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("neither model.safetensors nor model.safetensors.index.json"),
              std::string::npos)
        << e.what();
  }
  fs::remove_all(dir);
}

class SafetensorsErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = temp_dir("errors");
    good_ = dir_ / "good.safetensors";
    write_safetensors(good_.string(), random_weights(tiny_moe(), 1));
    std::tie(header_, data_) = split(slurp(good_));
    bad_ = dir_ / "bad.safetensors";
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_, good_, bad_;
  nlohmann::json header_;
  std::string data_;
};

TEST_F(SafetensorsErrors, MissingTensor) {
  const std::string name = weight_name::expert(compiler::WeightNaming::kMixtral, 1, 3, "down");
  header_.erase(name);
  spit(bad_, join(header_, data_));
  expect_error(bad_, {bad_.string(), name, "missing"});
}

TEST_F(SafetensorsErrors, WrongShape) {
  const std::string name = weight_name::attn_proj(0, 'k');
  header_[name]["shape"] = {32, 256};  // expected [64, 256]
  spit(bad_, join(header_, data_));
  expect_error(bad_, {bad_.string(), name, "shape [32, 256]", "expected [64, 256]"});
}

TEST_F(SafetensorsErrors, WrongDtype) {
  const std::string name = weight_name::final_norm();
  header_[name]["dtype"] = "I8";
  spit(bad_, join(header_, data_));
  expect_error(bad_, {bad_.string(), name, "dtype \"I8\"", "expected F16, BF16 or F32"});
}

// The F16 file's tensors re-encoded as `dtype` (BF16 or F32), each value converted from its FP16 value;
// `edit` may then change the float values of one tensor before encoding.
std::string reencode(const nlohmann::json& header, const std::string& data, const std::string& dtype,
                     const std::string& edit_name = "", const std::vector<float>& edit_values = {}) {
  nlohmann::json out = nlohmann::json::object();
  std::string bytes;
  for (const auto& [name, e] : header.items()) {
    if (name == "__metadata__") continue;
    const auto off = e["data_offsets"].get<std::vector<std::uint64_t>>();
    const std::size_t n = (off[1] - off[0]) / 2;
    const std::uint64_t begin = bytes.size();
    for (std::size_t i = 0; i < n; ++i) {
      std::uint16_t h = 0;
      std::memcpy(&h, data.data() + off[0] + 2 * i, 2);
      float v = half_bits_to_float(h);
      if (name == edit_name && i < edit_values.size()) v = edit_values[i];
      if (dtype == "F32") {
        bytes.append(reinterpret_cast<const char*>(&v), 4);
      } else {
        const std::uint16_t b = float_to_bf16_bits(v);
        bytes.append(reinterpret_cast<const char*>(&b), 2);
      }
    }
    out[name] = {{"dtype", dtype}, {"shape", e["shape"]}, {"data_offsets", {begin, bytes.size()}}};
  }
  return join(out, bytes);
}

TEST_F(SafetensorsErrors, Bf16AndF32CheckpointsAreRoundedToFp16) {
  const ModelWeights f16 = read_safetensors(good_.string(), tiny_moe());
  spit(bad_, reencode(header_, data_, "F32"));
  const ModelWeights f32 = read_safetensors(bad_.string(), tiny_moe());
  EXPECT_NE(f32.source.find("(F32 converted to FP16)"), std::string::npos) << f32.source;
  for (const auto& [name, t] : f16.tensors) EXPECT_EQ(f32.get(name).data, t.data) << name;  // FP16 -> F32 is exact
  spit(bad_, reencode(header_, data_, "BF16"));
  const ModelWeights bf16 = read_safetensors(bad_.string(), tiny_moe());
  EXPECT_NE(bf16.source.find("(BF16 converted to FP16)"), std::string::npos) << bf16.source;
  std::size_t changed = 0;
  for (const auto& [name, t] : f16.tensors)
    for (std::size_t i = 0; i < t.data.size(); ++i) {
      const std::uint16_t want = float_to_half_bits(bf16_bits_to_float(float_to_bf16_bits(half_bits_to_float(t.data[i]))));
      ASSERT_EQ(bf16.get(name).data[i], want) << name << " element " << i;
      changed += want != t.data[i] ? 1 : 0;
    }
  EXPECT_GT(changed, 0u);  // BF16 kept fewer mantissa bits than the FP16 weights had
}

TEST_F(SafetensorsErrors, ValuesFp16CannotHoldAreErrors) {
  const std::string name = weight_name::attn_proj(1, 'v');
  for (const std::string dtype : {"F32", "BF16"}) {
    spit(bad_, reencode(header_, data_, dtype, name, {0.5f, 1e6f}));
    const std::string stored = dtype == "F32" ? "1000000" : "999424";  // 1e6 as BF16 holds it
    expect_error(bad_, {bad_.string(), name, "element 1 is " + stored + " (" + dtype + ")",
                        "outside FP16's finite range"});
    spit(bad_, reencode(header_, data_, dtype, name, {std::nanf("")}));
    expect_error(bad_, {bad_.string(), name, "element 0 is nan (" + dtype + ")", "outside FP16's finite range"});
  }
}

TEST_F(SafetensorsErrors, TruncatedData) {
  spit(bad_, join(header_, data_.substr(0, data_.size() - 100)));
  expect_error(bad_, {bad_.string(), "truncated"});
}

TEST_F(SafetensorsErrors, TruncatedHeaderAndTinyFile) {
  const std::string file = slurp(good_);
  spit(bad_, file.substr(0, 40));
  expect_error(bad_, {bad_.string(), "truncated", "header"});
  spit(bad_, file.substr(0, 5));
  expect_error(bad_, {bad_.string(), "truncated"});
}

TEST_F(SafetensorsErrors, BadHeader) {
  std::string file = join(header_, data_);
  file[8] = '[';  // JSON no longer parses
  spit(bad_, file);
  expect_error(bad_, {bad_.string(), "bad header"});
  spit(bad_, join(nlohmann::json::array({1, 2}), data_));
  expect_error(bad_, {bad_.string(), "bad header", "not a JSON object"});
  const std::uint64_t huge = 1ull << 60;
  spit(bad_, std::string(reinterpret_cast<const char*>(&huge), 8) + "{}");
  expect_error(bad_, {bad_.string(), "bad header"});
}

TEST_F(SafetensorsErrors, BadOffsetsAndUnexpectedTensors) {
  const std::string name = weight_name::embedding();
  header_[name]["data_offsets"] = {0, 10};
  spit(bad_, join(header_, data_));
  expect_error(bad_, {bad_.string(), name, "data_offsets"});
  std::tie(header_, data_) = split(slurp(good_));
  nlohmann::json extra = header_[weight_name::final_norm()];  // an F16 tensor of its own bytes
  extra["shape"] = {1};
  extra["data_offsets"] = {data_.size(), data_.size() + 2};
  data_.append(2, '\0');
  header_["model.layers.0.self_attn.rotary_emb.inv_freq"] = extra;
  spit(bad_, join(header_, data_));
  expect_error(bad_, {bad_.string(), "unexpected tensor model.layers.0.self_attn.rotary_emb.inv_freq"});
}

TEST_F(SafetensorsErrors, MissingFileAndMissingConfig) {
  expect_error(dir_ / "nope.safetensors", {"nope.safetensors", "cannot open"});
  try {
    load_checkpoint(good_.string());
    FAIL() << "no error without config.json";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace duplex::runtime::functional
