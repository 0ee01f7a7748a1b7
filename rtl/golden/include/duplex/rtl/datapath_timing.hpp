#pragma once
// Cycle timing of the Logic-PIM datapath units, one source of truth: the SystemC timing model uses these
// constants, and tests/rtl/rtl_timing_test.cpp measures the Verilated RTL (rtl/) and fails if they differ.
// Cycles are clock cycles of the Logic-PIM clock (650 MHz in configs/devices/logic-pim.yaml). Latency: an
// input handshake (valid && ready) in cycle t, captured by the rising edge that ends cycle t, whose output is
// first valid in cycle t' has latency t' - t (= the number of register stages), with outputs never stalled.
#include <bit>
#include <cstddef>
#include <cstdint>

#include "duplex/rtl/golden_datapath.hpp"

namespace duplex::pim::timing {

// GEMM lane: one pass takes `lanes` FP16 pairs. Stages: multipliers (1), adder tree (log2 lanes, one level
// per stage), accumulator + FP16 rounding (1). A new pass is accepted every cycle (initiation interval 1),
// also across dot-product boundaries.
inline constexpr int kGemmPassInitiationInterval = 1;
constexpr int gemm_lane_latency(int lanes) {
  return 2 + std::countr_zero(static_cast<unsigned>(lanes));
}
// Cycles from the first pass of a k-element dot product accepted to its result presented.
constexpr std::uint64_t gemm_dot_cycles(std::size_t k, int lanes) {
  const std::uint64_t passes =
      k == 0 ? 1 : (k + static_cast<std::size_t>(lanes) - 1) / static_cast<std::size_t>(lanes);
  return (passes - 1) * kGemmPassInitiationInterval + static_cast<std::uint64_t>(gemm_lane_latency(lanes));
}

// Softmax unit: three passes over the row held in its buffer (load + running max; exp + sum; exp x
// reciprocal + output), one element per cycle each, plus a fixed pipeline fill/drain overhead.
// Cycles from the first score accepted to the last probability presented: 3 n + kSoftmaxFixedCycles.
// A row with a logit soft-cap (softcap != +0) sends every pass through the cap stages (softcap_stages.sv:
// x, x / c, then the polynomial or the exp form, x'), kSoftcapStages register stages: each of the three
// passes is that much longer (LOAD drains them before SUM), 3 n + kSoftmaxFixedCycles + 3 kSoftcapStages in
// all.
inline constexpr int kSoftmaxCyclesPerElement = 3;
inline constexpr int kSoftmaxFixedCycles = 7;
inline constexpr int kSoftcapStages = 18;
inline constexpr int kSoftmaxPasses = 3;
constexpr std::uint64_t softmax_cycles(std::size_t n, bool softcap = false) {
  return kSoftmaxCyclesPerElement * static_cast<std::uint64_t>(n) + kSoftmaxFixedCycles +
         (softcap ? static_cast<std::uint64_t>(kSoftmaxPasses * kSoftcapStages) : 0);
}

// Activation unit (rtl/activation/activation_unit.sv): fully pipelined, one (a, b) pair per cycle in every
// mode. Back stages, every mode: exp (1), 1 + u (1), reciprocal (1), sigmoid sign select (1), final product +
// FP16 rounding (1). GELU elements first pass a front that computes the sigmoid's argument z:
//  tanh form (kGeluTanh, kGeluTanhGate): s (1), s^2 (1), c3 s^2 (1), c1 + c3 s^2 (1), z = s p (1);
//  erf form (kGeluErf, kGeluErfGate): s (1), u = s^2 (1), c7 min(u, 36) (1), then six (p u, + c_k) pairs and
//  + c0 (13), z = s p (1).
// SiLU and ReLU elements (gated or added) enter the back stages directly (an added element's s = a + b uses
// the front adder in the cycle of its handshake). Results stay in input order because an element waits while
// an earlier element would still reach the back stages after it: a SiLU / ReLU element while any front stage
// is busy, a tanh element while an erf element is in its first kGeluErfFrontStages - kActivationFrontStages
// stages. A stream of one mode never stalls.
inline constexpr int kActivationFrontStages = 5;  // the tanh form's front
inline constexpr int kGeluErfFrontStages = 17;
inline constexpr int kSiluLatency = 5;
inline constexpr int kReluLatency = 5;
inline constexpr int kGeluTanhLatency = kSiluLatency + kActivationFrontStages;
inline constexpr int kGeluErfLatency = kSiluLatency + kGeluErfFrontStages;
inline constexpr int kActivationInitiationInterval = 1;
constexpr int activation_latency(ActivationMode mode) {
  switch (mode) {
    case ActivationMode::kGeluTanh:
    case ActivationMode::kGeluTanhGate:
      return kGeluTanhLatency;
    case ActivationMode::kGeluErf:
    case ActivationMode::kGeluErfGate:
      return kGeluErfLatency;
    case ActivationMode::kRelu:
    case ActivationMode::kReluGate:
      return kReluLatency;
    default:  // kSiluGate, kSilu
      return kSiluLatency;
  }
}
// Cycles from the first of n same-mode elements accepted to the last result presented.
constexpr std::uint64_t activation_cycles(ActivationMode mode, std::size_t n) {
  return (static_cast<std::uint64_t>(n) - 1) * kActivationInitiationInterval +
         static_cast<std::uint64_t>(activation_latency(mode));
}

// Command decoder / sequencer (pim_command_decoder.hpp): a descriptor accepted in cycle c presents its
// first micro-op in cycle c + kCommandDecoderLatency and then one micro-op per cycle; the next descriptor is
// accepted in the cycle the last micro-op is taken (no bubble). Cycles from acceptance to the last micro-op
// presented:
inline constexpr int kCommandDecoderLatency = 1;
inline constexpr int kCommandDecoderMicroOpsPerCycle = 1;
constexpr std::uint64_t command_decoder_cycles(std::uint64_t micro_ops) {
  return kCommandDecoderLatency + (micro_ops - 1) / kCommandDecoderMicroOpsPerCycle;
}

}  // namespace duplex::pim::timing
