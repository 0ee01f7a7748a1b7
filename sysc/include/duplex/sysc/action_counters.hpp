#pragma once
// Energy action counters of the HBM stack and the Logic-PIM logic die. The energy model prices them
// (energy_actions() names each count by its configs/energy entry; an action the table cannot price is an
// error there, never zero). Busy times give each unit's utilisation; idle = elapsed - busy.
#include <cstdint>
#include <map>
#include <string>

#include "duplex/sysc/timing_table.hpp"

namespace duplex::sysc {

struct ActionCounters {
  // DRAM commands and the bank operations they cause.
  std::uint64_t activate_commands = 0;   // ACT + bundle ACT commands
  std::uint64_t bank_activations = 0;    // banks opened (a bundle ACT opens every bank of the bundle)
  std::uint64_t precharge_commands = 0;  // PRE + bundle PRE commands
  std::uint64_t bank_precharges = 0;     // banks closed
  std::uint64_t refresh_commands = 0;    // all-bank refreshes (REFab of a pseudo-channel)
  std::uint64_t refreshed_banks = 0;     // banks refreshed
  // Column accesses of access_granularity bytes, per path.
  std::uint64_t xpu_reads = 0;  // xPU path (bank-group mux, normal TSVs, interposer)
  std::uint64_t xpu_writes = 0;
  std::uint64_t bundle_read_commands = 0;
  std::uint64_t bundle_bank_reads = 0;  // Logic-PIM bundle path: one per bank of every bundle read
  std::uint64_t pim_writes = 0;         // Logic-PIM result write-back (column writes issued by the logic die)
  std::uint64_t xpu_tsv_bits = 0;       // bits over the normal TSVs
  std::uint64_t pim_tsv_bits = 0;       // bits over the Logic-PIM TSVs
  std::uint64_t bundle_conflicts = 0;   // rows one path had to close that the other path had opened
  // Logic-PIM logic die.
  std::uint64_t macs = 0;             // FP16 multiply-accumulates
  std::uint64_t sram_reads_32b = 0;   // buffer reads, 32 B each
  std::uint64_t sram_writes_32b = 0;  // buffer writes, 32 B each
  std::uint64_t softmax_elements = 0;
  std::uint64_t activation_elements = 0;
  // Busy time per unit (ps). Bus busy times are summed over pseudo-channels.
  Tick elapsed = 0;
  Tick xpu_bus_busy = 0;
  Tick bundle_bus_busy = 0;
  Tick gemm_busy = 0;
  Tick softmax_busy = 0;
  Tick activation_busy = 0;

  // Sums counts and busy times; elapsed becomes the larger of the two (the units ran side by side).
  ActionCounters& operator+=(const ActionCounters& o);
  // Every count and busy time multiplied by k (elapsed unchanged): k identical units side by side.
  ActionCounters scaled(std::uint64_t k) const;
  // Counts keyed by configs/energy action names: dram.activate (banks opened), dram.xpu_read (xPU-path
  // reads + writes: the table's entry is per RD/WR access), dram.logic_pim_read (bundle-path accesses + PIM
  // write-back), dram.refresh (banks refreshed, as the table's note prices it), compute.fp16_mac,
  // compute.sram_access_32b. TSV bits are not listed: their energy is part of the per-access path energies.
  std::map<std::string, double> energy_actions() const;
};

}  // namespace duplex::sysc
