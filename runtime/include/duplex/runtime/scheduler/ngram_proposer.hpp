#pragma once
// N-gram drafts for speculative decoding (prompt lookup decoding; vLLM's speculative method "ngram"): the
// drafts come from the request's own tokens on the host, no model and no device time.
#include <cstdint>
#include <span>
#include <vector>

namespace duplex::runtime {

// The tokens that followed the earliest earlier occurrence of the longest suffix of `tokens` that is
// min_n..max_n tokens long: at most `k`, fewer when the sequence ends sooner; none when no suffix of min_n
// or more tokens occurs earlier. An occurrence may overlap the suffix but ends before the last token (vLLM's
// NgramProposer picks the same match). duplex::Error unless 1 <= min_n <= max_n and k >= 0.
std::vector<std::int32_t> propose_ngram_drafts(std::span<const std::int32_t> tokens, int min_n, int max_n,
                                               int k);

}  // namespace duplex::runtime
