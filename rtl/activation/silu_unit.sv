// Activation unit: out = silu(gate) * up = gate * sigmoid(gate) * up, rounded once to FP16.
// Twin of duplex::pim::silu_gate_fp16 (rtl/golden/README.md). Fully pipelined, one pair per cycle, valid/ready;
// the pipe stalls while an output waits. Stages (latency 5, datapath_timing.hpp):
//   1: u = e^-|g| (exp_neg), g*up exact;  2: d = 1 + u;  3: y = recip(d) = sigmoid(|g|);
//   4: s = g < 0 ? trunc(u*y) : y;        5: round_fp16(g*up * s).
module silu_unit (
    input  logic        clk,
    input  logic        rst_n,
    input  logic        in_valid,
    output logic        in_ready,
    input  logic [15:0] in_gate,
    input  logic [15:0] in_up,
    output logic        out_valid,
    input  logic        out_ready,
    output logic [15:0] out_result
);
  localparam logic [15:0] FP16_ONE = 16'h3C00;
  localparam logic [31:0] FP32_ONE = 32'h3F80_0000;

  logic [3:0] valid_q;
  logic [2:0] negative_q;
  logic [31:0] gate_fp32, u_in, gu_in, d_in, y_in, uy_in, s_in;
  logic [31:0] u1, gu1, u2, gu2, d2, u3, gu3, y3, gu4, s4;
  logic [15:0] result_in;
  logic advance;

  assign advance = !out_valid || out_ready;
  assign in_ready = advance;

  fp16_mul_exact widen (.a(in_gate), .b(FP16_ONE), .product(gate_fp32));
  exp_neg exponent (.z(gate_fp32), .result(u_in));
  fp16_mul_exact gate_times_up (.a(in_gate), .b(in_up), .product(gu_in));
  fp32_add one_plus (.a(FP32_ONE), .b(u1), .sum(d_in));
  recip reciprocal (.d(d2), .result(y_in));
  mul_trunc sigmoid_negative (.u(u3), .y(y3), .result(uy_in));
  assign s_in = negative_q[2] ? uy_in : y3;
  fp32_mul_round_fp16 final_round (.a(gu4), .b(s4), .result(result_in));

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      valid_q <= '0;
      out_valid <= 1'b0;
      out_result <= 16'd0;
    end else if (advance) begin
      valid_q <= {valid_q[2:0], in_valid};
      negative_q <= {negative_q[1:0], in_gate[15]};
      {u1, gu1} <= {u_in, gu_in};
      {u2, gu2, d2} <= {u1, gu1, d_in};
      {u3, gu3, y3} <= {u2, gu2, y_in};
      {gu4, s4} <= {gu3, s_in};
      out_valid <= valid_q[3];
      out_result <= result_in;
    end
  end
endmodule
