#include "duplex/base/config.hpp"

#include <fstream>
#include <gtest/gtest.h>

#include "duplex/base/device_spec.hpp"
#include "duplex/base/error.hpp"

namespace duplex {
namespace {

// Runs `f` and returns the ConfigError message (fails the test when nothing is thrown).
template <class F>
std::string config_error(F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a ConfigError";
  return {};
}

TEST(Config, ReadsTypedValuesAndSourcedValues) {
  const auto c = ConfigNode::parse(R"(
tccd_s: {value: 1.5ns, source: "paper, section 4"}
freq: 650MHz
count: 32
ratio: 0.85
name: logic-pim
enabled: true
)", "test.yaml");
  EXPECT_DOUBLE_EQ(to_ns(c.get<Time>("tccd_s")), 1.5);
  EXPECT_EQ(c.source_of("tccd_s"), "paper, section 4");
  EXPECT_EQ(c.source_of("freq"), std::nullopt);
  EXPECT_DOUBLE_EQ(c.get<Frequency>("freq").si(), 650e6);
  EXPECT_EQ(c.get_int("count", 1, 64), 32);
  EXPECT_DOUBLE_EQ(c.get<double>("ratio"), 0.85);
  EXPECT_EQ(c.get<std::string>("name"), "logic-pim");
  EXPECT_TRUE(c.get<bool>("enabled"));
  EXPECT_NO_THROW(c.finish());
}

TEST(Config, UnknownKeyNamesFileKeyAndKnownKeys) {
  const auto c = ConfigNode::parse("timing:\n  tRCD: 14ns\n  tRCDD: 15ns\n", "hbm.yaml");
  const auto t = c.at("timing");
  t.get<Time>("tRCD");
  const auto msg = config_error([&] { t.finish(); });
  EXPECT_NE(msg.find("hbm.yaml"), std::string::npos) << msg;
  EXPECT_NE(msg.find("timing.tRCDD"), std::string::npos) << msg;
  EXPECT_NE(msg.find("tRCD"), std::string::npos) << msg;
}

TEST(Config, MissingKeyWrongUnitNegativeAndZeroAreErrors) {
  const auto c = ConfigNode::parse("a: 1.5MHz\nb: -3ns\nc: 0B\nd: many\n", "x.yaml");
  EXPECT_NE(config_error([&] { c.get<Time>("missing"); }).find("x.yaml: missing: missing required key"),
            std::string::npos);
  EXPECT_NE(config_error([&] { c.get<Time>("a"); }).find("x.yaml: a:"), std::string::npos);
  EXPECT_NE(config_error([&] { c.get<Time>("b"); }).find("negative"), std::string::npos);
  EXPECT_NE(config_error([&] { c.get_positive<ByteSize>("c"); }).find("greater than zero"), std::string::npos);
  EXPECT_NE(config_error([&] { c.get<int>("d"); }).find("not an integer"), std::string::npos);
  EXPECT_NE(config_error([&] { c.get_int("b", 0, 5); }).find("x.yaml"), std::string::npos);
}

TEST(Config, SyntaxErrorNamesLine) {
  const auto msg = config_error([] { ConfigNode::parse("a: [1, 2\nb: 3\n", "broken.yaml"); });
  EXPECT_NE(msg.find("broken.yaml"), std::string::npos) << msg;
  EXPECT_NE(msg.find("line"), std::string::npos) << msg;
}

TEST(Config, EnumRejectsOtherValues) {
  const auto c = ConfigNode::parse("policy: fifo\n", "s.yaml");
  const auto msg = config_error([&] { c.get_enum("policy", {"open", "closed"}); });
  EXPECT_NE(msg.find("one of: open, closed"), std::string::npos) << msg;
}

TEST(Config, PresetFromStoreIsMergedWithOverridesAndErrorsNameThePresetFile) {
  // devices/h100.yaml is one of the shipped presets; override one key, keep the rest.
  const auto c = ConfigNode::parse("xpu:\n  preset: devices/h100\n  efficiency: {gemm: 0.5}\n", "sys.yaml");
  const auto x = c.at("xpu");
  EXPECT_EQ(x.file_of("efficiency"), "sys.yaml");
  EXPECT_NE(x.file_of("peak_fp16"), "sys.yaml");  // came from the preset file
  EXPECT_DOUBLE_EQ(x.at("efficiency").get<double>("gemm"), 0.5);
  EXPECT_TRUE(x.at("efficiency").has("memory"));  // deep merge kept the preset's other efficiency
}

TEST(Config, UnknownPresetListsAvailableOnes) {
  const auto msg = config_error([] { ConfigNode::parse("xpu: {preset: devices/h900}\n", "sys.yaml"); });
  EXPECT_NE(msg.find("sys.yaml: xpu.preset: unknown preset"), std::string::npos) << msg;
  EXPECT_NE(msg.find("h100"), std::string::npos) << msg;
}

TEST(Config, PresetCycleIsAnErrorNotAHang) {
  const std::string path = ::testing::TempDir() + "/duplex_cycle.yaml";
  {
    std::ofstream out(path);
    out << "preset: " << path << "\nx: 1\n";
  }
  const auto msg = config_error([&] { ConfigNode::load(path, "systems"); });
  EXPECT_NE(msg.find("nest too deeply"), std::string::npos) << msg;
}

// Overrides apply after presets resolve, deep into sections, a later one winning; a source note may come
// with the value; every mistake names the override's origin and key.
TEST(ConfigOverrides, SetResolvedKeysAndNameTheirOriginInErrors) {
  const std::vector<ConfigOverride> o = {{"pim.clock", "800MHz", "--set"},
                                         {"memory.timing.tRCD", "{value: 12ns, source: \"what-if\"}", "--set"},
                                         {"pim.clock", "900MHz", "--set"}};
  const ConfigNode n = ConfigNode::load("duplex-pe", "systems", o);
  EXPECT_DOUBLE_EQ(n.at("pim").get<Frequency>("clock").si(), 900e6);
  EXPECT_DOUBLE_EQ(n.at("memory").at("timing").get<Time>("tRCD").si(), 12e-9);
  EXPECT_EQ(n.at("memory").at("timing").source_of("tRCD"), "what-if");
  // Untouched keys keep their presets' values and files.
  EXPECT_DOUBLE_EQ(n.at("memory").at("timing").get<Time>("tRP").si(), 14.6e-9);
  EXPECT_NE(n.at("memory").at("timing").file_of("tRP"), "--set");
  EXPECT_EQ(n.at("pim").file_of("clock"), "--set");

  auto error_of = [](const ConfigOverride& bad) {
    return config_error([&] { (void)ConfigNode::load("duplex", "systems", {bad}); });
  };
  EXPECT_NE(error_of({"pim.clock.value", "1", "--set"}).find("--set: pim.clock.value: \"pim.clock\" is a value, not a section"),
            std::string::npos);
  EXPECT_NE(error_of({"pim..clock", "1", "--set"}).find("--set: pim..clock: is not a key path"), std::string::npos);
  EXPECT_NE(error_of({"pim.clock", "[1", "--set"}).find("--set: pim.clock: value \"[1\" is not YAML"), std::string::npos);
  EXPECT_NE(error_of({"pim.clock", "{a: 1}", "--set"}).find("is not a single value"), std::string::npos);
  // A key the readers do not know is caught where the config is read, naming the override.
  const ConfigNode typo = ConfigNode::load("duplex", "systems", {{"pim.clok", "1GHz", "study.yaml: knobs"}});
  const std::string unknown = config_error([&] { (void)read_system(typo); });
  EXPECT_NE(unknown.find("study.yaml: knobs: pim.clok: unknown key"), std::string::npos) << unknown;

  // A key holding dots (a model name) goes in brackets; malformed brackets are not a key path.
  const SystemSpec named = read_system(ConfigNode::load(
      "gpu", "systems",
      {{"devices_per_model[llama-3.2-1b]", "2", "--set"}, {"links[devices_per_node]", "4", "--set"}}));
  EXPECT_EQ(named.devices_per_model.at("llama-3.2-1b"), 2);
  EXPECT_EQ(named.links.devices_per_node, 4);
  EXPECT_EQ(named.devices_per_model.at("default"), 4);  // the preset's others kept
  const std::string zero = config_error([&] {
    (void)read_system(
        ConfigNode::load("gpu", "systems", {{"devices_per_model[llama-3.2-1b]", "0", "--set"}}));
  });
  EXPECT_NE(zero.find("--set: devices_per_model.llama-3.2-1b:"), std::string::npos) << zero;
  for (const char* bad : {"devices_per_model[llama-3.2-1b", "devices_per_model[a]b", "devices_per_model[]",
                          "devices_per_model[a b]", "pim.", "[a.b]."})
    EXPECT_NE(error_of({bad, "1", "--set"}).find("is not a key path"), std::string::npos) << bad;

  const ConfigOverride parsed = parse_override("a.b=c=d", "--set");
  EXPECT_EQ(parsed.key, "a.b");
  EXPECT_EQ(parsed.value, "c=d");
  EXPECT_THROW((void)parse_override("novalue", "--set"), Error);
  EXPECT_THROW((void)parse_override("=1", "--set"), Error);
}

}  // namespace
}  // namespace duplex
