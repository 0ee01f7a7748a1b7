#pragma once
// The HBM3 timing constraints of one preset as integer picoseconds, and every derived timing, computed in
// one place (derive_timing). The timing engine, the controller, the memtest and the tests all read this
// table; none of them recomputes a constraint from the spec.
#include <cstdint>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/units.hpp"

namespace duplex::sysc {

// Simulated time in picoseconds. Integer so that results are bit-identical across runs and platforms.
using Tick = std::int64_t;
inline constexpr Tick kNever = INT64_MAX / 4;

// Rounds to the nearest picosecond.
Tick to_ticks(Time t);
Time from_ticks(Tick t);

struct TimingTable {
  // JEDEC constraints (JESD238 names), picoseconds.
  Tick tCK = 0, tCL = 0, tRCD = 0, tRP = 0, tRAS = 0, tWL = 0;
  Tick tCCD_S = 0, tCCD_L = 0, tRRD_S = 0, tRRD_L = 0, tFAW = 0;
  Tick tWR = 0, tWTR_S = 0, tWTR_L = 0, tRTP = 0, tREFI = 0, tRFC = 0;
  // One burst (burst_length beats) on a pseudo-channel's data bus.
  Tick tBurst = 0;

  // Derived.
  Tick tRC = 0;                 // ACT to ACT, same bank: tRAS + tRP
  Tick read_to_precharge = 0;   // RD to PRE, same bank: tRTP
  Tick write_to_precharge = 0;  // WR to PRE, same bank: tWL + tBurst + tWR (write recovery after last data)
  Tick read_to_write = 0;       // RD to WR, same pseudo-channel: tCL + tBurst + 2 tCK - tWL (bus turnaround)
  Tick write_to_read_S = 0;     // WR to RD, other bank group of the rank: tWL + tBurst + tWTR_S
  Tick write_to_read_L = 0;     // WR to RD, same bank group: tWL + tBurst + tWTR_L
  Tick write_to_read_other_rank = 0;  // WR to RD, other rank: write data ends before read data starts, >= tCK
  Tick read_data = 0;                 // RD issue to last data beat: tCL + tBurst
  Tick write_data = 0;                // WR issue to last data beat: tWL + tBurst
  // Bank-bundle path (Logic-PIM): every bank of the bundle delivers one access per tCCD_L.
  Tick bundle_read_interval = 0;  // tCCD_L
  Tick bundle_read_data = 0;      // bundle RD issue to last data on the Logic-PIM TSVs: tCL + tCCD_L
};

// Throws duplex::Error when the preset is inconsistent (e.g. tRAS < tRCD, tCCD_S shorter than a burst's
// command slot tCK).
TimingTable derive_timing(const HbmSpec& hbm);

}  // namespace duplex::sysc
