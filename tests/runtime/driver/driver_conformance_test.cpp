// Conformance suite of the C driver API over the SystemC device: normal use (copies, PIM ops equal to the
// golden datapath bit for bit, fences, counters) and every misuse class (bad / stale handles, double free,
// out-of-range and misaligned addresses, queue overflow, use after close, PIM commands the device rejects),
// each checked for its status code and for the device still working afterwards.
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <iterator>

#include <gtest/gtest.h>
#include <systemc>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/driver/duplex_driver.h"
#include "duplex/rtl/golden_datapath.hpp"
#include "duplex/sysc/address_mapping.hpp"
#include "duplex/sysc/pim_timing.hpp"

namespace {

std::vector<std::uint16_t> random_fp16(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint16_t> v(n);
  for (auto& x : v) x = duplex::float_to_half_bits(static_cast<float>(rng() % 200) / 100.0f - 1.0f);
  return v;
}

class DriverConformance : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(duplex_open("duplex", &dev_), DUPLEX_SUCCESS) << duplex_last_error();
    ASSERT_EQ(duplex_get_caps(dev_, &caps_), DUPLEX_SUCCESS);
  }
  void TearDown() override { duplex_close(dev_); }  // DEVICE_CLOSED when the test closed it itself

  duplex_devptr alloc(std::uint64_t bytes, duplex_mem_space hint = DUPLEX_SPACE_ANY) {
    duplex_devptr p = 0;
    EXPECT_EQ(duplex_mem_alloc(dev_, bytes, hint, &p), DUPLEX_SUCCESS) << duplex_last_error();
    return p;
  }
  duplex_devptr upload(const std::vector<std::uint16_t>& v, duplex_mem_space hint = DUPLEX_SPACE_ANY) {
    const duplex_devptr p = alloc(v.size() * 2, hint);
    EXPECT_EQ(duplex_memcpy_h2d(dev_, p, v.data(), v.size() * 2), DUPLEX_SUCCESS) << duplex_last_error();
    return p;
  }
  std::vector<std::uint16_t> download(duplex_devptr p, std::size_t n) {
    std::vector<std::uint16_t> v(n);
    EXPECT_EQ(duplex_memcpy_d2h(dev_, v.data(), p, n * 2), DUPLEX_SUCCESS) << duplex_last_error();
    return v;
  }
  duplex_queue make_queue(std::uint32_t depth = 16) {
    duplex_queue q = 0;
    EXPECT_EQ(duplex_queue_create(dev_, depth, &q), DUPLEX_SUCCESS) << duplex_last_error();
    return q;
  }
  // A GEMV through a fresh queue whose result must equal the golden datapath: proof the device still works.
  void expect_gemv_matches_golden(std::int64_t tokens, std::int64_t rows, std::int64_t cols, std::uint32_t seed) {
    const auto w = random_fp16(static_cast<std::size_t>(rows * cols), seed);
    const auto x = random_fp16(static_cast<std::size_t>(tokens * cols), seed + 1);
    const duplex_devptr dw = upload(w, DUPLEX_SPACE_EXPERT), dx = upload(x);
    const duplex_devptr dy = alloc(static_cast<std::uint64_t>(tokens * rows) * 2);
    const duplex_queue q = make_queue();
    ASSERT_EQ(duplex_submit_gemv(q, dw, dx, dy, static_cast<std::uint64_t>(tokens), static_cast<std::uint64_t>(rows),
                                 static_cast<std::uint64_t>(cols)),
              DUPLEX_SUCCESS);
    ASSERT_EQ(duplex_queue_synchronize(q), DUPLEX_SUCCESS) << duplex_last_error();
    std::vector<std::uint16_t> golden(static_cast<std::size_t>(tokens * rows));
    for (std::int64_t t = 0; t < tokens; ++t)
      duplex::pim::gemv_fp16(w.data(), x.data() + t * cols, golden.data() + t * rows, static_cast<std::size_t>(rows),
                             static_cast<std::size_t>(cols), duplex::pim::DatapathParams{});
    EXPECT_EQ(download(dy, golden.size()), golden);
    EXPECT_EQ(duplex_queue_destroy(q), DUPLEX_SUCCESS);
    for (const duplex_devptr p : {dw, dx, dy}) EXPECT_EQ(duplex_mem_free(dev_, p), DUPLEX_SUCCESS);
  }
  void expect_round_trip_works() {
    const auto v = random_fp16(1000, 77);
    const duplex_devptr p = upload(v);
    EXPECT_EQ(download(p, v.size()), v);
    EXPECT_EQ(duplex_mem_free(dev_, p), DUPLEX_SUCCESS);
  }

  duplex_device dev_ = 0;
  duplex_caps caps_{};
};

TEST_F(DriverConformance, CapabilitiesComeFromTheDeviceAndTheSystem) {
  const duplex::SystemSpec system = duplex::load_system("duplex");
  EXPECT_EQ(caps_.device_id, 0x44504C58u);
  EXPECT_EQ(caps_.version, 0x00010000u);
  EXPECT_EQ(caps_.stacks, static_cast<std::uint32_t>(system.stacks));
  EXPECT_EQ(caps_.has_logic_pim, 1u);
  EXPECT_EQ(caps_.has_dma, 1u);
  EXPECT_EQ(caps_.memory_spaces, 4u);
  EXPECT_EQ(caps_.memory_bytes, system.memory_capacity().bytes);
  EXPECT_EQ(caps_.space_bytes * 4 * caps_.stacks, caps_.memory_bytes);
  EXPECT_EQ(caps_.alignment % 32, 0u);
}

TEST_F(DriverConformance, OpenRejectsSecondDeviceBadSystemsAndNullArguments) {
  duplex_device other = 0;
  EXPECT_EQ(duplex_open("duplex", &other), DUPLEX_ERROR_ALREADY_OPEN);
  expect_round_trip_works();
  ASSERT_EQ(duplex_close(dev_), DUPLEX_SUCCESS);
  EXPECT_EQ(duplex_open("no-such-system", &other), DUPLEX_ERROR_CONFIG);
  EXPECT_NE(std::string(duplex_last_error()).find("no-such-system"), std::string::npos);
  EXPECT_EQ(duplex_open("gpu", &other), DUPLEX_ERROR_CONFIG);  // no Logic-PIM
  EXPECT_EQ(duplex_open(nullptr, &other), DUPLEX_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(duplex_open("duplex", nullptr), DUPLEX_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(duplex_open("duplex-pe", &other), DUPLEX_ERROR_UNSUPPORTED);  // one simulated system per process
  ASSERT_EQ(duplex_open("duplex", &dev_), DUPLEX_SUCCESS);
  expect_round_trip_works();
}

TEST_F(DriverConformance, CopiesRoundTripIncludingMultiChunkTransfers) {
  std::mt19937 rng(11);
  std::vector<std::uint8_t> data((64u << 20) + 4096 + 100);  // more than one 64 MiB DMA chunk
  for (auto& b : data) b = static_cast<std::uint8_t>(rng());
  const duplex_devptr p = alloc(data.size());
  ASSERT_EQ(duplex_memcpy_h2d(dev_, p, data.data(), data.size()), DUPLEX_SUCCESS) << duplex_last_error();
  std::vector<std::uint8_t> back(data.size());
  ASSERT_EQ(duplex_memcpy_d2h(dev_, back.data(), p, back.size()), DUPLEX_SUCCESS) << duplex_last_error();
  EXPECT_TRUE(back == data);
  // A copy at an offset inside the allocation leaves the bytes around it alone.
  const std::array<std::uint8_t, 64> patch{};
  ASSERT_EQ(duplex_memcpy_h2d(dev_, p + 1024, patch.data(), patch.size()), DUPLEX_SUCCESS);
  ASSERT_EQ(duplex_memcpy_d2h(dev_, back.data(), p, 4096), DUPLEX_SUCCESS);
  EXPECT_EQ(std::memcmp(back.data(), data.data(), 1024), 0);
  EXPECT_EQ(std::memcmp(back.data() + 1024, patch.data(), 64), 0);
  EXPECT_EQ(std::memcmp(back.data() + 1088, data.data() + 1088, 4096 - 1088), 0);
}

TEST_F(DriverConformance, SpaceHintsPlaceAllocationsInTheirBankBundleSpaces) {
  const duplex::SystemSpec system = duplex::load_system("duplex");
  const duplex::sysc::AddressMapping mapping(
      system.memory.org, duplex::sysc::make_bundle_geometry(system.memory.org, system.pim->banks_per_bundle));
  auto space = [&](duplex_devptr p) {
    int s = -1;
    EXPECT_EQ(duplex_mem_space_of(dev_, p, &s), DUPLEX_SUCCESS);
    EXPECT_EQ(s, mapping.space_of(p % mapping.capacity()));  // the device's own address mapping agrees
    return s;
  };
  for (int s = 0; s < 4; ++s)
    EXPECT_EQ(space(alloc(4096, static_cast<duplex_mem_space>(DUPLEX_SPACE_0 + s))), s);
  std::vector<int> experts, kv;
  for (int i = 0; i < 5; ++i) experts.push_back(space(alloc(1 << 20, DUPLEX_SPACE_EXPERT)));
  for (int i = 0; i < 4; ++i) kv.push_back(space(alloc(1 << 20, DUPLEX_SPACE_DECODE_KV)));
  EXPECT_EQ(experts, (std::vector<int>{0, 1, 2, 3, 0}));
  EXPECT_EQ(kv, (std::vector<int>{0, 1, 2, 0}));
  EXPECT_EQ(space(alloc(1 << 20, DUPLEX_SPACE_PREFILL_QKV)), 3);
  // Allocations never overlap and are aligned.
  std::set<duplex_devptr> seen;
  for (int i = 0; i < 32; ++i) {
    const duplex_devptr p = alloc(1000);
    EXPECT_EQ(p % caps_.alignment, 0u);
    EXPECT_TRUE(seen.insert(p).second);
  }
  for (auto it = seen.begin(); std::next(it) != seen.end(); ++it) EXPECT_GE(*std::next(it) - *it, 1000u);
  // A space fills up: OUT_OF_MEMORY, and a free makes room again.
  duplex_devptr big = 0;
  volatile int not_an_enum_value = 99;
  EXPECT_EQ(duplex_mem_alloc(dev_, caps_.space_bytes + 1, DUPLEX_SPACE_3, &big), DUPLEX_ERROR_OUT_OF_MEMORY);
  EXPECT_EQ(duplex_mem_alloc(dev_, 100, static_cast<duplex_mem_space>(not_an_enum_value), &big), DUPLEX_ERROR_INVALID_ARGUMENT);
  expect_round_trip_works();
}

TEST_F(DriverConformance, ASpaceFillsUpAndFreedNeighboursCoalesce) {
  // Halves of space 2 on every stack, until none is left.
  std::vector<duplex_devptr> halves;
  duplex_devptr p = 0;
  duplex_status s = DUPLEX_SUCCESS;
  while ((s = duplex_mem_alloc(dev_, caps_.space_bytes / 2, DUPLEX_SPACE_2, &p)) == DUPLEX_SUCCESS)
    halves.push_back(p);
  EXPECT_EQ(s, DUPLEX_ERROR_OUT_OF_MEMORY);
  ASSERT_EQ(halves.size(), 2u * caps_.stacks);
  EXPECT_EQ(halves[1] - halves[0], caps_.space_bytes / 2);  // first fit: both halves of stack 0's space 2
  // The whole space fits again only once both halves are free and merged.
  EXPECT_EQ(duplex_mem_free(dev_, halves[0]), DUPLEX_SUCCESS);
  EXPECT_EQ(duplex_mem_alloc(dev_, caps_.space_bytes, DUPLEX_SPACE_2, &p), DUPLEX_ERROR_OUT_OF_MEMORY);
  EXPECT_EQ(duplex_mem_free(dev_, halves[1]), DUPLEX_SUCCESS);
  ASSERT_EQ(duplex_mem_alloc(dev_, caps_.space_bytes, DUPLEX_SPACE_2, &p), DUPLEX_SUCCESS);
  EXPECT_EQ(p, halves[0]);
  // Other spaces are unaffected.
  expect_gemv_matches_golden(1, 32, 128, 141);
}

TEST_F(DriverConformance, GemvEqualsTheGoldenDatapathBitForBit) {
  expect_gemv_matches_golden(1, 64, 256, 5);
  expect_gemv_matches_golden(3, 48, 512, 6);
}

TEST_F(DriverConformance, AttentionEqualsTheGoldenDatapathBitForBit) {
  const std::size_t group = 4, context = 48, d = 64;
  const auto q = random_fp16(group * d, 21), k = random_fp16(context * d, 22), v = random_fp16(context * d, 23);
  const std::uint16_t scale = duplex::float_to_half_bits(0.125f);
  const duplex_devptr dq = upload(q, DUPLEX_SPACE_DECODE_KV), dk = upload(k, DUPLEX_SPACE_DECODE_KV),
                      dv = upload(v, DUPLEX_SPACE_DECODE_KV), dout = alloc(group * d * 2, DUPLEX_SPACE_DECODE_KV);
  const duplex_queue queue = make_queue();
  ASSERT_EQ(duplex_submit_attention(queue, dq, dk, dv, dout, group, context, static_cast<std::uint32_t>(d),
                                    scale, 0),
            DUPLEX_SUCCESS);
  ASSERT_EQ(duplex_queue_synchronize(queue), DUPLEX_SUCCESS) << duplex_last_error();
  std::vector<std::uint16_t> golden(group * d);
  duplex::pim::decode_attention_fp16(q.data(), k.data(), v.data(), group, context, d, scale, 0, golden.data(),
                                     duplex::pim::DatapathParams{});
  EXPECT_EQ(download(dout, golden.size()), golden);
}

// GEMV with a bias (gpt-oss's experts): the golden bits with each row's accumulator starting at its bias,
// which differ from the unbiased GEMV's.
TEST_F(DriverConformance, GemvWithBiasEqualsTheGoldenDatapathBitForBit) {
  const std::size_t tokens = 3, rows = 48, cols = 256;
  const auto w = random_fp16(rows * cols, 41), x = random_fp16(tokens * cols, 42),
             bias = random_fp16(rows, 43);
  const duplex_devptr dw = upload(w, DUPLEX_SPACE_EXPERT), dx = upload(x),
                      db = upload(bias, DUPLEX_SPACE_EXPERT);
  const duplex_devptr dy = alloc(tokens * rows * 2), dplain = alloc(tokens * rows * 2);
  const duplex_queue q = make_queue();
  ASSERT_EQ(duplex_submit_gemv_bias(q, dw, dx, dy, tokens, rows, cols, db), DUPLEX_SUCCESS);
  ASSERT_EQ(duplex_submit_gemv(q, dw, dx, dplain, tokens, rows, cols), DUPLEX_SUCCESS);
  ASSERT_EQ(duplex_queue_synchronize(q), DUPLEX_SUCCESS) << duplex_last_error();
  std::vector<std::uint16_t> golden(tokens * rows);
  for (std::size_t t = 0; t < tokens; ++t)
    duplex::pim::gemv_fp16(w.data(), x.data() + t * cols, golden.data() + t * rows, rows, cols,
                           duplex::pim::DatapathParams{}, bias.data());
  EXPECT_EQ(download(dy, golden.size()), golden);
  EXPECT_NE(download(dplain, golden.size()), golden);
}

// Attention sinks (gpt-oss): q followed by one sink logit per head; the golden bits with those sinks, which
// differ from the sinkless ones.
TEST_F(DriverConformance, AttentionWithSinksEqualsTheGoldenDatapathBitForBit) {
  const std::size_t group = 4, context = 40, d = 64;
  auto q_sinks = random_fp16(group * d + group, 44);
  const auto k = random_fp16(context * d, 45), v = random_fp16(context * d, 46);
  for (std::size_t g = 0; g < group; ++g)  // sinks of 0.5, 1, 1.5, 2: each takes a visible share
    q_sinks[group * d + g] = duplex::float_to_half_bits(0.5f * static_cast<float>(g + 1));
  const std::uint16_t scale = duplex::float_to_half_bits(0.125f);
  const duplex_devptr dq = upload(q_sinks, DUPLEX_SPACE_DECODE_KV), dk = upload(k, DUPLEX_SPACE_DECODE_KV),
                      dv = upload(v, DUPLEX_SPACE_DECODE_KV),
                      dout = alloc(group * d * 2, DUPLEX_SPACE_DECODE_KV);
  const duplex_queue queue = make_queue();
  ASSERT_EQ(duplex_submit_attention_sinks(queue, dq, dk, dv, dout, group, context,
                                          static_cast<std::uint32_t>(d), scale, 0),
            DUPLEX_SUCCESS);
  ASSERT_EQ(duplex_queue_synchronize(queue), DUPLEX_SUCCESS) << duplex_last_error();
  std::vector<std::uint16_t> golden(group * d), plain(group * d);
  duplex::pim::decode_attention_fp16(q_sinks.data(), k.data(), v.data(), group, context, d, scale, 0,
                                     golden.data(), duplex::pim::DatapathParams{},
                                     q_sinks.data() + group * d);
  duplex::pim::decode_attention_fp16(q_sinks.data(), k.data(), v.data(), group, context, d, scale, 0,
                                     plain.data(), duplex::pim::DatapathParams{});
  EXPECT_EQ(download(dout, golden.size()), golden);
  EXPECT_NE(golden, plain);
}

// With a logit soft-cap (Gemma 2's attn_logit_softcapping): the device applies the cap it is given (the
// golden bits with that cap, not the uncapped ones), two caps give two results.
TEST_F(DriverConformance, AttentionWithSoftcapEqualsTheGoldenDatapathBitForBit) {
  const std::size_t group = 2, context = 40, d = 64;
  auto q = random_fp16(group * d, 24), k = random_fp16(context * d, 25), v = random_fp16(context * d, 26);
  const std::uint16_t scale = duplex::float_to_half_bits(1.0f);
  const duplex_devptr dq = upload(q, DUPLEX_SPACE_DECODE_KV), dk = upload(k, DUPLEX_SPACE_DECODE_KV),
                      dv = upload(v, DUPLEX_SPACE_DECODE_KV),
                      dout = alloc(group * d * 2, DUPLEX_SPACE_DECODE_KV);
  const duplex_queue queue = make_queue();
  std::vector<std::vector<std::uint16_t>> outs;
  for (const float cap : {0.0f, 2.0f, 0.5f}) {
    const std::uint16_t softcap = duplex::float_to_half_bits(cap);
    ASSERT_EQ(duplex_submit_attention(queue, dq, dk, dv, dout, group, context, static_cast<std::uint32_t>(d),
                                      scale, softcap),
              DUPLEX_SUCCESS);
    ASSERT_EQ(duplex_queue_synchronize(queue), DUPLEX_SUCCESS) << duplex_last_error();
    std::vector<std::uint16_t> golden(group * d);
    duplex::pim::decode_attention_fp16(q.data(), k.data(), v.data(), group, context, d, scale, softcap,
                                       golden.data(), duplex::pim::DatapathParams{});
    outs.push_back(download(dout, golden.size()));
    EXPECT_EQ(outs.back(), golden) << "cap " << cap;
  }
  EXPECT_NE(outs[0], outs[1]);
  EXPECT_NE(outs[1], outs[2]);
}

// A soft-cap that is not +0 or a finite FP16 > 0: refused by the driver before submission (INVALID_ARGUMENT,
// a message naming the bits); the same descriptor sent raw is refused by the device (DEVICE_BAD_ARGUMENT).
TEST_F(DriverConformance, InvalidAttentionSoftcapIsRejected) {
  const duplex_devptr p = alloc(1 << 16);
  const duplex_queue q = make_queue();
  duplex_counters before{}, after{};
  ASSERT_EQ(duplex_read_counters(dev_, &before), DUPLEX_SUCCESS);
  for (const std::uint16_t bad : {std::uint16_t{0x8000}, std::uint16_t{0xC000}, std::uint16_t{0x7C00},
                                  std::uint16_t{0xFC00}, std::uint16_t{0x7E00}}) {
    EXPECT_EQ(duplex_submit_attention(q, p, p + 4096, p + 8192, p + 12288, 1, 8, 64, 0x3000, bad),
              DUPLEX_ERROR_INVALID_ARGUMENT);
    const std::string message = duplex_last_error();
    char expected[64];
    std::snprintf(expected, sizeof expected, "duplex_submit_attention: softcap_fp16 0x%04x", bad);
    EXPECT_NE(message.find(expected), std::string::npos) << message;
  }
  ASSERT_EQ(duplex_queue_synchronize(q), DUPLEX_SUCCESS);  // nothing was submitted
  ASSERT_EQ(duplex_read_counters(dev_, &after), DUPLEX_SUCCESS);
  EXPECT_EQ(after.commands_completed, before.commands_completed);
  const std::uint64_t args[7] = {
      p, p + 4096, p + 8192, p + 12288, 1, 8, 64 | 0x3000ull << 32 | 0xFC00ull << 48};
  ASSERT_EQ(duplex_submit_raw(q, 0x11, args), DUPLEX_SUCCESS);
  EXPECT_EQ(duplex_queue_synchronize(q), DUPLEX_ERROR_DEVICE_BAD_ARGUMENT);
  expect_gemv_matches_golden(1, 32, 128, 142);
}

TEST_F(DriverConformance, ActivationEqualsTheGoldenDatapathBitForBit) {
  const std::size_t n = 1024;
  const auto gate = random_fp16(n, 31), up = random_fp16(n, 32);
  const duplex_devptr dg = upload(gate), du = upload(up), dout = alloc(n * 2);
  const duplex_queue queue = make_queue();
  ASSERT_EQ(duplex_submit_activation(queue, dg, du, dout, n), DUPLEX_SUCCESS);
  ASSERT_EQ(duplex_queue_synchronize(queue), DUPLEX_SUCCESS) << duplex_last_error();
  std::vector<std::uint16_t> golden(n);
  for (std::size_t i = 0; i < n; ++i) golden[i] = duplex::pim::silu_gate_fp16(gate[i], up[i]);
  EXPECT_EQ(download(dout, n), golden);
}

// Each activation mode through duplex_submit_activation_mode: the golden bits of that mode (the modes differ,
// so a mode dropped or mixed up fails), and duplex_submit_activation is the SiLU-gate mode.
TEST_F(DriverConformance, ActivationModesEqualTheGoldenDatapathBitForBit) {
  const std::size_t n = 1024;
  std::vector<std::uint16_t> a = random_fp16(n, 33), b = random_fp16(n, 34);
  for (auto& x : a) x = static_cast<std::uint16_t>(x + 0x0C00);  // |a| up to 8: GELU's tails too
  const duplex_devptr da = upload(a), db = upload(b), dout = alloc(n * 2), dsilu = alloc(n * 2);
  const duplex_queue queue = make_queue();
  std::vector<std::vector<std::uint16_t>> outs;
  for (const duplex_activation mode :
       {DUPLEX_ACTIVATION_SILU_GATE, DUPLEX_ACTIVATION_GELU_TANH, DUPLEX_ACTIVATION_RELU,
        DUPLEX_ACTIVATION_GELU, DUPLEX_ACTIVATION_SILU, DUPLEX_ACTIVATION_GELU_TANH_GATE,
        DUPLEX_ACTIVATION_RELU_GATE, DUPLEX_ACTIVATION_GELU_GATE, DUPLEX_ACTIVATION_SWIGLU_OAI_GATE}) {
    ASSERT_EQ(duplex_submit_activation_mode(queue, mode, da, db, dout, n), DUPLEX_SUCCESS)
        << duplex_last_error();
    ASSERT_EQ(duplex_queue_synchronize(queue), DUPLEX_SUCCESS) << duplex_last_error();
    std::vector<std::uint16_t> golden(n);
    const auto pim_mode = static_cast<duplex::pim::ActivationMode>(mode);
    for (std::size_t i = 0; i < n; ++i) golden[i] = duplex::pim::activation_fp16(pim_mode, a[i], b[i]);
    outs.push_back(download(dout, n));
    EXPECT_EQ(outs.back(), golden) << duplex::pim::to_string(pim_mode);
  }
  for (std::size_t i = 0; i < outs.size(); ++i)
    for (std::size_t j = i + 1; j < outs.size(); ++j) EXPECT_NE(outs[i], outs[j]) << i << " vs " << j;
  ASSERT_EQ(duplex_submit_activation(queue, da, db, dsilu, n), DUPLEX_SUCCESS);
  ASSERT_EQ(duplex_queue_synchronize(queue), DUPLEX_SUCCESS) << duplex_last_error();
  EXPECT_EQ(download(dsilu, n), outs[0]);
}

// An activation mode outside the enumeration: refused by the driver before submission (INVALID_ARGUMENT, a
// message naming the value); the same word sent raw is refused by the device (DEVICE_BAD_ARGUMENT).
TEST_F(DriverConformance, UnknownActivationModeIsRejected) {
  const duplex_devptr p = alloc(1 << 16);
  const duplex_queue q = make_queue();
  duplex_counters before{}, after{};
  ASSERT_EQ(duplex_read_counters(dev_, &before), DUPLEX_SUCCESS);
  for (const int bad : {9, -1, 255}) {
    volatile int value = bad;  // as a C caller could pass it
    EXPECT_EQ(
        duplex_submit_activation_mode(q, static_cast<duplex_activation>(value), p, p + 4096, p + 8192, 64),
        DUPLEX_ERROR_INVALID_ARGUMENT);
    const std::string message = duplex_last_error();
    EXPECT_NE(message.find("duplex_submit_activation_mode: unknown activation mode " + std::to_string(bad)),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("DUPLEX_ACTIVATION_SWIGLU_OAI_GATE (8)"), std::string::npos) << message;
  }
  ASSERT_EQ(duplex_queue_synchronize(q), DUPLEX_SUCCESS);  // nothing was submitted
  ASSERT_EQ(duplex_read_counters(dev_, &after), DUPLEX_SUCCESS);
  EXPECT_EQ(after.commands_completed, before.commands_completed);
  EXPECT_EQ(duplex_submit_activation_mode(0, DUPLEX_ACTIVATION_RELU, p, p, p, 64),
            DUPLEX_ERROR_INVALID_HANDLE);
  const std::uint64_t args[7] = {p, p + 4096, p + 8192, 64, 9, 0, 0};
  ASSERT_EQ(duplex_submit_raw(q, 0x12, args), DUPLEX_SUCCESS);
  EXPECT_EQ(duplex_queue_synchronize(q), DUPLEX_ERROR_DEVICE_BAD_ARGUMENT);
  EXPECT_EQ(std::string(duplex_status_string(DUPLEX_ERROR_DEVICE_BAD_ARGUMENT))
                .rfind("DUPLEX_ERROR_DEVICE_BAD_ARGUMENT", 0),
            0u);
  expect_gemv_matches_golden(1, 32, 128, 141);
}

TEST_F(DriverConformance, FencesCompleteInSubmissionOrderAcrossQueues) {
  const std::int64_t rows = 256, cols = 1024;
  const auto w = random_fp16(static_cast<std::size_t>(rows * cols), 41), x = random_fp16(cols, 42);
  const duplex_devptr dw = upload(w), dx = upload(x), dy1 = alloc(rows * 2), dy2 = alloc(rows * 2);
  const duplex_queue a = make_queue(), b = make_queue();
  duplex_event e1 = 0, e2 = 0;
  ASSERT_EQ(duplex_submit_gemv(a, dw, dx, dy1, 1, rows, cols), DUPLEX_SUCCESS);
  ASSERT_EQ(duplex_event_record(a, &e1), DUPLEX_SUCCESS);
  ASSERT_EQ(duplex_submit_gemv(b, dw, dx, dy2, 1, rows, cols), DUPLEX_SUCCESS);
  ASSERT_EQ(duplex_event_record(b, &e2), DUPLEX_SUCCESS);
  // Nothing has run yet: the GEMV takes simulated time, and query does not advance it.
  EXPECT_EQ(duplex_event_query(e1), DUPLEX_NOT_READY);
  std::uint64_t t1 = 0, t2 = 0;
  EXPECT_EQ(duplex_event_time(e1, &t1), DUPLEX_NOT_READY);
  ASSERT_EQ(duplex_event_synchronize(e2), DUPLEX_SUCCESS) << duplex_last_error();
  // The later fence implies the earlier one.
  EXPECT_EQ(duplex_event_query(e1), DUPLEX_SUCCESS);
  ASSERT_EQ(duplex_event_time(e1, &t1), DUPLEX_SUCCESS);
  ASSERT_EQ(duplex_event_time(e2, &t2), DUPLEX_SUCCESS);
  EXPECT_GT(t1, 0u);
  EXPECT_GT(t2, t1);
  // The second GEMV's time is at least the modelled PIM op time.
  const duplex::SystemSpec system = duplex::load_system("duplex");
  duplex::sysc::PimOpShape shape;
  shape.rows = rows;
  shape.cols = cols;
  EXPECT_GE(static_cast<double>(t2 - t1),
            duplex::to_ps(duplex::sysc::time_pim_op(system.memory, *system.pim, shape).total) - 1.0);
  EXPECT_EQ(download(dy1, rows), download(dy2, rows));
  EXPECT_EQ(duplex_event_destroy(e1), DUPLEX_SUCCESS);
  EXPECT_EQ(duplex_event_destroy(e2), DUPLEX_SUCCESS);
}

TEST_F(DriverConformance, CountersGrowWithWorkAndArePricedInJoules) {
  duplex_counters c0{}, c1{}, c2{};
  ASSERT_EQ(duplex_read_counters(dev_, &c0), DUPLEX_SUCCESS);
  EXPECT_EQ(c0.commands_completed, 0u);
  EXPECT_EQ(c0.macs, 0u);
  expect_round_trip_works();
  ASSERT_EQ(duplex_read_counters(dev_, &c1), DUPLEX_SUCCESS);
  EXPECT_EQ(c1.commands_completed, 2u);
  EXPECT_EQ(c1.command_errors, 0u);
  EXPECT_GT(c1.xpu_writes + c1.xpu_reads, c0.xpu_writes + c0.xpu_reads);
  EXPECT_GT(c1.simulated_time_ps, c0.simulated_time_ps);
  EXPECT_GT(c1.dynamic_energy_j, c0.dynamic_energy_j);
  expect_gemv_matches_golden(1, 64, 256, 51);
  ASSERT_EQ(duplex_read_counters(dev_, &c2), DUPLEX_SUCCESS);
  EXPECT_GE(c2.macs - c1.macs, 64u * 256u);
  EXPECT_GT(c2.bundle_bank_reads, c1.bundle_bank_reads);
  EXPECT_GT(c2.dynamic_energy_j, c1.dynamic_energy_j);
  EXPECT_EQ(duplex_read_counters(dev_, nullptr), DUPLEX_ERROR_INVALID_ARGUMENT);
}

TEST_F(DriverConformance, BadAndStaleHandlesAreRejected) {
  duplex_caps caps{};
  EXPECT_EQ(duplex_get_caps(0, &caps), DUPLEX_ERROR_INVALID_HANDLE);
  EXPECT_EQ(duplex_get_caps(0x1234, &caps), DUPLEX_ERROR_INVALID_HANDLE);
  EXPECT_EQ(duplex_get_caps(dev_ + 1, &caps), DUPLEX_ERROR_INVALID_HANDLE);  // a generation never issued
  EXPECT_EQ(duplex_queue_synchronize(0), DUPLEX_ERROR_INVALID_HANDLE);
  EXPECT_EQ(duplex_queue_synchronize(dev_), DUPLEX_ERROR_INVALID_HANDLE);  // a device handle is no queue
  EXPECT_EQ(duplex_event_query(0), DUPLEX_ERROR_INVALID_HANDLE);
  const duplex_queue q = make_queue();
  EXPECT_EQ(duplex_event_query(q), DUPLEX_ERROR_INVALID_HANDLE);  // a queue handle is no event
  duplex_event e = 0;
  ASSERT_EQ(duplex_event_record(q, &e), DUPLEX_SUCCESS);
  ASSERT_EQ(duplex_event_synchronize(e), DUPLEX_SUCCESS);
  ASSERT_EQ(duplex_event_destroy(e), DUPLEX_SUCCESS);
  EXPECT_EQ(duplex_event_query(e), DUPLEX_ERROR_INVALID_HANDLE);
  EXPECT_EQ(duplex_event_destroy(e), DUPLEX_ERROR_INVALID_HANDLE);
  ASSERT_EQ(duplex_queue_destroy(q), DUPLEX_SUCCESS);
  EXPECT_EQ(duplex_submit_activation(q, 0, 0, 0, 16), DUPLEX_ERROR_INVALID_HANDLE);
  EXPECT_EQ(duplex_queue_destroy(q), DUPLEX_ERROR_INVALID_HANDLE);
  // The slot is reused with a new generation: the old handle stays stale.
  const duplex_queue q2 = make_queue();
  EXPECT_NE(q2, q);
  EXPECT_EQ(duplex_queue_synchronize(q), DUPLEX_ERROR_INVALID_HANDLE);
  EXPECT_NE(std::string(duplex_last_error()).find("not a live queue"), std::string::npos);
  EXPECT_EQ(duplex_queue_synchronize(q2), DUPLEX_SUCCESS);
  expect_gemv_matches_golden(1, 32, 128, 61);
}

TEST_F(DriverConformance, DoubleFreeAndForeignPointersAreRejected) {
  const duplex_devptr p = alloc(4096);
  EXPECT_EQ(duplex_mem_free(dev_, p), DUPLEX_SUCCESS);
  EXPECT_EQ(duplex_mem_free(dev_, p), DUPLEX_ERROR_INVALID_DEVPTR);
  EXPECT_NE(std::string(duplex_last_error()).find("already freed"), std::string::npos);
  const duplex_devptr q = alloc(4096);
  EXPECT_EQ(duplex_mem_free(dev_, q + 256), DUPLEX_ERROR_INVALID_DEVPTR);  // inside, not the start
  EXPECT_EQ(duplex_mem_free(dev_, caps_.memory_bytes + 4096), DUPLEX_ERROR_INVALID_DEVPTR);
  EXPECT_EQ(duplex_mem_free(dev_, q), DUPLEX_SUCCESS);
  expect_gemv_matches_golden(1, 32, 128, 71);
}

TEST_F(DriverConformance, OutOfRangeAddressesAreRejectedByTheDevice) {
  const std::vector<std::uint8_t> bytes(128, 0x5A);
  const duplex_devptr sentinel = upload(std::vector<std::uint16_t>(2048, 0xA5A5));
  EXPECT_EQ(duplex_memcpy_h2d(dev_, caps_.memory_bytes - 64, bytes.data(), bytes.size()),
            DUPLEX_ERROR_DEVICE_OUT_OF_RANGE);
  std::vector<std::uint8_t> back(128);
  EXPECT_EQ(duplex_memcpy_d2h(dev_, back.data(), caps_.memory_bytes, back.size()), DUPLEX_ERROR_DEVICE_OUT_OF_RANGE);
  const duplex_queue q = make_queue();
  ASSERT_EQ(duplex_submit_activation(q, caps_.memory_bytes - 64, sentinel, sentinel, 2048), DUPLEX_SUCCESS);
  EXPECT_EQ(duplex_queue_synchronize(q), DUPLEX_ERROR_DEVICE_OUT_OF_RANGE);
  EXPECT_EQ(duplex_queue_synchronize(q), DUPLEX_SUCCESS);  // reported once
  EXPECT_EQ(download(sentinel, 2048), std::vector<std::uint16_t>(2048, 0xA5A5));
  duplex_counters c{};
  ASSERT_EQ(duplex_read_counters(dev_, &c), DUPLEX_SUCCESS);
  EXPECT_EQ(c.command_errors, 3u);
  expect_gemv_matches_golden(2, 32, 128, 81);
}

TEST_F(DriverConformance, MisalignedAddressesAreRejectedByTheDevice) {
  const duplex_devptr p = alloc(8192);
  const std::vector<std::uint8_t> bytes(64, 1);
  EXPECT_EQ(duplex_memcpy_h2d(dev_, p + 1, bytes.data(), bytes.size()), DUPLEX_ERROR_DEVICE_MISALIGNED);
  const duplex_queue q = make_queue();
  ASSERT_EQ(duplex_submit_gemv(q, p + 16, p + 4096, p + 6144, 1, 16, 64), DUPLEX_SUCCESS);
  EXPECT_EQ(duplex_queue_synchronize(q), DUPLEX_ERROR_DEVICE_MISALIGNED);
  expect_gemv_matches_golden(1, 32, 128, 91);
}

TEST_F(DriverConformance, QueueOverflowIsRejectedAndTheQueueDrains) {
  const std::size_t n = 256;
  const auto gate = random_fp16(n, 101), up = random_fp16(n, 102);
  const duplex_devptr dg = upload(gate), du = upload(up), dout = alloc(n * 2 * 4);
  const duplex_queue q = make_queue(4);
  for (std::uint64_t i = 0; i < 4; ++i)
    ASSERT_EQ(duplex_submit_activation(q, dg, du, dout + i * n * 2, n), DUPLEX_SUCCESS);
  EXPECT_EQ(duplex_submit_activation(q, dg, du, dout, n), DUPLEX_ERROR_QUEUE_FULL);
  duplex_event e = 0;
  EXPECT_EQ(duplex_event_record(q, &e), DUPLEX_ERROR_QUEUE_FULL);
  ASSERT_EQ(duplex_queue_synchronize(q), DUPLEX_SUCCESS);
  std::vector<std::uint16_t> golden(n);
  for (std::size_t i = 0; i < n; ++i) golden[i] = duplex::pim::silu_gate_fp16(gate[i], up[i]);
  for (std::uint64_t i = 0; i < 4; ++i) EXPECT_EQ(download(dout + i * n * 2, n), golden);
  EXPECT_EQ(duplex_submit_activation(q, dg, du, dout, n), DUPLEX_SUCCESS);
  // The device ring (max_queue_depth entries) bounds all queues together.
  const duplex_queue big = make_queue(caps_.max_queue_depth);
  std::uint32_t accepted = 0;
  duplex_status s = DUPLEX_SUCCESS;
  while ((s = duplex_submit_activation(big, dg, du, dout, 16)) == DUPLEX_SUCCESS) ++accepted;
  EXPECT_EQ(s, DUPLEX_ERROR_QUEUE_FULL);
  EXPECT_EQ(accepted, caps_.max_queue_depth - 1);  // one ring entry is q's activation
  duplex_queue too_deep = 0;
  EXPECT_EQ(duplex_queue_create(dev_, caps_.max_queue_depth + 1, &too_deep), DUPLEX_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(duplex_queue_create(dev_, 0, &too_deep), DUPLEX_ERROR_INVALID_ARGUMENT);
  ASSERT_EQ(duplex_queue_synchronize(big), DUPLEX_SUCCESS);
  ASSERT_EQ(duplex_queue_synchronize(q), DUPLEX_SUCCESS);
  duplex_counters c{};
  ASSERT_EQ(duplex_read_counters(dev_, &c), DUPLEX_SUCCESS);
  EXPECT_EQ(c.command_errors, 0u);
  expect_gemv_matches_golden(1, 32, 128, 111);
}

TEST_F(DriverConformance, UseAfterCloseIsRejectedAndReopenWorks) {
  const duplex_queue q = make_queue();
  duplex_event e = 0;
  ASSERT_EQ(duplex_event_record(q, &e), DUPLEX_SUCCESS);
  const duplex_devptr p = alloc(4096);
  const duplex_device old = dev_;
  ASSERT_EQ(duplex_close(dev_), DUPLEX_SUCCESS);
  duplex_caps caps{};
  EXPECT_EQ(duplex_get_caps(old, &caps), DUPLEX_ERROR_DEVICE_CLOSED);
  EXPECT_EQ(duplex_mem_free(old, p), DUPLEX_ERROR_DEVICE_CLOSED);
  duplex_devptr p2 = 0;
  EXPECT_EQ(duplex_mem_alloc(old, 64, DUPLEX_SPACE_ANY, &p2), DUPLEX_ERROR_DEVICE_CLOSED);
  EXPECT_EQ(duplex_submit_activation(q, p, p, p, 16), DUPLEX_ERROR_DEVICE_CLOSED);
  EXPECT_EQ(duplex_queue_synchronize(q), DUPLEX_ERROR_DEVICE_CLOSED);
  EXPECT_EQ(duplex_event_query(e), DUPLEX_ERROR_DEVICE_CLOSED);
  EXPECT_EQ(duplex_close(old), DUPLEX_ERROR_DEVICE_CLOSED);
  ASSERT_EQ(duplex_open("duplex", &dev_), DUPLEX_SUCCESS);
  EXPECT_NE(dev_, old);
  EXPECT_EQ(duplex_get_caps(old, &caps), DUPLEX_ERROR_DEVICE_CLOSED);
  const duplex_queue fresh = make_queue();
  EXPECT_EQ(duplex_queue_synchronize(q), DUPLEX_ERROR_INVALID_HANDLE);  // its slot now holds `fresh`
  EXPECT_EQ(duplex_queue_synchronize(fresh), DUPLEX_SUCCESS);
  duplex_counters c{};
  ASSERT_EQ(duplex_read_counters(dev_, &c), DUPLEX_SUCCESS);
  EXPECT_EQ(c.commands_completed, 0u);  // counters start again at open
  expect_gemv_matches_golden(1, 32, 128, 121);
}

TEST_F(DriverConformance, PimCommandsTheDeviceRejectsReportTheirStatus) {
  const duplex::SystemSpec system = duplex::load_system("duplex");
  const duplex_devptr p = alloc(1 << 20);
  const duplex_queue q = make_queue();
  const auto too_many = static_cast<std::uint64_t>(duplex::sysc::max_gemv_tokens(*system.pim, 4096)) + 1;
  ASSERT_EQ(duplex_submit_gemv(q, p, p, p, too_many, 16, 4096), DUPLEX_SUCCESS);
  EXPECT_EQ(duplex_queue_synchronize(q), DUPLEX_ERROR_DEVICE_BUFFER_OVERFLOW);
  ASSERT_EQ(duplex_submit_attention(q, p, p, p, p, 8, 40000, 128, 0x3000, 0), DUPLEX_SUCCESS);
  EXPECT_EQ(duplex_queue_synchronize(q), DUPLEX_ERROR_DEVICE_BUFFER_OVERFLOW);
  ASSERT_EQ(duplex_submit_gemv(q, p, p, p, 1, 0, 64), DUPLEX_SUCCESS);
  EXPECT_EQ(duplex_queue_synchronize(q), DUPLEX_ERROR_DEVICE_BAD_SHAPE);
  const std::uint64_t args[7] = {};
  ASSERT_EQ(duplex_submit_raw(q, 0x77, args), DUPLEX_SUCCESS);
  EXPECT_EQ(duplex_queue_synchronize(q), DUPLEX_ERROR_DEVICE_BAD_OPCODE);
  EXPECT_EQ(duplex_submit_raw(q, 0x77, nullptr), DUPLEX_ERROR_INVALID_ARGUMENT);
  // A DMA command naming a host address outside every mapped host buffer: the host memory refuses it.
  const std::uint64_t dma_args[7] = {0x8, p, 64, 0, 0, 0, 0};
  ASSERT_EQ(duplex_submit_raw(q, 0x01, dma_args), DUPLEX_SUCCESS);
  EXPECT_EQ(duplex_queue_synchronize(q), DUPLEX_ERROR_DEVICE_DMA);
  // An error before a fence is reported by the fence's wait; the fence after it is clean.
  duplex_event e1 = 0, e2 = 0;
  ASSERT_EQ(duplex_submit_gemv(q, p, p, p, 1, 0, 64), DUPLEX_SUCCESS);
  ASSERT_EQ(duplex_event_record(q, &e1), DUPLEX_SUCCESS);
  ASSERT_EQ(duplex_submit_activation(q, p, p, p + 4096, 256), DUPLEX_SUCCESS);
  ASSERT_EQ(duplex_event_record(q, &e2), DUPLEX_SUCCESS);
  EXPECT_EQ(duplex_event_synchronize(e1), DUPLEX_ERROR_DEVICE_BAD_SHAPE);
  EXPECT_EQ(duplex_event_synchronize(e2), DUPLEX_SUCCESS);
  EXPECT_EQ(duplex_queue_synchronize(q), DUPLEX_SUCCESS);
  duplex_counters c{};
  ASSERT_EQ(duplex_read_counters(dev_, &c), DUPLEX_SUCCESS);
  EXPECT_EQ(c.command_errors, 6u);
  expect_gemv_matches_golden(1, 64, 256, 131);
}

TEST_F(DriverConformance, InvalidArgumentsAreRejected) {
  duplex_devptr p = 0;
  EXPECT_EQ(duplex_mem_alloc(dev_, 0, DUPLEX_SPACE_ANY, &p), DUPLEX_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(duplex_mem_alloc(dev_, 64, DUPLEX_SPACE_ANY, nullptr), DUPLEX_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(duplex_get_caps(dev_, nullptr), DUPLEX_ERROR_INVALID_ARGUMENT);
  p = alloc(64);
  std::uint8_t b[64] = {};
  EXPECT_EQ(duplex_memcpy_h2d(dev_, p, nullptr, 64), DUPLEX_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(duplex_memcpy_d2h(dev_, b, p, 0), DUPLEX_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(duplex_queue_create(dev_, 4, nullptr), DUPLEX_ERROR_INVALID_ARGUMENT);
  const duplex_queue q = make_queue();
  EXPECT_EQ(duplex_event_record(q, nullptr), DUPLEX_ERROR_INVALID_ARGUMENT);
  int space = 0;
  EXPECT_EQ(duplex_mem_space_of(dev_, caps_.memory_bytes, &space), DUPLEX_ERROR_INVALID_ARGUMENT);
  expect_round_trip_works();
}

TEST(DriverStatusStrings, EveryStatusHasItsOwnNamedString) {
  std::set<std::string> seen;
  for (int s = DUPLEX_SUCCESS; s <= DUPLEX_ERROR_DEVICE_BAD_ARGUMENT; ++s) {
    const std::string text = duplex_status_string(static_cast<duplex_status>(s));
    EXPECT_EQ(text.rfind("DUPLEX_", 0), 0u) << s;
    EXPECT_TRUE(seen.insert(text).second) << text;
  }
  volatile int not_a_status = 1000;
  EXPECT_EQ(std::string(duplex_status_string(static_cast<duplex_status>(not_a_status))), "unknown duplex_status value");
}

}  // namespace

int sc_main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
