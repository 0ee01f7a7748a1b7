#pragma once
// First-order area of one HBM stack's Logic-PIM units, scaled from the paper's breakdown at its design point
// (DUPLEX.md s.2: 17.80 mm2 = TSVs 10.89 + GEMM modules 3.02 + 2 MB buffers 2.26 + softmax 1.64 = 14.71% of
// a 121 mm2 logic die; configs/devices/logic-pim.yaml `area`, design point in `area.at`), so that a design
// knob that adds compute or buffers (gemm_modules, macs_per_module, input_buffer, temp_buffer) shows its area:
//   GEMM modules  stated area x MACs / MACs at the design point (the modules' 8 KB buffers scale with them)
//   buffers       stated area x (input_buffer + temp_buffer) / buffer bytes at the design point
//   TSVs, softmax as stated: no knob we model changes them (the bundle path's width is fixed by the bank
//                 bundle; the softmax unit's buffer and datapath are the paper's)
// Area is independent of the clock here (no timing-closure, voltage or wire model): a faster clock is free.
#include <optional>

#include "duplex/base/device_spec.hpp"

namespace duplex {

struct PimArea {
  Area tsv, gemm_modules, buffers, softmax;  // per stack, this design
  Area logic_die;
  Area total() const { return tsv + gemm_modules + buffers + softmax; }
  double die_fraction() const { return total().si() / logic_die.si(); }  // of one logic die
};

// The area of a Logic-PIM design; nullopt for other PIM kinds (BankGroup-PIM's units sit on the DRAM dies
// and Bank-PIM's beside the banks: no area model here) and for a config without an area breakdown.
std::optional<PimArea> logic_pim_area(const PimSpec& pim);

}  // namespace duplex
