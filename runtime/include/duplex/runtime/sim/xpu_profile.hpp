#pragma once
// A measured xPU profile (`duplex simulate --xpu-profile FILE`): op times measured on a real GPU replace the
// xPU roofline for the ops they cover.
//
// File: CSV with header `kind,m,n,k,time_us` (blank and '#' lines skipped). `kind` is an op kind name as the
// compiler prints it (qkv_proj, o_proj, expert_ffn, dense_ffn, shared_expert, router, lm_head); m = tokens,
// n x k = one weight matrix's shape on the device (the shape `duplex compile` shows); time_us = the measured
// time of the whole op, launch included.
// Lookup: rows of the op's kind and (n, k) are a curve over m; the time is interpolated linearly between the
// two measured m around the op's m, extrapolated from the nearest two beyond the ends (one row: that time,
// scaled by m / m_row above it). Ops whose (kind, n, k) the profile lacks keep the roofline (counted in
// fallbacks()).
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "duplex/base/units.hpp"
#include "duplex/compiler/op.hpp"

namespace duplex::runtime {

class XpuProfile {
 public:
  // Throws duplex::Error naming the file, line and column for a malformed file, an unknown kind, or two
  // rows for the same (kind, m, n, k).
  static XpuProfile load(const std::string& path);
  static XpuProfile parse(const std::string& text, const std::string& label);

  std::optional<Time> lookup(const compiler::Op& op) const;
  std::size_t shapes() const { return curves_.size(); }

 private:
  using Key = std::tuple<compiler::OpKind, std::int64_t, std::int64_t>;  // kind, n, k
  std::map<Key, std::vector<std::pair<std::int64_t, double>>> curves_;  // m -> seconds, sorted by m
};

}  // namespace duplex::runtime
