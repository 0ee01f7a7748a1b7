#include <fmt/format.h>
#include <vector>

#include "duplex/base/error.hpp"
#include "duplex/rtl/datapath.hpp"
#include "duplex/runtime/functional/pim_unit.hpp"

namespace duplex::runtime::functional {

pim::ActivationMode activation_mode(const FfnWeights& w) {
  using compiler::Activation;
  using Mode = pim::ActivationMode;
  const bool g = w.gated();
  switch (w.activation) {
    case Activation::kSwigluOai:
      DUPLEX_ASSERT(g, "gpt-oss's clamped SwiGLU on a two-matrix FFN");
      return Mode::kSwigluOaiGate;
    case Activation::kSilu:
      return g ? Mode::kSiluGate : Mode::kSilu;
    case Activation::kGeluTanh:
      return g ? Mode::kGeluTanhGate : Mode::kGeluTanh;
    case Activation::kGelu:
      return g ? Mode::kGeluErfGate : Mode::kGeluErf;
    case Activation::kRelu:
      return g ? Mode::kReluGate : Mode::kRelu;
  }
  DUPLEX_ASSERT(false, "an activation outside compiler::Activation");
  return Mode::kSiluGate;
}

namespace {

class DatapathPimUnit final : public PimUnit {
 public:
  DatapathPimUnit(std::string_view kind, const std::string& trace_path)
      : dp_(pim::make_datapath(kind, pim::DatapathParams{}, trace_path)) {}

  std::string describe() const override { return fmt::format("logic-pim datapath {}", dp_->kind()); }

  void linear(const std::uint16_t* w, const std::uint16_t* x, std::uint16_t* y, std::size_t m, std::size_t n,
              std::size_t k) override {
    for (std::size_t r = 0; r < m; ++r) dp_->gemv_fp16(w, x + r * k, y + r * n, n, k);
  }

  // Gated: gemv gate, gemv up, activation (act(gate) x up), gemv down; their biases (gpt-oss's experts)
  // start the GEMVs' accumulators. Two-matrix: gemv fc1, activation (act(fc1 + bias); a zero bias without
  // one), gemv down.
  void ffn(const FfnWeights& w, const std::uint16_t* x, std::uint16_t* y, std::size_t m) override {
    const std::size_t f = w.f, h = w.h;
    const pim::ActivationMode mode = activation_mode(w);
    std::vector<std::uint16_t> in(f), second(f, 0), act(f);
    if (!w.gated() && w.b_in != nullptr) second.assign(w.b_in, w.b_in + f);
    const std::uint16_t* gate_bias = w.gated() ? w.b_in : nullptr;
    for (std::size_t r = 0; r < m; ++r) {
      dp_->gemv_fp16(w.w_in, x + r * h, in.data(), f, h, gate_bias);
      if (w.gated()) dp_->gemv_fp16(w.w_up, x + r * h, second.data(), f, h, w.b_up);
      dp_->activation_fp16_n(mode, in.data(), second.data(), act.data(), f);
      dp_->gemv_fp16(w.w_down, act.data(), y + r * h, h, f, w.b_down);
    }
  }

  void attention(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v, std::size_t group,
                 std::size_t t, std::size_t d, std::uint16_t scale, std::uint16_t softcap, std::uint16_t* out,
                 const std::uint16_t* sinks) override {
    dp_->decode_attention_fp16(q, k, v, group, t, d, scale, softcap, out, sinks);
  }

  std::optional<std::uint64_t> simulated_cycles() const override { return dp_->simulated_cycles(); }

 private:
  std::unique_ptr<pim::Datapath> dp_;
};

}  // namespace

std::unique_ptr<PimUnit> make_datapath_pim_unit(std::string_view datapath_kind,
                                                const std::string& trace_path) {
  return std::make_unique<DatapathPimUnit>(datapath_kind, trace_path);
}

}  // namespace duplex::runtime::functional
