#include "duplex/runtime/functional/bnb4.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"

namespace duplex::runtime::functional {
namespace {

constexpr int kMapEntries = 256;    // nested map entries (8-bit codes)
constexpr int kMinExponent = -126;  // the least normal float: the nested map's smallest power of two

// NF4's index for x: the nearest code (ties to the lower index, as an argmin over the table).
std::uint8_t nearest_nf4(double x) {
  const std::array<float, 16>& code = nf4_code();
  std::uint8_t best = 0;
  for (std::uint8_t j = 1; j < 16; ++j)
    if (std::abs(x - code[j]) < std::abs(x - code[best])) best = j;
  return best;
}

// FP4's index for x as bitsandbytes' dQuantizeFP4 takes it: the sign bit (8) for x < 0, the magnitude's field
// by a binary search over its pivots (the midpoints of neighbouring magnitudes, as its float literals), a
// value on a pivot taking the smaller magnitude. Unlike dQuantizeFP4, -0 takes the sign bit too (-0 is code
// 8's value), so a matrix read from a release is written back as it was.
std::uint8_t fp4_index(double value) {
  const float x = static_cast<float>(value);
  const std::uint8_t sign = std::signbit(x) ? 0b1000 : 0;
  const float a = std::abs(x);
  std::uint8_t field = 0;
  if (a > 0.29166667f)
    field = a > 0.583333f ? (a > 0.8333333f ? 0b011 : 0b010) : (a > 0.4166667f ? 0b101 : 0b100);
  else if (a > 0.0859375f)
    field = a > 0.20833333f ? 0b111 : 0b110;
  else
    field = a > 0.00260417f ? 0b001 : 0b000;
  return static_cast<std::uint8_t>(sign | field);
}

// The index of the code that bitsandbytes' quantizer takes for x (bnb4.hpp's quantize_bnb4): FP4's or NF4's.
std::uint8_t code_index(bool fp4, double x) {
  return fp4 ? fp4_index(x) : nearest_nf4(x);
}

// The least e >= kMinExponent with 2^e >= m (m >= 0).
int ceil_exponent(double m) {
  int e = kMinExponent;
  while (std::ldexp(1.0, e) < m) ++e;
  return e;
}

// Calls f(b, begin, end) for each block of `blocksize` of n elements.
template <typename F>
void for_each_block(std::int64_t n, std::int64_t blocksize, F&& f) {
  for (std::int64_t b = 0, begin = 0; begin < n; ++b, begin += blocksize)
    f(b, begin, std::min(n, begin + blocksize));
}

// The largest magnitude of values[begin, end) and the first element holding it.
std::pair<double, std::int64_t> largest(const std::uint16_t* values, std::int64_t begin, std::int64_t end) {
  double m = -1;
  std::int64_t at = begin;
  for (std::int64_t i = begin; i < end; ++i) {
    const double v = std::abs(static_cast<double>(half_bits_to_float(values[i])));
    if (v > m) m = v, at = i;
  }
  return {m, at};
}

// The block exponents of double quantization's grid (quantize_bnb4: nf4_dq, bnb_fp4_dq): each block's least
// power of two over its largest magnitude, a block of zeros taking its group's largest exponent (0 in a group
// of zeros), none below its group's largest less 126 (the nested map's reach).
std::vector<int> nested_exponents(const std::uint16_t* values, std::int64_t n, const std::string& what) {
  std::vector<int> e;
  std::vector<bool> zero;
  for_each_block(n, kBnb4Block, [&](std::int64_t, std::int64_t begin, std::int64_t end) {
    const double m = largest(values, begin, end).first;
    if (!std::isfinite(m))
      throw Error(fmt::format("{}: a non-finite value in elements {}..{}", what, begin, end - 1));
    e.push_back(ceil_exponent(m));
    zero.push_back(m == 0);
    if (e.back() > 15)
      throw Error(
          fmt::format("{}: elements {}..{} reach {}: beyond double quantization's grid of FP16 powers of two",
                      what, begin, end - 1, m));
  });
  for (std::size_t g = 0; g < e.size(); g += kBnb4NestedBlock) {
    const std::size_t end = std::min(e.size(), g + kBnb4NestedBlock);
    int top = kMinExponent;
    bool any = false;
    for (std::size_t b = g; b < end; ++b)
      if (!zero[b]) top = std::max(top, e[b]), any = true;
    if (!any) top = 0;
    for (std::size_t b = g; b < end; ++b) e[b] = zero[b] ? top : std::max(e[b], top - (-kMinExponent));
  }
  return e;
}

}  // namespace

const std::array<float, 16>& nf4_code() {
  static const std::array<float, 16> code = {-1.0f,
                                             -0.6961928009986877f,
                                             -0.5250730514526367f,
                                             -0.39491748809814453f,
                                             -0.28444138169288635f,
                                             -0.18477343022823334f,
                                             -0.09105003625154495f,
                                             0.0f,
                                             0.07958029955625534f,
                                             0.16093020141124725f,
                                             0.24611230194568634f,
                                             0.33791524171829224f,
                                             0.44070982933044434f,
                                             0.5626170039176941f,
                                             0.7229568362236023f,
                                             1.0f};
  return code;
}

const std::array<float, 16>& fp4_code() {
  // get_4bit_type("fp4")'s list divided by its largest magnitude in float, as torch's div_ computes it.
  static const std::array<float, 16> code = [] {
    const float fields[8] = {0.0f, 0.0625f, 8.0f, 12.0f, 4.0f, 6.0f, 2.0f, 3.0f};
    std::array<float, 16> c{};
    for (std::size_t j = 0; j < 8; ++j) {
      c[j] = fields[j] / 12.0f;
      c[j + 8] = -fields[j] / 12.0f;
    }
    return c;
  }();
  return code;
}

const std::array<float, 16>& bnb4_code(compiler::DType format) {
  return compiler::bnb_quant_type(format) == "nf4" ? nf4_code() : fp4_code();
}

std::vector<std::uint8_t> unpack_bnb4(const std::uint8_t* weight, std::int64_t n) {
  std::vector<std::uint8_t> q(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    q[static_cast<std::size_t>(i)] = i % 2 == 0 ? weight[i / 2] >> 4 : weight[i / 2] & 0xF;
  return q;
}

std::vector<std::uint8_t> pack_bnb4(const std::vector<std::uint8_t>& q) {
  std::vector<std::uint8_t> bytes((q.size() + 1) / 2, 0);
  for (std::size_t i = 0; i < q.size(); ++i) {
    DUPLEX_ASSERT(q[i] < 16, "a 4-bit index");
    bytes[i / 2] = static_cast<std::uint8_t>(bytes[i / 2] | (i % 2 == 0 ? q[i] << 4 : q[i]));
  }
  return bytes;
}

std::vector<float> nested_absmax_values(const std::vector<std::uint8_t>& codes,
                                        const std::vector<float>& nested_absmax,
                                        const std::vector<float>& nested_map, float offset) {
  DUPLEX_ASSERT(nested_map.size() == kMapEntries, "a nested map of 256 values");
  DUPLEX_ASSERT(nested_absmax.size() * kBnb4NestedBlock >= codes.size(), "a nested scale per 256 blocks");
  std::vector<float> absmax(codes.size());
  for (std::size_t b = 0; b < codes.size(); ++b)
    absmax[b] = nested_map[codes[b]] * nested_absmax[b / kBnb4NestedBlock] + offset;
  return absmax;
}

std::vector<std::uint16_t> dequantize_bnb4(const Bnb4Matrix& m, const std::string& what) {
  const std::int64_t n = m.rows * m.cols;
  DUPLEX_ASSERT(
      static_cast<std::int64_t>(m.q.size()) == n && static_cast<std::int64_t>(m.absmax.size()) == m.blocks(),
      "a 4-bit matrix's indices and block scales");
  const std::array<float, 16>& code = m.code;
  std::vector<std::uint16_t> out(static_cast<std::size_t>(n));
  for_each_block(n, m.blocksize, [&](std::int64_t b, std::int64_t begin, std::int64_t end) {
    const float absmax = m.absmax[static_cast<std::size_t>(b)];
    if (!std::isfinite(absmax))
      throw Error(fmt::format("{}: block {} has absmax {}; expected a finite value", what, b, absmax));
    for (std::int64_t i = begin; i < end; ++i) {
      const float v = code[m.q[static_cast<std::size_t>(i)]] * absmax;
      if (std::abs(v) > 65504.0f)
        throw Error(
            fmt::format("{}: element ({}, {}) = {}: beyond FP16's range", what, i / m.cols, i % m.cols, v));
      out[static_cast<std::size_t>(i)] = float_to_half_bits(v);
    }
  });
  return out;
}

namespace {

// values' point of duplex's grid of `format` (quantize_bnb4): each block's absmax (its largest magnitude;
// with double quantization the power of two of nested_exponents) and each element's index of value / absmax
// (code_index).
Bnb4Matrix nearest_on_grid(const std::uint16_t* values, std::int64_t rows, std::int64_t cols,
                           compiler::DType format, const std::string& what) {
  Bnb4Matrix m;
  m.rows = rows;
  m.cols = cols;
  m.code = bnb4_code(format);
  const std::int64_t n = rows * cols;
  m.q.resize(static_cast<std::size_t>(n));
  const bool nested = compiler::bnb_nested(format), fp4 = compiler::bnb_quant_type(format) == "fp4";
  const std::vector<int> exponents = nested ? nested_exponents(values, n, what) : std::vector<int>();
  for_each_block(n, kBnb4Block, [&](std::int64_t b, std::int64_t begin, std::int64_t end) {
    const double top = largest(values, begin, end).first;
    if (!std::isfinite(top))
      throw Error(fmt::format("{}: a non-finite value in elements {}..{}", what, begin, end - 1));
    const float absmax =
        nested ? std::ldexp(1.0f, exponents[static_cast<std::size_t>(b)]) : static_cast<float>(top);
    m.absmax.push_back(absmax);
    for (std::int64_t i = begin; i < end; ++i)
      m.q[static_cast<std::size_t>(i)] =
          code_index(fp4, absmax == 0 ? std::copysign(0.0, half_bits_to_float(values[i]))
                                      : half_bits_to_float(values[i]) / absmax);
  });
  return m;
}

}  // namespace

Bnb4Matrix quantize_bnb4(const std::uint16_t* values, std::int64_t rows, std::int64_t cols,
                         compiler::DType format, const std::string& what) {
  const Bnb4Matrix m = nearest_on_grid(values, rows, cols, format, what);
  const std::vector<std::uint16_t> back = dequantize_bnb4(m, what);
  for (std::int64_t i = 0; i < rows * cols; ++i)
    if (back[static_cast<std::size_t>(i)] != values[i] &&
        !(half_bits_to_float(values[i]) == 0 && half_bits_to_float(back[static_cast<std::size_t>(i)]) == 0))
      throw Error(fmt::format(
          "{}: element ({}, {}) = {} is not on the {} grid (it would read back as {}); expected weights "
          "rounded to it",
          what, i / cols, i % cols, half_bits_to_float(values[i]), compiler::dtype_name(format),
          half_bits_to_float(back[static_cast<std::size_t>(i)])));
  return m;
}

void round_to_bnb4(std::uint16_t* values, std::int64_t rows, std::int64_t cols, compiler::DType format) {
  const std::int64_t n = rows * cols;
  const std::string what = fmt::format("rounding to {}", compiler::dtype_name(format));
  // With double quantization each block's largest takes code +-1 (its exponents stay those it had).
  if (compiler::bnb_nested(format)) {
    const std::vector<int> exponents = nested_exponents(values, n, what);
    for_each_block(n, kBnb4Block, [&](std::int64_t b, std::int64_t begin, std::int64_t end) {
      const auto [top, at] = largest(values, begin, end);
      if (top > 0) {
        const float absmax = std::ldexp(1.0f, exponents[static_cast<std::size_t>(b)]);
        values[at] = float_to_half_bits(std::signbit(half_bits_to_float(values[at])) ? -absmax : absmax);
      }
    });
  }
  const std::vector<std::uint16_t> back =
      dequantize_bnb4(nearest_on_grid(values, rows, cols, format, what), what);
  std::copy(back.begin(), back.end(), values);
}

Bnb4Packed pack_bnb4_matrix(const Bnb4Matrix& m, compiler::DType format, const std::string& dtype) {
  Bnb4Packed p;
  p.weight = pack_bnb4(m.q);
  p.quant_map = m.code;
  nlohmann::ordered_json state = {{"quant_type", compiler::bnb_quant_type(format)},
                                  {"blocksize", m.blocksize},
                                  {"dtype", dtype},
                                  {"shape", {m.rows, m.cols}}};
  if (!compiler::bnb_nested(format)) {
    p.absmax = m.absmax;
  } else {
    // Powers of two: absmax 2^e under nested_absmax 2^K is map entry 255 - (K - e) (quantize_bnb4's grid).
    p.nested_map.resize(kMapEntries);
    for (int j = 0; j < kMapEntries; ++j)
      p.nested_map[static_cast<std::size_t>(j)] = j - 255 >= kMinExponent ? std::ldexp(1.0f, j - 255) : 0.0f;
    for (std::size_t g = 0; g < m.absmax.size(); g += kBnb4NestedBlock) {
      const std::size_t end = std::min(m.absmax.size(), g + kBnb4NestedBlock);
      const float top = *std::max_element(m.absmax.begin() + static_cast<std::ptrdiff_t>(g),
                                          m.absmax.begin() + static_cast<std::ptrdiff_t>(end));
      p.nested_absmax.push_back(top);
      for (std::size_t b = g; b < end; ++b) {
        int e = 0, k = 0;
        DUPLEX_ASSERT(std::frexp(m.absmax[b], &e) == 0.5f && std::frexp(top, &k) == 0.5f && k - e <= 126,
                      "double-quantized block scales are powers of two within the nested map's reach");
        p.absmax_codes.push_back(static_cast<std::uint8_t>(255 - (k - e)));
      }
    }
    state["nested_blocksize"] = kBnb4NestedBlock;
    state["nested_dtype"] = "float32";
    state["nested_offset"] = p.offset;
  }
  p.quant_state = state.dump();
  return p;
}

}  // namespace duplex::runtime::functional
