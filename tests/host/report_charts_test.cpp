// SVG chart primitives: marks are placed where the axes say, missing values are shown as such, text is
// escaped, and the roofline's ridge sits at peak / bandwidth.
#include <cmath>
#include <gtest/gtest.h>
#include <regex>
#include <string>
#include <vector>

#include "report_charts.hpp"
#include "report_svg_frame.hpp"

namespace duplex::host::svg {
namespace {

std::vector<double> attribute_values(const std::string& svg, const std::string& element_class, const std::string& attr) {
  std::vector<double> out;
  const std::regex re("<[a-z]+ class=\"" + element_class + "\"[^>]*? " + attr + "=\"([-0-9.]+)\"");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it)
    out.push_back(std::stod((*it)[1].str()));
  return out;
}

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

TEST(ReportAxes, LinearTicksAreNiceAndCoverTheData) {
  const Axis a = linear_axis(0, 87, 300, 0);
  EXPECT_EQ(a.lo, 0);
  EXPECT_GE(a.hi, 87);
  EXPECT_LE(a.hi, 100);
  const auto t = a.ticks();
  ASSERT_GE(t.size(), 3u);
  EXPECT_EQ(t.front(), 0);
  EXPECT_DOUBLE_EQ(a.at(0), 300);
  EXPECT_DOUBLE_EQ(a.at(a.hi), 0);
  EXPECT_DOUBLE_EQ(a.at(a.hi / 2), 150);
}

TEST(ReportAxes, LogAxisSpansWholeDecades) {
  const Axis a = log_axis(0.3, 450, 0, 500);
  EXPECT_DOUBLE_EQ(a.lo, 0.1);
  EXPECT_DOUBLE_EQ(a.hi, 1000);
  EXPECT_EQ(a.ticks().size(), 5u);
  EXPECT_NEAR(a.at(1), 125, 1e-9);  // one decade of four
}

TEST(ReportSvg, EscapesMarkupInLabels) {
  EXPECT_EQ(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
  BarChart c{.title = "<script>", .y_label = "y", .categories = {"x&y"}, .series = {{"s", {1.0}}}, .reference = std::nullopt};
  const std::string s = bar_chart(c);
  EXPECT_EQ(s.find("<script>"), std::string::npos);
  EXPECT_NE(s.find("&lt;script&gt;"), std::string::npos);
  EXPECT_NE(s.find("x&amp;y"), std::string::npos);
}

TEST(ReportSvg, BarHeightsAreProportionalAndMissingValuesAreMarked) {
  BarChart c{.title = "t", .y_label = "y", .categories = {"a", "b"}, .series = {{"s1", {2.0, 4.0}}, {"s2", {std::nullopt, 1.0}}},
             .reference = 1.0};
  const std::string s = bar_chart(c);
  const auto h = attribute_values(s, "bar", "height");
  ASSERT_EQ(h.size(), 3u);  // the missing value draws no bar
  EXPECT_NEAR(h[1] / h[0], 2.0, 0.02);
  EXPECT_NEAR(h[0] / h[2], 2.0, 0.02);
  EXPECT_EQ(count(s, "class=\"na\""), 1u);
  EXPECT_EQ(count(s, "class=\"reference\""), 1u);
  EXPECT_EQ(s.rfind("<svg", 0), 0u);
  EXPECT_EQ(s.substr(s.size() - 6), "</svg>");
}

TEST(ReportSvg, StackedSegmentsAddUpToTheTotal) {
  StackedBarChart c{.title = "e", .y_label = "J", .categories = {"a", "b"}, .parts = {"dram", "compute"},
                    .values = {{3.0, 1.0}, {1.0, 1.0}}};
  const std::string s = stacked_bar_chart(c);
  const auto h = attribute_values(s, "segment", "height");
  ASSERT_EQ(h.size(), 4u);
  EXPECT_NEAR((h[0] + h[1]) / (h[2] + h[3]), 2.0, 0.02);
  EXPECT_NEAR(h[0] / h[1], 3.0, 0.03);
}

TEST(ReportSvg, RooflineRidgeSitsAtPeakOverBandwidth) {
  RooflineChart c{.title = "r", .roofs = {{"xpu", 1e15, 1e12}, {"pim", 8e13, 1e13}}, .dots = {{"attn", "pim", 4, 4e13}}};
  const std::string s = roofline_chart(c);
  EXPECT_EQ(count(s, "class=\"roof\""), 2u);
  EXPECT_EQ(count(s, "class=\"op\""), 1u);
  const auto ridges = attribute_values(s, "ridge", "x1");
  ASSERT_EQ(ridges.size(), 2u);
  // x axis: decades 0.1 .. 1000 over the plot width; ridge 1000 (xPU) at the right end, 8 (PIM) at log10(80)/4.
  const Frame f;
  EXPECT_NEAR(ridges[0], f.x1(), 0.1);
  EXPECT_NEAR(ridges[1], f.x0() + (f.x1() - f.x0()) * std::log10(80.0) / 4, 0.2);
  EXPECT_NE(s.find("ridge 8"), std::string::npos);
  EXPECT_NE(s.find("ridge 1000"), std::string::npos);
}

TEST(ReportSvg, TimelineDrawsOneSpanPerEventInItsLane) {
  TimelineChart c{.title = "tl", .lanes = {"xpu", "pim"},
                  .events = {{"xpu", "qkv_proj", "L0.qkv", 0, 10}, {"pim", "attn_decode", "L0.attn", 10, 30}, {"xpu", "o_proj", "L0.o", 40, 10}}};
  const std::string s = timeline_chart(c);
  EXPECT_EQ(count(s, "class=\"span\""), 3u);
  const auto w = attribute_values(s, "span", "width");
  ASSERT_EQ(w.size(), 3u);
  EXPECT_NEAR(w[2] / w[0], 3.0, 0.05);  // drawn lane by lane: xpu, xpu, pim
  EXPECT_NE(s.find("L0.attn (attn_decode)"), std::string::npos);
}

TEST(ReportSvg, LineChartHasOnePolylinePerSeries) {
  LineChart c{.title = "l", .x_label = "x", .y_label = "y", .series = {{"a", {{0, 1}, {1, 2}}}, {"b", {{0, 2}, {1, 0}}}}};
  const std::string s = line_chart(c);
  EXPECT_EQ(count(s, "class=\"line\""), 2u);
  EXPECT_EQ(count(s, "<circle"), 4u);
}

}  // namespace
}  // namespace duplex::host::svg
