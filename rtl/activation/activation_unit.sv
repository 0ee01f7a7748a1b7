// Activation unit, three modes, FP16 in and out, rounded once to FP16 at the end. Twin of
// duplex::pim::activation_fp16 (rtl/golden/README.md has the operation order):
//   in_mode 0, SiLU gate:  silu(a) * b = a * sigmoid(a) * b            (a = gate, b = up)
//   in_mode 1, GELU tanh:  s * sigmoid(z), s = a + b, z = s (c1 + c3 s^2)  (b = bias; = gelu_tanh(s))
//   in_mode 2, ReLU:       s = a + b; s > 0 ? s : +0
//   in_mode 3 is reserved (the command decoder rejects it, RtlDatapath never sends it); it computes as mode 0.
// Fully pipelined, one pair per cycle in every mode, valid/ready; the whole pipe stalls while an output waits.
// Back stages (every mode; latency 5, datapath_timing.hpp):
//   B1: u = e^-|x| (exp_neg) with x = a (SiLU) or z (GELU), m = a*b exact (SiLU) or s (GELU, ReLU);
//   B2: d = 1 + u;  B3: y = recip(d) = sigmoid(|x|);  B4: sg = ReLU ? 1 : x < 0 ? trunc(u*y) : y;
//   B5 (output register): round_fp16(m * sg); ReLU: +0 unless s > 0, NaN stays NaN.
// Front stages (GELU only; latency 5 + 5 = 10): F1: s = a + b; F2: s^2; F3: c3 s^2; F4: p = c1 + c3 s^2;
// F5: z = s p. A SiLU / ReLU element enters B1 from the input port, a GELU element from F5, so a SiLU / ReLU
// element is accepted only while F1..F5 are empty (in_ready depends on in_mode): results keep input order.
module activation_unit (
    input  logic        clk,
    input  logic        rst_n,
    input  logic        in_valid,
    output logic        in_ready,
    input  logic [1:0]  in_mode,
    input  logic [15:0] in_a,
    input  logic [15:0] in_b,
    output logic        out_valid,
    input  logic        out_ready,
    output logic [15:0] out_result
);
  localparam logic [1:0] MODE_GELU = 2'd1, MODE_RELU = 2'd2;
  localparam logic [15:0] FP16_ONE = 16'h3C00;
  localparam logic [31:0] FP32_ONE = 32'h3F80_0000;
  localparam logic [31:0] GELU_C1 = 32'h3FCC_422A;  // fp32(2 sqrt(2/pi)) = 1.59576917
  localparam logic [31:0] GELU_C3 = 32'h3D92_2279;  // fp32(2 sqrt(2/pi) x 0.044715) = 0.0713548139

  logic advance, accept, in_gelu, in_relu, front_empty, from_front, back_in_valid;
  logic [31:0] a_fp32, b_fp32, sum_in, ab_in;
  // front (GELU): s travels along, plus each stage's new value
  logic [4:0] front_valid;
  logic [31:0] f1_s, f2_s, f3_s, f4_s, f5_s;
  logic [31:0] f2_sq_in, f2_sq, f3_t_in, f3_t, f4_p_in, f4_p, f5_z_in, f5_z;
  // back (every mode): m is the final multiplicand
  logic [3:0] back_valid;
  logic [2:0] negative_q;
  logic [3:0] relu_q;
  logic [31:0] x_in, m_in, u_in, d_in, y_in, uy_in, sg_in;
  logic [31:0] b1_u, b1_m, b2_u, b2_d, b2_m, b3_u, b3_y, b3_m, b4_sg, b4_m;
  logic [15:0] product_in, result_in;
  logic m4_nan, m4_positive;

  assign advance = !out_valid || out_ready;
  assign in_gelu = in_mode == MODE_GELU;
  assign in_relu = in_mode == MODE_RELU;
  assign front_empty = front_valid == 5'd0;
  assign in_ready = advance && (in_gelu || front_empty);
  assign accept = in_valid && in_ready;
  assign from_front = front_valid[4];
  assign back_in_valid = from_front || (accept && !in_gelu);

  // F1 (and ReLU's s, taken into B1 in the same cycle): exact widening, one RNE addition
  fp16_mul_exact widen_a (.a(in_a), .b(FP16_ONE), .product(a_fp32));
  fp16_mul_exact widen_b (.a(in_b), .b(FP16_ONE), .product(b_fp32));
  fp32_add operand_sum (.a(a_fp32), .b(b_fp32), .sum(sum_in));
  fp32_mul square (.a(f1_s), .b(f1_s), .product(f2_sq_in));
  fp32_mul cubic_coefficient (.a(GELU_C3), .b(f2_sq), .product(f3_t_in));
  fp32_add linear_coefficient (.a(GELU_C1), .b(f3_t), .sum(f4_p_in));
  fp32_mul argument (.a(f4_s), .b(f4_p), .product(f5_z_in));

  // B1..B5
  fp16_mul_exact a_times_b (.a(in_a), .b(in_b), .product(ab_in));
  assign x_in = from_front ? f5_z : a_fp32;
  assign m_in = from_front ? f5_s : in_relu ? sum_in : ab_in;
  exp_neg exponent (.z(x_in), .result(u_in));
  fp32_add one_plus (.a(FP32_ONE), .b(b1_u), .sum(d_in));
  recip reciprocal (.d(b2_d), .result(y_in));
  mul_trunc sigmoid_negative (.u(b3_u), .y(b3_y), .result(uy_in));
  assign sg_in = relu_q[2] ? FP32_ONE : negative_q[2] ? uy_in : b3_y;
  fp32_mul_round_fp16 final_round (.a(b4_m), .b(b4_sg), .result(product_in));
  assign m4_nan = (b4_m[30:23] == 8'hFF) && (b4_m[22:0] != 23'd0);
  assign m4_positive = !b4_m[31] && b4_m[30:0] != 31'd0 && !m4_nan;
  assign result_in = relu_q[3] && !m4_positive && !m4_nan ? 16'h0000 : product_in;

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      front_valid <= '0;
      back_valid <= '0;
      out_valid <= 1'b0;
      out_result <= 16'd0;
    end else if (advance) begin
      front_valid <= {front_valid[3:0], accept && in_gelu};
      {f1_s} <= {sum_in};
      {f2_s, f2_sq} <= {f1_s, f2_sq_in};
      {f3_s, f3_t} <= {f2_s, f3_t_in};
      {f4_s, f4_p} <= {f3_s, f4_p_in};
      {f5_s, f5_z} <= {f4_s, f5_z_in};
      back_valid <= {back_valid[2:0], back_in_valid};
      negative_q <= {negative_q[1:0], x_in[31]};
      relu_q <= {relu_q[2:0], !from_front && in_relu};
      {b1_u, b1_m} <= {u_in, m_in};
      {b2_u, b2_d, b2_m} <= {b1_u, d_in, b1_m};
      {b3_u, b3_y, b3_m} <= {b2_u, y_in, b2_m};
      {b4_sg, b4_m} <= {sg_in, b3_m};
      out_valid <= back_valid[3];
      out_result <= result_in;
    end
  end
endmodule
