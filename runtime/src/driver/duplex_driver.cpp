// The C entry points: argument forwarding to the Driver, with every exception caught at the boundary.
#include "duplex/driver/duplex_driver.h"

#include <cstdio>
#include <cstring>
#include <exception>

#include <fmt/format.h>

#include "driver.hpp"
#include "duplex/base/error.hpp"
#include "duplex/rtl/golden_datapath.hpp"

namespace {

using duplex::driver::Driver;
using duplex::sysc::hostif::Opcode;
namespace hostif = duplex::sysc::hostif;

// Runs f() and turns any exception into a status: duplex::Error (a bad input found deep inside) becomes
// INVALID_ARGUMENT, anything else INTERNAL; the message is kept for duplex_last_error().
template <class F>
duplex_status guarded(const char* function, F f) noexcept {
  try {
    return f(Driver::instance());
  } catch (const duplex::Error& e) {
    return Driver::instance().fail(DUPLEX_ERROR_INVALID_ARGUMENT, fmt::format("{}: {}", function, e.what()));
  } catch (const std::exception& e) {
    try {
      return Driver::instance().fail(DUPLEX_ERROR_INTERNAL, fmt::format("{}: {}", function, e.what()));
    } catch (...) {
      return DUPLEX_ERROR_INTERNAL;
    }
  } catch (...) {
    return DUPLEX_ERROR_INTERNAL;
  }
}

}  // namespace

extern "C" {

const char* duplex_status_string(duplex_status status) {
  switch (status) {
    case DUPLEX_SUCCESS:
      return "DUPLEX_SUCCESS: no error";
    case DUPLEX_NOT_READY:
      return "DUPLEX_NOT_READY: the event has not completed yet";
    case DUPLEX_ERROR_INVALID_ARGUMENT:
      return "DUPLEX_ERROR_INVALID_ARGUMENT: a null pointer, zero size or unknown enum value";
    case DUPLEX_ERROR_INVALID_HANDLE:
      return "DUPLEX_ERROR_INVALID_HANDLE: not a live handle of that kind (stale or never created)";
    case DUPLEX_ERROR_DEVICE_CLOSED:
      return "DUPLEX_ERROR_DEVICE_CLOSED: the handle belongs to a closed device";
    case DUPLEX_ERROR_ALREADY_OPEN:
      return "DUPLEX_ERROR_ALREADY_OPEN: a device is already open (one at a time)";
    case DUPLEX_ERROR_CONFIG:
      return "DUPLEX_ERROR_CONFIG: the system configuration cannot be loaded or has no Logic-PIM";
    case DUPLEX_ERROR_UNSUPPORTED:
      return "DUPLEX_ERROR_UNSUPPORTED: not supported by this driver";
    case DUPLEX_ERROR_OUT_OF_MEMORY:
      return "DUPLEX_ERROR_OUT_OF_MEMORY: no free device memory of that size in the requested space";
    case DUPLEX_ERROR_INVALID_DEVPTR:
      return "DUPLEX_ERROR_INVALID_DEVPTR: not a live allocation (double free?)";
    case DUPLEX_ERROR_QUEUE_FULL:
      return "DUPLEX_ERROR_QUEUE_FULL: the queue (or the device ring) holds its maximum of unfinished commands";
    case DUPLEX_ERROR_TIMEOUT:
      return "DUPLEX_ERROR_TIMEOUT: the device did not complete within the simulated-time limit";
    case DUPLEX_ERROR_DEVICE_BAD_OPCODE:
      return "DUPLEX_ERROR_DEVICE_BAD_OPCODE: the device rejected an unknown opcode";
    case DUPLEX_ERROR_DEVICE_OUT_OF_RANGE:
      return "DUPLEX_ERROR_DEVICE_OUT_OF_RANGE: the device rejected an address range outside its memory";
    case DUPLEX_ERROR_DEVICE_MISALIGNED:
      return "DUPLEX_ERROR_DEVICE_MISALIGNED: the device rejected a device address not aligned to 32 bytes";
    case DUPLEX_ERROR_DEVICE_BUFFER_OVERFLOW:
      return "DUPLEX_ERROR_DEVICE_BUFFER_OVERFLOW: the device rejected a PIM operand larger than its buffer";
    case DUPLEX_ERROR_DEVICE_RING_OVERFLOW:
      return "DUPLEX_ERROR_DEVICE_RING_OVERFLOW: the device rejected a doorbell past the ring's capacity";
    case DUPLEX_ERROR_DEVICE_BAD_SHAPE:
      return "DUPLEX_ERROR_DEVICE_BAD_SHAPE: the device rejected a zero dimension or an oversized transfer";
    case DUPLEX_ERROR_DEVICE_DMA:
      return "DUPLEX_ERROR_DEVICE_DMA: the host memory rejected the device's DMA";
    case DUPLEX_ERROR_DEVICE_BAD_CONFIG:
      return "DUPLEX_ERROR_DEVICE_BAD_CONFIG: the device's ring or completion queue is misprogrammed";
    case DUPLEX_ERROR_INTERNAL:
      return "DUPLEX_ERROR_INTERNAL: a driver or simulator bug";
    case DUPLEX_ERROR_DEVICE_BAD_ARGUMENT:
      return "DUPLEX_ERROR_DEVICE_BAD_ARGUMENT: the device rejected an argument outside its enumeration";
  }
  return "unknown duplex_status value";
}

const char* duplex_last_error(void) {
  return Driver::instance().last_error().c_str();
}

duplex_status duplex_open(const char* system, duplex_device* out_device) {
  return guarded("duplex_open", [&](Driver& d) { return d.open(system, out_device); });
}
duplex_status duplex_close(duplex_device device) {
  return guarded("duplex_close", [&](Driver& d) { return d.close(device); });
}
duplex_status duplex_get_caps(duplex_device device, duplex_caps* out_caps) {
  return guarded("duplex_get_caps", [&](Driver& d) { return d.caps(device, out_caps); });
}
duplex_status duplex_mem_alloc(duplex_device device, uint64_t bytes, duplex_mem_space hint,
                               duplex_devptr* out_ptr) {
  return guarded("duplex_mem_alloc", [&](Driver& d) { return d.mem_alloc(device, bytes, hint, out_ptr); });
}
duplex_status duplex_mem_free(duplex_device device, duplex_devptr ptr) {
  return guarded("duplex_mem_free", [&](Driver& d) { return d.mem_free(device, ptr); });
}
duplex_status duplex_mem_space_of(duplex_device device, duplex_devptr ptr, int* out_space) {
  return guarded("duplex_mem_space_of", [&](Driver& d) { return d.mem_space_of(device, ptr, out_space); });
}
duplex_status duplex_memcpy_h2d(duplex_device device, duplex_devptr dst, const void* src, uint64_t bytes) {
  // The window onto src is read-only (writable = false): the const is never cast away for a write.
  return guarded("duplex_memcpy_h2d",
                 [&](Driver& d) { return d.memcpy(device, dst, const_cast<void*>(src), bytes, true); });
}
duplex_status duplex_memcpy_d2h(duplex_device device, void* dst, duplex_devptr src, uint64_t bytes) {
  return guarded("duplex_memcpy_d2h", [&](Driver& d) { return d.memcpy(device, src, dst, bytes, false); });
}
duplex_status duplex_queue_create(duplex_device device, uint32_t depth, duplex_queue* out_queue) {
  return guarded("duplex_queue_create", [&](Driver& d) { return d.queue_create(device, depth, out_queue); });
}
duplex_status duplex_queue_destroy(duplex_queue queue) {
  return guarded("duplex_queue_destroy", [&](Driver& d) { return d.queue_destroy(queue); });
}
duplex_status duplex_queue_synchronize(duplex_queue queue) {
  return guarded("duplex_queue_synchronize", [&](Driver& d) { return d.queue_synchronize(queue); });
}
duplex_status duplex_submit_gemv(duplex_queue queue, duplex_devptr w, duplex_devptr x, duplex_devptr y,
                                 uint64_t tokens, uint64_t rows, uint64_t cols) {
  return guarded("duplex_submit_gemv",
                 [&](Driver& d) { return d.submit(queue, Opcode::kPimGemv, {w, x, y, tokens, rows, cols}); });
}
duplex_status duplex_submit_gemv_bias(duplex_queue queue, duplex_devptr w, duplex_devptr x, duplex_devptr y,
                                      uint64_t tokens, uint64_t rows, uint64_t cols, duplex_devptr bias) {
  return guarded("duplex_submit_gemv_bias", [&](Driver& d) {
    return d.submit(queue, Opcode::kPimGemv, {w, x, y, tokens, rows, cols, bias}, hostif::kPimGemvFlagBias);
  });
}
namespace {
// kPimAttention with the given flags (kPimAttentionFlagSinks: the sinks follow q); `api`: the caller's name.
duplex_status submit_attention(const char* api, duplex_queue queue, duplex_devptr q, duplex_devptr k,
                               duplex_devptr v, duplex_devptr out, uint64_t group, uint64_t context,
                               uint32_t head_dim, uint16_t scale_fp16, uint16_t softcap_fp16,
                               std::uint16_t flags) {
  return guarded(api, [&](Driver& d) {
    if (!duplex::pim::softcap_valid(softcap_fp16))
      return d.fail(DUPLEX_ERROR_INVALID_ARGUMENT,
                    fmt::format("{}: softcap_fp16 0x{:04x} is not a logit soft-cap; expected "
                                "+0 (0x0000, none) or the FP16 bits of a finite cap > 0",
                                api, softcap_fp16));
    return d.submit(
        queue, Opcode::kPimAttention,
        {q, k, v, out, group, context,
         std::uint64_t{head_dim} | std::uint64_t{scale_fp16} << 32 | std::uint64_t{softcap_fp16} << 48},
        flags);
  });
}
}  // namespace
duplex_status duplex_submit_attention(duplex_queue queue, duplex_devptr q, duplex_devptr k, duplex_devptr v,
                                      duplex_devptr out, uint64_t group, uint64_t context, uint32_t head_dim,
                                      uint16_t scale_fp16, uint16_t softcap_fp16) {
  return submit_attention("duplex_submit_attention", queue, q, k, v, out, group, context, head_dim,
                          scale_fp16, softcap_fp16, 0);
}
duplex_status duplex_submit_attention_sinks(duplex_queue queue, duplex_devptr q_sinks, duplex_devptr k,
                                            duplex_devptr v, duplex_devptr out, uint64_t group,
                                            uint64_t context, uint32_t head_dim, uint16_t scale_fp16,
                                            uint16_t softcap_fp16) {
  return submit_attention("duplex_submit_attention_sinks", queue, q_sinks, k, v, out, group, context,
                          head_dim, scale_fp16, softcap_fp16, hostif::kPimAttentionFlagSinks);
}
duplex_status duplex_submit_activation_mode(duplex_queue queue, duplex_activation mode, duplex_devptr a,
                                            duplex_devptr b, duplex_devptr out, uint64_t elements) {
  return guarded("duplex_submit_activation_mode", [&](Driver& d) {
    // A C caller may pass any int (a C enum is an int): read it as one, without loading an invalid enum.
    static_assert(sizeof(duplex_activation) == sizeof(int));
    int value = 0;
    std::memcpy(&value, &mode, sizeof value);
    if (value < DUPLEX_ACTIVATION_SILU_GATE || value > DUPLEX_ACTIVATION_SWIGLU_OAI_GATE)
      return d.fail(DUPLEX_ERROR_INVALID_ARGUMENT,
                    fmt::format("duplex_submit_activation_mode: unknown activation mode {}; expected a "
                                "duplex_activation, DUPLEX_ACTIVATION_SILU_GATE (0) .. "
                                "DUPLEX_ACTIVATION_SWIGLU_OAI_GATE (8)",
                                value));
    return d.submit(queue, Opcode::kPimActivation, {a, b, out, elements, static_cast<std::uint64_t>(value)});
  });
}
duplex_status duplex_submit_activation(duplex_queue queue, duplex_devptr gate, duplex_devptr up,
                                       duplex_devptr out, uint64_t elements) {
  return guarded("duplex_submit_activation", [&](Driver& d) {
    return d.submit(queue, Opcode::kPimActivation,
                    {gate, up, out, elements, static_cast<std::uint64_t>(DUPLEX_ACTIVATION_SILU_GATE)});
  });
}
duplex_status duplex_submit_raw(duplex_queue queue, uint16_t opcode, const uint64_t args[7]) {
  return guarded("duplex_submit_raw", [&](Driver& d) {
    if (args == nullptr) return d.fail(DUPLEX_ERROR_INVALID_ARGUMENT, "duplex_submit_raw: args is null");
    return d.submit(queue, static_cast<Opcode>(opcode),
                    {args[0], args[1], args[2], args[3], args[4], args[5], args[6]});
  });
}
duplex_status duplex_event_record(duplex_queue queue, duplex_event* out_event) {
  return guarded("duplex_event_record", [&](Driver& d) { return d.event_record(queue, out_event); });
}
duplex_status duplex_event_query(duplex_event event) {
  return guarded("duplex_event_query", [&](Driver& d) { return d.event_query(event); });
}
duplex_status duplex_event_synchronize(duplex_event event) {
  return guarded("duplex_event_synchronize", [&](Driver& d) { return d.event_synchronize(event); });
}
duplex_status duplex_event_time(duplex_event event, uint64_t* out_time_ps) {
  return guarded("duplex_event_time", [&](Driver& d) { return d.event_time(event, out_time_ps); });
}
duplex_status duplex_event_destroy(duplex_event event) {
  return guarded("duplex_event_destroy", [&](Driver& d) { return d.event_destroy(event); });
}
duplex_status duplex_read_counters(duplex_device device, duplex_counters* out_counters) {
  return guarded("duplex_read_counters", [&](Driver& d) { return d.read_counters(device, out_counters); });
}

}  // extern "C"

// libsystemc references sc_main. A plain host program (its own main(), no sc_main) links the driver, which
// then runs its simulation without the SystemC entry point; this weak definition resolves the reference and
// any program that defines sc_main overrides it. Reached only if a program lacking main() is started through
// libsystemc's main(): that is a build mistake, reported as such.
__attribute__((weak)) int sc_main(int, char**) {
  std::fputs("duplex driver: this program defines neither main() nor sc_main()\n", stderr);
  return 1;
}
