// The register-direct decode kernel's fragment scheme (kernels/src/cuda/cuda_decode_regs_layout.hpp), checked
// on the CPU: one warp's loads, MMAs, 8 x 8 transposes and half pairings, emulated lane by lane with the
// layout's maps and the PTX ISA's fragment layouts for mma.m16n8k16 / movmatrix, reproduce attention over a
// sequence of 16-token tiles (exact arithmetic in double: this checks where every element goes, not rounding;
// the kernel itself runs in the CUDA conformance suite on a GPU).
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "cuda_decode_regs_layout.hpp"

namespace duplex::kernels::cuda::regs_layout {
namespace {

// A 32-bit register holding two 16-bit elements: lo is the lower index.
struct Reg {
  double lo = 0, hi = 0;
};
using Row = std::vector<double>;  // kD elements
constexpr int kLanes = 32;
constexpr double kNegInf = -std::numeric_limits<double>::infinity();

int group_of(int lane) {
  return lane / 4;
}
int thread_of(int lane) {
  return lane % 4;
}

// Word w of 16-byte chunk c of a row.
Reg word(const Row& row, int c, int w) {
  return {row[8 * c + 2 * w], row[8 * c + 2 * w + 1]};
}

// mma.m16n8k16 (row.col): C [16 x 8] += A [16 x 16] . B [16 x 8] in the fragment layouts (PTX ISA): A regs
// {(g, 2t..), (g + 8, 2t..), (g, 2t + 8..), (g + 8, 2t + 8..)}, B regs {(k 2t.., n g), (k 2t + 8.., n g)},
// C {(g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1)}.
void mma(std::array<std::array<double, 4>, kLanes>& c, const std::array<std::array<Reg, 4>, kLanes>& a,
         const std::array<std::array<Reg, 2>, kLanes>& b) {
  double am[16][16] = {}, bm[16][8] = {}, cm[16][8] = {};
  for (int lane = 0; lane < kLanes; ++lane) {
    const int g = group_of(lane), t = thread_of(lane);
    const auto& ar = a[lane];
    for (int r = 0; r < 4; ++r) {
      const int row = g + 8 * (r & 1), col = 2 * t + 8 * (r >> 1);
      am[row][col] = ar[r].lo;
      am[row][col + 1] = ar[r].hi;
    }
    for (int r = 0; r < 2; ++r) {
      bm[2 * t + 8 * r][g] = b[lane][r].lo;
      bm[2 * t + 8 * r + 1][g] = b[lane][r].hi;
    }
    for (int e = 0; e < 4; ++e) cm[g + 8 * (e >> 1)][2 * t + (e & 1)] = c[lane][e];
  }
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j)
      for (int k = 0; k < 16; ++k) cm[i][j] += am[i][k] * bm[k][j];
  for (int lane = 0; lane < kLanes; ++lane) {
    const int g = group_of(lane), t = thread_of(lane);
    for (int e = 0; e < 4; ++e) c[lane][e] = cm[g + 8 * (e >> 1)][2 * t + (e & 1)];
  }
}

// movmatrix.m8n8.trans.b16: lane (g, t) holds row g, columns 2t, 2t + 1 before and after.
std::array<Reg, kLanes> transpose8x8(const std::array<Reg, kLanes>& v) {
  double m[8][8];
  for (int lane = 0; lane < kLanes; ++lane) {
    m[group_of(lane)][2 * thread_of(lane)] = v[lane].lo;
    m[group_of(lane)][2 * thread_of(lane) + 1] = v[lane].hi;
  }
  std::array<Reg, kLanes> out;
  for (int lane = 0; lane < kLanes; ++lane)
    out[lane] = {m[2 * thread_of(lane)][group_of(lane)], m[2 * thread_of(lane) + 1][group_of(lane)]};
  return out;
}

// One warp of the kernel over `tokens` tokens of K / V rows for `heads` query heads (q rows), tile by tile;
// returns the normalised attention output [heads][kD] (base-e softmax of q . k x scale).
std::vector<Row> emulate_warp(const std::vector<Row>& q, const std::vector<Row>& k, const std::vector<Row>& v,
                              double scale) {
  const int heads = static_cast<int>(q.size()), tokens = static_cast<int>(k.size());
  const Row zero(kD, 0.0);
  std::array<std::array<std::array<double, 4>, kLanes>, 8> o{};  // O^T per m-tile
  std::array<std::array<double, 2>, kLanes> m, l{};
  for (auto& mm : m) mm = {kNegInf, kNegInf};
  for (int base = 0; base < tokens; base += kTileTokens) {
    auto k_row = [&](int token) -> const Row& { return base + token < tokens ? k[base + token] : zero; };
    auto v_row = [&](int token) -> const Row& { return base + token < tokens ? v[base + token] : zero; };
    // S^T = K . Q^T over 8 k16 steps; lane registers from the layout's maps.
    std::array<std::array<double, 4>, kLanes> sc{};
    for (int ks = 0; ks < 8; ++ks) {
      std::array<std::array<Reg, 4>, kLanes> a;
      std::array<std::array<Reg, 2>, kLanes> b;
      for (int lane = 0; lane < kLanes; ++lane) {
        const int g = group_of(lane), t = thread_of(lane), i = ks / 2, w = 2 * (ks % 2);
        const Row& q_row = g < heads ? q[g] : zero;
        a[lane] = {word(k_row(k_token(g, 0)), k_chunk(i, t), w),
                                             word(k_row(k_token(g, 1)), k_chunk(i, t), w),
                                             word(k_row(k_token(g, 0)), k_chunk(i, t), w + 1),
                                             word(k_row(k_token(g, 1)), k_chunk(i, t), w + 1)};
        b[lane] = {word(q_row, k_chunk(i, t), w), word(q_row, k_chunk(i, t), w + 1)};
      }
      mma(sc, a, b);
    }
    // Online softmax per head (heads 2t, 2t + 1 of each lane; the max over the 8 lanes of a t).
    std::array<std::array<double, 4>, kLanes> p{};
    std::array<std::array<double, 2>, kLanes> alpha{};
    for (int lane = 0; lane < kLanes; ++lane) {
      const int g = group_of(lane);
      for (int e = 0; e < 4; ++e) {
        const bool valid = base + k_token(g, e >> 1) < tokens;
        double& s = sc[lane][e];
        s = valid ? s * scale : kNegInf;
      }
    }
    for (int lane = 0; lane < kLanes; ++lane)
      for (int r = 0; r < 2; ++r) {
        double mx = kNegInf;
        for (int other = thread_of(lane); other < kLanes; other += 4)
          mx = std::max({mx, sc[other][r],
                         sc[other][r + 2]});
        double& mr = m[lane][r];
        const double m_new = std::max(mr, mx);
        alpha[lane][r] = mr == kNegInf ? 0.0 : std::exp(mr - m_new);
        mr = m_new;
        l[lane][r] *= alpha[lane][r];
      }
    for (int lane = 0; lane < kLanes; ++lane)
      for (int e = 0; e < 4; ++e) {
        const double s = sc[lane][e];
        const double pe = s == kNegInf ? 0.0 : std::exp(s - m[lane][e & 1]);
        p[lane][e] = pe;
        l[lane][e & 1] += pe;
      }
    for (auto& tile : o)
      for (int lane = 0; lane < kLanes; ++lane)
        for (int e = 0; e < 4; ++e)
          tile[lane][e] *= alpha[lane][e & 1];
    // P as the B operand: (token, head) pairs transposed per 8 tokens.
    std::array<std::array<Reg, kLanes>, 2> pb;
    for (int r = 0; r < 2; ++r) {
      std::array<Reg, kLanes> packed;
      for (int lane = 0; lane < kLanes; ++lane)
        packed[lane] = {p[lane][2 * r],
                                                  p[lane][2 * r + 1]};
      pb[r] = transpose8x8(packed);
    }
    // O^T += V^T . P^T: m-tile mt pairs word mt % 4 of chunk v_chunk(g, mt / 4) of the four tokens' rows.
    for (int mt = 0; mt < 8; ++mt) {
      std::array<std::array<Reg, 4>, kLanes> a;
      std::array<std::array<Reg, 2>, kLanes> b;
      for (int lane = 0; lane < kLanes; ++lane) {
        const int g = group_of(lane), t = thread_of(lane), c = v_chunk(g, mt / 4), w = mt % 4;
        const Reg v0 = word(v_row(v_token(t, 0)), c, w), v1 = word(v_row(v_token(t, 1)), c, w);
        const Reg v8 = word(v_row(v_token(t, 2)), c, w), v9 = word(v_row(v_token(t, 3)), c, w);
        a[lane] = {Reg{v0.lo, v1.lo}, Reg{v0.hi, v1.hi}, Reg{v8.lo, v9.lo}, Reg{v8.hi, v9.hi}};
        b[lane] = {pb[0][lane], pb[1][lane]};
      }
      mma(o[mt], a, b);
    }
  }
  // The partial's store: head 2t + (e & 1), element pv_element(mt, g, e >> 1); sums over the 8 lanes of a t.
  std::vector<Row> out(heads, Row(kD, 0.0));
  for (int lane = 0; lane < kLanes; ++lane) {
    const int g = group_of(lane), t = thread_of(lane);
    for (int mt = 0; mt < 8; ++mt)
      for (int e = 0; e < 4; ++e) {
        const int head = 2 * t + (e & 1);
        if (head >= heads) continue;
        double sum = 0;
        for (int other = t; other < kLanes; other += 4) sum += l[other][e & 1];
        out[head][pv_element(mt, g, e >> 1)] =
            o[mt][lane][e] / sum;
      }
  }
  return out;
}

std::vector<Row> random_rows(int n, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<Row> rows(n, Row(kD));
  for (auto& r : rows)
    for (auto& x : r) x = u(rng);
  return rows;
}

TEST(DecodeRegsLayout, AWarpsEmulatedFragmentsComputeAttention) {
  std::mt19937_64 rng(3);
  struct Case {
    int heads, tokens;
  };
  for (const Case c : {Case{6, 45}, Case{8, 16}, Case{1, 1}, Case{4, 33}, Case{8, 100}}) {
    SCOPED_TRACE(testing::Message() << c.heads << " heads, " << c.tokens << " tokens");
    const auto q = random_rows(c.heads, rng), k = random_rows(c.tokens, rng), v = random_rows(c.tokens, rng);
    const double scale = 1.0 / std::sqrt(static_cast<double>(kD));
    const auto got = emulate_warp(q, k, v, scale);
    for (int h = 0; h < c.heads; ++h) {
      std::vector<double> s(c.tokens);
      double mx = kNegInf, sum = 0;
      for (int j = 0; j < c.tokens; ++j) {
        double dot = 0;
        for (int d = 0; d < kD; ++d) dot += q[h][d] * k[j][d];
        s[j] = dot * scale;
        mx = std::max(mx, dot * scale);
      }
      for (auto& x : s) sum += (x = std::exp(x - mx));
      for (int d = 0; d < kD; ++d) {
        double want = 0;
        for (int j = 0; j < c.tokens; ++j) want += s[j] * v[j][d];
        EXPECT_NEAR(got[h][d], want / sum, 1e-12) << "head " << h << " element " << d;
      }
    }
  }
}

}  // namespace
}  // namespace duplex::kernels::cuda::regs_layout
