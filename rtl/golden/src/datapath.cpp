// Datapath interface: the composed decode-attention op and the golden implementation.
#include "duplex/rtl/datapath.hpp"

#include <string>
#include <vector>

#include "duplex/base/error.hpp"

namespace duplex::pim {

void Datapath::decode_attention_fp16(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                                     std::size_t group, std::size_t t, std::size_t d, std::uint16_t scale,
                                     std::uint16_t softcap, std::uint16_t* out, const std::uint16_t* sinks) {
  validate_softcap(softcap);
  if (t == 0 || t > kSoftmaxMaxElements)
    throw Error("pim decode attention: t = " + std::to_string(t) + "; expected 1.." +
                std::to_string(kSoftmaxMaxElements) + " context tokens");
  // V^T (d x t) once, so out[g][:] = gemv(V^T, p): each output uses the unit's own FP16 rounding.
  std::vector<std::uint16_t> v_t(d * t);
  for (std::size_t i = 0; i < t; ++i)
    for (std::size_t j = 0; j < d; ++j) v_t[j * t + i] = v[i * d + j];
  std::vector<std::uint16_t> s(t);
  std::vector<std::uint16_t> p(t);
  for (std::size_t g = 0; g < group; ++g) {
    gemv_fp16(k, q + g * d, s.data(), t, d);
    softmax_fp16(s.data(), t, scale, softcap, p.data(), sinks != nullptr ? sinks + g : nullptr);
    gemv_fp16(v_t.data(), p.data(), out + g * d, d, t);
  }
}

std::uint16_t Datapath::silu_gate_fp16(std::uint16_t gate, std::uint16_t up) {
  std::uint16_t out = 0;
  activation_fp16_n(ActivationMode::kSiluGate, &gate, &up, &out, 1);
  return out;
}

void Datapath::silu_gate_fp16_n(const std::uint16_t* gate, const std::uint16_t* up, std::uint16_t* out,
                                std::size_t n) {
  activation_fp16_n(ActivationMode::kSiluGate, gate, up, out, n);
}

std::optional<std::uint16_t> Datapath::run_command(const std::uint8_t*, const CommandDecoderConfig&,
                                                   CommandMemory&) {
  return std::nullopt;
}

namespace {

class GoldenDatapath final : public Datapath {
 public:
  explicit GoldenDatapath(const DatapathParams& params) : params_(params) { validate(params_); }
  std::string_view kind() const override { return "golden"; }
  const DatapathParams& params() const override { return params_; }
  float dot_fp16(const std::uint16_t* a, const std::uint16_t* b, std::size_t k, std::uint16_t init) override {
    return pim::dot_fp16(a, b, k, params_, init);
  }
  void gemv_fp16(const std::uint16_t* w, const std::uint16_t* x, std::uint16_t* y, std::size_t n,
                 std::size_t k, const std::uint16_t* bias) override {
    pim::gemv_fp16(w, x, y, n, k, params_, bias);
  }
  void softmax_fp16(const std::uint16_t* scores, std::size_t n, std::uint16_t scale, std::uint16_t softcap,
                    std::uint16_t* probs, const std::uint16_t* sink) override {
    pim::softmax_fp16(scores, n, scale, softcap, probs, sink);
  }
  void activation_fp16_n(ActivationMode mode, const std::uint16_t* a, const std::uint16_t* b,
                         std::uint16_t* out, std::size_t n) override {
    validate(mode);
    for (std::size_t i = 0; i < n; ++i) out[i] = pim::activation_fp16(mode, a[i], b[i]);
  }
  std::optional<std::uint64_t> simulated_cycles() const override { return std::nullopt; }

 private:
  DatapathParams params_;
};

}  // namespace

std::unique_ptr<Datapath> make_golden_datapath(const DatapathParams& params) {
  return std::make_unique<GoldenDatapath>(params);
}

}  // namespace duplex::pim
