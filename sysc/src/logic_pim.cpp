#include "duplex/sysc/logic_pim.hpp"

#include <vector>

#include <fmt/format.h>

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
}

void LogicPim::check_operand(std::uint64_t addr, std::uint64_t bytes, const char* name) const {
  const std::uint64_t align = hbm_.org.access_granularity.bytes;
  if (addr % align != 0)
    throw PimOpError(
        PimFault::kMisaligned,
        fmt::format("PIM operand {} at 0x{:x} is not aligned to the {} B access", name, addr, align));
  if (addr > memory_.capacity() || bytes > memory_.capacity() - addr)
    throw PimOpError(PimFault::kOutOfRange, fmt::format("PIM operand {} [0x{:x}, +{}) is outside the {} B of "
                                                        "device memory",
                                                        name, addr, bytes, memory_.capacity()));
}

const PimOpTiming& LogicPim::timing(const PimOpShape& s) {
  const auto key =
      std::make_tuple(static_cast<int>(s.kind), s.kind == PimOpKind::kGemv ? s.tokens : s.group_size,
                      s.kind == PimOpKind::kGemv ? s.rows : s.context,
                      s.kind == PimOpKind::kGemv ? s.cols : s.head_dim, s.elements);
  auto it = memo_.find(key);
  if (it == memo_.end()) it = memo_.emplace(key, time_pim_op(hbm_, pim_, s)).first;
  counters_ += it->second.actions;
  return it->second;
}

namespace {
std::vector<std::uint16_t> load(const SparseMemory& m, std::uint64_t addr, std::int64_t n) {
  std::vector<std::uint16_t> v(static_cast<std::size_t>(n));
  m.read(addr, v.data(), static_cast<std::uint64_t>(n) * 2);
  return v;
}
}  // namespace

PimOpTiming LogicPim::gemv(const GemvArgs& a) {
  PimOpShape s;
  s.kind = PimOpKind::kGemv;
  s.tokens = a.tokens;
  s.rows = a.rows;
  s.cols = a.cols;
  check_pim_op(hbm_, pim_, s);
  check_operand(a.weights, static_cast<std::uint64_t>(a.rows * a.cols) * 2, "weights");
  check_operand(a.inputs, static_cast<std::uint64_t>(a.tokens * a.cols) * 2, "inputs");
  check_operand(a.outputs, static_cast<std::uint64_t>(a.tokens * a.rows) * 2, "outputs");
  const std::vector<std::uint16_t> w = load(memory_, a.weights, a.rows * a.cols);
  const std::vector<std::uint16_t> x = load(memory_, a.inputs, a.tokens * a.cols);
  std::vector<std::uint16_t> y(static_cast<std::size_t>(a.tokens * a.rows));
  for (std::int64_t t = 0; t < a.tokens; ++t)
    datapath_->gemv_fp16(w.data(), x.data() + t * a.cols, y.data() + t * a.rows,
                         static_cast<std::size_t>(a.rows), static_cast<std::size_t>(a.cols));
  memory_.write(a.outputs, y.data(), y.size() * 2);
  return timing(s);
}

PimOpTiming LogicPim::attention(const AttentionArgs& a) {
  PimOpShape s;
  s.kind = PimOpKind::kAttention;
  s.group_size = a.group;
  s.context = a.context;
  s.head_dim = a.head_dim;
  s.kv_heads = 1;
  check_pim_op(hbm_, pim_, s);
  check_operand(a.q, static_cast<std::uint64_t>(a.group * a.head_dim) * 2, "q");
  check_operand(a.k, static_cast<std::uint64_t>(a.context * a.head_dim) * 2, "k");
  check_operand(a.v, static_cast<std::uint64_t>(a.context * a.head_dim) * 2, "v");
  check_operand(a.out, static_cast<std::uint64_t>(a.group * a.head_dim) * 2, "out");
  const std::vector<std::uint16_t> q = load(memory_, a.q, a.group * a.head_dim);
  const std::vector<std::uint16_t> k = load(memory_, a.k, a.context * a.head_dim);
  const std::vector<std::uint16_t> v = load(memory_, a.v, a.context * a.head_dim);
  std::vector<std::uint16_t> out(static_cast<std::size_t>(a.group * a.head_dim));
  datapath_->decode_attention_fp16(q.data(), k.data(), v.data(), static_cast<std::size_t>(a.group),
                                   static_cast<std::size_t>(a.context), static_cast<std::size_t>(a.head_dim),
                                   a.scale, out.data());
  memory_.write(a.out, out.data(), out.size() * 2);
  return timing(s);
}

PimOpTiming LogicPim::activation(const ActivationArgs& a) {
  PimOpShape s;
  s.kind = PimOpKind::kActivation;
  s.elements = a.elements;
  check_pim_op(hbm_, pim_, s);
  const auto bytes = static_cast<std::uint64_t>(a.elements) * 2;
  check_operand(a.gate, bytes, "gate");
  check_operand(a.up, bytes, "up");
  check_operand(a.out, bytes, "out");
  const std::vector<std::uint16_t> g = load(memory_, a.gate, a.elements);
  const std::vector<std::uint16_t> u = load(memory_, a.up, a.elements);
  std::vector<std::uint16_t> out(g.size());
  datapath_->silu_gate_fp16_n(g.data(), u.data(), out.data(), out.size());
  memory_.write(a.out, out.data(), bytes);
  return timing(s);
}

}  // namespace duplex::sysc
