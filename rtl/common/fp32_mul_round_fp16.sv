// The exact product of two FP32 values rounded once to FP16 (combinational). Twin of numerics::mul_round_fp16:
// NaN operand or Inf x 0 -> 0x7E00; Inf -> signed Inf; zero -> signed zero; else RNE via fp16_round.
// With b = 1.0 (0x3F800000) it is the accumulator-to-FP16 conversion to_fp16.
module fp32_mul_round_fp16 (
    input  logic [31:0] a,
    input  logic [31:0] b,
    output logic [15:0] result
);
  logic a_nan, b_nan, a_inf, b_inf, a_zero, b_zero, sign;
  logic [47:0] sig;
  logic [15:0] exp2, rounded;

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

  fp16_round round_product (.negative(sign), .sig(sig), .exp2(exp2), .result(rounded));

  always_comb begin
    if (a_nan || b_nan || (a_inf && b_zero) || (a_zero && b_inf)) result = 16'h7E00;
    else if (a_inf || b_inf) result = {sign, 15'h7C00};
    else if (a_zero || b_zero) result = {sign, 15'd0};
    else result = rounded;
  end
endmodule
