// CPU attention: causal prefill over packed sequences, and decode over a paged KV cache (split-KV: each
// (request, kv head, chunk of kDecodeChunk tokens) is a task, merged in chunk order, so results do not depend
// on the thread count). A kv head's keys are converted once and used by its whole query group (GQA).
// Soft-capping (Gemma 2, softcap > 0) rewrites a row's scaled scores in place before the softmax; a sink
// (gpt-oss) joins a row's max and sum (decode: in the merge of the chunks, once). A sliding window and
// chunked attention (Llama 4) only move a query's first attended token (first_attended).
#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "convert.hpp"
#include "cpu_ops.hpp"
#include "vector_math.hpp"

namespace duplex::kernels::cpu {
namespace {

using Range = tbb::blocked_range<std::int64_t>;
constexpr std::int64_t kDecodeChunk = 256;

// Soft-capping (ops.hpp): each scaled score s of s[0, n) becomes softcap * tanh(s / softcap), all in FP32
// (std::tanh's float overload); returns the largest capped score.
float cap_scores(float* s, std::int64_t n, float softcap) {
  float max = -INFINITY;
  for (std::int64_t j = 0; j < n; ++j) {
    s[j] = softcap * std::tanh(s[j] / softcap);
    max = std::max(max, s[j]);
  }
  return max;
}

// The first token a query at position `pos` attends to (ops.hpp): the later of its sliding window's first
// token (window > 0) and its chunk's (chunk > 0: pos - pos % chunk); 0 without either.
std::int64_t first_attended(std::int64_t pos, std::int64_t window, std::int64_t chunk) {
  std::int64_t first = window > 0 ? std::max<std::int64_t>(0, pos - window + 1) : 0;
  if (chunk > 0) first = std::max(first, pos - pos % chunk);
  return first;
}

// Head `head`'s sink logit in FP32 (attention sinks, ops.hpp), or -inf (no share) without sinks.
float sink_logit(const Tensor& sinks, std::int64_t head) {
  if (!sinks.present()) return -INFINITY;
  float s = 0.0f;
  load_floats(sinks.data, sinks.dtype, head, 1, &s);
  return s;
}

}  // namespace

Status prefill_attention(const PrefillAttentionArgs& args) {
  const std::int64_t hq = args.q.dim(1), hkv = args.k.dim(1), d = args.q.dim(2);
  const std::int64_t group = hq / hkv;
  const std::int64_t sequences = static_cast<std::int64_t>(args.seq_starts.size()) - 1;
  tbb::parallel_for(Range(0, sequences * hkv), [&](const Range& tasks) {
    for (std::int64_t task = tasks.begin(); task != tasks.end(); ++task) {
      const std::int64_t s = task / hkv, g = task % hkv;
      const std::int64_t start = args.seq_starts[static_cast<std::size_t>(s)];
      const std::int64_t len = args.seq_starts[static_cast<std::size_t>(s) + 1] - start;
      if (len == 0) continue;
      std::vector<float> k(static_cast<std::size_t>(len * d)), v(static_cast<std::size_t>(len * d));
      for (std::int64_t j = 0; j < len; ++j) {
        load_floats(args.k.data, args.k.dtype, ((start + j) * hkv + g) * d, d, k.data() + j * d);
        load_floats(args.v.data, args.v.dtype, ((start + j) * hkv + g) * d, d, v.data() + j * d);
      }
      tbb::parallel_for(Range(0, len * group, 4), [&](const Range& rows) {
        std::vector<float> q(static_cast<std::size_t>(d)), out(static_cast<std::size_t>(d));
        std::vector<float> p(static_cast<std::size_t>(len));
        for (std::int64_t row = rows.begin(); row != rows.end(); ++row) {
          const std::int64_t i = row / group, head = g * group + row % group;
          const std::int64_t offset = ((start + i) * hq + head) * d;
          load_floats(args.q.data, args.q.dtype, offset, d, q.data());
          const std::int64_t from = first_attended(i, args.window, args.chunk);
          float max = -INFINITY;
          for (std::int64_t j = from; j <= i; ++j) {
            p[static_cast<std::size_t>(j)] = dot(q.data(), k.data() + j * d, d) * args.scale;
            max = std::max(max, p[static_cast<std::size_t>(j)]);
          }
          if (args.softcap > 0.0f) max = cap_scores(p.data() + from, i + 1 - from, args.softcap);
          const float sink = sink_logit(args.sinks, head);
          max = std::max(max, sink);
          float sum = args.sinks.present() ? std::exp(sink - max) : 0.0f;
          std::fill(out.begin(), out.end(), 0.0f);
          for (std::int64_t j = from; j <= i; ++j) {
            const float e = std::exp(p[static_cast<std::size_t>(j)] - max);
            sum += e;
            axpy(e, v.data() + j * d, out.data(), d);
          }
          for (float& o : out) o /= sum;
          store_floats(out.data(), d, args.out.data, args.out.dtype, offset);
        }
      });
    }
  });
  return {};
}

Status decode_attention(const DecodeAttentionArgs& args) {
  const std::int64_t batch = args.q.dim(0), hq = args.q.dim(1), d = args.q.dim(2);
  const std::int64_t num_blocks = args.k_cache.dim(0), block_size = args.k_cache.dim(1),
                     hkv = args.k_cache.dim(2);
  const std::int64_t max_blocks = args.block_table.dim(1), group = hq / hkv;
  const auto& stride = args.k_cache.strides;  // v_cache has the same (validated): any page / slot / head order
  const auto* table = args.block_table.as<const std::int32_t>();
  const auto* lens = args.context_lens.as<const std::int32_t>();
  // The first token a request attends to (its new token is at position context_len - 1).
  auto begin_of = [&](std::int64_t b) {
    return lens[b] > 0 ? first_attended(lens[b] - 1, args.window, args.chunk) : std::int64_t{0};
  };
  for (std::int64_t b = 0; b < batch; ++b) {
    if (lens[b] < 0 || lens[b] > args.max_context_len)
      return {StatusCode::kInvalidArgument,
              fmt::format("decode_attention: context_lens[{}] = {} is outside [0, "
                          "max_context_len = {}]",
                          b, lens[b], args.max_context_len)};
    for (std::int64_t j = begin_of(b) / block_size; j < (lens[b] + block_size - 1) / block_size; ++j) {
      const std::int32_t block = table[b * max_blocks + j];
      if (block < 0 || block >= num_blocks)
        return {StatusCode::kInvalidArgument,
                fmt::format("decode_attention: block_table[{}][{}] = {} is outside "
                            "[0, num_blocks = {})",
                            b, j, block, num_blocks)};
    }
  }
  const std::int64_t chunks = std::max<std::int64_t>(1, (args.max_attended() + kDecodeChunk - 1) / kDecodeChunk);
  // Per task: for each query head of the group, running max, sum of exp, and the unnormalised output [D].
  const std::int64_t partial_stride = group * (d + 2);
  std::vector<float> partials(static_cast<std::size_t>(batch * hkv * chunks * partial_stride));
  tbb::parallel_for(Range(0, batch * hkv * chunks), [&](const Range& tasks) {
    std::vector<float> q(static_cast<std::size_t>(group * d));
    std::vector<float> keys(static_cast<std::size_t>(kDecodeChunk * d)), values(keys.size());
    std::vector<float> scores(static_cast<std::size_t>(group * kDecodeChunk));
    for (std::int64_t task = tasks.begin(); task != tasks.end(); ++task) {
      const std::int64_t b = task / (hkv * chunks), g = (task / chunks) % hkv, chunk = task % chunks;
      float* partial = partials.data() + task * partial_stride;
      const std::int64_t first = begin_of(b) + chunk * kDecodeChunk;
      const std::int64_t last = std::min<std::int64_t>(lens[b], first + kDecodeChunk);
      for (std::int64_t h = 0; h < group; ++h) {
        partial[h * (d + 2)] = -INFINITY;
        partial[h * (d + 2) + 1] = 0.0f;
        std::fill_n(partial + h * (d + 2) + 2, d, 0.0f);
      }
      if (first >= last) continue;
      load_floats(args.q.data, args.q.dtype, (b * hq + g * group) * d, group * d, q.data());
      // This head's keys and values of tokens [first, last), gathered block by block into FP32 rows.
      auto gather = [&](const Tensor& cache, float* dst) {
        for (std::int64_t j = first; j < last;) {
          const std::int64_t block = table[b * max_blocks + j / block_size], slot = j % block_size;
          const std::int64_t rows = std::min(block_size - slot, last - j);
          for (std::int64_t r = 0; r < rows; ++r, ++j)
            load_floats(cache.data, cache.dtype, block * stride[0] + (slot + r) * stride[1] + g * stride[2], d,
                        dst + (j - first) * d);
        }
      };
      gather(args.k_cache, keys.data());
      gather(args.v_cache, values.data());
      const std::int64_t n = last - first;
      for (std::int64_t h = 0; h < group; ++h) {
        float* sc = scores.data() + h * kDecodeChunk;
        float max = -INFINITY;
        for (std::int64_t j = 0; j < n; ++j) {
          sc[j] = dot(q.data() + h * d, keys.data() + j * d, d) * args.scale;
          max = std::max(max, sc[j]);
        }
        if (args.softcap > 0.0f) max = cap_scores(sc, n, args.softcap);
        float sum = 0.0f;
        for (std::int64_t j = 0; j < n; ++j) {
          sc[j] = std::exp(sc[j] - max);
          sum += sc[j];
        }
        partial[h * (d + 2)] = max;
        partial[h * (d + 2) + 1] = sum;
        float* acc = partial + h * (d + 2) + 2;
        for (std::int64_t j = 0; j < n; ++j) axpy(sc[j], values.data() + j * d, acc, d);
      }
    }
  });
  tbb::parallel_for(Range(0, batch * hq), [&](const Range& heads) {
    std::vector<float> out(static_cast<std::size_t>(d));
    for (std::int64_t bh = heads.begin(); bh != heads.end(); ++bh) {
      const std::int64_t b = bh / hq, head = bh % hq, g = head / group, h = head % group;
      float max = -INFINITY;
      for (std::int64_t c = 0; c < chunks; ++c)
        max = std::max(
            max,
            partials[static_cast<std::size_t>(((b * hkv + g) * chunks + c) * partial_stride + h * (d + 2))]);
      std::fill(out.begin(), out.end(), 0.0f);
      float sum = 0.0f;
      if (max != -INFINITY) {
        if (args.sinks.present()) {  // the sink joins the merge as one more partial: max S, sum 1, no output
          const float sink = sink_logit(args.sinks, head);
          max = std::max(max, sink);
          sum = std::exp(sink - max);
        }
        for (std::int64_t c = 0; c < chunks; ++c) {
          const float* partial =
              partials.data() + ((b * hkv + g) * chunks + c) * partial_stride + h * (d + 2);
          if (partial[0] == -INFINITY) continue;
          const float w = std::exp(partial[0] - max);
          sum += w * partial[1];
          for (std::int64_t i = 0; i < d; ++i) out[static_cast<std::size_t>(i)] += w * partial[2 + i];
        }
        for (float& o : out) o /= sum;
      }
      store_floats(out.data(), d, args.out.data, args.out.dtype, bh * d);
    }
  });
  return {};
}

}  // namespace duplex::kernels::cpu
