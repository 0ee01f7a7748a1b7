#include "duplex/base/units.hpp"

#include <array>
#include <cmath>
#include <cstdlib>
#include <fmt/format.h>
#include <string>
#include <utility>
#include <vector>

#include "duplex/base/error.hpp"

namespace duplex {
namespace {

struct UnitEntry {
  std::string_view suffix;
  double scale;  // SI value of one unit
};

// Splits "1.5ns" / "1.5 ns" into number and unit, then looks the unit up (case-sensitive: m != M).
double parse_with(std::string_view text, const std::vector<UnitEntry>& units, std::string_view what) {
  auto expected = [&] {
    std::string list;
    for (const auto& u : units) list += (list.empty() ? "" : ", ") + std::string(u.suffix);
    return fmt::format("a {} such as \"1.5{}\" (units: {})", what, units.front().suffix, list);
  };
  std::string s(text);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  const char* begin = s.c_str();
  char* end = nullptr;
  const double number = std::strtod(begin, &end);
  if (end == begin) throw Error(fmt::format("\"{}\" is not a number with a unit; expected {}", text, expected()));
  std::string_view unit(end);
  while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  if (unit.empty()) throw Error(fmt::format("\"{}\" has no unit; expected {}", text, expected()));
  if (!std::isfinite(number)) throw Error(fmt::format("\"{}\" is not finite; expected {}", text, expected()));
  for (const auto& u : units) {
    if (unit == u.suffix) return number * u.scale;
  }
  throw Error(fmt::format("\"{}\" has unknown unit \"{}\"; expected {}", text, unit, expected()));
}

const std::vector<UnitEntry> kTime = {{"ns", 1e-9}, {"s", 1.0}, {"ms", 1e-3}, {"us", 1e-6}, {"ps", 1e-12}};
const std::vector<UnitEntry> kFrequency = {{"MHz", 1e6}, {"Hz", 1.0}, {"kHz", 1e3}, {"GHz", 1e9}};
const std::vector<UnitEntry> kBandwidth = {
    {"GB/s", 1e9},           {"B/s", 1.0},
    {"KB/s", 1e3},           {"kB/s", 1e3},
    {"MB/s", 1e6},           {"TB/s", 1e12},
    {"KiB/s", 1024.0},       {"MiB/s", 1048576.0},
    {"GiB/s", 1073741824.0}, {"TiB/s", 1099511627776.0}};
const std::vector<UnitEntry> kEnergy = {{"pJ", 1e-12}, {"J", 1.0},    {"mJ", 1e-3},
                                        {"uJ", 1e-6},  {"nJ", 1e-9}, {"fJ", 1e-15}};
const std::vector<UnitEntry> kPower = {{"W", 1.0}, {"mW", 1e-3}, {"kW", 1e3}, {"uW", 1e-6}};
const std::vector<UnitEntry> kFlopRate = {{"TFLOPS", 1e12},   {"FLOPS", 1.0},     {"GFLOPS", 1e9},
                                          {"PFLOPS", 1e15},   {"FLOP/s", 1.0},    {"GFLOP/s", 1e9},
                                          {"TFLOP/s", 1e12},  {"PFLOP/s", 1e15}};
const std::vector<UnitEntry> kDataRate = {{"Gbps", 1e9}, {"bps", 1.0},  {"Kbps", 1e3},
                                          {"Mbps", 1e6}, {"Gb/s", 1e9}, {"Mb/s", 1e6}};
const std::vector<UnitEntry> kArea = {{"mm2", 1e-6}, {"um2", 1e-12}};
const std::vector<UnitEntry> kSize = {{"GiB", 1073741824.0},
                                      {"B", 1.0},
                                      {"KB", 1e3},
                                      {"kB", 1e3},
                                      {"MB", 1e6},
                                      {"GB", 1e9},
                                      {"TB", 1e12},
                                      {"KiB", 1024.0},
                                      {"MiB", 1048576.0},
                                      {"TiB", 1099511627776.0}};

std::string with_prefix(double v, std::string_view unit, bool binary = false) {
  struct P { double scale; const char* name; };
  static const std::array<P, 9> dec = {{{1e15, "P"}, {1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "k"},
                                        {1.0, ""}, {1e-3, "m"}, {1e-6, "u"}, {1e-9, "n"}}};
  if (binary) {
    static const std::array<P, 5> bin = {
        {{1099511627776.0, "Ti"}, {1073741824.0, "Gi"}, {1048576.0, "Mi"}, {1024.0, "Ki"}, {1.0, ""}}};
    for (const auto& p : bin)
      if (std::fabs(v) >= p.scale) return fmt::format("{:.4g} {}{}", v / p.scale, p.name, unit);
    return fmt::format("{:.4g} {}", v, unit);
  }
  if (v == 0.0) return fmt::format("0 {}", unit);
  for (const auto& p : dec)
    if (std::fabs(v) >= p.scale * 0.9999999) return fmt::format("{:.4g} {}{}", v / p.scale, p.name, unit);
  if (std::fabs(v) >= 1e-12) return fmt::format("{:.4g} p{}", v / 1e-12, unit);
  return fmt::format("{:.4g} {}", v, unit);
}

}  // namespace

Time parse_time(std::string_view t) { return Time::from_si(parse_with(t, kTime, "time")); }
Frequency parse_frequency(std::string_view t) {
  return Frequency::from_si(parse_with(t, kFrequency, "frequency"));
}
Bandwidth parse_bandwidth(std::string_view t) {
  return Bandwidth::from_si(parse_with(t, kBandwidth, "bandwidth"));
}
Energy parse_energy(std::string_view t) { return Energy::from_si(parse_with(t, kEnergy, "energy")); }
Power parse_power(std::string_view t) { return Power::from_si(parse_with(t, kPower, "power")); }
FlopRate parse_flop_rate(std::string_view t) {
  return FlopRate::from_si(parse_with(t, kFlopRate, "compute rate"));
}
DataRate parse_data_rate(std::string_view t) {
  return DataRate::from_si(parse_with(t, kDataRate, "per-pin data rate"));
}
Area parse_area(std::string_view t) { return Area::from_si(parse_with(t, kArea, "area")); }

ByteSize parse_byte_size(std::string_view t) {
  const double v = parse_with(t, kSize, "size");
  if (v < 0 || v >= 1.8e19 || std::floor(v) != v)
    throw Error(fmt::format("\"{}\" is not a whole, non-negative number of bytes", t));
  return ByteSize{static_cast<std::uint64_t>(v)};
}

std::string format_time(Time t) { return with_prefix(t.si(), "s"); }
std::string format_bandwidth(Bandwidth b) { return with_prefix(b.si(), "B/s"); }
std::string format_energy(Energy e) { return with_prefix(e.si(), "J"); }
std::string format_byte_size(ByteSize s) { return with_prefix(static_cast<double>(s.bytes), "B", true); }
std::string format_count(double v) {
  std::string s = with_prefix(v, "");
  std::erase(s, ' ');
  return s;
}

}  // namespace duplex
