#pragma once
// Which elements each lane's registers hold in the register-direct decode kernel (cuda_decode_attention_regs.cu),
// for host and device: the kernel indexes its loads and stores with these, and
// tests/kernels/decode_regs_layout_test.cpp emulates a warp's MMAs with them on the CPU (no GPU needed).
// Lane (g, t): g = lane / 4, t = lane % 4. A 16-byte chunk c of a row holds elements 8c .. 8c + 7, two per
// 32-bit word (the lower index in the low half).
#include <array>
#include <cstddef>

#if defined(__CUDACC__)
#define DUPLEX_HOST_DEVICE __host__ __device__
#else
#define DUPLEX_HOST_DEVICE
#endif

namespace duplex::kernels::cuda::regs_layout {

constexpr int kD = 128;          // head_dim
constexpr int kHeads = 8;        // query heads per block: the MMAs' N
constexpr int kTileTokens = 16;  // a warp's tile

// K (A operand of S^T = K . Q^T) and Q (B operand): lane (g, t) loads chunk k_chunk(i, t), i = 0..3, of the
// rows of tokens k_token(g, 0) and k_token(g, 1) (and of query head g); word w of chunk i is its register
// 4i + w, and MMA step ks (k16 over head_dim) takes registers 2ks (A rows g / g + 8 resp. B column g, logical
// columns 16 ks + 2t, + 1) and 2ks + 1 (logical columns 16 ks + 8 + 2t, + 1).
DUPLEX_HOST_DEVICE constexpr int k_token(int g, int r) {
  return g + 8 * r;
}
DUPLEX_HOST_DEVICE constexpr int k_chunk(int i, int t) {
  return 4 * i + t;
}
// The physical element behind logical reduction column 16 ks + 8 h + 2t + e (h, e in {0, 1}).
DUPLEX_HOST_DEVICE constexpr int qk_element(int ks, int h, int t, int e) {
  return 8 * k_chunk(ks / 2, t) + 2 * (2 * (ks % 2) + h) + e;
}

// V (A operand of O^T += V^T . P^T, rows = head_dim, columns = tokens): lane (g, t) loads chunks v_chunk(g, 0)
// and v_chunk(g, 1) of the rows of tokens v_token(t, j), j = 0..3. m-tile mt takes word mt % 4 of chunk
// v_chunk(g, mt / 4) of the four rows and pairs them by halves: A registers {low halves of tokens j = 0, 1;
// high halves of j = 0, 1; low halves of j = 2, 3; high halves of j = 2, 3}, i.e. A rows g (h = 0) and
// g + 8 (h = 1) are physical element pv_element(mt, g, h), and A columns 2t, 2t + 1, 2t + 8, 2t + 9 are tokens
// v_token(t, 0..3).
DUPLEX_HOST_DEVICE constexpr int v_token(int t, int j) {
  return 2 * t + (j & 1) + 8 * (j >> 1);
}
DUPLEX_HOST_DEVICE constexpr int v_chunk(int g, int c) {
  return g + 8 * c;
}
// The physical head_dim element of O^T's row g + 8h of m-tile mt.
DUPLEX_HOST_DEVICE constexpr int pv_element(int mt, int g, int h) {
  return 8 * v_chunk(g, mt / 4) + 2 * (mt % 4) + h;
}

// Both element maps are permutations of 0..127.
constexpr bool maps_are_permutations() {
  std::array<int, kD> qk{}, pv{};
  for (int ks = 0; ks < 8; ++ks)
    for (int h = 0; h < 2; ++h)
      for (int t = 0; t < 4; ++t)
        for (int e = 0; e < 2; ++e) ++qk[static_cast<std::size_t>(qk_element(ks, h, t, e))];
  for (int mt = 0; mt < 8; ++mt)
    for (int g = 0; g < 8; ++g)
      for (int h = 0; h < 2; ++h) ++pv[static_cast<std::size_t>(pv_element(mt, g, h))];
  for (std::size_t i = 0; i < kD; ++i)
    if (qk[i] != 1 || pv[i] != 1) return false;
  return true;
}
static_assert(maps_are_permutations());

// P.V's reduction over the tile's tokens must meet them in S^T's row order: the transposed block r of P gives
// B row 2t + e the scores of S^T row 8r + 2t + e, i.e. of token k_token(2t + e, r).
constexpr bool v_tokens_follow_scores() {
  for (int t = 0; t < 4; ++t)
    for (int j = 0; j < 4; ++j)
      if (v_token(t, j) != k_token(2 * t + (j & 1), j >> 1)) return false;
  return true;
}
static_assert(v_tokens_follow_scores());

}  // namespace duplex::kernels::cuda::regs_layout

#undef DUPLEX_HOST_DEVICE
