#include "duplex/runtime/workload/csv.hpp"

#include <charconv>
#include <cmath>
#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::runtime {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::vector<std::string> split(std::string_view line) {
  std::vector<std::string> out;
  for (;;) {
    const auto comma = line.find(',');
    out.emplace_back(trim(line.substr(0, comma)));
    if (comma == std::string_view::npos) return out;
    line.remove_prefix(comma + 1);
  }
}

[[noreturn]] void field_error(const CsvRow& row, std::string_view name, const std::string& label,
                              std::string_view value, std::string_view expected) {
  throw Error(fmt::format("{}:{}: column {}: \"{}\" is not valid; expected {}", label, row.line, name, value,
                          expected));
}

}  // namespace

CsvTable parse_csv(std::string_view text, const std::string& label) {
  CsvTable table;
  bool have_header = false;
  std::int64_t line_no = 0;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    const std::string_view line = trim(text.substr(0, nl));
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++line_no;
    if (line.empty() || line.front() == '#') continue;
    CsvRow row{line_no, split(line)};
    if (!have_header) {
      for (std::size_t i = 0; i < row.fields.size(); ++i)
        for (std::size_t j = 0; j < i; ++j)
          if (row.fields[i] == row.fields[j])
            throw Error(
                fmt::format("{}:{}: column \"{}\" appears twice in the header; expected each column once",
                            label, line_no, row.fields[i]));
      table.header = std::move(row);
      have_header = true;
      continue;
    }
    if (row.fields.size() != table.header.fields.size())
      throw Error(fmt::format("{}:{}: {} fields; expected {} as in the header ({})", label, line_no,
                              row.fields.size(), table.header.fields.size(),
                              fmt::join(table.header.fields, ",")));
    table.rows.push_back(std::move(row));
  }
  if (!have_header) throw Error(fmt::format("{}: no header line; expected a CSV file with a header", label));
  return table;
}

int csv_column(const CsvTable& table, std::string_view name) {
  for (std::size_t i = 0; i < table.header.fields.size(); ++i)
    if (table.header.fields[i] == name) return static_cast<int>(i);
  return -1;
}

std::int64_t csv_int(const CsvRow& row, int column, std::string_view name, const std::string& label,
                     std::int64_t min, std::int64_t max) {
  const std::string& s = row.fields[static_cast<std::size_t>(column)];
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || v < min || v > max)
    field_error(row, name, label, s, fmt::format("an integer in [{}, {}]", min, max));
  return v;
}

double csv_number(const CsvRow& row, int column, std::string_view name, const std::string& label, double min) {
  const std::string& s = row.fields[static_cast<std::size_t>(column)];
  double v = 0.0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || !std::isfinite(v) || v < min)
    field_error(row, name, label, s, fmt::format("a decimal number >= {}", min));
  return v;
}

}  // namespace duplex::runtime
