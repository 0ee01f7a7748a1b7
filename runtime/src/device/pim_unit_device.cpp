#include "duplex/runtime/device/pim_unit_device.hpp"

#include <algorithm>
#include <vector>

#include "duplex/base/error.hpp"
#include "duplex/base/fp16.hpp"

namespace duplex::runtime::device {

using compiler::OpKind;

PimUnitDevice::PimUnitDevice(std::string name, std::shared_ptr<functional::PimUnit> unit)
    : name_(std::move(name)), unit_(std::move(unit)) {
  DUPLEX_ASSERT(unit_ != nullptr, "a PIM device without a PIM unit");
}

bool PimUnitDevice::executes(OpKind kind) const {
  switch (kind) {
    case OpKind::kQkvProj:
    case OpKind::kOProj:
    case OpKind::kExpertFfn:
    case OpKind::kSharedExpertFfn:
    case OpKind::kDenseFfn:
    case OpKind::kAttentionDecode:
      return true;
    default:
      return false;
  }
}

void PimUnitDevice::linear(OpKind kind, const std::uint16_t* w, const std::uint16_t* x, std::uint16_t* y,
                           std::size_t m, std::size_t n, std::size_t k) {
  admit(kind);
  unit_->linear(w, x, y, m, n, k);
}

void PimUnitDevice::ffn(OpKind kind, const functional::FfnWeights& w, const std::uint16_t* x,
                        std::uint16_t* y, std::size_t m) {
  admit(kind);
  unit_->ffn(w, x, y, m);
}

void PimUnitDevice::decode_attention(const DecodeAttentionBatch& b) {
  admit(OpKind::kAttentionDecode);
  const auto d = static_cast<std::size_t>(b.kv.head_dim), hq = static_cast<std::size_t>(b.q_heads);
  const auto hkv = static_cast<std::size_t>(b.kv.kv_heads), bt = static_cast<std::size_t>(b.kv.block_tokens);
  DUPLEX_ASSERT(hkv >= 1 && hq % hkv == 0, "decode attention: query heads not a multiple of KV heads");
  const std::size_t group = hq / hkv, token_values = hkv * d;
  // The PIM's attention scale and logit soft-cap are FP16 (its softmax unit's operands; cap 0 -> +0, none).
  const std::uint16_t scale = float_to_half_bits(b.scale);
  const std::uint16_t softcap = float_to_half_bits(b.softcap);
  std::vector<std::uint16_t> k, v;
  for (std::size_t r = 0; r < static_cast<std::size_t>(b.rows); ++r) {
    const auto context = static_cast<std::size_t>(b.context_lens[r]);
    const auto& table = *b.block_tables[r];
    DUPLEX_ASSERT((context + bt - 1) / bt <= table.size(), "decode attention: context beyond the block table");
    // The rows attended: the last `window` tokens with a sliding window, those of the last token's chunk with
    // chunked attention, else all.
    std::size_t first = b.window > 0 && context > static_cast<std::size_t>(b.window)
                            ? context - static_cast<std::size_t>(b.window)
                            : 0;
    if (b.chunk > 0 && context > 0)
      first = std::max(first, (context - 1) - (context - 1) % static_cast<std::size_t>(b.chunk));
    const std::size_t t = context - first;
    k.resize(t * d);
    v.resize(t * d);
    for (std::size_t g = 0; g < hkv; ++g) {
      for (std::size_t j = 0; j < t; ++j) {
        const std::size_t token = first + j;
        const std::size_t slot =
            (static_cast<std::size_t>(table[token / bt]) * bt + token % bt) * token_values + g * d;
        std::copy_n(b.kv.k_pool + slot, d, k.data() + j * d);
        std::copy_n(b.kv.v_pool + slot, d, v.data() + j * d);
      }
      const std::size_t qo = (r * hq + g * group) * d;
      unit_->attention(b.q + qo, k.data(), v.data(), group, t, d, scale, softcap, b.out + qo,
                       b.sinks != nullptr ? b.sinks + g * group : nullptr);
    }
  }
}

}  // namespace duplex::runtime::device
