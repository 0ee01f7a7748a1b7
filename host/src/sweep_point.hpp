#pragma once
// One design point of a sweep: load the model and system, simulate, and turn the result into the point's
// JSON record (schema in bench/repro/README.md). A point that cannot run (unknown system, model that does
// not fit, internal error) gives a record with "status": "failed" and the error text; it never throws.
#include <nlohmann/json.hpp>

#include "duplex/runtime/sim/serving_simulator.hpp"
#include "sweep_study.hpp"

namespace duplex::host {

nlohmann::json run_point(const SweepPoint& point, const StudyOptions& options);

// The parts of a result the report draws, beyond SystemResult::to_json(). Exposed for tests.
// Evenly spaced per-step rows (at most `samples`): [start_s, requests, decode_requests, prefill_tokens,
// kv_blocks_used, kv_blocks_capacity].
nlohmann::json sampled_steps(const std::vector<runtime::StepRow>& rows, std::int64_t samples);
// Per (op kind, unit) over the recorded timeline steps: count, flops, bytes, time_s (device 0).
nlohmann::json op_kind_stats(const std::vector<runtime::TimelineStep>& timeline);
// Device 0's lane events of the recorded steps, microseconds from the first recorded step's start.
nlohmann::json lane_events(const std::vector<runtime::TimelineStep>& timeline);
// The units' roofs per device (SI): xPU peak FP16 and memory bandwidth; PIM peak and bandwidth (0 without).
nlohmann::json roofs(const SystemSpec& system);

}  // namespace duplex::host
