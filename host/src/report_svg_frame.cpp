#include "report_svg_frame.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <fmt/format.h>

namespace duplex::host::svg {

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string label(double v) {
  const double a = std::fabs(v);
  if (a == 0) return "0";
  if (a >= 1e9) return fmt::format("{:.3g}G", v / 1e9);
  if (a >= 1e6) return fmt::format("{:.3g}M", v / 1e6);
  if (a >= 1e4) return fmt::format("{:.3g}k", v / 1e3);
  if (a >= 100) return fmt::format("{:.0f}", v);
  if (a >= 1e-3) return fmt::format("{:.3g}", v);
  return fmt::format("{:.1e}", v);
}

const std::string& colour(std::size_t i) {
  // Tableau 10 followed by darker / lighter variants: 16 distinct colours before any repeats.
  static const std::array<std::string, 16> palette = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
                                                      "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac", "#1b3a5c", "#8c4a0e",
                                                      "#7a1f21", "#2f6b2a", "#d4a6c8", "#4d4d4d"};
  return palette[i % palette.size()];
}

double Axis::at(double v) const {
  double t = 0;
  if (log) {
    const double lv = std::log10(std::max(v, 1e-300));
    t = (lv - std::log10(lo)) / (std::log10(hi) - std::log10(lo));
  } else {
    t = (v - lo) / (hi - lo);
  }
  t = std::clamp(t, 0.0, 1.0);
  return p0 + t * (p1 - p0);
}

std::vector<double> Axis::ticks() const {
  std::vector<double> out;
  if (log) {
    for (double d = std::log10(lo); d <= std::log10(hi) + 1e-9; d += 1) out.push_back(std::pow(10.0, std::round(d)));
    return out;
  }
  const double raw = (hi - lo) / 5;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw - 1e-12 * mag) {
      step = m * mag;
      break;
    }
  for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push_back(std::fabs(v) < step * 1e-9 ? 0 : v);
  return out;
}

namespace {

double nice_above(double v) {
  if (v <= 0) return 1;
  const double mag = std::pow(10.0, std::floor(std::log10(v)));
  for (double m : {1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0})
    if (m * mag >= v) return m * mag;
  return 10 * mag;
}

}  // namespace

Axis linear_axis(double min_value, double max_value, double p0, double p1) {
  Axis a;
  a.lo = std::min(0.0, min_value);
  a.hi = nice_above(std::max(max_value, 0.0));
  if (a.lo < 0) a.lo = -nice_above(-a.lo);
  a.p0 = p0;
  a.p1 = p1;
  return a;
}

Axis log_axis(double min_value, double max_value, double p0, double p1) {
  Axis a;
  a.log = true;
  const double lo = min_value > 0 ? min_value : 1;
  const double hi = std::max(max_value, lo);
  a.lo = std::pow(10.0, std::floor(std::log10(lo)));
  a.hi = std::pow(10.0, std::ceil(std::log10(hi)));
  if (a.hi <= a.lo) a.hi = a.lo * 10;
  a.p0 = p0;
  a.p1 = p1;
  return a;
}

std::string open_chart(const Frame& f, const std::string& title, const std::string& aria) {
  return fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "role=\"img\" aria-label=\"{2}\"><rect class=\"bg\" x=\"0\" y=\"0\" width=\"{0}\" height=\"{1}\" fill=\"#fff\"/>"
      "<text class=\"title\" x=\"{3}\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{4}</text>",
      f.width, f.height, escape(aria), f.left, escape(title));
}

std::string y_axis(const Frame& f, const Axis& y, const std::string& y_label) {
  std::string s;
  for (double t : y.ticks()) {
    const double py = y.at(t);
    s += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>", f.x0(), py, f.x1(), py);
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"end\">{}</text>", f.x0() - 4, py + 4,
                     escape(label(t)));
  }
  s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"#333\"/>", f.x0(), f.y0(), f.y1());
  s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{2:.1f}\" x2=\"{1:.1f}\" y2=\"{2:.1f}\" stroke=\"#333\"/>", f.x0(), f.x1(), f.y0());
  s += fmt::format("<text x=\"14\" y=\"{0:.1f}\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 14 {0:.1f})\">{1}</text>",
                   (f.y0() + f.y1()) / 2, escape(y_label));
  return s;
}

std::string x_axis(const Frame& f, const Axis& x, const std::string& x_label) {
  std::string s;
  for (double t : x.ticks()) {
    const double px = x.at(t);
    s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"#eee\"/>", px, f.y0(), f.y1());
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"middle\">{}</text>", px, f.y0() + 15,
                     escape(label(t)));
  }
  s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"12\" text-anchor=\"middle\">{}</text>", (f.x0() + f.x1()) / 2,
                   f.y0() + 34, escape(x_label));
  return s;
}

namespace {
double legend_entry_width(const std::string& name) { return 24 + 6.5 * static_cast<double>(name.size()); }
}  // namespace

int legend_rows(const Frame& f, const std::vector<std::string>& names) {
  int rows = 1;
  double x = f.x0();
  for (const auto& n : names) {
    if (x + legend_entry_width(n) > f.width && x > f.x0()) ++rows, x = f.x0();
    x += legend_entry_width(n);
  }
  return rows;
}

std::string legend(const Frame& f, const std::vector<std::string>& names) {
  // Entries flow left to right and wrap; the last row sits 12 px above the chart's bottom edge.
  std::string s = "<g class=\"legend\">";
  double x = f.x0(), y = f.height - 12 - 14 * (legend_rows(f, names) - 1);
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (x + legend_entry_width(names[i]) > f.width && x > f.x0()) x = f.x0(), y += 14;
    s += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"10\" height=\"10\" fill=\"{}\"/>", x, y - 9, colour(i));
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\">{}</text>", x + 13, y, escape(names[i]));
    x += legend_entry_width(names[i]);
  }
  return s + "</g>";
}

std::string close_chart() { return "</svg>"; }

}  // namespace duplex::host::svg
