#pragma once
// Duplex's Logic-PIM of one device: GEMM modules, buffers and softmax / activation units on the logic die of
// each HBM3 stack, reading weights and K / V from the 4 bank-bundle spaces (DUPLEX.md "Logic-PIM", "memory
// spaces"). Ops run on a PimUnit: the datapath (golden C++ model or Verilated RTL) or the SystemC device
// through the C driver.
#include "duplex/runtime/device/pim_unit_device.hpp"

namespace duplex::runtime::device {

class LogicPimDevice final : public PimUnitDevice {
 public:
  LogicPimDevice(std::string name, std::shared_ptr<functional::PimUnit> unit);
  std::string describe() const override;  // "LogicPimDevice (logic-pim datapath golden)"
  std::string memory_spaces() const override;
};

}  // namespace duplex::runtime::device
