// The device units of functional emulation (IDevice): capabilities, per-op counters, and each unit's results
// against a double-precision reference; decode attention through a scattered block table against the same
// attention on contiguous K/V.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/kernels/backend.hpp"
#include "duplex/runtime/device/bank_pim_device.hpp"
#include "duplex/runtime/device/logic_pim_device.hpp"
#include "duplex/runtime/device/xpu_device.hpp"

namespace duplex::runtime::device {
namespace {

using compiler::OpKind;

std::vector<std::uint16_t> random_half(std::size_t n, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<std::uint16_t> v(n);
  for (auto& x : v) x = float_to_half_bits(dist(rng));
  return v;
}

double half(std::uint16_t b) {
  return static_cast<double>(half_bits_to_float(b));
}

struct Units {
  std::shared_ptr<functional::PimUnit> golden = functional::make_datapath_pim_unit("golden");
  XpuDevice xpu{"dev0.xpu", kernels::make_cpu_backend()};
  LogicPimDevice logic{"dev0.pim", golden};
  BankPimDevice bank{"dev1.pim", PimKind::kBankPim, functional::make_datapath_pim_unit("golden")};
  std::vector<IDevice*> all() { return {&xpu, &logic, &bank}; }
};

// The golden datapath's attention of batch `b`'s one row, each GQA group against a contiguous copy of its
// KV head's cached tokens (gathered through the block table), with soft-cap `softcap` (0: none).
std::vector<std::uint16_t> golden_attention(functional::PimUnit& golden, const DecodeAttentionBatch& b,
                                            float softcap) {
  const std::int64_t hkv = b.kv.kv_heads, d = b.kv.head_dim, bt = b.kv.block_tokens, t = b.context_lens[0];
  const std::int64_t group = b.q_heads / hkv;
  const std::vector<std::int32_t>& table = *b.block_tables[0];
  std::vector<std::uint16_t> out(static_cast<std::size_t>(b.q_heads * d));
  for (std::int64_t g = 0; g < hkv; ++g) {
    std::vector<std::uint16_t> k(static_cast<std::size_t>(t * d)), v(k.size());
    for (std::int64_t j = 0; j < t; ++j) {
      const std::int64_t slot = ((table[static_cast<std::size_t>(j / bt)] * bt + j % bt) * hkv + g) * d;
      std::copy_n(b.kv.k_pool + slot, d, k.begin() + j * d);
      std::copy_n(b.kv.v_pool + slot, d, v.begin() + j * d);
    }
    const std::size_t qo = static_cast<std::size_t>(g * group * d);
    golden.attention(b.q + qo, k.data(), v.data(), static_cast<std::size_t>(group),
                     static_cast<std::size_t>(t), static_cast<std::size_t>(d), float_to_half_bits(b.scale),
                     float_to_half_bits(softcap), out.data() + qo,
                     b.sinks != nullptr ? b.sinks + g * group : nullptr);
  }
  return out;
}

TEST(Devices, NameClassesAndCapabilities) {
  Units u;
  EXPECT_EQ(u.xpu.name(), "dev0.xpu");
  EXPECT_EQ(u.xpu.unit(), compiler::Unit::kXpu);
  EXPECT_EQ(u.logic.unit(), compiler::Unit::kPim);
  EXPECT_NE(u.xpu.describe().find("XpuDevice"), std::string::npos);
  EXPECT_NE(u.logic.describe().find("LogicPimDevice (logic-pim datapath golden"), std::string::npos);
  EXPECT_NE(u.bank.describe().find("BankPimDevice (bank-pim"), std::string::npos);
  for (IDevice* d : u.all()) {
    EXPECT_TRUE(d->executes(OpKind::kQkvProj)) << d->name();
    EXPECT_TRUE(d->executes(OpKind::kExpertFfn)) << d->name();
    EXPECT_TRUE(d->executes(OpKind::kAttentionDecode)) << d->name();
    EXPECT_FALSE(d->executes(OpKind::kAllToAll)) << d->name();
    EXPECT_FALSE(d->memory_spaces().empty());
  }
  // The router's top-k and the LM head's argmax, prefill attention and the elementwise ops are xPU-only.
  for (OpKind k :
       {OpKind::kRouter, OpKind::kLmHead, OpKind::kAttentionPrefill, OpKind::kNorm, OpKind::kRope}) {
    EXPECT_TRUE(u.xpu.executes(k));
    EXPECT_FALSE(u.logic.executes(k));
    EXPECT_FALSE(u.bank.executes(k));
  }
  EXPECT_THROW(BankPimDevice("x", PimKind::kLogicPim, u.golden), Error);
}

TEST(Devices, LinearAndGatedFfnMatchDoubleReferenceAndCountPerKind) {
  Units u;
  const std::size_t m = 3, n = 24, k = 40, f = 16;
  const auto w = random_half(n * k, 1, 0.15f), x = random_half(m * k, 2);
  const auto wg = random_half(f * k, 3, 0.15f), wu = random_half(f * k, 4, 0.15f),
             wd = random_half(k * f, 5, 0.25f);
  for (IDevice* d : u.all()) {
    std::vector<std::uint16_t> y(m * n), z(m * k);
    d->linear(OpKind::kQkvProj, w.data(), x.data(), y.data(), m, n, k);
    functional::FfnWeights gated;
    gated.w_in = wg.data();
    gated.w_up = wu.data();
    gated.w_down = wd.data();
    gated.f = f;
    gated.h = k;
    d->ffn(OpKind::kExpertFfn, gated, x.data(), z.data(), m);
    d->ffn(OpKind::kExpertFfn, gated, x.data(), z.data(), m);
    for (std::size_t r = 0; r < m; ++r) {
      for (std::size_t c = 0; c < n; ++c) {
        double ref = 0;
        for (std::size_t i = 0; i < k; ++i) ref += half(w[c * k + i]) * half(x[r * k + i]);
        EXPECT_NEAR(half(y[r * n + c]), ref, 2e-3 * std::max(1.0, std::fabs(ref))) << d->name();
      }
      std::vector<double> act(f);
      for (std::size_t j = 0; j < f; ++j) {
        double g = 0, up = 0;
        for (std::size_t i = 0; i < k; ++i) {
          g += half(wg[j * k + i]) * half(x[r * k + i]);
          up += half(wu[j * k + i]) * half(x[r * k + i]);
        }
        act[j] = g / (1 + std::exp(-g)) * up;
      }
      for (std::size_t c = 0; c < k; ++c) {
        double ref = 0;
        for (std::size_t j = 0; j < f; ++j) ref += half(wd[c * f + j]) * act[j];
        EXPECT_NEAR(half(z[r * k + c]), ref, 1e-2 * std::max(1.0, std::fabs(ref))) << d->name();
      }
    }
    EXPECT_EQ(d->op_counts().at("qkv_proj"), 1) << d->name();
    EXPECT_EQ(d->op_counts().at("expert_ffn"), 2) << d->name();
  }
}

// fc1 with a bias, GELU (tanh) or ReLU, fc2: every unit against a double reference (the Logic-PIM's
// activation unit takes the bias as its addend).
TEST(Devices, TwoMatrixFfnWithBiasMatchesDoubleReference) {
  Units u;
  const std::size_t m = 3, k = 40, f = 24;
  const auto x = random_half(m * k, 11), w_in = random_half(f * k, 12, 0.15f),
             w_down = random_half(k * f, 13, 0.2f), b_in = random_half(f, 14, 0.5f);
  for (compiler::Activation act : {compiler::Activation::kGeluTanh, compiler::Activation::kRelu}) {
    functional::FfnWeights w;
    w.w_in = w_in.data();
    w.w_down = w_down.data();
    w.b_in = b_in.data();
    w.f = f;
    w.h = k;
    w.activation = act;
    for (IDevice* d : u.all()) {
      std::vector<std::uint16_t> y(m * k);
      d->ffn(OpKind::kDenseFfn, w, x.data(), y.data(), m);
      for (std::size_t r = 0; r < m; ++r) {
        std::vector<double> h(f);
        for (std::size_t j = 0; j < f; ++j) {
          double g = half(b_in[j]);
          for (std::size_t i = 0; i < k; ++i) g += half(w_in[j * k + i]) * half(x[r * k + i]);
          h[j] = act == compiler::Activation::kRelu
                     ? std::max(g, 0.0)
                     : 0.5 * g * (1 + std::tanh(std::sqrt(2 / M_PI) * (g + 0.044715 * g * g * g)));
        }
        for (std::size_t c = 0; c < k; ++c) {
          double ref = 0;
          for (std::size_t j = 0; j < f; ++j) ref += half(w_down[c * f + j]) * h[j];
          EXPECT_NEAR(half(y[r * k + c]), ref, 1e-2 * std::max(1.0, std::fabs(ref)))
              << d->name() << " " << compiler::activation_name(act);
        }
      }
    }
  }
}

TEST(Devices, AnOpKindAUnitDoesNotExecuteIsRefused) {
  Units u;
  std::vector<std::uint16_t> w(4, 0), x(2, 0), y(2, 0);
  EXPECT_THROW(u.logic.linear(OpKind::kLmHead, w.data(), x.data(), y.data(), 1, 2, 2), InternalError);
  EXPECT_TRUE(u.logic.op_counts().empty());
}

// 2 KV heads, GQA groups of 2, 13 cached tokens in blocks of 4 scattered over a pool of 6 blocks.
TEST(Devices, PagedDecodeAttentionEqualsContiguousAttention) {
  Units u;
  const std::int64_t hkv = 2, hq = 4, d = 8, bt = 4, blocks = 6, t = 13;
  const auto k_pool = random_half(static_cast<std::size_t>(blocks * bt * hkv * d), 7);
  const auto v_pool = random_half(k_pool.size(), 8);
  const auto q = random_half(static_cast<std::size_t>(hq * d), 9);
  const std::vector<std::int32_t> table{5, 0, 3, 1};
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  DecodeAttentionBatch b;
  b.q = q.data();
  b.rows = 1;
  b.q_heads = hq;
  b.block_tables = {&table};
  b.context_lens = {static_cast<std::int32_t>(t)};
  b.kv = {k_pool.data(), v_pool.data(), blocks, bt, hkv, d};
  b.scale = scale;
  // Golden datapath on contiguous K/V of each group: what the PIM devices must reproduce bit for bit.
  const std::vector<std::uint16_t> want = golden_attention(*u.golden, b, 0.0f);
  for (IDevice* dev : u.all()) {
    std::vector<std::uint16_t> out(q.size());
    b.out = out.data();
    dev->decode_attention(b);
    for (std::size_t i = 0; i < out.size(); ++i) {
      if (dev->unit() == compiler::Unit::kPim) {
        EXPECT_EQ(out[i], want[i]) << dev->name() << " element " << i;
      } else {
        EXPECT_NEAR(half(out[i]), half(want[i]), 4e-3) << "element " << i;
      }
    }
    EXPECT_EQ(dev->op_counts().at("attn_decode"), 1);
  }
}

// DecodeAttentionBatch::softcap (Gemma 2's attn_logit_softcapping) reaches the PIM devices' datapath as FP16
// bits: their results equal the golden datapath with the cap, bit for bit, and differ from the uncapped ones
// (the scores, up to ~+-10, exceed the cap). (The xPU applies the cap in its kernels: xpu_device.cpp.)
TEST(Devices, PimDecodeAttentionAppliesTheSoftcap) {
  Units u;
  const std::int64_t hkv = 2, hq = 4, d = 16, bt = 4, blocks = 4, t = 15;
  const auto k_pool = random_half(static_cast<std::size_t>(blocks * bt * hkv * d), 17);
  const auto v_pool = random_half(k_pool.size(), 18);
  const auto q = random_half(static_cast<std::size_t>(hq * d), 19);
  const std::vector<std::int32_t> table{2, 0, 3, 1};
  DecodeAttentionBatch b;
  b.q = q.data();
  b.rows = 1;
  b.q_heads = hq;
  b.block_tables = {&table};
  b.context_lens = {static_cast<std::int32_t>(t)};
  b.kv = {k_pool.data(), v_pool.data(), blocks, bt, hkv, d};
  b.scale = 1.0f;
  b.softcap = 2.5f;
  const std::vector<std::uint16_t> capped = golden_attention(*u.golden, b, b.softcap),
                                   plain = golden_attention(*u.golden, b, 0.0f);
  EXPECT_NE(capped, plain);
  for (IDevice* dev : {static_cast<IDevice*>(&u.logic), static_cast<IDevice*>(&u.bank)}) {
    std::vector<std::uint16_t> out(q.size());
    b.out = out.data();
    dev->decode_attention(b);
    EXPECT_EQ(out, capped) << dev->name();
  }
  b.softcap = -1.0f;  // not a cap
  std::vector<std::uint16_t> out(q.size());
  b.out = out.data();
  EXPECT_THROW(u.logic.decode_attention(b), Error);
}

}  // namespace
}  // namespace duplex::runtime::device
