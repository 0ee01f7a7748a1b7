// The exact product of two FP32 values rounded once to a binary float of EXP_BITS / FRAC_BITS (FP16: 5 / 10,
// FP32: 8 / 23) (combinational). NaN operand or Inf x 0 -> the format's canonical NaN (0x7E00 / 0x7FC00000);
// Inf -> signed Inf; a zero -> signed zero; else RNE via float_round (subnormals kept, overflow -> Inf).
module fp32_mul_round #(
    parameter int EXP_BITS  = 5,
    parameter int FRAC_BITS = 10
) (
    input  logic [31:0]                 a,
    input  logic [31:0]                 b,
    output logic [EXP_BITS+FRAC_BITS:0] result
);
  localparam logic [EXP_BITS+FRAC_BITS:0] NAN = {1'b0, {EXP_BITS{1'b1}}, 1'b1, {(FRAC_BITS - 1) {1'b0}}};
  logic a_nan, b_nan, a_inf, b_inf, a_zero, b_zero, sign;
  logic [47:0] sig;
  logic [15:0] exp2;
  logic [EXP_BITS+FRAC_BITS:0] rounded;

  assign a_nan  = (a[30:23] == 8'hFF) && (a[22:0] != 23'd0);
  assign b_nan  = (b[30:23] == 8'hFF) && (b[22:0] != 23'd0);
  assign a_inf  = (a[30:23] == 8'hFF) && (a[22:0] == 23'd0);
  assign b_inf  = (b[30:23] == 8'hFF) && (b[22:0] == 23'd0);
  assign a_zero = a[30:0] == 31'd0;
  assign b_zero = b[30:0] == 31'd0;
  assign sign   = a[31] ^ b[31];
  assign sig    = {24'd0, a[30:23] != 8'd0, a[22:0]} * {24'd0, b[30:23] != 8'd0, b[22:0]};
  // each operand is significand * 2^((field == 0 ? 1 : field) - 150)
  assign exp2   = 16'((a[30:23] == 8'd0 ? 1 : int'(a[30:23])) + (b[30:23] == 8'd0 ? 1 : int'(b[30:23])) - 300);

  float_round #(
      .EXP_BITS (EXP_BITS),
      .FRAC_BITS(FRAC_BITS)
  ) round_product (
      .negative(sign),
      .sig(sig),
      .exp2(exp2),
      .result(rounded)
  );

  always_comb begin
    if (a_nan || b_nan || (a_inf && b_zero) || (a_zero && b_inf)) result = NAN;
    else if (a_inf || b_inf) result = {sign, {EXP_BITS{1'b1}}, {FRAC_BITS{1'b0}}};
    else if (a_zero || b_zero) result = {sign, {(EXP_BITS + FRAC_BITS) {1'b0}}};
    else result = rounded;
  end
endmodule
