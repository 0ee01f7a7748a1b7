// Golden command decoder / sequencer (contract: pim_command_decoder.hpp; RTL:
// rtl/decoder/pim_command_decoder.sv).
#include "duplex/rtl/pim_command_decoder.hpp"

#include <initializer_list>
#include <limits>
#include <string>

#include "duplex/base/error.hpp"
#include "duplex/rtl/golden_datapath.hpp"

namespace duplex::pim {

using sysc::hostif::kPimAttentionFlagSinks;
using sysc::hostif::kPimGemvFlagBias;
using sysc::hostif::Opcode;
using sysc::hostif::Status;

namespace {

__extension__ typedef unsigned __int128 Wide;  // exact products of two 64-bit fields

std::uint64_t field(const std::uint8_t* bytes, std::size_t offset, std::size_t size) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < size; ++i) v |= std::uint64_t{bytes[offset + i]} << (8 * i);
  return v;
}

// The descriptor's fields as the decoder reads them.
struct Fields {
  std::uint16_t opcode = 0;
  std::uint16_t flags = 0;
  std::uint32_t seq = 0;
  std::uint64_t arg[7] = {};
};

Fields read_fields(const std::uint8_t* bytes) {
  Fields f;
  f.opcode = static_cast<std::uint16_t>(field(bytes, 0, 2));
  f.flags = static_cast<std::uint16_t>(field(bytes, 2, 2));
  f.seq = static_cast<std::uint32_t>(field(bytes, 4, 4));
  for (std::size_t i = 0; i < 7; ++i) f.arg[i] = field(bytes, 8 + 8 * i, 8);
  return f;
}

// >= 1 read as a signed 64-bit value.
bool positive(std::uint64_t v) {
  return v != 0 && v < (std::uint64_t{1} << 63);
}

Wide fp16_bytes(std::uint64_t a, std::uint64_t b) {
  return Wide{a} * b * 2;
}

Status operand(std::uint64_t addr, Wide bytes, const CommandDecoderConfig& c) {
  const std::uint64_t mask = (std::uint64_t{1} << c.align_log2) - 1;
  if ((addr & mask) != 0) return Status::kMisaligned;
  if (addr > c.memory_bytes || bytes > Wide{c.memory_bytes - addr}) return Status::kOutOfRange;
  return Status::kOk;
}

// The first non-ok status of `checks`, in order.
Status first_failure(std::initializer_list<Status> checks) {
  for (Status s : checks)
    if (s != Status::kOk) return s;
  return Status::kOk;
}

std::uint64_t head_dim_of(const Fields& f) {
  return f.arg[6] & 0xFFFFFFFFu;
}

std::uint16_t softcap_of(const Fields& f) {
  return static_cast<std::uint16_t>(f.arg[6] >> 48);
}

// Only the flag bits the opcode defines (host_interface.hpp).
bool flags_ok(const Fields& f) {
  return (f.flags & ~sysc::hostif::pim_flags_defined(static_cast<Opcode>(f.opcode))) == 0;
}
bool has_bias(const Fields& f) {
  return static_cast<Opcode>(f.opcode) == Opcode::kPimGemv && (f.flags & kPimGemvFlagBias) != 0;
}
bool has_sinks(const Fields& f) {
  return static_cast<Opcode>(f.opcode) == Opcode::kPimAttention && (f.flags & kPimAttentionFlagSinks) != 0;
}

Status gemv_status(const Fields& f, const CommandDecoderConfig& c) {
  const std::uint64_t tokens = f.arg[3], rows = f.arg[4], cols = f.arg[5];
  if (!positive(tokens) || !positive(rows) || !positive(cols)) return Status::kBadShape;
  if (fp16_bytes(tokens, cols) > c.input_buffer_bytes) return Status::kBufferOverflow;
  if (!flags_ok(f)) return Status::kBadArgument;
  return first_failure({operand(f.arg[0], fp16_bytes(rows, cols), c),
                        operand(f.arg[1], fp16_bytes(tokens, cols), c),
                        operand(f.arg[2], fp16_bytes(tokens, rows), c),
                        has_bias(f) ? operand(f.arg[6], fp16_bytes(rows, 1), c) : Status::kOk});
}

Status attention_status(const Fields& f, const CommandDecoderConfig& c) {
  const std::uint64_t group = f.arg[4], context = f.arg[5], d = head_dim_of(f);
  if (!positive(group) || !positive(context) || d == 0) return Status::kBadShape;
  if (fp16_bytes(group, d) > c.input_buffer_bytes) return Status::kBufferOverflow;
  if (fp16_bytes(group, context) > c.softmax_buffer_bytes) return Status::kBufferOverflow;
  if (context > kSoftmaxMaxElements) return Status::kBufferOverflow;
  if (!flags_ok(f) || !softcap_valid(softcap_of(f))) return Status::kBadArgument;
  const Wide q_bytes = fp16_bytes(group, d) + (has_sinks(f) ? fp16_bytes(group, 1) : 0);  // q [+ sinks]
  return first_failure({operand(f.arg[0], q_bytes, c), operand(f.arg[1], fp16_bytes(context, d), c),
                        operand(f.arg[2], fp16_bytes(context, d), c),
                        operand(f.arg[3], fp16_bytes(group, d), c)});
}

Status activation_status(const Fields& f, const CommandDecoderConfig& c) {
  const std::uint64_t elements = f.arg[3];
  if (!positive(elements)) return Status::kBadShape;
  if (!flags_ok(f) || f.arg[4] >= static_cast<std::uint64_t>(kActivationModes)) return Status::kBadArgument;
  const Wide bytes = fp16_bytes(elements, 1);
  return first_failure(
      {operand(f.arg[0], bytes, c), operand(f.arg[1], bytes, c), operand(f.arg[2], bytes, c)});
}

Status status_of(const Fields& f, const CommandDecoderConfig& c) {
  if (c.align_log2 < 0 || c.align_log2 > 63)
    throw Error("command decoder: align_log2 = " + std::to_string(c.align_log2) + "; expected 0..63");
  switch (static_cast<Opcode>(f.opcode)) {
    case Opcode::kPimGemv:
      return gemv_status(f, c);
    case Opcode::kPimAttention:
      return attention_status(f, c);
    case Opcode::kPimActivation:
      return activation_status(f, c);
    default:
      return Status::kBadOpcode;
  }
}

std::uint64_t passes(std::uint64_t k, std::uint64_t lanes) {
  return (k + lanes - 1) / lanes;
}

std::uint64_t saturate(Wide v) {
  return v > std::numeric_limits<std::uint64_t>::max() ? std::numeric_limits<std::uint64_t>::max()
                                                       : static_cast<std::uint64_t>(v);
}

}  // namespace

Status decode_command_status(const std::uint8_t* bytes, const CommandDecoderConfig& config) {
  return status_of(read_fields(bytes), config);
}

std::uint64_t command_micro_op_count(const std::uint8_t* bytes, const CommandDecoderConfig& config,
                                     int lanes) {
  validate(DatapathParams{lanes});
  const Fields f = read_fields(bytes);
  if (status_of(f, config) != Status::kOk) return 1;
  const auto l = static_cast<std::uint64_t>(lanes);
  switch (static_cast<Opcode>(f.opcode)) {
    case Opcode::kPimGemv:
      return saturate(Wide{f.arg[3]} * f.arg[4] * passes(f.arg[5], l));
    case Opcode::kPimAttention: {
      const std::uint64_t context = f.arg[5], d = head_dim_of(f);
      const Wide per_head = Wide{context} * passes(d, l) + context + Wide{d} * passes(context, l);
      return saturate(per_head * f.arg[4]);
    }
    default:
      return f.arg[3];
  }
}

std::vector<CommandMicroOp> sequence_pim_command(const std::uint8_t* bytes,
                                                 const CommandDecoderConfig& config, int lanes) {
  const std::uint64_t count = command_micro_op_count(bytes, config, lanes);
  if (count > kMaxListedCommandMicroOps)
    throw Error("command decoder: " + std::to_string(count) + " micro-ops; expected at most " +
                std::to_string(kMaxListedCommandMicroOps) + " to list them (use command_micro_op_count)");
  const Fields f = read_fields(bytes);
  const Status status = status_of(f, config);
  std::vector<CommandMicroOp> ops;
  ops.reserve(count);
  if (status != Status::kOk) {
    CommandMicroOp r;
    r.kind = CommandMicroOpKind::kReject;
    r.last = r.op_last = true;
    r.seq = f.seq;
    r.status = status;
    ops.push_back(r);
    return ops;
  }
  const auto l = static_cast<std::uint64_t>(lanes);
  // One dot product of k elements: its passes over A (from a_row, a_stride apart) and B; c_valid: the first
  // pass carries operand C (the bias) at c.
  auto dot = [&](std::uint64_t a_row, std::uint64_t a_stride, std::uint64_t b_row, bool b_buffer,
                 std::uint64_t k, std::uint64_t dest, bool dest_buffer, bool c_valid = false,
                 std::uint64_t c = 0) {
    const std::uint64_t n = passes(k, l);
    const std::uint64_t b_step = b_buffer ? l : 2 * l;
    for (std::uint64_t j = 0; j < n; ++j) {
      CommandMicroOp op;
      op.kind = CommandMicroOpKind::kGemmPass;
      op.a = a_row + j * l * a_stride;
      op.a_stride = a_stride;
      op.b = b_row + j * b_step;
      op.b_buffer = b_buffer;
      op.dest = dest;
      op.dest_buffer = dest_buffer;
      op.count = static_cast<std::uint32_t>(j + 1 == n ? k - j * l : l);
      op.last = j + 1 == n;
      op.seq = f.seq;
      op.c_valid = c_valid && j == 0;
      op.c = op.c_valid ? c : 0;
      ops.push_back(op);
    }
  };
  auto element = [&](CommandMicroOpKind kind, std::uint64_t a, std::uint64_t b, std::uint64_t dest,
                     bool dest_buffer, bool last, ActivationMode mode = ActivationMode::kSiluGate) {
    CommandMicroOp op;
    op.kind = kind;
    op.mode = mode;
    op.a = a;
    op.b = b;
    op.dest = dest;
    op.dest_buffer = dest_buffer;
    op.count = 1;
    op.last = last;
    op.seq = f.seq;
    ops.push_back(op);
  };
  const auto& a = f.arg;
  switch (static_cast<Opcode>(f.opcode)) {
    case Opcode::kPimGemv: {
      const std::uint64_t tokens = a[3], rows = a[4], cols = a[5];
      for (std::uint64_t t = 0; t < tokens; ++t)
        for (std::uint64_t r = 0; r < rows; ++r)
          dot(a[0] + 2 * r * cols, 2, a[1] + 2 * t * cols, false, cols, a[2] + 2 * (t * rows + r), false,
              has_bias(f), a[6] + 2 * r);
      break;
    }
    case Opcode::kPimAttention: {
      const std::uint64_t group = a[4], context = a[5], d = head_dim_of(f);
      const auto scale = static_cast<std::uint16_t>(a[6] >> 32);
      const std::uint64_t softmax_b = scale | std::uint64_t{softcap_of(f)} << 16;  // scale, soft-cap
      const std::uint64_t sinks = a[0] + 2 * group * d;  // right after q (flags bit 0)
      for (std::uint64_t g = 0; g < group; ++g) {
        for (std::uint64_t i = 0; i < context; ++i)
          dot(a[1] + 2 * i * d, 2, a[0] + 2 * g * d, false, d, i, true);
        for (std::uint64_t i = 0; i < context; ++i) {
          element(CommandMicroOpKind::kSoftmaxElement, i, softmax_b, i, true, i + 1 == context);
          if (i == 0 && has_sinks(f)) {
            ops.back().c_valid = true;
            ops.back().c = sinks + 2 * g;
          }
        }
        for (std::uint64_t c = 0; c < d; ++c)
          dot(a[2] + 2 * c, 2 * d, 0, true, context, a[3] + 2 * (g * d + c), false);
      }
      break;
    }
    default: {
      const std::uint64_t elements = a[3];
      const auto mode = static_cast<ActivationMode>(a[4]);  // < kActivationModes (status_of)
      for (std::uint64_t i = 0; i < elements; ++i)
        element(CommandMicroOpKind::kActivationElement, a[0] + 2 * i, a[1] + 2 * i, a[2] + 2 * i, false,
                i + 1 == elements, mode);
      break;
    }
  }
  ops.back().op_last = true;
  return ops;
}

}  // namespace duplex::pim
