// GEMM-module lane: LANES FP16 multipliers (exact FP32 products), a pipelined pairwise FP32 adder tree and an
// FP32 accumulator, with valid/ready handshakes. Twin of duplex::pim::dot_fp16 (rtl/golden/README.md).
// One pass (LANES element pairs) is accepted per cycle; in_last marks the last pass of a dot product, whose
// accumulated sum is presented on out_acc (FP32) and out_fp16 (RNE). The accumulator then restarts at +0.
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
    input  logic                 in_last,
    output logic                 out_valid,
    input  logic                 out_ready,
    output logic [31:0]          out_acc,
    output logic [15:0]          out_fp16
);
  localparam int LEVELS = $clog2(LANES);
  localparam logic [31:0] FP32_ONE = 32'h3F80_0000;

  // Heap-numbered tree: node i sums nodes 2i and 2i+1; leaves LANES..2*LANES-1 hold the products.
  logic [31:0] node_q[1:2*LANES-1];
  logic [31:0] node_sum[1:LANES-1];
  logic [31:0] product[LANES];
  logic [LEVELS:0] valid_q, last_q;
  logic [31:0] acc_q, acc_next;
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
  fp32_add accumulate (.a(acc_q), .b(node_q[1]), .sum(acc_next));
  fp32_mul_round_fp16 to_fp16 (.a(acc_next), .b(FP32_ONE), .result(acc_next_fp16));

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      valid_q   <= '0;
      last_q    <= '0;
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
      end
      valid_q[0] <= in_valid;  // in_ready == advance here
      last_q[0]  <= in_last;
      out_valid <= valid_q[LEVELS] && last_q[LEVELS];
      if (valid_q[LEVELS]) begin
        acc_q <= last_q[LEVELS] ? 32'd0 : acc_next;
        if (last_q[LEVELS]) begin
          out_acc  <= acc_next;
          out_fp16 <= acc_next_fp16;
        end
      end
    end
  end
endmodule
