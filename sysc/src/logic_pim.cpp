#include "duplex/sysc/logic_pim.hpp"

#include <bit>
#include <vector>

#include <fmt/format.h>

#include "duplex/sysc/pim_command.hpp"

namespace duplex::sysc {

std::unique_ptr<pim::Datapath> make_configured_datapath(const PimSpec& pim) {
  if (pim.datapath == "golden") return pim::make_golden_datapath(pim::DatapathParams{});
  throw Error(
      fmt::format("pim.datapath '{}': this build creates only the golden datapath here; link "
                  "duplex_rtl_datapath and pass pim::make_datapath(\"{}\", ...) to the device",
                  pim.datapath, pim.datapath));
}

LogicPim::LogicPim(const HbmSpec& hbm, const PimSpec& pim, SparseMemory& memory,
                   std::unique_ptr<pim::Datapath> datapath)
    : hbm_(hbm), pim_(pim), memory_(memory), datapath_(std::move(datapath)) {
  if (pim.kind != PimKind::kLogicPim) throw Error(fmt::format("PIM '{}' is not a Logic-PIM", pim.name));
  if (!datapath_) throw Error("LogicPim needs a datapath");
  const std::uint64_t align = hbm.org.access_granularity.bytes;
  decoder_config_.memory_bytes = memory.capacity();
  // -1 (rejected by a command decoder) when the access granularity is not a power of two.
  decoder_config_.align_log2 = std::has_single_bit(align) ? std::countr_zero(align) : -1;
  decoder_config_.input_buffer_bytes = pim.input_buffer.bytes;
  decoder_config_.softmax_buffer_bytes = pim.softmax_buffer.bytes;
}

const PimOpTiming& LogicPim::timing(const PimOpShape& s) {
  const auto key = std::make_tuple(
      static_cast<int>(s.kind), s.kind == PimOpKind::kGemv ? s.tokens : s.group_size,
      s.kind == PimOpKind::kGemv ? s.rows : s.context, s.kind == PimOpKind::kGemv ? s.cols : s.head_dim,
      s.elements, static_cast<int>(s.activation_mode), s.kind == PimOpKind::kAttention && s.softcap,
      s.kind == PimOpKind::kAttention && s.sinks, s.kind == PimOpKind::kGemv && s.bias);
  auto it = memo_.find(key);
  if (it == memo_.end()) it = memo_.emplace(key, time_pim_op(hbm_, pim_, s)).first;
  counters_ += it->second.actions;
  return it->second;
}

namespace {

// Device memory behind the Datapath command interface.
class DeviceMemory final : public pim::CommandMemory {
 public:
  explicit DeviceMemory(SparseMemory& m) : m_(m) {}
  void read(std::uint64_t addr, void* dst, std::uint64_t bytes) override { m_.read(addr, dst, bytes); }
  void write(std::uint64_t addr, const void* src, std::uint64_t bytes) override {
    m_.write(addr, src, bytes);
  }

 private:
  SparseMemory& m_;
};

std::vector<std::uint16_t> load(const SparseMemory& m, std::uint64_t addr, std::int64_t n) {
  std::vector<std::uint16_t> v(static_cast<std::size_t>(n));
  m.read(addr, v.data(), static_cast<std::uint64_t>(n) * 2);
  return v;
}
}  // namespace

PimOpTiming LogicPim::gemv(const GemvArgs& a) {
  check_gemv(hbm_, pim_, memory_.capacity(), a);
  const std::vector<std::uint16_t> w = load(memory_, a.weights, a.rows * a.cols);
  const std::vector<std::uint16_t> x = load(memory_, a.inputs, a.tokens * a.cols);
  const std::vector<std::uint16_t> bias =
      a.has_bias() ? load(memory_, a.bias, a.rows) : std::vector<std::uint16_t>{};
  std::vector<std::uint16_t> y(static_cast<std::size_t>(a.tokens * a.rows));
  for (std::int64_t t = 0; t < a.tokens; ++t)
    datapath_->gemv_fp16(w.data(), x.data() + t * a.cols, y.data() + t * a.rows,
                         static_cast<std::size_t>(a.rows), static_cast<std::size_t>(a.cols),
                         a.has_bias() ? bias.data() : nullptr);
  memory_.write(a.outputs, y.data(), y.size() * 2);
  return timing(shape_of(a));
}

PimOpTiming LogicPim::attention(const AttentionArgs& a) {
  check_attention(hbm_, pim_, memory_.capacity(), a);
  // With sinks, the group's sink logits follow q: one load of group x (head_dim + 1).
  const std::vector<std::uint16_t> q = load(memory_, a.q, a.group * (a.head_dim + (a.sinks() ? 1 : 0)));
  const std::vector<std::uint16_t> k = load(memory_, a.k, a.context * a.head_dim);
  const std::vector<std::uint16_t> v = load(memory_, a.v, a.context * a.head_dim);
  std::vector<std::uint16_t> out(static_cast<std::size_t>(a.group * a.head_dim));
  datapath_->decode_attention_fp16(q.data(), k.data(), v.data(), static_cast<std::size_t>(a.group),
                                   static_cast<std::size_t>(a.context), static_cast<std::size_t>(a.head_dim),
                                   a.scale, a.softcap, out.data(),
                                   a.sinks() ? q.data() + a.group * a.head_dim : nullptr);
  memory_.write(a.out, out.data(), out.size() * 2);
  return timing(shape_of(a));
}

PimOpTiming LogicPim::activation(const ActivationArgs& a) {
  check_activation(hbm_, pim_, memory_.capacity(), a);
  const auto bytes = static_cast<std::uint64_t>(a.elements) * 2;
  const PimOpShape shape = shape_of(a);
  const std::vector<std::uint16_t> x = load(memory_, a.gate, a.elements);
  const std::vector<std::uint16_t> y = load(memory_, a.up, a.elements);
  std::vector<std::uint16_t> out(x.size());
  datapath_->activation_fp16_n(shape.activation_mode, x.data(), y.data(), out.data(), out.size());
  memory_.write(a.out, out.data(), bytes);
  return timing(shape);
}

PimCommandResult LogicPim::run_command(const hostif::CommandDescriptor& d) {
  const hostif::Status status = check_pim_command(hbm_, pim_, memory_.capacity(), d);
  const auto bytes = hostif::encode(d);
  DeviceMemory memory(memory_);
  if (const auto decoded = datapath_->run_command(bytes.data(), decoder_config_, memory)) {
    DUPLEX_ASSERT(*decoded == static_cast<std::uint16_t>(status),
                  fmt::format("command decoder status {} != check_pim_command status {} (opcode 0x{:x})",
                              *decoded, static_cast<int>(status), static_cast<unsigned>(d.opcode)));
    if (status != hostif::Status::kOk) return {status, {}};
    return {status, timing(shape_of(d))};
  }
  if (status != hostif::Status::kOk) return {status, {}};
  switch (d.opcode) {
    case hostif::Opcode::kPimGemv:
      return {status, gemv(gemv_args(d))};
    case hostif::Opcode::kPimAttention:
      return {status, attention(attention_args(d))};
    default:
      return {status, activation(activation_args(d))};
  }
}

}  // namespace duplex::sysc
