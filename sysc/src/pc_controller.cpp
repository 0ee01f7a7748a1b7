#include "duplex/sysc/pc_controller.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::sysc {

PseudoChannelController::PseudoChannelController(const HbmOrganization& org, const TimingTable& timing,
                                                 const BundleGeometry& bundles,
                                                 const ControllerConfig& config)
    : config_(config),
      engine_(org, timing, bundles),
      overhead_(timing.tCK * config.overhead_cycles),
      pending_hit_(static_cast<std::size_t>(org.ranks * org.banks_per_rank()), 0),
      refresh_due_(config.first_refresh) {
  const auto slots = static_cast<std::size_t>(org.ranks * (org.banks_per_rank() + bundles.bundles_per_rank));
  seen_stamp_.assign(slots, 0);
  seen_key_.assign(slots, 0);
  seen_ready_.assign(slots, 0);
  if (config.queue_depth < 1)
    throw Error(fmt::format("controller queue_depth {} must be >= 1", config.queue_depth));
  if (config.overhead_cycles < 0) throw Error("controller overhead_cycles must be >= 0");
  queue_.reserve(static_cast<std::size_t>(config.queue_depth));
}

void PseudoChannelController::enqueue(const MemRequest& r) {
  if (!can_accept()) throw Error("pseudo-channel controller: enqueue on a full request queue");
  const HbmOrganization& o = engine_.organization();
  const DramCoord& c = r.coord;
  if (c.rank < 0 || c.rank >= o.ranks || c.bank_group < 0 || c.bank_group >= o.bank_groups || c.bank < 0 ||
      c.bank >= o.banks_per_group || c.row < 0 || c.row >= o.rows || c.column < 0 ||
      c.column >= o.columns_per_row())
    throw Error(
        fmt::format("memory request {}: coordinate (rank {}, bg {}, bank {}, row {}, col {}) outside the "
                    "organisation",
                    r.id, c.rank, c.bank_group, c.bank, c.row, c.column));
  Entry e;
  e.req = r;
  e.ready = std::max(r.arrival, now_) + overhead_;
  e.bundle = c.bank / engine_.bundles().banks_per_group_in_bundle;
  queue_.push_back(e);
}

std::size_t PseudoChannelController::dedup_slot(const Entry& e) const {
  const HbmOrganization& o = engine_.organization();
  const DramCoord& c = e.req.coord;
  if (e.req.kind == RequestKind::kBundleRead)
    return static_cast<std::size_t>(o.ranks * o.banks_per_rank() +
                                    c.rank * engine_.bundles().bundles_per_rank + e.bundle);
  return static_cast<std::size_t>((c.rank * o.bank_groups + c.bank_group) * o.banks_per_group + c.bank);
}

bool PseudoChannelController::has_pending_hit(int rank, int bg, int bank) const {
  const HbmOrganization& o = engine_.organization();
  return pending_hit_[static_cast<std::size_t>((rank * o.bank_groups + bg) * o.banks_per_group + bank)] != 0;
}

void PseudoChannelController::mark_pending_hits() {
  const HbmOrganization& o = engine_.organization();
  std::fill(pending_hit_.begin(), pending_hit_.end(), 0);
  auto mark = [&](int rank, int bg, int bank, int row) {
    if (engine_.open_row(rank, bg, bank) == row)
      pending_hit_[static_cast<std::size_t>((rank * o.bank_groups + bg) * o.banks_per_group + bank)] = 1;
  };
  ++stamp_;
  for (const Entry& e : queue_) {
    const DramCoord& c = e.req.coord;
    // Requests to the same bank (or bundle) and row mark the same banks: mark once.
    const std::size_t slot = dedup_slot(e);
    if (seen_stamp_[slot] == stamp_ && seen_key_[slot] == c.row) continue;
    seen_stamp_[slot] = stamp_;
    seen_key_[slot] = c.row;
    if (e.req.kind != RequestKind::kBundleRead) {
      mark(c.rank, c.bank_group, c.bank, c.row);
      continue;
    }
    for (int g = 0; g < o.bank_groups; ++g)
      for (int i = 0; i < engine_.bundles().banks_per_group_in_bundle; ++i)
        mark(c.rank, g, engine_.bundle_bank(e.bundle, i), c.row);
  }
}

// The command the request needs next. blocked: it needs a PRE that would close a row other queued requests
// still hit (FR-FCFS serves those first).
Command PseudoChannelController::command_for(Entry& e, bool& column, bool& blocked) const {
  const DramCoord& c = e.req.coord;
  Command cmd;
  cmd.rank = c.rank;
  cmd.row = c.row;
  column = false;
  blocked = false;
  if (e.req.kind == RequestKind::kBundleRead) {
    cmd.path = AccessPath::kPim;
    cmd.bundle = e.bundle;
    int open = 0;
    int at_row = 0;
    bool hit_elsewhere = false;
    const HbmOrganization& o = engine_.organization();
    for (int g = 0; g < o.bank_groups; ++g)
      for (int i = 0; i < engine_.bundles().banks_per_group_in_bundle; ++i) {
        const int b = engine_.bundle_bank(e.bundle, i);
        const int row = engine_.open_row(c.rank, g, b);
        open += row >= 0;
        at_row += row == c.row;
        if (row >= 0 && row != c.row && has_pending_hit(c.rank, g, b)) hit_elsewhere = true;
      }
    const int n = o.bank_groups * engine_.bundles().banks_per_group_in_bundle;
    if (at_row == n) {
      cmd.kind = CommandKind::kBundleRead;
      column = true;
    } else if (open == 0) {
      cmd.kind = CommandKind::kBundleActivate;
    } else {
      cmd.kind = CommandKind::kBundlePrecharge;
      blocked = hit_elsewhere;
    }
    return cmd;
  }
  cmd.path = e.req.path;
  cmd.bank_group = c.bank_group;
  cmd.bank = c.bank;
  const int row = engine_.open_row(c.rank, c.bank_group, c.bank);
  if (row == c.row) {
    cmd.kind = e.req.kind == RequestKind::kRead ? CommandKind::kRead : CommandKind::kWrite;
    column = true;
  } else if (row < 0) {
    cmd.kind = CommandKind::kActivate;
  } else {
    cmd.kind = CommandKind::kPrecharge;
    blocked = has_pending_hit(c.rank, c.bank_group, c.bank);
  }
  return cmd;
}

PseudoChannelController::Candidate PseudoChannelController::refresh_candidate() const {
  Candidate best;
  const HbmOrganization& o = engine_.organization();
  if (engine_.all_banks_closed()) {
    best.cmd.kind = CommandKind::kRefresh;
    best.at = std::max({engine_.earliest(best.cmd), refresh_due_, now_});
    return best;
  }
  for (int r = 0; r < o.ranks; ++r)
    for (int g = 0; g < o.bank_groups; ++g)
      for (int b = 0; b < o.banks_per_group; ++b) {
        if (engine_.open_row(r, g, b) < 0) continue;
        const Command cmd = precharge_of(r, g, b);
        const Tick at = std::max({engine_.earliest(cmd), refresh_due_, now_});
        if (at < best.at) best = {cmd, at, false, -1};
      }
  return best;
}

Command PseudoChannelController::precharge_of(int rank, int bg, int bank) const {
  Command cmd;
  cmd.kind = CommandKind::kPrecharge;
  cmd.path = engine_.opened_by_pim(rank, bg, bank) ? AccessPath::kPim : AccessPath::kXpu;
  cmd.rank = rank;
  cmd.bank_group = bg;
  cmd.bank = bank;
  return cmd;
}

bool PseudoChannelController::step(Tick until, std::vector<MemCompletion>& done) {
  mark_pending_hits();
  ++stamp_;
  Candidate best;
  int best_age = 0;
  for (std::size_t i = 0; i < queue_.size(); ++i) {
    Entry& e = queue_[i];
    // Requests to the same bank (or bundle) and row of the same kind need the same command; only the oldest
    // can win, so the younger ones are skipped.
    const std::size_t slot = dedup_slot(e);
    const int key = e.req.coord.row * 4 + static_cast<int>(e.req.kind);
    if (seen_stamp_[slot] == stamp_ && seen_key_[slot] == key && e.ready >= seen_ready_[slot]) continue;
    seen_stamp_[slot] = stamp_;
    seen_key_[slot] = key;
    seen_ready_[slot] = e.ready;
    bool column = false;
    bool blocked = false;
    Command cmd = command_for(e, column, blocked);
    if (blocked) continue;
    const Tick at = std::max({engine_.earliest(cmd), e.ready, now_});
    const int age = static_cast<int>(i);
    const bool better = at < best.at || (at == best.at && column && !best.column) ||
                        (at == best.at && column == best.column && age < best_age);
    if (better) {
      best = {cmd, at, column, static_cast<int>(i)};
      best_age = age;
    }
  }
  // Closed page, or a refresh falling due within tRC: a bank with no queued hit is precharged as soon as it
  // may be (before a refresh this takes the precharges of idle banks off the refresh's critical path).
  const bool close_idle = config_.page_policy == PagePolicy::kClosed ||
                          (config_.refresh && now_ + engine_.timing().tRC >= refresh_due_);
  if (close_idle) {
    const HbmOrganization& o = engine_.organization();
    for (int r = 0; r < o.ranks; ++r)
      for (int g = 0; g < o.bank_groups; ++g)
        for (int b = 0; b < o.banks_per_group; ++b) {
          if (engine_.open_row(r, g, b) < 0 || has_pending_hit(r, g, b)) continue;
          const Command cmd = precharge_of(r, g, b);
          const Tick at = std::max(engine_.earliest(cmd), now_);
          if (at < best.at || (at == best.at && !best.column)) {
            best = {cmd, at, false, -1};
            best_age = -1;
          }
        }
  }
  if (config_.refresh && refresh_due_ <= best.at) best = refresh_candidate();
  if (best.at > until || best.at >= kNever) {
    if (until < kNever) now_ = std::max(now_, until);
    return false;
  }
  issue(best, done);
  return true;
}

void PseudoChannelController::issue(const Candidate& c, std::vector<MemCompletion>& done) {
  now_ = c.at;
  engine_.issue(c.cmd, c.at);
  if (observer_) observer_(c.cmd, c.at);
  if (c.cmd.kind == CommandKind::kRefresh) {
    refresh_due_ += engine_.timing().tREFI;
    return;
  }
  if (c.entry < 0) return;
  Entry& e = queue_[static_cast<std::size_t>(c.entry)];
  if (!c.column) {
    e.needed_row_command = true;
    return;
  }
  const TimingTable& t = engine_.timing();
  MemCompletion m;
  m.id = e.req.id;
  m.kind = e.req.kind;
  m.arrival = e.req.arrival;
  m.row_hit = !e.needed_row_command;
  switch (c.cmd.kind) {
    case CommandKind::kRead:
      m.done = c.at + t.read_data;
      break;
    case CommandKind::kWrite:
      m.done = c.at + t.write_data;
      break;
    default:
      m.done = c.at + t.bundle_read_data;
      break;
  }
  done.push_back(m);
  queue_.erase(queue_.begin() + c.entry);
}

Tick PseudoChannelController::drain(std::vector<MemCompletion>& done) {
  Tick last = now_;
  while (!queue_.empty()) {
    const std::size_t before = done.size();
    DUPLEX_ASSERT(step(kNever, done), "controller cannot make progress with requests queued");
    for (std::size_t i = before; i < done.size(); ++i) last = std::max(last, done[i].done);
  }
  return last;
}

}  // namespace duplex::sysc
