#pragma once
// The golden (C++) model of the Logic-PIM datapath: the bit-exact contract the RTL in rtl/ meets.
// All FP16 values are IEEE binary16 bit patterns (std::uint16_t); the number formats, operation order and
// rounding of every function are specified in rtl/golden/README.md, and the RTL produces identical bits.
// NaN results are always the canonical quiet NaN: 0x7E00 (FP16) / 0x7FC00000 (FP32), sign cleared.
#include <cstddef>
#include <cstdint>
#include <string>

namespace duplex::pim {

struct DatapathParams {
  // MAC lanes per GEMM-module pass = adder-tree width. A power of two in [1, 64]. Default 16: a GEMM
  // module's 512 FP16 MACs (paper) are organised as 32 dot-product lanes x 16-wide adder trees.
  int lanes = 16;
};

// Throws duplex::Error naming the field when params are out of range.
void validate(const DatapathParams& params);

// Largest softmax row (elements): the softmax unit keeps the FP16 scores of one row in its buffer
// (128 KiB in the paper; 64 KiB of scores + working storage). Longer rows throw duplex::Error.
inline constexpr std::size_t kSoftmaxMaxElements = 32768;

// One dot product as the GEMM-module lane computes it: products of FP16 pairs (exact in FP32), summed
// `lanes` at a time by a pairwise FP32 adder tree (RNE), each pass sum added to an FP32 accumulator (RNE)
// that starts at `init`: the FP16 bits of a bias (GEMV y = W x + bias) widened exactly to FP32, so the bias
// is added once, in FP32, before the caller's single rounding to FP16. init = +0 (0x0000, the default) is
// the plain dot product, bit for bit as before the bias existed. Lanes past k in the last pass hold +0
// products; k = 0 is one pass of +0 products, so it gives init + 0 (+0 for init +-0).
float dot_fp16(const std::uint16_t* a, const std::uint16_t* b, std::size_t k, const DatapathParams& params,
               std::uint16_t init = 0);

// Accumulator (FP32) -> FP16 output: round to nearest, ties to even; overflow -> Inf; NaN -> 0x7E00.
std::uint16_t to_fp16(float acc);

// y[r] = to_fp16(dot_fp16(W row r, x, init = bias[r])), r < n; W row-major [n][k]. bias: FP16 [n], each row's
// accumulator starts at its bias (y = W x + bias, rounded once); nullptr = none (init +0: y = W x).
void gemv_fp16(const std::uint16_t* w, const std::uint16_t* x, std::uint16_t* y, std::size_t n, std::size_t k,
               const DatapathParams& params, const std::uint16_t* bias = nullptr);

// Attention logit soft-cap (Gemma 2's attn_logit_softcapping): x -> c tanh(x / c) before the softmax.
// `softcap` holds the FP16 bits of c: +0 (0x0000) = no cap, else a finite FP16 > 0 (subnormals included).
// softcap_valid says whether bits are one of those; validate_softcap throws duplex::Error naming the value
// (negative, -0, Inf and NaN caps are refused).
bool softcap_valid(std::uint16_t softcap);
void validate_softcap(std::uint16_t softcap);

// The softmax unit's cap stage on one FP32 logit x (operation order and error: README.md): x itself for
// softcap = +0; else, with y = x / c, x P(y^2) for |y| < 1 (P a degree-7 polynomial fitted to tanh(y) / y)
// and sign(x) (c - 2c e^-2|y| / (1 + e^-2|y|)) (the exp and reciprocal units) beyond. Validates softcap.
float softcap_fp32(float x, std::uint16_t softcap);

// Softmax unit: probs[i] ~ exp(x'[i] - max_j x'[j]) / sum, x[i] = scale*s[i] and x' = softcap_fp32(x,
// softcap) (= x for softcap +0: the plain softmax of scale*s). FP16 in, FP16 out; 1 <= n <=
// kSoftmaxMaxElements (else duplex::Error); softcap as validate_softcap (else duplex::Error). exp and the
// reciprocal are table + linear interpolation approximations (README.md states them and their error).
// sink: one FP16 attention-sink logit S (gpt-oss, HF eager attention: already in the softmax's units, neither
// scaled nor capped), or nullptr for none (bit for bit the softmax without sinks). S joins the max and the
// sum as one more element and gets no probability: m = max(S, max x'), p_i = e^(x'_i - m) / (e^(S - m) +
// sum_i e^(x'_i - m)). Any bits are taken (operand data, like a score): a NaN sink makes every p NaN (as a
// NaN score does), +Inf gives NaN too (Inf - Inf), -Inf is exactly the softmax without a sink.
void softmax_fp16(const std::uint16_t* scores, std::size_t n, std::uint16_t scale, std::uint16_t softcap,
                  std::uint16_t* probs, const std::uint16_t* sink = nullptr);

// Activation unit modes (the a4 word of the kPimActivation host command, the mode of an activation micro-op):
// every FFN activation in two forms. Gated (a = gate, b = up): act(a) * b. Added (b = an addend, the fc1
// bias; 0 for none): act(a + b).
enum class ActivationMode : std::uint8_t {
  kSiluGate = 0,       // silu(a) * b                     (Llama, Mixtral, Qwen: SwiGLU)
  kGeluTanh = 1,       // gelu_tanh(a + b)                (StarCoder2, GPT-2: gelu_pytorch_tanh / gelu_new)
  kRelu = 2,           // relu(a + b)                     (OPT)
  kGeluErf = 3,        // gelu(a + b), the exact erf form (GLaM, BERT, GPT-NeoX: "gelu")
  kSilu = 4,           // silu(a + b)
  kGeluTanhGate = 5,   // gelu_tanh(a) * b                (Gemma: GeGLU, tanh form)
  kReluGate = 6,       // relu(a) * b                     (ReGLU)
  kGeluErfGate = 7,    // gelu(a) * b                     (GeGLU, erf form)
  kSwigluOaiGate = 8,  // g sigmoid(alpha g) (u + 1), g = min(a, limit), u = clamp(b, -limit, limit)
                       //                                 (gpt-oss: clamped SwiGLU)
};
inline constexpr int kActivationModes = 9;  // valid modes: 0 .. kActivationModes - 1 (a 4-bit mode field)
// The constants of gpt-oss's clamped SwiGLU (kSwigluOaiGate). source: HF transformers GptOssExperts (alpha =
// 1.702, limit = 7.0) and OpenAI's gpt-oss reference `swiglu(x, alpha=1.702, limit=7.0)`: glu = g *
// sigmoid(alpha * g), out = (u + 1) * glu with g = gate.clamp(max=limit), u = up.clamp(-limit, limit).
// The unit multiplies by alpha rounded to FP32 (kSwigluOaiAlphaFp32Bits, RNE of 1.702); the limit is exact
// in FP16 and FP32.
inline constexpr double kSwigluOaiAlpha = 1.702;
inline constexpr double kSwigluOaiLimit = 7.0;
inline constexpr std::uint32_t kSwigluOaiAlphaFp32Bits = 0x3FD9DB23u;  // 1.70200002193 = fp32(1.702)
// "silu-gate", "gelu-tanh", "relu", "gelu", "silu", "gelu-tanh-gate", "relu-gate", "gelu-gate",
// "swiglu-oai-gate"; duplex::Error for a value outside the enumeration.
const char* to_string(ActivationMode mode);
// "0 (silu-gate), 1 (gelu-tanh), ... or 8 (swiglu-oai-gate)": the valid modes, for error messages.
std::string activation_mode_names();
// Throws duplex::Error naming the value and the valid modes when `mode` is outside the enumeration (an
// unchecked integer cast to ActivationMode).
void validate(ActivationMode mode);
// True for the gated modes (b multiplies), false for the added ones (b is added first); validates.
bool is_gated(ActivationMode mode);

// Activation unit, FP16 in and out, rounded once to FP16 at the end (operation order: rtl/golden/README.md).
// s = a (gated) or a + b in FP32 (added); m = a * b exact (gated) or s (added); out = m * act(s) / s:
//  SiLU:      m * sigmoid(s).
//  GELU tanh: m * sigmoid(z), z = s (c1 + c3 s^2) = 2 sqrt(2/pi) (s + 0.044715 s^3); gelu_tanh(s)
//             = 0.5 s (1 + tanh(sqrt(2/pi) (s + 0.044715 s^3))) = s * sigmoid(z).
//  GELU erf:  m * sigmoid(z), z = s G(min(s^2, 36)), G a degree-7 polynomial fitted to logit(Phi(s))
//             (gelu(s) = s Phi(s); rtl/scripts/fit_gelu_erf.py).
//  ReLU:      added: s > 0 ? s : +0 (also +0 for s = -0); gated: relu(a) * b with relu(a) = a > 0 ? a : +0.
//             NaN -> NaN.
//  SwiGLU-OAI (kSwigluOaiGate, gpt-oss): g = min(a, 7), u = min(max(b, -7), 7) (NaN stays NaN); m = g (u +
//  1),
//             out = m * sigmoid(alpha g) with alpha = fp32(1.702) (each step FP32 RNE).
// Throws duplex::Error for a mode outside the enumeration.
std::uint16_t activation_fp16(ActivationMode mode, std::uint16_t a, std::uint16_t b);

// Activation unit, SiLU-gate mode: silu(gate) * up = gate * sigmoid(gate) * up, rounded once to FP16.
std::uint16_t silu_gate_fp16(std::uint16_t gate, std::uint16_t up);

// Decode attention for one GQA group as the Logic-PIM composes it from the units above:
// q [group][d], K [t][d], V [t][d] (row-major FP16), scale FP16 (usually 1/sqrt(d)), softcap FP16 (+0: none;
// Gemma 2: attn_logit_softcapping) -> out [group][d]:
//   s[t] = to_fp16(dot(q_g, K_t)); p = softmax_fp16(s, scale, softcap, sink_g); out[g][j] = to_fp16(dot(p,
//   V[:, j])).
// sinks: FP16 [group], the attention-sink logit of each query head of the group (gpt-oss), or nullptr (none).
// t must be in [1, kSoftmaxMaxElements]; softcap as validate_softcap (else duplex::Error).
void decode_attention_fp16(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                           std::size_t group, std::size_t t, std::size_t d, std::uint16_t scale,
                           std::uint16_t softcap, std::uint16_t* out, const DatapathParams& params,
                           const std::uint16_t* sinks = nullptr);

}  // namespace duplex::pim
