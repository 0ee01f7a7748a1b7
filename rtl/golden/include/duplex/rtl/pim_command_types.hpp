#pragma once
// Types shared by the PIM command decoder's golden model (pim_command_decoder.hpp), the RTL datapath's command
// path (rtl/src/rtl_datapath.cpp) and the Datapath interface: the device parameters the decoder validates
// descriptors against (the cfg_* ports of rtl/decoder/pim_command_decoder.sv) and the micro-op kinds
// (its out_kind codes).
#include <cstdint>

namespace duplex::pim {

struct CommandDecoderConfig {
  std::uint64_t memory_bytes = 0;          // device memory capacity
  int align_log2 = 5;                      // operands aligned to 2^align_log2 bytes (the 32 B access), 0..63
  std::uint64_t input_buffer_bytes = 0;    // logic-die input buffer (queries / GEMV inputs)
  std::uint64_t softmax_buffer_bytes = 0;  // logic-die softmax buffer (scores of all heads of a group)
};

enum class CommandMicroOpKind : std::uint8_t {
  kGemmPass = 0,
  kSoftmaxElement = 1,
  kActivationElement = 2,
  kReject = 3
};

}  // namespace duplex::pim
