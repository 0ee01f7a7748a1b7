#pragma once
// The host memory the device's DMA engine sees: windows of host bus addresses mapped onto the caller's
// buffers for the duration of one copy. An access outside every window (or a write into a read-only one) is
// answered with TLM_ADDRESS_ERROR_RESPONSE, which the device reports as a DMA error.
#include <cstdint>
#include <map>

#include <tlm_utils/simple_target_socket.h>
#include <systemc>
#include <tlm>

namespace duplex::driver {

class HostWindowMemory : public sc_core::sc_module {
 public:
  tlm_utils::simple_target_socket<HostWindowMemory> socket;

  explicit HostWindowMemory(sc_core::sc_module_name name);
  // Maps `bytes` of `buffer` at a fresh bus address and returns that address. The buffer must stay valid
  // until unmap(). writable: the device may write it (device-to-host copies).
  std::uint64_t map(void* buffer, std::uint64_t bytes, bool writable);
  void unmap(std::uint64_t bus_address) { windows_.erase(bus_address); }

 private:
  struct Window {
    std::uint8_t* data;
    std::uint64_t bytes;
    bool writable;
  };
  void transport(tlm::tlm_generic_payload& p, sc_core::sc_time& delay);
  std::map<std::uint64_t, Window> windows_;  // bus base -> window
  std::uint64_t next_bus_address_ = 0x10000;
};

}  // namespace duplex::driver
