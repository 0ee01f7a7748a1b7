#include "duplex/base/device_spec.hpp"

#include <gtest/gtest.h>

#include "duplex/base/config_store.hpp"
#include "duplex/base/error.hpp"

namespace duplex {
namespace {

TEST(DeviceSpec, EveryShippedSystemLoads) {
  for (const auto& name : list_presets("systems")) {
    SCOPED_TRACE(name);
    const SystemSpec s = load_system(name);
    EXPECT_EQ(s.name, name);
    EXPECT_GT(s.devices_for("mixtral-8x7b"), 0);
  }
}

TEST(DeviceSpec, Hbm3StackFiguresFollowFromThePreset) {
  const SystemSpec s = load_system("gpu");
  // 32 pseudo-channels x 32 DQ x 5.2 Gb/s / 8 = 665.6 GB/s per stack (DUPLEX.md s.3).
  EXPECT_NEAR(to_gb_per_s(s.memory.stack_bandwidth()), 665.6, 1e-9);
  EXPECT_NEAR(to_gb_per_s(s.memory_bandwidth()), 3328.0, 1e-9);
  EXPECT_EQ(s.memory.org.stack_capacity().bytes, 16ULL << 30);
  EXPECT_EQ(s.memory_capacity().bytes, 80ULL << 30);
  EXPECT_NEAR(to_ns(s.memory.burst_time()), 8 / 5.2, 1e-9);
  EXPECT_FALSE(s.pim.has_value());
}

TEST(DeviceSpec, LogicPimPeakAndBundleBandwidth) {
  const SystemSpec s = load_system("duplex");
  ASSERT_TRUE(s.pim.has_value());
  // 32 modules x 512 MACs x 2 x 650 MHz = 21.3 TFLOPS per stack (paper).
  EXPECT_NEAR(to_tflops(s.pim->peak_flops_per_stack(s.memory)), 21.2992, 1e-6);
  // The bundle path is 4x the normal path: 2 banks x 4 bank groups per tCCD_L = 4 accesses per tCCD_S.
  const double ratio = s.pim->internal_bandwidth_per_stack(s.memory) / s.memory.stack_bandwidth();
  EXPECT_NEAR(ratio, 4.0, 1e-3);
  // Peak Op/B ~ 8 (paper).
  EXPECT_NEAR(s.pim_peak_flops().si() / s.pim_bandwidth().si(), 8.0, 0.05);
}

TEST(DeviceSpec, SystemsDifferOnlyWhereTheirPresetsSay) {
  EXPECT_EQ(load_system("2xgpu").devices_for("mixtral-8x7b"), 8);
  EXPECT_EQ(load_system("gpu").devices_for("grok-1"), 16);
  EXPECT_TRUE(load_system("duplex-pe").coprocess_experts);
  EXPECT_FALSE(load_system("duplex").coprocess_experts);
  EXPECT_TRUE(load_system("duplex-pe-et").expert_tensor_parallel);
  EXPECT_EQ(load_system("bank-pim").pim->kind, PimKind::kBankPim);
  // A preset that overrides another: the 6.4 Gb/s stack keeps the organisation, changes the timing.
  const HbmSpec fast = read_hbm(ConfigNode::load("devices/hbm3-6.4gbps", "devices"));
  EXPECT_NEAR(to_gb_per_s(fast.stack_bandwidth()), 819.2, 1e-9);
  EXPECT_NEAR(to_ns(fast.timing.tFAW), 15.0, 1e-12);
  EXPECT_EQ(fast.org.rows, 16384);
}

TEST(DeviceSpec, EnergyTablePricesKnownActionsAndRejectsUnknownOnes) {
  const SystemSpec s = load_system("duplex");
  EXPECT_NEAR(to_pj(s.energy.price("dram.logic_pim_read")), 464.0, 1e-9);
  EXPECT_THROW(s.energy.price("dram.teleport"), Error);
  EXPECT_THROW(s.energy.static_of("flux_capacitor"), Error);
}

TEST(DeviceSpec, OverridingAPresetKeyWithAWrongUnitNamesTheUsersFile) {
  try {
    read_system(ConfigNode::parse("preset: systems/duplex\nmemory: {timing: {tRCD: 14MHz}}\n", "mine.yaml"));
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.file(), "mine.yaml");
    EXPECT_EQ(e.key(), "memory.timing.tRCD");
  }
}

TEST(DeviceSpec, UnknownKeyInSystemIsAnError) {
  EXPECT_THROW(read_system(ConfigNode::parse("preset: systems/duplex\nturbo: true\n", "mine.yaml")), ConfigError);
  EXPECT_THROW(read_system(ConfigNode::parse("preset: systems/gpu\ncoprocessing: {experts: true}\n", "m.yaml")),
               ConfigError);  // co-processing without PIM
}

// Every number in a device or energy preset carries its provenance: {value, source} or {value, note}.
void expect_sourced(const YAML::Node& n, const std::string& file, const std::string& path) {
  if (n.IsMap()) {
    if (n["value"]) {
      EXPECT_TRUE(n["source"] || n["note"]) << file << ": " << path << " has neither source: nor note:";
      return;
    }
    for (const auto& kv : n) expect_sourced(kv.second, file, path + "." + kv.first.as<std::string>());
  } else if (n.IsScalar()) {
    const std::string key = path.substr(path.rfind('.') + 1);
    if (key == "kind" || key == "name" || key == "preset" || key == "datapath") return;
    ADD_FAILURE() << file << ": " << path << " = " << n.as<std::string>() << " has no source: or note:";
  }
}

TEST(DeviceSpec, EveryDeviceAndEnergyNumberCarriesASourceOrANote) {
  for (const char* kind : {"devices", "energy"}) {
    for (const auto& name : list_presets(kind)) {
      const auto text = read_store_file(std::string(kind) + "/" + name + ".yaml");
      ASSERT_TRUE(text.has_value());
      expect_sourced(YAML::Load(text->text), text->label, "");
    }
  }
}

}  // namespace
}  // namespace duplex

namespace duplex {
namespace {

TEST(DeviceSpec, BankGroupPimHasLogicPimComputeAndBandwidth) {
  const SystemSpec bg = load_system("bankgroup-pim");
  const SystemSpec pe = load_system("duplex-pe");
  ASSERT_TRUE(bg.pim.has_value());
  EXPECT_EQ(bg.pim->kind, PimKind::kBankGroupPim);
  EXPECT_TRUE(bg.pim->has_logic_pim_units());
  EXPECT_EQ(bg.pim_peak_flops(), pe.pim_peak_flops());
  EXPECT_EQ(bg.pim_bandwidth(), pe.pim_bandwidth());
  EXPECT_TRUE(bg.coprocess_experts && bg.coprocess_attention);
  EXPECT_FALSE(bg.heterogeneous());
}

TEST(DeviceSpec, HeterogeneousSystemHasSeparateLogicPimDevices) {
  const SystemSpec h = load_system("gpu-pim-hetero");
  EXPECT_TRUE(h.heterogeneous());
  EXPECT_EQ(h.pim_devices_per_gpu, 1);
  ASSERT_TRUE(h.pim.has_value());
  EXPECT_EQ(h.pim->kind, PimKind::kLogicPim);
  EXPECT_FALSE(h.coprocess_experts);
  // A PIM device is a Duplex device's stacks without the xPU: the same PIM figures per device.
  EXPECT_EQ(h.pim_peak_flops(), load_system("duplex").pim_peak_flops());
  EXPECT_FALSE(load_system("duplex-pe").heterogeneous());
}

TEST(DeviceSpec, HeterogeneousSystemRejectsWhatItCannotModel) {
  auto read = [](const std::string& text) { return read_system(ConfigNode::parse(text, "mine.yaml")); };
  // No PIM to put on the PIM devices.
  EXPECT_THROW(read("preset: systems/gpu\nheterogeneous: {pim_devices_per_gpu: 1}\n"), ConfigError);
  // Experts cannot be co-processed on the GPU: their weights are not there.
  EXPECT_THROW(read("preset: systems/gpu-pim-hetero\ncoprocessing: {experts: true, attention: true}\n"), ConfigError);
  EXPECT_THROW(read("preset: systems/gpu-pim-hetero\nheterogeneous: {pim_devices_per_gpu: 0}\n"), ConfigError);
  EXPECT_THROW(read("preset: systems/gpu-pim-hetero\nheterogeneous: {pim_devices_per_gpu: 1, turbo: 2}\n"), ConfigError);
  EXPECT_THROW(read("preset: systems/gpu-pim-hetero\npim: {preset: devices/bank-pim}\n"), ConfigError);
  EXPECT_THROW(read("preset: systems/gpu-pim-hetero\nsplit: {prefill_fraction: 0.5}\n"), ConfigError);
  EXPECT_EQ(read("preset: systems/gpu-pim-hetero\nheterogeneous: {pim_devices_per_gpu: 2}\n").pim_devices_per_gpu, 2);
}

}  // namespace
}  // namespace duplex

namespace duplex {
namespace {

TEST(DeviceSpec, LogicPimMemorySpacesFromThePaper) {
  const SystemSpec d = load_system("duplex");
  ASSERT_TRUE(d.pim.has_value());
  EXPECT_EQ(d.pim->memory_spaces, 4);
  EXPECT_EQ(d.pim->kv_spaces, 3);
  EXPECT_TRUE(d.uses_prefill_space());
  EXPECT_TRUE(load_system("duplex-pe").uses_prefill_space());
  // Split, heterogeneous, BankGroup-PIM (keys inherited, unused), Bank-PIM (none), GPU: no prefill space.
  for (const char* name : {"duplex-split", "gpu-pim-hetero", "bankgroup-pim", "bank-pim", "gpu", "2xgpu"})
    EXPECT_FALSE(load_system(name).uses_prefill_space()) << name;
  EXPECT_EQ(load_system("bank-pim").pim->memory_spaces, 0);
}

// The host keys of links: the shipped link preset has PCIe and no host tier; a tier needs the link; a file
// without any host key has neither.
TEST(DeviceSpec, HostLinkAndKvOffloadKeys) {
  const SystemSpec gpu = load_system("gpu");
  EXPECT_EQ(gpu.links.host_kv_offload.bytes, 0u);
  EXPECT_EQ(gpu.links.host_bandwidth, Bandwidth::from_si(64e9));
  auto links = [](const std::string& extra) {
    return read_links(
        ConfigNode::parse("kind: links\nnvlink_bandwidth: 450GB/s\nnvlink_latency: 2us\n"
                          "infiniband_bandwidth: 50GB/s\ninfiniband_latency: 5us\n"
                          "devices_per_node: 8\n" +
                              extra,
                          "links.yaml"));
  };
  EXPECT_EQ(links("").host_kv_offload.bytes, 0u);
  EXPECT_EQ(links("host_kv_offload: 64GiB\nhost_bandwidth: 64GB/s\nhost_latency: 10us\n").host_kv_offload,
            gib(64));
  try {
    links("host_kv_offload: 64GiB\n");
    ADD_FAILURE() << "a host tier without a host link was accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key(), "host_bandwidth");
  }
  EXPECT_THROW(links("host_kv_offload: 1.5B\nhost_bandwidth: 64GB/s\nhost_latency: 10us\n"), ConfigError);
  // How a step loads from the tier: serial by default (the preset's too), or layerwise.
  EXPECT_FALSE(gpu.links.host_kv_layerwise);
  EXPECT_FALSE(links("").host_kv_layerwise);
  EXPECT_TRUE(links("host_kv_load: layerwise\n").host_kv_layerwise);
  try {
    links("host_kv_load: overlapped\n");
    ADD_FAILURE() << "an unknown load mode was accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key(), "host_kv_load");
  }
}

// A split system's prefill devices may be another system's: a whole, unsplit system pricing energy alike.
TEST(DeviceSpec, SplitPrefillSystem) {
  const SystemSpec s = load_system("split-gpu-duplex");
  ASSERT_TRUE(s.split_prefill_system != nullptr);
  EXPECT_EQ(s.prefill_pool_system().name, "gpu");
  EXPECT_FALSE(s.prefill_pool_system().pim.has_value());
  EXPECT_TRUE(s.pim.has_value());
  const SystemSpec plain = load_system("duplex-split");
  EXPECT_EQ(plain.split_prefill_system, nullptr);
  EXPECT_EQ(&plain.prefill_pool_system(), &plain);
  auto key_of_error = [](const std::string& prefill) {
    try {
      read_system(ConfigNode::parse(
          "preset: systems/duplex-split\nsplit: {prefill_fraction: 0.5, prefill_system: " + prefill + "}\n",
          "mine.yaml"));
    } catch (const ConfigError& e) {
      return e.key() + ": " + e.what();
    }
    return std::string("accepted");
  };
  EXPECT_NE(key_of_error("{preset: systems/duplex-split}").find("split.prefill_system: "), std::string::npos);
  EXPECT_NE(key_of_error("{preset: systems/gpu-pim-hetero}").find("itself split or heterogeneous"),
            std::string::npos);
  EXPECT_NE(key_of_error("{preset: systems/gpu, energy: {static: {xpu: 200W}}}").find("prices energy"),
            std::string::npos);
  EXPECT_EQ(key_of_error("{preset: systems/gpu}"), "accepted");
}

TEST(DeviceSpec, MemorySpaceKeysAreCheckedStrictly) {
  auto read = [](const std::string& pim) {
    return read_system(ConfigNode::parse("preset: systems/duplex\npim: {" + pim + "}\n", "mine.yaml"));
  };
  auto error_key = [&](const std::string& pim) -> std::string {
    try {
      read(pim);
    } catch (const ConfigError& e) {
      return e.key();
    }
    return "no error";
  };
  EXPECT_EQ(error_key("memory_spaces: 0"), "pim.memory_spaces");
  EXPECT_EQ(error_key("memory_spaces: 2.5"), "pim.memory_spaces");
  EXPECT_EQ(error_key("kv_spaces: 0"), "pim.kv_spaces");
  EXPECT_EQ(error_key("kv_spaces: 5"), "pim.kv_spaces");  // more than the 4 spaces
  EXPECT_EQ(error_key("memory_spaces: 2"), "pim.kv_spaces");  // the preset's 3 KV spaces of 2
  try {
    read("kv_spaces: 5");
    ADD_FAILURE() << "kv_spaces: 5 was accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.file(), "mine.yaml");
    EXPECT_NE(std::string(e.what()).find("an integer in [1, 4]"), std::string::npos) << e.what();
  }
  const SystemSpec all_kv = read("kv_spaces: 4");
  EXPECT_FALSE(all_kv.uses_prefill_space());  // no prefill space left
  const SystemSpec eight = read("memory_spaces: 8, kv_spaces: 6");
  EXPECT_EQ(eight.pim->memory_spaces, 8);
  EXPECT_TRUE(eight.uses_prefill_space());
  // A Logic-PIM section without the keys is incomplete.
  EXPECT_THROW(read_pim(ConfigNode::parse("kind: logic-pim\nname: x\nclock: 650MHz\ncommand_latency: 2us\n"
                                          "gemm_modules: 32\nmacs_per_module: 512\nmodule_buffer: 8KiB\n"
                                          "input_buffer: 1MiB\ntemp_buffer: 1MiB\nsoftmax_buffer: 128KiB\n"
                                          "bundle: {banks_per_bundle: 8, banks_per_group_read: 2}\n"
                                          "softmax_elements_per_cycle: 64\nactivation_elements_per_cycle: 32\n"
                                          "datapath: golden\n",
                                          "bare.yaml")),
               ConfigError);
}

}  // namespace
}  // namespace duplex
