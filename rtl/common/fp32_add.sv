// IEEE 754 binary32 addition, round to nearest even, subnormals kept (combinational).
// Twin of numerics::add_fp32: x + (-x) = +0; Inf - Inf and NaN operands -> canonical NaN 0x7FC00000.
module fp32_add (
    input  logic [31:0] a,
    input  logic [31:0] b,
    output logic [31:0] sum
);
  logic a_nan, b_nan, a_inf, b_inf, swap, subtract, round_up;
  logic [31:0] big_op, small_op;
  logic [23:0] big_sig, small_sig;
  logic [27:0] big_ext, small_ext, small_shifted, s;
  logic [24:0] rounded;
  int big_exp, small_exp, diff, e;

  assign a_nan = (a[30:23] == 8'hFF) && (a[22:0] != 23'd0);
  assign b_nan = (b[30:23] == 8'hFF) && (b[22:0] != 23'd0);
  assign a_inf = (a[30:23] == 8'hFF) && (a[22:0] == 23'd0);
  assign b_inf = (b[30:23] == 8'hFF) && (b[22:0] == 23'd0);

  always_comb begin
    swap = b[30:0] > a[30:0];
    big_op = swap ? b : a;
    small_op = swap ? a : b;
    subtract = big_op[31] ^ small_op[31];
    big_exp = big_op[30:23] == 8'd0 ? 1 : int'(big_op[30:23]);
    small_exp = small_op[30:23] == 8'd0 ? 1 : int'(small_op[30:23]);
    big_sig = {big_op[30:23] != 8'd0, big_op[22:0]};
    small_sig = {small_op[30:23] != 8'd0, small_op[22:0]};
    diff = big_exp - small_exp;
    // [27] carry, [26:3] significand, [2] guard, [1] round, [0] sticky
    big_ext = {1'b0, big_sig, 3'b000};
    small_ext = {1'b0, small_sig, 3'b000};
    if (diff >= 27) begin
      small_shifted = {27'd0, small_sig != 24'd0};
    end else begin
      small_shifted = small_ext >> diff;
      small_shifted[0] = small_shifted[0] | ((small_ext & ((28'd1 << diff) - 28'd1)) != 28'd0);
    end
    s = subtract ? big_ext - small_shifted : big_ext + small_shifted;
    e = big_exp;
    if (s[27]) begin
      s = {1'b0, s[27:2], s[1] | s[0]};
      e = e + 1;
    end
    for (int i = 0; i < 26; i++) begin
      if (!s[26] && e > 1) begin
        s = s << 1;
        e = e - 1;
      end
    end
    round_up = s[2] & (s[1] | s[0] | s[3]);
    rounded = {1'b0, s[26:3]} + {24'd0, round_up};
    if (rounded[24]) begin
      rounded = rounded >> 1;
      e = e + 1;
    end
    if (a_nan || b_nan || (a_inf && b_inf && (a[31] != b[31]))) sum = 32'h7FC0_0000;
    else if (a_inf) sum = a;
    else if (b_inf) sum = b;
    else if (subtract && s == 28'd0) sum = 32'd0;
    else if (e >= 255) sum = {big_op[31], 8'hFF, 23'd0};
    else sum = {big_op[31], rounded[23] ? 8'(e) : 8'd0, rounded[22:0]};
  end
endmodule
