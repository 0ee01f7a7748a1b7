#pragma once
// W8A8 activation quantization in functional emulation: the serving kernels quantize a W8A8 GEMM's input
// before their FP8 / INT8 tensor-core GEMM (vLLM's scaled_fp8_quant, per_token_group_quant_fp8,
// scaled_int8_quant); duplex's xPU does so (kernels::QuantizeArgs, fake quantization: each element back as
// q x s in FP16), its Logic-PIM does not (its MACs take FP16 activations), so the numerics follow placement.
// Quantized: the inputs of the attention projections (MLA: q_a / q, q_b, kv_a; not the absorbed W_UK / W_UV,
// which vLLM multiplies in 16 bits), the O projection, a dense or shared FFN's and an expert's input x and
// intermediate h, each where its matrices are in a W8A8 format and the op runs on the xPU; never the router,
// the LM head or attention itself. A row-parallel input (the O projection's heads, an FFN's h under tensor
// parallelism) is quantized by each device on its own slice, as each rank of vLLM's does.
#include <cstdint>
#include <string>
#include <vector>

#include "duplex/compiler/model_spec.hpp"
#include "duplex/kernels/ops.hpp"

namespace duplex::runtime::functional {

// The quantization of the input of a GEMM whose matrix is in `format` (format kNone: FP16 input):
// - fp8_block128 (DeepSeek-V3's, Qwen3's FP8): FP8 per token and 128 columns, the scale max(amax, 1e-10) /
//   448 (vLLM's per_token_group_quant_fp8; FP32 scales: a release's scale_fmt ue8m0 is for its weights);
// - fp8_channel (compressed-tensors' FP8-dynamic; fbgemm_fp8's, bounded by activation_scale_ub): FP8 per
//   token, the scale at least 1 / (448 x 512) (vLLM's scaled_fp8_quant, use_per_token_if_dynamic);
// - fp8_tensor with activation_scheme dynamic: FP8 per tensor (every row of the GEMM on its device);
// - fp8_tensor with static input scales: FP8 at `static_scale`, the release's calibrated scale of the GEMM's
//   input (InputScales: vLLM's fused modules take the largest of theirs); kNone without one (random weights);
// - int8_channel (W8A8-INT8): INT8 per token, the scale amax / 127 (vLLM's scaled_int8_quant, symmetric);
// - bnb_int8 (LLM.int8()): INT8 per token with bitsandbytes' mixed-precision decomposition at
//   m.llm_int8_threshold (kernels::ActivationQuant::outlier_threshold: the batch's outlier columns pass in
//   16 bits, each token's scale from its other elements; MatMul8bitLt), plain INT8 per token at threshold 0.
//   Not an MoE model's experts (w8a8_expert_input_quant).
kernels::ActivationQuant w8a8_input_quant(const compiler::ModelSpec& m, compiler::DType format,
                                          float static_scale = 0.0f);
// w8a8_input_quant for an MoE layer's experts (routed or shared): none for bnb_int8 (a YAML model's: vLLM's
// bitsandbytes MoE method dequantizes the experts and runs them in 16 bits; HF's bitsandbytes MoE releases
// are refused).
kernels::ActivationQuant w8a8_expert_input_quant(const compiler::ModelSpec& m, compiler::DType format,
                                                 float static_scale = 0.0f);
// Whether some GEMM of `m` has its inputs quantized (on the xPU): w8a8_input_quant enabled for one of its
// matrix formats; static_scales: the weights came with a static release's input scales.
bool quantizes_activations(const compiler::ModelSpec& m, bool static_scales);
// Why some W8A8 matrices of `m` keep FP16 inputs in the emulation ("" when none does).
std::string activation_quant_gap(const compiler::ModelSpec& m, bool static_scales);

// What the emulation does to `m`'s W8A8 GEMMs' inputs (quantize: FunctionalOptions::quantize_activations;
// static_scales as above): "" for a model without W8A8 matrices.
std::string describe_activation_quant(const compiler::ModelSpec& m, bool quantize, bool static_scales);

// The formats of the GEMMs whose inputs a token quantizes (QuantizedInput::gemm).
enum class QuantizedGemm : std::uint8_t { kQkv, kOProj, kFfn, kSharedFfn, kExpert };

// "qkv", "o_proj", "ffn", "shared_ffn", "expert".
const char* quantized_gemm_name(QuantizedGemm g);

// What one quantizing call used beyond a token's own values: its per-tensor or static scale (0 for per-token
// and group scales), and LLM.int8()'s outlier columns, those where some row of the call (the batch on its
// device) reached the threshold, ascending (empty without the decomposition).
struct CallQuant {
  float scale = 0;
  std::vector<std::int32_t> outliers;
};

// One quantized GEMM input of one token, as the executor ran it on the xPU.
struct QuantizedInput {
  QuantizedGemm gemm = QuantizedGemm::kQkv;
  int expert = -1;  // kExpert: the global expert
  // The row-parallel input's slices, each quantized on its own device: the O projection's heads and an FFN's
  // h over its tensor-parallel shards (equal, contiguous); 1 otherwise.
  int slices = 1;
  // A per-tensor scale depends on the batch: the scales used, in order (kQkv: one per GEMM, MLA's q_a or q,
  // q_b, kv_a; kOProj: one per slice; an FFN: x's, then h's per slice). Empty for per-token / group scales,
  // which the token's values determine.
  std::vector<float> scales;
  // LLM.int8()'s outlier columns of each call, in `scales`' order (column indices within the call's input or
  // slice); empty without the decomposition. The batch's, not the token's: the reference cannot find them.
  std::vector<std::vector<std::int32_t>> outliers;
  // The token's inputs as the executor quantized them (FP16 bits, before the quantization), in GEMM order
  // (kQkv: one per GEMM, as `scales`; kOProj: its whole row, the slices in order; an FFN: x, then h's whole
  // row). The check's reference takes them in place of its own where they agree within the bound: a value
  // near a rounding boundary of the 8-bit grid (FP8 has 3 mantissa bits) rounds either way on the two sides,
  // and one such flip moves an output by more than FP16 storage does.
  std::vector<std::vector<std::uint16_t>> inputs;
};

// Per request, per position of its sequence that ran (a recomputed position: its last run), per model
// layer: its inputs the xPU quantized. Empty without W8A8 activation quantization.
using ExecutedQuantization = std::vector<std::vector<std::vector<std::vector<QuantizedInput>>>>;
// The quantized input vectors in `q` (an FFN's x and h two), every request, position and layer.
std::int64_t quantized_inputs(const ExecutedQuantization& q);
// LLM.int8()'s outlier columns as the xPU found them: its quantizing calls with the decomposition (each
// device's, each GEMM input's: what timing charges per MatMul8bitLt call, compiler::Op::xpu_bytes) and the
// columns they found, summed.
struct OutlierColumns {
  std::int64_t calls = 0, columns = 0;
  double mean() const { return calls > 0 ? static_cast<double>(columns) / static_cast<double>(calls) : 0.0; }
  void add(const std::vector<std::int32_t>& found) {
    ++calls;
    columns += static_cast<std::int64_t>(found.size());
  }
  OutlierColumns& operator+=(const OutlierColumns& o) {
    calls += o.calls;
    columns += o.columns;
    return *this;
  }
};

}  // namespace duplex::runtime::functional
