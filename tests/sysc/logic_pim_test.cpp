// Logic-PIM ops on real bytes in device memory: results equal the golden datapath exactly, and a plain FP32
// reference within stated bounds; malformed ops are typed errors that leave memory untouched.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/rtl/datapath_timing.hpp"
#include "duplex/rtl/golden_datapath.hpp"
#include "duplex/sysc/logic_pim.hpp"

namespace duplex::sysc {
namespace {

class LogicPimOps : public ::testing::Test {
 protected:
  LogicPimOps()
      : sys_(load_system("duplex")),
        memory_(sys_.memory.org.stack_capacity().bytes),
        pim_(sys_.memory, *sys_.pim, memory_, make_configured_datapath(*sys_.pim)) {}

  std::vector<std::uint16_t> random_fp16(std::size_t n, float scale, std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<std::uint16_t> v(n);
    for (auto& x : v) x = float_to_half_bits(scale * (static_cast<float>(rng() % 20001) / 10000.0f - 1.0f));
    return v;
  }
  void put(std::uint64_t addr, const std::vector<std::uint16_t>& v) {
    memory_.write(addr, v.data(), v.size() * 2);
  }
  std::vector<std::uint16_t> get(std::uint64_t addr, std::size_t n) {
    std::vector<std::uint16_t> v(n);
    memory_.read(addr, v.data(), n * 2);
    return v;
  }
  static float f(std::uint16_t h) { return half_bits_to_float(h); }

  SystemSpec sys_;
  SparseMemory memory_;
  LogicPim pim_;
};

// Bound vs FP32: the FP16 output rounding (half an ulp, 2^-11 relative) plus the FP32 accumulation error,
// k * 2^-24 * sum |w x|.
TEST_F(LogicPimOps, GemvEqualsGoldenAndFp32Reference) {
  const std::int64_t tokens = 3, rows = 96, cols = 1024;
  const auto w = random_fp16(static_cast<std::size_t>(rows * cols), 0.5f, 1);
  const auto x = random_fp16(static_cast<std::size_t>(tokens * cols), 1.0f, 2);
  const std::uint64_t wa = 1ull << 30, xa = 3ull << 30, ya = 5ull << 30;
  put(wa, w);
  put(xa, x);
  const PimOpTiming t = pim_.gemv({wa, xa, ya, tokens, rows, cols});
  EXPECT_GT(t.device.si(), 0.0);
  const auto y = get(ya, static_cast<std::size_t>(tokens * rows));
  std::vector<std::uint16_t> golden(static_cast<std::size_t>(rows));
  for (std::int64_t tk = 0; tk < tokens; ++tk) {
    pim::gemv_fp16(w.data(), x.data() + tk * cols, golden.data(), static_cast<std::size_t>(rows),
                   static_cast<std::size_t>(cols), pim::DatapathParams{});
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::uint16_t got = y[static_cast<std::size_t>(tk * rows + r)];
      ASSERT_EQ(got, golden[static_cast<std::size_t>(r)]) << "token " << tk << " row " << r;
      double ref = 0, mag = 0;
      for (std::int64_t c = 0; c < cols; ++c) {
        const double p = static_cast<double>(f(w[static_cast<std::size_t>(r * cols + c)])) *
                         f(x[static_cast<std::size_t>(tk * cols + c)]);
        ref += p;
        mag += std::abs(p);
      }
      EXPECT_LE(std::abs(f(got) - ref),
                std::abs(ref) * 0x1p-11 + static_cast<double>(cols) * 0x1p-24 * mag + 0x1p-24)
          << tk << "," << r;
    }
  }
}

// Decode attention in double for one GQA group: softmax(s) v per query head, s = scale q . k, soft-capped to
// cap tanh(s / cap) when cap > 0. q [group][d], K and V [context][d] -> [group][d].
std::vector<double> reference_attention(const std::vector<std::uint16_t>& q,
                                        const std::vector<std::uint16_t>& k,
                                        const std::vector<std::uint16_t>& v, std::int64_t group,
                                        std::int64_t context, std::int64_t d, double scale, double cap) {
  std::vector<double> out(static_cast<std::size_t>(group * d));
  for (std::int64_t g = 0; g < group; ++g) {
    std::vector<double> s(static_cast<std::size_t>(context));
    double mx = -1e30, sum = 0;
    for (std::int64_t t = 0; t < context; ++t) {
      double dot = 0;
      for (std::int64_t j = 0; j < d; ++j)
        dot += static_cast<double>(half_bits_to_float(q[static_cast<std::size_t>(g * d + j)])) *
               half_bits_to_float(k[static_cast<std::size_t>(t * d + j)]);
      double& x = s[static_cast<std::size_t>(t)];
      x = dot * scale;
      if (cap > 0) x = cap * std::tanh(x / cap);
      mx = std::max(mx, x);
    }
    for (double& x : s) sum += (x = std::exp(x - mx));
    for (std::int64_t j = 0; j < d; ++j) {
      double ref = 0;
      for (std::int64_t t = 0; t < context; ++t)
        ref +=
            s[static_cast<std::size_t>(t)] / sum * half_bits_to_float(v[static_cast<std::size_t>(t * d + j)]);
      out[static_cast<std::size_t>(g * d + j)] = ref;
    }
  }
  return out;
}

// Bound vs FP32 (exact exp, exact division): 2e-2 absolute on outputs of magnitude <= 1 - the softmax unit's
// table exp and reciprocal (rtl/golden/README.md) plus three FP16 roundings.
TEST_F(LogicPimOps, DecodeAttentionEqualsGoldenAndFp32Reference) {
  const std::int64_t group = 4, context = 200, d = 64;
  const auto q = random_fp16(static_cast<std::size_t>(group * d), 1.0f, 3);
  const auto k = random_fp16(static_cast<std::size_t>(context * d), 1.0f, 4);
  const auto v = random_fp16(static_cast<std::size_t>(context * d), 1.0f, 5);
  const std::uint16_t scale = float_to_half_bits(1.0f / std::sqrt(static_cast<float>(d)));
  put(0x1000, q);
  put(0x100000, k);
  put(0x200000, v);
  pim_.attention({0x1000, 0x100000, 0x200000, 0x300000, group, context, d, scale, 0});  // no soft-cap
  const auto out = get(0x300000, static_cast<std::size_t>(group * d));
  std::vector<std::uint16_t> golden(out.size());
  pim::decode_attention_fp16(q.data(), k.data(), v.data(), static_cast<std::size_t>(group),
                             static_cast<std::size_t>(context), static_cast<std::size_t>(d), scale, 0,
                             golden.data(), pim::DatapathParams{});
  EXPECT_EQ(out, golden);
  const std::vector<double> ref = reference_attention(q, k, v, group, context, d, f(scale), 0.0);
  for (std::size_t i = 0; i < ref.size(); ++i)
    EXPECT_NEAR(f(out[i]), ref[i], 2e-2)
        << i / static_cast<std::size_t>(d) << "," << i % static_cast<std::size_t>(d);
}

// With a logit soft-cap (Gemma 2): the op applies it (= golden decode_attention_fp16 with the cap, and the
// double reference with c tanh(x / c) before the softmax; not the uncapped result), and its timing adds the
// softmax unit's cap stages (3 x kSoftcapStages cycles per softmax row).
TEST_F(LogicPimOps, DecodeAttentionWithSoftcapEqualsGolden) {
  const std::int64_t group = 4, context = 200, d = 64;
  const auto q = random_fp16(static_cast<std::size_t>(group * d), 1.0f, 13);
  const auto k = random_fp16(static_cast<std::size_t>(context * d), 1.0f, 14);
  const auto v = random_fp16(static_cast<std::size_t>(context * d), 1.0f, 15);
  const std::uint16_t scale = float_to_half_bits(1.0f);  // scores up to ~+-10
  const double cap = 3.0;
  const std::uint16_t softcap = float_to_half_bits(3.0f);
  put(0x1000, q);
  put(0x100000, k);
  put(0x200000, v);
  const PimOpTiming plain_t =
      pim_.attention({0x1000, 0x100000, 0x200000, 0x300000, group, context, d, scale, 0});
  const auto plain = get(0x300000, static_cast<std::size_t>(group * d));
  const PimOpTiming capped_t =
      pim_.attention({0x1000, 0x100000, 0x200000, 0x300000, group, context, d, scale, softcap});
  const auto out = get(0x300000, static_cast<std::size_t>(group * d));
  std::vector<std::uint16_t> golden(out.size());
  pim::decode_attention_fp16(q.data(), k.data(), v.data(), static_cast<std::size_t>(group),
                             static_cast<std::size_t>(context), static_cast<std::size_t>(d), scale, softcap,
                             golden.data(), pim::DatapathParams{});
  EXPECT_EQ(out, golden);
  EXPECT_NE(out, plain);
  const std::vector<double> ref = reference_attention(q, k, v, group, context, d, 1.0, cap);
  for (std::size_t i = 0; i < ref.size(); ++i)
    EXPECT_NEAR(f(out[i]), ref[i], 2e-2)
        << i / static_cast<std::size_t>(d) << "," << i % static_cast<std::size_t>(d);
  // 4 softmax rows of 200 on one unit: 4 x 3 x 18 more cycles at the PIM clock.
  const double cycle_ps = 1e12 / sys_.pim->clock.si();
  EXPECT_NEAR(
      to_ps(capped_t.softmax) - to_ps(plain_t.softmax),
      static_cast<double>(group * pim::timing::kSoftmaxPasses * pim::timing::kSoftcapStages) * cycle_ps, 1.0);
  EXPECT_GE(to_ps(capped_t.total), to_ps(plain_t.total));
}

TEST_F(LogicPimOps, ActivationEqualsGolden) {
  const std::int64_t n = 4096;
  const auto g = random_fp16(static_cast<std::size_t>(n), 4.0f, 6);
  const auto u = random_fp16(static_cast<std::size_t>(n), 2.0f, 7);
  put(0, g);
  put(0x10000, u);
  const PimOpTiming t = pim_.activation({0, 0x10000, 0x20000, n});
  EXPECT_EQ(t.actions.activation_elements, static_cast<std::uint64_t>(n));
  const auto out = get(0x20000, static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const auto k = static_cast<std::size_t>(i);
    ASSERT_EQ(out[k], pim::silu_gate_fp16(g[k], u[k])) << i;
    const double x = f(g[k]);
    EXPECT_NEAR(f(out[k]), x / (1 + std::exp(-x)) * f(u[k]), 1e-2 * (1 + std::abs(x * f(u[k])))) << i;
  }
}

// Every mode of the activation command: the golden bits, a double reference within 1 FP16 ulp of the result,
// and the unit's latency per mode in the timing (the front stages: 2 (SwiGLU-OAI), 5 (GELU tanh) or 17 (GELU
// erf) more cycles than SiLU / ReLU).
TEST_F(LogicPimOps, ActivationModesEqualGoldenAndTheirFunctions) {
  const std::int64_t n = 4096;
  const auto a = random_fp16(static_cast<std::size_t>(n), 6.0f, 8);
  const auto b = random_fp16(static_cast<std::size_t>(n), 0.5f, 9);
  put(0, a);
  put(0x10000, b);
  auto reference = [](pim::ActivationMode mode, double x, double y) {
    using M = pim::ActivationMode;
    const bool gated = pim::is_gated(mode);
    const double s = gated ? x : static_cast<double>(static_cast<float>(x + y));  // the FP32 sum
    double act = 0;
    if (mode == M::kSiluGate || mode == M::kSilu) act = s / (1 + std::exp(-s));
    if (mode == M::kRelu || mode == M::kReluGate) act = s > 0 ? s : 0.0;
    if (mode == M::kGeluTanh || mode == M::kGeluTanhGate)
      act = s / (1 + std::exp(-1.5957691216057308 * (s + 0.044715 * s * s * s)));  // gelu_tanh(s)
    if (mode == M::kGeluErf || mode == M::kGeluErfGate) act = s * 0.5 * std::erfc(-s / std::sqrt(2.0));
    if (mode == M::kSwigluOaiGate) {  // gpt-oss: clamped gate and up, (u + 1) g sigmoid(1.702 g)
      const double g = std::min(s, 7.0), u = std::clamp(y, -7.0, 7.0);
      return g / (1 + std::exp(-1.702 * g)) * (u + 1);
    }
    return gated ? act * y : act;
  };
  double silu_ps = 0;
  for (int m = 0; m < pim::kActivationModes; ++m) {
    const auto mode = static_cast<pim::ActivationMode>(m);
    const PimOpTiming t = pim_.activation({0, 0x10000, 0x20000, n, static_cast<std::uint64_t>(mode)});
    EXPECT_EQ(t.actions.activation_elements, static_cast<std::uint64_t>(n));
    const double cycle_ps = 1e12 / sys_.pim->clock.si();
    if (mode == pim::ActivationMode::kSiluGate)
      silu_ps = t.total.si() * 1e12;
    else
      EXPECT_NEAR(t.total.si() * 1e12 - silu_ps,
                  (pim::timing::activation_latency(mode) - pim::timing::kSiluLatency) * cycle_ps, 1.0)
          << pim::to_string(mode);
    const auto out = get(0x20000, static_cast<std::size_t>(n));
    for (std::size_t k = 0; k < out.size(); ++k) {
      ASSERT_EQ(out[k], pim::activation_fp16(mode, a[k], b[k])) << pim::to_string(mode) << " " << k;
      const double ref = reference(mode, f(a[k]), f(b[k]));
      const double ulp = std::ldexp(1.0, std::max(std::ilogb(std::max(std::fabs(ref), 0x1p-14)), -14) - 10);
      EXPECT_LE(std::fabs(f(out[k]) - ref), ulp) << pim::to_string(mode) << " " << k;
    }
  }
}

// GEMV with a bias (flags bit 0, GemvArgs::bias): y = golden gemv_fp16 with the bias (each row's accumulator
// starts at bias[r]), within the FP32 bound of the double W x + b; the bias's rows x 2 B are read too.
TEST_F(LogicPimOps, GemvWithBiasEqualsGolden) {
  const std::int64_t tokens = 2, rows = 80, cols = 512;
  const auto w = random_fp16(static_cast<std::size_t>(rows * cols), 0.5f, 21);
  const auto x = random_fp16(static_cast<std::size_t>(tokens * cols), 1.0f, 22);
  const auto b = random_fp16(static_cast<std::size_t>(rows), 4.0f, 23);
  const std::uint64_t wa = 1ull << 30, xa = 3ull << 30, ya = 5ull << 30, ba = 6ull << 30;
  put(wa, w);
  put(xa, x);
  put(ba, b);
  GemvArgs args{wa, xa, ya, tokens, rows, cols};
  const PimOpTiming plain_t = pim_.gemv(args);
  const auto plain = get(ya, static_cast<std::size_t>(tokens * rows));
  args.flags = hostif::kPimGemvFlagBias;
  args.bias = ba;
  const PimOpTiming t = pim_.gemv(args);
  const auto y = get(ya, static_cast<std::size_t>(tokens * rows));
  EXPECT_NE(y, plain);
  EXPECT_EQ(t.bytes_read, plain_t.bytes_read + 2.0 * static_cast<double>(rows));
  std::vector<std::uint16_t> golden(static_cast<std::size_t>(rows));
  for (std::int64_t tk = 0; tk < tokens; ++tk) {
    pim::gemv_fp16(w.data(), x.data() + tk * cols, golden.data(), static_cast<std::size_t>(rows),
                   static_cast<std::size_t>(cols), pim::DatapathParams{}, b.data());
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::uint16_t got = y[static_cast<std::size_t>(tk * rows + r)];
      ASSERT_EQ(got, golden[static_cast<std::size_t>(r)]) << "token " << tk << " row " << r;
      double ref = f(b[static_cast<std::size_t>(r)]), mag = std::abs(ref);
      for (std::int64_t c = 0; c < cols; ++c) {
        const double p = static_cast<double>(f(w[static_cast<std::size_t>(r * cols + c)])) *
                         f(x[static_cast<std::size_t>(tk * cols + c)]);
        ref += p;
        mag += std::abs(p);
      }
      EXPECT_LE(std::abs(f(got) - ref),
                std::abs(ref) * 0x1p-11 + static_cast<double>(cols) * 0x1p-24 * mag + 0x1p-24)
          << tk << "," << r;
    }
  }
}

// Attention sinks (flags bit 0: group FP16 logits right after q): the output is golden decode_attention_fp16
// with the sinks, and within 2e-2 of the double reference whose softmax takes each head's sink into the max
// and the sum (and drops its probability); the sinks cost no softmax cycle.
TEST_F(LogicPimOps, DecodeAttentionWithSinksEqualsGolden) {
  const std::int64_t group = 4, context = 200, d = 64;
  const auto q = random_fp16(static_cast<std::size_t>(group * d), 1.0f, 24);
  const auto k = random_fp16(static_cast<std::size_t>(context * d), 1.0f, 25);
  const auto v = random_fp16(static_cast<std::size_t>(context * d), 1.0f, 26);
  const std::vector<std::uint16_t> sinks{float_to_half_bits(-1.0f), float_to_half_bits(0.5f),
                                         float_to_half_bits(2.0f), float_to_half_bits(5.0f)};
  const std::uint16_t scale = float_to_half_bits(1.0f / std::sqrt(static_cast<float>(d)));
  std::vector<std::uint16_t> q_and_sinks = q;
  q_and_sinks.insert(q_and_sinks.end(), sinks.begin(), sinks.end());
  put(0x1000, q_and_sinks);
  put(0x100000, k);
  put(0x200000, v);
  AttentionArgs args{0x1000, 0x100000, 0x200000, 0x300000, group, context, d, scale, 0};
  const PimOpTiming plain_t = pim_.attention(args);
  const auto plain = get(0x300000, static_cast<std::size_t>(group * d));
  args.flags = hostif::kPimAttentionFlagSinks;
  const PimOpTiming t = pim_.attention(args);
  const auto out = get(0x300000, static_cast<std::size_t>(group * d));
  std::vector<std::uint16_t> golden(out.size());
  pim::decode_attention_fp16(q.data(), k.data(), v.data(), static_cast<std::size_t>(group),
                             static_cast<std::size_t>(context), static_cast<std::size_t>(d), scale, 0,
                             golden.data(), pim::DatapathParams{}, sinks.data());
  EXPECT_EQ(out, golden);
  EXPECT_NE(out, plain);
  EXPECT_EQ(to_ps(t.softmax), to_ps(plain_t.softmax));
  for (std::int64_t g = 0; g < group; ++g) {
    const double sink = f(sinks[static_cast<std::size_t>(g)]);
    std::vector<double> s(static_cast<std::size_t>(context));
    double mx = sink;
    for (std::int64_t tk = 0; tk < context; ++tk) {
      double dot = 0;
      for (std::int64_t j = 0; j < d; ++j)
        dot += static_cast<double>(f(q[static_cast<std::size_t>(g * d + j)])) *
               f(k[static_cast<std::size_t>(tk * d + j)]);
      mx = std::max(mx, s[static_cast<std::size_t>(tk)] = dot * f(scale));
    }
    double sum = std::exp(sink - mx);
    for (double& x : s) sum += (x = std::exp(x - mx));
    for (std::int64_t j = 0; j < d; ++j) {
      double ref = 0;
      for (std::int64_t tk = 0; tk < context; ++tk)
        ref += s[static_cast<std::size_t>(tk)] / sum * f(v[static_cast<std::size_t>(tk * d + j)]);
      EXPECT_NEAR(f(out[static_cast<std::size_t>(g * d + j)]), ref, 2e-2) << g << "," << j;
    }
  }
}

TEST_F(LogicPimOps, MalformedOpsAreTypedErrorsAndLeaveMemoryIntact) {
  const std::vector<std::uint16_t> sentinel(64, 0x3C00);
  put(0x40000, sentinel);
  auto fault_of = [&](auto&& op) {
    try {
      op();
    } catch (const PimOpError& e) {
      return static_cast<int>(e.fault());
    }
    return -1;
  };
  EXPECT_EQ(fault_of([&] {
              pim_.gemv({0x2, 0, 0x40000, 1, 16, 64});
            }),
            static_cast<int>(PimFault::kMisaligned));
  EXPECT_EQ(fault_of([&] {
              pim_.gemv({memory_.capacity() - 64, 0, 0x40000, 1, 16, 64});
            }),
            static_cast<int>(PimFault::kOutOfRange));
  EXPECT_EQ(fault_of([&] {
              pim_.gemv({0, 0, 0x40000, 1 << 20, 16, 64});
            }),
            static_cast<int>(PimFault::kBufferOverflow));
  EXPECT_EQ(fault_of([&] { pim_.gemv({0, 0, 0x40000, 1, 0, 64}); }), static_cast<int>(PimFault::kBadShape));
  EXPECT_EQ(fault_of([&] {
              pim_.attention({0, 0, 0, 0x40000, 8, 1 << 14, 64, 0x3C00});
            }),
            static_cast<int>(PimFault::kBufferOverflow));
  EXPECT_EQ(fault_of([&] {
              pim_.attention({0, 0, 0, 0x40000, 8, 1 << 14, 64, 0x3C00, 0x7C00});
            }),
            static_cast<int>(PimFault::kBufferOverflow));  // the buffers before the soft-cap
  for (const std::uint16_t bad : {std::uint16_t{0x8000}, std::uint16_t{0xC000}, std::uint16_t{0x7C00},
                                  std::uint16_t{0xFC00}, std::uint16_t{0x7E00}})
    EXPECT_EQ(fault_of([&] {
                pim_.attention({0x2, 0, 0, 0x40000, 2, 16, 64, 0x3C00, bad});
              }),
              static_cast<int>(PimFault::kBadArgument));  // the soft-cap before the operands
  EXPECT_EQ(fault_of([&] {
              pim_.activation({0, 0, 0x40000, 64, 9});
            }),
            static_cast<int>(PimFault::kBadArgument));
  EXPECT_EQ(fault_of([&] { pim_.activation({0, 0, 0x40000, 0, 9}); }), static_cast<int>(PimFault::kBadShape));
  EXPECT_EQ(fault_of([&] {
              pim_.activation({0x2, 0, 0x40000, 64, 1u << 31});
            }),
            static_cast<int>(PimFault::kBadArgument));  // the mode before the operands
  // Flags: an undefined bit is kBadArgument (after the shape, before the operands); the GEMV bias and the
  // attention sinks are operands (misaligned / out of range).
  GemvArgs gemv{0, 0, 0x40000, 1, 16, 64};
  gemv.flags = 2;
  EXPECT_EQ(fault_of([&] { pim_.gemv(gemv); }), static_cast<int>(PimFault::kBadArgument));
  gemv.weights = 2;
  EXPECT_EQ(fault_of([&] { pim_.gemv(gemv); }), static_cast<int>(PimFault::kBadArgument));
  gemv.flags = hostif::kPimGemvFlagBias;
  gemv.weights = 0;
  gemv.bias = 0x102;
  EXPECT_EQ(fault_of([&] { pim_.gemv(gemv); }), static_cast<int>(PimFault::kMisaligned));
  gemv.rows = 17;
  gemv.bias = memory_.capacity() - 32;  // 34 B of bias for 17 rows
  EXPECT_EQ(fault_of([&] { pim_.gemv(gemv); }), static_cast<int>(PimFault::kOutOfRange));
  gemv.rows = 16;
  gemv.bias = memory_.capacity() + 32;
  gemv.inputs = 0x101;  // x misaligned: checked before the bias
  EXPECT_EQ(fault_of([&] { pim_.gemv(gemv); }), static_cast<int>(PimFault::kMisaligned));
  gemv.inputs = 0;
  EXPECT_EQ(fault_of([&] { pim_.gemv(gemv); }), static_cast<int>(PimFault::kOutOfRange));
  AttentionArgs attention{memory_.capacity() - 256, 0, 0, 0x40000, 2, 16, 64, 0x3C00, 0};  // q: 256 B
  attention.flags = hostif::kPimAttentionFlagSinks;                                        // + 4 B of sinks
  EXPECT_EQ(fault_of([&] { pim_.attention(attention); }), static_cast<int>(PimFault::kOutOfRange));
  attention.flags = 0x0010;
  EXPECT_EQ(fault_of([&] { pim_.attention(attention); }), static_cast<int>(PimFault::kBadArgument));
  ActivationArgs activation{0, 0, 0x40000, 64, 0};
  activation.flags = 1;
  EXPECT_EQ(fault_of([&] { pim_.activation(activation); }), static_cast<int>(PimFault::kBadArgument));
  try {
    pim_.activation(activation);
  } catch (const PimOpError& e) {
    EXPECT_NE(std::string(e.what()).find("flags 0x0001"), std::string::npos) << e.what();
  }
  EXPECT_EQ(get(0x40000, 64), sentinel);
}

}  // namespace
}  // namespace duplex::sysc
