#pragma once
// The pluggable Logic-PIM datapath: one interface, two implementations that give identical bits.
//  - "golden": the C++ model (golden_datapath.hpp), library duplex_pim_golden.
//  - "rtl":    the Verilated SystemVerilog datapath (rtl/), library duplex_rtl_datapath.
// Factories:
//  - make_golden_datapath() lives in duplex_pim_golden (no Verilator needed).
//  - make_datapath(kind, ...) lives in duplex_rtl_datapath and picks either kind; a binary that needs the
//    `pim.datapath: golden | rtl` switch links duplex_rtl_datapath. A binary linked with duplex_pim_golden
//    only cannot call make_datapath (link error, by design: no runtime surprise).
// Instances are not thread-safe; use one per thread.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "duplex/rtl/golden_datapath.hpp"
#include "duplex/rtl/pim_command_types.hpp"

namespace duplex::pim {

// Device memory as a PIM command reads and writes it: byte addresses, FP16 values little-endian.
class CommandMemory {
 public:
  virtual ~CommandMemory() = default;
  CommandMemory() = default;
  CommandMemory(const CommandMemory&) = delete;
  CommandMemory& operator=(const CommandMemory&) = delete;
  virtual void read(std::uint64_t addr, void* dst, std::uint64_t bytes) = 0;
  virtual void write(std::uint64_t addr, const void* src, std::uint64_t bytes) = 0;
};

class Datapath {
 public:
  virtual ~Datapath() = default;
  Datapath() = default;
  Datapath(const Datapath&) = delete;
  Datapath& operator=(const Datapath&) = delete;

  virtual std::string_view kind() const = 0;  // "golden" or "rtl"
  virtual const DatapathParams& params() const = 0;

  // Same contracts as the free functions in golden_datapath.hpp. init: the FP16 bits the accumulator starts
  // at (+0: the plain dot product); bias: FP16 [n] added to each row's accumulator first (nullptr: none).
  virtual float dot_fp16(const std::uint16_t* a, const std::uint16_t* b, std::size_t k,
                         std::uint16_t init = 0) = 0;
  virtual void gemv_fp16(const std::uint16_t* w, const std::uint16_t* x, std::uint16_t* y, std::size_t n,
                         std::size_t k, const std::uint16_t* bias = nullptr) = 0;
  // softcap: FP16 bits of the logit soft-cap (+0: none), validate_softcap (duplex::Error) before anything
  // runs. sink: one FP16 attention-sink logit that joins the max and the sum (nullptr: none).
  virtual void softmax_fp16(const std::uint16_t* scores, std::size_t n, std::uint16_t scale,
                            std::uint16_t softcap, std::uint16_t* probs,
                            const std::uint16_t* sink = nullptr) = 0;
  // out[i] = activation_fp16(mode, a[i], b[i]), i < n (streams through the activation unit). b is never null:
  // the up projection for kSiluGate, the addend (bias) for kGeluTanh / kRelu (pass zeros for none).
  // Throws duplex::Error for a mode outside the enumeration.
  virtual void activation_fp16_n(ActivationMode mode, const std::uint16_t* a, const std::uint16_t* b,
                                 std::uint16_t* out, std::size_t n) = 0;
  // The SiLU-gate mode: silu_gate_fp16(gate, up), and out[i] = silu_gate_fp16(gate[i], up[i]), i < n.
  std::uint16_t silu_gate_fp16(std::uint16_t gate, std::uint16_t up);
  void silu_gate_fp16_n(const std::uint16_t* gate, const std::uint16_t* up, std::uint16_t* out,
                        std::size_t n);
  // Composed from dot_fp16 / to_fp16 / softmax_fp16 of this datapath, exactly as golden_datapath.hpp says.
  // sinks: FP16 [group] attention-sink logits, one per query head (nullptr: none).
  void decode_attention_fp16(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                             std::size_t group, std::size_t t, std::size_t d, std::uint16_t scale,
                             std::uint16_t softcap, std::uint16_t* out, const std::uint16_t* sinks = nullptr);

  // Runs one 64-byte host command descriptor (sysc/include/duplex/sysc/host_interface.hpp) through the
  // datapath's own command decoder / sequencer (rtl/decoder/pim_command_decoder.sv): validation against
  // `config`, then every micro-op on the units, operands read from and results written to `memory`. Returns
  // the decoder's status (a hostif::Status code; 0 = the command ran). Only the RTL has a command decoder:
  // the golden model returns nullopt and its callers run the op functions above instead.
  virtual std::optional<std::uint16_t> run_command(const std::uint8_t* descriptor,
                                                   const CommandDecoderConfig& config, CommandMemory& memory);

  // Clock cycles simulated so far (RTL: measured from the Verilated model); nullopt for the golden model,
  // which has no clock.
  virtual std::optional<std::uint64_t> simulated_cycles() const = 0;
};

// The golden C++ datapath. Throws duplex::Error if params are invalid.
std::unique_ptr<Datapath> make_golden_datapath(const DatapathParams& params);

// kind: "golden" or "rtl" (anything else: duplex::Error naming the accepted kinds). trace_path: when not
// empty and kind is "rtl", the RTL writes a waveform there: ".vcd" (default build) or ".fst" (CMake option
// DUPLEX_RTL_TRACE_FST), see kRtlTraceExtension in rtl_datapath.hpp; another extension, or any trace path
// with "golden" (no waveform), is a duplex::Error. Defined in duplex_rtl_datapath.
std::unique_ptr<Datapath> make_datapath(std::string_view kind, const DatapathParams& params,
                                        const std::string& trace_path = "");

}  // namespace duplex::pim
