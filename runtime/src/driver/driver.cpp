#include "driver.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "duplex/base/error.hpp"
#include "duplex/sysc/address_mapping.hpp"

namespace duplex::driver {

namespace hostif = sysc::hostif;
using hostif::Opcode;

namespace {
constexpr std::uint8_t kDeviceTag = 0xD1;
constexpr std::uint32_t kRingEntries = 256;   // command ring: also the most unfinished commands in total
constexpr std::uint32_t kCqEntries = 512;     // room for every ring entry plus rejected doorbells
constexpr std::uint64_t kReservedBytes = 64 * 1024;  // ring + completion queue, at the start of space 0
constexpr std::uint64_t kAlignment = 256;     // allocations: a multiple of the 32 B access and 64 B ring
constexpr std::uint64_t kDmaChunk = 64ull << 20;     // below the device's 256 MiB DMA limit
constexpr std::uint64_t kWaitLimitPs = 600ull * 1000 * 1000 * 1000 * 1000;  // 600 s of simulated time

std::uint64_t device_handle(std::uint32_t generation) {
  return std::uint64_t{kDeviceTag} << 56 | generation;
}
}  // namespace

duplex_status from_device_status(hostif::Status s) {
  switch (s) {
    case hostif::Status::kOk:
      return DUPLEX_SUCCESS;
    case hostif::Status::kBadOpcode:
      return DUPLEX_ERROR_DEVICE_BAD_OPCODE;
    case hostif::Status::kOutOfRange:
      return DUPLEX_ERROR_DEVICE_OUT_OF_RANGE;
    case hostif::Status::kMisaligned:
      return DUPLEX_ERROR_DEVICE_MISALIGNED;
    case hostif::Status::kBufferOverflow:
      return DUPLEX_ERROR_DEVICE_BUFFER_OVERFLOW;
    case hostif::Status::kRingOverflow:
      return DUPLEX_ERROR_DEVICE_RING_OVERFLOW;
    case hostif::Status::kBadShape:
      return DUPLEX_ERROR_DEVICE_BAD_SHAPE;
    case hostif::Status::kDmaError:
      return DUPLEX_ERROR_DEVICE_DMA;
    case hostif::Status::kBadConfig:
      return DUPLEX_ERROR_DEVICE_BAD_CONFIG;
    case hostif::Status::kBadArgument:
      return DUPLEX_ERROR_DEVICE_BAD_ARGUMENT;
  }
  return DUPLEX_ERROR_INTERNAL;
}

Driver& Driver::instance() {
  // Never destroyed: the SystemC modules it owns must outlive the simulation context's own teardown.
  static Driver* driver = new Driver();
  return *driver;
}

duplex_status Driver::fail(duplex_status status, std::string message) {
  last_error_ = std::move(message);
  return status;
}

duplex_status Driver::check_device(duplex_device device) {
  const std::uint32_t generation = static_cast<std::uint32_t>(device);
  if ((device >> 32) != (std::uint64_t{kDeviceTag} << 24) || generation == 0 || generation > opens_)
    return fail(DUPLEX_ERROR_INVALID_HANDLE, fmt::format("0x{:x} is not a device handle", device));
  if (!open_ || generation != opens_)
    return fail(DUPLEX_ERROR_DEVICE_CLOSED, fmt::format("device handle 0x{:x} was closed", device));
  return DUPLEX_SUCCESS;
}

duplex_status Driver::find_queue(duplex_queue handle, Queue*& out) {
  duplex_status s = DUPLEX_SUCCESS;
  out = queues_.find(handle, s);
  if (out == nullptr)
    return fail(s, fmt::format("queue handle 0x{:x} is {}", handle,
                               s == DUPLEX_ERROR_DEVICE_CLOSED ? "of a closed device" : "not a live queue"));
  return DUPLEX_SUCCESS;
}

duplex_status Driver::find_event(duplex_event handle, Event*& out) {
  duplex_status s = DUPLEX_SUCCESS;
  out = events_.find(handle, s);
  if (out == nullptr)
    return fail(s, fmt::format("event handle 0x{:x} is {}", handle,
                               s == DUPLEX_ERROR_DEVICE_CLOSED ? "of a closed device" : "not a live event"));
  return DUPLEX_SUCCESS;
}

duplex_status Driver::open(const char* system, duplex_device* out) {
  if (system == nullptr || out == nullptr)
    return fail(DUPLEX_ERROR_INVALID_ARGUMENT, "duplex_open: system and out_device must not be null");
  if (open_) return fail(DUPLEX_ERROR_ALREADY_OPEN, "a device is already open (one at a time per process)");
  SystemSpec spec;
  try {
    spec = load_system(system);
  } catch (const Error& e) {
    return fail(DUPLEX_ERROR_CONFIG, fmt::format("cannot load system '{}': {}", system, e.what()));
  }
  if (!spec.pim || spec.pim->kind != PimKind::kLogicPim)
    return fail(DUPLEX_ERROR_CONFIG, fmt::format("system '{}' has no Logic-PIM", system));
  if (harness_ == nullptr) {
    try {
      harness_ = std::make_unique<DeviceHarness>("duplex_driver", spec);
    } catch (const Error& e) {
      return fail(DUPLEX_ERROR_CONFIG, fmt::format("cannot build the device for '{}': {}", system, e.what()));
    }
    system_file_ = spec.file;
  } else if (spec.file != system_file_ || spec.resolved_yaml != harness_->system().resolved_yaml) {
    return fail(DUPLEX_ERROR_UNSUPPORTED,
                fmt::format("this process simulates the device of '{}'; it cannot also simulate '{}'",
                            harness_->system().name, system));
  }
  DeviceHarness& h = *harness_;
  if (h.read_register(hostif::kRegId) != hostif::kDeviceId)
    return fail(DUPLEX_ERROR_INTERNAL, "the device's ID register does not read \"DPLX\"");
  const sysc::AddressMapping mapping(spec.memory.org,
                                     sysc::make_bundle_geometry(spec.memory.org, spec.pim->banks_per_bundle));
  if (!mapping.spaces_contiguous())
    return fail(DUPLEX_ERROR_CONFIG, "the address mapping does not keep each bank-bundle space contiguous");
  spaces_ = mapping.spaces();
  space_bytes_ = mapping.space_size();
  regions_.clear();
  region_space_.clear();
  for (int stack = 0; stack < spec.stacks; ++stack)
    for (int s = 0; s < spaces_; ++s) {
      const std::uint64_t base = static_cast<std::uint64_t>(stack) * mapping.capacity() + mapping.space_base(s);
      const std::uint64_t skip = stack == 0 && s == 0 ? kReservedBytes : 0;
      if (skip > 0) ring_base_ = base;
      regions_.emplace_back(base + skip, space_bytes_ - skip);
      region_space_.push_back(s);
    }
  allocations_.clear();
  expert_next_ = kv_next_ = 0;
  program_queues();
  base_counters_ = h.device().counters();
  base_completed_ = h.read_register(hostif::kRegCompleted);
  base_errors_ = h.read_register(hostif::kRegErrors);
  base_time_ps_ = DeviceHarness::now_ps();
  open_ = true;
  *out = device_handle(++opens_);
  return DUPLEX_SUCCESS;
}

// Resets the device's queues (it must be idle) and programs the ring and completion queue.
void Driver::program_queues() {
  DeviceHarness& h = *harness_;
  h.write_register(hostif::kRegControl, hostif::kControlReset | hostif::kControlClearError);
  h.write_register(hostif::kRegIrqStatus, ~0u);
  const std::uint64_t cq = ring_base_ + std::uint64_t{kRingEntries} * hostif::kDescriptorBytes;
  h.write_register(hostif::kRegRingBaseLo, static_cast<std::uint32_t>(ring_base_));
  h.write_register(hostif::kRegRingBaseHi, static_cast<std::uint32_t>(ring_base_ >> 32));
  h.write_register(hostif::kRegRingSize, kRingEntries);
  h.write_register(hostif::kRegCqBaseLo, static_cast<std::uint32_t>(cq));
  h.write_register(hostif::kRegCqBaseHi, static_cast<std::uint32_t>(cq >> 32));
  h.write_register(hostif::kRegCqSize, kCqEntries);
  h.write_register(hostif::kRegIrqEnable, hostif::kIrqCompletion | hostif::kIrqError);
  sc_core::sc_start(sc_core::SC_ZERO_TIME);
  if (h.read_register(hostif::kRegStatus) & hostif::kStatusError)
    throw InternalError(fmt::format("programming the device's queues failed with device status {}",
                                    hostif::to_string(static_cast<hostif::Status>(
                                        h.read_register(hostif::kRegErrorCode)))));
  ring_tail_ = cq_head_ = 0;
  pending_.clear();
  results_.clear();
  result_messages_.clear();
}

duplex_status Driver::close(duplex_device device) {
  if (const duplex_status s = check_device(device); s != DUPLEX_SUCCESS) return s;
  const duplex_status drained = wait_all();
  queues_.close_all();
  events_.close_all();
  allocations_.clear();
  regions_.clear();
  open_ = false;
  if (drained != DUPLEX_SUCCESS) return drained;
  program_queues();
  return DUPLEX_SUCCESS;
}

duplex_status Driver::caps(duplex_device device, duplex_caps* out) {
  if (const duplex_status s = check_device(device); s != DUPLEX_SUCCESS) return s;
  if (out == nullptr) return fail(DUPLEX_ERROR_INVALID_ARGUMENT, "duplex_get_caps: out_caps is null");
  DeviceHarness& h = *harness_;
  const std::uint32_t c = h.read_register(hostif::kRegCaps);
  *out = duplex_caps{};
  out->device_id = h.read_register(hostif::kRegId);
  out->version = h.read_register(hostif::kRegVersion);
  out->stacks = c & 0xFFu;
  out->has_logic_pim = (c >> 8) & 1u;
  out->has_dma = (c >> 9) & 1u;
  out->memory_spaces = static_cast<std::uint32_t>(spaces_);
  out->max_queue_depth = kRingEntries;
  out->memory_bytes = h.system().memory_capacity().bytes;
  out->space_bytes = space_bytes_;
  out->alignment = kAlignment;
  return DUPLEX_SUCCESS;
}

std::optional<std::uint64_t> Driver::allocate_in_space(int space, std::uint64_t bytes) {
  for (std::size_t r = 0; r < regions_.size(); ++r) {
    if (region_space_[r] != space) continue;
    if (const auto at = regions_[r].allocate(bytes)) {
      allocations_.emplace(*at, Allocation{bytes, r});
      return at;
    }
  }
  return std::nullopt;
}

duplex_status Driver::mem_alloc(duplex_device device, std::uint64_t bytes, duplex_mem_space hint,
                                duplex_devptr* out) {
  if (const duplex_status s = check_device(device); s != DUPLEX_SUCCESS) return s;
  if (out == nullptr || bytes == 0)
    return fail(DUPLEX_ERROR_INVALID_ARGUMENT, "duplex_mem_alloc: bytes must be > 0 and out_ptr non-null");
  if (bytes > space_bytes_)
    return fail(DUPLEX_ERROR_OUT_OF_MEMORY,
                fmt::format("{} bytes exceed one memory space ({} bytes)", bytes, space_bytes_));
  const std::uint64_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  std::vector<int> order;
  switch (hint) {
    case DUPLEX_SPACE_ANY:
      for (int s = 0; s < spaces_; ++s) order.push_back(s);
      break;
    case DUPLEX_SPACE_0:
    case DUPLEX_SPACE_1:
    case DUPLEX_SPACE_2:
    case DUPLEX_SPACE_3:
      order.push_back(static_cast<int>(hint) - static_cast<int>(DUPLEX_SPACE_0));
      break;
    case DUPLEX_SPACE_EXPERT:
      for (int i = 0; i < spaces_; ++i) order.push_back((expert_next_ + i) % spaces_);
      expert_next_ = (expert_next_ + 1) % spaces_;
      break;
    case DUPLEX_SPACE_DECODE_KV:
      for (int i = 0; i < spaces_ - 1; ++i) order.push_back((kv_next_ + i) % (spaces_ - 1));
      kv_next_ = (kv_next_ + 1) % (spaces_ - 1);
      break;
    case DUPLEX_SPACE_PREFILL_QKV:
      order.push_back(spaces_ - 1);
      break;
    default:
      return fail(DUPLEX_ERROR_INVALID_ARGUMENT,
                  fmt::format("duplex_mem_alloc: unknown space hint {}", static_cast<int>(hint)));
  }
  for (const int s : order)
    if (s < spaces_)
      if (const auto at = allocate_in_space(s, rounded)) {
        *out = *at;
        return DUPLEX_SUCCESS;
      }
  return fail(DUPLEX_ERROR_OUT_OF_MEMORY,
              fmt::format("no free {} bytes in the memory space(s) of hint {}", rounded, static_cast<int>(hint)));
}

duplex_status Driver::mem_free(duplex_device device, duplex_devptr ptr) {
  if (const duplex_status s = check_device(device); s != DUPLEX_SUCCESS) return s;
  const auto it = allocations_.find(ptr);
  if (it == allocations_.end())
    return fail(DUPLEX_ERROR_INVALID_DEVPTR,
                fmt::format("0x{:x} is not a live allocation (never allocated, or already freed)", ptr));
  regions_[it->second.region].release(ptr, it->second.bytes);
  allocations_.erase(it);
  return DUPLEX_SUCCESS;
}

duplex_status Driver::mem_space_of(duplex_device device, duplex_devptr ptr, int* out) {
  if (const duplex_status s = check_device(device); s != DUPLEX_SUCCESS) return s;
  if (out == nullptr) return fail(DUPLEX_ERROR_INVALID_ARGUMENT, "duplex_mem_space_of: out_space is null");
  for (std::size_t r = 0; r < regions_.size(); ++r)
    if (regions_[r].contains(ptr) || (r == 0 && ptr >= ring_base_ && ptr < ring_base_ + kReservedBytes)) {
      *out = region_space_[r];
      return DUPLEX_SUCCESS;
    }
  return fail(DUPLEX_ERROR_INVALID_ARGUMENT, fmt::format("0x{:x} is outside device memory", ptr));
}

duplex_status Driver::enqueue(Queue* queue, Opcode op, const std::array<std::uint64_t, 7>& args,
                              const Pending& pending, std::uint32_t* out_seq, std::uint16_t flags) {
  if (pending_.size() >= kRingEntries)
    return fail(DUPLEX_ERROR_QUEUE_FULL, fmt::format("the device ring holds {} unfinished commands", kRingEntries));
  if (queue != nullptr && queue->in_flight >= queue->depth)
    return fail(DUPLEX_ERROR_QUEUE_FULL,
                fmt::format("the queue holds its depth of {} unfinished commands", queue->depth));
  DeviceHarness& h = *harness_;
  hostif::CommandDescriptor d;
  d.opcode = op;
  d.flags = flags;
  d.seq = next_seq_++;
  d.args = args;
  const auto bytes = hostif::encode(d);
  const std::uint64_t slot = ring_base_ + std::uint64_t{ring_tail_ % kRingEntries} * hostif::kDescriptorBytes;
  if (!h.write_memory(slot, bytes.data(), hostif::kDescriptorBytes))
    throw InternalError("writing a descriptor into the ring failed");
  h.write_register(hostif::kRegRingTail, ++ring_tail_);
  if (queue != nullptr) ++queue->in_flight;
  pending_.emplace(d.seq, pending);
  if (out_seq != nullptr) *out_seq = d.seq;
  return DUPLEX_SUCCESS;
}

void Driver::harvest() {
  DeviceHarness& h = *harness_;
  const std::uint32_t tail = h.read_register(hostif::kRegCqTail);
  if (tail == cq_head_) return;
  const std::uint64_t cq = ring_base_ + std::uint64_t{kRingEntries} * hostif::kDescriptorBytes;
  for (; cq_head_ != tail; ++cq_head_) {
    std::uint8_t b[hostif::kCompletionBytes];
    if (!h.read_memory(cq + std::uint64_t{cq_head_ % kCqEntries} * hostif::kCompletionBytes, b, sizeof b))
      throw InternalError("reading the completion queue failed");
    const hostif::CompletionEntry c = hostif::decode_completion(b);
    if (c.opcode == Opcode::kDoorbell)
      throw InternalError(fmt::format("the device rejected doorbell {}: {}", c.seq, hostif::to_string(c.status)));
    const auto it = pending_.find(c.seq);
    if (it == pending_.end()) throw InternalError(fmt::format("completion of unknown command {}", c.seq));
    const Pending p = it->second;
    pending_.erase(it);
    const duplex_status status = from_device_status(c.status);
    const std::string message =
        status == DUPLEX_SUCCESS
            ? std::string()
            : fmt::format("the device rejected command {} (opcode 0x{:x}): {}", c.seq,
                          static_cast<unsigned>(c.opcode), hostif::to_string(c.status));
    if (p.window != 0) h.host().unmap(p.window);
    if (p.keep_result) {
      results_[c.seq] = status;
      result_messages_[c.seq] = message;
    }
    duplex_status qs = DUPLEX_SUCCESS;
    Queue* q = p.queue != 0 ? queues_.find(p.queue, qs) : nullptr;
    if (q != nullptr) {
      --q->in_flight;
      if (status != DUPLEX_SUCCESS && q->error == DUPLEX_SUCCESS) {
        q->error = status;
        q->error_message = message;
      }
    }
    duplex_status es = DUPLEX_SUCCESS;
    if (Event* e = p.event != 0 ? events_.find(p.event, es) : nullptr) {
      e->complete = true;
      e->time_ps = DeviceHarness::now_ps();
      if (q != nullptr) {
        e->error = q->error;
        e->error_message = q->error_message;
        q->error = DUPLEX_SUCCESS;
        q->error_message.clear();
      }
    }
  }
  h.write_register(hostif::kRegCqHead, cq_head_);
  // Errors are reported per command above; clear the device's sticky error and interrupt state.
  h.write_register(hostif::kRegControl, hostif::kControlClearError);
  h.write_register(hostif::kRegIrqStatus, ~0u);
}

template <class Done>
duplex_status Driver::run_until(Done done, const char* what) {
  const std::uint64_t start = DeviceHarness::now_ps();
  for (;;) {
    harvest();
    if (done()) return DUPLEX_SUCCESS;
    if (DeviceHarness::now_ps() - start > kWaitLimitPs)
      return fail(DUPLEX_ERROR_TIMEOUT, fmt::format("{}: not done after {} s of simulated time", what,
                                                    static_cast<double>(kWaitLimitPs) * 1e-12));
    if (!DeviceHarness::step())
      return fail(DUPLEX_ERROR_INTERNAL, fmt::format("{}: the device went idle without completing it", what));
  }
}

duplex_status Driver::wait_all() {
  return run_until([&] { return pending_.empty(); }, "waiting for every submitted command");
}

duplex_status Driver::memcpy(duplex_device device, duplex_devptr dev, void* host, std::uint64_t bytes,
                             bool to_device) {
  if (const duplex_status s = check_device(device); s != DUPLEX_SUCCESS) return s;
  if (host == nullptr || bytes == 0)
    return fail(DUPLEX_ERROR_INVALID_ARGUMENT, "duplex_memcpy: the host buffer must be non-null and bytes > 0");
  std::uint32_t last = 0;
  std::vector<std::uint32_t> seqs;
  for (std::uint64_t done = 0; done < bytes; done += kDmaChunk) {
    const std::uint64_t n = std::min(kDmaChunk, bytes - done);
    Pending p;
    p.window = harness_->host().map(static_cast<std::uint8_t*>(host) + done, n, !to_device);
    p.keep_result = true;
    if (const duplex_status s =
            enqueue(nullptr, to_device ? Opcode::kDmaToDevice : Opcode::kDmaToHost, {p.window, dev + done, n}, p,
                    &last);
        s != DUPLEX_SUCCESS) {
      harness_->host().unmap(p.window);
      const std::string why = last_error_;
      const duplex_status drained = wait_all();  // the chunks already submitted must finish with the buffer
      for (const std::uint32_t seq : seqs) {
        results_.erase(seq);
        result_messages_.erase(seq);
      }
      return drained != DUPLEX_SUCCESS ? drained : fail(s, why);
    }
    seqs.push_back(last);
  }
  if (const duplex_status s = run_until([&] { return results_.count(last) != 0; }, "waiting for a copy");
      s != DUPLEX_SUCCESS)
    return s;
  duplex_status first = DUPLEX_SUCCESS;
  std::string message;
  for (const std::uint32_t seq : seqs) {
    if (first == DUPLEX_SUCCESS && results_[seq] != DUPLEX_SUCCESS) {
      first = results_[seq];
      message = result_messages_[seq];
    }
    results_.erase(seq);
    result_messages_.erase(seq);
  }
  return first == DUPLEX_SUCCESS ? DUPLEX_SUCCESS : fail(first, message);
}

duplex_status Driver::queue_create(duplex_device device, std::uint32_t depth, duplex_queue* out) {
  if (const duplex_status s = check_device(device); s != DUPLEX_SUCCESS) return s;
  if (out == nullptr || depth == 0 || depth > kRingEntries)
    return fail(DUPLEX_ERROR_INVALID_ARGUMENT,
                fmt::format("duplex_queue_create: depth must be in 1..{} and out_queue non-null", kRingEntries));
  Queue q;
  q.depth = depth;
  *out = queues_.create(q);
  return DUPLEX_SUCCESS;
}

duplex_status Driver::queue_synchronize(duplex_queue queue) {
  Queue* q = nullptr;
  if (const duplex_status s = find_queue(queue, q); s != DUPLEX_SUCCESS) return s;
  if (const duplex_status s = run_until(
          [&] {
            duplex_status ignored = DUPLEX_SUCCESS;
            Queue* live = queues_.find(queue, ignored);
            return live == nullptr || live->in_flight == 0;
          },
          "synchronizing a queue");
      s != DUPLEX_SUCCESS)
    return s;
  q = nullptr;
  if (const duplex_status s = find_queue(queue, q); s != DUPLEX_SUCCESS) return s;
  const duplex_status error = q->error;
  const std::string message = q->error_message;
  q->error = DUPLEX_SUCCESS;
  q->error_message.clear();
  return error == DUPLEX_SUCCESS ? DUPLEX_SUCCESS : fail(error, message);
}

duplex_status Driver::queue_destroy(duplex_queue queue) {
  Queue* q = nullptr;
  if (const duplex_status s = find_queue(queue, q); s != DUPLEX_SUCCESS) return s;
  const duplex_status s = queue_synchronize(queue);
  if (s == DUPLEX_ERROR_TIMEOUT || s == DUPLEX_ERROR_INTERNAL) return s;
  queues_.destroy(queue);
  return DUPLEX_SUCCESS;
}

duplex_status Driver::submit(duplex_queue queue, Opcode op, const std::array<std::uint64_t, 7>& args,
                             std::uint16_t flags) {
  Queue* q = nullptr;
  if (const duplex_status s = find_queue(queue, q); s != DUPLEX_SUCCESS) return s;
  Pending p;
  p.queue = queue;
  return enqueue(q, op, args, p, nullptr, flags);
}

duplex_status Driver::event_record(duplex_queue queue, duplex_event* out) {
  Queue* q = nullptr;
  if (const duplex_status s = find_queue(queue, q); s != DUPLEX_SUCCESS) return s;
  if (out == nullptr) return fail(DUPLEX_ERROR_INVALID_ARGUMENT, "duplex_event_record: out_event is null");
  Event e;
  e.queue = queue;
  const duplex_event handle = events_.create(e);
  Pending p;
  p.queue = queue;
  p.event = handle;
  std::uint32_t seq = 0;
  if (const duplex_status s = enqueue(q, Opcode::kNop, {}, p, &seq); s != DUPLEX_SUCCESS) {
    events_.destroy(handle);
    return s;
  }
  duplex_status ignored = DUPLEX_SUCCESS;
  events_.find(handle, ignored)->seq = seq;
  *out = handle;
  return DUPLEX_SUCCESS;
}

duplex_status Driver::event_query(duplex_event event) {
  Event* e = nullptr;
  if (const duplex_status s = find_event(event, e); s != DUPLEX_SUCCESS) return s;
  sc_core::sc_start(sc_core::SC_ZERO_TIME);
  harvest();
  return e->complete ? DUPLEX_SUCCESS : DUPLEX_NOT_READY;
}

duplex_status Driver::event_synchronize(duplex_event event) {
  Event* e = nullptr;
  if (const duplex_status s = find_event(event, e); s != DUPLEX_SUCCESS) return s;
  if (const duplex_status s = run_until([&] { return e->complete; }, "waiting for an event");
      s != DUPLEX_SUCCESS)
    return s;
  const duplex_status error = e->error;
  const std::string message = e->error_message;
  e->error = DUPLEX_SUCCESS;
  e->error_message.clear();
  return error == DUPLEX_SUCCESS ? DUPLEX_SUCCESS : fail(error, message);
}

duplex_status Driver::event_time(duplex_event event, std::uint64_t* out) {
  Event* e = nullptr;
  if (const duplex_status s = find_event(event, e); s != DUPLEX_SUCCESS) return s;
  if (out == nullptr) return fail(DUPLEX_ERROR_INVALID_ARGUMENT, "duplex_event_time: out_time_ps is null");
  if (!e->complete) return DUPLEX_NOT_READY;
  *out = e->time_ps - base_time_ps_;
  return DUPLEX_SUCCESS;
}

duplex_status Driver::event_destroy(duplex_event event) {
  Event* e = nullptr;
  if (const duplex_status s = find_event(event, e); s != DUPLEX_SUCCESS) return s;
  events_.destroy(event);  // a fence still in flight completes nothing (its handle is stale)
  return DUPLEX_SUCCESS;
}

duplex_status Driver::read_counters(duplex_device device, duplex_counters* out) {
  if (const duplex_status s = check_device(device); s != DUPLEX_SUCCESS) return s;
  if (out == nullptr) return fail(DUPLEX_ERROR_INVALID_ARGUMENT, "duplex_read_counters: out_counters is null");
  DeviceHarness& h = *harness_;
  const sysc::ActionCounters now = h.device().counters();
  const sysc::ActionCounters& b = base_counters_;
  *out = duplex_counters{};
  out->commands_completed = h.read_register(hostif::kRegCompleted) - base_completed_;
  out->command_errors = h.read_register(hostif::kRegErrors) - base_errors_;
  out->bank_activations = now.bank_activations - b.bank_activations;
  out->xpu_reads = now.xpu_reads - b.xpu_reads;
  out->xpu_writes = now.xpu_writes - b.xpu_writes;
  out->bundle_bank_reads = now.bundle_bank_reads - b.bundle_bank_reads;
  out->pim_writes = now.pim_writes - b.pim_writes;
  out->refreshed_banks = now.refreshed_banks - b.refreshed_banks;
  out->macs = now.macs - b.macs;
  out->softmax_elements = now.softmax_elements - b.softmax_elements;
  out->activation_elements = now.activation_elements - b.activation_elements;
  out->simulated_time_ps = DeviceHarness::now_ps() - base_time_ps_;
  const auto before = b.energy_actions();
  double joules = 0;
  for (const auto& [action, count] : now.energy_actions()) {
    const auto it = before.find(action);
    const double delta = count - (it == before.end() ? 0.0 : it->second);
    if (delta != 0) joules += delta * h.system().energy.price(action).si();
  }
  out->dynamic_energy_j = joules;
  return DUPLEX_SUCCESS;
}

}  // namespace duplex::driver
