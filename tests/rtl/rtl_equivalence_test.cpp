// RTL vs golden, bit for bit: the Verilated datapath (duplex_rtl_datapath) against duplex_pim_golden on
// >= 100k randomised vectors per unit (fixed seeds), corner cases included, and end-to-end ops.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/rtl/datapath.hpp"
#include "duplex/rtl/golden_datapath.hpp"
#include "duplex/rtl/rtl_datapath.hpp"
#include "fp16_vectors.hpp"

namespace duplex::pim {
namespace {

using testing::Fp16Source;

std::uint32_t bits(float x) {
  return std::bit_cast<std::uint32_t>(x);
}

class RtlEquivalence : public ::testing::Test {
 protected:
  std::unique_ptr<Datapath> rtl_ = make_datapath("rtl", DatapathParams{});
  std::unique_ptr<Datapath> golden_ = make_datapath("golden", DatapathParams{});

  // The activation unit in `mode` over every FP16 a (65536) with b[i] = b_of(i): the RTL's mismatches with
  // the golden model (the first 10 reported).
  template <class BOf>
  std::size_t activation_mismatches(ActivationMode mode, BOf&& b_of) {
    std::vector<std::uint16_t> a(65536), b(65536), want(65536), got(65536);
    for (std::uint32_t i = 0; i < 65536; ++i) {
      a[i] = static_cast<std::uint16_t>(i);
      b[i] = b_of(i);
    }
    golden_->activation_fp16_n(mode, a.data(), b.data(), want.data(), a.size());
    rtl_->activation_fp16_n(mode, a.data(), b.data(), got.data(), a.size());
    std::size_t mismatches = 0;
    for (std::size_t i = 0; i < a.size(); ++i)
      if (want[i] != got[i] && ++mismatches <= 10)
        ADD_FAILURE() << to_string(mode) << " a " << std::hex << a[i] << " b " << b[i] << ": golden "
                      << want[i] << " rtl " << got[i];
    return mismatches;
  }
};

// 100k dot products, k in [0, 80] (0 to 5 passes, partial last passes), in five vector families.
TEST_F(RtlEquivalence, GemmLaneDotBitExact) {
  Fp16Source src(101);
  std::vector<std::uint16_t> a(80);
  std::vector<std::uint16_t> b(80);
  std::size_t mismatches = 0;
  for (int vec = 0; vec < 100000; ++vec) {
    const std::size_t k = src.rng()() % 81;
    const int family = vec % 5;
    for (std::size_t i = 0; i < k; ++i) {
      switch (family) {
        case 0:
          a[i] = src.mixed(0);
          b[i] = src.mixed(0);
          break;  // realistic
        case 1:
          a[i] = src.mixed(16);
          b[i] = src.mixed(16);
          break;  // with corners
        case 2:
          a[i] = src.any_bits();
          b[i] = src.any_bits();
          break;  // any bit pattern
        case 3:
          a[i] = src.normal(10, 15);
          b[i] = src.normal(10, 15);
          break;  // large: cancellation, overflow
        default:
          a[i] = src.subnormal();
          b[i] = src.mixed(8, -14, 15);
          break;  // subnormal-heavy
      }
    }
    if (family == 3 && k >= 2) {  // exact max-magnitude cancellation pairs
      a[1] = static_cast<std::uint16_t>(a[0] ^ 0x8000u);
      b[1] = b[0];
    }
    const float want = golden_->dot_fp16(a.data(), b.data(), k);
    const float got = rtl_->dot_fp16(a.data(), b.data(), k);
    if (bits(want) != bits(got) && ++mismatches <= 10)
      ADD_FAILURE() << "dot k=" << k << " family " << family << ": golden " << std::hex << bits(want)
                    << " rtl " << bits(got);
  }
  EXPECT_EQ(mismatches, 0u);
}

// Dot products started at a bias (the GEMV bias, gemm_lane in_bias): 50k vectors, k in [0, 80], biases from
// every class (zeros of both signs, subnormals, Inf, NaN, any bits, realistic, huge), back to back on the
// lane so each dot product's first pass must pick up its own bias.
TEST_F(RtlEquivalence, GemmLaneDotWithBiasBitExact) {
  Fp16Source src(109);
  std::vector<std::uint16_t> a(80), b(80);
  std::size_t mismatches = 0;
  for (int vec = 0; vec < 50000; ++vec) {
    const std::size_t k = src.rng()() % 81;
    const int family = vec % 4;
    for (std::size_t i = 0; i < k; ++i) {
      a[i] = family == 2 ? src.any_bits() : src.mixed(family == 1 ? 16 : 0);
      b[i] = family == 2 ? src.any_bits() : src.mixed(family == 1 ? 16 : 0);
    }
    const std::uint16_t init = family == 0   ? src.mixed(0, -4, 4)
                               : family == 1 ? src.corner()
                               : family == 2 ? src.any_bits()
                                             : src.mixed(4, -14, 15);
    const float want = golden_->dot_fp16(a.data(), b.data(), k, init);
    const float got = rtl_->dot_fp16(a.data(), b.data(), k, init);
    if (bits(want) != bits(got) && ++mismatches <= 10)
      ADD_FAILURE() << "dot k=" << k << " init " << std::hex << init << ": golden " << bits(want) << " rtl "
                    << bits(got);
  }
  EXPECT_EQ(mismatches, 0u);
  const std::vector<std::uint16_t> one{0x3C00};
  EXPECT_EQ(bits(rtl_->dot_fp16(one.data(), one.data(), 0, 0x8000)), 0u);  // k = 0: -0 + (+0) = +0
  EXPECT_EQ(rtl_->dot_fp16(one.data(), one.data(), 0, 0x3E00), 1.5f);
}

// GEMV with a bias per row: RTL = golden, and the bias changes the result.
TEST_F(RtlEquivalence, GemvWithBiasBitExact) {
  Fp16Source src(110);
  for (std::size_t k : {1u, 15u, 16u, 17u, 64u, 333u}) {
    const std::size_t n = 257;
    std::vector<std::uint16_t> w(n * k), x(k), bias(n);
    for (auto& v : w) v = src.mixed(1024, -6, 2);
    for (auto& v : x) v = src.mixed(1024, -6, 2);
    for (auto& v : bias) v = src.mixed(16, -8, 6);  // 1 in 16 a corner case (Inf, NaN, +-0, subnormal)
    std::vector<std::uint16_t> want(n), got(n), plain(n);
    golden_->gemv_fp16(w.data(), x.data(), want.data(), n, k, bias.data());
    rtl_->gemv_fp16(w.data(), x.data(), got.data(), n, k, bias.data());
    rtl_->gemv_fp16(w.data(), x.data(), plain.data(), n, k);
    EXPECT_EQ(want, got) << "k = " << k;
    EXPECT_NE(got, plain) << "k = " << k;
  }
}

TEST_F(RtlEquivalence, GemvFp16OutputsBitExact) {
  Fp16Source src(102);
  for (std::size_t k : {1u, 15u, 16u, 17u, 64u, 333u}) {
    const std::size_t n = 257;
    std::vector<std::uint16_t> w(n * k);
    std::vector<std::uint16_t> x(k);
    for (auto& v : w) v = src.mixed(32, -6, 8);
    for (auto& v : x) v = src.mixed(32, -6, 8);
    std::vector<std::uint16_t> want(n);
    std::vector<std::uint16_t> got(n);
    golden_->gemv_fp16(w.data(), x.data(), want.data(), n, k);
    rtl_->gemv_fp16(w.data(), x.data(), got.data(), n, k);
    EXPECT_EQ(want, got) << "k = " << k;
  }
}

// 100k softmax rows of 1..8 scores plus long rows (bulk of the elements), scales from tiny to large.
TEST_F(RtlEquivalence, SoftmaxBitExact) {
  Fp16Source src(103);
  std::vector<std::uint16_t> s(kSoftmaxMaxElements);
  std::vector<std::uint16_t> want(kSoftmaxMaxElements);
  std::vector<std::uint16_t> got(kSoftmaxMaxElements);
  std::size_t mismatches = 0;
  auto run = [&](std::size_t n, std::uint16_t scale, int family) {
    golden_->softmax_fp16(s.data(), n, scale, 0, want.data());
    rtl_->softmax_fp16(s.data(), n, scale, 0, got.data());
    for (std::size_t i = 0; i < n; ++i)
      if (want[i] != got[i] && ++mismatches <= 10)
        ADD_FAILURE() << "softmax n=" << n << " family " << family << " i=" << i << ": golden " << std::hex
                      << want[i] << " rtl " << got[i];
  };
  for (int row = 0; row < 100000; ++row) {
    const std::size_t n = 1 + src.rng()() % 8;
    const int family = row % 4;
    for (std::size_t i = 0; i < n; ++i) {
      switch (family) {
        case 0:
          s[i] = src.mixed(0, -4, 5);
          break;
        case 1:
          s[i] = src.mixed(8, -4, 5);
          break;
        case 2:
          s[i] = src.any_bits();
          break;
        default:
          s[i] = src.normal(8, 15);
          break;  // huge scores: large |x - max|, underflowing exps
      }
    }
    const std::uint16_t scale = row % 8 == 0 ? src.corner() : src.normal(-6, 2);
    run(n, static_cast<std::uint16_t>(scale & 0x7FFFu), family);
  }
  for (std::size_t n : {std::size_t{100}, std::size_t{4096}, kSoftmaxMaxElements}) {
    for (std::size_t i = 0; i < n; ++i) s[i] = src.mixed(1024, -4, 5);
    run(n, float_to_half_bits(0.088388f), 4);
  }
  EXPECT_EQ(mismatches, 0u);
}

// The logit soft-cap (Gemma 2): 30k random rows of 1..8 scores and long rows (100, 4096, 32768 scores) with
// caps 50, 30, 8, 1, 0.5, the extremes (smallest subnormal, smallest normal, 65504) and random valid caps;
// uncapped rows in between (the row's cap is sampled with its first score); scores that cross the
// polynomial / exp-form boundary |x| = c, and Inf / NaN scores. RTL = golden bit for bit.
TEST_F(RtlEquivalence, SoftmaxSoftcapBitExact) {
  Fp16Source src(107);
  std::vector<std::uint16_t> s(kSoftmaxMaxElements);
  std::vector<std::uint16_t> want(kSoftmaxMaxElements);
  std::vector<std::uint16_t> got(kSoftmaxMaxElements);
  std::size_t mismatches = 0;
  std::size_t capped_rows = 0;
  auto run = [&](std::size_t n, std::uint16_t scale, std::uint16_t cap, int family) {
    golden_->softmax_fp16(s.data(), n, scale, cap, want.data());
    rtl_->softmax_fp16(s.data(), n, scale, cap, got.data());
    capped_rows += cap != 0;
    for (std::size_t i = 0; i < n; ++i)
      if (want[i] != got[i] && ++mismatches <= 10)
        ADD_FAILURE() << "softmax n=" << n << " cap " << std::hex << cap << " family " << std::dec << family
                      << " i=" << i << ": golden " << std::hex << want[i] << " rtl " << got[i];
  };
  // 50, 30, 8, 1, 0.5, the smallest subnormal, the smallest normal, 65504
  const std::uint16_t caps[] = {0x5240, 0x4F80, 0x4800, 0x3C00, 0x3800, 0x0001, 0x0400, 0x7BFF};
  auto random_cap = [&]() -> std::uint16_t {
    const auto pick = src.rng()() % 12;
    if (pick < std::size(caps)) return caps[pick];
    if (pick == 8) return 0;  // uncapped rows in between
    if (pick == 9) return src.subnormal() & 0x7FFFu;
    return src.normal(-8, 15) & 0x7FFFu;  // any finite positive normal
  };
  for (int row = 0; row < 30000; ++row) {
    const std::size_t n = 1 + src.rng()() % 8;
    const int family = row % 4;
    const std::uint16_t cap = random_cap();
    const float c = half_bits_to_float(cap);
    for (std::size_t i = 0; i < n; ++i) {
      switch (family) {
        case 0: {  // x within a few c of 0 (scale 1 below): both forms, the boundary |x| = c
          const auto k = static_cast<float>(static_cast<int>(src.rng()() % 2001) - 1000);  // x = c k / 256
          s[i] = cap == 0 ? src.mixed(0, -4, 5) : float_to_half_bits(c * std::ldexp(k, -8));
          break;
        }
        case 1:
          s[i] = src.mixed(8, -4, 5);
          break;
        case 2:
          s[i] = src.any_bits();
          break;
        default:
          s[i] = src.normal(-14, 15);
          break;
      }
    }
    const std::uint16_t scale = family == 0    ? float_to_half_bits(1.0f)
                                : row % 8 == 1 ? src.corner()
                                               : src.normal(-6, 2);
    run(n, static_cast<std::uint16_t>(scale & 0x7FFFu), cap, family);
  }
  // Long rows: Gemma-like logits (scale 1/16, |x| up to ~90) against caps 50 and 30, and a tiny cap.
  for (const auto& [n, cap] :
       {std::pair{std::size_t{100}, caps[0]}, std::pair{std::size_t{4096}, caps[1]},
        std::pair{kSoftmaxMaxElements, caps[0]}, std::pair{std::size_t{4096}, caps[4]}}) {
    for (std::size_t i = 0; i < n; ++i) s[i] = src.mixed(2048, -4, 10);
    run(n, float_to_half_bits(0.0625f), cap, 4);
  }
  EXPECT_EQ(mismatches, 0u);
  EXPECT_GT(capped_rows, 20000u);
  std::vector<std::uint16_t> one{0x3C00};
  for (const int bad : {0x8000, 0xBC00, 0x7C00, 0xFC00, 0x7E00, 0x7C01})
    EXPECT_THROW(rtl_->softmax_fp16(one.data(), 1, 0x3C00, static_cast<std::uint16_t>(bad), one.data()),
                 Error)
        << std::hex << bad;
}

// Attention sinks (gpt-oss): 40k random rows of 1..8 scores, each with a sink (realistic, around the row's
// max, far below and above it, corner cases: +-0, subnormals, +-Inf, NaN, and any bits) or (1 in 5) without
// one, so the unit must sample the sink with each row's first score; half of them soft-capped (the sink is
// neither scaled nor capped); plus long rows (100, 4096, 32768) with sinks. RTL = golden bit for bit.
TEST_F(RtlEquivalence, SoftmaxSinkBitExact) {
  Fp16Source src(111);
  std::vector<std::uint16_t> s(kSoftmaxMaxElements), want(kSoftmaxMaxElements), got(kSoftmaxMaxElements);
  std::size_t mismatches = 0, sink_rows = 0;
  auto run = [&](std::size_t n, std::uint16_t scale, std::uint16_t cap, const std::uint16_t* sink) {
    golden_->softmax_fp16(s.data(), n, scale, cap, want.data(), sink);
    rtl_->softmax_fp16(s.data(), n, scale, cap, got.data(), sink);
    sink_rows += sink != nullptr;
    for (std::size_t i = 0; i < n; ++i)
      if (want[i] != got[i] && ++mismatches <= 10)
        ADD_FAILURE() << "softmax n=" << n << " cap " << std::hex << cap << " sink "
                      << (sink != nullptr ? *sink : 0xFFFFu) << " i=" << std::dec << i << ": golden "
                      << std::hex << want[i] << " rtl " << got[i];
  };
  const std::uint16_t caps[] = {0x0000, 0x4800, 0x3C00, 0x5240};  // none, 8, 1, 50
  for (int row = 0; row < 40000; ++row) {
    const std::size_t n = 1 + src.rng()() % 8;
    const int family = row % 3;
    for (std::size_t i = 0; i < n; ++i)
      s[i] = family == 0 ? src.mixed(0, -4, 4) : family == 1 ? src.mixed(8, -4, 5) : src.any_bits();
    const std::uint16_t scale = row % 8 == 1 ? src.corner() & 0x7FFFu : src.normal(-3, 1) & 0x7FFFu;
    const std::uint16_t cap = caps[src.rng()() % 2 == 0 ? 0 : 1 + src.rng()() % 3];
    std::uint16_t sink = 0;
    switch (src.rng()() % 6) {
      case 0:
        sink = src.corner();  // +-0, subnormals, +-65504, +-Inf, NaNs, 1
        break;
      case 1:
        sink = src.any_bits();
        break;
      case 2:
        sink = s[src.rng()() % n];  // equal to a score (a tie for the max at scale 1)
        break;
      case 3:
        sink = src.normal(3, 7);  // +-8 .. +-255: dominant or negligible
        break;
      default:
        sink = src.mixed(0, -6, 3);
        break;
    }
    run(n, scale, cap, row % 5 == 4 ? nullptr : &sink);
  }
  for (const std::size_t n : {std::size_t{100}, std::size_t{4096}, kSoftmaxMaxElements}) {
    for (std::size_t i = 0; i < n; ++i) s[i] = src.mixed(1024, -4, 4);
    const std::uint16_t sink = float_to_half_bits(2.5f);
    run(n, float_to_half_bits(0.125f), n == 4096 ? caps[1] : caps[0], &sink);
  }
  EXPECT_EQ(mismatches, 0u);
  EXPECT_GT(sink_rows, 30000u);
}

// Every FP16 gate bit pattern (65536) with four up values each: 262144 vectors.
TEST_F(RtlEquivalence, SiluGateExhaustiveGateBitExact) {
  Fp16Source src(104);
  std::size_t mismatches = 0;
  for (int round = 0; round < 4; ++round)
    mismatches += activation_mismatches(ActivationMode::kSiluGate, [&](std::uint32_t) {
      return round == 0 ? src.corner() : round == 1 ? src.any_bits() : src.mixed(0, -14, 15);
    });
  EXPECT_EQ(mismatches, 0u);
  EXPECT_EQ(rtl_->silu_gate_fp16(0x3C00, 0x4000), golden_->silu_gate_fp16(0x3C00, 0x4000));
}

// Every mode but SiLU gate (above): every FP16 a bit pattern (65536) with several b values each. Added modes
// (b a bias): 0, a corner case, any bit pattern, a realistic bias, a large one (327680 vectors per mode).
// Gated modes (b = up): a corner case, any bit pattern, a realistic value, a subnormal-heavy one (262144).
TEST_F(RtlEquivalence, EveryModeExhaustiveABitExact) {
  Fp16Source src(106);
  for (const ActivationMode mode :
       {ActivationMode::kGeluTanh, ActivationMode::kRelu, ActivationMode::kGeluErf, ActivationMode::kSilu,
        ActivationMode::kGeluTanhGate, ActivationMode::kReluGate, ActivationMode::kGeluErfGate,
        ActivationMode::kSwigluOaiGate}) {
    const bool gated = is_gated(mode);
    std::size_t mismatches = 0;
    for (int round = gated ? 1 : 0; round < 5; ++round)
      mismatches += activation_mismatches(mode, [&](std::uint32_t) {
        return round == 0   ? std::uint16_t{0}
               : round == 1 ? src.corner()
               : round == 2 ? src.any_bits()
               : round == 3 ? src.mixed(0, -8, 1)
               : gated      ? src.mixed(8, -14, 15)
                            : src.mixed(0, 4, 15);
      });
    EXPECT_EQ(mismatches, 0u) << to_string(mode);
  }
  std::vector<std::uint16_t> one(1);
  EXPECT_THROW(rtl_->activation_fp16_n(static_cast<ActivationMode>(kActivationModes), one.data(), one.data(),
                                       one.data(), 1),
               Error);
}

// gpt-oss's clamped SwiGLU (mode 8) at its clamps and special values: every FP16 gate bit pattern with each
// of 25 up values (+-0, subnormals, +-Inf, NaNs, values around +-7 and -1, 1): 1.6M pairs. Every gate
// includes NaNs, +-Inf, +-0, subnormals and the values around 7 (6.996, 7, 7.004, 65504).
TEST_F(RtlEquivalence, SwigluOaiClampsAndSpecialValuesBitExact) {
  const std::uint16_t ups[] = {0x0000, 0x8000, 0x0001, 0x83FF, 0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01,
                               0x46FF, 0x4700, 0x4701, 0xC6FF, 0xC700, 0xC701, 0x4800, 0xC800, 0x7BFF,
                               0xFBFF, 0xBBFF, 0xBC00, 0xBC01, 0x3C00, 0x1400, 0x9400};
  std::size_t mismatches = 0;
  for (const std::uint16_t up : ups)
    mismatches += activation_mismatches(ActivationMode::kSwigluOaiGate, [&](std::uint32_t) { return up; });
  EXPECT_EQ(mismatches, 0u);
}

// ReLU gate has no zeroing override: relu(a) * b keeps the product's sign and its NaN.
TEST_F(RtlEquivalence, ReluGateSignsAndSpecials) {
  const std::vector<std::uint16_t> a{0xC000, 0x4000, 0x0000, 0x8000, 0xFC00, 0x7C00, 0x7E01, 0x0001};
  const std::vector<std::uint16_t> b{0xC200, 0xC200, 0x7C00, 0x3C00, 0x3C00, 0x0000, 0x3C00, 0x3C00};
  // relu(-2) * -3 = -0, 2 * -3 = -6, +0 * Inf = NaN, +0 * 1 = +0, +0, Inf * 0 = NaN, NaN, 2^-24
  const std::vector<std::uint16_t> expected{0x8000, 0xC600, 0x7E00, 0x0000, 0x0000, 0x7E00, 0x7E00, 0x0001};
  std::vector<std::uint16_t> got(a.size());
  rtl_->activation_fp16_n(ActivationMode::kReluGate, a.data(), b.data(), got.data(), a.size());
  EXPECT_EQ(got, expected);
  golden_->activation_fp16_n(ActivationMode::kReluGate, a.data(), b.data(), got.data(), a.size());
  EXPECT_EQ(got, expected);
}

// One GQA group's decode-attention operands: q [group][d], K and V [t][d], each Fp16Source::mixed(0, emin,
// emax).
struct AttentionOperands {
  std::vector<std::uint16_t> q, k, v;
};
AttentionOperands random_attention(std::uint32_t seed, std::size_t group, std::size_t t, std::size_t d,
                                   int emin, int emax) {
  Fp16Source src(seed);
  AttentionOperands o{std::vector<std::uint16_t>(group * d), std::vector<std::uint16_t>(t * d),
                      std::vector<std::uint16_t>(t * d)};
  for (auto* buf : {&o.q, &o.k, &o.v})
    for (auto& x : *buf) x = src.mixed(0, emin, emax);
  return o;
}

TEST_F(RtlEquivalence, DecodeAttentionSameBytes) {
  const std::size_t group = 4;
  const std::size_t t = 300;
  const std::size_t d = 64;
  const auto [q, k, v] = random_attention(105, group, t, d, -3, 1);
  const std::uint16_t scale = float_to_half_bits(0.125f);
  std::vector<std::uint16_t> want(group * d);
  std::vector<std::uint16_t> got(group * d);
  golden_->decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, scale, 0, want.data());
  rtl_->decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, scale, 0, got.data());
  EXPECT_EQ(want, got);
  std::vector<std::uint16_t> free_fn(group * d);
  decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, scale, 0, free_fn.data(),
                        DatapathParams{});
  EXPECT_EQ(want, free_fn);
  ASSERT_TRUE(rtl_->simulated_cycles().has_value());
  EXPECT_GT(*rtl_->simulated_cycles(), group * (t * (d / 16) + d * ((t + 15) / 16)));
}

// Decode attention with a logit soft-cap: RTL = golden = the free function, and the cap changes the result
// (scores of up to ~+-12 x scale 1 against caps 8 and 2).
TEST_F(RtlEquivalence, DecodeAttentionSoftcapSameBytes) {
  const std::size_t group = 2;
  const std::size_t t = 200;
  const std::size_t d = 32;
  const auto [q, k, v] = random_attention(108, group, t, d, -2, 0);
  const std::uint16_t scale = float_to_half_bits(1.0f);
  std::vector<std::uint16_t> uncapped(group * d);
  golden_->decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, scale, 0, uncapped.data());
  for (const float cap : {8.0f, 2.0f}) {
    const std::uint16_t c = float_to_half_bits(cap);
    std::vector<std::uint16_t> want(group * d), got(group * d), free_fn(group * d);
    golden_->decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, scale, c, want.data());
    rtl_->decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, scale, c, got.data());
    decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, scale, c, free_fn.data(),
                          DatapathParams{});
    EXPECT_EQ(want, got) << "cap " << cap;
    EXPECT_EQ(want, free_fn) << "cap " << cap;
    EXPECT_NE(want, uncapped) << "cap " << cap << " changes nothing";
  }
  EXPECT_THROW(
      rtl_->decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, scale, 0xFC00, uncapped.data()),
      Error);
}

// Decode attention with sinks (and with a cap): RTL = golden = the free function, and the sinks change it.
TEST_F(RtlEquivalence, DecodeAttentionSinksSameBytes) {
  const std::size_t group = 3, t = 150, d = 32;
  const auto [q, k, v] = random_attention(112, group, t, d, -2, 0);
  const std::vector<std::uint16_t> sinks{float_to_half_bits(-0.5f), float_to_half_bits(2.0f),
                                         float_to_half_bits(6.0f)};
  const std::uint16_t scale = float_to_half_bits(0.5f);
  for (const std::uint16_t cap : {std::uint16_t{0}, float_to_half_bits(4.0f)}) {
    std::vector<std::uint16_t> want(group * d), got(group * d), free_fn(group * d), plain(group * d);
    golden_->decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, scale, cap, want.data(),
                                   sinks.data());
    rtl_->decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, scale, cap, got.data(),
                                sinks.data());
    decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, scale, cap, free_fn.data(),
                          DatapathParams{}, sinks.data());
    rtl_->decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, scale, cap, plain.data());
    EXPECT_EQ(want, got) << "cap " << cap;
    EXPECT_EQ(want, free_fn) << "cap " << cap;
    EXPECT_NE(want, plain) << "cap " << cap << ": the sinks change nothing";
  }
}

TEST(RtlDatapathFactory, RejectsBadRequestsClearly) {
  EXPECT_THROW(make_datapath("verilog", DatapathParams{}), Error);
  EXPECT_THROW(make_datapath("rtl", DatapathParams{32}), Error);  // RTL built with 16 lanes
  const std::string extension = kRtlTraceExtension;
  EXPECT_THROW(make_datapath("rtl", DatapathParams{16}, extension == ".vcd" ? "wave.fst" : "wave.vcd"),
               Error);
  EXPECT_THROW(make_datapath("golden", DatapathParams{16}, "wave" + extension), Error);
  EXPECT_THROW(make_datapath("rtl", DatapathParams{16}, "/nonexistent-dir/wave" + extension), Error);
  auto rtl = make_datapath("rtl", DatapathParams{});
  std::vector<std::uint16_t> none(1);
  EXPECT_THROW(rtl->softmax_fp16(none.data(), 0, 0x3C00, 0, none.data()), Error);
  EXPECT_EQ(rtl->kind(), "rtl");
}

TEST(RtlDatapathFactory, TracesAWaveform) {
  const std::string path = ::testing::TempDir() + "duplex_rtl_trace_test" + kRtlTraceExtension;
  {
    auto rtl = make_datapath("rtl", DatapathParams{}, path);
    const std::vector<std::uint16_t> a(40, 0x3C00);
    EXPECT_EQ(rtl->dot_fp16(a.data(), a.data(), 40), 40.0f);
  }
  std::ifstream in(path, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (std::string(kRtlTraceExtension) == ".vcd") {
    EXPECT_NE(text.find("$enddefinitions"), std::string::npos);
    EXPECT_NE(text.find("gemm_out_acc"), std::string::npos);
  } else {
    EXPECT_GT(text.size(), 1000u);  // FST is compressed: a non-trivial file
  }
  std::remove(path.c_str());
}

}  // namespace
}  // namespace duplex::pim
