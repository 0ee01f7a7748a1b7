#include "duplex/sysc/duplex_device.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <vector>

#include <fmt/format.h>

namespace duplex::sysc {

using hostif::Opcode;
using hostif::Status;

namespace {
sc_core::sc_time to_sc(Time t) {
  return sc_core::sc_time(to_ps(t), sc_core::SC_PS);
}
sc_core::sc_time ticks_to_sc(Tick t) {
  return sc_core::sc_time(static_cast<double>(t), sc_core::SC_PS);
}
bool valid_queue_size(std::uint32_t n) {
  return n >= 2 && n <= 65536 && std::has_single_bit(n);
}
}  // namespace

DuplexDevice::DuplexDevice(sc_core::sc_module_name name, const SystemSpec& system,
                           std::unique_ptr<pim::Datapath> datapath, const DeviceConfig& config)
    : sc_core::sc_module(name),
      mmio("mmio"),
      memory("memory"),
      host_dma("host_dma"),
      irq("irq"),
      system_(system),
      config_(config),
      memory_(system.memory_capacity().bytes),
      timing_(system.memory, system.stacks,
              system.pim && system.pim->kind == PimKind::kLogicPim ? system.pim->banks_per_bundle
                                                                   : system.memory.org.banks_per_rank() / 2),
      pim_(system.memory,
           system.pim ? *system.pim : throw Error(fmt::format("system '{}' has no Logic-PIM", system.name)),
           memory_,
           datapath ? std::move(datapath) : pim::make_datapath(system.pim->datapath, pim::DatapathParams{})) {
  mmio.register_b_transport(this, &DuplexDevice::mmio_transport);
  memory.register_b_transport(this, &DuplexDevice::memory_transport);
  SC_THREAD(command_thread);
  SC_METHOD(irq_method);
  sensitive << irq_event_;
}

ActionCounters DuplexDevice::counters() const {
  ActionCounters c = timing_.counters();
  c += pim_.counters();
  return c;
}

Tick DuplexDevice::now_ticks() const {
  return static_cast<Tick>(sc_core::sc_time_stamp().to_seconds() * 1e12 + 0.5);
}

void DuplexDevice::irq_method() {
  irq.write((irq_status_ & irq_enable_) != 0);
}

void DuplexDevice::raise_error(Status s) {
  error_ = true;
  error_code_ = static_cast<std::uint32_t>(s);
  irq_status_ |= hostif::kIrqError;
  irq_event_.notify(sc_core::SC_ZERO_TIME);
}

std::uint32_t DuplexDevice::read_register(std::uint32_t offset) const {
  switch (offset) {
    case hostif::kRegId:
      return hostif::kDeviceId;
    case hostif::kRegVersion:
      return hostif::kVersion;
    case hostif::kRegCaps:
      return static_cast<std::uint32_t>(system_.stacks) | (1u << 8) | (1u << 9) | ((65536u / 256u) << 16);
    case hostif::kRegStatus:
      return hostif::kStatusReady | (busy_ ? hostif::kStatusBusy : 0u) | (error_ ? hostif::kStatusError : 0u);
    case hostif::kRegErrorCode:
      return error_code_;
    case hostif::kRegIrqStatus:
      return irq_status_;
    case hostif::kRegIrqEnable:
      return irq_enable_;
    case hostif::kRegRingBaseLo:
      return static_cast<std::uint32_t>(ring_base_);
    case hostif::kRegRingBaseHi:
      return static_cast<std::uint32_t>(ring_base_ >> 32);
    case hostif::kRegRingSize:
      return ring_size_;
    case hostif::kRegRingHead:
      return ring_head_;
    case hostif::kRegRingTail:
      return ring_tail_;
    case hostif::kRegCqBaseLo:
      return static_cast<std::uint32_t>(cq_base_);
    case hostif::kRegCqBaseHi:
      return static_cast<std::uint32_t>(cq_base_ >> 32);
    case hostif::kRegCqSize:
      return cq_size_;
    case hostif::kRegCqHead:
      return cq_head_;
    case hostif::kRegCqTail:
      return cq_tail_;
    case hostif::kRegCompleted:
      return completed_;
    case hostif::kRegErrors:
      return errors_;
    default:
      return 0;
  }
}

void DuplexDevice::write_register(std::uint32_t offset, std::uint32_t v) {
  const bool idle = ring_head_ == ring_tail_ && !busy_;
  auto queue_config = [&](auto apply) {
    if (!idle) return raise_error(Status::kBadConfig);
    apply();
  };
  switch (offset) {
    case hostif::kRegIrqStatus:
      irq_status_ &= ~v;
      break;
    case hostif::kRegIrqEnable:
      irq_enable_ = v;
      break;
    case hostif::kRegControl:
      if (v & hostif::kControlClearError) {
        error_ = false;
        error_code_ = 0;
      }
      if (v & hostif::kControlReset)
        queue_config([&] {
          ring_head_ = ring_tail_ = cq_head_ = cq_tail_ = 0;
          rejected_.clear();
        });
      break;
    case hostif::kRegRingBaseLo:
      queue_config([&] { ring_base_ = (ring_base_ & ~0xFFFFFFFFull) | v; });
      break;
    case hostif::kRegRingBaseHi:
      queue_config([&] { ring_base_ = (ring_base_ & 0xFFFFFFFFull) | (std::uint64_t{v} << 32); });
      break;
    case hostif::kRegRingSize:
      if (!valid_queue_size(v))
        raise_error(Status::kBadConfig);
      else
        queue_config([&] { ring_size_ = v; });
      break;
    case hostif::kRegRingTail:
      doorbell(v);
      break;
    case hostif::kRegCqBaseLo:
      queue_config([&] { cq_base_ = (cq_base_ & ~0xFFFFFFFFull) | v; });
      break;
    case hostif::kRegCqBaseHi:
      queue_config([&] { cq_base_ = (cq_base_ & 0xFFFFFFFFull) | (std::uint64_t{v} << 32); });
      break;
    case hostif::kRegCqSize:
      if (!valid_queue_size(v))
        raise_error(Status::kBadConfig);
      else
        queue_config([&] { cq_size_ = v; });
      break;
    case hostif::kRegCqHead:
      if (v - cq_head_ <= cq_tail_ - cq_head_) {
        cq_head_ = v;
        cq_space_event_.notify(sc_core::SC_ZERO_TIME);
      } else {
        raise_error(Status::kBadConfig);
      }
      break;
    default:
      break;  // read-only registers ignore writes
  }
  irq_event_.notify(sc_core::SC_ZERO_TIME);
}

void DuplexDevice::doorbell(std::uint32_t tail) {
  const bool ring_ok =
      ring_size_ != 0 && ring_base_ % hostif::kDescriptorBytes == 0 &&
      check_device_range(ring_base_, std::uint64_t{ring_size_} * hostif::kDescriptorBytes) == Status::kOk;
  const bool cq_ok =
      cq_size_ != 0 && cq_base_ % hostif::kCompletionBytes == 0 &&
      check_device_range(cq_base_, std::uint64_t{cq_size_} * hostif::kCompletionBytes) == Status::kOk;
  if (!ring_ok || !cq_ok) {
    raise_error(Status::kBadConfig);
    return;  // no completion queue to post to
  }
  const bool backwards = static_cast<std::int32_t>(tail - ring_tail_) < 0;
  if (backwards || tail - ring_head_ > ring_size_) {
    hostif::CompletionEntry c;
    c.seq = tail;
    c.status = Status::kRingOverflow;
    c.opcode = Opcode::kDoorbell;
    rejected_.push_back(c);
  } else {
    ring_tail_ = tail;
  }
  doorbell_event_.notify(sc_core::SC_ZERO_TIME);
}

void DuplexDevice::mmio_transport(tlm::tlm_generic_payload& p, sc_core::sc_time& delay) {
  const std::uint64_t a = p.get_address();
  if (p.get_data_length() != 4 || a % 4 != 0 || a >= hostif::kRegEnd || p.get_byte_enable_ptr() != nullptr) {
    p.set_response_status(tlm::TLM_ADDRESS_ERROR_RESPONSE);
    return;
  }
  const auto offset = static_cast<std::uint32_t>(a);
  std::uint8_t* data = p.get_data_ptr();
  if (p.is_read()) {
    const std::uint32_t v = read_register(offset);
    for (int i = 0; i < 4; ++i) data[i] = static_cast<std::uint8_t>(v >> (8 * i));
  } else if (p.is_write()) {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(data[i]) << (8 * i);
    write_register(offset, v);
  }
  delay += to_sc(config_.mmio_latency);
  p.set_response_status(tlm::TLM_OK_RESPONSE);
}

void DuplexDevice::memory_transport(tlm::tlm_generic_payload& p, sc_core::sc_time& delay) {
  const std::uint64_t a = p.get_address();
  const std::uint64_t n = p.get_data_length();
  if (p.get_byte_enable_ptr() != nullptr) {
    p.set_response_status(tlm::TLM_BYTE_ENABLE_ERROR_RESPONSE);
    return;
  }
  if (n == 0 || check_device_range(a, n) != Status::kOk) {
    p.set_response_status(tlm::TLM_ADDRESS_ERROR_RESPONSE);
    return;
  }
  if (p.is_read())
    memory_.read(a, p.get_data_ptr(), n);
  else if (p.is_write())
    memory_.write(a, p.get_data_ptr(), n);
  const Tick at = now_ticks() + static_cast<Tick>(delay.to_seconds() * 1e12 + 0.5);
  delay += ticks_to_sc(timing_.access(a, n, p.is_write(), at) - at);
  p.set_response_status(tlm::TLM_OK_RESPONSE);
}

Status DuplexDevice::check_device_range(std::uint64_t addr, std::uint64_t bytes) const {
  return addr <= memory_.capacity() && bytes <= memory_.capacity() - addr ? Status::kOk : Status::kOutOfRange;
}

void DuplexDevice::post(const hostif::CompletionEntry& c) {
  while (cq_tail_ - cq_head_ >= cq_size_) wait(cq_space_event_);
  const auto bytes = hostif::encode(c);
  const std::uint64_t at = cq_base_ + std::uint64_t{cq_tail_ % cq_size_} * hostif::kCompletionBytes;
  memory_.write(at, bytes.data(), bytes.size());
  const Tick now = now_ticks();
  wait(ticks_to_sc(timing_.access(at, bytes.size(), true, now) - now));
  ++cq_tail_;
  ++completed_;
  irq_status_ |= hostif::kIrqCompletion;
  if (c.status != Status::kOk) {
    ++errors_;
    raise_error(c.status);
  }
  irq_event_.notify(sc_core::SC_ZERO_TIME);
}

void DuplexDevice::command_thread() {
  for (;;) {
    while (ring_head_ == ring_tail_ && rejected_.empty()) {
      busy_ = false;
      wait(doorbell_event_);
    }
    busy_ = true;
    if (!rejected_.empty()) {
      const hostif::CompletionEntry c = rejected_.front();
      rejected_.pop_front();
      post(c);
      continue;
    }
    const std::uint64_t at = ring_base_ + std::uint64_t{ring_head_ % ring_size_} * hostif::kDescriptorBytes;
    std::uint8_t bytes[hostif::kDescriptorBytes];
    memory_.read(at, bytes, sizeof bytes);
    const Tick now = now_ticks();
    wait(ticks_to_sc(timing_.access(at, sizeof bytes, false, now) - now));
    const hostif::CommandDescriptor d = hostif::decode_descriptor(bytes);
    sc_core::sc_time elapsed = sc_core::SC_ZERO_TIME;
    hostif::CompletionEntry c = execute(d, elapsed);
    wait(elapsed);
    c.device_time_ps = static_cast<std::uint64_t>(elapsed.to_seconds() * 1e12 + 0.5);
    ++ring_head_;
    post(c);
  }
}

hostif::CompletionEntry DuplexDevice::execute(const hostif::CommandDescriptor& d, sc_core::sc_time& elapsed) {
  hostif::CompletionEntry c;
  c.seq = d.seq;
  c.opcode = d.opcode;
  switch (d.opcode) {
    case Opcode::kNop:
      c.status = Status::kOk;
      break;
    case Opcode::kDmaToDevice:
      c.status = dma(d, true, elapsed);
      break;
    case Opcode::kDmaToHost:
      c.status = dma(d, false, elapsed);
      break;
    case Opcode::kPimGemv:
    case Opcode::kPimAttention:
    case Opcode::kPimActivation: {
      const PimCommandResult r = pim_.run_command(d);
      c.status = r.status;
      if (r.status == Status::kOk) elapsed = to_sc(r.timing.total);
      break;
    }
    default:
      c.status = Status::kBadOpcode;
      break;
  }
  return c;
}

Status DuplexDevice::dma(const hostif::CommandDescriptor& d, bool to_device, sc_core::sc_time& elapsed) {
  const std::uint64_t host = d.args[0], dev = d.args[1], bytes = d.args[2];
  if (bytes == 0 || bytes > config_.max_dma_bytes) return Status::kBadShape;
  if (dev % system_.memory.org.access_granularity.bytes != 0) return Status::kMisaligned;
  if (check_device_range(dev, bytes) != Status::kOk) return Status::kOutOfRange;
  std::vector<std::uint8_t> buf(bytes);
  tlm::tlm_generic_payload p;
  sc_core::sc_time host_delay = sc_core::SC_ZERO_TIME;
  p.set_address(host);
  p.set_data_ptr(buf.data());
  p.set_data_length(static_cast<unsigned int>(bytes));
  p.set_streaming_width(static_cast<unsigned int>(bytes));
  p.set_byte_enable_ptr(nullptr);
  p.set_dmi_allowed(false);
  if (to_device) {
    p.set_command(tlm::TLM_READ_COMMAND);
    p.set_response_status(tlm::TLM_INCOMPLETE_RESPONSE);
    host_dma->b_transport(p, host_delay);
    if (p.is_response_error()) return Status::kDmaError;
    memory_.write(dev, buf.data(), bytes);
  } else {
    memory_.read(dev, buf.data(), bytes);
    p.set_command(tlm::TLM_WRITE_COMMAND);
    p.set_response_status(tlm::TLM_INCOMPLETE_RESPONSE);
    host_dma->b_transport(p, host_delay);
    if (p.is_response_error()) return Status::kDmaError;
  }
  // The link and device memory stream side by side; the slower one sets the pace.
  const Tick now = now_ticks();
  const sc_core::sc_time hbm = ticks_to_sc(timing_.access(dev, bytes, to_device, now) - now);
  const sc_core::sc_time link =
      to_sc(config_.dma_latency + transfer_time(static_cast<double>(bytes), config_.dma_bandwidth)) +
      host_delay;
  elapsed = std::max(hbm, link);
  return Status::kOk;
}

}  // namespace duplex::sysc
