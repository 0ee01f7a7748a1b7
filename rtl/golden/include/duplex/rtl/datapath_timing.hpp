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
// A bias (GEMV y = W x + bias; gemm_lane in_bias) is sampled with a dot product's first pass and selected as
// the accumulator's starting value in the accumulate stage: it adds no cycle to a dot product.
inline constexpr int kGemvBiasCycles = 0;
// Cycles from the first pass of a k-element dot product accepted to its result presented (with or without a
// bias: + kGemvBiasCycles).
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
// A row with an attention sink (gpt-oss; softmax_unit in_sink, sampled with the first score) costs nothing
// more: the max register starts at the sink instead of -Inf, and the sink's e^(S - max) enters the sum in the
// first SUM cycle, when the subtract stage is idle anyway (no score has been read back yet; with a cap the
// stages have drained): kSoftmaxSinkCycles = 0, with or without a soft-cap (measured by rtl_timing_tests).
inline constexpr int kSoftmaxCyclesPerElement = 3;
inline constexpr int kSoftmaxFixedCycles = 7;
inline constexpr int kSoftcapStages = 18;
inline constexpr int kSoftmaxPasses = 3;
inline constexpr int kSoftmaxSinkCycles = 0;
constexpr std::uint64_t softmax_cycles(std::size_t n, bool softcap = false, bool sink = false) {
  return kSoftmaxCyclesPerElement * static_cast<std::uint64_t>(n) + kSoftmaxFixedCycles +
         (softcap ? static_cast<std::uint64_t>(kSoftmaxPasses * kSoftcapStages) : 0) +
         (sink ? static_cast<std::uint64_t>(kSoftmaxSinkCycles) : 0);
}

// Activation unit (rtl/activation/activation_unit.sv): fully pipelined, one (a, b) pair per cycle in every
// mode. Back stages, every mode: exp (1), 1 + u (1), reciprocal (1), sigmoid sign select (1), final product +
// FP16 rounding (1). GELU elements first pass a front that computes the sigmoid's argument z:
//  tanh form (kGeluTanh, kGeluTanhGate): s (1), s^2 (1), c3 s^2 (1), c1 + c3 s^2 (1), z = s p (1);
//  erf form (kGeluErf, kGeluErfGate): s (1), u = s^2 (1), c7 min(u, 36) (1), then six (p u, + c_k) pairs and
//  + c0 (13), z = s p (1);
//  gpt-oss's clamped SwiGLU (kSwigluOaiGate): g = min(a, 7) and u + 1 (1), x = alpha g and m = g (u + 1) (1).
// SiLU and ReLU elements (gated or added) enter the back stages directly (an added element's s = a + b uses
// the front adder in the cycle of its handshake). Results stay in input order because an element waits while
// an earlier element would still reach the back stages after it: an element of front length L_next waits
// while an element of front length L_before is in one of its first L_before - L_next front stages, i.e. it
// is accepted max(0, L_before - L_next) cycles later than it could be otherwise
// (activation_mode_switch_wait). A stream of one mode never stalls.
inline constexpr int kActivationFrontStages = 5;  // the tanh form's front
inline constexpr int kGeluErfFrontStages = 17;
inline constexpr int kSwigluOaiFrontStages = 2;
inline constexpr int kSiluLatency = 5;
inline constexpr int kReluLatency = 5;
inline constexpr int kGeluTanhLatency = kSiluLatency + kActivationFrontStages;
inline constexpr int kGeluErfLatency = kSiluLatency + kGeluErfFrontStages;
inline constexpr int kSwigluOaiLatency = kSiluLatency + kSwigluOaiFrontStages;
inline constexpr int kActivationInitiationInterval = 1;
constexpr int activation_latency(ActivationMode mode) {
  switch (mode) {
    case ActivationMode::kSwigluOaiGate:
      return kSwigluOaiLatency;
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
// Front stages of a mode (cycles from its handshake to the back stages): 0 (SiLU, ReLU), 2 (SwiGLU-OAI),
// 5 (GELU tanh), 17 (GELU erf).
constexpr int activation_front_stages(ActivationMode mode) {
  return activation_latency(mode) - kSiluLatency;
}
// Bubble cycles an element of mode `next` waits at most behind an element of mode `before` accepted just
// before it: max(0, L_before - L_next) with L the front lengths (0 for a stream of one mode).
constexpr int activation_mode_switch_wait(ActivationMode before, ActivationMode next) {
  const int wait = activation_front_stages(before) - activation_front_stages(next);
  return wait > 0 ? wait : 0;
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
