// time_pim_op: large shapes within 10% of max(bytes / bundle bandwidth, FLOPs / peak) when the operands are
// striped over all 4 bank-bundle spaces (device time, without the xPU-side dispatch latency). The deviation
// is mostly refresh (tRFC/tREFI ~ 9% on HBM3 5.2 Gb/s) plus the pipeline fill and the result write-back.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>

#include <gtest/gtest.h>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"
#include "duplex/sysc/pim_timing.hpp"

namespace duplex::sysc {
namespace {

class SyscPimTiming : public ::testing::Test {
 protected:
  static const SystemSpec& sys() {
    static const SystemSpec s = load_system("duplex");
    return s;
  }
  static double roofline_s(const PimOpShape& s) {
    const PimSpec& p = *sys().pim;
    return std::max(pim_op_bytes(s) / p.internal_bandwidth_per_stack(sys().memory).si(),
                    pim_op_flops(s) / p.peak_flops_per_stack(sys().memory).si());
  }
  static PimOpShape gemv(std::int64_t tokens, std::int64_t rows, std::int64_t cols, int spaces = 4) {
    PimOpShape s;
    s.kind = PimOpKind::kGemv;
    s.tokens = tokens;
    s.rows = rows;
    s.cols = cols;
    s.spaces = spaces;
    return s;
  }
};

// Mixtral-8x7B expert gate slice on one of 5 stacks: 14336 / 5 rows x 4096 columns, 1..128 tokens (8 tokens
// is the balance point where bundle reads and MACs take equally long). Refresh off: within 10% of the
// roofline; the rest of the deviation is the pipeline fill (first bundle read) and the result write-back.
// Refresh on adds about tRFC/tREFI of the read time (the stream stops for every all-bank refresh).
TEST_F(SyscPimTiming, LargeGemvWithinTenPercentOfRoofline) {
  const HbmTiming& j = sys().memory.timing;
  for (std::int64_t tokens : {1, 8, 32, 128}) {
    const PimOpShape s = gemv(tokens, 2868, 4096);
    PimTimingOptions no_refresh;
    no_refresh.refresh = false;
    const PimOpTiming t = time_pim_op(sys().memory, *sys().pim, s, no_refresh);
    const double ideal = roofline_s(s);
    EXPECT_GE(t.device.si(), ideal) << tokens;
    EXPECT_LE(t.device.si(), 1.10 * ideal) << tokens << " tokens: " << t.device.si() / ideal;
    EXPECT_EQ(t.total, t.device + sys().pim->command_latency);
    EXPECT_EQ(t.actions.macs, static_cast<std::uint64_t>(tokens * 2868 * 4096));
    const PimOpTiming r = time_pim_op(sys().memory, *sys().pim, s);
    const double refresh_cost = (r.device - t.device).si() / t.device.si();
    EXPECT_GT(refresh_cost, 0.0) << tokens;
    EXPECT_LE(refresh_cost, 2.5 * (j.tRFC / j.tREFI)) << tokens;
    RecordProperty("gemv_ratio_" + std::to_string(tokens), std::to_string(t.device.si() / ideal));
    RecordProperty("gemv_refresh_cost_" + std::to_string(tokens), std::to_string(refresh_cost));
  }
}

// One bank-bundle space: each pseudo-channel reads a single bundle, so every row switch (tRTP + tRP + tRCD)
// stalls the stream: the time is 32 reads per row at tCCD_L plus that gap, per row.
TEST_F(SyscPimTiming, SingleSpaceOpPaysRowSwitches) {
  const PimOpShape s = gemv(1, 2868, 4096, 1);
  PimTimingOptions o;
  o.refresh = false;
  const PimOpTiming t = time_pim_op(sys().memory, *sys().pim, s, o);
  const HbmTiming& j = sys().memory.timing;
  const double per_row = 32 * j.tCCD_L.si() + (j.tRTP + j.tRP + j.tRCD - j.tCCD_L).si();
  const double rows = std::ceil(pim_op_bytes(s) / (256.0 * 32) / 32);
  EXPECT_NEAR(t.dram_read.si(), rows * per_row, 0.05 * rows * per_row);
  EXPECT_GT(t.device.si(), 1.2 * roofline_s(s));
}

// Decode attention streams K and V once; the softmax unit (softmax_elements_per_cycle) runs beside the
// stream, so the op takes max(roofline, total softmax time) plus at most one head's K/V read that cannot
// overlap a softmax (the first K, the last V). The preset's softmax unit keeps up with the bundle path for
// groups up to 8 (>= 8 x group_size elements per cycle); a 4x slower one makes the op softmax-bound.
TEST_F(SyscPimTiming, DecodeAttentionIsBandwidthOrSoftmaxBound) {
  PimOpShape s;
  s.kind = PimOpKind::kAttention;
  s.group_size = 4;
  s.context = 4096;
  s.head_dim = 128;
  s.kv_heads = 8;
  PimTimingOptions no_refresh;
  no_refresh.refresh = false;
  const double one_head = roofline_s(s) / static_cast<double>(s.kv_heads);
  const PimOpTiming t = time_pim_op(sys().memory, *sys().pim, s, no_refresh);
  ASSERT_GE(sys().pim->softmax_elements_per_cycle, 8.0 * static_cast<double>(s.group_size));
  EXPECT_LT(t.softmax.si(), roofline_s(s));
  EXPECT_GE(t.device.si(), roofline_s(s));
  EXPECT_LE(t.device.si(), 1.10 * roofline_s(s) + one_head);
  RecordProperty("attention_over_roofline", std::to_string(t.device.si() / roofline_s(s)));

  PimSpec slow = *sys().pim;
  slow.softmax_elements_per_cycle /= 4;
  const PimOpTiming w = time_pim_op(sys().memory, slow, s, no_refresh);
  EXPECT_GT(w.softmax.si(), roofline_s(s));
  EXPECT_GE(w.device.si(), w.softmax.si());
  EXPECT_LE(w.device.si(), 1.10 * w.softmax.si() + one_head);
  RecordProperty("attention_slow_softmax_over_softmax", std::to_string(w.device.si() / w.softmax.si()));
}

// Narrower weights stream fewer bytes: a bandwidth-bound GEMV (1 token) with 1-byte (FP8) weights reads half
// the bytes of FP16 and takes about half the device time, with MXFP4's 4.25 bits (0.53125 B) about a
// quarter, within the fixed fill and write-back. K / V alike for attention; the MACs are the same.
TEST_F(SyscPimTiming, WeightBytesPerElementSetTheStream) {
  PimTimingOptions no_refresh;
  no_refresh.refresh = false;
  PimOpShape s = gemv(1, 2880, 2880);
  const PimOpTiming fp16 = time_pim_op(sys().memory, *sys().pim, s, no_refresh);
  for (double bytes : {1.0, 0.53125}) {
    s.dtype_bytes = bytes;
    const PimOpTiming t = time_pim_op(sys().memory, *sys().pim, s, no_refresh);
    EXPECT_NEAR(t.bytes_read, bytes / 2.0 * fp16.bytes_read, 0.01 * fp16.bytes_read) << bytes;
    EXPECT_EQ(t.actions.macs, fp16.actions.macs);
    EXPECT_GT(t.device.si(), 0.9 * bytes / 2.0 * fp16.device.si()) << bytes;
    EXPECT_LT(t.device.si(), 1.15 * bytes / 2.0 * fp16.device.si()) << bytes;
  }
  PimOpShape a;
  a.kind = PimOpKind::kAttention;
  a.group_size = 4;
  a.context = 4096;
  a.kv_heads = 8;
  const PimOpTiming kv16 = time_pim_op(sys().memory, *sys().pim, a, no_refresh);
  a.dtype_bytes = 1;
  const PimOpTiming kv8 = time_pim_op(sys().memory, *sys().pim, a, no_refresh);
  EXPECT_NEAR(kv8.bytes_read, kv16.bytes_read / 2, 0.01 * kv16.bytes_read);
  EXPECT_LT(kv8.device.si(), 0.75 * kv16.device.si());
  for (double bad : {0.0, -1.0, 2.5}) {
    s.dtype_bytes = bad;
    EXPECT_THROW(check_pim_op(sys().memory, *sys().pim, s), PimOpError) << bad;
  }
}

TEST_F(SyscPimTiming, BufferLimitsAreErrors) {
  const std::int64_t max_tokens = max_gemv_tokens(*sys().pim, 4096);
  EXPECT_EQ(max_tokens, static_cast<std::int64_t>(sys().pim->input_buffer.bytes) / (4096 * 2));
  EXPECT_NO_THROW(check_pim_op(sys().memory, *sys().pim, gemv(max_tokens, 16, 4096)));
  EXPECT_THROW(check_pim_op(sys().memory, *sys().pim, gemv(max_tokens + 1, 16, 4096)), PimOpError);
  EXPECT_THROW(check_pim_op(sys().memory, *sys().pim, gemv(0, 16, 4096)), Error);
  EXPECT_THROW(check_pim_op(sys().memory, *sys().pim, gemv(1, 16, 4096, 5)), Error);
  PimOpShape a;
  a.kind = PimOpKind::kAttention;
  a.group_size = 8;
  a.context = static_cast<std::int64_t>(sys().pim->softmax_buffer.bytes) / (8 * 2) + 1;
  EXPECT_THROW(check_pim_op(sys().memory, *sys().pim, a), Error);
}

TEST_F(SyscPimTiming, DeterministicAndFast) {
  const PimOpShape s = gemv(8, 2868, 4096);
  const auto start = std::chrono::steady_clock::now();
  const PimOpTiming a = time_pim_op(sys().memory, *sys().pim, s);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  const PimOpTiming b = time_pim_op(sys().memory, *sys().pim, s);
  EXPECT_EQ(a.total, b.total);
  EXPECT_EQ(a.actions.bank_activations, b.actions.bank_activations);
  RecordProperty("mixtral_gate_slice_ms",
                 std::to_string(std::chrono::duration<double, std::milli>(elapsed).count()));
}

}  // namespace
}  // namespace duplex::sysc
