#pragma once
// Drives a Scheduler with a RequestSource and a step-time model until every request has finished: the
// smallest complete serving simulation. The engine (device timing, energy) supplies step_time; tests and
// benchmarks supply simple closed-form ones.
#include <cstdint>
#include <functional>
#include <map>

#include "duplex/base/units.hpp"
#include "duplex/runtime/scheduler/scheduler.hpp"
#include "duplex/runtime/workload/request_source.hpp"

namespace duplex::runtime {

// Duration of one step (must be > 0; duplex::Error otherwise).
using StepTimeModel = std::function<Time(const StepPlan&)>;
// Called after each step with its plan and what update() reported.
using StepObserver = std::function<void(const StepPlan&, const StepOutcome&, const Scheduler&)>;

struct ServingRun {
  std::int64_t steps = 0;
  Time end;                                     // time the last step finished
  std::map<RequestId, RequestRecord> records;   // every request, by id
};

// Throws duplex::Error when `max_steps` (> 0) steps pass without finishing (a guard against runaway
// configurations), and InternalError if the scheduler stalls with work left.
ServingRun run_serving_loop(Scheduler& scheduler, RequestSource& source, const StepTimeModel& step_time,
                            const StepObserver& observer = {}, std::int64_t max_steps = 100'000'000);

}  // namespace duplex::runtime
