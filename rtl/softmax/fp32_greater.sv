// a > b for FP32 values (IEEE comparison, combinational): false if either is NaN; +0 == -0.
module fp32_greater (
    input  logic [31:0] a,
    input  logic [31:0] b,
    output logic        greater
);
  logic a_nan, b_nan;

  assign a_nan = (a[30:23] == 8'hFF) && (a[22:0] != 23'd0);
  assign b_nan = (b[30:23] == 8'hFF) && (b[22:0] != 23'd0);
  always_comb begin
    if (a_nan || b_nan || (a[30:0] == 31'd0 && b[30:0] == 31'd0)) greater = 1'b0;
    else if (a[31] != b[31]) greater = !a[31];
    else if (!a[31]) greater = a[30:0] > b[30:0];
    else greater = a[30:0] < b[30:0];
  end
endmodule
