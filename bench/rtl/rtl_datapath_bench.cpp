// RTL-in-the-loop (Verilated) vs golden datapath: ops per second and simulated cycles per second.
// Run: build/bench/rtl/bench_rtl_datapath [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "duplex/base/fp16.hpp"
#include "duplex/rtl/datapath.hpp"

namespace {

using duplex::pim::Datapath;
using duplex::pim::DatapathParams;

std::vector<std::uint16_t> random_halves(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<std::uint16_t> v(n);
  for (auto& x : v) x = duplex::float_to_half_bits(dist(rng));
  return v;
}

std::unique_ptr<Datapath> make(int kind) {
  return duplex::pim::make_datapath(kind == 0 ? "golden" : "rtl", DatapathParams{});
}

// The datapath kind as the label, ops (iterations) per second, and simulated cycles per second (RTL only)
// since `start_cycles`.
void report(benchmark::State& state, const Datapath& dp, std::uint64_t start_cycles) {
  state.SetLabel(std::string(dp.kind()));
  state.counters["ops_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  if (auto cycles = dp.simulated_cycles())
    state.counters["sim_cycles_per_s"] =
        benchmark::Counter(static_cast<double>(*cycles - start_cycles), benchmark::Counter::kIsRate);
}

// GEMV 64 x 4096 (one op = one GEMV).
void BM_Gemv(benchmark::State& state) {
  auto dp = make(static_cast<int>(state.range(0)));
  const std::size_t n = 64;
  const std::size_t k = 4096;
  const auto w = random_halves(n * k, 1);
  const auto x = random_halves(k, 2);
  std::vector<std::uint16_t> y(n);
  const std::uint64_t start = dp->simulated_cycles().value_or(0);
  for (auto _ : state) {
    dp->gemv_fp16(w.data(), x.data(), y.data(), n, k);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["macs_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * n * k), benchmark::Counter::kIsRate);
  report(state, *dp, start);
}
BENCHMARK(BM_Gemv)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

// Softmax of a 4096-element row.
void BM_Softmax(benchmark::State& state) {
  auto dp = make(static_cast<int>(state.range(0)));
  const std::size_t n = 4096;
  const auto s = random_halves(n, 3);
  std::vector<std::uint16_t> p(n);
  const std::uint64_t start = dp->simulated_cycles().value_or(0);
  for (auto _ : state) {
    dp->softmax_fp16(s.data(), n, 0x3C00, 0, p.data());  // no soft-cap
    benchmark::DoNotOptimize(p.data());
  }
  report(state, *dp, start);
}
BENCHMARK(BM_Softmax)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

// The activation unit over 14336 elements (a Mixtral expert's d_ff) in `mode`: SiLU gate x up, GELU (tanh) of
// fc1 + bias (10 stages), or GELU's exact form (22 stages).
void run_activation(benchmark::State& state, duplex::pim::ActivationMode mode, std::uint32_t seed) {
  auto dp = make(static_cast<int>(state.range(0)));
  const std::size_t n = 14336;
  const auto a = random_halves(n, seed);
  const auto b = random_halves(n, seed + 1);
  std::vector<std::uint16_t> out(n);
  const std::uint64_t start = dp->simulated_cycles().value_or(0);
  for (auto _ : state) {
    dp->activation_fp16_n(mode, a.data(), b.data(), out.data(), n);
    benchmark::DoNotOptimize(out.data());
  }
  report(state, *dp, start);
}
void BM_SiluGate(benchmark::State& state) { run_activation(state, duplex::pim::ActivationMode::kSiluGate, 4); }
void BM_GeluTanh(benchmark::State& state) { run_activation(state, duplex::pim::ActivationMode::kGeluTanh, 9); }
BENCHMARK(BM_SiluGate)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
void BM_GeluErf(benchmark::State& state) { run_activation(state, duplex::pim::ActivationMode::kGeluErf, 10); }
BENCHMARK(BM_GeluTanh)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GeluErf)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

// Decode attention, one GQA group of 8 heads, context 1024, head dim 128.
void BM_DecodeAttention(benchmark::State& state) {
  auto dp = make(static_cast<int>(state.range(0)));
  const std::size_t group = 8;
  const std::size_t t = 1024;
  const std::size_t d = 128;
  const auto q = random_halves(group * d, 6);
  const auto k = random_halves(t * d, 7);
  const auto v = random_halves(t * d, 8);
  std::vector<std::uint16_t> out(group * d);
  const std::uint64_t start = dp->simulated_cycles().value_or(0);
  for (auto _ : state) {
    dp->decode_attention_fp16(q.data(), k.data(), v.data(), group, t, d, duplex::float_to_half_bits(0.0884f),
                              0, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  report(state, *dp, start);
}
BENCHMARK(BM_DecodeAttention)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
