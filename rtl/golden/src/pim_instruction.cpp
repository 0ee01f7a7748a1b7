// Golden instruction decoder / sequencer (contract: pim_instruction.hpp; RTL: rtl/decoder/pim_sequencer.sv).
#include "duplex/rtl/pim_instruction.hpp"

#include <string>

#include "duplex/base/error.hpp"
#include "duplex/rtl/golden_datapath.hpp"

namespace duplex::pim {

std::uint64_t encode_pim_instruction(std::uint8_t opcode, std::uint32_t n, std::uint32_t k,
                                     std::uint32_t tag) {
  auto check = [](const char* field, std::uint32_t value, std::uint32_t max) {
    if (value > max)
      throw Error(std::string("pim instruction: ") + field + " = " + std::to_string(value) +
                  "; expected 0.." + std::to_string(max));
  };
  check("opcode", opcode, 15);
  check("n", n, kPimFieldMax);
  check("k", k, kPimFieldMax);
  check("tag", tag, kPimFieldMax);
  return (std::uint64_t{opcode} << 60) | (std::uint64_t{n} << 40) | (std::uint64_t{k} << 20) | tag;
}

namespace {

struct Decoded {
  std::uint32_t opcode, n, k, tag;
  bool gemv_ok, softmax_ok, silu_ok;
};

Decoded decode(std::uint64_t word) {
  Decoded d{};
  d.opcode = static_cast<std::uint32_t>(word >> 60);
  d.n = static_cast<std::uint32_t>(word >> 40) & kPimFieldMax;
  d.k = static_cast<std::uint32_t>(word >> 20) & kPimFieldMax;
  d.tag = static_cast<std::uint32_t>(word) & kPimFieldMax;
  d.gemv_ok = d.opcode == 1 && d.n >= 1 && d.k >= 1;
  d.softmax_ok = d.opcode == 2 && d.n >= 1 && d.n <= kSoftmaxMaxElements && d.k == 0;
  d.silu_ok = d.opcode == 3 && d.n >= 1 && d.k == 0;
  return d;
}

}  // namespace

std::uint64_t pim_micro_op_count(std::uint64_t word, int lanes) {
  validate(DatapathParams{lanes});
  const Decoded d = decode(word);
  const auto step = static_cast<std::uint32_t>(lanes);
  if (d.gemv_ok) return std::uint64_t{d.n} * ((d.k + step - 1) / step);
  if (d.softmax_ok || d.silu_ok) return d.n;
  return 1;
}

std::vector<PimMicroOp> sequence_pim_instruction(std::uint64_t word, int lanes) {
  const std::uint64_t count = pim_micro_op_count(word, lanes);
  if (count > kMaxListedMicroOps)
    throw Error("pim instruction: " + std::to_string(count) + " micro-ops; expected at most " +
                std::to_string(kMaxListedMicroOps) + " to list them (use pim_micro_op_count)");
  const Decoded d = decode(word);
  const std::uint32_t n = d.n;
  const std::uint32_t k = d.k;
  const std::uint32_t tag = d.tag;
  const bool softmax_ok = d.softmax_ok;
  std::vector<PimMicroOp> ops;
  ops.reserve(count);
  if (d.gemv_ok) {
    const auto step = static_cast<std::uint32_t>(lanes);
    const std::uint32_t passes = (k + step - 1) / step;
    for (std::uint32_t row = 0; row < n; ++row)
      for (std::uint32_t pass = 0; pass < passes; ++pass) {
        const bool last = pass + 1 == passes;
        ops.push_back({MicroOpKind::kGemmPass, row, pass * step, last, last && row + 1 == n, tag});
      }
  } else if (softmax_ok || d.silu_ok) {
    const MicroOpKind kind = softmax_ok ? MicroOpKind::kSoftmaxElement : MicroOpKind::kSiluElement;
    for (std::uint32_t i = 0; i < n; ++i) ops.push_back({kind, 0, i, i + 1 == n, i + 1 == n, tag});
  } else {
    ops.push_back({MicroOpKind::kIllegal, 0, 0, true, true, tag});
  }
  return ops;
}

}  // namespace duplex::pim
