#pragma once
// The PIM side of functional emulation, behind one small interface: the executor hands it contiguous FP16
// operands (weights, token rows, one GQA group's K/V gathered from the paged cache) and gets FP16 results.
// Today's implementation calls the Logic-PIM datapath (golden C++ model or Verilated RTL) directly; the
// SystemC device + driver path replaces it behind this same interface.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "duplex/runtime/functional/ffn_weights.hpp"

namespace duplex::runtime::functional {

class PimUnit {
 public:
  virtual ~PimUnit() = default;
  PimUnit() = default;
  PimUnit(const PimUnit&) = delete;
  PimUnit& operator=(const PimUnit&) = delete;

  virtual std::string describe() const = 0;  // "logic-pim datapath golden"
  // y[r] = W . x[r] for rows r < m: W [n][k], x [m][k], y [m][n].
  virtual void linear(const std::uint16_t* w, const std::uint16_t* x, std::uint16_t* y, std::size_t m, std::size_t n,
                      std::size_t k) = 0;
  // The FFN `w` on rows x [m][h] -> y [m][h] (ffn_weights.hpp): GEMVs and the activation unit in the mode of
  // its activation and form (activation_mode: gated, the up projection as the second operand; two-matrix, the
  // bias or zeros as the addend).
  virtual void ffn(const FfnWeights& w, const std::uint16_t* x, std::uint16_t* y, std::size_t m) = 0;
  // One GQA group of one token: q [group][d] against K / V [t][d] -> out [group][d]; scale FP16 bits; softcap
  // FP16 bits of the attention logit soft-cap c (Gemma 2: scores -> c tanh(scores / c) before the softmax),
  // +0 for none (anything but +0 or a finite cap > 0: duplex::Error). sinks: the group's query heads' FP16
  // sink logits [group] (gpt-oss; joining each softmax's max and sum), or nullptr for none.
  virtual void attention(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                         std::size_t group, std::size_t t, std::size_t d, std::uint16_t scale,
                         std::uint16_t softcap, std::uint16_t* out, const std::uint16_t* sinks) = 0;
  // Datapath clock cycles simulated so far (RTL only).
  virtual std::optional<std::uint64_t> simulated_cycles() const = 0;
};

}  // namespace duplex::runtime::functional

namespace duplex::pim {
enum class ActivationMode : std::uint8_t;
}

namespace duplex::runtime::functional {

// The activation unit's mode for `w`: its activation (SiLU, GELU tanh, exact GELU, ReLU) in the gated form
// (w_up set) or added to the bias (two-matrix); gpt-oss's clamped SwiGLU (gated only). A gated FFN's biases
// start its GEMVs' accumulators (the GEMV bias).
pim::ActivationMode activation_mode(const FfnWeights& w);

// The Logic-PIM datapath of kind "golden" or "rtl" (duplex::Error otherwise, from make_datapath).
// `trace_path`: a waveform of the RTL datapath (pim::make_datapath's; rtl only).
std::unique_ptr<PimUnit> make_datapath_pim_unit(std::string_view datapath_kind, const std::string& trace_path = "");

}  // namespace duplex::runtime::functional
