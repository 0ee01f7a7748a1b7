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

// Fields of `bits` (4 or 8) bits: 32 / bits a word, the zero point of symmetric weights half their range.
struct Fields {
  int bits = 4;
  int per_word() const { return 32 / bits; }
  unsigned mid() const { return 1u << (bits - 1); }
  unsigned max() const { return (1u << bits) - 1; }
};
Fields fields_of(compiler::DType format) {
  return {compiler::grouped_int_bits(format)};
}

unsigned field(std::int32_t word, int f, Fields w) {
  return (static_cast<std::uint32_t>(word) >> (w.bits * f)) & w.max();
}
void set_field(std::int32_t& word, int f, unsigned value, Fields w) {
  DUPLEX_ASSERT(value <= w.max(), "a value of the field's width");
  word = static_cast<std::int32_t>(static_cast<std::uint32_t>(word) | (value << (w.bits * f)));
}

// Rows of whole groups; packed, also outputs of whole words (the zero points pack them).
void check_shape(std::int64_t rows, std::int64_t cols, std::int64_t group_size, bool packed, Fields w) {
  DUPLEX_ASSERT(group_size >= 1, "a group of no inputs");
  DUPLEX_ASSERT(rows > 0 && cols > 0 && cols % group_size == 0 && (!packed || rows % w.per_word() == 0),
                "grouped integer matrices of whole groups and words");
}

// The least k >= -24 with mid x 2^k >= -lo and (mid - 1) x 2^k >= hi (lo <= 0 <= hi, not both 0).
int scale_exponent(double lo, double hi, Fields w) {
  const double mid = w.mid();
  int k = -24;
  while (std::ldexp(mid, k) < -lo || std::ldexp(mid - 1, k) < hi) ++k;
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
                   std::int64_t c1, Fields w) {
  double lo = 0, hi = 0;
  for (std::int64_t c = c0; c < c1; ++c) {
    const double v = half_bits_to_float(values[r * cols + c]);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  return lo == 0 && hi == 0 ? 0 : scale_exponent(lo, hi, w);
}

// A rows x cols matrix of zero fields and scales, every zero point mid (8, or 128 for 8 bits), groups
// c / group_size in order.
Int4Matrix zero_mid_matrix(std::int64_t rows, std::int64_t cols, std::int64_t group_size, Fields w) {
  Int4Matrix m;
  m.rows = rows;
  m.cols = cols;
  m.group_size = group_size;
  m.bits = w.bits;
  m.q.resize(static_cast<std::size_t>(rows * cols));
  m.zeros.assign(static_cast<std::size_t>(rows * m.groups()), static_cast<std::uint16_t>(w.mid()));
  m.scales.resize(m.zeros.size());
  for (std::int64_t c = 0; c < cols; ++c) m.group.push_back(static_cast<std::int32_t>(c / group_size));
  return m;
}

// mid + the nearest integer of v / 2^k (ties to even), clamped to the field's range.
unsigned nearest_field(double v, int k, Fields w) {
  const double n = std::nearbyint(std::ldexp(v, -k));  // the default rounding mode: to nearest, ties to even
  return static_cast<unsigned>(std::clamp(n + w.mid(), 0.0, static_cast<double>(w.max())));
}

}  // namespace

bool gptq_layout(compiler::DType format) {
  return format == compiler::DType::kInt4Gptq || format == compiler::DType::kInt8Gptq;
}

bool pack_layout(compiler::DType format) {
  return format == compiler::DType::kInt4Pack || format == compiler::DType::kInt8Pack;
}

std::array<std::int64_t, 2> int4_qweight_shape(compiler::DType format, std::int64_t rows, std::int64_t cols) {
  switch (format) {
    case compiler::DType::kInt4Awq:
      return {cols, rows / kPerWord};
    case compiler::DType::kInt4Gptq:
    case compiler::DType::kInt8Gptq:
      return {cols / fields_of(format).per_word(), rows};
    case compiler::DType::kInt4Pack:
    case compiler::DType::kInt8Pack:
      return {rows, cols / fields_of(format).per_word()};
    default:
      DUPLEX_ASSERT(false, "not a grouped integer matrix format");
  }
}
std::array<std::int64_t, 2> int4_qzeros_shape(compiler::DType format, std::int64_t rows, std::int64_t cols,
                                              std::int64_t group_size) {
  return {cols / group_size, rows / fields_of(format).per_word()};
}
std::array<std::int64_t, 2> int4_scales_shape(compiler::DType format, std::int64_t rows, std::int64_t cols,
                                              std::int64_t group_size) {
  if (pack_layout(format)) return {rows, cols / group_size};
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
        per_word_(fields_of(format).per_word()),
        rows_(rows),
        groups_(cols / group_size),
        qweight_cols_(int4_qweight_shape(format, rows, cols)[1]),
        qzeros_cols_(int4_qzeros_shape(format, rows, cols, group_size)[1]) {}
  // Element (r, c)'s field in qweight.
  FieldAt weight(std::int64_t r, std::int64_t c) const {
    switch (format_) {
      case compiler::DType::kInt4Awq:  // [in][out / 8]: outputs in AWQ's field order
        return {c * qweight_cols_ + r / kPerWord, kAwqField[r % kPerWord]};
      case compiler::DType::kInt4Gptq:  // [in / (32 / bits)][out]: inputs in order
      case compiler::DType::kInt8Gptq:
        return {(c / per_word_) * qweight_cols_ + r, static_cast<int>(c % per_word_)};
      default:  // int4_pack, int8_pack: [out][in / (32 / bits)], inputs in order
        return {r * qweight_cols_ + c / per_word_, static_cast<int>(c % per_word_)};
    }
  }
  // Row r's zero point of group g in qzeros (AWQ, GPTQ: [in / group_size][out / (32 / bits)]).
  FieldAt zero(std::int64_t r, std::int64_t g) const {
    return {g * qzeros_cols_ + r / per_word_,
            format_ == compiler::DType::kInt4Awq ? kAwqField[r % kPerWord] : static_cast<int>(r % per_word_)};
  }
  // The index of row r's scale of group g in scales.
  std::int64_t scale(std::int64_t r, std::int64_t g) const {
    return pack_layout(format_) ? r * groups_ + g : g * rows_ + r;
  }

 private:
  compiler::DType format_;
  std::int64_t per_word_, rows_, groups_, qweight_cols_, qzeros_cols_;
};

}  // namespace

Int4Packed pack_int4(compiler::DType format, const Int4Matrix& m) {
  const Fields w = fields_of(format);
  DUPLEX_ASSERT(m.bits == w.bits, "a matrix of the format's width");
  check_shape(m.rows, m.cols, m.group_size, true, w);
  const std::array<std::int64_t, 2> qw = int4_qweight_shape(format, m.rows, m.cols);
  const std::array<std::int64_t, 2> qz = int4_qzeros_shape(format, m.rows, m.cols, m.group_size);
  const bool zeros = !pack_layout(format);
  const Layout layout(format, m.rows, m.cols, m.group_size);
  Int4Packed p;
  p.qweight.assign(static_cast<std::size_t>(qw[0] * qw[1]), 0);
  if (zeros) p.qzeros.assign(static_cast<std::size_t>(qz[0] * qz[1]), 0);
  p.scales.resize(static_cast<std::size_t>(m.groups() * m.rows));
  for (std::int64_t r = 0; r < m.rows; ++r)
    for (std::int64_t c = 0; c < m.cols; ++c) {
      const FieldAt at = layout.weight(r, c);
      set_field(p.qweight[static_cast<std::size_t>(at.word)], at.field,
                m.q[static_cast<std::size_t>(r * m.cols + c)], w);
    }
  for (std::int64_t r = 0; r < m.rows; ++r)
    for (std::int64_t g = 0; g < m.groups(); ++g) {
      const std::size_t i = static_cast<std::size_t>(r * m.groups() + g);
      const unsigned zero = m.zeros[i];
      if (zeros) {
        const bool gptq = gptq_layout(format);  // stores zero - 1
        DUPLEX_ASSERT(gptq ? zero >= 1 && zero <= w.max() + 1 : zero <= w.max(),
                      "a zero point the format stores");
        const FieldAt at = layout.zero(r, g);
        set_field(p.qzeros[static_cast<std::size_t>(at.word)], at.field, gptq ? zero - 1 : zero, w);
      } else {
        DUPLEX_ASSERT(zero == w.mid(), "int4_pack's zero point is 8, int8_pack's 128");
      }
      const std::uint16_t h = float_to_half_bits(m.scales[i]);
      DUPLEX_ASSERT(half_bits_to_float(h) == m.scales[i], "a scale on FP16's grid");
      p.scales[static_cast<std::size_t>(layout.scale(r, g))] = h;
    }
  if (gptq_layout(format)) p.g_idx.assign(m.group.begin(), m.group.end());
  return p;
}

Int4Matrix unpack_int4(compiler::DType format, std::int64_t rows, std::int64_t cols, const Int4Parts& parts,
                       const std::string& what, std::int64_t group_size) {
  const Fields w = fields_of(format);
  const bool gptq = gptq_layout(format);
  check_shape(rows, cols, group_size, true, w);
  Int4Matrix m = zero_mid_matrix(rows, cols, group_size, w);
  const Layout layout(format, rows, cols, group_size);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      const FieldAt at = layout.weight(r, c);
      m.q[static_cast<std::size_t>(r * cols + c)] =
          static_cast<std::uint8_t>(field(parts.qweight[at.word], at.field, w));
    }
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t g = 0; g < m.groups(); ++g) {
      const std::size_t i = static_cast<std::size_t>(r * m.groups() + g);
      if (!pack_layout(format)) {
        const FieldAt at = layout.zero(r, g);
        const unsigned f = field(parts.qzeros[at.word], at.field, w);
        m.zeros[i] = static_cast<std::uint16_t>(gptq ? f + 1 : f);
      }
      m.scales[i] = parts.scales[layout.scale(r, g)];
    }
  if (!gptq) return m;  // groups in order
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
      // n (-16..15, or -256..255 for 8 bits) times an FP16 / BF16 scale has at most 20 significant bits:
      // exact in float, rounded once here.
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
                         const std::string& what, std::int64_t group_size, int bits) {
  const Fields w{bits};
  check_shape(rows, cols, group_size, false, w);
  Int4Matrix m = zero_mid_matrix(rows, cols, group_size, w);
  for_each_group(
      rows, cols, group_size, [&](std::int64_t r, std::int64_t g, std::int64_t c0, std::int64_t c1) {
        const int k = group_exponent(values, cols, r, c0, c1, w);
        m.scales[static_cast<std::size_t>(r * m.groups() + g)] = std::ldexp(1.0f, k);
        for (std::int64_t c = c0; c < c1; ++c) {
          const double v = half_bits_to_float(values[r * cols + c]);
          const unsigned q = nearest_field(v, k, w);
          if (std::ldexp(static_cast<double>(q) - w.mid(), k) != v)  // -0 is stored as mid: it comes back +0
            throw Error(fmt::format(
                "{}: element [{}][{}] = {} is not on the {}-bit grid of its group ((q - {}) x 2^{}); "
                "{}-bit checkpoints are written with zero {} and power-of-two scales, which random "
                "weights of a {}-bit model are on",
                what, r, c, v, bits, w.mid(), k, bits, w.mid(), bits));
          m.q[static_cast<std::size_t>(r * cols + c)] = static_cast<std::uint8_t>(q);
        }
      });
  return m;
}

void round_to_int4_groups(std::uint16_t* values, std::int64_t rows, std::int64_t cols,
                          std::int64_t group_size, int bits) {
  const Fields w{bits};
  check_shape(rows, cols, group_size, false, w);
  for_each_group(rows, cols, group_size, [&](std::int64_t r, std::int64_t, std::int64_t c0, std::int64_t c1) {
    const int k = group_exponent(values, cols, r, c0, c1, w);
    for (std::int64_t c = c0; c < c1; ++c) {
      std::uint16_t& h = values[r * cols + c];
      const unsigned q = nearest_field(half_bits_to_float(h), k, w);
      h = float_to_half_bits(std::ldexp(static_cast<float>(q) - static_cast<float>(w.mid()), k));  // +0: mid
    }
  });
}

}  // namespace duplex::runtime::functional
