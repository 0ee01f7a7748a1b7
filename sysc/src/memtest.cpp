#include "duplex/sysc/memtest.hpp"

#include <algorithm>
#include <vector>

#include <fmt/format.h>

#include "duplex/base/config.hpp"
#include "duplex/base/error.hpp"

namespace duplex::sysc {

MemtestPattern parse_memtest_pattern(std::string_view name) {
  if (name == "stream") return MemtestPattern::kStream;
  if (name == "random") return MemtestPattern::kRandom;
  if (name == "bundle") return MemtestPattern::kBundle;
  if (name == "mixed") return MemtestPattern::kMixed;
  throw Error(fmt::format("memtest pattern '{}' is unknown; expected stream, random, bundle or mixed", name));
}

const char* to_string(MemtestPattern p) {
  switch (p) {
    case MemtestPattern::kStream:
      return "stream";
    case MemtestPattern::kRandom:
      return "random";
    case MemtestPattern::kBundle:
      return "bundle";
    case MemtestPattern::kMixed:
      return "mixed";
  }
  return "?";
}

std::uint64_t command_count(const ActionCounters& c) {
  return c.activate_commands + c.precharge_commands + c.refresh_commands + c.xpu_reads + c.xpu_writes +
         c.pim_writes + c.bundle_read_commands;
}

namespace {

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

struct PcRun {
  std::vector<Tick> latencies;
  std::uint64_t bytes = 0;
  std::uint64_t hits = 0;
  ActionCounters counters;
};

class Generator {
 public:
  Generator(const MemtestOptions& o, const AddressMapping& m, const HbmOrganization& org, int pc)
      : o_(o), m_(m), org_(org), pc_(pc), rng_(o.seed * 0x100000001B3ull + static_cast<std::uint64_t>(pc)) {}

  MemRequest next(Tick arrival) {
    MemRequest r;
    r.id = n_;
    r.arrival = arrival;
    switch (o_.pattern) {
      case MemtestPattern::kStream:
      case MemtestPattern::kMixed:
        r.coord = m_.decode(m_.address_in_pc(pc_, n_ % m_.accesses_per_pc()));
        if (o_.pattern == MemtestPattern::kMixed && n_ % 3 == 2) r.kind = RequestKind::kWrite;
        break;
      case MemtestPattern::kRandom:
        r.coord = m_.decode(m_.address_in_pc(pc_, splitmix64(rng_) % m_.accesses_per_pc()));
        break;
      case MemtestPattern::kBundle: {
        // Column fastest, then the bundles of the pseudo-channel in turn, then the row: while one bundle is
        // read the next one's row can be opened.
        const auto cols = static_cast<std::uint64_t>(org_.columns_per_row());
        const auto bundles = static_cast<std::uint64_t>(m_.spaces());
        const std::uint64_t col = n_ % cols;
        const std::uint64_t space = (n_ / cols) % bundles;
        const std::uint64_t row = (n_ / cols / bundles) % static_cast<std::uint64_t>(org_.rows);
        r.kind = RequestKind::kBundleRead;
        r.path = AccessPath::kPim;
        r.coord.pc = pc_;
        r.coord.rank = static_cast<int>(space) / m_.bundles().bundles_per_rank;
        r.coord.bank = m_.bank_of(static_cast<int>(space) % m_.bundles().bundles_per_rank, 0);
        r.coord.row = static_cast<int>(row);
        r.coord.column = static_cast<int>(col);
        break;
      }
    }
    ++n_;
    return r;
  }

 private:
  const MemtestOptions& o_;
  const AddressMapping& m_;
  const HbmOrganization& org_;
  int pc_;
  std::uint64_t rng_;
  std::uint64_t n_ = 0;
};

HbmSpec memtest_hbm(const SystemSpec& system, const std::string& preset) {
  if (preset.empty()) return system.memory;
  const std::string name = preset.rfind("devices/", 0) == 0 ? preset : "devices/" + preset;
  return read_hbm(ConfigNode::load(name, "devices"));
}

}  // namespace

MemtestResult run_memtest(const SystemSpec& system, const MemtestOptions& options) {
  const HbmSpec hbm = memtest_hbm(system, options.timing_preset);
  const HbmOrganization& org = hbm.org;
  if (options.channels < 0 || options.channels > org.channels)
    throw Error(fmt::format("memtest --channels {}: a stack has {} channels; expected 1..{} (0 = all)",
                            options.channels, org.channels, org.channels));
  const bool bundle = options.pattern == MemtestPattern::kBundle;
  if (bundle && (!system.pim || system.pim->kind != PimKind::kLogicPim))
    throw Error(
        fmt::format("memtest --pattern bundle: system '{}' has no Logic-PIM bank bundles", system.name));
  const int banks_per_bundle = system.pim && system.pim->kind == PimKind::kLogicPim
                                   ? system.pim->banks_per_bundle
                                   : org.banks_per_rank() / 2;
  const BundleGeometry geometry = make_bundle_geometry(org, banks_per_bundle);
  const AddressMapping mapping(org, geometry, options.address_mapping);
  const TimingTable t = derive_timing(hbm);
  const int channels = options.channels == 0 ? org.channels : options.channels;
  const int pcs = channels * org.pseudo_channels_per_channel;
  const Tick window = options.duration ? to_ticks(*options.duration) : 20 * t.tREFI;
  if (window <= 0) throw Error("memtest duration must be positive");
  const std::uint64_t request_bytes =
      org.access_granularity.bytes * static_cast<std::uint64_t>(bundle ? banks_per_bundle : 1);

  MemtestResult res;
  std::vector<Tick> latencies;
  std::uint64_t bytes = 0;
  std::uint64_t hits = 0;
  for (int pc = 0; pc < pcs; ++pc) {
    ControllerConfig cc = options.controller;
    cc.refresh = options.refresh;
    // Refreshes staggered over the pseudo-channels, every one inside the window.
    cc.first_refresh = t.tREFI / 4 + (t.tREFI / 2) * pc / pcs;
    PseudoChannelController ctrl(org, t, geometry, cc);
    Generator gen(options, mapping, org, pc);
    std::vector<MemCompletion> done;
    done.reserve(4096);
    for (;;) {
      while (ctrl.can_accept()) ctrl.enqueue(gen.next(ctrl.now()));
      if (!ctrl.step(window, done)) break;
      if (done.size() >= 4096) {
        for (const MemCompletion& c : done) {
          if (c.done > window) continue;
          latencies.push_back(c.done - c.arrival);
          bytes += request_bytes;
          hits += c.row_hit;
        }
        done.clear();
      }
    }
    for (const MemCompletion& c : done) {
      if (c.done > window) continue;
      latencies.push_back(c.done - c.arrival);
      bytes += request_bytes;
      hits += c.row_hit;
    }
    ActionCounters pc_counters = ctrl.counters();
    pc_counters.elapsed = window;
    res.counters += pc_counters;
  }

  const double seconds = from_ticks(window).si();
  res.pattern = to_string(options.pattern);
  res.hbm = hbm.name;
  res.channels = channels;
  res.pseudo_channels = pcs;
  res.window_ns = to_ns(from_ticks(window));
  res.achieved_gbps = static_cast<double>(bytes) / seconds * 1e-9;
  const double pc_share = static_cast<double>(pcs) / org.pseudo_channels();
  res.peak_gbps = bundle ? to_gb_per_s(system.pim->internal_bandwidth_per_stack(hbm)) * pc_share
                         : to_gb_per_s(hbm.pseudo_channel_bandwidth()) * pcs;
  res.efficiency = res.achieved_gbps / res.peak_gbps;
  res.refresh_share = static_cast<double>(res.counters.refresh_commands) * static_cast<double>(t.tRFC) /
                      (static_cast<double>(window) * pcs);
  res.requests = latencies.size();
  res.commands = command_count(res.counters);
  res.row_hit_rate =
      latencies.empty() ? 0.0 : static_cast<double>(hits) / static_cast<double>(latencies.size());
  // Every access needing its own ACT: per rank at most 4 per tFAW and one per tRRD_S.
  const double acts_per_s_per_rank = std::min(4.0 / from_ticks(t.tFAW).si(), 1.0 / from_ticks(t.tRRD_S).si());
  res.activate_bound_gbps = std::min(
      res.peak_gbps, acts_per_s_per_rank * org.ranks * pcs * static_cast<double>(request_bytes) * 1e-9);
  if (!latencies.empty()) {
    double sum = 0;
    for (Tick l : latencies) sum += static_cast<double>(l);
    res.latency_mean_ns = sum / static_cast<double>(latencies.size()) * 1e-3;
    const std::size_t k = std::min(latencies.size() - 1, latencies.size() * 99 / 100);
    std::nth_element(latencies.begin(), latencies.begin() + static_cast<std::ptrdiff_t>(k), latencies.end());
    res.latency_p99_ns = static_cast<double>(latencies[k]) * 1e-3;
  }
  return res;
}

nlohmann::json to_json(const MemtestResult& r) {
  return {
      {"pattern", r.pattern},
      {"hbm", r.hbm},
      {"channels", r.channels},
      {"pseudo_channels", r.pseudo_channels},
      {"achieved_gbps", r.achieved_gbps},
      {"peak_gbps", r.peak_gbps},
      {"efficiency", r.efficiency},
      {"refresh_share", r.refresh_share},
      {"latency_ns", {{"mean", r.latency_mean_ns}, {"p99", r.latency_p99_ns}}},
      {"row_hit_rate", r.row_hit_rate},
      {"activate_bound_gbps", r.activate_bound_gbps},
      {"window_ns", r.window_ns},
      {"requests", r.requests},
      {"commands", r.commands},
  };
}

}  // namespace duplex::sysc
