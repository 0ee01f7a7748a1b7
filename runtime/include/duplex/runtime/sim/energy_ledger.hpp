#pragma once
// Energy = action counts x the energy table (Accelergy style). Actions are charged to a category (what the
// work was for) and a component (DRAM, compute, link); static power is charged per component x time. An
// action the table cannot price is an error at the moment it is charged, never a silent zero.
#include <map>
#include <string>
#include <nlohmann/json.hpp>

#include "duplex/base/device_spec.hpp"
#include "duplex/compiler/op.hpp"

namespace duplex::runtime {

enum class EnergyCategory { kFc, kAttention, kMoe, kOther, kCommunication };
std::string_view category_name(EnergyCategory c);
EnergyCategory category_of(compiler::OpKind k);

class EnergyLedger {
 public:
  explicit EnergyLedger(const EnergyTable& table) : table_(&table) {}

  // `count` occurrences of `action` (a key of the energy table, e.g. "dram.xpu_read").
  void charge(EnergyCategory category, const std::string& action, double count);
  void charge_static(const std::string& component, Time duration, double instances);
  void add(const EnergyLedger& other, double scale = 1.0);  // other x scale

  Energy total() const;
  Energy dynamic(EnergyCategory c) const;
  // "fc.dram", "moe.compute", "static.xpu", ... -> joules; component = the action's table group.
  nlohmann::json breakdown_json() const;
  const std::map<std::string, double>& counts() const { return counts_; }

 private:
  const EnergyTable* table_;
  std::map<std::string, double> counts_;             // "<category>|<action>" -> count
  std::map<std::pair<int, std::string>, Energy> by_category_action_;
  std::map<std::string, Energy> static_;             // component -> energy
};

// The actions one op performs on the unit it ran on (analytical counts: every byte is streamed once
// through 32 B accesses in whole rows; one MAC per 2 FLOPs; PIM operands pass through its SRAM buffers).
void charge_op(EnergyLedger& ledger, const compiler::Op& op, compiler::Unit unit, const SystemSpec& system);

}  // namespace duplex::runtime
