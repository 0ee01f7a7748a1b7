// Logic-PIM command arguments and validation (contract: pim_command.hpp).
#include "duplex/sysc/pim_command.hpp"

#include <limits>
#include <string>

#include <fmt/format.h>

#include "duplex/rtl/golden_datapath.hpp"

namespace duplex::sysc {

using hostif::Opcode;
using hostif::Status;

namespace {

std::int64_t as_int(std::uint64_t v) {
  return static_cast<std::int64_t>(v);
}

// Misaligned, then out of range: [addr, addr + bytes) must lie inside [0, memory_bytes).
void check_operand(const HbmSpec& hbm, std::uint64_t memory_bytes, std::uint64_t addr, std::uint64_t bytes,
                   const char* name) {
  const std::uint64_t align = hbm.org.access_granularity.bytes;
  if (addr % align != 0)
    throw PimOpError(
        PimFault::kMisaligned,
        fmt::format("PIM operand {} at 0x{:x} is not aligned to the {} B access", name, addr, align));
  if (addr > memory_bytes || bytes > memory_bytes - addr)
    throw PimOpError(PimFault::kOutOfRange,
                     fmt::format("PIM operand {} [0x{:x}, +{}) is outside the {} B of device memory", name,
                                 addr, bytes, memory_bytes));
}

// A flag bit the opcode does not define: kBadArgument naming the flags.
void check_flags(hostif::Opcode op, std::uint16_t flags, const char* what) {
  const std::uint16_t defined = hostif::pim_flags_defined(op);
  if ((flags & ~defined) != 0)
    throw PimOpError(
        PimFault::kBadArgument,
        fmt::format("PIM {}: flags 0x{:04x} (descriptor bits [31:16]); expected {}", what, flags,
                    defined == 0 ? std::string("0 (no flags)")
                                 : fmt::format("0 or 0x{:04x} (bit 0: {})", defined,
                                               op == Opcode::kPimGemv ? "a bias at a6" : "sinks after q")));
}

}  // namespace

std::uint64_t fp16_bytes(std::int64_t a, std::int64_t b) {
  std::uint64_t elements = 0;
  std::uint64_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<std::uint64_t>(a), static_cast<std::uint64_t>(b), &elements) ||
      __builtin_mul_overflow(elements, std::uint64_t{2}, &bytes))
    return std::numeric_limits<std::uint64_t>::max();
  return bytes;
}

bool is_pim_opcode(Opcode op) {
  return op == Opcode::kPimGemv || op == Opcode::kPimAttention || op == Opcode::kPimActivation;
}

GemvArgs gemv_args(const hostif::CommandDescriptor& d) {
  const auto& a = d.args;
  GemvArgs r{a[0], a[1], a[2], as_int(a[3]), as_int(a[4]), as_int(a[5])};
  r.flags = d.flags;
  r.bias = a[6];
  return r;
}

AttentionArgs attention_args(const hostif::CommandDescriptor& d) {
  const auto& a = d.args;
  AttentionArgs r{a[0], a[1], a[2], a[3], as_int(a[4]), as_int(a[5]), as_int(a[6] & 0xFFFFFFFFu)};
  r.scale = static_cast<std::uint16_t>(a[6] >> 32);
  r.softcap = static_cast<std::uint16_t>(a[6] >> 48);
  r.flags = d.flags;
  return r;
}

ActivationArgs activation_args(const hostif::CommandDescriptor& d) {
  const auto& a = d.args;
  ActivationArgs r{a[0], a[1], a[2], as_int(a[3]), a[4]};
  r.flags = d.flags;
  return r;
}

PimOpShape shape_of(const GemvArgs& a) {
  PimOpShape s;
  s.kind = PimOpKind::kGemv;
  s.tokens = a.tokens;
  s.rows = a.rows;
  s.cols = a.cols;
  s.bias = a.has_bias();
  return s;
}

PimOpShape shape_of(const AttentionArgs& a) {
  PimOpShape s;
  s.kind = PimOpKind::kAttention;
  s.group_size = a.group;
  s.context = a.context;
  s.head_dim = a.head_dim;
  s.kv_heads = 1;
  s.softcap = a.softcap != 0;
  s.sinks = a.sinks();
  return s;
}

PimOpShape shape_of(const ActivationArgs& a) {
  PimOpShape s;
  s.kind = PimOpKind::kActivation;
  s.elements = a.elements;
  s.activation_mode = activation_mode_of(a.mode);
  return s;
}

PimOpShape shape_of(const hostif::CommandDescriptor& d) {
  switch (d.opcode) {
    case Opcode::kPimGemv:
      return shape_of(gemv_args(d));
    case Opcode::kPimAttention:
      return shape_of(attention_args(d));
    case Opcode::kPimActivation:
      return shape_of(activation_args(d));
    default:
      throw Error(fmt::format("shape_of: opcode 0x{:x} is not a PIM command; expected 0x10..0x12",
                              static_cast<unsigned>(d.opcode)));
  }
}

void check_gemv(const HbmSpec& hbm, const PimSpec& pim, std::uint64_t memory_bytes, const GemvArgs& a) {
  check_pim_op(hbm, pim, shape_of(a));
  check_flags(Opcode::kPimGemv, a.flags, "GEMV");
  check_operand(hbm, memory_bytes, a.weights, fp16_bytes(a.rows, a.cols), "weights");
  check_operand(hbm, memory_bytes, a.inputs, fp16_bytes(a.tokens, a.cols), "inputs");
  check_operand(hbm, memory_bytes, a.outputs, fp16_bytes(a.tokens, a.rows), "outputs");
  if (a.has_bias()) check_operand(hbm, memory_bytes, a.bias, fp16_bytes(a.rows, 1), "bias");
}

void check_attention(const HbmSpec& hbm, const PimSpec& pim, std::uint64_t memory_bytes,
                     const AttentionArgs& a) {
  check_pim_op(hbm, pim, shape_of(a));
  check_flags(Opcode::kPimAttention, a.flags, "attention");
  if (!pim::softcap_valid(a.softcap))  // after the shape, before the operands (as the activation mode)
    throw PimOpError(PimFault::kBadArgument,
                     fmt::format("PIM attention: softcap 0x{:04x} (a6 bits [63:48]); expected +0 (no cap) or "
                                 "the FP16 bits of a finite cap > 0",
                                 a.softcap));
  // With sinks, q [group][head_dim] is followed by group FP16 sink logits: one more element per head.
  check_operand(hbm, memory_bytes, a.q, fp16_bytes(a.group, a.head_dim + (a.sinks() ? 1 : 0)),
                a.sinks() ? "q (with its sinks)" : "q");
  check_operand(hbm, memory_bytes, a.k, fp16_bytes(a.context, a.head_dim), "k");
  check_operand(hbm, memory_bytes, a.v, fp16_bytes(a.context, a.head_dim), "v");
  check_operand(hbm, memory_bytes, a.out, fp16_bytes(a.group, a.head_dim), "out");
}

void check_activation(const HbmSpec& hbm, const PimSpec& pim, std::uint64_t memory_bytes,
                      const ActivationArgs& a) {
  PimOpShape shape;
  shape.kind = PimOpKind::kActivation;
  shape.elements = a.elements;
  check_pim_op(hbm, pim, shape);  // the element count (kBadShape) before the mode
  check_flags(Opcode::kPimActivation, a.flags, "activation");  // kBadArgument
  activation_mode_of(a.mode);                                  // kBadArgument
  const std::uint64_t bytes = fp16_bytes(a.elements, 1);
  check_operand(hbm, memory_bytes, a.gate, bytes, "gate");
  check_operand(hbm, memory_bytes, a.up, bytes, "up");
  check_operand(hbm, memory_bytes, a.out, bytes, "out");
}

Status to_status(PimFault fault) {
  switch (fault) {
    case PimFault::kMisaligned:
      return Status::kMisaligned;
    case PimFault::kOutOfRange:
      return Status::kOutOfRange;
    case PimFault::kBufferOverflow:
      return Status::kBufferOverflow;
    case PimFault::kBadShape:
      return Status::kBadShape;
    case PimFault::kBadArgument:
      return Status::kBadArgument;
  }
  DUPLEX_ASSERT(false, "unknown PimFault");
  return Status::kBadShape;
}

Status check_pim_command(const HbmSpec& hbm, const PimSpec& pim, std::uint64_t memory_bytes,
                         const hostif::CommandDescriptor& d) {
  try {
    switch (d.opcode) {
      case Opcode::kPimGemv:
        check_gemv(hbm, pim, memory_bytes, gemv_args(d));
        return Status::kOk;
      case Opcode::kPimAttention:
        check_attention(hbm, pim, memory_bytes, attention_args(d));
        return Status::kOk;
      case Opcode::kPimActivation:
        check_activation(hbm, pim, memory_bytes, activation_args(d));
        return Status::kOk;
      default:
        return Status::kBadOpcode;
    }
  } catch (const PimOpError& e) {
    return to_status(e.fault());
  }
}

}  // namespace duplex::sysc
