#pragma once
// The cost of moving prompts' K/V from one device to another over the links (Splitwise-style split systems):
// the one formula the split serving simulator and the functional executor both use.
//   link:   NVLink when the run's devices (or the two instances') fit one node (links.devices_per_node),
//           InfiniBand otherwise
//   time:   bytes / link bandwidth + link latency        (transfers are not modelled as contending)
//   energy: links.nvlink_per_byte (or links.infiniband_per_byte) x bytes, category communication
// (The in-device copy of Logic-PIM memory spaces is an op of the step's plan instead: compiler kKvMigration.)
#include <cstdint>

#include "duplex/base/device_spec.hpp"
#include "duplex/compiler/model_spec.hpp"
#include "duplex/runtime/sim/energy_ledger.hpp"

namespace duplex::runtime {

class KvLinkMigration {
 public:
  // `devices`: all devices of the run (both pools); decides NVLink vs InfiniBand. Throws duplex::Error when
  // the energy table has no price for the link's action.
  KvLinkMigration(const SystemSpec& system, int devices);
  // The link between two given devices: NVLink when they share a node (`one_node`), InfiniBand otherwise.
  KvLinkMigration(const SystemSpec& system, bool one_node);

  bool one_node() const { return one_node_; }
  Time time(double bytes) const;
  void charge(EnergyLedger& ledger, double bytes) const;  // on a ledger over `system.energy`

 private:
  Bandwidth bandwidth_;
  Time latency_;
  const char* action_;
  bool one_node_;
};

// K/V bytes of one token of `model`, all layers and all KV heads: 2 (K, V) x layers x kv_heads x head_dim x KV
// dtype bytes (MLA: layers x the compressed latent + rope key).
double kv_bytes_per_token(const compiler::ModelSpec& model);

}  // namespace duplex::runtime
