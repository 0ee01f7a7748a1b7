#pragma once
// The xPU of one device: every compute op kind, on a kernels::Backend (the CPU backend in functional
// emulation). Besides IDevice's ops it launches the xPU-only kernels (norm, RoPE, router, permutes, prefill
// attention, grouped experts, LM head, the sum of partials standing for an all-reduce) through run().
#include <memory>
#include <string>

#include "duplex/compiler/model_spec.hpp"
#include "duplex/kernels/backend.hpp"
#include "duplex/runtime/device/idevice.hpp"

namespace duplex::runtime::device {

// The kernels' activation for the model's (GELU only in its tanh form: the exact one is an executor bug).
kernels::Activation kernel_activation(compiler::Activation a);
// The router kernel's kind for the model's router.
kernels::RouterKind kernel_router(compiler::Router r);

class XpuDevice final : public IDevice {
 public:
  XpuDevice(std::string name, std::unique_ptr<kernels::Backend> backend);

  const std::string& name() const override { return name_; }
  compiler::Unit unit() const override { return compiler::Unit::kXpu; }
  std::string describe() const override;  // "XpuDevice (cpu: ...)"
  // Every op kind but the pure data movements (all-to-all, PIM transfers); an all-reduce's sum of partials
  // runs on the xPU.
  bool executes(compiler::OpKind kind) const override;
  std::string memory_spaces() const override { return "all HBM stacks (every bank-bundle space)"; }

  void linear(compiler::OpKind kind, const std::uint16_t* w, const std::uint16_t* x, std::uint16_t* y,
              std::size_t m, std::size_t n, std::size_t k) override;
  void ffn(compiler::OpKind kind, const functional::FfnWeights& w, const std::uint16_t* x, std::uint16_t* y,
           std::size_t m) override;
  void decode_attention(const DecodeAttentionBatch& batch) override;
  // ffn with a W8A8 GEMM's activation quantization of x and h (kernels::ExpertFfnArgs::quant_x / quant_h;
  // functional/activation_quant.hpp); scales[2] receives their per-tensor or static scales (0 for neither),
  // h_out [m, w.f] (nullable) h before its quantization; outliers [w.h + w.f] (with a decomposing spec,
  // LLM.int8(); nullable otherwise) x's then h's outlier-column marks
  // (kernels::ExpertFfnArgs::quant_outliers, zero on entry).
  void quantized_ffn(compiler::OpKind kind, const functional::FfnWeights& w, const std::uint16_t* x,
                     std::uint16_t* y, std::size_t m, const kernels::ActivationQuant& quant_x,
                     const kernels::ActivationQuant& quant_h, float* scales, std::uint16_t* h_out,
                     std::int32_t* outliers = nullptr);

  // Launches one kernel for an op of `kind`; the backend refusing it is an executor bug (DUPLEX_ASSERT).
  void run(compiler::OpKind kind, const kernels::OpArgs& args);
  const kernels::Backend& backend() const { return *backend_; }

 private:
  std::string name_;
  std::unique_ptr<kernels::Backend> backend_;
};

}  // namespace duplex::runtime::device
