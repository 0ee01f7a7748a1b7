#include "duplex/runtime/device/bank_pim_device.hpp"

#include "duplex/base/error.hpp"

namespace duplex::runtime::device {

BankPimDevice::BankPimDevice(std::string name, PimKind kind, std::shared_ptr<functional::PimUnit> unit)
    : PimUnitDevice(std::move(name), std::move(unit)), kind_(kind) {
  if (kind == PimKind::kLogicPim)
    throw Error("BankPimDevice: a Logic-PIM is a LogicPimDevice; expected bank-pim or bankgroup-pim");
}

std::string BankPimDevice::describe() const {
  return std::string("BankPimDevice (") + (kind_ == PimKind::kBankPim ? "bank-pim" : "bankgroup-pim") + ", " +
         pim_unit().describe() + ")";
}

std::string BankPimDevice::memory_spaces() const {
  return kind_ == PimKind::kBankPim ? "each unit its own bank" : "each unit its own bank group";
}

}  // namespace duplex::runtime::device
