#pragma once
// Time and action counts of one Logic-PIM operation on one HBM3 stack, without SystemC: the op's bank-bundle
// reads are replayed through the same pseudo-channel controller and timing engine as the device model, and
// the logic-die units consume the data as it arrives.
//
// Method. Operands are spread evenly over the stack's pseudo-channels (the address mapping interleaves them),
// so every pseudo-channel does the same work: one representative pseudo-channel is simulated and its counts
// are scaled by the number of pseudo-channels. The error of this is the rounding of the op's bytes to whole
// bundle reads per pseudo-channel (at most one bundle read, 256 B, per pseudo-channel) and the refresh phase
// (all pseudo-channels are timed as if they refreshed at the same phase).
// A "wave" is one bundle read on every pseudo-channel (256 B x 32 = 8 KiB per stack on Duplex). The GEMM
// modules consume waves in order; a wave's compute starts when its data has arrived and the previous wave's
// compute is done. Module buffers (gemm_modules x module_buffer, double-buffered) bound how far reads may run
// ahead of compute. Softmax runs on its own unit; the weighted sum over V of a head waits for its softmax,
// and the next head's K is streamed meanwhile (order K0, K1, V0, K2, V1, ...).
// Results are written back through column writes issued by the logic die on each pseudo-channel.
// Unit cycle counts come from rtl/golden datapath_timing.hpp: GEMM lane latency, softmax 3 passes at one
// element per cycle per lane with `softmax_elements_per_cycle x 3` lanes (so the unit's throughput is
// softmax_elements_per_cycle), activation fully pipelined with activation_elements_per_cycle lanes.
#include <cstdint>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"
#include "duplex/rtl/golden_datapath.hpp"
#include "duplex/sysc/action_counters.hpp"
#include "duplex/sysc/pc_controller.hpp"

namespace duplex::sysc {

// kBadArgument: an argument outside its domain (an activation mode other than 0..8, an attention soft-cap
// that is not +0 or a finite FP16 > 0).
enum class PimFault { kMisaligned, kOutOfRange, kBufferOverflow, kBadShape, kBadArgument };

// A malformed PIM operation; fault() says which class (the device maps it to a completion error code).
class PimOpError : public Error {
 public:
  PimOpError(PimFault fault, const std::string& what) : Error(what), fault_(fault) {}
  PimFault fault() const { return fault_; }

 private:
  PimFault fault_;
};

enum class PimOpKind { kGemv, kAttention, kActivation };

struct PimOpShape {
  PimOpKind kind = PimOpKind::kGemv;
  // GEMV / thin GEMM: y[tokens][rows] = W[rows][cols] x[tokens][cols] (W in HBM, x in the input buffer).
  std::int64_t tokens = 1;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  // Bytes per element of what the op streams from HBM: a GEMV's W, an attention's K and V. 2 for FP16 / BF16,
  // 1 for FP8 / INT8, fractional for a block-scaled format with its scales (MXFP4: 4.25 bits = 0.53125); the
  // unit expands them to FP16 at its read rate. Inputs, outputs and an activation's operands are FP16.
  double dtype_bytes = 2;
  // Decode attention: kv_heads GQA groups, each group_size query heads over one K/V head of `context`
  // tokens x head_dim (K and V in HBM, q in the input buffer).
  std::int64_t group_size = 1;
  std::int64_t context = 0;
  std::int64_t head_dim = 128;
  std::int64_t kv_heads = 1;
  // The scores are soft-capped (Gemma 2: c tanh(x / c) before the softmax): each softmax row also passes the
  // cap stages (pim::timing::softmax_cycles), the rest of the op is unchanged.
  bool softcap = false;
  // Each query head has an attention-sink logit (gpt-oss; read with q, group_size x 2 B more from the input
  // buffer): the softmax unit takes it into the max and the sum at no cycle (pim::timing::kSoftmaxSinkCycles
  // = 0, softmax_cycles(n, softcap, sink)); counted in the input-buffer reads.
  bool sinks = false;
  // GEMV with a bias (y = W x + bias, FP16 [rows] read from HBM with W: rows x 2 B more): the GEMM lane
  // starts each dot product's accumulator at it, at no cycle (pim::timing::kGemvBiasCycles = 0).
  bool bias = false;
  // Activation: out[i] = act(a[i], b[i]), a and b in HBM; the mode sets the unit's latency
  // (datapath_timing.hpp activation_latency), not its throughput.
  std::int64_t elements = 0;
  // Bank-bundle spaces the op's HBM operands are striped over (1..4). Reads of one space hit one bundle per
  // pseudo-channel, so its row switches cannot overlap another bundle's reads.
  int spaces = 4;
  pim::ActivationMode activation_mode = pim::ActivationMode::kSiluGate;  // kActivation only
};

struct PimTimingOptions {
  bool refresh = true;
  double refresh_phase = 0.5;  // first refresh at this fraction of tREFI after the op starts
  int queue_depth = 32;        // Logic-PIM DRAM controller queue per pseudo-channel (modeling choice)
};

struct PimOpTiming {
  Time total;   // command issued by the xPU-side controller to last result written: device + command_latency
  Time device;  // first bundle read to last result written (the op on the stack itself)
  Time dram_read;            // first read issued to last read data, representative pseudo-channel
  Time compute;              // GEMM-module busy time
  Time softmax;              // softmax-unit busy time
  Time activation;           // activation-unit busy time
  Time writeback;            // last compute to last result written
  double bytes_read = 0;     // HBM bytes over the bundle path, whole stack
  double bytes_written = 0;  // result bytes written back, whole stack
  double flops = 0;          // 2 x MACs
  ActionCounters actions;    // whole stack
};

// Throws PimOpError naming the limit for a shape that does not fit: kBufferOverflow for inputs larger than
// the input buffer (tokens x cols x 2 B) or a softmax row larger than the softmax buffer or the unit's
// maximum; kBadShape for empty or negative dimensions, spaces outside 1..4, a non-Logic-PIM spec;
// kBadArgument for an activation mode outside the enumeration (after the dimensions).
void check_pim_op(const HbmSpec& hbm, const PimSpec& pim, const PimOpShape& shape);
// The activation mode (a kPimActivation command's a4 word, or a shape's mode) as pim::ActivationMode:
// 0..kActivationModes - 1, else PimOpError kBadArgument naming the modes.
pim::ActivationMode activation_mode_of(std::uint64_t mode);
// Largest token count of a GEMV over `cols` columns that the input buffer holds.
std::int64_t max_gemv_tokens(const PimSpec& pim, std::int64_t cols,
                             int dtype_bytes = 2);  // inputs are FP16 whatever the weight type
// Longest context one attention op takes for a query group of `group_size` heads: its FP16 scores must fit
// the softmax buffer, and the softmax unit takes at most pim::kSoftmaxMaxElements per row. 0 for group_size
// < 1.
std::int64_t max_attention_context(const PimSpec& pim, std::int64_t group_size);

PimOpTiming time_pim_op(const HbmSpec& hbm, const PimSpec& pim, const PimOpShape& shape,
                        const PimTimingOptions& options = {});

// FLOPs and HBM bytes of the op (2 x MACs; operand bytes read from HBM).
double pim_op_flops(const PimOpShape& shape);
double pim_op_bytes(const PimOpShape& shape);

}  // namespace duplex::sysc
