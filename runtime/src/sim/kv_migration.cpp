#include "duplex/runtime/sim/kv_migration.hpp"

#include <algorithm>

#include "duplex/base/error.hpp"
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

Time KvLinkMigration::transfer(double bytes, int streams) const {
  DUPLEX_ASSERT(streams >= 1, "a K/V transfer over no link");
  return transfer_time(bytes, bandwidth_ * static_cast<double>(streams));
}

Time KvLinkMigration::time(double bytes, int streams) const {
  return transfer(bytes, streams) + latency_;
}

int kv_transfer_streams(const compiler::ModelSpec& model, const compiler::ParallelLayout& from,
                        const compiler::ParallelLayout& to) {
  auto shards = [&](const compiler::ParallelLayout& l) {
    return model.attention == compiler::AttentionKind::kMla ? l.tp : std::min(l.tp, model.kv_heads);
  };
  return std::max(1, std::min(shards(from), shards(to)));
}

KvLinkSchedule::KvLinkSchedule(std::size_t senders, std::size_t receivers)
    : sender_free_(senders), receiver_free_(receivers) {}

Time KvLinkSchedule::book(std::size_t from, std::size_t to, Time ready, Time busy) {
  Time& sender = sender_free_.at(from);
  Time& receiver = receiver_free_.at(to);
  const Time start = std::max({ready, sender, receiver});
  sender = receiver = start + busy;
  return start;
}

KvLinkSchedule::Crossing KvLinkSchedule::book_prompt(std::size_t from, std::size_t to,
                                                     const KvLinkMigration& link, double bytes, int streams,
                                                     Time step_start, Time step_end, int layers) {
  DUPLEX_ASSERT(layers >= 0 && step_start <= step_end, "a K/V transfer of a step that ends before it starts");
  const Time whole = link.transfer(bytes, streams);
  if (layers == 0) {
    const Time start = book(from, to, step_end, whole);
    return {start, whole + link.latency()};
  }
  Time& sender = sender_free_.at(from);
  Time& receiver = receiver_free_.at(to);
  const Time start = std::max({step_start + (step_end - step_start) / layers, sender, receiver});
  const Time done = std::max(start + whole, step_end + whole / layers);
  sender = receiver = done;
  return {start, done - start + link.latency()};
}

void KvLinkMigration::charge(EnergyLedger& ledger, double bytes) const {
  ledger.charge(EnergyCategory::kCommunication, ledger.action(action_), bytes);
}

double kv_bytes_per_token(const compiler::ModelSpec& model) {
  return static_cast<double>(model.layers) * static_cast<double>(model.kv_elements_per_token_layer()) *
         compiler::dtype_bytes(model.kv_dtype);
}

}  // namespace duplex::runtime
