#include "duplex/runtime/scheduler/ngram_proposer.hpp"

#include <fmt/format.h>
#include <algorithm>

#include "duplex/base/error.hpp"

namespace duplex::runtime {

std::vector<std::int32_t> propose_ngram_drafts(std::span<const std::int32_t> tokens, int min_n, int max_n,
                                               int k) {
  if (min_n < 1 || max_n < min_n || k < 0)
    throw Error(
        fmt::format("n-gram drafts: n from {} to {} and {} drafts; expected 1 <= min n <= max n and "
                    "drafts >= 0",
                    min_n, max_n, k));
  const auto size = static_cast<std::int64_t>(tokens.size());
  // Longest first; an occurrence starting at `start` ends at start + n <= size - 1.
  for (std::int64_t n = std::min<std::int64_t>(max_n, size - 1); n >= min_n; --n) {
    const std::span<const std::int32_t> suffix = tokens.last(static_cast<std::size_t>(n));
    for (std::int64_t start = 0; start + n <= size - 1; ++start) {
      if (!std::equal(suffix.begin(), suffix.end(), tokens.begin() + start)) continue;
      const std::int64_t from = start + n, count = std::min<std::int64_t>(k, size - from);
      return {tokens.begin() + from, tokens.begin() + from + count};
    }
  }
  return {};
}

}  // namespace duplex::runtime
