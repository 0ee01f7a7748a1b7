// N-gram drafts (prompt lookup), worked by hand: the longest suffix of min_n..max_n tokens found earlier, its
// earliest occurrence, the tokens after it up to k or the sequence's end.
#include "duplex/runtime/scheduler/ngram_proposer.hpp"

#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "duplex/base/error.hpp"

namespace duplex::runtime {
namespace {

using Tokens = std::vector<std::int32_t>;

TEST(NgramProposer, TheLongestSuffixFoundEarlierProposesWhatFollowedIt) {
  // The suffix [1 2 3] (max_n 3) occurs at 0, followed by 4 5 6 9 3 ...: k 2 proposes 4 5, k 5 five tokens.
  const Tokens t{1, 2, 3, 4, 5, 6, 9, 3, 7, 1, 2, 3};
  EXPECT_EQ(propose_ngram_drafts(t, 1, 3, 2), (Tokens{4, 5}));
  EXPECT_EQ(propose_ngram_drafts(t, 1, 3, 5), (Tokens{4, 5, 6, 9, 3}));
  EXPECT_EQ(propose_ngram_drafts(t, 1, 3, 0), Tokens{});
}

TEST(NgramProposer, ALongerMatchWinsOverAnEarlierShorterOne) {
  // [8] occurs first at 0 (followed by 1); [5 8] at 3 (followed by 2): max_n 2 takes the longer.
  const Tokens t{8, 1, 0, 5, 8, 2, 5, 8};
  EXPECT_EQ(propose_ngram_drafts(t, 1, 2, 1), (Tokens{2}));
  EXPECT_EQ(propose_ngram_drafts(t, 1, 1, 1), (Tokens{1}));  // n = 1 only: the earliest [8]
}

TEST(NgramProposer, TheEarliestOccurrenceAmongEquallyLongOnes) {
  const Tokens t{4, 7, 4, 9, 4};  // [4] at 0 (then 7) and 2 (then 9)
  EXPECT_EQ(propose_ngram_drafts(t, 1, 3, 1), (Tokens{7}));
}

TEST(NgramProposer, NoMatchOfMinNTokensProposesNothing) {
  const Tokens t{1, 2, 3, 4, 2};  // [2] occurs earlier, [4 2] does not
  EXPECT_EQ(propose_ngram_drafts(t, 1, 2, 3), (Tokens{3, 4, 2}));
  EXPECT_EQ(propose_ngram_drafts(t, 2, 2, 3), Tokens{});
  EXPECT_EQ(propose_ngram_drafts(Tokens{5}, 1, 3, 3), Tokens{});
  EXPECT_EQ(propose_ngram_drafts(Tokens{}, 1, 3, 3), Tokens{});
}

TEST(NgramProposer, AMatchMayOverlapTheSuffixAndTheDraftsStopAtTheEnd) {
  // A repeated token: [7 7] at 0 overlaps the suffix [7 7] at 1; it proposes the one token left after it.
  const Tokens t{7, 7, 7};
  EXPECT_EQ(propose_ngram_drafts(t, 1, 2, 4), (Tokens{7}));
  // A cycle of 3: the suffix [1 2 3] at 0, then 6 tokens follow; k 4 takes 4.
  const Tokens cycle{1, 2, 3, 1, 2, 3, 1, 2, 3};
  EXPECT_EQ(propose_ngram_drafts(cycle, 1, 3, 4), (Tokens{1, 2, 3, 1}));
}

TEST(NgramProposer, BadBoundsAreErrors) {
  for (const auto& [min_n, max_n, k] : {std::tuple{0, 2, 1}, std::tuple{3, 2, 1}, std::tuple{1, 2, -1}}) {
    try {
      propose_ngram_drafts(Tokens{1, 2}, min_n, max_n, k);
      ADD_FAILURE() << min_n << " " << max_n << " " << k;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("expected 1 <= min n <= max n"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace duplex::runtime
