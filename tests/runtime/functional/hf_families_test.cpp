// Functional emulation of the HF model families beyond Llama / Mixtral: q / k / v and o biases (Qwen2, Llama
// attention_bias), q / k RMSNorm per head (Qwen3) or over the whole projection (OLMoE), a shared expert
// scaled by its sigmoid gate (Qwen2-MoE), routing weights not renormalised (norm_topk_prob false). Each
// passes
// `--check` against the plain reference (tokens identical or explained near ties, logits within the bound) on
// one device, several and two nodes; and each feature changes the logits (the executor does not skip it).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/runtime/functional/functional_executor.hpp"
#include "duplex/runtime/functional/reference_forward.hpp"
#include "duplex/runtime/functional/run_session.hpp"
#include "duplex/runtime/functional/safetensors.hpp"
#include "reference_check.hpp"

namespace duplex::runtime::functional {
namespace {

using test::expect_matches_reference;
using test::kNewTokens;
using test::kPrompts;
using test::run_on;

// Qwen3-style dense: per-head q / k norms, and every projection biased (Llama's attention_bias).
compiler::ModelSpec qwen3_dense_biased() {
  compiler::ModelSpec m = compiler::load_model("tiny-dense");
  m.qk_norm = compiler::QkNorm::kPerHead;
  m.qkv_bias = m.o_bias = true;
  return m;
}

// OLMoE-style: q / k norms over the whole projection, Qwen-MoE names, routing weights not renormalised.
compiler::ModelSpec olmoe_like() {
  compiler::ModelSpec m = compiler::load_model("tiny-moe");
  m.qk_norm = compiler::QkNorm::kWhole;
  m.router_renormalize = false;
  m.weight_naming = compiler::WeightNaming::kQwenMoe;
  return m;
}

TEST(HfFamilies, QwenMoeMatchesTheReferenceOnEverySystemAndLayout) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-qwen-moe"), 11);
  for (const char* system : {"gpu", "duplex", "duplex-pe", "duplex-pe-et", "bank-pim"})
    for (int devices : {1, 0}) {  // 0: the system's own (4 or 8 devices)
      SCOPED_TRACE(std::string(system) + " x" + std::to_string(devices));
      const FunctionalResult got = run_on(w, system, devices);
      expect_matches_reference(w, got);
      // Every device ran its shard of the shared expert (on its xPU or PIM, as its plan placed it).
      std::map<std::string, std::int64_t> per_device;  // "devN" -> shared_expert calls
      for (const auto& [unit, counts] : got.device_op_counts)
        if (counts.contains("shared_expert"))
          per_device[unit.substr(0, unit.find('.'))] += counts.at("shared_expert");
      EXPECT_EQ(static_cast<int>(per_device.size()), got.devices);
    }
  SCOPED_TRACE("gpu, two nodes of TP8");
  expect_matches_reference(w, run_on(w, "gpu", 16));
}

// The two-matrix LayerNorm families: OPT (learned positions, ReLU, biases everywhere), StarCoder2 (GQA +
// RoPE, GELU tanh, biases, a window) and a GLaM-like MoE (GELU experts): on xPU and Logic-PIM systems (the
// FFN and experts run on the PIM's activation unit in its ReLU / GELU modes, the fc1 bias as its addend), one
// device, a node's devices and two nodes.
TEST(HfFamilies, TwoMatrixLayerNormModelsMatchTheReference) {
  for (const char* model : {"tiny-opt", "tiny-starcoder2", "tiny-gelu-moe"}) {
    const ModelWeights w = random_weights(compiler::load_model(model), 11);
    for (const char* system : {"gpu", "duplex-pe"})
      for (int devices : {1, 0, 16}) {
        SCOPED_TRACE(std::string(model) + " on " + system + " x" + std::to_string(devices));
        const FunctionalResult got = run_on(w, system, devices);
        expect_matches_reference(w, got);
        if (std::string(system) == "duplex-pe" && devices == 1) {  // small batches: the FFNs go to the PIM
          std::int64_t pim_ffns = 0;
          for (const auto& [unit, counts] : got.device_op_counts)
            for (const char* kind : {"dense_ffn", "expert_ffn"})
              if (unit.ends_with(".pim") && counts.contains(kind)) pim_ffns += counts.at(kind);
          EXPECT_GT(pim_ffns, 0) << "no FFN ran on the Logic-PIM: its activation modes would be untested";
        }
      }
  }
}

// Every activation in either FFN form (the Logic-PIM's eight activation modes): gated (SwiGLU, GeGLU in
// GELU's erf or tanh form, ReGLU) on a Llama-style model, and added to the fc1 bias (SiLU, GELU erf, GELU
// tanh, ReLU) on StarCoder2's biased two-matrix FFN. On duplex-pe with one device the FFNs run on the PIM's
// activation unit; on gpu on the xPU's expert-FFN kernel. Each matches the plain reference, and each
// activation changes the logits.
TEST(HfFamilies, EveryActivationInEitherFfnFormMatchesTheReference) {
  using compiler::Activation;
  for (const char* model : {"tiny-dense", "tiny-starcoder2"}) {
    std::vector<std::vector<std::vector<std::vector<float>>>>
        logits;  // per activation: FunctionalResult::logits
    for (const Activation act :
         {Activation::kSilu, Activation::kGelu, Activation::kGeluTanh, Activation::kRelu}) {
      compiler::ModelSpec spec = compiler::load_model(model);
      spec.activation = act;
      const ModelWeights w = random_weights(spec, 11);
      for (const char* system : {"gpu", "duplex-pe"}) {
        SCOPED_TRACE(std::string(model) + " " + compiler::activation_name(act) + " on " + system);
        const FunctionalResult got = run_on(w, system, 1);
        expect_matches_reference(w, got);
        std::int64_t pim_ffns = 0;
        for (const auto& [unit, counts] : got.device_op_counts)
          if (unit.ends_with(".pim") && counts.contains("dense_ffn")) pim_ffns += counts.at("dense_ffn");
        EXPECT_EQ(pim_ffns > 0, std::string(system) == "duplex-pe");
        if (std::string(system) == "duplex-pe") logits.push_back(got.logits);
      }
    }
    for (std::size_t i = 0; i < logits.size(); ++i)
      for (std::size_t j = i + 1; j < logits.size(); ++j) EXPECT_NE(logits[i], logits[j]) << model << i << j;
  }
}

// Gemma: GeGLU, RMSNorm by (1 + weight), the embedding times sqrt(hidden), MQA (one KV head, replicated over
// tensor-parallel devices), tied embeddings.
TEST(HfFamilies, GemmaMatchesTheReference) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-gemma"), 11);
  for (const char* system : {"gpu", "duplex-pe"})
    for (int devices : {1, 0, 16}) {
      SCOPED_TRACE(std::string(system) + " x" + std::to_string(devices));
      expect_matches_reference(w, run_on(w, system, devices));
    }
}

// Phi-3.5-MoE: the sparsemixer router (with PhimoeConfig's eps and with one wide enough to weigh several
// experts per slot), LayerNorm, attention biases, an LM-head bias (its vocabulary slice per device).
// The sparsemixer's mask is discontinuous: an expert whose relative gap to the top lies within FP16 rounding
// of 2 eps may fall on either side in the emulation and in the plain reference. With eps 0.25 the mask
// boundary is crowded, and on multi-device layouts (another all-reduce order) one token of these prompts
// sits 4.6e-4 from it and flips (the NumPy HF pass agrees with the emulation there): --check reports it as
// an explained routing near tie and follows the executor's experts from there.
TEST(HfFamilies, PhimoeMatchesTheReference) {
  for (double jitter : {0.01, 0.25}) {
    compiler::ModelSpec spec = compiler::load_model("tiny-phimoe");
    spec.router_jitter = jitter;
    const ModelWeights w = random_weights(spec, 11);
    for (const char* system : {"gpu", "duplex-pe"})
      for (int devices : {1, 0, 16}) {
        SCOPED_TRACE(std::string(system) + " x" + std::to_string(devices) + " jitter " +
                     std::to_string(jitter));
        expect_matches_reference(w, run_on(w, system, devices));
      }
  }
}

// Gemma 2: a norm after each block, soft-capped scores (5) and logits (3) (caps that bend tiny-gemma2's),
// the softmax scale of query_pre_attn_scalar (24, not head_dim 32), a 4-token window on the even layers; the
// decode attention on the Logic-PIM's softmax unit (duplex-pe) and on the xPU's kernels (gpu).
TEST(HfFamilies, Gemma2MatchesTheReference) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-gemma2"), 11);
  for (const char* system : {"gpu", "duplex-pe"})
    for (int devices : {1, 0, 16}) {
      SCOPED_TRACE(std::string(system) + " x" + std::to_string(devices));
      expect_matches_reference(w, run_on(w, system, devices));
    }
}

// Gemma 3 (a gemma3_text config.json): q / k norms per head, post norms, windows on the even layers rotated
// with rope_local_base_freq (unscaled), the full layers with rope_theta and a linear rope_scaling; logits
// capped. The local base matters (EveryFeatureChangesTheLogits).
// Random weights (seed 11) for the config.json `file` of the test data, with its numerics.
ModelWeights config_weights(const char* file) {
  const std::string config = std::string(DUPLEX_TEST_DATA_DIR) + "/" + file;
  ModelWeights w = random_weights(compiler::load_model(config), 11);
  w.numerics = config_numerics(config);
  return w;
}
ModelWeights gemma3_weights() {
  return config_weights("tiny-gemma3.json");
}

TEST(HfFamilies, Gemma3MatchesTheReference) {
  const ModelWeights w = gemma3_weights();
  ASSERT_GT(w.numerics.local_rope_theta, 0.0f);
  for (const char* system : {"gpu", "duplex-pe"})
    for (int devices : {1, 0, 16}) {
      SCOPED_TRACE(std::string(system) + " x" + std::to_string(devices));
      expect_matches_reference(w, run_on(w, system, devices));
    }
}

// DBRX: q, k and v clamped to +-clip_qkv (a clip of 1.5 clamps about one in eight of tiny-dbrx's
// projected elements), LayerNorm without a bias, 16 experts top 4 renormalised in every layer. The clamp is
// elementwise, so each device clamps its share of the heads. (EveryFeatureChangesTheLogits: the clamp
// matters.)
TEST(HfFamilies, DbrxMatchesTheReference) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-dbrx"), 11);
  for (const char* system : {"gpu", "duplex-pe"})
    for (int devices : {1, 0, 16}) {
      SCOPED_TRACE(std::string(system) + " x" + std::to_string(devices));
      expect_matches_reference(w, run_on(w, system, devices));
    }
}

// gpt-oss: a sink logit per head in every softmax (prefill and decode on the xPU's kernels, decode on the
// Logic-PIM's softmax unit on duplex-pe), a biased router whose top-2 logits are softmaxed, biased experts
// under the clamped SwiGLU (the PIM: its GEMV bias and activation mode), q / k / v / o biases, a 4-token
// window on the even layers. Random weights give gates and ups of a few units, so the clamp at 7 is rare
// here; EveryFeatureChangesTheLogits checks each feature matters.
TEST(HfFamilies, GptOssMatchesTheReference) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-gpt-oss"), 11);
  for (const char* system : {"gpu", "duplex-pe"})
    for (int devices : {1, 0, 16}) {
      SCOPED_TRACE(std::string(system) + " x" + std::to_string(devices));
      expect_matches_reference(w, run_on(w, system, devices));
    }
  // Its experts in MXFP4, as released (their weights on the MXFP4 grid, computed in FP16).
  compiler::ModelSpec mxfp4 = compiler::load_model("tiny-gpt-oss");
  mxfp4.expert_dtype = compiler::DType::kMxfp4;
  const ModelWeights q = random_weights(mxfp4, 11);
  for (const char* system : {"gpu", "duplex-pe"}) {
    SCOPED_TRACE(std::string("mxfp4 on ") + system);
    expect_matches_reference(q, run_on(q, system, 0));
  }
}

// Llama 4: 3-token chunks on the RoPE layers (prefill and decode on the xPU's kernels, decode on the
// Logic-PIM's softmax unit on duplex-pe, whose device reads each row's chunk), a NoPE layer with
// temperature-tuned queries, q / k L2-normed after RoPE, experts on inputs scaled by their sigmoid routing
// weights beside a shared expert; and Scout's shape (every layer MoE, top 2, llama3 RoPE, no q / k norm),
// also with the prompts in chunks of 3 tokens (chunked attention on the decode kernel's rows).
TEST(HfFamilies, Llama4MatchesTheReference) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-llama4"), 11);
  for (const char* system : {"gpu", "duplex-pe"})
    for (int devices : {1, 0, 16}) {
      SCOPED_TRACE(std::string(system) + " x" + std::to_string(devices));
      expect_matches_reference(w, run_on(w, system, devices));
    }
  const ModelWeights scout = config_weights("tiny-llama4-scout.json");
  for (const char* system : {"gpu", "duplex-pe"}) {
    SCOPED_TRACE(std::string("scout on ") + system);
    expect_matches_reference(scout, run_on(scout, system, 0));
  }
  FunctionalOptions chunked;
  chunked.max_tokens_per_step = 3;
  expect_matches_reference(scout,
                           FunctionalExecutor(scout, load_system("gpu"), chunked).run(kPrompts, kNewTokens));
}

// Scaled RoPE (config.json rope_scaling): linear, Llama 3.1's with an original context of 64, so that a head
// of 16 has frequencies in each of its three regimes, and YaRN. Each matches the reference on one device and
// two nodes, and each changes the logits.
TEST(HfFamilies, ScaledRopeMatchesTheReference) {
  RopeScaling linear;
  linear.kind = RopeScaling::Kind::kLinear;
  linear.factor = 4.0;
  RopeScaling llama3;
  llama3.kind = RopeScaling::Kind::kLlama3;
  llama3.factor = 8.0;
  llama3.original_max_position_embeddings = 64.0;
  // Llama 3's regimes (theta 10000, head 16: wavelengths 2 pi 10^(i/2)): below original / high_freq_factor
  // = 16 kept (i = 0: 6.3), above original / low_freq_factor = 64 divided by the factor (i = 3: 199), and
  // blended between (i = 1, 2: 19.9, 62.8).
  ModelNumerics n;
  n.rope_scaling = llama3;
  const std::vector<double> f = rope_inv_freq(n, 16), base = rope_inv_freq(ModelNumerics{}, 16);
  EXPECT_EQ(f[0], base[0]);
  for (std::size_t i : {1u, 2u}) {
    EXPECT_GT(f[i], base[i] / 8.0) << i;
    EXPECT_LT(f[i], base[i]) << i;
  }
  for (std::size_t i = 3; i < f.size(); ++i) EXPECT_DOUBLE_EQ(f[i], base[i] / 8.0) << i;
  n.rope_scaling = linear;
  EXPECT_DOUBLE_EQ(rope_inv_freq(n, 16)[5], base[5] / 4.0);
  // YaRN (factor 4, original 64, betas 32 / 1): its ramp spans dimensions 0..3 of a head of 16 (the
  // correction dims floor(-0.99) -> 0 and ceil(2.02) = 3): dimension 0 kept, 1 and 2 blended, 3 on divided.
  RopeScaling yarn;
  yarn.kind = RopeScaling::Kind::kYarn;
  yarn.factor = 4.0;
  yarn.original_max_position_embeddings = 64.0;
  yarn.attention_factor = 0.1 * std::log(4.0) + 1.0;
  n.rope_scaling = yarn;
  const std::vector<double> y = rope_inv_freq(n, 16);
  EXPECT_DOUBLE_EQ(y[0], base[0]);
  EXPECT_DOUBLE_EQ(y[1], base[1] / 4.0 * (1.0 / 3.0) + base[1] * (2.0 / 3.0));
  EXPECT_DOUBLE_EQ(y[2], base[2] / 4.0 * (2.0 / 3.0) + base[2] * (1.0 / 3.0));
  for (std::size_t i = 3; i < y.size(); ++i) EXPECT_DOUBLE_EQ(y[i], base[i] / 4.0) << i;
  EXPECT_DOUBLE_EQ(rope_attention_factor(n), 0.1 * std::log(4.0) + 1.0);

  const ModelWeights plain = random_weights(compiler::load_model("tiny-dense"), 11);
  const FunctionalResult unscaled = run_on(plain, "duplex-pe", 1);
  for (const RopeScaling& scaling : {linear, llama3, yarn}) {
    ModelWeights w = plain;
    w.numerics.rope_scaling = scaling;
    for (int devices : {1, 16}) {
      SCOPED_TRACE(std::to_string(static_cast<int>(scaling.kind)) + " x" + std::to_string(devices));
      const FunctionalResult got = run_on(w, "duplex-pe", devices);
      expect_matches_reference(w, got);
      EXPECT_NE(got.logits, unscaled.logits);
    }
  }
}

// Dynamic NTK RoPE (HF "dynamic"): beyond the original context the base grows with the sequence length, each
// token rotated at max(prompt length, position + 1) (HF generate's forwards). The frequencies follow HF's
// formula; the emulation matches the reference on one device and two nodes, with the prompt in one step or in
// chunks of 2 tokens (the rotation does not depend on the chunking), and differs from plain RoPE.
TEST(HfFamilies, DynamicNtkRopeMatchesTheReference) {
  ModelNumerics n;
  n.rope_scaling.kind = RopeScaling::Kind::kDynamic;
  n.rope_scaling.factor = 2.0;
  n.rope_scaling.original_max_position_embeddings = 4.0;
  EXPECT_EQ(dynamic_rope_length(5, 2), 5);  // a prompt token: the prompt's length
  EXPECT_EQ(dynamic_rope_length(5, 7), 8);  // a later token: its position + 1
  const std::vector<double> base = rope_inv_freq(ModelNumerics{}, 16);
  EXPECT_EQ(rope_inv_freq(n, 16, 4), base);  // within the original context
  const double theta = 10000.0 * std::pow(2.0 * 8 / 4 - 1.0, 16.0 / 14.0);
  const std::vector<double> at8 = rope_inv_freq(n, 16, 8);
  for (std::size_t i = 0; i < at8.size(); ++i)
    EXPECT_DOUBLE_EQ(at8[i], std::pow(theta, -2.0 * static_cast<double>(i) / 16)) << i;

  const ModelWeights plain = random_weights(compiler::load_model("tiny-dense"), 11);
  ModelWeights w = plain;
  w.numerics = n;
  const FunctionalResult unscaled = run_on(plain, "duplex-pe", 1);
  for (int devices : {1, 16})
    for (int chunk : {0, 2}) {
      SCOPED_TRACE(std::to_string(devices) + " devices, chunk " + std::to_string(chunk));
      FunctionalOptions o;
      o.devices = devices;
      if (chunk > 0) o.max_tokens_per_step = chunk;
      const FunctionalResult got =
          FunctionalExecutor(w, load_system("duplex-pe"), o).run(kPrompts, kNewTokens);
      expect_matches_reference(w, got);
      EXPECT_NE(got.logits, unscaled.logits);
    }
}

// LongRoPE (Phi-3, Phi-3.5-MoE): the short factors and the attention factor on cos and sin within the
// original context, the long ones (and Phi-3.5-MoE's long_mscale) beyond it, each token at its
// dynamic_rope_length (HF switches per forward by its longest position, re-rotating nothing cached). Within
// and across the original context, with the prompts whole or in 2-token chunks, on one device and two nodes,
// the emulation matches the reference; each regime changes the logits.
TEST(HfFamilies, LongRopeMatchesTheReferenceWithinAndBeyondTheOriginalContext) {
  const ModelWeights plain = random_weights(compiler::load_model("tiny-dense"), 11);
  ModelWeights w = plain;
  RopeScaling& s = w.numerics.rope_scaling;
  s.kind = RopeScaling::Kind::kLongRope;
  for (int i = 0; i < plain.spec.head_dim / 2; ++i) {
    s.short_factor.push_back(1.0 + 0.4 * i);
    s.long_factor.push_back(2.0 + i);
  }
  s.attention_factor = 1.2;
  s.long_attention_factor = 1.3;
  s.original_max_position_embeddings = 64;  // every sequence here within it
  const int d = plain.spec.head_dim;
  EXPECT_EQ(rope_inv_freq(w.numerics, d, 64)[3], rope_inv_freq(ModelNumerics{}, d)[3] / s.short_factor[3]);
  EXPECT_EQ(rope_inv_freq(w.numerics, d, 65)[3], rope_inv_freq(ModelNumerics{}, d)[3] / s.long_factor[3]);
  EXPECT_EQ(rope_attention_factor(w.numerics, 65), 1.3);
  ModelWeights beyond = w;
  beyond.numerics.rope_scaling.original_max_position_embeddings = 8;  // kPrompts' 6 tokens + 8 new need 13
  const FunctionalResult short_only = run_on(w, "duplex-pe", 1);
  for (const ModelWeights* m : {&w, &beyond})
    for (int devices : {1, 16})
      for (int chunk : {0, 2}) {
        SCOPED_TRACE(std::to_string(devices) + " devices, chunk " + std::to_string(chunk) +
                     (m == &beyond ? ", beyond" : ""));
        FunctionalOptions o;
        o.devices = devices;
        if (chunk > 0) o.max_tokens_per_step = chunk;
        const FunctionalResult got =
            FunctionalExecutor(*m, load_system("duplex-pe"), o).run(kPrompts, kNewTokens);
        expect_matches_reference(*m, got);
        EXPECT_NE(got.logits, run_on(plain, "duplex-pe", devices).logits);
        if (m == &beyond && devices == 1) {
          EXPECT_NE(got.logits, short_only.logits);
        }
      }
}

// Partial RoPE (Phi-4-mini's partial_rotary_factor): the first rotary_dim of each head rotated, the rest
// passed, with plain frequencies over rotary_dim and with LongRoPE's factors over its pairs; matches the
// reference on one device and two nodes, and differs from rotating the whole head.
TEST(HfFamilies, PartialRopeMatchesTheReference) {
  compiler::ModelSpec spec = compiler::load_model("tiny-dense");
  spec.weight_naming = compiler::WeightNaming::kPhi3;
  const ModelWeights whole = random_weights(spec, 11);
  ModelWeights partial = whole;
  partial.spec.rotary_dim = 12;  // of 16
  EXPECT_EQ(rotary_dim(partial.spec), 12);
  ModelWeights longrope = partial;
  longrope.numerics.rope_scaling.kind = RopeScaling::Kind::kLongRope;
  longrope.numerics.rope_scaling.short_factor = {1.0, 1.1, 1.3, 1.8, 2.5, 3.4};
  longrope.numerics.rope_scaling.long_factor = {1.2, 2.0, 5.0, 11.0, 24.0, 40.0};
  longrope.numerics.rope_scaling.original_max_position_embeddings = 4096;
  longrope.numerics.rope_scaling.attention_factor = 1.19;
  for (const ModelWeights* w : {&partial, &longrope})
    for (int devices : {1, 16}) {
      SCOPED_TRACE(std::to_string(devices) + (w == &longrope ? " longrope" : " plain"));
      expect_matches_reference(*w, run_on(*w, "duplex-pe", devices));
    }
  EXPECT_NE(run_on(partial, "duplex-pe", 1).logits, run_on(whole, "duplex-pe", 1).logits);
}

TEST(HfFamilies, BiasedQkNormedDenseMatchesTheReference) {
  const ModelWeights w = random_weights(qwen3_dense_biased(), 11);
  for (const char* system : {"gpu", "duplex-pe"})
    for (int devices : {1, 4, 16}) {
      SCOPED_TRACE(std::string(system) + " x" + std::to_string(devices));
      expect_matches_reference(w, run_on(w, system, devices));
    }
}

// OLMoE's q / k norms span every head: one device, or the heads over a node's devices (the norm then takes
// the sums of squares of all of them: the plan's qk_norm_all_reduce), or two nodes.
TEST(HfFamilies, WholeProjectionQkNormMatchesTheReferenceOnOneOrManyDevices) {
  const ModelWeights w = random_weights(olmoe_like(), 11);
  for (const char* system : {"gpu", "duplex-pe"})
    for (int devices : {1, 2, 0, 16}) {
      SCOPED_TRACE(std::string(system) + " x" + std::to_string(devices));
      const FunctionalResult got = run_on(w, system, devices);
      expect_matches_reference(w, got);
      std::int64_t reductions = 0;
      for (const OpRecord& op : got.ops) reductions += op.name.ends_with(compiler::kQkNormAllReduce) ? 1 : 0;
      EXPECT_EQ(reductions > 0, got.devices > 1);  // every layout here is tensor parallel in a node
    }
}

// `w` as the model without one feature: the spec changed by `drop`, the tensors named by `gone` removed.
ModelWeights without(const ModelWeights& w, const std::function<void(compiler::ModelSpec&)>& drop,
                     const std::function<bool(const std::string&)>& gone) {
  ModelWeights out = w;
  drop(out.spec);
  std::erase_if(out.tensors, [&](const auto& kv) { return gone(kv.first); });
  return out;
}

bool has(const std::string& name, const char* part) {
  return name.find(part) != std::string::npos;
}

TEST(HfFamilies, EveryFeatureChangesTheLogits) {
  const ModelWeights qwen = random_weights(compiler::load_model("tiny-qwen-moe"), 11);
  const ModelWeights dense = random_weights(qwen3_dense_biased(), 11);
  struct Variant {
    const char* what;
    const ModelWeights* base;
    ModelWeights changed;
  };
  const ModelWeights opt = random_weights(compiler::load_model("tiny-opt"), 11);
  const ModelWeights starcoder = random_weights(compiler::load_model("tiny-starcoder2"), 11);
  const ModelWeights gemma = random_weights(compiler::load_model("tiny-gemma"), 11);
  const ModelWeights phimoe = random_weights(compiler::load_model("tiny-phimoe"), 11);
  const ModelWeights dbrx = random_weights(compiler::load_model("tiny-dbrx"), 11);
  const ModelWeights gemma2 = random_weights(compiler::load_model("tiny-gemma2"), 11);
  const ModelWeights gemma3 = gemma3_weights();
  ModelWeights gemma3_one_base = gemma3;
  gemma3_one_base.numerics.local_rope_theta = 0;
  const ModelWeights gpt_oss = random_weights(compiler::load_model("tiny-gpt-oss"), 11);
  const ModelWeights llama4 = random_weights(compiler::load_model("tiny-llama4"), 11);
  // gpt-oss with its biases scaled up (x 40: biases of about 4), so the clamp at +-7 bites.
  ModelWeights gpt_oss_large = gpt_oss;
  for (auto& [name, t] : gpt_oss_large.tensors)
    if (has(name, "experts.") && has(name, ".bias"))
      for (std::uint16_t& v : t.data) v = float_to_half_bits(40.0f * half_bits_to_float(v));
  ModelWeights gpt_oss_silu = gpt_oss_large;
  gpt_oss_silu.spec.activation = compiler::Activation::kSilu;
  const std::vector<Variant> variants = {
      {"Llama 4's chunked attention", &llama4,
       without(
           llama4,
           [](auto& m) {
             m.attention_chunk = 0;
             m.full_attention_layers.clear();
           },
           [](const auto&) { return false; })},
      {"Llama 4's NoPE layer (rotated)", &llama4,
       without(
           llama4,
           [](auto& m) {
             m.nope_layers.clear();
             m.attn_temperature_floor = 0;
             m.attn_temperature_scale = 0;
           },
           [](const auto&) { return false; })},
      {"Llama 4's temperature tuning", &llama4,
       without(
           llama4,
           [](auto& m) {
             m.attn_temperature_floor = 0;
             m.attn_temperature_scale = 0;
           },
           [](const auto&) { return false; })},
      {"Llama 4's L2 q / k norm", &llama4,
       without(
           llama4, [](auto& m) { m.qk_norm = compiler::QkNorm::kNone; }, [](const auto&) { return false; })},
      {"Llama 4's expert inputs scaled (as outputs)", &llama4,
       without(
           llama4, [](auto& m) { m.expert_input_scaled = false; }, [](const auto&) { return false; })},
      {"gpt-oss's attention sinks", &gpt_oss,
       without(
           gpt_oss, [](auto& m) { m.attn_sinks = false; }, [](const auto& n) { return has(n, ".sinks"); })},
      {"gpt-oss's router bias", &gpt_oss,
       without(
           gpt_oss, [](auto& m) { m.router_bias = false; },
           [](const auto& n) { return has(n, "router.bias"); })},
      {"gpt-oss's expert biases", &gpt_oss,
       without(
           gpt_oss, [](auto& m) { m.mlp_bias = false; },
           [](const auto& n) { return has(n, "experts.") && has(n, ".bias"); })},
      {"gpt-oss's clamped SwiGLU as SiLU", &gpt_oss_large, gpt_oss_silu},
      {"Gemma 3's local RoPE base", &gemma3, gemma3_one_base},
      {"Gemma 2's norms after the blocks", &gemma2,
       without(
           gemma2, [](auto& m) { m.post_norms = false; },
           [](const auto& n) { return has(n, "post_attn_norm") || has(n, "post_ffn_norm"); })},
      {"Gemma 2's attention soft-cap", &gemma2,
       without(
           gemma2, [](auto& m) { m.attn_softcap = 0; }, [](const auto&) { return false; })},
      {"Gemma 2's logit soft-cap", &gemma2,
       without(
           gemma2, [](auto& m) { m.final_softcap = 0; }, [](const auto&) { return false; })},
      {"Gemma 2's query_pre_attn_scalar", &gemma2,
       without(
           gemma2, [](auto& m) { m.query_pre_attn_scalar = 0; }, [](const auto&) { return false; })},
      {"DBRX's clamp of q / k / v", &dbrx,
       without(
           dbrx, [](auto& m) { m.clip_qkv = 0; }, [](const auto&) { return false; })},
      {"learned positions (as offset 0)", &opt,
       without(
           opt, [](auto& m) { m.position_offset = 0; }, [](const auto&) { return false; })},
      {"FFN biases", &opt,
       without(
           opt, [](auto& m) { m.mlp_bias = false; },
           [](const auto& n) { return has(n, "mlp.") && has(n, ".bias"); })},
      {"ReLU as GELU", &opt,
       without(
           opt, [](auto& m) { m.activation = compiler::Activation::kGeluTanh; },
           [](const auto&) { return false; })},
      {"Gemma's norm offset", &gemma,
       without(
           gemma, [](auto& m) { m.norm_weight_offset = 0; }, [](const auto&) { return false; })},
      {"Gemma's embedding scale", &gemma,
       without(
           gemma, [](auto& m) { m.scale_embedding = false; }, [](const auto&) { return false; })},
      {"sparsemixer as softmax top-2", &phimoe,
       without(
           phimoe, [](auto& m) { m.router = compiler::Router::kSoftmaxTopK; },
           [](const auto&) { return false; })},
      {"LM-head bias", &phimoe,
       without(
           phimoe, [](auto& m) { m.lm_head_bias = false; },
           [](const auto& n) { return n == "lm_head.bias"; })},
      {"LayerNorm as RMSNorm", &starcoder,
       without(
           starcoder, [](auto& m) { m.norm = compiler::NormKind::kRmsNorm; },
           [](const auto& n) { return has(n, "norm.bias"); })},
      {"q/k/v biases", &qwen,
       without(
           qwen, [](auto& m) { m.qkv_bias = false; }, [](const auto& n) { return has(n, "_proj.bias"); })},
      {"shared-expert gate", &qwen,
       without(
           qwen, [](auto& m) { m.shared_expert_gate = false; },
           [](const auto& n) { return has(n, "shared_expert_gate"); })},
      {"unrenormalised routing", &qwen,
       without(
           qwen, [](auto& m) { m.router_renormalize = true; }, [](const auto&) { return false; })},
      {"o bias", &dense,
       without(
           dense, [](auto& m) { m.o_bias = false; }, [](const auto& n) { return has(n, "o_proj.bias"); })},
      {"q/k norms", &dense,
       without(
           dense, [](auto& m) { m.qk_norm = compiler::QkNorm::kNone; },
           [](const auto& n) { return has(n, "_norm.weight") && has(n, "self_attn"); })},
  };
  for (const Variant& v : variants) {
    SCOPED_TRACE(v.what);
    const FunctionalResult with = run_on(*v.base, "duplex-pe", 0),
                           without_it = run_on(v.changed, "duplex-pe", 0);
    expect_matches_reference(v.changed, without_it);
    EXPECT_NE(with.logits, without_it.logits);
  }
}

}  // namespace
}  // namespace duplex::runtime::functional
