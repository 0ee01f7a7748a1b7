#pragma once
// Minimal CSV reading shared by the trace readers: comma-separated fields without quoting, one header.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace duplex::runtime {

struct CsvRow {
  std::int64_t line = 0;            // 1-based line number in the file
  std::vector<std::string> fields;  // trimmed of surrounding spaces
};

struct CsvTable {
  CsvRow header;
  std::vector<CsvRow> rows;
};

// Splits `text` into a header and rows, skipping blank and '#' lines. Throws duplex::Error (naming `label`)
// for an empty file or a row whose field count differs from the header's.
CsvTable parse_csv(std::string_view text, const std::string& label);

// Index of column `name` in the header, or -1.
int csv_column(const CsvTable& table, std::string_view name);

// Parses an integer field in [min, max]; duplex::Error "<label>:<line>: column <name>: ..." otherwise.
std::int64_t csv_int(const CsvRow& row, int column, std::string_view name, const std::string& label,
                     std::int64_t min, std::int64_t max);
// Parses a finite decimal number >= min.
double csv_number(const CsvRow& row, int column, std::string_view name, const std::string& label, double min);

}  // namespace duplex::runtime
