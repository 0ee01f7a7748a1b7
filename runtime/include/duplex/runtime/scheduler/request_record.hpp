#pragma once
// Per-request timeline recorded by the scheduler, for TTFT / TBT / E2E metrics.
#include <cstdint>
#include <optional>
#include <vector>

#include "duplex/base/units.hpp"
#include "duplex/runtime/scheduler/request.hpp"

namespace duplex::runtime {

struct RequestRecord {
  RequestSpec spec;
  std::optional<Time> first_scheduled;  // start of the first step that computed any of its tokens
  std::vector<Time> token_times;        // end time of the step that emitted each output token, in order (a
                                        // speculative step emits several at its end)
  std::optional<Time> finish;           // = token_times.back() once all output tokens are emitted
  std::int64_t preemptions = 0;         // times its KV was freed for recompute
  std::int64_t recomputed_tokens = 0;   // tokens computed again because of preemptions
  std::int64_t draft_tokens = 0;        // speculative decoding: draft tokens verified, and accepted
  std::int64_t accepted_tokens = 0;
  std::int64_t verify_steps = 0;  // steps that verified draft tokens for it
  // Prefix caching, over all its admissions with content hashes: the tokens it had to compute (its prompt, or
  // prompt + generated after a preemption) and those of them taken from the cache.
  std::int64_t prefix_query_tokens = 0;
  std::int64_t prefix_hit_tokens = 0;
  std::int64_t host_hit_tokens = 0;  // of prefix_hit_tokens, those loaded from the host tier
  std::int64_t host_remote_hit_tokens = 0;  // of host_hit_tokens, those from another node's host memory
  std::int64_t disk_hit_tokens = 0;         // of host_hit_tokens, those read from the disk tier
  std::int64_t disk_remote_hit_tokens = 0;  // of disk_hit_tokens, those from another node's drives
  int rank = -1;                     // the data-parallel rank it was dealt to (-1 until then: Scheduler)

  bool finished() const { return finish.has_value(); }
  Time ttft() const;                    // first token time - arrival; InternalError before the first token
  Time e2e() const;                     // finish - arrival; InternalError before finishing
  std::vector<Time> tbt() const;        // gaps between consecutive tokens (output_tokens - 1 of them)
};

}  // namespace duplex::runtime
