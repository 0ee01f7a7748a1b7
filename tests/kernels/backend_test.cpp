// The interface around the ops: can_implement's status codes for bad arguments, data-dependent errors from
// run, determinism, and backend selection without a GPU.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>

#include "duplex/base/error.hpp"
#include "harness.hpp"

namespace duplex::kernels::test {
namespace {

class BackendInterface : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> cpu = make_cpu_backend();
  std::vector<std::uint16_t> buf = std::vector<std::uint16_t>(4096, 0);
  Tensor f16(std::initializer_list<std::int64_t> shape, std::size_t offset = 0) {
    return Tensor::contiguous(buf.data() + offset, DType::kF16, shape);
  }
  // A router over 4 tokens, hidden 8, 3 experts, top k.
  RouterArgs router(std::int64_t k) {
    return RouterArgs{f16({4, 8}),
                      f16({3, 8}, 100),
                      Tensor::contiguous(buf.data() + 200, DType::kI32, {4, k}),
                      Tensor::contiguous(buf.data() + 300, DType::kF32, {4, k}),
                      Tensor{},
                      k,
                      true};
  }
};

TEST_F(BackendInterface, GemmShapeMismatchIsInvalidArgumentNamingTheOperand) {
  GemmArgs args{f16({4, 8}), f16({16, 7}, 100), f16({4, 16}, 300)};
  const Status s = cpu->can_implement(args);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("gemm: b is f16[16,7]@host"), std::string::npos) << s.message();
  EXPECT_EQ(cpu->run(args, {}).code(), StatusCode::kInvalidArgument);
}

TEST_F(BackendInterface, MixedDtypesAreUnsupportedDtype) {
  std::vector<float> f(64);
  GemmArgs args{f16({2, 4}), f16({3, 4}, 100), Tensor::contiguous(f.data(), DType::kF32, {2, 3})};
  EXPECT_EQ(cpu->can_implement(args).code(), StatusCode::kUnsupportedDType);
  std::vector<std::int32_t> ids(8);
  EmbeddingArgs wrong_ids{f16({10, 4}), Tensor::contiguous(ids.data(), DType::kF32, {2}), f16({2, 4}, 100)};
  EXPECT_EQ(cpu->can_implement(wrong_ids).code(), StatusCode::kUnsupportedDType);
}

TEST_F(BackendInterface, DeviceTensorOnCpuIsWrongLocation) {
  Tensor x = f16({2, 8});
  x.location = Location::kDevice;
  SoftmaxArgs args{x, f16({2, 8}, 100)};
  EXPECT_EQ(cpu->can_implement(args).code(), StatusCode::kWrongLocation);
}

TEST_F(BackendInterface, NonContiguousIsUnsupportedLayout) {
  Tensor x = f16({4, 8});
  x.strides = {16, 1};
  SoftmaxArgs args{x, f16({4, 8}, 100)};
  EXPECT_EQ(cpu->can_implement(args).code(), StatusCode::kUnsupportedLayout);
}

// Decode attention takes strided caches (rows contiguous, K and V in one layout); anything else is named.
TEST_F(BackendInterface, DecodeCacheStridesAreChecked) {
  std::vector<std::int32_t> table = {0, 1}, lens = {20};
  auto decode_with = [&](const Tensor& k, const Tensor& v) {
    return DecodeAttentionArgs{f16({1, 2, 8}),
                               k,
                               v,
                               Tensor::contiguous(table.data(), DType::kI32, {1, 2}),
                               Tensor::contiguous(lens.data(), DType::kI32, {1}),
                               f16({1, 2, 8}, 1200),
                               1.0f,
                               32};
  };
  // Head-major pages [2 pages][1 head][16 slots][8] seen as [pages, slots, heads, D]: accepted.
  const Tensor k_hnd = Tensor::strided(buf.data() + 100, DType::kF16, {2, 16, 1, 8}, {128, 8, 128, 1});
  const Tensor v_hnd = Tensor::strided(buf.data() + 600, DType::kF16, {2, 16, 1, 8}, {128, 8, 128, 1});
  EXPECT_TRUE(cpu->can_implement(decode_with(k_hnd, v_hnd)).ok());
  // V in another layout than K.
  const Status mixed = cpu->can_implement(decode_with(k_hnd, f16({2, 16, 1, 8}, 600)));
  EXPECT_EQ(mixed.code(), StatusCode::kUnsupportedLayout);
  EXPECT_NE(mixed.message().find("v_cache's strides (128, 8, 8, 1) differ from k_cache's (128, 8, 128, 1)"),
            std::string::npos)
      << mixed.message();
  // Rows that are not contiguous.
  const Tensor k_gapped = Tensor::strided(buf.data() + 100, DType::kF16, {2, 16, 1, 8}, {256, 16, 16, 2});
  const Status gapped = cpu->can_implement(decode_with(k_gapped, k_gapped));
  EXPECT_EQ(gapped.code(), StatusCode::kUnsupportedLayout);
  EXPECT_NE(gapped.message().find("k_cache has stride 2 along D; expected 1"), std::string::npos)
      << gapped.message();
  EXPECT_THROW((void)Tensor::strided(buf.data(), DType::kF16, {2, 2}, {2}), Error);
  EXPECT_THROW((void)Tensor::strided(buf.data(), DType::kF16, {2, 2}, {-2, 1}), Error);
}

TEST_F(BackendInterface, AbsentOperandAndAliasingAreRejected) {
  GemvArgs absent{f16({4, 8}), Tensor{}, f16({4}, 100)};
  EXPECT_EQ(cpu->can_implement(absent).code(), StatusCode::kInvalidArgument);
  GemmArgs aliased{f16({4, 4}), f16({4, 4}, 100), f16({4, 4}, 8)};
  EXPECT_EQ(cpu->can_implement(aliased).code(), StatusCode::kInvalidArgument);
}

TEST_F(BackendInterface, RouterSharedGateContract) {
  RouterArgs a = router(1);
  a.shared_gate_weight = f16({1, 8}, 400);  // without its output
  const Status alone = cpu->can_implement(a);
  EXPECT_EQ(alone.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(alone.message().find("shared_gate_weight and shared_gate must be given together"),
            std::string::npos)
      << alone.message();
  a.shared_gate = Tensor::contiguous(buf.data() + 500, DType::kF32, {3});  // T is 4
  EXPECT_EQ(cpu->can_implement(a).code(), StatusCode::kInvalidArgument);
  a.shared_gate = Tensor::contiguous(buf.data() + 500, DType::kF32, {4});
  EXPECT_TRUE(cpu->can_implement(a).ok()) << cpu->can_implement(a).message();
}

TEST_F(BackendInterface, AttentionContractViolations) {
  std::vector<std::int64_t> starts = {0, 3, 2};
  PrefillAttentionArgs decreasing{
      f16({2, 4, 8}), f16({2, 2, 8}, 100), f16({2, 2, 8}, 200), f16({2, 4, 8}, 300), starts, 1.0f};
  EXPECT_EQ(cpu->can_implement(decreasing).code(), StatusCode::kInvalidArgument);
  std::vector<std::int64_t> ok_starts = {0, 2};
  PrefillAttentionArgs bad_group{f16({2, 3, 8}),      f16({2, 2, 8}, 100), f16({2, 2, 8}, 200),
                                 f16({2, 3, 8}, 300), ok_starts,           1.0f};
  EXPECT_EQ(cpu->can_implement(bad_group).code(), StatusCode::kInvalidArgument);
  PrefillAttentionArgs negative_window{f16({2, 4, 8}),      f16({2, 2, 8}, 100), f16({2, 2, 8}, 200),
                                       f16({2, 4, 8}, 300), ok_starts,           1.0f, -1};
  const Status window = cpu->can_implement(negative_window);
  EXPECT_EQ(window.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(window.message().find("window is -1; expected >= 1 (or 0: no sliding window)"), std::string::npos)
      << window.message();
  RopeArgs odd_rotary{f16({2, 2, 8}), Tensor::contiguous(buf.data() + 200, DType::kI32, {2}), 10000.0f, 3};
  EXPECT_EQ(cpu->can_implement(odd_rotary).code(), StatusCode::kInvalidArgument);
  const std::vector<float> three = {1.0f, 0.5f, 0.25f}, bad = {1.0f, 0.0f, 0.25f, 0.125f};
  RopeArgs wrong_count{f16({2, 2, 8}), Tensor::contiguous(buf.data() + 200, DType::kI32, {2}), 10000.0f, 0,
                       three};
  const Status count = cpu->can_implement(wrong_count);
  EXPECT_EQ(count.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(count.message().find("inv_freq has 3 frequencies; expected rotary_dim / 2 = 4"),
            std::string::npos)
      << count.message();
  RopeArgs zero{f16({2, 2, 8}), Tensor::contiguous(buf.data() + 200, DType::kI32, {2}), 10000.0f, 0, bad};
  EXPECT_EQ(cpu->can_implement(zero).code(), StatusCode::kInvalidArgument);
  RopeArgs unscaled{
      f16({2, 2, 8}), Tensor::contiguous(buf.data() + 200, DType::kI32, {2}), 10000.0f, 0, {}, 0.0f};
  EXPECT_EQ(cpu->can_implement(unscaled).code(), StatusCode::kInvalidArgument);
}

TEST_F(BackendInterface, NonFiniteScalesAreRejected) {
  NormArgs norm{NormKind::kRms, f16({2, 8}), f16({8}, 100), Tensor{}, f16({2, 8}, 200), 1e-6f, 1.0f};
  EXPECT_TRUE(cpu->can_implement(norm).ok());
  norm.weight_offset = std::numeric_limits<float>::infinity();
  const Status offset = cpu->can_implement(norm);
  EXPECT_EQ(offset.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(offset.message().find("weight_offset is inf; expected a finite number"), std::string::npos)
      << offset.message();
  std::vector<std::int32_t> ids = {0, 1};
  EmbeddingArgs embed{f16({10, 4}), Tensor::contiguous(ids.data(), DType::kI32, {2}), f16({2, 4}, 100),
                      std::numeric_limits<float>::quiet_NaN()};
  const Status scale = cpu->can_implement(embed);
  EXPECT_EQ(scale.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(scale.message().find("scale is nan; expected a finite number"), std::string::npos)
      << scale.message();
}

TEST_F(BackendInterface, SparseMixerAndLmHeadBiasContracts) {
  RouterArgs a = router(1);
  a.kind = RouterKind::kSparseMixer;
  const Status k1 = cpu->can_implement(a);
  EXPECT_EQ(k1.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(k1.message().find("top_k is 1 with the sparsemixer router; expected 2"), std::string::npos)
      << k1.message();
  a = router(2);
  a.kind = RouterKind::kSparseMixer;
  EXPECT_TRUE(cpu->can_implement(a).ok()) << cpu->can_implement(a).message();
  a.jitter_eps = -0.5f;
  EXPECT_EQ(cpu->can_implement(a).code(), StatusCode::kInvalidArgument);
  LmHeadArgs head{f16({2, 8}), f16({10, 8}, 100), Tensor::contiguous(buf.data() + 300, DType::kI32, {2}),
                  Tensor{}, f16({9}, 400)};  // a bias of 9 for a vocabulary of 10
  EXPECT_EQ(cpu->can_implement(head).code(), StatusCode::kInvalidArgument);
  head.bias = f16({10}, 400);
  EXPECT_TRUE(cpu->can_implement(head).ok()) << cpu->can_implement(head).message();
}

TEST_F(BackendInterface, OutOfRangeIndicesFailAtRun) {
  std::vector<std::int32_t> ids = {0, 10};
  EmbeddingArgs embed{f16({10, 4}), Tensor::contiguous(ids.data(), DType::kI32, {2}), f16({2, 4}, 100)};
  ASSERT_TRUE(cpu->can_implement(embed).ok());
  const Status s = cpu->run(embed, {});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("ids[1] = 10"), std::string::npos) << s.message();

  std::vector<std::int32_t> topk = {0, 8};
  std::vector<std::int32_t> rows(2), offsets(9);
  PermuteArgs permute{f16({1, 4}),
                      Tensor::contiguous(topk.data(), DType::kI32, {1, 2}),
                      f16({2, 4}, 100),
                      Tensor::contiguous(rows.data(), DType::kI32, {1, 2}),
                      Tensor::contiguous(offsets.data(), DType::kI32, {9}),
                      8};
  EXPECT_EQ(cpu->run(permute, {}).code(), StatusCode::kInvalidArgument);

  std::vector<std::int32_t> table = {0, 5}, lens = {20};
  DecodeAttentionArgs decode{f16({1, 2, 8}),
                             f16({2, 16, 1, 8}, 100),
                             f16({2, 16, 1, 8}, 600),
                             Tensor::contiguous(table.data(), DType::kI32, {1, 2}),
                             Tensor::contiguous(lens.data(), DType::kI32, {1}),
                             f16({1, 2, 8}, 1200),
                             1.0f,
                             32};
  const Status d = cpu->run(decode, {});
  EXPECT_EQ(d.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(d.message().find("block_table[0][1] = 5"), std::string::npos) << d.message();
}

TEST_F(BackendInterface, ExpertOffsetsMustCoverTheRows) {
  std::vector<std::int64_t> offsets = {0, 2, 3};
  ExpertFfnArgs args{FfnKind::kGated,     Activation::kSilu,   f16({4, 8}),      f16({2, 6, 8}, 100),
                     f16({2, 6, 8}, 300), f16({2, 8, 6}, 500), f16({4, 8}, 700), offsets,
                     Tensor{}};
  EXPECT_EQ(cpu->can_implement(args).code(), StatusCode::kInvalidArgument);
}

TEST_F(BackendInterface, ExpertBiasMustMatchExpertsAndWidth) {
  std::vector<std::int64_t> offsets = {0, 2, 4};
  ExpertFfnArgs args{FfnKind::kTwoMatrix, Activation::kRelu, f16({4, 8}),      f16({2, 6, 8}, 100),
                     Tensor{},            f16({2, 8, 6}, 500), f16({4, 8}, 700), offsets,
                     f16({2, 6}, 900)};
  EXPECT_TRUE(cpu->can_implement(args).ok()) << cpu->can_implement(args).to_string();
  args.b_in = f16({2, 5}, 900);
  const Status s = cpu->can_implement(args);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("b_in"), std::string::npos) << s.message();
}

TEST_F(BackendInterface, RunsAreBitIdenticalAcrossRepeats) {
  std::mt19937_64 rng(21);
  HostTensor a(DType::kF16, {33, 300}), b(DType::kF16, {70, 300});
  fill_uniform(a, rng);
  fill_uniform(b, rng);
  std::vector<std::uint16_t> c1(33 * 70), c2(33 * 70);
  GemmArgs args{Tensor::contiguous(a.data(), DType::kF16, {33, 300}),
                Tensor::contiguous(b.data(), DType::kF16, {70, 300}),
                Tensor::contiguous(c1.data(), DType::kF16, {33, 70})};
  ASSERT_TRUE(cpu->run(args, {}).ok());
  args.c.data = c2.data();
  ASSERT_TRUE(cpu->run(args, {}).ok());
  EXPECT_EQ(std::memcmp(c1.data(), c2.data(), c1.size() * 2), 0);
}

TEST_F(BackendInterface, CpuStreamsAndEventsOrderNothingAndSucceed) {
  const Stream s = cpu->create_stream();
  const Event e = cpu->create_event();
  EXPECT_TRUE(cpu->record_event(e, s).ok());
  EXPECT_TRUE(cpu->stream_wait_event(s, e).ok());
  EXPECT_TRUE(cpu->synchronize(s).ok());
  cpu->destroy_event(e);
  cpu->destroy_stream(s);
  void* p = cpu->allocate(100);
  ASSERT_NE(p, nullptr);
  const char text[] = "duplex";
  ASSERT_TRUE(cpu->copy_from_host(p, text, sizeof text, s).ok());
  char back[sizeof text] = {};
  ASSERT_TRUE(cpu->copy_to_host(back, p, sizeof text, s).ok());
  EXPECT_STREQ(back, "duplex");
  cpu->deallocate(p);
  EXPECT_EQ(cpu->memory_location(), Location::kHost);
  EXPECT_NE(cpu->description().find("OpenBLAS"), std::string::npos);
}

TEST(BackendSelection, WithoutAGpuTheBestBackendIsTheCpu) {
  if (cuda_device_status().ok()) GTEST_SKIP() << "a CUDA device is present";
  EXPECT_EQ(cuda_device_status().code(), StatusCode::kNoDevice);
  EXPECT_FALSE(cuda_device_status().message().empty());
  Status why;
  EXPECT_EQ(make_cuda_backend(&why), nullptr);
  EXPECT_EQ(why.code(), StatusCode::kNoDevice);
  EXPECT_EQ(make_best_backend()->kind(), BackendKind::kCpu);
}

// The CUDA options the conformance suite runs with come from DUPLEX_TEST_CUDA_DECODE_KERNEL; a value that is
// not a kernel's name is an error naming the variable, not the default.
TEST(BackendSelection, TheDecodeKernelUnderTestIsReadStrictly) {
  const char* saved = std::getenv("DUPLEX_TEST_CUDA_DECODE_KERNEL");
  const std::string restore = saved != nullptr ? saved : "";
  ::unsetenv("DUPLEX_TEST_CUDA_DECODE_KERNEL");
  EXPECT_EQ(cuda_options_under_test().decode_attention, CudaDecodeKernel::kSharedRing);
  ::setenv("DUPLEX_TEST_CUDA_DECODE_KERNEL", "registers", 1);
  EXPECT_EQ(cuda_options_under_test().decode_attention, CudaDecodeKernel::kRegisters);
  ::setenv("DUPLEX_TEST_CUDA_DECODE_KERNEL", "shared-ring", 1);
  EXPECT_EQ(cuda_options_under_test().decode_attention, CudaDecodeKernel::kSharedRing);
  ::setenv("DUPLEX_TEST_CUDA_DECODE_KERNEL", "regs", 1);
  try {
    (void)cuda_options_under_test();
    ADD_FAILURE() << "no error for DUPLEX_TEST_CUDA_DECODE_KERNEL=regs";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("DUPLEX_TEST_CUDA_DECODE_KERNEL is 'regs'; expected shared-ring"),
              std::string::npos)
        << e.what();
  }
  if (saved != nullptr) {
    ::setenv("DUPLEX_TEST_CUDA_DECODE_KERNEL", restore.c_str(), 1);
  } else {
    ::unsetenv("DUPLEX_TEST_CUDA_DECODE_KERNEL");
  }
}

TEST(TensorView, ContiguousStridesAndErrors) {
  float x[24];
  const Tensor t = Tensor::contiguous(x, DType::kF32, {2, 3, 4});
  EXPECT_EQ(t.strides[0], 12);
  EXPECT_EQ(t.strides[1], 4);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.describe(), "f32[2,3,4]@host");
  EXPECT_THROW(Tensor::contiguous(x, DType::kF32, {1, 1, 1, 1, 1}), Error);
  EXPECT_THROW(Tensor::contiguous(x, DType::kF32, {-1}), Error);
}

}  // namespace
}  // namespace duplex::kernels::test
