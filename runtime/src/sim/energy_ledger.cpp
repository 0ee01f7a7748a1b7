#include "duplex/runtime/sim/energy_ledger.hpp"

#include <algorithm>

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
    case OpKind::kAttentionDecode:
    case OpKind::kKvMigration: return EnergyCategory::kAttention;  // K/V cache traffic
    case OpKind::kExpertFfn:
    case OpKind::kSharedExpertFfn: return EnergyCategory::kMoe;
    case OpKind::kAllReduce:
    case OpKind::kAllToAll:
    case OpKind::kPimTransfer:
    case OpKind::kStageSend:
    case OpKind::kExpertMove:
      return EnergyCategory::kCommunication;
    default: return EnergyCategory::kOther;
  }
}

EnergyLedger::EnergyLedger(const EnergyTable& table) : table_(&table) {
  for (const auto& [name, price] : table.actions) {
    names_.push_back(&name);
    prices_.push_back(price);
  }
  counts_.assign(names_.size(), std::array<double, kCategories>{});
  cache_.fill(-1);
}

int EnergyLedger::action(std::string_view name) const {
  const auto it = std::lower_bound(names_.begin(), names_.end(), name,
                                   [](const std::string* a, std::string_view b) { return *a < b; });
  if (it == names_.end() || **it != name) table_->price(name);  // throws the table's error naming the action
  return static_cast<int>(it - names_.begin());
}

int EnergyLedger::cached_action(int slot, std::string_view name) {
  int& id = cache_[static_cast<std::size_t>(slot)];
  if (id < 0) id = action(name);
  return id;
}

void EnergyLedger::charge(EnergyCategory category, int action, double count) {
  counts_[static_cast<std::size_t>(action)][static_cast<std::size_t>(category)] += count;
}

void EnergyLedger::charge_static(const std::string& component, Time duration, double instances) {
  static_[component] += table_->static_of(component) * duration * instances;
}

void EnergyLedger::add(const EnergyLedger& other, double scale) {
  // The same table, or one with the same prices (a split system's prefill devices of another system): the
  // actions' indices are their sorted names', so equal tables index alike.
  DUPLEX_ASSERT(other.table_ == table_ || (other.table_->actions == table_->actions &&
                                           other.table_->static_power == table_->static_power),
                "adding ledgers over different energy tables");
  for (std::size_t a = 0; a < counts_.size(); ++a)
    for (int c = 0; c < kCategories; ++c) counts_[a][static_cast<std::size_t>(c)] += other.counts_[a][static_cast<std::size_t>(c)] * scale;
  for (const auto& [k, v] : other.static_) static_[k] += v * scale;
}

Energy EnergyLedger::dynamic(EnergyCategory c) const {
  Energy e;
  for (std::size_t a = 0; a < counts_.size(); ++a) e += prices_[a] * counts_[a][static_cast<std::size_t>(c)];
  return e;
}

Energy EnergyLedger::total() const {
  Energy e;
  for (int c = 0; c < kCategories; ++c) e += dynamic(static_cast<EnergyCategory>(c));
  for (const auto& [k, v] : static_) e += v;
  return e;
}

std::map<std::string, double> EnergyLedger::counts() const {
  std::map<std::string, double> out;
  for (std::size_t a = 0; a < counts_.size(); ++a)
    for (int c = 0; c < kCategories; ++c)
      if (counts_[a][static_cast<std::size_t>(c)] != 0)
        out[std::string(category_name(static_cast<EnergyCategory>(c))) + "|" + *names_[a]] = counts_[a][static_cast<std::size_t>(c)];
  return out;
}

nlohmann::json EnergyLedger::breakdown_json() const {
  std::map<std::string, double> joules;
  for (std::size_t a = 0; a < counts_.size(); ++a) {
    const std::string component = names_[a]->substr(0, names_[a]->find('.'));  // dram | compute | links
    for (int c = 0; c < kCategories; ++c) {
      const double n = counts_[a][static_cast<std::size_t>(c)];
      if (n != 0)
        joules[std::string(category_name(static_cast<EnergyCategory>(c))) + "." + component] += (prices_[a] * n).si();
    }
  }
  for (const auto& [k, v] : static_) joules["static." + k] += v.si();
  return nlohmann::json(joules);
}

namespace {
// The op as energy charges it: an MoE layer's expert work scaled to the mean expert-parallel group's
// (Op::energy_rows_scale, energy_weights_scale).
compiler::Op charged_share(const compiler::Op& op) {
  compiler::Op o = op;
  o.flops *= op.energy_rows_scale;
  o.bytes_act *= op.energy_rows_scale;
  o.bytes_kv *= op.energy_rows_scale;
  o.link_bytes *= op.energy_rows_scale;
  o.link_bytes_in_node *= op.energy_rows_scale;
  o.bytes_weights *= op.energy_weights_scale;
  o.energy_rows_scale = o.energy_weights_scale = 1;
  return o;
}
}  // namespace

void charge_op(EnergyLedger& ledger, const compiler::Op& planned, compiler::Unit unit,
               const SystemSpec& system) {
  if (planned.energy_rows_scale != 1 || planned.energy_weights_scale != 1) {
    charge_op(ledger, charged_share(planned), unit, system);
    return;
  }
  const compiler::Op& op = planned;
  enum Slot { kActivate, kMac, kXpuRead, kLogicRead, kBankRead, kSram, kNvlink, kInfiniband, kBankGroupRead };
  const EnergyCategory cat = category_of(op.kind);
  if (unit == compiler::Unit::kLink) {
    // All-reduce inside a node and GPU <-> PIM-device transfers on NVLink; an all-to-all's InfiniBand
    // copies on InfiniBand, its NVLink copies (link_bytes_in_node) on NVLink
    // (ParallelLayout::expert_exchange); a pipeline stage's send and an expert move likewise.
    const bool nvlink =
        op.kind != OpKind::kAllToAll && op.kind != OpKind::kStageSend && op.kind != OpKind::kExpertMove;
    if (nvlink || op.link_bytes_in_node > 0)
      ledger.charge(cat, ledger.cached_action(kNvlink, "links.nvlink_per_byte"),
                    nvlink ? op.link_bytes : op.link_bytes_in_node);
    if (!nvlink)
      ledger.charge(cat, ledger.cached_action(kInfiniband, "links.infiniband_per_byte"),
                    op.link_bytes - op.link_bytes_in_node);
    return;
  }
  const double access = static_cast<double>(system.memory.org.access_granularity.bytes);
  const double row = static_cast<double>(system.memory.org.row_size.bytes);
  const double bytes = unit == compiler::Unit::kXpu ? op.xpu_bytes() : op.bytes();
  ledger.charge(cat, ledger.cached_action(kActivate, "dram.activate"), bytes / row);
  ledger.charge(cat, ledger.cached_action(kMac, "compute.fp16_mac"), op.flops / 2.0);
  if (unit == compiler::Unit::kXpu) {
    ledger.charge(cat, ledger.cached_action(kXpuRead, "dram.xpu_read"), bytes / access);
  } else {
    DUPLEX_ASSERT(system.pim.has_value(), "a PIM op on a system without PIM");
    int read = 0;
    switch (system.pim->kind) {
      case PimKind::kLogicPim: read = ledger.cached_action(kLogicRead, "dram.logic_pim_read"); break;
      case PimKind::kBankGroupPim: read = ledger.cached_action(kBankGroupRead, "dram.bankgroup_pim_read"); break;
      case PimKind::kBankPim: read = ledger.cached_action(kBankRead, "dram.bank_pim_read"); break;
    }
    ledger.charge(cat, read, bytes / access);
    ledger.charge(cat, ledger.cached_action(kSram, "compute.sram_access_32b"), bytes / access);
  }
}

}  // namespace duplex::runtime
