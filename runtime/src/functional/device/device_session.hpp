#pragma once
// RAII over the C driver API for the device PIM unit: one open device and one queue, device buffers, and
// error translation (every failing driver call becomes a duplex::Error naming the call, the status and the
// driver's message).
#include <cstdint>
#include <string>
#include <string_view>

#include "duplex/driver/duplex_driver.h"

namespace duplex::runtime::functional {

// Throws duplex::Error "<what>: <status string>: <duplex_last_error()>" unless status is DUPLEX_SUCCESS.
void check_driver(duplex_status status, std::string_view what);

class DeviceSession {
 public:
  // Opens the device for `system_file` (a system YAML path or preset) and creates a queue.
  explicit DeviceSession(const std::string& system_file);
  ~DeviceSession();  // closes the device (waits for submitted work); never throws
  DeviceSession(const DeviceSession&) = delete;
  DeviceSession& operator=(const DeviceSession&) = delete;

  duplex_device device() const { return device_; }
  duplex_queue queue() const { return queue_; }

  duplex_devptr alloc(std::uint64_t bytes, duplex_mem_space hint);
  void free(duplex_devptr ptr);
  void to_device(duplex_devptr dst, const void* src, std::uint64_t bytes);
  void to_host(void* dst, duplex_devptr src, std::uint64_t bytes);
  // Waits for every submitted command; throws the first device error among them.
  void synchronize();
  duplex_counters counters() const;

 private:
  duplex_device device_ = 0;
  duplex_queue queue_ = 0;
};

// A device buffer reused across ops: grows (free + alloc in the same space hint) when an op needs more.
class ScratchBuffer {
 public:
  ScratchBuffer(DeviceSession& session, duplex_mem_space hint) : session_(session), hint_(hint) {}
  ~ScratchBuffer();
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;

  // A device address with room for at least `bytes` (> 0).
  duplex_devptr reserve(std::uint64_t bytes);

 private:
  DeviceSession& session_;
  duplex_mem_space hint_;
  duplex_devptr ptr_ = 0;
  std::uint64_t capacity_ = 0;
};

}  // namespace duplex::runtime::functional
