// Every JEDEC timing constraint of the engine, each with a command sequence whose timing proves the
// constraint is enforced: the expected issue time is computed from the preset's table and is strictly later
// than every other bound in that sequence (asserted), so ignoring the constraint would change the result.
// Run on both HBM3 presets, as given and with every timing stretched by 1.5x.
#include <algorithm>
#include <string>
#include <tuple>

#include <gtest/gtest.h>

#include "duplex/sysc/bank_timing_engine.hpp"
#include "sysc_test_support.hpp"

namespace duplex::sysc {
namespace {

Command cmd(CommandKind k, int rank, int bg, int bank, int row = 0) {
  Command c;
  c.kind = k;
  c.rank = rank;
  c.bank_group = bg;
  c.bank = bank;
  c.row = row;
  return c;
}
Command act(int rank, int bg, int bank, int row = 7) {
  return cmd(CommandKind::kActivate, rank, bg, bank, row);
}
Command pre(int rank, int bg, int bank) {
  return cmd(CommandKind::kPrecharge, rank, bg, bank);
}
Command rd(int rank, int bg, int bank, int row = 7) {
  return cmd(CommandKind::kRead, rank, bg, bank, row);
}
Command wr(int rank, int bg, int bank, int row = 7) {
  return cmd(CommandKind::kWrite, rank, bg, bank, row);
}
Command bundle_cmd(CommandKind k, int rank, int bundle, int row = 7) {
  Command c = cmd(k, rank, 0, 0, row);
  c.path = AccessPath::kPim;
  c.bundle = bundle;
  return c;
}

class TimingConstraints : public ::testing::TestWithParam<std::tuple<std::string, double>> {
 protected:
  TimingConstraints()
      : hbm_(testing_support::stretched(testing_support::load_hbm(std::get<0>(GetParam())),
                                        std::get<1>(GetParam()))),
        t_(derive_timing(hbm_)),
        engine_(hbm_.org, t_, make_bundle_geometry(hbm_.org, 8)) {}

  // Issues c at max(earliest, not_before) and returns the issue time.
  Tick issue(const Command& c, Tick not_before = 0) {
    const Tick at = std::max(engine_.earliest(c), not_before);
    engine_.issue(c, at);
    return at;
  }
  // A time by which every constraint of the commands issued so far has expired.
  Tick settled() const { return 10 * (t_.tRC + t_.tFAW + t_.tRFC); }

  HbmSpec hbm_;
  TimingTable t_;
  BankTimingEngine engine_;
};

TEST_P(TimingConstraints, tRCD_ActivateToRead) {
  issue(act(0, 0, 0));
  ASSERT_GT(t_.tRCD, t_.tCK);
  EXPECT_EQ(engine_.earliest(rd(0, 0, 0)), t_.tRCD);
  EXPECT_EQ(engine_.earliest(wr(0, 0, 0)), t_.tRCD);
}

TEST_P(TimingConstraints, tRAS_ActivateToPrecharge) {
  issue(act(0, 0, 0));
  ASSERT_GT(t_.tRAS, t_.tCK);
  EXPECT_EQ(engine_.earliest(pre(0, 0, 0)), t_.tRAS);
}

TEST_P(TimingConstraints, tRP_PrechargeToActivate) {
  issue(act(0, 0, 0));
  const Tick p = issue(pre(0, 0, 0), settled());  // long after tRAS and tRC
  ASSERT_GT(p + t_.tRP, t_.tRC);
  EXPECT_EQ(engine_.earliest(act(0, 0, 0)), p + t_.tRP);
}

TEST_P(TimingConstraints, tRC_ActivateToActivateSameBank) {
  issue(act(0, 0, 0));
  const Tick p = issue(pre(0, 0, 0));
  EXPECT_EQ(p, t_.tRAS);
  EXPECT_EQ(engine_.earliest(act(0, 0, 0)), t_.tRC);
  EXPECT_EQ(t_.tRC, t_.tRAS + t_.tRP);  // derived in one place
}

TEST_P(TimingConstraints, tRRD_S_ActivatesInDifferentBankGroups) {
  issue(act(0, 0, 0));
  ASSERT_GT(t_.tRRD_S, t_.tCK);
  EXPECT_EQ(engine_.earliest(act(0, 1, 0)), t_.tRRD_S);
}

TEST_P(TimingConstraints, tRRD_L_ActivatesInOneBankGroup) {
  issue(act(0, 0, 0));
  ASSERT_GT(t_.tRRD_L, t_.tRRD_S);
  EXPECT_EQ(engine_.earliest(act(0, 0, 1)), t_.tRRD_L);
}

TEST_P(TimingConstraints, tFAW_FifthActivate) {
  Tick first = issue(act(0, 0, 0));
  Tick last = first;
  for (int bg = 1; bg < 4; ++bg) last = issue(act(0, bg, 0));
  EXPECT_EQ(last, 3 * t_.tRRD_S);
  const Tick expected = first + t_.tFAW;
  ASSERT_GT(expected, last + t_.tRRD_S);   // tRRD_S alone would allow it earlier
  ASSERT_GT(expected, first + t_.tRRD_L);  // as would tRRD_L (same bank group as the first)
  EXPECT_EQ(engine_.earliest(act(0, 0, 1)), expected);
  // The other rank has its own window.
  EXPECT_EQ(engine_.earliest(act(1, 0, 0)), last + t_.tCK);
}

TEST_P(TimingConstraints, tCCD_S_ReadsInDifferentBankGroups) {
  issue(act(0, 0, 0));
  issue(act(0, 1, 0));
  const Tick r = issue(rd(0, 0, 0), settled());
  ASSERT_GE(t_.tCCD_S, t_.tBurst);
  ASSERT_GT(t_.tCCD_S, t_.tCK);
  EXPECT_EQ(engine_.earliest(rd(0, 1, 0)), r + t_.tCCD_S);
}

TEST_P(TimingConstraints, tCCD_L_ReadsInOneBankGroup) {
  issue(act(0, 0, 0));
  issue(act(0, 0, 1));
  const Tick r = issue(rd(0, 0, 0), settled());
  ASSERT_GT(t_.tCCD_L, t_.tCCD_S);
  EXPECT_EQ(engine_.earliest(rd(0, 0, 1)), r + t_.tCCD_L);
  const Tick w = issue(wr(0, 0, 1), settled() * 2);
  EXPECT_EQ(engine_.earliest(wr(0, 0, 0)), w + t_.tCCD_L);
}

TEST_P(TimingConstraints, DataBusOnlyAcrossRanks) {
  issue(act(0, 0, 0));
  issue(act(1, 0, 0));
  const Tick r = issue(rd(0, 0, 0), settled());
  EXPECT_EQ(engine_.earliest(rd(1, 0, 0)), r + std::max(t_.tBurst, t_.tCK));
}

TEST_P(TimingConstraints, tRTP_ReadToPrecharge) {
  issue(act(0, 0, 0));
  const Tick r = issue(rd(0, 0, 0), t_.tRAS);
  ASSERT_GT(r + t_.tRTP, t_.tRAS);
  EXPECT_EQ(engine_.earliest(pre(0, 0, 0)), r + t_.tRTP);
}

TEST_P(TimingConstraints, tWR_WriteRecoveryBeforePrecharge) {
  issue(act(0, 0, 0));
  const Tick w = issue(wr(0, 0, 0), t_.tRAS);
  EXPECT_EQ(engine_.earliest(pre(0, 0, 0)), w + t_.tWL + t_.tBurst + t_.tWR);
}

TEST_P(TimingConstraints, tWTR_S_WriteToReadOtherBankGroup) {
  issue(act(0, 0, 0));
  issue(act(0, 1, 0));
  const Tick w = issue(wr(0, 0, 0), settled());
  ASSERT_GT(t_.write_to_read_S, t_.write_to_read_other_rank);
  EXPECT_EQ(engine_.earliest(rd(0, 1, 0)), w + t_.tWL + t_.tBurst + t_.tWTR_S);
}

TEST_P(TimingConstraints, tWTR_L_WriteToReadSameBankGroup) {
  issue(act(0, 0, 0));
  issue(act(0, 0, 1));
  const Tick w = issue(wr(0, 0, 0), settled());
  ASSERT_GT(t_.tWTR_L, t_.tWTR_S);
  EXPECT_EQ(engine_.earliest(rd(0, 0, 1)), w + t_.tWL + t_.tBurst + t_.tWTR_L);
}

TEST_P(TimingConstraints, ReadToWriteTurnaround) {
  issue(act(0, 0, 0));
  issue(act(0, 1, 0));
  const Tick r = issue(rd(0, 0, 0), settled());
  ASSERT_GT(t_.read_to_write, t_.tCCD_S);
  EXPECT_EQ(engine_.earliest(wr(0, 1, 0)), r + t_.tCL + t_.tBurst + 2 * t_.tCK - t_.tWL);
}

TEST_P(TimingConstraints, tRFC_RefreshBlocksActivate) {
  issue(act(0, 0, 0));
  issue(pre(0, 0, 0), settled());
  Command ref;
  ref.kind = CommandKind::kRefresh;
  const Tick f = issue(ref, 2 * settled());
  EXPECT_EQ(engine_.earliest(act(0, 0, 0)), f + t_.tRFC);
  EXPECT_EQ(engine_.earliest(act(1, 3, 3)), f + t_.tRFC);  // all banks of every rank
  EXPECT_EQ(engine_.counters().refreshed_banks, static_cast<std::uint64_t>(engine_.banks()));
}

TEST_P(TimingConstraints, BundleReadsOnePerTccdLAndNotOnTheDataBus) {
  const Tick a = issue(bundle_cmd(CommandKind::kBundleActivate, 0, 0));
  EXPECT_EQ(engine_.earliest(bundle_cmd(CommandKind::kBundleRead, 0, 0)), a + t_.tRCD);
  EXPECT_EQ(engine_.counters().bank_activations, 8u);
  issue(act(0, 0, 2));  // bank 2 of bank group 0 belongs to the other bundle
  const Tick r = issue(bundle_cmd(CommandKind::kBundleRead, 0, 0), settled());
  ASSERT_GT(t_.bundle_read_interval, t_.tCK);
  EXPECT_EQ(engine_.earliest(bundle_cmd(CommandKind::kBundleRead, 0, 0)), r + t_.tCCD_L);
  // The xPU reads another bundle's bank in the same bank group on its own data bus: only the command slot.
  EXPECT_EQ(engine_.earliest(rd(0, 0, 2)), r + t_.tCK);
  // ... but a bank of the bundle being read is busy for tCCD_L.
  EXPECT_EQ(engine_.earliest(rd(0, 1, 1)), r + t_.tCCD_L);
  EXPECT_EQ(engine_.counters().bundle_bank_reads, 8u);
}

TEST_P(TimingConstraints, BundleActivateTakesOneFawSlotAndEveryBanksTiming) {
  const Tick a = issue(bundle_cmd(CommandKind::kBundleActivate, 0, 1));
  EXPECT_EQ(engine_.earliest(bundle_cmd(CommandKind::kBundleActivate, 0, 0)), a + t_.tRRD_L);
  EXPECT_EQ(engine_.earliest(bundle_cmd(CommandKind::kBundlePrecharge, 0, 1)), a + t_.tRAS);
  const Tick p = issue(bundle_cmd(CommandKind::kBundlePrecharge, 0, 1), settled());
  EXPECT_EQ(engine_.earliest(act(0, 3, 3)), p + t_.tRP);  // bank 3 of group 3 was in bundle 1
}

TEST_P(TimingConstraints, IllegalCommandsAreNamed) {
  EXPECT_NE(engine_.illegal_reason(rd(0, 0, 0)), nullptr);
  EXPECT_NE(engine_.illegal_reason(pre(0, 0, 0)), nullptr);
  issue(act(0, 0, 0));
  EXPECT_NE(engine_.illegal_reason(act(0, 0, 0)), nullptr);
  EXPECT_NE(engine_.illegal_reason(rd(0, 0, 0, 8)), nullptr);
  Command ref;
  ref.kind = CommandKind::kRefresh;
  EXPECT_NE(engine_.illegal_reason(ref), nullptr);
  EXPECT_NE(engine_.illegal_reason(bundle_cmd(CommandKind::kBundleActivate, 0, 0)), nullptr);
  EXPECT_EQ(engine_.illegal_reason(bundle_cmd(CommandKind::kBundleActivate, 0, 1)), nullptr);
  EXPECT_NE(engine_.illegal_reason(act(2, 0, 0)), nullptr);
}

INSTANTIATE_TEST_SUITE_P(Presets, TimingConstraints,
                         ::testing::Combine(::testing::Values("hbm3-5.2gbps", "hbm3-6.4gbps"),
                                            ::testing::Values(1.0, 1.5)),
                         [](const auto& p) {
                           std::string name =
                               std::get<0>(p.param) + (std::get<1>(p.param) == 1.0 ? "" : "_stretched");
                           std::replace(name.begin(), name.end(), '-', '_');
                           std::replace(name.begin(), name.end(), '.', '_');
                           return name;
                         });

}  // namespace
}  // namespace duplex::sysc
