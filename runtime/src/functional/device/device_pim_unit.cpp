#include "duplex/runtime/functional/device_pim_unit.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <map>
#include <string_view>
#include <utility>
#include <vector>

#include "device_session.hpp"
#include "duplex/base/error.hpp"

namespace duplex::runtime::functional {
namespace {

constexpr std::uint64_t kFp16Bytes = 2;

std::uint64_t fp16_bytes(std::size_t elements) { return static_cast<std::uint64_t>(elements) * kFp16Bytes; }

class DevicePimUnit final : public PimUnit {
 public:
  // `reference`: what duplex_open loads as `system` (a preset's store path or the system's YAML file).
  DevicePimUnit(const SystemSpec& system, const std::string& reference)
      : system_name_(system.name), input_buffer_bytes_(system.pim->input_buffer.bytes), session_(reference) {}

  std::string describe() const override {
    const duplex_counters c = session_.counters();
    return fmt::format("logic-pim SystemC device via driver ({}: {} commands, {:.3f} us simulated, {:.4g} uJ dynamic)",
                       system_name_, c.commands_completed, static_cast<double>(c.simulated_time_ps) * 1e-6,
                       c.dynamic_energy_j * 1e6);
  }

  void linear(const std::uint16_t* w, const std::uint16_t* x, std::uint16_t* y, std::size_t m, std::size_t n,
              std::size_t k) override {
    const duplex_devptr dw = weight(w, fp16_bytes(n * k));
    const std::size_t chunk = tokens_per_gemv(k);
    for (std::size_t t0 = 0; t0 < m; t0 += chunk) {
      const std::size_t tc = std::min(chunk, m - t0);
      const duplex_devptr dx = x_.reserve(fp16_bytes(tc * k));
      const duplex_devptr dy = y_.reserve(fp16_bytes(tc * n));
      session_.to_device(dx, x + t0 * k, fp16_bytes(tc * k));
      check_driver(duplex_submit_gemv(session_.queue(), dw, dx, dy, tc, n, k), "duplex_submit_gemv");
      session_.synchronize();
      session_.to_host(y + t0 * n, dy, fp16_bytes(tc * n));
    }
  }

  // Gated: gemv gate, gemv up, activation (SiLU gate, up), gemv down; their biases (gpt-oss's experts) ride
  // on the GEMVs (duplex_submit_gemv_bias). Two-matrix: gemv fc1, activation (GELU tanh / ReLU with the bias
  // row, repeated per token, as the addend; zeros without a bias), gemv down.
  void ffn(const FfnWeights& w, const std::uint16_t* x, std::uint16_t* y, std::size_t m) override {
    const std::size_t f = w.f, h = w.h;
    // The driver's duplex_activation codes are the activation unit's modes (the descriptor's a4).
    const auto mode = static_cast<duplex_activation>(activation_mode(w));
    const std::uint16_t* gate_bias = w.gated() ? w.b_in : nullptr;
    auto gemv = [&](duplex_queue q, duplex_devptr dw, duplex_devptr dx, duplex_devptr dy, std::size_t tokens,
                    std::size_t rows, std::size_t cols, const std::uint16_t* bias, const char* what) {
      check_driver(bias == nullptr ? duplex_submit_gemv(q, dw, dx, dy, tokens, rows, cols)
                                   : duplex_submit_gemv_bias(q, dw, dx, dy, tokens, rows, cols,
                                                             weight(bias, fp16_bytes(rows))),
                   what);
    };
    const duplex_devptr dg = weight(w.w_in, fp16_bytes(f * h));
    const duplex_devptr du = w.gated() ? weight(w.w_up, fp16_bytes(f * h)) : 0;
    const duplex_devptr dd = weight(w.w_down, fp16_bytes(h * f));
    const std::size_t chunk = std::min(tokens_per_gemv(h), tokens_per_gemv(f));
    for (std::size_t t0 = 0; t0 < m; t0 += chunk) {
      const std::size_t tc = std::min(chunk, m - t0);
      const duplex_devptr dx = x_.reserve(fp16_bytes(tc * h));
      const duplex_devptr gate = gate_.reserve(fp16_bytes(tc * f));
      const duplex_devptr up = up_.reserve(fp16_bytes(tc * f));
      const duplex_devptr act = act_.reserve(fp16_bytes(tc * f));
      const duplex_devptr dy = y_.reserve(fp16_bytes(tc * h));
      session_.to_device(dx, x + t0 * h, fp16_bytes(tc * h));
      const duplex_queue q = session_.queue();
      gemv(q, dg, dx, gate, tc, f, h, gate_bias, "duplex_submit_gemv (gate)");
      if (w.gated()) {
        gemv(q, du, dx, up, tc, f, h, w.b_up, "duplex_submit_gemv (up)");
      } else {
        std::vector<std::uint16_t> bias(tc * f, 0);
        for (std::size_t t = 0; t < tc && w.b_in != nullptr; ++t) std::copy_n(w.b_in, f, bias.data() + t * f);
        session_.to_device(up, bias.data(), fp16_bytes(tc * f));
      }
      check_driver(duplex_submit_activation_mode(q, mode, gate, up, act, tc * f),
                   "duplex_submit_activation_mode");
      gemv(q, dd, act, dy, tc, h, f, w.b_down, "duplex_submit_gemv (down)");
      session_.synchronize();
      session_.to_host(y + t0 * h, dy, fp16_bytes(tc * h));
    }
  }

  void attention(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v, std::size_t group,
                 std::size_t t, std::size_t d, std::uint16_t scale, std::uint16_t softcap, std::uint16_t* out,
                 const std::uint16_t* sinks) override {
    // With sinks (gpt-oss) q carries them after its rows (duplex_submit_attention_sinks).
    const std::size_t q_elements = group * d + (sinks != nullptr ? group : 0);
    const duplex_devptr dq = x_.reserve(fp16_bytes(q_elements));
    const duplex_devptr dk = k_.reserve(fp16_bytes(t * d));
    const duplex_devptr dv = v_.reserve(fp16_bytes(t * d));
    const duplex_devptr dout = y_.reserve(fp16_bytes(group * d));
    if (sinks == nullptr) {
      session_.to_device(dq, q, fp16_bytes(group * d));
    } else {  // one copy of q and its sinks
      std::vector<std::uint16_t> q_sinks(q, q + group * d);
      q_sinks.insert(q_sinks.end(), sinks, sinks + group);
      session_.to_device(dq, q_sinks.data(), fp16_bytes(q_elements));
    }
    session_.to_device(dk, k, fp16_bytes(t * d));
    session_.to_device(dv, v, fp16_bytes(t * d));
    const auto dim = static_cast<std::uint32_t>(d);
    check_driver(
        sinks != nullptr
            ? duplex_submit_attention_sinks(session_.queue(), dq, dk, dv, dout, group, t, dim, scale, softcap)
            : duplex_submit_attention(session_.queue(), dq, dk, dv, dout, group, t, dim, scale, softcap),
        "duplex_submit_attention");
    session_.synchronize();
    session_.to_host(out, dout, fp16_bytes(group * d));
  }

  // The device counts time, not datapath cycles (see describe()).
  std::optional<std::uint64_t> simulated_cycles() const override { return std::nullopt; }

 private:
  // Tokens of width `cols` that fit the logic-die input buffer at once; at least 1 (a single token that does not
  // fit is rejected by the device with DUPLEX_ERROR_DEVICE_BUFFER_OVERFLOW).
  std::size_t tokens_per_gemv(std::size_t cols) const {
    return std::max<std::size_t>(1, static_cast<std::size_t>(input_buffer_bytes_ / fp16_bytes(cols)));
  }

  // The device copy of a weight matrix, uploaded on first use (weights round-robin over the bank-bundle spaces).
  duplex_devptr weight(const std::uint16_t* host, std::uint64_t bytes) {
    const auto key = std::make_pair(static_cast<const void*>(host), bytes);
    const auto it = weights_.find(key);
    if (it != weights_.end()) return it->second;
    const duplex_devptr p = session_.alloc(bytes, DUPLEX_SPACE_EXPERT);
    session_.to_device(p, host, bytes);
    weights_.emplace(key, p);
    return p;
  }

  std::string system_name_;
  std::uint64_t input_buffer_bytes_;
  DeviceSession session_;  // declared before the buffers: they are freed before the device closes
  std::map<std::pair<const void*, std::uint64_t>, duplex_devptr> weights_;
  ScratchBuffer x_{session_, DUPLEX_SPACE_ANY}, y_{session_, DUPLEX_SPACE_ANY};
  ScratchBuffer gate_{session_, DUPLEX_SPACE_ANY}, up_{session_, DUPLEX_SPACE_ANY}, act_{session_, DUPLEX_SPACE_ANY};
  ScratchBuffer k_{session_, DUPLEX_SPACE_DECODE_KV}, v_{session_, DUPLEX_SPACE_DECODE_KV};
};

// What duplex_open (load_system) resolves back to `system`: its YAML file, or for a preset built into the binary
// ("configs/systems/x.yaml (embedded)", base/src/config_store.cpp) the store-relative path "systems/x.yaml".
std::string loadable_reference(const SystemSpec& system) {
  constexpr std::string_view kStore = "configs/", kEmbedded = " (embedded)";
  std::string_view f = system.file;
  if (f.starts_with(kStore) && f.ends_with(kEmbedded)) {
    f.remove_prefix(kStore.size());
    f.remove_suffix(kEmbedded.size());
  }
  const std::string ref(f);
  std::string resolved;
  try {
    resolved = load_system(ref).resolved_yaml;
  } catch (const Error& e) {
    throw Error(fmt::format("system {}: its file '{}' cannot be reloaded for the device: {}", system.name,
                            system.file, e.what()));
  }
  if (resolved != system.resolved_yaml)
    throw Error(fmt::format("system {}: '{}' no longer resolves to the same configuration; the device would "
                            "simulate another system",
                            system.name, system.file));
  return ref;
}

}  // namespace

std::unique_ptr<PimUnit> make_device_pim_unit(const SystemSpec& system) {
  if (!system.pim || system.pim->kind != PimKind::kLogicPim)
    throw Error(fmt::format("system {} has no Logic-PIM: the device PIM path needs one", system.name));
  if (system.file.empty())
    throw Error(fmt::format("system {} has no YAML file: the driver opens the device from one", system.name));
  return std::make_unique<DevicePimUnit>(system, loadable_reference(system));
}

}  // namespace duplex::runtime::functional
