// The sparse backing store and the address mapping.
#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"
#include "duplex/sysc/address_mapping.hpp"
#include "duplex/sysc/sparse_memory.hpp"

namespace duplex::sysc {
namespace {

TEST(SparseMemory, WholeDeviceFitsAndHoldsRealBytes) {
  const SystemSpec sys = load_system("duplex");
  SparseMemory m(sys.memory_capacity().bytes);
  EXPECT_EQ(m.capacity(), 80ull << 30);
  std::vector<std::uint8_t> in(200000);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<std::uint8_t>(i * 7 + 1);
  const std::uint64_t far = m.capacity() - in.size();
  m.write(far, in.data(), in.size());
  m.write(12345, in.data(), in.size());
  std::vector<std::uint8_t> out(in.size());
  m.read(far, out.data(), out.size());
  EXPECT_EQ(out, in);
  m.read(12345, out.data(), out.size());
  EXPECT_EQ(out, in);
  EXPECT_LT(m.bytes_allocated(), 1u << 20);
  std::uint8_t z = 9;
  m.read(1ull << 35, &z, 1);
  EXPECT_EQ(z, 0);
  EXPECT_THROW(m.write(m.capacity() - 1, in.data(), 2), Error);
  EXPECT_THROW(m.read(m.capacity(), &z, 1), Error);
}

TEST(AddressMapping, RoundTripsAndInterleaves) {
  const HbmSpec hbm = load_system("duplex").memory;
  const AddressMapping m(hbm.org, make_bundle_geometry(hbm.org, 8));
  EXPECT_EQ(m.capacity(), hbm.org.stack_capacity().bytes);
  for (std::uint64_t a : std::vector<std::uint64_t>{0, 32, 4096, 123456789ull * 32, m.capacity() - 32})
    EXPECT_EQ(m.encode(m.decode(a)), a);
  // Consecutive accesses rotate over bank groups first, then pseudo-channels.
  EXPECT_EQ(m.decode(0).bank_group, 0);
  EXPECT_EQ(m.decode(32).bank_group, 1);
  EXPECT_EQ(m.decode(4 * 32).pc, 1);
  // The 4 bank-bundle spaces are contiguous quarters.
  ASSERT_TRUE(m.spaces_contiguous());
  EXPECT_EQ(m.spaces(), 4);
  for (int s = 0; s < 4; ++s) {
    EXPECT_EQ(m.space_base(s), static_cast<std::uint64_t>(s) * m.space_size());
    EXPECT_EQ(m.space_of(m.space_base(s) + 777 * 32), s);
  }
  EXPECT_THROW(m.decode(m.capacity()), Error);
  EXPECT_THROW(AddressMapping(hbm.org, make_bundle_geometry(hbm.org, 8), "rank:row:bank:col:pc:bg"), Error);
  EXPECT_THROW(AddressMapping(hbm.org, make_bundle_geometry(hbm.org, 8), "rank:bundle:row:bank:col:pc:bg:bg"),
               Error);
  EXPECT_THROW(make_bundle_geometry(hbm.org, 6), Error);
  const AddressMapping other(hbm.org, make_bundle_geometry(hbm.org, 8), "row:rank:bundle:bank:col:pc:bg");
  EXPECT_FALSE(other.spaces_contiguous());
  EXPECT_THROW(other.space_base(0), Error);
}

}  // namespace
}  // namespace duplex::sysc
