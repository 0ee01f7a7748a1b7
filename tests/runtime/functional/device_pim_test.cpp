// PIM ops of functional emulation on the SystemC device through the C driver (DevicePimUnit): the same golden
// arithmetic as the datapath PIM unit, so tokens and logits must be identical bit for bit. The driver allows
// one open device per process at a time: every test destroys its unit before the next one opens.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/runtime/functional/device_pim_unit.hpp"
#include "duplex/runtime/functional/functional_executor.hpp"
#include "duplex/runtime/functional/run_session.hpp"

namespace duplex::runtime::functional {
namespace {

const std::vector<std::vector<std::int32_t>> kPrompts = {{1, 5, 9, 42}, {7, 300, 12, 999, 3, 64}, {512}, {2, 2, 2}};

FunctionalOptions device_options() {
  FunctionalOptions o;
  o.pim_unit_factory = make_device_pim_unit;
  return o;
}

FunctionalResult run_on(const char* model, const FunctionalOptions& o) {
  const ModelWeights w = random_weights(compiler::load_model(model), 3);
  const SystemSpec sys = load_system("duplex-pe");
  FunctionalExecutor exec(w, sys, o);
  return exec.run(kPrompts, 8);
}

std::int64_t pim_ops(const FunctionalResult& r) {
  const auto per_unit = r.ops_per_unit();
  const auto it = per_unit.find("pim");
  return it == per_unit.end() ? 0 : it->second;
}

// Logits compared by their bits: "identical" must not hide a -0.0 / +0.0 or NaN difference.
bool same_bits(const std::vector<std::vector<std::vector<float>>>& a,
               const std::vector<std::vector<std::vector<float>>>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t r = 0; r < a.size(); ++r) {
    if (a[r].size() != b[r].size()) return false;
    for (std::size_t p = 0; p < a[r].size(); ++p)
      if (a[r][p].size() != b[r][p].size() ||
          std::memcmp(a[r][p].data(), b[r][p].data(), a[r][p].size() * sizeof(float)) != 0)
        return false;
  }
  return true;
}

void expect_device_equals_datapath(const char* model) {
  const FunctionalResult datapath = run_on(model, FunctionalOptions{});
  const FunctionalResult device = run_on(model, device_options());
  EXPECT_GT(pim_ops(device), 0) << "no PIM op ran: the comparison would prove nothing";
  EXPECT_EQ(pim_ops(device), pim_ops(datapath));
  EXPECT_EQ(device.tokens, datapath.tokens);
  EXPECT_TRUE(same_bits(device.logits, datapath.logits));
  EXPECT_EQ(datapath.pim_unit, "LogicPimDevice (logic-pim datapath golden)");
  EXPECT_EQ(device.pim_unit.rfind("LogicPimDevice (", 0), 0u) << device.pim_unit;
  EXPECT_NE(device.pim_unit.find("SystemC device via driver"), std::string::npos) << device.pim_unit;
  EXPECT_EQ(device.pim_unit.find(": 0 commands"), std::string::npos) << device.pim_unit;
}

TEST(DevicePimUnit, TinyMoeOnDuplexPeEqualsDatapathBitForBit) { expect_device_equals_datapath("tiny-moe"); }

TEST(DevicePimUnit, TinyDenseOnDuplexPeEqualsDatapathBitForBit) { expect_device_equals_datapath("tiny-dense"); }

// Two-matrix FFNs on the device: the activation command in its ReLU (OPT) and GELU tanh (StarCoder2) modes,
// the fc1 bias uploaded as the second operand.
TEST(DevicePimUnit, TwoMatrixFfnsOnDuplexPeEqualDatapathBitForBit) {
  expect_device_equals_datapath("tiny-opt");
  expect_device_equals_datapath("tiny-starcoder2");
}

// Gated GELU (Gemma's GeGLU: the GELU-tanh-gate mode) and exact-GELU experts (GLaM-like: the GELU-erf mode
// with zeros as the addend) through the driver.
TEST(DevicePimUnit, GeluModesOnDuplexPeEqualDatapathBitForBit) {
  expect_device_equals_datapath("tiny-gemma");
  expect_device_equals_datapath("tiny-gelu-moe");
}

// MLA: the PIM's decode attention reads the latent as one KV head (K and V the same rows) through the
// driver's DMA as it does from host memory.
TEST(DevicePimUnit, MlaOnDuplexPeEqualsDatapathBitForBit) {
  expect_device_equals_datapath("tiny-deepseek-v3");
}

// Gemma 2: the device applies the model's attention soft-cap (the command's a6 word) as the datapath does
// (HfFamilies.Gemma2MatchesTheReference checks the datapath's against the plain reference).
TEST(DevicePimUnit, Gemma2SoftcapOnDuplexPeEqualsDatapathBitForBit) {
  expect_device_equals_datapath("tiny-gemma2");
}

// gpt-oss: attention sinks after q (kPimAttention's sink flag), GEMVs with biases (kPimGemv's bias flag) and
// the SwiGLU-OAI activation mode, through the driver as the datapath runs them.
TEST(DevicePimUnit, GptOssSinksBiasesAndActivationOnDuplexPeEqualDatapathBitForBit) {
  expect_device_equals_datapath("tiny-gpt-oss");
}

// Llama 4: decode attention within each row's chunk (the rows the device's DMA reads), experts on inputs
// scaled by their routing weights, through the driver as the datapath runs them.
TEST(DevicePimUnit, Llama4ChunkedAttentionOnDuplexPeEqualsDatapathBitForBit) {
  expect_device_equals_datapath("tiny-llama4");
}

TEST(DevicePimUnit, RunSessionPassesCheckThroughDevice) {
  for (const char* model : {"tiny-moe", "tiny-dense"}) {
    RunOptions o;
    o.model = model;
    o.system = "duplex-pe";
    o.prompts = {{1, 5, 9, 42}};
    o.max_new_tokens = 8;
    o.check = true;
    o.executor = device_options();
    const RunReport rep = run_functional(o);
    ASSERT_TRUE(rep.check.has_value());
    EXPECT_TRUE(rep.check->passed()) << model << ": max |logit err| " << rep.check->max_abs_logit_err;
    EXPECT_EQ(rep.result.tokens.at(0).size(), 8u);
  }
}

std::vector<std::uint16_t> random_fp16(std::size_t n, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<std::uint16_t> v(n);
  for (auto& e : v) e = float_to_half_bits(dist(gen));
  return v;
}

// A batch wider than the 1 MiB input buffer at this width is split into several GEMV commands; results still
// equal the datapath's. Weights passed twice come from the device cache.
TEST(DevicePimUnit, LinearSplitsTokensOverInputBuffer) {
  const std::size_t m = 65, n = 8, k = 8192;  // 1 MiB / (8192 x 2 B) = 64 tokens per command
  const auto w = random_fp16(n * k, 1), x = random_fp16(m * k, 2);
  std::vector<std::uint16_t> want(m * n), got(m * n, 0xFFFF), again(m * n, 0xFFFF);
  make_datapath_pim_unit("golden")->linear(w.data(), x.data(), want.data(), m, n, k);
  {
    const auto dev = make_device_pim_unit(load_system("duplex-pe"));
    dev->linear(w.data(), x.data(), got.data(), m, n, k);
    dev->linear(w.data(), x.data(), again.data(), m, n, k);
    // 1 weight upload (cached for the second call) + 2 calls x 2 chunks x (x upload, GEMV, y download).
    EXPECT_NE(dev->describe().find(": 13 commands"), std::string::npos) << dev->describe();
  }
  EXPECT_EQ(got, want);
  EXPECT_EQ(again, want);
}

// Decode attention through the driver (--pim-path device) against the golden datapath PIM unit, bit for bit,
// without and with a logit soft-cap (Gemma 2): the cap reaches the device's softmax unit (capped results
// differ from the uncapped ones: the scores, up to ~+-8, exceed the caps), and a cap that is not +0 or finite
// > 0 is an Error naming it.
TEST(DevicePimUnit, AttentionWithAndWithoutSoftcapEqualsDatapathBitForBit) {
  const std::size_t group = 4, t = 77, d = 64;
  const auto q = random_fp16(group * d, 11), k = random_fp16(t * d, 12), v = random_fp16(t * d, 13);
  const std::uint16_t scale = float_to_half_bits(1.0f);
  const auto golden = make_datapath_pim_unit("golden");
  const auto dev = make_device_pim_unit(load_system("duplex-pe"));
  std::vector<std::vector<std::uint16_t>> outs;
  for (const float cap : {0.0f, 50.0f, 2.0f, 0.75f}) {
    const std::uint16_t softcap = float_to_half_bits(cap);
    std::vector<std::uint16_t> want(group * d), got(group * d, 0xFFFF);
    golden->attention(q.data(), k.data(), v.data(), group, t, d, scale, softcap, want.data(), nullptr);
    dev->attention(q.data(), k.data(), v.data(), group, t, d, scale, softcap, got.data(), nullptr);
    EXPECT_EQ(got, want) << "cap " << cap;
    outs.push_back(got);
  }
  EXPECT_NE(outs[0], outs[2]);  // cap 2 applied
  EXPECT_NE(outs[0], outs[3]);  // cap 0.75 applied
  EXPECT_NE(outs[2], outs[3]);
  std::vector<std::uint16_t> out(group * d);
  try {
    dev->attention(q.data(), k.data(), v.data(), group, t, d, scale, 0xC000, out.data(), nullptr);  // -2
    FAIL() << "a negative soft-cap was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("softcap_fp16 0xc000"), std::string::npos) << e.what();
  }
  EXPECT_THROW(
      golden->attention(q.data(), k.data(), v.data(), group, t, d, scale, 0x7C00, out.data(), nullptr),
      Error);
}

TEST(DevicePimUnit, DeviceRejectionIsAnErrorAndTheDeviceStaysUsable) {
  const auto dev = make_device_pim_unit(load_system("duplex-pe"));
  const std::size_t group = 8, t = 8193, d = 32;  // scores 8 x 8193 x 2 B overflow the 128 KiB softmax buffer
  const auto q = random_fp16(group * d, 3), kv = random_fp16(t * d, 4);
  std::vector<std::uint16_t> out(group * d);
  try {
    dev->attention(q.data(), kv.data(), kv.data(), group, t, d, float_to_half_bits(0.125f), 0, out.data(),
                   nullptr);
    FAIL() << "an attention larger than the softmax buffer was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("DUPLEX_ERROR_DEVICE_BUFFER_OVERFLOW"), std::string::npos) << e.what();
  }
  const auto w = random_fp16(16 * 64, 5), x = random_fp16(2 * 64, 6);
  std::vector<std::uint16_t> want(2 * 16), got(2 * 16);
  make_datapath_pim_unit("golden")->linear(w.data(), x.data(), want.data(), 2, 16, 64);
  dev->linear(w.data(), x.data(), got.data(), 2, 16, 64);
  EXPECT_EQ(got, want);
}

TEST(DevicePimUnit, BadSystemsAndOptionsAreErrors) {
  EXPECT_THROW(make_device_pim_unit(load_system("gpu")), Error);       // no PIM
  EXPECT_THROW(make_device_pim_unit(load_system("bank-pim")), Error);  // PIM, but not Logic-PIM
  const ModelWeights w = random_weights(compiler::load_model("tiny-dense"), 3);
  EXPECT_THROW(FunctionalExecutor(w, load_system("gpu"), device_options()), Error);
  FunctionalOptions rtl = device_options();
  rtl.datapath = "rtl";
  EXPECT_THROW(FunctionalExecutor(w, load_system("duplex-pe"), rtl), Error);
  {
    const auto first = make_device_pim_unit(load_system("duplex-pe"));
    EXPECT_THROW(make_device_pim_unit(load_system("duplex-pe")), Error);  // one device at a time
  }
  EXPECT_NO_THROW(make_device_pim_unit(load_system("duplex-pe")));  // closed with its unit: reopens
}

}  // namespace
}  // namespace duplex::runtime::functional
