// e^-|z| for an FP32 z by table + linear interpolation in fixed point (combinational).
// Twin of numerics::exp_neg_fp32 (algorithm in rtl/golden/README.md): NaN -> NaN, 0 -> 1, |z| > 64 -> +0.
module exp_neg (
    input  logic [31:0] z,
    output logic [31:0] result
);
`include "datapath_tables.svh"
  localparam logic [24:0] LOG2E_Q24 = 25'd24204407;  // round(log2(e) * 2^24)
  logic is_nan, is_inf, is_zero, too_big;
  logic [23:0] sig;
  logic [26:0] a_fix;
  logic [51:0] t_wide;
  logic [26:0] t;
  logic [6:0] n;
  logic [30:0] hi, lo;
  logic [44:0] slope;
  logic [30:0] v;
  int exp_lead, shift;
  logic unused_bits;  // the sign of z is ignored by definition; t keeps bits [50:24] of the product

  assign unused_bits = ^{z[31], t_wide[51], t_wide[23:0]};

  assign is_nan  = (z[30:23] == 8'hFF) && (z[22:0] != 23'd0);
  assign is_inf  = (z[30:23] == 8'hFF) && (z[22:0] == 23'd0);
  assign is_zero = z[30:0] == 31'd0;
  assign sig     = {z[30:23] != 8'd0, z[22:0]};

  always_comb begin
    exp_lead = (z[30:23] == 8'd0 ? 1 : int'(z[30:23])) - 127;
    too_big = exp_lead > 6 || (exp_lead == 6 && z[22:0] != 23'd0);
    shift = exp_lead - 3;  // a_fix = floor(|z| * 2^20) = sig * 2^(exp_lead - 23 + 20)
    if (too_big) a_fix = 27'd0;
    else if (shift >= 0) a_fix = 27'({3'd0, sig} << shift);
    else if (shift <= -32) a_fix = 27'd0;
    else a_fix = 27'({3'd0, sig} >> (-shift));
    t_wide = {25'd0, a_fix} * {27'd0, LOG2E_Q24};
    t = t_wide[50:24];
    n = t[26:20];
    hi = exp2_neg_knot({1'b0, t[19:14]});
    lo = exp2_neg_knot({1'b0, t[19:14]} + 7'd1);
    slope = (45'(hi) - 45'(lo)) * {31'd0, t[13:0]};
    v = hi - 31'(slope >> 14);
    if (is_nan) result = 32'h7FC0_0000;
    else if (is_zero) result = 32'h3F80_0000;
    else if (is_inf || too_big) result = 32'd0;
    else if (v == 31'h4000_0000) result = {1'b0, 8'd127 - {1'b0, n}, 23'd0};
    else result = {1'b0, 8'd126 - {1'b0, n}, 23'((v - 31'h2000_0000) >> 6)};
  end
endmodule
