#pragma once
// The memory self-test behind `duplex memtest`: a traffic generator drives the controllers of one HBM3
// stack (or its first N channels) and reports achieved vs theoretical bandwidth, loaded latency, row-hit rate
// and the share of time spent refreshing. Plain C++ (no SystemC kernel).
//
// Patterns (per pseudo-channel, closed loop: a new request enters whenever the queue has room):
//   stream  xPU-path reads of consecutive addresses
//   random  xPU-path reads of uniformly random addresses (seeded): bounded by tFAW / tRRD
//   bundle  Logic-PIM bank-bundle reads, rows of the 4 bundles of each pseudo-channel in turn
//   mixed   the stream with every third request a write (read/write turnarounds)
// Bandwidth counts the bytes whose last beat arrived within the simulated window; latency is arrival in the
// controller queue to last data beat (so it includes queueing under load).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "duplex/base/device_spec.hpp"
#include "duplex/sysc/action_counters.hpp"
#include "duplex/sysc/address_mapping.hpp"
#include "duplex/sysc/pc_controller.hpp"

namespace duplex::sysc {

enum class MemtestPattern { kStream, kRandom, kBundle, kMixed };
// Throws duplex::Error naming the accepted patterns.
MemtestPattern parse_memtest_pattern(std::string_view name);
const char* to_string(MemtestPattern p);

struct MemtestOptions {
  MemtestPattern pattern = MemtestPattern::kStream;
  int channels = 0;  // JEDEC channels of the stack to drive (2 pseudo-channels each); 0 = all
  bool refresh = true;
  std::string timing_preset;     // an HBM device preset ("hbm3-6.4gbps") replacing the system's; "" = keep
  std::optional<Time> duration;  // simulated window; default 20 x tREFI
  std::uint64_t seed = 1;        // random pattern
  ControllerConfig controller;   // queue depth, page policy, overhead (refresh is set from `refresh`)
  std::string address_mapping{kDefaultAddressMapping};
};

struct MemtestResult {
  std::string pattern;
  std::string hbm;  // preset name
  int channels = 0;
  int pseudo_channels = 0;
  double achieved_gbps = 0;
  double peak_gbps = 0;  // theoretical: xPU path dq x data rate; bundle path: Logic-PIM internal bandwidth
  double efficiency = 0;
  double refresh_share = 0;  // refresh commands x tRFC / (window x pseudo-channels)
  double latency_mean_ns = 0;
  double latency_p99_ns = 0;
  double row_hit_rate = 0;
  double activate_bound_gbps = 0;  // what tFAW / tRRD_S allow when every access needs an ACT
  double window_ns = 0;
  std::uint64_t requests = 0;  // completed within the window
  std::uint64_t commands = 0;  // DRAM commands issued
  ActionCounters counters;
};

// Throws duplex::Error for bad options (unknown preset, channels out of range, bundle pattern without PIM).
MemtestResult run_memtest(const SystemSpec& system, const MemtestOptions& options);
// Fields: achieved_gbps, peak_gbps, efficiency, refresh_share, latency_ns{mean,p99}, plus pattern, hbm,
// channels, pseudo_channels, row_hit_rate, activate_bound_gbps, window_ns, requests, commands.
nlohmann::json to_json(const MemtestResult& r);

// Total DRAM commands counted in `c`.
std::uint64_t command_count(const ActionCounters& c);

}  // namespace duplex::sysc
