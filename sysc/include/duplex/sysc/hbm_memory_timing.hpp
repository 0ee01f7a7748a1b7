#pragma once
// Timing of xPU-path accesses to the whole device memory (all stacks): an access of any length is split
// into 32 B column accesses, each routed by the address mapping to its stack's pseudo-channel controller.
// Controllers are created on first use and advance in time order; an access that arrives earlier than a
// controller's current time (loosely-timed initiators) is served from that controller's current time.
// Plain C++; the SystemC memory target of DuplexDevice uses it.
#include <cstdint>
#include <memory>
#include <vector>

#include "duplex/base/device_spec.hpp"
#include "duplex/sysc/address_mapping.hpp"
#include "duplex/sysc/pc_controller.hpp"

namespace duplex::sysc {

class HbmMemoryTiming {
 public:
  HbmMemoryTiming(const HbmSpec& hbm, int stacks, int banks_per_bundle, const ControllerConfig& config = {});

  std::uint64_t capacity() const { return stack_bytes_ * static_cast<std::uint64_t>(stacks_); }
  // Time the last byte of [addr, addr + bytes) is transferred, for an access arriving at `at`.
  // Throws duplex::Error when the range is outside the device memory or bytes == 0.
  Tick access(std::uint64_t addr, std::uint64_t bytes, bool write, Tick at);
  ActionCounters counters() const;  // summed over the controllers used
  const AddressMapping& mapping() const { return mapping_; }

 private:
  PseudoChannelController& controller(int stack, int pc, Tick at);
  HbmSpec hbm_;
  TimingTable timing_;
  BundleGeometry geometry_;
  AddressMapping mapping_;
  ControllerConfig config_;
  int stacks_;
  std::uint64_t stack_bytes_;
  std::vector<std::unique_ptr<PseudoChannelController>> controllers_;
  std::uint64_t next_id_ = 0;
};

}  // namespace duplex::sysc
