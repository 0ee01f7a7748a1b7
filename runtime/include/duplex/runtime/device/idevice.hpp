#pragma once
// One compute unit of one device of a system, as the functional executor drives it: an xPU (XpuDevice, over a
// kernels::Backend), a Logic-PIM (LogicPimDevice, over a PimUnit: the datapath golden / RTL or the SystemC
// device through the driver) or a Bank-PIM baseline (BankPimDevice, AttAcc-like units in the banks).
//
// The interface holds the ops both kinds of unit run (weight GEMMs, an FFN, decode attention over the
// paged KV cache); ops only an xPU runs (norms, RoPE, router, permutes, LM head, the sum of partials) are
// XpuDevice members. Every op names the compiler OpKind it belongs to: a unit refuses (DUPLEX_ASSERT: the
// plan is the executor's) an op kind it does not execute, and counts executed calls per op kind. Numerics:
// FP16 operands and results (bit patterns), accumulation per the unit's arithmetic contract
// (reference_forward.hpp).
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "duplex/compiler/op.hpp"
#include "duplex/runtime/functional/ffn_weights.hpp"

namespace duplex::runtime::device {

// One layer's paged KV cache as a device holds it: pools [num_blocks, block_tokens, kv_heads, head_dim] FP16.
struct PagedKvView {
  const std::uint16_t* k_pool = nullptr;
  const std::uint16_t* v_pool = nullptr;
  std::int64_t num_blocks = 0, block_tokens = 0, kv_heads = 0, head_dim = 0;
};

// Decode attention of `rows` query rows, each against its own request's cached tokens: q / out
// [rows, q_heads, head_dim]; row r reads context_lens[r] tokens through block_tables[r] (block ids in token
// order). q_heads is a multiple of kv.kv_heads (GQA groups of q_heads / kv_heads consecutive heads).
struct DecodeAttentionBatch {
  const std::uint16_t* q = nullptr;
  std::uint16_t* out = nullptr;
  std::int64_t rows = 0, q_heads = 0;
  std::vector<const std::vector<std::int32_t>*> block_tables;
  std::vector<std::int32_t> context_lens;
  PagedKvView kv;
  float scale = 1.0f;      // softmax scale, normally 1 / sqrt(head_dim)
  float softcap = 0.0f;    // attention logit soft-cap (Gemma 2): scores -> softcap * tanh(scores / softcap)
                           // before the softmax; 0: none
  std::int64_t window = 0;  // sliding window: each row attends to its last `window` tokens; 0: all of them
  // Chunked attention (Llama 4): each row, at position p = its context length - 1, attends to the tokens
  // [p - p % chunk, p] only (with a window too, from the later of the two first tokens); 0: no chunks.
  std::int64_t chunk = 0;
  // Attention sinks (gpt-oss): one FP16 logit per query head [q_heads] joining each row's softmax (its own
  // share dropped); null: none.
  const std::uint16_t* sinks = nullptr;
};

class IDevice {
 public:
  virtual ~IDevice() = default;
  IDevice() = default;
  IDevice(const IDevice&) = delete;
  IDevice& operator=(const IDevice&) = delete;

  virtual const std::string& name() const = 0;  // "dev0.xpu", "dev1.pim"
  virtual compiler::Unit unit() const = 0;      // kXpu or kPim
  virtual std::string describe() const = 0;     // class, backend and its state ("LogicPimDevice (...)")
  virtual bool executes(compiler::OpKind kind) const = 0;
  // The device memory this unit computes out of, e.g. "bank-bundle spaces 0-3" (DUPLEX.md "memory spaces").
  virtual std::string memory_spaces() const = 0;

  // y[r] = W . x[r], r < m: W [n][k], x [m][k], y [m][n].
  virtual void linear(compiler::OpKind kind, const std::uint16_t* w, const std::uint16_t* x, std::uint16_t* y,
                      std::size_t m, std::size_t n, std::size_t k) = 0;
  // The FFN `w` (gated or two-matrix, functional/ffn_weights.hpp) per row: x / y [m][h].
  virtual void ffn(compiler::OpKind kind, const functional::FfnWeights& w, const std::uint16_t* x,
                   std::uint16_t* y, std::size_t m) = 0;
  virtual void decode_attention(const DecodeAttentionBatch& batch) = 0;

  // Calls executed so far per op kind name ("qkv_proj": 4).
  const std::map<std::string, std::int64_t>& op_counts() const { return op_counts_; }

 protected:
  // Asserts that this unit executes `kind` and counts the call.
  void admit(compiler::OpKind kind);

 private:
  std::map<std::string, std::int64_t> op_counts_;
};

}  // namespace duplex::runtime::device
