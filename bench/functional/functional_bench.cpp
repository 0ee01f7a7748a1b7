// Functional emulation speed: tiny-moe, 4 requests x 16 new tokens, on gpu (all xPU kernels) and duplex-pe
// (PIM ops on the golden or the RTL datapath), on one device, on the system's devices for the model (4) and
// on two nodes of 8 (16: TP8 x DP2, experts over all 16); and tiny-qwen-moe (q/k/v biases, a gated shared
// expert, one dense layer of three) on the system's devices; and tiny-mixtral-fp8-dynamic (FP8 per channel,
// its GEMM inputs quantized on the xPU per token) and tiny-qwen2-bnb-int8 (LLM.int8(): INT8 per token with
// the batch's outlier columns at threshold 2) on one gpu device, quantized and with FP16 inputs
// (--activation-quant off): what the activation quantization costs the emulation; and tiny-moe on the gpu
// system's 4 devices with two-batch overlap (each step's two micro-batches run one after the other).
// Counter tokens_per_s = generated tokens / host second.
#include <benchmark/benchmark.h>

#include "duplex/base/device_spec.hpp"
#include "duplex/runtime/functional/functional_executor.hpp"

namespace {

using namespace duplex::runtime::functional;

void run_model(benchmark::State& state, const char* model, const char* system, const char* datapath,
               int devices, bool quantize_activations = true, bool two_batch_overlap = false) {
  const ModelWeights w = random_weights(duplex::compiler::load_model(model), 1);
  duplex::SystemSpec sys = duplex::load_system(system);
  sys.two_batch_overlap = two_batch_overlap;
  FunctionalOptions o;
  o.datapath = datapath;
  o.devices = devices;  // 0: the system's
  o.quantize_activations = quantize_activations;
  std::vector<std::vector<std::int32_t>> prompts = {{1, 5, 9, 42}, {7, 300, 12}, {512}, {2, 2, 2, 2, 2}};
  for (auto& prompt : prompts)  // within a smaller vocabulary (the bnb_int8 model's 512: 512 -> 0)
    for (std::int32_t& id : prompt) id %= static_cast<std::int32_t>(w.spec.vocab);
  constexpr int kNewTokens = 16;
  std::int64_t tokens = 0;
  for (auto _ : state) {
    FunctionalExecutor exec(w, sys, o);
    const FunctionalResult r = exec.run(prompts, kNewTokens);
    benchmark::DoNotOptimize(r.tokens.data());
    tokens += static_cast<std::int64_t>(prompts.size()) * kNewTokens;
  }
  state.counters["tokens_per_s"] =
      benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
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
void run_bnb_int8_qwen2(benchmark::State& state, bool quantize_activations) {
  run_model(state, "tests/runtime/functional/data/tiny-qwen2-bnb-int8.yaml", "gpu", "", 1,
            quantize_activations);
}
void run_tiny_moe_overlapped(benchmark::State& state, bool two_batch_overlap) {
  run_model(state, "tiny-moe", "gpu", "", 0, true, two_batch_overlap);
}

BENCHMARK_CAPTURE(run_tiny_moe, gpu_1_device, "gpu", "", 1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_tiny_moe, gpu_4_devices, "gpu", "", 0)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_tiny_moe, duplex_pe_golden_1_device, "duplex-pe", "golden", 1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_tiny_moe, duplex_pe_golden_4_devices, "duplex-pe", "golden", 0)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_tiny_moe, gpu_16_devices, "gpu", "", 16)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_tiny_moe, duplex_pe_golden_16_devices, "duplex-pe", "golden", 16)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_tiny_moe, duplex_pe_rtl_4_devices, "duplex-pe", "rtl", 0)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(2);
BENCHMARK_CAPTURE(run_tiny_qwen_moe, gpu_4_devices, "gpu", "", 0)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_tiny_qwen_moe, duplex_pe_golden_4_devices, "duplex-pe", "golden", 0)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_fp8_mixtral, gpu_1_device_quantized, "gpu", true)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_fp8_mixtral, gpu_1_device_fp16_inputs, "gpu", false)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_bnb_int8_qwen2, gpu_1_device_quantized, true)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_bnb_int8_qwen2, gpu_1_device_fp16_inputs, false)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_tiny_moe_overlapped, gpu_4_devices_one_batch, false)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run_tiny_moe_overlapped, gpu_4_devices_two_batch_overlap, true)
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
