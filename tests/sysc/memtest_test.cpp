// Memory self-test acceptance: bandwidth and latency of the HBM3 model against closed-form expectations
// computed from the preset (never from literals).
#include <algorithm>
#include <string>

#include <gtest/gtest.h>

#include "duplex/base/config.hpp"
#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"
#include "duplex/sysc/memtest.hpp"

namespace duplex::sysc {
namespace {

class SyscMemtest : public ::testing::Test {
 protected:
  static const SystemSpec& system() {
    static const SystemSpec s = load_system("duplex");
    return s;
  }
  static MemtestResult run(MemtestPattern p, bool refresh, int channels = 2, const std::string& preset = "") {
    MemtestOptions o;
    o.pattern = p;
    o.refresh = refresh;
    o.channels = channels;
    o.timing_preset = preset;
    return run_memtest(system(), o);
  }
};

TEST_F(SyscMemtest, PeakIsTheStackBandwidth) {
  const MemtestResult r = run(MemtestPattern::kStream, false, 0);
  EXPECT_DOUBLE_EQ(r.peak_gbps, to_gb_per_s(system().memory.stack_bandwidth()));
  EXPECT_NEAR(r.peak_gbps, 665.6, 1e-9);  // DUPLEX.md s.3: 1024 pins x 5.2 Gb/s
  EXPECT_EQ(r.pseudo_channels, system().memory.org.pseudo_channels());
  EXPECT_GE(r.efficiency, 0.97);
}

TEST_F(SyscMemtest, StreamReadsReach97PercentWithoutRefresh) {
  for (const char* preset : {"hbm3-5.2gbps", "hbm3-6.4gbps"}) {
    const MemtestResult r = run(MemtestPattern::kStream, false, 2, preset);
    EXPECT_GE(r.efficiency, 0.97) << preset;
    EXPECT_LE(r.efficiency, 1.0) << preset;
    EXPECT_EQ(r.refresh_share, 0.0);
    EXPECT_GT(r.row_hit_rate, 0.9);
  }
}

// All-bank refresh of a pseudo-channel stops its data bus for tRFC every tREFI, plus the time to close the
// rows before (tRTP + tRP after the last read) and to reopen them after (tRCD): the dead time per refresh
// cannot be less than tRFC + tRTP + tRP + tRCD - tBurst. The acceptance preset (5.2 Gb/s) stays within one
// point of tRFC/tREFI; for every preset the cost is at least tRFC/tREFI (never hidden) and at most that
// intrinsic dead time plus a quarter point of row re-opening ramp (tRRD between the first ACTs).
TEST_F(SyscMemtest, RefreshCostsAboutTrfcOverTrefi) {
  for (const char* preset : {"hbm3-5.2gbps", "hbm3-6.4gbps"}) {
    const MemtestResult off = run(MemtestPattern::kStream, false, 2, preset);
    const MemtestResult on = run(MemtestPattern::kStream, true, 2, preset);
    const HbmSpec hbm = read_hbm(ConfigNode::load(std::string("devices/") + preset, "devices"));
    const HbmTiming& t = hbm.timing;
    const double share = t.tRFC / t.tREFI;
    const double intrinsic = (t.tRFC + t.tRTP + t.tRP + t.tRCD - hbm.burst_time()) / t.tREFI;
    const double cost = off.efficiency - on.efficiency;
    EXPECT_NEAR(on.refresh_share, share, 1e-9) << preset;  // exactly one REFab per tREFI
    EXPECT_GE(cost, share) << preset;                      // refresh is never hidden
    EXPECT_LE(cost, intrinsic + 0.0025) << preset;
    if (std::string(preset) == "hbm3-5.2gbps") {
      EXPECT_LE(cost, share + 0.01) << preset;
    }
    RecordProperty(std::string("refresh_cost_") + preset, std::to_string(cost));
  }
}

// Random reads need an ACT for (nearly) every access: per rank at most 4 per tFAW and 1 per tRRD_S.
TEST_F(SyscMemtest, RandomReadsAreBoundedByActivateRate) {
  for (const char* preset : {"hbm3-5.2gbps", "hbm3-6.4gbps"}) {
    const MemtestResult r = run(MemtestPattern::kRandom, false, 2, preset);
    const HbmSpec hbm = read_hbm(ConfigNode::load(std::string("devices/") + preset, "devices"));
    const HbmTiming& t = hbm.timing;
    const double acts_per_s =
        std::min(4.0 / t.tFAW.si(), 1.0 / t.tRRD_S.si()) * hbm.org.ranks * r.pseudo_channels;
    const double bound_gbps =
        std::min(r.peak_gbps, acts_per_s * static_cast<double>(hbm.org.access_granularity.bytes) * 1e-9);
    EXPECT_NEAR(r.activate_bound_gbps, bound_gbps, 1e-6);
    EXPECT_LT(bound_gbps, r.peak_gbps) << preset;  // the preset makes random reads ACT-bound
    // A few accesses hit rows opened for others (FR-FCFS), so allow the bound plus the hit share.
    EXPECT_LE(r.achieved_gbps, bound_gbps / (1.0 - r.row_hit_rate) * 1.001) << preset;
    EXPECT_GE(r.achieved_gbps, 0.85 * bound_gbps) << preset;
    EXPECT_LT(r.row_hit_rate, 0.05) << preset;
  }
}

TEST_F(SyscMemtest, BundlePathReachesFourTimesTheNormalPath) {
  const MemtestResult normal = run(MemtestPattern::kStream, false);
  const MemtestResult bundle = run(MemtestPattern::kBundle, false);
  const PimSpec& pim = *system().pim;
  EXPECT_NEAR(bundle.peak_gbps / normal.peak_gbps,
              pim.internal_bandwidth_per_stack(system().memory) / system().memory.stack_bandwidth(), 1e-9);
  EXPECT_NEAR(bundle.peak_gbps / normal.peak_gbps, 4.0, 0.01);
  EXPECT_NEAR(bundle.achieved_gbps / normal.achieved_gbps, 4.0, 4.0 * 0.05);
  const MemtestResult bundle_refresh = run(MemtestPattern::kBundle, true);
  EXPECT_GE(bundle.efficiency - bundle_refresh.efficiency,
            system().memory.timing.tRFC / system().memory.timing.tREFI);
}

TEST_F(SyscMemtest, MixedReadsAndWritesPayTurnarounds) {
  const MemtestResult stream = run(MemtestPattern::kStream, false);
  const MemtestResult mixed = run(MemtestPattern::kMixed, false);
  EXPECT_LT(mixed.achieved_gbps, stream.achieved_gbps);
  EXPECT_GT(mixed.counters.xpu_writes, 0u);
  EXPECT_NEAR(static_cast<double>(mixed.counters.xpu_writes) / static_cast<double>(mixed.counters.xpu_reads),
              0.5, 0.05);
}

TEST_F(SyscMemtest, JsonHasTheIssueFields) {
  const nlohmann::json j = to_json(run(MemtestPattern::kStream, true, 1));
  for (const char* k : {"achieved_gbps", "peak_gbps", "efficiency", "refresh_share"})
    EXPECT_TRUE(j.at(k).is_number()) << k;
  EXPECT_TRUE(j.at("latency_ns").at("mean").is_number());
  EXPECT_TRUE(j.at("latency_ns").at("p99").is_number());
  EXPECT_GE(j.at("latency_ns").at("p99").get<double>(), j.at("latency_ns").at("mean").get<double>() * 0.5);
}

TEST_F(SyscMemtest, BadOptionsAreErrors) {
  MemtestOptions o;
  o.channels = 17;
  EXPECT_THROW(run_memtest(system(), o), Error);
  o.channels = 1;
  o.timing_preset = "hbm9";
  EXPECT_THROW(run_memtest(system(), o), Error);
  EXPECT_THROW(parse_memtest_pattern("sequential"), Error);
  EXPECT_EQ(parse_memtest_pattern("bundle"), MemtestPattern::kBundle);
  o.timing_preset.clear();
  o.pattern = MemtestPattern::kBundle;
  EXPECT_THROW(run_memtest(load_system("gpu"), o), Error);
}

TEST_F(SyscMemtest, Deterministic) {
  const MemtestResult a = run(MemtestPattern::kRandom, true, 1);
  const MemtestResult b = run(MemtestPattern::kRandom, true, 1);
  EXPECT_EQ(to_json(a).dump(), to_json(b).dump());
}

}  // namespace
}  // namespace duplex::sysc
