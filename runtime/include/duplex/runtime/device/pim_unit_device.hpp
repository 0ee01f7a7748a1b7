#pragma once
// The common part of the PIM devices (LogicPimDevice, BankPimDevice): IDevice's ops on a PimUnit. Decode
// attention gathers, per query row and KV head, that head's K / V of the row's context from the paged pools
// through the block table (the PIM reads the cache where the xPU wrote it) and runs one GQA group per call.
// The PimUnit may be shared by several devices (the driver emulates one SystemC device per process).
#include <memory>
#include <string>

#include "duplex/runtime/device/idevice.hpp"
#include "duplex/runtime/functional/pim_unit.hpp"

namespace duplex::runtime::device {

class PimUnitDevice : public IDevice {
 public:
  const std::string& name() const override { return name_; }
  compiler::Unit unit() const override { return compiler::Unit::kPim; }
  // The weight GEMMs (QKV, O, experts, dense and shared FFNs) and decode attention: what the cost model lets
  // a PIM run (compiler::CostModel::pim_supports; the router's top-k and the LM head's argmax have no PIM
  // unit).
  bool executes(compiler::OpKind kind) const override;

  void linear(compiler::OpKind kind, const std::uint16_t* w, const std::uint16_t* x, std::uint16_t* y,
              std::size_t m, std::size_t n, std::size_t k) override;
  void ffn(compiler::OpKind kind, const functional::FfnWeights& w, const std::uint16_t* x, std::uint16_t* y,
           std::size_t m) override;
  void decode_attention(const DecodeAttentionBatch& batch) override;

  const functional::PimUnit& pim_unit() const { return *unit_; }

 protected:
  PimUnitDevice(std::string name, std::shared_ptr<functional::PimUnit> unit);

 private:
  std::string name_;
  std::shared_ptr<functional::PimUnit> unit_;
};

}  // namespace duplex::runtime::device
