// sig * 2^exp2 (sig > 0) rounded once to a binary float of EXP_BITS exponent and FRAC_BITS fraction bits
// (FP16: 5 / 10, FP32: 8 / 23): round to nearest even, subnormals kept, overflow -> Inf (combinational).
// Twin of round_to_fp16 in rtl/golden/src/numerics.cpp (FP16) and of the host's FP32 rounding (FP32).
module float_round #(
    parameter int EXP_BITS  = 5,
    parameter int FRAC_BITS = 10
) (
    input  logic                          negative,
    input  logic [47:0]                   sig,
    input  logic [15:0]                   exp2,  // two's complement
    output logic [EXP_BITS+FRAC_BITS:0]   result
);
  localparam int BIAS = (1 << (EXP_BITS - 1)) - 1;  // 15 / 127
  localparam int EMIN = 1 - BIAS;                   // exponent of the smallest normal: -14 / -126
  localparam logic [31:0] ONE = 32'(1) << FRAC_BITS;  // the hidden bit
  localparam logic [31:0] INF = 32'((1 << EXP_BITS) - 1) << FRAC_BITS;  // the Inf pattern, sign clear

  int msb, e, quantum, drop;
  logic [63:0] q;
  logic [47:0] below;
  logic round_bit, sticky;
  logic [31:0] magnitude;

  always_comb begin
    msb = 0;
    for (int i = 0; i < 48; i++) if (sig[i]) msb = i;
    e = msb + int'(signed'(exp2));               // unbiased exponent of the leading bit
    quantum = e >= EMIN ? e - FRAC_BITS : EMIN - FRAC_BITS;  // weight of the last kept bit
    drop = quantum - int'(signed'(exp2));
    round_bit = 1'b0;
    sticky = 1'b0;
    below = 48'd0;
    if (drop <= 0) begin
      q = {16'd0, sig} << (-drop);
    end else if (drop > 48) begin
      q = 64'd0;
    end else begin
      q = {16'd0, sig} >> drop;
      round_bit = sig[drop-1];
      below = sig & ((48'd1 << (drop - 1)) - 48'd1);
      sticky = below != 48'd0;
    end
    if (round_bit && (sticky || q[0])) q = q + 64'd1;
    // normal: field (e + BIAS) plus q in [ONE, 2 ONE] (a carry bumps the field); subnormal: q in [0, ONE]
    if (e >= EMIN) magnitude = 32'(e + BIAS) * ONE + q[31:0] - ONE;
    else magnitude = q[31:0];
    if (e > BIAS || magnitude >= INF) result = {negative, INF[EXP_BITS+FRAC_BITS-1:0]};
    else result = {negative, magnitude[EXP_BITS+FRAC_BITS-1:0]};
  end
endmodule
