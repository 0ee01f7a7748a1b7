#pragma once
// Scheduler settings. The engine fills kv_capacity_blocks (device memory minus weights) and
// prefill_capacity_tokens (the prefill memory space, DUPLEX.md s.6) from the memory plan; the rest can be read
// from a `scheduler:` YAML map (read_scheduler_config).
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "duplex/base/device_spec.hpp"
#include "duplex/runtime/scheduler/kv_block_manager.hpp"

namespace duplex {
class ConfigNode;
}

namespace duplex::runtime {

enum class BatchingPolicy : std::uint8_t {
  // vLLM v1 / Sarathi-Serve: every step, running requests continue (decode 1 token, or the next prefill
  // chunk) and waiting requests are admitted while batch slots, the token budget and free KV blocks allow.
  // KV grows block by block; when a running request cannot grow, the youngest running request is preempted
  // and later recomputed.
  continuous,
  // Orca (iteration-level scheduling): new requests join at step boundaries with their whole prefill; KV
  // for prompt + all output tokens is reserved at admission (Orca allocates max tokens up front), so no
  // request is ever preempted and the batch is limited by that reservation.
  orca,
  // Static batching: a batch is admitted only when the previous batch has fully finished; whole prefills,
  // full KV reservation as orca.
  static_batch,
};

std::string to_string(BatchingPolicy p);

inline constexpr int kMaxSpeculativeTokens = 16;  // draft tokens on a step's longest draft path, at most
inline constexpr int kMaxTreeTokens = 128;  // draft tokens a step verifies per request (a tree), at most
inline constexpr int kMaxDraftTopk = 16;    // a draft tree's branching, at most

struct SchedulerConfig {
  BatchingPolicy policy = BatchingPolicy::continuous;
  std::int64_t max_batch = 128;            // most requests running (admitted, unfinished) at once
  std::int64_t max_tokens_per_step = 0;    // token budget per step; 0 = unlimited
  bool chunked_prefill = false;            // split prefills to fill the budget (continuous only)
  std::int64_t kv_block_tokens = 16;       // tokens per KV block
  std::int64_t kv_capacity_blocks = 0;     // KV blocks available (from device memory minus weights), >= 1
  // The model's sliding window and its layers (KvBlockManager: the windowed layers' blocks wholly behind it
  // are freed). Set by the engine from the model, not read from the map.
  KvWindow kv_window;
  // Prefill space (Duplex memory spaces): the prompt tokens of the requests whose prefill is not complete,
  // in whole KV blocks of kv_block_tokens (the space is paged like the KV cache), never exceed this; 0 = no
  // bound. Otherwise >= kv_block_tokens. See Scheduler for the contract.
  std::int64_t prefill_capacity_tokens = 0;
  // Automatic prefix caching (vLLM's APC; on by default there too): a request that carries content hashes
  // (RequestSpec::content_hashes) reuses the cached K/V of the whole blocks its sequence shares with earlier
  // requests (PrefixCache, KvBlockManager) and computes only the rest; at least its last token is computed.
  // Requests without hashes are unaffected. Not modelled with a sliding window (add_request refuses such a
  // request).
  // `data_parallel_ranks` > 1: data-parallel nodes (or attention-DP devices), each its own K/V memory and
  // its own share of the step. Requests are dealt to them at arrival by `data_parallel_balance` (round-robin
  // by id, or to the least-loaded rank); each rank holds kv_capacity_blocks / ranks blocks (and
  // prefill_capacity_tokens / ranks of prefill space), runs at most max_batch / ranks requests and
  // max_tokens_per_step / ranks tokens a step (rounded down; SGLang divides max_running_requests and, under
  // DP attention, chunked_prefill_size by dp_size alike), caches only its requests' prefixes
  // (prefix_block_keys), admits its waiting requests in order and preempts its own youngest when short
  // (Scheduler). Set by the engine from its layout and system, not read from the map.
  bool prefix_caching = true;
  int data_parallel_ranks = 1;
  DataParallelBalance data_parallel_balance = DataParallelBalance::least_loaded;
  // Whether cached_prefix_tokens() also counts the blocks of the unfinished requests added so far, computed
  // yet or not, as a cache-aware router's approximate tree does (SGLang's router inserts a prompt into its
  // worker's tree when it routes it): set by the engine for the pools behind a cache-aware router;
  // cache-aware dealing over data-parallel ranks counts them anyway.
  bool count_routed_prefixes = false;
  // Blocks of host memory for copies of cached KV blocks (HostKvTier; 0: none), each data-parallel rank's
  // (its devices' host memory). Set by the engine from the system's links.host_kv_offload, not read from the
  // map.
  std::int64_t host_kv_blocks = 0;
  // A host or disk store spanning nodes (links.host_kv_scope / disk_kv_scope cluster): per data-parallel
  // rank, the node whose host memory and drives take its copies (empty: node 0 for every rank); a copy on
  // another node loads over the network.
  std::vector<int> host_kv_nodes;
  // Blocks of a disk tier behind the host tier, each data-parallel rank's (links.disk_kv_offload; 0: none).
  std::int64_t disk_kv_blocks = 0;
  // Speculative decoding: every decoding request verifies up to `speculative_tokens` draft tokens per step
  // beside its last token (0: off; capped so that it never drafts past its output, and by the token budget).
  // Draft i (0-based) is accepted with probability `acceptance_rates[i]` (beyond the list: its last) given
  // drafts 0..i-1 were, up to the first rejection: one rate is the i.i.d. model of Leviathan et al. (ICML
  // 2023; accepted ~ min(Geometric, drafts)), several the falling acceptance along a draft that EAGLE's and
  // Medusa's measurements show. The step emits the accepted drafts plus one token of its own and keeps their
  // K/V, the rejected drafts' K/V is dropped. `acceptance_seed` seeds the draws, one stream per (request,
  // tokens in its sequence so far), so results do not depend on which requests share a step, nor on whether a
  // split system moved the request between pools.
  int speculative_tokens = 0;
  std::vector<double> acceptance_rates;  // 1..kMaxSpeculativeTokens probabilities when speculative_tokens > 0
  std::uint64_t acceptance_seed = 0;
  // Tree verification (EAGLE-2, SpecInfer, Medusa; SGLang's speculative_num_draft_tokens and _eagle_topk):
  // the drafts of a step form a tree of depth speculative_tokens with `tree_tokens` nodes (0: a chain, as
  // many nodes as its depth), all verified at once (decode attention with 1 + tree_tokens query rows per
  // request, each over the context and its ancestors; the rejected nodes' K/V dropped). The draft proposes it
  // in speculative_tokens passes: the first over each request's last token, each later one over the
  // `draft_topk` nodes the tree expands at that depth (so at most draft_topk + (depth - 1) draft_topk^2
  // candidates, of which tree_tokens are kept). acceptance_rates are then per depth of the tree: the
  // probability that some node at depth i continues the accepted path given depths 0..i-1 did; the tree's
  // width enters the acceptance only through them (measure them for the tree; no tree acceptance model is
  // assumed). A request whose output caps its drafts at depth d < speculative_tokens verifies tree_nodes(d).
  int tree_tokens = 0;
  int draft_topk = 1;
  // What the draft's first pass of a step computes for a verifying request (ScheduledRequest::draft_context;
  // set by the engine from its draft). A draft model caches its own K/V: after a verification that accepted
  // a of d drafts it holds the accepted tokens it computed (its inputs were the last token and drafts
  // 1..d - 1), so it lacks one token (a < d) or two (a = d, its last draft and the bonus token). A draft head
  // (an MTP module, an EAGLE head: draft_head true) reads the target's hidden states, which it had for none
  // of the verified tokens when it proposed: it recomputes all a + 1 kept tokens, as vLLM's EAGLE proposer
  // does.
  bool draft_head = false;

  // Draft tokens verified for a draft of depth `depth` (0..speculative_tokens): `depth` for a chain; for a
  // tree, depth plus its extra nodes in proportion, depth + floor((tree_tokens - speculative_tokens) x depth
  // / speculative_tokens): tree_tokens at full depth, strictly increasing in depth.
  std::int64_t tree_nodes(std::int64_t depth) const;
  // Candidates a draft of depth `depth` expanding `topk` nodes per depth proposes: topk + (depth - 1) topk^2.
  static std::int64_t tree_candidates(std::int64_t depth, std::int64_t topk);
  // The most requests one data-parallel rank runs at once whatever max_batch allows (0: no such bound). The
  // serving simulator sets it where DeepEP's low-latency buffers bound a decoding step's tokens (Pool:
  // SystemSpec::expert_all_to_all_max_tokens).
  std::int64_t rank_batch_cap = 0;
  // Each data-parallel rank's share of max_batch (within rank_batch_cap), and of max_tokens_per_step (0: no
  // budget).
  std::int64_t rank_max_batch() const {
    const std::int64_t share = max_batch / data_parallel_ranks;
    return rank_batch_cap > 0 ? std::min(share, rank_batch_cap) : share;
  }
  std::int64_t rank_tokens_per_step() const { return max_tokens_per_step / data_parallel_ranks; }

  // Throws duplex::Error naming the bad field and the expected value.
  void validate() const;
};

// Reads a `scheduler:` map: policy (continuous|orca|static), max_batch, max_tokens_per_step (0 = none),
// chunked_prefill, kv_block_tokens, prefix_caching. kv_capacity_blocks, kv_window, prefill_capacity_tokens
// and draft_head are not read (the engine sets them); the map is finish()ed, so unknown keys are errors.
SchedulerConfig read_scheduler_config(const ConfigNode& node);

}  // namespace duplex::runtime
