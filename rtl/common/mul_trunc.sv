// u * y for positive FP32 values, the exact 48-bit significand product truncated to 24 bits
// (combinational). Twin of numerics::mul_trunc_fp32; 0 if either operand is zero.
module mul_trunc (
    input  logic [31:0] u,
    input  logic [31:0] y,
    output logic [31:0] result
);
  logic [47:0] p;
  int field;
  logic unused_bits;  // operands are positive by contract; truncation drops the low product bits

  assign unused_bits = ^{u[31], y[31], p[22:0]};

  assign p = {24'd0, u[30:23] != 8'd0, u[22:0]} * {24'd0, y[30:23] != 8'd0, y[22:0]};
  always_comb begin
    field = int'(u[30:23]) + int'(y[30:23]) - 127 + (p[47] ? 1 : 0);
    if (u[30:0] == 31'd0 || y[30:0] == 31'd0 || field <= 0) result = 32'd0;
    else if (p[47]) result = {1'b0, 8'(field), p[46:24]};
    else result = {1'b0, 8'(field), p[45:23]};
  end
endmodule
