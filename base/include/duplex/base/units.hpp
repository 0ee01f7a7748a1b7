#pragma once
// Strong unit types. Every physical value in duplex is one of these, held in SI base units
// (seconds, hertz, bytes per second, joules, watts, FLOP per second, bits per second per pin, mm^2),
// so a time cannot be added to an energy and conversions happen in exactly one place.
// Text forms ("1.5ns", "650MHz", "3.35TB/s", "0.46pJ", "16GiB") are parsed by parse_* below.
#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

namespace duplex {

template <class Dim>
class Quantity {
 public:
  constexpr Quantity() = default;
  static constexpr Quantity from_si(double v) { return Quantity(v); }
  constexpr double si() const { return v_; }

  constexpr Quantity operator+(Quantity o) const { return Quantity(v_ + o.v_); }
  constexpr Quantity operator-(Quantity o) const { return Quantity(v_ - o.v_); }
  constexpr Quantity& operator+=(Quantity o) { v_ += o.v_; return *this; }
  constexpr Quantity& operator-=(Quantity o) { v_ -= o.v_; return *this; }
  constexpr Quantity operator*(double k) const { return Quantity(v_ * k); }
  constexpr Quantity operator/(double k) const { return Quantity(v_ / k); }
  constexpr double operator/(Quantity o) const { return v_ / o.v_; }
  friend constexpr Quantity operator*(double k, Quantity q) { return Quantity(k * q.v_); }
  constexpr auto operator<=>(const Quantity&) const = default;

 private:
  constexpr explicit Quantity(double v) : v_(v) {}
  double v_ = 0.0;
};

struct TimeDim {};
struct FrequencyDim {};
struct BandwidthDim {};  // bytes per second
struct EnergyDim {};
struct PowerDim {};
struct FlopRateDim {};   // FLOP per second
struct DataRateDim {};   // bits per second (per pin)
struct AreaDim {};       // square millimetres are the text form; SI value is m^2

using Time = Quantity<TimeDim>;
using Frequency = Quantity<FrequencyDim>;
using Bandwidth = Quantity<BandwidthDim>;
using Energy = Quantity<EnergyDim>;
using Power = Quantity<PowerDim>;
using FlopRate = Quantity<FlopRateDim>;
using DataRate = Quantity<DataRateDim>;
using Area = Quantity<AreaDim>;

// Named constructors.
constexpr Time seconds(double v) { return Time::from_si(v); }
constexpr Time ms(double v) { return Time::from_si(v * 1e-3); }
constexpr Time us(double v) { return Time::from_si(v * 1e-6); }
constexpr Time ns(double v) { return Time::from_si(v * 1e-9); }
constexpr Time ps(double v) { return Time::from_si(v * 1e-12); }
constexpr Frequency hz(double v) { return Frequency::from_si(v); }
constexpr Frequency mhz(double v) { return Frequency::from_si(v * 1e6); }
constexpr Frequency ghz(double v) { return Frequency::from_si(v * 1e9); }
constexpr Bandwidth bytes_per_s(double v) { return Bandwidth::from_si(v); }
constexpr Bandwidth gb_per_s(double v) { return Bandwidth::from_si(v * 1e9); }
constexpr Bandwidth tb_per_s(double v) { return Bandwidth::from_si(v * 1e12); }
constexpr Energy joules(double v) { return Energy::from_si(v); }
constexpr Energy nj(double v) { return Energy::from_si(v * 1e-9); }
constexpr Energy pj(double v) { return Energy::from_si(v * 1e-12); }
constexpr Power watts(double v) { return Power::from_si(v); }
constexpr FlopRate flop_per_s(double v) { return FlopRate::from_si(v); }
constexpr FlopRate tflops(double v) { return FlopRate::from_si(v * 1e12); }
constexpr DataRate gbps(double v) { return DataRate::from_si(v * 1e9); }
constexpr Area mm2(double v) { return Area::from_si(v * 1e-6); }

// Accessors in common units (for printing and for models that think in ns / GB/s).
constexpr double to_ns(Time t) { return t.si() * 1e9; }
constexpr double to_us(Time t) { return t.si() * 1e6; }
constexpr double to_ms(Time t) { return t.si() * 1e3; }
constexpr double to_ps(Time t) { return t.si() * 1e12; }
constexpr double to_gb_per_s(Bandwidth b) { return b.si() * 1e-9; }
constexpr double to_pj(Energy e) { return e.si() * 1e12; }
constexpr double to_tflops(FlopRate f) { return f.si() * 1e-12; }
constexpr double to_mm2(Area a) { return a.si() * 1e6; }

// Cross-dimension relations.
constexpr Time period(Frequency f) { return Time::from_si(1.0 / f.si()); }
constexpr Time transfer_time(double bytes, Bandwidth bw) { return Time::from_si(bytes / bw.si()); }
constexpr Time compute_time(double flops, FlopRate r) { return Time::from_si(flops / r.si()); }
constexpr Energy operator*(Power p, Time t) { return Energy::from_si(p.si() * t.si()); }
constexpr Energy operator*(Time t, Power p) { return p * t; }
constexpr double cycles(Time t, Frequency f) { return t.si() * f.si(); }

// A size in bytes, integral (addresses and capacities must be exact).
struct ByteSize {
  std::uint64_t bytes = 0;
  constexpr auto operator<=>(const ByteSize&) const = default;
};
constexpr ByteSize kib(std::uint64_t v) { return {v << 10}; }
constexpr ByteSize mib(std::uint64_t v) { return {v << 20}; }
constexpr ByteSize gib(std::uint64_t v) { return {v << 30}; }

// Parsers. On a malformed value they throw duplex::Error whose message names the accepted units; callers
// that know the file and key (ConfigNode) rethrow it as ConfigError.
//   Time: s ms us ns ps          Frequency: Hz kHz MHz GHz       Energy: J mJ uJ nJ pJ fJ
//   Power: W mW kW               FlopRate: FLOPS GFLOPS TFLOPS PFLOPS (or FLOP/s forms)
//   Bandwidth: B/s KB/s MB/s GB/s TB/s KiB/s MiB/s GiB/s TiB/s
//   DataRate: bps Kbps Mbps Gbps (or b/s forms)   Area: mm2 um2
//   ByteSize: B KB MB GB TB (decimal) KiB MiB GiB TiB (binary); must be a whole number of bytes.
Time parse_time(std::string_view text);
Frequency parse_frequency(std::string_view text);
Bandwidth parse_bandwidth(std::string_view text);
Energy parse_energy(std::string_view text);
Power parse_power(std::string_view text);
FlopRate parse_flop_rate(std::string_view text);
DataRate parse_data_rate(std::string_view text);
Area parse_area(std::string_view text);
ByteSize parse_byte_size(std::string_view text);

// Human-readable forms with an SI prefix, e.g. "1.5 ns", "3.35 TB/s", "16 GiB".
std::string format_time(Time t);
std::string format_bandwidth(Bandwidth b);
std::string format_energy(Energy e);
std::string format_byte_size(ByteSize s);
std::string format_count(double v);  // 4.67e10 -> "46.7G"

}  // namespace duplex
