// Simulation speed of the plain-C++ device model (no SystemC kernel):
//  - DRAM commands simulated per wall-clock second (memtest patterns, 2 channels = 4 pseudo-channels),
//  - functional Logic-PIM ops per second (golden datapath arithmetic + memoized timing),
//  - time_pim_op calls per second for a Mixtral-8x7B expert slice (the serving simulator's query).
#include <cstdint>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/fp16.hpp"
#include "duplex/sysc/logic_pim.hpp"
#include "duplex/sysc/memtest.hpp"
#include "duplex/sysc/pim_timing.hpp"

namespace {

using namespace duplex;
using namespace duplex::sysc;

const SystemSpec& duplex_system() {
  static const SystemSpec s = load_system("duplex");
  return s;
}

void BM_DramCommands(benchmark::State& state) {
  MemtestOptions o;
  o.pattern = static_cast<MemtestPattern>(state.range(0));
  o.channels = 2;
  std::uint64_t commands = 0;
  for (auto _ : state) {
    const MemtestResult r = run_memtest(duplex_system(), o);
    commands += r.commands;
    benchmark::DoNotOptimize(r.achieved_gbps);
  }
  state.counters["dram_cmds_per_s"] =
      benchmark::Counter(static_cast<double>(commands), benchmark::Counter::kIsRate);
  state.SetLabel(to_string(o.pattern));
}
BENCHMARK(BM_DramCommands)
    ->Arg(static_cast<int>(MemtestPattern::kStream))
    ->Arg(static_cast<int>(MemtestPattern::kRandom))
    ->Arg(static_cast<int>(MemtestPattern::kBundle))
    ->Arg(static_cast<int>(MemtestPattern::kMixed))
    ->Unit(benchmark::kMillisecond);

// The memtest figures of one whole stack (16 channels): bandwidth, efficiency, refresh share, latency.
void BM_MemtestFullStack(benchmark::State& state) {
  MemtestOptions o;
  o.pattern = static_cast<MemtestPattern>(state.range(0));
  o.refresh = state.range(1) != 0;
  MemtestResult r;
  for (auto _ : state) r = run_memtest(duplex_system(), o);
  state.counters["achieved_gbps"] = r.achieved_gbps;
  state.counters["peak_gbps"] = r.peak_gbps;
  state.counters["efficiency"] = r.efficiency;
  state.counters["refresh_share"] = r.refresh_share;
  state.counters["lat_mean_ns"] = r.latency_mean_ns;
  state.counters["lat_p99_ns"] = r.latency_p99_ns;
  state.counters["row_hit"] = r.row_hit_rate;
  state.SetLabel(std::string(to_string(o.pattern)) + (o.refresh ? " refresh" : " no-refresh"));
}
BENCHMARK(BM_MemtestFullStack)
    ->ArgsProduct({{static_cast<int>(MemtestPattern::kStream), static_cast<int>(MemtestPattern::kRandom),
                    static_cast<int>(MemtestPattern::kBundle), static_cast<int>(MemtestPattern::kMixed)},
                   {0, 1}})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

// Mixtral-8x7B gate/up slice per stack (14336 / 5 rows x 4096 cols) at `tokens` tokens.
void BM_TimePimOpMixtralSlice(benchmark::State& state) {
  PimOpShape s;
  s.tokens = state.range(0);
  s.rows = 2868;
  s.cols = 4096;
  for (auto _ : state)
    benchmark::DoNotOptimize(time_pim_op(duplex_system().memory, *duplex_system().pim, s).total);
  state.counters["calls_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_TimePimOpMixtralSlice)->Arg(1)->Arg(16)->Unit(benchmark::kMillisecond);

void BM_TimePimOpAttention(benchmark::State& state) {
  PimOpShape s;
  s.kind = PimOpKind::kAttention;
  s.group_size = 4;
  s.context = state.range(0);
  s.kv_heads = 8;
  for (auto _ : state)
    benchmark::DoNotOptimize(time_pim_op(duplex_system().memory, *duplex_system().pim, s).total);
  state.counters["calls_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_TimePimOpAttention)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond);

// Functional GEMV (rows x 4096, 1 token) on real FP16 bytes through the golden datapath.
void BM_FunctionalPimGemv(benchmark::State& state) {
  const SystemSpec& sys = duplex_system();
  SparseMemory memory(sys.memory.org.stack_capacity().bytes);
  LogicPim pim(sys.memory, *sys.pim, memory, make_configured_datapath(*sys.pim));
  const std::int64_t rows = state.range(0), cols = 4096;
  std::vector<std::uint16_t> w(static_cast<std::size_t>(rows * cols), float_to_half_bits(0.25f));
  memory.write(0, w.data(), w.size() * 2);
  std::vector<std::uint16_t> x(static_cast<std::size_t>(cols), float_to_half_bits(0.5f));
  memory.write(1ull << 30, x.data(), x.size() * 2);
  for (auto _ : state) benchmark::DoNotOptimize(pim.gemv({0, 1ull << 30, 2ull << 30, 1, rows, cols}).total);
  state.counters["pim_ops_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["macs_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * rows * cols), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_FunctionalPimGemv)->Arg(256)->Arg(2868)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
