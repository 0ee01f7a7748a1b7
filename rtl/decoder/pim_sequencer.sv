// PIM instruction decoder / sequencer: decodes one 64-bit instruction word and issues its micro-ops, one per
// cycle, to the datapath units (GEMM passes, softmax elements, activation elements). Twin of
// duplex::pim::sequence_pim_instruction; the word format is in rtl/golden/include/duplex/rtl/pim_instruction.hpp.
// Latency 1 (instruction accepted -> first micro-op presented); the next instruction is accepted in the cycle
// the previous one's last micro-op is taken, so instructions issue back to back.
module pim_sequencer #(
    parameter int LANES = 16,  // GEMM-lane width: a GEMV row of k elements takes ceil(k / LANES) passes
    parameter int SOFTMAX_MAX_N = 32768
) (
    input  logic        clk,
    input  logic        rst_n,
    input  logic        in_valid,
    output logic        in_ready,
    input  logic [63:0] in_word,
    output logic        out_valid,
    input  logic        out_ready,
    output logic [1:0]  out_kind,  // 0 GEMM pass, 1 softmax element, 2 activation element, 3 illegal
    output logic [19:0] out_row,
    output logic [19:0] out_offset,
    output logic        out_last,
    output logic        out_op_last,
    output logic [19:0] out_tag
);
  localparam int SHIFT = $clog2(LANES);
  localparam logic [1:0] KIND_GEMM = 2'd0, KIND_SOFTMAX = 2'd1, KIND_SILU = 2'd2, KIND_ILLEGAL = 2'd3;

  logic [3:0] opcode;
  logic [19:0] n, k;
  logic gemv_ok, softmax_ok, silu_ok, fire, load;
  logic [20:0] gemv_passes;
  logic [1:0] kind_d;
  logic [20:0] rows_d, passes_d;

  assign opcode = in_word[63:60];
  assign n = in_word[59:40];
  assign k = in_word[39:20];
  assign gemv_ok = opcode == 4'd1 && n != 20'd0 && k != 20'd0;
  assign softmax_ok = opcode == 4'd2 && n != 20'd0 && {1'b0, n} <= 21'(SOFTMAX_MAX_N) && k == 20'd0;
  assign silu_ok = opcode == 4'd3 && n != 20'd0 && k == 20'd0;
  assign gemv_passes = ({1'b0, k} + 21'(LANES - 1)) >> SHIFT;
  always_comb begin
    if (gemv_ok) begin
      kind_d = KIND_GEMM;
      rows_d = {1'b0, n};
      passes_d = gemv_passes;
    end else if (softmax_ok || silu_ok) begin
      kind_d = softmax_ok ? KIND_SOFTMAX : KIND_SILU;
      rows_d = 21'd1;
      passes_d = {1'b0, n};
    end else begin
      kind_d = KIND_ILLEGAL;
      rows_d = 21'd1;
      passes_d = 21'd1;
    end
  end

  logic [1:0] kind_q;
  logic [20:0] rows_q, passes_q, row_q, pass_q;
  logic [20+SHIFT:0] pass_offset;

  assign pass_offset = {pass_q, SHIFT'(0)};
  assign out_kind = kind_q;
  assign out_row = kind_q == KIND_GEMM ? row_q[19:0] : 20'd0;
  assign out_offset = kind_q == KIND_GEMM ? pass_offset[19:0] : kind_q == KIND_ILLEGAL ? 20'd0 : pass_q[19:0];
  assign out_last = pass_q == passes_q - 21'd1;
  assign out_op_last = out_last && row_q == rows_q - 21'd1;
  assign fire = out_valid && out_ready;
  assign in_ready = !out_valid || (fire && out_op_last);
  assign load = in_valid && in_ready;

  logic unused_bits;  // offsets fit 20 bits because k does; the top bits of the wide counters stay zero
  assign unused_bits = ^{pass_offset[20+SHIFT:20], row_q[20], pass_q[20]};

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      out_valid <= 1'b0;
      kind_q <= KIND_ILLEGAL;
      {rows_q, passes_q, row_q, pass_q} <= '0;
      out_tag <= 20'd0;
    end else if (load) begin
      out_valid <= 1'b1;
      kind_q <= kind_d;
      rows_q <= rows_d;
      passes_q <= passes_d;
      row_q <= 21'd0;
      pass_q <= 21'd0;
      out_tag <= in_word[19:0];
    end else if (fire) begin
      if (out_op_last) begin
        out_valid <= 1'b0;
      end else if (out_last) begin
        row_q <= row_q + 21'd1;
        pass_q <= 21'd0;
      end else begin
        pass_q <= pass_q + 21'd1;
      end
    end
  end
endmodule
