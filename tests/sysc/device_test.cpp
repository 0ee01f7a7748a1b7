// The SystemC device as a driver uses it: registers, command ring + doorbell, completion queue, interrupt,
// DMA, PIM ops, and every malformed-command class (each completes with its error code, the device keeps
// serving, device memory stays intact). One testbench is elaborated before the first sc_start; each test
// resets the queues through the control register, so the tests also run in one process.
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <tlm_utils/simple_initiator_socket.h>
#include <tlm_utils/simple_target_socket.h>
#include <systemc>
#include <tlm>

#include "duplex/base/fp16.hpp"
#include "duplex/rtl/golden_datapath.hpp"
#include "duplex/sysc/duplex_device.hpp"
#include "duplex/sysc/pim_timing.hpp"
#include "duplex/sysc/timing_table.hpp"

namespace duplex::sysc {
namespace {

using hostif::CommandDescriptor;
using hostif::CompletionEntry;
using hostif::Opcode;
using hostif::Status;

// Host memory: 1 GiB of sparse bytes; anything above is an address error.
struct HostMemory : sc_core::sc_module {
  tlm_utils::simple_target_socket<HostMemory> socket{"socket"};
  SparseMemory bytes{1ull << 30};
  explicit HostMemory(sc_core::sc_module_name n) : sc_core::sc_module(n) {
    socket.register_b_transport(this, &HostMemory::transport);
  }
  void transport(tlm::tlm_generic_payload& p, sc_core::sc_time& delay) {
    const std::uint64_t a = p.get_address(), len = p.get_data_length();
    if (a > bytes.capacity() || len > bytes.capacity() - a) {
      p.set_response_status(tlm::TLM_ADDRESS_ERROR_RESPONSE);
      return;
    }
    if (p.is_read())
      bytes.read(a, p.get_data_ptr(), len);
    else
      bytes.write(a, p.get_data_ptr(), len);
    delay += sc_core::sc_time(100, sc_core::SC_NS);
    p.set_response_status(tlm::TLM_OK_RESPONSE);
  }
};

SystemSpec with_datapath(SystemSpec s, const char* kind) {
  s.pim->datapath = kind;
  return s;
}

struct Testbench : sc_core::sc_module {
  const SystemSpec system = load_system("duplex");
  DuplexDevice device{"device", system};
  HostMemory host{"host"};
  // A second device whose Logic-PIM arithmetic runs on the Verilated RTL (pim.datapath: rtl).
  DuplexDevice rtl_device{"rtl_device", with_datapath(system, "rtl")};
  HostMemory rtl_host{"rtl_host"};
  sc_core::sc_signal<bool> rtl_irq{"rtl_irq"};
  sc_core::sc_signal<bool> irq{"irq"};
  tlm_utils::simple_initiator_socket<Testbench> mmio{"mmio_init"};
  tlm_utils::simple_initiator_socket<Testbench> mem{"mem_init"};
  tlm_utils::simple_initiator_socket<Testbench> rtl_mmio{"rtl_mmio_init"};
  tlm_utils::simple_initiator_socket<Testbench> rtl_mem{"rtl_mem_init"};
  static constexpr std::uint64_t kRing = 0x100000, kCq = 0x200000;
  static constexpr std::uint32_t kRingSize = 8, kCqSize = 16;
  std::uint32_t tail = 0, cq_head = 0;

  explicit Testbench(sc_core::sc_module_name n) : sc_core::sc_module(n) {
    device.host_dma.bind(host.socket);
    device.irq(irq);
    rtl_device.host_dma.bind(rtl_host.socket);
    rtl_device.irq(rtl_irq);
    rtl_mmio.bind(rtl_device.mmio);
    rtl_mem.bind(rtl_device.memory);
    mmio.bind(device.mmio);
    mem.bind(device.memory);
    mem.register_nb_transport_bw(this, &Testbench::backward);
  }
  tlm::tlm_response_status access(tlm_utils::simple_initiator_socket<Testbench>& s, bool write,
                                  std::uint64_t a, void* data, unsigned len) {
    tlm::tlm_generic_payload p;
    sc_core::sc_time delay = sc_core::SC_ZERO_TIME;
    p.set_command(write ? tlm::TLM_WRITE_COMMAND : tlm::TLM_READ_COMMAND);
    p.set_address(a);
    p.set_data_ptr(static_cast<unsigned char*>(data));
    p.set_data_length(len);
    p.set_streaming_width(len);
    p.set_response_status(tlm::TLM_INCOMPLETE_RESPONSE);
    s->b_transport(p, delay);
    return p.get_response_status();
  }
  // Approximately-timed initiator side: the device's memory socket answers BEGIN_REQ with BEGIN_RESP.
  tlm::tlm_sync_enum backward(tlm::tlm_generic_payload&, tlm::tlm_phase& phase, sc_core::sc_time& delay) {
    if (phase == tlm::BEGIN_RESP) response.notify(delay);
    return tlm::TLM_ACCEPTED;
  }
  sc_core::sc_event response;
  std::uint32_t rd(std::uint32_t reg) {
    std::uint32_t v = 0;
    EXPECT_EQ(access(mmio, false, reg, &v, 4), tlm::TLM_OK_RESPONSE);
    return v;
  }
  void wr(std::uint32_t reg, std::uint32_t v) {
    EXPECT_EQ(access(mmio, true, reg, &v, 4), tlm::TLM_OK_RESPONSE);
    sc_core::sc_start(sc_core::SC_ZERO_TIME);
  }
  void reset() {
    run_idle();
    wr(hostif::kRegControl, hostif::kControlReset | hostif::kControlClearError);
    wr(hostif::kRegIrqStatus, ~0u);
    wr(hostif::kRegRingBaseLo, static_cast<std::uint32_t>(kRing));
    wr(hostif::kRegRingBaseHi, 0);
    wr(hostif::kRegRingSize, kRingSize);
    wr(hostif::kRegCqBaseLo, static_cast<std::uint32_t>(kCq));
    wr(hostif::kRegCqBaseHi, 0);
    wr(hostif::kRegCqSize, kCqSize);
    wr(hostif::kRegIrqEnable, hostif::kIrqCompletion | hostif::kIrqError);
    tail = cq_head = 0;
  }
  // Writes the descriptor into the next ring slot (without ringing the doorbell).
  void place(const CommandDescriptor& d) {
    auto bytes = hostif::encode(d);
    ASSERT_EQ(access(mem, true, kRing + (tail % kRingSize) * hostif::kDescriptorBytes, bytes.data(), 64),
              tlm::TLM_OK_RESPONSE);
    ++tail;
  }
  void run_idle() {
    for (int i = 0; i < 100000 && (device.busy() || rd(hostif::kRegRingHead) != rd(hostif::kRegRingTail));
         ++i)
      sc_core::sc_start(1, sc_core::SC_US);
    sc_core::sc_start(1, sc_core::SC_US);
  }
  CompletionEntry submit(const CommandDescriptor& d) {
    place(d);
    wr(hostif::kRegRingTail, tail);
    run_idle();
    return pop();
  }
  CompletionEntry pop() {
    EXPECT_NE(rd(hostif::kRegCqTail), cq_head) << "no completion";
    std::uint8_t b[hostif::kCompletionBytes];
    access(mem, false, kCq + (cq_head % kCqSize) * hostif::kCompletionBytes, b, sizeof b);
    wr(hostif::kRegCqHead, ++cq_head);
    return hostif::decode_completion(b);
  }
};

Testbench* bench = nullptr;

class SyscDevice : public ::testing::Test {
 protected:
  void SetUp() override { bench->reset(); }
  Testbench& tb() { return *bench; }
  static CommandDescriptor cmd(Opcode op, std::uint32_t seq, std::array<std::uint64_t, 7> args = {}) {
    CommandDescriptor d;
    d.opcode = op;
    d.seq = seq;
    d.args = args;
    return d;
  }
  // After an error: the device still serves a NOP, and the error is visible in the registers.
  void expect_error_then_recovers(Status s) {
    EXPECT_TRUE(tb().rd(hostif::kRegStatus) & hostif::kStatusError);
    EXPECT_EQ(tb().rd(hostif::kRegErrorCode), static_cast<std::uint32_t>(s));
    EXPECT_TRUE(tb().rd(hostif::kRegIrqStatus) & hostif::kIrqError);
    EXPECT_TRUE(tb().irq.read());
    tb().wr(hostif::kRegControl, hostif::kControlClearError);
    const CompletionEntry ok = tb().submit(cmd(Opcode::kNop, 999));
    EXPECT_EQ(ok.status, Status::kOk);
    EXPECT_EQ(ok.seq, 999u);
    EXPECT_FALSE(tb().rd(hostif::kRegStatus) & hostif::kStatusError);
  }
  void fill_sentinel() {
    std::vector<std::uint8_t> s(4096, 0xA5);
    tb().device.backdoor().write(0x800000, s.data(), s.size());
  }
  void expect_sentinel() {
    std::vector<std::uint8_t> s(4096);
    tb().device.backdoor().read(0x800000, s.data(), s.size());
    EXPECT_EQ(s, std::vector<std::uint8_t>(4096, 0xA5));
  }
};

TEST_F(SyscDevice, IdentityCapabilitiesAndStatus) {
  EXPECT_EQ(tb().rd(hostif::kRegId), hostif::kDeviceId);
  EXPECT_EQ(tb().rd(hostif::kRegVersion), hostif::kVersion);
  EXPECT_EQ(tb().rd(hostif::kRegCaps) & 0xFF, static_cast<std::uint32_t>(tb().system.stacks));
  EXPECT_TRUE(tb().rd(hostif::kRegCaps) & (1u << 8));
  EXPECT_EQ(tb().rd(hostif::kRegStatus), hostif::kStatusReady);
  std::uint32_t v = 0;
  EXPECT_EQ(tb().access(tb().mmio, false, 0x1000, &v, 4), tlm::TLM_ADDRESS_ERROR_RESPONSE);
  EXPECT_EQ(tb().access(tb().mmio, false, 0x2, &v, 4), tlm::TLM_ADDRESS_ERROR_RESPONSE);
}

TEST_F(SyscDevice, NopCompletesWithSequenceNumberAndInterrupt) {
  EXPECT_FALSE(tb().irq.read());
  const CompletionEntry c = tb().submit(cmd(Opcode::kNop, 41));
  EXPECT_EQ(c.seq, 41u);
  EXPECT_EQ(c.status, Status::kOk);
  EXPECT_EQ(c.opcode, Opcode::kNop);
  EXPECT_TRUE(tb().irq.read());
  tb().wr(hostif::kRegIrqStatus, hostif::kIrqCompletion);
  sc_core::sc_start(1, sc_core::SC_NS);
  EXPECT_FALSE(tb().irq.read());
  EXPECT_EQ(tb().rd(hostif::kRegRingHead), 1u);
}

TEST_F(SyscDevice, DmaRoundTripMovesRealBytes) {
  std::vector<std::uint8_t> data(100000);
  std::mt19937 rng(3);
  for (auto& b : data) b = static_cast<std::uint8_t>(rng());
  tb().host.bytes.write(0x1000, data.data(), data.size());
  const std::uint64_t dev = 3ull << 30;
  const CompletionEntry in = tb().submit(cmd(Opcode::kDmaToDevice, 1, {0x1000, dev, data.size()}));
  EXPECT_EQ(in.status, Status::kOk);
  const CompletionEntry out = tb().submit(cmd(Opcode::kDmaToHost, 2, {0x900000, dev, data.size()}));
  EXPECT_EQ(out.status, Status::kOk);
  std::vector<std::uint8_t> back(data.size());
  tb().host.bytes.read(0x900000, back.data(), back.size());
  EXPECT_EQ(back, data);
  // The host link (64 GB/s + 1 us) is slower than device memory here.
  EXPECT_NEAR(static_cast<double>(in.device_time_ps) * 1e-12, 1e-6 + 100000 / 64e9 + 100e-9, 1e-9);
}

TEST_F(SyscDevice, PimGemvThroughTheRingEqualsGolden) {
  const std::int64_t rows = 64, cols = 256;
  std::vector<std::uint16_t> w(static_cast<std::size_t>(rows * cols)), x(static_cast<std::size_t>(cols));
  std::mt19937 rng(5);
  for (auto& v : w) v = float_to_half_bits(static_cast<float>(rng() % 200) / 100.0f - 1.0f);
  for (auto& v : x) v = float_to_half_bits(static_cast<float>(rng() % 200) / 100.0f - 1.0f);
  tb().device.backdoor().write(0x10000000, w.data(), w.size() * 2);
  tb().device.backdoor().write(0x20000000, x.data(), x.size() * 2);
  const CompletionEntry c =
      tb().submit(cmd(Opcode::kPimGemv, 7,
                      {0x10000000, 0x20000000, 0x30000000, 1, static_cast<std::uint64_t>(rows),
                       static_cast<std::uint64_t>(cols)}));
  ASSERT_EQ(c.status, Status::kOk);
  std::vector<std::uint16_t> y(static_cast<std::size_t>(rows)), golden(y.size());
  tb().device.backdoor().read(0x30000000, y.data(), y.size() * 2);
  pim::gemv_fp16(w.data(), x.data(), golden.data(), static_cast<std::size_t>(rows),
                 static_cast<std::size_t>(cols), pim::DatapathParams{});
  EXPECT_EQ(y, golden);
  PimOpShape s;
  s.rows = rows;
  s.cols = cols;
  EXPECT_EQ(c.device_time_ps,
            static_cast<std::uint64_t>(to_ticks(time_pim_op(tb().system.memory, *tb().system.pim, s).total)));
}

// The same GEMV, attention and activation commands on the device with the RTL datapath (which decodes every
// ring descriptor in the RTL command decoder) give the golden device's bits and completions; a malformed one
// is rejected by both with the same status.
TEST_F(SyscDevice, RtlDatapathDeviceMatchesGoldenDevice) {
  Testbench& b = tb();
  auto rd = [&](std::uint32_t reg) {
    std::uint32_t v = 0;
    EXPECT_EQ(b.access(b.rtl_mmio, false, reg, &v, 4), tlm::TLM_OK_RESPONSE);
    return v;
  };
  auto wr = [&](std::uint32_t reg, std::uint32_t v) {
    EXPECT_EQ(b.access(b.rtl_mmio, true, reg, &v, 4), tlm::TLM_OK_RESPONSE);
  };
  wr(hostif::kRegRingBaseLo, static_cast<std::uint32_t>(Testbench::kRing));
  wr(hostif::kRegRingSize, Testbench::kRingSize);
  wr(hostif::kRegCqBaseLo, static_cast<std::uint32_t>(Testbench::kCq));
  wr(hostif::kRegCqSize, Testbench::kCqSize);
  const std::int64_t rows = 32, cols = 128, group = 4, context = 48, d = 32;
  std::mt19937 rng(9);
  auto fill = [&](std::size_t n) {
    std::vector<std::uint16_t> v(n);
    for (auto& x : v) x = float_to_half_bits(static_cast<float>(rng() % 200) / 100.0f - 1.0f);
    return v;
  };
  const auto w = fill(static_cast<std::size_t>(rows * cols)), x = fill(static_cast<std::size_t>(cols));
  const auto q = fill(static_cast<std::size_t>(group * d + group)),  // q, then the group's sinks
      k = fill(static_cast<std::size_t>(context * d)), v = fill(static_cast<std::size_t>(context * d));
  const auto bias = fill(static_cast<std::size_t>(rows));
  const std::int64_t elements = 96;
  const auto gate = fill(static_cast<std::size_t>(elements)), up = fill(static_cast<std::size_t>(elements));
  const std::uint64_t scale = float_to_half_bits(0.125f);
  // GEMV, attention, activation, and a GEMV whose weights are misaligned by one byte (rejected by both).
  std::vector<CommandDescriptor> cmds = {
      cmd(Opcode::kPimGemv, 1, {0x10000000, 0x20000000, 0x30000000, 1, rows, cols}),
      cmd(Opcode::kPimAttention, 2,
          {0x40000000, 0x41000000, 0x42000000, 0x43000000, group, context,
           static_cast<std::uint64_t>(d) | scale << 32}),
      cmd(Opcode::kPimActivation, 3, {0x50000000, 0x51000000, 0x52000000, elements}),
      cmd(Opcode::kPimGemv, 4, {0x10000001, 0x20000000, 0x30000000, 1, rows, cols}),
      cmd(Opcode::kPimActivation, 5, {0x50000000, 0x51000000, 0x53000000, elements, 1}),  // GELU
      cmd(Opcode::kPimActivation, 6, {0x50000000, 0x51000000, 0x54000000, elements, 2}),  // ReLU
      cmd(Opcode::kPimActivation, 7, {0x50000000, 0x51000000, 0x55000000, elements, 9}),  // no such mode
      cmd(Opcode::kPimActivation, 8, {0x50000000, 0x51000000, 0x56000000, elements, 8}),  // swiglu-oai-gate
      cmd(Opcode::kPimGemv, 9, {0x10000000, 0x20000000, 0x31000000, 1, rows, cols, 0x21000000}),  // bias
      cmd(Opcode::kPimAttention, 10,
          {0x40000000, 0x41000000, 0x42000000, 0x44000000, group, context,
           static_cast<std::uint64_t>(d) | scale << 32})};  // sinks after q (flags below)
  cmds[8].flags = hostif::kPimGemvFlagBias;
  cmds[9].flags = hostif::kPimAttentionFlagSinks;
  const Status expected[] = {Status::kOk, Status::kOk, Status::kOk,          Status::kMisaligned,
                             Status::kOk, Status::kOk, Status::kBadArgument, Status::kOk,
                             Status::kOk, Status::kOk};
  for (DuplexDevice* dev : {&b.device, &b.rtl_device}) {
    dev->backdoor().write(0x10000000, w.data(), w.size() * 2);
    dev->backdoor().write(0x20000000, x.data(), x.size() * 2);
    dev->backdoor().write(0x40000000, q.data(), q.size() * 2);
    dev->backdoor().write(0x41000000, k.data(), k.size() * 2);
    dev->backdoor().write(0x42000000, v.data(), v.size() * 2);
    dev->backdoor().write(0x50000000, gate.data(), gate.size() * 2);
    dev->backdoor().write(0x51000000, up.data(), up.size() * 2);
    dev->backdoor().write(0x21000000, bias.data(), bias.size() * 2);
  }
  const std::uint32_t cq_first = rd(hostif::kRegCqTail), errors_before = rd(hostif::kRegErrors);
  for (std::size_t i = 0; i < cmds.size(); ++i) {
    const CommandDescriptor& c = cmds[i];
    EXPECT_EQ(b.submit(c).status, expected[i]);
    auto bytes = hostif::encode(c);
    b.access(b.rtl_mem, true, Testbench::kRing + (rd(hostif::kRegRingTail) % Testbench::kRingSize) * 64,
             bytes.data(), 64);
    wr(hostif::kRegRingTail, rd(hostif::kRegRingTail) + 1);
  }
  const auto done = static_cast<std::uint32_t>(cq_first + cmds.size());
  for (int i = 0; i < 1000 && (b.rtl_device.busy() || rd(hostif::kRegCqTail) < done); ++i)
    sc_core::sc_start(1, sc_core::SC_US);
  ASSERT_EQ(rd(hostif::kRegCqTail), done);
  EXPECT_EQ(rd(hostif::kRegErrors), errors_before + 2);
  for (std::size_t i = 0; i < cmds.size(); ++i) {
    std::array<std::uint8_t, hostif::kCompletionBytes> raw{};
    b.access(b.rtl_mem, false,
             Testbench::kCq + ((cq_first + i) % Testbench::kCqSize) * hostif::kCompletionBytes, raw.data(),
             static_cast<unsigned>(raw.size()));
    const CompletionEntry c = hostif::decode_completion(raw.data());
    EXPECT_EQ(c.seq, cmds[i].seq);
    EXPECT_EQ(c.status, expected[i]) << "command " << i;
  }
  for (auto [addr, n] : {std::pair<std::uint64_t, std::int64_t>{0x30000000, rows},
                         {0x43000000, group * d},
                         {0x52000000, elements},
                         {0x53000000, elements},
                         {0x54000000, elements},
                         {0x56000000, elements},
                         {0x31000000, rows},
                         {0x44000000, group * d}}) {
    std::vector<std::uint16_t> golden(static_cast<std::size_t>(n)), rtl(golden.size());
    b.device.backdoor().read(addr, golden.data(), golden.size() * 2);
    b.rtl_device.backdoor().read(addr, rtl.data(), rtl.size() * 2);
    EXPECT_EQ(rtl, golden);
  }
}

// The activation command's mode word a4 through the ring: each mode computes its own function (golden bits),
// an old-style descriptor (a4 = 0) is SiLU-gate, and a mode outside 0..8 completes with kBadArgument.
TEST_F(SyscDevice, ActivationModesThroughTheRing) {
  const std::size_t n = 512;
  std::vector<std::uint16_t> a(n), b(n);
  std::mt19937 rng(15);
  for (auto& v : a) v = float_to_half_bits(static_cast<float>(rng() % 1200) / 100.0f - 6.0f);
  for (auto& v : b) v = float_to_half_bits(static_cast<float>(rng() % 200) / 200.0f - 0.5f);
  tb().device.backdoor().write(0x60000000, a.data(), n * 2);
  tb().device.backdoor().write(0x61000000, b.data(), n * 2);
  std::vector<std::vector<std::uint16_t>> outs;
  for (int m = 0; m < pim::kActivationModes; ++m) {
    const auto mode = static_cast<pim::ActivationMode>(m);
    const CompletionEntry c =
        tb().submit(cmd(Opcode::kPimActivation, 20,
                        {0x60000000, 0x61000000, 0x62000000, n, static_cast<std::uint64_t>(mode)}));
    ASSERT_EQ(c.status, Status::kOk) << pim::to_string(mode);
    PimOpShape s;
    s.kind = PimOpKind::kActivation;
    s.elements = static_cast<std::int64_t>(n);
    s.activation_mode = mode;
    EXPECT_EQ(c.device_time_ps, static_cast<std::uint64_t>(
                                    to_ticks(time_pim_op(tb().system.memory, *tb().system.pim, s).total)));
    std::vector<std::uint16_t> out(n);
    tb().device.backdoor().read(0x62000000, out.data(), n * 2);
    for (std::size_t i = 0; i < n; ++i)
      ASSERT_EQ(out[i], pim::activation_fp16(mode, a[i], b[i])) << pim::to_string(mode) << " " << i;
    outs.push_back(out);
  }
  for (std::size_t i = 0; i < outs.size(); ++i)
    for (std::size_t j = i + 1; j < outs.size(); ++j) EXPECT_NE(outs[i], outs[j]) << i << " vs " << j;
  fill_sentinel();
  EXPECT_EQ(tb().submit(cmd(Opcode::kPimActivation, 21, {0, 0x1000, 0x800000, 64, 9})).status,
            Status::kBadArgument);
  expect_error_then_recovers(Status::kBadArgument);
  EXPECT_EQ(tb().submit(cmd(Opcode::kPimActivation, 22, {0, 0x1000, 0x800000, 64, ~std::uint64_t{0}})).status,
            Status::kBadArgument);
  expect_error_then_recovers(Status::kBadArgument);
  expect_sentinel();
}

// gpt-oss's features through the ring: a kPimAttention descriptor with flags bit 0 (sinks right after q) and
// a kPimGemv with flags bit 0 (a bias at a6) give golden decode_attention_fp16 with the sinks and gemv_fp16
// with the bias, timed as time_pim_op of their shapes (PimOpShape::sinks / bias); an undefined flag bit
// completes with kBadArgument and leaves memory alone.
TEST_F(SyscDevice, AttentionSinksAndGemvBiasThroughTheRing) {
  const std::int64_t group = 4, context = 64, d = 64, rows = 48, cols = 128;
  std::mt19937 rng(17);
  auto fill = [&](std::size_t n, float scale) {
    std::vector<std::uint16_t> v(n);
    for (auto& x : v) x = float_to_half_bits(scale * (static_cast<float>(rng() % 200) / 100.0f - 1.0f));
    return v;
  };
  const auto q = fill(static_cast<std::size_t>(group * d), 1.0f);
  const auto k = fill(static_cast<std::size_t>(context * d), 1.0f);
  const auto v = fill(static_cast<std::size_t>(context * d), 1.0f);
  const auto sinks = fill(static_cast<std::size_t>(group), 4.0f);
  std::vector<std::uint16_t> q_and_sinks = q;
  q_and_sinks.insert(q_and_sinks.end(), sinks.begin(), sinks.end());
  const auto w = fill(static_cast<std::size_t>(rows * cols), 1.0f),
             x = fill(static_cast<std::size_t>(cols), 1.0f);
  const auto bias = fill(static_cast<std::size_t>(rows), 2.0f);
  auto& mem = tb().device.backdoor();
  mem.write(0x40000000, q_and_sinks.data(), q_and_sinks.size() * 2);
  mem.write(0x41000000, k.data(), k.size() * 2);
  mem.write(0x42000000, v.data(), v.size() * 2);
  mem.write(0x10000000, w.data(), w.size() * 2);
  mem.write(0x20000000, x.data(), x.size() * 2);
  mem.write(0x21000000, bias.data(), bias.size() * 2);
  const std::uint64_t scale = float_to_half_bits(0.125f);
  CommandDescriptor attention = cmd(Opcode::kPimAttention, 30,
                                    {0x40000000, 0x41000000, 0x42000000, 0x43000000, group, context,
                                     static_cast<std::uint64_t>(d) | scale << 32});
  attention.flags = hostif::kPimAttentionFlagSinks;
  const CompletionEntry ca = tb().submit(attention);
  ASSERT_EQ(ca.status, Status::kOk);
  std::vector<std::uint16_t> out(static_cast<std::size_t>(group * d)), golden(out.size()), plain(out.size());
  mem.read(0x43000000, out.data(), out.size() * 2);
  pim::decode_attention_fp16(q.data(), k.data(), v.data(), group, context, d,
                             static_cast<std::uint16_t>(scale), 0, golden.data(), pim::DatapathParams{},
                             sinks.data());
  pim::decode_attention_fp16(q.data(), k.data(), v.data(), group, context, d,
                             static_cast<std::uint16_t>(scale), 0, plain.data(), pim::DatapathParams{});
  EXPECT_EQ(out, golden);
  EXPECT_NE(out, plain);
  PimOpShape as;
  as.kind = PimOpKind::kAttention;
  as.group_size = group;
  as.context = context;
  as.head_dim = d;
  as.sinks = true;
  EXPECT_EQ(ca.device_time_ps, static_cast<std::uint64_t>(
                                   to_ticks(time_pim_op(tb().system.memory, *tb().system.pim, as).total)));
  CommandDescriptor gemv =
      cmd(Opcode::kPimGemv, 31, {0x10000000, 0x20000000, 0x30000000, 1, rows, cols, 0x21000000});
  gemv.flags = hostif::kPimGemvFlagBias;
  const CompletionEntry cg = tb().submit(gemv);
  ASSERT_EQ(cg.status, Status::kOk);
  std::vector<std::uint16_t> y(static_cast<std::size_t>(rows)), y_golden(y.size());
  mem.read(0x30000000, y.data(), y.size() * 2);
  pim::gemv_fp16(w.data(), x.data(), y_golden.data(), rows, cols, pim::DatapathParams{}, bias.data());
  EXPECT_EQ(y, y_golden);
  PimOpShape gs;
  gs.rows = rows;
  gs.cols = cols;
  gs.bias = true;
  EXPECT_EQ(cg.device_time_ps, static_cast<std::uint64_t>(
                                   to_ticks(time_pim_op(tb().system.memory, *tb().system.pim, gs).total)));
  fill_sentinel();
  CommandDescriptor bad = cmd(Opcode::kPimAttention, 32,
                              {0x40000000, 0x41000000, 0x42000000, 0x800000, group, context,
                               static_cast<std::uint64_t>(d) | scale << 32});
  bad.flags = 0x0002;
  EXPECT_EQ(tb().submit(bad).status, Status::kBadArgument);
  expect_error_then_recovers(Status::kBadArgument);
  expect_sentinel();
}

TEST_F(SyscDevice, BadOpcodeCompletesWithErrorAndDeviceKeepsServing) {
  fill_sentinel();
  const std::uint32_t errors_before = tb().rd(hostif::kRegErrors);  // the testbench is shared by the tests
  const CompletionEntry c = tb().submit(cmd(static_cast<Opcode>(0x77), 5));
  EXPECT_EQ(c.status, Status::kBadOpcode);
  EXPECT_EQ(c.seq, 5u);
  EXPECT_EQ(tb().rd(hostif::kRegErrors), errors_before + 1);
  expect_error_then_recovers(Status::kBadOpcode);
  expect_sentinel();
}

TEST_F(SyscDevice, OutOfRangeAddressIsAnError) {
  fill_sentinel();
  const std::uint64_t end = tb().device.backdoor().capacity();
  EXPECT_EQ(tb().submit(cmd(Opcode::kDmaToDevice, 1, {0, end - 64, 128})).status, Status::kOutOfRange);
  expect_error_then_recovers(Status::kOutOfRange);
  EXPECT_EQ(tb().submit(cmd(Opcode::kPimActivation, 2, {end - 64, 0, 0x800000, 4096})).status,
            Status::kOutOfRange);
  expect_error_then_recovers(Status::kOutOfRange);
  // A DMA from host memory that does not exist: the host's error, reported as such.
  EXPECT_EQ(tb().submit(cmd(Opcode::kDmaToDevice, 3, {2ull << 30, 0x800000, 64})).status, Status::kDmaError);
  expect_error_then_recovers(Status::kDmaError);
  expect_sentinel();
}

TEST_F(SyscDevice, MisalignedAddressIsAnError) {
  fill_sentinel();
  EXPECT_EQ(tb().submit(cmd(Opcode::kDmaToDevice, 1, {0, 0x800001, 64})).status, Status::kMisaligned);
  expect_error_then_recovers(Status::kMisaligned);
  EXPECT_EQ(tb().submit(cmd(Opcode::kPimGemv, 2, {0x10, 0, 0x800000, 1, 16, 64})).status,
            Status::kMisaligned);
  expect_error_then_recovers(Status::kMisaligned);
  expect_sentinel();
}

TEST_F(SyscDevice, BufferOverflowIsAnError) {
  fill_sentinel();
  const std::uint64_t too_many = static_cast<std::uint64_t>(max_gemv_tokens(*tb().system.pim, 4096)) + 1;
  EXPECT_EQ(tb().submit(cmd(Opcode::kPimGemv, 1, {0, 0x4000000, 0x800000, too_many, 16, 4096})).status,
            Status::kBufferOverflow);
  expect_error_then_recovers(Status::kBufferOverflow);
  EXPECT_EQ(
      tb().submit(cmd(Opcode::kPimAttention, 2, {0, 0x100000, 0x200000, 0x800000, 8, 20000, 128})).status,
      Status::kBufferOverflow);
  expect_error_then_recovers(Status::kBufferOverflow);
  expect_sentinel();
}

TEST_F(SyscDevice, BadShapeIsAnError) {
  EXPECT_EQ(tb().submit(cmd(Opcode::kDmaToDevice, 1, {0, 0x800000, 0})).status, Status::kBadShape);
  expect_error_then_recovers(Status::kBadShape);
  EXPECT_EQ(tb().submit(cmd(Opcode::kPimGemv, 2, {0, 0, 0x800000, 1, 0, 64})).status, Status::kBadShape);
  expect_error_then_recovers(Status::kBadShape);
}

TEST_F(SyscDevice, RingOverflowIsRejectedAndLaterCommandsRun) {
  // Nine commands on an 8-entry ring: the doorbell is rejected, the ring keeps its old tail.
  for (std::uint32_t i = 0; i < Testbench::kRingSize; ++i) tb().place(cmd(Opcode::kNop, i));
  tb().wr(hostif::kRegRingTail, Testbench::kRingSize + 1);
  tb().run_idle();
  EXPECT_EQ(tb().rd(hostif::kRegRingTail), 0u);
  const CompletionEntry c = tb().pop();
  EXPECT_EQ(c.status, Status::kRingOverflow);
  EXPECT_EQ(c.opcode, Opcode::kDoorbell);
  EXPECT_EQ(tb().rd(hostif::kRegErrorCode), static_cast<std::uint32_t>(Status::kRingOverflow));
  // The eight placed commands are still there and run when the driver rings correctly.
  tb().wr(hostif::kRegRingTail, Testbench::kRingSize);
  tb().run_idle();
  for (std::uint32_t i = 0; i < Testbench::kRingSize; ++i) {
    const CompletionEntry n = tb().pop();
    EXPECT_EQ(n.seq, i);
    EXPECT_EQ(n.status, Status::kOk);
  }
  tb().tail = Testbench::kRingSize;
  expect_error_then_recovers(Status::kRingOverflow);
}

TEST_F(SyscDevice, FullCompletionQueueStallsUntilTheDriverConsumes) {
  // 16 CQ entries, ring of 8: submit 8, do not consume, submit 8 more, then 1 more that must wait.
  for (int round = 0; round < 2; ++round) {
    for (std::uint32_t i = 0; i < Testbench::kRingSize; ++i)
      tb().place(cmd(Opcode::kNop, 100 + round * 8 + i));
    tb().wr(hostif::kRegRingTail, tb().tail);
    tb().run_idle();
  }
  EXPECT_EQ(tb().rd(hostif::kRegCqTail), 16u);
  tb().place(cmd(Opcode::kNop, 200));
  tb().wr(hostif::kRegRingTail, tb().tail);
  sc_core::sc_start(10, sc_core::SC_US);
  EXPECT_EQ(tb().rd(hostif::kRegCqTail), 16u);  // waiting for space
  EXPECT_TRUE(tb().device.busy());
  for (std::uint32_t i = 0; i < 16; ++i) EXPECT_EQ(tb().pop().seq, 100 + i);
  tb().run_idle();
  EXPECT_EQ(tb().pop().seq, 200u);
}

TEST_F(SyscDevice, MemorySocketTimesAccessesWithTheHbmModel) {
  const TimingTable t = derive_timing(tb().system.memory);
  std::uint8_t b[32] = {1};
  tlm::tlm_generic_payload p;
  sc_core::sc_time delay = sc_core::SC_ZERO_TIME;
  p.set_command(tlm::TLM_WRITE_COMMAND);
  p.set_address((4ull << 30) + 7 * 1024 * 1024);
  p.set_data_ptr(b);
  p.set_data_length(32);
  p.set_streaming_width(32);
  tb().mem->b_transport(p, delay);
  EXPECT_EQ(p.get_response_status(), tlm::TLM_OK_RESPONSE);
  // An isolated write to a closed bank: overhead + tRCD + tWL + burst (a refresh may not fall inside).
  const double expected_ps = static_cast<double>(3 * t.tCK + t.tRCD + t.tWL + t.tBurst);
  EXPECT_NEAR(delay.to_seconds() * 1e12, expected_ps, 1.0);
  p.set_address(tb().device.backdoor().capacity());
  tb().mem->b_transport(p, delay);
  EXPECT_EQ(p.get_response_status(), tlm::TLM_ADDRESS_ERROR_RESPONSE);
}

// The device-memory socket also serves the non-blocking (approximately-timed) protocol, through the
// simple_target_socket's non-blocking-to-blocking adapter: same bytes, same HBM timing.
TEST_F(SyscDevice, MemorySocketServesTheNonBlockingPath) {
  const TimingTable t = derive_timing(tb().system.memory);
  std::uint8_t expected[32];
  for (int i = 0; i < 32; ++i) expected[i] = static_cast<std::uint8_t>(3 * i + 1);
  // In the last stack, which no other test reaches through the timed paths: its pseudo-channel controller
  // starts with this read, so the bank is closed and no refresh is due (refreshes start tREFI / 4 after a
  // controller's first use). An address the other tests' ring, DMA and socket accesses share a controller
  // with would see a refresh or not depending on how much simulated time the earlier tests took.
  const std::uint64_t stack_bytes = tb().system.memory.org.stack_capacity().bytes;
  const std::uint64_t addr = tb().device.backdoor().capacity() - stack_bytes + 5 * 1024 * 1024;
  ASSERT_GT(tb().device.backdoor().capacity(), 2 * stack_bytes);
  tb().device.backdoor().write(addr, expected, 32);
  std::uint8_t got[32] = {};
  tlm::tlm_generic_payload p;
  p.set_command(tlm::TLM_READ_COMMAND);
  p.set_address(addr);
  p.set_data_ptr(got);
  p.set_data_length(32);
  p.set_streaming_width(32);
  p.set_response_status(tlm::TLM_INCOMPLETE_RESPONSE);
  sc_core::sc_time latency = sc_core::SC_ZERO_TIME;
  bool finished = false;
  sc_core::sc_spawn([&] {
    const sc_core::sc_time start = sc_core::sc_time_stamp();
    tlm::tlm_phase phase = tlm::BEGIN_REQ;
    sc_core::sc_time delay = sc_core::SC_ZERO_TIME;
    const tlm::tlm_sync_enum s = tb().mem->nb_transport_fw(p, phase, delay);
    if (s != tlm::TLM_COMPLETED) wait(tb().response);
    latency = sc_core::sc_time_stamp() - start;
    phase = tlm::END_RESP;
    delay = sc_core::SC_ZERO_TIME;
    tb().mem->nb_transport_fw(p, phase, delay);
    finished = true;
  });
  sc_core::sc_start(2, sc_core::SC_US);
  ASSERT_TRUE(finished);
  EXPECT_EQ(p.get_response_status(), tlm::TLM_OK_RESPONSE);
  EXPECT_EQ(std::memcmp(got, expected, 32), 0);
  // An isolated read of a closed bank: overhead + tRCD + tCL + burst.
  EXPECT_NEAR(latency.to_seconds() * 1e12, static_cast<double>(3 * t.tCK + t.tRCD + t.tCL + t.tBurst), 1.0);
}

}  // namespace
}  // namespace duplex::sysc

int sc_main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  duplex::sysc::Testbench tb("tb");
  duplex::sysc::bench = &tb;
  return RUN_ALL_TESTS();
}
