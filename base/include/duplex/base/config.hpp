#pragma once
// Typed, strict reading of YAML configs.
//
// - Values carry units as text ("1.5ns") and are parsed once into strong types (units.hpp).
// - A value may be written plainly or with its provenance:  tRCD: {value: 14.6ns, source: "JEDEC ..."}.
// - Presets + overrides: a map holding `preset: <kind>/<name>` (or a file path) is the named preset with the
//   map's other keys deep-merged over it. Presets may name presets. The top-level map may do the same.
// - Every getter records the key it read; finish() throws for keys nobody read (unknown keys are errors).
// - Every error is a ConfigError naming the file the key came from (a preset file or the user's file),
//   the full key path and the expected form.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>
#include <yaml-cpp/yaml.h>

#include "duplex/base/units.hpp"

namespace duplex {

// One change to a loaded config, applied after its presets are resolved: `key` is a dotted path into the
// resolved map ("pim.clock", "memory.timing.tRCD"), `value` a YAML scalar ("800MHz", "64") or a
// {value:, source:} / {value:, note:} map; `origin` names where it came from in errors ("--set", a study
// file and its key). The result is read as strictly as the file itself: a key the reader does not know is
// an error naming `origin`.
struct ConfigOverride {
  std::string key, value, origin;
};

// "KEY=VALUE" (from a command line) -> an override; duplex::Error naming `origin` when there is no '='
// or the key is empty.
ConfigOverride parse_override(std::string_view text, const std::string& origin);

class ConfigNode {
 public:
  // Loads a config of `kind` ("systems", "devices", "models", "energy", "workloads") by preset name or
  // path, resolving presets. Throws ConfigError / Error.
  static ConfigNode load(std::string_view name_or_path, std::string_view kind);
  // The same, then the overrides in order (a later one wins). Throws ConfigError naming the override's
  // origin and key for a bad key path or a value that is not YAML.
  static ConfigNode load(std::string_view name_or_path, std::string_view kind,
                         const std::vector<ConfigOverride>& overrides);
  // Parses YAML text; `label` names it in errors. Presets inside are resolved from the config store.
  static ConfigNode parse(const std::string& text, const std::string& label);

  const std::string& file() const;  // the file this map came from (top-level label when merged)
  const std::string& path() const { return path_; }  // key path of this node, "" at the top
  std::string key_path(std::string_view key) const;
  std::string file_of(std::string_view key) const;  // the file that set `key`

  bool has(std::string_view key) const;
  std::vector<std::string> keys() const;  // map keys in file order
  bool is_map() const { return node_.IsMap(); }
  bool is_sequence() const { return node_.IsSequence(); }
  std::size_t size() const { return node_.size(); }

  // Children. at() requires a map; items() requires a sequence of maps or scalars.
  ConfigNode at(std::string_view key) const;
  std::optional<ConfigNode> find(std::string_view key) const;
  std::vector<ConfigNode> items(std::string_view key) const;
  ConfigNode element(std::size_t i) const;  // for sequence nodes

  // Scalars. get<T> requires the key; get_or<T> returns `fallback` when the key is absent (documented
  // defaults only). Quantities and sizes must be >= 0; get_positive also rejects 0.
  template <class T> T get(std::string_view key) const;
  template <class T> T get_or(std::string_view key, T fallback) const {
    return has(key) ? get<T>(key) : fallback;
  }
  template <class T> T get_positive(std::string_view key) const;
  std::int64_t get_int(std::string_view key, std::int64_t min, std::int64_t max) const;
  std::string get_enum(std::string_view key, const std::vector<std::string>& allowed) const;
  std::optional<std::string> source_of(std::string_view key) const;  // the source: note, if any

  // The scalar of this node itself (for sequence elements).
  std::string scalar() const;

  // Throws ConfigError for every key of this map that no getter read.
  void finish() const;
  [[noreturn]] void fail(std::string_view key, const std::string& problem, const std::string& expected = {}) const;

  // Marks a key as read without reading it (e.g. a "description" key).
  void ignore(std::string_view key) const;
  const YAML::Node& yaml() const { return node_; }
  std::string dump() const;  // the resolved YAML, for "resolved config" files

  // Internal: shared between nodes of one loaded document.
  struct Document {
    std::string label;
    std::map<std::string, std::string> origin;  // key path -> file that set it
  };
  ConfigNode(YAML::Node node, std::shared_ptr<const Document> doc, std::string path);

 private:
  YAML::Node value_node(std::string_view key) const;  // unwraps {value:, source:}
  std::string scalar_text(std::string_view key) const;
  void mark(std::string_view key) const { used_->insert(std::string(key)); }

  YAML::Node node_;
  std::shared_ptr<const Document> doc_;
  std::string path_;
  std::shared_ptr<std::set<std::string>> used_ = std::make_shared<std::set<std::string>>();
};

// Explicit specializations, defined in config.cpp.
template <> std::string ConfigNode::get<std::string>(std::string_view) const;
template <> bool ConfigNode::get<bool>(std::string_view) const;
template <> double ConfigNode::get<double>(std::string_view) const;
template <> std::int64_t ConfigNode::get<std::int64_t>(std::string_view) const;
template <> int ConfigNode::get<int>(std::string_view) const;
template <> Time ConfigNode::get<Time>(std::string_view) const;
template <> Frequency ConfigNode::get<Frequency>(std::string_view) const;
template <> Bandwidth ConfigNode::get<Bandwidth>(std::string_view) const;
template <> Energy ConfigNode::get<Energy>(std::string_view) const;
template <> Power ConfigNode::get<Power>(std::string_view) const;
template <> FlopRate ConfigNode::get<FlopRate>(std::string_view) const;
template <> DataRate ConfigNode::get<DataRate>(std::string_view) const;
template <> Area ConfigNode::get<Area>(std::string_view) const;
template <> ByteSize ConfigNode::get<ByteSize>(std::string_view) const;

}  // namespace duplex
