// Activation unit, nine modes, FP16 in and out, rounded once to FP16 at the end. Twin of
// duplex::pim::activation_fp16 (rtl/golden/README.md has the operation order). Gated modes (a = gate,
// b = up): s = a, m = a * b exact; added modes (b = bias): s = m = a + b (FP32 RNE);
// out = round_fp16(m * sigmoid(x)):
//   in_mode 0, SiLU gate:       x = s                                    silu(a) * b
//   in_mode 1, GELU tanh:       x = z_tanh(s) = s (c1 + c3 s^2)          gelu_tanh(a + b)
//   in_mode 2, ReLU:            s > 0 ? s : +0 (NaN stays NaN)           relu(a + b)
//   in_mode 3, GELU erf:        x = z_erf(s) = s G(min(s^2, 36))         gelu(a + b)
//   in_mode 4, SiLU:            x = s                                    silu(a + b)
//   in_mode 5, GELU tanh gate:  x = z_tanh(a)                            gelu_tanh(a) * b
//   in_mode 6, ReLU gate:       m = relu(a) * b exact, sigmoid -> 1      relu(a) * b
//   in_mode 7, GELU erf gate:   x = z_erf(a)                             gelu(a) * b
//   in_mode 8, SwiGLU-OAI gate: x = alpha g, m = g (u + 1)               g sigmoid(alpha g) (u + 1)
//     (gpt-oss: g = min(a, 7), u = min(max(b, -7), 7), NaN not clamped; alpha = fp32(1.702))
//   in_mode 9..15: undefined (they take the SiLU path of a + b; the decoder and the wrappers never send them)
// Fully pipelined, one pair per cycle in every mode, valid/ready; the whole pipe stalls while output waits.
// Back stages (every mode; latency 5, datapath_timing.hpp):
//   B1: u = e^-|x| (exp_neg), m;  B2: d = 1 + u;  B3: y = recip(d) = sigmoid(|x|);
//   B4: sg = ReLU (gate) ? 1 : x < 0 ? trunc(u*y) : y;
//   B5 (output register): round_fp16(m * sg); ReLU (added): +0 unless s > 0, NaN stays NaN.
// SiLU and ReLU elements (gated or added) enter B1 from the input port: s = a + b (and m) comes from the F1
// adder in the cycle of the handshake. GELU and SwiGLU-OAI elements first pass a front that computes x (s and
// m travel along):
//   tanh front (5, modes 1 and 5): F1 s; F2 s^2; F3 c3 s^2; F4 p = c1 + c3 s^2; F5 z = s p (latency 10);
//   erf front (17, modes 3 and 7): F1 s; F2 u = s^2; F3 p = c7 min(u, 36) (the clamped u travels along);
//   F4 p + c6; F5 p u; F6 p + c5; ... F15 p u; F16 p + c0; F17 z = s p (latency 22). Coefficients:
//   gelu_erf_coefficients.svh (rtl/scripts/fit_gelu_erf.py). Each stage one fp32_mul or fp32_add (RNE).
//   SwiGLU-OAI front (2, mode 8): F1 g = min(a, 7), u1 = u + 1 (the clamps on the FP16 bits, u + 1 one RNE
//   addition in the handshake cycle); F2 x = alpha g and m = g u1, two fp32_mul side by side (latency 7).
// Order: an element of front length L (0, 2, 5 or 17) reaches B1 L cycles after its handshake; it is accepted
// only if no element in a front would reach B1 in the same or a later cycle (in_ready depends on in_mode):
// a SiLU / ReLU element waits until every front is empty, a SwiGLU-OAI element while a tanh element is in
// F1..F3 or an erf element in F1..F15, a tanh element while an erf element is in F1..F12; an erf element
// never waits. Results keep input order; one mode never stalls.
module activation_unit (
    input  logic        clk,
    input  logic        rst_n,
    input  logic        in_valid,
    output logic        in_ready,
    input  logic [3:0]  in_mode,
    input  logic [15:0] in_a,
    input  logic [15:0] in_b,
    output logic        out_valid,
    input  logic        out_ready,
    output logic [15:0] out_result
);
`include "gelu_erf_coefficients.svh"
  localparam logic [3:0] MODE_SILU_GATE = 4'd0, MODE_GELU_TANH = 4'd1, MODE_RELU = 4'd2, MODE_GELU_ERF = 4'd3,
                         MODE_GELU_TANH_GATE = 4'd5, MODE_RELU_GATE = 4'd6, MODE_GELU_ERF_GATE = 4'd7,
                         MODE_SWIGLU_OAI_GATE = 4'd8;
  localparam logic [15:0] FP16_ONE = 16'h3C00;
  localparam logic [31:0] FP32_ONE = 32'h3F80_0000;
  localparam logic [31:0] GELU_C1 = 32'h3FCC_422A;  // fp32(2 sqrt(2/pi)) = 1.59576917
  localparam logic [31:0] GELU_C3 = 32'h3D92_2279;  // fp32(2 sqrt(2/pi) x 0.044715) = 0.0713548139
  // gpt-oss's clamped SwiGLU, source: HF GptOssExperts / OpenAI gpt-oss swiglu(x, alpha=1.702, limit=7.0)
  localparam logic [31:0] OAI_ALPHA = 32'h3FD9_DB23;  // fp32(1.702) = 1.70200002
  localparam logic [15:0] OAI_LIMIT = 16'h4700;       // 7.0 (FP16)
  localparam logic [7:0][31:0] ERF_C = {GELU_ERF_C7, GELU_ERF_C6, GELU_ERF_C5, GELU_ERF_C4, GELU_ERF_C3,
                                        GELU_ERF_C2, GELU_ERF_C1, GELU_ERF_C0};  // ERF_C[k] = c_k
  localparam int ERF_STAGES = 17, TANH_STAGES = 5;

  logic advance, accept, in_gated, in_tanh, in_erf, in_oai, in_direct, in_relu, in_relu_gate;
  logic a_nan, a_positive, direct, from_tanh, from_erf, from_oai, back_in_valid, clamp;
  logic [15:0] gate_a;
  logic [31:0] a_fp32, b_fp32, sum_in, ab_in, s_in, m_direct;
  // tanh front: s and m travel along, plus each stage's new value
  logic [TANH_STAGES-1:0] tanh_valid;  // bit k: F(k+1) holds an element
  logic [31:0] f1_s, f2_s, f3_s, f4_s, f1_m, f2_m, f3_m, f4_m, f5_m;
  logic [31:0] f2_sq_in, f2_sq, f3_t_in, f3_t, f4_p_in, f4_p, f5_z_in, f5_z;
  // erf front: e_s / e_m / e_u / e_p [k] are the registers of stage Fk
  logic [ERF_STAGES-1:0] erf_valid;  // bit k: F(k+1) holds an element
  logic [31:0] e_s[1:16];
  logic [31:0] e_m[1:17];
  logic [31:0] e_u[3:14];
  logic [31:0] e_p[3:16];
  logic [31:0] e_p_in[3:16];
  logic [31:0] e2_sq_in, e2_sq, u_clamped, e17_z_in, e17_z;
  // SwiGLU-OAI front: F1 g, u + 1; F2 x = alpha g, m = g (u + 1)
  logic [1:0] oai_valid;  // bit k: F(k+1) holds an element
  logic b_nan, a_above, b_above, b_below;
  logic [15:0] oai_gate, oai_up;
  logic [31:0] oai_g_in, oai_u_in, oai_u1_in, o1_g, o1_u1, o2_x_in, o2_m_in, o2_x, o2_m;
  // back (every mode): m is the final multiplicand
  logic [3:0] back_valid;
  logic [2:0] negative_q, one_q;
  logic [3:0] relu_q;
  logic [31:0] x_in, m_in, u_in, d_in, y_in, uy_in, sg_in;
  logic [31:0] b1_u, b1_m, b2_u, b2_d, b2_m, b3_u, b3_y, b3_m, b4_sg, b4_m;
  logic [15:0] product_in, result_in;
  logic m4_nan, m4_positive;

  assign advance = !out_valid || out_ready;
  assign in_tanh = in_mode == MODE_GELU_TANH || in_mode == MODE_GELU_TANH_GATE;
  assign in_erf = in_mode == MODE_GELU_ERF || in_mode == MODE_GELU_ERF_GATE;
  assign in_oai = in_mode == MODE_SWIGLU_OAI_GATE;
  assign in_direct = !in_tanh && !in_erf && !in_oai;
  assign in_relu = in_mode == MODE_RELU;
  assign in_relu_gate = in_mode == MODE_RELU_GATE;
  assign in_gated = in_mode == MODE_SILU_GATE || in_mode == MODE_GELU_TANH_GATE || in_relu_gate ||
                    in_mode == MODE_GELU_ERF_GATE;
  // An element reaches B1 L cycles after its handshake (L = 0, 2, 5, 17); one in F(j) of a front of length
  // L_b reaches it in L_b - j: an element of front L must not follow one in F(j) with j <= L_b - L.
  always_comb begin
    if (in_erf) in_ready = advance;
    else if (in_tanh) in_ready = advance && erf_valid[11:0] == 12'd0;
    else if (in_oai) in_ready = advance && erf_valid[14:0] == 15'd0 && tanh_valid[2:0] == 3'd0;
    else in_ready = advance && erf_valid == '0 && tanh_valid == '0 && oai_valid == '0;
  end
  assign accept = in_valid && in_ready;
  assign direct = accept && in_direct;
  assign from_tanh = tanh_valid[TANH_STAGES-1];
  assign from_erf = erf_valid[ERF_STAGES-1];
  assign from_oai = oai_valid[1];
  assign back_in_valid = from_tanh || from_erf || from_oai || direct;

  // F1 (and a direct element's s, taken into B1 in the same cycle): exact widening, one RNE addition; m = a b
  // exact, with relu(a) for ReLU gate
  fp16_mul_exact widen_a (.a(in_a), .b(FP16_ONE), .product(a_fp32));
  fp16_mul_exact widen_b (.a(in_b), .b(FP16_ONE), .product(b_fp32));
  fp32_add operand_sum (.a(a_fp32), .b(b_fp32), .sum(sum_in));
  assign a_nan = (in_a[14:10] == 5'h1F) && (in_a[9:0] != 10'd0);
  assign a_positive = !in_a[15] && in_a[14:0] != 15'd0;
  assign gate_a = in_relu_gate && !a_nan && !a_positive ? 16'h0000 : in_a;
  fp16_mul_exact a_times_b (.a(gate_a), .b(in_b), .product(ab_in));
  assign s_in = in_gated ? a_fp32 : sum_in;
  assign m_direct = in_gated ? ab_in : sum_in;

  // SwiGLU-OAI front. F1: g = min(a, 7), u = min(max(b, -7), 7) on the FP16 bits (a NaN is not clamped;
  // +Inf -> 7), widened exactly; u + 1 (FP32 RNE). F2: x = alpha g, m = g (u + 1).
  assign b_nan = (in_b[14:10] == 5'h1F) && (in_b[9:0] != 10'd0);
  assign a_above = !in_a[15] && !a_nan && in_a[14:0] > OAI_LIMIT[14:0];
  assign b_above = !in_b[15] && !b_nan && in_b[14:0] > OAI_LIMIT[14:0];
  assign b_below = in_b[15] && !b_nan && in_b[14:0] > OAI_LIMIT[14:0];
  assign oai_gate = a_above ? OAI_LIMIT : in_a;
  assign oai_up = b_above ? OAI_LIMIT : b_below ? {1'b1, OAI_LIMIT[14:0]} : in_b;
  fp16_mul_exact widen_gate (.a(oai_gate), .b(FP16_ONE), .product(oai_g_in));
  fp16_mul_exact widen_up (.a(oai_up), .b(FP16_ONE), .product(oai_u_in));
  fp32_add up_plus_one (.a(oai_u_in), .b(FP32_ONE), .sum(oai_u1_in));
  fp32_mul oai_argument (.a(OAI_ALPHA), .b(o1_g), .product(o2_x_in));
  fp32_mul oai_multiplicand (.a(o1_g), .b(o1_u1), .product(o2_m_in));

  // tanh front F2..F5
  fp32_mul square (.a(f1_s), .b(f1_s), .product(f2_sq_in));
  fp32_mul cubic_coefficient (.a(GELU_C3), .b(f2_sq), .product(f3_t_in));
  fp32_add linear_coefficient (.a(GELU_C1), .b(f3_t), .sum(f4_p_in));
  fp32_mul argument (.a(f4_s), .b(f4_p), .product(f5_z_in));

  // erf front F2..F17: Horner, p = c7; p = p u + c_k for k = 6..0 (F4, F6, .. F16 add c_(16 - k) / 2)
  fp32_mul erf_square (.a(e_s[1]), .b(e_s[1]), .product(e2_sq_in));
  fp32_greater erf_clamp (.a(e2_sq), .b(GELU_ERF_U_MAX), .greater(clamp));  // NaN: no clamp
  assign u_clamped = clamp ? GELU_ERF_U_MAX : e2_sq;
  fp32_mul erf_top (.a(ERF_C[7]), .b(u_clamped), .product(e_p_in[3]));
  for (genvar k = 4; k <= 16; k++) begin : g_horner
    if (k % 2 == 0) begin : g_add
      fp32_add step (.a(e_p[k-1]), .b(ERF_C[(16-k)/2]), .sum(e_p_in[k]));
    end else begin : g_mul
      fp32_mul step (.a(e_p[k-1]), .b(e_u[k-1]), .product(e_p_in[k]));
    end
  end
  fp32_mul erf_argument (.a(e_s[16]), .b(e_p[16]), .product(e17_z_in));

  // B1..B5
  assign x_in = from_tanh ? f5_z : from_erf ? e17_z : from_oai ? o2_x : s_in;
  assign m_in = from_tanh ? f5_m : from_erf ? e_m[17] : from_oai ? o2_m : m_direct;
  exp_neg exponent (.z(x_in), .result(u_in));
  fp32_add one_plus (.a(FP32_ONE), .b(b1_u), .sum(d_in));
  recip reciprocal (.d(b2_d), .result(y_in));
  mul_trunc sigmoid_negative (.u(b3_u), .y(b3_y), .result(uy_in));
  assign sg_in = one_q[2] ? FP32_ONE : negative_q[2] ? uy_in : b3_y;
  fp32_mul_round_fp16 final_round (.a(b4_m), .b(b4_sg), .result(product_in));
  assign m4_nan = (b4_m[30:23] == 8'hFF) && (b4_m[22:0] != 23'd0);
  assign m4_positive = !b4_m[31] && b4_m[30:0] != 31'd0 && !m4_nan;
  assign result_in = relu_q[3] && !m4_positive && !m4_nan ? 16'h0000 : product_in;

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      tanh_valid <= '0;
      erf_valid <= '0;
      oai_valid <= '0;
      back_valid <= '0;
      out_valid <= 1'b0;
      out_result <= 16'd0;
    end else if (advance) begin
      tanh_valid <= {tanh_valid[TANH_STAGES-2:0], accept && in_tanh};
      {f1_s, f1_m} <= {s_in, m_direct};
      {f2_s, f2_m, f2_sq} <= {f1_s, f1_m, f2_sq_in};
      {f3_s, f3_m, f3_t} <= {f2_s, f2_m, f3_t_in};
      {f4_s, f4_m, f4_p} <= {f3_s, f3_m, f4_p_in};
      {f5_m, f5_z} <= {f4_m, f5_z_in};
      erf_valid <= {erf_valid[ERF_STAGES-2:0], accept && in_erf};
      e_s[1] <= s_in;
      for (int k = 2; k <= 16; k++) e_s[k] <= e_s[k-1];
      e_m[1] <= m_direct;
      for (int k = 2; k <= 17; k++) e_m[k] <= e_m[k-1];
      e2_sq <= e2_sq_in;
      e_u[3] <= u_clamped;
      for (int k = 4; k <= 14; k++) e_u[k] <= e_u[k-1];
      for (int k = 3; k <= 16; k++) e_p[k] <= e_p_in[k];
      e17_z <= e17_z_in;
      oai_valid <= {oai_valid[0], accept && in_oai};
      {o1_g, o1_u1} <= {oai_g_in, oai_u1_in};
      {o2_x, o2_m} <= {o2_x_in, o2_m_in};
      back_valid <= {back_valid[2:0], back_in_valid};
      negative_q <= {negative_q[1:0], x_in[31]};
      one_q <= {one_q[1:0], direct && (in_relu || in_relu_gate)};
      relu_q <= {relu_q[2:0], direct && in_relu};
      {b1_u, b1_m} <= {u_in, m_in};
      {b2_u, b2_d, b2_m} <= {b1_u, d_in, b1_m};
      {b3_u, b3_y, b3_m} <= {b2_u, y_in, b2_m};
      {b4_sg, b4_m} <= {sg_in, b3_m};
      out_valid <= back_valid[3];
      out_result <= result_in;
    end
  end
endmodule
