#pragma once
// The Bank-PIM baseline of one device (AttAcc-like, DUPLEX.md s.8): a MAC unit beside every bank (kind
// bank-pim) or every bank group (bankgroup-pim), computing out of the banks it sits in. Functionally it keeps
// the Logic-PIM arithmetic contract (FP16 operands, the golden datapath's FP32 accumulation and softmax), so
// it runs on a PimUnit too; its capabilities are the cost model's PIM ops.
#include "duplex/base/device_spec.hpp"
#include "duplex/runtime/device/pim_unit_device.hpp"

namespace duplex::runtime::device {

class BankPimDevice final : public PimUnitDevice {
 public:
  // duplex::Error when `kind` is Logic-PIM (that is a LogicPimDevice).
  BankPimDevice(std::string name, PimKind kind, std::shared_ptr<functional::PimUnit> unit);
  std::string describe() const override;  // "BankPimDevice (bank-pim, logic-pim datapath golden)"
  std::string memory_spaces() const override;

 private:
  PimKind kind_;
};

}  // namespace duplex::runtime::device
