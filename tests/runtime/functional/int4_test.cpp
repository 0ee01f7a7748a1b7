// The 4-bit group codec (int4.hpp) against AutoAWQ's, GPTQ's and compressed-tensors' packings: the field
// order of a word, GPTQ's zero - 1, W4A16's implicit zero, act-order groups, power-of-two scales, exact round
// trips, FP16 rounding of arbitrary scales, and the errors.
#include "duplex/runtime/functional/int4.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "checkpoint_files.hpp"
#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"

namespace duplex::runtime::functional {
namespace {

using compiler::DType;
using testing::error_of;

// An 8 x 256 matrix (two groups per row) with fields f(r, c), zero z(r, g) and scale 2^-(g + 1).
template <typename F, typename Z>
Int4Matrix matrix(F f, Z z) {
  Int4Matrix m;
  m.rows = 8;
  m.cols = 256;
  for (std::int64_t r = 0; r < m.rows; ++r)
    for (std::int64_t c = 0; c < m.cols; ++c) m.q.push_back(static_cast<std::uint8_t>(f(r, c)));
  for (std::int64_t r = 0; r < m.rows; ++r)
    for (std::int64_t g = 0; g < m.groups(); ++g) {
      m.zeros.push_back(static_cast<std::uint8_t>(z(r, g)));
      m.scales.push_back(std::ldexp(1.0f, -static_cast<int>(g) - 1));
    }
  for (std::int64_t c = 0; c < m.cols; ++c) m.group.push_back(static_cast<std::int32_t>(c / 128));
  return m;
}

// The checkpoint's parts of p as the reader hands them over (scales as floats).
Int4Matrix unpacked(DType format, const Int4Matrix& m, const Int4Packed& p) {
  std::vector<float> scales;
  for (std::uint16_t h : p.scales) scales.push_back(half_bits_to_float(h));
  return unpack_int4(format, m.rows, m.cols,
                     {p.qweight.data(), p.qzeros.empty() ? nullptr : p.qzeros.data(), scales.data(),
                      p.g_idx.empty() ? nullptr : p.g_idx.data()},
                     "w", m.group_size);
}

// AutoAWQ (GEMM): qweight [in][out / 8], a word's field i holding output AWQ_ORDER[i] = 0, 2, 4, 6, 1, 3, 5,
// 7 of its eight; qzeros [in / 128][out / 8] likewise; scales [in / 128][out].
TEST(Int4Codec, AwqPacksOutputsInItsFieldOrder) {
  const Int4Matrix m =
      matrix([](auto r, auto c) { return (r + c) % 16; }, [](auto r, auto g) { return r + g; });
  const Int4Packed p = pack_int4(DType::kInt4Awq, m);
  EXPECT_EQ(int4_qweight_shape(DType::kInt4Awq, 8, 256), (std::array<std::int64_t, 2>{256, 1}));
  ASSERT_EQ(p.qweight.size(), 256u);
  EXPECT_EQ(static_cast<std::uint32_t>(p.qweight[0]), 0x75316420u);  // input 0: outputs 0..7 hold 0..7
  EXPECT_EQ(static_cast<std::uint32_t>(p.qweight[1]), 0x86427531u);  // input 1: outputs hold 1..8
  ASSERT_EQ(p.qzeros.size(), 2u);
  EXPECT_EQ(static_cast<std::uint32_t>(p.qzeros[1]), 0x86427531u);  // group 1: zeros 1..8
  ASSERT_EQ(p.scales.size(), 16u);
  EXPECT_EQ(half_bits_to_float(p.scales[8 + 3]), 0.25f);  // [group 1][output 3]
  EXPECT_TRUE(p.g_idx.empty());
  const Int4Matrix back = unpacked(DType::kInt4Awq, m, p);
  EXPECT_EQ(back.q, m.q);
  EXPECT_EQ(back.zeros, m.zeros);
  EXPECT_EQ(back.scales, m.scales);
  EXPECT_EQ(back.group, m.group);
}

// GPTQ: qweight [in / 8][out], a word holding inputs 8i..8i + 7 of one output in order; qzeros as AWQ's but
// in order and holding zero - 1 (AutoGPTQ reads field + 1); g_idx [in].
TEST(Int4Codec, GptqPacksInputsInOrderAndStoresZeroMinusOne) {
  const Int4Matrix m =
      matrix([](auto r, auto c) { return (r + c) % 16; }, [](auto r, auto g) { return r + g + 1; });
  const Int4Packed p = pack_int4(DType::kInt4Gptq, m);
  EXPECT_EQ(int4_qweight_shape(DType::kInt4Gptq, 8, 256), (std::array<std::int64_t, 2>{32, 8}));
  ASSERT_EQ(p.qweight.size(), 256u);
  EXPECT_EQ(static_cast<std::uint32_t>(p.qweight[0]), 0x76543210u);      // output 0, inputs 0..7
  EXPECT_EQ(static_cast<std::uint32_t>(p.qweight[8 + 2]), 0x10fedcbau);  // output 2, inputs 8..15
  EXPECT_EQ(static_cast<std::uint32_t>(p.qzeros[0]), 0x76543210u);       // group 0: zeros 1..8, stored 0..7
  EXPECT_EQ(p.g_idx, m.group);
  const Int4Matrix back = unpacked(DType::kInt4Gptq, m, p);
  EXPECT_EQ(back.q, m.q);
  EXPECT_EQ(back.zeros, m.zeros);
  // A stored field of 15 reads as zero 16, as AutoGPTQ's field + 1 does.
  Int4Packed high = p;
  high.qzeros[0] = static_cast<std::int32_t>(0xffffffffu);
  EXPECT_EQ(unpacked(DType::kInt4Gptq, m, high).zeros[0], 16);
}

// Element (r, c) is (q - zero) x scale of the group g_idx[c] names: an act-order release's permuted groups.
TEST(Int4Codec, DequantizesEachInputInItsGroup) {
  Int4Matrix m = matrix([](auto r, auto c) { return (3 * r + c) % 16; }, [](auto, auto g) { return 8 - g; });
  for (std::int64_t c = 0; c < m.cols; ++c)
    m.group[static_cast<std::size_t>(c)] = static_cast<std::int32_t>(c % 2);
  const std::vector<std::uint16_t> w = dequantize_int4(m, "w");
  for (std::int64_t r = 0; r < m.rows; ++r)
    for (std::int64_t c = 0; c < m.cols; ++c) {
      const std::int64_t g = c % 2;
      const float expected =
          static_cast<float>((3 * r + c) % 16 - (8 - g)) * std::ldexp(1.0f, -static_cast<int>(g) - 1);
      EXPECT_EQ(half_bits_to_float(w[static_cast<std::size_t>(r * m.cols + c)]), expected) << r << " " << c;
    }
  // The GPTQ form keeps the permuted groups.
  EXPECT_EQ(unpacked(DType::kInt4Gptq, m, pack_int4(DType::kInt4Gptq, m)).group, m.group);
}

// compressed-tensors' pack-quantized (W4A16): weight_packed [out][in / 8], a word holding inputs 8i..8i + 7
// of one output in order, each the signed value + 8 (zero 8, stored nowhere); weight_scale [out][in / 128].
TEST(Int4Codec, W4a16PacksInputsInOrderAlongEachRow) {
  const Int4Matrix m = matrix([](auto r, auto c) { return (r + c) % 16; }, [](auto, auto) { return 8; });
  const Int4Packed p = pack_int4(DType::kInt4Pack, m);
  EXPECT_EQ(int4_qweight_shape(DType::kInt4Pack, 8, 256), (std::array<std::int64_t, 2>{8, 32}));
  EXPECT_EQ(int4_scales_shape(DType::kInt4Pack, 8, 256), (std::array<std::int64_t, 2>{8, 2}));
  ASSERT_EQ(p.qweight.size(), 256u);
  EXPECT_EQ(static_cast<std::uint32_t>(p.qweight[0]), 0x76543210u);           // output 0, inputs 0..7
  EXPECT_EQ(static_cast<std::uint32_t>(p.qweight[2 * 32 + 1]), 0x10fedcbau);  // output 2, inputs 8..15
  EXPECT_TRUE(p.qzeros.empty());
  EXPECT_EQ(half_bits_to_float(p.scales[3 * 2 + 1]), 0.25f);  // [output 3][group 1]
  const Int4Matrix back = unpacked(DType::kInt4Pack, m, p);
  EXPECT_EQ(back.q, m.q);
  EXPECT_EQ(back.zeros, m.zeros);
  EXPECT_EQ(back.scales, m.scales);
  // A field of 0 is -8 x scale: the whole signed range.
  EXPECT_EQ(half_bits_to_float(dequantize_int4(back, "w")[16]), -8 * 0.5f);  // [0][16]: field 0, group 0
}

// An arbitrary FP16 scale: the product rounded once to the nearest FP16, ties to even.
TEST(Int4Codec, RoundsProductsOnceToFp16) {
  Int4Matrix m = matrix([](auto, auto) { return 15; }, [](auto, auto) { return 0; });
  m.scales.assign(m.scales.size(), 1.0009765625f);  // 1 + 2^-10
  // 15 x (1 + 2^-10) = 15.0146484375: between FP16 neighbours 15.0078125 and 15.015625, nearer the latter.
  EXPECT_EQ(half_bits_to_float(dequantize_int4(m, "w")[0]), 15.015625f);
  m.scales.assign(m.scales.size(), 65504.0f);
  EXPECT_NE(error_of([&] { dequantize_int4(m, "model.layers.0.q_proj"); })
                .find("model.layers.0.q_proj: element [0][0] is 982560 (15 x scale 65504), outside FP16's "
                      "finite range"),
            std::string::npos);
  m.scales[3] = -1.0f;
  EXPECT_NE(error_of([&] {
              dequantize_int4(m, "w");
            }).find("w: the scale of output 1, group 1 is -1; expected a finite number >= 0"),
            std::string::npos);
}

TEST(Int4Codec, GIdxOutsideTheGroupsIsAnError) {
  const Int4Matrix m = matrix([](auto, auto) { return 1; }, [](auto, auto) { return 8; });
  Int4Packed p = pack_int4(DType::kInt4Gptq, m);
  p.g_idx[200] = 2;
  const std::vector<float> scales(p.scales.size(), 1.0f);
  EXPECT_NE(error_of([&] {
              unpack_int4(DType::kInt4Gptq, 8, 256,
                          {p.qweight.data(), p.qzeros.data(), scales.data(), p.g_idx.data()},
                          "f.safetensors: model.layers.0.mlp.up_proj");
            }).find("f.safetensors: model.layers.0.mlp.up_proj: g_idx[200] is 2; expected a group 0..1"),
            std::string::npos);
}

// Rounding onto the grid: zero 8 and the least power-of-two scale with 8 x 2^k >= -min and 7 x 2^k >= max;
// the rounded values quantize and come back bit for bit, through both packings.
TEST(Int4Codec, RoundedValuesComeBackExactly) {
  const std::int64_t rows = 16, cols = 384;
  std::vector<std::uint16_t> v(static_cast<std::size_t>(rows * cols));
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = float_to_half_bits(
        static_cast<float>(std::sin(0.91 * static_cast<double>(i)) * static_cast<double>(1 + i % 5)));
  for (std::int64_t c = 0; c < 128; ++c)
    v[static_cast<std::size_t>(cols + c)] = float_to_half_bits(c == 5 ? -0.0f : 0.0f);
  std::vector<std::uint16_t> rounded = v;
  round_to_int4_groups(rounded.data(), rows, cols);
  EXPECT_NE(rounded, v);
  EXPECT_EQ(rounded[static_cast<std::size_t>(cols + 5)], 0u);  // -0 is stored as 8 and comes back +0
  const Int4Matrix q = quantize_int4(rounded.data(), rows, cols, "w");
  EXPECT_EQ(q.zeros, std::vector<std::uint16_t>(static_cast<std::size_t>(rows * 3), 8));
  EXPECT_EQ(q.scales[3], 1.0f);  // row 1, group 0: zeros
  for (DType format : {DType::kInt4Awq, DType::kInt4Gptq, DType::kInt4Pack})
    EXPECT_EQ(dequantize_int4(unpacked(format, q, pack_int4(format, q)), "w"), rounded);
  // The scale rule at its edges: 7 and -8 fit 2^0; 7.5 needs 2^1 (and rounds to 8 there: field 12).
  std::vector<std::uint16_t> edge(128, float_to_half_bits(0.0f));
  edge[0] = float_to_half_bits(7.0f);
  edge[1] = float_to_half_bits(-8.0f);
  std::vector<std::uint16_t> e = edge;
  round_to_int4_groups(e.data(), 1, 128);
  EXPECT_EQ(e, edge);
  edge[0] = float_to_half_bits(7.5f);
  round_to_int4_groups(edge.data(), 1, 128);
  EXPECT_EQ(half_bits_to_float(edge[0]), 8.0f);
  EXPECT_EQ(half_bits_to_float(edge[1]), -8.0f);
  // Off the grid: a clear error naming the element.
  std::vector<std::uint16_t> off = rounded;
  off[7] = float_to_half_bits(half_bits_to_float(off[7]) + 1.0f / 1024);
  EXPECT_NE(error_of([&] {
              quantize_int4(off.data(), rows, cols, "model x: model.layers.0.mlp.up_proj.weight");
            }).find("model x: model.layers.0.mlp.up_proj.weight: element [0][7] = "),
            std::string::npos);
}

// Groups of 32 and 64 (ModelSpec::quant_group): each group's own scale over its inputs, the tensors' shapes
// in whole groups (scales [in / G, out], W4A16's [out, in / G]), and every value back through each packing.
TEST(Int4Codec, SmallerGroupsHaveTheirOwnScales) {
  const std::int64_t rows = 8, cols = 256;
  std::vector<std::uint16_t> v(static_cast<std::size_t>(rows * cols));
  for (std::size_t i = 0; i < v.size(); ++i)  // each group of 32 a different magnitude
    v[i] = float_to_half_bits(static_cast<float>(std::cos(1.3 * static_cast<double>(i)) *
                                                 std::ldexp(1.0, static_cast<int>((i % cols) / 32))));
  for (const std::int64_t group : {32, 64}) {
    std::vector<std::uint16_t> rounded = v;
    round_to_int4_groups(rounded.data(), rows, cols, group);
    const Int4Matrix q = quantize_int4(rounded.data(), rows, cols, "w", group);
    EXPECT_EQ(q.group_size, group);
    EXPECT_EQ(q.groups(), cols / group);
    EXPECT_EQ(q.group[static_cast<std::size_t>(group)], 1);
    EXPECT_EQ(int4_scales_shape(DType::kInt4Gptq, rows, cols, group),
              (std::array<std::int64_t, 2>{cols / group, rows}));
    EXPECT_EQ(int4_scales_shape(DType::kInt4Pack, rows, cols, group),
              (std::array<std::int64_t, 2>{rows, cols / group}));
    EXPECT_EQ(int4_qzeros_shape(DType::kInt4Gptq, rows, cols, group),
              (std::array<std::int64_t, 2>{cols / group, 1}));
    // Row 0: groups of growing magnitude get growing power-of-two scales (with 32: one per doubling).
    EXPECT_LT(q.scales[0], q.scales[static_cast<std::size_t>(q.groups() - 1)]);
    if (group == 32) {
      EXPECT_EQ(q.scales[1], 2 * q.scales[0]);
    }
    for (DType format : {DType::kInt4Awq, DType::kInt4Gptq, DType::kInt4Pack}) {
      const Int4Matrix back = unpacked(format, q, pack_int4(format, q));
      EXPECT_EQ(back.group_size, group);
      EXPECT_EQ(dequantize_int4(back, "w"), rounded) << group;
    }
  }
}

// GPTQ's 8-bit layout (int8_gptq): four 8-bit fields a word, qweight [in / 4][out], qzeros [in / 128][out /
// 4] holding zero - 1 (127 for the zero 128 duplex writes); values on the 8-bit grid (128 x 2^k >= -min, 127
// x 2^k
// >= max) come back bit for bit; the 4-bit grid is coarser.
TEST(Int4Codec, EightBitGptqFields) {
  const std::int64_t rows = 8, cols = 256;
  std::vector<std::uint16_t> v(static_cast<std::size_t>(rows * cols));
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = float_to_half_bits(static_cast<float>(std::sin(0.37 * static_cast<double>(i)) * 3.0));
  std::vector<std::uint16_t> eight = v, four = v;
  round_to_int4_groups(eight.data(), rows, cols, 128, 8);
  round_to_int4_groups(four.data(), rows, cols, 128, 4);
  double err8 = 0, err4 = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    err8 = std::max(err8,
                    static_cast<double>(std::fabs(half_bits_to_float(eight[i]) - half_bits_to_float(v[i]))));
    err4 = std::max(err4,
                    static_cast<double>(std::fabs(half_bits_to_float(four[i]) - half_bits_to_float(v[i]))));
  }
  EXPECT_LT(err8, err4 / 8);
  const Int4Matrix q = quantize_int4(eight.data(), rows, cols, "w", 128, 8);
  EXPECT_EQ(q.bits, 8);
  EXPECT_EQ(q.zeros[0], 128);
  EXPECT_EQ(q.scales[0], 0.03125f);  // 3 x max|sin| within (127 x 2^-6, 127 x 2^-5]
  const Int4Packed p = pack_int4(DType::kInt8Gptq, q);
  EXPECT_EQ(int4_qweight_shape(DType::kInt8Gptq, rows, cols), (std::array<std::int64_t, 2>{64, 8}));
  EXPECT_EQ(int4_qzeros_shape(DType::kInt8Gptq, rows, cols), (std::array<std::int64_t, 2>{2, 2}));
  EXPECT_EQ(static_cast<std::uint32_t>(p.qzeros[0]), 0x7f7f7f7fu);
  // Word [0][0]: inputs 0..3 of output 0, the first in the low byte.
  for (int f = 0; f < 4; ++f)
    EXPECT_EQ((static_cast<std::uint32_t>(p.qweight[0]) >> (8 * f)) & 0xffu, q.q[static_cast<std::size_t>(f)])
        << f;
  EXPECT_EQ(dequantize_int4(unpacked(DType::kInt8Gptq, q, p), "w"), eight);
}

// W8A16 (int8_pack): W4A16's layout with 8-bit fields, four a word, each the signed value + 128.
TEST(Int4Codec, EightBitPackFields) {
  const std::int64_t rows = 8, cols = 256;
  std::vector<std::uint16_t> v(static_cast<std::size_t>(rows * cols));
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = float_to_half_bits(static_cast<float>(std::cos(0.29 * static_cast<double>(i)) * 2.0));
  round_to_int4_groups(v.data(), rows, cols, 128, 8);
  const Int4Matrix q = quantize_int4(v.data(), rows, cols, "w", 128, 8);
  const Int4Packed p = pack_int4(DType::kInt8Pack, q);
  EXPECT_EQ(int4_qweight_shape(DType::kInt8Pack, rows, cols), (std::array<std::int64_t, 2>{8, 64}));
  EXPECT_EQ(int4_scales_shape(DType::kInt8Pack, rows, cols), (std::array<std::int64_t, 2>{8, 2}));
  EXPECT_TRUE(p.qzeros.empty());
  // Word [1][0]: inputs 0..3 of output 1, the first in the low byte.
  for (int f = 0; f < 4; ++f)
    EXPECT_EQ((static_cast<std::uint32_t>(p.qweight[64]) >> (8 * f)) & 0xffu,
              q.q[static_cast<std::size_t>(cols + f)])
        << f;
  EXPECT_EQ(dequantize_int4(unpacked(DType::kInt8Pack, q, p), "w"), v);
}

}  // namespace
}  // namespace duplex::runtime::functional
