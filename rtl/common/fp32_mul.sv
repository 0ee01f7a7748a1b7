// IEEE 754 binary32 multiplication, round to nearest even, subnormals kept, overflow -> Inf (combinational).
// Twin of numerics::mul_fp32: NaN operand or Inf x 0 -> canonical NaN 0x7FC00000; Inf -> signed Inf; a zero
// -> signed zero. The exact 48-bit significand product rounded once (fp32_mul_round at FP32).
module fp32_mul (
    input  logic [31:0] a,
    input  logic [31:0] b,
    output logic [31:0] product
);
  fp32_mul_round #(
      .EXP_BITS (8),
      .FRAC_BITS(23)
  ) to_fp32 (
      .a(a),
      .b(b),
      .result(product)
  );
endmodule
