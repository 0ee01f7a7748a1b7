#pragma once
// Runs a study's points in parallel (oneTBB, at most `jobs` at a time) into a result folder:
//   <out>/study.json          the study and its points in order (written first, so a partial folder says
//                             what it should contain)
//   <out>/points/<id>.json    one record per point (sweep_point.hpp), written atomically
//   <out>/combined.csv        one row per point in study order, written at the end
//   <out>/wall_times.csv      wall seconds of the points run this time (the only non-deterministic file)
// Resumable: a point whose file holds "status": "ok" with the same params is skipped; failed, corrupt or
// stale (params changed) points run again. Every other file is byte-identical for any `jobs`.
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "sweep_study.hpp"

namespace duplex::host {

struct SweepSummary {
  std::int64_t points = 0, skipped = 0, ran = 0, failed = 0;  // failed: of all points, after this run
  double wall_s = 0;
};

// Runs one point; replaceable for tests. Must not throw for a bad point (see run_point).
using PointRunner = std::function<nlohmann::json(const SweepPoint&, const StudyOptions&)>;

// `progress` (may be empty) receives one line per finished point; it is called under a lock.
SweepSummary run_sweep(const Study& study, const std::string& out_dir, int jobs,
                       const std::function<void(const std::string&)>& progress = {},
                       const PointRunner& runner = {});

// The combined CSV of the stored point records, in study order.
std::string combined_csv(const std::vector<nlohmann::json>& records);

}  // namespace duplex::host
