#pragma once
// Golden model of the RTL command decoder / sequencer (rtl/decoder/pim_command_decoder.sv), bit-exact: one
// 64-byte host command descriptor (sysc/include/duplex/sysc/host_interface.hpp, hostif::encode) in, its
// status and the datapath micro-ops out. The status is meant to equal duplex::sysc::check_pim_command's for
// every descriptor (tests/rtl/rtl_command_decoder_test.cpp compares them on 104k descriptors); it is an
// independent implementation (exact 128-bit products, as the RTL computes them), not a call to it.
//
// Micro-ops, in issue order (L = GEMM lanes; "buffer" = an index into the logic die's softmax buffer, which
// holds the scores s and then the probabilities p; every other address is a byte address in device memory):
//  GEMV  (W [rows][cols], x [tokens][cols], y [tokens][rows]; flags bit 0: bias [rows] at a6):
//    for t < tokens, r < rows, pass j < ceil(cols / L): kGemmPass
//      a = W + 2 (r cols + j L), a_stride 2; b = x + 2 (t cols + j L); dest = y + 2 (t rows + r);
//      with a bias, the first pass (j = 0) of each dot product carries c = bias + 2 r (c_valid): the lane's
//      accumulator starts at that FP16 value (gemm_lane in_bias) instead of +0
//  attention (q [group][d], K and V [context][d], out [group][d], d = head_dim), for g < group:
//    scores: i < context, j < ceil(d / L): kGemmPass a = K + 2 (i d + j L), a_stride 2,
//            b = q + 2 (g d + j L), dest = buffer i
//    softmax: i < context: kSoftmaxElement a = buffer i (score), b = scale | softcap << 16 (FP16 bits each:
//             a6 [47:32] and [63:48]; softcap +0 = no cap), dest = buffer i (p); with sinks (flags bit 0)
//             the row's first element (i = 0) carries c = q + 2 group d + 2 g (c_valid): the head's sink
//             logit, which the softmax unit samples with the first score (in_sink)
//    PV:     c < d, j < ceil(context / L): kGemmPass a = V + 2 (j L d + c), a_stride 2 d (a column of V),
//            b = buffer j L (p), dest = out + 2 (g d + c)
//  activation (a0 = a, a1 = b, a2 = out, a3 elements, a4 mode), i < elements: kActivationElement
//    a = a0 + 2 i, b = a1 + 2 i, dest = out + 2 i, mode = a4 (an ActivationMode; a4 > 8 is rejected)
//  c / c_valid: operand C, the device address of one FP16 value the unit takes with the micro-op (the GEMV
//  bias of the dot product, the attention sink of the softmax row); c = 0 where c_valid is false. The
//  micro-op count does not change with the flags.
//  count: elements of a GEMM pass (L, or the rest of the dot product in its last pass); 1 for element ops.
//  last: a GEMM pass that completes its dot product (the result goes to dest); for element ops, the last
//  element of its phase. op_last: the command's last micro-op. seq: the descriptor's seq on every micro-op.
//  A rejected descriptor (status != kOk) issues exactly one kReject micro-op carrying the status, with
//  a, a_stride, b, dest, c, count = 0 and last = op_last = true.
// Status: as sysc::check_pim_command (pim_command.hpp), including the flags: a bit the opcode does not define
// (hostif::pim_flags_defined) is kBadArgument after the shape and buffer checks; the GEMV bias (rows x 2 B
// at a6) is checked as a fourth operand after y, the attention q operand with sinks is 2 group (d + 1) B.
#include <cstdint>
#include <vector>

#include "duplex/rtl/golden_datapath.hpp"
#include "duplex/rtl/pim_command_types.hpp"
#include "duplex/sysc/host_interface.hpp"

namespace duplex::pim {

struct CommandMicroOp {
  CommandMicroOpKind kind = CommandMicroOpKind::kReject;
  std::uint64_t a = 0;
  std::uint64_t a_stride = 0;  // bytes between consecutive A elements of a GEMM pass; 0 for element ops
  std::uint64_t b = 0;
  bool b_buffer = false;  // b is a softmax-buffer index
  std::uint64_t dest = 0;
  bool dest_buffer = false;  // dest is a softmax-buffer index
  std::uint32_t count = 0;
  bool last = false;
  bool op_last = false;
  std::uint32_t seq = 0;
  sysc::hostif::Status status = sysc::hostif::Status::kOk;
  ActivationMode mode = ActivationMode::kSiluGate;  // activation elements: the command's mode; else kSiluGate
  std::uint64_t c = 0;   // operand C (one FP16 in device memory: GEMV bias / attention sink) when c_valid
  bool c_valid = false;  // the first pass of a biased dot product / the first element of a row with a sink
  bool operator==(const CommandMicroOp&) const = default;
};

// Status of the descriptor at `bytes` (64 bytes): kOk, or the first failing check in device order. Any
// opcode other than the three PIM opcodes is kBadOpcode. Throws duplex::Error for an invalid config
// (align_log2 outside 0..63).
sysc::hostif::Status decode_command_status(const std::uint8_t* bytes, const CommandDecoderConfig& config);

// Micro-ops the descriptor issues (1 when rejected) for a GEMM lane of `lanes` (a power of two, 1..64;
// duplex::Error else); saturates at 2^64 - 1.
std::uint64_t command_micro_op_count(const std::uint8_t* bytes, const CommandDecoderConfig& config,
                                     int lanes);

// The micro-ops in issue order. Lists at most kMaxListedCommandMicroOps (duplex::Error beyond: use
// command_micro_op_count for large commands).
inline constexpr std::uint64_t kMaxListedCommandMicroOps = std::uint64_t{1} << 24;
std::vector<CommandMicroOp> sequence_pim_command(const std::uint8_t* bytes,
                                                 const CommandDecoderConfig& config, int lanes);

}  // namespace duplex::pim
