#pragma once
// Physical address <-> DRAM coordinates of one HBM3 stack, and the 4 bank-bundle memory spaces.
//
// An address is [field bits ... | offset within one access]. The field order is configurable as a string of
// field names, most significant first, separated by ':'. Fields:
//   rank    stack ID (pseudo-channels of both ranks share one bus)
//   bundle  which bank bundle of a bank group's banks (upper / lower half of the 16 banks of a rank)
//   row     row within a bank
//   bank    bank within its bundle's part of a bank group (banks_per_group / bundles values)
//   col     column (one access of access_granularity bytes)
//   pc      pseudo-channel of the stack
//   bg      bank group
// The default, "rank:bundle:row:bank:col:pc:bg", interleaves consecutive accesses over bank groups first
// (tCCD_S apart) and pseudo-channels next, keeps 32 columns of a row together, and puts (rank, bundle) on top
// so that each of the 4 bank-bundle memory spaces is one contiguous quarter of the stack.
// All field sizes must be powers of two.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "duplex/base/device_spec.hpp"

namespace duplex::sysc {

// How a rank's banks form bank bundles (Logic-PIM). banks_per_bundle from PimSpec (8 on Duplex).
struct BundleGeometry {
  int bundles_per_rank = 0;           // 2 on Duplex (upper / lower)
  int banks_per_group_in_bundle = 0;  // 2 on Duplex: a bundle takes 2 banks of each of the 4 bank groups
};
// Throws duplex::Error unless banks_per_bundle divides a rank's banks evenly over all bank groups.
BundleGeometry make_bundle_geometry(const HbmOrganization& org, int banks_per_bundle);

struct DramCoord {
  int pc = 0;
  int rank = 0;
  int bank_group = 0;
  int bank = 0;  // within the bank group, 0 .. banks_per_group-1
  int row = 0;
  int column = 0;
  bool operator==(const DramCoord&) const = default;
};

enum class AddressField { kRank, kBundle, kRow, kBank, kColumn, kPseudoChannel, kBankGroup };

inline constexpr std::string_view kDefaultAddressMapping = "rank:bundle:row:bank:col:pc:bg";

class AddressMapping {
 public:
  // Throws duplex::Error for an unknown/missing/repeated field or a size that is not a power of two.
  AddressMapping(const HbmOrganization& org, const BundleGeometry& bundles,
                 std::string_view order = kDefaultAddressMapping);

  std::uint64_t capacity() const { return capacity_; }          // bytes of the stack
  std::uint64_t access_bytes() const { return access_bytes_; }  // bytes per column access
  // Throws duplex::Error when addr >= capacity().
  DramCoord decode(std::uint64_t addr) const;
  std::uint64_t encode(const DramCoord& c) const;  // address of the access's first byte
  // Accesses per pseudo-channel, and the address of the k-th access of pseudo-channel `pc` in address order
  // (k < accesses_per_pc()).
  std::uint64_t accesses_per_pc() const;
  std::uint64_t address_in_pc(int pc, std::uint64_t k) const;

  int bundle_of(int bank) const { return bank / bundles_.banks_per_group_in_bundle; }
  int bank_in_bundle(int bank) const { return bank % bundles_.banks_per_group_in_bundle; }
  int bank_of(int bundle, int bank_in_bundle) const {
    return bundle * bundles_.banks_per_group_in_bundle + bank_in_bundle;
  }
  const BundleGeometry& bundles() const { return bundles_; }

  // Bank-bundle memory spaces: space = rank * bundles_per_rank + bundle (4 on Duplex).
  int spaces() const;
  int space_of(std::uint64_t addr) const;
  // True when rank and bundle are the two most significant fields: each space is then the contiguous
  // range [space_base(s), space_base(s) + space_size()).
  bool spaces_contiguous() const { return spaces_contiguous_; }
  std::uint64_t space_size() const { return capacity_ / static_cast<std::uint64_t>(spaces()); }
  // Throws duplex::Error when !spaces_contiguous() or s is out of range.
  std::uint64_t space_base(int s) const;

 private:
  struct FieldSlot {
    AddressField field;
    int shift;
    int bits;
  };
  int field_value(const DramCoord& c, AddressField f) const;
  HbmOrganization org_;
  BundleGeometry bundles_;
  std::vector<FieldSlot> slots_;  // least significant first
  std::uint64_t capacity_ = 0;
  std::uint64_t access_bytes_ = 0;
  int offset_bits_ = 0;
  bool spaces_contiguous_ = false;
};

}  // namespace duplex::sysc
