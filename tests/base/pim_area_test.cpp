#include "duplex/base/pim_area.hpp"

#include <gtest/gtest.h>

#include "duplex/base/error.hpp"

namespace duplex {
namespace {

SystemSpec system_with(const std::vector<ConfigOverride>& overrides) {
  return read_system(ConfigNode::load("duplex-pe", "systems", overrides));
}

// At the paper's design point the model returns the paper's breakdown (DUPLEX.md s.2: 14.71% of the die).
TEST(PimArea, ThePapersDesignGivesThePapersBreakdown) {
  const auto a = logic_pim_area(*system_with({}).pim);
  ASSERT_TRUE(a.has_value());
  EXPECT_DOUBLE_EQ(to_mm2(a->tsv), 10.89);
  EXPECT_DOUBLE_EQ(to_mm2(a->gemm_modules), 3.02);
  EXPECT_DOUBLE_EQ(to_mm2(a->buffers), 2.26);
  EXPECT_DOUBLE_EQ(to_mm2(a->softmax), 1.64);
  EXPECT_NEAR(to_mm2(a->total()), 17.80, 0.011);  // the paper's total; its parts add to 17.81
  EXPECT_NEAR(a->die_fraction(), 0.1471, 0.0002);
}

// Compute scales with the MACs, buffers with their bytes; the clock does not change area.
TEST(PimArea, KnobsThatAddUnitsOrBuffersAddArea) {
  const auto base = *logic_pim_area(*system_with({}).pim);
  const auto more = *logic_pim_area(*system_with({{"pim.gemm_modules", "64", "test"},
                                                  {"pim.macs_per_module", "256", "test"},
                                                  {"pim.input_buffer", "2MiB", "test"},
                                                  {"pim.clock", "1GHz", "test"}})
                                        .pim);
  EXPECT_DOUBLE_EQ(to_mm2(more.gemm_modules), to_mm2(base.gemm_modules));  // 64 x 256 = 32 x 512 MACs
  EXPECT_DOUBLE_EQ(to_mm2(more.buffers), 2.26 * 3.0 / 2.0);                 // 3 MiB of shared buffers
  EXPECT_DOUBLE_EQ(to_mm2(more.tsv), to_mm2(base.tsv));
  const auto wide = *logic_pim_area(*system_with({{"pim.gemm_modules", "48", "test"}}).pim);
  EXPECT_DOUBLE_EQ(to_mm2(wide.gemm_modules), 3.02 * 1.5);
  EXPECT_GT(wide.die_fraction(), base.die_fraction());
}

TEST(PimArea, OnlyLogicPimHasAnAreaModel) {
  EXPECT_FALSE(logic_pim_area(*load_system("bankgroup-pim").pim).has_value());
  EXPECT_FALSE(logic_pim_area(*load_system("bank-pim").pim).has_value());
}

TEST(PimArea, TheDesignPointIsRequiredWithTheBreakdown) {
  try {
    (void)system_with({{"pim.area.at.buffers", "0MiB", "--set"}});
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("pim.area.at.buffers"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace duplex
