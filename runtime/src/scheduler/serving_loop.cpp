#include "duplex/runtime/scheduler/serving_loop.hpp"

#include <algorithm>
#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::runtime {

ServingRun run_serving_loop(Scheduler& scheduler, RequestSource& source, const StepTimeModel& step_time,
                            const StepObserver& observer, std::int64_t max_steps) {
  ServingRun run;
  Time now;
  for (;;) {
    for (const RequestSpec& spec : source.take_arrived(now)) scheduler.add_request(spec);
    const StepPlan plan = scheduler.schedule(now);
    if (plan.empty()) {
      // Nothing can run now: jump to the next arrival, or stop when no request is left anywhere.
      std::optional<Time> next = source.next_arrival();
      if (const auto queued = scheduler.next_arrival_after(now)) next = next ? std::min(*next, *queued) : *queued;
      if (next) {
        DUPLEX_ASSERT(*next > now, "idle with an arrived request left");
        now = *next;
        continue;
      }
      DUPLEX_ASSERT(!scheduler.has_unfinished(), fmt::format("the scheduler stalled at step {} with {} running and "
                                                             "{} waiting requests", run.steps,
                                                             scheduler.num_running(), scheduler.num_waiting()));
      DUPLEX_ASSERT(source.exhausted(), "the request source is idle but not exhausted");
      break;
    }
    if (run.steps == max_steps)
      throw Error(fmt::format("serving simulation exceeded {} steps with {} requests unfinished; expected fewer "
                              "requests or a larger step limit", max_steps,
                              scheduler.num_running() + scheduler.num_waiting()));
    const Time duration = step_time(plan);
    if (!(duration > Time{}))
      throw Error(fmt::format("step {} would take {}; expected a step time model giving positive durations",
                              plan.step, format_time(duration)));
    now += duration;
    const StepOutcome outcome = scheduler.update(StepResult{plan.step, now});
    ++run.steps;
    for (const RequestId id : outcome.finished) source.on_finished(id, now);
    if (observer) observer(plan, outcome, scheduler);
  }
  run.end = now;
  run.records = scheduler.records();
  return run;
}

}  // namespace duplex::runtime
