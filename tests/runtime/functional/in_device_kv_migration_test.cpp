// In-device K/V migration (Logic-PIM memory spaces, DUPLEX.md s.6) in functional emulation: prefill and
// chunked-prefill attention write and read a prefill-space paged cache; the plan's kv_migration ops copy a
// completed prompt's K/V into the KV-space cache decode attention reads, and free the prefill-space blocks.
// Tokens must equal the reference and a GPU run (which has no migration).
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "duplex/base/device_spec.hpp"
#include "duplex/compiler/parallel.hpp"
#include "duplex/runtime/functional/functional_executor.hpp"
#include "duplex/runtime/functional/reference_forward.hpp"
#include "duplex/runtime/functional/run_session.hpp"

namespace duplex::runtime::functional {
namespace {

const std::vector<std::vector<std::int32_t>> kPrompts = {
    {1, 5, 9, 42}, {7, 300, 12, 999, 3, 64, 8, 8, 21, 4, 4, 17, 90, 2, 11, 6, 5, 33}, {512}};
constexpr int kNewTokens = 5;

FunctionalResult run_on(const ModelWeights& w, const char* system, int devices, std::int64_t token_budget = 0) {
  FunctionalOptions o;
  o.devices = devices;
  o.kv_block_tokens = 4;  // several blocks per prompt
  o.max_tokens_per_step = token_budget;
  FunctionalExecutor exec(w, load_system(system), o);
  return exec.run(kPrompts, kNewTokens);
}

// Sum over the devices of their KV heads (tensor parallel; heads replicate when devices outnumber them).
double kv_heads_all_devices(const compiler::ModelSpec& m, int devices) {
  const auto layout = compiler::ParallelLayout::make(m, load_system("duplex-pe"), devices);
  return static_cast<double>(std::max(1, m.kv_heads / layout.tp)) * layout.devices;
}

class InDeviceMigration : public ::testing::TestWithParam<std::pair<const char*, int>> {};

TEST_P(InDeviceMigration, BytesAreThePromptsKvAndTokensMatchTheReference) {
  const auto [model, devices] = GetParam();
  const ModelWeights w = random_weights(compiler::load_model(model), 5);
  const FunctionalResult pe = run_on(w, "duplex-pe", devices);
  const CheckResult check = compare(pe, reference_generate(w, kPrompts, kNewTokens));
  EXPECT_TRUE(check.passed()) << check.max_abs_logit_err;
  const compiler::ModelSpec& m = w.spec;
  ASSERT_EQ(pe.in_device_kv_migrations.size(), kPrompts.size());
  EXPECT_TRUE(pe.kv_migrations.empty());  // nothing crosses a link
  double total = 0;
  for (const InDeviceKvMigration& mig : pe.in_device_kv_migrations) {
    const auto prompt = static_cast<double>(kPrompts[static_cast<std::size_t>(mig.request)].size());
    EXPECT_EQ(mig.tokens, static_cast<std::int64_t>(prompt));
    // 2 (K, V) x layers x kv heads (each device's share, all devices) x head_dim x 2 B x prompt tokens
    EXPECT_EQ(mig.bytes, 2.0 * m.layers * kv_heads_all_devices(m, devices) * m.head_dim * 2.0 * prompt);
    total += mig.bytes;
  }
  EXPECT_EQ(pe.in_device_kv_migrated_bytes(), total);
  // One xPU kv_migration op per layer per step that completed a prefill.
  std::set<std::int64_t> steps;
  for (const InDeviceKvMigration& mig : pe.in_device_kv_migrations) steps.insert(mig.step);
  const auto per_kind = pe.ops_per_kind_and_unit();
  ASSERT_TRUE(per_kind.count("kv_migration"));
  EXPECT_EQ(per_kind.at("kv_migration").size(), 1u);
  EXPECT_EQ(per_kind.at("kv_migration").at("xpu"), static_cast<std::int64_t>(steps.size()) * m.layers);
  // The GPU has one memory space: no migration, same tokens.
  const FunctionalResult gpu = run_on(w, "gpu", devices);
  EXPECT_TRUE(gpu.in_device_kv_migrations.empty());
  EXPECT_FALSE(gpu.ops_per_kind_and_unit().count("kv_migration"));
  EXPECT_EQ(gpu.tokens, pe.tokens);
  std::printf("%s on duplex-pe x%d: %.0f bytes migrated in device\n", model, devices, total);
}

// 1 device; 2 devices (1 KV head each); 4 devices (tiny models' 2 KV heads replicated).
INSTANTIATE_TEST_SUITE_P(Layouts, InDeviceMigration,
                         ::testing::Values(std::pair{"tiny-moe", 1}, std::pair{"tiny-dense", 2},
                                           std::pair{"tiny-moe", 4}),
                         [](const auto& p) {
                           std::string n = std::string(p.param.first) + "_" + std::to_string(p.param.second);
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

TEST(InDeviceKvMigrationSteps, MixedStepChunkedPrefillMigratesOnlyAfterItsLastChunk) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-moe"), 5);
  // A budget of 8 tokens per step: the 18-token prompt is prefilled in chunks while the others decode.
  const FunctionalResult pe = run_on(w, "duplex-pe", 1, 8);
  const CheckResult check = compare(pe, reference_generate(w, kPrompts, kNewTokens));
  EXPECT_TRUE(check.passed()) << check.max_abs_logit_err;
  bool mixed = false;
  for (const StepRecord& s : pe.steps) mixed = mixed || (s.decode_tokens > 0 && s.prefill_tokens > 0);
  EXPECT_TRUE(mixed);
  ASSERT_EQ(pe.in_device_kv_migrations.size(), kPrompts.size());
  std::map<std::int64_t, std::int64_t> step_of;
  for (const InDeviceKvMigration& mig : pe.in_device_kv_migrations) {
    EXPECT_EQ(mig.tokens, static_cast<std::int64_t>(kPrompts[static_cast<std::size_t>(mig.request)].size()));
    step_of[mig.request] = mig.step;
  }
  // The long prompt needs more than one step of 8 tokens: it migrates in a later step than the first prompt,
  // whose step also held the long prompt's first chunk.
  EXPECT_GT(step_of.at(1), step_of.at(0));
  EXPECT_EQ(run_on(w, "gpu", 1, 8).tokens, pe.tokens);
  EXPECT_TRUE(run_on(w, "duplex-split", 2).in_device_kv_migrations.empty());  // the link migration instead
}

TEST(InDeviceKvMigrationSteps, JsonAndTextShowInDeviceBytesNextToTheLinkOnes) {
  RunOptions o;
  o.model = "tiny-dense";
  o.system = "duplex-pe";
  o.prompts = {{4, 8, 15}};
  o.max_new_tokens = 3;
  o.check = true;
  const RunReport rep = run_functional(o);
  const nlohmann::json j = rep.to_json();
  const compiler::ModelSpec m = compiler::load_model("tiny-dense");
  const int devices = load_system("duplex-pe").devices_for(m.name);
  EXPECT_EQ(j.at("in_device_kv_migrated_bytes").get<double>(),
            2.0 * m.layers * kv_heads_all_devices(m, devices) * m.head_dim * 2.0 * 3);
  EXPECT_EQ(j.at("in_device_kv_migrations").size(), 1u);
  EXPECT_EQ(j.at("kv_migrated_bytes").get<double>(), 0.0);
  EXPECT_TRUE(j.at("check_passed").get<bool>());
  EXPECT_NE(rep.to_text().find("K/V migrated prefill space -> KV spaces (in device): 1 requests"), std::string::npos);
}

}  // namespace
}  // namespace duplex::runtime::functional
