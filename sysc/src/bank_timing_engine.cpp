#include "duplex/sysc/bank_timing_engine.hpp"

#include <algorithm>

#include "duplex/base/error.hpp"

namespace duplex::sysc {

const char* to_string(CommandKind k) {
  switch (k) {
    case CommandKind::kActivate:
      return "ACT";
    case CommandKind::kPrecharge:
      return "PRE";
    case CommandKind::kRead:
      return "RD";
    case CommandKind::kWrite:
      return "WR";
    case CommandKind::kRefresh:
      return "REFab";
    case CommandKind::kBundleActivate:
      return "BACT";
    case CommandKind::kBundleRead:
      return "BRD";
    case CommandKind::kBundlePrecharge:
      return "BPRE";
  }
  return "?";
}

BankTimingEngine::BankTimingEngine(const HbmOrganization& org, const TimingTable& timing,
                                   const BundleGeometry& bundles)
    : org_(org),
      t_(timing),
      bundles_(bundles),
      banks_(static_cast<std::size_t>(org.ranks * org.banks_per_rank())),
      groups_(static_cast<std::size_t>(org.ranks * org.bank_groups)),
      ranks_(static_cast<std::size_t>(org.ranks)) {}

bool BankTimingEngine::opened_by_pim(int rank, int bank_group, int bank) const {
  return banks_[static_cast<std::size_t>(bank_index(rank, bank_group, bank))].opened_by_pim;
}

Tick BankTimingEngine::earliest_precharge(int rank, int bank_group, int bank) const {
  return std::max(banks_[static_cast<std::size_t>(bank_index(rank, bank_group, bank))].pre_ok, row_bus_ok_);
}

const char* BankTimingEngine::illegal_reason(const Command& c) const {
  if (c.rank < 0 || c.rank >= org_.ranks) return "rank out of range";
  const bool bundle_cmd = c.kind == CommandKind::kBundleActivate || c.kind == CommandKind::kBundleRead ||
                          c.kind == CommandKind::kBundlePrecharge;
  if (bundle_cmd) {
    if (c.bundle < 0 || c.bundle >= bundles_.bundles_per_rank) return "bundle out of range";
    int open = 0;
    int open_at_row = 0;
    for (int g = 0; g < org_.bank_groups; ++g)
      for (int i = 0; i < bundles_.banks_per_group_in_bundle; ++i) {
        const int row = open_row(c.rank, g, bundle_bank(c.bundle, i));
        open += row >= 0;
        open_at_row += row == c.row;
      }
    const int n = org_.bank_groups * bundles_.banks_per_group_in_bundle;
    switch (c.kind) {
      case CommandKind::kBundleActivate:
        return open == 0 ? nullptr : "bundle ACT needs every bank of the bundle closed";
      case CommandKind::kBundleRead:
        return open_at_row == n ? nullptr : "bundle RD needs the row open in every bank";
      default:
        return open > 0 ? nullptr : "bundle PRE with no open bank";
    }
  }
  if (c.kind == CommandKind::kRefresh) return open_banks_ == 0 ? nullptr : "REFab needs every bank closed";
  if (c.bank_group < 0 || c.bank_group >= org_.bank_groups || c.bank < 0 || c.bank >= org_.banks_per_group)
    return "bank out of range";
  const int row = open_row(c.rank, c.bank_group, c.bank);
  switch (c.kind) {
    case CommandKind::kActivate:
      if (c.row < 0 || c.row >= org_.rows) return "row out of range";
      return row < 0 ? nullptr : "ACT to an open bank";
    case CommandKind::kPrecharge:
      return row >= 0 ? nullptr : "PRE to a closed bank";
    default:
      return row == c.row ? nullptr : "column command to a row that is not open";
  }
}

Tick BankTimingEngine::activate_window(const Rank& r) const {
  if (r.faw_count < 4) return 0;
  return r.faw[static_cast<std::size_t>(r.faw_next)] + t_.tFAW;  // oldest of the last four
}

Tick BankTimingEngine::earliest(const Command& c) const {
  const Rank& rk = ranks_[static_cast<std::size_t>(c.rank)];
  switch (c.kind) {
    case CommandKind::kActivate: {
      const Bank& b = banks_[static_cast<std::size_t>(bank_index(c.rank, c.bank_group, c.bank))];
      const Group& g = groups_[static_cast<std::size_t>(group_index(c.rank, c.bank_group))];
      return std::max({b.act_ok, g.act_ok, rk.act_ok, activate_window(rk), row_bus_ok_});
    }
    case CommandKind::kPrecharge:
      return earliest_precharge(c.rank, c.bank_group, c.bank);
    case CommandKind::kRead: {
      const Bank& b = banks_[static_cast<std::size_t>(bank_index(c.rank, c.bank_group, c.bank))];
      const Group& g = groups_[static_cast<std::size_t>(group_index(c.rank, c.bank_group))];
      return std::max({b.rd_ok, g.rd_ok, rk.rd_ok, bus_rd_ok_, col_bus_ok_});
    }
    case CommandKind::kWrite: {
      const Bank& b = banks_[static_cast<std::size_t>(bank_index(c.rank, c.bank_group, c.bank))];
      const Group& g = groups_[static_cast<std::size_t>(group_index(c.rank, c.bank_group))];
      return std::max({b.wr_ok, g.wr_ok, rk.wr_ok, bus_wr_ok_, col_bus_ok_});
    }
    case CommandKind::kRefresh: {
      Tick t = row_bus_ok_;
      for (const Bank& b : banks_) t = std::max(t, b.act_ok);
      return t;
    }
    case CommandKind::kBundleActivate: {
      Tick t = std::max({rk.act_ok, activate_window(rk), row_bus_ok_});
      for (int g = 0; g < org_.bank_groups; ++g) {
        t = std::max(t, groups_[static_cast<std::size_t>(group_index(c.rank, g))].act_ok);
        for (int i = 0; i < bundles_.banks_per_group_in_bundle; ++i)
          t = std::max(
              t, banks_[static_cast<std::size_t>(bank_index(c.rank, g, bundle_bank(c.bundle, i)))].act_ok);
      }
      return t;
    }
    case CommandKind::kBundleRead: {
      Tick t = std::max(bundle_path_ok_, col_bus_ok_);
      for (int g = 0; g < org_.bank_groups; ++g)
        for (int i = 0; i < bundles_.banks_per_group_in_bundle; ++i)
          t = std::max(
              t, banks_[static_cast<std::size_t>(bank_index(c.rank, g, bundle_bank(c.bundle, i)))].rd_ok);
      return t;
    }
    case CommandKind::kBundlePrecharge: {
      Tick t = row_bus_ok_;
      for (int g = 0; g < org_.bank_groups; ++g)
        for (int i = 0; i < bundles_.banks_per_group_in_bundle; ++i) {
          const Bank& b = banks_[static_cast<std::size_t>(bank_index(c.rank, g, bundle_bank(c.bundle, i)))];
          if (b.open_row >= 0) t = std::max(t, b.pre_ok);
        }
      return t;
    }
  }
  return kNever;
}

void BankTimingEngine::open_bank(Bank& b, int row, bool pim, Tick at) {
  b.open_row = row;
  b.opened_by_pim = pim;
  b.rd_ok = std::max(b.rd_ok, at + t_.tRCD);
  b.wr_ok = std::max(b.wr_ok, at + t_.tRCD);
  b.pre_ok = std::max(b.pre_ok, at + t_.tRAS);
  b.act_ok = std::max(b.act_ok, at + t_.tRC);
  ++open_banks_;
  ++counters_.bank_activations;
}

void BankTimingEngine::close_bank(Bank& b, AccessPath path, Tick at) {
  if (b.opened_by_pim != (path == AccessPath::kPim)) ++counters_.bundle_conflicts;
  b.open_row = -1;
  b.act_ok = std::max(b.act_ok, at + t_.tRP);
  --open_banks_;
  ++counters_.bank_precharges;
}

void BankTimingEngine::issue(const Command& c, Tick at) {
  DUPLEX_ASSERT(illegal_reason(c) == nullptr, illegal_reason(c));
  DUPLEX_ASSERT(at >= earliest(c),
                std::string("command issued before its earliest legal time: ") + to_string(c.kind));
  Rank& rk = ranks_[static_cast<std::size_t>(c.rank)];
  const std::uint64_t access_bits = org_.access_granularity.bytes * 8;
  auto record_act = [&] {
    rk.act_ok = at + t_.tRRD_S;
    rk.faw[static_cast<std::size_t>(rk.faw_next)] = at;
    rk.faw_next = (rk.faw_next + 1) % 4;
    rk.faw_count = std::min(rk.faw_count + 1, 4);
    row_bus_ok_ = at + t_.tCK;
    ++counters_.activate_commands;
  };
  switch (c.kind) {
    case CommandKind::kActivate: {
      open_bank(banks_[static_cast<std::size_t>(bank_index(c.rank, c.bank_group, c.bank))], c.row,
                c.path == AccessPath::kPim, at);
      groups_[static_cast<std::size_t>(group_index(c.rank, c.bank_group))].act_ok = at + t_.tRRD_L;
      record_act();
      break;
    }
    case CommandKind::kPrecharge:
      close_bank(banks_[static_cast<std::size_t>(bank_index(c.rank, c.bank_group, c.bank))], c.path, at);
      row_bus_ok_ = at + t_.tCK;
      ++counters_.precharge_commands;
      break;
    case CommandKind::kRead:
    case CommandKind::kWrite: {
      Bank& b = banks_[static_cast<std::size_t>(bank_index(c.rank, c.bank_group, c.bank))];
      Group& g = groups_[static_cast<std::size_t>(group_index(c.rank, c.bank_group))];
      const bool read = c.kind == CommandKind::kRead;
      if (read) {
        b.pre_ok = std::max(b.pre_ok, at + t_.read_to_precharge);
        g.rd_ok = std::max(g.rd_ok, at + t_.tCCD_L);
        rk.rd_ok = std::max(rk.rd_ok, at + t_.tCCD_S);
        bus_rd_ok_ = std::max(bus_rd_ok_, at + t_.tBurst);
        g.wr_ok = std::max(g.wr_ok, at + t_.read_to_write);
        rk.wr_ok = std::max(rk.wr_ok, at + t_.read_to_write);
        bus_wr_ok_ = std::max(bus_wr_ok_, at + t_.read_to_write);
        ++counters_.xpu_reads;
      } else {
        b.pre_ok = std::max(b.pre_ok, at + t_.write_to_precharge);
        g.wr_ok = std::max(g.wr_ok, at + t_.tCCD_L);
        rk.wr_ok = std::max(rk.wr_ok, at + t_.tCCD_S);
        bus_wr_ok_ = std::max(bus_wr_ok_, at + t_.tBurst);
        g.rd_ok = std::max(g.rd_ok, at + t_.write_to_read_L);
        rk.rd_ok = std::max(rk.rd_ok, at + t_.write_to_read_S);
        bus_rd_ok_ = std::max(bus_rd_ok_, at + t_.write_to_read_other_rank);
        if (c.path == AccessPath::kPim)
          ++counters_.pim_writes;
        else
          ++counters_.xpu_writes;
      }
      // The same bank delivers at most one column access per tCCD_L, whichever path asks.
      b.rd_ok = std::max(b.rd_ok, at + t_.tCCD_L);
      b.wr_ok = std::max(b.wr_ok, at + t_.tCCD_L);
      col_bus_ok_ = at + t_.tCK;
      counters_.xpu_bus_busy += t_.tBurst;
      if (c.path == AccessPath::kPim)
        counters_.pim_tsv_bits += access_bits;
      else
        counters_.xpu_tsv_bits += access_bits;
      break;
    }
    case CommandKind::kRefresh:
      for (Bank& b : banks_) b.act_ok = at + t_.tRFC;
      row_bus_ok_ = at + t_.tCK;
      ++counters_.refresh_commands;
      counters_.refreshed_banks += banks_.size();
      break;
    case CommandKind::kBundleActivate:
      for (int g = 0; g < org_.bank_groups; ++g) {
        for (int i = 0; i < bundles_.banks_per_group_in_bundle; ++i)
          open_bank(banks_[static_cast<std::size_t>(bank_index(c.rank, g, bundle_bank(c.bundle, i)))], c.row,
                    true, at);
        groups_[static_cast<std::size_t>(group_index(c.rank, g))].act_ok = at + t_.tRRD_L;
      }
      record_act();
      break;
    case CommandKind::kBundleRead:
      for (int g = 0; g < org_.bank_groups; ++g)
        for (int i = 0; i < bundles_.banks_per_group_in_bundle; ++i) {
          Bank& b = banks_[static_cast<std::size_t>(bank_index(c.rank, g, bundle_bank(c.bundle, i)))];
          b.rd_ok = std::max(b.rd_ok, at + t_.bundle_read_interval);
          b.wr_ok = std::max(b.wr_ok, at + t_.bundle_read_interval);
          b.pre_ok = std::max(b.pre_ok, at + t_.read_to_precharge);
          ++counters_.bundle_bank_reads;
          counters_.pim_tsv_bits += access_bits;
        }
      bundle_path_ok_ = at + t_.bundle_read_interval;
      col_bus_ok_ = at + t_.tCK;
      ++counters_.bundle_read_commands;
      counters_.bundle_bus_busy += t_.bundle_read_interval;
      break;
    case CommandKind::kBundlePrecharge:
      for (int g = 0; g < org_.bank_groups; ++g)
        for (int i = 0; i < bundles_.banks_per_group_in_bundle; ++i) {
          Bank& b = banks_[static_cast<std::size_t>(bank_index(c.rank, g, bundle_bank(c.bundle, i)))];
          if (b.open_row >= 0) close_bank(b, AccessPath::kPim, at);
        }
      row_bus_ok_ = at + t_.tCK;
      ++counters_.precharge_commands;
      break;
  }
}

}  // namespace duplex::sysc
