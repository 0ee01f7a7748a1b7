#include <fmt/format.h>
#include <vector>

#include "duplex/rtl/datapath.hpp"
#include "duplex/runtime/functional/pim_unit.hpp"

namespace duplex::runtime::functional {
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

  void gated_ffn(const std::uint16_t* w_gate, const std::uint16_t* w_up, const std::uint16_t* w_down,
                 const std::uint16_t* x, std::uint16_t* y, std::size_t m, std::size_t f,
                 std::size_t h) override {
    std::vector<std::uint16_t> gate(f), up(f), act(f);
    for (std::size_t r = 0; r < m; ++r) {
      dp_->gemv_fp16(w_gate, x + r * h, gate.data(), f, h);
      dp_->gemv_fp16(w_up, x + r * h, up.data(), f, h);
      dp_->silu_gate_fp16_n(gate.data(), up.data(), act.data(), f);
      dp_->gemv_fp16(w_down, act.data(), y + r * h, h, f);
    }
  }

  void attention(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v, std::size_t group,
                 std::size_t t, std::size_t d, std::uint16_t scale, std::uint16_t* out) override {
    dp_->decode_attention_fp16(q, k, v, group, t, d, scale, out);
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
