#pragma once
// The report's chart kinds, each a self-contained inline <svg> string (report_svg_frame.hpp draws the frame).
// Marks carry a <title> child, so hovering shows the value without any script.
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace duplex::host::svg {

// Grouped bars: one group per category, one bar per series. A missing value (nullopt) draws a small
// "n/a" mark, never a zero-height bar.
struct BarSeries {
  std::string name;
  std::vector<std::optional<double>> values;  // one per category
};
struct BarChart {
  std::string title, y_label;
  std::vector<std::string> categories;
  std::vector<BarSeries> series;
  std::optional<double> reference;  // a dashed horizontal line (e.g. 1.0 for "normalised to gpu")
};
std::string bar_chart(const BarChart& c);

// Stacked bars: one bar per category, one segment per part (values[category][part], >= 0).
struct StackedBarChart {
  std::string title, y_label;
  std::vector<std::string> categories;
  std::vector<std::string> parts;
  std::vector<std::vector<double>> values;
};
std::string stacked_bar_chart(const StackedBarChart& c);

// Lines through (x, y) points, one per series, with point markers.
struct LineSeries {
  std::string name;
  std::vector<std::pair<double, double>> points;
};
struct LineChart {
  std::string title, x_label, y_label;
  std::vector<LineSeries> series;
};
std::string line_chart(const LineChart& c);

// Roofline on log-log axes: attainable FLOP/s = min(peak, Op/B x bandwidth) per unit, the ridge point
// (peak / bandwidth) marked, and measured ops as dots coloured by the unit they ran on.
struct Roof {
  std::string name;
  double peak_flops = 0, bandwidth = 0;  // FLOP/s, bytes/s
};
struct RooflineDot {
  std::string label;  // op kind
  std::string unit;   // index into the legend (one of the roof names or "link")
  double op_b = 0, flops_per_s = 0;
};
struct RooflineChart {
  std::string title;
  std::vector<Roof> roofs;
  std::vector<RooflineDot> dots;
};
std::string roofline_chart(const RooflineChart& c);

// Lanes (xPU, Logic-PIM, links) with one rectangle per op, coloured by op kind.
struct LaneEvent {
  std::string lane, kind, name;
  double start_us = 0, dur_us = 0;
};
struct TimelineChart {
  std::string title;
  std::vector<std::string> lanes;
  std::vector<LaneEvent> events;
};
std::string timeline_chart(const TimelineChart& c);

}  // namespace duplex::host::svg
