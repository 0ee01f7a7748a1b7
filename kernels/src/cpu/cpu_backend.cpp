// The CPU backend: validation, one dispatch over the op variant, host memory. Streams and events are
// trivial: every run finishes before it returns.
#include <cblas.h>
#include <fmt/format.h>
#include <tbb/info.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "../validate.hpp"
#include "cpu_ops.hpp"
#include "duplex/base/error.hpp"
#include "duplex/kernels/backend.hpp"

namespace duplex::kernels {
namespace {

struct CpuDispatch {
  Status operator()(const GemmArgs& a) const { return cpu::gemm(a); }
  Status operator()(const GemvArgs& a) const { return cpu::gemv(a); }
  Status operator()(const NormArgs& a) const { return cpu::norm(a); }
  Status operator()(const RopeArgs& a) const { return cpu::rope(a); }
  Status operator()(const PrefillAttentionArgs& a) const { return cpu::prefill_attention(a); }
  Status operator()(const DecodeAttentionArgs& a) const { return cpu::decode_attention(a); }
  Status operator()(const SoftmaxArgs& a) const { return cpu::softmax(a); }
  Status operator()(const RouterArgs& a) const { return cpu::router(a); }
  Status operator()(const PermuteArgs& a) const { return cpu::permute(a); }
  Status operator()(const UnpermuteArgs& a) const { return cpu::unpermute(a); }
  Status operator()(const ExpertFfnArgs& a) const { return cpu::expert_ffn(a); }
  Status operator()(const ResidualAddArgs& a) const { return cpu::residual_add(a); }
  Status operator()(const EmbeddingArgs& a) const { return cpu::embedding(a); }
  Status operator()(const LmHeadArgs& a) const { return cpu::lm_head(a); }
  Status operator()(const PartialSumArgs& a) const { return cpu::partial_sum(a); }
  Status operator()(const ClampArgs& a) const { return cpu::clamp(a); }
  Status operator()(const AttnTemperatureArgs& a) const { return cpu::attn_temperature(a); }
  Status operator()(const QuantizeArgs& a) const { return cpu::quantize(a); }
};

// OpenBLAS takes int extents: the ops that call it refuse operands whose extents would overflow one.
struct CpuLimits {
  template <class Args>
  Status operator()(const Args& args) const {
    if constexpr (std::is_same_v<Args, GemmArgs>)
      return fits(args.a, args.b, args.c);
    else if constexpr (std::is_same_v<Args, GemvArgs>)
      return fits(args.w, args.x, args.y);
    else if constexpr (std::is_same_v<Args, LmHeadArgs>)
      return fits(args.hidden, args.weight, args.next_ids);
    else if constexpr (std::is_same_v<Args, RouterArgs>)
      return fits(args.hidden, args.gate_weight, args.topk_ids);
    else if constexpr (std::is_same_v<Args, ExpertFfnArgs>)
      return fits(args.x, args.w_in, args.y);
    else
      return {};
  }
  static Status fits(const Tensor& a, const Tensor& b, const Tensor& c) {
    for (const Tensor* t : {&a, &b, &c})
      for (int d = 0; d < t->rank; ++d)
        if (t->dim(d) > INT_MAX)
          return {StatusCode::kUnsupportedShape,
                  fmt::format("cpu: {} has an extent above {} (the BLAS int limit)", t->describe(), INT_MAX)};
    return {};
  }
};

class CpuBackend final : public Backend {
 public:
  BackendKind kind() const override { return BackendKind::kCpu; }
  std::string description() const override {
    return fmt::format("cpu ({} threads, OpenBLAS: {})", tbb::info::default_concurrency(),
                       openblas_get_config());
  }
  Location memory_location() const override { return Location::kHost; }

  Status can_implement(const OpArgs& args) const override {
    Status status = validate_op(args, Location::kHost);
    if (!status.ok()) return status;
    return std::visit(CpuLimits{}, args);
  }
  Status run(const OpArgs& args, Stream) override {
    Status status = can_implement(args);
    if (!status.ok()) return status;
    return std::visit(CpuDispatch{}, args);
  }

  void* allocate(std::size_t bytes) override {
    const std::size_t rounded = (std::max<std::size_t>(bytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
    void* p = std::aligned_alloc(kAlignment, rounded);
    if (p == nullptr) throw Error(fmt::format("cpu backend: cannot allocate {} bytes of host memory", bytes));
    return p;
  }
  void deallocate(void* ptr) noexcept override { std::free(ptr); }
  Status copy_from_host(void* dst, const void* src, std::size_t bytes, Stream) override {
    if (bytes != 0) std::memcpy(dst, src, bytes);
    return {};
  }
  Status copy_to_host(void* dst, const void* src, std::size_t bytes, Stream) override {
    if (bytes != 0) std::memcpy(dst, src, bytes);
    return {};
  }

  Stream create_stream() override { return {}; }
  void destroy_stream(Stream) noexcept override {}
  Event create_event() override { return {}; }
  void destroy_event(Event) noexcept override {}
  Status record_event(Event, Stream) override { return {}; }
  Status stream_wait_event(Stream, Event) override { return {}; }
  Status synchronize(Stream) override { return {}; }

 private:
  static constexpr std::size_t kAlignment = 64;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() {
  return std::make_unique<CpuBackend>();
}

}  // namespace duplex::kernels
