#include "duplex/base/pim_area.hpp"

namespace duplex {

std::optional<PimArea> logic_pim_area(const PimSpec& pim) {
  if (pim.kind != PimKind::kLogicPim || !pim.area) return std::nullopt;
  const PimAreaSpec& a = *pim.area;
  const double macs = static_cast<double>(pim.gemm_modules) * pim.macs_per_module;
  const double macs_at = static_cast<double>(a.at_gemm_modules) * a.at_macs_per_module;
  const double buffers = static_cast<double>(pim.input_buffer.bytes + pim.temp_buffer.bytes);
  PimArea out;
  out.tsv = a.tsv;
  out.gemm_modules = a.gemm_modules * (macs / macs_at);
  out.buffers = a.buffers * (buffers / static_cast<double>(a.at_buffers.bytes));
  out.softmax = a.softmax;
  out.logic_die = a.logic_die;
  return out;
}

}  // namespace duplex
