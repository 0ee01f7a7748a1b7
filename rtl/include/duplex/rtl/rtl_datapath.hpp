#pragma once
// The RTL datapath: the Verilated SystemVerilog of rtl/ driven cycle by cycle behind the Datapath interface.
// Gives the same bits as the golden model (tests/rtl/rtl_equivalence_test.cpp) and counts clock cycles.
#include <memory>
#include <string>

#include "duplex/rtl/datapath.hpp"

namespace duplex::pim {

// The GEMM-lane width the RTL is built with (rtl/CMakeLists.txt DUPLEX_RTL_LANES); other lane counts are
// available from the golden model only.
inline constexpr int kRtlLanes = 16;

// Waveform format this build writes: ".vcd" by default, ".fst" with the CMake option DUPLEX_RTL_TRACE_FST
// (Verilator builds a model for one trace format).
extern const char* const kRtlTraceExtension;

// Throws duplex::Error if params.lanes != kRtlLanes, or if trace_path is given but does not end in
// kRtlTraceExtension or cannot be written. With a trace_path every clock edge of the session is traced.
// simulated_cycles() counts every clock edge, including the 2 reset cycles at construction.
std::unique_ptr<Datapath> make_rtl_datapath(const DatapathParams& params, const std::string& trace_path = "");

}  // namespace duplex::pim
