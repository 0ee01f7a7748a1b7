#include "duplex/runtime/device/logic_pim_device.hpp"

namespace duplex::runtime::device {

LogicPimDevice::LogicPimDevice(std::string name, std::shared_ptr<functional::PimUnit> unit)
    : PimUnitDevice(std::move(name), std::move(unit)) {}

std::string LogicPimDevice::describe() const {
  return "LogicPimDevice (" + pim_unit().describe() + ")";
}

// source: DUPLEX.md "memory spaces": 4 spaces by bank-bundle index, experts round-robin over them, decode KV
// in 3.
std::string LogicPimDevice::memory_spaces() const {
  return "bank-bundle spaces 0-3 through the logic die";
}

}  // namespace duplex::runtime::device
