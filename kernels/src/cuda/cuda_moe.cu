// CUDA MoE ops: router (cuBLAS gate GEMM + a top-k kernel), token permute / unpermute, and the grouped expert
// FFN: the experts with tokens in batches of up to kMaxGroup whose intermediates fit kScratchBytes; per
// batch, the gate and up GEMMs (to FP32) as cuBLAS batched GEMMs (one call per distinct token count), one
// fused activation kernel that rounds h to the storage dtype, and the down GEMMs batched likewise, all on one
// stream. Biases: b_in / b_up are added to an expert's FP32 gate / up rows (a small kernel per expert) before
// the activation; with b_down the down GEMMs write FP32 rows, and a kernel per expert adds b_down and rounds
// y once. W8A8 experts (quant_x / quant_h): x is fake-quantized once into a copy the gate / up GEMMs read,
// each batch's h in place before its down GEMMs (cuda_quantize.cu); a dynamic per-tensor h scale holds h for
// every row of the call ([P, F] instead of per batch) so that all of it is known before the first down GEMM.
// The router's logit bias is added to the FP32 logits before the top-k kernels read them.
// (cublasGemmGroupedBatchedEx would take mixed counts in one call, but cuBLAS 13 rejects FP16 inputs with an
// FP32 output there: measured on an H200, bench/kernels/README.md.)
#include <algorithm>
#include <vector>

#include "cuda_common.cuh"

namespace duplex::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// One thread per token: top_k by logit by repeated selection (ties: lower id), each chosen expert's weight
// its softmax probability (kSoftmaxTopK: the softmax is monotonic, so the logits rank as the probabilities
// do) or, with `sigmoid` (kSigmoidTopK, Llama 4), sigmoid(l_e).
__global__ void router_topk(const float* logits, std::int64_t tokens, std::int64_t experts,
                            std::int64_t top_k, bool sigmoid, bool renormalize, float routed_scaling,
                            std::int32_t* ids, float* weights) {
  const std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= tokens) return;
  const float* l = logits + t * experts;
  float m = -INFINITY, sum = 0.0f;
  if (!sigmoid) {
    for (std::int64_t e = 0; e < experts; ++e) m = fmaxf(m, l[e]);
    for (std::int64_t e = 0; e < experts; ++e) sum += expf(l[e] - m);
  }
  float chosen = 0.0f;
  for (std::int64_t j = 0; j < top_k; ++j) {
    std::int64_t best = -1;
    for (std::int64_t e = 0; e < experts; ++e) {
      bool taken = false;
      for (std::int64_t i = 0; i < j; ++i) taken = taken || ids[t * top_k + i] == e;
      if (!taken && (best < 0 || l[e] > l[best])) best = e;
    }
    ids[t * top_k + j] = static_cast<std::int32_t>(best);
    const float p = sigmoid ? 1.0f / (1.0f + expf(-l[best])) : expf(l[best] - m) / sum;
    weights[t * top_k + j] = p;
    chosen += p;
  }
  for (std::int64_t j = 0; j < top_k; ++j) {
    const float w = weights[t * top_k + j];
    weights[t * top_k + j] = (renormalize ? w / chosen : w) * routed_scaling;
  }
}

// Whether (value, index) comes after (last_value, last_index) in the routers' order: descending values, ties
// broken by the lower index first. (INFINITY, -1) comes before everything.
__device__ __forceinline__ bool comes_after(float value, std::int64_t index, float last_value,
                                            std::int64_t last_index) {
  return value < last_value || (value == last_value && index > last_index);
}

// The value a group router chooses experts by, before the group mask: p_e = exp(l_e - m) / sum (bias null,
// kGroupLimited) or s_e + bias_e (kNoAuxTc). Not inlined: router_grouped recomputes it and relies on getting
// the same bits each time (one copy of the code, whatever the compiler would contract in an inlined one).
template <class T>
__device__ __noinline__ float router_choice(const float* l, const T* bias, std::int64_t e, float m,
                                            float sum) {
  if (bias == nullptr) return expf(l[e] - m) / sum;
  return 1.0f / (1.0f + expf(-l[e])) + to_float(bias[e]);
}

// One thread per token: the group-limited routers, kGroupLimited (bias null) and kNoAuxTc (ops.hpp
// RouterArgs). No per-thread arrays, so any expert count works: the kept groups are those up to the
// topk_groups-th in the order of comes_after, found by repeated selection, and each top-k selection picks the
// best expert after the previous one, recomputing the choice values and group scores from the logits
// ((2 top_k + topk_groups) x E evaluations per token).
template <class T>
__global__ void router_grouped(const float* logits, const T* bias, std::int64_t tokens, std::int64_t experts,
                               std::int64_t groups, std::int64_t topk_groups, std::int64_t top_k,
                               bool renormalize, float routed_scaling, std::int32_t* ids, float* weights) {
  const std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= tokens) return;
  const float* l = logits + t * experts;
  const bool sigmoid = bias != nullptr;
  float m = -INFINITY, sum = 0.0f;
  if (!sigmoid) {
    for (std::int64_t e = 0; e < experts; ++e) m = fmaxf(m, l[e]);
    for (std::int64_t e = 0; e < experts; ++e) sum += expf(l[e] - m);
  }
  const std::int64_t size = experts / groups;
  // A group's score: its largest choice value (kGroupLimited) or the sum of its two largest (kNoAuxTc).
  auto group_score = [&](std::int64_t g) {
    float first = -INFINITY, second = -INFINITY;
    for (std::int64_t e = g * size; e < (g + 1) * size; ++e) {
      const float v = router_choice(l, bias, e, m, sum);
      if (v > first) {
        second = first;
        first = v;
      } else if (v > second) {
        second = v;
      }
    }
    return sigmoid ? first + second : first;
  };
  float last_score = INFINITY;  // the last kept group
  std::int64_t last_group = -1;
  for (std::int64_t j = 0; j < topk_groups; ++j) {
    std::int64_t best = -1;
    float best_score = 0.0f;
    for (std::int64_t g = 0; g < groups; ++g) {
      const float score = group_score(g);
      if (comes_after(score, g, last_score, last_group) && (best < 0 || score > best_score)) {
        best = g;
        best_score = score;
      }
    }
    last_score = best_score;
    last_group = best;
  }
  float last_value = INFINITY, chosen = 0.0f;
  std::int64_t last_expert = -1;
  for (std::int64_t j = 0; j < top_k; ++j) {
    std::int64_t best = -1;
    float best_value = 0.0f;
    for (std::int64_t g = 0; g < groups; ++g) {
      const bool kept = !comes_after(group_score(g), g, last_score, last_group);
      for (std::int64_t e = g * size; e < (g + 1) * size; ++e) {
        const float value = kept ? router_choice(l, bias, e, m, sum) : 0.0f;  // HF's masked_fill(~mask, 0.0)
        if (comes_after(value, e, last_value, last_expert) && (best < 0 || value > best_value)) {
          best = e;
          best_value = value;
        }
      }
    }
    last_value = best_value;
    last_expert = best;
    // The weight's probability: p_e, or s_e without the bias.
    const float p = sigmoid ? 1.0f / (1.0f + expf(-l[best])) : expf(l[best] - m) / sum;
    ids[t * top_k + j] = static_cast<std::int32_t>(best);
    weights[t * top_k + j] = p;
    chosen += p;
  }
  if (sigmoid) chosen += 1e-20f;  // HF's guard against an all-zero sum
  for (std::int64_t j = 0; j < top_k; ++j) {
    const float w = weights[t * top_k + j];
    weights[t * top_k + j] = (renormalize ? w / chosen : w) * routed_scaling;
  }
}

// One thread per token: Phi-3.5-MoE's sparsemixer (ops.hpp RouterArgs), its two experts and weights.
__global__ void router_sparsemixer(const float* logits, std::int64_t tokens, std::int64_t experts,
                                   float jitter_eps, std::int32_t* ids, float* weights) {
  const std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= tokens) return;
  const float* l = logits + t * experts;
  std::int64_t first = 0;
  for (std::int64_t e = 1; e < experts; ++e)
    if (l[e] > l[first]) first = e;
  std::int64_t second = first == 0 ? 1 : 0;
  for (std::int64_t e = 0; e < experts; ++e)
    if (e != first && l[e] > l[second]) second = e;
  for (int j = 0; j < 2; ++j) {
    const std::int64_t top = j == 0 ? first : second, skip = j == 0 ? -1 : first;
    const float m = l[top];
    float sum = 0.0f;
    for (std::int64_t e = 0; e < experts; ++e)
      if (e != skip && !((m - l[e]) / fmaxf(fabsf(l[e]), m) > 2.0f * jitter_eps)) sum += expf(l[e] - m);
    ids[t * 2 + j] = static_cast<std::int32_t>(top);
    weights[t * 2 + j] = 1.0f / sum;
  }
}

// In place: logits[t][e] += bias[e] in FP32 (the router's logit bias, gpt-oss), for n = T x E logits.
template <class T>
__global__ void add_logit_bias(float* logits, const T* bias, std::int64_t n, std::int64_t experts) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) logits[i] += to_float(bias[i % experts]);
}

// In place: g[t] = sigmoid(g[t]) (the shared-expert gate's logits).
__global__ void sigmoid_inplace(float* g, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) g[i] = 1.0f / (1.0f + expf(-g[i]));
}

// One block: expert e's pairs, in pair order, get rows offsets[e], offsets[e] + 1, ... (a stable grouping).
__global__ void permute_plan(const std::int32_t* ids, std::int64_t pairs, std::int64_t experts,
                             std::int32_t* offsets, std::int32_t* rows, unsigned int* error_word) {
  extern __shared__ std::int32_t counts[];  // [experts + 1]
  for (std::int64_t e = threadIdx.x; e <= experts; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  for (std::int64_t i = threadIdx.x; i < pairs; i += blockDim.x) {
    const std::int32_t e = ids[i];
    if (e < 0 || e >= experts) {
      atomicOr(error_word, kBadExpertId);
      rows[i] = -1;
    } else {
      atomicAdd(&counts[e + 1], 1);
    }
  }
  __syncthreads();
  if (threadIdx.x == 0)
    for (std::int64_t e = 0; e < experts; ++e) counts[e + 1] += counts[e];
  __syncthreads();
  for (std::int64_t e = threadIdx.x; e <= experts; e += blockDim.x) offsets[e] = counts[e];
  for (std::int64_t e = threadIdx.x; e < experts; e += blockDim.x) {
    std::int32_t next = counts[e];
    for (std::int64_t i = 0; i < pairs; ++i)
      if (ids[i] == e) rows[i] = next++;
  }
}

// One block per (token, slot) pair: its row of x_perm is x's token row, copied, or with weights (Llama 4)
// each element times the pair's weight in FP32, rounded once.
template <class T>
__global__ void permute_rows(const T* x, const std::int32_t* rows, const float* weights, T* x_perm,
                             std::int64_t top_k, std::int64_t h) {
  const std::int64_t pair = blockIdx.x;
  const std::int32_t row = rows[pair];
  if (row < 0) return;
  const T* src = x + (pair / top_k) * h;
  T* dst = x_perm + row * h;
  if (weights == nullptr) {
    for (std::int64_t c = threadIdx.x; c < h; c += blockDim.x) dst[c] = src[c];
    return;
  }
  const float w = weights[pair];
  for (std::int64_t c = threadIdx.x; c < h; c += blockDim.x) dst[c] = from_float<T>(to_float(src[c]) * w);
}

template <class T>
__global__ void unpermute_rows(const T* y_perm, const std::int32_t* rows, const float* weights, T* out,
                               std::int64_t top_k, std::int64_t h, std::int64_t perm_rows,
                               unsigned int* error_word) {
  const std::int64_t t = blockIdx.x;
  for (std::int64_t c = threadIdx.x; c < h; c += blockDim.x) {
    float acc = 0.0f;
    for (std::int64_t j = 0; j < top_k; ++j) {
      const std::int32_t row = rows[t * top_k + j];
      if (row < 0 || row >= perm_rows) {
        if (c == threadIdx.x) atomicOr(error_word, kBadPermutedRow);
        continue;
      }
      acc += weights[t * top_k + j] * to_float(y_perm[row * h + c]);
    }
    out[t * h + c] = from_float<T>(acc);
  }
}

__device__ __forceinline__ float activate(Activation act, float x) {
  switch (act) {
    case Activation::kSilu:
      return x / (1.0f + expf(-x));
    case Activation::kGeluTanh:
      return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case Activation::kRelu:
      return x > 0.0f ? x : 0.0f;
    case Activation::kGelu:
      return x * normcdff(x);
    case Activation::kSwigluOai: {  // the gate's part: g sigmoid(alpha g), g = min(x, limit) (NaN stays NaN)
      const float g = x > kSwigluOaiLimit ? kSwigluOaiLimit : x;
      return g / (1.0f + expf(-kSwigluOaiAlpha * g));
    }
  }
  return x;
}

// h = act(gate) * up (gated) or act(gate), rounded to T. kSwigluOai (gated): act(gate) * (u + 1) with
// u = min(max(up, -limit), limit) (NaN stays NaN, as torch.clamp keeps it).
template <class T>
__global__ void activation(const float* gate, const float* up, T* h, std::int64_t n, Activation act) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float a = activate(act, gate[i]);
  if (up == nullptr) {
    h[i] = from_float<T>(a);
    return;
  }
  float u = up[i];
  if (act == Activation::kSwigluOai)
    u = (u > kSwigluOaiLimit ? kSwigluOaiLimit : u < -kSwigluOaiLimit ? -kSwigluOaiLimit : u) + 1.0f;
  h[i] = from_float<T>(a * u);
}

// rows[r][j] += bias[j] for r < rows, j < f (an expert's FP32 gate or up rows and its b_in or b_up row).
template <class T>
__global__ void add_bias_rows(float* gate, const T* bias, std::int64_t rows, std::int64_t f) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rows * f) gate[i] += to_float(bias[i % f]);
}

// y[r][j] = round(acc[r][j] + bias[j]) for r < rows, j < h: an expert's FP32 down-projection rows plus its
// b_down row, rounded to T once.
template <class T>
__global__ void add_bias_round_rows(const float* acc, const T* bias, T* y, std::int64_t rows,
                                    std::int64_t h) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rows * h) y[i] = from_float<T>(acc[i] + to_float(bias[i % h]));
}

constexpr int kMaxGroup = 64;  // experts per batch (their pointers travel as a kernel argument)
constexpr std::size_t kPointerBytes = 3 * 3 * kMaxGroup * sizeof(void*);  // 3 GEMMs x (B, A, C) pointers
// FP32 gate/up (+ the FP32 down output with b_down) + h of one batch of experts: small enough to stay in the
// L2 cache (50 MB on H100/H200) between the GEMMs that write them and the activation / down GEMMs that read
// them.
constexpr std::size_t kScratchBytes = std::size_t{32} << 20;

std::int64_t expert_rows(const ExpertFfnArgs& args, std::int64_t expert) {
  const auto i = static_cast<std::size_t>(expert);
  return args.expert_offsets[i + 1] - args.expert_offsets[i];
}

struct PointerBatch {
  const void* p[3 * kMaxGroup];
};

__global__ void store_pointers(PointerBatch batch, int n, const void** out) {
  const int i = static_cast<int>(threadIdx.x);
  if (i < n) out[i] = batch.p[i];
}

// out[0, count) = the problems' B, out[count, 2 count) = A, out[2 count, 3 count) = C, in stream order (a
// kernel argument, not a host copy: no host synchronisation).
Status upload_pointers(const GemmProblem* problems, int count, const void** out, cudaStream_t stream) {
  PointerBatch batch{};
  for (int j = 0; j < count; ++j) {
    batch.p[j] = problems[j].b;
    batch.p[count + j] = problems[j].a;
    batch.p[2 * count + j] = problems[j].c;
  }
  store_pointers<<<1, 3 * kMaxGroup, 0, stream>>>(batch, 3 * count, out);
  DUPLEX_CUDA_LAUNCHED("store_pointers");
  return {};
}

// The problems of one GEMM of a batch, bucketed by row count (first-appearance order): one batched call per
// distinct count. `region` holds 3 x count device pointers.
Status run_bucketed(Context& ctx, cudaStream_t stream, const GemmProblem* problems, int count,
                    const void** region, DType ab_type, DType c_type) {
  bool taken[kMaxGroup] = {};
  int done = 0;
  for (int i = 0; i < count; ++i) {
    if (taken[i]) continue;
    GemmProblem bucket[kMaxGroup];
    int n = 0;
    for (int j = i; j < count; ++j)
      if (!taken[j] && problems[j].m == problems[i].m) {
        bucket[n++] = problems[j];
        taken[j] = true;
      }
    const void** pointers = region + 3 * done;
    if (Status s = upload_pointers(bucket, n, pointers, stream); !s.ok()) return s;
    if (Status s = gemm_batched_rowmajor_bt(ctx, stream, bucket[0], n, pointers, ab_type, c_type); !s.ok())
      return s;
    done += n;
  }
  return {};
}

}  // namespace

Status router(Context& ctx, const RouterArgs& args, cudaStream_t stream) {
  const std::int64_t t = args.hidden.dim(0), e = args.gate_weight.dim(0);
  if (t == 0) return {};
  Scratch scratch(stream);
  float* logits = args.logits.as<float>();
  if (!args.logits.present()) {
    const Status s = scratch.allocate(static_cast<std::size_t>(t * e) * sizeof(float));
    if (!s.ok()) return s;
    logits = scratch.as<float>();
  }
  const Status s = gemm_rowmajor(ctx, stream, args.hidden.data, args.gate_weight.data, logits, t, e,
                                 args.hidden.dim(1), args.hidden.dtype, DType::kF32, true, false);
  if (!s.ok()) return s;
  if (args.logit_bias.present()) {  // before every router kind reads the logits (and in those written)
    const Status b = with_storage_type(args.logit_bias.dtype, [&](auto tag) -> Status {
      using T = decltype(tag);
      add_logit_bias<T><<<blocks_for(t * e, kThreads), kThreads, 0, stream>>>(
          logits, args.logit_bias.as<const T>(), t * e, e);
      DUPLEX_CUDA_LAUNCHED("add_logit_bias");
      return {};
    });
    if (!b.ok()) return b;
  }
  auto* ids = args.topk_ids.as<std::int32_t>();
  auto* weights = args.topk_weights.as<float>();
  if (args.kind == RouterKind::kSparseMixer) {
    router_sparsemixer<<<blocks_for(t, kThreads), kThreads, 0, stream>>>(logits, t, e, args.jitter_eps, ids,
                                                                         weights);
    DUPLEX_CUDA_LAUNCHED("router_sparsemixer");
  } else if (args.kind == RouterKind::kGroupLimited) {
    router_grouped<float><<<blocks_for(t, kThreads), kThreads, 0, stream>>>(
        logits, nullptr, t, e, args.num_groups, args.topk_groups, args.top_k, args.renormalize,
        args.routed_scaling, ids, weights);
    DUPLEX_CUDA_LAUNCHED("router_grouped");
  } else if (args.kind == RouterKind::kNoAuxTc) {
    const Status b = with_storage_type(args.correction_bias.dtype, [&](auto tag) -> Status {
      using T = decltype(tag);
      router_grouped<T><<<blocks_for(t, kThreads), kThreads, 0, stream>>>(
          logits, args.correction_bias.as<const T>(), t, e, args.num_groups, args.topk_groups, args.top_k,
          args.renormalize, args.routed_scaling, ids, weights);
      DUPLEX_CUDA_LAUNCHED("router_grouped");
      return {};
    });
    if (!b.ok()) return b;
  } else {
    router_topk<<<blocks_for(t, kThreads), kThreads, 0, stream>>>(
        logits, t, e, args.top_k, args.kind == RouterKind::kSigmoidTopK, args.renormalize,
        args.routed_scaling, ids, weights);
    DUPLEX_CUDA_LAUNCHED("router_topk");
  }
  if (args.shared_gate_weight.present()) {
    float* gate = args.shared_gate.as<float>();
    const Status g = gemm_rowmajor(ctx, stream, args.hidden.data, args.shared_gate_weight.data, gate, t, 1,
                                   args.hidden.dim(1), args.hidden.dtype, DType::kF32, true, false);
    if (!g.ok()) return g;
    sigmoid_inplace<<<blocks_for(t, kThreads), kThreads, 0, stream>>>(gate, t);
    DUPLEX_CUDA_LAUNCHED("sigmoid_inplace");
  }
  return {};
}

Status permute(Context& ctx, const PermuteArgs& args, cudaStream_t stream) {
  const std::int64_t t = args.x.dim(0), k = args.topk_ids.dim(1), h = args.x.dim(1), e = args.num_experts;
  const std::size_t shared = static_cast<std::size_t>(e + 1) * sizeof(std::int32_t);
  if (shared > ctx.max_shared_bytes)
    return {StatusCode::kUnsupportedShape, "permute: too many experts for one block"};
  DUPLEX_CUDA_TRY(cudaFuncSetAttribute(permute_plan, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(shared)));
  permute_plan<<<1, 1024, shared, stream>>>(args.topk_ids.as<const std::int32_t>(), t * k, e,
                                            args.expert_offsets.as<std::int32_t>(),
                                            args.permuted_row.as<std::int32_t>(), ctx.error_word);
  DUPLEX_CUDA_LAUNCHED("permute_plan");
  if (t * k == 0) return {};
  return with_storage_type(args.x.dtype, [&](auto tag) -> Status {
    using T = decltype(tag);
    permute_rows<T><<<static_cast<unsigned int>(t * k), 128, 0, stream>>>(
        args.x.as<const T>(), args.permuted_row.as<const std::int32_t>(), args.topk_weights.as<const float>(),
        args.x_perm.as<T>(), k, h);
    DUPLEX_CUDA_LAUNCHED("permute_rows");
    return {};
  });
}

Status unpermute(Context& ctx, const UnpermuteArgs& args, cudaStream_t stream) {
  const std::int64_t t = args.out.dim(0), h = args.out.dim(1), k = args.permuted_row.dim(1);
  if (t == 0) return {};
  return with_storage_type(args.out.dtype, [&](auto tag) -> Status {
    using T = decltype(tag);
    unpermute_rows<T><<<static_cast<unsigned int>(t), 128, 0, stream>>>(
        args.y_perm.as<const T>(), args.permuted_row.as<const std::int32_t>(),
        args.topk_weights.as<const float>(), args.out.as<T>(), k, h, args.y_perm.dim(0), ctx.error_word);
    DUPLEX_CUDA_LAUNCHED("unpermute_rows");
    return {};
  });
}

Status expert_ffn(Context& ctx, const ExpertFfnArgs& args, cudaStream_t stream) {
  const std::int64_t p = args.x.dim(0), h = args.x.dim(1), e = args.w_in.dim(0), f = args.w_in.dim(1);
  const bool gated = args.kind == FfnKind::kGated;
  const bool down_bias = args.b_down.present();
  const DType dtype = args.x.dtype;
  const std::size_t elem = dtype_size(dtype);
  const ActivationQuant &quant_x = args.quant_x, &quant_h = args.quant_h;
  const bool x_call = quant_x.static_scale > 0.0f || quant_x.per_tensor;  // one scale for the call
  const bool h_call = quant_h.static_scale > 0.0f || quant_h.per_tensor;
  // quant_scales: 0 for a spec without a call scale (or disabled); the call scales overwrite theirs.
  float* quant_scales = args.quant_scales.as<float>();
  if (quant_scales != nullptr) DUPLEX_CUDA_TRY(cudaMemsetAsync(quant_scales, 0, 2 * sizeof(float), stream));
  float* h_scale_out = quant_scales != nullptr && quant_h.enabled() && h_call ? quant_scales + 1 : nullptr;
  // LLM.int8()'s outlier-column marks (device): x's [H], then h's [F]; null unless a spec decomposes.
  auto* x_outliers = args.quant_outliers.as<std::int32_t>();
  std::int32_t* h_outliers = x_outliers != nullptr ? x_outliers + h : nullptr;
  // W8A8 x: each row fake-quantized once (a per-tensor scale reaches all P) into a copy the GEMMs read.
  Scratch x_quantized(stream);
  const char* x_base = static_cast<const char*>(args.x.data);
  if (quant_x.enabled()) {
    if (Status s = x_quantized.allocate(static_cast<std::size_t>(p * h) * elem); !s.ok()) return s;
    if (Status s = fake_quantize_rows(ctx, quant_x, dtype, args.x.data, x_quantized.as<void>(), p, h,
                                      x_call && quant_scales != nullptr ? quant_scales : nullptr, stream,
                                      x_outliers);
        !s.ok())
      return s;
    x_base = x_quantized.as<const char>();
  }
  // Scratch per row: gate and up in FP32 [F] each, h in the storage dtype [F]; with b_down, the down
  // projection in FP32 [H] too (the bias is added to it before y is rounded, once).
  const std::size_t row_bytes = static_cast<std::size_t>(f) * (2 * sizeof(float) + elem) +
                                (down_bias ? static_cast<std::size_t>(h) * sizeof(float) : 0);
  std::vector<std::int64_t> active;  // experts with tokens, in expert order
  std::int64_t most_rows = 0, rows_total = 0;
  for (std::int64_t i = 0; i < e; ++i) {
    const std::int64_t rows = expert_rows(args, i);
    if (rows > 0) active.push_back(i);
    most_rows = std::max(most_rows, rows);
    rows_total += rows;
  }
  if (active.empty())  // no h: a call scale from no rows (static, or the per-tensor one of amax 0)
    return h_scale_out != nullptr
               ? fake_quantize_rows(ctx, quant_h, dtype, nullptr, nullptr, 0, f, h_scale_out, stream)
               : Status{};
  // Batches of consecutive active experts whose rows' scratch fits kScratchBytes (one expert at least):
  // experts active[next, end) with `rows` rows, packed in that order in the scratch.
  struct Batch {
    std::size_t next, end;
    std::int64_t rows;
  };
  const std::int64_t batch_rows =
      std::max<std::int64_t>(most_rows, static_cast<std::int64_t>(kScratchBytes / row_bytes));
  std::vector<Batch> batches;
  for (std::size_t next = 0; next < active.size();) {
    std::size_t end = next;
    std::int64_t rows = 0;
    while (end < active.size() && static_cast<int>(end - next) < kMaxGroup &&
           (end == next || rows + expert_rows(args, active[end]) <= batch_rows))
      rows += expert_rows(args, active[end++]);
    batches.push_back({next, end, rows});
    next = end;
  }
  Scratch scratch(stream);
  if (Status s = scratch.allocate(kPointerBytes +
                                  static_cast<std::size_t>(std::min(batch_rows, rows_total)) * row_bytes);
      !s.ok())
    return s;
  // A dynamic per-tensor h scale, or h's outlier columns, needs every batch's h before the first down
  // projection: h is then held for all P rows ([P, F] in the dtype; the active experts' rows are x's rows in
  // order) instead of per batch.
  const bool hold_h =
      quant_h.enabled() && ((quant_h.per_tensor && !(quant_h.static_scale > 0.0f)) || quant_h.decomposes());
  Scratch held(stream);
  if (hold_h)
    if (Status s = held.allocate(static_cast<std::size_t>(rows_total * f) * elem); !s.ok()) return s;

  auto at = [&](const Tensor& t, std::int64_t elements) {
    return static_cast<const char*>(t.data) + static_cast<std::size_t>(elements) * elem;
  };
  auto expert_of = [&](const Batch& b, int j) { return active[b.next + static_cast<std::size_t>(j)]; };
  auto* pointers = scratch.as<const void*>();
  const void** in_ptrs = pointers;
  const void** up_ptrs = pointers + 3 * kMaxGroup;
  const void** down_ptrs = pointers + 6 * kMaxGroup;
  // A batch's scratch: FP32 gate / up rows, with b_down the down GEMMs' FP32 output [rows, H], and h.
  struct Layout {
    float *gate, *up, *down_acc;
    char* hidden;
  };
  auto layout = [&](const Batch& b) {
    Layout l{};
    l.gate = reinterpret_cast<float*>(scratch.as<char>() + kPointerBytes);
    l.up = l.gate + b.rows * f;
    l.down_acc = l.up + b.rows * f;
    l.hidden = reinterpret_cast<char*>(down_bias ? l.down_acc + b.rows * h : l.down_acc);
    if (hold_h) {  // the batch's first row is its first expert's offset
      const std::int64_t first = args.expert_offsets[static_cast<std::size_t>(active[b.next])];
      l.hidden = held.as<char>() + static_cast<std::size_t>(first * f) * elem;
    }
    return l;
  };
  // Per expert of the batch: its bias row added to its packed FP32 rows (`width` wide) at `base`.
  auto add_biases = [&](const Batch& b, const Tensor& bias, float* base, std::int64_t width) -> Status {
    std::int64_t bias_row0 = 0;
    for (int j = 0; j < static_cast<int>(b.end - b.next); ++j) {
      const std::int64_t i = expert_of(b, j), r = expert_rows(args, i);
      if (Status s =
              with_storage_type(dtype,
                                [&](auto tag) -> Status {
                                  using T = decltype(tag);
                                  add_bias_rows<T><<<blocks_for(r * width, kThreads), kThreads, 0, stream>>>(
                                      base + bias_row0 * width, bias.as<const T>() + i * width, r, width);
                                  DUPLEX_CUDA_LAUNCHED("add_bias_rows");
                                  return {};
                                });
          !s.ok())
        return s;
      bias_row0 += r;
    }
    return {};
  };
  // The gate and up GEMMs, their biases and the activation: the batch's h, rounded to the dtype.
  auto project_up = [&](const Batch& b) -> Status {
    const int count = static_cast<int>(b.end - b.next);
    const Layout l = layout(b);
    GemmProblem in[kMaxGroup], up_p[kMaxGroup];
    std::int64_t row0 = 0;
    for (int j = 0; j < count; ++j) {
      const std::int64_t i = expert_of(b, j), r = expert_rows(args, i);
      const std::int64_t first = args.expert_offsets[static_cast<std::size_t>(i)];
      const void* x = x_base + static_cast<std::size_t>(first * h) * elem;
      in[j] = {x, at(args.w_in, i * f * h), l.gate + row0 * f, r, f, h};
      up_p[j] = {x, gated ? at(args.w_up, i * f * h) : nullptr, l.up + row0 * f, r, f, h};
      row0 += r;
    }
    if (Status s = run_bucketed(ctx, stream, in, count, in_ptrs, dtype, DType::kF32); !s.ok()) return s;
    if (gated)
      if (Status s = run_bucketed(ctx, stream, up_p, count, up_ptrs, dtype, DType::kF32); !s.ok()) return s;
    if (args.b_in.present())
      if (Status s = add_biases(b, args.b_in, l.gate, f); !s.ok()) return s;
    if (gated && args.b_up.present())
      if (Status s = add_biases(b, args.b_up, l.up, f); !s.ok()) return s;
    // One activation kernel over the batch's packed scratch rows.
    return with_storage_type(dtype, [&](auto tag) -> Status {
      using T = decltype(tag);
      activation<T><<<blocks_for(b.rows * f, kThreads), kThreads, 0, stream>>>(
          l.gate, gated ? l.up : nullptr, reinterpret_cast<T*>(l.hidden), b.rows * f, args.activation);
      DUPLEX_CUDA_LAUNCHED("activation");
      return {};
    });
  };
  // The down GEMMs of the batch's h, and b_down.
  auto project_down = [&](const Batch& b) -> Status {
    const int count = static_cast<int>(b.end - b.next);
    const Layout l = layout(b);
    GemmProblem down[kMaxGroup];
    std::int64_t row0 = 0;
    for (int j = 0; j < count; ++j) {
      const std::int64_t i = expert_of(b, j), r = expert_rows(args, i);
      const std::int64_t first = args.expert_offsets[static_cast<std::size_t>(i)];
      void* y = down_bias ? static_cast<void*>(l.down_acc + row0 * h)
                          : static_cast<char*>(args.y.data) + static_cast<std::size_t>(first * h) * elem;
      down[j] = {
          l.hidden + static_cast<std::size_t>(row0 * f) * elem, at(args.w_down, i * h * f), y, r, h, f};
      row0 += r;
    }
    if (Status s = run_bucketed(ctx, stream, down, count, down_ptrs, dtype, down_bias ? DType::kF32 : dtype);
        !s.ok())
      return s;
    if (!down_bias) return {};
    // y = round(w_down . h + b_down), per expert (its rows of y start at its expert offset).
    std::int64_t bias_row0 = 0;
    for (int j = 0; j < count; ++j) {
      const std::int64_t i = expert_of(b, j), r = expert_rows(args, i);
      const std::int64_t first = args.expert_offsets[static_cast<std::size_t>(i)];
      if (Status s = with_storage_type(
              dtype,
              [&](auto tag) -> Status {
                using T = decltype(tag);
                add_bias_round_rows<T><<<blocks_for(r * h, kThreads), kThreads, 0, stream>>>(
                    l.down_acc + bias_row0 * h, args.b_down.as<const T>() + i * h, args.y.as<T>() + first * h,
                    r, h);
                DUPLEX_CUDA_LAUNCHED("add_bias_round_rows");
                return {};
              });
          !s.ok())
        return s;
      bias_row0 += r;
    }
    return {};
  };

  // h_out: the batch's rows of h before quant_h (its rows are x's from its first expert's offset on).
  auto copy_h = [&](const Batch& b) -> Status {
    if (!args.h_out.present()) return {};
    const std::int64_t first = args.expert_offsets[static_cast<std::size_t>(active[b.next])];
    char* to = static_cast<char*>(args.h_out.data) + static_cast<std::size_t>(first * f) * elem;
    DUPLEX_CUDA_TRY(cudaMemcpyAsync(to, layout(b).hidden, static_cast<std::size_t>(b.rows * f) * elem,
                                    cudaMemcpyDeviceToDevice, stream));
    return {};
  };
  if (hold_h) {  // every batch's h, the per-tensor quantization of all of them, then the down projections
    for (const Batch& b : batches) {
      if (Status s = project_up(b); !s.ok()) return s;
      if (Status s = copy_h(b); !s.ok()) return s;
    }
    if (Status s = fake_quantize_rows(ctx, quant_h, dtype, held.as<void>(), held.as<void>(), rows_total, f,
                                      h_scale_out, stream, h_outliers);
        !s.ok())
      return s;
    for (const Batch& b : batches)
      if (Status s = project_down(b); !s.ok()) return s;
    return {};
  }
  for (const Batch& b : batches) {
    if (Status s = project_up(b); !s.ok()) return s;
    if (Status s = copy_h(b); !s.ok()) return s;
    if (quant_h.enabled()) {  // per row, per group or static: the batch's rows of h, in place
      void* hidden = layout(b).hidden;
      if (Status s = fake_quantize_rows(ctx, quant_h, dtype, hidden, hidden, b.rows, f, h_scale_out, stream);
          !s.ok())
        return s;
    }
    if (Status s = project_down(b); !s.ok()) return s;
  }
  return {};
}

}  // namespace duplex::kernels::cuda
