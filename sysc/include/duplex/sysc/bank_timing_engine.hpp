#pragma once
// The timing engine of one HBM3 pseudo-channel (all its ranks, bank groups and banks): bank state, the
// JEDEC constraint bookkeeping, and the earliest legal time of any next command. Plain C++, no SystemC.
//
// Resources and the constraints they carry (t = issue time of the command):
//   bank            ACT->RD/WR tRCD, ACT->PRE tRAS, ACT->ACT tRC, PRE->ACT tRP, RD->PRE tRTP,
//                   WR->PRE tWL+tBurst+tWR, REF->ACT tRFC
//   bank group      ACT->ACT tRRD_L, RD->RD / WR->WR tCCD_L, WR->RD tWL+tBurst+tWTR_L
//   rank            ACT->ACT tRRD_S, at most 4 ACTs in any tFAW, RD->RD / WR->WR tCCD_S,
//                   WR->RD tWL+tBurst+tWTR_S
//   pseudo-channel  data bus: one burst at a time (tBurst), RD->WR turnaround, WR->RD (other rank);
//                   one row command and one column command per tCK (separate row / column buses, as in HBM)
//   bundle path     one bundle read per tCCD_L per pseudo-channel (the Logic-PIM TSVs of the channel)
// Bank-bundle commands (Logic-PIM): a bundle ACT opens one row in all banks of a bundle at once (one command:
// one tRRD/tFAW slot, every bank's own tRCD/tRAS/tRC); a bundle read reads one column of every bank of the
// bundle (bank-level tCCD_L, no xPU data bus); a bundle PRE closes the bundle's open banks. Modeling choice
// (the paper gives no rule): a bundle ACT takes one tFAW slot, like one ACT command.
// Refresh is all-bank (REFab) over every rank of the pseudo-channel: all banks must be closed.
#include <array>
#include <cstdint>
#include <vector>

#include "duplex/base/device_spec.hpp"
#include "duplex/sysc/action_counters.hpp"
#include "duplex/sysc/address_mapping.hpp"
#include "duplex/sysc/timing_table.hpp"

namespace duplex::sysc {

enum class CommandKind {
  kActivate,
  kPrecharge,
  kRead,
  kWrite,
  kRefresh,
  kBundleActivate,
  kBundleRead,
  kBundlePrecharge
};
const char* to_string(CommandKind k);

// Which unit's controller issues a command: the xPU's memory controller or the Logic-PIM's.
enum class AccessPath { kXpu, kPim };

struct Command {
  CommandKind kind = CommandKind::kRead;
  AccessPath path = AccessPath::kXpu;
  int rank = 0;
  int bank_group = 0;  // single-bank commands
  int bank = 0;        // within the bank group (single-bank commands)
  int bundle = 0;      // bundle commands
  int row = 0;         // ACT, RD, WR, bundle ACT, bundle RD
};

class BankTimingEngine {
 public:
  BankTimingEngine(const HbmOrganization& org, const TimingTable& timing, const BundleGeometry& bundles);

  // nullptr when the command is legal in the current bank state (ignoring time), else why not.
  const char* illegal_reason(const Command& c) const;
  // Earliest time >= 0 at which the command satisfies every timing constraint. Meaningful only for a legal
  // command (illegal_reason() == nullptr); issue() checks legality.
  Tick earliest(const Command& c) const;
  // Issues the command at time `at`; DUPLEX_ASSERTs legality and at >= earliest(c).
  void issue(const Command& c, Tick at);

  int open_row(int rank, int bank_group, int bank) const {  // -1 when closed
    return banks_[static_cast<std::size_t>(bank_index(rank, bank_group, bank))].open_row;
  }
  bool opened_by_pim(int rank, int bank_group, int bank) const;
  bool all_banks_closed() const { return open_banks_ == 0; }
  int banks() const { return static_cast<int>(banks_.size()); }
  const TimingTable& timing() const { return t_; }
  const HbmOrganization& organization() const { return org_; }
  const BundleGeometry& bundles() const { return bundles_; }
  // Bank indices (within the bank group) of one bundle's banks in every bank group.
  int bundle_bank(int bundle, int i) const { return bundle * bundles_.banks_per_group_in_bundle + i; }
  // Earliest time every open bank may be precharged (for refresh).
  Tick earliest_precharge(int rank, int bank_group, int bank) const;

  const ActionCounters& counters() const { return counters_; }
  ActionCounters& counters() { return counters_; }

 private:
  struct Bank {
    int open_row = -1;
    bool opened_by_pim = false;
    Tick act_ok = 0, pre_ok = 0, rd_ok = 0, wr_ok = 0;
  };
  struct Group {
    Tick act_ok = 0, rd_ok = 0, wr_ok = 0;
  };
  struct Rank {
    Tick act_ok = 0, rd_ok = 0, wr_ok = 0;
    std::array<Tick, 4> faw{};  // times of the last 4 ACT commands (ring)
    int faw_count = 0;
    int faw_next = 0;
  };
  int bank_index(int rank, int bg, int bank) const {
    return (rank * org_.bank_groups + bg) * org_.banks_per_group + bank;
  }
  int group_index(int rank, int bg) const { return rank * org_.bank_groups + bg; }
  Tick activate_window(const Rank& r) const;
  void open_bank(Bank& b, int row, bool pim, Tick at);
  void close_bank(Bank& b, AccessPath path, Tick at);

  HbmOrganization org_;
  TimingTable t_;
  BundleGeometry bundles_;
  std::vector<Bank> banks_;
  std::vector<Group> groups_;
  std::vector<Rank> ranks_;
  Tick bus_rd_ok_ = 0, bus_wr_ok_ = 0;  // xPU data bus
  Tick row_bus_ok_ = 0, col_bus_ok_ = 0;
  Tick bundle_path_ok_ = 0;
  int open_banks_ = 0;
  ActionCounters counters_;
};

}  // namespace duplex::sysc
