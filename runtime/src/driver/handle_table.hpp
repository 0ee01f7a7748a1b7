#pragma once
// Slots of driver objects addressed by opaque 64-bit handles: [63:56] kind tag, [55:32] slot, [31:0]
// generation. A slot's generation grows on every reuse, so a handle kept after destroy is detected as stale.
// Closing the device marks live slots "closed" (their handles then report DUPLEX_ERROR_DEVICE_CLOSED until the
// slot is reused).
#include <cstdint>
#include <optional>
#include <vector>

#include "duplex/driver/duplex_driver.h"

namespace duplex::driver {

template <class T>
class HandleTable {
 public:
  explicit HandleTable(std::uint8_t tag) : tag_(tag) {}

  std::uint64_t create(T value) {
    std::size_t i = 0;
    while (i < slots_.size() && slots_[i].state == State::kLive) ++i;
    if (i == slots_.size()) slots_.emplace_back();
    Slot& s = slots_[i];
    ++s.generation;
    s.state = State::kLive;
    s.value.emplace(std::move(value));
    return std::uint64_t{tag_} << 56 | std::uint64_t{i} << 32 | s.generation;
  }
  // The live object of `handle`, or null with `status` set (INVALID_HANDLE or DEVICE_CLOSED).
  T* find(std::uint64_t handle, duplex_status& status) {
    Slot* s = slot(handle);
    status = DUPLEX_ERROR_INVALID_HANDLE;
    if (s == nullptr || s->state == State::kFree) return nullptr;
    if (s->state == State::kClosed) {
      status = DUPLEX_ERROR_DEVICE_CLOSED;
      return nullptr;
    }
    status = DUPLEX_SUCCESS;
    return &*s->value;
  }
  void destroy(std::uint64_t handle) {
    if (Slot* s = slot(handle)) {
      s->state = State::kFree;
      s->value.reset();
    }
  }
  void close_all() {
    for (Slot& s : slots_)
      if (s.state == State::kLive) {
        s.state = State::kClosed;
        s.value.reset();
      }
  }
  template <class F>
  void for_each_live(F f) {
    for (Slot& s : slots_)
      if (s.state == State::kLive) f(*s.value);
  }

 private:
  enum class State { kFree, kLive, kClosed };
  struct Slot {
    std::uint32_t generation = 0;
    State state = State::kFree;
    std::optional<T> value;
  };
  Slot* slot(std::uint64_t handle) {
    const auto index = static_cast<std::size_t>((handle >> 32) & 0xFFFFFFu);
    const auto generation = static_cast<std::uint32_t>(handle);
    if ((handle >> 56) != tag_ || index >= slots_.size() || slots_[index].generation != generation)
      return nullptr;
    return &slots_[index];
  }
  std::uint8_t tag_;
  std::vector<Slot> slots_;
};

}  // namespace duplex::driver
