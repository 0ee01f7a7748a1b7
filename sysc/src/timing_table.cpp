#include "duplex/sysc/timing_table.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::sysc {

Tick to_ticks(Time t) {
  return static_cast<Tick>(std::llround(to_ps(t)));
}
Time from_ticks(Tick t) {
  return ps(static_cast<double>(t));
}

TimingTable derive_timing(const HbmSpec& hbm) {
  const HbmTiming& j = hbm.timing;
  TimingTable t;
  t.tCK = to_ticks(j.tCK);
  t.tCL = to_ticks(j.tCL);
  t.tRCD = to_ticks(j.tRCD);
  t.tRP = to_ticks(j.tRP);
  t.tRAS = to_ticks(j.tRAS);
  t.tWL = to_ticks(j.tWL);
  t.tCCD_S = to_ticks(j.tCCD_S);
  t.tCCD_L = to_ticks(j.tCCD_L);
  t.tRRD_S = to_ticks(j.tRRD_S);
  t.tRRD_L = to_ticks(j.tRRD_L);
  t.tFAW = to_ticks(j.tFAW);
  t.tWR = to_ticks(j.tWR);
  t.tWTR_S = to_ticks(j.tWTR_S);
  t.tWTR_L = to_ticks(j.tWTR_L);
  t.tRTP = to_ticks(j.tRTP);
  t.tREFI = to_ticks(j.tREFI);
  t.tRFC = to_ticks(j.tRFC);
  t.tBurst = to_ticks(hbm.burst_time());

  auto require = [&](bool ok, const char* what) {
    if (!ok) throw Error(fmt::format("HBM timing preset '{}': {}", hbm.name, what));
  };
  require(t.tCK > 0, "tCK must be positive");
  require(t.tRAS >= t.tRCD, "tRAS must be at least tRCD");
  require(t.tCCD_S >= t.tCK, "tCCD_S must be at least tCK");
  require(t.tFAW >= t.tRRD_S, "tFAW must be at least tRRD_S");
  require(t.tRFC < t.tREFI, "tRFC must be shorter than tREFI");

  t.tRC = t.tRAS + t.tRP;
  t.read_to_precharge = t.tRTP;
  t.write_to_precharge = t.tWL + t.tBurst + t.tWR;
  t.read_to_write = std::max(t.tCK, t.tCL + t.tBurst + 2 * t.tCK - t.tWL);
  t.write_to_read_S = t.tWL + t.tBurst + t.tWTR_S;
  t.write_to_read_L = t.tWL + t.tBurst + t.tWTR_L;
  t.write_to_read_other_rank = std::max(t.tCK, t.tWL + t.tBurst - t.tCL + t.tCK);
  t.read_data = t.tCL + t.tBurst;
  t.write_data = t.tWL + t.tBurst;
  t.bundle_read_interval = t.tCCD_L;
  t.bundle_read_data = t.tCL + t.tCCD_L;
  return t;
}

}  // namespace duplex::sysc
