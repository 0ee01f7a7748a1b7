#include "host_window_memory.hpp"

#include <cstring>
#include <iterator>

namespace duplex::driver {

namespace {
constexpr std::uint64_t kWindowAlign = 4096;  // windows start on page boundaries with a gap page between
}

HostWindowMemory::HostWindowMemory(sc_core::sc_module_name name) : sc_core::sc_module(name), socket("socket") {
  socket.register_b_transport(this, &HostWindowMemory::transport);
}

std::uint64_t HostWindowMemory::map(void* buffer, std::uint64_t bytes, bool writable) {
  const std::uint64_t at = next_bus_address_;
  next_bus_address_ += (bytes + 2 * kWindowAlign - 1) / kWindowAlign * kWindowAlign;
  windows_.emplace(at, Window{static_cast<std::uint8_t*>(buffer), bytes, writable});
  return at;
}

// No delay added: the device's DMA model prices the host link itself.
void HostWindowMemory::transport(tlm::tlm_generic_payload& p, sc_core::sc_time& /*delay*/) {
  const std::uint64_t a = p.get_address(), n = p.get_data_length();
  auto it = windows_.upper_bound(a);
  if (it == windows_.begin()) {
    p.set_response_status(tlm::TLM_ADDRESS_ERROR_RESPONSE);
    return;
  }
  const Window& w = std::prev(it)->second;
  const std::uint64_t offset = a - std::prev(it)->first;
  if (offset > w.bytes || n > w.bytes - offset || (p.is_write() && !w.writable)) {
    p.set_response_status(tlm::TLM_ADDRESS_ERROR_RESPONSE);
    return;
  }
  if (p.is_read())
    std::memcpy(p.get_data_ptr(), w.data + offset, n);
  else if (p.is_write())
    std::memcpy(w.data + offset, p.get_data_ptr(), n);
  p.set_response_status(tlm::TLM_OK_RESPONSE);
}

}  // namespace duplex::driver
