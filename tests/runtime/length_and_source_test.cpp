#include <gtest/gtest.h>

#include <cmath>

#include "duplex/base/error.hpp"
#include "duplex/runtime/scheduler/serving_loop.hpp"
#include "duplex/runtime/workload/length_distribution.hpp"
#include "duplex/runtime/workload/request_source.hpp"

namespace duplex::runtime {
namespace {

TEST(LengthSampler, FixedIsExact) {
  LengthSampler s({LengthDistribution::Kind::fixed, 128, 32, 0.0, 0.0}, 1);
  for (int i = 0; i < 10; ++i) {
    const SampledLengths l = s.sample();
    EXPECT_EQ(l.input_tokens, 128);
    EXPECT_EQ(l.output_tokens, 32);
  }
}

TEST(LengthSampler, GaussianMomentsWithinFiveStandardErrors) {
  LengthSampler s({LengthDistribution::Kind::gaussian, 1024, 512, 100.0, 50.0}, 5);
  constexpr int kN = 50000;
  double sum = 0.0, sum_sq = 0.0, sum_out = 0.0;
  for (int i = 0; i < kN; ++i) {
    const SampledLengths l = s.sample();
    const auto x = static_cast<double>(l.input_tokens);
    sum += x;
    sum_sq += x * x;
    sum_out += static_cast<double>(l.output_tokens);
  }
  const double mean = sum / kN;
  const double sd = std::sqrt(sum_sq / kN - mean * mean);
  EXPECT_NEAR(mean, 1024.0, 5.0 * 100.0 / std::sqrt(kN));
  // Rounding to integers adds variance 1/12; 5 standard errors of a standard deviation: 5 * sd / sqrt(2N).
  EXPECT_NEAR(sd, std::sqrt(100.0 * 100.0 + 1.0 / 12.0), 5.0 * 100.0 / std::sqrt(2.0 * kN));
  EXPECT_NEAR(sum_out / kN, 512.0, 5.0 * 50.0 / std::sqrt(kN));
}

TEST(LengthSampler, GaussianClipsToOne) {
  LengthSampler s({LengthDistribution::Kind::gaussian, 2, 2, 50.0, 50.0}, 5);
  int ones = 0;
  for (int i = 0; i < 1000; ++i) {
    const SampledLengths l = s.sample();
    ASSERT_GE(l.input_tokens, 1);
    ASSERT_GE(l.output_tokens, 1);
    ones += l.input_tokens == 1 ? 1 : 0;
  }
  EXPECT_GT(ones, 400);  // about half the mass lies below 1
}

TEST(LengthSampler, BadDistributionIsError) {
  EXPECT_THROW(LengthSampler({LengthDistribution::Kind::fixed, 0, 4, 0.0, 0.0}, 1), Error);
  EXPECT_THROW(LengthSampler({LengthDistribution::Kind::gaussian, 4, 4, -1.0, 0.0}, 1), Error);
}

TEST(PoissonSource, GapsHaveTheRateAndArrivalsAreOrdered) {
  constexpr std::int64_t kN = 40000;
  PoissonSource src(8.0, kN, {LengthDistribution::Kind::fixed, 16, 16, 0.0, 0.0}, 3);
  EXPECT_EQ(src.take_arrived(Time{}).size(), 0u);
  const std::vector<RequestSpec> all = src.take_arrived(seconds(1e9));
  ASSERT_EQ(static_cast<std::int64_t>(all.size()), kN);
  EXPECT_TRUE(src.exhausted());
  for (std::size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].id, static_cast<RequestId>(i));
    if (i > 0) {
      EXPECT_GE(all[i].arrival, all[i - 1].arrival);
    }
  }
  // Mean gap 1/8 s within 5 standard errors (the exponential's sd equals its mean).
  const double mean_gap = all.back().arrival.si() / static_cast<double>(kN);
  EXPECT_NEAR(mean_gap, 0.125, 5.0 * 0.125 / std::sqrt(static_cast<double>(kN)));
}

TEST(PoissonSource, SameSeedSameArrivals) {
  const LengthDistribution lengths{LengthDistribution::Kind::gaussian, 100, 100, 10.0, 10.0};
  PoissonSource a(5.0, 100, lengths, 7), b(5.0, 100, lengths, 7), c(5.0, 100, lengths, 8);
  const auto ra = a.take_arrived(seconds(1e6));
  EXPECT_EQ(ra, b.take_arrived(seconds(1e6)));
  EXPECT_NE(ra, c.take_arrived(seconds(1e6)));
}

TEST(PoissonSource, BadParametersAreErrors) {
  const LengthDistribution lengths{LengthDistribution::Kind::fixed, 1, 1, 0.0, 0.0};
  EXPECT_THROW(PoissonSource(0.0, 10, lengths, 1), Error);
  EXPECT_THROW(PoissonSource(1.0, 0, lengths, 1), Error);
  EXPECT_THROW(ClosedLoopSource(0, 10, lengths, 1), Error);
}

TEST(ClosedLoopSource, ReplacesFinishedRequestsUntilTheTotal) {
  ClosedLoopSource src(3, 5, {LengthDistribution::Kind::fixed, 8, 4, 0.0, 0.0}, 1);
  auto first = src.take_arrived(Time{});
  ASSERT_EQ(first.size(), 3u);
  EXPECT_FALSE(src.next_arrival().has_value());
  src.on_finished(first[1].id, ms(7));
  EXPECT_EQ(src.next_arrival(), ms(7));
  EXPECT_TRUE(src.take_arrived(ms(6)).empty());
  const auto second = src.take_arrived(ms(7));
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].id, 3);
  EXPECT_EQ(second[0].arrival, ms(7));
  src.on_finished(0, ms(8));
  src.on_finished(2, ms(9));  // the total (5) is reached: no sixth request
  EXPECT_EQ(src.take_arrived(ms(10)).size(), 1u);
  EXPECT_TRUE(src.exhausted());
}

TEST(ClosedLoopSource, KeepsConcurrencyUsersBusyInTheServingLoop) {
  SchedulerConfig config;
  config.kv_capacity_blocks = 1000;
  config.max_batch = 64;
  Scheduler scheduler(config);
  ClosedLoopSource src(4, 20, {LengthDistribution::Kind::gaussian, 30, 10, 5.0, 3.0}, 2);
  std::int64_t max_running = 0;
  const ServingRun run = run_serving_loop(
      scheduler, src, [](const StepPlan&) { return ms(1); },
      [&](const StepPlan& plan, const StepOutcome&, const Scheduler&) {
        max_running = std::max(max_running, static_cast<std::int64_t>(plan.requests.size()));
      });
  EXPECT_EQ(max_running, 4);
  ASSERT_EQ(run.records.size(), 20u);
  for (const auto& [id, r] : run.records) {
    EXPECT_TRUE(r.finished());
    // A replacement arrives when its predecessor finishes and starts at that very step boundary.
    EXPECT_EQ(r.first_scheduled, r.spec.arrival);
  }
}

TEST(TraceSource, ReplaysInArrivalOrder) {
  TraceSource src({{7, ms(5), 3, 2}, {8, ms(1), 4, 2}, {9, ms(5), 5, 2}});
  EXPECT_EQ(src.total_requests(), 3);
  EXPECT_EQ(src.next_arrival(), ms(1));
  const auto a = src.take_arrived(ms(4));
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0], (RequestSpec{0, ms(1), 4, 2}));
  const auto b = src.take_arrived(ms(5));
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].input_tokens, 3);  // stable among equal arrivals
  EXPECT_EQ(b[1].id, 2);
  EXPECT_TRUE(src.exhausted());
}

}  // namespace
}  // namespace duplex::runtime
