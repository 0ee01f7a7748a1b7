// Attention logit soft-cap stages of the softmax unit (Gemma 2): x' = c tanh(x / c) for one FP32 logit per
// cycle. Twin of duplex::pim::softcap_fp32 (rtl/golden/README.md has the operation order and the error).
// Row constants, registered on cap_load from cap_in (FP16 bits of c > 0): c, 2c, rc = 1/c and 2 rc, with
// rc = r0 + r0 (1 - c r0), r0 = recip(c) (one combinational chain; it is not timed against the clock).
// Elements, 18 register stages (latency 18, initiation interval 1), all moved by `advance`:
//   S1 x;  S2 y = x rc, t = x 2rc;  S3 v = y^2, u = exp_neg(t) = e^-2|y|;
//   polynomial (|y| < 1): S4 p = c7 v (and the region bit v < 1); S5 p + c6; S6 p v; ... S17 p + c0;
//     coefficients softcap_tanh_coefficients.svh (rtl/scripts/fit_softcap_tanh.py);
//   exp form (|y| >= 1, Inf, NaN): S4 d = 1 + u; S5 r0 = recip(d); S6 d r0; S7 e = 1 - d r0; S8 r0 e;
//     S9 r = r0 + r0 e; S10 w = u r; S11 g = 2c w; S12 m = c - g with the sign of x, then carried;
//   S18 (output register): x' = v < 1 ? x p : m.
// Each stage one fp32_mul / fp32_add / exp_neg / recip (RNE FP32).
module softcap_stages (
    input  logic        clk,
    input  logic        rst_n,
    input  logic        cap_load,   // take cap_in as the row's cap (no element may be in flight)
    input  logic [15:0] cap_in,     // FP16 bits of c, finite and > 0
    input  logic        advance,    // every stage moves
    input  logic        in_valid,
    input  logic        in_last,
    input  logic [31:0] in_x,
    output logic        out_valid,
    output logic        out_last,
    output logic [31:0] out_x
);
`include "softcap_tanh_coefficients.svh"
  localparam logic [15:0] FP16_ONE = 16'h3C00;
  localparam logic [31:0] FP32_ONE = 32'h3F80_0000, FP32_TWO = 32'h4000_0000;
  localparam logic [7:0][31:0] POLY_C = {SOFTCAP_C7, SOFTCAP_C6, SOFTCAP_C5, SOFTCAP_C4, SOFTCAP_C3,
                                         SOFTCAP_C2, SOFTCAP_C1, SOFTCAP_C0};  // POLY_C[k] = c_k
  localparam int STAGES = 18;

  function automatic logic [31:0] negate(input logic [31:0] v);
    return {~v[31], v[30:0]};
  endfunction

  // ---------------------------------------------------------------- row constants
  logic [31:0] c_in, c2_in, k_r0, k_cr, k_e, k_re, rc_in, rc2_in;
  logic [31:0] c_q, c2_q, rc_q, rc2_q;
  fp16_mul_exact widen_cap (.a(cap_in), .b(FP16_ONE), .product(c_in));
  fp32_mul double_cap (.a(FP32_TWO), .b(c_in), .product(c2_in));
  recip cap_recip (.d(c_in), .result(k_r0));
  fp32_mul cap_check (.a(c_in), .b(k_r0), .product(k_cr));
  fp32_add cap_error (.a(FP32_ONE), .b(negate(k_cr)), .sum(k_e));
  fp32_mul cap_correction (.a(k_r0), .b(k_e), .product(k_re));
  fp32_add cap_refined (.a(k_r0), .b(k_re), .sum(rc_in));
  fp32_mul double_recip (.a(FP32_TWO), .b(rc_in), .product(rc2_in));

  // ---------------------------------------------------------------- stages
  logic [STAGES-1:0] valid_q, last_q;  // bit k: S(k+1)
  logic [31:0] x_q[1:17];              // x travels to S18
  logic [31:0] v_q[3:15];              // v = y^2 travels along the Horner steps
  logic [31:0] p_q[4:17];              // Horner partial p
  logic [31:0] p_in[4:17];
  logic [31:0] y_in, t_in, v_in, u_in, s2_y, s2_t, s3_u;
  logic poly_in;
  logic [17:4] poly_q;                 // region bit v < 1, from S4
  // exp form
  logic [31:0] d_in, r0_in, dr_in, e_in, re_in, r_in, w_in, g_in, m_in, out_in;
  logic [31:0] s4_d, s4_u, s5_d, s5_r0, s5_u, s6_dr, s6_r0, s6_u, s7_e, s7_r0, s7_u, s8_re, s8_r0, s8_u;
  logic [31:0] s9_r, s9_u, s10_w, s11_g;
  logic [31:0] m_q[12:17];

  // S2, S3
  fp32_mul quotient (.a(x_q[1]), .b(rc_q), .product(y_in));
  fp32_mul double_quotient (.a(x_q[1]), .b(rc2_q), .product(t_in));
  fp32_mul square (.a(s2_y), .b(s2_y), .product(v_in));
  exp_neg exponent (.z(s2_t), .result(u_in));
  // polynomial S4..S17: p = c7 v, then p + c_k / p v alternately (S5, S7, .. S17 add c_(17 - k) / 2)
  fp32_greater region (.a(SOFTCAP_V_MAX), .b(v_q[3]), .greater(poly_in));  // NaN: exp form
  fp32_mul poly_top (.a(POLY_C[7]), .b(v_q[3]), .product(p_in[4]));
  for (genvar k = 5; k <= 17; k++) begin : g_horner
    if (k % 2 == 1) begin : g_add
      fp32_add step (.a(p_q[k-1]), .b(POLY_C[(17-k)/2]), .sum(p_in[k]));
    end else begin : g_mul
      fp32_mul step (.a(p_q[k-1]), .b(v_q[k-1]), .product(p_in[k]));
    end
  end
  // exp form S4..S12
  fp32_add one_plus (.a(FP32_ONE), .b(s3_u), .sum(d_in));
  recip reciprocal (.d(s4_d), .result(r0_in));
  fp32_mul newton_check (.a(s5_d), .b(s5_r0), .product(dr_in));
  fp32_add newton_error (.a(FP32_ONE), .b(negate(s6_dr)), .sum(e_in));
  fp32_mul newton_correction (.a(s7_r0), .b(s7_e), .product(re_in));
  fp32_add newton_refined (.a(s8_r0), .b(s8_re), .sum(r_in));
  fp32_mul ratio (.a(s9_u), .b(s9_r), .product(w_in));
  fp32_mul twice_ratio (.a(c2_q), .b(s10_w), .product(g_in));
  fp32_add capped (.a(c_q), .b(negate(s11_g)), .sum(m_in));
  // S18
  fp32_mul poly_product (.a(x_q[17]), .b(p_q[17]), .product(out_in));

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      valid_q <= '0;
      last_q <= '0;
      {c_q, c2_q, rc_q, rc2_q} <= '0;
      out_valid <= 1'b0;
      out_last <= 1'b0;
      out_x <= 32'd0;
    end else begin
      if (cap_load) {c_q, c2_q, rc_q, rc2_q} <= {c_in, c2_in, rc_in, rc2_in};
      if (advance) begin
        valid_q <= {valid_q[STAGES-2:0], in_valid};
        last_q <= {last_q[STAGES-2:0], in_valid && in_last};
        x_q[1] <= in_x;
        for (int k = 2; k <= 17; k++) x_q[k] <= x_q[k-1];
        {s2_y, s2_t} <= {y_in, t_in};
        {v_q[3], s3_u} <= {v_in, u_in};
        for (int k = 4; k <= 15; k++) v_q[k] <= v_q[k-1];
        for (int k = 4; k <= 17; k++) p_q[k] <= p_in[k];
        poly_q[4] <= poly_in;
        for (int k = 5; k <= 17; k++) poly_q[k] <= poly_q[k-1];
        {s4_d, s4_u} <= {d_in, s3_u};
        {s5_d, s5_r0, s5_u} <= {s4_d, r0_in, s4_u};
        {s6_dr, s6_r0, s6_u} <= {dr_in, s5_r0, s5_u};
        {s7_e, s7_r0, s7_u} <= {e_in, s6_r0, s6_u};
        {s8_re, s8_r0, s8_u} <= {re_in, s7_r0, s7_u};
        {s9_r, s9_u} <= {r_in, s8_u};
        s10_w <= w_in;
        s11_g <= g_in;
        m_q[12] <= {x_q[11][31] ^ m_in[31], m_in[30:0]};  // sign(x) (c - g); NaN x is canonical, sign clear
        for (int k = 13; k <= 17; k++) m_q[k] <= m_q[k-1];
        out_valid <= valid_q[STAGES-2];
        out_last <= last_q[STAGES-2];
        out_x <= poly_q[17] ? out_in : m_q[17];
      end
    end
  end
endmodule
