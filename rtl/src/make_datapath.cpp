// make_datapath: the `pim.datapath: golden | rtl` switch.
#include <string>

#include "duplex/base/error.hpp"
#include "duplex/rtl/datapath.hpp"
#include "duplex/rtl/rtl_datapath.hpp"

namespace duplex::pim {

std::unique_ptr<Datapath> make_datapath(std::string_view kind, const DatapathParams& params,
                                        const std::string& trace_path) {
  if (kind == "golden") {
    if (!trace_path.empty())
      throw Error("pim.datapath: golden has no waveform to trace ('" + trace_path +
                  "'); expected datapath 'rtl' for tracing");
    return make_golden_datapath(params);
  }
  if (kind == "rtl") return make_rtl_datapath(params, trace_path);
  throw Error("pim.datapath: unknown kind '" + std::string(kind) + "'; expected golden | rtl");
}

}  // namespace duplex::pim
