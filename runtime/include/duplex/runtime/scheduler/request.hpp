#pragma once
// A serving request as the scheduler sees it: lengths and an arrival time, no tokens' contents.
#include <cstdint>
#include <vector>

#include "duplex/base/units.hpp"

namespace duplex::runtime {

using RequestId = std::int64_t;

// The data-parallel rank (node, or attention-DP device) of `ranks` (>= 1) that serves request `id`: id mod
// ranks, in [0, ranks) for any id (SGLang's round-robin). The scheduler's K/V memory, its prefix-cache salt,
// the step's per-rank shapes and functional emulation's node all use it.
inline int data_parallel_rank(RequestId id, int ranks) {
  return static_cast<int>((id % ranks + ranks) % ranks);
}

struct RequestSpec {
  RequestId id = 0;
  Time arrival;                     // simulated time the request reaches the server
  std::int64_t input_tokens = 0;    // prompt length, >= 1
  std::int64_t output_tokens = 0;   // tokens to generate, >= 1 (the request finishes after exactly this many)
  // Prompt tokens whose KV arrives with the request (migrated from a prefill device, Splitwise style), in
  // [0, input_tokens): the request starts with them computed and is decoding. 0 for a new request.
  std::int64_t cached_tokens = 0;
  // The sequence's content for prefix caching, as chained hashes of blocks of `hash_block_tokens` tokens
  // (Mooncake's trace hash_ids): content_hashes[i] stands for tokens [0, min((i + 1) x hash_block_tokens,
  // hashed_tokens)) of the sequence (the prompt, then the output), so two requests whose hashes agree at i
  // begin with the same that many tokens. They may cover a leading part of the prompt (a shared system
  // prompt), the prompt (a trace's), or the prompt and the output (a conversation, whose next turn repeats
  // both). Empty: nothing is known to be shared.
  std::vector<std::uint64_t> content_hashes{};
  std::int64_t hash_block_tokens = 0;  // >= 1 when content_hashes is not empty
  // Tokens the hashes stand for: in ((size - 1) x hash_block_tokens, size x hash_block_tokens] and at most
  // input_tokens + output_tokens.
  std::int64_t hashed_tokens = 0;

  bool operator==(const RequestSpec&) const = default;
};

}  // namespace duplex::runtime
