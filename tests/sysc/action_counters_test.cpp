// Energy action counters: what the model counts for an op, and that every counted action has a price in the
// system's energy table (an unpriced action is an error there, never zero).
#include <gtest/gtest.h>

#include "duplex/base/device_spec.hpp"
#include "duplex/sysc/memtest.hpp"
#include "duplex/sysc/pim_timing.hpp"

namespace duplex::sysc {
namespace {

TEST(SyscActionCounters, PimGemvCountsEveryAction) {
  const SystemSpec sys = load_system("duplex");
  PimOpShape s;
  s.tokens = 4;
  s.rows = 1024;
  s.cols = 4096;
  const PimOpTiming t = time_pim_op(sys.memory, *sys.pim, s);
  const ActionCounters& a = t.actions;
  const auto pcs = static_cast<std::uint64_t>(sys.memory.org.pseudo_channels());
  EXPECT_EQ(a.macs, 4u * 1024 * 4096);
  EXPECT_EQ(a.bundle_bank_reads * 32, 1024u * 4096 * 2);  // every weight byte once over the bundle path
  EXPECT_EQ(a.bundle_bank_reads, a.bundle_read_commands * 8);
  EXPECT_EQ(a.pim_tsv_bits, (a.bundle_bank_reads + a.pim_writes) * 256);
  EXPECT_EQ(a.xpu_reads, 0u);
  EXPECT_GT(a.bank_activations, a.activate_commands);  // a bundle ACT opens 8 banks
  EXPECT_EQ(a.activate_commands % pcs, 0u);            // every pseudo-channel does the same work
  EXPECT_GE(a.pim_writes * 32, 4u * 1024 * 2);
  EXPECT_GT(a.sram_reads_32b, 0u);
  EXPECT_GT(a.gemm_busy, 0);
  EXPECT_LE(a.gemm_busy, a.elapsed);
  for (const auto& [action, count] : a.energy_actions()) EXPECT_NO_THROW(sys.energy.price(action)) << action;
}

TEST(SyscActionCounters, MemtestCountsXpuPathAndRefresh) {
  const SystemSpec sys = load_system("duplex");
  MemtestOptions o;
  o.channels = 1;
  o.pattern = MemtestPattern::kMixed;
  const MemtestResult r = run_memtest(sys, o);
  const ActionCounters& a = r.counters;
  EXPECT_GT(a.xpu_reads, 0u);
  EXPECT_GT(a.xpu_writes, 0u);
  EXPECT_EQ(a.xpu_tsv_bits, (a.xpu_reads + a.xpu_writes) * 256);
  EXPECT_EQ(a.refreshed_banks,
            a.refresh_commands *
                static_cast<std::uint64_t>(sys.memory.org.ranks * sys.memory.org.banks_per_rank()));
  EXPECT_EQ(a.bundle_bank_reads, 0u);
  EXPECT_EQ(a.bank_activations, a.activate_commands);  // xPU ACTs open one bank each
  EXPECT_LE(a.xpu_bus_busy, a.elapsed * r.pseudo_channels);
  for (const auto& [action, count] : a.energy_actions()) EXPECT_NO_THROW(sys.energy.price(action)) << action;
}

}  // namespace
}  // namespace duplex::sysc
