// The RTL's measured cycle counts against datapath_timing.hpp (the constants the SystemC timing model uses),
// and the valid/ready handshakes under back-pressure. Drives the Verilated model directly.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include <verilated.h>

#include "Vpim_datapath.h"
#include "duplex/base/fp16.hpp"
#include "duplex/rtl/datapath_timing.hpp"
#include "duplex/rtl/golden_datapath.hpp"
#include "duplex/rtl/rtl_datapath.hpp"
#include "fp16_vectors.hpp"
#include "pim_datapath_bench.hpp"

namespace duplex::pim {
namespace {

// Cycle t is the interval before the t-th rising edge. An input presented in cycle t (valid && ready) is
// captured at that edge; an output first valid in cycle t' gives latency t' - t.
class Bench : public PimDatapathBench {
 public:
  Bench() : PimDatapathBench(true) {}
};

void set_pass(Vpim_datapath& m, std::uint16_t a, std::uint16_t b) {
  for (int w = 0; w < kRtlLanes / 2; ++w) {
    m.gemm_in_a[w] = static_cast<std::uint32_t>(a) * 0x10001u;
    m.gemm_in_b[w] = static_cast<std::uint32_t>(b) * 0x10001u;
  }
}

TEST(RtlTiming, GemmLaneLatencyAndInitiationInterval) {
  for (std::size_t passes : {1u, 2u, 7u, 64u}) {
    Bench bench;
    auto& m = bench.m();
    set_pass(m, 0x3C00, 0x3C00);  // 1 x 1 in every lane
    const std::uint64_t first = bench.cycle();
    std::uint64_t done = 0;
    for (std::size_t p = 0; done == 0; ++p) {
      m.gemm_in_valid = p < passes;
      m.gemm_in_last = p + 1 == passes;
      bench.settle();
      if (p < passes) {
        ASSERT_TRUE(m.gemm_in_ready) << "initiation interval > 1 at pass " << p;
      }
      bench.edge();
      if (m.gemm_out_valid) done = bench.cycle();
      ASSERT_LT(bench.cycle(), 1000u);
    }
    EXPECT_EQ(done - first, timing::gemm_dot_cycles(passes * kRtlLanes, kRtlLanes)) << passes << " passes";
    EXPECT_EQ(std::bit_cast<float>(static_cast<std::uint32_t>(m.gemm_out_acc)),
              static_cast<float>(passes * kRtlLanes));
  }
  EXPECT_EQ(timing::gemm_lane_latency(kRtlLanes), 6);
}

// A bias (gemm_lane in_bias, sampled with a dot product's first pass) costs no cycle: dot products of 1, 2,
// 7, 64 and 3 passes with a bias, back to back on one lane, each presented gemm_dot_cycles after its first
// pass
// (+ kGemvBiasCycles = 0) with the value bias + 16 x passes; the bias port holds NaN on every other pass, so
// a lane that sampled it there would give NaN.
TEST(RtlTiming, GemmLaneBiasCostsNoCycle) {
  EXPECT_EQ(timing::kGemvBiasCycles, 0);
  Bench bench;
  auto& m = bench.m();
  set_pass(m, 0x3C00, 0x3C00);
  const std::vector<std::size_t> dots = {1, 2, 7, 64, 3};
  const std::vector<std::uint16_t> biases = {0x4500, 0xC900, 0x3800, 0x0000, 0xBC00};  // 5, -10, 0.5, +0, -1
  std::vector<std::uint64_t> first_pass, done;
  std::vector<float> acc;
  std::size_t dot = 0, pass = 0;
  while (done.size() < dots.size()) {
    const bool valid = dot < dots.size();
    m.gemm_in_valid = valid;
    m.gemm_in_last = valid && pass + 1 == dots[dot];
    m.gemm_in_bias = valid && pass == 0 ? biases[dot] : std::uint16_t{0x7E00};
    bench.settle();
    if (valid) {
      ASSERT_TRUE(m.gemm_in_ready);
      if (pass == 0) first_pass.push_back(bench.cycle());
      if (++pass == dots[dot]) {
        ++dot;
        pass = 0;
      }
    }
    bench.edge();
    if (m.gemm_out_valid) {
      done.push_back(bench.cycle());
      acc.push_back(std::bit_cast<float>(static_cast<std::uint32_t>(m.gemm_out_acc)));
    }
    ASSERT_LT(bench.cycle(), 1000u);
  }
  for (std::size_t i = 0; i < dots.size(); ++i) {
    EXPECT_EQ(done[i] - first_pass[i], timing::gemm_dot_cycles(dots[i] * kRtlLanes, kRtlLanes) +
                                           static_cast<std::uint64_t>(timing::kGemvBiasCycles))
        << dots[i] << " passes";
    EXPECT_EQ(acc[i], half_bits_to_float(biases[i]) + static_cast<float>(dots[i] * kRtlLanes)) << i;
  }
  m.gemm_in_bias = 0;
}

TEST(RtlTiming, SoftmaxCyclesPerRow) {
  for (std::size_t n : {1u, 2u, 5u, 100u, 1000u}) {
    Bench bench;
    auto& m = bench.m();
    m.softmax_in_scale = 0x3C00;
    const std::uint64_t first = bench.cycle();
    std::uint64_t last_out = 0;
    for (std::size_t i = 0; last_out == 0; ++i) {
      m.softmax_in_valid = i < n;
      m.softmax_in_score = static_cast<std::uint16_t>(0x3C00 + i % 7);
      m.softmax_in_last = i + 1 == n;
      bench.settle();
      if (i < n) {
        ASSERT_TRUE(m.softmax_in_ready) << "load stalls at element " << i;
      }
      bench.edge();
      if (m.softmax_out_valid && m.softmax_out_last) last_out = bench.cycle();
      ASSERT_LT(bench.cycle(), 10 * n + 1000);
    }
    EXPECT_EQ(last_out - first, timing::softmax_cycles(n)) << "n = " << n;
  }
}

// A soft-capped row passes the 18 cap stages in each of its three passes: 3 n + 7 + 54. Rows with and without
// a cap back to back on one unit (the cap is sampled with a row's first score): each row's own count and the
// golden model's probabilities.
TEST(RtlTiming, SoftmaxSoftcapCyclesPerRow) {
  EXPECT_EQ(timing::softmax_cycles(10, true), timing::softmax_cycles(10) + 3 * timing::kSoftcapStages);
  Bench bench;
  auto& m = bench.m();
  m.softmax_in_scale = 0x3C00;
  const std::uint16_t cap = 0x4400;  // 4: scores 1..7 cross |x| = c
  for (std::size_t n : {1u, 2u, 5u, 100u, 1000u, 3u}) {
    for (const std::uint16_t softcap : {cap, std::uint16_t{0}}) {
      std::vector<std::uint16_t> s(n);
      for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<std::uint16_t>(0x3C00 + 0x100 * (i % 11));
      std::vector<std::uint16_t> want(n);
      softmax_fp16(s.data(), n, 0x3C00, softcap, want.data());
      std::vector<std::uint16_t> got;
      m.softmax_in_softcap = softcap;
      const std::uint64_t first = bench.cycle();
      std::uint64_t last_out = 0;
      for (std::size_t i = 0; last_out == 0; ++i) {
        m.softmax_in_valid = i < n;
        m.softmax_in_score = i < n ? s[i] : 0;
        m.softmax_in_last = i + 1 == n;
        if (i == 1) m.softmax_in_softcap = 0x7C00;  // sampled with the first score only
        bench.settle();
        if (i < n) {
          ASSERT_TRUE(m.softmax_in_ready) << "load stalls at element " << i;
        }
        bench.edge();
        if (m.softmax_out_valid) got.push_back(m.softmax_out_prob);
        if (m.softmax_out_valid && m.softmax_out_last) last_out = bench.cycle();
        ASSERT_LT(bench.cycle(), first + 10 * n + 1000);
      }
      EXPECT_EQ(last_out - first, timing::softmax_cycles(n, softcap != 0))
          << "n = " << n << " cap " << softcap;
      EXPECT_EQ(got, want) << "n = " << n << " cap " << softcap;
      bench.edge();  // the last probability is taken (out_ready is high)
    }
  }
}

// A row with an attention sink costs no cycle (kSoftmaxSinkCycles = 0: the max starts at the sink, its e
// enters the sum in SUM's first, otherwise idle, cycle), capped or not: rows with and without sinks and caps
// back to back on one unit, each row's own count and the golden model's probabilities. The sink is sampled
// with the first score only (the ports hold other values afterwards).
TEST(RtlTiming, SoftmaxSinkCyclesPerRow) {
  EXPECT_EQ(timing::kSoftmaxSinkCycles, 0);
  EXPECT_EQ(timing::softmax_cycles(10, false, true), timing::softmax_cycles(10));
  EXPECT_EQ(timing::softmax_cycles(10, true, true), timing::softmax_cycles(10, true));
  Bench bench;
  auto& m = bench.m();
  m.softmax_in_scale = 0x3C00;
  const std::uint16_t sink = 0x4600;  // 6: above most scores (1 .. 7)
  for (std::size_t n : {1u, 2u, 5u, 100u, 1000u, 3u}) {
    for (const std::uint16_t softcap : {std::uint16_t{0}, std::uint16_t{0x4400}}) {
      for (const bool has_sink : {true, false}) {
        std::vector<std::uint16_t> s(n);
        for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<std::uint16_t>(0x3C00 + 0x100 * (i % 11));
        std::vector<std::uint16_t> want(n);
        softmax_fp16(s.data(), n, 0x3C00, softcap, want.data(), has_sink ? &sink : nullptr);
        std::vector<std::uint16_t> got;
        m.softmax_in_softcap = softcap;
        m.softmax_in_sink = sink;
        m.softmax_in_has_sink = has_sink;
        const std::uint64_t first = bench.cycle();
        std::uint64_t last_out = 0;
        for (std::size_t i = 0; last_out == 0; ++i) {
          m.softmax_in_valid = i < n;
          m.softmax_in_score = i < n ? s[i] : 0;
          m.softmax_in_last = i + 1 == n;
          if (i == 1) {  // sampled with the first score only
            m.softmax_in_sink = 0x7E00;
            m.softmax_in_has_sink = !has_sink;
          }
          bench.settle();
          if (i < n) {
            ASSERT_TRUE(m.softmax_in_ready) << "load stalls at element " << i;
          }
          bench.edge();
          if (m.softmax_out_valid) got.push_back(m.softmax_out_prob);
          if (m.softmax_out_valid && m.softmax_out_last) last_out = bench.cycle();
          ASSERT_LT(bench.cycle(), first + 10 * n + 1000);
        }
        EXPECT_EQ(last_out - first, timing::softmax_cycles(n, softcap != 0, has_sink))
            << "n = " << n << " cap " << softcap << " sink " << has_sink;
        EXPECT_EQ(got, want) << "n = " << n << " cap " << softcap << " sink " << has_sink;
        bench.edge();  // the last probability is taken (out_ready is high)
      }
    }
  }
  m.softmax_in_has_sink = 0;
}

// Every mode: latency (activation_latency) and one element per cycle (activation_cycles); the results are the
// golden model's.
TEST(RtlTiming, ActivationLatencyAndInitiationIntervalPerMode) {
  const std::vector<std::uint16_t> a{0x3C00, 0xB800, 0x4200, 0xC100};  // 1, -0.5, 3, -2.5
  const std::vector<std::uint16_t> b{0x0000, 0x3400, 0xBC00, 0x3800};  // 0, 0.25, -1, 0.5
  for (int v = 0; v < kActivationModes; ++v) {
    const auto mode = static_cast<ActivationMode>(v);
    Bench bench;
    auto& m = bench.m();
    const std::size_t n = 100;
    m.act_in_mode = static_cast<std::uint8_t>(mode);
    const std::uint64_t first = bench.cycle();
    std::uint64_t first_out = 0;
    std::uint64_t last_out = 0;
    std::vector<std::uint16_t> got;
    for (std::size_t i = 0; got.size() < n; ++i) {
      m.act_in_valid = i < n;
      m.act_in_a = a[i % a.size()];
      m.act_in_b = b[i % b.size()];
      bench.settle();
      if (i < n) {
        ASSERT_TRUE(m.act_in_ready) << to_string(mode) << " stalls at element " << i;
      }
      bench.edge();
      if (m.act_out_valid) {
        if (got.empty()) first_out = bench.cycle();
        last_out = bench.cycle();
        got.push_back(m.act_out_result);
      }
      ASSERT_LT(bench.cycle(), 1000u);
    }
    EXPECT_EQ(first_out - first, static_cast<std::uint64_t>(timing::activation_latency(mode)))
        << to_string(mode);
    EXPECT_EQ(last_out - first, timing::activation_cycles(mode, n)) << to_string(mode);
    for (std::size_t i = 0; i < n; ++i)
      EXPECT_EQ(got[i], activation_fp16(mode, a[i % a.size()], b[i % b.size()]))
          << to_string(mode) << " " << i;
  }
  EXPECT_EQ(timing::kSiluLatency, 5);
  EXPECT_EQ(timing::kReluLatency, 5);
  EXPECT_EQ(timing::kGeluTanhLatency, 10);
  EXPECT_EQ(timing::kGeluErfLatency, 22);
  EXPECT_EQ(timing::kSwigluOaiLatency, 7);
}

// Cycles an element of `mode` spends in a front before the back stages: 0, kSwigluOaiFrontStages,
// kActivationFrontStages (tanh) or kGeluErfFrontStages (erf).
int front_stages(ActivationMode mode) {
  return timing::activation_latency(mode) - timing::kSiluLatency;
}

// Two elements: (kA[0], kB[0]) in mode `first`, presented at once, then (kA[1], kB[1]) in mode `second`,
// presented `gap` cycles later and held until taken. Every result of the first element differs from every
// result of the second (negative or zero vs >= 1), so a swap shows.
constexpr std::uint16_t kA[2] = {0xB800, 0x4200};  // -0.5, 3
constexpr std::uint16_t kB[2] = {0x3400, 0x3800};  // 0.25, 0.5
struct PairRun {
  std::uint64_t spacing = 0;  // cycles from the first handshake to the second
  std::vector<std::uint16_t> out;
};
PairRun run_pair(Bench& bench, ActivationMode first, ActivationMode second, std::uint64_t gap) {
  auto& m = bench.m();
  const std::uint64_t start = bench.cycle();
  std::uint64_t in[2] = {0, 0};
  std::size_t taken = 0;
  PairRun run;
  while (run.out.size() < 2 && bench.cycle() - start < 200) {
    const bool valid = taken == 0 || (taken == 1 && bench.cycle() - start >= gap);
    m.act_in_valid = valid;
    m.act_in_mode = static_cast<std::uint8_t>(taken == 0 ? first : second);
    m.act_in_a = kA[taken % 2];
    m.act_in_b = kB[taken % 2];
    bench.settle();
    const bool fire = valid && m.act_in_ready;
    if (fire) in[taken] = bench.cycle();
    bench.edge();
    if (fire) ++taken;
    if (m.act_out_valid) run.out.push_back(m.act_out_result);
  }
  m.act_in_valid = 0;
  EXPECT_EQ(in[0], start) << "the first element waited";
  run.spacing = in[1] - in[0];
  return run;
}

// An element waits while an earlier one would still reach the back stages after it: behind an element of
// front length L1, one of front length L2 is accepted max(gap, 1 + max(0, L1 - L2)) cycles after it. SiLU /
// ReLU behind tanh waits kActivationFrontStages cycles, behind erf kGeluErfFrontStages, behind SwiGLU-OAI
// kSwigluOaiFrontStages; SwiGLU-OAI behind tanh waits 3, behind erf 15; tanh behind erf waits
// kGeluErfFrontStages - kActivationFrontStages; erf behind anything, and anything behind SiLU / ReLU, never
// waits. Results come out in input order, each the golden model's. Every ordered pair of modes, gaps 1..24.
TEST(RtlTiming, ActivationModeSwitchStall) {
  Bench bench;
  for (int f = 0; f < kActivationModes; ++f) {
    for (int s = 0; s < kActivationModes; ++s) {
      const auto first = static_cast<ActivationMode>(f);
      const auto second = static_cast<ActivationMode>(s);
      const int wait = std::max(0, front_stages(first) - front_stages(second));
      ASSERT_EQ(timing::activation_mode_switch_wait(first, second), wait);
      for (std::uint64_t gap = 1; gap <= 24; ++gap) {
        const PairRun run = run_pair(bench, first, second, gap);
        ASSERT_EQ(run.out.size(), 2u) << to_string(first) << " then " << to_string(second);
        EXPECT_EQ(run.spacing, std::max<std::uint64_t>(gap, 1 + static_cast<std::uint64_t>(wait)))
            << to_string(first) << " then " << to_string(second) << ", gap " << gap;
        EXPECT_EQ(run.out[0], activation_fp16(first, kA[0], kB[0])) << to_string(first);
        EXPECT_EQ(run.out[1], activation_fp16(second, kA[1], kB[1])) << to_string(second);
        EXPECT_NE(run.out[0], run.out[1]);
      }
    }
  }
  auto stall = [&](ActivationMode first, ActivationMode second) {
    return run_pair(bench, first, second, 1).spacing - 1;
  };
  const auto front = static_cast<std::uint64_t>(timing::kActivationFrontStages);
  const auto erf_front = static_cast<std::uint64_t>(timing::kGeluErfFrontStages);
  for (const ActivationMode short_mode :
       {ActivationMode::kSiluGate, ActivationMode::kRelu, ActivationMode::kSilu, ActivationMode::kReluGate}) {
    EXPECT_EQ(stall(ActivationMode::kGeluTanh, short_mode), front) << to_string(short_mode);
    EXPECT_EQ(stall(ActivationMode::kGeluTanhGate, short_mode), front) << to_string(short_mode);
    EXPECT_EQ(stall(ActivationMode::kGeluErf, short_mode), erf_front) << to_string(short_mode);
    EXPECT_EQ(stall(ActivationMode::kGeluErfGate, short_mode), erf_front) << to_string(short_mode);
    EXPECT_EQ(stall(short_mode, ActivationMode::kGeluErf), 0u) << to_string(short_mode);
  }
  EXPECT_EQ(stall(ActivationMode::kGeluErf, ActivationMode::kGeluTanh), erf_front - front);
  EXPECT_EQ(stall(ActivationMode::kGeluErfGate, ActivationMode::kGeluTanhGate), erf_front - front);
  EXPECT_EQ(stall(ActivationMode::kGeluTanh, ActivationMode::kGeluErfGate), 0u);
  const auto oai_front = static_cast<std::uint64_t>(timing::kSwigluOaiFrontStages);
  EXPECT_EQ(stall(ActivationMode::kSwigluOaiGate, ActivationMode::kSiluGate), oai_front);
  EXPECT_EQ(stall(ActivationMode::kSwigluOaiGate, ActivationMode::kRelu), oai_front);
  EXPECT_EQ(stall(ActivationMode::kGeluTanh, ActivationMode::kSwigluOaiGate), front - oai_front);
  EXPECT_EQ(stall(ActivationMode::kGeluErfGate, ActivationMode::kSwigluOaiGate), erf_front - oai_front);
  EXPECT_EQ(stall(ActivationMode::kSwigluOaiGate, ActivationMode::kGeluTanhGate), 0u);
  EXPECT_EQ(stall(ActivationMode::kSwigluOaiGate, ActivationMode::kSwigluOaiGate), 0u);
  EXPECT_EQ(timing::kGeluErfFrontStages, 17);
  EXPECT_EQ(timing::kSwigluOaiFrontStages, 2);
}

// Random input gaps and output back-pressure change only timing, never values or order.
TEST(RtlHandshake, BackPressureKeepsEveryResult) {
  Bench bench;
  auto& m = bench.m();
  testing::Fp16Source src(201);
  std::mt19937 coin(202);
  // GEMM lane: 200 two-pass dot products.
  const std::size_t rows = 200;
  const std::size_t k = 2 * kRtlLanes;
  std::vector<std::uint16_t> w(rows * k);
  std::vector<std::uint16_t> x(k);
  for (auto& v : w) v = src.mixed(16);
  for (auto& v : x) v = src.mixed(16);
  std::vector<std::uint16_t> want(rows);
  gemv_fp16(w.data(), x.data(), want.data(), rows, k, DatapathParams{});
  std::vector<std::uint16_t> got;
  std::size_t sent = 0;
  while (got.size() < rows) {
    const bool valid = sent < rows * 2 && coin() % 3 != 0;
    m.gemm_in_valid = valid;
    if (valid) {
      const std::size_t row = sent / 2;
      const std::size_t base = (sent % 2) * kRtlLanes;
      for (int word = 0; word < kRtlLanes / 2; ++word) {
        const std::size_t i = base + 2 * static_cast<std::size_t>(word);
        m.gemm_in_a[word] = w[row * k + i] | (static_cast<std::uint32_t>(w[row * k + i + 1]) << 16);
        m.gemm_in_b[word] = x[i] | (static_cast<std::uint32_t>(x[i + 1]) << 16);
      }
      m.gemm_in_last = sent % 2 == 1;
    }
    const bool ready = coin() % 2 == 0;
    m.gemm_out_ready = ready;
    bench.settle();
    const bool in_fire = valid && m.gemm_in_ready;
    const bool out_fire = ready && m.gemm_out_valid;
    const std::uint16_t out_value = m.gemm_out_fp16;
    bench.edge();
    if (in_fire) ++sent;
    if (out_fire) got.push_back(out_value);
    ASSERT_LT(bench.cycle(), 100000u);
  }
  EXPECT_EQ(got, want);

  // Softmax unit: one row, output back-pressure.
  const std::size_t n = 50;
  std::vector<std::uint16_t> s(n);
  for (auto& v : s) v = src.mixed(0, -3, 3);
  // The row through the unit with random input gaps and output stalls, uncapped and soft-capped (cap 2:
  // scores up to 3 cross the polynomial / exp-form boundary; the cap stages stall with the rest of the OUT
  // pass), without and with a sink (1.5): the probabilities golden's softmax gives.
  const std::uint16_t sink = 0x3E00;
  for (const int variant : {0, 1, 2, 3}) {
    const std::uint16_t softcap = variant % 2 == 0 ? std::uint16_t{0} : std::uint16_t{0x4000};
    const bool has_sink = variant >= 2;
    SCOPED_TRACE(variant);
    std::vector<std::uint16_t> p_want(n);
    softmax_fp16(s.data(), n, 0x3C00, softcap, p_want.data(), has_sink ? &sink : nullptr);
    std::vector<std::uint16_t> p_got;
    m.softmax_in_scale = 0x3C00;
    m.softmax_in_softcap = softcap;
    m.softmax_in_sink = sink;
    m.softmax_in_has_sink = has_sink;
    sent = 0;
    while (p_got.size() < n) {
      const bool valid = sent < n && coin() % 3 != 0;
      m.softmax_in_valid = valid;
      m.softmax_in_score = valid ? s[sent] : 0;
      m.softmax_in_last = sent + 1 == n;
      const bool ready = coin() % 2 == 0;
      m.softmax_out_ready = ready;
      bench.settle();
      const bool in_fire = valid && m.softmax_in_ready;
      const bool out_fire = ready && m.softmax_out_valid;
      const std::uint16_t out_value = m.softmax_out_prob;
      bench.edge();
      if (in_fire) ++sent;
      if (out_fire) p_got.push_back(out_value);
      ASSERT_LT(bench.cycle(), softcap == 0 ? 200000u : 400000u);  // the bench's cycles so far
    }
    EXPECT_EQ(p_got, p_want);
  }
  m.softmax_in_softcap = 0;
  m.softmax_in_has_sink = 0;

  // Activation unit: 2000 pairs in random modes (mode switches stall the input), every bit pattern of a.
  std::vector<std::uint16_t> act_a(2000);
  std::vector<std::uint16_t> act_b(2000);
  std::vector<ActivationMode> modes(2000);
  for (std::size_t i = 0; i < act_a.size(); ++i) {
    act_a[i] = src.any_bits();
    act_b[i] = src.mixed(16);
    constexpr auto kModes = static_cast<unsigned>(kActivationModes);
    modes[i] =
        static_cast<ActivationMode>(i / 7 % 5 == 0 ? coin() % kModes : (i / 7) % kModes);  // runs, mixes
  }
  std::vector<std::uint16_t> a_got;
  sent = 0;
  while (a_got.size() < act_a.size()) {
    const bool valid = sent < act_a.size() && coin() % 3 != 0;
    m.act_in_valid = valid;
    m.act_in_mode = valid ? static_cast<std::uint8_t>(modes[sent]) : 0;
    m.act_in_a = valid ? act_a[sent] : 0;
    m.act_in_b = valid ? act_b[sent] : 0;
    const bool ready = coin() % 2 == 0;
    m.act_out_ready = ready;
    bench.settle();
    const bool in_fire = valid && m.act_in_ready;
    const bool out_fire = ready && m.act_out_valid;
    const std::uint16_t out_value = m.act_out_result;
    bench.edge();
    if (in_fire) ++sent;
    if (out_fire) a_got.push_back(out_value);
    ASSERT_LT(bench.cycle(), 400000u);
  }
  for (std::size_t i = 0; i < act_a.size(); ++i)
    EXPECT_EQ(a_got[i], activation_fp16(modes[i], act_a[i], act_b[i])) << i << " " << to_string(modes[i]);
}

}  // namespace
}  // namespace duplex::pim
