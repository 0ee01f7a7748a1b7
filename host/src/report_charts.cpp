#include "report_charts.hpp"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <map>

#include "report_svg_frame.hpp"

namespace duplex::host::svg {
namespace {

// Whether category labels are drawn rotated: when one would not fit the width of its group.
bool rotated_labels(const Frame& f, const std::vector<std::string>& categories) {
  std::size_t longest = 0;
  for (const auto& c : categories) longest = std::max(longest, c.size());
  const double group_w = (f.x1() - f.x0()) / static_cast<double>(std::max<std::size_t>(1, categories.size()));
  return 6.5 * static_cast<double>(longest) > 0.95 * group_w;
}

// Category labels under the x axis.
std::string category_labels(const Frame& f, const std::vector<std::string>& categories, double group_w) {
  std::string s;
  const bool rotate = rotated_labels(f, categories);
  for (std::size_t i = 0; i < categories.size(); ++i) {
    const double cx = f.x0() + group_w * (static_cast<double>(i) + 0.5);
    const double cy = f.y0() + 14;
    if (rotate)
      s += fmt::format("<text x=\"{0:.1f}\" y=\"{1:.1f}\" font-size=\"10\" text-anchor=\"end\" transform=\"rotate(-35 {0:.1f} "
                       "{1:.1f})\">{2}</text>", cx, cy, escape(categories[i]));
    else
      s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"middle\">{}</text>", cx, cy,
                       escape(categories[i]));
  }
  return s;
}

// Width grows with the number of categories; the bottom margin with rotated labels and legend rows.
Frame frame_for(const std::vector<std::string>& categories, const std::vector<std::string>& legend_names) {
  Frame f;
  f.width = std::max(f.width, 90.0 + 46.0 * static_cast<double>(categories.size()));
  if (rotated_labels(f, categories)) {
    std::size_t longest = 0;
    for (const auto& c : categories) longest = std::max(longest, c.size());
    f.bottom = 40 + std::min(160.0, 4.0 * static_cast<double>(longest));
  }
  f.bottom += 14 * (legend_rows(f, legend_names) - 1);
  f.height += f.bottom - 60;
  return f;
}

}  // namespace

std::string bar_chart(const BarChart& c) {
  std::vector<std::string> names;
  for (const auto& se : c.series) names.push_back(se.name);
  const Frame f = frame_for(c.categories, names);
  double hi = c.reference.value_or(0), lo = 0;
  for (const auto& s : c.series)
    for (const auto& v : s.values)
      if (v) hi = std::max(hi, *v), lo = std::min(lo, *v);
  const Axis y = linear_axis(lo, hi, f.y0(), f.y1());
  std::string s = open_chart(f, c.title, c.title) + y_axis(f, y, c.y_label);
  const double group_w = (f.x1() - f.x0()) / static_cast<double>(std::max<std::size_t>(1, c.categories.size()));
  const double bar_w = group_w * 0.8 / static_cast<double>(std::max<std::size_t>(1, c.series.size()));
  for (std::size_t si = 0; si < c.series.size(); ++si)
    for (std::size_t ci = 0; ci < c.categories.size() && ci < c.series[si].values.size(); ++ci) {
      const double x = f.x0() + group_w * (static_cast<double>(ci) + 0.1) + bar_w * static_cast<double>(si);
      const auto& v = c.series[si].values[ci];
      if (!v) {
        s += fmt::format("<text class=\"na\" x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"9\" fill=\"#999\" text-anchor=\"middle\">"
                         "n/a<title>{} / {}: no result</title></text>",
                         x + bar_w / 2, f.y0() - 3, escape(c.series[si].name), escape(c.categories[ci]));
        continue;
      }
      const double top = y.at(std::max(*v, 0.0)), base = y.at(std::min(*v, 0.0));
      s += fmt::format("<rect class=\"bar\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"><title>{} / "
                       "{}: {}</title></rect>",
                       x, top, std::max(bar_w - 1, 1.0), std::max(base - top, 0.5), colour(si), escape(c.series[si].name),
                       escape(c.categories[ci]), escape(label(*v)));
    }
  if (c.reference) {
    const double py = y.at(*c.reference);
    s += fmt::format("<line class=\"reference\" x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#000\" "
                     "stroke-dasharray=\"4 3\"/>", f.x0(), py, f.x1(), py);
  }
  return s + category_labels(f, c.categories, group_w) + legend(f, names) + close_chart();
}

std::string stacked_bar_chart(const StackedBarChart& c) {
  const Frame f = frame_for(c.categories, c.parts);
  double hi = 0;
  for (const auto& row : c.values) {
    double sum = 0;
    for (double v : row) sum += std::max(v, 0.0);
    hi = std::max(hi, sum);
  }
  const Axis y = linear_axis(0, hi, f.y0(), f.y1());
  std::string s = open_chart(f, c.title, c.title) + y_axis(f, y, c.y_label);
  const double group_w = (f.x1() - f.x0()) / static_cast<double>(std::max<std::size_t>(1, c.categories.size()));
  for (std::size_t ci = 0; ci < c.categories.size() && ci < c.values.size(); ++ci) {
    double acc = 0;
    const double x = f.x0() + group_w * (static_cast<double>(ci) + 0.2);
    for (std::size_t pi = 0; pi < c.parts.size() && pi < c.values[ci].size(); ++pi) {
      const double v = std::max(c.values[ci][pi], 0.0);
      if (v == 0) continue;
      const double top = y.at(acc + v), base = y.at(acc);
      s += fmt::format("<rect class=\"segment\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"><title>{} "
                       "/ {}: {}</title></rect>",
                       x, top, group_w * 0.6, std::max(base - top, 0.5), colour(pi), escape(c.categories[ci]),
                       escape(c.parts[pi]), escape(label(v)));
      acc += v;
    }
  }
  return s + category_labels(f, c.categories, group_w) + legend(f, c.parts) + close_chart();
}

std::string line_chart(const LineChart& c) {
  const Frame f;
  double xhi = 0, yhi = 0, xlo = 0;
  bool first = true;
  for (const auto& se : c.series)
    for (const auto& [x, yv] : se.points) {
      xlo = first ? x : std::min(xlo, x);
      xhi = first ? x : std::max(xhi, x);
      yhi = std::max(yhi, yv);
      first = false;
    }
  const Axis x = linear_axis(std::min(xlo, 0.0), xhi, f.x0(), f.x1());
  const Axis y = linear_axis(0, yhi, f.y0(), f.y1());
  std::string s = open_chart(f, c.title, c.title) + y_axis(f, y, c.y_label) + x_axis(f, x, c.x_label);
  for (std::size_t si = 0; si < c.series.size(); ++si) {
    std::string path;
    for (const auto& [px, py] : c.series[si].points) path += fmt::format("{}{:.1f},{:.1f}", path.empty() ? "" : " ", x.at(px), y.at(py));
    s += fmt::format("<polyline class=\"line\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"><title>{}</title></polyline>",
                     colour(si), path, escape(c.series[si].name));
    if (c.series[si].points.size() <= 40)
      for (const auto& [px, py] : c.series[si].points)
        s += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.5\" fill=\"{}\"><title>{}: ({}, {})</title></circle>", x.at(px),
                         y.at(py), colour(si), escape(c.series[si].name), escape(label(px)), escape(label(py)));
  }
  std::vector<std::string> names;
  for (const auto& se : c.series) names.push_back(se.name);
  return s + legend(f, names) + close_chart();
}

std::string roofline_chart(const RooflineChart& c) {
  Frame f;
  f.height = 380;
  double xlo = 0.1, xhi = 1000, ylo = 1e15, yhi = 1e9;
  for (const auto& r : c.roofs) {
    yhi = std::max(yhi, r.peak_flops);
    ylo = std::min(ylo, r.bandwidth * xlo);
  }
  for (const auto& d : c.dots)
    if (d.op_b > 0 && d.flops_per_s > 0) {
      xlo = std::min(xlo, d.op_b), xhi = std::max(xhi, d.op_b);
      ylo = std::min(ylo, d.flops_per_s), yhi = std::max(yhi, d.flops_per_s);
    }
  const Axis x = log_axis(xlo, xhi, f.x0(), f.x1());
  const Axis y = log_axis(ylo, yhi, f.y0(), f.y1());
  std::string s = open_chart(f, c.title, c.title) + y_axis(f, y, "attained FLOP/s (per device)") + x_axis(f, x, "Op/B (FLOP per DRAM byte)");
  std::vector<std::string> names;
  for (std::size_t i = 0; i < c.roofs.size(); ++i) {
    const Roof& r = c.roofs[i];
    names.push_back(r.name);
    if (r.peak_flops <= 0 || r.bandwidth <= 0) continue;
    const double ridge = r.peak_flops / r.bandwidth;
    s += fmt::format("<polyline class=\"roof\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{:.1f},{:.1f} {:.1f},{:.1f} "
                     "{:.1f},{:.1f}\"><title>{}: peak {} FLOP/s, {} B/s</title></polyline>",
                     colour(i), x.at(x.lo), y.at(r.bandwidth * x.lo), x.at(ridge), y.at(r.peak_flops), x.at(x.hi),
                     y.at(r.peak_flops), escape(r.name), escape(label(r.peak_flops)), escape(label(r.bandwidth)));
    s += fmt::format("<line class=\"ridge\" x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"{3}\" "
                     "stroke-dasharray=\"3 3\"/><text x=\"{0:.1f}\" y=\"{4:.1f}\" font-size=\"10\" fill=\"{3}\">ridge {5}</text>",
                     x.at(ridge), f.y0(), y.at(r.peak_flops), colour(i), y.at(r.peak_flops) - 4, escape(label(ridge)));
  }
  for (const auto& d : c.dots) {
    if (d.op_b <= 0 || d.flops_per_s <= 0) continue;
    std::size_t idx = c.roofs.size();
    for (std::size_t i = 0; i < c.roofs.size(); ++i)
      if (c.roofs[i].name == d.unit) idx = i;
    s += fmt::format("<circle class=\"op\" cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"4\" fill=\"{}\" fill-opacity=\"0.8\"><title>{} on {}: "
                     "Op/B {}, {} FLOP/s</title></circle><text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"9\">{}</text>",
                     x.at(d.op_b), y.at(d.flops_per_s), colour(idx), escape(d.label), escape(d.unit), escape(label(d.op_b)),
                     escape(label(d.flops_per_s)), x.at(d.op_b) + 5, y.at(d.flops_per_s) + 3, escape(d.label));
  }
  return s + legend(f, names) + close_chart();
}

std::string timeline_chart(const TimelineChart& c) {
  std::map<std::string, std::size_t> kind_colour;
  std::vector<std::string> kinds;
  for (const auto& e : c.events)
    if (kind_colour.try_emplace(e.kind, kinds.size()).second) kinds.push_back(e.kind);
  Frame f;
  f.left = 90;
  f.bottom += 14 * (legend_rows(f, kinds) - 1);
  f.height = f.top + 16 + 36 * static_cast<double>(c.lanes.size()) + f.bottom;
  double end = 0;
  for (const auto& e : c.events) end = std::max(end, e.start_us + e.dur_us);
  const Axis x = linear_axis(0, end, f.x0(), f.x1());
  std::string s = open_chart(f, c.title, c.title) + x_axis(f, x, "time (us) from the start of the excerpt");
  for (std::size_t li = 0; li < c.lanes.size(); ++li) {
    const double ly = f.y1() + 10 + 36 * static_cast<double>(li);
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"12\" text-anchor=\"end\">{}</text>", f.x0() - 6, ly + 18,
                     escape(c.lanes[li]));
    for (const auto& e : c.events) {
      if (e.lane != c.lanes[li]) continue;
      const double x0 = x.at(e.start_us), x1 = x.at(e.start_us + e.dur_us);
      s += fmt::format("<rect class=\"span\" x=\"{:.2f}\" y=\"{:.1f}\" width=\"{:.2f}\" height=\"28\" fill=\"{}\"><title>{} ({}): "
                       "{} us at {} us</title></rect>",
                       x0, ly, std::max(x1 - x0, 0.3), colour(kind_colour[e.kind]), escape(e.name), escape(e.kind),
                       escape(label(e.dur_us)), escape(label(e.start_us)));
    }
  }
  return s + legend(f, kinds) + close_chart();
}

}  // namespace duplex::host::svg
