#pragma once
// The Logic-PIM instruction word and its expansion into datapath micro-ops: the golden model of the RTL
// instruction decoder / sequencer (rtl/decoder/pim_sequencer.sv), bit-exact.
//
// Instruction word (64 bit):  [63:60] opcode  [59:40] n  [39:20] k  [19:0] tag
//   opcode 1 GEMV       n rows (>= 1) of a k-element (>= 1) dot product      -> n * ceil(k / lanes) GEMM
//   passes opcode 2 SOFTMAX    one row of n scores, 1 <= n <= kSoftmaxMaxElements, k = 0 -> n softmax
//   elements opcode 3 SILU_GATE  n (gate, up) pairs, n >= 1, k = 0                     -> n activation
//   elements anything else (opcode 0 included) is illegal                              -> one ILLEGAL
//   micro-op
// The tag is echoed on every micro-op. Operand base addresses are the operation controller's business; a
// micro-op carries the row and the element offset within the row.
#include <cstdint>
#include <vector>

namespace duplex::pim {

enum class PimOpcode : std::uint8_t { kGemv = 1, kSoftmax = 2, kSiluGate = 3 };
enum class MicroOpKind : std::uint8_t { kGemmPass = 0, kSoftmaxElement = 1, kSiluElement = 2, kIllegal = 3 };

struct PimMicroOp {
  MicroOpKind kind;
  std::uint32_t row;     // GEMV row; 0 otherwise
  std::uint32_t offset;  // first element of the GEMM pass (pass * lanes), or the element index
  bool last;             // last pass of a GEMV row / last element of the op
  bool op_last;          // last micro-op of the instruction
  std::uint32_t tag;
  bool operator==(const PimMicroOp&) const = default;
};

inline constexpr std::uint32_t kPimFieldMax = (1u << 20) - 1;  // n, k and tag are 20-bit fields

// Packs the fields; throws duplex::Error if a field does not fit (legality is not checked here).
std::uint64_t encode_pim_instruction(std::uint8_t opcode, std::uint32_t n, std::uint32_t k,
                                     std::uint32_t tag);

// Number of micro-ops the instruction issues (1 for an illegal one), for a GEMM lane of `lanes`.
std::uint64_t pim_micro_op_count(std::uint64_t word, int lanes);

// Micro-ops of one instruction in issue order, for a GEMM lane of `lanes` (power of two; duplex::Error else).
// Lists at most kMaxListedMicroOps (duplex::Error beyond: use pim_micro_op_count for large instructions).
inline constexpr std::uint64_t kMaxListedMicroOps = std::uint64_t{1} << 24;
std::vector<PimMicroOp> sequence_pim_instruction(std::uint64_t word, int lanes);

}  // namespace duplex::pim
