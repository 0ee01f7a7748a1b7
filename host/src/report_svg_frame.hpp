#pragma once
// Building blocks of the report's inline SVG charts: escaping, number labels, a colour palette, linear and
// log10 axes with "nice" ticks, and the plot frame (title, axes, grid, legend). Pure functions of their
// inputs; no JavaScript, no external resources.
#include <string>
#include <vector>

namespace duplex::host::svg {

std::string escape(const std::string& text);  // for XML text and attribute values
std::string label(double value);              // short number: 0.25, 12.5, 1.2k, 3.4M, 2e-05
const std::string& colour(std::size_t i);     // categorical palette, cycles

// Plot area inside a fixed-size chart (pixels).
struct Frame {
  double width = 720, height = 340;
  double left = 70, right = 20, top = 34, bottom = 60;
  double x0() const { return left; }
  double x1() const { return width - right; }
  double y0() const { return height - bottom; }  // bottom of the plot area (SVG y grows downwards)
  double y1() const { return top; }
};

// A value axis mapping [lo, hi] onto pixel range [p0, p1]; linear or log10.
struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  double p0 = 0, p1 = 1;
  double at(double v) const;            // pixel position of v (clamped to the axis)
  std::vector<double> ticks() const;    // nice linear ticks, or the decades for log
};

// A linear axis from 0 (or the data minimum when it is negative) to a nice number above `max_value`.
Axis linear_axis(double min_value, double max_value, double p0, double p1);
// A log10 axis covering [min_value, max_value] (both > 0) rounded out to whole decades.
Axis log_axis(double min_value, double max_value, double p0, double p1);

// "<svg ...>" with a title, the y axis (grid lines and tick labels) and the axis labels; the caller adds
// the marks and then close_chart(). `aria` names the chart for screen readers and for the report test.
std::string open_chart(const Frame& f, const std::string& title, const std::string& aria);
std::string y_axis(const Frame& f, const Axis& y, const std::string& y_label);
std::string x_axis(const Frame& f, const Axis& x, const std::string& x_label);  // numeric x axes
std::string legend(const Frame& f, const std::vector<std::string>& names);
// Rows the legend wraps into at this frame's width (charts grow their bottom margin by the extra rows).
int legend_rows(const Frame& f, const std::vector<std::string>& names);
std::string close_chart();

}  // namespace duplex::host::svg
