#pragma once
// Request trace CSV files. A header line names the columns; two schemas are accepted:
//   arrival_s,input_tokens,output_tokens            arrival in seconds (decimal, >= 0), as written
//   TIMESTAMP,ContextTokens,GeneratedTokens         Azure LLM inference trace (2023/2024): TIMESTAMP is
//                                                   "YYYY-MM-DD HH:MM:SS[.fraction]" or seconds; arrivals are
//                                                   made relative to the earliest row
// Columns may come in any order; other columns are ignored. Blank lines and lines starting with '#' are
// skipped; CRLF line ends are accepted. Token counts are integers >= 1. Rows are stable-sorted by arrival.
// Every problem is a duplex::Error naming the file, the line, the column and the expected form.
//
// A file whose first line (past blank and '#' lines) starts with '{' is a Mooncake trace (JSON lines, the
// FAST'25 release's format): {"timestamp": ms since the first request, "input_length": N, "output_length": M,
// "hash_ids": [...]} per line, other keys ignored. hash_ids (optional) name the prompt's blocks of
// kMooncakeHashBlockTokens tokens, equal ids meaning an equal prefix up to that block: they become the
// request's content_hashes, for prefix caching. Errors name the file, the line and the key.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "duplex/runtime/scheduler/request.hpp"

namespace duplex::runtime {

// Tokens per hash id of a Mooncake trace (source: Mooncake's FAST'25 trace release, block_size 512).
inline constexpr std::int64_t kMooncakeHashBlockTokens = 512;

// `label` names the file in errors. `limit` > 0 keeps the first `limit` requests by arrival.
std::vector<RequestSpec> parse_request_trace(std::string_view text, const std::string& label,
                                             std::int64_t limit = 0);
std::vector<RequestSpec> read_request_trace(const std::string& path, std::int64_t limit = 0);

}  // namespace duplex::runtime
