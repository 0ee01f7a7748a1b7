#include "duplex/sysc/host_interface.hpp"

namespace duplex::sysc::hostif {

namespace {
template <class T>
void put(std::uint8_t* p, T v) {
  for (std::size_t i = 0; i < sizeof(T); ++i)
    p[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(v) >> (8 * i));
}
template <class T>
T take(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  return static_cast<T>(v);
}
}  // namespace

const char* to_string(Status s) {
  switch (s) {
    case Status::kOk:
      return "ok";
    case Status::kBadOpcode:
      return "bad opcode";
    case Status::kOutOfRange:
      return "address out of range";
    case Status::kMisaligned:
      return "misaligned address";
    case Status::kBufferOverflow:
      return "buffer overflow";
    case Status::kRingOverflow:
      return "ring overflow";
    case Status::kBadShape:
      return "bad shape";
    case Status::kDmaError:
      return "DMA error";
    case Status::kBadConfig:
      return "bad queue configuration";
    case Status::kBadArgument:
      return "bad argument";
  }
  return "unknown status";
}

std::array<std::uint8_t, kDescriptorBytes> encode(const CommandDescriptor& d) {
  std::array<std::uint8_t, kDescriptorBytes> b{};
  put(b.data(), static_cast<std::uint16_t>(d.opcode));
  put(b.data() + 2, d.flags);
  put(b.data() + 4, d.seq);
  for (std::size_t i = 0; i < d.args.size(); ++i) put(b.data() + 8 + 8 * i, d.args[i]);
  return b;
}

CommandDescriptor decode_descriptor(const std::uint8_t* b) {
  CommandDescriptor d;
  d.opcode = static_cast<Opcode>(take<std::uint16_t>(b));
  d.flags = take<std::uint16_t>(b + 2);
  d.seq = take<std::uint32_t>(b + 4);
  for (std::size_t i = 0; i < d.args.size(); ++i) d.args[i] = take<std::uint64_t>(b + 8 + 8 * i);
  return d;
}

std::array<std::uint8_t, kCompletionBytes> encode(const CompletionEntry& c) {
  std::array<std::uint8_t, kCompletionBytes> b{};
  put(b.data(), c.seq);
  put(b.data() + 4, static_cast<std::uint16_t>(c.status));
  put(b.data() + 6, static_cast<std::uint16_t>(c.opcode));
  put(b.data() + 8, c.device_time_ps);
  return b;
}

CompletionEntry decode_completion(const std::uint8_t* b) {
  CompletionEntry c;
  c.seq = take<std::uint32_t>(b);
  c.status = static_cast<Status>(take<std::uint16_t>(b + 4));
  c.opcode = static_cast<Opcode>(take<std::uint16_t>(b + 6));
  c.device_time_ps = take<std::uint64_t>(b + 8);
  return c;
}

}  // namespace duplex::sysc::hostif
