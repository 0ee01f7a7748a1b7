#pragma once
// The Logic-PIM logic die, functional and timed: operations read their operands (real FP16 bytes) from the
// device memory, compute through the pluggable Datapath (golden C++ model or Verilated RTL: identical bits),
// write the results back to device memory, and return the op's time and action counts from time_pim_op.
// Plain C++; the SystemC device calls it from its command processor.
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"
#include "duplex/rtl/datapath.hpp"
#include "duplex/sysc/host_interface.hpp"
#include "duplex/sysc/pim_timing.hpp"
#include "duplex/sysc/sparse_memory.hpp"

namespace duplex::sysc {

// y[t][r] = sum_c W[r][c] x[t][c] (+ bias[r]); W row-major FP16 [rows][cols], x [tokens][cols], y
// [tokens][rows]. flags: the descriptor's flags word; bit 0 (hostif::kPimGemvFlagBias): `bias` is the address
// of FP16 [rows], each row's accumulator starts at bias[r]. Any other bit is rejected (kBadArgument).
struct GemvArgs {
  std::uint64_t weights = 0, inputs = 0, outputs = 0;
  std::int64_t tokens = 1, rows = 0, cols = 0;
  std::uint16_t flags = 0;
  std::uint64_t bias = 0;  // with flags bit 0 (the descriptor's a6)
  bool has_bias() const { return (flags & hostif::kPimGemvFlagBias) != 0; }
};
// Decode attention of one GQA group: q [group][d], K and V [context][d], out [group][d], scale FP16 bits;
// softcap FP16 bits of the logit soft-cap c (scores -> c tanh(scores / c) before the softmax; +0: none, else
// finite and > 0, any other bits are rejected with kBadArgument). flags: the descriptor's flags word; bit 0
// (hostif::kPimAttentionFlagSinks): `group` FP16 attention-sink logits follow q at q + 2 group d (gpt-oss:
// each head's softmax takes its sink into the max and the sum). Any other bit is rejected (kBadArgument).
struct AttentionArgs {
  std::uint64_t q = 0, k = 0, v = 0, out = 0;
  std::int64_t group = 1, context = 0, head_dim = 0;
  std::uint16_t scale = 0;
  std::uint16_t softcap = 0;
  std::uint16_t flags = 0;
  bool sinks() const { return (flags & hostif::kPimAttentionFlagSinks) != 0; }
};
// out[i] = pim::activation_fp16(mode, gate[i], up[i]) in one of pim::ActivationMode's kActivationModes modes
// (0 silu-gate: silu(gate) * up; the added modes take `up` as the addend, e.g. the fc1 bias; 8
// swiglu-oai-gate: gpt-oss's clamped SwiGLU). mode is the descriptor's a4 word as sent; a value above 8 is
// rejected (kBadArgument), and so is any flag bit.
struct ActivationArgs {
  std::uint64_t gate = 0, up = 0, out = 0;
  std::int64_t elements = 0;
  std::uint64_t mode = 0;
  std::uint16_t flags = 0;
};

// The datapath pim.datapath names, for plain-C++ users that do not link the Verilated RTL: "golden" is built
// here; "rtl" is a duplex::Error (DuplexDevice, in duplex_sysc, builds either through pim::make_datapath).
std::unique_ptr<pim::Datapath> make_configured_datapath(const PimSpec& pim);

// A PIM command's completion status and, when it ran (kOk), its timing.
struct PimCommandResult {
  hostif::Status status = hostif::Status::kOk;
  PimOpTiming timing;
};

class LogicPim {
 public:
  // Throws duplex::Error when pim is not a Logic-PIM or datapath is null.
  LogicPim(const HbmSpec& hbm, const PimSpec& pim, SparseMemory& memory,
           std::unique_ptr<pim::Datapath> datapath);

  // Each validates (check_gemv / check_attention / check_activation in pim_command.hpp: PimOpError for
  // misaligned or out-of-memory operands and shapes that do not fit the buffers), computes, writes the
  // results, and returns the op's timing (memoized per shape).
  PimOpTiming gemv(const GemvArgs& a);
  PimOpTiming attention(const AttentionArgs& a);
  PimOpTiming activation(const ActivationArgs& a);

  // Runs one PIM command descriptor as the device receives it. Its status is check_pim_command's
  // (pim_command.hpp). With a datapath that has a command decoder (pim.datapath: rtl) every descriptor goes
  // through that decoder: the RTL validates it (its status must equal check_pim_command's, else an
  // InternalError) and, when valid, sequences its micro-ops, which read and write device memory. Otherwise
  // a valid command runs through gemv / attention / activation.
  PimCommandResult run_command(const hostif::CommandDescriptor& d);

  pim::Datapath& datapath() { return *datapath_; }
  const ActionCounters& counters() const { return counters_; }  // summed over all ops

 private:
  const PimOpTiming& timing(const PimOpShape& s);

  pim::CommandDecoderConfig decoder_config_;  // the device's limits, as the command decoder takes them
  HbmSpec hbm_;
  PimSpec pim_;
  SparseMemory& memory_;
  std::unique_ptr<pim::Datapath> datapath_;
  std::map<std::tuple<int, std::int64_t, std::int64_t, std::int64_t, std::int64_t, int, bool, bool, bool>,
           PimOpTiming>
      memo_;
  ActionCounters counters_;
};

}  // namespace duplex::sysc
