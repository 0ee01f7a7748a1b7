#include "duplex/sysc/pim_timing.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include <fmt/format.h>

#include "duplex/base/error.hpp"
#include "duplex/rtl/datapath_timing.hpp"
#include "duplex/rtl/golden_datapath.hpp"

namespace duplex::sysc {

namespace {

constexpr std::int64_t kInputElementBytes = 2;  // activations / queries in the input buffer are FP16

enum class Unit { kGemm, kActivation };

// A run of consecutive waves with the same work per wave.
struct Segment {
  std::uint64_t waves = 0;
  double cycles_per_wave = 0;  // on `unit`
  Unit unit = Unit::kGemm;
  int gate = -1;         // softmax job that must finish before this segment's compute
  int softmax_job = -1;  // softmax job started when this segment's compute finishes
  double softmax_cycles = 0;
};

// a x b FP16 elements (a, b >= 1) take more than `limit` bytes; exact, no wrap-around for any a, b.
bool fp16_bytes_exceed(std::int64_t a, std::int64_t b, std::int64_t limit) {
  std::int64_t bytes = 0;
  return __builtin_mul_overflow(a, b, &bytes) || __builtin_mul_overflow(bytes, kInputElementBytes, &bytes) ||
         bytes > limit;
}

std::uint64_t ceil_div(double a, double b) {
  return static_cast<std::uint64_t>(std::ceil(a / b));
}

// One softmax row of n scores over the unit's lanes; a soft-capped row also passes the cap stages in each of
// its three passes, a row with a sink costs kSoftmaxSinkCycles more (pim::timing::softmax_cycles).
std::uint64_t softmax_row_cycles(const PimSpec& pim, std::int64_t n, bool softcap, bool sink) {
  const auto lanes = static_cast<std::uint64_t>(
      std::max(1.0, std::round(pim.softmax_elements_per_cycle * pim::timing::kSoftmaxCyclesPerElement)));
  const std::uint64_t per_lane = (static_cast<std::uint64_t>(n) + lanes - 1) / lanes;
  return pim::timing::softmax_cycles(static_cast<std::size_t>(per_lane), softcap, sink);
}

}  // namespace

double pim_op_flops(const PimOpShape& s) {
  switch (s.kind) {
    case PimOpKind::kGemv:
      return 2.0 * static_cast<double>(s.tokens) * static_cast<double>(s.rows) * static_cast<double>(s.cols);
    case PimOpKind::kAttention:
      return 2.0 * 2.0 * static_cast<double>(s.kv_heads * s.group_size) * static_cast<double>(s.context) *
             static_cast<double>(s.head_dim);
    case PimOpKind::kActivation:
      return 0.0;
  }
  return 0.0;
}

double pim_op_bytes(const PimOpShape& s) {
  const double b = s.dtype_bytes;
  switch (s.kind) {
    case PimOpKind::kGemv:  // W, and the FP16 bias
      return b * static_cast<double>(s.rows) * static_cast<double>(s.cols) +
             (s.bias ? 2.0 * static_cast<double>(s.rows) : 0.0);
    case PimOpKind::kAttention:
      return 2.0 * b * static_cast<double>(s.kv_heads) * static_cast<double>(s.context) *
             static_cast<double>(s.head_dim);
    case PimOpKind::kActivation:  // a and b, FP16
      return 2.0 * kInputElementBytes * static_cast<double>(s.elements);
  }
  return 0.0;
}

std::int64_t max_gemv_tokens(const PimSpec& pim, std::int64_t cols, int) {
  if (cols <= 0) return 0;
  return static_cast<std::int64_t>(pim.input_buffer.bytes) / (cols * kInputElementBytes);
}

std::int64_t max_attention_context(const PimSpec& pim, std::int64_t group_size) {
  if (group_size <= 0) return 0;
  const auto by_buffer =
      static_cast<std::int64_t>(pim.softmax_buffer.bytes) / (group_size * kInputElementBytes);
  return std::min(by_buffer, static_cast<std::int64_t>(pim::kSoftmaxMaxElements));
}

pim::ActivationMode activation_mode_of(std::uint64_t mode) {
  if (mode >= static_cast<std::uint64_t>(pim::kActivationModes))
    throw PimOpError(PimFault::kBadArgument,
                     fmt::format("PIM activation mode {}: expected {}", mode, pim::activation_mode_names()));
  return static_cast<pim::ActivationMode>(mode);
}

void check_pim_op(const HbmSpec& hbm, const PimSpec& pim, const PimOpShape& s) {
  if (pim.kind != PimKind::kLogicPim)
    throw PimOpError(PimFault::kBadShape, fmt::format("PIM '{}' is not a Logic-PIM", pim.name));
  if (!(s.dtype_bytes > 0 && s.dtype_bytes <= 2))
    throw PimOpError(
        PimFault::kBadShape,
        fmt::format("PIM op dtype_bytes {}: expected bytes per element in (0, 2] (2 FP16 / BF16, 1 "
                    "FP8 / INT8, 0.53125 MXFP4)",
                    s.dtype_bytes));
  const int spaces = hbm.org.ranks * (hbm.org.banks_per_rank() / pim.banks_per_bundle);
  if (s.spaces < 1 || s.spaces > spaces)
    throw PimOpError(PimFault::kBadShape,
                     fmt::format("PIM op spaces {}: expected 1..{} bank-bundle spaces", s.spaces, spaces));
  auto positive = [](std::int64_t v, const char* what) {
    if (v < 1) throw PimOpError(PimFault::kBadShape, fmt::format("PIM op {} = {}: expected >= 1", what, v));
  };
  const auto input = static_cast<std::int64_t>(pim.input_buffer.bytes);
  switch (s.kind) {
    case PimOpKind::kGemv:
      positive(s.tokens, "tokens");
      positive(s.rows, "rows");
      positive(s.cols, "cols");
      if (fp16_bytes_exceed(s.tokens, s.cols, input))
        throw PimOpError(PimFault::kBufferOverflow,
                         fmt::format("PIM GEMV: {} tokens x {} cols x 2 B overflow the {} B input buffer "
                                     "(at most {} tokens at this width)",
                                     s.tokens, s.cols, input, max_gemv_tokens(pim, s.cols)));
      break;
    case PimOpKind::kAttention: {
      positive(s.group_size, "group_size");
      positive(s.context, "context");
      positive(s.head_dim, "head_dim");
      positive(s.kv_heads, "kv_heads");
      if (fp16_bytes_exceed(s.group_size, s.head_dim, input))
        throw PimOpError(PimFault::kBufferOverflow,
                         fmt::format("PIM attention: queries of {} heads x {} overflow the {} B input buffer",
                                     s.group_size, s.head_dim, input));
      const auto softmax = static_cast<std::int64_t>(pim.softmax_buffer.bytes);
      if (fp16_bytes_exceed(s.group_size, s.context, softmax))
        throw PimOpError(
            PimFault::kBufferOverflow,
            fmt::format("PIM attention: scores of {} heads x {} tokens x 2 B overflow the {} B softmax "
                        "buffer",
                        s.group_size, s.context, softmax));
      if (static_cast<std::size_t>(s.context) > pim::kSoftmaxMaxElements)
        throw PimOpError(PimFault::kBufferOverflow,
                         fmt::format("PIM attention: context {} exceeds the softmax unit's {} elements",
                                     s.context, pim::kSoftmaxMaxElements));
      break;
    }
    case PimOpKind::kActivation:
      positive(s.elements, "elements");
      activation_mode_of(static_cast<std::uint64_t>(s.activation_mode));
      break;
  }
}

PimOpTiming time_pim_op(const HbmSpec& hbm, const PimSpec& pim, const PimOpShape& shape,
                        const PimTimingOptions& options) {
  check_pim_op(hbm, pim, shape);
  const TimingTable t = derive_timing(hbm);
  const HbmOrganization& org = hbm.org;
  const BundleGeometry geometry = make_bundle_geometry(org, pim.banks_per_bundle);
  const int pcs = org.pseudo_channels();
  const double bundle_bytes = static_cast<double>(org.access_granularity.bytes) * pim.banks_per_bundle;
  const double wave_bytes = bundle_bytes * pcs;
  const double macs_per_cycle = static_cast<double>(pim.gemm_modules) * pim.macs_per_module;
  const double cycle_ps = 1e12 / pim.clock.si();

  // The op as segments of waves.
  std::vector<Segment> segs;
  double macs = 0;
  double out_bytes = 0;
  double tail_cycles = 0;  // pipeline drain after the last wave
  std::uint64_t softmax_jobs = 0;
  double softmax_cycles_total = 0;
  double activation_cycles_total = 0;
  const pim::DatapathParams dp;
  switch (shape.kind) {
    case PimOpKind::kGemv: {
      Segment s;
      s.waves = std::max<std::uint64_t>(1, ceil_div(pim_op_bytes(shape), wave_bytes));
      macs = static_cast<double>(shape.tokens) * static_cast<double>(shape.rows) *
             static_cast<double>(shape.cols);
      s.cycles_per_wave = macs / macs_per_cycle / static_cast<double>(s.waves);
      segs.push_back(s);
      out_bytes = static_cast<double>(shape.tokens * shape.rows * kInputElementBytes);
      tail_cycles = pim::timing::gemm_lane_latency(dp.lanes);
      break;
    }
    case PimOpKind::kAttention: {
      const double kv_bytes = shape.dtype_bytes * static_cast<double>(shape.context * shape.head_dim);
      const double head_macs = static_cast<double>(shape.group_size * shape.context * shape.head_dim);
      const double sm =
          static_cast<double>(shape.group_size) *
          static_cast<double>(softmax_row_cycles(pim, shape.context, shape.softcap, shape.sinks));
      // Software-pipelined over heads: K(h+1) is read and scored while the softmax of head h runs, so the
      // stream order is K0, K1, V0, K2, V1, ..., V(n-1).
      std::vector<Segment> keys, values;
      for (std::int64_t h = 0; h < shape.kv_heads; ++h) {
        Segment k;
        k.waves = std::max<std::uint64_t>(1, ceil_div(kv_bytes, wave_bytes));
        k.cycles_per_wave = head_macs / macs_per_cycle / static_cast<double>(k.waves);
        k.softmax_job = static_cast<int>(h);
        k.softmax_cycles = sm;
        Segment v = k;
        v.softmax_job = -1;
        v.softmax_cycles = 0;
        v.gate = static_cast<int>(h);
        keys.push_back(k);
        values.push_back(v);
        macs += 2 * head_macs;
        softmax_cycles_total += sm;
      }
      segs.push_back(keys[0]);
      for (std::size_t h = 1; h < keys.size(); ++h) {
        segs.push_back(keys[h]);
        segs.push_back(values[h - 1]);
      }
      segs.push_back(values.back());
      softmax_jobs = static_cast<std::uint64_t>(shape.kv_heads);
      out_bytes =
          static_cast<double>(shape.kv_heads * shape.group_size * shape.head_dim * kInputElementBytes);
      tail_cycles = pim::timing::gemm_lane_latency(dp.lanes);
      break;
    }
    case PimOpKind::kActivation: {
      Segment s;
      s.unit = Unit::kActivation;
      s.waves = std::max<std::uint64_t>(1, ceil_div(pim_op_bytes(shape), wave_bytes));
      activation_cycles_total =
          std::ceil(static_cast<double>(shape.elements) / pim.activation_elements_per_cycle);
      s.cycles_per_wave = activation_cycles_total / static_cast<double>(s.waves);
      segs.push_back(s);
      out_bytes = static_cast<double>(shape.elements * kInputElementBytes);
      tail_cycles = pim::timing::activation_latency(shape.activation_mode);
      break;
    }
  }

  std::uint64_t total_waves = 0;
  for (const Segment& s : segs) total_waves += s.waves;
  // Reads may run ahead of compute by half the module buffers (double buffering).
  const double module_buffers =
      static_cast<double>(pim.gemm_modules) * static_cast<double>(pim.module_buffer.bytes);
  const auto buffer_waves =
      std::max<std::uint64_t>(1, static_cast<std::uint64_t>(module_buffers / 2 / wave_bytes));

  ControllerConfig cc;
  cc.queue_depth = options.queue_depth;
  cc.refresh = options.refresh;
  cc.first_refresh = static_cast<Tick>(options.refresh_phase * static_cast<double>(t.tREFI));
  PseudoChannelController ctrl(org, t, geometry, cc);

  const int cols = org.columns_per_row();
  auto wave_request = [&](std::uint64_t i, Tick arrival) {
    const std::uint64_t chunk = i / static_cast<std::uint64_t>(cols);
    const auto space = static_cast<int>(chunk % static_cast<std::uint64_t>(shape.spaces));
    MemRequest r;
    r.id = i;
    r.kind = RequestKind::kBundleRead;
    r.path = AccessPath::kPim;
    r.arrival = arrival;
    r.coord.rank = space / geometry.bundles_per_rank;
    r.coord.bank = space % geometry.bundles_per_rank * geometry.banks_per_group_in_bundle;
    r.coord.row = static_cast<int>((chunk / static_cast<std::uint64_t>(shape.spaces)) %
                                   static_cast<std::uint64_t>(org.rows));
    r.coord.column = static_cast<int>(i % static_cast<std::uint64_t>(cols));
    return r;
  };

  std::vector<Tick> data_done(total_waves, -1);
  std::vector<double> compute_end(total_waves, 0.0);
  std::vector<double> softmax_end(softmax_jobs, 0.0);
  double softmax_free = 0;
  std::uint64_t enqueued = 0;
  std::uint64_t computed = 0;
  std::size_t seg = 0;
  std::uint64_t in_seg = 0;
  double prev_end = 0;
  Tick last_data = 0;
  std::vector<MemCompletion> done;
  while (computed < total_waves) {
    while (enqueued < total_waves && ctrl.can_accept() && enqueued < computed + buffer_waves) {
      Tick arrival = ctrl.now();
      if (enqueued >= buffer_waves)
        arrival = std::max(arrival, static_cast<Tick>(std::ceil(compute_end[enqueued - buffer_waves])));
      ctrl.enqueue(wave_request(enqueued, arrival));
      ++enqueued;
    }
    done.clear();
    DUPLEX_ASSERT(ctrl.step(kNever, done), "PIM replay made no progress");
    for (const MemCompletion& c : done) {
      data_done[c.id] = c.done;
      last_data = std::max(last_data, c.done);
    }
    while (computed < total_waves && data_done[computed] >= 0) {
      const Segment& s = segs[seg];
      double start = std::max(prev_end, static_cast<double>(data_done[computed]));
      if (s.gate >= 0) start = std::max(start, softmax_end[static_cast<std::size_t>(s.gate)]);
      prev_end = start + s.cycles_per_wave * cycle_ps;
      compute_end[computed] = prev_end;
      ++computed;
      if (++in_seg == s.waves) {
        if (s.softmax_job >= 0) {
          softmax_free = std::max(softmax_free, prev_end) + s.softmax_cycles * cycle_ps;
          softmax_end[static_cast<std::size_t>(s.softmax_job)] = softmax_free;
        }
        ++seg;
        in_seg = 0;
      }
    }
  }
  const double compute_done = prev_end + tail_cycles * cycle_ps;

  // Result write-back: column writes by the logic die, spread over the pseudo-channels.
  const std::uint64_t writes = ceil_div(out_bytes / pcs, static_cast<double>(org.access_granularity.bytes));
  Tick write_done = static_cast<Tick>(std::ceil(compute_done));
  for (std::uint64_t k = 0; k < writes;) {
    while (k < writes && ctrl.can_accept()) {
      MemRequest w;
      w.id = total_waves + k;
      w.kind = RequestKind::kWrite;
      w.path = AccessPath::kPim;
      w.arrival = std::max(ctrl.now(), static_cast<Tick>(std::ceil(compute_done)));
      w.coord.bank_group = static_cast<int>(k % static_cast<std::uint64_t>(org.bank_groups));
      w.coord.row = org.rows - 1;
      w.coord.column = static_cast<int>(k / static_cast<std::uint64_t>(org.bank_groups) %
                                        static_cast<std::uint64_t>(cols));
      ctrl.enqueue(w);
      ++k;
    }
    done.clear();
    write_done = std::max(write_done, ctrl.drain(done));
  }

  PimOpTiming r;
  const double total_ps =
      std::max(static_cast<double>(write_done), compute_done) + to_ps(pim.command_latency);
  r.total = ps(total_ps);
  r.device = r.total - pim.command_latency;
  r.dram_read = from_ticks(last_data);
  const double gemm_cycles = shape.kind == PimOpKind::kActivation ? 0.0 : macs / macs_per_cycle;
  r.compute = ps(gemm_cycles * cycle_ps);
  r.softmax = ps(softmax_cycles_total * cycle_ps);
  r.activation = ps(activation_cycles_total * cycle_ps);
  r.writeback = ps(std::max(0.0, static_cast<double>(write_done) - compute_done));
  r.bytes_read = pim_op_bytes(shape);
  r.bytes_written = out_bytes;
  r.flops = 2.0 * macs;

  ActionCounters a = ctrl.counters().scaled(static_cast<std::uint64_t>(pcs));
  a.macs = static_cast<std::uint64_t>(macs);
  // Buffers: every weight byte is written into a module buffer and read from it once; inputs are read from
  // the input buffer once per tile of (modules x 32 dot-product lanes) output rows; results are written to
  // the output buffer once. Softmax scores go through the softmax buffer (write + read).
  const double weight_accesses = static_cast<double>(total_waves) * wave_bytes / 32.0;
  double input_reads = 0;
  if (shape.kind == PimOpKind::kGemv) {
    const double tiles =
        std::ceil(static_cast<double>(shape.rows) / (static_cast<double>(pim.gemm_modules) * 32.0));
    input_reads = static_cast<double>(shape.tokens * shape.cols * kInputElementBytes) / 32.0 * tiles;
  } else if (shape.kind == PimOpKind::kAttention) {
    input_reads =
        static_cast<double>(shape.kv_heads * shape.group_size *
                            (shape.head_dim + shape.context + (shape.sinks ? 1 : 0)) * kInputElementBytes) /
        32.0;
  }
  a.sram_writes_32b = static_cast<std::uint64_t>(std::ceil(weight_accesses + out_bytes / 32.0));
  a.sram_reads_32b = static_cast<std::uint64_t>(std::ceil(weight_accesses + input_reads));
  a.softmax_elements = shape.kind == PimOpKind::kAttention
                           ? static_cast<std::uint64_t>(shape.kv_heads * shape.group_size * shape.context)
                           : 0;
  a.activation_elements =
      shape.kind == PimOpKind::kActivation ? static_cast<std::uint64_t>(shape.elements) : 0;
  a.elapsed = static_cast<Tick>(std::llround(total_ps));
  a.gemm_busy = static_cast<Tick>(std::llround(gemm_cycles * cycle_ps));
  a.softmax_busy = static_cast<Tick>(std::llround(softmax_cycles_total * cycle_ps));
  a.activation_busy = static_cast<Tick>(std::llround(activation_cycles_total * cycle_ps));
  r.actions = a;
  return r;
}

}  // namespace duplex::sysc
