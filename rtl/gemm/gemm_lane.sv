// GEMM-module lane: LANES FP16 multipliers (exact FP32 products), a pipelined pairwise FP32 adder tree and an
// FP32 accumulator, with valid/ready handshakes. Twin of duplex::pim::dot_fp16 (rtl/golden/README.md).
// One pass (LANES element pairs) is accepted per cycle; in_last marks the last pass of a dot product, whose
// accumulated sum is presented on out_acc (FP32) and out_fp16 (RNE). in_bias (FP16) is sampled with the
// first pass of each dot product (the first after reset or after an in_last pass): the accumulator starts at
// it, widened exactly to FP32 (a GEMV bias, added once before the rounding; 0 = +0: no bias). It travels down
// the pipeline with its pass and is selected in the accumulate stage, so it costs no cycle.
// Latency: 2 + log2(LANES) cycles (datapath_timing.hpp); the whole pipe stalls while an output waits.
module gemm_lane #(
    parameter int LANES = 16  // power of two, 2..64
) (
    input  logic                 clk,
    input  logic                 rst_n,
    input  logic                 in_valid,
    output logic                 in_ready,
    input  logic [LANES*16-1:0]  in_a,
    input  logic [LANES*16-1:0]  in_b,
    input  logic [15:0]          in_bias,
    input  logic                 in_last,
    output logic                 out_valid,
    input  logic                 out_ready,
    output logic [31:0]          out_acc,
    output logic [15:0]          out_fp16
);
  localparam int LEVELS = $clog2(LANES);
  localparam logic [31:0] FP32_ONE = 32'h3F80_0000;
  localparam logic [15:0] FP16_ONE = 16'h3C00;

  // Heap-numbered tree: node i sums nodes 2i and 2i+1; leaves LANES..2*LANES-1 hold the products.
  logic [31:0] node_q[1:2*LANES-1];
  logic [31:0] node_sum[1:LANES-1];
  logic [31:0] product[LANES];
  logic [LEVELS:0] valid_q, last_q, first_q;
  logic [15:0] bias_q[0:LEVELS];  // the dot product's bias, beside its first pass
  logic starting_q;               // the next pass accepted is the first of a dot product
  logic [31:0] acc_q, acc_next, acc_base, bias_fp32;
  logic [15:0] acc_next_fp16;
  logic advance;

  assign advance  = !out_valid || out_ready;
  assign in_ready = advance;

  for (genvar i = 0; i < LANES; i++) begin : g_mul
    fp16_mul_exact mul (.a(in_a[i*16+:16]), .b(in_b[i*16+:16]), .product(product[i]));
  end
  for (genvar i = 1; i < LANES; i++) begin : g_tree
    fp32_add add (.a(node_q[2*i]), .b(node_q[2*i+1]), .sum(node_sum[i]));
  end
  // The first pass of a dot product adds its tree sum to the bias, every later pass to the accumulator.
  fp16_mul_exact widen_bias (.a(bias_q[LEVELS]), .b(FP16_ONE), .product(bias_fp32));
  assign acc_base = first_q[LEVELS] ? bias_fp32 : acc_q;
  fp32_add accumulate (.a(acc_base), .b(node_q[1]), .sum(acc_next));
  fp32_mul_round_fp16 to_fp16 (.a(acc_next), .b(FP32_ONE), .result(acc_next_fp16));

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      valid_q   <= '0;
      last_q    <= '0;
      first_q   <= '0;
      starting_q <= 1'b1;
      acc_q     <= 32'd0;
      out_valid <= 1'b0;
      out_acc   <= 32'd0;
      out_fp16  <= 16'd0;
    end else if (advance) begin
      for (int i = 0; i < LANES; i++) node_q[LANES+i] <= product[i];
      for (int i = 1; i < LANES; i++) node_q[i] <= node_sum[i];
      for (int l = LEVELS; l > 0; l--) begin
        valid_q[l] <= valid_q[l-1];
        last_q[l]  <= last_q[l-1];
        first_q[l] <= first_q[l-1];
        bias_q[l]  <= bias_q[l-1];
      end
      valid_q[0] <= in_valid;  // in_ready == advance here
      last_q[0]  <= in_last;
      first_q[0] <= starting_q;
      bias_q[0]  <= in_bias;
      if (in_valid) starting_q <= in_last;
      out_valid <= valid_q[LEVELS] && last_q[LEVELS];
      if (valid_q[LEVELS]) begin
        acc_q <= acc_next;
        if (last_q[LEVELS]) begin
          out_acc  <= acc_next;
          out_fp16 <= acc_next_fp16;
        end
      end
    end
  end
endmodule
