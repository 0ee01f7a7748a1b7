#include "duplex/sysc/address_mapping.hpp"

#include <bit>

#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::sysc {

BundleGeometry make_bundle_geometry(const HbmOrganization& org, int banks_per_bundle) {
  if (banks_per_bundle <= 0 || org.banks_per_rank() % banks_per_bundle != 0 ||
      banks_per_bundle % org.bank_groups != 0)
    throw Error(
        fmt::format("bank bundle of {} banks: must divide the {} banks of a rank and spread evenly "
                    "over its {} bank groups",
                    banks_per_bundle, org.banks_per_rank(), org.bank_groups));
  BundleGeometry g;
  g.bundles_per_rank = org.banks_per_rank() / banks_per_bundle;
  g.banks_per_group_in_bundle = banks_per_bundle / org.bank_groups;
  return g;
}

namespace {

struct FieldName {
  std::string_view name;
  AddressField field;
};
constexpr FieldName kFieldNames[] = {{"rank", AddressField::kRank},   {"bundle", AddressField::kBundle},
                                     {"row", AddressField::kRow},     {"bank", AddressField::kBank},
                                     {"col", AddressField::kColumn},  {"pc", AddressField::kPseudoChannel},
                                     {"bg", AddressField::kBankGroup}};

int log2_exact(std::uint64_t v, std::string_view what) {
  if (v == 0 || !std::has_single_bit(v))
    throw Error(fmt::format("address mapping: {} = {} is not a power of two", what, v));
  return std::countr_zero(v);
}

}  // namespace

AddressMapping::AddressMapping(const HbmOrganization& org, const BundleGeometry& bundles,
                               std::string_view order)
    : org_(org), bundles_(bundles) {
  auto size_of = [&](AddressField f) -> std::uint64_t {
    switch (f) {
      case AddressField::kRank:
        return static_cast<std::uint64_t>(org.ranks);
      case AddressField::kBundle:
        return static_cast<std::uint64_t>(bundles.bundles_per_rank);
      case AddressField::kRow:
        return static_cast<std::uint64_t>(org.rows);
      case AddressField::kBank:
        return static_cast<std::uint64_t>(bundles.banks_per_group_in_bundle);
      case AddressField::kColumn:
        return static_cast<std::uint64_t>(org.columns_per_row());
      case AddressField::kPseudoChannel:
        return static_cast<std::uint64_t>(org.pseudo_channels());
      case AddressField::kBankGroup:
        return static_cast<std::uint64_t>(org.bank_groups);
    }
    return 0;
  };
  std::vector<AddressField> msb_first;
  std::size_t pos = 0;
  while (pos <= order.size()) {
    const std::size_t end = std::min(order.find(':', pos), order.size());
    const std::string_view name = order.substr(pos, end - pos);
    bool known = false;
    for (const auto& fn : kFieldNames) {
      if (fn.name != name) continue;
      known = true;
      for (AddressField seen : msb_first)
        if (seen == fn.field)
          throw Error(fmt::format("address mapping '{}': field '{}' repeated", order, name));
      msb_first.push_back(fn.field);
    }
    if (!known)
      throw Error(
          fmt::format("address mapping '{}': unknown field '{}'; expected the 7 fields "
                      "rank, bundle, row, bank, col, pc, bg separated by ':'",
                      order, name));
    pos = end + 1;
  }
  if (msb_first.size() != std::size(kFieldNames))
    throw Error(
        fmt::format("address mapping '{}': names {} fields; expected all 7 of rank, bundle, row, bank, "
                    "col, pc, bg",
                    order, msb_first.size()));

  access_bytes_ = org.access_granularity.bytes;
  offset_bits_ = log2_exact(access_bytes_, "access_granularity");
  int shift = offset_bits_;
  for (auto it = msb_first.rbegin(); it != msb_first.rend(); ++it) {
    const int bits = log2_exact(size_of(*it), fmt::format("size of field {}", static_cast<int>(*it)));
    slots_.push_back({*it, shift, bits});
    shift += bits;
  }
  if (shift > 62) throw Error("address mapping: stack larger than 2^62 bytes");
  capacity_ = std::uint64_t{1} << shift;
  const bool rank_top = msb_first[0] == AddressField::kRank || msb_first[1] == AddressField::kRank;
  const bool bundle_top = msb_first[0] == AddressField::kBundle || msb_first[1] == AddressField::kBundle;
  spaces_contiguous_ = rank_top && bundle_top;
}

DramCoord AddressMapping::decode(std::uint64_t addr) const {
  if (addr >= capacity_)
    throw Error(fmt::format("address 0x{:x} is outside the stack (capacity 0x{:x} bytes)", addr, capacity_));
  DramCoord c;
  int bundle = 0;
  int bank_lo = 0;
  for (const FieldSlot& s : slots_) {
    const int v = static_cast<int>((addr >> s.shift) & ((std::uint64_t{1} << s.bits) - 1));
    switch (s.field) {
      case AddressField::kRank:
        c.rank = v;
        break;
      case AddressField::kBundle:
        bundle = v;
        break;
      case AddressField::kRow:
        c.row = v;
        break;
      case AddressField::kBank:
        bank_lo = v;
        break;
      case AddressField::kColumn:
        c.column = v;
        break;
      case AddressField::kPseudoChannel:
        c.pc = v;
        break;
      case AddressField::kBankGroup:
        c.bank_group = v;
        break;
    }
  }
  c.bank = bank_of(bundle, bank_lo);
  return c;
}

int AddressMapping::field_value(const DramCoord& c, AddressField f) const {
  switch (f) {
    case AddressField::kRank:
      return c.rank;
    case AddressField::kBundle:
      return bundle_of(c.bank);
    case AddressField::kRow:
      return c.row;
    case AddressField::kBank:
      return bank_in_bundle(c.bank);
    case AddressField::kColumn:
      return c.column;
    case AddressField::kPseudoChannel:
      return c.pc;
    case AddressField::kBankGroup:
      return c.bank_group;
  }
  return 0;
}

std::uint64_t AddressMapping::encode(const DramCoord& c) const {
  std::uint64_t addr = 0;
  for (const FieldSlot& s : slots_) {
    const auto v = static_cast<std::uint64_t>(field_value(c, s.field));
    DUPLEX_ASSERT(v < (std::uint64_t{1} << s.bits), "DRAM coordinate out of range");
    addr |= v << s.shift;
  }
  return addr;
}

std::uint64_t AddressMapping::accesses_per_pc() const {
  return capacity_ / access_bytes_ / static_cast<std::uint64_t>(org_.pseudo_channels());
}

std::uint64_t AddressMapping::address_in_pc(int pc, std::uint64_t k) const {
  DUPLEX_ASSERT(pc >= 0 && pc < org_.pseudo_channels() && k < accesses_per_pc(), "access index out of range");
  std::uint64_t addr = 0;
  for (const FieldSlot& s : slots_) {
    const std::uint64_t mask = (std::uint64_t{1} << s.bits) - 1;
    if (s.field == AddressField::kPseudoChannel) {
      addr |= static_cast<std::uint64_t>(pc) << s.shift;
      continue;
    }
    addr |= (k & mask) << s.shift;
    k >>= s.bits;
  }
  return addr;
}

int AddressMapping::spaces() const {
  return org_.ranks * bundles_.bundles_per_rank;
}

int AddressMapping::space_of(std::uint64_t addr) const {
  const DramCoord c = decode(addr);
  return c.rank * bundles_.bundles_per_rank + bundle_of(c.bank);
}

std::uint64_t AddressMapping::space_base(int s) const {
  if (!spaces_contiguous_)
    throw Error(
        "address mapping: bank-bundle spaces are contiguous only when rank and bundle are the two most "
        "significant fields");
  if (s < 0 || s >= spaces())
    throw Error(fmt::format("bank-bundle space {} out of range [0, {})", s, spaces()));
  DramCoord c;
  c.rank = s / bundles_.bundles_per_rank;
  c.bank = bank_of(s % bundles_.bundles_per_rank, 0);
  return encode(c);
}

}  // namespace duplex::sysc
