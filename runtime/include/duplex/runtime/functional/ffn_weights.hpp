#pragma once
// One FFN (a dense layer's column shard, one expert, or a layer's shared experts) as a compute unit runs it,
// over rows x [m][h] -> y [m][h], FP16 bit patterns:
//   gated (w_up set):     y = W_down . (act(W_in . x) * (W_up . x))   (Llama, Mixtral: SiLU; Gemma: GELU)
//   two-matrix (no w_up): y = W_down . act(W_in . x + b_in)         (StarCoder2, GLaM: GELU; OPT: ReLU)
// act: SiLU, GELU (exact or tanh form) or ReLU; gpt-oss's clamped SwiGLU (gated, kernels' kSwigluOai:
// y = W_down . swiglu_oai(W_in . x + b_in, W_up . x + b_up) + b_down).
// W_in / W_up [f][h], W_down [h][f], b_in / b_up [f], b_down [h] (nullptr: no bias). A dense FFN's down
// bias is not the FFN's (the caller adds it once, after a tensor-parallel sum); an expert's is (b_down, on
// one of its shards).
#include <cstddef>
#include <cstdint>

#include "duplex/compiler/model_spec.hpp"

namespace duplex::runtime::functional {

struct FfnWeights {
  const std::uint16_t* w_in = nullptr;  // gate_proj (gated); up_proj / fc1 / c_fc (two-matrix)
  const std::uint16_t* w_up = nullptr;  // up_proj (gated only)
  const std::uint16_t* w_down = nullptr;
  const std::uint16_t* b_in = nullptr;
  const std::uint16_t* b_up = nullptr;  // gated only
  const std::uint16_t* b_down = nullptr;
  std::size_t f = 0, h = 0;
  compiler::Activation activation = compiler::Activation::kSilu;

  bool gated() const { return w_up != nullptr; }
};

}  // namespace duplex::runtime::functional
