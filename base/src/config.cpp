#include "duplex/base/config.hpp"

#include <fmt/format.h>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <set>

#include "duplex/base/config_store.hpp"
#include "duplex/base/error.hpp"

namespace duplex {
namespace {

constexpr int kMaxPresetDepth = 16;

std::string join_path(const std::string& base, std::string_view key) {
  return base.empty() ? std::string(key) : base + "." + std::string(key);
}

// {value: X, source: "..."} (source / note optional) is one value with its provenance, not a sub-config.
bool is_value_wrapper(const YAML::Node& n) {
  if (!n.IsMap() || !n["value"]) return false;
  for (const auto& kv : n) {
    const auto k = kv.first.as<std::string>();
    if (k != "value" && k != "source" && k != "note") return false;
  }
  return true;
}

// yaml-cpp keeps both entries of a key written twice in one map, and a lookup finds one: refuse it instead.
void reject_duplicate_keys(const YAML::Node& n, const std::string& label, const std::string& path) {
  if (n.IsMap()) {
    std::set<std::string> seen;
    for (const auto& kv : n) {
      const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : kv.first.as<std::string>("?");
      const std::string at = path.empty() ? key : path + "." + key;
      if (!seen.insert(key).second) throw ConfigError(label, at, "appears twice in one map", "each key once");
      reject_duplicate_keys(kv.second, label, at);
    }
  } else if (n.IsSequence()) {
    for (std::size_t i = 0; i < n.size(); ++i)
      reject_duplicate_keys(n[i], label, fmt::format("{}[{}]", path, i));
  }
}

YAML::Node parse_yaml(const std::string& text, const std::string& label) {
  try {
    YAML::Node n = YAML::Load(text);
    if (!n.IsDefined() || n.IsNull()) throw ConfigError(label, "", "the file is empty", "a YAML map");
    if (!n.IsMap()) throw ConfigError(label, "", "the top level is not a map", "a YAML map of keys");
    reject_duplicate_keys(n, label, "");
    return n;
  } catch (const YAML::Exception& e) {
    throw ConfigError(label, "", fmt::format("YAML syntax error at line {}, column {}: {}", e.mark.line + 1,
                                             e.mark.column + 1, e.msg),
                      "valid YAML");
  }
}

ConfigText read_preset(const std::string& name, const std::string& label, const std::string& key) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(name, ec)) return ConfigText{read_text_file(name), name};
  for (const std::string& candidate : {name + ".yaml", name}) {
    if (auto t = read_store_file(candidate)) return *t;
  }
  const auto slash = name.find('/');
  std::string available;
  if (slash != std::string::npos) available = fmt::format(" ({} presets: {})", name.substr(0, slash),
                                                         fmt::join(list_presets(name.substr(0, slash)), ", "));
  throw ConfigError(label, key, fmt::format("unknown preset \"{}\"{}", name, available),
                    "<kind>/<name> such as devices/h100, or a path to a YAML file");
}

void merge_into(YAML::Node dst, const YAML::Node& src) {
  for (const auto& kv : src) {
    const auto k = kv.first.as<std::string>();
    YAML::Node d = dst[k];
    if (d.IsMap() && kv.second.IsMap() && !is_value_wrapper(kv.second) && !is_value_wrapper(d)) {
      merge_into(d, kv.second);
    } else {
      dst[k] = kv.second;
    }
  }
}

class Resolver {
 public:
  explicit Resolver(ConfigNode::Document& doc) : doc_(doc) {}

  YAML::Node resolve(const YAML::Node& node, const std::string& label, const std::string& path, int depth) {
    if (depth > kMaxPresetDepth)
      throw ConfigError(label, path, "presets nest too deeply (a preset names itself?)", "a preset chain");
    doc_.origin[path] = label;
    if (node.IsSequence()) {
      YAML::Node out(YAML::NodeType::Sequence);
      for (std::size_t i = 0; i < node.size(); ++i)
        out.push_back(resolve(node[i], label, fmt::format("{}[{}]", path, i), depth));
      return out;
    }
    if (!node.IsMap() || is_value_wrapper(node)) {
      record_leaves(node, label, path);
      return YAML::Clone(node);
    }
    YAML::Node out(YAML::NodeType::Map);
    if (const YAML::Node p = node["preset"]) {
      const std::string key = join_path(path, "preset");
      if (!p.IsScalar()) throw ConfigError(label, key, "not a name", "a preset name such as devices/h100");
      const ConfigText t = read_preset(p.as<std::string>(), label, key);
      out.reset(resolve(parse_yaml(t.text, t.label), t.label, path, depth + 1));
      doc_.origin[path] = label;
    }
    for (const auto& kv : node) {
      const auto k = kv.first.as<std::string>();
      if (k == "preset") continue;
      const YAML::Node v = resolve(kv.second, label, join_path(path, k), depth);
      YAML::Node existing = out[k];
      if (existing.IsMap() && v.IsMap() && !is_value_wrapper(v) && !is_value_wrapper(existing)) {
        merge_into(existing, v);
      } else {
        out[k] = v;
      }
    }
    return out;
  }

 private:
  void record_leaves(const YAML::Node& node, const std::string& label, const std::string& path) {
    doc_.origin[path] = label;
    if (node.IsMap())
      for (const auto& kv : node) record_leaves(kv.second, label, join_path(path, kv.first.as<std::string>()));
  }
  ConfigNode::Document& doc_;
};

// Sets parts[i..] below `node` to `value`, creating missing sections. Recursion binds a new YAML::Node per
// level (assigning to a YAML::Node would write through it, not rebind it).
void set_key_path(YAML::Node node, const std::vector<std::string>& parts, std::size_t i, const YAML::Node& value,
                  const ConfigOverride& o, ConfigNode::Document& doc) {
  const std::string& key = parts[i];
  if (i + 1 == parts.size()) {
    node[key] = value;
    return;
  }
  std::string section;
  for (std::size_t j = 0; j <= i; ++j) section = join_path(section, parts[j]);
  const YAML::Node child = node[key];
  if (!child.IsDefined() || child.IsNull()) {
    node[key] = YAML::Node(YAML::NodeType::Map);
    doc.origin[section] = o.origin;  // the override made this section: errors about it name the override
  } else if (!child.IsMap() || is_value_wrapper(child)) {
    throw ConfigError(o.origin, o.key, fmt::format("\"{}\" is a value, not a section", section),
                      "a key path whose leading parts are sections of the config");
  }
  set_key_path(node[key], parts, i + 1, value, o, doc);
}

// Sets o.key in `root` (a resolved config) to o.value, creating the maps on the way; records o.origin as the
// file of every key it sets, so that the strict readers name the override in their errors.
// The keys of an override's path: joined by '.', a key in brackets holding dots too (a model name:
// devices_per_model[llama-3.2-1b]); a ConfigError naming o otherwise.
std::vector<std::string> key_path_parts(const ConfigOverride& o) {
  const std::string kChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";
  auto bad = [&] {
    return ConfigError(
        o.origin, o.key, "is not a key path",
        "keys of letters, digits, '_' or '-' joined by '.', e.g. pim.clock, a key holding dots "
        "in brackets: devices_per_model[llama-3.2-1b]");
  };
  std::vector<std::string> parts;
  const std::string& key = o.key;
  for (std::size_t i = 0;;) {
    std::string part;
    if (i < key.size() && key[i] == '[') {
      const std::size_t end = key.find(']', i);
      if (end == std::string::npos) throw bad();
      part = key.substr(i + 1, end - i - 1);
      if (part.find_first_not_of(kChars + ".") != std::string::npos) throw bad();
      i = end + 1;
    } else {
      const std::size_t end = std::min(key.find_first_of(".[", i), key.size());
      part = key.substr(i, end - i);
      if (part.find_first_not_of(kChars) != std::string::npos) throw bad();
      i = end;
    }
    if (part.empty()) throw bad();
    parts.push_back(part);
    if (i == key.size()) return parts;
    if (key[i] == '.') {
      if (++i == key.size()) throw bad();  // a trailing dot
    } else if (key[i] != '[') {
      throw bad();  // "a[b]c"
    }
  }
}

void apply_override(YAML::Node root, const ConfigOverride& o, ConfigNode::Document& doc) {
  const std::vector<std::string> parts = key_path_parts(o);
  YAML::Node value;
  try {
    value = YAML::Load(o.value);
  } catch (const YAML::Exception& e) {
    throw ConfigError(o.origin, o.key, fmt::format("value \"{}\" is not YAML: {}", o.value, e.msg),
                      "a scalar such as 800MHz, or {value: ..., source: ...}");
  }
  if (!value.IsDefined() || value.IsNull() || !(value.IsScalar() || is_value_wrapper(value)))
    throw ConfigError(o.origin, o.key, fmt::format("value \"{}\" is not a single value", o.value),
                      "a scalar such as 800MHz, or {value: ..., source: ...}");
  set_key_path(root, parts, 0, value, o, doc);
  std::string path;  // as the readers name it: the keys joined by '.'
  for (const std::string& part : parts) path = join_path(path, part);
  doc.origin[path] = o.origin;
  if (value.IsMap())
    for (const auto& kv : value) doc.origin[join_path(path, kv.first.as<std::string>())] = o.origin;
}

template <class Q>
Q parse_quantity_or_fail(const ConfigNode& n, std::string_view key, const std::string& text,
                         Q (*parser)(std::string_view)) {
  try {
    const Q q = parser(text);
    if (q.si() < 0) n.fail(key, fmt::format("\"{}\" is negative", text), "a value >= 0");
    return q;
  } catch (const ConfigError&) {
    throw;
  } catch (const Error& e) {
    n.fail(key, e.what());
  }
}

}  // namespace

ConfigNode::ConfigNode(YAML::Node node, std::shared_ptr<const Document> doc, std::string path)
    : node_(std::move(node)), doc_(std::move(doc)), path_(std::move(path)) {}

ConfigNode ConfigNode::parse(const std::string& text, const std::string& label) {
  auto doc = std::make_shared<Document>();
  doc->label = label;
  Resolver r(*doc);
  YAML::Node root = r.resolve(parse_yaml(text, label), label, "", 0);
  return ConfigNode(root, std::move(doc), "");
}

ConfigNode ConfigNode::load(std::string_view name_or_path, std::string_view kind) {
  return load(name_or_path, kind, {});
}

ConfigNode ConfigNode::load(std::string_view name_or_path, std::string_view kind,
                            const std::vector<ConfigOverride>& overrides) {
  const ConfigText t = resolve_config(name_or_path, kind);
  auto doc = std::make_shared<Document>();
  doc->label = t.label;
  Resolver r(*doc);
  YAML::Node root = r.resolve(parse_yaml(t.text, t.label), t.label, "", 0);
  for (const ConfigOverride& o : overrides) apply_override(root, o, *doc);
  return ConfigNode(root, std::move(doc), "");
}

ConfigOverride parse_override(std::string_view text, const std::string& origin) {
  const auto eq = text.find('=');
  if (eq == std::string_view::npos || eq == 0)
    throw Error(fmt::format("{} \"{}\": expected KEY=VALUE, e.g. pim.clock=800MHz", origin, text));
  return {std::string(text.substr(0, eq)), std::string(text.substr(eq + 1)), origin};
}

const std::string& ConfigNode::file() const {
  auto it = doc_->origin.find(path_);
  return it != doc_->origin.end() ? it->second : doc_->label;
}

std::string ConfigNode::key_path(std::string_view key) const { return join_path(path_, key); }

std::string ConfigNode::file_of(std::string_view key) const {
  auto it = doc_->origin.find(key_path(key));
  return it != doc_->origin.end() ? it->second : file();
}

bool ConfigNode::has(std::string_view key) const {
  return node_.IsMap() && static_cast<bool>(node_[std::string(key)]);
}

std::vector<std::string> ConfigNode::keys() const {
  std::vector<std::string> out;
  if (node_.IsMap())
    for (const auto& kv : node_) out.push_back(kv.first.as<std::string>());
  return out;
}

void ConfigNode::fail(std::string_view key, const std::string& problem, const std::string& expected) const {
  throw ConfigError(key.empty() ? file() : file_of(key), key.empty() ? path_ : key_path(key), problem, expected);
}

ConfigNode ConfigNode::at(std::string_view key) const {
  if (!node_.IsMap()) fail("", "is not a map", "a map containing key \"" + std::string(key) + "\"");
  const YAML::Node c = node_[std::string(key)];
  if (!c) fail(key, "missing required key");
  mark(key);
  return ConfigNode(c, doc_, key_path(key));
}

std::optional<ConfigNode> ConfigNode::find(std::string_view key) const {
  if (!has(key)) return std::nullopt;
  return at(key);
}

std::vector<ConfigNode> ConfigNode::items(std::string_view key) const {
  const ConfigNode c = at(key);
  if (!c.node_.IsSequence()) fail(key, "is not a list", "a YAML list [a, b, ...]");
  std::vector<ConfigNode> out;
  for (std::size_t i = 0; i < c.node_.size(); ++i) out.push_back(c.element(i));
  return out;
}

ConfigNode ConfigNode::element(std::size_t i) const {
  return ConfigNode(node_[i], doc_, fmt::format("{}[{}]", path_, i));
}

std::string ConfigNode::scalar() const {
  const YAML::Node v = is_value_wrapper(node_) ? node_["value"] : node_;
  if (!v.IsScalar()) throw ConfigError(file(), path_, "is not a single value", "a scalar");
  return v.as<std::string>();
}

YAML::Node ConfigNode::value_node(std::string_view key) const {
  if (!node_.IsMap()) fail("", "is not a map", "a map containing key \"" + std::string(key) + "\"");
  const YAML::Node c = node_[std::string(key)];
  if (!c) fail(key, "missing required key");
  mark(key);
  if (is_value_wrapper(c)) return c["value"];  // no assignment: yaml-cpp's operator= rewrites the tree
  return c;
}

std::string ConfigNode::scalar_text(std::string_view key) const {
  const YAML::Node v = value_node(key);
  if (!v.IsScalar()) fail(key, "is not a single value", "a scalar such as 42, 1.5ns or a name");
  return v.as<std::string>();
}

std::optional<std::string> ConfigNode::source_of(std::string_view key) const {
  if (!has(key)) return std::nullopt;
  const YAML::Node c = node_[std::string(key)];
  if (is_value_wrapper(c) && c["source"]) return c["source"].as<std::string>();
  return std::nullopt;
}

void ConfigNode::ignore(std::string_view key) const { mark(key); }

void ConfigNode::finish() const {
  if (!node_.IsMap()) return;
  std::vector<std::string> unknown;
  for (const auto& kv : node_) {
    const auto k = kv.first.as<std::string>();
    if (!used_->count(k)) unknown.push_back(k);
  }
  if (unknown.empty()) return;
  std::vector<std::string> known;
  for (const auto& k : *used_) known.push_back(k);
  fail(unknown.front(), unknown.size() == 1 ? "unknown key" : fmt::format("unknown keys: {}", fmt::join(unknown, ", ")),
       known.empty() ? "no other keys here" : fmt::format("one of: {}", fmt::join(known, ", ")));
}

std::string ConfigNode::dump() const {
  YAML::Emitter e;
  e << node_;
  return e.c_str();
}

std::int64_t ConfigNode::get_int(std::string_view key, std::int64_t min, std::int64_t max) const {
  const std::int64_t v = get<std::int64_t>(key);
  if (v < min || v > max) fail(key, fmt::format("{} is out of range", v), fmt::format("an integer in [{}, {}]", min, max));
  return v;
}

std::string ConfigNode::get_enum(std::string_view key, const std::vector<std::string>& allowed) const {
  const std::string v = scalar_text(key);
  for (const auto& a : allowed)
    if (a == v) return v;
  fail(key, fmt::format("\"{}\" is not a valid choice", v), fmt::format("one of: {}", fmt::join(allowed, ", ")));
}

template <>
std::string ConfigNode::get<std::string>(std::string_view key) const {
  return scalar_text(key);
}

template <>
bool ConfigNode::get<bool>(std::string_view key) const {
  const std::string t = scalar_text(key);
  if (t == "true") return true;
  if (t == "false") return false;
  fail(key, fmt::format("\"{}\" is not a boolean", t), "true or false");
}

template <>
double ConfigNode::get<double>(std::string_view key) const {
  const std::string t = scalar_text(key);
  char* end = nullptr;
  const double v = std::strtod(t.c_str(), &end);
  if (t.empty() || *end != '\0' || !std::isfinite(v)) fail(key, fmt::format("\"{}\" is not a number", t), "a number such as 0.85");
  return v;
}

template <>
std::int64_t ConfigNode::get<std::int64_t>(std::string_view key) const {
  const std::string t = scalar_text(key);
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(t.c_str(), &end, 10);
  if (t.empty() || *end != '\0' || errno == ERANGE) fail(key, fmt::format("\"{}\" is not an integer", t), "an integer such as 32");
  return v;
}

template <>
int ConfigNode::get<int>(std::string_view key) const {
  return static_cast<int>(get_int(key, std::numeric_limits<int>::min(), std::numeric_limits<int>::max()));
}

#define DUPLEX_QUANTITY_GETTER(T, parser)                                          \
  template <>                                                                      \
  T ConfigNode::get<T>(std::string_view key) const {                               \
    return parse_quantity_or_fail<T>(*this, key, scalar_text(key), &parser);       \
  }
DUPLEX_QUANTITY_GETTER(Time, parse_time)
DUPLEX_QUANTITY_GETTER(Frequency, parse_frequency)
DUPLEX_QUANTITY_GETTER(Bandwidth, parse_bandwidth)
DUPLEX_QUANTITY_GETTER(Energy, parse_energy)
DUPLEX_QUANTITY_GETTER(Power, parse_power)
DUPLEX_QUANTITY_GETTER(FlopRate, parse_flop_rate)
DUPLEX_QUANTITY_GETTER(DataRate, parse_data_rate)
DUPLEX_QUANTITY_GETTER(Area, parse_area)
#undef DUPLEX_QUANTITY_GETTER

template <>
ByteSize ConfigNode::get<ByteSize>(std::string_view key) const {
  const std::string t = scalar_text(key);
  try {
    return parse_byte_size(t);
  } catch (const Error& e) {
    fail(key, e.what());
  }
}

namespace {
template <class T>
bool is_positive(const T& v) {
  if constexpr (std::is_same_v<T, ByteSize>) return v.bytes > 0;
  else if constexpr (std::is_arithmetic_v<T>) return v > 0;
  else return v.si() > 0;
}
}  // namespace

template <class T>
T ConfigNode::get_positive(std::string_view key) const {
  const T v = get<T>(key);
  if (!is_positive(v)) fail(key, "must be greater than zero", "a positive value");
  return v;
}
template int ConfigNode::get_positive<int>(std::string_view) const;
template std::int64_t ConfigNode::get_positive<std::int64_t>(std::string_view) const;
template double ConfigNode::get_positive<double>(std::string_view) const;
template Time ConfigNode::get_positive<Time>(std::string_view) const;
template Frequency ConfigNode::get_positive<Frequency>(std::string_view) const;
template Bandwidth ConfigNode::get_positive<Bandwidth>(std::string_view) const;
template Energy ConfigNode::get_positive<Energy>(std::string_view) const;
template Power ConfigNode::get_positive<Power>(std::string_view) const;
template FlopRate ConfigNode::get_positive<FlopRate>(std::string_view) const;
template DataRate ConfigNode::get_positive<DataRate>(std::string_view) const;
template Area ConfigNode::get_positive<Area>(std::string_view) const;
template ByteSize ConfigNode::get_positive<ByteSize>(std::string_view) const;

}  // namespace duplex
