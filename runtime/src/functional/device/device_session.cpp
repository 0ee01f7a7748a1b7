#include "device_session.hpp"

#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::runtime::functional {

void check_driver(duplex_status status, std::string_view what) {
  if (status == DUPLEX_SUCCESS) return;
  throw Error(fmt::format("PIM device: {}: {}: {}", what, duplex_status_string(status), duplex_last_error()));
}

DeviceSession::DeviceSession(const std::string& system_file) {
  check_driver(duplex_open(system_file.c_str(), &device_), fmt::format("duplex_open('{}')", system_file));
  const duplex_status s = duplex_queue_create(device_, 16, &queue_);
  if (s != DUPLEX_SUCCESS) {
    const std::string message = duplex_last_error();
    duplex_close(device_);
    throw Error(fmt::format("PIM device: duplex_queue_create: {}: {}", duplex_status_string(s), message));
  }
}

DeviceSession::~DeviceSession() {
  // duplex_close destroys the queue and frees the device memory; its status has nowhere to go here.
  (void)duplex_close(device_);
}

duplex_devptr DeviceSession::alloc(std::uint64_t bytes, duplex_mem_space hint) {
  duplex_devptr p = 0;
  check_driver(duplex_mem_alloc(device_, bytes, hint, &p), fmt::format("duplex_mem_alloc({} B)", bytes));
  return p;
}

void DeviceSession::free(duplex_devptr ptr) { check_driver(duplex_mem_free(device_, ptr), "duplex_mem_free"); }

void DeviceSession::to_device(duplex_devptr dst, const void* src, std::uint64_t bytes) {
  check_driver(duplex_memcpy_h2d(device_, dst, src, bytes), fmt::format("duplex_memcpy_h2d({} B)", bytes));
}

void DeviceSession::to_host(void* dst, duplex_devptr src, std::uint64_t bytes) {
  check_driver(duplex_memcpy_d2h(device_, dst, src, bytes), fmt::format("duplex_memcpy_d2h({} B)", bytes));
}

void DeviceSession::synchronize() { check_driver(duplex_queue_synchronize(queue_), "PIM command"); }

duplex_counters DeviceSession::counters() const {
  duplex_counters c{};
  check_driver(duplex_read_counters(device_, &c), "duplex_read_counters");
  return c;
}

ScratchBuffer::~ScratchBuffer() {
  // Freed with the device on close when this fails; nothing to report from a destructor.
  if (ptr_ != 0) (void)duplex_mem_free(session_.device(), ptr_);
}

duplex_devptr ScratchBuffer::reserve(std::uint64_t bytes) {
  if (bytes <= capacity_) return ptr_;
  if (ptr_ != 0) {
    session_.free(ptr_);
    ptr_ = 0;
    capacity_ = 0;
  }
  ptr_ = session_.alloc(bytes, hint_);
  capacity_ = bytes;
  return ptr_;
}

}  // namespace duplex::runtime::functional
