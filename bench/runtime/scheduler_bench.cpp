// Cost of the serving-side policy per simulated step, so the serving simulator's budget is known:
// schedule()+update() with a closed-form step time, and expert routing per step.
#include <benchmark/benchmark.h>

#include "duplex/runtime/scheduler/serving_loop.hpp"
#include "duplex/runtime/workload/expert_routing.hpp"
#include "duplex/runtime/workload/request_source.hpp"

namespace duplex::runtime {
namespace {

// Closed loop, batch range(0), L_in = L_out = 256 (Gaussian, 10%), continuous batching with chunked prefill
// (budget 2048 tokens); KV sized for 3/4 of the batch at full length so preemption occurs.
void BM_ServingLoopClosed(benchmark::State& state) {
  const std::int64_t batch = state.range(0);
  std::int64_t steps = 0;
  for (auto _ : state) {
    SchedulerConfig config;
    config.max_batch = batch;
    config.max_tokens_per_step = 2048;
    config.chunked_prefill = true;
    config.kv_capacity_blocks = batch * 3 / 4 * 512 / 16;
    Scheduler scheduler(config);
    ClosedLoopSource source(batch, 8 * batch, {LengthDistribution::Kind::gaussian, 256, 256, 25.6, 25.6}, 1);
    const ServingRun run = run_serving_loop(scheduler, source, [](const StepPlan& p) {
      return ms(5) + us(0.05) * static_cast<double>(p.total_tokens);
    });
    steps += run.steps;
    benchmark::DoNotOptimize(run.end);
  }
  state.counters["steps/s"] = benchmark::Counter(static_cast<double>(steps), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ServingLoopClosed)->Arg(32)->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond);

// Routing of one step through Mixtral's 32 MoE layers (8 experts, top-2) for range(0) tokens.
void BM_RouteMixtralStep(benchmark::State& state) {
  ExpertRouter router = ExpertRouter::uniform(1);
  for (auto _ : state) benchmark::DoNotOptimize(router.route(state.range(0), 8, 2, 32));
}
BENCHMARK(BM_RouteMixtralStep)->Arg(128)->Arg(1 << 20)->Unit(benchmark::kMicrosecond);

// A 256-expert, top-8 model (DeepSeek-V3-like shape), 61 MoE layers, Zipf(1.0).
void BM_RouteZipf256Top8(benchmark::State& state) {
  ExpertRouter router = ExpertRouter::zipf(1.0, 1);
  for (auto _ : state) benchmark::DoNotOptimize(router.route(state.range(0), 256, 8, 61));
}
BENCHMARK(BM_RouteZipf256Top8)->Arg(128)->Arg(1 << 20)->Unit(benchmark::kMicrosecond);

// The same under DeepSeek-V3's group limit: 4 of 8 router groups kept (70 group sets), 58 MoE layers.
void BM_RouteZipf256Top8GroupLimited(benchmark::State& state) {
  ExpertRouter router = ExpertRouter::zipf(1.0, 1);
  for (auto _ : state) benchmark::DoNotOptimize(router.route(state.range(0), 256, 8, 58, 8, 4));
}
BENCHMARK(BM_RouteZipf256Top8GroupLimited)
    ->Arg(1)
    ->Arg(128)
    ->Arg(1024)
    ->Arg(1 << 20)
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace duplex::runtime

BENCHMARK_MAIN();
