#pragma once
// A host-memory tier behind the prefix cache (LMCache's CPU backend, vLLM's CPU offloading): copies of
// cacheable KV blocks, by their prefix-cache keys, in host memory of `capacity` blocks. A block is copied
// there when the step computing it is scheduled (write-through: the device-to-host copy runs beside the
// steps), and stays until the tier is full: then the least recently used copy goes. A request whose
// sequence continues, after its cached device blocks, with blocks held here loads them over the host link
// instead of computing them. Pure bookkeeping: KvBlockManager keeps it, the simulator times the copies.
// A store spanning nodes (links.host_kv_scope cluster) keeps each copy in the memory of the node that stored
// it: store() says which, node_of() tells a loader whether its copy is local.
#include <cstdint>
#include <map>
#include <span>
#include <unordered_map>

namespace duplex::runtime {

class HostKvTier {
 public:
  // capacity_blocks 0: no tier (stores nothing, holds nothing); duplex::Error when negative.
  explicit HostKvTier(std::int64_t capacity_blocks = 0);
  std::int64_t capacity_blocks() const { return capacity_; }
  std::int64_t blocks() const { return static_cast<std::int64_t>(stamps_.size()); }
  bool contains(std::uint64_t key) const { return stamps_.contains(key); }

  // Copies `key` in, into the memory of `node` (true: a new copy, a device-to-host transfer), or marks its
  // copy used now where it lies (false); drops the least recently used copy when that leaves more than
  // capacity. False with no tier.
  bool store(std::uint64_t key, int node = 0);
  // The node holding the copy of `key` (held; InternalError otherwise).
  int node_of(std::uint64_t key) const;
  // How many of keys[from], keys[from + 1], ... are held, up to the first that is not.
  std::int64_t leading(std::span<const std::uint64_t> keys, std::size_t from) const;
  // Marks the copies of `keys` (all held) used now, in order.
  void touch(std::span<const std::uint64_t> keys);

 private:
  std::int64_t capacity_;
  struct Copy {
    std::uint64_t stamp = 0;  // last use
    int node = 0;
  };
  std::unordered_map<std::uint64_t, Copy> stamps_;
  std::map<std::uint64_t, std::uint64_t> by_use_;            // last use -> key: eviction order
  std::uint64_t next_stamp_ = 0;
};

}  // namespace duplex::runtime
