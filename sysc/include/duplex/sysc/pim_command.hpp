#pragma once
// The Logic-PIM commands of the host interface (hostif::Opcode kPimGemv / kPimAttention / kPimActivation):
// their arguments as LogicPim takes them, and their validation from the descriptor alone plus the device
// parameters. check_pim_command is the one validation: DuplexDevice completes a PIM command with its status,
// LogicPim's ops throw the same faults, and the RTL command decoder (rtl/decoder/pim_command_decoder.sv) and
// its golden model are tested against it. Plain C++ (no SystemC kernel).
//
// Order of the checks (the first failing one is the status):
//  1. shape, check_pim_op: every dimension >= 1 as a signed 64-bit value (kBadShape), then the buffer limits
//     (kBufferOverflow): GEMV tokens x cols x 2 B <= input buffer; attention group x head_dim x 2 B <= input
//     buffer, group x context x 2 B <= softmax buffer, context <= the softmax unit's kSoftmaxMaxElements;
//     then kBadArgument: a flag bit the opcode does not define (hostif::pim_flags_defined: bit 0 for GEMV and
//     attention, none for activation); attention: the logit soft-cap a6 [63:48] +0 or a finite FP16 > 0
//     (pim::softcap_valid); activation: the mode a4 <= 8 (pim::ActivationMode).
//  2. each operand, in argument order (GEMV W, x, y, then the bias [rows] at a6 when flags bit 0; attention q
//     (2 group (head_dim + 1) B with sinks: flags bit 0), K, V, out; activation gate, up, out):
//     address % access granularity != 0 -> kMisaligned, then [address, address + bytes) not inside device
//     memory -> kOutOfRange. Byte counts are exact (FP16 elements x 2, no wrap-around): a count above 2^64 -
//     1 is out of range.
#include <cstdint>

#include "duplex/base/device_spec.hpp"
#include "duplex/sysc/host_interface.hpp"
#include "duplex/sysc/logic_pim.hpp"
#include "duplex/sysc/pim_timing.hpp"

namespace duplex::sysc {

// True for the three Logic-PIM opcodes.
bool is_pim_opcode(hostif::Opcode op);

// Descriptor arguments (hostif::Opcode comments) as LogicPim's argument structs. Dimensions are the 64-bit
// arguments read as signed; attention head_dim = a6 bits [31:0], scale = a6 bits [47:32] (FP16), softcap = a6
// bits [63:48] (FP16 bits of the attention logit soft-cap c, Gemma 2's attn_logit_softcapping: scores ->
// c tanh(scores / c) before the softmax; +0 = no cap, so a descriptor written before the cap existed keeps
// its meaning). Each takes the descriptor's flags word as is (GEMV: bit 0 = a bias at a6, GemvArgs::bias;
// attention: bit 0 = sinks after q); the checks below refuse the bits the opcode does not define.
GemvArgs gemv_args(const hostif::CommandDescriptor& d);
AttentionArgs attention_args(const hostif::CommandDescriptor& d);
ActivationArgs activation_args(const hostif::CommandDescriptor& d);

// The op shape (PimOpShape) of each command, as check_pim_op and time_pim_op take it. The activation one
// throws PimOpError (kBadArgument) for a mode above 8 (kActivationModes - 1).
PimOpShape shape_of(const GemvArgs& a);
PimOpShape shape_of(const AttentionArgs& a);
PimOpShape shape_of(const ActivationArgs& a);
// The shape of a PIM descriptor (kPimGemv / kPimAttention / kPimActivation; duplex::Error for another).
PimOpShape shape_of(const hostif::CommandDescriptor& d);

// Throw PimOpError (fault and a message naming the operand / limit) for the first failing check above.
// memory_bytes: device memory capacity; alignment: hbm.org.access_granularity.
void check_gemv(const HbmSpec& hbm, const PimSpec& pim, std::uint64_t memory_bytes, const GemvArgs& a);
void check_attention(const HbmSpec& hbm, const PimSpec& pim, std::uint64_t memory_bytes,
                     const AttentionArgs& a);
void check_activation(const HbmSpec& hbm, const PimSpec& pim, std::uint64_t memory_bytes,
                      const ActivationArgs& a);

hostif::Status to_status(PimFault fault);

// kOk when the device would run the command, else its completion status. A non-PIM opcode (Nop and the
// DMA opcodes included: the device routes those elsewhere) gives kBadOpcode.
hostif::Status check_pim_command(const HbmSpec& hbm, const PimSpec& pim, std::uint64_t memory_bytes,
                                 const hostif::CommandDescriptor& d);

// Bytes of `a` x `b` FP16 elements, saturated at 2^64 - 1 (a, b >= 0).
std::uint64_t fp16_bytes(std::int64_t a, std::int64_t b);

}  // namespace duplex::sysc
