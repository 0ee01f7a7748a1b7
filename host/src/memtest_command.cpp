// `duplex memtest`: the HBM3 self-test. Drives one stack's controllers (or its first N channels) with a
// traffic pattern and reports achieved vs theoretical bandwidth, latency, row hits and refresh share.
#include <cstdio>
#include <fmt/format.h>
#include <memory>
#include <string>

#include "commands.hpp"
#include "system_overrides.hpp"
#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"
#include "duplex/sysc/memtest.hpp"

namespace duplex::host {
namespace {

struct MemtestCli {
  std::string system = "duplex";
  std::vector<std::string> sets;  // --set KEY=VALUE overrides of the system
  std::string pattern = "stream";
  int channels = 0;
  std::string timing;
  bool no_refresh = false;
  double duration_us = 0;
  std::uint64_t seed = 1;
  std::string page_policy = "open";
  int queue_depth = 64;
  std::string address_mapping{sysc::kDefaultAddressMapping};
  bool json = false;
};

void run_memtest_command(const MemtestCli& o) {
  const SystemSpec system = load_system(o.system, parse_sets(o.sets));
  sysc::MemtestOptions m;
  m.pattern = sysc::parse_memtest_pattern(o.pattern);
  m.channels = o.channels;
  m.refresh = !o.no_refresh;
  m.timing_preset = o.timing;
  if (o.duration_us > 0) m.duration = us(o.duration_us);
  m.seed = o.seed;
  m.controller.page_policy = o.page_policy == "closed" ? sysc::PagePolicy::kClosed : sysc::PagePolicy::kOpen;
  m.controller.queue_depth = o.queue_depth;
  m.address_mapping = o.address_mapping;
  const sysc::MemtestResult r = sysc::run_memtest(system, m);
  if (o.json) {
    std::puts(sysc::to_json(r).dump(2).c_str());
    return;
  }
  std::printf("memtest %s on %s (%s): %d channel(s), %d pseudo-channels, refresh %s, window %.1f us\n",
              r.pattern.c_str(), system.name.c_str(), r.hbm.c_str(), r.channels, r.pseudo_channels,
              m.refresh ? "on" : "off", r.window_ns / 1000.0);
  std::printf("  achieved   %9.1f GB/s of %.1f GB/s theoretical (%.1f%%)\n", r.achieved_gbps, r.peak_gbps,
              100.0 * r.efficiency);
  std::printf("  ACT bound  %9.1f GB/s (tFAW / tRRD_S with one ACT per access)\n", r.activate_bound_gbps);
  std::printf("  latency    %9.1f ns mean, %.1f ns p99 (queue arrival to last beat)\n", r.latency_mean_ns,
              r.latency_p99_ns);
  std::printf("  row hits   %9.1f%%   refresh share %.2f%%   requests %llu   DRAM commands %llu\n",
              100.0 * r.row_hit_rate, 100.0 * r.refresh_share, static_cast<unsigned long long>(r.requests),
              static_cast<unsigned long long>(r.commands));
}

}  // namespace

void add_memtest_command(CLI::App& app) {
  auto o = std::make_shared<MemtestCli>();
  CLI::App* c = app.add_subcommand("memtest", "HBM3 self-test: achieved vs theoretical bandwidth, latency, refresh");
  c->add_option("--system", o->system, "System preset or file (its memory and PIM)")->capture_default_str();
  add_set_option(c, o->sets);
  c->add_option("--pattern", o->pattern, "stream | random | bundle | mixed")->capture_default_str();
  c->add_option("--channels", o->channels, "JEDEC channels of the stack to drive (0: all)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--timing", o->timing, "HBM device preset replacing the system's, e.g. hbm3-6.4gbps");
  c->add_flag("--no-refresh", o->no_refresh, "Measure without all-bank refresh");
  c->add_option("--duration-us", o->duration_us, "Simulated window in microseconds (default: 20 x tREFI)")
      ->check(CLI::NonNegativeNumber)
      ->check(kFinite);
  c->add_option("--seed", o->seed, "Seed of the random pattern")->capture_default_str()->check(kUint64);
  c->add_option("--page-policy", o->page_policy, "Controller page policy: open | closed")
      ->capture_default_str()->check(CLI::IsMember({"open", "closed"}));
  c->add_option("--queue-depth", o->queue_depth, "Requests the controller holds per pseudo-channel")
      ->capture_default_str()->check(CLI::Range(1, 4096));
  c->add_option("--address-mapping", o->address_mapping,
                "Address bit order, most significant field first (fields rank bundle row bank col pc bg)")
      ->capture_default_str();
  c->add_flag("--json", o->json, "Print JSON: achieved_gbps, peak_gbps, efficiency, refresh_share, latency_ns{mean,p99}");
  c->callback([o] { run_memtest_command(*o); });
}

}  // namespace duplex::host
