// Softmax unit: probs[i] = exp(x'[i] - max) / sum, x = scale*s[i], x' = softcap(x), FP16 in and out. Twin
// of duplex::pim::softmax_fp16 (rtl/golden/README.md). The row (1..MAX_N FP16 scores, in_last on the final
// one) is streamed in and kept in the score buffer; then three passes, one element per cycle each:
//   LOAD: x = scale * s (exact FP32), x' (cap), running max of x';  SUM: e = exp_neg(x' - max), sum += e
//   (FP32, in order);  RECIP: r = recip(sum);  OUT: x' again, p = round_fp16(e * r), out with out_last.
// scale and softcap are sampled with the first score of a row. softcap (FP16 bits) = +0: no cap, x' = x;
// else (finite, > 0: the caller validates) x' = c tanh(x / c) through softcap_stages (18 stages), which every
// pass then goes through: LOAD waits in DRAIN for the row's last capped value before SUM.
// An attention sink (gpt-oss: a learned logit S per head, in_sink FP16 with in_has_sink, sampled with the
// first score; neither scaled nor capped) joins the row as an extra element of the max and the sum only: the
// running max starts at S instead of -Inf, and in the first SUM cycle (when the subtract stage is idle: the
// first score is only being read from the buffer, the cap stages are empty) S - max enters the exp stage ahead
// of the scores, so the sum starts with e^(S - max). No probability is produced for it; it costs no cycle.
// A row reaching MAX_N elements ends there.
// Cycles from the first score accepted to the last probability presented: 3 n + 7, and 3 n + 7 + 3 x 18
// with a cap, with or without a sink (datapath_timing.hpp).
module softmax_unit #(
    parameter int MAX_N = 32768
) (
    input  logic        clk,
    input  logic        rst_n,
    input  logic        in_valid,
    output logic        in_ready,
    input  logic [15:0] in_score,
    input  logic [15:0] in_scale,
    input  logic [15:0] in_softcap,
    input  logic [15:0] in_sink,
    input  logic        in_has_sink,
    input  logic        in_last,
    output logic        out_valid,
    input  logic        out_ready,
    output logic [15:0] out_prob,
    output logic        out_last
);
  localparam int AW = $clog2(MAX_N);
  localparam logic [31:0] FP32_NEG_INF = 32'hFF80_0000;
  typedef enum logic [2:0] {LOAD, DRAIN, SUM, RECIP, OUT} state_t;

  state_t state;
  logic [15:0] scores[MAX_N];
  logic [15:0] scale_q;
  logic capped_q;        // the row has a soft-cap
  logic has_sink_q;      // the row has a sink
  logic sink_pending_q;  // the sink's e^(S - max) is still to enter the sum (SUM's first cycle)
  logic [31:0] sink_q;   // the sink widened to FP32
  logic [AW:0] count, n_q, rd_idx;
  logic [31:0] max_q, sum_q, recip_q;

  // LOAD datapath
  logic [15:0] load_scale;
  logic [31:0] load_x, max_cand, sink_fp32, row_max0;
  logic load_greater, load_fire, load_capped, load_has_sink, load_end;
  assign load_scale = count == '0 ? in_scale : scale_q;
  assign load_capped = count == '0 ? in_softcap != 16'd0 : capped_q;
  assign load_has_sink = count == '0 ? in_has_sink : has_sink_q;
  fp16_mul_exact widen_sink (.a(in_sink), .b(16'h3C00), .product(sink_fp32));
  assign row_max0   = in_has_sink ? sink_fp32 : FP32_NEG_INF;  // the max before the row's first score
  assign max_cand   = count == '0 ? row_max0 : max_q;
  assign in_ready   = state == LOAD;
  assign load_fire  = in_valid && in_ready;
  assign load_end   = in_last || count == (AW+1)'(MAX_N - 1);
  fp16_mul_exact load_mul (.a(load_scale), .b(in_score), .product(load_x));
  fp32_greater load_cmp (.a(load_x), .b(max_cand), .greater(load_greater));

  // SUM / OUT pipeline: read (p1) -> [capped: softcap_stages, 18] -> x' - max (p2) -> exp (p3) -> sum / out.
  logic p1_valid, p2_valid, p3_valid, p1_last, p2_last, p3_last;
  logic [15:0] p1_score;
  logic [31:0] p2_z, p3_e, x_rd, z_rd, e_rd, sum_next, recip_next, x_cap;
  logic [15:0] prob_rd;
  logic advance, issue, z_valid, z_last, sink_inject;
  assign advance = state != OUT || !out_valid || out_ready;
  assign issue = (state == SUM || state == OUT) && rd_idx < n_q;
  fp16_mul_exact read_mul (.a(scale_q), .b(p1_score), .product(x_rd));

  // Cap stages, shared by the passes: LOAD feeds the accepted x and takes x' into the max (LOAD, DRAIN);
  // SUM and OUT feed the read x and take x' into the subtraction.
  logic cap_in_valid, cap_in_last, cap_out_valid, cap_out_last, cap_greater, cap_to_max;
  logic [31:0] cap_in_x;
  assign cap_in_valid = state == LOAD ? load_fire && load_capped : p1_valid && capped_q;
  assign cap_in_last = state == LOAD ? load_end : p1_last;
  assign cap_in_x = state == LOAD ? load_x : x_rd;
  softcap_stages softcap (
      .clk, .rst_n, .cap_load(load_fire && count == '0), .cap_in(in_softcap), .advance,
      .in_valid(cap_in_valid), .in_last(cap_in_last), .in_x(cap_in_x),
      .out_valid(cap_out_valid), .out_last(cap_out_last), .out_x(x_cap));
  assign cap_to_max = (state == LOAD || state == DRAIN) && cap_out_valid;
  fp32_greater cap_cmp (.a(x_cap), .b(max_q), .greater(cap_greater));

  // The sink enters the subtraction in SUM's first cycle, when neither the read path nor the cap stages
  // have an element for it.
  assign sink_inject = state == SUM && sink_pending_q;
  assign z_valid = sink_inject || (capped_q ? cap_out_valid && !cap_to_max : p1_valid);
  assign z_last = !sink_inject && (capped_q ? cap_out_last : p1_last);
  fp32_add subtract_max (.a(sink_inject ? sink_q : capped_q ? x_cap : x_rd), .b({~max_q[31], max_q[30:0]}),
                         .sum(z_rd));
  exp_neg exponent (.z(p2_z), .result(e_rd));
  fp32_add accumulate (.a(sum_q), .b(p3_e), .sum(sum_next));
  recip reciprocal (.d(sum_q), .result(recip_next));
  fp32_mul_round_fp16 scale_out (.a(p3_e), .b(recip_q), .result(prob_rd));

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      state <= LOAD;
      count <= '0;
      n_q <= '0;
      rd_idx <= '0;
      scale_q <= 16'd0;
      capped_q <= 1'b0;
      has_sink_q <= 1'b0;
      sink_pending_q <= 1'b0;
      sink_q <= 32'd0;
      max_q <= FP32_NEG_INF;
      sum_q <= 32'd0;
      recip_q <= 32'd0;
      {p1_valid, p2_valid, p3_valid, p1_last, p2_last, p3_last} <= '0;
      out_valid <= 1'b0;
      out_last <= 1'b0;
      out_prob <= 16'd0;
    end else begin
      if (load_fire) begin
        scores[count[AW-1:0]] <= in_score;
        if (count == '0) begin
          scale_q <= in_scale;
          capped_q <= load_capped;
          has_sink_q <= in_has_sink;
          sink_q <= sink_fp32;
        end
        // uncapped: the running max of x here; capped: the row's start (the sink or -Inf), the cap stages'
        // outputs take the max
        max_q <= load_capped ? max_cand : load_greater ? load_x : max_cand;
        if (load_end) begin
          sink_pending_q <= load_has_sink;
          n_q <= count + 1'b1;
          count <= '0;
          rd_idx <= '0;
          sum_q <= 32'd0;
          state <= load_capped ? DRAIN : SUM;
        end else begin
          count <= count + 1'b1;
        end
      end
      if (cap_to_max) begin
        if (cap_greater) max_q <= x_cap;  // NaN never replaces the max
        if (cap_out_last) state <= SUM;
      end
      if (advance) begin
        p1_valid <= issue;
        p1_last <= issue && rd_idx == n_q - 1'b1;
        if (issue) begin
          p1_score <= scores[rd_idx[AW-1:0]];
          rd_idx <= rd_idx + 1'b1;
        end
        if (sink_inject) sink_pending_q <= 1'b0;
        p2_valid <= z_valid;
        p2_last <= z_last;
        p2_z <= z_rd;
        p3_valid <= p2_valid;
        p3_last <= p2_last;
        p3_e <= e_rd;
      end
      if (state == SUM && p3_valid) begin
        sum_q <= sum_next;
        if (p3_last) state <= RECIP;
      end
      if (state == RECIP) begin
        recip_q <= recip_next;
        rd_idx <= '0;
        state <= OUT;
      end
      if (state == OUT && advance) begin
        out_valid <= p3_valid;
        out_last <= p3_last;
        out_prob <= prob_rd;
        if (p3_valid && p3_last) state <= LOAD;
      end else if (state != OUT && out_valid && out_ready) begin
        out_valid <= 1'b0;
        out_last <= 1'b0;
      end
    end
  end
endmodule
