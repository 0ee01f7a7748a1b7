// The RTL command decoder (rtl/decoder/pim_command_decoder.sv): descriptors and micro-ops per second of the
// Verilated model, and a whole GEMV command through RtlDatapath::run_command (decoder micro-ops driving the
// GEMM lane) vs the same GEMV through gemv_fp16. Results: bench/rtl/README.md.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include <verilated.h>

#include "Vpim_datapath.h"
#include "duplex/base/fp16.hpp"
#include "duplex/rtl/datapath.hpp"
#include "duplex/sysc/host_interface.hpp"

namespace {

using duplex::sysc::hostif::CommandDescriptor;
using duplex::sysc::hostif::Opcode;

constexpr duplex::pim::CommandDecoderConfig kConfig{1ull << 30, 5, 1u << 20, 1u << 17};

// The Verilated top with only the decoder in use: every micro-op taken as soon as it is presented.
class DecoderBench {
 public:
  DecoderBench() : model_(std::make_unique<Vpim_datapath>(&context_, "pim_datapath")) {
    model_->cmd_cfg_memory_bytes = kConfig.memory_bytes;
    model_->cmd_cfg_align_log2 = static_cast<std::uint8_t>(kConfig.align_log2);
    model_->cmd_cfg_input_buffer_bytes = kConfig.input_buffer_bytes;
    model_->cmd_cfg_softmax_buffer_bytes = kConfig.softmax_buffer_bytes;
    model_->cmd_out_ready = 1;
    model_->rst_n = 0;
    edge();
    edge();
    model_->rst_n = 1;
  }
  ~DecoderBench() { model_->final(); }
  DecoderBench(const DecoderBench&) = delete;
  DecoderBench& operator=(const DecoderBench&) = delete;
  // Presents the descriptor until accepted and runs until its last micro-op is taken; returns micro-ops.
  std::uint64_t run(const std::array<std::uint8_t, 64>& bytes) {
    for (std::size_t w = 0; w < 16; ++w) {
      std::uint32_t v = 0;
      std::memcpy(&v, bytes.data() + 4 * w, 4);
      model_->cmd_in_descriptor[w] = v;
    }
    model_->cmd_in_valid = 1;
    edge();
    model_->cmd_in_valid = 0;
    std::uint64_t ops = 0;
    for (;;) {
      settle();
      const bool last = model_->cmd_out_valid && model_->cmd_out_op_last;
      ops += model_->cmd_out_valid;
      edge();
      if (last) return ops;
    }
  }

 private:
  void settle() {
    model_->clk = 0;
    model_->eval();
  }
  void edge() {
    settle();
    model_->clk = 1;
    model_->eval();
  }
  VerilatedContext context_;
  std::unique_ptr<Vpim_datapath> model_;
};

// Malformed descriptors (one reject micro-op each): the decoder's descriptor rate.
void BM_DecoderRejects(benchmark::State& state) {
  DecoderBench bench;
  CommandDescriptor d{Opcode::kPimGemv, 0, 1, {1, 0, 0, 1, 1, 1, 0}};  // misaligned W
  const auto bytes = duplex::sysc::hostif::encode(d);
  for (auto _ : state) benchmark::DoNotOptimize(bench.run(bytes));
  state.counters["descriptors_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DecoderRejects);

// GEMV 64 x 4096 (16384 GEMM-pass micro-ops): the decoder's micro-op rate.
void BM_DecoderGemvMicroOps(benchmark::State& state) {
  DecoderBench bench;
  CommandDescriptor d{Opcode::kPimGemv, 0, 1, {0, 1u << 20, 2u << 20, 1, 64, 4096, 0}};
  const auto bytes = duplex::sysc::hostif::encode(d);
  std::uint64_t ops = 0;
  for (auto _ : state) ops += bench.run(bytes);
  state.counters["descriptors_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["micro_ops_per_s"] = benchmark::Counter(static_cast<double>(ops), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DecoderGemvMicroOps)->Unit(benchmark::kMillisecond);

class VectorMemory final : public duplex::pim::CommandMemory {
 public:
  explicit VectorMemory(std::size_t bytes) : bytes_(bytes) {}
  void read(std::uint64_t addr, void* dst, std::uint64_t n) override { std::memcpy(dst, bytes_.data() + addr, n); }
  void write(std::uint64_t addr, const void* src, std::uint64_t n) override {
    std::memcpy(bytes_.data() + addr, src, n);
  }

 private:
  std::vector<std::uint8_t> bytes_;
};

// GEMV 64 x 4096: /0 through gemv_fp16 (the wrapper feeds the lane), /1 through run_command (the decoder's
// micro-ops feed the lane, operands from memory).
void BM_RtlGemvPath(benchmark::State& state) {
  auto dp = duplex::pim::make_datapath("rtl", duplex::pim::DatapathParams{});
  const std::size_t n = 64, k = 4096;
  std::mt19937 rng(1);
  std::vector<std::uint16_t> w(n * k), x(k), y(n);
  for (auto& v : w) v = duplex::float_to_half_bits(static_cast<float>(rng() % 200) / 100.0f - 1.0f);
  for (auto& v : x) v = duplex::float_to_half_bits(static_cast<float>(rng() % 200) / 100.0f - 1.0f);
  VectorMemory memory(4u << 20);
  memory.write(0, w.data(), w.size() * 2);
  memory.write(1u << 20, x.data(), x.size() * 2);
  CommandDescriptor d{Opcode::kPimGemv, 0, 1, {0, 1u << 20, 2u << 20, 1, n, k, 0}};
  const auto bytes = duplex::sysc::hostif::encode(d);
  constexpr duplex::pim::CommandDecoderConfig config{4u << 20, 5, 1u << 20, 1u << 17};
  for (auto _ : state) {
    if (state.range(0) == 0) {
      dp->gemv_fp16(w.data(), x.data(), y.data(), n, k);
    } else {
      benchmark::DoNotOptimize(dp->run_command(bytes.data(), config, memory));
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["ops_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_RtlGemvPath)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
