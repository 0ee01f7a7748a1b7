// The Logic-PIM datapath as one Verilated model: a GEMM lane, the softmax unit, the activation unit and the
// command decoder / sequencer side by side on one clock, each with its own valid/ready ports.
// rtl/src/rtl_datapath.cpp drives the units and plays the operation controller that executes the decoder's
// micro-ops (the decoder does not drive the units inside this model).
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
    input  logic [15:0]         gemm_in_bias,        // FP16 accumulator start (GEMV bias), a dot's first pass
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
    input  logic [15:0]         softmax_in_softcap,  // FP16 logit soft-cap, +0: none (a row's first score)
    input  logic [15:0]         softmax_in_sink,     // FP16 attention sink logit (a row's first score)
    input  logic                softmax_in_has_sink, // the row has a sink (a row's first score)
    input  logic                softmax_in_last,
    output logic                softmax_out_valid,
    input  logic                softmax_out_ready,
    output logic [15:0]         softmax_out_prob,
    output logic                softmax_out_last,
    // activation unit (act_in_mode: duplex::pim::ActivationMode, 0..8)
    input  logic                act_in_valid,
    output logic                act_in_ready,
    input  logic [3:0]          act_in_mode,
    input  logic [15:0]         act_in_a,
    input  logic [15:0]         act_in_b,
    output logic                act_out_valid,
    input  logic                act_out_ready,
    output logic [15:0]         act_out_result,
    // command decoder / sequencer (pim_command_decoder.sv)
    input  logic [63:0]         cmd_cfg_memory_bytes,
    input  logic [5:0]          cmd_cfg_align_log2,
    input  logic [63:0]         cmd_cfg_input_buffer_bytes,
    input  logic [63:0]         cmd_cfg_softmax_buffer_bytes,
    input  logic                cmd_in_valid,
    output logic                cmd_in_ready,
    input  logic [511:0]        cmd_in_descriptor,
    output logic                cmd_out_valid,
    input  logic                cmd_out_ready,
    output logic [1:0]          cmd_out_kind,
    output logic [3:0]          cmd_out_mode,
    output logic [63:0]         cmd_out_a,
    output logic [63:0]         cmd_out_a_stride,
    output logic [63:0]         cmd_out_b,
    output logic                cmd_out_b_buffer,
    output logic [63:0]         cmd_out_dest,
    output logic                cmd_out_dest_buffer,
    output logic [63:0]         cmd_out_c,
    output logic                cmd_out_c_valid,
    output logic [$clog2(LANES):0] cmd_out_count,
    output logic                cmd_out_last,
    output logic                cmd_out_op_last,
    output logic [31:0]         cmd_out_seq,
    output logic [15:0]         cmd_out_status
);
  gemm_lane #(.LANES(LANES)) gemm (
      .clk, .rst_n,
      .in_valid(gemm_in_valid), .in_ready(gemm_in_ready), .in_a(gemm_in_a), .in_b(gemm_in_b),
      .in_bias(gemm_in_bias), .in_last(gemm_in_last), .out_valid(gemm_out_valid), .out_ready(gemm_out_ready),
      .out_acc(gemm_out_acc), .out_fp16(gemm_out_fp16));
  softmax_unit #(.MAX_N(SOFTMAX_MAX_N)) softmax (
      .clk, .rst_n,
      .in_valid(softmax_in_valid), .in_ready(softmax_in_ready), .in_score(softmax_in_score),
      .in_scale(softmax_in_scale), .in_softcap(softmax_in_softcap), .in_sink(softmax_in_sink),
      .in_has_sink(softmax_in_has_sink), .in_last(softmax_in_last),
      .out_valid(softmax_out_valid),
      .out_ready(softmax_out_ready), .out_prob(softmax_out_prob), .out_last(softmax_out_last));
  activation_unit activation (
      .clk, .rst_n,
      .in_valid(act_in_valid), .in_ready(act_in_ready), .in_mode(act_in_mode), .in_a(act_in_a),
      .in_b(act_in_b), .out_valid(act_out_valid), .out_ready(act_out_ready), .out_result(act_out_result));
  pim_command_decoder #(.LANES(LANES), .SOFTMAX_MAX_N(SOFTMAX_MAX_N)) decoder (
      .clk, .rst_n,
      .cfg_memory_bytes(cmd_cfg_memory_bytes), .cfg_align_log2(cmd_cfg_align_log2),
      .cfg_input_buffer_bytes(cmd_cfg_input_buffer_bytes),
      .cfg_softmax_buffer_bytes(cmd_cfg_softmax_buffer_bytes),
      .in_valid(cmd_in_valid), .in_ready(cmd_in_ready), .in_descriptor(cmd_in_descriptor),
      .out_valid(cmd_out_valid), .out_ready(cmd_out_ready), .out_kind(cmd_out_kind), .out_mode(cmd_out_mode),
      .out_a(cmd_out_a),
      .out_a_stride(cmd_out_a_stride), .out_b(cmd_out_b), .out_b_buffer(cmd_out_b_buffer),
      .out_dest(cmd_out_dest), .out_dest_buffer(cmd_out_dest_buffer), .out_c(cmd_out_c),
      .out_c_valid(cmd_out_c_valid), .out_count(cmd_out_count),
      .out_last(cmd_out_last), .out_op_last(cmd_out_op_last), .out_seq(cmd_out_seq),
      .out_status(cmd_out_status));
endmodule
