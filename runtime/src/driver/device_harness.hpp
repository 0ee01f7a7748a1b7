#pragma once
// The process's one SystemC simulation context for the driver: a DuplexDevice, the host memory its DMA
// engine reaches (HostWindowMemory), and the host's initiator sockets onto the device's MMIO registers and
// device memory. Built once, before the first sc_start, and kept for the life of the process (SystemC allows
// one elaboration per process).
#include <cstdint>

#include <tlm_utils/simple_initiator_socket.h>
#include <systemc>
#include <tlm>

#include "duplex/base/device_spec.hpp"
#include "duplex/sysc/duplex_device.hpp"
#include "host_window_memory.hpp"

namespace duplex::driver {

class DeviceHarness : public sc_core::sc_module {
 public:
  // Throws duplex::Error when the system has no Logic-PIM.
  DeviceHarness(sc_core::sc_module_name name, const SystemSpec& system);

  const SystemSpec& system() const { return system_; }
  sysc::DuplexDevice& device() { return device_; }
  HostWindowMemory& host() { return host_; }

  // 32-bit register access; throws duplex::InternalError when the device answers with an error response.
  std::uint32_t read_register(std::uint32_t offset);
  void write_register(std::uint32_t offset, std::uint32_t value);
  // Device-memory access over the memory socket; false on an error response.
  bool write_memory(std::uint64_t addr, const void* data, std::uint32_t bytes);
  bool read_memory(std::uint64_t addr, void* data, std::uint32_t bytes);

  // Runs the simulation to its next pending activity (a delta cycle when that is now). False when nothing
  // is pending (the device is idle).
  static bool step();
  static std::uint64_t now_ps();

 private:
  tlm::tlm_response_status access(tlm_utils::simple_initiator_socket<DeviceHarness>& socket, bool write,
                                  std::uint64_t addr, void* data, std::uint32_t bytes);

  SystemSpec system_;
  sysc::DuplexDevice device_;
  HostWindowMemory host_;
  sc_core::sc_signal<bool> irq_;
  tlm_utils::simple_initiator_socket<DeviceHarness> mmio_;
  tlm_utils::simple_initiator_socket<DeviceHarness> memory_;
};

}  // namespace duplex::driver
