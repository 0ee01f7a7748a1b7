#include "duplex/runtime/sim/xpu_profile.hpp"

#include <fstream>
#include <gtest/gtest.h>

#include "duplex/base/error.hpp"
#include "duplex/compiler/cost_model.hpp"
#include "duplex/runtime/sim/serving_simulator.hpp"

namespace duplex::runtime {
namespace {

compiler::Op gemm(compiler::OpKind kind, std::int64_t m, std::int64_t n, std::int64_t k) {
  compiler::Op o;
  o.kind = kind;
  o.m = m;
  o.n = n;
  o.k = k;
  return o;
}

std::string error_of(const std::string& text) {
  try {
    XpuProfile::parse(text, "prof.csv");
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an error";
  return {};
}

TEST(XpuProfile, InterpolatesBetweenMeasuredTokenCountsOfOneShape) {
  const auto p = XpuProfile::parse(
      "kind,m,n,k,time_us\nqkv_proj,16,1536,4096,10\nqkv_proj,64,1536,4096,22\n# comment\nqkv_proj,256,1536,4096,70\n"
      "o_proj,32,4096,1024,5\n", "prof.csv");
  using compiler::OpKind;
  EXPECT_DOUBLE_EQ(to_us(*p.lookup(gemm(OpKind::kQkvProj, 64, 1536, 4096))), 22.0);
  EXPECT_DOUBLE_EQ(to_us(*p.lookup(gemm(OpKind::kQkvProj, 40, 1536, 4096))), 16.0);    // halfway 16..64
  EXPECT_DOUBLE_EQ(to_us(*p.lookup(gemm(OpKind::kQkvProj, 448, 1536, 4096))), 118.0);  // beyond: last segment
  EXPECT_DOUBLE_EQ(to_us(*p.lookup(gemm(OpKind::kOProj, 64, 4096, 1024))), 10.0);      // one row: scaled by m
  EXPECT_DOUBLE_EQ(to_us(*p.lookup(gemm(OpKind::kOProj, 8, 4096, 1024))), 5.0);
  EXPECT_FALSE(p.lookup(gemm(OpKind::kQkvProj, 64, 1024, 4096)).has_value());  // shape not profiled
  EXPECT_FALSE(p.lookup(gemm(OpKind::kDenseFfn, 64, 1536, 4096)).has_value());
}

TEST(XpuProfile, MalformedFilesAreErrorsNamingLineAndColumn) {
  EXPECT_NE(error_of("kind,m,n,k\nqkv_proj,1,2,3\n").find("missing column \"time_us\""), std::string::npos);
  EXPECT_NE(error_of("kind,m,n,k,time_us\nwarp_drive,1,2,3,4\n").find("prof.csv:2: column kind"), std::string::npos);
  EXPECT_NE(error_of("kind,m,n,k,time_us\nqkv_proj,x,2,3,4\n").find("prof.csv:2"), std::string::npos);
  EXPECT_NE(error_of("kind,m,n,k,time_us\nqkv_proj,1,2,3,0\n").find("time_us"), std::string::npos);
  EXPECT_NE(error_of("kind,m,n,k,time_us\nqkv_proj,1,2,3,4\nqkv_proj,1,2,3,5\n").find("second row"), std::string::npos);
  EXPECT_THROW(XpuProfile::load("/nonexistent/profile.csv"), Error);
}

TEST(XpuProfile, ReplacesTheRooflineInTheCostModelAndTheSimulation) {
  const auto model = compiler::load_model("tiny-dense");
  const auto sys = load_system("gpu");
  const auto layout = compiler::ParallelLayout::make(model, sys, 1);
  // tiny-dense decode at batch 4: qkv_proj is 4 x 384 x 256 on one device.
  const std::string path = ::testing::TempDir() + "/duplex_xpu_profile.csv";
  std::ofstream(path) << "kind,m,n,k,time_us\nqkv_proj,1,384,256,500\nqkv_proj,4096,384,256,900\n";
  const auto profile = XpuProfile::load(path);
  const compiler::CostModel roofline(sys, layout);
  const compiler::CostModel measured(sys, layout, {}, [&](const compiler::Op& op) { return profile.lookup(op); });
  const auto op = gemm(compiler::OpKind::kQkvProj, 4, 384, 256);
  EXPECT_LT(to_us(roofline.xpu_time(op)), 10.0);
  EXPECT_NEAR(to_us(measured.xpu_time(op)), 500.0 + 400.0 * 3 / 4095, 1e-9);

  SimulationOptions o;
  o.workload.label = "test";
  o.workload.requests = 8;
  o.workload.arrival.kind = ArrivalSpec::Kind::closed;
  o.workload.arrival.concurrency = 4;
  LengthDistribution len;
  len.input = 16;
  len.output = 8;
  o.workload.lengths = len;
  o.scheduler.max_batch = 4;
  o.devices = 1;  // the profiled shape is the whole qkv_proj (no tensor parallelism)
  const SystemResult base = simulate(model, sys, o);
  o.xpu_profile = path;
  const SystemResult slow = simulate(model, sys, o);
  // Two layers' qkv_proj now take ~0.5 ms each instead of a few microseconds.
  EXPECT_GT(slow.tbt_ms.p50, base.tbt_ms.p50 + 0.9);
  EXPECT_LT(slow.tbt_ms.p50, base.tbt_ms.p50 + 1.1);
  o.xpu_profile = "/nonexistent/profile.csv";
  EXPECT_THROW(simulate(model, sys, o), Error);
}

}  // namespace
}  // namespace duplex::runtime
