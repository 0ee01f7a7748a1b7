#include "duplex/runtime/sim/energy_ledger.hpp"

#include "duplex/base/error.hpp"

namespace duplex::runtime {

using compiler::OpKind;

std::string_view category_name(EnergyCategory c) {
  switch (c) {
    case EnergyCategory::kFc: return "fc";
    case EnergyCategory::kAttention: return "attention";
    case EnergyCategory::kMoe: return "moe";
    case EnergyCategory::kOther: return "other";
    case EnergyCategory::kCommunication: return "communication";
  }
  DUPLEX_ASSERT(false, "unhandled energy category");
}

EnergyCategory category_of(OpKind k) {
  switch (k) {
    case OpKind::kQkvProj:
    case OpKind::kOProj:
    case OpKind::kDenseFfn:
    case OpKind::kLmHead:
    case OpKind::kRouter: return EnergyCategory::kFc;
    case OpKind::kAttentionPrefill:
    case OpKind::kAttentionDecode: return EnergyCategory::kAttention;
    case OpKind::kExpertFfn:
    case OpKind::kSharedExpertFfn: return EnergyCategory::kMoe;
    case OpKind::kAllReduce:
    case OpKind::kAllToAll: return EnergyCategory::kCommunication;
    default: return EnergyCategory::kOther;
  }
}

void EnergyLedger::charge(EnergyCategory category, const std::string& action, double count) {
  if (count == 0) return;
  const Energy unit = table_->price(action);  // throws for an unknown action
  counts_[std::string(category_name(category)) + "|" + action] += count;
  by_category_action_[{static_cast<int>(category), action}] += unit * count;
}

void EnergyLedger::charge_static(const std::string& component, Time duration, double instances) {
  static_[component] += table_->static_of(component) * duration * instances;
}

void EnergyLedger::add(const EnergyLedger& other, double scale) {
  for (const auto& [k, v] : other.counts_) counts_[k] += v * scale;
  for (const auto& [k, v] : other.by_category_action_) by_category_action_[k] += v * scale;
  for (const auto& [k, v] : other.static_) static_[k] += v * scale;
}

Energy EnergyLedger::dynamic(EnergyCategory c) const {
  Energy e;
  for (const auto& [k, v] : by_category_action_)
    if (k.first == static_cast<int>(c)) e += v;
  return e;
}

Energy EnergyLedger::total() const {
  Energy e;
  for (const auto& [k, v] : by_category_action_) e += v;
  for (const auto& [k, v] : static_) e += v;
  return e;
}

nlohmann::json EnergyLedger::breakdown_json() const {
  std::map<std::string, double> joules;
  for (const auto& [k, v] : by_category_action_) {
    const std::string component = k.second.substr(0, k.second.find('.'));  // dram | compute | links
    joules[std::string(category_name(static_cast<EnergyCategory>(k.first))) + "." + component] += v.si();
  }
  for (const auto& [k, v] : static_) joules["static." + k] += v.si();
  return nlohmann::json(joules);
}

void charge_op(EnergyLedger& ledger, const compiler::Op& op, compiler::Unit unit, const SystemSpec& system) {
  const EnergyCategory cat = category_of(op.kind);
  if (unit == compiler::Unit::kLink) {
    // All-reduce inside a node on NVLink; all-to-all across nodes on InfiniBand (cost_model.hpp).
    ledger.charge(cat, op.kind == OpKind::kAllReduce ? "links.nvlink_per_byte" : "links.infiniband_per_byte",
                  op.link_bytes);
    return;
  }
  const double access = static_cast<double>(system.memory.org.access_granularity.bytes);
  const double row = static_cast<double>(system.memory.org.row_size.bytes);
  const double bytes = op.bytes();
  ledger.charge(cat, "dram.activate", bytes / row);
  ledger.charge(cat, "compute.fp16_mac", op.flops / 2.0);
  if (unit == compiler::Unit::kXpu) {
    ledger.charge(cat, "dram.xpu_read", bytes / access);
  } else {
    const bool bank = system.pim && system.pim->kind == PimKind::kBankPim;
    ledger.charge(cat, bank ? "dram.bank_pim_read" : "dram.logic_pim_read", bytes / access);
    ledger.charge(cat, "compute.sram_access_32b", bytes / access);
  }
}

}  // namespace duplex::runtime
