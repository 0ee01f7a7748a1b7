#include "duplex/runtime/scheduler/scheduler_config.hpp"

#include <fmt/format.h>

#include "duplex/base/config.hpp"
#include "duplex/base/error.hpp"

namespace duplex::runtime {

std::string to_string(BatchingPolicy p) {
  switch (p) {
    case BatchingPolicy::continuous: return "continuous";
    case BatchingPolicy::orca: return "orca";
    case BatchingPolicy::static_batch: return "static";
  }
  return "unknown";
}

void SchedulerConfig::validate() const {
  if (max_batch < 1) throw Error(fmt::format("scheduler max_batch is {}; expected >= 1", max_batch));
  if (data_parallel_ranks < 1)
    throw Error(fmt::format("scheduler data_parallel_ranks is {}; expected >= 1 (data-parallel nodes)",
                            data_parallel_ranks));
  if (max_tokens_per_step < 0)
    throw Error(fmt::format("scheduler max_tokens_per_step is {}; expected >= 0 (0: no budget)",
                            max_tokens_per_step));
  if (max_batch < data_parallel_ranks)
    throw Error(fmt::format(
        "scheduler max_batch (--batch) is {}, fewer than the {} data-parallel ranks it is shared by; "
        "expected >= {} (each rank runs max_batch / ranks requests)",
        max_batch, data_parallel_ranks, data_parallel_ranks));
  if (max_tokens_per_step > 0 && max_tokens_per_step < data_parallel_ranks)
    throw Error(fmt::format(
        "scheduler max_tokens_per_step (--max-tokens-per-step) is {}, fewer than the {} data-parallel ranks "
        "it is shared by; "
        "expected 0 (no budget) or >= {} (each rank computes max_tokens_per_step / ranks tokens a step)",
        max_tokens_per_step, data_parallel_ranks, data_parallel_ranks));
  if (chunked_prefill && max_tokens_per_step == 0)
    throw Error("scheduler chunked_prefill needs a token budget; expected max_tokens_per_step >= 1");
  if (chunked_prefill && policy != BatchingPolicy::continuous)
    throw Error(fmt::format("scheduler chunked_prefill is a continuous-batching option; policy {} runs "
                            "whole prefills (expected chunked_prefill: false)", to_string(policy)));
  if (kv_block_tokens < 1)
    throw Error(fmt::format("scheduler kv_block_tokens is {}; expected >= 1", kv_block_tokens));
  if (kv_capacity_blocks < data_parallel_ranks)
    throw Error(
        fmt::format("scheduler kv_capacity_blocks is {}; expected >= 1 per data-parallel rank ({}) "
                    "(device memory minus weights)",
                    kv_capacity_blocks, data_parallel_ranks));
  if (disk_kv_blocks < 0 || (disk_kv_blocks > 0 && host_kv_blocks == 0))
    throw Error(
        fmt::format("scheduler disk_kv_blocks is {}; expected 0 (no disk tier), or >= 1 behind a host "
                    "tier (host_kv_blocks >= 1)",
                    disk_kv_blocks));
  if (!host_kv_nodes.empty() && host_kv_nodes.size() != static_cast<std::size_t>(data_parallel_ranks))
    throw Error(
        fmt::format("scheduler host_kv_nodes names {} nodes; expected none or one per data-parallel rank "
                    "({})",
                    host_kv_nodes.size(), data_parallel_ranks));
  if (kv_window.tokens < 0 || kv_window.full_layers < 0 || kv_window.windowed_layers < 1)
    throw Error(fmt::format("scheduler kv_window is {} tokens over {} windowed and {} full layers; expected "
                            "tokens >= 0 (0: no window), >= 1 windowed and >= 0 full layers",
                            kv_window.tokens, kv_window.windowed_layers, kv_window.full_layers));
  if (speculative_tokens < 0 || speculative_tokens > kMaxSpeculativeTokens)
    throw Error(fmt::format("scheduler speculative_tokens is {}; expected 0 (off) to {}", speculative_tokens,
                            kMaxSpeculativeTokens));
  if (speculative_tokens > 0 &&
      (acceptance_rates.empty() || acceptance_rates.size() > static_cast<std::size_t>(kMaxSpeculativeTokens)))
    throw Error(
        fmt::format("scheduler acceptance_rates holds {} values; expected 1 to {} (one per draft "
                    "position, the last repeating)",
                    acceptance_rates.size(), kMaxSpeculativeTokens));
  for (std::size_t i = 0; i < acceptance_rates.size(); ++i)
    if (!(acceptance_rates[i] >= 0.0 && acceptance_rates[i] <= 1.0))
      throw Error(fmt::format("scheduler acceptance_rates[{}] is {}; expected a probability in [0, 1]", i,
                              acceptance_rates[i]));
  if (tree_tokens != 0 &&
      (speculative_tokens == 0 || tree_tokens < speculative_tokens || tree_tokens > kMaxTreeTokens))
    throw Error(
        fmt::format("scheduler tree_tokens is {}; expected 0 (a chain of drafts) or, with speculative "
                    "decoding, the depth ({}) to {} draft tokens verified per request",
                    tree_tokens, speculative_tokens, kMaxTreeTokens));
  if (draft_topk < 1 || draft_topk > kMaxDraftTopk || (draft_topk > 1 && tree_tokens == 0))
    throw Error(
        fmt::format("scheduler draft_topk is {}; expected 1, or with tree_tokens 2 to {} (the nodes a "
                    "draft tree expands per depth)",
                    draft_topk, kMaxDraftTopk));
  if (tree_tokens > 0) {
    const std::int64_t candidates = tree_candidates(speculative_tokens, draft_topk);
    if (tree_tokens > candidates)
      throw Error(
          fmt::format("scheduler tree_tokens is {}; a tree of depth {} expanding draft_topk {} nodes per "
                      "depth proposes at most {} candidates; expected tree_tokens <= {} (or a larger "
                      "draft_topk)",
                      tree_tokens, speculative_tokens, draft_topk, candidates, candidates));
  }
  if (prefill_capacity_tokens < 0 ||
      (prefill_capacity_tokens > 0 && prefill_capacity_tokens < kv_block_tokens * data_parallel_ranks))
    throw Error(
        fmt::format("scheduler prefill_capacity_tokens is {}; expected 0 (no prefill space bound) or at "
                    "least one KV block ({} tokens) per data-parallel rank ({})",
                    prefill_capacity_tokens, kv_block_tokens, data_parallel_ranks));
}

std::int64_t SchedulerConfig::tree_nodes(std::int64_t depth) const {
  DUPLEX_ASSERT(depth >= 0 && depth <= speculative_tokens, "a draft deeper than speculative_tokens");
  if (tree_tokens == 0 || speculative_tokens == 0) return depth;
  return depth + (tree_tokens - speculative_tokens) * depth / speculative_tokens;
}

std::int64_t SchedulerConfig::tree_candidates(std::int64_t depth, std::int64_t topk) {
  return depth < 1 ? 0 : topk + (depth - 1) * topk * topk;
}

SchedulerConfig read_scheduler_config(const ConfigNode& node) {
  SchedulerConfig c;
  const std::string policy = node.get_enum("policy", {"continuous", "orca", "static"});
  c.policy = policy == "continuous" ? BatchingPolicy::continuous
             : policy == "orca"     ? BatchingPolicy::orca
                                    : BatchingPolicy::static_batch;
  c.max_batch = node.get_int("max_batch", 1, 1'000'000);
  c.max_tokens_per_step = node.has("max_tokens_per_step") ? node.get_int("max_tokens_per_step", 0, 1'000'000'000) : 0;
  c.chunked_prefill = node.get_or<bool>("chunked_prefill", false);
  c.kv_block_tokens = node.has("kv_block_tokens") ? node.get_int("kv_block_tokens", 1, 1'000'000) : 16;
  c.prefix_caching = node.get_or<bool>("prefix_caching", true);
  node.ignore("description");
  node.finish();
  if (c.chunked_prefill && c.max_tokens_per_step == 0)
    node.fail("chunked_prefill", "chunked prefill needs a token budget", "max_tokens_per_step >= 1 beside it");
  if (c.chunked_prefill && c.policy != BatchingPolicy::continuous)
    node.fail("chunked_prefill", "chunked prefill is a continuous-batching option",
              "policy: continuous, or chunked_prefill: false");
  return c;
}

}  // namespace duplex::runtime
