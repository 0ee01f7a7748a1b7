#include "duplex/runtime/sim/kv_migration.hpp"

#include "duplex/compiler/dtype.hpp"

namespace duplex::runtime {

KvLinkMigration::KvLinkMigration(const SystemSpec& system, int devices)
    : KvLinkMigration(system, devices <= system.links.devices_per_node) {}

KvLinkMigration::KvLinkMigration(const SystemSpec& system, bool one_node) : one_node_(one_node) {
  bandwidth_ = one_node_ ? system.links.nvlink_bandwidth : system.links.infiniband_bandwidth;
  latency_ = one_node_ ? system.links.nvlink_latency : system.links.infiniband_latency;
  action_ = one_node_ ? "links.nvlink_per_byte" : "links.infiniband_per_byte";
  (void)system.energy.price(action_);  // a missing price fails here, not mid-run
}

Time KvLinkMigration::time(double bytes) const { return transfer_time(bytes, bandwidth_) + latency_; }

void KvLinkMigration::charge(EnergyLedger& ledger, double bytes) const {
  ledger.charge(EnergyCategory::kCommunication, ledger.action(action_), bytes);
}

double kv_bytes_per_token(const compiler::ModelSpec& model) {
  return static_cast<double>(model.layers) * static_cast<double>(model.kv_elements_per_token_layer()) *
         compiler::dtype_bytes(model.kv_dtype);
}

}  // namespace duplex::runtime
