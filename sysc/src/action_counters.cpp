#include "duplex/sysc/action_counters.hpp"

namespace duplex::sysc {

ActionCounters& ActionCounters::operator+=(const ActionCounters& o) {
  activate_commands += o.activate_commands;
  bank_activations += o.bank_activations;
  precharge_commands += o.precharge_commands;
  bank_precharges += o.bank_precharges;
  refresh_commands += o.refresh_commands;
  refreshed_banks += o.refreshed_banks;
  xpu_reads += o.xpu_reads;
  xpu_writes += o.xpu_writes;
  bundle_read_commands += o.bundle_read_commands;
  bundle_bank_reads += o.bundle_bank_reads;
  pim_writes += o.pim_writes;
  xpu_tsv_bits += o.xpu_tsv_bits;
  pim_tsv_bits += o.pim_tsv_bits;
  bundle_conflicts += o.bundle_conflicts;
  macs += o.macs;
  sram_reads_32b += o.sram_reads_32b;
  sram_writes_32b += o.sram_writes_32b;
  softmax_elements += o.softmax_elements;
  activation_elements += o.activation_elements;
  elapsed = elapsed > o.elapsed ? elapsed : o.elapsed;
  xpu_bus_busy += o.xpu_bus_busy;
  bundle_bus_busy += o.bundle_bus_busy;
  gemm_busy += o.gemm_busy;
  softmax_busy += o.softmax_busy;
  activation_busy += o.activation_busy;
  return *this;
}

ActionCounters ActionCounters::scaled(std::uint64_t k) const {
  ActionCounters c;
  for (std::uint64_t i = 0; i < k; ++i) c += *this;
  c.elapsed = elapsed;
  return c;
}

std::map<std::string, double> ActionCounters::energy_actions() const {
  auto d = [](std::uint64_t v) { return static_cast<double>(v); };
  return {
      {"dram.activate", d(bank_activations)},
      {"dram.xpu_read", d(xpu_reads + xpu_writes)},
      {"dram.logic_pim_read", d(bundle_bank_reads + pim_writes)},
      {"dram.refresh", d(refreshed_banks)},
      {"compute.fp16_mac", d(macs)},
      {"compute.sram_access_32b", d(sram_reads_32b + sram_writes_32b)},
  };
}

}  // namespace duplex::sysc
