// sig * 2^exp2 (sig > 0) rounded once to FP16: round to nearest even, subnormals kept, overflow -> Inf
// (combinational). Twin of round_to_fp16 in rtl/golden/src/numerics.cpp.
module fp16_round (
    input  logic        negative,
    input  logic [47:0] sig,
    input  logic [15:0] exp2,  // two's complement
    output logic [15:0] result
);
  int msb, e, quantum, drop;
  logic [63:0] q;
  logic [47:0] below;
  logic round_bit, sticky;
  logic [31:0] magnitude;

  always_comb begin
    msb = 0;
    for (int i = 0; i < 48; i++) if (sig[i]) msb = i;
    e = msb + int'(signed'(exp2));
    quantum = e >= -14 ? e - 10 : -24;
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
    if (e >= -14) magnitude = 32'(e + 15) * 32'd1024 + q[31:0] - 32'd1024;
    else magnitude = q[31:0];
    if (e > 15 || magnitude >= 32'h7C00) result = {negative, 15'h7C00};
    else result = {negative, magnitude[14:0]};
  end
endmodule
