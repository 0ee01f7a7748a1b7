#include "duplex/sysc/hbm_memory_timing.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::sysc {

HbmMemoryTiming::HbmMemoryTiming(const HbmSpec& hbm, int stacks, int banks_per_bundle,
                                 const ControllerConfig& config)
    : hbm_(hbm),
      timing_(derive_timing(hbm)),
      geometry_(make_bundle_geometry(hbm.org, banks_per_bundle)),
      mapping_(hbm.org, geometry_),
      config_(config),
      stacks_(stacks),
      stack_bytes_(mapping_.capacity()),
      controllers_(static_cast<std::size_t>(stacks * hbm.org.pseudo_channels())) {
  if (stacks < 1) throw Error(fmt::format("device memory with {} stacks: expected at least 1", stacks));
}

PseudoChannelController& HbmMemoryTiming::controller(int stack, int pc, Tick at) {
  auto& c = controllers_[static_cast<std::size_t>(stack * hbm_.org.pseudo_channels() + pc)];
  if (!c) {
    ControllerConfig cc = config_;
    // Refreshes staggered over the pseudo-channels, starting from the controller's first use.
    cc.first_refresh = at + timing_.tREFI / 4 + (timing_.tREFI / 2) * pc / hbm_.org.pseudo_channels();
    c = std::make_unique<PseudoChannelController>(hbm_.org, timing_, geometry_, cc);
  }
  return *c;
}

Tick HbmMemoryTiming::access(std::uint64_t addr, std::uint64_t bytes, bool write, Tick at) {
  if (bytes == 0 || addr > capacity() || bytes > capacity() - addr)
    throw Error(fmt::format("device memory access [0x{:x}, +{}) outside the {} B device memory (or empty)",
                            addr, bytes, capacity()));
  const std::uint64_t unit = mapping_.access_bytes();
  std::vector<PseudoChannelController*> touched;
  std::vector<MemCompletion> done;
  Tick last = at;
  for (std::uint64_t a = addr / unit * unit; a < addr + bytes; a += unit) {
    const int stack = static_cast<int>(a / stack_bytes_);
    MemRequest r;
    r.id = next_id_++;
    r.kind = write ? RequestKind::kWrite : RequestKind::kRead;
    r.coord = mapping_.decode(a % stack_bytes_);
    PseudoChannelController& c = controller(stack, r.coord.pc, at);
    c.run_until(at, done);
    while (!c.can_accept()) c.step(kNever, done);
    r.arrival = std::max(at, c.now());
    c.enqueue(r);
    if (std::find(touched.begin(), touched.end(), &c) == touched.end()) touched.push_back(&c);
  }
  for (PseudoChannelController* c : touched) last = std::max(last, c->drain(done));
  for (const MemCompletion& m : done) last = std::max(last, m.done);
  return last;
}

ActionCounters HbmMemoryTiming::counters() const {
  ActionCounters sum;
  for (const auto& c : controllers_)
    if (c) sum += c->counters();
  return sum;
}

}  // namespace duplex::sysc
