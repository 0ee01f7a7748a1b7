// 1/|d| for an FP32 d by table + linear interpolation (combinational). Twin of numerics::recip_fp32:
// NaN -> NaN, Inf -> +0, zero/subnormal -> +Inf, powers of two exact, results below the smallest normal -> +0.
module recip (
    input  logic [31:0] d,
    output logic [31:0] result
);
`include "datapath_tables.svh"
  logic [30:0] hi, lo, v;
  logic [46:0] slope;
  int out_field;
  logic unused_sign;  // 1/|d|: the sign is ignored by definition

  assign unused_sign = d[31];

  always_comb begin
    hi = recip_knot({1'b0, d[22:16]});
    lo = recip_knot({1'b0, d[22:16]} + 8'd1);
    slope = (47'(hi) - 47'(lo)) * {31'd0, d[15:0]};
    v = hi - 31'(slope >> 16);
    out_field = (d[22:0] == 23'd0 ? 254 : 253) - int'(d[30:23]);
    if (d[30:23] == 8'hFF) result = d[22:0] != 23'd0 ? 32'h7FC0_0000 : 32'd0;
    else if (d[30:23] == 8'd0) result = 32'h7F80_0000;
    else if (out_field <= 0) result = 32'd0;
    else if (d[22:0] == 23'd0) result = {1'b0, 8'(out_field), 23'd0};
    else result = {1'b0, 8'(out_field), 23'((v - 31'h2000_0000) >> 6)};
  end
endmodule
