// The RTL command decoder (rtl/decoder/pim_command_decoder.sv) against its golden model
// (duplex::pim::sequence_pim_command) and the SystemC device's validation (duplex::sysc::check_pim_command):
// >= 100k random descriptors (fixed seed) over four device configurations, covering every malformed class
// (unknown opcodes, zero / negative / maximum dimensions, every misalignment 1..align-1, operands at and one
// access past the end of memory, buffers overflowed by one element, products past 2^64) and valid commands
// at the capacity boundaries. Status identical in all three; micro-op streams identical field by field under
// random back-pressure. Plus the decoder's timing against datapath_timing.hpp.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <verilated.h>

#include "Vpim_datapath.h"
#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"
#include "duplex/rtl/datapath_timing.hpp"
#include "duplex/rtl/golden_datapath.hpp"
#include "duplex/rtl/pim_command_decoder.hpp"
#include "duplex/rtl/rtl_datapath.hpp"
#include "duplex/sysc/host_interface.hpp"
#include "duplex/sysc/pim_command.hpp"
#include "pim_datapath_bench.hpp"

namespace duplex::pim {
namespace {

using sysc::hostif::CommandDescriptor;
using sysc::hostif::Opcode;
using sysc::hostif::Status;
using Bytes = std::array<std::uint8_t, sysc::hostif::kDescriptorBytes>;

constexpr std::uint64_t kMaxU64 = ~std::uint64_t{0};
constexpr std::uint64_t kMaxI64 = kMaxU64 >> 1;

// One device: the specs check_pim_command reads and the same limits as decoder ports.
struct Device {
  HbmSpec hbm;
  PimSpec pim;
  std::uint64_t memory = 0;
  CommandDecoderConfig config;
};

Device make_device(const SystemSpec& base, std::uint64_t memory, int align_log2, std::uint64_t input,
                   std::uint64_t softmax) {
  Device d{base.memory, *base.pim, memory, {}};
  d.hbm.org.access_granularity = ByteSize{std::uint64_t{1} << align_log2};
  d.pim.input_buffer = ByteSize{input};
  d.pim.softmax_buffer = ByteSize{softmax};
  d.config = {memory, align_log2, input, softmax};
  return d;
}

std::vector<Device> devices() {
  const SystemSpec duplex = load_system("duplex");
  return {
      // the Duplex device as configured (32 B access, 1 MiB input buffer, 128 KiB softmax buffer)
      make_device(duplex, duplex.memory_capacity().bytes, 5, duplex.pim->input_buffer.bytes,
                  duplex.pim->softmax_buffer.bytes),
      make_device(duplex, 1u << 20, 5, 4096, 2048),  // small: boundaries reachable with few micro-ops
      make_device(duplex, kMaxU64 - 63, 6, 1u << 20, 1u << 17),  // memory near 2^64: 129-bit compares
      make_device(duplex, 65536, 0, 256, 65536),  // byte alignment, softmax buffer = 32768 scores
  };
}

Bytes bytes_of(const CommandDescriptor& d) {
  return sysc::hostif::encode(d);
}

class DescriptorGenerator {
 public:
  DescriptorGenerator(const Device& device, std::uint64_t seed) : d_(device), rng_(seed) {}

  Bytes next() {
    CommandDescriptor c;
    c.flags = static_cast<std::uint16_t>(rng_());
    c.seq = static_cast<std::uint32_t>(rng_());
    const std::uint64_t kind = rng_() % 100;
    if (kind < 4) {  // unknown opcode
      static constexpr std::uint16_t kOpcodes[] = {0x0000, 0x0001, 0x0002, 0x000F, 0x0013, 0x0110, 0xFFFF};
      c.opcode = static_cast<Opcode>(rng_() % 2 ? kOpcodes[rng_() % 7] : static_cast<std::uint16_t>(rng_()));
      if (c.opcode == Opcode::kPimGemv || c.opcode == Opcode::kPimAttention ||
          c.opcode == Opcode::kPimActivation)
        c.opcode = Opcode::kNop;
      for (auto& a : c.args) a = rng_();
      return bytes_of(c);
    }
    if (kind < 8) {  // any bits at all in a PIM command
      c.opcode = pim_opcode();
      for (auto& a : c.args) a = rng_();
      return bytes_of(c);
    }
    c.opcode = pim_opcode();
    c.flags = flags(c.opcode);
    if (kind < 16)
      overflow_by_one(c);
    else
      shape(c);
    place_operands(c);
    return bytes_of(c);
  }

 private:
  Opcode pim_opcode() {
    static constexpr Opcode kPim[] = {Opcode::kPimGemv, Opcode::kPimAttention, Opcode::kPimActivation};
    return kPim[rng_() % 3];
  }
  std::uint64_t uniform(std::uint64_t lo, std::uint64_t hi) {  // [lo, hi]
    return lo + rng_() % (hi - lo + 1);
  }
  // The flags: GEMV / attention: bit 0 (a bias / sinks) half the time; activation: none; or (1 in 12) any
  // bits, mostly undefined ones (kBadArgument).
  std::uint16_t flags(Opcode op) {
    if (rng_() % 12 == 0) return static_cast<std::uint16_t>(rng_() % 3 == 0 ? 1u << (rng_() % 16) : rng_());
    return op != Opcode::kPimActivation && rng_() % 2 == 0 ? std::uint16_t{1} : std::uint16_t{0};
  }
  // A small dimension, or (1 in 20) a boundary value.
  std::uint64_t dim(std::uint64_t lo, std::uint64_t hi) {
    if (rng_() % 20 != 0) return uniform(lo, hi);
    static constexpr std::uint64_t kSpecial[] = {
        0, kMaxU64, kMaxI64, kMaxI64 + 1, 1u << 31, 0xFFFFFFFFu, std::uint64_t{1} << 32, 2};
    return rng_() % 9 == 0 ? rng_() : kSpecial[rng_() % 8];
  }
  void shape(CommandDescriptor& c) {
    auto& a = c.args;
    switch (c.opcode) {
      case Opcode::kPimGemv:
        a[3] = dim(1, 3);
        a[4] = dim(1, 10);
        a[5] = dim(1, 70);
        break;
      case Opcode::kPimAttention:
        a[4] = dim(1, 2);
        a[5] = dim(1, 24);
        a[6] = (dim(1, 40) & 0xFFFFFFFFu) | scale_and_softcap();  // head_dim | scale | softcap
        break;
      default:
        a[3] = dim(1, 80);
        a[4] = mode();
        break;
    }
  }
  // a6 [63:32] of an attention command: any scale; the logit soft-cap +0 (half), a finite cap > 0, or (1 in
  // 8) bits that are not a cap (negative, -0, Inf, NaN).
  std::uint64_t scale_and_softcap() {
    const std::uint64_t scale = rng_() & 0xFFFFu;
    std::uint64_t cap = 0;
    if (rng_() % 8 == 0) {
      static constexpr std::uint16_t kBad[] = {0x8000, 0x8001, 0xBC00, 0xFBFF, 0x7C00,
                                               0xFC00, 0x7E00, 0x7C01, 0xFFFF};
      cap = rng_() % 4 == 0 ? (rng_() | 0x8000u) & 0xFFFFu : kBad[rng_() % std::size(kBad)];
    } else if (rng_() % 2 == 0) {
      cap = rng_() % 0x7C00u;  // +0 .. 65504
    }
    return scale << 32 | cap << 48;
  }
  // The activation mode a4: one of the nine (0..8), or (1 in 8) a value outside them (some with valid low
  // bits: 0x10, 0x108, 0x10F, 2^32 + 5).
  std::uint64_t mode() {
    if (rng_() % 8 != 0) return rng_() % static_cast<std::uint64_t>(kActivationModes);
    static constexpr std::uint64_t kBad[] = {
        9, 10, 15, 16, 0x108, 0x10F, 255, 256, (std::uint64_t{1} << 32) + 5, kMaxI64 + 1, kMaxU64};
    return rng_() % 4 == 0 ? rng_() : kBad[rng_() % std::size(kBad)];
  }
  // Shapes at a buffer limit: one element past it (kBufferOverflow), or exactly at it (valid when the
  // command stays small enough to run through the RTL).
  void overflow_by_one(CommandDescriptor& c) {
    auto& a = c.args;
    const std::uint64_t input = d_.config.input_buffer_bytes, softmax = d_.config.softmax_buffer_bytes;
    const bool at_limit = rng_() % 2 == 0 && input <= 4096;
    switch (c.opcode) {
      case Opcode::kPimGemv:
        a[3] = uniform(1, 2);
        a[4] = uniform(1, 2);
        a[5] = input / (2 * a[3]) + (at_limit ? 0 : 1);
        break;
      case Opcode::kPimAttention:
        a[4] = 1;
        a[6] = uniform(1, 8) | scale_and_softcap();
        a[5] = uniform(1, 8);
        switch (rng_() % 3) {
          case 0:  // queries: group x head_dim x 2 B vs the input buffer
            a[4] = uniform(1, 2);
            a[6] = ((input / (2 * a[4]) + (at_limit ? 0 : 1)) & 0xFFFFFFFFu) | scale_and_softcap();
            break;
          case 1:  // scores: group x context x 2 B vs the softmax buffer
            a[5] = softmax / 2 + (at_limit && softmax <= 4096 ? 0 : 1);
            break;
          default:  // context vs the softmax unit's 32768 elements
            a[5] = kSoftmaxMaxElements + (rng_() % 64 == 0 ? 0 : 1);
            break;
        }
        break;
      default:
        a[3] = uniform(1, 80);  // activation has no buffer limit
        a[4] = rng_() % 3;
        break;
    }
  }
  // Operand bytes as the device computes them (saturated; only used to place addresses).
  std::uint64_t operand_bytes(const CommandDescriptor& c, int i) const {
    const auto& a = c.args;
    const auto s = [](std::uint64_t x) { return static_cast<std::int64_t>(x); };
    const std::int64_t d = s(a[6] & 0xFFFFFFFFu);
    switch (c.opcode) {
      case Opcode::kPimGemv:  // W, x, y, bias (a6)
        return i == 0   ? sysc::fp16_bytes(s(a[4]), s(a[5]))
               : i == 1 ? sysc::fp16_bytes(s(a[3]), s(a[5]))
               : i == 2 ? sysc::fp16_bytes(s(a[3]), s(a[4]))
                        : sysc::fp16_bytes(s(a[4]), 1);
      case Opcode::kPimAttention:  // q carries the sinks with flags bit 0
        return i == 0   ? sysc::fp16_bytes(s(a[4]), d + (c.flags & 1))
               : i == 3 ? sysc::fp16_bytes(s(a[4]), d)
                        : sysc::fp16_bytes(s(a[5]), d);
      default:
        return sysc::fp16_bytes(s(a[3]), 1);
    }
  }
  std::uint64_t place(std::uint64_t bytes) {
    const std::uint64_t mem = d_.memory, align = std::uint64_t{1} << d_.config.align_log2;
    const std::uint64_t room = bytes <= mem ? mem - bytes : 0;
    const std::uint64_t end = room / align * align;  // the last aligned address that fits
    switch (rng_() % 32) {
      case 0:
      case 1:
        return end;  // ends at (or within one access of) the end of memory
      case 2:
        return end + align;  // one access too far
      case 3:
        return mem;  // at the end of memory
      case 4:
        return rng_() % 2 ? rng_() : kMaxU64;
      case 5:
      case 6:
        if (align > 1) return rng_() % (end / align + 1) * align + uniform(1, align - 1);  // misaligned
        [[fallthrough]];
      default:
        return rng_() % (end / align + 1) * align;
    }
  }
  void place_operands(CommandDescriptor& c) {
    const int operands = c.opcode == Opcode::kPimAttention ? 4 : 3;
    for (int i = 0; i < operands; ++i) c.args[static_cast<std::size_t>(i)] = place(operand_bytes(c, i));
    if (c.opcode == Opcode::kPimGemv && (c.flags & 1) != 0) c.args[6] = place(operand_bytes(c, 3));  // bias
  }

  const Device& d_;
  std::mt19937_64 rng_;
};

CommandMicroOp read_micro_op(const Vpim_datapath& m) {
  CommandMicroOp op;
  op.kind = static_cast<CommandMicroOpKind>(m.cmd_out_kind);
  op.a = m.cmd_out_a;
  op.a_stride = m.cmd_out_a_stride;
  op.b = m.cmd_out_b;
  op.b_buffer = m.cmd_out_b_buffer != 0;
  op.dest = m.cmd_out_dest;
  op.dest_buffer = m.cmd_out_dest_buffer != 0;
  op.count = m.cmd_out_count;
  op.last = m.cmd_out_last != 0;
  op.op_last = m.cmd_out_op_last != 0;
  op.seq = m.cmd_out_seq;
  op.status = static_cast<Status>(m.cmd_out_status);
  op.mode = static_cast<ActivationMode>(m.cmd_out_mode);
  op.c = m.cmd_out_c;
  op.c_valid = m.cmd_out_c_valid != 0;
  return op;
}

void set_config(Vpim_datapath& m, const CommandDecoderConfig& c) {
  m.cmd_cfg_memory_bytes = c.memory_bytes;
  m.cmd_cfg_align_log2 = static_cast<std::uint8_t>(c.align_log2);
  m.cmd_cfg_input_buffer_bytes = c.input_buffer_bytes;
  m.cmd_cfg_softmax_buffer_bytes = c.softmax_buffer_bytes;
}

void set_descriptor(Vpim_datapath& m, const Bytes& b) {
  for (std::size_t w = 0; w < 16; ++w) {
    std::uint32_t v = 0;
    for (std::size_t i = 0; i < 4; ++i) v |= std::uint32_t{b[4 * w + i]} << (8 * i);
    m.cmd_in_descriptor[w] = v;
  }
}

std::string describe(const Bytes& b) {
  const CommandDescriptor d = sysc::hostif::decode_descriptor(b.data());
  std::string s = "opcode " + std::to_string(static_cast<unsigned>(d.opcode)) + " flags " +
                  std::to_string(d.flags) + " args";
  for (auto a : d.args) s += " " + std::to_string(a);
  return s;
}

// Sends descriptor `b` to the RTL decoder (its output always ready) and expects `want` out, one micro-op per
// cycle.
void expect_rtl_micro_ops(PimDatapathBench& bench, const Bytes& b, const std::vector<CommandMicroOp>& want) {
  auto& m = bench.m();
  m.cmd_in_valid = 1;
  set_descriptor(m, b);
  bench.settle();
  ASSERT_TRUE(m.cmd_in_ready) << describe(b);
  bench.edge();
  m.cmd_in_valid = 0;
  for (const auto& op : want) {
    bench.settle();
    ASSERT_TRUE(m.cmd_out_valid) << describe(b);
    EXPECT_EQ(read_micro_op(m), op) << describe(b) << " mode " << static_cast<int>(m.cmd_out_mode);
    bench.edge();
  }
}

// Commands with more micro-ops than this are checked for status only (golden vs device), not streamed.
constexpr std::uint64_t kMaxStreamedMicroOps = 80000;

TEST(RtlCommandDecoder, StatusAndMicroOpsMatchGoldenAndDeviceUnderBackPressure) {
  PimDatapathBench bench(false);
  auto& m = bench.m();
  std::mt19937_64 rng(2409);
  const std::vector<Device> devs = devices();
  const int per_device = 26000;
  std::array<std::uint64_t, 10> by_status{};
  std::uint64_t descriptors = 0, status_only = 0, micro_ops = 0;
  for (std::size_t di = 0; di < devs.size(); ++di) {
    const Device& dev = devs[di];
    set_config(m, dev.config);
    DescriptorGenerator gen(dev, 7000 + di);
    std::deque<CommandMicroOp> expected;
    int sent = 0;
    Bytes pending{};
    bool have_pending = false;
    std::uint64_t quiet = 0;
    while (sent < per_device || have_pending || !expected.empty()) {
      while (!have_pending && sent < per_device) {
        const Bytes b = gen.next();
        const Status golden = decode_command_status(b.data(), dev.config);
        const Status device =
            sysc::check_pim_command(dev.hbm, dev.pim, dev.memory, sysc::hostif::decode_descriptor(b.data()));
        ASSERT_EQ(static_cast<int>(golden), static_cast<int>(device))
            << "device " << di << ": " << describe(b);
        ++by_status[static_cast<std::size_t>(golden)];
        ++descriptors;
        ++sent;
        if (command_micro_op_count(b.data(), dev.config, kRtlLanes) > kMaxStreamedMicroOps) {
          ++status_only;
          continue;
        }
        pending = b;
        have_pending = true;
      }
      const bool valid = have_pending && rng() % 4 != 0;
      m.cmd_in_valid = valid;
      set_descriptor(m, pending);
      const bool ready = rng() % 4 != 0;
      m.cmd_out_ready = ready;
      bench.settle();
      const bool in_fire = valid && m.cmd_in_ready;
      if (ready && m.cmd_out_valid) {
        ASSERT_FALSE(expected.empty()) << "unexpected micro-op at cycle " << bench.cycle();
        const CommandMicroOp got = read_micro_op(m);
        const CommandMicroOp& want = expected.front();
        ASSERT_EQ(got, want) << "device " << di << " micro-op " << micro_ops << ": kind "
                             << static_cast<int>(got.kind) << "/" << static_cast<int>(want.kind) << " a "
                             << got.a << "/" << want.a << " b " << got.b << "/" << want.b << " dest "
                             << got.dest << "/" << want.dest << " count " << got.count << "/" << want.count
                             << " status " << static_cast<int>(got.status) << "/"
                             << static_cast<int>(want.status) << " mode " << static_cast<int>(got.mode) << "/"
                             << static_cast<int>(want.mode) << " c " << got.c << "/" << want.c << " c_valid "
                             << got.c_valid << "/" << want.c_valid;
        expected.pop_front();
        ++micro_ops;
        quiet = 0;
      } else if (!expected.empty() && ++quiet > 100) {
        FAIL() << "decoder stalled with " << expected.size() << " micro-ops due";
      }
      if (in_fire) {
        for (const auto& op : sequence_pim_command(pending.data(), dev.config, kRtlLanes))
          expected.push_back(op);
        have_pending = false;
      }
      bench.edge();
    }
  }
  EXPECT_GE(descriptors, 100000u);
  std::printf("descriptors %llu (status only %llu), micro-ops %llu, cycles %llu\n",
              static_cast<unsigned long long>(descriptors), static_cast<unsigned long long>(status_only),
              static_cast<unsigned long long>(micro_ops), static_cast<unsigned long long>(bench.cycle()));
  for (Status s : {Status::kOk, Status::kBadOpcode, Status::kOutOfRange, Status::kMisaligned,
                   Status::kBufferOverflow, Status::kBadShape, Status::kBadArgument}) {
    std::printf("  %-22s %llu\n", sysc::hostif::to_string(s),
                static_cast<unsigned long long>(by_status[static_cast<std::size_t>(s)]));
    EXPECT_GT(by_status[static_cast<std::size_t>(s)], 1000u) << sysc::hostif::to_string(s);
  }
  EXPECT_LT(status_only, descriptors / 100);
}

// A command far too long to list: the RTL's first micro-ops equal those of the same command with fewer rows
// (64-bit counters and addresses, no early op_last).
TEST(RtlCommandDecoder, HugeCommandStartsLikeItsShortPrefix) {
  PimDatapathBench bench(false);
  auto& m = bench.m();
  const std::vector<Device> devs = devices();
  const Device& dev = devs[2];  // memory near 2^64
  set_config(m, dev.config);
  CommandDescriptor huge;
  huge.opcode = Opcode::kPimGemv;
  huge.seq = 77;
  huge.args = {0, std::uint64_t{1} << 62, (std::uint64_t{1} << 62) + 4096, 3, std::uint64_t{1} << 40, 40, 0};
  const Bytes huge_bytes = bytes_of(huge);
  ASSERT_EQ(decode_command_status(huge_bytes.data(), dev.config), Status::kOk);
  EXPECT_EQ(command_micro_op_count(huge_bytes.data(), dev.config, kRtlLanes),
            3 * (std::uint64_t{1} << 40) * 3);
  CommandDescriptor prefix = huge;
  prefix.args[3] = 1;
  prefix.args[4] = 1000;
  const Bytes prefix_bytes = bytes_of(prefix);
  const auto want = sequence_pim_command(prefix_bytes.data(), dev.config, kRtlLanes);
  m.cmd_out_ready = 1;
  m.cmd_in_valid = 1;
  set_descriptor(m, huge_bytes);
  bench.settle();
  ASSERT_TRUE(m.cmd_in_ready);
  bench.edge();
  m.cmd_in_valid = 0;
  for (std::size_t i = 0; i + 1 < want.size(); ++i) {
    bench.settle();
    ASSERT_TRUE(m.cmd_out_valid);
    ASSERT_EQ(read_micro_op(m), want[i]) << "micro-op " << i;
    bench.edge();
  }
  bench.settle();
  EXPECT_FALSE(m.cmd_out_op_last);
  EXPECT_FALSE(m.cmd_in_ready);  // still busy with the huge command
}

TEST(RtlCommandDecoder, TimingMatchesTheConstants) {
  PimDatapathBench bench(false);
  auto& m = bench.m();
  const Device dev = devices()[1];
  set_config(m, dev.config);
  m.cmd_out_ready = 1;
  CommandDescriptor gemv{Opcode::kPimGemv, 0, 1, {0, 4096, 8192, 2, 3, 40, 0}};
  CommandDescriptor attention{
      Opcode::kPimAttention, 0, 2, {0, 4096, 8192, 12288, 2, 5, 20 | (0x3C00ull << 32)}};
  CommandDescriptor bad{Opcode::kPimGemv, 0, 3, {1, 0, 0, 1, 1, 1, 0}};  // misaligned
  const std::vector<Bytes> cmds = {bytes_of(gemv), bytes_of(attention), bytes_of(bad)};
  std::uint64_t total = 0;
  for (const auto& c : cmds) total += sequence_pim_command(c.data(), dev.config, kRtlLanes).size();
  EXPECT_EQ(total, 2u * 3u * 3u + 2u * (5u * 2u + 5u + 20u * 1u) + 1u);
  std::uint64_t accepted = 0, first_out = 0, outputs = 0;
  std::size_t next = 0;
  while (outputs < total) {
    m.cmd_in_valid = next < cmds.size();
    set_descriptor(m, cmds[next < cmds.size() ? next : 0]);
    bench.settle();
    if (m.cmd_out_valid && outputs++ == 0) first_out = bench.cycle();
    if (next < cmds.size() && m.cmd_in_ready) {
      if (next == 0) accepted = bench.cycle();
      ++next;
    }
    bench.edge();
    ASSERT_LT(bench.cycle(), 1000u);
  }
  EXPECT_EQ(first_out - accepted, static_cast<std::uint64_t>(timing::kCommandDecoderLatency));
  // Back to back: the last micro-op of all three commands comes with no bubble.
  EXPECT_EQ(bench.cycle() - 1 - accepted, timing::command_decoder_cycles(total));
}

// The activation mode a4: every valid mode reaches every micro-op; any other value is kBadArgument, checked
// after the element count and before the operands; RTL = golden = check_pim_command.
TEST(RtlCommandDecoder, ActivationModeField) {
  PimDatapathBench bench(false);
  auto& m = bench.m();
  const Device dev = devices()[1];
  set_config(m, dev.config);
  m.cmd_out_ready = 1;
  struct Case {
    std::array<std::uint64_t, 7> args;
    Status status;
  };
  const std::vector<Case> cases = {
      {{0x100, 0x200, 0x300, 5, 0, 0, 0}, Status::kOk},
      {{0x100, 0x200, 0x300, 5, 1, 0, 0}, Status::kOk},
      {{0x100, 0x200, 0x300, 5, 2, 0, 0}, Status::kOk},
      {{0x100, 0x200, 0x300, 5, 3, 0, 0}, Status::kOk},
      {{0x100, 0x200, 0x300, 5, 4, 0, 0}, Status::kOk},
      {{0x100, 0x200, 0x300, 5, 5, 0, 0}, Status::kOk},
      {{0x100, 0x200, 0x300, 5, 6, 0, 0}, Status::kOk},
      {{0x100, 0x200, 0x300, 5, 7, 0, 0}, Status::kOk},
      {{0x100, 0x200, 0x300, 5, 8, 0, 0}, Status::kOk},  // swiglu-oai-gate: the 4-bit field
      {{0x100, 0x200, 0x300, 5, 9, 0, 0}, Status::kBadArgument},
      {{0x100, 0x200, 0x300, 5, 15, 0, 0}, Status::kBadArgument},
      {{0x100, 0x200, 0x300, 5, 0x10, 0, 0}, Status::kBadArgument},   // the low 4 bits alone would be valid
      {{0x100, 0x200, 0x300, 5, 0x108, 0, 0}, Status::kBadArgument},  // the low bits alone would be valid
      {{0x100, 0x200, 0x300, 5, kMaxU64, 0, 0}, Status::kBadArgument},
      {{0x100, 0x200, 0x300, 0, 9, 0, 0}, Status::kBadShape},     // elements first
      {{0x101, 0x200, 0x300, 5, 9, 0, 0}, Status::kBadArgument},  // then the mode, before misalignment
      {{0x101, 0x200, 0x300, 5, 8, 0, 0}, Status::kMisaligned},
  };
  for (const Case& c : cases) {
    const Bytes b = bytes_of({Opcode::kPimActivation, 0, 11, c.args});
    EXPECT_EQ(decode_command_status(b.data(), dev.config), c.status) << describe(b);
    EXPECT_EQ(
        sysc::check_pim_command(dev.hbm, dev.pim, dev.memory, sysc::hostif::decode_descriptor(b.data())),
        c.status)
        << describe(b);
    const auto want = sequence_pim_command(b.data(), dev.config, kRtlLanes);
    if (c.status == Status::kOk) {
      ASSERT_EQ(want.size(), 5u);
      for (const auto& op : want) EXPECT_EQ(op.mode, static_cast<ActivationMode>(c.args[4]));
    }
    expect_rtl_micro_ops(bench, b, want);
  }
  EXPECT_STREQ(sysc::hostif::to_string(Status::kBadArgument), "bad argument");
}

// The attention logit soft-cap a6 [63:48]: +0 or a finite FP16 > 0 reaches every softmax micro-op (b [31:16],
// the scale in b [15:0]); any other bits are kBadArgument, checked after the shape and buffers and before the
// operands; RTL = golden = check_pim_command.
TEST(RtlCommandDecoder, AttentionSoftcapField) {
  PimDatapathBench bench(false);
  auto& m = bench.m();
  const Device dev = devices()[1];
  set_config(m, dev.config);
  m.cmd_out_ready = 1;
  auto a6 = [](std::uint64_t head_dim, std::uint64_t cap) { return head_dim | 0x2E00ull << 32 | cap << 48; };
  struct Case {
    std::array<std::uint64_t, 7> args;
    Status status;
  };
  std::vector<Case> cases;
  for (const std::uint64_t cap : {0x0000u, 0x0001u, 0x03FFu, 0x0400u, 0x3C00u, 0x5240u, 0x7BFFu})
    cases.push_back({{0x100, 0x200, 0x300, 0x400, 2, 3, a6(4, cap)}, Status::kOk});
  for (const std::uint64_t cap : {0x8000u, 0x8001u, 0xBC00u, 0x7C00u, 0xFC00u, 0x7E00u, 0x7C01u, 0xFFFFu})
    cases.push_back({{0x100, 0x200, 0x300, 0x400, 2, 3, a6(4, cap)}, Status::kBadArgument});
  cases.push_back({{0x100, 0x200, 0x300, 0x400, 0, 3, a6(4, 0x7C00)}, Status::kBadShape});  // shape first
  cases.push_back(
      {{0x100, 0x200, 0x300, 0x400, 1, 1025, a6(4, 0x7C00)}, Status::kBufferOverflow});  // buffers next
  cases.push_back(
      {{0x101, 0x200, 0x300, 0x400, 2, 3, a6(4, 0x7C00)}, Status::kBadArgument});  // before operands
  cases.push_back({{0x101, 0x200, 0x300, 0x400, 2, 3, a6(4, 0x5240)}, Status::kMisaligned});
  for (const Case& c : cases) {
    const Bytes b = bytes_of({Opcode::kPimAttention, 0, 12, c.args});
    EXPECT_EQ(decode_command_status(b.data(), dev.config), c.status) << describe(b);
    const auto d = sysc::hostif::decode_descriptor(b.data());
    EXPECT_EQ(sysc::check_pim_command(dev.hbm, dev.pim, dev.memory, d), c.status) << describe(b);
    const auto want = sequence_pim_command(b.data(), dev.config, kRtlLanes);
    if (c.status == Status::kOk) {
      std::size_t softmax_ops = 0;
      for (const auto& op : want)
        if (op.kind == CommandMicroOpKind::kSoftmaxElement) {
          EXPECT_EQ(op.b, 0x2E00u | (c.args[6] >> 48) << 16) << describe(b);
          ++softmax_ops;
        }
      EXPECT_EQ(softmax_ops, 2u * 3u);
      EXPECT_EQ(sysc::attention_args(d).softcap, static_cast<std::uint16_t>(c.args[6] >> 48));
    }
    expect_rtl_micro_ops(bench, b, want);
  }
}

// The flags word: GEMV bit 0 = a bias [rows] at a6, attention bit 0 = sinks [group] right after q; every
// other bit (and any bit of an activation command) is kBadArgument, checked after the shape and buffers and
// before the operands; flags 0 keeps its old meaning (a6 of a GEMV ignored). The bias is a fourth operand
// (checked after y), the sinks lengthen q by 2 group bytes. Valid flagged commands: operand C on the first
// pass of each dot product (bias + 2 r) / the first softmax element of each head (q + 2 group d + 2 g),
// nowhere else. RTL = golden = check_pim_command.
TEST(RtlCommandDecoder, FlagsBiasAndSinks) {
  PimDatapathBench bench(false);
  auto& m = bench.m();
  const Device dev = devices()[1];  // 1 MiB, 32 B alignment, 4 KiB input / 2 KiB softmax buffers
  set_config(m, dev.config);
  m.cmd_out_ready = 1;
  const std::uint64_t end = dev.memory;
  struct Case {
    Opcode op;
    std::uint16_t flags;
    std::array<std::uint64_t, 7> args;
    Status status;
  };
  const std::uint64_t a6 = 4 | 0x2E00ull << 32;  // head_dim 4, scale 0.1
  const std::vector<Case> cases = {
      {Opcode::kPimGemv, 0, {0x100, 0x200, 0x300, 2, 3, 20, 0x401}, Status::kOk},  // a6 ignored without bit 0
      {Opcode::kPimGemv, 1, {0x100, 0x200, 0x300, 2, 3, 20, 0x400}, Status::kOk},
      {Opcode::kPimGemv, 1, {0x100, 0x200, 0x300, 2, 3, 20, 0x401}, Status::kMisaligned},  // the bias
      {Opcode::kPimGemv, 1, {0x100, 0x200, 0x300, 2, 3, 20, end - 32}, Status::kOk},       // 6 B at the end
      {Opcode::kPimGemv, 1, {0x100, 0x200, 0x300, 2, 17, 20, end - 32}, Status::kOutOfRange},  // 34 B
      {Opcode::kPimGemv, 1, {0x101, 0x200, 0x300, 2, 3, 20, end}, Status::kMisaligned},  // W before the bias
      {Opcode::kPimGemv, 2, {0x100, 0x200, 0x300, 2, 3, 20, 0x400}, Status::kBadArgument},
      {Opcode::kPimGemv, 0x8001, {0x100, 0x200, 0x300, 2, 3, 20, 0x400}, Status::kBadArgument},
      {Opcode::kPimGemv, 2, {0x101, 0x200, 0x300, 2, 3, 20, 0x400}, Status::kBadArgument},  // before operands
      {Opcode::kPimGemv, 2, {0x100, 0x200, 0x300, 0, 3, 20, 0x400}, Status::kBadShape},     // after the shape
      {Opcode::kPimGemv, 2, {0x100, 0x200, 0x300, 2, 3, 1025, 0x400}, Status::kBufferOverflow},  // buffers
      {Opcode::kPimAttention, 0, {0x100, 0x200, 0x300, 0x400, 2, 3, a6}, Status::kOk},
      {Opcode::kPimAttention, 1, {0x100, 0x200, 0x300, 0x400, 2, 3, a6}, Status::kOk},
      {Opcode::kPimAttention, 4, {0x100, 0x200, 0x300, 0x400, 2, 3, a6}, Status::kBadArgument},
      {Opcode::kPimAttention, 4, {0x101, 0x200, 0x300, 0x400, 2, 3, a6}, Status::kBadArgument},
      // q of 2 x 4 FP16 = 16 B ends exactly at the end of memory; its 2 sinks would need 4 B more
      {Opcode::kPimAttention, 0, {end - 16, 0x200, 0x300, 0x400, 2, 3, a6}, Status::kMisaligned},
      {Opcode::kPimAttention, 0, {end - 32, 0x200, 0x300, 0x400, 2, 3, a6 + 4}, Status::kOk},  // 2 x 8: 32 B
      {Opcode::kPimAttention, 1, {end - 32, 0x200, 0x300, 0x400, 2, 3, a6 + 4}, Status::kOutOfRange},
      {Opcode::kPimAttention, 1, {end - 64, 0x200, 0x300, 0x400, 2, 3, a6 + 4}, Status::kOk},
      {Opcode::kPimActivation, 1, {0x100, 0x200, 0x300, 5, 0, 0, 0}, Status::kBadArgument},  // no flags
      {Opcode::kPimActivation, 0x100, {0x101, 0x200, 0x300, 5, 8, 0, 0}, Status::kBadArgument},
      {Opcode::kPimActivation, 1, {0x100, 0x200, 0x300, 0, 0, 0, 0}, Status::kBadShape},
  };
  for (const Case& c : cases) {
    const Bytes b = bytes_of({c.op, c.flags, 13, c.args});
    EXPECT_EQ(decode_command_status(b.data(), dev.config), c.status) << describe(b);
    const auto d = sysc::hostif::decode_descriptor(b.data());
    EXPECT_EQ(sysc::check_pim_command(dev.hbm, dev.pim, dev.memory, d), c.status) << describe(b);
    const auto want = sequence_pim_command(b.data(), dev.config, kRtlLanes);
    if (c.status == Status::kOk) {
      const auto& a = c.args;
      std::size_t with_c = 0;
      if (c.op == Opcode::kPimGemv) {
        ASSERT_EQ(want.size(), a[3] * a[4] * 2);  // 20 columns: 2 passes per dot product
        for (std::size_t i = 0; i < want.size(); ++i) {
          const bool first_pass = i % 2 == 0;
          const std::uint64_t r = i / 2 % a[4];
          EXPECT_EQ(want[i].c_valid, c.flags == 1 && first_pass) << i;
          EXPECT_EQ(want[i].c, want[i].c_valid ? a[6] + 2 * r : 0) << i;
          with_c += want[i].c_valid;
        }
        EXPECT_EQ(with_c, c.flags == 1 ? a[3] * a[4] : 0);
        EXPECT_EQ(sysc::gemv_args(d).has_bias(), c.flags == 1);
      } else {
        const std::uint64_t hd = a[6] & 0xFFFFFFFFu;
        std::uint64_t g = 0;
        for (std::size_t i = 0; i < want.size(); ++i) {
          const bool row_start = want[i].kind == CommandMicroOpKind::kSoftmaxElement && want[i].a == 0;
          EXPECT_EQ(want[i].c_valid, c.flags == 1 && row_start) << i;
          if (want[i].c_valid) {
            EXPECT_EQ(want[i].c, a[0] + 2 * a[4] * hd + 2 * g) << i;
            ++g;
          } else {
            EXPECT_EQ(want[i].c, 0u) << i;
          }
          with_c += want[i].c_valid;
        }
        EXPECT_EQ(with_c, c.flags == 1 ? a[4] : 0);
        EXPECT_EQ(sysc::attention_args(d).sinks(), c.flags == 1);
      }
    }
    expect_rtl_micro_ops(bench, b, want);
  }
}

TEST(PimCommandDecoderGolden, DocumentedExpansion) {
  const CommandDecoderConfig config{1u << 20, 5, 4096, 2048};
  // GEMV 1 token x 2 rows x 17 cols at W = 0x100, x = 0x200, y = 0x300: passes of 16 and 1 per row.
  const Bytes gemv = bytes_of({Opcode::kPimGemv, 0, 9, {0x100, 0x200, 0x300, 1, 2, 17, 0}});
  const auto ops = sequence_pim_command(gemv.data(), config, 16);
  ASSERT_EQ(ops.size(), 4u);
  EXPECT_EQ(ops[1], (CommandMicroOp{CommandMicroOpKind::kGemmPass, 0x100 + 32, 2, 0x200 + 32, false, 0x300,
                                    false, 1, true, false, 9, Status::kOk}));
  EXPECT_EQ(ops[2].a, 0x100u + 34u);
  EXPECT_EQ(ops[3].dest, 0x302u);
  EXPECT_TRUE(ops[3].op_last);
  EXPECT_FALSE(ops[0].c_valid);
  // The same GEMV with a bias at 0x400: the first pass of each row carries c = 0x400 + 2 r.
  const Bytes biased = bytes_of({Opcode::kPimGemv, 1, 9, {0x100, 0x200, 0x300, 1, 2, 17, 0x400}});
  const auto b_ops = sequence_pim_command(biased.data(), config, 16);
  ASSERT_EQ(b_ops.size(), 4u);
  EXPECT_EQ(b_ops[0].c, 0x400u);
  EXPECT_TRUE(b_ops[0].c_valid);
  EXPECT_FALSE(b_ops[1].c_valid);
  EXPECT_EQ(b_ops[2].c, 0x402u);
  CommandMicroOp no_c = b_ops[3];
  EXPECT_EQ(no_c, ops[3]);  // every other field as without the bias
  // Attention group 1, context 17, d 2: PV reads a column of V (stride 2 d = 4 B), p from the buffer.
  const Bytes attn = bytes_of({Opcode::kPimAttention, 0, 4, {0x400, 0x800, 0xC00, 0x1000, 1, 17, 2}});
  const auto a = sequence_pim_command(attn.data(), config, 16);
  ASSERT_EQ(a.size(), 17u + 17u + 2u * 2u);
  EXPECT_EQ(a[17].kind, CommandMicroOpKind::kSoftmaxElement);
  EXPECT_EQ(a[17].b, 0u);  // scale and soft-cap +0
  const Bytes capped =
      bytes_of({Opcode::kPimAttention, 0, 4, {0x400, 0x800, 0xC00, 0x1000, 1, 17, 2 | 0x5240ull << 48}});
  EXPECT_EQ(sequence_pim_command(capped.data(), config, 16)[17].b, 0x5240u << 16);  // cap 50
  // With sinks: the softmax row's first element carries the sink right after q (q + 2 group d = 0x404).
  const Bytes sinks = bytes_of({Opcode::kPimAttention, 1, 4, {0x400, 0x800, 0xC00, 0x1000, 1, 17, 2}});
  const auto s_ops = sequence_pim_command(sinks.data(), config, 16);
  ASSERT_EQ(s_ops.size(), a.size());
  EXPECT_TRUE(s_ops[17].c_valid);
  EXPECT_EQ(s_ops[17].c, 0x404u);
  for (std::size_t i = 0; i < s_ops.size(); ++i) {
    if (i != 17) {
      EXPECT_FALSE(s_ops[i].c_valid) << i;
    }
  }
  EXPECT_TRUE(a[33].last);
  EXPECT_EQ(a[35], (CommandMicroOp{CommandMicroOpKind::kGemmPass, 0xC00 + 16 * 4, 4, 16, true, 0x1000, false,
                                   1, true, false, 4, Status::kOk}));
  // A rejected descriptor is one micro-op carrying its status.
  const Bytes bad = bytes_of({Opcode::kPimActivation, 0, 5, {0, 0, 0, 0, 0, 0, 0}});
  const auto r = sequence_pim_command(bad.data(), config, 16);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, Status::kBadShape);
  EXPECT_TRUE(r[0].op_last);
  EXPECT_THROW(sequence_pim_command(gemv.data(), config, 3), Error);
  EXPECT_THROW(decode_command_status(gemv.data(), {1u << 20, 64, 0, 0}), Error);
  const Bytes big = bytes_of({Opcode::kPimActivation, 0, 5, {0, 1u << 19, 0, 1u << 18, 0, 0, 0}});
  EXPECT_EQ(command_micro_op_count(big.data(), {1u << 20, 5, 0, 0}, 16), 1u << 18);
  const Bytes huge = bytes_of({Opcode::kPimActivation, 0, 5, {0, 0, 0, 1u << 25, 0, 0, 0}});
  EXPECT_THROW(sequence_pim_command(huge.data(), {1u << 27, 5, 0, 0}, 16), Error);
}

}  // namespace
}  // namespace duplex::pim
