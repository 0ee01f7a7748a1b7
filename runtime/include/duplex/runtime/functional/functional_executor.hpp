#pragma once
// Functional emulation: runs a model on real tensors for a small batch of prompts, as a Duplex system would.
// Requests are batched continuously by the runtime Scheduler; every step is lowered and placed by the
// compiler (compiler::lower + compiler::place with the system's CostModel, as the serving simulator does),
// then its ops run on tensors on the device units (duplex/runtime/device/) the plan gives them:
//  - xPU ops on an XpuDevice (the kernels library, CPU backend);
//  - PIM ops (GEMMs the placement sends to PIM, expert FFNs, decode attention) on a LogicPimDevice (the
//    Logic-PIM datapath, golden or RTL; or the SystemC device through the driver, via pim_unit_factory) or, on
//    Bank-PIM / BankGroup-PIM systems, a BankPimDevice.
// Split systems (SystemSpec::split_prefill_fraction > 0, as the serving simulator's split model): a prefill pool
// of devices runs each prompt and emits its first token; the request's K/V is then copied block by block from
// the prefill devices' paged caches into the decode pool's (new block tables there), and the decode pool,
// with its own scheduler, generates the rest; the two pools advance in simulated-time order.
// Multi-device: the system's devices for the model (SystemSpec::devices_for, or `devices`) in the compiler's
// ParallelLayout (TP attention / FFN / LM head inside a node, data-parallel nodes, EP or expert-TP experts
// over every node's devices); each device holds its shard of the weights and of the KV heads and runs its
// shard of each op; partial outputs are summed where the plan all-reduces (the kernels' sum of partials).
// Across nodes each request is served by one node (round-robin by id), whose devices alone hold its K/V and
// run its non-expert ops; the experts take every node's tokens routed to them. Simulated step time and energy come from the serving
// simulator's StepExecutor on the same multi-device layout (its links included), fed the routing the step's
// routers computed.
// Expert routing is known only after each layer's router runs: the step is re-lowered and re-placed with the
// routing seen so far at every router (the paper's lookup-table split after the gate), so expert
// co-processing splits the experts the router actually picked. Ops are executed in graph order; lanes that
// the plan runs concurrently write disjoint outputs, so results do not depend on lane timing.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>
#include <optional>

#include "duplex/base/device_spec.hpp"
#include "duplex/compiler/op.hpp"
#include "duplex/runtime/functional/activation_quant.hpp"
#include "duplex/runtime/functional/model_weights.hpp"
#include "duplex/runtime/functional/pim_unit.hpp"
#include "duplex/runtime/functional/routing_record.hpp"

namespace duplex::runtime::functional {

struct FunctionalOptions {
  std::string datapath;                // PIM datapath "golden" | "rtl"; empty: the system's pim.datapath
  std::int64_t max_batch = 8;          // requests running at once (continuous batching)
  std::int64_t max_tokens_per_step = 0;  // scheduler token budget per step; 0: none
  bool chunked_prefill = false;          // split prompts to fill the token budget (SchedulerConfig's)
  std::int64_t kv_block_tokens = 16;   // tokens per paged-KV block
  std::int64_t kv_blocks = 0;          // blocks in each device's cache (each data-parallel node's K/V memory,
                                       // its scheduler rank's); 0: enough for every request at full length
  int devices = 0;                     // devices to run on; 0: the system's for the model (devices_for)
  // Makes the PIM unit for the system (e.g. make_device_pim_unit, device_pim_unit.hpp), called once: every
  // device's PIM ops run on that one unit (the driver emulates one device per process). Empty: one Logic-PIM
  // datapath of kind `datapath` per device. With a factory, `datapath` must be empty.
  std::function<std::unique_ptr<PimUnit>(const SystemSpec&)> pim_unit_factory;
  // A waveform of device 0's Logic-PIM datapath (the first pool's, on a split system): a .vcd path (.fst with
  // a DUPLEX_RTL_TRACE_FST build); only with the rtl datapath. Empty: none.
  std::string rtl_trace;
  // Prefix caching (the serving simulator's, vLLM's APC): whole blocks of a prompt that begin an earlier
  // prompt too are taken from the paged cache instead of computed (keyed by a hash chain of their token ids),
  // shared by the requests' block tables (on a system with a prefill space, a block may be shared while it
  // still lies there). Each data-parallel node caches its own requests' blocks (requests go to nodes by id).
  // Not with sliding-window / chunked attention (duplex::Error at construction).
  bool prefix_caching = false;
  // Speculative decoding with a draft model (vLLM's draft-model proposer; the serving simulator's
  // speculative_tokens with --draft-model): every decoding request verifies up to `speculative_tokens` draft
  // tokens per step (fewer near the end of its output or under the token budget), which `draft` proposes
  // greedily, one draft pass per draft token, on the same devices with its own paged cache (its first pass
  // also prefills every prompt chunk the step prefills, and computes the tokens it has not cached yet). The
  // verification computes the last token and the drafts as decode rows, accepts the drafts up to the first
  // that differs from the target's greedy choice, and emits them and the target's next token: the tokens of a
  // run without speculation, in fewer steps. On a split system the draft runs beside each pool (the prefill
  // pool's prefills it, its K/V of the prompt migrates with the target's). Chains only (no trees); the draft
  // must share the target's vocabulary and be a whole model (not an EAGLE / MTP head). `draft` must outlive
  // the executor.
  const ModelWeights* draft = nullptr;
  int speculative_tokens = 0;  // 0: off (then `draft` must be null); at most kMaxSpeculativeTokens
  // Speculative decoding with n-gram drafts instead of a draft model (prompt lookup; vLLM's method "ngram",
  // its prompt_lookup_min / _max): before each step, a decoding request's drafts are the tokens after the
  // earliest earlier occurrence of the longest suffix of its sequence (prompt and output) of ngram_min ..
  // ngram_max tokens (propose_ngram_drafts), at most speculative_tokens; a request with no match decodes its
  // last token alone (Scheduler::limit_drafts). Proposed on the host: no draft pass, no device time. 0: off;
  // else 1 <= ngram_min <= ngram_max, with speculative_tokens >= 1 and no `draft`.
  int ngram_min = 0, ngram_max = 0;
  // W8A8 activation quantization (activation_quant.hpp): the xPU quantizes the inputs of its FP8 / INT8 GEMMs
  // as the serving kernels do, the Logic-PIM computes with FP16 inputs, so the numerics follow placement.
  // false: FP16 inputs everywhere (weight-only, as HF's compressed-tensors decompression computes).
  bool quantize_activations = true;
};

// One executed op.
struct OpRecord {
  std::int64_t step = 0;
  std::string name;  // "L0.expert3"
  compiler::OpKind kind = compiler::OpKind::kNorm;
  int layer = -1;
  compiler::Unit unit = compiler::Unit::kXpu;
  Time time;         // on its unit, from device 0's plan
  Energy energy;     // dynamic energy of its actions on that unit, all devices together (runtime::charge_op)
};

struct StepRecord {
  std::string pool;  // split systems: "prefill" or "decode"; else empty
  std::int64_t step = 0;  // the pool's scheduler step
  std::int64_t requests = 0, prefill_tokens = 0, decode_tokens = 0;
  // StepExecutor's (slowest device / device 0's lanes); with speculative decoding the draft passes' and the
  // verification's, run one after the other.
  Time time, xpu_busy, pim_busy, link_busy;
  int draft_passes = 0;  // speculative decoding: the draft model's passes before the verification
  // Two-batch overlap (SystemSpec::two_batch_overlap): the step ran as two micro-batches (DevicePool::step).
  bool micro_batches = false;
  // MoE layers whose experts ran on both units in this step (expert co-processing).
  std::vector<int> coprocessed_expert_layers;
  // Tokens the step's routers sent to each expert: [MoE layer][expert] (every node's tokens); empty for a
  // dense model.
  std::vector<std::vector<std::int64_t>> expert_counts;
};

// A split system's K/V migration of one request from the prefill pool to the decode pool, timed and charged
// as the serving simulator's split model does (kv_migration.hpp): NVLink inside a node (InfiniBand across),
// bytes / (parallel streams x bandwidth) + latency, one prompt at a time over the pools' links,
// links.*_per_byte energy per byte.
struct KvMigration {
  std::int64_t request = 0;
  std::int64_t tokens = 0;  // the prompt's tokens
  double bytes = 0;         // 2 (K, V) x layers x kv_heads x head_dim x KV bytes x tokens
  Time start;  // when the links take it (after the transfers before it; layer by layer: its first layer)
  Time time;   // from start until the decode pool holds all of it (KvLinkSchedule::book_prompt)
  Energy energy;
};

// An in-device K/V migration (Logic-PIM memory spaces, compiler LowerOptions::kv_migration): one request's
// prompt K/V copied by the xPU from the prefill space into the KV spaces in the step that completed its
// prefill, every layer, on every device of its pool. Timed and charged as that step's kv_migration ops.
struct InDeviceKvMigration {
  std::int64_t step = 0;
  std::int64_t request = 0;
  std::int64_t tokens =
      0;  // the prompt's tokens it computed (context + tokens, less those from the prefix cache)
  // copied, all devices: 2 (K, V; MLA: 1, the latent) x layers x each device's kv_heads x head_dim x 2 B x
  // tokens
  double bytes = 0;
};

struct FunctionalResult {
  // Per request (prompt order): generated tokens and the logits [vocab] that chose each.
  std::vector<std::vector<std::int32_t>> tokens;
  std::vector<std::vector<std::vector<float>>> logits;
  ExecutedRouting routing;  // every token's routing per MoE layer (routing_record.hpp); empty for dense
  // Every token's GEMM inputs the xPU quantized, per layer (activation_quant.hpp); empty without W8A8
  // activation quantization.
  ExecutedQuantization quantization;
  // LLM.int8(): the outlier columns the xPU's decomposing quantize calls found (activation_quant.hpp).
  OutlierColumns outlier_columns;
  std::vector<OpRecord> ops;
  std::vector<StepRecord> steps;
  Time time;                       // simulated: sum of step times
  Energy energy;                   // dynamic energy of all ops on all devices (runtime::charge_op)
  nlohmann::json energy_breakdown; // EnergyLedger::breakdown_json()
  std::string xpu_backend, pim_unit;  // device 0's xPU and PIM: describe() of their device classes
  std::optional<std::uint64_t> pim_cycles;  // datapath cycles, all devices (RTL datapath only)
  int devices = 1;
  std::string layout;              // ParallelLayout::describe()
  // Per device unit name ("dev0.xpu"): its class and backend, and the calls it executed per op kind.
  std::map<std::string, std::string> device_classes;
  std::map<std::string, std::map<std::string, std::int64_t>> device_op_counts;
  std::vector<KvMigration> kv_migrations;  // split systems only, in migration order
  double kv_migrated_bytes() const;
  std::vector<InDeviceKvMigration> in_device_kv_migrations;  // Logic-PIM systems (not split), in step order
  double in_device_kv_migrated_bytes() const;
  // Prefix caching: prompt tokens to compute at admissions (recomputations included) and those taken from the
  // cache instead (0 / 0 without it).
  std::int64_t prefix_query_tokens = 0, prefix_hit_tokens = 0;
  // Speculative decoding: draft tokens verified, of them accepted, and verifications (0 without it).
  std::int64_t draft_tokens = 0, accepted_tokens = 0, verify_steps = 0;
  // Per draft position i: verifications that reached it (drafts 0..i-1 accepted, the draft at least i + 1
  // deep) and those that accepted it. Their ratio is the conditional acceptance SchedulerConfig::
  // acceptance_rates (duplex simulate --acceptance) takes.
  std::vector<std::int64_t> drafts_reached, drafts_accepted;
  // drafts_accepted[i] / drafts_reached[i] for the positions reached.
  std::vector<double> acceptance_by_position() const;

  // Executed ops per unit name ("xpu", "pim") and per (kind, unit): the placement summary.
  std::map<std::string, std::int64_t> ops_per_unit() const;
  std::map<std::string, std::map<std::string, std::int64_t>> ops_per_kind_and_unit() const;
};

class FunctionalExecutor {
 public:
  // Throws duplex::Error for an unsupported model, a bad option or a PIM datapath kind that does not exist.
  // `weights` must outlive the executor.
  FunctionalExecutor(const ModelWeights& weights, const SystemSpec& system, FunctionalOptions options = {});
  ~FunctionalExecutor();
  FunctionalExecutor(const FunctionalExecutor&) = delete;
  FunctionalExecutor& operator=(const FunctionalExecutor&) = delete;

  // Greedy generation of `max_new_tokens` (>= 1) tokens for every prompt; duplex::Error for bad prompts.
  FunctionalResult run(const std::vector<std::vector<std::int32_t>>& prompts, int max_new_tokens);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace duplex::runtime::functional
