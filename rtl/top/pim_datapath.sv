// The Logic-PIM datapath as one Verilated model: a GEMM lane, the softmax unit, the activation unit and the
// instruction decoder / sequencer side by side on one clock, each with its own valid/ready ports.
// rtl/src/rtl_datapath.cpp drives the units; the sequencer's micro-op stream is checked on its own
// (tests/rtl/rtl_sequencer_test.cpp), it does not drive the units inside this model.
module pim_datapath #(
    parameter int LANES = 16,
    parameter int SOFTMAX_MAX_N = 32768
) (
    input  logic                clk,
    input  logic                rst_n,
    // GEMM lane
    input  logic                gemm_in_valid,
    output logic                gemm_in_ready,
    input  logic [LANES*16-1:0] gemm_in_a,
    input  logic [LANES*16-1:0] gemm_in_b,
    input  logic                gemm_in_last,
    output logic                gemm_out_valid,
    input  logic                gemm_out_ready,
    output logic [31:0]         gemm_out_acc,
    output logic [15:0]         gemm_out_fp16,
    // softmax unit
    input  logic                softmax_in_valid,
    output logic                softmax_in_ready,
    input  logic [15:0]         softmax_in_score,
    input  logic [15:0]         softmax_in_scale,
    input  logic                softmax_in_last,
    output logic                softmax_out_valid,
    input  logic                softmax_out_ready,
    output logic [15:0]         softmax_out_prob,
    output logic                softmax_out_last,
    // activation unit
    input  logic                silu_in_valid,
    output logic                silu_in_ready,
    input  logic [15:0]         silu_in_gate,
    input  logic [15:0]         silu_in_up,
    output logic                silu_out_valid,
    input  logic                silu_out_ready,
    output logic [15:0]         silu_out_result,
    // instruction decoder / sequencer
    input  logic                seq_in_valid,
    output logic                seq_in_ready,
    input  logic [63:0]         seq_in_word,
    output logic                seq_out_valid,
    input  logic                seq_out_ready,
    output logic [1:0]          seq_out_kind,
    output logic [19:0]         seq_out_row,
    output logic [19:0]         seq_out_offset,
    output logic                seq_out_last,
    output logic                seq_out_op_last,
    output logic [19:0]         seq_out_tag
);
  gemm_lane #(.LANES(LANES)) gemm (
      .clk, .rst_n,
      .in_valid(gemm_in_valid), .in_ready(gemm_in_ready), .in_a(gemm_in_a), .in_b(gemm_in_b),
      .in_last(gemm_in_last), .out_valid(gemm_out_valid), .out_ready(gemm_out_ready),
      .out_acc(gemm_out_acc), .out_fp16(gemm_out_fp16));
  softmax_unit #(.MAX_N(SOFTMAX_MAX_N)) softmax (
      .clk, .rst_n,
      .in_valid(softmax_in_valid), .in_ready(softmax_in_ready), .in_score(softmax_in_score),
      .in_scale(softmax_in_scale), .in_last(softmax_in_last), .out_valid(softmax_out_valid),
      .out_ready(softmax_out_ready), .out_prob(softmax_out_prob), .out_last(softmax_out_last));
  silu_unit activation (
      .clk, .rst_n,
      .in_valid(silu_in_valid), .in_ready(silu_in_ready), .in_gate(silu_in_gate), .in_up(silu_in_up),
      .out_valid(silu_out_valid), .out_ready(silu_out_ready), .out_result(silu_out_result));
  pim_sequencer #(.LANES(LANES), .SOFTMAX_MAX_N(SOFTMAX_MAX_N)) sequencer (
      .clk, .rst_n,
      .in_valid(seq_in_valid), .in_ready(seq_in_ready), .in_word(seq_in_word),
      .out_valid(seq_out_valid), .out_ready(seq_out_ready), .out_kind(seq_out_kind), .out_row(seq_out_row),
      .out_offset(seq_out_offset), .out_last(seq_out_last), .out_op_last(seq_out_op_last),
      .out_tag(seq_out_tag));
endmodule
