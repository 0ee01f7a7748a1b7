// Logic-PIM command decoder / sequencer: takes one 64-byte host command descriptor (the ring format of
// sysc/include/duplex/sysc/host_interface.hpp, hostif::encode), validates it as the SystemC device does
// (duplex::sysc::check_pim_command), and issues the command's datapath micro-ops, one per cycle, each with
// its operand addresses. Twin of duplex::pim::sequence_pim_command (rtl/golden/.../pim_command_decoder.hpp),
// which documents the micro-op list; rtl/decoder/README.md has the ports, layout and timing.
// Latency 1 (descriptor accepted -> first micro-op presented); the next descriptor is accepted in the cycle
// the previous one's last micro-op is taken, so commands issue back to back.
// Validation is one combinational stage with three 64 x 64-bit multipliers (exact 128-bit products);
// addresses are then stepped by adders only.
module pim_command_decoder #(
    parameter int LANES = 16,  // GEMM-lane width: a dot product of k elements takes ceil(k / LANES) passes
    parameter int SOFTMAX_MAX_N = 32768  // softmax unit buffer (elements): attention context limit
) (
    input  logic                     clk,
    input  logic                     rst_n,
    // Device parameters, held stable while a descriptor is presented.
    input  logic [63:0]              cfg_memory_bytes,          // device memory capacity
    input  logic [5:0]               cfg_align_log2,            // operand alignment 2^n bytes (32 B access: 5)
    input  logic [63:0]              cfg_input_buffer_bytes,    // logic-die input buffer
    input  logic [63:0]              cfg_softmax_buffer_bytes,  // logic-die softmax buffer
    // Descriptor: byte i of the 64-byte descriptor is in_descriptor[8i+7:8i] (little-endian fields).
    input  logic                     in_valid,
    output logic                     in_ready,
    input  logic [511:0]             in_descriptor,
    // Micro-op (see pim_command_decoder.hpp for the meaning of each field per kind).
    output logic                     out_valid,
    input  logic                     out_ready,
    output logic [1:0]               out_kind,  // 0 GEMM pass, 1 softmax element, 2 activation element, 3 reject
    output logic [3:0]               out_mode,  // activation element: the mode (ActivationMode 0..8); else 0
    output logic [63:0]              out_a,
    output logic [63:0]              out_a_stride,
    output logic [63:0]              out_b,
    output logic                     out_b_buffer,
    output logic [63:0]              out_dest,
    output logic                     out_dest_buffer,
    output logic [63:0]              out_c,        // operand C: one FP16 in device memory (bias / sink)
    output logic                     out_c_valid,  // out_c is valid on this micro-op (else out_c = 0)
    output logic [$clog2(LANES):0]   out_count,
    output logic                     out_last,
    output logic                     out_op_last,
    output logic [31:0]              out_seq,
    output logic [15:0]              out_status
);
  localparam int SHIFT = $clog2(LANES);
  localparam int CW = SHIFT + 1;
  localparam logic [63:0] LANE_MASK = 64'(LANES) - 64'd1;
  localparam logic [1:0] KIND_GEMM = 2'd0, KIND_SOFTMAX = 2'd1, KIND_ACT = 2'd2, KIND_REJECT = 2'd3;
  localparam logic [1:0] CMD_GEMV = 2'd0, CMD_ATTN = 2'd1, CMD_ACT = 2'd2, CMD_REJECT = 2'd3;
  localparam logic [15:0] OP_GEMV = 16'h0010, OP_ATTN = 16'h0011, OP_ACT = 16'h0012;
  localparam logic [15:0] ST_OK = 16'd0, ST_BAD_OPCODE = 16'd1, ST_OUT_OF_RANGE = 16'd2, ST_MISALIGNED = 16'd3,
                          ST_BUFFER_OVERFLOW = 16'd4, ST_BAD_SHAPE = 16'd6, ST_BAD_ARGUMENT = 16'd9;
  localparam logic [63:0] ACT_MODES = 64'd9;  // activation modes 0..8 (a4); larger -> bad argument
  // flags bit 0: GEMV with a bias (FP16 [rows] at a6), attention with sinks (FP16 [group] right after q).
  // Any other flag bit, and any flag of an activation command, is a bad argument.
  localparam int FLAG_EXTRA = 0;

  // ---------------------------------------------------------------- descriptor fields
  logic [15:0] opcode;
  logic [15:0] flags;
  logic [31:0] seq;
  logic [63:0] a0, a1, a2, a3, a4, a5, a6;
  assign opcode = in_descriptor[15:0];
  assign flags = in_descriptor[31:16];
  assign seq = in_descriptor[63:32];
  assign a0 = in_descriptor[127:64];
  assign a1 = in_descriptor[191:128];
  assign a2 = in_descriptor[255:192];
  assign a3 = in_descriptor[319:256];
  assign a4 = in_descriptor[383:320];
  assign a5 = in_descriptor[447:384];
  assign a6 = in_descriptor[511:448];

  logic is_gemv, is_attn, is_act, has_c, flags_ok;
  assign is_gemv = opcode == OP_GEMV;
  assign is_attn = opcode == OP_ATTN;
  assign is_act = opcode == OP_ACT;
  assign has_c = (is_gemv || is_attn) && flags[FLAG_EXTRA];  // a bias (GEMV) or sinks (attention)
  assign flags_ok = is_act ? flags == 16'd0 : (flags & ~(16'd1 << FLAG_EXTRA)) == 16'd0;

  // Attention: head_dim = a6[31:0], scale = a6[47:32], logit soft-cap = a6[63:48] (FP16: +0 none, else finite
  // and > 0, anything else -> bad argument).
  logic [63:0] head_dim;
  logic [15:0] softcap;
  logic softcap_ok;
  assign head_dim = {32'd0, a6[31:0]};
  assign softcap = a6[63:48];
  assign softcap_ok = !softcap[15] && softcap[14:10] != 5'h1F;  // +0 or a finite FP16 > 0

  function automatic logic positive(input logic [63:0] v);  // >= 1 as a signed 64-bit value
    return !v[63] && v != 64'd0;
  endfunction

  // ---------------------------------------------------------------- validation
  // Shared multipliers: GEMV  m0 = tokens x cols, m1 = rows x cols,     m2 = tokens x rows
  //                     ATTN  m0 = group x head_dim, m1 = context x head_dim, m2 = group x context
  logic [63:0] m0_x, m0_y, m1_x, m1_y, m2_x, m2_y;
  logic [127:0] m0, m1, m2;
  assign m0_x = is_attn ? a4 : a3;
  assign m0_y = is_attn ? head_dim : a5;
  assign m1_x = is_attn ? a5 : a4;
  assign m1_y = is_attn ? head_dim : a5;
  assign m2_x = is_attn ? a4 : a3;
  assign m2_y = is_attn ? a5 : a4;
  assign m0 = {64'd0, m0_x} * {64'd0, m0_y};
  assign m1 = {64'd0, m1_x} * {64'd0, m1_y};
  assign m2 = {64'd0, m2_x} * {64'd0, m2_y};

  // FP16 byte counts (129 bits: exact).
  logic [128:0] bytes0, bytes1, bytes2, bytes_elements, bytes_q, bytes_bias;
  assign bytes0 = {m0, 1'b0};
  assign bytes1 = {m1, 1'b0};
  assign bytes2 = {m2, 1'b0};
  assign bytes_elements = {64'd0, a3, 1'b0};
  assign bytes_q = has_c ? {m0 + {64'd0, a4}, 1'b0} : bytes0;  // attention q [+ group sinks]; m0 < 2^96
  assign bytes_bias = {64'd0, a4, 1'b0};                        // GEMV bias [rows]

  logic [63:0] align_mask;
  assign align_mask = (64'd1 << cfg_align_log2) - 64'd1;

  // Operand check: misaligned first, then [addr, addr + bytes) inside [0, memory).
  function automatic logic [15:0] operand_status(input logic [63:0] addr, input logic [128:0] bytes,
                                                 input logic [63:0] memory, input logic [63:0] mask);
    if ((addr & mask) != 64'd0) return ST_MISALIGNED;
    if (addr > memory || bytes > {65'd0, memory - addr}) return ST_OUT_OF_RANGE;
    return ST_OK;
  endfunction

  logic [15:0] op_st0, op_st1, op_st2, op_st3;
  logic [128:0] op_bytes0, op_bytes1, op_bytes2;
  always_comb begin
    if (is_attn) begin  // q (+ sinks), K, V, out
      op_bytes0 = bytes_q;
      op_bytes1 = bytes1;
      op_bytes2 = bytes1;
    end else if (is_gemv) begin  // W, x, y
      op_bytes0 = bytes1;
      op_bytes1 = bytes0;
      op_bytes2 = bytes2;
    end else begin  // gate, up, out
      op_bytes0 = bytes_elements;
      op_bytes1 = bytes_elements;
      op_bytes2 = bytes_elements;
    end
  end
  assign op_st0 = operand_status(a0, op_bytes0, cfg_memory_bytes, align_mask);
  assign op_st1 = operand_status(a1, op_bytes1, cfg_memory_bytes, align_mask);
  assign op_st2 = operand_status(a2, op_bytes2, cfg_memory_bytes, align_mask);
  always_comb begin  // attention out; GEMV bias
    if (is_attn) op_st3 = operand_status(a3, bytes0, cfg_memory_bytes, align_mask);
    else if (is_gemv && has_c) op_st3 = operand_status(a6, bytes_bias, cfg_memory_bytes, align_mask);
    else op_st3 = ST_OK;
  end

  logic [15:0] shape_st, status_d;
  always_comb begin
    shape_st = ST_OK;
    if (is_gemv) begin
      if (!positive(a3) || !positive(a4) || !positive(a5)) shape_st = ST_BAD_SHAPE;
      else if (bytes0 > {65'd0, cfg_input_buffer_bytes}) shape_st = ST_BUFFER_OVERFLOW;
      else if (!flags_ok) shape_st = ST_BAD_ARGUMENT;
    end else if (is_attn) begin
      if (!positive(a4) || !positive(a5) || head_dim == 64'd0) shape_st = ST_BAD_SHAPE;
      else if (bytes0 > {65'd0, cfg_input_buffer_bytes}) shape_st = ST_BUFFER_OVERFLOW;
      else if (bytes2 > {65'd0, cfg_softmax_buffer_bytes}) shape_st = ST_BUFFER_OVERFLOW;
      else if (a5 > 64'(SOFTMAX_MAX_N)) shape_st = ST_BUFFER_OVERFLOW;
      else if (!flags_ok || !softcap_ok) shape_st = ST_BAD_ARGUMENT;
    end else if (is_act) begin
      if (!positive(a3)) shape_st = ST_BAD_SHAPE;
      else if (!flags_ok || a4 >= ACT_MODES) shape_st = ST_BAD_ARGUMENT;
    end
    if (!is_gemv && !is_attn && !is_act) status_d = ST_BAD_OPCODE;
    else if (shape_st != ST_OK) status_d = shape_st;
    else if (op_st0 != ST_OK) status_d = op_st0;
    else if (op_st1 != ST_OK) status_d = op_st1;
    else if (op_st2 != ST_OK) status_d = op_st2;
    else status_d = op_st3;
  end

  // ---------------------------------------------------------------- command register
  typedef struct packed {
    logic [1:0]  cmd;
    logic [63:0] base0, base1, base2;  // operand addresses a0..a2 (attention's a3: outer_d_q)
    logic [63:0] outer_n;              // GEMV tokens, attention group, activation 1
    logic [63:0] rows;                 // GEMV rows, attention context, activation elements
    logic [63:0] cols;                 // GEMV cols, attention head_dim
    logic [15:0] scale;
    logic [15:0] softcap;              // attention logit soft-cap (FP16), valid once validated
    logic [3:0]  mode;                 // activation mode (a4 < 9 once validated)
    logic        has_c;                // GEMV bias / attention sinks (flags bit 0)
    logic [63:0] c_base;               // GEMV: the bias (a6); attention: the sinks, q + 2 group head_dim
    logic [31:0] seq;
    logic [15:0] status;
  } cmd_t;

  cmd_t cmd_d, cmd_q;
  always_comb begin
    cmd_d.cmd = status_d != ST_OK ? CMD_REJECT : is_gemv ? CMD_GEMV : is_attn ? CMD_ATTN : CMD_ACT;
    cmd_d.base0 = a0;
    cmd_d.base1 = a1;
    cmd_d.base2 = a2;
    cmd_d.outer_n = is_gemv ? a3 : is_attn ? a4 : 64'd1;
    cmd_d.rows = is_gemv ? a4 : is_attn ? a5 : a3;
    cmd_d.cols = is_gemv ? a5 : head_dim;
    cmd_d.scale = a6[47:32];
    cmd_d.softcap = softcap;
    cmd_d.mode = is_act ? a4[3:0] : 4'd0;
    cmd_d.has_c = has_c;
    cmd_d.c_base = is_gemv ? a6 : a0 + bytes0[63:0];
    cmd_d.seq = seq;
    cmd_d.status = status_d;
  end

  // ---------------------------------------------------------------- phases
  // A command is outer_n repetitions of its phases: GEMV [GEMM rows x cols]; attention [scores: GEMM context
  // x head_dim, softmax of context elements, PV: GEMM head_dim x context]; activation [elements].
  // A phase is `rows` rows of `passes` micro-ops; the address registers start at the phase's bases and step
  // by the phase's steps (pass: a += a_pass_step, b += b_pass_step; row: a, b restart at their row base
  // advanced by the row step, dest += d_row_step).
  typedef struct packed {
    logic [1:0]    kind;
    logic [63:0]   rows, passes;
    logic [CW-1:0] tail;  // elements in a row's last pass
    logic [63:0]   a_row_step, a_pass_step, a_stride;
    logic [63:0]   b_row_step, b_pass_step;
    logic          b_buffer;
    logic [63:0]   d_row_step;
    logic          d_buffer;
  } phase_t;
  typedef struct packed {
    logic [63:0] a, b, d;
  } bases_t;

  function automatic logic [63:0] passes_of(input logic [63:0] k);
    return (k + LANE_MASK) >> SHIFT;
  endfunction
  function automatic logic [CW-1:0] tail_of(input logic [63:0] k);
    return CW'((k - 64'd1) & LANE_MASK) + CW'(1);
  endfunction
  function automatic logic [63:0] twice(input logic [63:0] v);
    return v << 1;
  endfunction

  function automatic phase_t phase_params(input logic [1:0] cmd, input logic [63:0] rows, input logic [63:0] cols,
                                          input logic [1:0] phase);
    phase_t p;
    p = '0;
    p.kind = KIND_GEMM;
    p.tail = CW'(1);
    p.passes = 64'd1;
    p.rows = rows;
    if (cmd == CMD_GEMV || (cmd == CMD_ATTN && phase == 2'd0)) begin  // y = W x; scores s = K q[g]
      p.passes = passes_of(cols);
      p.tail = tail_of(cols);
      p.a_row_step = twice(cols);
      p.a_pass_step = 64'(2 * LANES);
      p.a_stride = 64'd2;
      p.b_pass_step = 64'(2 * LANES);
      p.d_row_step = cmd == CMD_GEMV ? 64'd2 : 64'd1;
      p.d_buffer = cmd == CMD_ATTN;
    end else if (cmd == CMD_ATTN && phase == 2'd1) begin  // p = softmax(softcap(scale x s))
      p.kind = KIND_SOFTMAX;
      p.a_row_step = 64'd1;
      p.d_row_step = 64'd1;
      p.d_buffer = 1'b1;
    end else if (cmd == CMD_ATTN) begin  // out[g][j] = sum_i V[i][j] p[i]
      p.rows = cols;
      p.passes = passes_of(rows);
      p.tail = tail_of(rows);
      p.a_row_step = 64'd2;
      p.a_pass_step = twice(cols) << SHIFT;
      p.a_stride = twice(cols);
      p.b_pass_step = 64'(LANES);
      p.b_buffer = 1'b1;
      p.d_row_step = 64'd2;
    end else begin  // activation: out[i] = act(a[i], b[i]) in the command's mode
      p.kind = KIND_ACT;
      p.a_row_step = 64'd2;
      p.b_row_step = 64'd2;
      p.d_row_step = 64'd2;
    end
    return p;
  endfunction

  // outer_b / outer_d: the current repetition's B and result bases (GEMV x / y, attention q / out).
  function automatic bases_t phase_bases(input logic [1:0] cmd, input logic [63:0] base0,
                                         input logic [63:0] base1, input logic [63:0] base2,
                                         input logic [15:0] scale, input logic [15:0] cap,
                                         input logic [1:0] phase,
                                         input logic [63:0] outer_b, input logic [63:0] outer_d);
    bases_t r;
    r = '0;
    if (cmd == CMD_GEMV) r = '{a: base0, b: outer_b, d: outer_d};
    else if (cmd == CMD_ATTN && phase == 2'd0) r = '{a: base1, b: outer_b, d: 64'd0};
    else if (cmd == CMD_ATTN && phase == 2'd1) r.b = {32'd0, cap, scale};
    else if (cmd == CMD_ATTN) r = '{a: base2, b: 64'd0, d: outer_d};
    else r = '{a: base0, b: base1, d: base2};
    return r;
  endfunction

  // ---------------------------------------------------------------- sequencer
  logic [1:0] phase_q;
  logic [63:0] outer_q, row_q, pass_q;
  logic [63:0] a_row_q, a_cur_q, b_row_q, b_cur_q, d_cur_q, outer_b_q, outer_d_q, c_cur_q;
  phase_t cur;
  bases_t next_phase, next_outer, first;
  logic [1:0] phases;
  logic last_pass, last_row, last_phase, last_outer, reject, fire, load;
  logic [63:0] next_outer_b, next_outer_d, first_outer_b, first_outer_d;

  assign reject = cmd_q.cmd == CMD_REJECT;
  assign phases = cmd_q.cmd == CMD_ATTN ? 2'd3 : 2'd1;
  assign cur = phase_params(cmd_q.cmd, cmd_q.rows, cmd_q.cols, phase_q);
  assign next_phase = phase_bases(cmd_q.cmd, cmd_q.base0, cmd_q.base1, cmd_q.base2, cmd_q.scale,
                                  cmd_q.softcap, phase_q + 2'd1, outer_b_q, outer_d_q);
  // Per repetition: GEMV x += 2 cols, y += 2 rows; attention q and out += 2 head_dim.
  assign next_outer_b = outer_b_q + twice(cmd_q.cols);
  assign next_outer_d = outer_d_q + twice(cmd_q.cmd == CMD_GEMV ? cmd_q.rows : cmd_q.cols);
  assign next_outer = phase_bases(cmd_q.cmd, cmd_q.base0, cmd_q.base1, cmd_q.base2, cmd_q.scale,
                                  cmd_q.softcap, 2'd0, next_outer_b, next_outer_d);
  assign first_outer_b = is_attn ? a0 : a1;  // GEMV x, attention q
  assign first_outer_d = is_attn ? a3 : a2;  // GEMV y, attention out
  assign first = phase_bases(cmd_d.cmd, cmd_d.base0, cmd_d.base1, cmd_d.base2, cmd_d.scale, cmd_d.softcap,
                             2'd0, first_outer_b, first_outer_d);

  assign last_pass = reject || pass_q == cur.passes - 64'd1;
  assign last_row = reject || row_q == cur.rows - 64'd1;
  assign last_phase = reject || phase_q == phases - 2'd1;
  assign last_outer = reject || outer_q == cmd_q.outer_n - 64'd1;

  assign out_kind = reject ? KIND_REJECT : cur.kind;
  assign out_mode = reject || cur.kind != KIND_ACT ? 4'd0 : cmd_q.mode;
  assign out_a = reject ? 64'd0 : a_cur_q;
  assign out_a_stride = reject ? 64'd0 : cur.a_stride;
  assign out_b = reject ? 64'd0 : b_cur_q;
  assign out_b_buffer = !reject && cur.b_buffer;
  assign out_dest = reject ? 64'd0 : d_cur_q;
  assign out_dest_buffer = !reject && cur.d_buffer;
  // Operand C on a dot product's first pass (GEMV: bias[r]) and on a softmax row's first element (attention:
  // the sink of head g).
  assign out_c_valid = !reject && cmd_q.has_c &&
                       (cmd_q.cmd == CMD_GEMV ? pass_q == 64'd0
                                              : cmd_q.cmd == CMD_ATTN && phase_q == 2'd1 && row_q == 64'd0);
  assign out_c = out_c_valid ? c_cur_q : 64'd0;
  assign out_count = reject ? CW'(0) : cur.kind != KIND_GEMM ? CW'(1) : last_pass ? cur.tail : CW'(LANES);
  assign out_last = cur.kind == KIND_GEMM || reject ? last_pass : last_row;
  assign out_op_last = last_pass && last_row && last_phase && last_outer;
  assign out_seq = cmd_q.seq;
  assign out_status = cmd_q.status;

  assign fire = out_valid && out_ready;
  assign in_ready = !out_valid || (fire && out_op_last);
  assign load = in_valid && in_ready;

  // Enter a phase: row 0, pass 0, address registers at the phase's bases.
  task automatic enter(input bases_t p);
    row_q <= 64'd0;
    pass_q <= 64'd0;
    a_row_q <= p.a;
    a_cur_q <= p.a;
    b_row_q <= p.b;
    b_cur_q <= p.b;
    d_cur_q <= p.d;
  endtask

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      out_valid <= 1'b0;
      cmd_q <= '0;
      cmd_q.cmd <= CMD_REJECT;
      {phase_q, outer_q, row_q, pass_q} <= '0;
      {a_row_q, a_cur_q, b_row_q, b_cur_q, d_cur_q, outer_b_q, outer_d_q, c_cur_q} <= '0;
    end else if (load) begin
      out_valid <= 1'b1;
      cmd_q <= cmd_d;
      phase_q <= 2'd0;
      outer_q <= 64'd0;
      outer_b_q <= first_outer_b;
      outer_d_q <= first_outer_d;
      c_cur_q <= cmd_d.c_base;
      enter(first);
    end else if (fire) begin
      if (out_op_last) begin
        out_valid <= 1'b0;
      end else if (!last_pass) begin
        pass_q <= pass_q + 64'd1;
        a_cur_q <= a_cur_q + cur.a_pass_step;
        b_cur_q <= b_cur_q + cur.b_pass_step;
      end else if (!last_row) begin
        row_q <= row_q + 64'd1;
        pass_q <= 64'd0;
        a_row_q <= a_row_q + cur.a_row_step;
        a_cur_q <= a_row_q + cur.a_row_step;
        b_row_q <= b_row_q + cur.b_row_step;
        b_cur_q <= b_row_q + cur.b_row_step;
        d_cur_q <= d_cur_q + cur.d_row_step;
        if (cmd_q.cmd == CMD_GEMV) c_cur_q <= c_cur_q + 64'd2;  // bias[r + 1]
      end else if (!last_phase) begin
        phase_q <= phase_q + 2'd1;
        enter(next_phase);
      end else begin
        outer_q <= outer_q + 64'd1;
        phase_q <= 2'd0;
        outer_b_q <= next_outer_b;
        outer_d_q <= next_outer_d;
        c_cur_q <= cmd_q.cmd == CMD_GEMV ? cmd_q.c_base : c_cur_q + 64'd2;  // bias[0] / sink[g + 1]
        enter(next_outer);
      end
    end
  end
endmodule
