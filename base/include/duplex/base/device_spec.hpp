#pragma once
// The hardware a config describes, as typed values: the xPU, one HBM3 stack (organisation + JEDEC timing),
// the PIM units of a stack, the links, the energy table, and a whole system (devices per model,
// co-processing switches). Read once from configs/ by load_system(); every reader is strict (unknown keys
// are errors). Derived figures (peak bandwidths, capacities) are computed here and nowhere else.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "duplex/base/config.hpp"
#include "duplex/base/units.hpp"

namespace duplex {

struct XpuSpec {
  std::string name;
  FlopRate peak_fp16;
  FlopRate peak_fp8;
  FlopRate peak_int8;  // integer operations per second of the INT8 tensor cores (W8A8-INT8 GEMMs)
  FlopRate peak_fp32;
  double gemm_efficiency = 0;    // achievable fraction of peak (FP16's, or FP8's / INT8's) on large GEMMs
  double memory_efficiency = 0;  // achievable fraction of HBM peak on streaming kernels
  Time launch_overhead;          // per op
  ByteSize sram_per_sm;
  int sms = 0;
};

struct HbmOrganization {
  int channels = 0;                     // per stack
  int pseudo_channels_per_channel = 0;
  int ranks = 0;                        // stack IDs sharing one pseudo-channel's bus
  int bank_groups = 0;                  // per (rank, pseudo-channel)
  int banks_per_group = 0;
  int rows = 0;                         // per bank
  ByteSize row_size;
  ByteSize access_granularity;          // bytes per column access (one burst)
  int burst_length = 0;
  int dq_per_pseudo_channel = 0;

  int pseudo_channels() const { return channels * pseudo_channels_per_channel; }
  int banks_per_rank() const { return bank_groups * banks_per_group; }
  int columns_per_row() const { return static_cast<int>(row_size.bytes / access_granularity.bytes); }
  ByteSize stack_capacity() const {
    return {static_cast<std::uint64_t>(pseudo_channels()) * ranks * banks_per_rank() * rows * row_size.bytes};
  }
};

// JEDEC timing constraints, as times. Names follow JESD238.
struct HbmTiming {
  Time tCK, tCL, tRCD, tRP, tRAS, tFAW, tCCD_S, tCCD_L, tRRD_S, tRRD_L, tWL, tWR, tWTR_S, tWTR_L, tRTP;
  Time tREFI, tRFC;
  Time tRC() const { return tRAS + tRP; }  // derived: ACT to ACT, same bank
};

struct HbmSpec {
  std::string name;
  DataRate data_rate;  // per pin
  HbmOrganization org;
  HbmTiming timing;
  // One burst on one pseudo-channel's data bus: burst_length beats at data_rate.
  Time burst_time() const { return seconds(org.burst_length / data_rate.si()); }
  Bandwidth pseudo_channel_bandwidth() const {
    return bytes_per_s(org.dq_per_pseudo_channel * data_rate.si() / 8.0);
  }
  Bandwidth stack_bandwidth() const { return pseudo_channel_bandwidth() * org.pseudo_channels(); }
};

// Logic-PIM: units on the HBM logic die (Duplex). Bank-PIM: units next to the banks (AttAcc-like).
// BankGroup-PIM: Logic-PIM's units and bandwidth placed on the DRAM dies, one unit per bank group (DUPLEX.md
// s.8); it has Logic-PIM's keys and timing but not its bank-bundle / logic-die cycle model.
enum class PimKind { kLogicPim, kBankPim, kBankGroupPim };

// A PIM design's area breakdown per stack as a source states it, and the design point it was stated for
// (configs/devices/logic-pim.yaml `area`; scaled to other designs by pim_area.hpp).
struct PimAreaSpec {
  Area tsv, gemm_modules, buffers, softmax, logic_die;
  int at_gemm_modules = 0, at_macs_per_module = 0;  // the design point: MACs of the stated GEMM area
  ByteSize at_buffers;                              // and the shared buffer bytes of the stated buffer area
};

struct PimSpec {
  PimKind kind = PimKind::kLogicPim;
  std::string name;
  Frequency clock;
  Time command_latency;
  // Logic-PIM and BankGroup-PIM
  int gemm_modules = 0;
  int macs_per_module = 0;
  ByteSize module_buffer, input_buffer, temp_buffer, softmax_buffer;
  int banks_per_bundle = 0;
  int banks_per_group_read = 0;
  double softmax_elements_per_cycle = 0;
  double activation_elements_per_cycle = 0;
  std::string datapath;  // "golden" | "rtl"
  std::optional<PimAreaSpec> area;  // absent: no area breakdown in the config
  // Logic-PIM memory spaces (DUPLEX.md s.6): the device's memory is split into `memory_spaces` equal spaces by
  // bank-bundle index; decode K/V lives in `kv_spaces` of them, prefill Q/K/V in the others (none when
  // kv_spaces == memory_spaces). BankGroup-PIM inherits the keys from its Logic-PIM preset and does not use
  // them (no bank bundles on the logic die); Bank-PIM has none (0).
  int memory_spaces = 0;
  int kv_spaces = 0;
  // Bank-PIM
  double bandwidth_multiplier = 0;
  double peak_op_per_byte = 0;

  bool has_logic_pim_units() const { return kind != PimKind::kBankPim; }  // GEMM modules, buffers, softmax

  // Per stack. Logic-PIM / BankGroup-PIM: modules x MACs x 2 FLOP x clock; bundle path: banks_per_group_read x bank groups
  // x one access per tCCD_L on every pseudo-channel. Bank-PIM: multiplier x stack bandwidth, Op/B x that.
  FlopRate peak_flops_per_stack(const HbmSpec& hbm) const;
  Bandwidth internal_bandwidth_per_stack(const HbmSpec& hbm) const;
};

enum class HostKvScope : std::uint8_t { device, node, cluster };
const char* to_string(HostKvScope s);  // "device" | "node" | "cluster"

struct LinkSpec {
  Bandwidth nvlink_bandwidth;  // per direction, per device
  Time nvlink_latency;
  Bandwidth infiniband_bandwidth;
  Time infiniband_latency;
  int devices_per_node = 0;
  // The xPU SMs a collective's kernels run on while they overlap computation (key comm_sms, optional, default
  // 20: DeepEP's normal kernels' Buffer.num_sms; SystemSpec::two_batch_overlap), 0 <= comm_sms < xpu.sms.
  int comm_sms = 20;
  // The host (optional keys): PCIe to the CPU, per direction per device, and the host memory per device that
  // holds KV blocks offloaded from the device (0: no host tier; then the host link may be absent).
  Bandwidth host_bandwidth;
  Time host_latency;
  ByteSize host_kv_offload;
  // How a step loads K/V from the host tier (key host_kv_load): all of it before the forward (serial), or
  // layer by layer, each layer's share in flight while the layers before it compute (layerwise: LMCache's
  // layerwise retrieval).
  bool host_kv_layerwise = false;
  // Who shares a host tier (key host_kv_scope): each replica its own (device, the default), the replicas of
  // a cluster (a split system's prefill instances) on one node, one tier of their capacities together (node:
  // LMCache's CPU backend shared by the serving instances of one machine), or every replica of the run, one
  // store over all their nodes' host memory, each copy in the memory of the node that stored it and loaded
  // from another node over InfiniBand (cluster: Mooncake's store, LMCache's remote backends).
  HostKvScope host_kv_scope = HostKvScope::device;
  // A disk tier behind the host tier (optional keys; LMCache's local disk): disk_kv_offload of the node's
  // NVMe drives per device (0: none; above 0 needs a host tier), read at disk_bandwidth per device after
  // disk_latency.
  ByteSize disk_kv_offload;
  Bandwidth disk_bandwidth;
  Time disk_latency;
  // Who shares a disk tier (key disk_kv_scope, needs disk_kv_offload above 0): each replica its own (device,
  // the default), the replicas (prefill instances) on one node one tier of their capacities together (node:
  // a node's shared NVMe drives), or every replica of the run one store over all their nodes' drives, each
  // copy on the node that wrote it and read from another node over InfiniBand (cluster: DeepSeek's 3FS
  // KVCache, Mooncake's store on SSD).
  HostKvScope disk_kv_scope = HostKvScope::device;
};

// Energy per action and static power per component; price() of an unknown action is an error, never 0.
struct EnergyTable {
  std::string file;
  std::map<std::string, Energy> actions;  // "dram.activate", "compute.fp16_mac", ...
  std::map<std::string, Power> static_power;  // "xpu", "hbm_stack", "logic_pim_stack"
  Energy price(std::string_view action) const;
  Power static_of(std::string_view component) const;
};

// Expert load balancing (SystemSpec::expert_balancing): vLLM's --enable-eplb with --eplb-config, after
// DeepSeek's EPLB.
struct ExpertBalancing {
  // Expert copies each MoE layer holds beyond its experts (key redundant_experts, default 0; vLLM's
  // num_redundant_experts): experts + this many slots spread evenly over the expert-parallel devices.
  int redundant_experts = 0;
  // Steps whose routed tokens per expert a rebalancing weighs (key window, default 1000; vLLM's
  // window_size; at most 64 intervals), and steps between rebalancings (key interval, default 3000; vLLM's
  // step_interval).
  std::int64_t window = 1000;
  std::int64_t interval = 3000;
};

enum class DataParallelBalance : std::uint8_t { round_robin, least_loaded, cache_aware };
const char* to_string(DataParallelBalance b);  // "round-robin" | "least-loaded" | "cache-aware"

// The kernels of an MoE layer's token exchange across devices (SystemSpec::expert_all_to_all), after DeepEP's
// two families (source: deepseek-ai/DeepEP README; SGLang's --deepep-mode low_latency | normal | auto):
//   low_latency: each token-expert row straight to the device holding its expert (a row per expert; DeepEP's
//                low-latency kernels, pure RDMA);
//   normal:      each token once to each node holding any of its experts (InfiniBand, to the device of the
//                sender's local rank there), which forwards it over NVLink to each of its devices holding one
//                of them, once per device (DeepEP's normal kernels: RDMA, then NVLink forwarding);
//   auto:        normal for a step with prefill tokens, low_latency for a decode-only step (SGLang's auto).
enum class ExpertAllToAll : std::uint8_t { low_latency, normal, auto_by_step };
const char* to_string(ExpertAllToAll a);  // "low_latency" | "normal" | "auto"

struct SystemSpec {
  std::string name;
  std::string description;
  std::string file;
  XpuSpec xpu;
  HbmSpec memory;
  int stacks = 0;  // per device
  std::optional<PimSpec> pim;
  LinkSpec links;
  EnergyTable energy;
  std::map<std::string, int> devices_per_model;  // "default" plus per-model entries
  int device_multiplier = 1;
  bool coprocess_experts = false;
  bool coprocess_attention = false;
  bool expert_tensor_parallel = false;
  // Attention data parallel (key attention_data_parallel, default false; SGLang's --enable-dp-attention,
  // vLLM's data-parallel attention with expert parallelism): every device runs attention, the dense layers
  // and the LM head for its own share of the requests with whole copies of those weights (TP1 x DP devices)
  // and holds only those requests' K/V; routed experts stay expert parallel over all devices, their tokens
  // exchanged by an all-to-all among all devices (NVLink in a node, InfiniBand across). Not with
  // expert_tensor_parallel or on a heterogeneous system.
  bool attention_data_parallel = false;
  // Pipeline stages (key pipeline_parallel, default 1; vLLM's --pipeline-parallel-size): the layers split
  // into this many consecutive stages on their own tensor-parallel groups, each data-parallel replica of the
  // pipeline serving this many batches at once (vLLM's virtual engines: each its own requests and its share
  // of the K/V space); an MoE model's experts parallel over each stage's devices. Not with
  // attention_data_parallel, on split or heterogeneous systems.
  int pipeline_parallel = 1;
  // The layers of each pipeline stage, first to last (key pipeline_partition, optional: "a,b,...", one count
  // >= 1 per stage, as vLLM's VLLM_PP_LAYER_PARTITION; their sum must be the model's layers). Empty: vLLM's
  // default split (compiler::ParallelLayout::stage_ends).
  std::vector<int> pipeline_partition;
  // The MoE all-to-all's kernels (key expert_all_to_all, default auto as SGLang's --deepep-mode;
  // ExpertAllToAll above).
  ExpertAllToAll expert_all_to_all = ExpertAllToAll::auto_by_step;
  // DeepEP's low-latency kernels' num_max_dispatch_tokens_per_rank (key expert_all_to_all_max_tokens, >= 0):
  // the tokens a device may dispatch in one low-latency exchange, which sizes the buffers every device
  // reserves for them (runtime memory_plan.hpp: deepep_low_latency_bytes) and bounds a decoding step's
  // tokens (SGLang's SGLANG_DEEPEP_NUM_MAX_DISPATCH_TOKENS_PER_RANK, default 128). 0 (the default, as every
  // figure in bench/ was measured): neither the buffers nor the bound are modelled.
  std::int64_t expert_all_to_all_max_tokens = 0;
  // Two micro-batches per step (key two_batch_overlap, default false; SGLang's --enable-two-batch-overlap,
  // DeepSeek's dual micro-batch overlap, NeuPIMs' sub-batch interleaving): each data-parallel rank's requests
  // split in two halves of about equal tokens, each lowered on its own (weights read once per half), their
  // plans interleaved on each device's xPU, PIM and link lanes so one half's communication and PIM work run
  // while the other computes (compiler/micro_batches.hpp). Not with pipeline_parallel > 1.
  bool two_batch_overlap = false;
  // Where a step with a prompt splits its tokens mid-prompt instead of between requests (key
  // two_batch_overlap_threshold, 0..0.5, default 0.48: SGLang's --tbo-token-distribution-threshold): when the
  // best split between requests leaves a half with less than this share of the tokens.
  double two_batch_overlap_threshold = 0.48;
  // How requests are dealt to data-parallel ranks (nodes, or attention-DP devices) at their arrival (key
  // data_parallel_balance, default least-loaded): to the rank with the fewest unfinished requests (vLLM's
  // data-parallel coordinator balances by its engines' queues; SGLang's shortest_queue), round-robin by
  // request id (SGLang's default --load-balance-method), or cache-aware: the rank holding the longest cached
  // prefix of its prompt unless the ranks' loads are imbalanced (the cluster router's cache-aware policy and
  // thresholds over the ranks; SGLang's model gateway in front of data-parallel ranks).
  DataParallelBalance data_parallel_balance = DataParallelBalance::least_loaded;
  // Expert load balancing of MoE models (section expert_load_balancing, absent: none). Each MoE layer's
  // expert slots (experts + redundant copies) start as vLLM places them (slot s holds expert s mod experts);
  // every `interval` steps they are placed again from the tokens each expert received over the last `window`
  // steps (DeepSeek's EPLB: the copies to the busiest experts, the slots to the devices by balanced packing),
  // the step waiting while every device copies in the experts it newly holds. Each expert's tokens split
  // evenly over its copies; the busiest device sets the step's expert time and all-to-all. Needs experts
  // whole on a device (experts >= expert-parallel devices, or +ET); not on heterogeneous systems nor in
  // functional emulation.
  std::optional<ExpertBalancing> expert_balancing;
  // Splitwise-style disaggregation: this fraction of the devices only prefills, the rest only decode, the KV
  // of each prompt migrating over the links in between. 0 = no split (every device does both).
  double split_prefill_fraction = 0;
  // A split system's instances (split.prefill_instances / decode_instances, default 1 each; DistServe's
  // xPyD): each pool's devices divide evenly into this many instances, each its own tensor / expert-parallel
  // group with its own scheduler and KV cache; a prompt router picks the prefill instance, the least loaded
  // decode instance takes the migrated request.
  int split_prefill_instances = 1, split_decode_instances = 1;
  // Which decode instance takes a prefilled request (split.decode_router): the one with the fewest
  // outstanding requests (least-loaded, the default; Splitwise's join-the-shortest-queue), or the one with
  // the most free K/V blocks, less those its waiting requests take at admission (most-free-kv; a K/V-aware
  // router as Dynamo's and llm-d's). Ties: an instance in the prefill instance's node, then the lowest index.
  bool split_decode_by_free_kv = false;
  // When a prompt's K/V leaves its prefill instance (split.kv_transfer): once its prefill is done
  // (after_prefill, the default; DistServe) or layer by layer while the step that completes it runs, each
  // layer's share sent as soon as that layer has computed it (layerwise; Splitwise, Mooncake).
  bool split_kv_layerwise = false;
  // The prefill pool's devices when they are another system's (split.prefill_system, e.g. GPUs prefilling for
  // Duplex devices that decode; Splitwise's heterogeneous pools): a whole system, neither split nor
  // heterogeneous, pricing energy as this one does. Null: the prefill devices are this system's.
  std::shared_ptr<const SystemSpec> split_prefill_system;
  // Heterogeneous GPU + PIM devices (DUPLEX.md s.8): when > 0, `pim` is NOT on the xPU's stacks but on
  // separate PIM devices (each `stacks` stacks of `memory` with a Logic-PIM logic die, no xPU), this many per
  // GPU. Weights are not shared: non-expert weights on the GPUs, routed experts' weights and the KV cache on
  // the PIM devices; activations cross NVLink between them. 0 = PIM (if any) on the device's own stacks.
  int pim_devices_per_gpu = 0;
  std::string resolved_yaml;  // the fully resolved config, for result folders

  int devices_for(std::string_view model_name) const;  // GPU / xPU devices (PIM devices not counted)
  bool heterogeneous() const { return pim_devices_per_gpu > 0; }
  // A split system's prefill devices: split_prefill_system's, else this system's.
  const SystemSpec& prefill_pool_system() const {
    return split_prefill_system ? *split_prefill_system : *this;
  }
  // The one predicate for "this system splits each device's memory into KV spaces and prefill space(s)"
  // (DUPLEX.md s.6), shared by the lowering (the in-device kv_migration op) and the memory plan: Logic-PIM on
  // the device's own stacks (not heterogeneous GPU + PIM devices, whose K/V goes to the PIM devices), not a
  // split system (its K/V leaves the prefill device over the links straight into the decode device's KV
  // spaces), and at least one space left for prefill (kv_spaces < memory_spaces).
  bool uses_prefill_space() const;
  Bandwidth memory_bandwidth() const { return memory.stack_bandwidth() * stacks; }  // per device
  ByteSize memory_capacity() const { return {memory.org.stack_capacity().bytes * stacks}; }
  FlopRate pim_peak_flops() const;       // per device with PIM (heterogeneous: per PIM device), all stacks; 0 without PIM
  Bandwidth pim_bandwidth() const;       // per device with PIM (heterogeneous: per PIM device), all stacks; 0 without PIM
};

XpuSpec read_xpu(const ConfigNode& n);
HbmSpec read_hbm(const ConfigNode& n);
PimSpec read_pim(const ConfigNode& n);
LinkSpec read_links(const ConfigNode& n);
EnergyTable read_energy(const ConfigNode& n);
SystemSpec read_system(const ConfigNode& n);
// Loads configs/systems/<name>.yaml or a system YAML file (which may name presets and override keys).
SystemSpec load_system(std::string_view name_or_path);

}  // namespace duplex
