#include "duplex/runtime/functional/int4.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"

namespace duplex::runtime::functional {
namespace {

constexpr int kPerWord = 8;  // 4-bit fields per I32 word
// AutoAWQ's GEMM packing: output 8j + i of a word sits in field kAwqField[i] (AWQ_ORDER [0, 2, 4, 6, 1, 3, 5,
// 7] names the output each field holds; this is its inverse).
constexpr int kAwqField[kPerWord] = {0, 4, 1, 5, 2, 6, 3, 7};

std::uint8_t field(std::int32_t word, int f) {
  return static_cast<std::uint8_t>((static_cast<std::uint32_t>(word) >> (4 * f)) & 0xfu);
}
void set_field(std::int32_t& word, int f, unsigned value) {
  DUPLEX_ASSERT(value < 16, "a 4-bit field");
  word = static_cast<std::int32_t>(static_cast<std::uint32_t>(word) | (value << (4 * f)));
}

// Rows of whole groups; packed, also columns of whole words.
void check_shape(std::int64_t rows, std::int64_t cols, std::int64_t group_size, bool packed) {
  DUPLEX_ASSERT(compiler::int4_group_modelled(group_size), "an int4 group size not modelled");
  DUPLEX_ASSERT(rows > 0 && cols > 0 && cols % group_size == 0 && (!packed || rows % kPerWord == 0),
                "int4 matrices of whole groups and words");
}

// The least k >= -24 with 8 x 2^k >= -lo and 7 x 2^k >= hi (lo <= 0 <= hi, not both 0).
int scale_exponent(double lo, double hi) {
  int k = -24;
  while (std::ldexp(8.0, k) < -lo || std::ldexp(7.0, k) < hi) ++k;
  return k;
}

// Calls f(r, g, c0, c1) for each group of `group_size` inputs of each row.
template <typename F>
void for_each_group(std::int64_t rows, std::int64_t cols, std::int64_t group_size, F&& f) {
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t g = 0; g * group_size < cols; ++g) f(r, g, g * group_size, (g + 1) * group_size);
}

// The exponent of the power-of-two scale of values[r][c0..c1) (scale_exponent; 0 for zeros).
int group_exponent(const std::uint16_t* values, std::int64_t cols, std::int64_t r, std::int64_t c0,
                   std::int64_t c1) {
  double lo = 0, hi = 0;
  for (std::int64_t c = c0; c < c1; ++c) {
    const double v = half_bits_to_float(values[r * cols + c]);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  return lo == 0 && hi == 0 ? 0 : scale_exponent(lo, hi);
}

// A rows x cols matrix of zero fields and scales, every zero point 8, groups c / group_size in order.
Int4Matrix zero_eight_matrix(std::int64_t rows, std::int64_t cols, std::int64_t group_size) {
  Int4Matrix m;
  m.rows = rows;
  m.cols = cols;
  m.group_size = group_size;
  m.q.resize(static_cast<std::size_t>(rows * cols));
  m.zeros.assign(static_cast<std::size_t>(rows * m.groups()), 8);
  m.scales.resize(m.zeros.size());
  for (std::int64_t c = 0; c < cols; ++c) m.group.push_back(static_cast<std::int32_t>(c / group_size));
  return m;
}

// 8 + the nearest integer of v / 2^k (ties to even), clamped to 0..15.
unsigned nearest_field(double v, int k) {
  const double n = std::nearbyint(std::ldexp(v, -k));  // the default rounding mode: to nearest, ties to even
  return static_cast<unsigned>(std::clamp(n + 8.0, 0.0, 15.0));
}

}  // namespace

std::array<std::int64_t, 2> int4_qweight_shape(compiler::DType format, std::int64_t rows, std::int64_t cols) {
  switch (format) {
    case compiler::DType::kInt4Awq:
      return {cols, rows / kPerWord};
    case compiler::DType::kInt4Gptq:
      return {cols / kPerWord, rows};
    case compiler::DType::kInt4Pack:
      return {rows, cols / kPerWord};
    default:
      DUPLEX_ASSERT(false, "not an int4 matrix format");
  }
}
std::array<std::int64_t, 2> int4_qzeros_shape(std::int64_t rows, std::int64_t cols, std::int64_t group_size) {
  return {cols / group_size, rows / kPerWord};
}
std::array<std::int64_t, 2> int4_scales_shape(compiler::DType format, std::int64_t rows, std::int64_t cols,
                                              std::int64_t group_size) {
  if (format == compiler::DType::kInt4Pack) return {rows, cols / group_size};
  return {cols / group_size, rows};
}

namespace {

// Where a rows x cols matrix's fields, zero points and scales lie in a format's checkpoint tensors (the
// tensors' row lengths computed once per matrix, not per element).
struct FieldAt {
  std::int64_t word;
  int field;
};
class Layout {
 public:
  Layout(compiler::DType format, std::int64_t rows, std::int64_t cols, std::int64_t group_size)
      : format_(format),
        rows_(rows),
        groups_(cols / group_size),
        qweight_cols_(int4_qweight_shape(format, rows, cols)[1]),
        qzeros_cols_(int4_qzeros_shape(rows, cols, group_size)[1]) {}
  // Element (r, c)'s field in qweight.
  FieldAt weight(std::int64_t r, std::int64_t c) const {
    switch (format_) {
      case compiler::DType::kInt4Awq:  // [in][out / 8]: outputs in AWQ's field order
        return {c * qweight_cols_ + r / kPerWord, kAwqField[r % kPerWord]};
      case compiler::DType::kInt4Gptq:  // [in / 8][out]: inputs in order
        return {(c / kPerWord) * qweight_cols_ + r, static_cast<int>(c % kPerWord)};
      default:  // int4_pack: [out][in / 8], inputs in order
        return {r * qweight_cols_ + c / kPerWord, static_cast<int>(c % kPerWord)};
    }
  }
  // Row r's zero point of group g in qzeros (AWQ, GPTQ: [in / group_size][out / 8]).
  FieldAt zero(std::int64_t r, std::int64_t g) const {
    return {g * qzeros_cols_ + r / kPerWord,
            format_ == compiler::DType::kInt4Awq ? kAwqField[r % kPerWord] : static_cast<int>(r % kPerWord)};
  }
  // The index of row r's scale of group g in scales.
  std::int64_t scale(std::int64_t r, std::int64_t g) const {
    return format_ == compiler::DType::kInt4Pack ? r * groups_ + g : g * rows_ + r;
  }

 private:
  compiler::DType format_;
  std::int64_t rows_, groups_, qweight_cols_, qzeros_cols_;
};

}  // namespace

Int4Packed pack_int4(compiler::DType format, const Int4Matrix& m) {
  check_shape(m.rows, m.cols, m.group_size, true);
  const std::array<std::int64_t, 2> qw = int4_qweight_shape(format, m.rows, m.cols);
  const std::array<std::int64_t, 2> qz = int4_qzeros_shape(m.rows, m.cols, m.group_size);
  const bool zeros = format != compiler::DType::kInt4Pack;
  const Layout layout(format, m.rows, m.cols, m.group_size);
  Int4Packed p;
  p.qweight.assign(static_cast<std::size_t>(qw[0] * qw[1]), 0);
  if (zeros) p.qzeros.assign(static_cast<std::size_t>(qz[0] * qz[1]), 0);
  p.scales.resize(static_cast<std::size_t>(m.groups() * m.rows));
  for (std::int64_t r = 0; r < m.rows; ++r)
    for (std::int64_t c = 0; c < m.cols; ++c) {
      const FieldAt at = layout.weight(r, c);
      set_field(p.qweight[static_cast<std::size_t>(at.word)], at.field,
                m.q[static_cast<std::size_t>(r * m.cols + c)]);
    }
  for (std::int64_t r = 0; r < m.rows; ++r)
    for (std::int64_t g = 0; g < m.groups(); ++g) {
      const std::size_t i = static_cast<std::size_t>(r * m.groups() + g);
      const unsigned zero = m.zeros[i];
      if (zeros) {
        const bool gptq = format == compiler::DType::kInt4Gptq;  // stores zero - 1
        DUPLEX_ASSERT(gptq ? zero >= 1 && zero <= 16 : zero < 16, "a zero point the format stores");
        const FieldAt at = layout.zero(r, g);
        set_field(p.qzeros[static_cast<std::size_t>(at.word)], at.field, gptq ? zero - 1 : zero);
      } else {
        DUPLEX_ASSERT(zero == 8, "int4_pack's zero point is 8");
      }
      const std::uint16_t h = float_to_half_bits(m.scales[i]);
      DUPLEX_ASSERT(half_bits_to_float(h) == m.scales[i], "a scale on FP16's grid");
      p.scales[static_cast<std::size_t>(layout.scale(r, g))] = h;
    }
  if (format == compiler::DType::kInt4Gptq) p.g_idx.assign(m.group.begin(), m.group.end());
  return p;
}

Int4Matrix unpack_int4(compiler::DType format, std::int64_t rows, std::int64_t cols, const Int4Parts& parts,
                       const std::string& what, std::int64_t group_size) {
  check_shape(rows, cols, group_size, true);
  Int4Matrix m = zero_eight_matrix(rows, cols, group_size);
  const Layout layout(format, rows, cols, group_size);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      const FieldAt at = layout.weight(r, c);
      m.q[static_cast<std::size_t>(r * cols + c)] = field(parts.qweight[at.word], at.field);
    }
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t g = 0; g < m.groups(); ++g) {
      const std::size_t i = static_cast<std::size_t>(r * m.groups() + g);
      if (format != compiler::DType::kInt4Pack) {
        const FieldAt at = layout.zero(r, g);
        const std::uint8_t f = field(parts.qzeros[at.word], at.field);
        m.zeros[i] = static_cast<std::uint8_t>(format == compiler::DType::kInt4Gptq ? f + 1 : f);
      }
      m.scales[i] = parts.scales[layout.scale(r, g)];
    }
  if (format != compiler::DType::kInt4Gptq) return m;  // groups in order
  for (std::int64_t c = 0; c < cols; ++c) {
    const std::int32_t g = parts.g_idx[c];
    if (g < 0 || g >= m.groups())
      throw Error(fmt::format("{}: g_idx[{}] is {}; expected a group 0..{} ({} inputs, groups of {})", what,
                              c, g, m.groups() - 1, cols, group_size));
    m.group[static_cast<std::size_t>(c)] = g;
  }
  return m;
}

std::vector<std::uint16_t> dequantize_int4(const Int4Matrix& m, const std::string& what) {
  for (std::int64_t r = 0; r < m.rows; ++r)
    for (std::int64_t g = 0; g < m.groups(); ++g) {
      const float s = m.scales[static_cast<std::size_t>(r * m.groups() + g)];
      if (!std::isfinite(s) || s < 0)
        throw Error(fmt::format("{}: the scale of output {}, group {} is {}; expected a finite number >= 0",
                                what, r, g, s));
    }
  std::vector<std::uint16_t> out(static_cast<std::size_t>(m.rows * m.cols));
  for (std::int64_t r = 0; r < m.rows; ++r)
    for (std::int64_t c = 0; c < m.cols; ++c) {
      const std::size_t gi = static_cast<std::size_t>(r * m.groups() + m.group[static_cast<std::size_t>(c)]);
      const int n = m.q[static_cast<std::size_t>(r * m.cols + c)] - m.zeros[gi];
      // n (-16..15) times an FP16 / BF16 scale has at most 16 significant bits: exact in float, rounded once
      // here.
      const float v = static_cast<float>(n) * m.scales[gi];
      const std::uint16_t h = float_to_half_bits(v == 0 ? 0.0f : v);
      if (!std::isfinite(half_bits_to_float(h)))
        throw Error(
            fmt::format("{}: element [{}][{}] is {} ({} x scale {}), outside FP16's finite range (+-65504); "
                        "functional emulation computes in FP16",
                        what, r, c, v, n, m.scales[gi]));
      out[static_cast<std::size_t>(r * m.cols + c)] = h;
    }
  return out;
}

Int4Matrix quantize_int4(const std::uint16_t* values, std::int64_t rows, std::int64_t cols,
                         const std::string& what, std::int64_t group_size) {
  check_shape(rows, cols, group_size, false);
  Int4Matrix m = zero_eight_matrix(rows, cols, group_size);
  for_each_group(
      rows, cols, group_size, [&](std::int64_t r, std::int64_t g, std::int64_t c0, std::int64_t c1) {
        const int k = group_exponent(values, cols, r, c0, c1);
        m.scales[static_cast<std::size_t>(r * m.groups() + g)] = std::ldexp(1.0f, k);
        for (std::int64_t c = c0; c < c1; ++c) {
          const double v = half_bits_to_float(values[r * cols + c]);
          const unsigned q = nearest_field(v, k);
          if (std::ldexp(static_cast<double>(q) - 8, k) != v)  // -0 is stored as 8: it comes back +0
            throw Error(fmt::format(
                "{}: element [{}][{}] = {} is not on the 4-bit grid of its group ((q - 8) x 2^{}); "
                "4-bit checkpoints are written with zero 8 and power-of-two scales, which random "
                "weights of a 4-bit model are on",
                what, r, c, v, k));
          m.q[static_cast<std::size_t>(r * cols + c)] = static_cast<std::uint8_t>(q);
        }
      });
  return m;
}

void round_to_int4_groups(std::uint16_t* values, std::int64_t rows, std::int64_t cols,
                          std::int64_t group_size) {
  check_shape(rows, cols, group_size, false);
  for_each_group(rows, cols, group_size, [&](std::int64_t r, std::int64_t, std::int64_t c0, std::int64_t c1) {
    const int k = group_exponent(values, cols, r, c0, c1);
    for (std::int64_t c = c0; c < c1; ++c) {
      std::uint16_t& h = values[r * cols + c];
      const unsigned q = nearest_field(half_bits_to_float(h), k);
      h = float_to_half_bits(std::ldexp(static_cast<float>(q) - 8.0f, k));  // +0 for q == 8
    }
  });
}

}  // namespace duplex::runtime::functional
