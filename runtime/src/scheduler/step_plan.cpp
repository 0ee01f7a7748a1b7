#include "duplex/runtime/scheduler/step_plan.hpp"

#include <algorithm>
#include <tuple>

#include "duplex/base/error.hpp"

namespace duplex::runtime {

std::vector<StepShape> StepPlan::shapes() const { return shapes(1); }

namespace {

// One request's shape (count 1), its context rounded up to a multiple of context_bucket.
StepShape shape_of(const ScheduledRequest& r, std::int64_t context_bucket, int ranks) {
  const std::int64_t ctx = (r.context_len + context_bucket - 1) / context_bucket * context_bucket;
  return StepShape{r.tokens,
                   ctx,
                   r.phase,
                   1,
                   r.phase == TokenPhase::prefill && r.samples_token,
                   r.cached_context,
                   ranks > 1 ? r.rank : 0};
}

auto key(const StepShape& s) {
  return std::tuple(s.rank, s.phase, s.tokens, s.context_len, s.completes_prefill, s.cached_context);
}

}  // namespace

std::vector<std::size_t> StepPlan::shape_order(std::int64_t context_bucket, int ranks) const {
  DUPLEX_ASSERT(context_bucket >= 1 && ranks >= 1, "context bucket and ranks must be >= 1");
  std::vector<std::size_t> order(requests.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return key(shape_of(requests[a], context_bucket, ranks)) <
           key(shape_of(requests[b], context_bucket, ranks));
  });
  return order;
}

std::vector<StepShape> StepPlan::shapes(std::int64_t context_bucket, int ranks) const {
  std::vector<StepShape> out;
  for (std::size_t i : shape_order(context_bucket, ranks)) {
    const StepShape s = shape_of(requests[i], context_bucket, ranks);
    if (!out.empty() && key(out.back()) == key(s)) {
      ++out.back().count;
    } else {
      out.push_back(s);
    }
  }
  return out;
}

}  // namespace duplex::runtime
