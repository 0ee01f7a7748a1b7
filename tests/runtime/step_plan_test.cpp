#include <gtest/gtest.h>

#include "duplex/runtime/scheduler/step_plan.hpp"

namespace duplex::runtime {
namespace {

TEST(StepPlan, ShapesGroupIdenticalWork) {
  StepPlan plan;
  plan.requests = {
      {1, 1, 100, TokenPhase::decode, true},  {2, 1, 100, TokenPhase::decode, true},
      {3, 1, 130, TokenPhase::decode, true},  {4, 64, 0, TokenPhase::prefill, false},
      {5, 1, 100, TokenPhase::decode, true},
  };
  const std::vector<StepShape> exact = plan.shapes();
  ASSERT_EQ(exact.size(), 3u);
  EXPECT_EQ(exact[0], (StepShape{64, 0, TokenPhase::prefill, 1}));
  EXPECT_EQ(exact[1], (StepShape{1, 100, TokenPhase::decode, 3}));
  EXPECT_EQ(exact[2], (StepShape{1, 130, TokenPhase::decode, 1}));
  const std::vector<StepShape> bucketed = plan.shapes(64);  // 100 and 130 round up to 128 and 192
  ASSERT_EQ(bucketed.size(), 3u);
  EXPECT_EQ(bucketed[1], (StepShape{1, 128, TokenPhase::decode, 3}));
  EXPECT_EQ(bucketed[2], (StepShape{1, 192, TokenPhase::decode, 1}));
  const std::vector<StepShape> coarse = plan.shapes(256);
  ASSERT_EQ(coarse.size(), 2u);
  EXPECT_EQ(coarse[1], (StepShape{1, 256, TokenPhase::decode, 4}));
}

TEST(StepPlan, ShapesSeparateCompletingPrefills) {
  StepPlan plan;
  // Two 64-token chunks at context 0: request 7's prompt ends here (it samples), request 8's does not.
  plan.requests = {{7, 64, 0, TokenPhase::prefill, true}, {8, 64, 0, TokenPhase::prefill, false},
                   {9, 1, 40, TokenPhase::decode, true}};
  const std::vector<StepShape> shapes = plan.shapes();
  ASSERT_EQ(shapes.size(), 3u);
  EXPECT_EQ(shapes[0], (StepShape{64, 0, TokenPhase::prefill, 1, false}));
  EXPECT_EQ(shapes[1], (StepShape{64, 0, TokenPhase::prefill, 1, true}));
  EXPECT_EQ(shapes[2], (StepShape{1, 40, TokenPhase::decode, 1, false}));  // a decode completes no prefill
}

}  // namespace
}  // namespace duplex::runtime
