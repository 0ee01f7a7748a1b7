#pragma once
// The memory controller of one HBM3 pseudo-channel: a request queue, FR-FCFS scheduling (ready row hits
// first, then the oldest request), open- or closed-page policy, all-bank refresh every tREFI, and both
// access paths into the same banks: xPU reads/writes (one 32 B access per column command on the normal
// TSVs) and Logic-PIM bank-bundle reads (one column of all 8 banks of a bundle per command). Plain C++,
// event-driven: step() jumps straight to the earliest time the best next command is legal.
#include <cstdint>
#include <functional>
#include <vector>

#include "duplex/sysc/bank_timing_engine.hpp"

namespace duplex::sysc {

enum class PagePolicy { kOpen, kClosed };

struct ControllerConfig {
  // Requests held per pseudo-channel. Modeling choice (not in configs/ yet): 64.
  int queue_depth = 64;
  PagePolicy page_policy = PagePolicy::kOpen;
  bool refresh = true;
  // Controller overhead: tCK cycles from a request's arrival until it may be scheduled (address decode,
  // queue insertion, arbitration). Modeling choice (the paper gives no controller latency): 3 cycles.
  int overhead_cycles = 3;
  // Time the first refresh falls due; later ones every tREFI.
  Tick first_refresh = 0;
};

enum class RequestKind { kRead, kWrite, kBundleRead };

struct MemRequest {
  std::uint64_t id = 0;
  RequestKind kind = RequestKind::kRead;
  AccessPath path = AccessPath::kXpu;  // who issues a read/write; bundle reads are always Logic-PIM's
  DramCoord coord;                     // bundle reads: rank, row, column, and bank (any bank of the bundle)
  Tick arrival = 0;
};

struct MemCompletion {
  std::uint64_t id = 0;
  RequestKind kind = RequestKind::kRead;
  Tick arrival = 0;
  Tick done = 0;         // last data beat transferred
  bool row_hit = false;  // served without an ACT or PRE on its behalf
};

class PseudoChannelController {
 public:
  PseudoChannelController(const HbmOrganization& org, const TimingTable& timing,
                          const BundleGeometry& bundles, const ControllerConfig& config);

  bool can_accept() const { return static_cast<int>(queue_.size()) < config_.queue_depth; }
  // Requires can_accept() and a coordinate inside the organisation (duplex::Error otherwise).
  void enqueue(const MemRequest& r);
  // Issues the next command if it is legal at or before `until` and returns true; otherwise advances now()
  // to `until` and returns false. Completions of column commands are appended to `done`.
  bool step(Tick until, std::vector<MemCompletion>& done);
  void run_until(Tick until, std::vector<MemCompletion>& done) {
    while (step(until, done)) {
    }
  }
  // Runs until every queued request has completed; returns the time of the last completion.
  Tick drain(std::vector<MemCompletion>& done);

  Tick now() const { return now_; }
  bool empty() const { return queue_.empty(); }
  std::size_t queued() const { return queue_.size(); }
  Tick overhead() const { return overhead_; }
  const BankTimingEngine& engine() const { return engine_; }
  const ActionCounters& counters() const { return engine_.counters(); }
  // Called for every issued command (tests, traces).
  void set_command_observer(std::function<void(const Command&, Tick)> observer) {
    observer_ = std::move(observer);
  }

 private:
  struct Entry {
    MemRequest req;
    Tick ready = 0;
    int bundle = 0;
    bool needed_row_command = false;
  };
  struct Candidate {
    Command cmd;
    Tick at = kNever;
    bool column = false;
    int entry = -1;  // queue index; -1 for page-policy / refresh commands
  };
  Command command_for(Entry& e, bool& column, bool& blocked) const;
  void mark_pending_hits();
  std::size_t dedup_slot(const Entry& e) const;
  bool has_pending_hit(int rank, int bg, int bank) const;
  // A precharge of the open bank (rank, bg, bank), on the path that opened its row.
  Command precharge_of(int rank, int bg, int bank) const;
  Candidate refresh_candidate() const;
  void issue(const Candidate& c, std::vector<MemCompletion>& done);

  ControllerConfig config_;
  BankTimingEngine engine_;
  Tick overhead_ = 0;
  std::vector<Entry> queue_;
  std::vector<char> pending_hit_;          // per bank of the pseudo-channel
  std::vector<std::uint32_t> seen_stamp_;  // per bank and per bundle: last step that evaluated it
  std::vector<int> seen_key_;
  std::vector<Tick> seen_ready_;
  std::uint32_t stamp_ = 0;
  Tick now_ = 0;
  Tick refresh_due_ = 0;
  std::function<void(const Command&, Tick)> observer_;
};

}  // namespace duplex::sysc
