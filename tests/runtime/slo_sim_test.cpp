// Latency objectives in the serving simulator: time per output token per request, the share of requests
// meeting a TTFT / TPOT objective and the goodput, checked against the run's own latency figures.
#include <gtest/gtest.h>

#include "closed_loop_options.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/sim/serving_simulator.hpp"

namespace duplex::runtime {
namespace {

SimulationOptions with_slo(double ttft_ms, double tpot_ms) {
  SimulationOptions o = testing::closed_loop_options(64, 256, 64, 16, 4, 0.2);
  o.slo = LatencySlo{ttft_ms, tpot_ms};
  return o;
}

TEST(LatencySloSim, AttainmentAndGoodputFollowTheObjectives) {
  const auto model = compiler::load_model("mixtral-8x7b");
  const SystemSpec system = load_system("duplex-pe");
  const SystemResult none = simulate(model, system, with_slo(0, 0));
  EXPECT_FALSE(none.slo.has_value());
  EXPECT_FALSE(none.to_json().contains("slo"));
  // TPOT: each request's decode time over its outputs after the first; between the TBT extremes.
  EXPECT_GT(none.tpot_ms.p50, 0);
  EXPECT_LE(none.tpot_ms.p50, none.tbt_ms.p99);
  EXPECT_LE(none.tpot_ms.mean, none.e2e_ms.mean);

  // Objectives every request meets: all of them, goodput = throughput.
  const SystemResult loose = simulate(model, system, with_slo(1e6, 1e6));
  ASSERT_TRUE(loose.slo.has_value());
  EXPECT_EQ(loose.slo->met, loose.requests);
  EXPECT_DOUBLE_EQ(loose.slo->attainment, 1.0);
  EXPECT_DOUBLE_EQ(loose.slo->goodput_tok_s, loose.throughput_tok_s);
  EXPECT_DOUBLE_EQ(loose.slo->goodput_req_s, static_cast<double>(loose.requests) / loose.simulated_s);
  EXPECT_EQ(loose.simulated_s, none.simulated_s);  // objectives only measure

  // A TTFT objective at the median meets about half; adding a TPOT objective at the median meets fewer.
  const SystemResult ttft = simulate(model, system, with_slo(none.ttft_ms.p50, 0));
  EXPECT_GE(ttft.slo->attainment, 0.5);
  EXPECT_LT(ttft.slo->attainment, 1.0);
  const SystemResult both = simulate(model, system, with_slo(none.ttft_ms.p50, none.tpot_ms.p50));
  EXPECT_LT(both.slo->met, ttft.slo->met);
  EXPECT_LT(both.slo->goodput_req_s, ttft.slo->goodput_req_s);
  const nlohmann::json j = both.to_json()["slo"];
  EXPECT_EQ(j["met"].get<std::int64_t>(), both.slo->met);
  EXPECT_DOUBLE_EQ(j["tpot_ms"].get<double>(), none.tpot_ms.p50);
  // Objectives no request meets.
  EXPECT_EQ(simulate(model, system, with_slo(1e-6, 0)).slo->met, 0);
}

TEST(LatencySloSim, NegativeObjectivesAreRefused) {
  const auto model = compiler::load_model("tiny-moe");
  EXPECT_THROW(simulate(model, load_system("gpu"), with_slo(-1, 0)), Error);
  EXPECT_THROW(simulate(model, load_system("gpu"), with_slo(0, -0.5)), Error);
}

}  // namespace
}  // namespace duplex::runtime
