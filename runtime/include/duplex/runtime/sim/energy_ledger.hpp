#pragma once
// Energy = action counts x the energy table (Accelergy style). Actions are charged to a category (what the
// work was for) and a component (DRAM, compute, link); static power is charged per component x time. An
// action the table cannot price is an error at the moment it is charged, never a silent zero.
#include <array>
#include <map>
#include <string>
#include <string_view>
#include <vector>
#include <nlohmann/json.hpp>

#include "duplex/base/device_spec.hpp"
#include "duplex/compiler/op.hpp"

namespace duplex::runtime {

enum class EnergyCategory { kFc, kAttention, kMoe, kOther, kCommunication };
std::string_view category_name(EnergyCategory c);
EnergyCategory category_of(compiler::OpKind k);

class EnergyLedger {
 public:
  explicit EnergyLedger(const EnergyTable& table);

  // Index of an action of the energy table (e.g. "dram.xpu_read"); duplex::Error when the table has no price
  // for it. Resolve once, charge by index in hot loops.
  int action(std::string_view name) const;
  // `count` occurrences of an action.
  void charge(EnergyCategory category, int action, double count);
  void charge(EnergyCategory category, std::string_view action_name, double count) {
    charge(category, action(action_name), count);
  }
  void charge_static(const std::string& component, Time duration, double instances);
  // other x scale; both over the same table, or tables of the same prices
  void add(const EnergyLedger& other, double scale = 1.0);

  Energy total() const;
  Energy dynamic(EnergyCategory c) const;
  // "fc.dram", "moe.compute", "static.xpu", ... -> joules; component = the action's table group.
  nlohmann::json breakdown_json() const;
  // "<category>|<action>" -> count, for every non-zero count.
  std::map<std::string, double> counts() const;

  // Indices of the actions charge_op uses, resolved on first use (an action a system never performs need
  // not be priced).
  int cached_action(int slot, std::string_view name);

 private:
  static constexpr int kCategories = 5;
  const EnergyTable* table_;
  std::vector<const std::string*> names_;  // the table's action names (its map keys), sorted
  std::vector<Energy> prices_;
  std::vector<std::array<double, kCategories>> counts_;  // [action][category]
  std::map<std::string, Energy> static_;                 // component -> energy
  std::array<int, 9> cache_;
};

// The actions one op performs on the unit it ran on (analytical counts: every byte is streamed once
// through 32 B accesses in whole rows; one MAC per 2 FLOPs; PIM operands pass through its SRAM buffers;
// PIM reads priced by the PIM's kind: logic_pim_read, bankgroup_pim_read or bank_pim_read). An MoE layer's
// expert work is charged as the mean expert-parallel group's (Op::energy_rows_scale, energy_weights_scale).
void charge_op(EnergyLedger& ledger, const compiler::Op& op, compiler::Unit unit, const SystemSpec& system);

}  // namespace duplex::runtime
