#include "duplex/runtime/device/xpu_device.hpp"

#include <algorithm>
#include <vector>

#include "duplex/base/error.hpp"

namespace duplex::runtime::device {
namespace {

using kernels::DType;
using kernels::Tensor;

Tensor f16(const std::uint16_t* p, std::initializer_list<std::int64_t> shape) {
  return Tensor::contiguous(const_cast<std::uint16_t*>(p), DType::kF16, shape);
}

}  // namespace

kernels::Activation kernel_activation(compiler::Activation a) {
  switch (a) {
    case compiler::Activation::kSilu:
      return kernels::Activation::kSilu;
    case compiler::Activation::kGeluTanh:
      return kernels::Activation::kGeluTanh;
    case compiler::Activation::kRelu:
      return kernels::Activation::kRelu;
    case compiler::Activation::kGelu:
      return kernels::Activation::kGelu;
    case compiler::Activation::kSwigluOai:
      return kernels::Activation::kSwigluOai;
  }
  DUPLEX_ASSERT(false, "an activation outside compiler::Activation");
  return kernels::Activation::kSilu;
}

kernels::RouterKind kernel_router(compiler::Router r) {
  switch (r) {
    case compiler::Router::kSoftmaxTopK:
      return kernels::RouterKind::kSoftmaxTopK;
    case compiler::Router::kSparseMixer:
      return kernels::RouterKind::kSparseMixer;
    case compiler::Router::kGroupLimited:
      return kernels::RouterKind::kGroupLimited;
    case compiler::Router::kNoAuxTc:
      return kernels::RouterKind::kNoAuxTc;
    case compiler::Router::kSigmoidTopK:
      return kernels::RouterKind::kSigmoidTopK;
  }
  DUPLEX_ASSERT(false, "a router outside compiler::Router");
  return kernels::RouterKind::kSoftmaxTopK;
}

XpuDevice::XpuDevice(std::string name, std::unique_ptr<kernels::Backend> backend)
    : name_(std::move(name)), backend_(std::move(backend)) {
  DUPLEX_ASSERT(backend_ != nullptr, "an XpuDevice without a backend");
}

std::string XpuDevice::describe() const {
  return "XpuDevice (" + backend_->description() + ")";
}

bool XpuDevice::executes(compiler::OpKind kind) const {
  return kind != compiler::OpKind::kAllToAll && kind != compiler::OpKind::kPimTransfer &&
         kind != compiler::OpKind::kStageSend && kind != compiler::OpKind::kExpertMove;
}

void XpuDevice::run(compiler::OpKind kind, const kernels::OpArgs& args) {
  admit(kind);
  kernels::Status s = backend_->can_implement(args);
  if (s.ok()) s = backend_->run(args, kernels::Stream{});
  DUPLEX_ASSERT(s.ok(), name_ + ": " + s.to_string());
}

void XpuDevice::linear(compiler::OpKind kind, const std::uint16_t* w, const std::uint16_t* x,
                       std::uint16_t* y, std::size_t m, std::size_t n, std::size_t k) {
  const auto mi = static_cast<std::int64_t>(m), ni = static_cast<std::int64_t>(n),
             ki = static_cast<std::int64_t>(k);
  run(kind, kernels::GemmArgs{f16(x, {mi, ki}), f16(w, {ni, ki}), f16(y, {mi, ni})});
}

void XpuDevice::ffn(compiler::OpKind kind, const functional::FfnWeights& w, const std::uint16_t* x,
                    std::uint16_t* y, std::size_t m) {
  quantized_ffn(kind, w, x, y, m, {}, {}, nullptr, nullptr);
}

void XpuDevice::quantized_ffn(compiler::OpKind kind, const functional::FfnWeights& w, const std::uint16_t* x,
                              std::uint16_t* y, std::size_t m, const kernels::ActivationQuant& quant_x,
                              const kernels::ActivationQuant& quant_h, float* scales, std::uint16_t* h_out,
                              std::int32_t* outliers) {
  const auto mi = static_cast<std::int64_t>(m), fi = static_cast<std::int64_t>(w.f),
             hi = static_cast<std::int64_t>(w.h);
  const std::vector<std::int64_t> offsets{0, mi};
  kernels::ExpertFfnArgs a;
  a.kind = w.gated() ? kernels::FfnKind::kGated : kernels::FfnKind::kTwoMatrix;
  a.activation = kernel_activation(w.activation);
  a.x = f16(x, {mi, hi});
  a.w_in = f16(w.w_in, {1, fi, hi});
  if (w.gated()) a.w_up = f16(w.w_up, {1, fi, hi});
  a.w_down = f16(w.w_down, {1, hi, fi});
  if (w.b_in != nullptr) a.b_in = f16(w.b_in, {1, fi});
  if (w.b_up != nullptr) a.b_up = f16(w.b_up, {1, fi});
  if (w.b_down != nullptr) a.b_down = f16(w.b_down, {1, hi});
  a.y = f16(y, {mi, hi});
  a.expert_offsets = offsets;
  a.quant_x = quant_x;
  a.quant_h = quant_h;
  if (scales != nullptr) a.quant_scales = kernels::Tensor::contiguous(scales, kernels::DType::kF32, {2});
  if (h_out != nullptr) a.h_out = f16(h_out, {mi, fi});
  if (outliers != nullptr) a.quant_outliers = Tensor::contiguous(outliers, DType::kI32, {hi + fi});
  run(kind, a);
}

void XpuDevice::decode_attention(const DecodeAttentionBatch& b) {
  const std::int64_t d = b.kv.head_dim;
  std::int64_t max_blocks = 1, max_context = 0;
  for (std::size_t r = 0; r < b.block_tables.size(); ++r) {
    max_blocks = std::max<std::int64_t>(max_blocks, static_cast<std::int64_t>(b.block_tables[r]->size()));
    max_context = std::max<std::int64_t>(max_context, b.context_lens[r]);
  }
  std::vector<std::int32_t> table(static_cast<std::size_t>(b.rows * max_blocks), 0);
  std::vector<std::int32_t> lens = b.context_lens;
  for (std::int64_t r = 0; r < b.rows; ++r) {
    const auto& blocks = *b.block_tables[static_cast<std::size_t>(r)];
    std::copy(blocks.begin(), blocks.end(), table.begin() + r * max_blocks);
  }
  kernels::DecodeAttentionArgs a;
  a.q = f16(b.q, {b.rows, b.q_heads, d});
  a.k_cache = f16(b.kv.k_pool, {b.kv.num_blocks, b.kv.block_tokens, b.kv.kv_heads, d});
  a.v_cache = f16(b.kv.v_pool, {b.kv.num_blocks, b.kv.block_tokens, b.kv.kv_heads, d});
  a.block_table = Tensor::contiguous(table.data(), DType::kI32, {b.rows, max_blocks});
  a.context_lens = Tensor::contiguous(lens.data(), DType::kI32, {b.rows});
  a.out = Tensor::contiguous(b.out, DType::kF16, {b.rows, b.q_heads, d});
  a.scale = b.scale;
  a.softcap = b.softcap;
  if (b.sinks != nullptr) a.sinks = f16(b.sinks, {b.q_heads});
  a.max_context_len = max_context;
  a.window = b.window;
  a.chunk = b.chunk;
  run(compiler::OpKind::kAttentionDecode, a);
}

}  // namespace duplex::runtime::device
