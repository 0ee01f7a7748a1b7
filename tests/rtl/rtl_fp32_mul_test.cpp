// rtl/common/fp32_mul.sv, Verilated on its own, against its golden twin numerics::mul_fp32 (IEEE binary32
// multiplication, RNE): bit for bit over random operands of every class (normal, subnormal, zero, Inf, NaN),
// exponent pairs whose products land in the subnormal range, around the overflow threshold and at rounding
// ties.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <memory>
#include <random>

#include <verilated.h>

#include "Vfp32_mul.h"
#include "duplex/rtl/datapath_numerics.hpp"

namespace duplex::pim {
namespace {

class Fp32MulModel {
 public:
  Fp32MulModel() : model_(std::make_unique<Vfp32_mul>(&context_, "fp32_mul")) {}
  ~Fp32MulModel() { model_->final(); }
  Fp32MulModel(const Fp32MulModel&) = delete;
  Fp32MulModel& operator=(const Fp32MulModel&) = delete;
  std::uint32_t operator()(std::uint32_t a, std::uint32_t b) {
    model_->a = a;
    model_->b = b;
    model_->eval();
    return model_->product;
  }

 private:
  VerilatedContext context_;
  std::unique_ptr<Vfp32_mul> model_;
};

std::uint32_t golden(std::uint32_t a, std::uint32_t b) {
  return std::bit_cast<std::uint32_t>(numerics::mul_fp32(std::bit_cast<float>(a), std::bit_cast<float>(b)));
}

// A random operand of the given class: 0 normal, 1 subnormal, 2 zero, 3 Inf, 4 NaN, 5 any bits.
std::uint32_t operand(std::mt19937& rng, std::uint32_t kind) {
  auto r = [&rng] { return static_cast<std::uint32_t>(rng()); };
  const std::uint32_t sign = (r() & 1u) << 31;
  const std::uint32_t mant = r() & 0x7FFFFFu;
  switch (kind) {
    case 0:
      return sign | ((r() % 254 + 1) << 23) | mant;
    case 1:
      return sign | (mant == 0 ? 1u : mant);
    case 2:
      return sign;
    case 3:
      return sign | 0x7F800000u;
    case 4:
      return sign | 0x7F800000u | (mant == 0 ? 1u : mant);
    default:
      return static_cast<std::uint32_t>(r());
  }
}

TEST(RtlFp32Mul, BitExactWithGolden) {
  Fp32MulModel rtl;
  std::mt19937 rng(401);
  auto r = [&rng] { return static_cast<std::uint32_t>(rng()); };
  std::size_t mismatches = 0;
  std::array<std::size_t, 4> by_result{};  // zero, subnormal, normal, Inf / NaN
  auto check = [&](std::uint32_t a, std::uint32_t b) {
    const std::uint32_t want = golden(a, b);
    const std::uint32_t got = rtl(a, b);
    if (got != want && ++mismatches <= 10)
      ADD_FAILURE() << std::hex << a << " x " << b << ": golden " << want << " rtl " << got;
    const std::uint32_t field = (want >> 23) & 0xFFu;
    ++by_result[(want & 0x7FFFFFFFu) == 0 ? 0 : field == 0 ? 1 : field == 0xFF ? 3 : 2];
  };
  for (int i = 0; i < 300000; ++i) {  // every pair of operand classes
    check(operand(rng, r() % 6), operand(rng, r() % 6));
  }
  for (int i = 0; i < 300000; ++i) {
    // biased exponent fields summing to 95..130 (products around the subnormal range, result field
    // ea + eb - 127 in -32..3) or 375..385 (around the overflow threshold, field 248..258)
    const std::uint32_t sum = i % 2 == 0 ? r() % 36 + 95 : r() % 11 + 375;
    const std::uint32_t lo = sum > 254 ? sum - 254 : 1;
    const std::uint32_t hi = std::min<std::uint32_t>(sum - 1, 254);
    const std::uint32_t ea = lo + r() % (hi - lo + 1);
    const std::uint32_t a = ((r() & 1u) << 31) | (ea << 23) | (r() & 0x7FFFFFu);
    const std::uint32_t b = ((r() & 1u) << 31) | ((sum - ea) << 23) | (r() & 0x7FFFFFu);
    check(a, b);
  }
  for (int i = 0; i < 100000; ++i) {  // ties: significands with few bits, so products sit on half-ulps
    const std::uint32_t a = ((r() % 254 + 1) << 23) | ((r() & 0xFFFu) << 11);
    const std::uint32_t b = ((r() % 254 + 1) << 23) | ((r() & 0xFFFu) << 11);
    check(a, b);
  }
  EXPECT_EQ(mismatches, 0u);
  for (std::size_t k = 0; k < by_result.size(); ++k) EXPECT_GT(by_result[k], 1000u) << "result class " << k;
  EXPECT_EQ(rtl(0x3F800000u, 0x3F800000u), 0x3F800000u);
  EXPECT_EQ(rtl(0x7F800000u, 0x00000000u), numerics::kCanonicalNanFp32);
}

}  // namespace
}  // namespace duplex::pim
