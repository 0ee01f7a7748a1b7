#include "duplex/runtime/sim/xpu_profile.hpp"

#include <algorithm>
#include <fmt/format.h>

#include "duplex/base/config_store.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/workload/csv.hpp"

namespace duplex::runtime {
namespace {

using compiler::OpKind;

std::optional<OpKind> kind_named(const std::string& name) {
  for (OpKind k : {OpKind::kQkvProj, OpKind::kOProj, OpKind::kExpertFfn, OpKind::kDenseFfn, OpKind::kSharedExpertFfn,
                   OpKind::kRouter, OpKind::kLmHead})
    if (compiler::op_kind_name(k) == name) return k;
  return std::nullopt;
}

}  // namespace

XpuProfile XpuProfile::load(const std::string& path) { return parse(read_text_file(path), path); }

XpuProfile XpuProfile::parse(const std::string& text, const std::string& label) {
  const CsvTable t = parse_csv(text, label);
  int col[5];
  const char* names[5] = {"kind", "m", "n", "k", "time_us"};
  for (int i = 0; i < 5; ++i) {
    col[i] = csv_column(t, names[i]);
    if (col[i] < 0)
      throw Error(fmt::format("{}: missing column \"{}\"; expected the header kind,m,n,k,time_us", label, names[i]));
  }
  XpuProfile p;
  for (const CsvRow& row : t.rows) {
    const std::string& kind_text = row.fields[static_cast<std::size_t>(col[0])];
    const auto kind = kind_named(kind_text);
    if (!kind)
      throw Error(fmt::format("{}:{}: column kind: \"{}\" is not a profiled op kind; expected qkv_proj, o_proj, "
                              "expert_ffn, dense_ffn, shared_expert, router or lm_head", label, row.line, kind_text));
    const std::int64_t m = csv_int(row, col[1], "m", label, 1, std::int64_t{1} << 40);
    const std::int64_t n = csv_int(row, col[2], "n", label, 1, std::int64_t{1} << 40);
    const std::int64_t k = csv_int(row, col[3], "k", label, 1, std::int64_t{1} << 40);
    const double us = csv_number(row, col[4], "time_us", label, 0.0);
    if (!(us > 0)) throw Error(fmt::format("{}:{}: column time_us: must be > 0", label, row.line));
    auto& curve = p.curves_[{*kind, n, k}];
    if (std::any_of(curve.begin(), curve.end(), [&](const auto& e) { return e.first == m; }))
      throw Error(fmt::format("{}:{}: a second row for {} m={} n={} k={}", label, row.line, kind_text, m, n, k));
    curve.emplace_back(m, us * 1e-6);
  }
  for (auto& [key, curve] : p.curves_) std::sort(curve.begin(), curve.end());
  return p;
}

std::optional<Time> XpuProfile::lookup(const compiler::Op& op) const {
  const auto it = curves_.find({op.kind, op.n, op.k});
  if (it == curves_.end() || op.m <= 0) return std::nullopt;
  const auto& c = it->second;
  const auto m = static_cast<double>(op.m);
  if (c.size() == 1) {
    const auto [m0, t0] = c.front();
    return seconds(op.m > m0 ? t0 * m / static_cast<double>(m0) : t0);
  }
  // The segment [i, i+1] around m (the first or last segment beyond the ends).
  std::size_t i = 0;
  while (i + 2 < c.size() && c[i + 1].first < op.m) ++i;
  const double m0 = static_cast<double>(c[i].first), m1 = static_cast<double>(c[i + 1].first);
  const double t = c[i].second + (c[i + 1].second - c[i].second) * (m - m0) / (m1 - m0);
  return seconds(std::max(t, 0.0));
}

}  // namespace duplex::runtime
