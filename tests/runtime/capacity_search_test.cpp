// Capacity search: the highest Poisson rate meeting latency objectives, checked against direct simulations at
// the rates it reports.
#include <gtest/gtest.h>

#include <cmath>

#include "closed_loop_options.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/sim/capacity_search.hpp"

namespace duplex::runtime {
namespace {

struct SearchSetup {
  compiler::ModelSpec model = compiler::load_model("mixtral-8x7b");
  SystemSpec system = load_system("gpu");
  SimulationOptions options = testing::closed_loop_options(96, 512, 32, 16, 7, 0.2);
};

SimulationOptions at_rate(SimulationOptions o, double rate) {
  o.workload.arrival.kind = ArrivalSpec::Kind::poisson;
  o.workload.arrival.rate_per_s = rate;
  return o;
}

// `o`'s requests as a trace ("t.csv") arriving in bursts of 4, burst i at i x `gap` seconds.
SimulationOptions traced(SimulationOptions o, double gap) {
  o.workload.arrival.kind = ArrivalSpec::Kind::trace;
  o.workload.arrival.trace_file = "t.csv";
  for (std::int64_t i = 0; i < o.workload.requests; ++i)
    o.workload.arrival.trace_rows.push_back(
        RequestSpec{i, Time::from_si(gap * static_cast<double>(i / 4)), 512, 32});
  return o;
}

// The TTFT of a request on an idle system: the median at a rate far below what it serves.
double idle_ttft_ms(const SearchSetup& s) {
  return simulate(s.model, s.system, at_rate(s.options, 0.01)).ttft_ms.p50;
}

TEST(CapacitySearch, ReportsTheRatesWhereAttainmentCrossesTheTarget) {
  SearchSetup s;
  s.options.slo = LatencySlo{5 * idle_ttft_ms(s), 0};
  const CapacityResult c = find_capacity(s.model, s.system, s.options, {});
  ASSERT_TRUE(c.converged());
  ASSERT_TRUE(c.closed_loop_rate.has_value());  // a closed-loop workload: the first rate from its throughput
  EXPECT_GT(*c.closed_loop_rate, 0);
  EXPECT_DOUBLE_EQ(c.probes.front().rate_per_s, *c.closed_loop_rate);
  EXPECT_LT(*c.max_rate, *c.failing_rate);
  EXPECT_LE(*c.failing_rate, *c.max_rate * 1.02);
  // Simulated directly at the two rates: the target met at one and not at the other, as the probes say.
  const SystemResult at_max = simulate(s.model, s.system, at_rate(s.options, *c.max_rate));
  const SystemResult at_failing = simulate(s.model, s.system, at_rate(s.options, *c.failing_rate));
  EXPECT_GE(at_max.slo->attainment, 0.9);
  EXPECT_LT(at_failing.slo->attainment, 0.9);
  ASSERT_TRUE(c.at_max.has_value());
  EXPECT_EQ(c.at_max->slo->met, at_max.slo->met);
  EXPECT_EQ(c.at_max->throughput_tok_s, at_max.throughput_tok_s);
  for (const CapacityProbe& p : c.probes) {
    EXPECT_EQ(p.meets, p.attainment >= 0.9);
    if (p.meets) {
      EXPECT_LE(p.rate_per_s, *c.max_rate);
    }
  }
  const nlohmann::json j = c.to_json();
  EXPECT_EQ(j["max_rate_per_s"].get<double>(), *c.max_rate);
  EXPECT_EQ(j["probes"].size(), c.probes.size());
  EXPECT_TRUE(j["converged"].get<bool>());
  EXPECT_EQ(j["at_max"]["slo"]["met"].get<std::int64_t>(), at_max.slo->met);
}

TEST(CapacitySearch, TighterObjectivesAndTargetsLowerTheCapacity) {
  SearchSetup s;
  const double idle = idle_ttft_ms(s);
  s.options.slo = LatencySlo{3 * idle, 0};
  const CapacityResult tight = find_capacity(s.model, s.system, s.options, {});
  s.options.slo = LatencySlo{12 * idle, 0};
  const CapacityResult loose = find_capacity(s.model, s.system, s.options, {});
  ASSERT_TRUE(tight.converged() && loose.converged());
  EXPECT_LT(*tight.max_rate, *loose.max_rate);
  CapacitySearchSpec strict;
  strict.attainment = 0.99;
  const CapacityResult most = find_capacity(s.model, s.system, s.options, strict);
  ASSERT_TRUE(most.converged());
  EXPECT_LT(*most.max_rate, *loose.max_rate);
}

TEST(CapacitySearch, AGivenFirstRateIsTheFirstProbeAndTheSearchIsDeterministic) {
  SearchSetup s;
  s.options.slo = LatencySlo{5 * idle_ttft_ms(s), 0};
  const SimulationOptions poisson = at_rate(s.options, 3.0);
  const CapacityResult a = find_capacity(s.model, s.system, poisson, {});
  EXPECT_FALSE(a.closed_loop_rate.has_value());  // the workload's own rate starts the search
  const SystemResult direct = simulate(s.model, s.system, poisson);
  EXPECT_EQ(a.probes.front().rate_per_s, 3.0);
  EXPECT_EQ(a.probes.front().attainment, direct.slo->attainment);
  EXPECT_EQ(a.probes.front().throughput_tok_s, direct.throughput_tok_s);
  EXPECT_EQ(a.to_json().dump(), find_capacity(s.model, s.system, poisson, {}).to_json().dump());
  CapacitySearchSpec first;
  first.first_rate = 1.5;
  const CapacityResult b = find_capacity(s.model, s.system, poisson, first);
  EXPECT_EQ(b.probes.front().rate_per_s, 1.5);
  ASSERT_TRUE(a.converged() && b.converged());
  // Either search brackets a crossing within 2%; on this run attainment falls once, so both find it.
  EXPECT_NEAR(*a.max_rate, *b.max_rate, 0.02 * *a.max_rate);
}

TEST(CapacitySearch, NoRateMeetsAnObjectiveBelowTheIdleLatency) {
  SearchSetup s;
  s.options.slo = LatencySlo{0.5 * idle_ttft_ms(s), 0};
  CapacitySearchSpec spec;
  spec.max_probes = 5;
  const CapacityResult c = find_capacity(s.model, s.system, at_rate(s.options, 2.0), spec);
  EXPECT_FALSE(c.max_rate.has_value());
  EXPECT_FALSE(c.at_max.has_value());
  EXPECT_FALSE(c.converged());
  ASSERT_EQ(c.probes.size(), 5u);
  for (std::size_t i = 0; i < c.probes.size(); ++i) {
    EXPECT_FALSE(c.probes[i].meets);
    EXPECT_DOUBLE_EQ(c.probes[i].rate_per_s, 2.0 / std::ldexp(1.0, static_cast<int>(i)));  // halving
  }
  EXPECT_EQ(*c.failing_rate, c.probes.back().rate_per_s);
  EXPECT_TRUE(c.to_json()["max_rate_per_s"].is_null());
  EXPECT_TRUE(c.to_json()["at_max"].is_null());
}

TEST(CapacitySearch, ObjectivesEveryLoadMeetsLeaveNoUpperBound) {
  SearchSetup s;
  s.options.slo = LatencySlo{0, 1e6};  // TPOT only, and loose: the max batch keeps every load within it
  CapacitySearchSpec spec;
  spec.max_probes = 4;
  const CapacityResult c = find_capacity(s.model, s.system, at_rate(s.options, 1.0), spec);
  ASSERT_EQ(c.probes.size(), 4u);
  EXPECT_EQ(*c.max_rate, 8.0);  // doubling
  EXPECT_FALSE(c.failing_rate.has_value());
  EXPECT_FALSE(c.converged());
  EXPECT_TRUE(c.to_json()["failing_rate_per_s"].is_null());
}

TEST(CapacitySearch, TheRerunAtTheMaxRateKeepsStepsWhenAsked) {
  SearchSetup s;
  s.options.slo = LatencySlo{5 * idle_ttft_ms(s), 0};
  s.options.record_steps = true;
  CapacitySearchSpec spec;
  spec.precision = 0.25;
  const CapacityResult c = find_capacity(s.model, s.system, s.options, spec);
  ASSERT_TRUE(c.converged());
  EXPECT_LE(*c.failing_rate, *c.max_rate * 1.25);
  ASSERT_TRUE(c.at_max.has_value());
  EXPECT_EQ(static_cast<std::int64_t>(c.at_max->step_rows.size()), c.at_max->steps);
  EXPECT_EQ(static_cast<std::int64_t>(c.at_max->request_rows.size()), c.at_max->requests);
}

// A fixed span of arrivals: each probe serves the requests arriving in it at its rate.
TEST(CapacitySearch, ADurationSizesEachProbe) {
  SearchSetup s;
  s.options.slo = LatencySlo{5 * idle_ttft_ms(s), 0};
  CapacitySearchSpec spec;
  spec.duration_s = 20;
  spec.precision = 0.1;
  const CapacityResult c = find_capacity(s.model, s.system, s.options, spec);
  ASSERT_TRUE(c.converged());
  for (const CapacityProbe& p : c.probes)
    EXPECT_EQ(p.requests, static_cast<std::int64_t>(std::ceil(p.rate_per_s * 20))) << p.rate_per_s;
  EXPECT_EQ(c.at_max->requests, static_cast<std::int64_t>(std::ceil(*c.max_rate * 20)));
  EXPECT_EQ(c.to_json()["duration_s"].get<double>(), 20.0);
  EXPECT_EQ(c.to_json()["probes"][0]["requests"].get<std::int64_t>(), c.probes[0].requests);
  // A first probe of more than a million requests is refused.
  CapacitySearchSpec huge = spec;
  huge.first_rate = 1e5;
  EXPECT_THROW(find_capacity(s.model, s.system, s.options, huge), Error);
  // Without one, every probe serves the workload's requests.
  spec.duration_s = 0;
  for (const CapacityProbe& p : find_capacity(s.model, s.system, s.options, spec).probes)
    EXPECT_EQ(p.requests, 96);
}

TEST(CapacitySearch, BadSearchesAreRefused) {
  SearchSetup s;
  EXPECT_THROW(find_capacity(s.model, s.system, s.options, {}), Error);  // no objective
  s.options.slo = LatencySlo{100, 0};
  for (auto edit :
       {+[](CapacitySearchSpec& c) { c.attainment = 0; }, +[](CapacitySearchSpec& c) { c.attainment = 1.5; },
        +[](CapacitySearchSpec& c) { c.precision = 0; }, +[](CapacitySearchSpec& c) { c.first_rate = -1; },
        +[](CapacitySearchSpec& c) { c.first_rate = NAN; }, +[](CapacitySearchSpec& c) { c.max_probes = 1; },
        +[](CapacitySearchSpec& c) { c.duration_s = -1; }}) {
    CapacitySearchSpec spec;
    edit(spec);
    EXPECT_THROW(find_capacity(s.model, s.system, s.options, spec), Error);
  }
  // A trace whose requests all arrive at once has no rate to scale; a trace takes no duration.
  SimulationOptions trace = traced(s.options, 0.0);
  try {
    find_capacity(s.model, s.system, trace, {});
    FAIL() << "a trace without a span accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("t.csv"), std::string::npos);
  }
  CapacitySearchSpec timed;
  timed.duration_s = 10;
  EXPECT_THROW(find_capacity(s.model, s.system, traced(s.options, 0.1), timed), Error);
}

// A trace keeps its requests and the shape of its arrivals: each probe scales its arrival times about the
// first one, the first probe at the trace's own rate.
TEST(CapacitySearch, ATraceIsScaledInTime) {
  SearchSetup s;
  s.options.slo = LatencySlo{5 * idle_ttft_ms(s), 0};
  s.options.record_steps = true;
  const SimulationOptions trace = traced(s.options, 0.25);  // bursts of 4, 0.25 s x their index apart
  CapacitySearchSpec spec;
  spec.precision = 0.1;
  const CapacityResult c = find_capacity(s.model, s.system, trace, spec);
  const double own = 95.0 / (0.25 * (95 / 4));  // (requests - 1) / span
  EXPECT_DOUBLE_EQ(c.probes.front().rate_per_s, own);
  ASSERT_TRUE(c.converged());
  ASSERT_TRUE(c.at_max.has_value());
  for (const auto& [id, row] : c.at_max->request_rows)
    EXPECT_NEAR(row["arrival_s"].get<double>(), 0.25 * static_cast<double>(id / 4) * own / *c.max_rate, 1e-9)
        << id;
  for (const CapacityProbe& p : c.probes) EXPECT_EQ(p.requests, 96);
}

}  // namespace
}  // namespace duplex::runtime
