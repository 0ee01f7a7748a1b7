// Functional emulation of DeepSeek-V2 / V3: multi-head latent attention in the absorbed form (one cached
// latent per token, every head's keys and values), q compression, DeepSeek's routers (greedy, group-limited,
// noaux_tc with its correction bias; routed scaling), shared experts and the dense first layers, and
// DeepSeek's YaRN (its mscale on cos / sin and on the softmax scale). Each passes `--check` against the
// plain reference, which computes MLA as HF does (K and V decompressed per head), on xPU and PIM systems, one
// device, a node's and two nodes; the paged cache holds the latent alone.
//
// Routing knife edges: group-limited and top-k choices are discontinuous, so a token whose choice is within
// FP16 rounding of a tie may route differently in the emulation and the reference (another summation order);
// --check explains and follows such routing near ties (tested below with seed 1 of tiny-deepseek, which has
// one on a duplex device: a group margin of 4e-5 in probability).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/runtime/functional/functional_executor.hpp"
#include "duplex/runtime/functional/paged_kv_cache.hpp"
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

constexpr std::uint64_t kSeed = 2;

TEST(DeepSeek, MlaModelsMatchTheReferenceOnEverySystemAndLayout) {
  for (const char* model : {"tiny-deepseek", "tiny-deepseek-v3"}) {
    const ModelWeights w = random_weights(compiler::load_model(model), kSeed);
    for (const char* system : {"gpu", "duplex", "duplex-pe", "bank-pim"})
      for (int devices : {1, 0, 16}) {
        SCOPED_TRACE(std::string(model) + " on " + system + " x" + std::to_string(devices));
        const FunctionalResult got = run_on(w, system, devices);
        expect_matches_reference(w, got);
        if (devices == 1 && std::string(system) != "gpu") {  // decode attention ran on the PIM
          const auto& counts = got.device_op_counts.at("dev0.pim");
          EXPECT_GT(counts.contains("attn_decode") ? counts.at("attn_decode") : 0, 0);
        }
      }
  }
}

// The paged cache holds one latent of kv_lora_rank + qk_rope_head_dim per token and layer (no V pool): what
// the lowering charges (ModelSpec::kv_elements_per_token_layer), and what K/V migration copies.
TEST(DeepSeek, TheCacheHoldsTheLatentAlone) {
  const compiler::ModelSpec m = compiler::load_model("tiny-deepseek");
  const KvCacheShape shape = kv_cache_shape(m);
  EXPECT_EQ(shape.heads, 1);
  EXPECT_EQ(shape.head_dim, m.mla.kv_lora_rank + m.mla.qk_rope_head_dim);
  EXPECT_TRUE(shape.shared_kv);
  EXPECT_EQ(std::int64_t{shape.heads} * shape.head_dim, m.kv_elements_per_token_layer());
  PagedKvCache cache(m.layers, shape.heads, shape.head_dim, 4, 8, shape.shared_kv);
  cache.reserve(0, 5);
  EXPECT_EQ(cache.v(1, 0, 4), cache.k(1, 0, 4));
  EXPECT_EQ(cache.v_pool(2), cache.k_pool(2));
  // duplex: the prompts' latents migrate from the prefill space once per token and layer, not as K and V.
  const ModelWeights w = random_weights(m, kSeed);
  const FunctionalResult got = run_on(w, "duplex", 1);
  ASSERT_EQ(got.in_device_kv_migrations.size(), kPrompts.size());
  for (const InDeviceKvMigration& mig : got.in_device_kv_migrations)
    EXPECT_EQ(mig.bytes, static_cast<double>(mig.tokens * m.layers * m.kv_elements_per_token_layer()) * 2.0);
}

// DeepSeek's YaRN from a config.json (tiny-deepseek-v2-yarn.json: mscale 0.9, mscale_all_dim 0.707): cos and
// sin scaled by m(0.9) / m(0.707), the softmax by m(0.707)^2; matches the reference, and each factor changes
// the logits.
TEST(DeepSeek, YarnWithMscaleMatchesTheReference) {
  const std::string config = std::string(DUPLEX_TEST_DATA_DIR) + "/tiny-deepseek-v2-yarn.json";
  ModelWeights w = random_weights(compiler::load_model(config), kSeed);
  w.numerics = config_numerics(config);
  const RopeScaling& s = w.numerics.rope_scaling;
  ASSERT_EQ(s.kind, RopeScaling::Kind::kYarn);
  const double m_all = 0.1 * 0.707 * std::log(4.0) + 1.0, m = 0.1 * 0.9 * std::log(4.0) + 1.0;
  EXPECT_DOUBLE_EQ(rope_attention_factor(w.numerics), m / m_all);
  EXPECT_DOUBLE_EQ(attention_scale(w.spec, w.numerics), m_all * m_all / std::sqrt(32.0));
  const FunctionalResult got = run_on(w, "duplex-pe", 1);
  expect_matches_reference(w, got);
  ModelWeights plain_softmax = w;
  plain_softmax.numerics.rope_scaling.mscale_all_dim = 0;  // cos / sin as before, the softmax unscaled
  EXPECT_NE(run_on(plain_softmax, "duplex-pe", 1).logits, got.logits);
  ModelWeights plain_rope = w;
  plain_rope.numerics.rope_scaling.attention_factor = 1.0;
  EXPECT_NE(run_on(plain_rope, "duplex-pe", 1).logits, got.logits);
}

// Each DeepSeek feature changes what the emulation computes (it does not skip it), and the changed model
// still matches the reference.
TEST(DeepSeek, EveryFeatureChangesTheLogits) {
  const ModelWeights v2 = random_weights(compiler::load_model("tiny-deepseek"), kSeed);
  const ModelWeights v3 = random_weights(compiler::load_model("tiny-deepseek-v3"), kSeed);
  auto changed = [](const ModelWeights& w, const std::function<void(ModelWeights&)>& change) {
    ModelWeights out = w;
    change(out);
    return out;
  };
  struct Variant {
    const char* what;
    const ModelWeights* base;
    ModelWeights changed;
  };
  const std::vector<Variant> variants = {
      {"group-limited routing as greedy", &v2,
       changed(v2,
               [](ModelWeights& w) {
                 w.spec.router = compiler::Router::kSoftmaxTopK;
                 w.spec.router_groups = w.spec.router_topk_groups = 1;
               })},
      {"routed scaling", &v2, changed(v2, [](ModelWeights& w) { w.spec.routed_scaling = 1.0; })},
      {"noaux_tc's correction bias (negated)", &v3,
       changed(v3,
               [](ModelWeights& w) {
                 for (auto& [name, t] : w.tensors)
                   if (name.ends_with("e_score_correction_bias"))
                     for (std::uint16_t& b : t.data) b ^= 0x8000;  // the FP16 sign bit
               })},
      {"noaux_tc's renormalisation", &v3,
       changed(v3, [](ModelWeights& w) { w.spec.router_renormalize = false; })},
      {"the q_a_layernorm gain", &v3,
       changed(v3,
               [](ModelWeights& w) {
                 for (auto& [name, t] : w.tensors)
                   if (name.ends_with("q_a_layernorm.weight"))
                     std::fill(t.data.begin(), t.data.end(), 0x3c00);  // 1
               })},
  };
  for (const Variant& v : variants) {
    SCOPED_TRACE(v.what);
    const FunctionalResult with = run_on(*v.base, "duplex-pe", 0),
                           without_it = run_on(v.changed, "duplex-pe", 0);
    expect_matches_reference(v.changed, without_it);
    EXPECT_NE(with.logits, without_it.logits);
  }
}

// A routing near tie (run_session.hpp, routing_record.hpp): tiny-deepseek's seed 1 on one duplex device
// routes one token of request 0 at layer 1 to expert 9 where the reference picks expert 0, the two within
// FP16 rounding in group score. --check records it, finds it explained (the executor's router logits within
// the bound, and the reference's router on them choosing the executor's experts), follows the executor's
// experts from there and passes; without following, the logits differ beyond the bound. A tie whose experts
// the executor's own logits do not choose, or whose logits are off by more than the bound, is not explained.
TEST(DeepSeek, CheckFollowsTheExecutorAtRoutingNearTiesAndOnlyThere) {
  const std::vector<std::vector<std::int32_t>> prompts = {{1, 5, 9, 42}, {7, 3}, {200}};
  const ModelWeights w = random_weights(compiler::load_model("tiny-deepseek"), 1);
  FunctionalOptions o;
  o.devices = 1;
  const FunctionalResult got = FunctionalExecutor(w, load_system("duplex"), o).run(prompts, 6);
  const CheckResult check = check_run(w, prompts, got, 6);
  EXPECT_TRUE(check.passed()) << check.max_abs_logit_err << " (bound " << check.logit_bound << ")";
  ASSERT_FALSE(check.routing_ties.empty());
  const RoutingTie& tie = check.routing_ties.front();
  EXPECT_TRUE(tie.explained());
  EXPECT_FALSE(tie.mask_only);
  EXPECT_NE(tie.experts, tie.reference_experts);
  // The reference on the executor's tokens but its own routing: the flip moves the logits beyond the bound.
  const ReferenceOutput own = reference_follow(w, prompts, got.tokens);
  double worst = 0;
  for (std::size_t r = 0; r < prompts.size(); ++r)
    for (std::size_t i = 0; i < got.logits[r].size(); ++i)
      for (std::size_t v = 0; v < got.logits[r][i].size(); ++v)
        worst = std::max(worst, std::abs(static_cast<double>(got.logits[r][i][v]) - own.logits[r][i][v]));
  EXPECT_GT(worst, check.logit_bound);

  // Experts the executor's logits do not choose (its least likely expert in the tie's place): not explained.
  FunctionalResult wrong = got;
  const auto moe = static_cast<std::size_t>(tie.layer - w.spec.first_moe_layer);  // the first layer is dense
  RoutedToken& ran = wrong.routing[tie.request][tie.position][moe];
  const auto least = std::min_element(ran.logits.begin(), ran.logits.end()) - ran.logits.begin();
  ran.experts.back() = static_cast<std::int32_t>(least);
  const CheckResult inconsistent = check_run(w, prompts, wrong, 6);
  EXPECT_FALSE(inconsistent.passed());
  ASSERT_FALSE(inconsistent.routing_ties.empty());
  EXPECT_FALSE(inconsistent.routing_ties.front().consistent);
  // The executor's experts, but router logits off by more than the bound: not explained either.
  FunctionalResult off = got;
  for (float& l : off.routing[tie.request][tie.position][moe].logits) l *= 1.5f;
  const CheckResult far = check_run(w, prompts, off, 6);
  EXPECT_FALSE(far.passed());
  ASSERT_FALSE(far.routing_ties.empty());
  EXPECT_GT(far.routing_ties.front().router_logit_err, far.routing_ties.front().bound);
}

// What functional emulation refuses of MLA, naming the field.
TEST(DeepSeek, UnsupportedMlaShapesAreRefusedNamingTheField) {
  auto refused = [](const std::function<void(compiler::ModelSpec&)>& change, const char* field) {
    compiler::ModelSpec m = compiler::load_model("tiny-deepseek");
    change(m);
    try {
      check_functional_support(m);
      ADD_FAILURE() << "accepted; expected a refusal naming " << field;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  refused([](auto& m) { m.weight_naming = compiler::WeightNaming::kQwenMoe; }, "attention: MLA");
  refused([](auto& m) { m.norm = compiler::NormKind::kLayerNorm; }, "norm");
  refused([](auto& m) { m.sliding_window = 4; }, "sliding_window");
  refused([](auto& m) { m.mla.qk_rope_head_dim = 7; }, "mla.qk_rope_head_dim");
  refused([](auto& m) { m.shared_expert_gate = true; }, "shared_expert_gate");
  compiler::ModelSpec gqa = compiler::load_model("tiny-qwen-moe");
  gqa.weight_naming = compiler::WeightNaming::kDeepSeek;
  EXPECT_THROW(check_functional_support(gqa), Error);
}

}  // namespace
}  // namespace duplex::runtime::functional
