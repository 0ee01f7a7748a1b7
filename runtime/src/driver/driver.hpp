#pragma once
// The driver behind the C API: one process-wide Driver owns the device harness (built on the first open),
// the open device's allocator, queues and events, and the ring / completion-queue bookkeeping. Every method
// returns a duplex_status and records a message for duplex_last_error(); exceptions are caught by the C layer.
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "device_harness.hpp"
#include "duplex/driver/duplex_driver.h"
#include "duplex/sysc/action_counters.hpp"
#include "duplex/sysc/host_interface.hpp"
#include "handle_table.hpp"
#include "range_allocator.hpp"

namespace duplex::driver {

class Driver {
 public:
  static Driver& instance();

  duplex_status open(const char* system, duplex_device* out);
  duplex_status close(duplex_device device);
  duplex_status caps(duplex_device device, duplex_caps* out);
  duplex_status mem_alloc(duplex_device device, std::uint64_t bytes, duplex_mem_space hint, duplex_devptr* out);
  duplex_status mem_free(duplex_device device, duplex_devptr ptr);
  duplex_status mem_space_of(duplex_device device, duplex_devptr ptr, int* out);
  duplex_status memcpy(duplex_device device, duplex_devptr dev, void* host, std::uint64_t bytes, bool to_device);
  duplex_status queue_create(duplex_device device, std::uint32_t depth, duplex_queue* out);
  duplex_status queue_destroy(duplex_queue queue);
  duplex_status queue_synchronize(duplex_queue queue);
  // flags: the descriptor's flag bits (hostif kPimGemvFlagBias, kPimAttentionFlagSinks).
  duplex_status submit(duplex_queue queue, sysc::hostif::Opcode op, const std::array<std::uint64_t, 7>& args,
                       std::uint16_t flags = 0);
  duplex_status event_record(duplex_queue queue, duplex_event* out);
  duplex_status event_query(duplex_event event);
  duplex_status event_synchronize(duplex_event event);
  duplex_status event_time(duplex_event event, std::uint64_t* out);
  duplex_status event_destroy(duplex_event event);
  duplex_status read_counters(duplex_device device, duplex_counters* out);

  // Records `message` as the last error and returns `status`.
  duplex_status fail(duplex_status status, std::string message);
  const std::string& last_error() const { return last_error_; }

 private:
  struct Queue {
    std::uint32_t depth = 0;
    std::uint32_t in_flight = 0;
    duplex_status error = DUPLEX_SUCCESS;  // first device error since the last synchronize
    std::string error_message;
  };
  struct Event {
    std::uint64_t queue = 0;
    std::uint32_t seq = 0;
    bool complete = false;
    std::uint64_t time_ps = 0;
    duplex_status error = DUPLEX_SUCCESS;  // the queue's error taken over when the fence completed
    std::string error_message;
  };
  struct Pending {
    std::uint64_t queue = 0;       // 0: the driver's own copy stream
    std::uint64_t event = 0;       // a fence: the event it completes
    std::uint64_t window = 0;      // host window to unmap on completion (0: none)
    bool keep_result = false;      // synchronous copies read their status from results_
  };
  struct Allocation {
    std::uint64_t bytes;
    std::size_t region;
  };

  duplex_status check_device(duplex_device device);
  duplex_status find_queue(duplex_queue handle, Queue*& out);
  duplex_status find_event(duplex_event handle, Event*& out);
  // Writes one descriptor into the ring and rings the doorbell; `queue` may be null (driver stream).
  duplex_status enqueue(Queue* queue, sysc::hostif::Opcode op, const std::array<std::uint64_t, 7>& args,
                        const Pending& pending, std::uint32_t* out_seq, std::uint16_t flags = 0);
  // Consumes every posted completion.
  void harvest();
  // Advances simulated time until done() (harvesting on the way); TIMEOUT / INTERNAL when it cannot.
  template <class Done>
  duplex_status run_until(Done done, const char* what);
  duplex_status wait_all();
  void program_queues();
  std::optional<std::uint64_t> allocate_in_space(int space, std::uint64_t bytes);

  std::unique_ptr<DeviceHarness> harness_;
  std::string system_file_;
  std::uint32_t opens_ = 0;  // generation of the device handle
  bool open_ = false;
  HandleTable<Queue> queues_{0xA1};
  HandleTable<Event> events_{0xE1};
  std::vector<RangeAllocator> regions_;  // [stack * spaces + space]
  std::vector<int> region_space_;
  std::map<std::uint64_t, Allocation> allocations_;
  int spaces_ = 0;
  std::uint64_t space_bytes_ = 0;
  int expert_next_ = 0, kv_next_ = 0;
  std::uint64_t ring_base_ = 0;  // ring, then the completion queue, in the reserved start of space 0
  std::uint32_t ring_tail_ = 0, cq_head_ = 0, next_seq_ = 1;
  std::map<std::uint32_t, Pending> pending_;
  std::map<std::uint32_t, duplex_status> results_;
  std::map<std::uint32_t, std::string> result_messages_;
  sysc::ActionCounters base_counters_;
  std::uint32_t base_completed_ = 0, base_errors_ = 0;
  std::uint64_t base_time_ps_ = 0;
  std::string last_error_;
};

// Driver status of a device completion status.
duplex_status from_device_status(sysc::hostif::Status s);

}  // namespace duplex::driver
