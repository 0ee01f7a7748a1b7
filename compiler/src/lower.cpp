#include "duplex/compiler/lower.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <cmath>
#include <optional>

#include "duplex/base/error.hpp"
#include "duplex/compiler/expert_placement.hpp"
#include "duplex/compiler/expert_reach.hpp"

namespace duplex::compiler {
namespace {

// (query, key) pairs of a step's t new queries after c cached tokens: causal, query i (position c + i) sees
// min(c + i + 1, window) tokens (window 0: no limit).
double attended_pairs(double c, double t, double window) {
  if (window <= 0) return t * c + t * (t + 1) / 2;
  const double first = c + 1;  // tokens the first query sees
  if (first >= window) return t * window;
  const double growing = std::min(t, window - first + 1);  // queries whose window is not yet full
  return growing * first + growing * (growing - 1) / 2 + (t - growing) * window;
}
// Tokens (cached and new) a step of t queries after c cached tokens reads: from its first query's window on.
std::int64_t tokens_read(std::int64_t c, std::int64_t t, std::int64_t window) {
  return window <= 0 ? c + t : std::min(c + t, window - 1 + t);
}
// Chunked attention (chunk C): the query at position p attends to p % C + 1 tokens. Their sum over the
// positions [0, n): n / C whole chunks of C (C + 1) / 2 pairs, then the partial chunk's.
double chunk_pairs_before(double n, double chunk) {
  const double whole = std::floor(n / chunk), rest = n - whole * chunk;
  return whole * chunk * (chunk + 1) / 2 + rest * (rest + 1) / 2;
}
// Query-key pairs of t queries after c cached tokens, and the tokens the step reads (from its first query's
// chunk start on), with chunks of `chunk` tokens.
double chunked_pairs(double c, double t, double chunk) {
  return chunk_pairs_before(c + t, chunk) - chunk_pairs_before(c, chunk);
}
std::int64_t chunked_tokens_read(std::int64_t c, std::int64_t t, std::int64_t chunk) {
  return c % chunk + t;
}

constexpr double kActBytes = 2.0;  // activations are FP16/BF16 on both units

// The batch one device of the busiest data-parallel replica sees (it sets the step time): the requests dealt
// to the `dp` replicas in turn, heaviest first (most new tokens, then longest context), so replica 0 takes
// requests 0, dp, 2 dp, ... of that order: ceil(n / dp) of the n, each at least as heavy as any other
// replica's request of the same round. (Splitting each group separately, rounded up, gave every replica the
// whole batch when the groups were single requests, as with spread lengths.)
BatchState replica_batch(const BatchState& b, int dp, bool every_group, int replica) {
  const bool ranked = !b.groups.empty() && b.groups.front().rank >= 0;
  for (const auto& g : b.groups) {
    if ((g.rank >= 0) != ranked)
      throw Error(
          "lowering: a batch with some request groups of a data-parallel rank and some of none; "
          "expected all or none");
    if (g.rank >= dp)
      throw Error(
          fmt::format("lowering: a request group of data-parallel rank {}; expected 0..{} (the layout's "
                      "replicas)",
                      g.rank, dp - 1));
  }
  if (ranked && !every_group) {  // the replica's own requests
    BatchState out;
    out.first_draft_pass = b.first_draft_pass;
    for (const auto& g : b.groups)
      if (g.rank == replica && g.count > 0) out.groups.push_back(g);
    return out;
  }
  if (every_group) {  // LowerOptions::every_group_per_replica
    BatchState out;
    out.first_draft_pass = b.first_draft_pass;
    for (const auto& g : b.groups)
      if (g.count > 0)
        out.groups.push_back(
            {(g.count + dp - 1) / dp, g.context, g.tokens, g.completes_prefill, g.verify, g.cached});
    return out;
  }
  std::vector<const RequestGroup*> order;
  for (const auto& g : b.groups)
    if (g.count > 0) order.push_back(&g);
  if (dp > 1)  // (one replica: the batch as it is)
    std::stable_sort(order.begin(), order.end(), [](const RequestGroup* x, const RequestGroup* y) {
      return x->tokens != y->tokens ? x->tokens > y->tokens : x->context > y->context;
    });
  BatchState out;
  out.first_draft_pass = b.first_draft_pass;
  std::int64_t first = 0;  // the group's first request in the order
  for (const RequestGroup* g : order) {
    // The replica's requests among [first, first + count): those at replica mod dp.
    const std::int64_t next = (first + dp - 1 - replica) / dp * dp + replica;
    const std::int64_t mine = next < first + g->count ? (first + g->count - 1 - next) / dp + 1 : 0;
    first += g->count;
    if (mine > 0)
      out.groups.push_back({mine, g->context, g->tokens, g->completes_prefill, g->verify, g->cached});
  }
  return out;
}

class Lowering {
 public:
  Lowering(const ModelSpec& m, const BatchState& b, const ParallelLayout& p, const Routing& r,
           const LowerOptions& o)
      : m_(m),
        batch_(replica_batch(b, p.dp, o.every_group_per_replica, o.replica)),
        p_(p),
        routing_(r),
        options_(o),
        step_tokens_(b.tokens()),
        deduplicated_(deduplicates_exchange(o.all_to_all, b)) {
    tokens_ = batch_.tokens();
    // The tokens the experts see: the whole system's (experts shared by all data-parallel replicas), or under
    // pipeline parallelism this batch in flight's alone (its stage's devices hold every expert).
    global_tokens_ = p.pp > 1 ? tokens_ : step_tokens_;
    wbytes_ = dtype_bytes(m.dtype);
    kvbytes_ = dtype_bytes(m.kv_dtype);
    q_heads_ = m.heads / p.tp;
    kv_heads_ = m.attention == AttentionKind::kMla ? 1 : std::max(1, m.kv_heads / p.tp);
    for (const auto& g : batch_.groups)  // one next-token row per request; a verification's every token
      logit_rows_ += g.verify ? g.count * g.tokens : g.count;
  }

  Graph run() {
    g_.model = m_.name;
    g_.devices = p_.devices;
    if (tokens_ == 0) {  // a replica without requests: its devices' experts for the others' tokens (a
                         // pipeline batch in flight's stage devices: none, its experts see its tokens only)
      for (int l = 0; l < m_.layers; ++l)
        if (m_.is_moe_layer(l)) {
          const std::size_t first = g_.ops.size();
          const LayerSlots slots = local_slots(expert_counts(l), layer_placement(l));
          experts(l, slots.planned);
          scale_energy_to_mean_group(first, slots);
        }
      return std::move(g_);
    }
    embedding();
    if (m_.draft_head) head_fusion();
    const std::vector<int> stage_ends = p_.stage_ends(m_.layers);
    for (int l = 0; l < m_.layers; ++l) {
      layer(l);
      if (std::find(stage_ends.begin(), stage_ends.end(), l) != stage_ends.end()) stage_send(l);
    }
    norm(-1, "final_norm");
    lm_head();
    return std::move(g_);
  }

 private:
  Op& add(OpKind kind, int layer, std::string name) {
    Op o;
    o.kind = kind;
    o.layer = layer;
    o.dtype = m_.dtype;
    o.name = layer >= 0 ? fmt::format("L{}.{}", layer, name) : std::move(name);
    g_.ops.push_back(std::move(o));
    return g_.ops.back();
  }

  // m x k activations times `matrices` weight matrices of k x n; output m x n (the last matrix's output
  // is `out_cols` wide when it differs, e.g. an FFN's down projection).
  // Weights are in `weights` (the model's dtype unless given: experts' expert_dtype, projections' and dense
  // FFNs' linear_dtype where the model quantizes them), the op's dtype: the cycle-level PIM timing streams
  // them at its bytes per element.
  Op& gemm(OpKind kind, int layer, std::string name, std::int64_t m, std::int64_t n, std::int64_t k,
           int matrices, std::int64_t out_cols, std::optional<DType> weights = std::nullopt) {
    Op& o = add(kind, layer, std::move(name));
    if (weights) o.dtype = *weights;
    o.quant_group = m_.quant_group;
    if (o.dtype == DType::kBnbInt8) {
      o.int8_decomposes = m_.llm_int8_threshold > 0;
      o.int8_outlier_columns = m_.llm_int8_outlier_columns;
    }
    o.m = m;
    o.n = n;
    o.k = k;
    o.matrices = matrices;
    o.flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) * matrices;
    o.bytes_weights =
        static_cast<double>(n) * static_cast<double>(k) * matrices * o.weight_bytes_per_element();
    o.bytes_act = static_cast<double>(m) * static_cast<double>(k + out_cols) * kActBytes;
    return o;
  }

  void elementwise(OpKind kind, int layer, std::string name, double elements_read, double elements_written,
                   double flops_per_element, double weight_elements = 0) {
    Op& o = add(kind, layer, std::move(name));
    o.m = tokens_;
    o.k = m_.hidden;
    o.flops = flops_per_element * elements_written;
    o.bytes_act = (elements_read + elements_written) * kActBytes;
    o.bytes_weights = weight_elements * wbytes_;
  }

  void norm(int layer, const char* name) {
    const double e = static_cast<double>(tokens_) * m_.hidden;
    elementwise(OpKind::kNorm, layer, name, e, e, 4.0,
                (m_.norm == NormKind::kLayerNorm && m_.norm_bias ? 2.0 : 1.0) * m_.hidden);
  }

  // x += the block's output (+ a bias row of `bias_elements`, the attention's o_bias, added alike).
  void residual(int layer, const char* name, double bias_elements = 0) {
    const double e = static_cast<double>(tokens_) * m_.hidden;
    elementwise(OpKind::kResidual, layer, name, 2.0 * e, e, bias_elements > 0 ? 2.0 : 1.0, bias_elements);
  }

  void embedding() {
    Op& o = add(OpKind::kEmbedding, -1, "embedding");
    o.m = tokens_;
    o.k = m_.hidden;
    o.bytes_weights = static_cast<double>(tokens_) * m_.hidden * wbytes_;  // gathered rows only
    o.bytes_act = static_cast<double>(tokens_) * m_.hidden * kActBytes;
    if (m_.learned_positions > 0) {  // + each token's position row, added
      o.bytes_weights *= 2.0;
      o.flops += static_cast<double>(tokens_) * m_.hidden;
    }
    if (m_.scale_embedding) o.flops += static_cast<double>(tokens_) * m_.hidden;  // x sqrt(hidden) (Gemma)
  }

  // A draft head (ModelSpec::draft_head: an MTP module, an EAGLE head) first normalizes the token's embedding
  // and the target's hidden state and projects the pair to hidden: a projection GEMM [2 hidden -> hidden]
  // (timed as one, kind o_proj), replicated on every device (its inputs are whole), in dtype.
  // EAGLE-3 (draft_states 3) projects the target's three states in the step's first draft pass instead
  // ("head.fc", [3 hidden -> hidden]); its layer's q / k / v read the pair unprojected (qkv_inputs).
  void head_fusion() {
    const std::int64_t h = m_.hidden;
    if (m_.draft_states == 3 && batch_.first_draft_pass)
      gemm(OpKind::kOProj, -1, "head.fc", tokens_, h, 3 * h, 1, h);
    norm(-1, "head.enorm");
    norm(-1, "head.hnorm");
    if (m_.draft_states == 1) gemm(OpKind::kOProj, -1, "head.fuse", tokens_, h, 2 * h, 1, h);
  }
  // The q / k / v projections' input width: hidden, or an EAGLE-3 head's embedding and hidden state side by
  // side.
  std::int64_t qkv_inputs() const { return m_.draft_states == 3 ? 2 * std::int64_t{m_.hidden} : m_.hidden; }

  // A ring all-reduce over the node's tp devices of `rows` x hidden activations.
  void all_reduce(int layer, const char* name, std::int64_t rows) {
    const int peers = p_.tp;
    if (peers <= 1 || rows == 0) return;
    Op& o = add(OpKind::kAllReduce, layer, name);
    o.m = rows;
    o.n = m_.hidden;
    const double data = static_cast<double>(rows) * m_.hidden * kActBytes;
    // Ring all-reduce sends 2(p-1)/p of the data per device.
    o.link_bytes = data * 2.0 * (peers - 1) / peers;
    o.bytes_act = 2.0 * data;  // read the local buffer, write the result
  }

  // An MoE layer's token exchange, each way (dispatch, combine; layer_exchange): the mean device's share
  // (row_share) of the replica's `units`, token-expert rows (per row) or tokens (node-deduplicated), copied
  // over InfiniBand and NVLink as the exchange says; the op times it by each link's skew (Op::exchange).
  struct LayerExchange {
    ParallelLayout::ExpertExchange x;
    std::int64_t units = 0;
  };
  void expert_exchange(int layer, const char* name, const LayerExchange& e) {
    if (e.units == 0) return;
    Op& o = add(OpKind::kAllToAll, layer, name);
    const double sent = static_cast<double>(e.units) * e.x.row_share;
    o.m = static_cast<std::int64_t>(std::ceil(sent));  // shown in reports
    o.n = m_.hidden;
    const double data = sent * m_.hidden * kActBytes;
    o.link_bytes = data * (e.x.infiniband + e.x.nvlink);
    o.link_bytes_in_node = data * e.x.nvlink;
    o.bytes_act = 2.0 * o.link_bytes;  // read the copies sent, write as many received
    o.exchange = {e.x.infiniband_skew, e.x.nvlink_skew, e.x.infiniband_peers, e.x.nvlink_peers};
  }

  // A GPU <-> PIM-device transfer of `bytes` (heterogeneous systems; LowerOptions). `rows` x `cols` is the
  // shape shown in reports.
  void pim_transfer(int layer, const char* name, std::int64_t rows, std::int64_t cols, double bytes) {
    if (!options_.pim_devices || bytes <= 0) return;
    Op& o = add(OpKind::kPimTransfer, layer, name);
    o.m = rows;
    o.n = cols;
    o.link_bytes = bytes;
    o.bytes_act = 2.0 * bytes;  // read on the sender, written on the receiver
  }

  // Pipeline parallelism: the stage ending at layer `layer` hands its tokens_ x hidden output activations to
  // the next stage's devices. Each device sends its 1/tp share to its peer there (over InfiniBand unless the
  // pipeline lies in one node), which all-gather the shares over NVLink (vLLM's send_tensor_dict over the TP
  // group): link_bytes is both, link_bytes_in_node what crosses NVLink.
  void stage_send(int layer) {
    Op& o = add(OpKind::kStageSend, layer, "stage_send");
    o.m = tokens_;
    o.n = m_.hidden;
    const double data = static_cast<double>(tokens_) * m_.hidden * kActBytes;
    const double share = data / p_.tp, gather = data - share;  // a ring all-gather sends tp - 1 shares
    o.link_bytes = share + gather;
    o.link_bytes_in_node = gather + (p_.pipeline_in_node ? share : 0.0);
    o.bytes_act = share + data;  // the share read, the gathered whole written
  }

  // The in-device K/V migration of one layer (LowerOptions::kv_migration): `tokens` prompt tokens of
  // `requests` requests, `kv_elems` K + V elements per token on this device. Shape: requests x tokens.
  void kv_migration(int layer, std::int64_t requests, std::int64_t tokens, double kv_elems) {
    if (!options_.kv_migration || tokens == 0) return;
    Op& o = add(OpKind::kKvMigration, layer, "kv_migration");
    o.m = requests;
    o.n = tokens;
    o.dtype = m_.kv_dtype;
    o.bytes_kv = 2.0 * static_cast<double>(tokens) * kv_elems * kvbytes_;  // read the prefill space, write the KV spaces
  }

  void layer(int l) {
    norm(l, "attn_norm");
    attention_block(l);
    all_reduce(l, "attn_all_reduce", tokens_);
    if (m_.post_norms) norm(l, "post_attn_norm");  // on the block's output, before the residual add
    residual(l, "attn_residual", m_.o_bias ? m_.hidden : 0);
    norm(l, "ffn_norm");
    const bool moe = m_.is_moe_layer(l);
    if (moe) {
      moe_block(l);
    } else {
      const std::int64_t width = m_.ffn / p_.tp;
      Op& o = gemm(OpKind::kDenseFfn, l, "ffn", tokens_, width, m_.hidden,
                   m_.ffn_kind == FfnKind::kGated ? 3 : 2, m_.hidden, m_.dense_ffn_matrix_dtype(l));
      if (m_.mlp_bias) {  // the first matrix's bias, added before the activation
        o.bytes_weights += static_cast<double>(width) * wbytes_;
        o.flops += static_cast<double>(tokens_) * static_cast<double>(width);
      }
    }
    all_reduce(l, "ffn_all_reduce", tokens_);
    if (m_.post_norms) norm(l, "post_ffn_norm");
    // The down projection's bias is added once, after the tensor-parallel sum (as the o bias).
    residual(l, "ffn_residual", m_.mlp_bias && !moe ? m_.hidden : 0);
  }

  void attention_block(int l) {
    const bool mla = m_.attention == AttentionKind::kMla;
    const std::int64_t o_in = mla ? std::int64_t{q_heads_} * m_.mla.v_head_dim : std::int64_t{q_heads_} * m_.head_dim;
    // QKV: the weight columns one device holds, its query heads' and the KV heads they read (replicated when
    // tp > kv_heads). MLA (absorbed, as functional emulation runs it): the projections before attention as
    // one op of equal weight volume, q_a and kv_a whole (every device computes and caches the latent), q_b
    // (q_proj) and kv_b's k_nope rows (W_UK, absorbed into the queries) by its heads; kv_b's v rows (W_UV)
    // go with o_proj.
    std::int64_t qkv_cols = std::int64_t{q_heads_ + 2 * kv_heads_} * m_.head_dim;
    if (mla) {
      const MlaSpec& a = m_.mla;
      const std::int64_t h = m_.hidden, qk = a.qk_nope_head_dim + a.qk_rope_head_dim;
      const std::int64_t q = a.q_lora_rank > 0
                                 ? h * a.q_lora_rank + std::int64_t{a.q_lora_rank} * q_heads_ * qk
                                 : h * q_heads_ * qk;
      const std::int64_t kv = h * (a.kv_lora_rank + a.qk_rope_head_dim) +
                              std::int64_t{a.kv_lora_rank} * q_heads_ * a.qk_nope_head_dim;
      qkv_cols = (q + kv + h - 1) / h;  // rounded up: a column's fraction of weights is still read
    }
    gemm(OpKind::kQkvProj, l, "qkv_proj", tokens_, qkv_cols, qkv_inputs(), 1, qkv_cols,
         m_.attention_matrix_dtype());
    if (m_.qk_norm == QkNorm::kWhole && p_.tp > 1) {  // lower.hpp kQkNormAllReduce
      Op& o = add(OpKind::kAllReduce, l, std::string(kQkNormAllReduce));
      o.m = tokens_;
      o.n = 2;
      const double data = static_cast<double>(tokens_) * 2.0 * 4.0;  // FP32 sums of squares of q and k
      o.link_bytes = data * 2.0 * (p_.tp - 1) / p_.tp;               // ring all-reduce
      o.bytes_act = 2.0 * data;
    }
    if (m_.learned_positions == 0 || m_.qkv_bias || m_.clip_qkv > 0 || m_.qk_norm != QkNorm::kNone) rope(l);
    if (m_.attn_temperature_floor > 0 && !m_.rotates(l)) {
      // Llama 4's temperature tuning: a factor per query token, each q element multiplied (read and written).
      const double q = static_cast<double>(tokens_) * q_heads_ * m_.head_dim;
      elementwise(OpKind::kRope, l, "attn_temperature", q, q, 1.0, 0.0);
    }

    const double kv_elems = static_cast<double>(m_.kv_elements_per_token_layer()) *
                            (mla ? 1.0 : static_cast<double>(kv_heads_) / std::max(1, m_.kv_heads));
    // Per-token score + weighted-sum FLOPs against one cached token, all local query heads (+ a divide, a
    // tanh and a multiply per score with soft-capping). A sink adds an exp and an add per query and head.
    const double flops_per_pair =
        (mla ? 2.0 * q_heads_ * (2.0 * m_.mla.kv_lora_rank + m_.mla.qk_rope_head_dim)
             : 4.0 * q_heads_ * m_.head_dim) +
        (m_.attn_softcap > 0 ? 3.0 * q_heads_ : 0.0);
    const double q_elems = static_cast<double>(q_heads_) * (mla ? m_.mla.kv_lora_rank : m_.head_dim);

    const std::int64_t window = m_.attention_window(l);  // 0: the whole context
    const std::int64_t chunk = m_.attention_chunk_of(l);  // 0: no chunks
    Op pre, dec;
    std::int64_t decode_tokens = 0, prefill_tokens = 0, completed_requests = 0, completed_tokens = 0;
    for (const auto& g : batch_.groups) {
      (g.decodes() ? decode_tokens : prefill_tokens) += g.count * g.tokens;
      if (g.completes_prefill) {
        completed_requests += g.count;
        completed_tokens += g.count * (g.context - g.cached + g.tokens);
      }
      Op& o = g.decodes() ? dec : pre;
      const double c = static_cast<double>(g.context), t = static_cast<double>(g.tokens), n = static_cast<double>(g.count);
      o.requests += g.count;
      o.query_tokens += g.count * g.tokens;
      const std::int64_t read = chunk > 0 ? chunked_tokens_read(g.context, g.tokens, chunk)
                                          : tokens_read(g.context, g.tokens, window);
      o.context_tokens += g.count * read;
      const double pairs = chunk > 0 ? chunked_pairs(c, t, static_cast<double>(chunk))
                                     : attended_pairs(c, t, static_cast<double>(window));
      o.flops += n * flops_per_pair * pairs + (m_.attn_sinks ? n * t * 2.0 * q_heads_ : 0.0);
      o.bytes_kv += n * static_cast<double>(read) * kv_elems * kvbytes_ + n * t * kv_elems * kvbytes_;  // + write new
      o.bytes_act += n * t * 2.0 * q_elems * kActBytes;                              // q in, output out
    }
    const double decode = static_cast<double>(decode_tokens);
    pim_transfer(l, "to_pim_attn", decode_tokens + prefill_tokens, static_cast<std::int64_t>(q_elems + kv_elems),
                 decode * (q_elems * kActBytes + kv_elems * kvbytes_) +
                     static_cast<double>(prefill_tokens) * kv_elems * kvbytes_);
    for (auto [op, kind, name] : {std::tuple{&pre, OpKind::kAttentionPrefill, "attn_prefill"},
                                  std::tuple{&dec, OpKind::kAttentionDecode, "attn_decode"}}) {
      if (op->requests == 0) continue;
      Op& o = add(kind, l, name);
      o.requests = op->requests;
      o.query_tokens = op->query_tokens;
      o.context_tokens = op->context_tokens;
      o.q_heads = q_heads_;
      o.kv_heads = kv_heads_;
      o.head_dim = mla ? m_.mla.kv_lora_rank + m_.mla.qk_rope_head_dim : m_.head_dim;
      o.softcap = m_.attn_softcap > 0;
      o.sinks = m_.attn_sinks;
      o.dtype = m_.kv_dtype;
      o.flops = op->flops;
      o.bytes_kv = op->bytes_kv;
      o.bytes_act = op->bytes_act;
    }
    kv_migration(l, completed_requests, completed_tokens, kv_elems);
    pim_transfer(l, "from_pim_attn", decode_tokens, static_cast<std::int64_t>(q_elems), decode * q_elems * kActBytes);
    Op& o = gemm(OpKind::kOProj, l, "o_proj", tokens_, m_.hidden, o_in, 1, m_.hidden,
                 m_.attention_matrix_dtype());
    if (mla) {  // + W_UV: each head's attention-weighted latent (kv_lora_rank) to its value (v_head_dim)
      const double t = static_cast<double>(tokens_),
                   uv = static_cast<double>(m_.mla.kv_lora_rank) * static_cast<double>(o_in);
      o.flops += 2.0 * t * uv;
      o.bytes_weights += uv * dtype_bytes(m_.attention_matrix_dtype(), m_.quant_group);
      o.bytes_act += t * static_cast<double>(q_heads_) * m_.mla.kv_lora_rank * kActBytes;  // the latents read
    }
  }

  // The xPU's elementwise pass over the projected q and k (and v with biases or a clamp): add the q / k / v
  // biases, clamp q, k and v (clip_qkv), RMSNorm q and k (qk_norm; Llama 4's L2 norm in the rotating layers
  // only), rotate q and k (RoPE models, but their nope_layers). Read and written once; bias and norm gains
  // are weights. Without a rotation (learned positions, NoPE layers) the pass is named "qkv_bias" (or
  // "qkv_clip", or "qk_norm"); a NoPE layer with nothing to do has none.
  void rope(int l) {
    const bool rotate = m_.rotates(l), clip = m_.clip_qkv > 0;
    const bool qk_norm = m_.qk_norm != QkNorm::kNone && (m_.qk_norm != QkNorm::kL2 || rotate);
    if (!rotate && !m_.qkv_bias && !clip && !qk_norm) return;
    const double t = static_cast<double>(tokens_), d = m_.head_dim;
    const double qk = t * (q_heads_ + kv_heads_) * d, v = t * kv_heads_ * d;
    const double elems = qk + (m_.qkv_bias || clip ? v : 0.0);
    // The rotation's 6 FLOPs per rotated element (partial RoPE: rotary_dim of each head).
    const double rotated = m_.rotary_dim > 0 ? qk * m_.rotary_dim / d : qk;
    double flops = rotate ? 6.0 * rotated : 0.0, weights = 0;
    if (m_.qkv_bias) {
      flops += elems;
      weights += (q_heads_ + 2.0 * kv_heads_) * d;
    }
    if (clip) flops += 2.0 * elems;  // a min and a max per element
    if (qk_norm) {
      flops += 4.0 * qk;
      weights += m_.qk_norm == QkNorm::kPerHead ? 2.0 * d
                 : m_.qk_norm == QkNorm::kWhole ? (q_heads_ + kv_heads_) * d
                                                : 0.0;  // kL2: no gain
    }
    elementwise(OpKind::kRope, l,
                rotate        ? "rope"
                : m_.qkv_bias ? "qkv_bias"
                : clip        ? "qkv_clip"
                              : "qk_norm",
                elems, elems, flops / elems, weights);
  }

  void moe_block(int l) {
    // The router's gate GEMM (+ Qwen2-MoE's shared-expert gate: one more output column, its sigmoid beside
    // the softmax; + gpt-oss's bias row, added to the logits).
    Op& router = gemm(OpKind::kRouter, l, "router", tokens_, m_.experts + (m_.shared_expert_gate ? 1 : 0),
                      m_.hidden, 1, m_.experts + (m_.shared_expert_gate ? 1 : 0));
    if (m_.router_bias) {
      router.bytes_weights += static_cast<double>(m_.experts) * wbytes_;
      router.flops += static_cast<double>(tokens_) * m_.experts;
    }
    // Inside a node every device already holds all the node's tokens (attention is tensor parallel); experts
    // on other nodes (with or without +ET) need the tokens sent there and back: an all-to-all each way, each
    // device of the node sending 1/tp of them (ParallelLayout::expert_exchange; the ffn all-reduce after the
    // combine sums the returned rows into every device's). On a heterogeneous system it runs GPU to GPU (the
    // PIM devices sit on their node's NVLink only), and each GPU then moves its experts' tokens, its own
    // node's and those received, to its PIM devices and back. Under attention data parallelism every device
    // holds only its own requests' tokens: the all-to-all runs among all devices, its node's share over
    // NVLink.
    // With DeepEP's normal kernels (LowerOptions::all_to_all) a token crosses to each node and device
    // holding any of its experts once (deduplicated_exchange) instead of once per expert.
    const std::vector<std::int64_t> counts = expert_counts(l);
    const SlotExperts placement = layer_placement(l);
    const LayerSlots slots = local_slots(counts, placement);
    const LayerExchange exchange = layer_exchange(counts, placement, slots.planned);
    const std::size_t first = g_.ops.size();
    expert_exchange(l, "dispatch", exchange);
    experts(l, slots.planned);
    expert_exchange(l, "combine", exchange);
    scale_energy_to_mean_group(first, slots);
  }

  // The tokens each expert of MoE layer `l` receives: routing is over the whole system's tokens (experts are
  // shared by all data-parallel replicas), or under pipeline parallelism this batch in flight's share of the
  // step's routing.
  std::vector<std::int64_t> expert_counts(int l) const {
    const auto counts = routing_.expert_tokens_of(m_.moe_layers_before(l), global_tokens_, step_tokens_,
                                                  m_.experts, m_.top_k, m_.router_groups,
                                                  m_.router_topk_groups);
    std::int64_t sum = 0;
    for (auto c : counts) {
      if (c < 0 || c > global_tokens_) throw Error(fmt::format("routing: layer {} gives an expert {} tokens; expected 0..{}", l, c, global_tokens_));
      sum += c;
    }
    if (sum != global_tokens_ * m_.top_k)
      throw Error(fmt::format("routing: layer {} routes {} token slots; expected tokens x top_k = {}", l, sum,
                              global_tokens_ * m_.top_k));
    return counts;
  }

  // The representative device's expert slots of an MoE layer (`counts` its experts' tokens), each the
  // expert it holds and the token-expert rows it receives: the slots of the expert-parallel group that
  // receives the most rows (every device waits for it at the layer's all-to-all; ties to the lowest group),
  // each expert's rows split over its copies. Without a placement (Routing::placement: expert load
  // balancing) vLLM's initial one, default_placement: group g holds experts [g x local_experts, (g + 1) x
  // local_experts) and, with redundant slots, their copies. Beside them what the mean group receives: its
  // rows and its slots with rows (every slot's over the groups).
  struct Slot {
    int expert = 0;
    std::int64_t rows = 0;
  };
  struct LayerSlots {
    std::vector<Slot> planned;
    double mean_rows = 0, mean_active = 0;
  };
  LayerSlots local_slots(const std::vector<std::int64_t>& counts, const SlotExperts& placement) const {
    LayerSlots slots;
    const std::vector<std::int64_t> rows = slot_rows(placement, counts);
    const int group =
        options_.expert_group >= 0 ? options_.expert_group : busiest_group(rows, p_.expert_groups).group;
    const auto first = static_cast<std::size_t>(group) * static_cast<std::size_t>(p_.local_experts);
    for (std::size_t s = first; s < first + static_cast<std::size_t>(p_.local_experts); ++s)
      slots.planned.push_back({placement[s], rows[s]});
    for (const std::int64_t r : rows) {
      slots.mean_rows += static_cast<double>(r);
      slots.mean_active += r > 0 ? 1.0 : 0.0;
    }
    slots.mean_rows /= p_.expert_groups;
    slots.mean_active /= p_.expert_groups;
    return slots;
  }

  // The expert each slot of MoE layer `l` holds: Routing::placement's, or vLLM's initial placement.
  SlotExperts layer_placement(int l) const {
    const auto moe_layer = static_cast<std::size_t>(m_.moe_layers_before(l));
    const std::size_t expected = static_cast<std::size_t>(p_.local_experts) * p_.expert_groups;
    if (!routing_.placement.empty() &&
        (moe_layer >= routing_.placement.size() || routing_.placement[moe_layer].size() != expected))
      throw Error(fmt::format(
          "routing: the expert placement of MoE layer {} has {} slots; expected {} ({} per "
          "expert-parallel group x {})",
          moe_layer, moe_layer < routing_.placement.size() ? routing_.placement[moe_layer].size() : 0,
          expected, p_.local_experts, p_.expert_groups));
    return routing_.placement.empty() ? default_placement(m_.experts, static_cast<int>(expected))
                                      : routing_.placement[moe_layer];
  }

  // The layer's exchange: per row, the layout's copies with both links' skew the planned group's rows over
  // an even share (exchange_skew); node-deduplicated, from where a token's experts are under the layer's
  // routing weights (Routing::token_weights), the router's group limit (DeepSeek's) and the placement.
  LayerExchange layer_exchange(const std::vector<std::int64_t>& counts, const SlotExperts& placement,
                               const std::vector<Slot>& planned) {
    LayerExchange e{p_.expert_exchange(), 0};
    if (e.x.infiniband + e.x.nvlink == 0 || tokens_ == 0) return e;
    if (!deduplicated_) {
      e.x.infiniband_skew = e.x.nvlink_skew = exchange_skew(planned);
      e.units = tokens_ * m_.top_k;
      return e;
    }
    std::vector<double> weights = routing_.token_weights(counts, global_tokens_);
    if (!reach_memo_ || reach_memo_->weights != weights || reach_memo_->placement != placement) {
      ExpertReach reach =
          expert_reach(weights, m_.top_k, placement, p_, m_.router_groups, m_.router_topk_groups);
      reach_memo_ = ReachMemo{std::move(weights), placement, std::move(reach)};
    }
    e.x = deduplicated_exchange(p_, reach_memo_->reach);
    e.units = tokens_;
    return e;
  }

  // Op::energy_rows_scale / energy_weights_scale of the MoE layer's ops from index `first` (its experts and
  // PIM-device transfers; the shared experts are every device's alike, the exchange's bytes the mean
  // device's): the mean group's rows and slots with rows over the planned group's.
  void scale_energy_to_mean_group(std::size_t first, const LayerSlots& slots) {
    const auto planned_rows = static_cast<double>(rows_of(slots.planned));
    const auto planned_active = static_cast<double>(
        std::count_if(slots.planned.begin(), slots.planned.end(), [](const Slot& s) { return s.rows > 0; }));
    for (std::size_t i = first; i < g_.ops.size(); ++i) {
      Op& o = g_.ops[i];
      if (o.kind == OpKind::kExpertFfn || o.kind == OpKind::kPimTransfer) {
        o.energy_rows_scale = slots.mean_rows / planned_rows;  // an op has rows: planned_rows > 0
        o.energy_weights_scale = o.kind == OpKind::kExpertFfn ? slots.mean_active / planned_active : 1.0;
      }
    }
  }

  static std::int64_t rows_of(const std::vector<Slot>& slots) {
    std::int64_t rows = 0;
    for (const Slot& s : slots) rows += s.rows;
    return rows;
  }

  // The all-to-all's skew: the rows the representative device's slots receive over an even share of the
  // step's tokens x top_k (1 / expert_groups of them), at least 1. Under even routing a device receives as
  // many rows as it sends; skewed routing sends its busiest experts' device more, and every device's
  // exchange waits for that one (expert load balancing spreads them).
  double exchange_skew(const std::vector<Slot>& slots) const {
    const double even = static_cast<double>(global_tokens_) * m_.top_k / p_.expert_groups;
    return even > 0 ? std::max(1.0, static_cast<double>(rows_of(slots)) / even) : 1.0;
  }

  // The representative device's experts of MoE layer `l` (`slots`: local_slots): its routed experts' share
  // of the whole step's tokens and the shared experts over its own tokens (none on a replica without
  // requests). A second copy of an expert on the device is named expert<e>.copy<k>.
  void experts(int l, const std::vector<Slot>& slots) {
    const int matrices = m_.ffn_kind == FfnKind::kGated ? 3 : 2;
    const std::int64_t width = m_.expert_ffn / p_.expert_shards;
    const std::int64_t local_tokens = rows_of(slots);
    const double expert_io = static_cast<double>(local_tokens) * static_cast<double>(m_.hidden) * kActBytes;
    pim_transfer(l, "to_pim_experts", local_tokens, m_.hidden, expert_io);
    for (std::size_t i = 0; i < slots.size(); ++i) {
      const auto [e, t] = slots[i];
      if (t == 0) continue;  // an expert with no tokens reads no weights
      const auto copy = std::count_if(slots.begin(), slots.begin() + static_cast<std::ptrdiff_t>(i),
                                      [e = e](const Slot& s) { return s.expert == e; });
      Op& o = gemm(OpKind::kExpertFfn, l,
                   copy == 0 ? fmt::format("expert{}", e) : fmt::format("expert{}.copy{}", e, copy), t, width,
                   m_.hidden, matrices, m_.hidden, m_.expert_dtype);
      o.expert = e;
      expert_biases(o, t, width);
    }
    if (m_.shared_experts > 0 && tokens_ > 0) {
      const std::int64_t sw = std::int64_t{m_.shared_experts} * m_.shared_expert_ffn / p_.tp;
      Op& o = gemm(OpKind::kSharedExpertFfn, l, "shared_experts", tokens_, sw, m_.hidden, matrices, m_.hidden,
                   m_.expert_dtype);
      expert_biases(o, tokens_, sw);
    }
    pim_transfer(l, "from_pim_experts", local_tokens, m_.hidden, expert_io);
  }

  // mlp_bias on an MoE model (gpt-oss): an expert's gate and up biases (its `width` columns) and its down
  // bias (hidden; added by one of the expert's shards, counted as 1 / expert_shards of it on each), each
  // added once per token.
  void expert_biases(Op& o, std::int64_t tokens, std::int64_t width) {
    if (!m_.mlp_bias) return;
    o.bias = true;
    const double elems = (m_.ffn_kind == FfnKind::kGated ? 2.0 : 1.0) * static_cast<double>(width) +
                         static_cast<double>(m_.hidden) / p_.expert_shards;
    o.bytes_weights += elems * wbytes_;
    o.flops += static_cast<double>(tokens) * elems;
  }

  void lm_head() {
    // A draft head with its own LM head scores its draft vocabulary only (ModelSpec::draft_vocab).
    const std::int64_t cols = (m_.draft_vocab > 0 ? m_.draft_vocab : m_.vocab) / p_.tp;
    Op& o = gemm(OpKind::kLmHead, -1, "lm_head", logit_rows_, cols, m_.hidden, 1, cols);
    if (m_.lm_head_bias) {  // + the bias row, added to every logit row
      o.bytes_weights += static_cast<double>(cols) * wbytes_;
      o.flops += static_cast<double>(logit_rows_) * static_cast<double>(cols);
    }
    if (m_.final_softcap > 0)  // a divide, a tanh and a multiply per logit
      o.flops += 3.0 * static_cast<double>(logit_rows_) * static_cast<double>(cols);
  }

  const ModelSpec& m_;
  BatchState batch_;
  const ParallelLayout& p_;
  const Routing& routing_;
  LowerOptions options_;
  std::int64_t step_tokens_;    // every data-parallel rank's
  std::int64_t global_tokens_;  // those the experts see (expert_counts)
  std::int64_t tokens_ = 0;
  std::int64_t logit_rows_ = 0;
  // The step's all-to-all by DeepEP's normal kernels (node-deduplicated; LowerOptions::all_to_all).
  bool deduplicated_ = false;
  // The last expert_reach computed and its inputs (every MoE layer of a step has the same unless routing
  // weights or placements differ by layer).
  struct ReachMemo {
    std::vector<double> weights;
    SlotExperts placement;
    ExpertReach reach;
  };
  std::optional<ReachMemo> reach_memo_;
  double wbytes_ = 2, kvbytes_ = 2;
  int q_heads_ = 0, kv_heads_ = 0;
  Graph g_;
};

}  // namespace

Graph lower(const ModelSpec& model, const BatchState& batch, const ParallelLayout& layout, const Routing& routing,
            const LowerOptions& options) {
  if (batch.tokens() <= 0) throw Error("lowering: the batch has no tokens to process");
  if (options.replica < 0 || options.replica >= layout.dp)
    throw Error(fmt::format("lowering: replica {}; expected 0..{} (the layout's data-parallel replicas)",
                            options.replica, layout.dp - 1));
  if (options.expert_group < -1 || options.expert_group >= layout.expert_groups)
    throw Error(
        fmt::format("lowering: expert group {}; expected -1 (the busiest) or 0..{} (the layout's "
                    "expert-parallel groups)",
                    options.expert_group, layout.expert_groups - 1));
  for (const auto& g : batch.groups)
    if (g.count < 0 || g.context < 0 || g.tokens <= 0)
      throw Error(fmt::format("lowering: invalid request group (count {}, context {}, tokens {})", g.count, g.context,
                              g.tokens));
  return Lowering(model, batch, layout, routing, options).run();
}

}  // namespace duplex::compiler
