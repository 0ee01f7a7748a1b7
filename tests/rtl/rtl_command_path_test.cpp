// End to end: the SystemC model's Logic-PIM (sysc::LogicPim::run_command, as DuplexDevice calls it) with
// pim.datapath: rtl runs each host command descriptor through the RTL command decoder, whose micro-ops drive
// the RTL units and read / write device memory. Against the golden datapath (op functions): same status for
// valid and malformed descriptors, and the same bytes in device memory after every command.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "duplex/base/device_spec.hpp"
#include "duplex/rtl/datapath.hpp"
#include "duplex/sysc/host_interface.hpp"
#include "duplex/sysc/logic_pim.hpp"
#include "duplex/sysc/pim_command.hpp"
#include "duplex/sysc/sparse_memory.hpp"

namespace duplex::sysc {
namespace {

using hostif::CommandDescriptor;
using hostif::Opcode;
using hostif::Status;

constexpr std::uint64_t kSlot = 2u << 20;
constexpr std::uint64_t kRegion = 8 * kSlot;  // operands live in the first 16 MiB

struct Side {
  SparseMemory memory{1ull << 30};
  LogicPim pim;
  Side(const SystemSpec& s, const char* kind)
      : pim(s.memory, *s.pim, memory, pim::make_datapath(kind, pim::DatapathParams{})) {}
};

// Random FP16 q [group][d], K and V [context][d]: |x| in [0.125, 0.25), random signs.
struct AttentionOperands {
  std::vector<std::uint16_t> q, k, v;
};
AttentionOperands random_attention_operands(std::uint64_t group, std::uint64_t context, std::uint64_t d,
                                            unsigned seed) {
  std::mt19937 rng(seed);
  AttentionOperands o{std::vector<std::uint16_t>(group * d), std::vector<std::uint16_t>(context * d),
                      std::vector<std::uint16_t>(context * d)};
  for (auto* buf : {&o.q, &o.k, &o.v})
    for (auto& x : *buf) x = static_cast<std::uint16_t>((0x3000 + rng() % 0x1000) | (rng() % 2 ? 0x8000 : 0));
  return o;
}

// One kPimAttention command on `s`: q_operand (q, and the sinks after it with kPimAttentionFlagSinks), K and
// V written to memory, the command run with `scale`, `cap` and `flags`; its result and its [group][d] output.
std::pair<PimCommandResult, std::vector<std::uint16_t>> run_attention_command(
    Side& s, const std::vector<std::uint16_t>& q_operand, const AttentionOperands& o, std::uint64_t group,
    std::uint64_t context, std::uint64_t d, std::uint16_t scale, std::uint16_t cap, std::uint16_t flags) {
  s.memory.write(0x10000, q_operand.data(), 2 * q_operand.size());
  s.memory.write(0x20000, o.k.data(), 2 * o.k.size());
  s.memory.write(0x40000, o.v.data(), 2 * o.v.size());
  CommandDescriptor c;
  c.opcode = Opcode::kPimAttention;
  c.flags = flags;
  c.args = {0x10000,
            0x20000,
            0x40000,
            0x60000,
            group,
            context,
            d | std::uint64_t{scale} << 32 | std::uint64_t{cap} << 48};
  const PimCommandResult r = s.pim.run_command(c);
  std::vector<std::uint16_t> out(group * d);
  s.memory.read(0x60000, out.data(), 2 * out.size());
  return {r, out};
}

std::vector<std::uint8_t> region(const SparseMemory& m) {
  std::vector<std::uint8_t> v(kRegion);
  m.read(0, v.data(), v.size());
  return v;
}

class Commands {
 public:
  explicit Commands(std::uint64_t seed) : rng_(seed) {}
  CommandDescriptor next() {
    CommandDescriptor c;
    c.seq = static_cast<std::uint32_t>(rng_());
    auto& a = c.args;
    switch (rng_() % 3) {
      case 0:
        c.opcode = Opcode::kPimGemv;
        c.flags = rng_() % 2 == 0 ? hostif::kPimGemvFlagBias : 0;  // half of them with a bias (a6, below)
        a[3] = uniform(1, 3);
        a[4] = uniform(1, 40);
        a[5] = uniform(1, 300);
        break;
      case 1:
        c.opcode = Opcode::kPimAttention;
        c.flags = rng_() % 2 == 0 ? hostif::kPimAttentionFlagSinks : 0;  // half with sinks after q
        a[4] = uniform(1, 4);
        a[5] = uniform(1, 100);
        a[6] = uniform(1, 130) | (std::uint64_t{0x2E66} << 32) | softcap() << 48;  // scale 0.1
        break;
      default:
        c.opcode = Opcode::kPimActivation;
        a[3] = uniform(1, 2000);
        a[4] = rng_() % 20 == 0 ? uniform(9, 300) : rng_() % 9;  // the mode; 1 in 20 outside the nine
        break;
    }
    // Each operand in its own 2 MiB slot (a command's outputs never overlap its inputs); the slots of
    // successive commands overlap, so later commands read earlier results.
    std::vector<std::uint64_t> slots = {0, 1, 2, 3, 4, 5, 6, 7};
    std::shuffle(slots.begin(), slots.end(), rng_);
    for (std::size_t i = 0; i < (c.opcode == Opcode::kPimAttention ? 4u : 3u); ++i)
      a[i] = slots[i] * kSlot + uniform(0, (kSlot - (64u << 10)) / 32) * 32;
    if (c.opcode == Opcode::kPimGemv && c.flags != 0)
      a[6] = slots[3] * kSlot + uniform(0, 1000) * 32;  // bias
    switch (rng_() % 12) {                              // one in four malformed
      case 0:
        a[rng_() % 3] += uniform(1, 31);
        break;
      case 1:
        a[rng_() % 3] = (1ull << 30) - 32;
        break;
      case 2:  // a flag bit the opcode does not define
        c.flags = static_cast<std::uint16_t>(c.flags |
                                             1u << uniform(c.opcode == Opcode::kPimActivation ? 0 : 1, 15));
        break;
      default:
        break;
    }
    return c;
  }

 private:
  std::uint64_t uniform(std::uint64_t lo, std::uint64_t hi) { return lo + rng_() % (hi - lo + 1); }
  // The logit soft-cap: none (half), 0.25 .. 2 (x = 0.1 s is mostly within +-1 here), or 1 in 20 not a cap.
  std::uint64_t softcap() {
    static constexpr std::uint16_t kCaps[] = {0x3400, 0x3800, 0x3C00, 0x4000, 0xBC00, 0x7C00};
    if (rng_() % 2 == 0) return 0;
    return kCaps[rng_() % 10 == 0 ? 4 + rng_() % 2 : rng_() % 4];
  }
  std::mt19937_64 rng_;
};

TEST(RtlCommandPath, LogicPimCommandsOnTheRtlDecoderEqualTheGoldenOps) {
  const SystemSpec system = load_system("duplex");
  Side golden(system, "golden"), rtl(system, "rtl");
  std::mt19937 rng(11);
  std::vector<std::uint16_t> data(kRegion / 2);
  for (auto& x : data)  // FP16 with |x| in [0.125, 1), either sign
    x = static_cast<std::uint16_t>((0x3000 + rng() % 0x1000) | (rng() % 2 ? 0x8000 : 0));
  for (Side* s : {&golden, &rtl}) s->memory.write(0, data.data(), kRegion);
  Commands gen(5);
  std::vector<int> by_status(10);
  for (int i = 0; i < 150; ++i) {
    const CommandDescriptor c = gen.next();
    const PimCommandResult want = golden.pim.run_command(c);
    const std::uint64_t cycles = *rtl.pim.datapath().simulated_cycles();
    const PimCommandResult got = rtl.pim.run_command(c);
    ASSERT_EQ(static_cast<int>(got.status), static_cast<int>(want.status)) << "command " << i;
    ASSERT_EQ(static_cast<int>(want.status),
              static_cast<int>(check_pim_command(system.memory, *system.pim, golden.memory.capacity(), c)));
    ++by_status[static_cast<std::size_t>(want.status)];
    if (want.status == Status::kOk) {
      EXPECT_EQ(to_ps(got.timing.total), to_ps(want.timing.total));
      EXPECT_GT(*rtl.pim.datapath().simulated_cycles(), cycles)
          << "command " << i << " did not run on the RTL";
      if (i % 10 == 0) {
        ASSERT_EQ(region(rtl.memory), region(golden.memory)) << "after command " << i;
      }
    }
  }
  EXPECT_EQ(region(rtl.memory), region(golden.memory));
  EXPECT_GT(by_status[static_cast<std::size_t>(Status::kOk)], 90);
  EXPECT_GT(by_status[static_cast<std::size_t>(Status::kMisaligned)], 5);
  EXPECT_GT(by_status[static_cast<std::size_t>(Status::kOutOfRange)], 5);
  EXPECT_GT(by_status[static_cast<std::size_t>(Status::kBadArgument)], 0);
}

// One activation command per mode on both datapaths: every output is activation_fp16(mode, a[i], b[i]), and
// the nine modes give different bytes (a mode lost or mixed up on the way to the unit fails here).
TEST(RtlCommandPath, ActivationCommandInEachMode) {
  const SystemSpec system = load_system("duplex");
  Side golden(system, "golden"), rtl(system, "rtl");
  const std::uint64_t n = 3000;
  std::mt19937 rng(12);
  std::vector<std::uint16_t> a(n), b(n);
  for (std::uint64_t i = 0; i < n; ++i) {
    a[i] = static_cast<std::uint16_t>(i * 21);  // spread over every exponent and sign
    b[i] = static_cast<std::uint16_t>((0x2000 + rng() % 0x1C00) | (rng() % 2 ? 0x8000 : 0));
  }
  std::vector<std::vector<std::uint16_t>> outputs;
  for (int v = 0; v < pim::kActivationModes; ++v) {
    const auto mode = static_cast<pim::ActivationMode>(v);
    for (Side* s : {&golden, &rtl}) {
      s->memory.write(0x10000, a.data(), 2 * n);
      s->memory.write(0x20000, b.data(), 2 * n);
      CommandDescriptor c;
      c.opcode = Opcode::kPimActivation;
      c.args = {0x10000, 0x20000, 0x30000, n, static_cast<std::uint64_t>(mode), 0, 0};
      ASSERT_EQ(s->pim.run_command(c).status, Status::kOk) << pim::to_string(mode);
      std::vector<std::uint16_t> out(n);
      s->memory.read(0x30000, out.data(), 2 * n);
      for (std::uint64_t i = 0; i < n; ++i)
        ASSERT_EQ(out[i], pim::activation_fp16(mode, a[i], b[i]))
            << pim::to_string(mode) << " " << s->pim.datapath().kind() << " element " << i;
      outputs.push_back(out);
    }
  }
  for (std::size_t i = 0; i < outputs.size(); i += 2)  // golden, rtl per mode
    for (std::size_t j = i + 2; j < outputs.size(); j += 2)
      EXPECT_NE(outputs[i], outputs[j]) << "modes " << i / 2 << " and " << j / 2;
  CommandDescriptor bad;
  bad.opcode = Opcode::kPimActivation;
  bad.args = {0x10000, 0x20000, 0x30000, n, pim::kActivationModes, 0, 0};
  EXPECT_EQ(golden.pim.run_command(bad).status, Status::kBadArgument);
  EXPECT_EQ(rtl.pim.run_command(bad).status, Status::kBadArgument);
}

// One attention command with and without a logit soft-cap on both datapaths: the output is
// decode_attention_fp16 with the descriptor's cap (a6 [63:48]), the cap changes it, and the capped command
// takes longer (the softmax unit's cap stages); a cap that is not +0 or finite > 0 is kBadArgument.
TEST(RtlCommandPath, AttentionCommandWithSoftcap) {
  const SystemSpec system = load_system("duplex");
  Side golden(system, "golden"), rtl(system, "rtl");
  const std::uint64_t group = 2, context = 90, d = 64;
  const AttentionOperands o = random_attention_operands(group, context, d, 13);
  const std::uint16_t scale = 0x3400;  // 0.25: |x| up to ~4
  std::vector<std::vector<std::uint16_t>> outputs;
  std::vector<double> total_ps;
  for (const int cap_bits : {0x0000, 0x3C00, 0x4000}) {  // none, 1, 2
    const auto cap = static_cast<std::uint16_t>(cap_bits);
    std::vector<std::uint16_t> want(group * d);
    pim::decode_attention_fp16(o.q.data(), o.k.data(), o.v.data(), group, context, d, scale, cap, want.data(),
                               pim::DatapathParams{});
    for (Side* s : {&golden, &rtl}) {
      const auto [r, out] = run_attention_command(*s, o.q, o, group, context, d, scale, cap, 0);
      ASSERT_EQ(r.status, Status::kOk) << s->pim.datapath().kind() << " cap " << cap;
      total_ps.push_back(to_ps(r.timing.total));
      EXPECT_EQ(out, want) << s->pim.datapath().kind() << " cap " << cap;
      outputs.push_back(out);
    }
  }
  EXPECT_NE(outputs[0], outputs[2]);  // cap 1 changes the result
  EXPECT_NE(outputs[0], outputs[4]);  // cap 2 too
  EXPECT_NE(outputs[2], outputs[4]);
  EXPECT_GT(total_ps[2], total_ps[0]);  // the cap stages add cycles
  EXPECT_EQ(total_ps[2], total_ps[3]);  // golden and RTL devices time it alike
  for (const std::uint16_t bad : {std::uint16_t{0x8000}, std::uint16_t{0xFC00}, std::uint16_t{0x7E00}}) {
    CommandDescriptor c;
    c.opcode = Opcode::kPimAttention;
    const std::uint64_t a6 = d | std::uint64_t{scale} << 32 | std::uint64_t{bad} << 48;
    c.args = {0x10000, 0x20000, 0x40000, 0x60000, group, context, a6};
    EXPECT_EQ(golden.pim.run_command(c).status, Status::kBadArgument);
    EXPECT_EQ(rtl.pim.run_command(c).status, Status::kBadArgument);
  }
}

// GEMV with a bias (flags bit 0, bias [rows] at a6) on both datapaths: the output is gemv_fp16 with the bias,
// the bias changes it, both devices time it alike; flags 0 ignores a6, an undefined flag bit is kBadArgument.
TEST(RtlCommandPath, GemvCommandWithBias) {
  const SystemSpec system = load_system("duplex");
  Side golden(system, "golden"), rtl(system, "rtl");
  const std::uint64_t tokens = 2, rows = 37, cols = 100;
  std::mt19937 rng(14);
  std::vector<std::uint16_t> w(rows * cols), x(tokens * cols), bias(rows);
  for (auto* buf : {&w, &x, &bias})
    for (auto& v : *buf) v = static_cast<std::uint16_t>((0x3000 + rng() % 0x1000) | (rng() % 2 ? 0x8000 : 0));
  std::vector<std::uint16_t> want(tokens * rows), plain(tokens * rows);
  for (std::uint64_t t = 0; t < tokens; ++t) {
    pim::gemv_fp16(w.data(), x.data() + t * cols, want.data() + t * rows, rows, cols, pim::DatapathParams{},
                   bias.data());
    pim::gemv_fp16(w.data(), x.data() + t * cols, plain.data() + t * rows, rows, cols, pim::DatapathParams{});
  }
  ASSERT_NE(want, plain);
  std::vector<double> total_ps;
  for (const std::uint16_t flags : {hostif::kPimGemvFlagBias, std::uint16_t{0}}) {
    for (Side* s : {&golden, &rtl}) {
      s->memory.write(0x10000, w.data(), 2 * w.size());
      s->memory.write(0x20000, x.data(), 2 * x.size());
      s->memory.write(0x30000, bias.data(), 2 * bias.size());
      CommandDescriptor c;
      c.opcode = Opcode::kPimGemv;
      c.flags = flags;
      c.args = {0x10000, 0x20000, 0x40000, tokens, rows, cols, 0x30000};
      const PimCommandResult r = s->pim.run_command(c);
      ASSERT_EQ(r.status, Status::kOk) << s->pim.datapath().kind() << " flags " << flags;
      total_ps.push_back(to_ps(r.timing.total));
      std::vector<std::uint16_t> out(tokens * rows);
      s->memory.read(0x40000, out.data(), 2 * out.size());
      EXPECT_EQ(out, flags != 0 ? want : plain) << s->pim.datapath().kind() << " flags " << flags;
    }
  }
  EXPECT_EQ(total_ps[0], total_ps[1]);  // golden and RTL devices time it alike
  EXPECT_GE(total_ps[0], total_ps[2]);  // the bias's bytes are read too
  for (const std::uint16_t bad : {std::uint16_t{2}, std::uint16_t{0x8001}}) {
    CommandDescriptor c;
    c.opcode = Opcode::kPimGemv;
    c.flags = bad;
    c.args = {0x10000, 0x20000, 0x40000, tokens, rows, cols, 0x30000};
    EXPECT_EQ(golden.pim.run_command(c).status, Status::kBadArgument);
    EXPECT_EQ(rtl.pim.run_command(c).status, Status::kBadArgument);
  }
}

// Attention with sinks (flags bit 0: group FP16 sink logits right after q) on both datapaths, with and
// without a soft-cap: the output is decode_attention_fp16 with the sinks, the sinks change it; the row's
// sink costs no cycle (same time as without).
TEST(RtlCommandPath, AttentionCommandWithSinks) {
  const SystemSpec system = load_system("duplex");
  Side golden(system, "golden"), rtl(system, "rtl");
  const std::uint64_t group = 3, context = 70, d = 64;
  const AttentionOperands o = random_attention_operands(group, context, d, 15);
  const std::vector<std::uint16_t> sinks{0x3E00, 0xC000, 0x4400};  // 1.5, -2, 4
  std::vector<std::uint16_t> q_and_sinks = o.q;
  q_and_sinks.insert(q_and_sinks.end(), sinks.begin(), sinks.end());
  const std::uint16_t scale = 0x3400;  // 0.25
  for (const std::uint16_t cap : {std::uint16_t{0}, std::uint16_t{0x4000}}) {
    std::vector<std::uint16_t> want(group * d), plain(group * d);
    pim::decode_attention_fp16(o.q.data(), o.k.data(), o.v.data(), group, context, d, scale, cap, want.data(),
                               pim::DatapathParams{}, sinks.data());
    pim::decode_attention_fp16(o.q.data(), o.k.data(), o.v.data(), group, context, d, scale, cap,
                               plain.data(), pim::DatapathParams{});
    ASSERT_NE(want, plain);
    std::vector<double> total_ps;
    for (const std::uint16_t flags : {hostif::kPimAttentionFlagSinks, std::uint16_t{0}}) {
      for (Side* s : {&golden, &rtl}) {
        const auto [r, out] = run_attention_command(*s, q_and_sinks, o, group, context, d, scale, cap, flags);
        ASSERT_EQ(r.status, Status::kOk) << s->pim.datapath().kind();
        total_ps.push_back(to_ps(r.timing.total));
        EXPECT_EQ(out, flags != 0 ? want : plain) << s->pim.datapath().kind() << " cap " << cap;
      }
    }
    EXPECT_EQ(total_ps[0], total_ps[1]);
    EXPECT_EQ(total_ps[0], total_ps[2]);  // kSoftmaxSinkCycles = 0; the sinks are read with q
  }
}

TEST(RtlCommandPath, BadOpcodeIsRejectedByTheDecoder) {
  const SystemSpec system = load_system("duplex");
  Side rtl(system, "rtl");
  CommandDescriptor c;
  c.opcode = Opcode::kDmaToDevice;  // not a PIM command: LogicPim's decoder rejects it
  EXPECT_EQ(rtl.pim.run_command(c).status, Status::kBadOpcode);
  c.opcode = Opcode::kPimActivation;  // zero elements
  EXPECT_EQ(rtl.pim.run_command(c).status, Status::kBadShape);
}

}  // namespace
}  // namespace duplex::sysc
