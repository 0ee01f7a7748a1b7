// IEEE 754 binary32 multiplication, round to nearest even, subnormals kept, overflow -> Inf (combinational).
// Twin of numerics::mul_fp32: NaN operand or Inf x 0 -> canonical NaN 0x7FC00000; Inf -> signed Inf; a zero
// -> signed zero. The exact 48-bit significand product is normalised and rounded once (as fp16_round does
// for FP16).
module fp32_mul (
    input  logic [31:0] a,
    input  logic [31:0] b,
    output logic [31:0] product
);
  logic a_nan, b_nan, a_inf, b_inf, a_zero, b_zero, sign, round_bit, sticky;
  logic [47:0] sig, below;
  logic [63:0] q;
  logic [31:0] magnitude;
  int exp2, msb, e, quantum, drop;

  assign a_nan  = (a[30:23] == 8'hFF) && (a[22:0] != 23'd0);
  assign b_nan  = (b[30:23] == 8'hFF) && (b[22:0] != 23'd0);
  assign a_inf  = (a[30:23] == 8'hFF) && (a[22:0] == 23'd0);
  assign b_inf  = (b[30:23] == 8'hFF) && (b[22:0] == 23'd0);
  assign a_zero = a[30:0] == 31'd0;
  assign b_zero = b[30:0] == 31'd0;
  assign sign   = a[31] ^ b[31];
  assign sig    = {24'd0, a[30:23] != 8'd0, a[22:0]} * {24'd0, b[30:23] != 8'd0, b[22:0]};

  always_comb begin
    // each operand is significand * 2^((field == 0 ? 1 : field) - 150)
    exp2 = (a[30:23] == 8'd0 ? 1 : int'(a[30:23])) + (b[30:23] == 8'd0 ? 1 : int'(b[30:23])) - 300;
    msb = 0;
    for (int i = 0; i < 48; i++) if (sig[i]) msb = i;
    e = msb + exp2;                          // unbiased exponent of the leading bit
    quantum = e >= -126 ? e - 23 : -149;     // weight of the last kept bit (subnormals: 2^-149)
    drop = quantum - exp2;
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
    // normal: field (e + 127) plus q in [2^23, 2^24] (a carry bumps the field); subnormal: q in [0, 2^23]
    if (e >= -126) magnitude = 32'(e + 127) * 32'h0080_0000 + q[31:0] - 32'h0080_0000;
    else magnitude = q[31:0];
    if (a_nan || b_nan || (a_inf && b_zero) || (a_zero && b_inf)) product = 32'h7FC0_0000;
    else if (a_inf || b_inf) product = {sign, 8'hFF, 23'd0};
    else if (a_zero || b_zero) product = {sign, 31'd0};
    else if (e > 127 || magnitude >= 32'h7F80_0000) product = {sign, 8'hFF, 23'd0};
    else product = {sign, magnitude[30:0]};
  end
endmodule
