#include "duplex/runtime/scheduler/step_plan.hpp"

#include <algorithm>
#include <tuple>

#include "duplex/base/error.hpp"

namespace duplex::runtime {

std::vector<StepShape> StepPlan::shapes() const { return shapes(1); }

std::vector<StepShape> StepPlan::shapes(std::int64_t context_bucket, int ranks) const {
  DUPLEX_ASSERT(context_bucket >= 1 && ranks >= 1, "context bucket and ranks must be >= 1");
  std::vector<StepShape> keys;
  keys.reserve(requests.size());
  for (const ScheduledRequest& r : requests) {
    const std::int64_t ctx = (r.context_len + context_bucket - 1) / context_bucket * context_bucket;
    keys.push_back(StepShape{r.tokens, ctx, r.phase, 1, r.phase == TokenPhase::prefill && r.samples_token,
                             r.cached_context, ranks > 1 ? r.rank : 0});
  }
  const auto key = [](const StepShape& s) {
    return std::tuple(s.rank, s.phase, s.tokens, s.context_len, s.completes_prefill, s.cached_context);
  };
  std::sort(keys.begin(), keys.end(), [&](const StepShape& a, const StepShape& b) { return key(a) < key(b); });
  std::vector<StepShape> out;
  for (const StepShape& s : keys) {
    if (!out.empty() && key(out.back()) == key(s)) {
      ++out.back().count;
    } else {
      out.push_back(s);
    }
  }
  return out;
}

}  // namespace duplex::runtime
