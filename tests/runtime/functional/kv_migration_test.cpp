// K/V migration on a split system (duplex-split): prompts run on the prefill pool, each request's K/V is
// copied block by block into the decode pool's paged cache, and decoding continues there. Tokens must equal a
// run without migration; the migrated bytes are the prompt's K/V, every layer and KV head.
#include <gtest/gtest.h>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/functional/functional_executor.hpp"
#include "duplex/runtime/functional/run_session.hpp"
#include "duplex/runtime/sim/kv_migration.hpp"

namespace duplex::runtime::functional {
namespace {

const std::vector<std::vector<std::int32_t>> kPrompts = {
    {1, 5, 9, 42}, {7, 300, 12, 999, 3, 64, 8, 8, 21, 4, 4, 17, 90, 2, 11, 6, 5, 33}, {512}};
constexpr int kNewTokens = 6;

FunctionalResult run_on(const ModelWeights& w, const char* system, int devices, int tokens = kNewTokens) {
  FunctionalOptions o;
  o.devices = devices;
  o.kv_block_tokens = 4;  // several blocks per prompt
  FunctionalExecutor exec(w, load_system(system), o);
  return exec.run(kPrompts, tokens);
}

class KvMigration : public ::testing::TestWithParam<std::pair<const char*, int>> {};

TEST_P(KvMigration, TokensAsWithoutMigrationBytesArePromptKv) {
  const auto [model, devices] = GetParam();
  const ModelWeights w = random_weights(compiler::load_model(model), 9);
  const FunctionalResult plain = run_on(w, "duplex-pe", 1);
  const FunctionalResult split = run_on(w, "duplex-split", devices);
  EXPECT_TRUE(plain.kv_migrations.empty());
  EXPECT_EQ(split.tokens, plain.tokens);
  const CheckResult check = compare(split, reference_generate(w, kPrompts, kNewTokens));
  EXPECT_TRUE(check.passed()) << check.max_abs_logit_err;
  const compiler::ModelSpec& m = w.spec;
  ASSERT_EQ(split.kv_migrations.size(), kPrompts.size());
  // The split simulator's link model: the pools' K/V shards side by side, one prompt at a time (the three
  // prompts are prefilled in one step: each transfer starts when the one before has left the links).
  const SystemSpec sys = load_system("duplex-split");
  const KvLinkMigration link(sys, split.devices);
  const int prefill_devices =
      std::max(1, static_cast<int>(std::lround(devices * sys.split_prefill_fraction)));
  const int streams = kv_transfer_streams(m, compiler::ParallelLayout::make(m, sys, prefill_devices),
                                          compiler::ParallelLayout::make(m, sys, devices - prefill_devices));
  double total = 0;
  Time free;
  for (const auto& mig : split.kv_migrations) {
    const auto prompt = static_cast<double>(kPrompts[static_cast<std::size_t>(mig.request)].size());
    EXPECT_EQ(mig.tokens, static_cast<std::int64_t>(prompt));
    EXPECT_EQ(mig.bytes, 2.0 * m.layers * m.kv_heads * m.head_dim * 2.0 * prompt);
    EXPECT_EQ(mig.time, link.time(mig.bytes, streams));
    EXPECT_GE(mig.start, free);
    free = mig.start + link.transfer(mig.bytes, streams);
    EXPECT_GT(mig.energy.si(), 0.0);
    total += mig.bytes;
  }
  EXPECT_EQ(split.kv_migrated_bytes(), total);
  // Both pools stepped: the prefill pool emitted first tokens, the decode pool the rest.
  std::int64_t prefill_steps = 0, decode_steps = 0;
  for (const StepRecord& s : split.steps) (s.pool == "prefill" ? prefill_steps : decode_steps) += 1;
  EXPECT_GT(prefill_steps, 0);
  EXPECT_GE(decode_steps, kNewTokens - 1);
  EXPECT_TRUE(split.device_classes.count("prefill.dev0.xpu"));
  EXPECT_TRUE(split.device_classes.count("decode.dev0.pim"));
  std::printf("%s on duplex-split x%d (%s): %.0f bytes migrated, time %.2f us\n", model, devices,
              split.layout.c_str(), total, to_us(split.time));
}

// GPUs prefilling for Duplex devices (split-gpu-duplex): the prefill pool has no PIM, the decode pool does;
// the tokens are those of a run on one system.
TEST(KvMigrationEdges, PrefillDevicesOfAnotherSystem) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-moe"), 9);
  const FunctionalResult plain = run_on(w, "duplex-pe", 1);
  const FunctionalResult split = run_on(w, "split-gpu-duplex", 4);
  EXPECT_EQ(split.tokens, plain.tokens);
  EXPECT_EQ(split.kv_migrations.size(), kPrompts.size());
  EXPECT_TRUE(split.device_classes.count("prefill.dev0.xpu"));
  EXPECT_FALSE(split.device_classes.count("prefill.dev0.pim"));
  EXPECT_TRUE(split.device_classes.count("decode.dev0.pim"));
  Time decode_pim;  // the prefill pool's steps use no PIM (its devices have none), the decode pool's do
  for (const StepRecord& st : split.steps) {
    if (st.pool == "prefill") {
      EXPECT_EQ(st.pim_busy, Time{}) << "step " << st.step;
    }
    if (st.pool == "decode") decode_pim += st.pim_busy;
  }
  EXPECT_GT(decode_pim, Time{});
}

// 4 devices: 2 + 2 (same layout on both sides); 3 devices: 2 + 1 (KV heads re-sharded from TP2 to TP1).
INSTANTIATE_TEST_SUITE_P(Splits, KvMigration,
                         ::testing::Values(std::pair{"tiny-moe", 4}, std::pair{"tiny-dense", 4},
                                           std::pair{"tiny-moe", 3}),
                         [](const auto& p) {
                           std::string n = std::string(p.param.first) + "_" + std::to_string(p.param.second);
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

// split.kv_transfer: layerwise: the three prompts prefilled in one step stream over the links during it,
// booked as the split simulator books them (KvLinkSchedule::book_prompt); the tokens do not change, and the
// decode pool starts earlier.
TEST(KvMigrationEdges, LayerwiseTransfersStreamDuringThePrefillStep) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-dense"), 9);
  SystemSpec sys = load_system("duplex-split");
  FunctionalOptions o;
  o.devices = 4;
  o.kv_block_tokens = 4;
  const FunctionalResult after = FunctionalExecutor(w, sys, o).run(kPrompts, kNewTokens);
  sys.split_kv_layerwise = true;
  const FunctionalResult layerwise = FunctionalExecutor(w, sys, o).run(kPrompts, kNewTokens);
  EXPECT_EQ(layerwise.tokens, after.tokens);
  ASSERT_EQ(layerwise.kv_migrations.size(), kPrompts.size());
  const StepRecord& prefill = layerwise.steps.front();  // from 0, when every prompt has arrived
  ASSERT_EQ(prefill.pool, "prefill");
  ASSERT_EQ(prefill.prefill_tokens, 4 + 18 + 1);
  const auto layout = compiler::ParallelLayout::make(w.spec, sys, 2);
  KvLinkSchedule links(1, 1);
  for (std::size_t i = 0; i < kPrompts.size(); ++i) {
    const auto& mig = layerwise.kv_migrations[i];
    EXPECT_EQ(mig.bytes, after.kv_migrations[i].bytes);
    const KvLinkSchedule::Crossing c =
        links.book_prompt(0, 0, KvLinkMigration(sys, o.devices), mig.bytes,
                          kv_transfer_streams(w.spec, layout, layout), Time{}, prefill.time, w.spec.layers);
    EXPECT_EQ(mig.start, c.start);
    EXPECT_EQ(mig.time, c.time);
    EXPECT_LT(mig.start + mig.time, after.kv_migrations[i].start + after.kv_migrations[i].time);
  }
  EXPECT_LT(layerwise.time, after.time);
}

TEST(KvMigrationEdges, OneTokenNeedsNoMigrationOneDeviceCannotSplit) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-dense"), 9);
  EXPECT_TRUE(run_on(w, "duplex-split", 2, 1).kv_migrations.empty());
  FunctionalOptions o;
  o.devices = 1;
  EXPECT_THROW(FunctionalExecutor(w, load_system("duplex-split"), o), Error);
}

TEST(KvMigrationEdges, JsonShowsMigratedBytes) {
  RunOptions o;
  o.model = "tiny-dense";
  o.system = "duplex-split";
  o.prompts = {{4, 8, 15}};
  o.max_new_tokens = 3;
  o.check = true;
  const nlohmann::json j = run_functional(o).to_json();
  const compiler::ModelSpec m = compiler::load_model("tiny-dense");
  EXPECT_EQ(j.at("kv_migrated_bytes").get<double>(), 2.0 * m.layers * m.kv_heads * m.head_dim * 2.0 * 3);
  EXPECT_EQ(j.at("kv_migrations").size(), 1u);
  EXPECT_TRUE(j.at("check_passed").get<bool>());
}

}  // namespace
}  // namespace duplex::runtime::functional
