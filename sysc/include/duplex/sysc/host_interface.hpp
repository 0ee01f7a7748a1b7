#pragma once
// The Duplex device as a driver sees it: MMIO register map, command descriptor and completion entry
// formats, opcodes and status codes. Plain data; the SystemC DuplexDevice implements it.
//
// Protocol. The driver writes a ring of 64-byte command descriptors in device memory, programs RING_BASE /
// RING_SIZE and a completion queue (CQ_BASE / CQ_SIZE, 16-byte entries), then rings the doorbell by writing
// RING_TAIL. Head and tail registers are free-running 32-bit counters (slot = counter % size). The device
// consumes descriptors in order, executes each, writes a completion entry at CQ slot CQ_TAIL % CQ_SIZE,
// advances CQ_TAIL, and raises the interrupt line when IRQ_STATUS & IRQ_ENABLE is non-zero. The driver
// consumes completions and writes CQ_HEAD; the device waits while the completion queue is full.
// A malformed command completes with a non-zero status and sets STATUS.ERROR / ERROR_CODE; the device keeps
// serving the commands after it. A doorbell that would overflow the ring (tail - head > size, or a tail
// moving backwards) is rejected: RING_TAIL is unchanged and an error completion (opcode kDoorbell) is posted.
// All fields are little-endian.
#include <array>
#include <cstdint>

namespace duplex::sysc::hostif {

inline constexpr std::uint32_t kDeviceId = 0x44504C58;  // "DPLX"
inline constexpr std::uint32_t kVersion = 0x00010000;   // 1.0

// Register offsets (32-bit registers; 32-bit aligned accesses only).
enum Reg : std::uint32_t {
  kRegId = 0x00,          // RO
  kRegVersion = 0x04,     // RO
  kRegCaps = 0x08,        // RO: [7:0] stacks, bit 8 Logic-PIM, bit 9 DMA, [31:16] max ring entries / 256
  kRegStatus = 0x0C,      // RO: bit 0 ready, bit 1 busy, bit 2 error
  kRegErrorCode = 0x10,   // RO: last error status; any write to kRegControl bit 1 clears it and STATUS.error
  kRegIrqStatus = 0x14,   // write 1 to clear: bit 0 completion, bit 1 error
  kRegIrqEnable = 0x18,   // RW
  kRegControl = 0x1C,     // WO: bit 0 reset queues (device must be idle), bit 1 clear error
  kRegRingBaseLo = 0x20,  // RW (only while the ring is empty)
  kRegRingBaseHi = 0x24,
  kRegRingSize = 0x28,  // entries, power of two, 2..65536
  kRegRingHead = 0x2C,  // RO, free-running
  kRegRingTail = 0x30,  // doorbell, free-running
  kRegCqBaseLo = 0x40,
  kRegCqBaseHi = 0x44,
  kRegCqSize = 0x48,     // entries, power of two, 2..65536
  kRegCqHead = 0x4C,     // written by the driver, free-running
  kRegCqTail = 0x50,     // RO, free-running
  kRegCompleted = 0x54,  // RO: commands completed (any status)
  kRegErrors = 0x58,     // RO: commands completed with an error
  kRegEnd = 0x5C,
};

inline constexpr std::uint32_t kStatusReady = 1u << 0;
inline constexpr std::uint32_t kStatusBusy = 1u << 1;
inline constexpr std::uint32_t kStatusError = 1u << 2;
inline constexpr std::uint32_t kIrqCompletion = 1u << 0;
inline constexpr std::uint32_t kIrqError = 1u << 1;
inline constexpr std::uint32_t kControlReset = 1u << 0;
inline constexpr std::uint32_t kControlClearError = 1u << 1;

enum class Opcode : std::uint16_t {
  kNop = 0x00,
  kDmaToDevice = 0x01,  // a0 host address, a1 device address, a2 bytes
  kDmaToHost = 0x02,    // a0 host address, a1 device address, a2 bytes
  // a0 W, a1 x, a2 y, a3 tokens, a4 rows, a5 cols: y[t][r] = sum_c W[r][c] x[t][c]. flags bit 0
  // (kPimGemvFlagBias): a6 = bias, FP16 [rows], y[t][r] = W x + bias[r] (each row's FP32 accumulator starts
  // at bias[r]: one FP16 rounding); without it a6 is ignored.
  kPimGemv = 0x10,
  // a0 q, a1 K, a2 V, a3 out, a4 group, a5 context, a6 head_dim | scale_fp16 << 32 | softcap_fp16 << 48 (the
  // logit soft-cap c: scores -> c tanh(scores / c); +0 none, else finite > 0; other bits: kBadArgument).
  // flags bit 0 (kPimAttentionFlagSinks): the q operand is q [group][head_dim] followed at once by `group`
  // FP16 attention-sink logits (gpt-oss: one per query head, joining each head's softmax max and sum; 2 group
  // (head_dim + 1) bytes in all).
  kPimAttention = 0x11,
  // a0 a, a1 b, a2 out, a3 elements, a4 mode (pim::ActivationMode): 0 silu-gate, out = silu(a) * b (a gate,
  // b up; a descriptor written before modes existed has a4 = 0); 1 gelu-tanh, 2 relu, 3 gelu, 4 silu (of a
  // + b, b the fc1 bias, zeros for none); 5 gelu-tanh-gate, 6 relu-gate, 7 gelu-gate (act(a) * b); 8
  // swiglu-oai-gate (gpt-oss: clamped SwiGLU, (clamp(b) + 1) g sigmoid(1.702 g), g = min(a, 7)). Any other
  // a4: kBadArgument. No flags.
  kPimActivation = 0x12,
  kDoorbell = 0xFFFF,  // completions of rejected doorbells only
};

enum class Status : std::uint16_t {
  kOk = 0,
  kBadOpcode = 1,
  kOutOfRange = 2,      // an address range outside device memory
  kMisaligned = 3,      // a device address not aligned to the 32 B access (ring/CQ bases: 64 B / 16 B)
  kBufferOverflow = 4,  // a PIM operand larger than its logic-die buffer
  kRingOverflow = 5,    // a doorbell past the ring's capacity
  kBadShape = 6,        // a zero or negative dimension, a zero-length DMA
  kDmaError = 7,        // the host memory rejected the DMA
  kBadConfig = 8,       // ring/CQ programmed with a bad size or while busy
  kBadArgument = 9,     // an argument outside its domain (kPimActivation mode a4 > 8, kPimAttention softcap,
                        // a PIM flag bit the opcode does not define)
};

// Descriptor `flags` of the PIM opcodes. flags = 0 means what it meant before flags existed (they were
// ignored then; the drivers wrote 0). A bit the opcode does not define (any bit but 0 for GEMV and
// attention, any bit for activation) completes with kBadArgument, checked after the shape and buffer limits
// and before the operands, so a descriptor written for a later device is refused rather than misread.
inline constexpr std::uint16_t kPimGemvFlagBias = 1u << 0;        // kPimGemv: a6 = bias address
inline constexpr std::uint16_t kPimAttentionFlagSinks = 1u << 0;  // kPimAttention: sinks follow q
// The flag bits each PIM opcode defines (0 for a non-PIM opcode).
constexpr std::uint16_t pim_flags_defined(Opcode op) {
  return op == Opcode::kPimGemv ? kPimGemvFlagBias : op == Opcode::kPimAttention ? kPimAttentionFlagSinks : 0;
}
const char* to_string(Status s);

inline constexpr std::uint32_t kDescriptorBytes = 64;
inline constexpr std::uint32_t kCompletionBytes = 16;

struct CommandDescriptor {
  Opcode opcode = Opcode::kNop;
  std::uint16_t flags = 0;
  std::uint32_t seq = 0;
  std::array<std::uint64_t, 7> args{};
};

struct CompletionEntry {
  std::uint32_t seq = 0;
  Status status = Status::kOk;
  Opcode opcode = Opcode::kNop;
  std::uint64_t device_time_ps = 0;  // time the command took on the device
};

std::array<std::uint8_t, kDescriptorBytes> encode(const CommandDescriptor& d);
CommandDescriptor decode_descriptor(const std::uint8_t* bytes);
std::array<std::uint8_t, kCompletionBytes> encode(const CompletionEntry& c);
CompletionEntry decode_completion(const std::uint8_t* bytes);

}  // namespace duplex::sysc::hostif
