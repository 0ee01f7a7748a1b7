#pragma once
// Shared helpers of the sysc tests: presets loaded from configs/, optionally with every JEDEC timing
// stretched by a factor (so that each constraint under test is strictly the binding one and the engine is
// seen to follow the table, not a coincidence of the preset).
#include <string>

#include "duplex/base/config.hpp"
#include "duplex/base/device_spec.hpp"

namespace duplex::sysc::testing_support {

inline HbmSpec load_hbm(const std::string& preset) {
  return read_hbm(ConfigNode::load("devices/" + preset, "devices"));
}

inline HbmSpec stretched(HbmSpec hbm, double k) {
  HbmTiming& t = hbm.timing;
  for (Time* x : {&t.tCL, &t.tRCD, &t.tRP, &t.tRAS, &t.tFAW, &t.tCCD_S, &t.tCCD_L, &t.tRRD_S, &t.tRRD_L,
                  &t.tWL, &t.tWR, &t.tWTR_S, &t.tWTR_L, &t.tRTP, &t.tREFI, &t.tRFC})
    *x = *x * k;
  return hbm;
}

}  // namespace duplex::sysc::testing_support
