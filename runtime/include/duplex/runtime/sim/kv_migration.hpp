#pragma once
// The cost of moving prompts' K/V from one instance's devices to another's over the links (Splitwise-style
// split systems): the one formula the split serving simulator and the functional executor both use.
//   link:    NVLink when the run's devices (or the two instances') fit one node (links.devices_per_node),
//            InfiniBand otherwise; links.*_bandwidth is each device's link
//   streams: the device pairs that carry one prompt side by side (kv_transfer_streams: each device of a
//            tensor-parallel group sends, or receives, its shard of the K/V over its own link)
//   time:    bytes / (streams x link bandwidth) + link latency
//   queue:   an instance's links carry one prompt at a time, in the order the prompts are ready; a prompt
//            waits for the sender's and the receiver's links (KvLinkSchedule)
//   when:    after the prompt's prefill, or layer by layer while the step that completes it runs
//            (split.kv_transfer: layerwise; KvLinkSchedule::book_prompt)
//   energy:  links.nvlink_per_byte (or links.infiniband_per_byte) x bytes, category communication
// (The in-device copy of Logic-PIM memory spaces is an op of the step's plan instead: compiler kKvMigration.)
#include <cstdint>
#include <vector>

#include "duplex/base/device_spec.hpp"
#include "duplex/compiler/model_spec.hpp"
#include "duplex/compiler/parallel.hpp"
#include "duplex/runtime/sim/energy_ledger.hpp"

namespace duplex::runtime {

class KvLinkMigration {
 public:
  // `devices`: all devices of the run (both pools); decides NVLink vs InfiniBand. Throws duplex::Error when
  // the energy table has no price for the link's action.
  KvLinkMigration(const SystemSpec& system, int devices);
  // The link between two given devices: NVLink when they share a node (`one_node`), InfiniBand otherwise.
  KvLinkMigration(const SystemSpec& system, bool one_node);

  bool one_node() const { return one_node_; }
  // The whole transfer of `bytes` over `streams` (>= 1) links side by side: transfer() + latency.
  Time time(double bytes, int streams = 1) const;
  Time transfer(double bytes, int streams = 1) const;     // the time the links are busy with it
  Time latency() const { return latency_; }
  void charge(EnergyLedger& ledger, double bytes) const;  // on a ledger over `system.energy`

 private:
  Bandwidth bandwidth_;
  Time latency_;
  const char* action_;
  bool one_node_;
};

// Device pairs that move one prompt's K/V from an instance of layout `from` to one of layout `to` in
// parallel: each holds its tensor-parallel group's K/V in min(tp, kv_heads) distinct shards (GQA: a device's
// KV heads; MLA's latent, whole on every device, in tp shares of the tokens), and a shard moves over its
// sender's and its receiver's own link, so min(sender shards, receiver shards) links work at once.
int kv_transfer_streams(const compiler::ModelSpec& model, const compiler::ParallelLayout& from,
                        const compiler::ParallelLayout& to);

// When K/V transfers between instances happen: each instance's links carry one transfer at a time, in the
// order they are asked for (FIFO: a simulator asks in the order the prompts are ready); a transfer starts
// once it is ready and both its sender's and its receiver's links are free.
class KvLinkSchedule {
 public:
  KvLinkSchedule(std::size_t senders, std::size_t receivers);
  // Books a transfer ready at `ready` that keeps the links of sender `from` and receiver `to` busy for
  // `busy`; returns its start.
  Time book(std::size_t from, std::size_t to, Time ready, Time busy);

  // When one prompt's K/V crosses: its first byte leaves at `start`; the receiver holds all of it `time`
  // later.
  struct Crossing {
    Time start, time;
    Time arrival() const { return start + time; }
  };
  // Books the transfer of `bytes` over `link` (`streams` side by side) of a prompt whose prefill ended with a
  // step from `step_start` to `step_end`.
  //   layers == 0 (after prefill): it leaves at step_end once both links are free; time =
  //     link.time(bytes, streams).
  //   layers > 0 (layer by layer; Splitwise, Mooncake): layer l's share, bytes / layers of the whole prompt
  //     (its earlier chunks' K/V goes with its layer), is ready at step_start + (l + 1) / layers of the step
  //     (the layers taken as equally long), and the links send the shares in layer order: the first leaves at
  //     max(ready, links free), the last arrives at max(start + whole transfer, step_end + one share's
  //     transfer) + latency; the links are busy until then.
  Crossing book_prompt(std::size_t from, std::size_t to, const KvLinkMigration& link, double bytes,
                       int streams, Time step_start, Time step_end, int layers);

 private:
  std::vector<Time> sender_free_, receiver_free_;
};

// K/V bytes of one token of `model`, all layers and all KV heads: 2 (K, V) x layers x kv_heads x head_dim x KV
// dtype bytes (MLA: layers x the compressed latent + rope key).
double kv_bytes_per_token(const compiler::ModelSpec& model);

}  // namespace duplex::runtime
