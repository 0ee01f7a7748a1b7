#pragma once
// One FFN (a dense layer's column shard, one expert, or a layer's shared experts) as a compute unit runs it,
// over rows x [m][h] -> y [m][h], FP16 bit patterns:
//   gated (w_up set):     y = W_down . (act(W_in . x) * (W_up . x))   (Llama, Mixtral: SiLU; Gemma: GELU)
//   two-matrix (no w_up): y = W_down . act(W_in . x + b_in)         (StarCoder2, GLaM: GELU; OPT: ReLU)
// act: SiLU, GELU (exact or tanh form) or ReLU.
// W_in / W_up [f][h], W_down [h][f], b_in [f] (nullptr: no bias). The down projection's bias is not the
// FFN's: the caller adds it once, after a tensor-parallel sum.
#include <cstddef>
#include <cstdint>

#include "duplex/compiler/model_spec.hpp"

namespace duplex::runtime::functional {

struct FfnWeights {
  const std::uint16_t* w_in = nullptr;  // gate_proj (gated); up_proj / fc1 / c_fc (two-matrix)
  const std::uint16_t* w_up = nullptr;  // up_proj (gated only)
  const std::uint16_t* w_down = nullptr;
  const std::uint16_t* b_in = nullptr;  // two-matrix only
  std::size_t f = 0, h = 0;
  compiler::Activation activation = compiler::Activation::kSilu;

  bool gated() const { return w_up != nullptr; }
};

}  // namespace duplex::runtime::functional
