// Conformance: every op x shapes (odd sizes, GQA groups 1/4/6/8, long contexts, empty experts) x dtypes on
// the backend DUPLEX_TEST_BACKEND ("cpu" or "cuda"; gtest suite DUPLEX_CONFORMANCE_SUITE) against the FP64
// references of reference.cpp, each within its op-specific bound. The cuda build of this file skips without a
// GPU and fails when DUPLEX_REQUIRE_GPU=1.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "harness.hpp"
#include "reference.hpp"

namespace duplex::kernels::test {
namespace {

const DType kFloatTypes[] = {DType::kF16, DType::kBF16, DType::kF32};

// "f16 m7 k33 ..." for SCOPED_TRACE (streamed: GCC 12 -O3 warns falsely on chains of std::string operator+).
template <class... Parts>
std::string label(DType dtype, const Parts&... parts) {
  std::ostringstream s;
  s << dtype_name(dtype) << ' ';
  (s << ... << parts);
  return s.str();
}

HostTensor random_tensor(DType dtype, std::vector<std::int64_t> shape, std::mt19937_64& rng, double lo = -1.0,
                         double hi = 1.0) {
  HostTensor t(dtype, std::move(shape));
  fill_uniform(t, rng, lo, hi);
  return t;
}

HostTensor int_tensor(std::vector<std::int64_t> shape, const std::vector<std::int32_t>& values) {
  HostTensor t(DType::kI32, std::move(shape));
  for (std::size_t i = 0; i < values.size(); ++i) t.set_int(static_cast<std::int64_t>(i), values[i]);
  return t;
}

void expect_run_ok(Backend& backend, const OpArgs& args, Stream stream) {
  const Status can = backend.can_implement(args);
  ASSERT_TRUE(can.ok()) << can.to_string();
  const Status ran = backend.run(args, stream);
  ASSERT_TRUE(ran.ok()) << ran.to_string();
}

TEST(DUPLEX_CONFORMANCE_SUITE, Gemm) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(1);
  struct Shape {
    std::int64_t m, k, n;
  };
  for (DType dtype : kFloatTypes)
    for (Shape s :
         {Shape{1, 64, 32}, Shape{7, 33, 45}, Shape{64, 128, 96}, Shape{130, 257, 67}, Shape{3, 1, 5}})
      for (bool transposed : {true, false})
        for (bool accumulate : {false, true}) {
          SCOPED_TRACE(label(dtype, "m", s.m, " k", s.k, " n", s.n, (transposed ? " nt" : " nn"),
                             (accumulate ? " acc" : "")));
          DeviceArena arena(*backend);
          HostTensor a = random_tensor(dtype, {s.m, s.k}, rng);
          HostTensor b = random_tensor(
              dtype, transposed ? std::vector<std::int64_t>{s.n, s.k} : std::vector<std::int64_t>{s.k, s.n},
              rng);
          HostTensor c0 = random_tensor(dtype, {s.m, s.n}, rng);
          GemmArgs args{arena.upload(a), arena.upload(b),
                        accumulate ? arena.upload(c0) : arena.empty(dtype, {s.m, s.n}), transposed,
                        accumulate};
          expect_run_ok(*backend, args, arena.stream());
          EXPECT_TRUE(within_bound(arena.download(args.c),
                                   gemm_ref(a, b, accumulate ? &c0 : nullptr, transposed, dtype)));
        }
}

TEST(DUPLEX_CONFORMANCE_SUITE, Gemv) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(2);
  for (DType dtype : kFloatTypes)
    for (auto [n, k] : {std::pair<std::int64_t, std::int64_t>{1, 1}, {33, 257}, {1000, 256}, {4096, 512}}) {
      SCOPED_TRACE(label(dtype, n, "x", k));
      DeviceArena arena(*backend);
      HostTensor w = random_tensor(dtype, {n, k}, rng), x = random_tensor(dtype, {k}, rng);
      GemvArgs args{arena.upload(w), arena.upload(x), arena.empty(dtype, {n})};
      expect_run_ok(*backend, args, arena.stream());
      // y = w . x, checked as the [N,K] x [K,1] product.
      HostTensor x_col(dtype, {k, 1});
      for (std::int64_t i = 0; i < k; ++i) x_col.set(i, x.get(i));
      EXPECT_TRUE(within_bound(arena.download(args.y), gemm_ref(w, x_col, nullptr, false, dtype)));
    }
}

TEST(DUPLEX_CONFORMANCE_SUITE, Norms) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(3);
  for (DType dtype : kFloatTypes)
    for (auto [t, h] : {std::pair<std::int64_t, std::int64_t>{1, 256}, {5, 33}, {64, 4096}})
      for (NormKind kind : {NormKind::kRms, NormKind::kLayer})
        for (bool with_bias : {false, true}) {
          if (kind == NormKind::kRms && with_bias) continue;
          SCOPED_TRACE(label(dtype, t, "x", h, (kind == NormKind::kRms ? " rms" : " layer"),
                             (with_bias ? " bias" : "")));
          DeviceArena arena(*backend);
          HostTensor x = random_tensor(dtype, {t, h}, rng, -2.0, 3.0),
                     w = random_tensor(dtype, {h}, rng, 0.5, 1.5);
          HostTensor b = random_tensor(dtype, {h}, rng);
          NormArgs args{kind,
                        arena.upload(x),
                        arena.upload(w),
                        with_bias ? arena.upload(b) : Tensor{},
                        arena.empty(dtype, {t, h}),
                        1e-5f};
          expect_run_ok(*backend, args, arena.stream());
          EXPECT_TRUE(
              within_bound(arena.download(args.y), norm_ref(kind, x, w, with_bias ? &b : nullptr, 1e-5)));
        }
}

// Gemma's RMSNorm: y = x / rms * (1 + weight), the 1 added in FP32 (weights near 0, as Gemma's are).
TEST(DUPLEX_CONFORMANCE_SUITE, NormWeightOffset) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(34);
  for (DType dtype : kFloatTypes)
    for (auto [t, h] : {std::pair<std::int64_t, std::int64_t>{3, 256}, {7, 33}}) {
      SCOPED_TRACE(label(dtype, t, "x", h));
      DeviceArena arena(*backend);
      HostTensor x = random_tensor(dtype, {t, h}, rng, -2.0, 3.0),
                 w = random_tensor(dtype, {h}, rng, -0.3, 0.3);
      NormArgs args{NormKind::kRms,
                    arena.upload(x),
                    arena.upload(w),
                    Tensor{},
                    arena.empty(dtype, {t, h}),
                    1e-6f,
                    1.0f};
      expect_run_ok(*backend, args, arena.stream());
      EXPECT_TRUE(within_bound(arena.download(args.y), norm_ref(NormKind::kRms, x, w, nullptr, 1e-6, 1.0)));
    }
}

// The caller's frequencies (a scaled RoPE: Llama 3's divides the low frequencies by its factor), and a scale
// on cos and sin (LongRoPE's attention factor).
TEST(DUPLEX_CONFORMANCE_SUITE, RopeWithGivenFrequencies) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(35);
  for (DType dtype : kFloatTypes)
    for (std::int64_t rd : {0, 32}) {
      const double scale = rd == 0 ? 1.0 : 1.25;  // LongRoPE's attention factor on cos and sin
      SCOPED_TRACE(label(dtype, "rd", rd, " scale ", scale));
      const std::int64_t t = 9, heads = 4, d = 64, half = (rd == 0 ? d : rd) / 2;
      std::vector<float> freq(static_cast<std::size_t>(half));
      std::vector<double> ref_freq(freq.size());
      for (std::int64_t i = 0; i < half; ++i) {  // theta 10000, every other frequency divided by 8
        const double f = std::pow(10000.0, -2.0 * static_cast<double>(i) / static_cast<double>(2 * half));
        freq[static_cast<std::size_t>(i)] = static_cast<float>(i % 2 == 0 ? f : f / 8.0);
        ref_freq[static_cast<std::size_t>(i)] = freq[static_cast<std::size_t>(i)];
      }
      DeviceArena arena(*backend);
      HostTensor x = random_tensor(dtype, {t, heads, d}, rng);
      HostTensor pos(DType::kI32, {t});
      for (std::int64_t i = 0; i < t; ++i) pos.set_int(i, static_cast<std::int32_t>(i * 997));
      RopeArgs args{arena.upload(x), arena.upload(pos), 10000.0f, rd, freq, static_cast<float>(scale)};
      expect_run_ok(*backend, args, arena.stream());
      EXPECT_TRUE(within_bound(arena.download(args.x), rope_ref(x, pos, 10000.0, rd, ref_freq, scale)));
    }
}

TEST(DUPLEX_CONFORMANCE_SUITE, NormInPlace) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(33);
  DeviceArena arena(*backend);
  HostTensor x = random_tensor(DType::kF16, {9, 256}, rng), w = random_tensor(DType::kF16, {256}, rng);
  Tensor xd = arena.upload(x);
  NormArgs args{NormKind::kRms, xd, arena.upload(w), Tensor{}, xd, 1e-6f};
  expect_run_ok(*backend, args, arena.stream());
  EXPECT_TRUE(within_bound(arena.download(xd), norm_ref(NormKind::kRms, x, w, nullptr, 1e-6)));
}

TEST(DUPLEX_CONFORMANCE_SUITE, Rope) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(4);
  struct Shape {
    std::int64_t t, heads, d, rotary;
  };
  for (DType dtype : kFloatTypes)
    for (Shape s : {Shape{3, 8, 32, 0}, Shape{17, 2, 128, 128}, Shape{5, 4, 64, 32}, Shape{1, 1, 2, 0}}) {
      SCOPED_TRACE(label(dtype, s.t, "x", s.heads, "x", s.d, " rd", s.rotary));
      DeviceArena arena(*backend);
      HostTensor x = random_tensor(dtype, {s.t, s.heads, s.d}, rng);
      HostTensor pos(DType::kI32, {s.t});
      std::uniform_int_distribution<std::int32_t> position(0, 8191);
      for (std::int64_t i = 0; i < s.t; ++i) pos.set_int(i, i == 0 ? 0 : position(rng));
      RopeArgs args{arena.upload(x), arena.upload(pos), 10000.0f, s.rotary};
      expect_run_ok(*backend, args, arena.stream());
      EXPECT_TRUE(within_bound(arena.download(args.x), rope_ref(x, pos, 10000.0, s.rotary)));
    }
}

struct AttentionShape {
  std::int64_t hq, hkv, d;
};
const AttentionShape kAttentionShapes[] = {{4, 4, 32}, {8, 2, 32}, {12, 2, 64}, {16, 2, 128}, {48, 8, 128}};

TEST(DUPLEX_CONFORMANCE_SUITE, PrefillAttention) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(5);
  const std::vector<std::vector<std::int64_t>> batches = {{0, 5}, {0, 1, 18, 58}, {0, 0, 3}};
  for (DType dtype : kFloatTypes)
    for (const AttentionShape& s : kAttentionShapes)
      for (const auto& starts : batches) {
        const std::int64_t t = starts.back();
        SCOPED_TRACE(label(dtype, "hq", s.hq, " hkv", s.hkv, " d", s.d, " T", t, " seqs", starts.size() - 1));
        DeviceArena arena(*backend);
        HostTensor q = random_tensor(dtype, {t, s.hq, s.d}, rng),
                   k = random_tensor(dtype, {t, s.hkv, s.d}, rng);
        HostTensor v = random_tensor(dtype, {t, s.hkv, s.d}, rng);
        const float scale = 1.0f / std::sqrt(static_cast<float>(s.d));
        PrefillAttentionArgs args{arena.upload(q), arena.upload(k),
                                  arena.upload(v), arena.empty(dtype, {t, s.hq, s.d}),
                                  starts,          scale};
        expect_run_ok(*backend, args, arena.stream());
        EXPECT_TRUE(within_bound(arena.download(args.out), prefill_attention_ref(q, k, v, starts, scale)));
      }
}

TEST(DUPLEX_CONFORMANCE_SUITE, PrefillAttentionLongPrompt) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(55);
  const DType dtype = DType::kF16;
  const std::int64_t t = 777, hq = 8, hkv = 2, d = 64;
  const std::vector<std::int64_t> starts = {0, t};
  DeviceArena arena(*backend);
  HostTensor q = random_tensor(dtype, {t, hq, d}, rng), k = random_tensor(dtype, {t, hkv, d}, rng);
  HostTensor v = random_tensor(dtype, {t, hkv, d}, rng);
  PrefillAttentionArgs args{arena.upload(q), arena.upload(k), arena.upload(v), arena.empty(dtype, {t, hq, d}),
                            starts,          0.125f};
  expect_run_ok(*backend, args, arena.stream());
  EXPECT_TRUE(within_bound(arena.download(args.out), prefill_attention_ref(q, k, v, starts, 0.125)));
}

// A paged cache whose blocks are handed out in a shuffled order, so logical and physical order differ.
struct PagedCase {
  HostTensor q, k_cache, v_cache, block_table, context_lens;
  std::int64_t max_context = 0;
};

PagedCase make_paged_case(DType dtype, const AttentionShape& s, std::int64_t block_size,
                          const std::vector<std::int32_t>& lens, std::mt19937_64& rng) {
  const auto batch = static_cast<std::int64_t>(lens.size());
  std::int64_t max_context = 0, blocks_needed = 0;
  for (auto l : lens) {
    max_context = std::max<std::int64_t>(max_context, l);
    blocks_needed += (l + block_size - 1) / block_size;
  }
  const std::int64_t max_blocks = std::max<std::int64_t>(1, (max_context + block_size - 1) / block_size);
  const std::int64_t num_blocks = blocks_needed + 3;
  std::vector<std::int32_t> physical(static_cast<std::size_t>(num_blocks));
  std::iota(physical.begin(), physical.end(), 0);
  std::shuffle(physical.begin(), physical.end(), rng);
  PagedCase c;
  c.q = random_tensor(dtype, {batch, s.hq, s.d}, rng);
  c.k_cache = random_tensor(dtype, {num_blocks, block_size, s.hkv, s.d}, rng);
  c.v_cache = random_tensor(dtype, {num_blocks, block_size, s.hkv, s.d}, rng);
  c.block_table = HostTensor(DType::kI32, {batch, max_blocks});
  c.context_lens = HostTensor(DType::kI32, {batch});
  std::size_t next = 0;
  for (std::int64_t b = 0; b < batch; ++b) {
    c.context_lens.set_int(b, lens[static_cast<std::size_t>(b)]);
    for (std::int64_t j = 0; j < max_blocks; ++j) {
      const bool used = j * block_size < lens[static_cast<std::size_t>(b)];
      c.block_table.set_int(b * max_blocks + j, used ? physical[next++] : -7);  // unused entries: never read
    }
  }
  c.max_context = max_context;
  return c;
}

// With a sliding window (or chunked attention: chunk > 0), the block-table entries of every request's blocks
// wholly before its first attended token become invalid (-9): a kernel that read them would fail the check.
// window 0 (and chunk 0): none.
void poison_blocks_behind_window(PagedCase& c, const std::vector<std::int32_t>& lens, std::int64_t block_size,
                                 std::int64_t window, std::int64_t chunk = 0) {
  if (window == 0 && chunk == 0) return;
  const std::int64_t max_blocks = c.block_table.shape()[1];
  for (std::size_t b = 0; b < lens.size(); ++b) {
    const std::int64_t first = lens[b] > 0 ? first_attended(lens[b] - 1, window, chunk) : 0;
    for (std::int64_t j = 0; j < first / block_size; ++j)
      c.block_table.set_int(static_cast<std::int64_t>(b) * max_blocks + j, -9);
  }
}

// Runs decode attention of case `c` over the caches k / v (c's caches uploaded, or views of another layout
// holding the same values) and checks it against the reference on c's caches.
void run_and_check_decode(Backend& backend, DeviceArena& arena, const PagedCase& c, const AttentionShape& s,
                          const Tensor& k, const Tensor& v, std::int64_t window = 0, float softcap = 0.0f,
                          const HostTensor* sinks = nullptr, std::int64_t chunk = 0) {
  const DType dtype = c.q.dtype();
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.d));
  DecodeAttentionArgs args{arena.upload(c.q),
                           k,
                           v,
                           arena.upload(c.block_table),
                           arena.upload(c.context_lens),
                           arena.empty(dtype, {c.q.shape()[0], s.hq, s.d}),
                           static_cast<float>(scale),
                           c.max_context,
                           window,
                           softcap};
  if (sinks != nullptr) args.sinks = arena.upload(*sinks);
  args.chunk = chunk;
  expect_run_ok(backend, args, arena.stream());
  EXPECT_TRUE(within_bound(
      arena.download(args.out),
      decode_attention_ref(c.q, c.k_cache, c.v_cache, c.block_table, c.context_lens,
                           static_cast<double>(static_cast<float>(scale)), window, softcap, sinks, chunk)));
}

void check_decode(Backend& backend, DType dtype, const AttentionShape& s, std::int64_t block_size,
                  const std::vector<std::int32_t>& lens, std::mt19937_64& rng) {
  PagedCase c = make_paged_case(dtype, s, block_size, lens, rng);
  DeviceArena arena(backend);
  run_and_check_decode(backend, arena, c, s, arena.upload(c.k_cache), arena.upload(c.v_cache));
}

TEST(DUPLEX_CONFORMANCE_SUITE, DecodeAttention) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(6);
  for (DType dtype : kFloatTypes)
    for (const AttentionShape& s : kAttentionShapes)
      for (std::int64_t block_size : {16, 7}) {
        SCOPED_TRACE(label(dtype, "hq", s.hq, " hkv", s.hkv, " d", s.d, " block", block_size));
        check_decode(*backend, dtype, s, block_size, {1, 17, 300, 0, 64}, rng);
      }
}

// Sliding window: each request attends to its last `window` tokens; the block-table entries of the blocks
// wholly before them are set out of range (the contract: never read).
TEST(DUPLEX_CONFORMANCE_SUITE, DecodeAttentionSlidingWindow) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(16);
  const std::vector<std::int32_t> lens = {1, 17, 300, 0, 64, 1100};
  for (DType dtype : kFloatTypes)
    for (const AttentionShape& s : kAttentionShapes)
      for (std::int64_t block_size : {16, 7})
        for (std::int64_t window : {1, 5, 64, 1000}) {
          SCOPED_TRACE(label(dtype, "hq", s.hq, " hkv", s.hkv, " d", s.d, " block", block_size, " window", window));
          PagedCase c = make_paged_case(dtype, s, block_size, lens, rng);
          poison_blocks_behind_window(c, lens, block_size, window);
          DeviceArena arena(*backend);
          run_and_check_decode(*backend, arena, c, s, arena.upload(c.k_cache), arena.upload(c.v_cache), window);
        }
}

TEST(DUPLEX_CONFORMANCE_SUITE, PrefillAttentionSlidingWindow) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(15);
  const std::vector<std::int64_t> starts = {0, 1, 18, 58, 158};
  for (DType dtype : kFloatTypes)
    for (const AttentionShape& s : kAttentionShapes)
      for (std::int64_t window : {1, 4, 33}) {
        const std::int64_t t = starts.back();
        SCOPED_TRACE(label(dtype, "hq", s.hq, " hkv", s.hkv, " d", s.d, " window", window));
        DeviceArena arena(*backend);
        HostTensor q = random_tensor(dtype, {t, s.hq, s.d}, rng), k = random_tensor(dtype, {t, s.hkv, s.d}, rng);
        HostTensor v = random_tensor(dtype, {t, s.hkv, s.d}, rng);
        const float scale = 1.0f / std::sqrt(static_cast<float>(s.d));
        PrefillAttentionArgs args{arena.upload(q), arena.upload(k), arena.upload(v), arena.empty(dtype, {t, s.hq, s.d}),
                                  starts,          scale,           window};
        expect_run_ok(*backend, args, arena.stream());
        EXPECT_TRUE(within_bound(arena.download(args.out), prefill_attention_ref(q, k, v, starts, scale, window)));
      }
}

TEST(DUPLEX_CONFORMANCE_SUITE, DecodeAttentionLongContext) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(66);
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    SCOPED_TRACE(dtype_name(dtype));
    check_decode(*backend, dtype, AttentionShape{32, 8, 128}, 16, {8192, 3001}, rng);
    check_decode(*backend, dtype, AttentionShape{8, 2, 32}, 16, {16384}, rng);
  }
}

// Gemma 2's soft-capping (ops.hpp softcap) with caps of 50, 5 and 1. The queries are scaled to the cap (keys
// in [-1, 1], scale 1 / sqrt(D): scores have a standard deviation of about 2 x cap), so the cap changes the
// output far beyond the bound. GQA groups 1, 4 and 8 and an odd head_dim (20: the CUDA fallbacks).
constexpr float kSoftcaps[] = {50.0f, 5.0f, 1.0f};
const AttentionShape kSoftcapShapes[] = {{4, 4, 32}, {8, 2, 64}, {16, 2, 128}, {6, 3, 20}};
double softcap_query_range(float cap) {
  return 6.0 * static_cast<double>(cap);
}

TEST(DUPLEX_CONFORMANCE_SUITE, PrefillAttentionSoftcap) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(18);
  const std::vector<std::int64_t> starts = {0, 1, 18, 58, 158};
  auto check = [&](DType dtype, const AttentionShape& s, const std::vector<std::int64_t>& seq_starts,
                   float cap, std::int64_t window) {
    const std::int64_t t = seq_starts.back();
    SCOPED_TRACE(
        label(dtype, "hq", s.hq, " hkv", s.hkv, " d", s.d, " T", t, " softcap", cap, " window", window));
    DeviceArena arena(*backend);
    const double range = softcap_query_range(cap);
    HostTensor q = random_tensor(dtype, {t, s.hq, s.d}, rng, -range, range);
    HostTensor k = random_tensor(dtype, {t, s.hkv, s.d}, rng), v = random_tensor(dtype, {t, s.hkv, s.d}, rng);
    const float scale = 1.0f / std::sqrt(static_cast<float>(s.d));
    PrefillAttentionArgs args{
        arena.upload(q), arena.upload(k), arena.upload(v), arena.empty(dtype, {t, s.hq, s.d}),
        seq_starts,      scale,           window,          cap};
    expect_run_ok(*backend, args, arena.stream());
    EXPECT_TRUE(
        within_bound(arena.download(args.out),
                     prefill_attention_ref(q, k, v, seq_starts, scale, window, static_cast<double>(cap))));
  };
  for (DType dtype : kFloatTypes)
    for (const AttentionShape& s : kSoftcapShapes)
      for (float cap : kSoftcaps)
        for (std::int64_t window : {0, 33}) check(dtype, s, starts, cap, window);
  // A long prompt, whole and windowed.
  for (std::int64_t window : {0, 200}) check(DType::kF16, AttentionShape{8, 2, 64}, {0, 777}, 5.0f, window);
}

// Decode over paged caches (shuffled pages, block sizes 16 and 7, requests of 1 to 300 tokens and an empty
// one), whole and windowed (the block-table entries before the window out of range, as never read), then
// long contexts (many splits) and a group above the tensor-core path's 16 heads per block.
TEST(DUPLEX_CONFORMANCE_SUITE, DecodeAttentionSoftcap) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(19);
  auto check = [&](DType dtype, const AttentionShape& s, std::int64_t block_size,
                   const std::vector<std::int32_t>& lens, float cap, std::int64_t window) {
    SCOPED_TRACE(label(dtype, "hq", s.hq, " hkv", s.hkv, " d", s.d, " block", block_size, " max context",
                       *std::max_element(lens.begin(), lens.end()), " softcap", cap, " window", window));
    PagedCase c = make_paged_case(dtype, s, block_size, lens, rng);
    const double range = softcap_query_range(cap);
    c.q = random_tensor(dtype, c.q.shape(), rng, -range, range);
    poison_blocks_behind_window(c, lens, block_size, window);
    DeviceArena arena(*backend);
    run_and_check_decode(*backend, arena, c, s, arena.upload(c.k_cache), arena.upload(c.v_cache), window,
                         cap);
  };
  for (DType dtype : kFloatTypes)
    for (const AttentionShape& s : kSoftcapShapes)
      for (std::int64_t block_size : {16, 7})
        for (float cap : kSoftcaps)
          for (std::int64_t window : {0, 64}) check(dtype, s, block_size, {1, 17, 300, 0, 64}, cap, window);
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    check(dtype, AttentionShape{32, 8, 128}, 16, {8192, 3001}, 50.0f, 0);
    check(dtype, AttentionShape{64, 8, 128}, 16, {5000, 77}, 5.0f, 1000);
    check(dtype, AttentionShape{8, 2, 32}, 16, {16384}, 1.0f, 0);
    check(dtype, AttentionShape{40, 2, 64}, 16, {70, 1, 129, 15}, 5.0f, 0);
  }
  check(DType::kF32, AttentionShape{32, 8, 128}, 16, {4099}, 5.0f, 0);
}

// A small valid f16 prefill (5 tokens, 4 query heads over 2 KV heads of 32) and decode (one request of 40
// tokens, the same heads) in `arena`, for the argument checks.
struct SmallAttention {
  PrefillAttentionArgs prefill;
  DecodeAttentionArgs decode;
};
const std::vector<std::int64_t> kSmallPrefillStarts = {0, 5};
SmallAttention small_attention(DeviceArena& arena, std::mt19937_64& rng) {
  const DType dtype = DType::kF16;
  const PrefillAttentionArgs prefill{arena.upload(random_tensor(dtype, {5, 4, 32}, rng)),
                                     arena.upload(random_tensor(dtype, {5, 2, 32}, rng)),
                                     arena.upload(random_tensor(dtype, {5, 2, 32}, rng)),
                                     arena.empty(dtype, {5, 4, 32}),
                                     kSmallPrefillStarts,
                                     0.17f};
  const PagedCase c = make_paged_case(dtype, AttentionShape{4, 2, 32}, 16, {40}, rng);
  const DecodeAttentionArgs decode{arena.upload(c.q),
                                   arena.upload(c.k_cache),
                                   arena.upload(c.v_cache),
                                   arena.upload(c.block_table),
                                   arena.upload(c.context_lens),
                                   arena.empty(dtype, {1, 4, 32}),
                                   0.17f,
                                   c.max_context};
  return {prefill, decode};
}

// softcap must be finite and >= 0 for the three ops that take one (0: none).
TEST(DUPLEX_CONFORMANCE_SUITE, SoftcapArgumentsAreChecked) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(20);
  DeviceArena arena(*backend);
  const DType dtype = DType::kF16;
  const auto [prefill, decode] = small_attention(arena, rng);
  const LmHeadArgs lm_head{arena.upload(random_tensor(dtype, {2, 16}, rng)),
                           arena.upload(random_tensor(dtype, {50, 16}, rng)), arena.empty(DType::kI32, {2}),
                           arena.empty(DType::kF32, {2, 50})};
  // The op with its softcap set (every op listed below has one).
  auto with_cap = [](const OpArgs& op, float cap) {
    return std::visit(
        [cap](auto args) -> OpArgs {
          if constexpr (requires { args.softcap; }) args.softcap = cap;
          return args;
        },
        op);
  };
  for (const OpArgs& valid : {OpArgs{prefill}, OpArgs{decode}, OpArgs{lm_head}}) {
    SCOPED_TRACE(op_name(valid));
    for (float cap : {0.0f, 30.0f, 1e-3f}) {
      const Status s = backend->can_implement(with_cap(valid, cap));
      EXPECT_TRUE(s.ok()) << "softcap " << cap << ": " << s.to_string();
    }
    for (auto [cap, text] : {std::pair<float, const char*>{-1.0f, "softcap is -1;"},
                             {-INFINITY, "softcap is -inf;"},
                             {INFINITY, "softcap is inf;"},
                             {std::nanf(""), "softcap is nan;"}}) {
      const OpArgs a = with_cap(valid, cap);
      const Status s = backend->can_implement(a);
      EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
      EXPECT_NE(s.message().find(std::string(op_name(valid)) + ": " + text), std::string::npos)
          << s.message();
      EXPECT_NE(s.message().find("expected a finite number >= 0"), std::string::npos) << s.message();
      EXPECT_EQ(backend->run(a, arena.stream()).code(), StatusCode::kInvalidArgument);
    }
  }
}

// gpt-oss's attention sinks (ops.hpp sinks): one logit per query head in [-4, 6], against scores of about
// +-1 (q and k in [-1, 1], scale 1 / sqrt(D)), so some sinks take most of a row's weight and others almost
// none. Prefill over packed prompts, whole and windowed; decode over paged caches with an empty request,
// windows, long contexts (many splits: the sink must be merged once) and groups above 16 heads.
HostTensor random_sinks(DType dtype, std::int64_t hq, std::mt19937_64& rng) {
  return random_tensor(dtype, {hq}, rng, -4.0, 6.0);
}

// One prefill attention case against the reference: random q, k, v over the sequences of seq_starts, with a
// window, a chunk and sinks (or not).
void check_prefill_attention(Backend& backend, std::mt19937_64& rng, DType dtype, const AttentionShape& s,
                             const std::vector<std::int64_t>& seq_starts, std::int64_t window,
                             std::int64_t chunk, bool with_sinks) {
  const std::int64_t t = seq_starts.back();
  SCOPED_TRACE(label(dtype, "hq", s.hq, " hkv", s.hkv, " d", s.d, " T", t, " window", window, " chunk", chunk,
                     with_sinks ? " sinks" : ""));
  DeviceArena arena(backend);
  HostTensor q = random_tensor(dtype, {t, s.hq, s.d}, rng), k = random_tensor(dtype, {t, s.hkv, s.d}, rng);
  HostTensor v = random_tensor(dtype, {t, s.hkv, s.d}, rng), sinks = random_sinks(dtype, s.hq, rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.d));
  PrefillAttentionArgs args{
      arena.upload(q), arena.upload(k), arena.upload(v), arena.empty(dtype, {t, s.hq, s.d}),
      seq_starts,      scale,           window};
  args.chunk = chunk;
  if (with_sinks) args.sinks = arena.upload(sinks);
  expect_run_ok(backend, args, arena.stream());
  EXPECT_TRUE(within_bound(
      arena.download(args.out),
      prefill_attention_ref(q, k, v, seq_starts, scale, window, 0.0, with_sinks ? &sinks : nullptr, chunk)));
}

TEST(DUPLEX_CONFORMANCE_SUITE, PrefillAttentionSinks) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(21);
  for (DType dtype : kFloatTypes)
    for (const AttentionShape& s : kAttentionShapes)
      for (std::int64_t window : {0, 4, 33})
        check_prefill_attention(*backend, rng, dtype, s, {0, 1, 18, 58, 158}, window, 0, true);
  for (std::int64_t window : {0, 128})
    check_prefill_attention(*backend, rng, DType::kBF16, AttentionShape{64, 8, 64}, {0, 700}, window, 0,
                            true);
}

TEST(DUPLEX_CONFORMANCE_SUITE, DecodeAttentionSinks) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(22);
  auto check = [&](DType dtype, const AttentionShape& s, std::int64_t block_size,
                   const std::vector<std::int32_t>& lens, std::int64_t window) {
    SCOPED_TRACE(label(dtype, "hq", s.hq, " hkv", s.hkv, " d", s.d, " block", block_size, " max context",
                       *std::max_element(lens.begin(), lens.end()), " window", window));
    PagedCase c = make_paged_case(dtype, s, block_size, lens, rng);
    poison_blocks_behind_window(c, lens, block_size, window);
    const HostTensor sinks = random_sinks(dtype, s.hq, rng);
    DeviceArena arena(*backend);
    run_and_check_decode(*backend, arena, c, s, arena.upload(c.k_cache), arena.upload(c.v_cache), window,
                         0.0f, &sinks);
  };
  for (DType dtype : kFloatTypes)
    for (const AttentionShape& s : kAttentionShapes)
      for (std::int64_t block_size : {16, 7})
        for (std::int64_t window : {0, 64}) check(dtype, s, block_size, {1, 17, 300, 0, 64}, window);
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    check(dtype, AttentionShape{64, 8, 64}, 16, {8192, 3001, 1}, 0);  // gpt-oss's heads, many splits
    check(dtype, AttentionShape{64, 8, 64}, 16, {5000, 77}, 128);     // its window
    check(dtype, AttentionShape{40, 2, 64}, 16, {70, 1, 129, 15}, 0);
    check(dtype, AttentionShape{6, 3, 20}, 7, {300, 2}, 0);  // an odd head_dim (the CUDA fallbacks)
  }
}

// sinks must be [Hq] in q's dtype.
TEST(DUPLEX_CONFORMANCE_SUITE, SinkArgumentsAreChecked) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(23);
  DeviceArena arena(*backend);
  const DType dtype = DType::kF16;
  auto [prefill, decode] = small_attention(arena, rng);
  // Three heads of four, f32 sinks with f16 q, a [4, 1] tensor.
  for (auto [sinks, code] :
       {std::pair{arena.upload(random_sinks(dtype, 3, rng)), StatusCode::kInvalidArgument},
        {arena.upload(random_sinks(DType::kF32, 4, rng)), StatusCode::kUnsupportedDType},
        {arena.upload(random_tensor(dtype, {4, 1}, rng)), StatusCode::kInvalidArgument}}) {
    prefill.sinks = decode.sinks = sinks;
    for (const OpArgs& a : {OpArgs{prefill}, OpArgs{decode}}) {
      SCOPED_TRACE(op_name(a));
      const Status st = backend->can_implement(a);
      EXPECT_EQ(st.code(), code) << st.to_string();
      EXPECT_NE(st.message().find(std::string(op_name(a)) + ": sinks"), std::string::npos) << st.message();
      EXPECT_EQ(backend->run(a, arena.stream()).code(), code);
    }
  }
}

// Llama 4's chunked attention (ops.hpp chunk): each query attends to the earlier tokens of its own chunk only
// (with a window too, to what both allow: for some queries the window starts later, for others the chunk).
// Chunks of 1 token, of a few, of the CUDA prefill kernel's 32-row tile, of 100 and longer than every
// sequence; GQA groups 1, 4 and 6.
constexpr std::int64_t kChunks[] = {1, 5, 32, 100, 4096};

TEST(DUPLEX_CONFORMANCE_SUITE, PrefillAttentionChunked) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(43);
  for (DType dtype : kFloatTypes)
    for (const AttentionShape& s : kAttentionShapes)
      for (std::int64_t chunk : kChunks)
        for (std::int64_t window : {0, 20})
          check_prefill_attention(*backend, rng, dtype, s, {0, 1, 18, 58, 158}, window, chunk, false);
  // Long prompts: chunks that do not align with the CUDA kernel's 32-row tiles, windowed, with sinks.
  for (auto [chunk, window, sinks] : {std::tuple<std::int64_t, std::int64_t, bool>{100, 0, false},
                                      {256, 0, true},
                                      {100, 33, false},
                                      {8192, 0, false}})
    check_prefill_attention(*backend, rng, DType::kBF16, AttentionShape{16, 2, 64}, {0, 700, 777}, window,
                            chunk, sinks);
}

// Decode: the new token is at position context_len - 1. Contexts that end exactly on a chunk boundary (the
// new token is its chunk's last: the whole chunk attended) and just after one (the new token alone in its
// chunk), an empty request and a long one; the block-table entries before each request's first attended token
// out of range (never read). Then long contexts (many splits; Llama 4's chunk of 8192) and groups above 16
// heads.
TEST(DUPLEX_CONFORMANCE_SUITE, DecodeAttentionChunked) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(44);
  auto check = [&](DType dtype, const AttentionShape& s, std::int64_t block_size,
                   const std::vector<std::int32_t>& lens, std::int64_t chunk, std::int64_t window) {
    SCOPED_TRACE(label(dtype, "hq", s.hq, " hkv", s.hkv, " d", s.d, " block", block_size, " max context",
                       *std::max_element(lens.begin(), lens.end()), " chunk", chunk, " window", window));
    PagedCase c = make_paged_case(dtype, s, block_size, lens, rng);
    poison_blocks_behind_window(c, lens, block_size, window, chunk);
    DeviceArena arena(*backend);
    run_and_check_decode(*backend, arena, c, s, arena.upload(c.k_cache), arena.upload(c.v_cache), window,
                         0.0f, nullptr, chunk);
  };
  auto lens_for = [](std::int64_t chunk) {
    std::vector<std::int32_t> lens = {1, 0, 600};
    for (std::int64_t n : {chunk, chunk + 1, 2 * chunk, 2 * chunk + 1, 3 * chunk - 1})
      if (n <= 600) lens.push_back(static_cast<std::int32_t>(n));
    return lens;
  };
  for (DType dtype : kFloatTypes)
    for (const AttentionShape& s : kAttentionShapes)
      for (std::int64_t block_size : {16, 7})
        for (std::int64_t chunk : kChunks)
          for (std::int64_t window : {0, 40})  // a window matters with chunks longer than it
            if (window == 0 || (chunk > window && chunk < 600))
              check(dtype, s, block_size, lens_for(chunk), chunk, window);
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    check(dtype, AttentionShape{40, 8, 128}, 16, {8192, 8193, 1}, 8192, 0);
    check(dtype, AttentionShape{32, 8, 128}, 16, {5000, 2000, 2001}, 1000, 0);
    check(dtype, AttentionShape{40, 2, 64}, 16, {5000, 77, 2999}, 1000, 300);
    check(dtype, AttentionShape{6, 3, 20}, 7, {300, 2, 64}, 64, 0);  // an odd head_dim (the CUDA fallbacks)
  }
  check(DType::kF32, AttentionShape{32, 8, 128}, 16, {4099, 4096}, 2048, 0);
}

// chunk must be >= 0 (0: none), and DecodeAttentionArgs::max_attended() is bounded by it.
TEST(DUPLEX_CONFORMANCE_SUITE, ChunkArgumentsAreChecked) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(45);
  DeviceArena arena(*backend);
  auto [prefill, decode] = small_attention(arena, rng);
  for (std::int64_t chunk : {0, 1, 7, 8192}) {
    prefill.chunk = decode.chunk = chunk;
    for (const OpArgs& a : {OpArgs{prefill}, OpArgs{decode}})
      EXPECT_TRUE(backend->can_implement(a).ok()) << op_name(a) << " chunk " << chunk;
  }
  prefill.chunk = decode.chunk = -1;
  for (const OpArgs& a : {OpArgs{prefill}, OpArgs{decode}}) {
    SCOPED_TRACE(op_name(a));
    const Status st = backend->can_implement(a);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
    EXPECT_NE(st.message().find(std::string(op_name(a)) +
                                ": chunk is -1; expected >= 1 (or 0: no chunked attention)"),
              std::string::npos)
        << st.message();
    EXPECT_EQ(backend->run(a, arena.stream()).code(), StatusCode::kInvalidArgument);
  }
  DecodeAttentionArgs d;
  d.max_context_len = 100;
  EXPECT_EQ(d.max_attended(), 100);
  d.chunk = 30;
  EXPECT_EQ(d.max_attended(), 30);
  d.window = 20;
  EXPECT_EQ(d.max_attended(), 20);
  d.window = 50;
  EXPECT_EQ(d.max_attended(), 30);
  d.chunk = 200;
  EXPECT_EQ(d.max_attended(), 50);
  d.window = 0;
  EXPECT_EQ(d.max_attended(), 100);
}

// Query groups larger than one block's 16 heads (the tensor-core path splits them into head chunks), and
// contexts that end inside a tile and a warp's 16 tokens.
TEST(DUPLEX_CONFORMANCE_SUITE, DecodeAttentionLargeGroups) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(69);
  for (DType dtype : kFloatTypes) {
    SCOPED_TRACE(dtype_name(dtype));
    check_decode(*backend, dtype, AttentionShape{40, 2, 64}, 16, {70, 1, 129, 15}, rng);
    check_decode(*backend, dtype, AttentionShape{16, 1, 128}, 5, {33, 640}, rng);
  }
}

// The caches as strided views of other physical layouts: head-major pages ([pages][heads][block][D], K and V
// in separate buffers) and K and V interleaved per page in one buffer ([pages][2][heads][block][D]). The
// values are the PagedCase's (logical [pages][block][heads][D]), so the reference is unchanged.
enum class PhysicalLayout : std::uint8_t { kHeadMajor, kInterleavedHeadMajor };

void check_decode_strided(Backend& backend, DType dtype, const AttentionShape& s, std::int64_t block_size,
                          const std::vector<std::int32_t>& lens, PhysicalLayout layout, std::mt19937_64& rng) {
  PagedCase c = make_paged_case(dtype, s, block_size, lens, rng);
  const std::int64_t pages = c.k_cache.shape()[0], page_elems = s.hkv * block_size * s.d;
  const bool interleaved = layout == PhysicalLayout::kInterleavedHeadMajor;
  const std::int64_t page_stride = interleaved ? 2 * page_elems : page_elems;
  const std::int64_t v_base = interleaved ? page_elems : 0;  // V's offset within its buffer
  auto physical_offset = [&](std::int64_t page, std::int64_t slot, std::int64_t head) {
    return page * page_stride + head * block_size * s.d + slot * s.d;
  };
  HostTensor k_phys(dtype, {pages * page_stride}), v_phys(dtype, {interleaved ? 1 : pages * page_stride});
  HostTensor& v_dst = interleaved ? k_phys : v_phys;
  for (std::int64_t page = 0; page < pages; ++page)
    for (std::int64_t slot = 0; slot < block_size; ++slot)
      for (std::int64_t head = 0; head < s.hkv; ++head)
        for (std::int64_t e = 0; e < s.d; ++e) {
          const std::int64_t logical = ((page * block_size + slot) * s.hkv + head) * s.d + e;
          k_phys.set(physical_offset(page, slot, head) + e, c.k_cache.get(logical));
          v_dst.set(v_base + physical_offset(page, slot, head) + e, c.v_cache.get(logical));
        }
  DeviceArena arena(backend);
  const Tensor k_buffer = arena.upload(k_phys);
  const Tensor v_buffer = interleaved ? k_buffer : arena.upload(v_phys);
  const std::initializer_list<std::int64_t> shape = {pages, block_size, s.hkv, s.d};
  const std::initializer_list<std::int64_t> strides = {page_stride, s.d, block_size * s.d, 1};
  const Location where = backend.memory_location();
  auto* v_data = static_cast<unsigned char*>(v_buffer.data) + static_cast<std::size_t>(v_base) * dtype_size(dtype);
  run_and_check_decode(backend, arena, c, s, Tensor::strided(k_buffer.data, dtype, shape, strides, where),
                       Tensor::strided(v_data, dtype, shape, strides, where));
}

// Every decode path (tensor cores for FP16 / BF16 at head_dim 32 / 64 / 128, the 16-byte CUDA-core path for
// FP32, the element-wise fallback for rows that are not whole 16-byte chunks) on both strided layouts.
TEST(DUPLEX_CONFORMANCE_SUITE, DecodeAttentionStridedCaches) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(71);
  for (PhysicalLayout layout : {PhysicalLayout::kHeadMajor, PhysicalLayout::kInterleavedHeadMajor})
    for (DType dtype : kFloatTypes)
      for (const AttentionShape& s : {AttentionShape{32, 8, 128}, AttentionShape{8, 2, 64}, AttentionShape{6, 3, 20}})
        for (std::int64_t block_size : {16, 7}) {
          SCOPED_TRACE(label(dtype, "hq", s.hq, " hkv", s.hkv, " d", s.d, " block", block_size,
                             layout == PhysicalLayout::kHeadMajor ? " head-major" : " interleaved"));
          check_decode_strided(*backend, dtype, s, block_size, {1, 17, 300, 0, 64}, layout, rng);
        }
}

// Split-KV partials are merged in a fixed order: two runs give the same bits (long context: many splits).
TEST(DUPLEX_CONFORMANCE_SUITE, DecodeAttentionIsBitReproducible) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(67);
  PagedCase c = make_paged_case(DType::kF16, AttentionShape{32, 8, 128}, 16, {5000, 77, 1}, rng);
  DeviceArena arena(*backend);
  DecodeAttentionArgs args{arena.upload(c.q),
                           arena.upload(c.k_cache),
                           arena.upload(c.v_cache),
                           arena.upload(c.block_table),
                           arena.upload(c.context_lens),
                           arena.empty(DType::kF16, {3, 32, 128}),
                           0.088f,
                           c.max_context};
  expect_run_ok(*backend, args, arena.stream());
  const HostTensor first = arena.download(args.out);
  expect_run_ok(*backend, args, arena.stream());
  const HostTensor second = arena.download(args.out);
  ASSERT_EQ(first.bytes(), second.bytes());
  EXPECT_EQ(std::memcmp(first.data(), second.data(), first.bytes()), 0);
}

// Work ordered across two streams by an event: copy in on one, compute on the other after waiting for it.
TEST(DUPLEX_CONFORMANCE_SUITE, StreamsOrderedByEvents) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(68);
  const Stream producer = backend->create_stream(), consumer = backend->create_stream();
  const Event copied = backend->create_event();
  HostTensor x = random_tensor(DType::kBF16, {64, 1000}, rng, -4.0, 4.0);
  void* x_mem = backend->allocate(x.bytes());
  void* y_mem = backend->allocate(x.bytes());
  ASSERT_TRUE(backend->copy_from_host(x_mem, x.data(), x.bytes(), producer).ok());
  ASSERT_TRUE(backend->record_event(copied, producer).ok());
  ASSERT_TRUE(backend->stream_wait_event(consumer, copied).ok());
  Tensor xt = Tensor::contiguous(x_mem, DType::kBF16, {64, 1000}, backend->memory_location());
  Tensor yt = Tensor::contiguous(y_mem, DType::kBF16, {64, 1000}, backend->memory_location());
  expect_run_ok(*backend, SoftmaxArgs{xt, yt, 1.0f}, consumer);
  HostTensor y(DType::kBF16, {64, 1000});
  ASSERT_TRUE(backend->copy_to_host(y.data(), y_mem, y.bytes(), consumer).ok());
  ASSERT_TRUE(backend->synchronize(consumer).ok());
  EXPECT_TRUE(within_bound(y, softmax_ref(x, 1.0)));
  ASSERT_TRUE(backend->synchronize(producer).ok());
  backend->deallocate(x_mem);
  backend->deallocate(y_mem);
  backend->destroy_event(copied);
  backend->destroy_stream(producer);
  backend->destroy_stream(consumer);
}

TEST(DUPLEX_CONFORMANCE_SUITE, Softmax) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(7);
  for (DType dtype : kFloatTypes)
    for (auto [r, c] : {std::pair<std::int64_t, std::int64_t>{1, 1}, {7, 1000}, {3, 33}, {2, 5000}})
      for (float scale : {1.0f, 0.125f}) {
        SCOPED_TRACE(label(dtype, r, "x", c));
        DeviceArena arena(*backend);
        HostTensor x = random_tensor(dtype, {r, c}, rng, -8.0, 8.0);
        SoftmaxArgs args{arena.upload(x), arena.empty(dtype, {r, c}), scale};
        expect_run_ok(*backend, args, arena.stream());
        EXPECT_TRUE(within_bound(arena.download(args.y), softmax_ref(x, scale)));
      }
}

// The softmax top-k router's choice (ids [T,k]) and weights against the reference probabilities p [T,E]: the
// reference ranking, where a backend may swap experts whose probabilities are within their bounds, and each
// weight (renormalised over the chosen ones when asked) x scaling. (Also the sigmoid top-k router's, with
// p = sigmoid(logits): router_sigmoid_ref.)
void check_softmax_topk(const HostTensor& ids, const HostTensor& weights, const Expected& p, std::int64_t t,
                        std::int64_t e, std::int64_t k, bool renormalize, double scaling) {
  for (std::int64_t i = 0; i < t; ++i) {
    // The reference ranking; a backend may swap experts whose probabilities are within their bounds.
    std::vector<std::int64_t> order(static_cast<std::size_t>(e));
    std::iota(order.begin(), order.end(), 0);
    auto prob = [&](std::int64_t j) { return p.value[static_cast<std::size_t>(i * e + j)]; };
    auto err = [&](std::int64_t j) { return p.bound[static_cast<std::size_t>(i * e + j)]; };
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return prob(a) > prob(b); });
    std::set<std::int32_t> chosen;
    double chosen_sum = 0.0, chosen_err = 0.0;
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int32_t id = ids.get_int(i * k + j);
      ASSERT_GE(id, 0);
      ASSERT_LT(id, e);
      EXPECT_TRUE(chosen.insert(id).second) << "expert " << id << " chosen twice for token " << i;
      const std::int64_t ref = order[static_cast<std::size_t>(j)];
      EXPECT_LE(std::abs(prob(id) - prob(ref)), err(id) + err(ref)) << "token " << i << " slot " << j;
      chosen_sum += prob(id);
      chosen_err += err(id);
    }
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int32_t id = ids.get_int(i * k + j);
      const double expected = renormalize ? prob(id) / chosen_sum : prob(id);
      const double bound =
          renormalize ? (err(id) + expected * chosen_err) / chosen_sum + 4 * kU32 : err(id) + 4 * kU32;
      EXPECT_NEAR(weights.get(i * k + j), expected * scaling, (bound + kU32 * expected) * scaling)
          << "token " << i << " slot " << j;
    }
  }
}

TEST(DUPLEX_CONFORMANCE_SUITE, Router) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(8);
  struct Shape {
    std::int64_t t, h, e, k;
  };
  for (DType dtype : kFloatTypes)
    for (Shape s : {Shape{1, 64, 8, 2}, Shape{37, 256, 8, 2}, Shape{5, 96, 64, 6}, Shape{4, 32, 3, 1}})
      for (auto [renormalize, scaling] : {std::pair{true, 1.0}, {false, 1.0}, {true, 2.5}, {false, 0.75}}) {
        SCOPED_TRACE(label(dtype, "t", s.t, " e", s.e, " k", s.k, (renormalize ? " renormalize" : ""),
                           " scaling ", scaling));
        DeviceArena arena(*backend);
        HostTensor hidden = random_tensor(dtype, {s.t, s.h}, rng),
                   gate = random_tensor(dtype, {s.e, s.h}, rng, -0.2, 0.2);
        RouterArgs args{arena.upload(hidden),
                        arena.upload(gate),
                        arena.empty(DType::kI32, {s.t, s.k}),
                        arena.empty(DType::kF32, {s.t, s.k}),
                        arena.empty(DType::kF32, {s.t, s.e}),
                        s.k,
                        renormalize};
        args.routed_scaling = static_cast<float>(scaling);
        expect_run_ok(*backend, args, arena.stream());
        const HostTensor ids = arena.download(args.topk_ids), weights = arena.download(args.topk_weights);
        EXPECT_TRUE(
            within_bound(arena.download(args.logits), gemm_ref(hidden, gate, nullptr, true, DType::kF32)));
        check_softmax_topk(ids, weights, router_probs_ref(hidden, gate), s.t, s.e, s.k, renormalize, scaling);
      }
}

// gpt-oss's router bias (ops.hpp logit_bias): added to the logits before the softmax top-k; large enough
// (+-2 against logits of about +-1) to change which experts are chosen.
TEST(DUPLEX_CONFORMANCE_SUITE, RouterLogitBias) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(24);
  for (DType dtype : kFloatTypes)
    for (auto [t, e, k] : {std::tuple<std::int64_t, std::int64_t, std::int64_t>{37, 32, 4}, {5, 8, 2}}) {
      SCOPED_TRACE(label(dtype, "t", t, " e", e, " k", k));
      DeviceArena arena(*backend);
      const std::int64_t h = 96;
      HostTensor hidden = random_tensor(dtype, {t, h}, rng),
                 gate = random_tensor(dtype, {e, h}, rng, -0.2, 0.2);
      HostTensor bias = random_tensor(dtype, {e}, rng, -2.0, 2.0);
      RouterArgs args{arena.upload(hidden),
                      arena.upload(gate),
                      arena.empty(DType::kI32, {t, k}),
                      arena.empty(DType::kF32, {t, k}),
                      arena.empty(DType::kF32, {t, e}),
                      k,
                      true};
      args.logit_bias = arena.upload(bias);
      expect_run_ok(*backend, args, arena.stream());
      EXPECT_TRUE(within_bound(arena.download(args.logits), router_logits_ref(hidden, gate, &bias)));
      check_softmax_topk(arena.download(args.topk_ids), arena.download(args.topk_weights),
                         router_probs_ref(hidden, gate, &bias), t, e, k, true, 1.0);
      // A logit_bias of the wrong length or dtype is refused.
      const DType other = dtype == DType::kF32 ? DType::kF16 : DType::kF32;
      for (auto [wrong, code] : {std::pair{random_tensor(dtype, {e + 1}, rng), StatusCode::kInvalidArgument},
                                 {random_tensor(other, {e}, rng), StatusCode::kUnsupportedDType}}) {
        args.logit_bias = arena.upload(wrong);
        const Status st = backend->can_implement(args);
        EXPECT_EQ(st.code(), code) << st.to_string();
        EXPECT_NE(st.message().find("router: logit_bias"), std::string::npos) << st.message();
      }
    }
}

// Llama 4's router (ops.hpp kSigmoidTopK): the top_k experts by logit, weight sigmoid(logit) (renormalised
// over the chosen ones when asked) x routed_scaling, with and without a logit_bias (+-2 against logits of
// about +-1: it changes the choice); Llama 4's 16 and 128 experts with top 1, and larger k. The sigmoid is
// monotonic, so check_softmax_topk checks the ranking and the weights against s = sigmoid(logits).
TEST(DUPLEX_CONFORMANCE_SUITE, RouterSigmoidTopK) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(46);
  struct Shape {
    std::int64_t t, h, e, k;
  };
  for (DType dtype : kFloatTypes)
    for (Shape s : {Shape{1, 64, 8, 1}, Shape{37, 256, 16, 1}, Shape{5, 96, 128, 1}, Shape{9, 96, 16, 4},
                    Shape{4, 32, 3, 3}})
      for (auto [renormalize, scaling] : {std::pair{false, 1.0}, {true, 1.0}, {false, 2.5}})
        for (bool with_bias : {false, true}) {
          SCOPED_TRACE(label(dtype, "t", s.t, " e", s.e, " k", s.k, (renormalize ? " renormalize" : ""),
                             " scaling ", scaling, with_bias ? " logit_bias" : ""));
          DeviceArena arena(*backend);
          HostTensor hidden = random_tensor(dtype, {s.t, s.h}, rng),
                     gate = random_tensor(dtype, {s.e, s.h}, rng, -0.2, 0.2);
          HostTensor bias = random_tensor(dtype, {s.e}, rng, -2.0, 2.0);
          RouterArgs args{arena.upload(hidden),
                          arena.upload(gate),
                          arena.empty(DType::kI32, {s.t, s.k}),
                          arena.empty(DType::kF32, {s.t, s.k}),
                          arena.empty(DType::kF32, {s.t, s.e}),
                          s.k,
                          renormalize};
          args.kind = RouterKind::kSigmoidTopK;
          args.routed_scaling = static_cast<float>(scaling);
          if (with_bias) args.logit_bias = arena.upload(bias);
          expect_run_ok(*backend, args, arena.stream());
          const HostTensor* b = with_bias ? &bias : nullptr;
          EXPECT_TRUE(within_bound(arena.download(args.logits), router_logits_ref(hidden, gate, b)));
          check_softmax_topk(arena.download(args.topk_ids), arena.download(args.topk_weights),
                             router_sigmoid_ref(hidden, gate, b), s.t, s.e, s.k, renormalize, scaling);
        }
}

// kSigmoidTopK ranks by the logit itself (stated logits: an identity gate): logits 20 and 30 both have
// sigmoid 1 in FP32, where a ranking by the sigmoid would tie them and take the lower id; equal logits go to
// the lower id. Then the refusals: group fields and a correction bias belong to the group routers.
TEST(DUPLEX_CONFORMANCE_SUITE, RouterSigmoidTopKTies) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(47);
  const std::int64_t e = 8, k = 4;
  const std::vector<std::vector<double>> rows = {{20, 30, -1, 0.5, -3, 0.5, 2, 30},
                                                 {0.5, -1, -2, 0.5, -3, 0.5, -4, 0.5}};
  const std::vector<std::vector<std::int32_t>> want = {{1, 7, 0, 6}, {0, 3, 5, 7}};
  auto sigmoid = [](double l) { return 1.0 / (1.0 + std::exp(-l)); };
  for (DType dtype : kFloatTypes)
    for (bool renormalize : {false, true}) {
      SCOPED_TRACE(label(dtype, renormalize ? "renormalize" : ""));
      DeviceArena arena(*backend);
      const auto t = static_cast<std::int64_t>(rows.size());
      HostTensor hidden(dtype, {t, e}), gate(dtype, {e, e});
      for (std::int64_t r = 0; r < t; ++r)
        for (std::int64_t j = 0; j < e; ++j)
          hidden.set(r * e + j, rows[static_cast<std::size_t>(r)][static_cast<std::size_t>(j)]);
      for (std::int64_t j = 0; j < e; ++j) gate.set(j * e + j, 1.0);
      RouterArgs args{arena.upload(hidden),
                      arena.upload(gate),
                      arena.empty(DType::kI32, {t, k}),
                      arena.empty(DType::kF32, {t, k}),
                      Tensor{},
                      k,
                      renormalize};
      args.kind = RouterKind::kSigmoidTopK;
      args.routed_scaling = 2.5f;
      expect_run_ok(*backend, args, arena.stream());
      const HostTensor ids = arena.download(args.topk_ids), weights = arena.download(args.topk_weights);
      for (std::int64_t r = 0; r < t; ++r) {
        const auto& logit = rows[static_cast<std::size_t>(r)];
        const auto& chosen = want[static_cast<std::size_t>(r)];
        double sum = 0.0;
        for (std::int32_t id : chosen) sum += sigmoid(logit[static_cast<std::size_t>(id)]);
        for (std::int64_t j = 0; j < k; ++j) {
          const std::int32_t id = chosen[static_cast<std::size_t>(j)];
          EXPECT_EQ(ids.get_int(r * k + j), id) << "token " << r << " slot " << j;
          const double s = sigmoid(logit[static_cast<std::size_t>(id)]);
          EXPECT_NEAR(weights.get(r * k + j), (renormalize ? s / sum : s) * 2.5, 1e-6)
              << "token " << r << " slot " << j;
        }
      }
      if (dtype != DType::kF16 || renormalize) continue;
      RouterArgs a = args;
      a.num_groups = 2;
      Status st = backend->can_implement(a);
      EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
      EXPECT_NE(st.message().find("router: num_groups and topk_groups are 2 and 1; expected 1"),
                std::string::npos)
          << st.message();
      a = args;
      a.correction_bias = arena.upload(random_tensor(dtype, {e}, rng));
      st = backend->can_implement(a);
      EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
      EXPECT_NE(st.message().find("router: correction_bias is present"), std::string::npos) << st.message();
    }
}

// Phi-3.5-MoE's sparsemixer in double (HF sparsemixer, inference): the two experts and their weights.
void sparsemixer_ref(const std::vector<double>& l, double eps, std::int32_t ids[2], double weights[2]) {
  const auto e = static_cast<std::int64_t>(l.size());
  std::int64_t first = 0;
  for (std::int64_t j = 1; j < e; ++j)
    if (l[static_cast<std::size_t>(j)] > l[static_cast<std::size_t>(first)]) first = j;
  std::int64_t second = first == 0 ? 1 : 0;
  for (std::int64_t j = 0; j < e; ++j)
    if (j != first && l[static_cast<std::size_t>(j)] > l[static_cast<std::size_t>(second)]) second = j;
  for (int slot = 0; slot < 2; ++slot) {
    const std::int64_t top = slot == 0 ? first : second;
    const double m = l[static_cast<std::size_t>(top)];
    double sum = 0.0;
    for (std::int64_t j = 0; j < e; ++j) {
      const double lj = l[static_cast<std::size_t>(j)];
      if ((slot == 1 && j == first) || (m - lj) / std::max(std::abs(lj), m) > 2.0 * eps) continue;
      sum += std::exp(lj - m);
    }
    ids[slot] = static_cast<std::int32_t>(top);
    weights[slot] = 1.0 / sum;
  }
}

// The sparsemixer router: stated logits (an identity gate, so logits = hidden exactly) with experts inside
// and outside the 2 eps mask, negative and zero maxima and ties; then random shapes against the reference run
// on the backend's own logits (the mask is discontinuous, so the reference takes the logits as they are).
TEST(DUPLEX_CONFORMANCE_SUITE, RouterSparseMixer) {
  DUPLEX_GET_BACKEND(backend);
  const double eps = 0.01;
  auto run = [&](const HostTensor& hidden, const HostTensor& gate, std::int64_t t, std::int64_t e) {
    DeviceArena arena(*backend);
    RouterArgs args{arena.upload(hidden),
                    arena.upload(gate),
                    arena.empty(DType::kI32, {t, 2}),
                    arena.empty(DType::kF32, {t, 2}),
                    arena.empty(DType::kF32, {t, e}),
                    2,
                    true};
    args.kind = RouterKind::kSparseMixer;
    args.jitter_eps = static_cast<float>(eps);
    expect_run_ok(*backend, args, arena.stream());
    const HostTensor logits = arena.download(args.logits), ids = arena.download(args.topk_ids),
                     weights = arena.download(args.topk_weights);
    for (std::int64_t i = 0; i < t; ++i) {
      std::vector<double> l(static_cast<std::size_t>(e));
      for (std::int64_t j = 0; j < e; ++j) l[static_cast<std::size_t>(j)] = logits.get(i * e + j);
      std::int32_t want_ids[2];
      double want_w[2];
      sparsemixer_ref(l, eps, want_ids, want_w);
      for (int s = 0; s < 2; ++s) {
        EXPECT_EQ(ids.get_int(i * 2 + s), want_ids[s]) << "token " << i << " slot " << s;
        EXPECT_NEAR(weights.get(i * 2 + s), want_w[s], 8 * kU32 * want_w[s])
            << "token " << i << " slot " << s;
      }
    }
    return weights;
  };
  // Logit e = hidden[e] + hidden[8 + e] (a gate of two identity blocks: exact in FP32), so a row can state a
  // logit no FP16 value is, e.g. -1.0202 below.
  const std::int64_t e = 8;
  const std::vector<std::vector<double>> rows = {
      {3.0, 2.95, 1.0, -1.0, 0.5, 0.0, -2.0, 2.0},        // expert 1 within 2 eps of expert 0: both weigh
      {-1.0, -1.01, -5.0, -3.0, -2.0, -4.0, -6.0, -7.0},  // negative maximum: the factor is |l_j|
      {2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0},           // a tie: experts 0 then 1
      {0.0, 0.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0},     // zero maximum: 0 / 0 is not > 2 eps, so unmasked
      {1.0, 5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0},           // second expert among seven equal logits
      // l1 = -1.0202: its gap to -1 is 0.0202, within 2 eps of |l1| (0.0198) but not of |m| = 1 (0.0202):
      // the factor max(|l_j|, m) keeps it
      {-1.0, -1.0, -5.0, -5.0, -5.0, -5.0, -5.0, -5.0}};
  const std::vector<std::vector<double>> addends = {{}, {}, {}, {}, {}, {0.0, -0.0202}};
  for (DType dtype : kFloatTypes) {
    SCOPED_TRACE(dtype_name(dtype));
    const auto t = static_cast<std::int64_t>(rows.size());
    HostTensor hidden(dtype, {t, 2 * e}), gate(dtype, {e, 2 * e});
    for (std::int64_t r = 0; r < t; ++r)
      for (std::int64_t j = 0; j < e; ++j) {
        const auto& add = addends[static_cast<std::size_t>(r)];
        hidden.set(r * 2 * e + j, rows[static_cast<std::size_t>(r)][static_cast<std::size_t>(j)]);
        hidden.set(r * 2 * e + e + j,
                   static_cast<std::size_t>(j) < add.size() ? add[static_cast<std::size_t>(j)] : 0.0);
      }
    for (std::int64_t r = 0; r < e; ++r)
      for (std::int64_t c = 0; c < 2 * e; ++c) gate.set(r * 2 * e + c, c == r || c == e + r ? 1.0 : 0.0);
    const HostTensor w = run(hidden, gate, t, e);
    const double l1 = hidden.get(1);  // 2.95 in the dtype
    EXPECT_NEAR(w.get(0), 1.0 / (1.0 + std::exp(l1 - 3.0)), 1e-6);
    EXPECT_EQ(w.get(1), 1.0);                // 2.95's neighbours are all more than 2% below
    EXPECT_NEAR(w.get(6), 0.5, 1e-6);        // zero maximum, two zeros
    EXPECT_NEAR(w.get(9), 1.0 / 7.0, 1e-6);  // the second expert shares its logit with six others
    const double gap = -hidden.get(5 * 2 * e + e + 1);           // 0.0202 in the dtype
    EXPECT_NEAR(w.get(10), 1.0 / (1.0 + std::exp(-gap)), 1e-6);  // -1.0202 weighs with -1
  }
  std::mt19937_64 rng(28);
  for (DType dtype : kFloatTypes)
    for (auto [t, h, experts] :
         {std::tuple<std::int64_t, std::int64_t, std::int64_t>{37, 64, 16}, {5, 96, 2}}) {
      SCOPED_TRACE(label(dtype, "t", t, " e", experts));
      run(random_tensor(dtype, {t, h}, rng), random_tensor(dtype, {experts, h}, rng, -0.2, 0.2), t, experts);
    }
}

// DeepSeek's group-limited routers in double, as the HF code states them (ops.hpp RouterArgs): sort the
// groups by score, mask the dropped ones' experts to 0, sort the experts. l: one token's logits; bias:
// kNoAuxTc's correction bias (unused by kGroupLimited).
struct GroupRouting {
  std::vector<std::int32_t> ids;  // the top k, in order
  std::vector<double> base;       // [E]: p (softmax) or s (sigmoid), what the weights are made of
  std::vector<bool> kept;         // [E]: the expert's group is kept
  // The smallest gap a decision rests on (the last kept group against the first dropped one; each chosen
  // expert against the next); two masked zeros tie exactly in any precision and do not count.
  double margin = INFINITY;
};

GroupRouting group_router_ref(RouterKind kind, const std::vector<double>& l, const std::vector<double>& bias,
                              std::int64_t groups, std::int64_t topk_groups, std::int64_t k) {
  const auto e = static_cast<std::int64_t>(l.size());
  const std::int64_t size = e / groups;
  const bool sigmoid = kind == RouterKind::kNoAuxTc;
  GroupRouting r;
  r.base.resize(l.size());
  std::vector<double> c(l.size());
  const double max = *std::max_element(l.begin(), l.end());
  double sum = 0.0;
  for (double v : l) sum += std::exp(v - max);
  for (std::size_t j = 0; j < l.size(); ++j) {
    r.base[j] = sigmoid ? 1.0 / (1.0 + std::exp(-l[j])) : std::exp(l[j] - max) / sum;
    c[j] = sigmoid ? r.base[j] + bias[j] : r.base[j];
  }
  // Descending value, then the lower index first.
  using Ranked = std::pair<double, std::int64_t>;
  auto before = [](const Ranked& a, const Ranked& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  std::vector<Ranked> group_scores;
  for (std::int64_t g = 0; g < groups; ++g) {
    std::vector<double> members(c.begin() + g * size, c.begin() + (g + 1) * size);
    std::sort(members.begin(), members.end(), std::greater<>());
    group_scores.emplace_back(sigmoid ? members[0] + members[1] : members[0], g);
  }
  std::sort(group_scores.begin(), group_scores.end(), before);
  if (topk_groups < groups)
    r.margin = group_scores[static_cast<std::size_t>(topk_groups - 1)].first -
               group_scores[static_cast<std::size_t>(topk_groups)].first;
  r.kept.assign(l.size(), false);
  for (std::int64_t j = 0; j < topk_groups; ++j) {
    const std::int64_t g = group_scores[static_cast<std::size_t>(j)].second;
    std::fill(r.kept.begin() + g * size, r.kept.begin() + (g + 1) * size, true);
  }
  std::vector<Ranked> choice;
  for (std::int64_t j = 0; j < e; ++j)
    choice.emplace_back(r.kept[static_cast<std::size_t>(j)] ? c[static_cast<std::size_t>(j)] : 0.0, j);
  std::sort(choice.begin(), choice.end(), before);
  for (std::int64_t j = 0; j < k; ++j) {
    const Ranked& a = choice[static_cast<std::size_t>(j)];
    r.ids.push_back(static_cast<std::int32_t>(a.second));
    if (j + 1 == e) break;
    const Ranked& b = choice[static_cast<std::size_t>(j + 1)];
    if (r.kept[static_cast<std::size_t>(a.second)] || r.kept[static_cast<std::size_t>(b.second)])
      r.margin = std::min(r.margin, a.first - b.first);
  }
  return r;
}

// One group router case.
struct GroupCase {
  RouterKind kind = RouterKind::kGroupLimited;
  std::int64_t t = 0, h = 0, e = 0, groups = 1, topk_groups = 1, k = 1;
  bool renormalize = true;
  double scaling = 1.0;
};
struct GroupTally {
  std::int64_t tokens = 0, decisive = 0, dropped_picks = 0;
};

// Runs a group router case on the backend and checks it against group_router_ref on the backend's own logits
// (the choices are discontinuous; the logits are checked against the FP64 GEMM): a token whose choices all
// rest on gaps above FP32 rounding must get the reference's ids in order; every token must get distinct ids
// and, for them, weight = base / (sum of the chosen base (+ 1e-20 for noaux_tc) when renormalized) x scaling.
// Counts the decisive tokens and those that pick an expert of a dropped group (HF's masked_fill to 0).
void check_group_router(Backend& backend, const GroupCase& g, const HostTensor& hidden,
                        const HostTensor& gate, const HostTensor* bias, GroupTally& tally) {
  DeviceArena arena(backend);
  RouterArgs args{arena.upload(hidden),
                  arena.upload(gate),
                  arena.empty(DType::kI32, {g.t, g.k}),
                  arena.empty(DType::kF32, {g.t, g.k}),
                  arena.empty(DType::kF32, {g.t, g.e}),
                  g.k,
                  g.renormalize};
  args.kind = g.kind;
  args.num_groups = g.groups;
  args.topk_groups = g.topk_groups;
  args.routed_scaling = static_cast<float>(g.scaling);
  if (bias != nullptr) args.correction_bias = arena.upload(*bias);
  expect_run_ok(backend, args, arena.stream());
  const HostTensor logits = arena.download(args.logits), ids = arena.download(args.topk_ids),
                   weights = arena.download(args.topk_weights);
  EXPECT_TRUE(within_bound(logits, gemm_ref(hidden, gate, nullptr, true, DType::kF32)));
  std::vector<double> b(static_cast<std::size_t>(g.e), 0.0);
  if (bias != nullptr)
    for (std::int64_t j = 0; j < g.e; ++j) b[static_cast<std::size_t>(j)] = bias->get(j);
  constexpr double kDecisiveGap = 1e-5;  // far above the FP32 error of p, s + bias and the group scores
  for (std::int64_t i = 0; i < g.t; ++i) {
    std::vector<double> l(static_cast<std::size_t>(g.e));
    for (std::int64_t j = 0; j < g.e; ++j) l[static_cast<std::size_t>(j)] = logits.get(i * g.e + j);
    const GroupRouting want = group_router_ref(g.kind, l, b, g.groups, g.topk_groups, g.k);
    const bool decisive = want.margin > kDecisiveGap;
    ++tally.tokens;
    tally.decisive += decisive ? 1 : 0;
    std::set<std::int32_t> chosen;
    double chosen_sum = 0.0;
    for (std::int64_t j = 0; j < g.k; ++j) {
      const std::int32_t id = ids.get_int(i * g.k + j);
      ASSERT_GE(id, 0) << "token " << i << " slot " << j;
      ASSERT_LT(id, g.e) << "token " << i << " slot " << j;
      EXPECT_TRUE(chosen.insert(id).second) << "expert " << id << " chosen twice for token " << i;
      if (decisive) {
        EXPECT_EQ(id, want.ids[static_cast<std::size_t>(j)]) << "token " << i << " slot " << j;
        if (!want.kept[static_cast<std::size_t>(id)]) ++tally.dropped_picks;
      }
      chosen_sum += want.base[static_cast<std::size_t>(id)];
    }
    if (g.kind == RouterKind::kNoAuxTc) chosen_sum += 1e-20;
    for (std::int64_t j = 0; j < g.k; ++j) {
      const double base = want.base[static_cast<std::size_t>(ids.get_int(i * g.k + j))];
      const double expected = (g.renormalize ? base / chosen_sum : base) * g.scaling;
      EXPECT_NEAR(weights.get(i * g.k + j), expected,
                  2.0 * static_cast<double>(g.e + g.k + 16) * kU32 * expected)
          << "token " << i << " slot " << j;
    }
  }
}

// DeepSeek-V2's group_limited_greedy: 16 experts in 4 groups of 4, the best 2 groups kept, 6 experts chosen;
// V2's unnormalised weights x 16 and V2-Lite's renormalised ones.
TEST(DUPLEX_CONFORMANCE_SUITE, RouterGroupLimited) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(38);
  GroupTally tally;
  for (DType dtype : kFloatTypes)
    for (std::int64_t t : {37, 5})
      for (auto [renormalize, scaling] : {std::pair{false, 16.0}, {true, 1.0}, {true, 2.5}}) {
        SCOPED_TRACE(label(dtype, "t", t, (renormalize ? " renormalize" : ""), " scaling ", scaling));
        const GroupCase g{RouterKind::kGroupLimited, t, 64, 16, 4, 2, 6, renormalize, scaling};
        check_group_router(*backend, g, random_tensor(dtype, {t, g.h}, rng),
                           random_tensor(dtype, {g.e, g.h}, rng, -0.2, 0.2), nullptr, tally);
      }
  EXPECT_GE(tally.decisive, tally.tokens * 9 / 10) << "the ids were compared for too few tokens";
}

// DeepSeek-V3's noaux_tc: 32 experts in 8 groups of 4, the best 4 groups kept, 8 experts chosen. The
// correction bias gives 0 to 2 experts per group a positive bias and the others one of -1.2 to -0.5, so that
// a kept group's expert may have c = s + bias < 0 and rank below the masked zeros of the dropped groups (the
// test requires some token to pick a dropped group's expert); then DeepSeek-V3's 256 experts in 8 groups.
TEST(DUPLEX_CONFORMANCE_SUITE, RouterNoAuxTc) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(39);
  const std::int64_t positives[] = {2, 1, 2, 1, 0, 2, 1, 1};  // per group of 4
  for (DType dtype : kFloatTypes) {
    GroupTally tally;
    for (std::int64_t t : {37, 5})
      for (bool renormalize : {true, false}) {
        SCOPED_TRACE(label(dtype, "t", t, (renormalize ? " renormalize" : "")));
        const GroupCase g{RouterKind::kNoAuxTc, t, 64, 32, 8, 4, 8, renormalize, 2.5};
        HostTensor bias(dtype, {g.e});
        std::uniform_real_distribution<double> positive(0.0, 0.3), negative(-1.2, -0.5);
        for (std::int64_t group = 0; group < g.groups; ++group) {
          std::vector<std::int64_t> members = {0, 1, 2, 3};
          std::shuffle(members.begin(), members.end(), rng);
          for (std::int64_t j = 0; j < 4; ++j)
            bias.set(group * 4 + members[static_cast<std::size_t>(j)],
                     j < positives[group] ? positive(rng) : negative(rng));
        }
        check_group_router(*backend, g, random_tensor(dtype, {t, g.h}, rng),
                           random_tensor(dtype, {g.e, g.h}, rng, -0.2, 0.2), &bias, tally);
      }
    EXPECT_GE(tally.decisive, tally.tokens * 9 / 10)
        << dtype_name(dtype) << ": the ids were compared for too few tokens";
    EXPECT_GT(tally.dropped_picks, 0) << dtype_name(dtype) << ": no token picked a dropped group's expert";
    SCOPED_TRACE(label(dtype, "256 experts"));
    const GroupCase v3{RouterKind::kNoAuxTc, 3, 128, 256, 8, 4, 8, true, 2.5};
    const HostTensor bias = random_tensor(dtype, {v3.e}, rng, -0.5, 0.5);
    GroupTally v3_tally;
    check_group_router(*backend, v3, random_tensor(dtype, {v3.t, v3.h}, rng),
                       random_tensor(dtype, {v3.e, v3.h}, rng, -0.2, 0.2), &bias, v3_tally);
  }
}

// Exact ties in both group routers: stated logits (an identity gate, so logits = hidden exactly) and biases
// whose sums are exact in FP32. Three groups tie for the two kept places (the lower two win), experts tie in
// value (the lower index wins), and for noaux_tc kept experts with c < 0 rank below the masked zeros.
TEST(DUPLEX_CONFORMANCE_SUITE, RouterGroupTies) {
  DUPLEX_GET_BACKEND(backend);
  const std::int64_t e = 16, k = 6;
  struct Stated {
    RouterKind kind;
    std::vector<double> logits, bias;
    std::vector<std::int32_t> ids;
  };
  const Stated cases[] = {
      // Group maxima p(1) in groups 0, 2 and 3: groups 0 and 2 are kept; then p(1) twice and p(0) six times.
      {RouterKind::kGroupLimited, {0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0.5, 1, 0, 0}, {}, {1, 8, 0, 2, 3, 9}},
      // s = 0.5 everywhere, c = 0.5 + bias; the group scores are 1.5, -1, 1 and 1: groups 0 and 2 are kept;
      // c = 0.75 (experts 0, 2, 8), 0.25 (11), then the dropped groups' zeros (4, 5, ...) before c = -0.5.
      {RouterKind::kNoAuxTc,
       std::vector<double>(16, 0.0),
       {0.25, -1, 0.25, -1, -1, -1, -1, -1, 0.25, -1, -1, -0.25, -0.25, 0.25, -1, -1},
       {0, 2, 8, 11, 4, 5}}};
  for (DType dtype : kFloatTypes)
    for (const Stated& c : cases) {
      SCOPED_TRACE(label(dtype, c.kind == RouterKind::kNoAuxTc ? "noaux_tc" : "group_limited"));
      DeviceArena arena(*backend);
      HostTensor hidden(dtype, {1, e}), gate(dtype, {e, e}), bias(dtype, {e});
      for (std::int64_t j = 0; j < e; ++j) {
        hidden.set(j, c.logits[static_cast<std::size_t>(j)]);
        gate.set(j * e + j, 1.0);
        if (!c.bias.empty()) bias.set(j, c.bias[static_cast<std::size_t>(j)]);
      }
      RouterArgs args{arena.upload(hidden),
                      arena.upload(gate),
                      arena.empty(DType::kI32, {1, k}),
                      arena.empty(DType::kF32, {1, k}),
                      Tensor{},
                      k,
                      true};
      args.kind = c.kind;
      args.num_groups = 4;
      args.topk_groups = 2;
      args.routed_scaling = 2.5f;
      if (!c.bias.empty()) args.correction_bias = arena.upload(bias);
      expect_run_ok(*backend, args, arena.stream());
      const HostTensor ids = arena.download(args.topk_ids), weights = arena.download(args.topk_weights);
      double sum = 0.0;
      for (std::int64_t j = 0; j < k; ++j) {
        EXPECT_EQ(ids.get_int(j), c.ids[static_cast<std::size_t>(j)]) << "slot " << j;
        sum += weights.get(j);
        if (c.kind == RouterKind::kNoAuxTc) {
          EXPECT_NEAR(weights.get(j), 2.5 / 6.0, 1e-6) << "slot " << j;
        }
      }
      EXPECT_NEAR(sum, 2.5, 1e-5);
    }
}

// can_implement's rules for the group routers' fields (ops.hpp RouterArgs), each failure naming its field.
TEST(DUPLEX_CONFORMANCE_SUITE, RouterGroupArgumentsAreChecked) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(40);
  DeviceArena arena(*backend);
  const std::int64_t t = 3, h = 16, e = 16;
  const Tensor hidden = arena.upload(random_tensor(DType::kBF16, {t, h}, rng)),
               gate = arena.upload(random_tensor(DType::kBF16, {e, h}, rng)),
               bias = arena.upload(random_tensor(DType::kBF16, {e}, rng)),
               short_bias = arena.upload(random_tensor(DType::kBF16, {e - 1}, rng)),
               f32_bias = arena.upload(random_tensor(DType::kF32, {e}, rng));
  auto router = [&](RouterKind kind, std::int64_t k) {
    RouterArgs a{hidden, gate, arena.empty(DType::kI32, {t, k}), arena.empty(DType::kF32, {t, k}), Tensor{},
                 k,      true};
    a.kind = kind;
    if (kind == RouterKind::kGroupLimited || kind == RouterKind::kNoAuxTc) {
      a.num_groups = 4;
      a.topk_groups = 2;
    }
    if (kind == RouterKind::kNoAuxTc) a.correction_bias = bias;
    return a;
  };
  auto expect_refused = [&](const RouterArgs& a, StatusCode code, const std::string& message) {
    const Status s = backend->can_implement(a);
    EXPECT_EQ(s.code(), code) << s.to_string();
    EXPECT_NE(s.message().find(message), std::string::npos) << s.message();
  };
  for (RouterKind kind : {RouterKind::kGroupLimited, RouterKind::kNoAuxTc}) {
    const RouterArgs valid = router(kind, 8);  // top_k = topk_groups x 4: the most allowed
    EXPECT_TRUE(backend->can_implement(valid).ok()) << backend->can_implement(valid).to_string();
    RouterArgs a = valid;
    a.num_groups = 3;
    expect_refused(a, StatusCode::kInvalidArgument,
                   "num_groups is 3; expected >= 1 and dividing experts = 16");
    a.num_groups = 0;
    expect_refused(a, StatusCode::kInvalidArgument, "num_groups is 0");
    a = valid;
    a.topk_groups = 0;
    expect_refused(a, StatusCode::kInvalidArgument, "topk_groups is 0; expected in [1, num_groups = 4]");
    a.topk_groups = 5;
    expect_refused(a, StatusCode::kInvalidArgument, "topk_groups is 5");
    a = router(kind, 9);
    expect_refused(a, StatusCode::kInvalidArgument,
                   "top_k is 9; expected <= topk_groups x experts per group = 2 x 4");
    a = valid;
    a.routed_scaling = 0.0f;
    expect_refused(a, StatusCode::kInvalidArgument, "routed_scaling is 0; expected a finite number > 0");
    a.routed_scaling = INFINITY;
    expect_refused(a, StatusCode::kInvalidArgument, "routed_scaling is inf");
  }
  RouterArgs a = router(RouterKind::kNoAuxTc, 2);
  a.correction_bias = Tensor{};
  expect_refused(a, StatusCode::kInvalidArgument, "correction_bias is absent");
  a.correction_bias = short_bias;
  expect_refused(a, StatusCode::kInvalidArgument, "correction_bias is bf16[15]");
  a.correction_bias = f32_bias;
  expect_refused(a, StatusCode::kUnsupportedDType, "correction_bias is f32[16]");
  a.correction_bias = bias;
  a.correction_bias.location =
      backend->memory_location() == Location::kHost ? Location::kDevice : Location::kHost;
  expect_refused(a, StatusCode::kWrongLocation, "correction_bias is bf16[16]");
  a = router(RouterKind::kNoAuxTc, 1);
  a.num_groups = 16;
  a.topk_groups = 1;
  expect_refused(a, StatusCode::kInvalidArgument, "num_groups is 16 with the noaux_tc router");
  for (RouterKind kind : {RouterKind::kSoftmaxTopK, RouterKind::kGroupLimited, RouterKind::kSparseMixer}) {
    a = router(kind, 2);
    a.correction_bias = bias;
    expect_refused(a, StatusCode::kInvalidArgument, "correction_bias is present");
  }
  a = router(RouterKind::kSoftmaxTopK, 2);
  a.num_groups = 4;
  expect_refused(a, StatusCode::kInvalidArgument, "num_groups and topk_groups are 4 and 1; expected 1");
  a = router(RouterKind::kSoftmaxTopK, 2);
  a.routed_scaling = 2.5f;
  EXPECT_TRUE(backend->can_implement(a).ok()) << backend->can_implement(a).to_string();
  a = router(RouterKind::kSparseMixer, 2);
  a.routed_scaling = 2.5f;
  expect_refused(a, StatusCode::kInvalidArgument, "routed_scaling is 2.5 with the sparsemixer router");
}

// Qwen2-MoE's shared-expert gate: shared_gate = sigmoid(hidden . w) beside the routing, which it leaves
// exactly as without it (same backend, same ids and weights).
TEST(DUPLEX_CONFORMANCE_SUITE, RouterSharedExpertGate) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(18);
  for (DType dtype : kFloatTypes)
    for (std::int64_t t : {1, 37}) {
      SCOPED_TRACE(label(dtype, "t", t));
      const std::int64_t h = 96, e = 8, k = 2;
      DeviceArena arena(*backend);
      HostTensor hidden = random_tensor(dtype, {t, h}, rng),
                 gate = random_tensor(dtype, {e, h}, rng, -0.2, 0.2),
                 shared = random_tensor(dtype, {1, h}, rng, -0.5, 0.5);
      RouterArgs plain{arena.upload(hidden),
                       arena.upload(gate),
                       arena.empty(DType::kI32, {t, k}),
                       arena.empty(DType::kF32, {t, k}),
                       Tensor{},
                       k,
                       false};
      RouterArgs gated = plain;
      gated.topk_ids = arena.empty(DType::kI32, {t, k});
      gated.topk_weights = arena.empty(DType::kF32, {t, k});
      gated.shared_gate_weight = arena.upload(shared);
      gated.shared_gate = arena.empty(DType::kF32, {t});
      expect_run_ok(*backend, plain, arena.stream());
      expect_run_ok(*backend, gated, arena.stream());
      const HostTensor ids = arena.download(plain.topk_ids), gated_ids = arena.download(gated.topk_ids);
      const HostTensor w = arena.download(plain.topk_weights), gated_w = arena.download(gated.topk_weights);
      for (std::int64_t i = 0; i < t * k; ++i) {
        EXPECT_EQ(ids.get_int(i), gated_ids.get_int(i)) << "slot " << i;
        EXPECT_EQ(w.get(i), gated_w.get(i)) << "slot " << i;
      }
      const Expected logit = gemm_ref(hidden, shared, nullptr, true, DType::kF32);
      const HostTensor g = arena.download(gated.shared_gate);
      for (std::int64_t i = 0; i < t; ++i) {
        const double x = logit.value[static_cast<std::size_t>(i)];
        // sigmoid' <= 1/4: the logit's bound shrinks by 4; plus the sigmoid's own FP32 rounding.
        EXPECT_NEAR(g.get(i), 1.0 / (1.0 + std::exp(-x)),
                    logit.bound[static_cast<std::size_t>(i)] / 4 + 8 * kU32)
            << "token " << i;
      }
    }
}

// Routing where some experts get no token (and one test where none gets any).
std::vector<std::int32_t> skewed_ids(std::int64_t t, std::int64_t k, std::int64_t experts,
                                     std::mt19937_64& rng) {
  std::vector<std::int32_t> ids;
  std::uniform_int_distribution<std::int32_t> pick(0, static_cast<std::int32_t>(experts / 2));
  for (std::int64_t i = 0; i < t; ++i) {
    std::set<std::int32_t> used;
    while (static_cast<std::int64_t>(used.size()) < k)
      used.insert(2 * pick(rng) % static_cast<std::int32_t>(experts));
    std::vector<std::int32_t> row(used.begin(), used.end());
    std::shuffle(row.begin(), row.end(), rng);
    ids.insert(ids.end(), row.begin(), row.end());
  }
  return ids;
}

TEST(DUPLEX_CONFORMANCE_SUITE, PermuteAndUnpermute) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(9);
  for (DType dtype : kFloatTypes)
    for (auto [t, k] : {std::pair<std::int64_t, std::int64_t>{1, 2}, {37, 2}, {16, 1}, {0, 2}}) {
      const std::int64_t experts = 8, h = 40;
      SCOPED_TRACE(label(dtype, "t", t, " k", k));
      DeviceArena arena(*backend);
      HostTensor x = random_tensor(dtype, {t, h}, rng);
      HostTensor ids = int_tensor({t, k}, skewed_ids(t, k, experts, rng));
      PermuteArgs pargs{arena.upload(x),
                        arena.upload(ids),
                        arena.empty(dtype, {t * k, h}),
                        arena.empty(DType::kI32, {t, k}),
                        arena.empty(DType::kI32, {experts + 1}),
                        experts};
      expect_run_ok(*backend, pargs, arena.stream());
      const HostTensor x_perm = arena.download(pargs.x_perm), rows = arena.download(pargs.permuted_row);
      const HostTensor offsets = arena.download(pargs.expert_offsets);
      // Expected order: stable by expert.
      std::vector<std::int64_t> pairs(static_cast<std::size_t>(t * k));
      std::iota(pairs.begin(), pairs.end(), 0);
      std::stable_sort(pairs.begin(), pairs.end(),
                       [&](auto a, auto b) { return ids.get_int(a) < ids.get_int(b); });
      for (std::int64_t r = 0; r < t * k; ++r) {
        const std::int64_t pair = pairs[static_cast<std::size_t>(r)];
        ASSERT_EQ(rows.get_int(pair), r) << "pair " << pair;
        for (std::int64_t c = 0; c < h; ++c) ASSERT_EQ(x_perm.get(r * h + c), x.get((pair / k) * h + c));
      }
      for (std::int64_t e = 0; e <= experts; ++e) {
        std::int64_t before = 0;
        for (std::int64_t i = 0; i < t * k; ++i) before += ids.get_int(i) < e;
        EXPECT_EQ(offsets.get_int(e), before) << "expert_offsets[" << e << "]";
      }
      HostTensor y_perm = random_tensor(dtype, {t * k, h}, rng),
                 weights = random_tensor(DType::kF32, {t, k}, rng, 0.0, 1.0);
      UnpermuteArgs uargs{arena.upload(y_perm), pargs.permuted_row, arena.upload(weights),
                          arena.empty(dtype, {t, h})};
      expect_run_ok(*backend, uargs, arena.stream());
      EXPECT_TRUE(within_bound(arena.download(uargs.out), unpermute_ref(y_perm, rows, weights, dtype)));
    }
}

// Llama 4 scales each expert's input by its routing weight (ops.hpp PermuteArgs::topk_weights): x_perm's rows
// are x[t] * topk_weights[t,j], each element's FP32 product rounded once, in the order (permuted_row,
// expert_offsets) of the permute without weights. Weights of 0, 1 and up to 1.5; then the refusals.
TEST(DUPLEX_CONFORMANCE_SUITE, PermuteWithTopkWeights) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(48);
  for (DType dtype : kFloatTypes)
    for (auto [t, k] : {std::pair<std::int64_t, std::int64_t>{1, 2}, {37, 2}, {16, 1}, {0, 2}, {9, 4}}) {
      const std::int64_t experts = 8, h = 40;
      SCOPED_TRACE(label(dtype, "t", t, " k", k));
      DeviceArena arena(*backend);
      HostTensor x = random_tensor(dtype, {t, h}, rng, -4.0, 4.0);
      HostTensor ids = int_tensor({t, k}, skewed_ids(t, k, experts, rng));
      HostTensor weights = random_tensor(DType::kF32, {t, k}, rng, 0.0, 1.5);
      if (t * k > 2) {
        weights.set(0, 0.0);
        weights.set(1, 1.0);
      }
      const Tensor xd = arena.upload(x), ids_d = arena.upload(ids);
      PermuteArgs plain{xd,
                        ids_d,
                        arena.empty(dtype, {t * k, h}),
                        arena.empty(DType::kI32, {t, k}),
                        arena.empty(DType::kI32, {experts + 1}),
                        experts};
      PermuteArgs scaled{xd,
                         ids_d,
                         arena.empty(dtype, {t * k, h}),
                         arena.empty(DType::kI32, {t, k}),
                         arena.empty(DType::kI32, {experts + 1}),
                         experts,
                         arena.upload(weights)};
      expect_run_ok(*backend, plain, arena.stream());
      expect_run_ok(*backend, scaled, arena.stream());
      const HostTensor rows = arena.download(scaled.permuted_row),
                       plain_rows = arena.download(plain.permuted_row);
      const HostTensor offsets = arena.download(scaled.expert_offsets),
                       plain_offsets = arena.download(plain.expert_offsets);
      for (std::int64_t i = 0; i < t * k; ++i)
        ASSERT_EQ(rows.get_int(i), plain_rows.get_int(i)) << "pair " << i;
      for (std::int64_t e = 0; e <= experts; ++e)
        EXPECT_EQ(offsets.get_int(e), plain_offsets.get_int(e)) << "expert_offsets[" << e << "]";
      EXPECT_TRUE(within_bound(arena.download(scaled.x_perm), permute_scaled_ref(x, rows, weights)));
      if (dtype != DType::kF16 || t != 37) continue;
      auto refused = [&](const Tensor& w, StatusCode code, const char* text) {
        PermuteArgs a = scaled;
        a.topk_weights = w;
        const Status st = backend->can_implement(a);
        EXPECT_EQ(st.code(), code) << st.to_string();
        EXPECT_NE(st.message().find(text), std::string::npos) << st.message();
      };
      refused(arena.upload(random_tensor(DType::kF16, {t, k}, rng)), StatusCode::kUnsupportedDType,
              "permute: topk_weights is f16[37,2]");
      refused(arena.upload(random_tensor(DType::kF32, {t, k + 1}, rng)), StatusCode::kInvalidArgument,
              "permute: topk_weights is f32[37,3]");
      refused(arena.upload(random_tensor(DType::kF32, {t * k}, rng)), StatusCode::kInvalidArgument,
              "permute: topk_weights is f32[74]");
    }
}

TEST(DUPLEX_CONFORMANCE_SUITE, ExpertFfn) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(10);
  struct Config {
    FfnKind kind;
    Activation act;
    bool bias;  // b_in
  };
  const std::vector<std::vector<std::int64_t>> groups = {
      {0, 0, 5, 5, 6, 18, 18, 21, 21},  // 8 experts, four of them empty
      {0, 3},                           // one expert
      {0, 0, 0, 0},                     // three experts, no tokens at all
      {0, 40, 41, 100}};
  for (DType dtype : kFloatTypes)
    for (Config cfg :
         {Config{FfnKind::kGated, Activation::kSilu, false}, Config{FfnKind::kGated, Activation::kSilu, true},
          Config{FfnKind::kTwoMatrix, Activation::kGeluTanh, false},
          Config{FfnKind::kTwoMatrix, Activation::kGeluTanh, true},
          Config{FfnKind::kTwoMatrix, Activation::kRelu, true},
          Config{FfnKind::kTwoMatrix, Activation::kGelu, true},
          Config{FfnKind::kGated, Activation::kGeluTanh, false},
          Config{FfnKind::kGated, Activation::kGelu, true}})
      for (const auto& offsets : groups) {
        const std::int64_t e = static_cast<std::int64_t>(offsets.size()) - 1, p = offsets.back(), h = 64,
                           f = 96;
        SCOPED_TRACE(label(dtype, "experts", e, " P", p, (cfg.kind == FfnKind::kGated ? " gated" : " two-matrix"),
                           cfg.bias ? " b_in" : ""));
        DeviceArena arena(*backend);
        const double ws = 1.0 / std::sqrt(static_cast<double>(h));
        HostTensor x = random_tensor(dtype, {p, h}, rng),
                   w_in = random_tensor(dtype, {e, f, h}, rng, -ws, ws);
        HostTensor w_up = random_tensor(dtype, {e, f, h}, rng, -ws, ws);
        HostTensor w_down = random_tensor(dtype, {e, h, f}, rng, -1.0 / std::sqrt(f), 1.0 / std::sqrt(f));
        HostTensor b_in = random_tensor(dtype, {e, f}, rng, -0.5, 0.5);
        const bool gated = cfg.kind == FfnKind::kGated;
        ExpertFfnArgs args{cfg.kind,
                           cfg.act,
                           arena.upload(x),
                           arena.upload(w_in),
                           gated ? arena.upload(w_up) : Tensor{},
                           arena.upload(w_down),
                           arena.empty(dtype, {p, h}),
                           offsets,
                           cfg.bias ? arena.upload(b_in) : Tensor{}};
        expect_run_ok(*backend, args, arena.stream());
        EXPECT_TRUE(within_bound(arena.download(args.y),
                                 expert_ffn_ref(cfg.kind, cfg.act, x, w_in, gated ? &w_up : nullptr, w_down,
                                                offsets, cfg.bias ? &b_in : nullptr)));
      }
}

// gpt-oss's experts: the clamped SwiGLU (ops.hpp kSwigluOai) with all three biases, inputs large enough
// that the gate exceeds the limit of 7 and the up projection passes +-7 (x in [-4, 4]); the biases alone and
// together; then the refusals (kSwigluOai or b_up with a two-matrix FFN, a b_down of the wrong width).
TEST(DUPLEX_CONFORMANCE_SUITE, ExpertFfnSwigluOai) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(25);
  const std::vector<std::vector<std::int64_t>> groups = {{0, 0, 5, 5, 6, 18, 18, 21, 21}, {0, 40, 41, 100}};
  for (DType dtype : kFloatTypes)
    for (auto [with_in, with_up, with_down] :
         {std::tuple{true, true, true}, {false, false, false}, {true, false, false}, {false, true, true}})
      for (const auto& offsets : groups) {
        const std::int64_t e = static_cast<std::int64_t>(offsets.size()) - 1, p = offsets.back(), h = 64,
                           f = 96;
        SCOPED_TRACE(label(dtype, "experts", e, " P", p, with_in ? " b_in" : "", with_up ? " b_up" : "",
                           with_down ? " b_down" : ""));
        DeviceArena arena(*backend);
        const double ws = 1.0 / std::sqrt(static_cast<double>(h));
        HostTensor x = random_tensor(dtype, {p, h}, rng, -4.0, 4.0);
        HostTensor w_in = random_tensor(dtype, {e, f, h}, rng, -ws, ws),
                   w_up = random_tensor(dtype, {e, f, h}, rng, -ws, ws);
        HostTensor w_down = random_tensor(dtype, {e, h, f}, rng, -1.0 / std::sqrt(f), 1.0 / std::sqrt(f));
        HostTensor b_in = random_tensor(dtype, {e, f}, rng, -3.0, 3.0),
                   b_up = random_tensor(dtype, {e, f}, rng, -3.0, 3.0);
        HostTensor b_down = random_tensor(dtype, {e, h}, rng, -1.0, 1.0);
        ExpertFfnArgs args{FfnKind::kGated,
                           Activation::kSwigluOai,
                           arena.upload(x),
                           arena.upload(w_in),
                           arena.upload(w_up),
                           arena.upload(w_down),
                           arena.empty(dtype, {p, h}),
                           offsets,
                           with_in ? arena.upload(b_in) : Tensor{}};
        if (with_up) args.b_up = arena.upload(b_up);
        if (with_down) args.b_down = arena.upload(b_down);
        expect_run_ok(*backend, args, arena.stream());
        EXPECT_TRUE(within_bound(arena.download(args.y),
                                 expert_ffn_ref(FfnKind::kGated, Activation::kSwigluOai, x, w_in, &w_up,
                                                w_down, offsets, with_in ? &b_in : nullptr,
                                                with_up ? &b_up : nullptr, with_down ? &b_down : nullptr)));
        if (dtype != DType::kF16 || offsets.size() != 9 || !with_in) continue;
        // Refusals, once.
        auto refused = [&](ExpertFfnArgs a, const char* text) {
          const Status st = backend->can_implement(a);
          EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
          EXPECT_NE(st.message().find(text), std::string::npos) << st.message();
        };
        ExpertFfnArgs two = args;
        two.kind = FfnKind::kTwoMatrix;
        two.w_up = Tensor{};
        two.b_up = Tensor{};
        refused(two, "kSwigluOai");
        two.activation = Activation::kSilu;
        two.b_up = arena.upload(b_up);
        refused(two, "b_up");
        ExpertFfnArgs wide = args;
        wide.b_down = arena.upload(random_tensor(dtype, {e, h + 1}, rng));
        refused(wide, "b_down");
      }
}

// The gated activations with the up bias b_up (Llama's mlp_bias form) and b_down, against the reference.
TEST(DUPLEX_CONFORMANCE_SUITE, ExpertFfnUpAndDownBiases) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(26);
  const std::vector<std::int64_t> offsets = {0, 7, 7, 30};
  for (DType dtype : kFloatTypes)
    for (Activation act : {Activation::kSilu, Activation::kGeluTanh, Activation::kGelu, Activation::kRelu}) {
      SCOPED_TRACE(label(dtype, "activation ", static_cast<int>(act)));
      const std::int64_t e = 3, p = 30, h = 48, f = 80;
      DeviceArena arena(*backend);
      const double ws = 1.0 / std::sqrt(static_cast<double>(h));
      HostTensor x = random_tensor(dtype, {p, h}, rng), w_in = random_tensor(dtype, {e, f, h}, rng, -ws, ws);
      HostTensor w_up = random_tensor(dtype, {e, f, h}, rng, -ws, ws);
      HostTensor w_down = random_tensor(dtype, {e, h, f}, rng, -1.0 / std::sqrt(f), 1.0 / std::sqrt(f));
      HostTensor b_up = random_tensor(dtype, {e, f}, rng, -0.5, 0.5),
                 b_down = random_tensor(dtype, {e, h}, rng);
      ExpertFfnArgs args{FfnKind::kGated,
                         act,
                         arena.upload(x),
                         arena.upload(w_in),
                         arena.upload(w_up),
                         arena.upload(w_down),
                         arena.empty(dtype, {p, h}),
                         offsets,
                         Tensor{}};
      args.b_up = arena.upload(b_up);
      args.b_down = arena.upload(b_down);
      expect_run_ok(*backend, args, arena.stream());
      EXPECT_TRUE(within_bound(
          arena.download(args.y),
          expert_ffn_ref(FfnKind::kGated, act, x, w_in, &w_up, w_down, offsets, nullptr, &b_up, &b_down)));
    }
}

TEST(DUPLEX_CONFORMANCE_SUITE, ResidualAdd) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(11);
  for (DType dtype : kFloatTypes)
    for (const std::vector<std::int64_t>& shape :
         {std::vector<std::int64_t>{1}, {5, 33}, {4, 8, 16}, {3, 1000}}) {
      SCOPED_TRACE(label(dtype, shape.size(), "-d"));
      DeviceArena arena(*backend);
      HostTensor a = random_tensor(dtype, shape, rng), b = random_tensor(dtype, shape, rng);
      Tensor ad = arena.upload(a);
      ResidualAddArgs args{ad, arena.upload(b), ad};  // in place, as the runtime uses it
      expect_run_ok(*backend, args, arena.stream());
      EXPECT_TRUE(within_bound(arena.download(ad), residual_add_ref(a, b)));
    }
}

// DBRX's clip_qkv: y = clamp(x, -limit, limit), the limit rounded to the dtype (0.1 and 0.3 are not
// representable in f16 or bf16; 0.1 rounds down in f16 and up in bf16, 0.3 up in f16). Exact: the bound is
// 0 (clamp_ref). Values inside and outside, at the bound and one step past it, +-inf, +-0 and NaN (which
// stays NaN); in place (as the runtime uses it) and out of place; one rank-1 tensor spans several parallel
// chunks.
TEST(DUPLEX_CONFORMANCE_SUITE, Clamp) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(41);
  for (DType dtype : kFloatTypes)
    for (float limit : {8.0f, 0.1f, 0.3f})
      for (const std::vector<std::int64_t>& shape :
           {std::vector<std::int64_t>{1}, {7}, {5, 33}, {3, 5, 17}, {3, 1000}, {100003}, {2, 0, 4}})
        for (bool in_place : {true, false}) {
          const std::int64_t n =
              std::accumulate(shape.begin(), shape.end(), std::int64_t{1}, std::multiplies<>());
          SCOPED_TRACE(
              label(dtype, "limit ", limit, ' ', shape.size(), "-d n ", n, in_place ? " in place" : ""));
          DeviceArena arena(*backend);
          const double l = limit, step = 4.0 * unit_roundoff(dtype);
          HostTensor x = random_tensor(dtype, shape, rng, -3.0 * l, 3.0 * l);
          const double specials[] = {
              l * (1.0 + step),  -l * (1.0 + step), std::nan(""), l,   -l,   l * (1.0 - step),
              -l * (1.0 - step), INFINITY,          -INFINITY,    0.0, -0.0, 60000.0,
              -60000.0,          std::nan("")};
          for (std::int64_t k = 0; k < std::min(n, static_cast<std::int64_t>(std::size(specials))); ++k)
            x.set(n - 1 - k, specials[k]);
          const Tensor xd = arena.upload(x);
          ClampArgs args{xd, in_place ? xd : arena.empty(dtype, shape), limit};
          expect_run_ok(*backend, args, arena.stream());
          HostTensor got = arena.download(args.y);
          Expected want = clamp_ref(x, limit);
          // NaN stays NaN; within_bound takes finite values, so NaN positions are checked here, then zeroed.
          for (std::int64_t i = 0; i < n; ++i)
            if (std::isnan(x.get(i))) {
              EXPECT_TRUE(std::isnan(got.get(i))) << "[" << i << "] got " << got.get(i) << " for NaN";
              got.set(i, 0.0);
              want.value[static_cast<std::size_t>(i)] = 0.0;
            }
          EXPECT_TRUE(within_bound(got, want));
        }
}

// can_implement's rules for clamp (ops.hpp ClampArgs), each failure naming its field.
TEST(DUPLEX_CONFORMANCE_SUITE, ClampArgumentsAreChecked) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(42);
  DeviceArena arena(*backend);
  const Tensor x = arena.upload(random_tensor(DType::kF16, {4, 6}, rng)),
               y = arena.empty(DType::kF16, {4, 6});
  auto expect_refused = [&](const ClampArgs& a, StatusCode code, const std::string& message) {
    const Status s = backend->can_implement(a);
    EXPECT_EQ(s.code(), code) << s.to_string();
    EXPECT_NE(s.message().find(message), std::string::npos) << s.message();
    EXPECT_EQ(backend->run(a, arena.stream()).code(), code);
  };
  const ClampArgs valid{x, y, 8.0f};
  EXPECT_STREQ(op_name(valid), "clamp");
  EXPECT_TRUE(backend->can_implement(valid).ok()) << backend->can_implement(valid).to_string();
  EXPECT_TRUE(backend->can_implement(ClampArgs{x, x, 8.0f}).ok());  // in place
  ClampArgs a = valid;
  a.limit = 0.0f;
  expect_refused(a, StatusCode::kInvalidArgument, "clamp: limit is 0; expected a finite number > 0");
  a.limit = -8.0f;
  expect_refused(a, StatusCode::kInvalidArgument, "limit is -8; expected a finite number > 0");
  a.limit = INFINITY;
  expect_refused(a, StatusCode::kInvalidArgument, "limit is inf");
  a.limit = std::nanf("");
  expect_refused(a, StatusCode::kInvalidArgument, "limit is nan");
  a = valid;
  a.y = arena.empty(DType::kF16, {4, 5});
  expect_refused(a, StatusCode::kInvalidArgument, "y is f16[4,5]");
  a.y = arena.empty(DType::kF16, {24});
  expect_refused(a, StatusCode::kInvalidArgument, "y is f16[24]");
  a.y = Tensor{};
  expect_refused(a, StatusCode::kInvalidArgument, "y is absent");
  a.y = arena.empty(DType::kBF16, {4, 6});  // mixed dtypes are kUnsupportedDType for every op
  expect_refused(a, StatusCode::kUnsupportedDType, "y is bf16[4,6]");
  a = ClampArgs{arena.empty(DType::kI32, {4, 6}), arena.empty(DType::kI32, {4, 6}), 8.0f};
  expect_refused(a, StatusCode::kUnsupportedDType, "x is i32[4,6]");
  a = valid;
  a.y.location = backend->memory_location() == Location::kHost ? Location::kDevice : Location::kHost;
  expect_refused(a, StatusCode::kWrongLocation, "y is f16[4,6]");
}

// Llama 4's attention temperature tuning (ops.hpp AttnTemperatureArgs), in place on odd shapes: floor_scale 4
// with positions 0 to 200 (f(t) = 1 at positions 0 to 2 only), Llama 4's 8192 with positions up to 2 x 10^6,
// at a step (8191: f jumps there) and INT32_MAX, a floor_scale that is not a power of two (its FP32 division
// rounds) with a large attn_scale, and attn_scale 0 (f = 1: x unchanged).
TEST(DUPLEX_CONFORMANCE_SUITE, AttnTemperature) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(49);
  struct Shape {
    std::int64_t t, heads, d;
  };
  std::int64_t rows = 0, scaled_rows = 0;
  for (DType dtype : kFloatTypes)
    for (Shape s : {Shape{1, 1, 1}, Shape{7, 5, 33}, Shape{19, 8, 128}, Shape{0, 4, 8}})
      for (auto [floor_scale, attn_scale] :
           {std::pair{4.0f, 0.1f}, {8192.0f, 0.1f}, {3.7f, 2.5f}, {4.0f, 0.0f}}) {
        SCOPED_TRACE(label(dtype, s.t, "x", s.heads, "x", s.d, " floor_scale ", floor_scale, " attn_scale ",
                           attn_scale));
        DeviceArena arena(*backend);
        HostTensor x = random_tensor(dtype, {s.t, s.heads, s.d}, rng, -2.0, 2.0);
        HostTensor positions(DType::kI32, {s.t});
        const bool long_context = floor_scale > 1000.0f;
        std::uniform_int_distribution<std::int32_t> position(0, long_context ? 2000000 : 200);
        const std::int32_t specials[] = {long_context ? 8191 : 0, long_context ? 8190 : 2,
                                         long_context ? INT32_MAX : 3};
        for (std::int64_t i = 0; i < s.t; ++i) positions.set_int(i, i < 3 ? specials[i] : position(rng));
        for (std::int64_t i = 0; i < s.t; ++i) {
          ++rows;
          const float steps = std::floor((static_cast<float>(positions.get_int(i)) + 1.0f) / floor_scale);
          scaled_rows += steps >= 1.0f && attn_scale > 0.0f ? 1 : 0;
        }
        const Tensor xd = arena.upload(x);
        AttnTemperatureArgs args{xd, arena.upload(positions), floor_scale, attn_scale};
        expect_run_ok(*backend, args, arena.stream());
        EXPECT_TRUE(
            within_bound(arena.download(xd), attn_temperature_ref(x, positions, floor_scale, attn_scale)));
      }
  EXPECT_GE(scaled_rows, rows / 2) << "too few rows with f(t) != 1";
}

// can_implement's rules for attn_temperature (ops.hpp AttnTemperatureArgs), each failure naming its field;
// a negative position is reported by run (CPU) or by the next synchronize (CUDA), once.
TEST(DUPLEX_CONFORMANCE_SUITE, AttnTemperatureArgumentsAreChecked) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(50);
  DeviceArena arena(*backend);
  const Tensor x = arena.upload(random_tensor(DType::kF16, {3, 2, 8}, rng)),
               positions = arena.upload(int_tensor({3}, {0, 5, 9}));
  auto expect_refused = [&](const AttnTemperatureArgs& a, StatusCode code, const std::string& message) {
    const Status s = backend->can_implement(a);
    EXPECT_EQ(s.code(), code) << s.to_string();
    EXPECT_NE(s.message().find(message), std::string::npos) << s.message();
    EXPECT_EQ(backend->run(a, arena.stream()).code(), code);
  };
  const AttnTemperatureArgs valid{x, positions, 4.0f, 0.1f};
  EXPECT_STREQ(op_name(valid), "attn_temperature");
  EXPECT_TRUE(backend->can_implement(valid).ok()) << backend->can_implement(valid).to_string();
  EXPECT_TRUE(backend->can_implement(AttnTemperatureArgs{x, positions, 8192.0f, 0.0f}).ok());
  AttnTemperatureArgs a = valid;
  a.floor_scale = 0.0f;
  expect_refused(a, StatusCode::kInvalidArgument,
                 "attn_temperature: floor_scale is 0; expected a finite number > 0");
  a.floor_scale = -4.0f;
  expect_refused(a, StatusCode::kInvalidArgument, "floor_scale is -4;");
  a.floor_scale = INFINITY;
  expect_refused(a, StatusCode::kInvalidArgument, "floor_scale is inf;");
  a.floor_scale = std::nanf("");
  expect_refused(a, StatusCode::kInvalidArgument, "floor_scale is nan;");
  a = valid;
  a.attn_scale = -0.5f;
  expect_refused(a, StatusCode::kInvalidArgument,
                 "attn_temperature: attn_scale is -0.5; expected a finite number >= 0");
  a.attn_scale = INFINITY;
  expect_refused(a, StatusCode::kInvalidArgument, "attn_scale is inf;");
  a.attn_scale = std::nanf("");
  expect_refused(a, StatusCode::kInvalidArgument, "attn_scale is nan;");
  a = valid;
  a.positions = arena.upload(int_tensor({2}, {0, 5}));
  expect_refused(a, StatusCode::kInvalidArgument, "positions is i32[2]");
  a.positions = arena.upload(random_tensor(DType::kF32, {3}, rng));
  expect_refused(a, StatusCode::kUnsupportedDType, "positions is f32[3]");
  a.positions = Tensor{};
  expect_refused(a, StatusCode::kInvalidArgument, "positions is absent");
  a = valid;
  a.x = arena.upload(random_tensor(DType::kF16, {3, 16}, rng));
  expect_refused(a, StatusCode::kInvalidArgument, "x is f16[3,16]");
  a.x = arena.empty(DType::kI32, {3, 2, 8});
  expect_refused(a, StatusCode::kUnsupportedDType, "x is i32[3,2,8]");
  a = valid;
  a.x.location = backend->memory_location() == Location::kHost ? Location::kDevice : Location::kHost;
  expect_refused(a, StatusCode::kWrongLocation, "x is f16[3,2,8]");

  a = valid;
  a.positions = arena.upload(int_tensor({3}, {0, -1, 9}));
  Status st = backend->run(a, arena.stream());
  if (st.ok()) st = backend->synchronize(arena.stream());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  EXPECT_NE(st.message().find("attn_temperature"), std::string::npos) << st.message();
  EXPECT_TRUE(backend->synchronize(arena.stream()).ok()) << "the error must be reported once";
}

// ---- Fake quantization (ops.hpp ActivationQuant / QuantizeArgs) and W8A8 experts ----

ActivationQuant quant_spec(QuantFormat format, std::int64_t group = 0, bool per_tensor = false) {
  ActivationQuant q;
  q.format = format;
  q.group = group;
  q.per_tensor = per_tensor;
  return q;
}

const char* format_name(QuantFormat format) {
  return format == QuantFormat::kInt8 ? "int8" : "fp8";
}

// Rows of varied magnitude: each row's uniform values scaled by 2^k, k in [-12, 8] (E4M3's subnormals, the
// small INT8 integers and saturation are all reached), every 37th element 16 times larger (so a row's groups
// differ), and row 2 all zeros.
HostTensor quant_input(DType dtype, std::int64_t t, std::int64_t c, std::mt19937_64& rng) {
  HostTensor x(dtype, {t, c});
  std::uniform_real_distribution<double> value(-1.0, 1.0);
  std::uniform_int_distribution<int> exponent(-12, 8);
  for (std::int64_t r = 0; r < t; ++r) {
    const double scale = r == 2 ? 0.0 : std::ldexp(1.0, exponent(rng));
    for (std::int64_t j = 0; j < c; ++j)
      x.set(r * c + j, value(rng) * scale * ((r * c + j) % 37 == 0 ? 16.0 : 1.0));
  }
  return x;
}

// The scales a kernel wrote against the reference's, exactly (both are one FP32 computation per reach).
::testing::AssertionResult same_scales(const HostTensor& got, const std::vector<double>& want) {
  if (static_cast<std::size_t>(got.numel()) != want.size())
    return ::testing::AssertionFailure() << got.numel() << " scales; expected " << want.size();
  for (std::size_t i = 0; i < want.size(); ++i)
    if (got.get(static_cast<std::int64_t>(i)) != want[i])
      return ::testing::AssertionFailure()
             << "scales[" << i << "] = " << got.get(static_cast<std::int64_t>(i)) << "; expected " << want[i];
  return ::testing::AssertionSuccess();
}

// Every reach (per row, groups of 128 and 32, per tensor, static) with the dynamic scale's options
// (scale_ub, min_scale, pow2_scale alone and together), both formats, f16 / bf16 / f32, odd shapes (one
// element, 33 columns, no rows, enough rows for several parallel tasks), in place and not, the scales
// written, against quantize_ref. Exact (bound 0): every step is one correctly rounded FP32 operation (the
// division x / s, the product q x s), a rounding to the grid and one to the dtype, which the reference
// reproduces; the static scales 0.0123 and 3.7 are not powers of two, so the divisions round, and saturate
// (q beyond 448 or 127) on the large rows.
TEST(DUPLEX_CONFORMANCE_SUITE, Quantize) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(61);
  struct Spec {
    const char* what;
    std::int64_t group;
    bool per_tensor;
    float static_scale, scale_ub, min_scale;
    bool pow2;
  };
  const Spec specs[] = {
      {"per row", 0, false, 0.0f, 0.0f, 0.0f, false},
      {"group 128", 128, false, 0.0f, 0.0f, 0.0f, false},
      {"group 32", 32, false, 0.0f, 0.0f, 0.0f, false},
      {"per tensor", 0, true, 0.0f, 0.0f, 0.0f, false},
      {"static 0.0123", 0, false, 0.0123f, 0.0f, 0.0f, false},
      {"static 3.7", 0, false, 3.7f, 0.0f, 0.0f, false},
      {"scale_ub 2", 0, false, 0.0f, 2.0f, 0.0f, false},
      {"min_scale 1e-3", 0, false, 0.0f, 0.0f, 1e-3f, false},
      {"pow2", 0, false, 0.0f, 0.0f, 0.0f, true},
      {"group 128 pow2 min_scale 1e-4 (UE8M0)", 128, false, 0.0f, 0.0f, 1e-4f, true},
      {"group 32 scale_ub 0.5", 32, false, 0.0f, 0.5f, 0.0f, false},
      {"per tensor scale_ub 8 pow2", 0, true, 0.0f, 8.0f, 0.0f, true},
  };
  const std::pair<std::int64_t, std::int64_t> shapes[] = {{1, 1},   {3, 1},    {5, 33},    {1, 256},
                                                          {7, 384}, {13, 160}, {300, 512}, {0, 128}};
  int runs = 0;
  for (DType dtype : kFloatTypes)
    for (QuantFormat format : {QuantFormat::kFp8E4M3, QuantFormat::kInt8})
      for (const Spec& spec : specs)
        for (auto [t, c] : shapes)
          for (bool in_place : {false, true}) {
            SCOPED_TRACE(label(dtype, format_name(format), ' ', spec.what, ' ', t, "x", c,
                               in_place ? " in place" : ""));
            DeviceArena arena(*backend);
            ActivationQuant q = quant_spec(format, spec.group, spec.per_tensor);
            q.static_scale = spec.static_scale;
            q.scale_ub = spec.scale_ub;
            q.min_scale = spec.min_scale;
            q.pow2_scale = spec.pow2;
            const HostTensor x = quant_input(dtype, t, c, rng);
            const QuantizeRef want = quantize_ref(x, q);
            const Tensor xd = arena.upload(x);
            const bool call = spec.per_tensor || spec.static_scale > 0.0f;
            const std::vector<std::int64_t> scale_shape =
                call             ? std::vector<std::int64_t>{1}
                : spec.group > 0 ? std::vector<std::int64_t>{t, (c + spec.group - 1) / spec.group}
                                 : std::vector<std::int64_t>{t};
            // Out of place with the scales written; in place without them.
            const QuantizeArgs args{xd, in_place ? xd : arena.empty(dtype, {t, c}), q,
                                    in_place ? Tensor{} : arena.empty(DType::kF32, scale_shape)};
            expect_run_ok(*backend, args, arena.stream());
            EXPECT_TRUE(within_bound(arena.download(args.y), want.y));
            if (in_place) {
              ++runs;
              continue;
            }
            EXPECT_TRUE(same_scales(arena.download(args.scales), want.scales));
            const HostTensor x_after = arena.download(xd);
            EXPECT_TRUE(x.bytes() == 0 || std::memcmp(x_after.data(), x.data(), x.bytes()) == 0)
                << "x changed";
            ++runs;
          }
  EXPECT_GT(runs, 500);
}

// Cases worked by hand (the values hold in f16, bf16 and f32: each input's rounding to the dtype leaves its
// result unchanged, and every result is representable in all three). E4M3 has 3 mantissa bits: its values in
// [2^e, 2^(e+1)) are the multiples of 2^(e-3) (0.25 in [2, 4), 16 in [128, 256)), below 2^-6 the multiples of
// 2^-9.
TEST(DUPLEX_CONFORMANCE_SUITE, QuantizeHandWorked) {
  DUPLEX_GET_BACKEND(backend);
  struct Case {
    const char* what;
    ActivationQuant quant;
    std::int64_t t, c;
    std::vector<double> x, y, scales;
  };
  const QuantFormat fp8 = QuantFormat::kFp8E4M3, int8 = QuantFormat::kInt8;
  ActivationQuant ub_fp8 = quant_spec(fp8), ub_int8 = quant_spec(int8), pow2 = quant_spec(fp8),
                  floor = quant_spec(fp8), fixed = quant_spec(int8);
  ub_fp8.scale_ub = 448.0f;
  ub_int8.scale_ub = 127.0f;
  pow2.pow2_scale = true;
  floor.min_scale = 0.015625f;  // 2^-6
  fixed.static_scale = 0.5f;
  const double tiny = std::ldexp(1.0, -10), step = std::ldexp(1.0, -9);
  const Case cases[] = {
      // amax 448: s = 448 / 448 = 1. 3.3 -> 3.25 (nearest multiple of 0.25); 3.375 lies halfway between 3.25
      // (mantissa 101) and 3.5 (110): the even mantissa, 3.5; 0.3 -> 10 x 2^-5 = 0.3125; 0.001 -> 2^-9
      // (0.001 / 2^-9 = 0.512 rounds to 1); 2^-10, halfway between 0 and 2^-9 -> 0 (even); 250 -> 256
      // (250 / 16 = 15.625 -> 16).
      {"fp8 per row",
       quant_spec(fp8),
       1,
       8,
       {448, 3.3, 3.375, -3.375, 0.3, 0.001, tiny, 250},
       {448, 3.25, 3.5, -3.5, 0.3125, step, 0.0, 256},
       {1.0}},
      // An all-zero row: scale 0, written as zeros; the other row's scale is its own (448 -> 1).
      {"fp8 zero row", quant_spec(fp8), 2, 3, {0, 0, 0, 448, -3.3, 1}, {0, 0, 0, 448, -3.25, 1}, {0.0, 1.0}},
      // amax 127: s = 127 / 127 = 1; ties to even: 2.5 -> 2, -2.5 -> -2, 3.5 -> 4, 0.5 -> 0, -0.5 -> -0.
      {"int8 per row",
       quant_spec(int8),
       1,
       8,
       {127, 2.5, -2.5, 3.5, 0.5, -0.5, 1.49, -127},
       {127, 2, -2, 4, 0, 0, 1, -127},
       {1.0}},
      // scale_ub 448 clips the amax 1000 to 448: s = 1, so 896 and -1000 clamp to +-448 (448 s); 100 / 8 =
      // 12.5 ties to 12 (even): 96.
      {"fp8 scale_ub", ub_fp8, 1, 4, {896, 100, -1000, 0.5}, {448, 96, -448, 0.5}, {1.0}},
      // scale_ub 127: s = 1; 1000 -> 127, -1000 -> -128 (INT8's range is asymmetric), 0.5 -> 0.
      {"int8 scale_ub", ub_int8, 1, 4, {1000, 50, -1000, 0.5}, {127, 50, -128, 0}, {1.0}},
      // Row 0: amax 0.3, 0.3 / 448 = 6.7e-4 rounds up to 2^-10 (2^-11 = 4.9e-4 is below it); 0.3 / 2^-10 =
      // 307.2 -> 320 (multiples of 32 in [256, 448]): 320 x 2^-10 = 0.3125; 0.1 -> 102.4 -> 104 (multiples
      // of 8): 0.1015625. Row 1: amax 56, s = 56 / 448 = 0.125 exactly, a power of two: it stays (not
      // 0.25); 3.3 / 0.125 = 26.4 -> 26 (multiples of 2): 3.25.
      {"fp8 pow2",
       pow2,
       2,
       3,
       {0.3, 0.1, -0.3, 56, 1, 3.3},
       {0.3125, 0.1015625, -0.3125, 56, 1, 3.25},
       {tiny, 0.125}},
      // min_scale 2^-6 floors 0.448 / 448 = 0.001: s = 2^-6. 0.448 x 64 = 28.67 -> 28: 0.4375; 0.1 x 64 =
      // 6.4 -> 6.5: 0.1015625; -0.05 x 64 = -3.2 -> -3.25: -0.05078125. The zero row's scale is the floor
      // too, its values stay 0.
      {"fp8 min_scale",
       floor,
       2,
       3,
       {0.448, 0.1, -0.05, 0, 0, 0},
       {0.4375, 0.1015625, -0.05078125, 0, 0, 0},
       {0.015625, 0.015625}},
      // Static s = 0.5: q = 20, -140 (clamped to -128: -64), 0.5 (ties to 0), 1.5 (ties to 2: 1).
      {"int8 static", fixed, 1, 4, {10, -70, 0.25, 0.75}, {10, -64, 0, 1}, {0.5}},
      // Groups of 2: [28, 0.2] has s = 28 / 448 = 0.0625, 0.2 / 0.0625 = 3.2 -> 3.25: 0.203125; [448, 3.3]
      // has s = 1.
      {"fp8 group 2",
       quant_spec(fp8, 2),
       1,
       4,
       {28, 0.2, 448, 3.3},
       {28, 0.203125, 448, 3.25},
       {0.0625, 1.0}},
      // Groups of 2 over 3 columns: [28, 0.2] as above, the shorter rest [-7] with its own amax: s = 7 / 448
      // =
      // 2^-6, q = -448: -7.
      {"fp8 group 2, a shorter last group",
       quant_spec(fp8, 2),
       1,
       3,
       {28, 0.2, -7},
       {28, 0.203125, -7},
       {0.0625, 0.015625}},
      // One scale for both rows, from their amax 448: s = 1; -100 -> -96 (12.5 ties to 12).
      {"fp8 per tensor", quant_spec(fp8, 0, true), 2, 2, {3.3, -100, 448, 1}, {3.25, -96, 448, 1}, {1.0}},
  };
  for (DType dtype : kFloatTypes)
    for (const Case& k : cases) {
      SCOPED_TRACE(label(dtype, k.what));
      DeviceArena arena(*backend);
      HostTensor x(dtype, {k.t, k.c});
      for (std::int64_t i = 0; i < x.numel(); ++i) x.set(i, k.x[static_cast<std::size_t>(i)]);
      const Tensor xd = arena.upload(x);
      const std::int64_t per_row = k.quant.group > 0 ? (k.c + k.quant.group - 1) / k.quant.group : 1;
      const bool call = k.quant.per_tensor || k.quant.static_scale > 0.0f;
      const QuantizeArgs args{xd, xd, k.quant,
                              call          ? arena.empty(DType::kF32, {1})
                              : per_row > 1 ? arena.empty(DType::kF32, {k.t, per_row})
                                            : arena.empty(DType::kF32, {k.t})};
      expect_run_ok(*backend, args, arena.stream());
      const HostTensor y = arena.download(xd), scales = arena.download(args.scales);
      for (std::int64_t i = 0; i < y.numel(); ++i)
        EXPECT_EQ(y.get(i), k.y[static_cast<std::size_t>(i)]) << "y[" << i << "]";
      EXPECT_TRUE(same_scales(scales, k.scales));
    }
}

// can_implement's rules for quantize (ops.hpp QuantizeArgs / ActivationQuant), one refusal per rule, each
// naming its field.
TEST(DUPLEX_CONFORMANCE_SUITE, QuantizeArgumentsAreChecked) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(62);
  DeviceArena arena(*backend);
  const Tensor x = arena.upload(random_tensor(DType::kF16, {4, 64}, rng)),
               y = arena.empty(DType::kF16, {4, 64});
  // message: the field's name, and detail (when given): the rule it broke (describe() adds "@host" between).
  auto expect_refused = [&](const QuantizeArgs& a, StatusCode code, const std::string& message,
                            const std::string& detail = "") {
    const Status s = backend->can_implement(a);
    EXPECT_EQ(s.code(), code) << s.to_string();
    EXPECT_NE(s.message().find(message), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(detail), std::string::npos) << s.message();
    EXPECT_EQ(backend->run(a, arena.stream()).code(), code);
  };
  const QuantizeArgs valid{x, y, quant_spec(QuantFormat::kFp8E4M3), arena.empty(DType::kF32, {4})};
  EXPECT_STREQ(op_name(valid), "quantize");
  EXPECT_TRUE(backend->can_implement(valid).ok()) << backend->can_implement(valid).to_string();
  EXPECT_TRUE(backend->can_implement(QuantizeArgs{x, x, valid.quant}).ok());  // in place, no scales
  ActivationQuant grouped = quant_spec(QuantFormat::kInt8, 32), fixed = quant_spec(QuantFormat::kInt8);
  fixed.static_scale = 0.5f;
  EXPECT_TRUE(backend->can_implement(QuantizeArgs{x, y, grouped, arena.empty(DType::kF32, {4, 2})}).ok());
  EXPECT_TRUE(backend->can_implement(QuantizeArgs{x, y, fixed, arena.empty(DType::kF32, {1})}).ok());

  QuantizeArgs a = valid;
  a.quant.format = QuantFormat::kNone;
  expect_refused(a, StatusCode::kInvalidArgument,
                 "quantize: quant.format is kNone; expected kFp8E4M3 or kInt8");
  a.quant.format = static_cast<QuantFormat>(7);
  expect_refused(a, StatusCode::kInvalidArgument, "quant.format is 7;");
  a = valid;
  a.quant.group = -32;
  expect_refused(a, StatusCode::kInvalidArgument, "quant.group is -32; expected >= 0 (0: per row of C = 64)");
  a.quant.group = 48;  // a row of 64: groups of 48 and 16
  a.scales = Tensor{};
  EXPECT_TRUE(backend->can_implement(a).ok());
  a = valid;
  a.scales = Tensor{};
  a.quant.group = 32;
  a.quant.per_tensor = true;
  expect_refused(a, StatusCode::kInvalidArgument, "quant.per_tensor is set with group 32; expected group 0");
  for (float bad : {-1.0f, INFINITY, std::nanf("")}) {
    const std::string text = bad < 0.0f ? "-1" : std::isinf(bad) ? "inf" : "nan";
    a = valid;
    a.scales = Tensor{};
    a.quant.static_scale = bad;
    expect_refused(a, StatusCode::kInvalidArgument,
                   "quant.static_scale is " + text + "; expected a finite number >= 0");
    a.quant.static_scale = 0.0f;
    a.quant.scale_ub = bad;
    expect_refused(a, StatusCode::kInvalidArgument, "quant.scale_ub is " + text + ";");
    a.quant.scale_ub = 0.0f;
    a.quant.min_scale = bad;
    expect_refused(a, StatusCode::kInvalidArgument, "quant.min_scale is " + text + ";");
  }
  a = QuantizeArgs{x, y, fixed};
  a.quant.group = 32;
  expect_refused(a, StatusCode::kInvalidArgument, "quant.group is 32 with a static_scale; expected 0");
  a.quant.group = 0;
  a.quant.scale_ub = 2.0f;
  expect_refused(a, StatusCode::kInvalidArgument, "quant.scale_ub is 2 with a static_scale; expected 0");
  a.quant.scale_ub = 0.0f;
  a.quant.min_scale = 0.25f;
  expect_refused(a, StatusCode::kInvalidArgument, "quant.min_scale is 0.25 with a static_scale; expected 0");
  // scales: f32, [T] per row, [T, C / group] per group, [1] for a call scale.
  a = valid;
  a.scales = arena.empty(DType::kF16, {4});
  expect_refused(a, StatusCode::kUnsupportedDType, "scales is f16[4]");
  a.scales = arena.empty(DType::kF32, {3});
  expect_refused(a, StatusCode::kInvalidArgument, "scales is f32[3]", "dimension 0 must be T = 4");
  a = QuantizeArgs{x, y, grouped, arena.empty(DType::kF32, {4})};
  expect_refused(a, StatusCode::kInvalidArgument, "scales is f32[4]", "expected rank 2");
  a.scales = arena.empty(DType::kF32, {4, 4});
  expect_refused(a, StatusCode::kInvalidArgument, "scales is f32[4,4]",
                 "dimension 1 must be ceil(C / group) = 2");
  a = QuantizeArgs{x, y, quant_spec(QuantFormat::kFp8E4M3, 0, true), arena.empty(DType::kF32, {4})};
  expect_refused(a, StatusCode::kInvalidArgument, "scales is f32[4]",
                 "expected f32[1] (one static or per-tensor scale)");
  a = QuantizeArgs{x, y, fixed, arena.empty(DType::kF32, {4})};
  expect_refused(a, StatusCode::kInvalidArgument, "scales is f32[4]",
                 "expected f32[1] (one static or per-tensor scale)");
  // x and y: rank 2, one shape, one float dtype, the backend's memory, y in place or apart.
  a = valid;
  a.y = arena.empty(DType::kF16, {4, 32});
  expect_refused(a, StatusCode::kInvalidArgument, "y is f16[4,32]");
  a.y = arena.empty(DType::kF16, {256});
  expect_refused(a, StatusCode::kInvalidArgument, "y is f16[256]", "expected rank 2");
  a.y = Tensor{};
  expect_refused(a, StatusCode::kInvalidArgument, "y is absent");
  a.y = arena.empty(DType::kBF16, {4, 64});
  expect_refused(a, StatusCode::kUnsupportedDType, "y is bf16[4,64]");
  a = valid;
  a.x = arena.empty(DType::kI32, {4, 64});
  a.y = arena.empty(DType::kI32, {4, 64});
  expect_refused(a, StatusCode::kUnsupportedDType, "x is i32[4,64]");
  a = valid;
  a.x = arena.upload(random_tensor(DType::kF16, {4, 2, 32}, rng));
  expect_refused(a, StatusCode::kInvalidArgument, "x is f16[4,2,32]", "expected rank 2");
  a = valid;
  a.y = x;
  a.y.data = static_cast<char*>(x.data) + 64 * sizeof(std::uint16_t);  // one row on: overlaps, not in place
  expect_refused(a, StatusCode::kInvalidArgument, "y overlaps x");
  a = valid;
  a.y.location = backend->memory_location() == Location::kHost ? Location::kDevice : Location::kHost;
  expect_refused(a, StatusCode::kWrongLocation, "y is f16[4,64]");
}

// LLM.int8()'s decomposition (ActivationQuant::outlier_threshold, QuantizeArgs::outliers): thresholds that
// leave no column, some and nearly all (quant_input's rows span 2^-12 to 2^12 with every 37th element 16
// times larger), with and without the caller's marks (every 5th column), f16 / bf16 / f32, odd shapes, in
// place and not, against quantize_ref: exact, the marks and the per-row scales too.
TEST(DUPLEX_CONFORMANCE_SUITE, QuantizeOutlierColumns) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(66);
  const std::pair<std::int64_t, std::int64_t> shapes[] = {{1, 1},    {5, 33},    {1, 256},
                                                          {13, 160}, {300, 512}, {0, 64}};
  int runs = 0, marked_runs = 0;
  for (DType dtype : kFloatTypes)
    for (float threshold : {6.0f, 0.75f, 1e-3f, 1e6f})
      for (bool caller_marks : {false, true})
        for (auto [t, c] : shapes)
          for (bool in_place : {false, true}) {
            SCOPED_TRACE(label(dtype, " threshold ", threshold, caller_marks ? " with marks " : " ", t, "x",
                               c, in_place ? " in place" : ""));
            DeviceArena arena(*backend);
            ActivationQuant q = quant_spec(QuantFormat::kInt8);
            q.outlier_threshold = threshold;
            const HostTensor x = quant_input(dtype, t, c, rng);
            std::vector<std::int32_t> marks(static_cast<std::size_t>(c), 0);
            HostTensor marks_in(DType::kI32, {c});
            for (std::int64_t j = 0; j < c; ++j) {
              marks[static_cast<std::size_t>(j)] = caller_marks && j % 5 == 0 ? 1 : 0;
              marks_in.set(j, marks[static_cast<std::size_t>(j)]);
            }
            const QuantizeRef want = quantize_ref(x, q, marks);
            const Tensor xd = arena.upload(x);
            QuantizeArgs args{xd, in_place ? xd : arena.empty(dtype, {t, c}), q,
                              arena.empty(DType::kF32, {t}), arena.upload(marks_in)};
            expect_run_ok(*backend, args, arena.stream());
            EXPECT_TRUE(within_bound(arena.download(args.y), want.y));
            EXPECT_TRUE(same_scales(arena.download(args.scales), want.scales));
            const HostTensor got_marks = arena.download(args.outliers);
            std::int64_t new_marks = 0;
            for (std::int64_t j = 0; j < c; ++j) {
              EXPECT_EQ(got_marks.get(j), want.outliers[static_cast<std::size_t>(j)])
                  << "outliers[" << j << "]";
              new_marks += want.outliers[static_cast<std::size_t>(j)] != marks[static_cast<std::size_t>(j)];
            }
            if (new_marks > 0) ++marked_runs;
            ++runs;
          }
  EXPECT_GT(runs, 250);
  EXPECT_GT(marked_runs, 40);  // the thresholds do reach columns
}

// LLM.int8()'s decomposition worked by hand (values exact in f16, bf16 and f32; INT8 per row, s = a / 127).
TEST(DUPLEX_CONFORMANCE_SUITE, QuantizeOutlierColumnsHandWorked) {
  DUPLEX_GET_BACKEND(backend);
  struct Case {
    const char* what;
    float threshold;
    std::int64_t t, c;
    std::vector<double> x;
    std::vector<std::int32_t> marks_in;
    std::vector<double> y, scales;
    std::vector<std::int32_t> marks_out;
  };
  const Case cases[] = {
      // Threshold 150: 200 marks column 1 for both rows. Row 0: a = 127 (200 left out), s = 1, 2.5 -> 2 (ties
      // to even). Row 1: its own element of column 1, 127, is below the threshold and counts (bitsandbytes
      // zeroes only the outliers themselves): a = 127, s = 1, 0.5 -> 0, -3.5 -> -4; column 1 passes: 127.
      {"a column marked by another row",
       150.0f,
       2,
       3,
       {127, 200, 2.5, 0.5, 127, -3.5},
       {0, 0, 0},
       {127, 200, 2, 0, 127, -4},
       {1, 1},
       {0, 1, 0}},
      // The caller's mark on column 1 passes 3.25 through (as INT8 at s = 1 it would be 3).
      {"the caller's mark", 150.0f, 1, 3, {127, 3.25, 2.5}, {0, 1, 0}, {127, 3.25, 2}, {1}, {0, 1, 0}},
      // |x| = threshold is an outlier (>=): column 0; s = 127 / 127 = 1, 1.5 -> 2.
      {"at the threshold", 150.0f, 1, 3, {-150, 127, 1.5}, {0, 0, 0}, {-150, 127, 2}, {1}, {1, 0, 0}},
      // Every element an outlier: a = 0, scale 0, all pass.
      {"all outliers", 150.0f, 1, 2, {200, -300}, {0, 0}, {200, -300}, {0}, {1, 1}},
  };
  for (DType dtype : kFloatTypes)
    for (const Case& k : cases) {
      SCOPED_TRACE(label(dtype, k.what));
      DeviceArena arena(*backend);
      HostTensor x(dtype, {k.t, k.c}), marks(DType::kI32, {k.c});
      for (std::int64_t i = 0; i < x.numel(); ++i) x.set(i, k.x[static_cast<std::size_t>(i)]);
      for (std::int64_t j = 0; j < k.c; ++j) marks.set(j, k.marks_in[static_cast<std::size_t>(j)]);
      ActivationQuant q = quant_spec(QuantFormat::kInt8);
      q.outlier_threshold = k.threshold;
      const Tensor xd = arena.upload(x);
      const QuantizeArgs args{xd, xd, q, arena.empty(DType::kF32, {k.t}), arena.upload(marks)};
      expect_run_ok(*backend, args, arena.stream());
      const HostTensor y = arena.download(xd), marks_out = arena.download(args.outliers);
      for (std::int64_t i = 0; i < y.numel(); ++i)
        EXPECT_EQ(y.get(i), k.y[static_cast<std::size_t>(i)]) << "y[" << i << "]";
      EXPECT_TRUE(same_scales(arena.download(args.scales), k.scales));
      for (std::int64_t j = 0; j < k.c; ++j)
        EXPECT_EQ(marks_out.get(j), k.marks_out[static_cast<std::size_t>(j)]) << "outliers[" << j << "]";
    }
}

// can_implement's rules for LLM.int8()'s decomposition (ActivationQuant::outlier_threshold,
// QuantizeArgs::outliers), each failure naming its field.
TEST(DUPLEX_CONFORMANCE_SUITE, QuantizeOutlierArgumentsAreChecked) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(67);
  DeviceArena arena(*backend);
  const Tensor x = arena.upload(random_tensor(DType::kF16, {4, 64}, rng)),
               y = arena.empty(DType::kF16, {4, 64});
  auto expect_refused = [&](const QuantizeArgs& a, const std::string& message,
                            const std::string& detail = "") {
    const Status s = backend->can_implement(a);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find(message), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(detail), std::string::npos) << s.message();
    EXPECT_EQ(backend->run(a, arena.stream()).code(), StatusCode::kInvalidArgument);
  };
  ActivationQuant q = quant_spec(QuantFormat::kInt8);
  q.outlier_threshold = 6.0f;
  const QuantizeArgs valid{x, y, q, arena.empty(DType::kF32, {4}), arena.empty(DType::kI32, {64})};
  EXPECT_TRUE(backend->can_implement(valid).ok()) << backend->can_implement(valid).to_string();
  QuantizeArgs a = valid;
  for (float bad : {-1.0f, INFINITY}) {
    a.quant.outlier_threshold = bad;
    expect_refused(a, std::string("quant.outlier_threshold is ") + (bad < 0 ? "-1" : "inf"),
                   "expected a finite number >= 0");
  }
  const std::string beside =
      "quant.outlier_threshold 6 (LLM.int8()'s outlier columns) is set beside another "
      "scheme; expected kInt8 per row alone";
  a = valid;
  a.quant.format = QuantFormat::kFp8E4M3;
  expect_refused(a, beside);
  a = valid;
  a.quant.group = 32;
  a.scales = Tensor{};
  expect_refused(a, beside);
  a = valid;
  a.quant.per_tensor = true;
  a.scales = Tensor{};
  expect_refused(a, beside);
  a = valid;
  a.quant.min_scale = 1e-3f;
  expect_refused(a, beside);
  a = valid;
  a.quant.pow2_scale = true;
  expect_refused(a, beside);
  a = valid;
  a.outliers = Tensor{};
  expect_refused(a, "outliers is absent");
  a.outliers = arena.empty(DType::kI32, {32});
  expect_refused(a, "outliers is i32[32]", "dimension 0 must be C = 64");
  a.outliers = arena.empty(DType::kF32, {64});
  const Status s = backend->can_implement(a);
  EXPECT_EQ(s.code(), StatusCode::kUnsupportedDType) << s.to_string();
  a = valid;
  a.quant.outlier_threshold = 0.0f;
  expect_refused(a, "outliers is given without an outlier_threshold; expected it absent");
  a = valid;
  a.outliers = Tensor::contiguous(x.data, DType::kI32, {64}, x.location);  // x's first 256 bytes
  expect_refused(a, "outliers overlaps x");
}

// W8A8 experts (ops.hpp ExpertFfnArgs::quant_x / quant_h): FP8 and INT8, per row, per group (32: H = 64 has
// 2 groups, F = 96 has 3), per tensor (over every row of the call, all experts') and static, x alone, h
// alone and both, against the reference FFN of the reference-quantized x (quantize_ref over all P rows: x is
// exact, so its quantization is too) with h quantized inside expert_ffn_quant_ref (bracketed where the
// kernel's h may straddle a grid boundary). quant_scales: x's call scale exactly, h's within its bracket, 0
// for a spec without one. The FP8 cases must not match the unquantized reference (the quantization happened).
TEST(DUPLEX_CONFORMANCE_SUITE, ExpertFfnQuantized) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(63);
  const QuantFormat fp8 = QuantFormat::kFp8E4M3, int8 = QuantFormat::kInt8;
  ActivationQuant static_x = quant_spec(int8), static_h = quant_spec(fp8), ue8m0 = quant_spec(fp8, 32);
  ActivationQuant int8_x = quant_spec(int8), int8_h = quant_spec(int8);  // LLM.int8()
  int8_x.outlier_threshold = 0.99f;
  int8_h.outlier_threshold = 0.25f;
  static_x.static_scale = 0.01f;
  static_h.static_scale = 0.002f;
  ue8m0.pow2_scale = true;
  ue8m0.min_scale = 1e-4f;
  struct Config {
    const char* what;
    ActivationQuant quant_x, quant_h;
  };
  const Config configs[] = {
      {"fp8 per row", quant_spec(fp8), quant_spec(fp8)},
      {"fp8 group 32", quant_spec(fp8, 32), quant_spec(fp8, 32)},
      {"fp8 group 40 (H: 40 + 24, F: 40 + 40 + 16)", quant_spec(fp8, 40), quant_spec(fp8, 40)},
      {"int8 per row", quant_spec(int8), quant_spec(int8)},
      {"fp8 per tensor", quant_spec(fp8, 0, true), quant_spec(fp8, 0, true)},
      {"int8 static x, per-tensor h", static_x, quant_spec(int8, 0, true)},
      {"h only, fp8 group 32 pow2 min_scale", ActivationQuant{}, ue8m0},
      {"x only, int8 per tensor", quant_spec(int8, 0, true), ActivationQuant{}},
      {"h only, fp8 static", ActivationQuant{}, static_h},
      {"LLM.int8() x and h", int8_x, int8_h},
      {"LLM.int8() h only", ActivationQuant{}, int8_h},
  };
  int x_marked = 0, h_marked = 0;  // runs where some column was marked
  const std::vector<std::vector<std::int64_t>> groups = {
      {0, 0, 5, 5, 6, 18, 18, 21, 21}, {0, 40, 41, 100}, {0, 0, 0}};  // the last: no tokens at all
  for (DType dtype : kFloatTypes)
    for (const Config& cfg : configs)
      for (FfnKind kind : {FfnKind::kGated, FfnKind::kTwoMatrix})
        for (const auto& offsets : groups) {
          const std::int64_t e = static_cast<std::int64_t>(offsets.size()) - 1, p = offsets.back(), h = 64,
                             f = 96;
          const bool gated = kind == FfnKind::kGated;
          const Activation act = gated ? Activation::kSilu : Activation::kGelu;
          SCOPED_TRACE(label(dtype, cfg.what, gated ? " gated" : " two-matrix", " experts ", e, " P ", p));
          DeviceArena arena(*backend);
          const double ws = 1.0 / std::sqrt(static_cast<double>(h));
          HostTensor x = random_tensor(dtype, {p, h}, rng),
                     w_in = random_tensor(dtype, {e, f, h}, rng, -ws, ws);
          HostTensor w_up = random_tensor(dtype, {e, f, h}, rng, -ws, ws);
          HostTensor w_down = random_tensor(dtype, {e, h, f}, rng, -1.0 / std::sqrt(f), 1.0 / std::sqrt(f));
          HostTensor b_in = random_tensor(dtype, {e, f}, rng, -0.5, 0.5);
          ExpertFfnArgs args{kind,
                             act,
                             arena.upload(x),
                             arena.upload(w_in),
                             gated ? arena.upload(w_up) : Tensor{},
                             arena.upload(w_down),
                             arena.empty(dtype, {p, h}),
                             offsets,
                             gated ? Tensor{} : arena.upload(b_in)};
          args.quant_x = cfg.quant_x;
          args.quant_h = cfg.quant_h;
          args.quant_scales = arena.empty(DType::kF32, {2});
          args.h_out = arena.empty(dtype, {p, f});
          const bool decomposes = cfg.quant_x.decomposes() || cfg.quant_h.decomposes();
          if (decomposes) {
            HostTensor marks(DType::kI32, {h + f});
            for (std::int64_t j = 0; j < h + f; ++j) marks.set(j, 0);
            args.quant_outliers = arena.upload(marks);
          }
          expect_run_ok(*backend, args, arena.stream());
          // x as the kernel's projections read it.
          HostTensor xq = x;
          double x_scale = 0.0;
          std::vector<std::int32_t> x_marks(static_cast<std::size_t>(h), 0);
          if (cfg.quant_x.enabled()) {
            const QuantizeRef q = quantize_ref(x, cfg.quant_x);
            for (std::int64_t i = 0; i < x.numel(); ++i) xq.set(i, q.y.value[static_cast<std::size_t>(i)]);
            if (cfg.quant_x.per_tensor || cfg.quant_x.static_scale > 0.0f) x_scale = q.scales[0];
            if (cfg.quant_x.decomposes()) x_marks = q.outliers;
          }
          const HostTensor* up = gated ? &w_up : nullptr;
          const HostTensor* bias = gated ? nullptr : &b_in;
          ExpertFfnQuantRef want;
          if (cfg.quant_h.enabled())
            want = expert_ffn_quant_ref(kind, act, xq, w_in, up, w_down, offsets, cfg.quant_h, bias);
          else
            want.y = expert_ffn_ref(kind, act, xq, w_in, up, w_down, offsets, bias);
          const HostTensor y = arena.download(args.y), scales = arena.download(args.quant_scales);
          EXPECT_TRUE(within_bound(y, want.y));
          if (cfg.quant_h.enabled()) {
            EXPECT_TRUE(within_bound(arena.download(args.h_out), want.h)) << "h_out";
          }
          EXPECT_EQ(scales.get(0), x_scale);
          EXPECT_GE(scales.get(1), want.h_scale_lo);
          EXPECT_LE(scales.get(1), want.h_scale_hi);
          if (decomposes) {  // x's marks exactly; h's where no h bound reaches across the threshold
            const HostTensor marks = arena.download(args.quant_outliers);
            bool any_x = false, any_h = false;
            for (std::int64_t j = 0; j < h; ++j) {
              EXPECT_EQ(marks.get(j), x_marks[static_cast<std::size_t>(j)]) << "x's outliers[" << j << "]";
              any_x = any_x || marks.get(j) != 0;
            }
            for (std::int64_t j = 0; j < f; ++j) {
              const int want_mark =
                  cfg.quant_h.decomposes() ? want.h_outliers[static_cast<std::size_t>(j)] : 0;
              if (want_mark >= 0) {
                EXPECT_EQ(marks.get(h + j), want_mark) << "h's outliers[" << j << "]";
              }
              any_h = any_h || marks.get(h + j) != 0;
            }
            x_marked += any_x;
            h_marked += any_h;
          }
          if (p > 0 && cfg.quant_x.format == fp8 && cfg.quant_h.format == fp8) {
            EXPECT_FALSE(within_bound(y, expert_ffn_ref(kind, act, x, w_in, up, w_down, offsets, bias)))
                << "the quantized output matches the unquantized reference";
          }
        }
  EXPECT_GT(x_marked, 5);  // the thresholds do reach columns
  EXPECT_GT(h_marked, 5);
}

// Disabled specs (format kNone) leave expert_ffn bit for bit as it was, whatever their other fields hold
// (they are not read), and quant_scales receives 0 and 0.
TEST(DUPLEX_CONFORMANCE_SUITE, ExpertFfnQuantDisabledIsUnchanged) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(64);
  const std::vector<std::int64_t> offsets = {0, 7, 7, 30};
  for (DType dtype : kFloatTypes) {
    SCOPED_TRACE(dtype_name(dtype));
    const std::int64_t e = 3, p = 30, h = 48, f = 80;
    DeviceArena arena(*backend);
    const double ws = 1.0 / std::sqrt(static_cast<double>(h));
    ExpertFfnArgs args{FfnKind::kGated,
                       Activation::kSilu,
                       arena.upload(random_tensor(dtype, {p, h}, rng)),
                       arena.upload(random_tensor(dtype, {e, f, h}, rng, -ws, ws)),
                       arena.upload(random_tensor(dtype, {e, f, h}, rng, -ws, ws)),
                       arena.upload(random_tensor(dtype, {e, h, f}, rng, -ws, ws)),
                       arena.empty(dtype, {p, h}),
                       offsets,
                       Tensor{}};
    expect_run_ok(*backend, args, arena.stream());
    const HostTensor plain = arena.download(args.y);
    ExpertFfnArgs off = args;
    off.y = arena.empty(dtype, {p, h});
    off.quant_x.group = 7;  // does not divide H: ignored while the format is kNone
    off.quant_x.per_tensor = true;
    off.quant_h.static_scale = 3.0f;
    off.quant_h.min_scale = 1.0f;
    off.quant_scales = arena.upload(random_tensor(DType::kF32, {2}, rng));
    expect_run_ok(*backend, off, arena.stream());
    const HostTensor y = arena.download(off.y), scales = arena.download(off.quant_scales);
    EXPECT_EQ(std::memcmp(y.data(), plain.data(), y.bytes()), 0);
    EXPECT_EQ(scales.get(0), 0.0);
    EXPECT_EQ(scales.get(1), 0.0);
  }
}

// can_implement's rules for expert_ffn's quantization fields, each failure naming its field.
TEST(DUPLEX_CONFORMANCE_SUITE, ExpertFfnQuantArgumentsAreChecked) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(65);
  DeviceArena arena(*backend);
  const std::vector<std::int64_t> offsets = {0, 3, 5};
  const ExpertFfnArgs valid{FfnKind::kGated,
                            Activation::kSilu,
                            arena.upload(random_tensor(DType::kF16, {5, 64}, rng)),
                            arena.upload(random_tensor(DType::kF16, {2, 96, 64}, rng)),
                            arena.upload(random_tensor(DType::kF16, {2, 96, 64}, rng)),
                            arena.upload(random_tensor(DType::kF16, {2, 64, 96}, rng)),
                            arena.empty(DType::kF16, {5, 64}),
                            offsets,
                            Tensor{},
                            Tensor{},
                            Tensor{},
                            quant_spec(QuantFormat::kFp8E4M3, 32),
                            quant_spec(QuantFormat::kInt8, 0, true),
                            arena.empty(DType::kF32, {2})};
  EXPECT_TRUE(backend->can_implement(valid).ok()) << backend->can_implement(valid).to_string();
  auto expect_refused = [&](const ExpertFfnArgs& a, StatusCode code, const std::string& message,
                            const std::string& detail = "") {
    const Status s = backend->can_implement(a);
    EXPECT_EQ(s.code(), code) << s.to_string();
    EXPECT_NE(s.message().find(message), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(detail), std::string::npos) << s.message();
    EXPECT_EQ(backend->run(a, arena.stream()).code(), code);
  };
  ExpertFfnArgs a = valid;
  a.quant_x.group = -48;
  expect_refused(a, StatusCode::kInvalidArgument,
                 "expert_ffn: quant_x.group is -48; expected >= 0 (0: per row of H = 64)");
  a = valid;
  a.quant_h.per_tensor = false;
  a.quant_h.group = 64;  // a row of F = 96: groups of 64 and 32
  EXPECT_TRUE(backend->can_implement(a).ok());
  a.quant_h.per_tensor = true;
  a.quant_h.group = 32;
  expect_refused(a, StatusCode::kInvalidArgument, "quant_h.per_tensor is set with group 32");
  a = valid;
  a.quant_x.min_scale = -1.0f;
  expect_refused(a, StatusCode::kInvalidArgument, "quant_x.min_scale is -1;");
  a = valid;
  a.quant_h.static_scale = 0.5f;
  a.quant_h.scale_ub = 1.0f;
  expect_refused(a, StatusCode::kInvalidArgument, "quant_h.scale_ub is 1 with a static_scale");
  a = valid;
  a.quant_h.format = static_cast<QuantFormat>(9);
  expect_refused(a, StatusCode::kInvalidArgument, "quant_h.format is 9;");
  a = valid;
  a.quant_scales = arena.empty(DType::kF32, {3});
  expect_refused(a, StatusCode::kInvalidArgument, "quant_scales is f32[3]",
                 "dimension 0 must be the scales of x and h = 2");
  a.quant_scales = arena.empty(DType::kF32, {1, 2});
  expect_refused(a, StatusCode::kInvalidArgument, "quant_scales is f32[1,2]", "expected rank 1");
  // h_out: [P, F] in x's dtype, apart from x and y.
  a = valid;
  a.h_out = arena.empty(DType::kF16, {5, 96});
  EXPECT_TRUE(backend->can_implement(a).ok());
  a.h_out = arena.empty(DType::kF16, {5, 64});
  expect_refused(a, StatusCode::kInvalidArgument, "h_out is f16[5,64]", "dimension 1 must be F = 96");
  a.h_out = arena.empty(DType::kF32, {5, 96});
  expect_refused(a, StatusCode::kUnsupportedDType, "h_out is f32[5,96]", "they must share one dtype");
  a.h_out = valid.y;
  expect_refused(a, StatusCode::kInvalidArgument, "h_out is f16[5,64]");
  a.quant_scales = arena.empty(DType::kF16, {2});
  expect_refused(a, StatusCode::kUnsupportedDType, "quant_scales is f16[2]");
  // LLM.int8(): quant_outliers i32[H + F] with a decomposing spec, absent otherwise.
  a = valid;
  a.quant_h = quant_spec(QuantFormat::kInt8);
  a.quant_h.outlier_threshold = 6.0f;
  expect_refused(a, StatusCode::kInvalidArgument, "quant_outliers is absent");
  a.quant_outliers = arena.empty(DType::kI32, {96});
  expect_refused(a, StatusCode::kInvalidArgument, "quant_outliers is i32[96]",
                 "dimension 0 must be H + F = 160");
  a.quant_outliers = arena.empty(DType::kI32, {160});
  EXPECT_TRUE(backend->can_implement(a).ok()) << backend->can_implement(a).to_string();
  a.quant_h.group = 32;
  expect_refused(a, StatusCode::kInvalidArgument,
                 "quant_h.outlier_threshold 6 (LLM.int8()'s outlier columns)");
  a = valid;
  a.quant_outliers = arena.empty(DType::kI32, {160});
  expect_refused(a, StatusCode::kInvalidArgument,
                 "quant_outliers is given without an outlier_threshold; expected it absent");
}

TEST(DUPLEX_CONFORMANCE_SUITE, Embedding) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(12);
  for (DType dtype : kFloatTypes) {
    SCOPED_TRACE(dtype_name(dtype));
    DeviceArena arena(*backend);
    const std::int64_t v = 1000, h = 256;
    HostTensor table = random_tensor(dtype, {v, h}, rng);
    HostTensor ids = int_tensor({7}, {0, 999, 5, 5, 123, 998, 1});
    EmbeddingArgs args{arena.upload(table), arena.upload(ids), arena.empty(dtype, {7, h})};
    expect_run_ok(*backend, args, arena.stream());
    const HostTensor out = arena.download(args.out);
    for (std::int64_t t = 0; t < 7; ++t)
      for (std::int64_t c = 0; c < h; ++c) ASSERT_EQ(out.get(t * h + c), table.get(ids.get_int(t) * h + c));
    // Scaled rows (Gemma: sqrt(H)): each element times the scale in FP32, rounded once to the dtype.
    const float scale = 45.25f;
    EmbeddingArgs scaled{arena.upload(table), arena.upload(ids), arena.empty(dtype, {7, h}), scale};
    expect_run_ok(*backend, scaled, arena.stream());
    const HostTensor got = arena.download(scaled.out);
    HostTensor want(dtype, {7, h});
    for (std::int64_t t = 0; t < 7; ++t)
      for (std::int64_t c = 0; c < h; ++c)
        want.set(t * h + c,
                 static_cast<double>(static_cast<float>(table.get(ids.get_int(t) * h + c)) * scale));
    for (std::int64_t i = 0; i < 7 * h; ++i) ASSERT_EQ(got.get(i), want.get(i)) << i;
  }
}

// An index out of range is reported by run (CPU) or by the next synchronize (CUDA), then cleared.
TEST(DUPLEX_CONFORMANCE_SUITE, OutOfRangeIndicesAreReported) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(15);
  DeviceArena arena(*backend);
  HostTensor table = random_tensor(DType::kF16, {10, 8}, rng);
  EmbeddingArgs embed{arena.upload(table), arena.upload(int_tensor({3}, {1, 10, 2})),
                      arena.empty(DType::kF16, {3, 8})};
  auto run_and_sync = [&](const OpArgs& args) {
    Status s = backend->run(args, arena.stream());
    if (s.ok()) s = backend->synchronize(arena.stream());
    return s;
  };
  EXPECT_EQ(run_and_sync(embed).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(backend->synchronize(arena.stream()).ok()) << "the error must be reported once";

  PagedCase c = make_paged_case(DType::kF16, AttentionShape{4, 2, 32}, 16, {40}, rng);
  c.block_table.set_int(1, 1000);
  DecodeAttentionArgs decode{arena.upload(c.q),
                             arena.upload(c.k_cache),
                             arena.upload(c.v_cache),
                             arena.upload(c.block_table),
                             arena.upload(c.context_lens),
                             arena.empty(DType::kF16, {1, 4, 32}),
                             0.17f,
                             c.max_context};
  EXPECT_EQ(run_and_sync(decode).code(), StatusCode::kInvalidArgument);

  PermuteArgs permute{arena.upload(table),
                      arena.upload(int_tensor({10, 1}, {0, 1, 2, 3, 4, 5, 6, 7, 8, -1})),
                      arena.empty(DType::kF16, {10, 8}),
                      arena.empty(DType::kI32, {10, 1}),
                      arena.empty(DType::kI32, {9}),
                      8};
  EXPECT_EQ(run_and_sync(permute).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(backend->synchronize(arena.stream()).ok());
}

TEST(DUPLEX_CONFORMANCE_SUITE, LmHead) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(13);
  for (DType dtype : kFloatTypes)
    for (auto [t, v] : {std::pair<std::int64_t, std::int64_t>{1, 1000}, {5, 1001}, {3, 32000}}) {
      SCOPED_TRACE(label(dtype, "t", t, " v", v));
      const std::int64_t h = 256;
      DeviceArena arena(*backend);
      HostTensor hidden = random_tensor(dtype, {t, h}, rng), weight = random_tensor(dtype, {v, h}, rng);
      LmHeadArgs args{arena.upload(hidden), arena.upload(weight), arena.empty(DType::kI32, {t}),
                      arena.empty(DType::kF32, {t, v})};
      expect_run_ok(*backend, args, arena.stream());
      const Expected logits = gemm_ref(hidden, weight, nullptr, true, DType::kF32);
      EXPECT_TRUE(within_bound(arena.download(args.logits), logits));
      const HostTensor ids = arena.download(args.next_ids);
      for (std::int64_t i = 0; i < t; ++i) {
        const auto row = logits.value.begin() + i * v;
        const auto best = std::max_element(row, row + v) - row;
        const std::int32_t got = ids.get_int(i);
        ASSERT_GE(got, 0);
        ASSERT_LT(got, v);
        const auto at = [&](std::int64_t j) { return static_cast<std::size_t>(i * v + j); };
        EXPECT_LE(logits.value[at(best)] - logits.value[at(got)],
                  logits.bound[at(best)] + logits.bound[at(got)])
            << "token " << i << ": argmax " << got << " but the reference's is " << best;
      }
    }
}

// Phi-3.5-MoE's lm_head bias: logits + bias in FP32, the argmax over the biased logits.
TEST(DUPLEX_CONFORMANCE_SUITE, LmHeadBias) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(29);
  for (DType dtype : kFloatTypes) {
    SCOPED_TRACE(dtype_name(dtype));
    const std::int64_t t = 3, v = 1001, h = 64;
    DeviceArena arena(*backend);
    HostTensor hidden = random_tensor(dtype, {t, h}, rng),
               weight = random_tensor(dtype, {v, h}, rng, -0.1, 0.1),
               bias = random_tensor(dtype, {v}, rng, -4.0, 4.0);
    LmHeadArgs args{arena.upload(hidden), arena.upload(weight), arena.empty(DType::kI32, {t}),
                    arena.empty(DType::kF32, {t, v}), arena.upload(bias)};
    expect_run_ok(*backend, args, arena.stream());
    Expected logits = gemm_ref(hidden, weight, nullptr, true, DType::kF32);
    for (std::int64_t i = 0; i < t * v; ++i) {
      const auto u = static_cast<std::size_t>(i);
      logits.value[u] += bias.get(i % v);
      logits.bound[u] += kU32 * std::abs(logits.value[u]);  // the FP32 addition
    }
    EXPECT_TRUE(within_bound(arena.download(args.logits), logits));
    const HostTensor ids = arena.download(args.next_ids);
    for (std::int64_t i = 0; i < t; ++i) {
      const auto row = logits.value.begin() + i * v;
      const auto best = std::max_element(row, row + v) - row;
      const auto at = [&](std::int64_t j) { return static_cast<std::size_t>(i * v + j); };
      EXPECT_LE(logits.value[at(best)] - logits.value[at(ids.get_int(i))],
                logits.bound[at(best)] + logits.bound[at(ids.get_int(i))]);
    }
  }
}

// Gemma 2's final soft-cap: logits (after the optional bias) become cap * tanh(logit / cap) in FP32, and
// next_ids is their argmax. Caps 30 (a mild change: logits reach ~17) and 2 (most logits saturate), with and
// without a bias; next_ids must be the first maximum of the returned capped logits exactly, and within the
// bounds of the reference's argmax; without `logits` the ids are the same.
TEST(DUPLEX_CONFORMANCE_SUITE, LmHeadSoftcap) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(31);
  for (DType dtype : kFloatTypes)
    for (float cap : {30.0f, 2.0f})
      for (bool with_bias : {false, true}) {
        SCOPED_TRACE(label(dtype, "softcap ", cap, with_bias ? " bias" : ""));
        const std::int64_t t = 5, v = 1001, h = 256;
        DeviceArena arena(*backend);
        HostTensor hidden = random_tensor(dtype, {t, h}, rng), weight = random_tensor(dtype, {v, h}, rng);
        HostTensor bias = random_tensor(dtype, {v}, rng, -4.0, 4.0);
        const Tensor bias_d = with_bias ? arena.upload(bias) : Tensor{};
        LmHeadArgs args{arena.upload(hidden),
                        arena.upload(weight),
                        arena.empty(DType::kI32, {t}),
                        arena.empty(DType::kF32, {t, v}),
                        bias_d,
                        cap};
        expect_run_ok(*backend, args, arena.stream());
        Expected raw = gemm_ref(hidden, weight, nullptr, true, DType::kF32);
        if (with_bias)
          for (std::int64_t i = 0; i < t * v; ++i) {
            const auto u = static_cast<std::size_t>(i);
            raw.value[u] += bias.get(i % v);
            raw.bound[u] += kU32 * std::abs(raw.value[u]);  // the FP32 addition
          }
        const Expected capped = softcap_ref(raw, cap);
        const HostTensor logits = arena.download(args.logits), ids = arena.download(args.next_ids);
        EXPECT_TRUE(within_bound(logits, capped));
        LmHeadArgs ids_only = args;
        ids_only.logits = Tensor{};
        ids_only.next_ids = arena.empty(DType::kI32, {t});
        expect_run_ok(*backend, ids_only, arena.stream());
        const HostTensor ids_alone = arena.download(ids_only.next_ids);
        for (std::int64_t i = 0; i < t; ++i) {
          const auto at = [&](std::int64_t j) { return static_cast<std::size_t>(i * v + j); };
          std::int64_t first_max = 0;  // of the capped logits the op returned
          for (std::int64_t j = 1; j < v; ++j)
            if (logits.get(i * v + j) > logits.get(i * v + first_max)) first_max = j;
          EXPECT_EQ(ids.get_int(i), first_max) << "token " << i;
          EXPECT_EQ(ids_alone.get_int(i), ids.get_int(i)) << "token " << i << " without logits";
          const auto row = capped.value.begin() + i * v;
          const auto best = std::max_element(row, row + v) - row;
          EXPECT_LE(capped.value[at(best)] - capped.value[at(ids.get_int(i))],
                    capped.bound[at(best)] + capped.bound[at(ids.get_int(i))])
              << "token " << i << ": argmax " << ids.get_int(i) << " but the reference's is " << best;
        }
        if (cap == 30.0f) {
          // The cap is monotonic: where it cannot create ties (no logit saturates), the uncapped op picks the
          // same ids, while its logits differ (the top ones by ~1.5).
          LmHeadArgs uncapped = args;
          uncapped.softcap = 0.0f;
          uncapped.next_ids = arena.empty(DType::kI32, {t});
          uncapped.logits = arena.empty(DType::kF32, {t, v});
          expect_run_ok(*backend, uncapped, arena.stream());
          const HostTensor raw_ids = arena.download(uncapped.next_ids),
                           raw_logits = arena.download(uncapped.logits);
          double largest_change = 0.0;
          for (std::int64_t i = 0; i < t; ++i) EXPECT_EQ(raw_ids.get_int(i), ids.get_int(i)) << "token " << i;
          for (std::int64_t i = 0; i < t * v; ++i)
            largest_change = std::max(largest_change, std::abs(raw_logits.get(i) - logits.get(i)));
          EXPECT_GT(largest_change, 0.5);
        }
      }
}

// Logits whose capped values round to the same FP32 number tie, and the tie goes to the lowest id: raw logits
// 40 (id 2) and 60 (id 5) both cap to 2 * tanhf(20 or 30) = 2 exactly.
TEST(DUPLEX_CONFORMANCE_SUITE, LmHeadSoftcapSaturationTies) {
  DUPLEX_GET_BACKEND(backend);
  DeviceArena arena(*backend);
  HostTensor hidden(DType::kF16, {1, 4}), weight(DType::kF16, {6, 4});
  for (std::int64_t i = 0; i < 4; ++i) hidden.set(i, 1.0);
  for (std::int64_t r = 0; r < 6; ++r)
    for (std::int64_t c = 0; c < 4; ++c) weight.set(r * 4 + c, r == 2 ? 10.0 : r == 5 ? 15.0 : 0.25);
  for (auto [cap, want] : {std::pair<float, std::int32_t>{0.0f, 5}, {2.0f, 2}, {100.0f, 5}}) {
    SCOPED_TRACE(cap);
    LmHeadArgs args{arena.upload(hidden),
                    arena.upload(weight),
                    arena.empty(DType::kI32, {1}),
                    arena.empty(DType::kF32, {1, 6}),
                    Tensor{},
                    cap};
    expect_run_ok(*backend, args, arena.stream());
    EXPECT_EQ(arena.download(args.next_ids).get_int(0), want);
    const HostTensor logits = arena.download(args.logits);
    if (cap == 2.0f) {
      EXPECT_EQ(logits.get(2), 2.0);
      EXPECT_EQ(logits.get(5), 2.0);
    }
  }
}

TEST(DUPLEX_CONFORMANCE_SUITE, LmHeadTieTakesLowestId) {
  DUPLEX_GET_BACKEND(backend);
  DeviceArena arena(*backend);
  HostTensor hidden(DType::kF16, {1, 4}), weight(DType::kF16, {6, 4});
  for (std::int64_t i = 0; i < 4; ++i) hidden.set(i, 1.0);
  for (std::int64_t r = 0; r < 6; ++r)
    for (std::int64_t c = 0; c < 4; ++c) weight.set(r * 4 + c, (r == 2 || r == 4) ? 0.5 : 0.25);
  LmHeadArgs args{arena.upload(hidden), arena.upload(weight), arena.empty(DType::kI32, {1}), Tensor{}};
  expect_run_ok(*backend, args, arena.stream());
  EXPECT_EQ(arena.download(args.next_ids).get_int(0), 2);
}

TEST(DUPLEX_CONFORMANCE_SUITE, PartialSum) {
  DUPLEX_GET_BACKEND(backend);
  std::mt19937_64 rng(14);
  for (DType dtype : kFloatTypes)
    for (auto [p, n] : {std::pair<std::int64_t, std::int64_t>{1, 1}, {4, 1000}, {5, 4099}}) {
      SCOPED_TRACE(label(dtype, p, "x", n));
      DeviceArena arena(*backend);
      HostTensor partials = random_tensor(dtype, {p, n}, rng);
      PartialSumArgs args{arena.upload(partials), arena.empty(dtype, {n})};
      expect_run_ok(*backend, args, arena.stream());
      EXPECT_TRUE(within_bound(arena.download(args.out), partial_sum_ref(partials)));
    }
}

}  // namespace
}  // namespace duplex::kernels::test
