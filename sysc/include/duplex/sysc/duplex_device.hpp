#pragma once
// DuplexDevice: the SystemC model of one Duplex device as a driver sees it (host_interface.hpp): MMIO
// registers, the command ring and completion queue in device memory, doorbell, interrupt line, DMA between
// host and device memory, and the Logic-PIM ops. It wraps the plain-C++ core: device memory is a
// SparseMemory (real bytes), xPU-path timing comes from HbmMemoryTiming (the per-pseudo-channel controllers),
// PIM ops from LogicPim (Datapath arithmetic, time_pim_op timing). Event-driven: one thread sleeps until a
// doorbell and then advances simulated time by each command's modelled duration. Loosely-timed TLM-2.0
// (blocking b_transport with annotated delay) on every socket.
#include <cstdint>
#include <deque>
#include <memory>

#include <tlm_utils/simple_initiator_socket.h>
#include <tlm_utils/simple_target_socket.h>
#include <systemc>
#include <tlm>

#include "duplex/base/device_spec.hpp"
#include "duplex/sysc/hbm_memory_timing.hpp"
#include "duplex/sysc/host_interface.hpp"
#include "duplex/sysc/logic_pim.hpp"
#include "duplex/sysc/sparse_memory.hpp"

namespace duplex::sysc {

struct DeviceConfig {
  // Host link for DMA: 64 GB/s per direction and 1 us setup (PCIe 5.0 x16 class). Modeling choice, not in
  // configs/ yet.
  Bandwidth dma_bandwidth = gb_per_s(64);
  Time dma_latency = us(1);
  Time mmio_latency = ns(100);                 // one register access over the host link (modeling choice)
  std::uint64_t max_dma_bytes = 256ull << 20;  // larger DMA commands complete with kBadShape
};

class DuplexDevice : public sc_core::sc_module {
 public:
  tlm_utils::simple_target_socket<DuplexDevice> mmio;         // register file, 32-bit accesses
  tlm_utils::simple_target_socket<DuplexDevice> memory;       // device memory over the xPU path
  tlm_utils::simple_initiator_socket<DuplexDevice> host_dma;  // host memory, for DMA commands
  sc_core::sc_out<bool> irq;

  SC_HAS_PROCESS(DuplexDevice);
  // datapath: null = the one pim.datapath names ("golden" or "rtl", pim::make_datapath). Throws duplex::Error
  // when the system has no Logic-PIM.
  DuplexDevice(sc_core::sc_module_name name, const SystemSpec& system,
               std::unique_ptr<pim::Datapath> datapath = nullptr, const DeviceConfig& config = {});

  SparseMemory& backdoor() { return memory_; }  // direct access to device memory (loaders, tests)
  ActionCounters counters() const;              // xPU-path memory + Logic-PIM ops
  bool busy() const { return busy_; }

 private:
  void mmio_transport(tlm::tlm_generic_payload& p, sc_core::sc_time& delay);
  void memory_transport(tlm::tlm_generic_payload& p, sc_core::sc_time& delay);
  void command_thread();
  void irq_method();
  std::uint32_t read_register(std::uint32_t offset) const;
  void write_register(std::uint32_t offset, std::uint32_t value);
  void doorbell(std::uint32_t tail);
  void raise_error(hostif::Status s);
  hostif::CompletionEntry execute(const hostif::CommandDescriptor& d, sc_core::sc_time& elapsed);
  hostif::Status dma(const hostif::CommandDescriptor& d, bool to_device, sc_core::sc_time& elapsed);
  hostif::Status check_device_range(std::uint64_t addr, std::uint64_t bytes) const;
  Tick now_ticks() const;
  void post(const hostif::CompletionEntry& c);

  SystemSpec system_;
  DeviceConfig config_;
  SparseMemory memory_;
  HbmMemoryTiming timing_;
  LogicPim pim_;

  std::uint64_t ring_base_ = 0, cq_base_ = 0;
  std::uint32_t ring_size_ = 0, cq_size_ = 0;
  std::uint32_t ring_head_ = 0, ring_tail_ = 0, cq_head_ = 0, cq_tail_ = 0;
  std::uint32_t irq_status_ = 0, irq_enable_ = 0, error_code_ = 0;
  std::uint32_t completed_ = 0, errors_ = 0;
  bool error_ = false, busy_ = false;
  std::deque<hostif::CompletionEntry> rejected_;  // doorbell errors waiting to be posted
  sc_core::sc_event doorbell_event_, cq_space_event_, irq_event_;
};

}  // namespace duplex::sysc
