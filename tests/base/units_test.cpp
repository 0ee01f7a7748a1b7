#include "duplex/base/units.hpp"

#include <gtest/gtest.h>

#include "duplex/base/error.hpp"

namespace duplex {
namespace {

TEST(Units, ParsesEachDimensionIntoSi) {
  EXPECT_DOUBLE_EQ(parse_time("1.5ns").si(), 1.5e-9);
  EXPECT_DOUBLE_EQ(parse_time("3.9 us").si(), 3.9e-6);
  EXPECT_DOUBLE_EQ(parse_frequency("650MHz").si(), 650e6);
  EXPECT_DOUBLE_EQ(parse_bandwidth("3.35TB/s").si(), 3.35e12);
  EXPECT_DOUBLE_EQ(parse_bandwidth("1GiB/s").si(), 1073741824.0);
  EXPECT_DOUBLE_EQ(parse_energy("0.46pJ").si(), 0.46e-12);
  EXPECT_DOUBLE_EQ(parse_power("700W").si(), 700.0);
  EXPECT_DOUBLE_EQ(parse_flop_rate("989.4TFLOPS").si(), 989.4e12);
  EXPECT_DOUBLE_EQ(parse_data_rate("5.2Gbps").si(), 5.2e9);
  EXPECT_DOUBLE_EQ(to_mm2(parse_area("17.8mm2")), 17.8);
  EXPECT_EQ(parse_byte_size("16GB").bytes, 16'000'000'000ULL);
  EXPECT_EQ(parse_byte_size("16GiB").bytes, 16ULL << 30);
  EXPECT_EQ(parse_byte_size("8KiB").bytes, 8192ULL);
}

TEST(Units, RejectsMissingUnknownOrWrongDimensionUnits) {
  EXPECT_THROW(parse_time("1.5"), Error);
  EXPECT_THROW(parse_time("1.5 parsecs"), Error);
  EXPECT_THROW(parse_time("1.5MHz"), Error);
  EXPECT_THROW(parse_time("fast"), Error);
  EXPECT_THROW(parse_byte_size("1.5B"), Error);  // not a whole number of bytes
  EXPECT_THROW(parse_byte_size("16Gb"), Error);  // bits are not a size unit: ambiguity with GB
  EXPECT_THROW(parse_frequency("650mhz"), Error);  // case matters: m is milli
}

TEST(Units, ErrorMessageListsAcceptedUnits) {
  try {
    parse_time("3 fortnights");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ns"), std::string::npos) << e.what();
  }
}

TEST(Units, CrossDimensionRelations) {
  EXPECT_DOUBLE_EQ(to_ns(period(mhz(650))), 1e3 / 650);
  EXPECT_DOUBLE_EQ(transfer_time(665.6e9, gb_per_s(665.6)).si(), 1.0);
  EXPECT_DOUBLE_EQ((watts(10) * seconds(2)).si(), 20.0);
  EXPECT_DOUBLE_EQ(cycles(ns(3), ghz(1)), 3.0);
}

TEST(Units, FormatsWithPrefixes) {
  EXPECT_EQ(format_time(ns(1.5)), "1.5 ns");
  EXPECT_EQ(format_bandwidth(tb_per_s(3.35)), "3.35 TB/s");
  EXPECT_EQ(format_byte_size(gib(16)), "16 GiB");
  EXPECT_EQ(format_count(46.7e9), "46.7G");
}

}  // namespace
}  // namespace duplex
