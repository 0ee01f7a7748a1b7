#pragma once
// The op-graph IR: plain data. One Graph is the work of ONE device for ONE step (devices of a tensor-parallel
// group are symmetric). Every op carries its FLOPs and its DRAM bytes split by source; Op/B follows.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "duplex/compiler/dtype.hpp"

namespace duplex::compiler {

enum class OpKind {
  kEmbedding,
  kNorm,     // RMSNorm / LayerNorm
  kQkvProj,  // GEMM: tokens x hidden -> q + k + v (MLA: the q / kv down+up projections)
  kRope,
  kAttentionPrefill,  // causal attention of requests with > 1 new token (prefill or prefill chunk)
  kAttentionDecode,   // attention of decoding requests, GQA over the KV cache: 1 query token each, or 1 + the
                      // draft tokens a speculative step verifies (query_tokens / requests per request)
  kOProj,
  kResidual,
  kRouter,           // gate GEMM + top-k + renormalisation
  kExpertFfn,        // one routed expert on the tokens routed to it (gated: gate+up+down)
  kSharedExpertFfn,  // always-active expert(s)
  kDenseFfn,
  kLmHead,       // final norm excluded; LM head GEMM + greedy argmax
  kAllReduce,    // tensor-parallel sum over the devices of a node (link op)
  kAllToAll,     // expert-parallel token exchange (link op)
  kPimTransfer,  // GPU <-> PIM-device activations / K/V (heterogeneous systems; link op, one NVLink hop)
  kKvMigration,  // one layer's K/V of the requests whose prefill completes, copied by the xPU from the
                 // prefill memory space into the decode KV spaces (Logic-PIM memory spaces; lower.hpp)
  kStageSend,    // a pipeline stage's output activations to the next stage's devices (link op)
  kExpertMove,   // expert load balancing: the expert shards a device copies in for a new placement (link op;
                 // m slots, link_bytes of which link_bytes_in_node over NVLink, the rest InfiniBand)
};
std::string_view op_kind_name(OpKind k);

// Which unit an op may run on, and where it was placed.
enum class Unit { kXpu, kPim, kLink };
std::string_view unit_name(Unit u);

struct Op {
  std::string name;       // e.g. "L3.expert5"
  OpKind kind = OpKind::kNorm;
  int layer = -1;         // -1: before the first / after the last layer
  int expert = -1;        // kExpertFfn: global expert index
  // GEMM-like shape: m tokens, n outputs, k inputs (per matrix; `matrices` matrices of this shape).
  std::int64_t m = 0, n = 0, k = 0;
  int matrices = 1;
  // Attention shape: requests, query tokens per request (sum), context tokens summed over requests,
  // query heads and kv heads on this device, head dim.
  std::int64_t requests = 0, query_tokens = 0, context_tokens = 0;
  int q_heads = 0, kv_heads = 0, head_dim = 0;
  bool softcap = false;  // attention: the scores are soft-capped (Gemma 2; ModelSpec::attn_softcap)
  bool sinks = false;    // attention: each softmax row has a sink logit (gpt-oss; ModelSpec::attn_sinks)
  bool bias = false;     // FFN: each GEMV adds a bias [rows] (gpt-oss's experts; ModelSpec::mlp_bias)
  DType dtype = DType::kFp16;
  // Grouped 4-bit weights (dtype int4_*): inputs per scale (ModelSpec::quant_group).
  int quant_group = kInt4Group;
  // LLM.int8() weights (bnb_int8): whether bitsandbytes looks for outlier columns in each call's input
  // (ModelSpec::llm_int8_threshold > 0), and how many it finds there (ModelSpec::llm_int8_outlier_columns).
  bool int8_decomposes = false;
  double int8_outlier_columns = 0;
  double weight_bytes_per_element() const { return dtype_bytes(dtype, quant_group); }  // of its weights
  // Analysis (filled by lowering).
  double flops = 0;
  double bytes_weights = 0;
  double bytes_kv = 0;      // KV cache read + written
  double bytes_act = 0;     // activations read + written
  double link_bytes = 0;    // collectives: bytes sent per device (an all-to-all: by the mean device)
  double link_bytes_in_node =
      0;  // of them, over NVLink inside the node (an all-to-all's; the rest InfiniBand)
  // An all-to-all's timing (ParallelLayout::ExpertExchange): it waits for the busiest device, whose bytes on
  // each link are the mean device's x that link's skew, and takes a latency step per peer on each link.
  struct Exchange {
    double infiniband_skew = 1, nvlink_skew = 1;
    int infiniband_peers = 0, nvlink_peers = 0;
  };
  Exchange exchange;
  // Energy of an MoE layer's expert work: the plan holds the expert-parallel group whose experts receive the
  // most rows (it times the step), but every device does its own group's work, so energy charges the mean
  // group's: FLOPs, activation, K/V and link bytes x energy_rows_scale (the mean group's token-expert rows
  // over the planned group's; an all-to-all's bytes are the mean device's already), weight bytes x
  // energy_weights_scale (the mean group's slots with rows over the planned group's). 1 elsewhere.
  double energy_rows_scale = 1, energy_weights_scale = 1;

  double bytes() const { return bytes_weights + bytes_kv + bytes_act; }
  // The bytes the xPU's kernels move for it: bytes(), and for a GEMM of bitsandbytes 4-bit weights (nf4,
  // nf4_dq, bnb_fp4, bnb_fp4_dq) over more than one token row the 16-bit copy of its weights that
  // bitsandbytes' matmul_4bit has dequantize_4bit write and the GEMM read back, 2 + 2 bytes per weight (one
  // row runs gemv_4bit on the packed weights). source: bitsandbytes functional matmul_4bit / MatMul4Bit,
  // which vLLM's bitsandbytes linear method calls.
  // A GEMM of LLM.int8() weights (bnb_int8) is one bitsandbytes MatMul8bitLt call per matrix (int8_lt_calls:
  // the QKV projection's q, k and v, as vLLM's per-shard loop and HF's modules call it; an FFN's gate, up and
  // down), each moving besides bytes() its activations' INT8 copy (written by the quantizing kernel, read by
  // the GEMM: 2 bytes per activation) and its INT32 partial sums (written, then read by the kernel that
  // scales them to 16 bits: 8 bytes per output). With int8_decomposes, each call masks its input (|A| >=
  // threshold, its any() and the columns': 9 bytes per activation, 2 per column) and, with c =
  // int8_outlier_columns (at most its inputs) > 0, multiplies those columns in 16 bits: the INT8 copy's
  // columns zeroed, the weights' columns gathered and dequantized (to FP32, scaled, to 16 bits), the
  // activations' columns gathered and an addmm into the output (read and written): 7 m c + 23 n c + 4 n + 4 m
  // n bytes (m rows, n outputs). The addmm's 2 m n c FLOPs (c / k of the GEMM's) are left out. source:
  // bitsandbytes 0.45 MatMul8bitLt, int8_vectorwise_quant (threshold > 0) and int8_mixed_scaled_mm.
  double xpu_bytes() const;
  // Whether the xPU runs it as bitsandbytes' dequantize-then-GEMM (the case above): one more kernel.
  bool xpu_dequantizes_first() const;
  // The kernels the xPU launches for it: 1; 2 for bitsandbytes' dequantize-then-GEMM; for a GEMM of bnb_int8
  // weights per MatMul8bitLt call 3 (quantize the activations, INT8 GEMM, scale to 16 bits), with
  // int8_decomposes 5 more (abs, compare, any, any per column, argwhere: the host waits on the any and the
  // argwhere), and with outlier columns 7 more (6 for one row: no zeroing of the INT8 copy's columns).
  int xpu_kernels() const;
  // The MatMul8bitLt calls of a bnb_int8 GEMM (0 for any other op).
  int int8_lt_calls() const;
  double op_b() const { return bytes() > 0 ? flops / bytes() : 0.0; }
  std::string shape() const;  // "64x6144x4096" or "r=64 q=64 ctx=131072 h=8/2 d=128"
};

struct Graph {
  std::string model;
  int devices = 1;          // devices running this step (the graph is one device's share)
  std::vector<Op> ops;
  double total_flops() const;
  double total_bytes() const;
};

}  // namespace duplex::compiler
