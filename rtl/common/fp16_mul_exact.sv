// FP16 x FP16 -> FP32, exact (combinational). Twin of numerics::mul_fp16_exact (rtl/golden/README.md).
// NaN operand or Inf x 0 -> canonical NaN 0x7FC00000; Inf -> signed Inf; zero -> signed zero.
module fp16_mul_exact (
    input  logic [15:0] a,
    input  logic [15:0] b,
    output logic [31:0] product
);
  logic a_nan, b_nan, a_inf, b_inf, a_zero, b_zero, sign;
  logic [10:0] a_sig, b_sig;
  logic [21:0] sig;
  logic [20:0] frac;
  int msb, lead_exp;

  assign a_nan  = (a[14:10] == 5'h1F) && (a[9:0] != 10'd0);
  assign b_nan  = (b[14:10] == 5'h1F) && (b[9:0] != 10'd0);
  assign a_inf  = (a[14:10] == 5'h1F) && (a[9:0] == 10'd0);
  assign b_inf  = (b[14:10] == 5'h1F) && (b[9:0] == 10'd0);
  assign a_zero = a[14:0] == 15'd0;
  assign b_zero = b[14:0] == 15'd0;
  assign sign   = a[15] ^ b[15];
  assign a_sig  = {a[14:10] != 5'd0, a[9:0]};
  assign b_sig  = {b[14:10] != 5'd0, b[9:0]};
  assign sig    = a_sig * b_sig;

  always_comb begin
    msb = 0;
    for (int i = 0; i < 22; i++) if (sig[i]) msb = i;
    // value = sig * 2^(ea + eb), e = (field == 0 ? 1 : field) - 25 for each operand
    lead_exp = msb + (a[14:10] == 5'd0 ? 1 : int'(a[14:10])) + (b[14:10] == 5'd0 ? 1 : int'(b[14:10])) - 50;
    frac = 21'(sig << (21 - msb));  // drops the leading one
    if (a_nan || b_nan || (a_inf && b_zero) || (a_zero && b_inf)) product = 32'h7FC0_0000;
    else if (a_inf || b_inf) product = {sign, 8'hFF, 23'd0};
    else if (a_zero || b_zero) product = {sign, 31'd0};
    else product = {sign, 8'(lead_exp + 127), frac, 2'b00};
  end
endmodule
