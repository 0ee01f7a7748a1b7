#include "duplex/runtime/workload/request_trace.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>

#include "duplex/base/config_store.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/workload/csv.hpp"

namespace duplex::runtime {
namespace {

constexpr std::int64_t kMaxTokens = 100'000'000;

struct Schema {
  const char* arrival;
  const char* input;
  const char* output;
  bool azure;
};
constexpr Schema kNative{"arrival_s", "input_tokens", "output_tokens", false};
constexpr Schema kAzure{"TIMESTAMP", "ContextTokens", "GeneratedTokens", true};

// A timestamp split into whole seconds and a fraction, so differences stay exact to sub-microseconds.
struct Stamp {
  std::int64_t whole = 0;
  double fraction = 0.0;
};

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t y, std::int64_t m, std::int64_t d) {
  y -= m <= 2 ? 1 : 0;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const std::int64_t yoe = y - era * 400;
  const std::int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const std::int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

bool parse_digits(std::string_view s, std::size_t pos, std::size_t n, std::int64_t& out) {
  if (pos + n > s.size()) return false;
  const auto [end, ec] = std::from_chars(s.data() + pos, s.data() + pos + n, out);
  return ec == std::errc{} && end == s.data() + pos + n;
}

// "YYYY-MM-DD HH:MM:SS[.fraction]" (or 'T' between date and time).
bool parse_datetime(std::string_view s, Stamp& out) {
  std::int64_t y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  if (s.size() < 19 || s[4] != '-' || s[7] != '-' || (s[10] != ' ' && s[10] != 'T') || s[13] != ':' ||
      s[16] != ':')
    return false;
  if (!parse_digits(s, 0, 4, y) || !parse_digits(s, 5, 2, mo) || !parse_digits(s, 8, 2, d) ||
      !parse_digits(s, 11, 2, h) || !parse_digits(s, 14, 2, mi) || !parse_digits(s, 17, 2, sec))
    return false;
  if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 60) return false;
  constexpr std::int64_t kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (d > kDays[mo - 1] + (mo == 2 && leap ? 1 : 0)) return false;  // no February 30th
  double fraction = 0.0;
  if (s.size() > 19) {
    if (s[19] != '.' || s.size() == 20) return false;
    const std::string frac = "0" + std::string(s.substr(19));
    const auto [end, ec] = std::from_chars(frac.data(), frac.data() + frac.size(), fraction);
    if (ec != std::errc{} || end != frac.data() + frac.size()) return false;
  }
  out.whole = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
  out.fraction = fraction;
  return true;
}

Stamp parse_stamp(const CsvRow& row, int column, const Schema& schema, const std::string& label) {
  const std::string& s = row.fields[static_cast<std::size_t>(column)];
  Stamp stamp;
  if (schema.azure && parse_datetime(s, stamp)) return stamp;
  double v = 0.0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || !std::isfinite(v) || v < 0.0)
    throw Error(fmt::format("{}:{}: column {}: \"{}\" is not valid; expected {}", label, row.line,
                            schema.arrival, s,
                            schema.azure ? "a time \"YYYY-MM-DD HH:MM:SS[.fraction]\" or seconds >= 0"
                                         : "seconds as a decimal number >= 0"));
  stamp.fraction = v;
  return stamp;
}

// Rows stable-sorted by arrival, the first `limit` kept (all when 0), numbered 0, 1, ... in that order.
std::vector<RequestSpec> sorted_and_numbered(std::vector<RequestSpec> out, std::int64_t limit) {
  std::stable_sort(out.begin(), out.end(),
                   [](const RequestSpec& a, const RequestSpec& b) { return a.arrival < b.arrival; });
  if (limit > 0 && static_cast<std::int64_t>(out.size()) > limit) out.resize(static_cast<std::size_t>(limit));
  for (std::size_t i = 0; i < out.size(); ++i) out[i].id = static_cast<RequestId>(i);
  return out;
}

// The first line that is neither blank nor a '#' comment, trimmed at the start.
std::string_view first_content_line(std::string_view text) {
  for (std::size_t start = 0; start < text.size();) {
    const std::size_t end = std::min(text.find('\n', start), text.size());
    std::string_view line = text.substr(start, end - start);
    const std::size_t first = line.find_first_not_of(" \t\r");
    if (first != std::string_view::npos && line[first] != '#') return line.substr(first);
    start = end + 1;
  }
  return {};
}

std::vector<RequestSpec> parse_mooncake(std::string_view text, const std::string& label) {
  std::vector<RequestSpec> out;
  std::int64_t line_no = 0;
  for (std::size_t start = 0; start < text.size();) {
    const std::size_t end = std::min(text.find('\n', start), text.size());
    const std::string_view line = text.substr(start, end - start);
    start = end + 1;
    ++line_no;
    const std::size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string_view::npos || line[first] == '#') continue;
    const auto fail = [&](std::string_view key, std::string_view expected) {
      throw Error(fmt::format("{}:{}: key \"{}\": expected {}", label, line_no, key, expected));
    };
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {  // a syntax error, or a number past a double's range
      throw Error(fmt::format("{}:{}: not a JSON object ({}); expected one Mooncake request per line", label,
                              line_no, e.what()));
    }
    if (!row.is_object()) fail("(line)", "a JSON object per line");
    const auto count = [&](const char* key) -> std::int64_t {
      const auto it = row.find(key);
      if (it == row.end() || !it->is_number_integer() || it->get<std::int64_t>() < 1 ||
          it->get<std::int64_t>() > kMaxTokens)
        fail(key, fmt::format("an integer in [1, {}]", kMaxTokens));
      return it->get<std::int64_t>();
    };
    RequestSpec r;
    r.input_tokens = count("input_length");
    r.output_tokens = count("output_length");
    const auto stamp = row.find("timestamp");
    if (stamp == row.end() || !stamp->is_number() || !std::isfinite(stamp->get<double>()) ||
        stamp->get<double>() < 0)
      fail("timestamp", "milliseconds since the first request, a number >= 0");
    r.arrival = ms(stamp->get<double>());
    if (const auto ids = row.find("hash_ids"); ids != row.end()) {
      const std::int64_t blocks = (r.input_tokens + kMooncakeHashBlockTokens - 1) / kMooncakeHashBlockTokens;
      if (!ids->is_array() || static_cast<std::int64_t>(ids->size()) > blocks)
        fail("hash_ids", fmt::format("an array of at most {} ids (input_length {} in blocks of {} tokens)",
                                     blocks, r.input_tokens, kMooncakeHashBlockTokens));
      for (const auto& id : *ids) {
        if (!id.is_number_unsigned()) fail("hash_ids", "integer ids >= 0");
        r.content_hashes.push_back(id.get<std::uint64_t>());
      }
      r.hash_block_tokens = kMooncakeHashBlockTokens;
      r.hashed_tokens = std::min(
          r.input_tokens, static_cast<std::int64_t>(r.content_hashes.size()) * kMooncakeHashBlockTokens);
    }
    out.push_back(std::move(r));
  }
  if (out.empty()) throw Error(fmt::format("{}: no request lines; expected at least one", label));
  return out;
}

}  // namespace

std::vector<RequestSpec> parse_request_trace(std::string_view text, const std::string& label, std::int64_t limit) {
  if (first_content_line(text).starts_with('{'))
    return sorted_and_numbered(parse_mooncake(text, label), limit);
  const CsvTable table = parse_csv(text, label);
  const Schema* schema = nullptr;
  for (const Schema* s : {&kNative, &kAzure})
    if (csv_column(table, s->arrival) >= 0) schema = s;
  if (!schema)
    throw Error(fmt::format("{}:{}: header \"{}\" names no arrival column; expected columns "
                            "arrival_s,input_tokens,output_tokens or TIMESTAMP,ContextTokens,GeneratedTokens",
                            label, table.header.line, fmt::join(table.header.fields, ",")));
  const int arrival_col = csv_column(table, schema->arrival);
  const int input_col = csv_column(table, schema->input);
  const int output_col = csv_column(table, schema->output);
  for (const auto& [col, name] : {std::pair{input_col, schema->input}, std::pair{output_col, schema->output}})
    if (col < 0)
      throw Error(fmt::format("{}:{}: header has {} but no {} column; expected columns {},{},{}", label,
                              table.header.line, schema->arrival, name, schema->arrival, schema->input,
                              schema->output));
  if (table.rows.empty()) throw Error(fmt::format("{}: no request rows after the header; expected at least one", label));

  std::vector<Stamp> stamps;
  std::vector<RequestSpec> out;
  for (const CsvRow& row : table.rows) {
    stamps.push_back(parse_stamp(row, arrival_col, *schema, label));
    RequestSpec r;
    r.input_tokens = csv_int(row, input_col, schema->input, label, 1, kMaxTokens);
    r.output_tokens = csv_int(row, output_col, schema->output, label, 1, kMaxTokens);
    out.push_back(r);
  }
  // Azure timestamps are wall-clock: arrivals count from the earliest row. Native arrivals are used as written.
  Stamp origin;
  if (schema->azure) {
    origin = *std::min_element(stamps.begin(), stamps.end(), [](const Stamp& a, const Stamp& b) {
      return a.whole != b.whole ? a.whole < b.whole : a.fraction < b.fraction;
    });
  }
  for (std::size_t i = 0; i < out.size(); ++i)
    out[i].arrival = seconds(static_cast<double>(stamps[i].whole - origin.whole) +
                             (stamps[i].fraction - origin.fraction));
  return sorted_and_numbered(std::move(out), limit);
}

std::vector<RequestSpec> read_request_trace(const std::string& path, std::int64_t limit) {
  return parse_request_trace(read_text_file(path), path, limit);
}

}  // namespace duplex::runtime
