// The exact product of two FP32 values rounded once to FP16 (combinational). Twin of numerics::mul_round_fp16:
// NaN operand or Inf x 0 -> 0x7E00; Inf -> signed Inf; zero -> signed zero; else RNE (fp32_mul_round).
// With b = 1.0 (0x3F800000) it is the accumulator-to-FP16 conversion to_fp16.
module fp32_mul_round_fp16 (
    input  logic [31:0] a,
    input  logic [31:0] b,
    output logic [15:0] result
);
  fp32_mul_round #(
      .EXP_BITS (5),
      .FRAC_BITS(10)
  ) to_fp16 (
      .a(a),
      .b(b),
      .result(result)
  );
endmodule
