#pragma once
// A cycle-stepped testbench around the Verilated top (pim_datapath): reset on construction, one rising edge
// per edge(), a cycle counter from the end of reset. Shared by the RTL timing and sequencer tests.
#include <cstdint>
#include <memory>

#include "Vpim_datapath.h"
#include <verilated.h>

namespace duplex::pim {

class PimDatapathBench {
 public:
  // outputs_ready: hold every unit's output ready high (no back-pressure) from before reset.
  explicit PimDatapathBench(bool outputs_ready)
      : model_(std::make_unique<Vpim_datapath>(&context_, "pim_datapath")) {
    if (outputs_ready) {
      model_->gemm_out_ready = 1;
      model_->softmax_out_ready = 1;
      model_->act_out_ready = 1;
    }
    model_->rst_n = 0;
    edge();
    edge();
    model_->rst_n = 1;
    cycle_ = 0;
  }
  ~PimDatapathBench() { model_->final(); }
  PimDatapathBench(const PimDatapathBench&) = delete;
  PimDatapathBench& operator=(const PimDatapathBench&) = delete;

  void settle() {
    model_->clk = 0;
    model_->eval();
  }
  void edge() {
    settle();
    model_->clk = 1;
    model_->eval();
    ++cycle_;
  }
  Vpim_datapath& m() { return *model_; }
  std::uint64_t cycle() const { return cycle_; }

 private:
  VerilatedContext context_;
  std::unique_ptr<Vpim_datapath> model_;
  std::uint64_t cycle_ = 0;
};

}  // namespace duplex::pim
