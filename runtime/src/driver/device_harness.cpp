#include "device_harness.hpp"

#include <cmath>

#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::driver {

DeviceHarness::DeviceHarness(sc_core::sc_module_name name, const SystemSpec& system)
    : sc_core::sc_module(name),
      system_(system),
      device_("device", system_),
      host_("host"),
      irq_("irq"),
      mmio_("mmio"),
      memory_("memory") {
  device_.host_dma.bind(host_.socket);
  device_.irq(irq_);
  mmio_.bind(device_.mmio);
  memory_.bind(device_.memory);
}

tlm::tlm_response_status DeviceHarness::access(tlm_utils::simple_initiator_socket<DeviceHarness>& socket,
                                               bool write, std::uint64_t addr, void* data,
                                               std::uint32_t bytes) {
  tlm::tlm_generic_payload p;
  sc_core::sc_time delay = sc_core::SC_ZERO_TIME;
  p.set_command(write ? tlm::TLM_WRITE_COMMAND : tlm::TLM_READ_COMMAND);
  p.set_address(addr);
  p.set_data_ptr(static_cast<unsigned char*>(data));
  p.set_data_length(bytes);
  p.set_streaming_width(bytes);
  p.set_byte_enable_ptr(nullptr);
  p.set_response_status(tlm::TLM_INCOMPLETE_RESPONSE);
  socket->b_transport(p, delay);
  return p.get_response_status();
}

std::uint32_t DeviceHarness::read_register(std::uint32_t offset) {
  std::uint8_t b[4] = {};
  if (access(mmio_, false, offset, b, 4) != tlm::TLM_OK_RESPONSE)
    throw InternalError(fmt::format("device register read at 0x{:x} failed", offset));
  return std::uint32_t{b[0]} | std::uint32_t{b[1]} << 8 | std::uint32_t{b[2]} << 16 | std::uint32_t{b[3]} << 24;
}

void DeviceHarness::write_register(std::uint32_t offset, std::uint32_t value) {
  std::uint8_t b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<std::uint8_t>(value >> (8 * i));
  if (access(mmio_, true, offset, b, 4) != tlm::TLM_OK_RESPONSE)
    throw InternalError(fmt::format("device register write at 0x{:x} failed", offset));
}

bool DeviceHarness::write_memory(std::uint64_t addr, const void* data, std::uint32_t bytes) {
  return access(memory_, true, addr, const_cast<void*>(data), bytes) == tlm::TLM_OK_RESPONSE;
}

bool DeviceHarness::read_memory(std::uint64_t addr, void* data, std::uint32_t bytes) {
  return access(memory_, false, addr, data, bytes) == tlm::TLM_OK_RESPONSE;
}

bool DeviceHarness::step() {
  if (!sc_core::sc_pending_activity()) return false;
  sc_core::sc_start(sc_core::sc_time_to_pending_activity());
  return true;
}

std::uint64_t DeviceHarness::now_ps() {
  return static_cast<std::uint64_t>(std::llround(sc_core::sc_time_stamp().to_seconds() * 1e12));
}

}  // namespace duplex::driver
