// The RTL instruction decoder / sequencer against the golden sequence_pim_instruction: >= 100k random
// instruction words (legal and illegal, fixed seed), micro-op streams compared field by field, with random
// back-pressure, plus its timing against datapath_timing.hpp.
#include <gtest/gtest.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <random>
#include <vector>

#include <verilated.h>

#include "Vpim_datapath.h"
#include "pim_datapath_bench.hpp"
#include "duplex/base/error.hpp"
#include "duplex/rtl/datapath_timing.hpp"
#include "duplex/rtl/golden_datapath.hpp"
#include "duplex/rtl/pim_instruction.hpp"
#include "duplex/rtl/rtl_datapath.hpp"

namespace duplex::pim {
namespace {

class SequencerBench : public PimDatapathBench {
 public:
  SequencerBench() : PimDatapathBench(false) {}
};

PimMicroOp read_micro_op(const Vpim_datapath& m) {
  return {static_cast<MicroOpKind>(m.seq_out_kind),
          m.seq_out_row,
          m.seq_out_offset,
          m.seq_out_last != 0,
          m.seq_out_op_last != 0,
          m.seq_out_tag};
}

std::uint64_t random_word(std::mt19937_64& rng) {
  const auto tag = static_cast<std::uint32_t>(rng() & kPimFieldMax);
  const auto n = static_cast<std::uint32_t>(rng() % 6);
  switch (rng() % 8) {
    case 0:
    case 1:
    case 2:
      return encode_pim_instruction(1, n, static_cast<std::uint32_t>(rng() % 70), tag);
    case 3:
      return encode_pim_instruction(2, static_cast<std::uint32_t>(rng() % 40), 0, tag);
    case 4:
      return encode_pim_instruction(3, static_cast<std::uint32_t>(rng() % 40), 0, tag);
    case 5:
      return encode_pim_instruction(2, 32769 + n, 0, tag);  // softmax row too long: illegal
    case 6:
      return encode_pim_instruction(static_cast<std::uint8_t>(2 + rng() % 2), n, 1 + n, tag);  // k != 0
    default: {  // opcode 0 or 4..15 with random fields: illegal
      const std::uint64_t opcode = rng() % 2 ? 0u : 4u + rng() % 12;
      return (rng() & ((std::uint64_t{1} << 60) - 1)) | (opcode << 60);
    }
  }
}

TEST(RtlSequencer, MicroOpStreamsBitExactUnderBackPressure) {
  SequencerBench bench;
  auto& m = bench.m();
  std::mt19937_64 rng(401);
  std::deque<PimMicroOp> expected;
  const int instructions = 100000;
  int sent = 0;
  std::size_t checked = 0;
  std::uint64_t last_word = 0;
  std::uint64_t quiet_cycles = 0;
  while (sent < instructions || !expected.empty()) {
    const bool valid = sent < instructions && rng() % 4 != 0;
    const std::uint64_t word = valid ? random_word(rng) : 0;
    m.seq_in_valid = valid;
    m.seq_in_word = word;
    const bool ready = rng() % 4 != 0;
    m.seq_out_ready = ready;
    bench.settle();
    const bool in_fire = valid && m.seq_in_ready;
    if (ready && m.seq_out_valid) {
      ASSERT_FALSE(expected.empty()) << "unexpected micro-op at cycle " << bench.cycle();
      const PimMicroOp got = read_micro_op(m);
      ASSERT_EQ(got, expected.front()) << "micro-op " << checked << " kind " << static_cast<int>(got.kind)
                                       << " row " << got.row << " offset " << got.offset;
      expected.pop_front();
      ++checked;
      quiet_cycles = 0;
    } else if (!expected.empty() && ++quiet_cycles > 100) {
      FAIL() << "sequencer stalled with " << expected.size() << " micro-ops due; last word " << std::hex
             << last_word << " in_ready " << int{m.seq_in_ready} << " out_valid " << int{m.seq_out_valid};
    }
    if (in_fire) {
      for (const auto& op : sequence_pim_instruction(word, kRtlLanes)) expected.push_back(op);
      last_word = word;
      ++sent;
    }
    bench.edge();
    ASSERT_LT(bench.cycle(), 2'000'000u) << sent << " sent, " << checked << " checked";
  }
  EXPECT_GT(checked, 300000u);
}

TEST(RtlSequencer, TimingMatchesTheConstants) {
  SequencerBench bench;
  auto& m = bench.m();
  m.seq_out_ready = 1;
  const std::uint64_t words[] = {encode_pim_instruction(1, 3, 40, 7), encode_pim_instruction(2, 10, 0, 8),
                                 encode_pim_instruction(0, 0, 0, 9)};
  std::uint64_t accepted = 0;
  std::uint64_t first_out = 0;
  std::uint64_t outputs = 0;
  std::size_t next = 0;
  std::uint64_t expected_total = 0;
  for (auto w : words) expected_total += sequence_pim_instruction(w, kRtlLanes).size();
  while (outputs < expected_total) {
    m.seq_in_valid = next < 3;
    m.seq_in_word = next < 3 ? words[next] : 0;
    bench.settle();
    if (m.seq_out_valid) {
      if (outputs++ == 0) first_out = bench.cycle();
    }
    if (next < 3 && m.seq_in_ready) {
      if (next == 0) accepted = bench.cycle();
      ++next;
    }
    bench.edge();
    ASSERT_LT(bench.cycle(), 1000u);
  }
  EXPECT_EQ(first_out - accepted, static_cast<std::uint64_t>(timing::kSequencerLatency));
  // Back to back: the last micro-op of all three instructions comes with no bubble.
  EXPECT_EQ(bench.cycle() - 1 - accepted, timing::sequencer_cycles(expected_total));
}

TEST(PimInstruction, GoldenSequencing) {
  const auto ops = sequence_pim_instruction(encode_pim_instruction(1, 2, 17, 5), 16);
  ASSERT_EQ(ops.size(), 4u);
  EXPECT_EQ(ops[1], (PimMicroOp{MicroOpKind::kGemmPass, 0, 16, true, false, 5}));
  EXPECT_EQ(ops[3], (PimMicroOp{MicroOpKind::kGemmPass, 1, 16, true, true, 5}));
  const auto bad = sequence_pim_instruction(encode_pim_instruction(2, 3, 1, 6), 16);
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_EQ(bad[0].kind, MicroOpKind::kIllegal);
  EXPECT_THROW(encode_pim_instruction(1, kPimFieldMax + 1, 0, 0), Error);
  EXPECT_THROW(sequence_pim_instruction(0, 3), Error);
  const std::uint64_t huge = encode_pim_instruction(1, kPimFieldMax, kPimFieldMax, 0);
  EXPECT_EQ(pim_micro_op_count(huge, 16), std::uint64_t{kPimFieldMax} * 65536u);
  EXPECT_THROW(sequence_pim_instruction(huge, 16), Error);
}

}  // namespace
}  // namespace duplex::pim
