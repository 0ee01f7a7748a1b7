// Functional emulation speed: tiny-moe, 4 requests x 16 new tokens, on gpu (all xPU kernels) and duplex-pe
// (PIM ops on the golden or the RTL datapath), on one device, on the system's devices for the model (4) and
// on two nodes of 8 (16: TP8 x DP2, experts over all 16); and tiny-qwen-moe (q/k/v biases, a gated shared
// expert, one dense layer of three) on the system's devices; and tiny-mixtral-fp8-dynamic (FP8 per channel,
// its GEMM inputs quantized on the xPU per token) on one gpu device, quantized and with FP16 inputs
// (--activation-quant off): what the activation quantization costs the emulation.
// Counter tokens_per_s = generated tokens / host second.
#include <benchmark/benchmark.h>

#include "duplex/base/device_spec.hpp"
#include "duplex/runtime/functional/functional_executor.hpp"

namespace {

using namespace duplex::runtime::functional;

void run_model(benchmark::State& state, const char* model, const char* system, const char* datapath,
               int devices, bool quantize_activations = true) {
  const ModelWeights w = random_weights(duplex::compiler::load_model(model), 1);
  const duplex::SystemSpec sys = duplex::load_system(system);
  FunctionalOptions o;
  o.datapath = datapath;
  o.devices = devices;  // 0: the system's
  o.quantize_activations = quantize_activations;
  const std::vector<std::vector<std::int32_t>> prompts = {{1, 5, 9, 42}, {7, 300, 12}, {512}, {2, 2, 2, 2, 2}};
  constexpr int kNewTokens = 16;
  std::int64_t tokens = 0;
  for (auto _ : state) {
    FunctionalExecutor exec(w, sys, o);
    const FunctionalResult r = exec.run(prompts, kNewTokens);
    benchmark::DoNotOptimize(r.tokens.data());
    tokens += static_cast<std::int64_t>(prompts.size()) * kNewTokens;
  }
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
}

void run_tiny_moe(benchmark::State& state, const char* system, const char* datapath, int devices) {
  run_model(state, "tiny-moe", system, datapath, devices);
}
void run_tiny_qwen_moe(benchmark::State& state, const char* system, const char* datapath, int devices) {
  run_model(state, "tiny-qwen-moe", system, datapath, devices);
}
void run_fp8_mixtral(benchmark::State& state, const char* system, bool quantize_activations) {
  run_model(state, "tests/runtime/functional/data/tiny-mixtral-fp8-dynamic.yaml", system, "", 1,
            quantize_activations);
}

BENCHMARK_CAPTURE(run_tiny_moe, gpu_1_device, "gpu", "", 1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_tiny_moe, gpu_4_devices, "gpu", "", 0)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_tiny_moe, duplex_pe_golden_1_device, "duplex-pe", "golden", 1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_tiny_moe, duplex_pe_golden_4_devices, "duplex-pe", "golden", 0)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_tiny_moe, gpu_16_devices, "gpu", "", 16)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_tiny_moe, duplex_pe_golden_16_devices, "duplex-pe", "golden", 16)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_tiny_moe, duplex_pe_rtl_4_devices, "duplex-pe", "rtl", 0)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(2);
BENCHMARK_CAPTURE(run_tiny_qwen_moe, gpu_4_devices, "gpu", "", 0)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_tiny_qwen_moe, duplex_pe_golden_4_devices, "duplex-pe", "golden", 0)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_fp8_mixtral, gpu_1_device_quantized, "gpu", true)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_fp8_mixtral, gpu_1_device_fp16_inputs, "gpu", false)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
