// The pseudo-channel controller: isolated-read latencies (expectations from the preset's table plus the
// stated controller overhead), FR-FCFS order, page policies, refresh, and bundle conflicts between paths.
#include <vector>

#include <gtest/gtest.h>

#include "duplex/base/error.hpp"
#include "duplex/sysc/pc_controller.hpp"
#include "sysc_test_support.hpp"

namespace duplex::sysc {
namespace {

class PcController : public ::testing::Test {
 protected:
  PcController()
      : hbm_(testing_support::load_hbm("hbm3-5.2gbps")),
        t_(derive_timing(hbm_)),
        geometry_(make_bundle_geometry(hbm_.org, 8)) {}
  PseudoChannelController make(PagePolicy p = PagePolicy::kOpen, bool refresh = false) {
    ControllerConfig c;
    c.page_policy = p;
    c.refresh = refresh;
    c.first_refresh = t_.tREFI;
    return PseudoChannelController(hbm_.org, t_, geometry_, c);
  }
  static MemRequest read(std::uint64_t id, int bg, int bank, int row, int col, Tick at) {
    MemRequest r;
    r.id = id;
    r.coord = {0, 0, bg, bank, row, col};
    r.arrival = at;
    return r;
  }
  // Latency of one request issued alone at `at` (after the controller has gone idle).
  static MemCompletion alone(PseudoChannelController& c, const MemRequest& r) {
    std::vector<MemCompletion> done;
    c.run_until(r.arrival, done);
    c.enqueue(r);
    c.drain(done);
    return done.back();
  }
  Tick quiet() const { return 4 * (t_.tRC + t_.tFAW); }

  HbmSpec hbm_;
  TimingTable t_;
  BundleGeometry geometry_;
};

TEST_F(PcController, IsolatedRowMissHitAndConflictLatencies) {
  PseudoChannelController c = make();
  const Tick overhead = 3 * t_.tCK;  // ControllerConfig::overhead_cycles
  EXPECT_EQ(c.overhead(), overhead);
  const MemCompletion miss = alone(c, read(1, 0, 0, 5, 0, 0));
  EXPECT_EQ(miss.done - miss.arrival, overhead + t_.tRCD + t_.tCL + t_.tBurst);
  EXPECT_FALSE(miss.row_hit);
  const MemCompletion hit = alone(c, read(2, 0, 0, 5, 1, quiet()));
  EXPECT_EQ(hit.done - hit.arrival, overhead + t_.tCL + t_.tBurst);
  EXPECT_TRUE(hit.row_hit);
  const MemCompletion conflict = alone(c, read(3, 0, 0, 6, 0, 2 * quiet()));
  EXPECT_EQ(conflict.done - conflict.arrival, overhead + t_.tRP + t_.tRCD + t_.tCL + t_.tBurst);
}

TEST_F(PcController, ClosedPagePrechargesAfterEachAccess) {
  PseudoChannelController c = make(PagePolicy::kClosed);
  alone(c, read(1, 0, 0, 5, 0, 0));
  const MemCompletion again = alone(c, read(2, 0, 0, 5, 1, quiet()));
  EXPECT_EQ(again.done - again.arrival, c.overhead() + t_.tRCD + t_.tCL + t_.tBurst);  // a miss, not a hit
  std::vector<MemCompletion> done;
  c.run_until(3 * quiet(), done);
  EXPECT_EQ(c.counters().bank_precharges, 2u);
}

TEST_F(PcController, FrFcfsServesRowHitsBeforeOlderConflicts) {
  PseudoChannelController c = make();
  alone(c, read(0, 0, 0, 5, 0, 0));  // row 5 open in bank (0, 0)
  std::vector<MemCompletion> done;
  const Tick at = quiet();
  c.run_until(at, done);
  done.clear();
  c.enqueue(read(1, 0, 0, 9, 0, at));  // conflict, oldest
  c.enqueue(read(2, 0, 0, 5, 1, at));  // hit
  c.enqueue(read(3, 0, 0, 5, 2, at));  // hit
  c.drain(done);
  ASSERT_EQ(done.size(), 3u);
  EXPECT_EQ(done[0].id, 2u);
  EXPECT_EQ(done[1].id, 3u);
  EXPECT_EQ(done[2].id, 1u);
}

TEST_F(PcController, RefreshEveryTrefiBlocksForTrfc) {
  PseudoChannelController c = make(PagePolicy::kOpen, true);
  std::vector<Tick> refreshes;
  c.set_command_observer([&](const Command& cmd, Tick at) {
    if (cmd.kind == CommandKind::kRefresh) refreshes.push_back(at);
  });
  std::vector<MemCompletion> done;
  c.run_until(5 * t_.tREFI + t_.tREFI / 2, done);
  ASSERT_EQ(refreshes.size(), 5u);
  for (std::size_t i = 0; i < refreshes.size(); ++i)
    EXPECT_EQ(refreshes[i], static_cast<Tick>(i + 1) * t_.tREFI);
  // A read arriving just after a refresh waits for tRFC.
  const Tick at = 6 * t_.tREFI + 1;
  const MemCompletion r = alone(c, read(1, 1, 1, 3, 0, at));
  EXPECT_EQ(r.done, 6 * t_.tREFI + t_.tRFC + t_.tRCD + t_.tCL + t_.tBurst);
}

TEST_F(PcController, XpuAccessToAnOpenBundleRowIsABundleConflict) {
  PseudoChannelController c = make();
  MemRequest b;
  b.id = 1;
  b.kind = RequestKind::kBundleRead;
  b.path = AccessPath::kPim;
  b.coord = {0, 0, 0, 0, 11, 0};  // bundle 0 (banks 0 and 1 of every bank group), row 11
  const MemCompletion bundle = alone(c, b);
  EXPECT_EQ(bundle.done - bundle.arrival, c.overhead() + t_.tRCD + t_.tCL + t_.tCCD_L);
  EXPECT_EQ(c.counters().bank_activations, 8u);
  // The xPU reads the same row of a bundle bank: a plain hit, no conflict.
  EXPECT_TRUE(alone(c, read(2, 2, 1, 11, 3, quiet())).row_hit);
  EXPECT_EQ(c.counters().bundle_conflicts, 0u);
  // Another row in a bundle bank: the xPU must close a row the Logic-PIM opened.
  const MemCompletion x = alone(c, read(3, 2, 1, 12, 0, 2 * quiet()));
  EXPECT_EQ(x.done - x.arrival, c.overhead() + t_.tRP + t_.tRCD + t_.tCL + t_.tBurst);
  EXPECT_EQ(c.counters().bundle_conflicts, 1u);
  // The next bundle read finds its bundle broken: PRE of the remaining banks (and the xPU's), then ACT.
  b.id = 4;
  b.arrival = 3 * quiet();
  const MemCompletion again = alone(c, b);
  EXPECT_EQ(again.done - again.arrival, c.overhead() + t_.tRP + t_.tRCD + t_.tCL + t_.tCCD_L);
  EXPECT_EQ(c.counters().bundle_conflicts, 2u);  // the bundle PRE closed the xPU's row
}

TEST_F(PcController, BadRequestsAreErrors) {
  PseudoChannelController c = make();
  EXPECT_THROW(c.enqueue(read(1, 4, 0, 0, 0, 0)), Error);
  EXPECT_THROW(c.enqueue(read(1, 0, 0, hbm_.org.rows, 0, 0)), Error);
  ControllerConfig bad;
  bad.queue_depth = 0;
  EXPECT_THROW(PseudoChannelController(hbm_.org, t_, geometry_, bad), Error);
}

}  // namespace
}  // namespace duplex::sysc
