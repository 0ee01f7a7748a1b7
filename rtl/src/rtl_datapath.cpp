// RtlDatapath: drives the Verilated pim_datapath model (rtl/top/pim_datapath.sv) one clock edge at a time.
// Protocol per unit: inputs are set while the clock is low; a transfer happens at a rising edge when valid
// and ready are both high; registered outputs are read after the edge. Output ready is held high, so an
// output seen after an edge is consumed at the next one.
#include <array>
#include <bit>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include <verilated.h>
#if DUPLEX_RTL_TRACE_FST
#include <verilated_fst_c.h>
#else
#include <verilated_vcd_c.h>
#endif

#include "Vpim_datapath.h"
#include "duplex/base/error.hpp"
#include "duplex/rtl/datapath_timing.hpp"
#include "duplex/rtl/pim_command_types.hpp"
#include "duplex/rtl/rtl_datapath.hpp"

static_assert(DUPLEX_RTL_LANES == duplex::pim::kRtlLanes, "rtl/CMakeLists.txt DUPLEX_RTL_LANES != kRtlLanes");

namespace duplex::pim {

const char* const kRtlTraceExtension = DUPLEX_RTL_TRACE_FST ? ".fst" : ".vcd";

namespace {

constexpr std::size_t kLanes = static_cast<std::size_t>(kRtlLanes);
#if DUPLEX_RTL_TRACE_FST
using TraceFile = VerilatedFstC;
#else
using TraceFile = VerilatedVcdC;
#endif

class RtlDatapath final : public Datapath {
 public:
  RtlDatapath(const DatapathParams& params, const std::string& trace_path) : params_(params) {
    validate(params_);
    if (params_.lanes != kRtlLanes)
      throw Error("pim.datapath: rtl is built with " + std::to_string(kRtlLanes) +
                  " GEMM lanes, got lanes = " + std::to_string(params_.lanes) + "; expected " +
                  std::to_string(kRtlLanes) + " (or datapath 'golden')");
    context_ = std::make_unique<VerilatedContext>();
    if (!trace_path.empty()) {
      const std::string_view extension = kRtlTraceExtension;
      if (!trace_path.ends_with(extension))
        throw Error("rtl trace '" + trace_path + "': this build writes " + std::string(extension) +
                    " waveforms; expected a path ending in " + std::string(extension) +
                    " (CMake option DUPLEX_RTL_TRACE_FST selects FST or VCD)");
      context_->traceEverOn(true);
    }
    model_ = std::make_unique<Vpim_datapath>(context_.get(), "pim_datapath");
    if (!trace_path.empty()) {
      trace_ = std::make_unique<TraceFile>();
      model_->trace(trace_.get(), 99);
      trace_->open(trace_path.c_str());
      if (!trace_->isOpen()) throw Error("rtl trace '" + trace_path + "': cannot open for writing");
    }
    model_->gemm_out_ready = 1;
    model_->softmax_out_ready = 1;
    model_->act_out_ready = 1;
    model_->rst_n = 0;
    for (int i = 0; i < 2; ++i) tick();
    model_->rst_n = 1;
  }
  ~RtlDatapath() override {
    model_->final();
    if (trace_) trace_->close();
  }

  std::string_view kind() const override { return "rtl"; }
  const DatapathParams& params() const override { return params_; }
  std::optional<std::uint64_t> simulated_cycles() const override { return cycles_; }

  float dot_fp16(const std::uint16_t* a, const std::uint16_t* b, std::size_t k, std::uint16_t init) override {
    float acc = 0.0f;
    std::uint16_t rounded = 0;
    run_gemm(a, b, 1, k, &init, &acc, &rounded);
    return acc;
  }
  void gemv_fp16(const std::uint16_t* w, const std::uint16_t* x, std::uint16_t* y, std::size_t n,
                 std::size_t k, const std::uint16_t* bias) override {
    std::vector<float> acc(n);
    run_gemm(w, x, n, k, bias, acc.data(), y);
  }
  void softmax_fp16(const std::uint16_t* scores, std::size_t n, std::uint16_t scale, std::uint16_t softcap,
                    std::uint16_t* probs, const std::uint16_t* sink) override;
  void activation_fp16_n(ActivationMode mode, const std::uint16_t* a, const std::uint16_t* b,
                         std::uint16_t* out, std::size_t n) override;
  std::optional<std::uint16_t> run_command(const std::uint8_t* descriptor, const CommandDecoderConfig& config,
                                           CommandMemory& memory) override;

 private:
  // One clock cycle: falling half (inputs settle, combinational ready), rising edge (registers update).
  void tick() {
    model_->clk = 0;
    model_->eval();
    if (trace_) trace_->dump(2 * cycles_);
    model_->clk = 1;
    model_->eval();
    if (trace_) trace_->dump(2 * cycles_ + 1);
    ++cycles_;
  }
  void settle() {
    model_->clk = 0;
    model_->eval();
  }
  // An RTL unit that has not finished within its budget is a bug in rtl/, not a user error.
  static void check_budget(std::uint64_t spent, std::uint64_t budget, const char* unit) {
    DUPLEX_ASSERT(spent <= budget, std::string("RTL ") + unit + " did not finish within its cycle budget");
  }
  // bias: FP16 [n], row r's accumulator start (nullptr: +0).
  void run_gemm(const std::uint16_t* w, const std::uint16_t* x, std::size_t n, std::size_t k,
                const std::uint16_t* bias, float* acc, std::uint16_t* rounded);

  DatapathParams params_;
  std::unique_ptr<VerilatedContext> context_;
  std::unique_ptr<Vpim_datapath> model_;
  std::unique_ptr<TraceFile> trace_;
  std::uint64_t cycles_ = 0;
  std::vector<std::uint16_t> softmax_buffer_ = std::vector<std::uint16_t>(kSoftmaxMaxElements);  // s, then p
};

// Streams the passes of n dot products (row r of w with x) back to back and collects the n results; bias[r]
// rides on every pass of row r (the lane samples it with the first).
void RtlDatapath::run_gemm(const std::uint16_t* w, const std::uint16_t* x, std::size_t n, std::size_t k,
                           const std::uint16_t* bias, float* acc, std::uint16_t* rounded) {
  const std::size_t passes = k == 0 ? 1 : (k + kLanes - 1) / kLanes;
  const std::size_t total = n * passes;
  const std::uint64_t budget = total + static_cast<std::uint64_t>(timing::gemm_lane_latency(kRtlLanes)) + 16;
  std::size_t sent = 0;
  std::size_t received = 0;
  std::uint64_t spent = 0;
  while (received < n) {
    const bool valid = sent < total;
    model_->gemm_in_valid = valid;
    if (valid) {
      const std::size_t row = sent / passes;
      const std::size_t base = (sent % passes) * kLanes;
      for (std::size_t word = 0; word < kLanes / 2; ++word) {
        std::uint32_t a_word = 0;
        std::uint32_t b_word = 0;
        for (std::size_t half = 0; half < 2; ++half) {
          const std::size_t i = base + 2 * word + half;
          if (i < k) {
            a_word |= static_cast<std::uint32_t>(w[row * k + i]) << (16 * half);
            b_word |= static_cast<std::uint32_t>(x[i]) << (16 * half);
          }
        }
        model_->gemm_in_a[word] = a_word;
        model_->gemm_in_b[word] = b_word;
      }
      model_->gemm_in_last = (sent % passes) == passes - 1;
      model_->gemm_in_bias = bias != nullptr ? bias[row] : std::uint16_t{0};
    }
    settle();
    const bool fire = valid && model_->gemm_in_ready;
    tick();
    if (fire) ++sent;
    if (model_->gemm_out_valid) {
      acc[received] = std::bit_cast<float>(static_cast<std::uint32_t>(model_->gemm_out_acc));
      rounded[received] = model_->gemm_out_fp16;
      ++received;
    }
    check_budget(++spent, budget, "GEMM lane");
  }
  model_->gemm_in_valid = 0;
  model_->gemm_in_bias = 0;
}

void RtlDatapath::softmax_fp16(const std::uint16_t* scores, std::size_t n, std::uint16_t scale,
                               std::uint16_t softcap, std::uint16_t* probs, const std::uint16_t* sink) {
  if (n == 0 || n > kSoftmaxMaxElements)
    throw Error("pim softmax: n = " + std::to_string(n) + "; expected 1.." +
                std::to_string(kSoftmaxMaxElements) + " elements (softmax unit buffer)");
  validate_softcap(softcap);  // the unit takes any bits; only +0 and finite caps > 0 are defined
  const std::uint64_t budget = timing::softmax_cycles(n, softcap != 0, sink != nullptr) + 16;
  std::size_t sent = 0;
  std::size_t received = 0;
  std::uint64_t spent = 0;
  model_->softmax_in_scale = scale;
  model_->softmax_in_softcap = softcap;
  model_->softmax_in_has_sink = sink != nullptr;
  model_->softmax_in_sink = sink != nullptr ? *sink : std::uint16_t{0};
  while (received < n) {
    const bool valid = sent < n;
    model_->softmax_in_valid = valid;
    if (valid) {
      model_->softmax_in_score = scores[sent];
      model_->softmax_in_last = sent == n - 1;
    }
    settle();
    const bool fire = valid && model_->softmax_in_ready;
    tick();
    if (fire) ++sent;
    if (model_->softmax_out_valid) {
      probs[received++] = model_->softmax_out_prob;
      DUPLEX_ASSERT(static_cast<bool>(model_->softmax_out_last) == (received == n),
                    "softmax out_last misplaced");
    }
    check_budget(++spent, budget, "softmax unit");
  }
  model_->softmax_in_valid = 0;
  model_->softmax_in_has_sink = 0;
}

void RtlDatapath::activation_fp16_n(ActivationMode mode, const std::uint16_t* a, const std::uint16_t* b,
                                    std::uint16_t* out, std::size_t n) {
  validate(mode);
  // One mode per call and the pipe drained between calls: no mode-switch stall, n + the mode's latency.
  const std::uint64_t budget = n + static_cast<std::uint64_t>(timing::activation_latency(mode)) + 16;
  std::size_t sent = 0;
  std::size_t received = 0;
  std::uint64_t spent = 0;
  model_->act_in_mode = static_cast<std::uint8_t>(mode);
  while (received < n) {
    const bool valid = sent < n;
    model_->act_in_valid = valid;
    if (valid) {
      model_->act_in_a = a[sent];
      model_->act_in_b = b[sent];
    }
    settle();
    const bool fire = valid && model_->act_in_ready;
    tick();
    if (fire) ++sent;
    if (model_->act_out_valid) out[received++] = model_->act_out_result;
    check_budget(++spent, budget, "activation unit");
  }
  model_->act_in_valid = 0;
}

// The operation controller of the command path: takes the decoder's micro-ops in order, feeds each to its
// unit with operands read from memory (or the softmax buffer), and writes every result where its micro-op
// said. A micro-op waits until the other units have delivered all their results (scores before the softmax,
// probabilities before the PV passes); micro-ops of one unit stream back to back.
std::optional<std::uint16_t> RtlDatapath::run_command(const std::uint8_t* descriptor,
                                                      const CommandDecoderConfig& config,
                                                      CommandMemory& memory) {
  if (config.align_log2 < 0 || config.align_log2 > 63)
    throw Error("rtl command decoder: align_log2 = " + std::to_string(config.align_log2) +
                "; expected 0..63 (a power-of-two access granularity)");
  model_->cmd_cfg_memory_bytes = config.memory_bytes;
  model_->cmd_cfg_align_log2 = static_cast<std::uint8_t>(config.align_log2);
  model_->cmd_cfg_input_buffer_bytes = config.input_buffer_bytes;
  model_->cmd_cfg_softmax_buffer_bytes = config.softmax_buffer_bytes;
  for (std::size_t w = 0; w < 16; ++w) {
    std::uint32_t v = 0;
    for (std::size_t i = 0; i < 4; ++i) v |= std::uint32_t{descriptor[4 * w + i]} << (8 * i);
    model_->cmd_in_descriptor[w] = v;
  }
  model_->cmd_out_ready = 0;
  model_->cmd_in_valid = 1;
  settle();
  DUPLEX_ASSERT(model_->cmd_in_ready, "RTL command decoder busy between commands");
  tick();
  model_->cmd_in_valid = 0;

  struct Destination {
    std::uint64_t at;
    bool buffer;
  };
  enum Unit { kGemm = 0, kSoftmax = 1, kActivation = 2 };
  std::array<std::deque<Destination>, 3> pending;  // results due from each unit, in order
  std::vector<std::uint16_t>& buffer = softmax_buffer_;
  auto store = [&](const Destination& d, std::uint16_t v) {
    if (d.buffer) {
      DUPLEX_ASSERT(d.at < buffer.size(), "softmax buffer index out of range");
      buffer[d.at] = v;
    } else {
      memory.write(d.at, &v, 2);
    }
  };
  std::uint16_t status = 0;
  bool issued_all = false;
  std::uint64_t idle = 0;
  std::vector<std::uint16_t> a(kLanes), b(kLanes);
  while (!issued_all || !pending[kGemm].empty() || !pending[kSoftmax].empty() ||
         !pending[kActivation].empty()) {
    model_->gemm_in_valid = 0;
    model_->softmax_in_valid = 0;
    model_->act_in_valid = 0;
    model_->cmd_out_ready = 0;
    settle();
    bool issue = false;
    bool result_due = false;
    Destination dest{};
    bool op_last = false;
    if (!issued_all && model_->cmd_out_valid) {
      const auto kind = static_cast<CommandMicroOpKind>(model_->cmd_out_kind);
      const int unit = static_cast<int>(kind);
      op_last = model_->cmd_out_op_last != 0;
      dest = {model_->cmd_out_dest, model_->cmd_out_dest_buffer != 0};
      // Operand C: the GEMV bias of a dot product's first pass, the sink of a softmax row's first element.
      const bool c_valid = model_->cmd_out_c_valid != 0;
      std::uint16_t c_element = 0;
      if (kind == CommandMicroOpKind::kReject) {
        status = model_->cmd_out_status;
        issue = true;
      } else if (pending[(unit + 1) % 3].empty() && pending[(unit + 2) % 3].empty()) {
        const std::uint64_t op_a = model_->cmd_out_a, op_b = model_->cmd_out_b;
        const bool last = model_->cmd_out_last != 0;
        if (c_valid) memory.read(model_->cmd_out_c, &c_element, 2);
        if (kind == CommandMicroOpKind::kGemmPass) {
          const std::size_t count = model_->cmd_out_count;
          const std::uint64_t stride = model_->cmd_out_a_stride;
          std::fill(a.begin(), a.end(), 0);
          std::fill(b.begin(), b.end(), 0);
          for (std::size_t i = 0; i < count; ++i) memory.read(op_a + i * stride, &a[i], 2);
          if (model_->cmd_out_b_buffer) {
            DUPLEX_ASSERT(op_b + count <= buffer.size(), "softmax buffer index out of range");
            for (std::size_t i = 0; i < count; ++i) b[i] = buffer[op_b + i];
          } else {
            memory.read(op_b, b.data(), 2 * count);
          }
          for (std::size_t w = 0; w < kLanes / 2; ++w) {
            model_->gemm_in_a[w] = std::uint32_t{a[2 * w]} | (std::uint32_t{a[2 * w + 1]} << 16);
            model_->gemm_in_b[w] = std::uint32_t{b[2 * w]} | (std::uint32_t{b[2 * w + 1]} << 16);
          }
          model_->gemm_in_last = last;
          model_->gemm_in_bias = c_element;  // +0 unless the pass carries a bias
          model_->gemm_in_valid = 1;
          result_due = last;
        } else if (kind == CommandMicroOpKind::kSoftmaxElement) {
          DUPLEX_ASSERT(op_a < buffer.size(), "softmax buffer index out of range");
          model_->softmax_in_score = buffer[op_a];
          model_->softmax_in_scale = static_cast<std::uint16_t>(op_b);          // b [15:0]: scale
          model_->softmax_in_softcap = static_cast<std::uint16_t>(op_b >> 16);  // b [31:16]: soft-cap
          model_->softmax_in_sink = c_element;  // sampled with the row's first score
          model_->softmax_in_has_sink = c_valid;
          model_->softmax_in_last = last;
          model_->softmax_in_valid = 1;
          result_due = true;
        } else {
          std::uint16_t a_element = 0, b_element = 0;
          memory.read(op_a, &a_element, 2);
          memory.read(op_b, &b_element, 2);
          model_->act_in_mode = model_->cmd_out_mode;
          model_->act_in_a = a_element;
          model_->act_in_b = b_element;
          model_->act_in_valid = 1;
          result_due = true;
        }
        settle();
        const bool unit_ready = kind == CommandMicroOpKind::kGemmPass         ? model_->gemm_in_ready != 0
                                : kind == CommandMicroOpKind::kSoftmaxElement ? model_->softmax_in_ready != 0
                                                                              : model_->act_in_ready != 0;
        if (unit_ready) {
          issue = true;
          if (result_due) pending[static_cast<std::size_t>(unit)].push_back(dest);
        } else {
          model_->gemm_in_valid = 0;
          model_->softmax_in_valid = 0;
          model_->act_in_valid = 0;
        }
      }
    }
    model_->cmd_out_ready = issue;
    settle();
    tick();
    if (issue && op_last) issued_all = true;
    bool progress = issue;
    if (model_->gemm_out_valid) {
      DUPLEX_ASSERT(!pending[kGemm].empty(), "unexpected GEMM result");
      store(pending[kGemm].front(), model_->gemm_out_fp16);
      pending[kGemm].pop_front();
      progress = true;
    }
    if (model_->softmax_out_valid) {
      DUPLEX_ASSERT(!pending[kSoftmax].empty(), "unexpected softmax result");
      store(pending[kSoftmax].front(), model_->softmax_out_prob);
      pending[kSoftmax].pop_front();
      progress = true;
    }
    if (model_->act_out_valid) {
      DUPLEX_ASSERT(!pending[kActivation].empty(), "unexpected activation result");
      store(pending[kActivation].front(), model_->act_out_result);
      pending[kActivation].pop_front();
      progress = true;
    }
    idle = progress ? 0 : idle + 1;
    check_budget(idle, 4 * kSoftmaxMaxElements, "command path");
  }
  model_->cmd_out_ready = 0;
  return status;
}

}  // namespace

std::unique_ptr<Datapath> make_rtl_datapath(const DatapathParams& params, const std::string& trace_path) {
  return std::make_unique<RtlDatapath>(params, trace_path);
}

}  // namespace duplex::pim
