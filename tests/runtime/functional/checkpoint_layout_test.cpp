// Checkpoints holding more than the model runs: multimodal ones (Gemma3ForConditionalGeneration,
// Llama4ForConditionalGeneration), whose language model is read from its text_config and its
// language_model.* tensors (or, as transformers >= 4.52 saves them, model.language_model.* and lm_head), the
// vision tower's and projector's tensors skipped (a shard of them never opened), one file or sharded;
// DeepSeek-V3's with its multi-token-prediction layer; the errors. The multimodal layout is made here from a
// text checkpoint by renaming its tensors and nesting its config.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "checkpoint_files.hpp"
#include "duplex/base/error.hpp"
#include "duplex/runtime/functional/model_weights.hpp"
#include "duplex/runtime/functional/safetensors.hpp"

namespace duplex::runtime::functional {
namespace {

namespace fs = std::filesystem;
using testing::error_of;
using testing::RawFile;
using testing::read_json;

// The name a multimodal checkpoint gives a text checkpoint's tensor: the hub's releases put everything under
// language_model.; transformers >= 4.52 (`newer`) renames model.* to model.language_model.*, the LM head
// staying at the top.
std::string multimodal_name(const std::string& name, bool newer) {
  if (!newer) return "language_model." + name;
  return name.starts_with("model.") ? "model.language_model." + name.substr(6) : name;
}

// Rewrites the text checkpoint in `dir` as its multimodal release would be: config.json's fields nested in
// text_config under `type` (gemma3 / llama4) beside a vision_config, every tensor renamed (multimodal_name),
// and two vision tensors added (sharded: in a shard of their own, written as garbage: it must not be read).
void make_multimodal(const fs::path& dir, const std::string& type, bool newer = false) {
  nlohmann::json text = read_json(dir / "config.json");
  const nlohmann::json config = {
      {"model_type", type},
      {"architectures",
       {type == "gemma3" ? "Gemma3ForConditionalGeneration" : "Llama4ForConditionalGeneration"}},
      {"text_config", text},
      {"vision_config", {{"model_type", type + "_vision_model"}, {"hidden_size", 16}}}};
  std::ofstream(dir / "config.json") << config.dump(2);
  auto renamed = [newer](const RawFile& f) {
    RawFile out = f;
    out.header = nlohmann::json::object();
    for (const auto& [name, e] : f.header.items())
      out.header[name == "__metadata__" ? name : multimodal_name(name, newer)] = e;
    return out;
  };
  const std::string vision = newer ? "model.vision_tower.patch_embedding.linear.weight"
                                   : "vision_model.patch_embedding.linear.weight";
  const std::string projector =
      newer ? "model.multi_modal_projector.linear_1.weight" : "multi_modal_projector.linear_1.weight";
  if (fs::exists(dir / "model.safetensors")) {
    RawFile f = renamed(RawFile(dir / "model.safetensors"));
    f.add_f16(vision, 4, 4);
    f.add_f16(projector, 4, 4);
    f.save(dir / "model.safetensors");
    return;
  }
  nlohmann::json index = read_json(dir / "model.safetensors.index.json");
  nlohmann::json map = nlohmann::json::object();
  std::set<std::string> files;
  for (const auto& [name, file] : index["weight_map"].items()) {
    map[multimodal_name(name, newer)] = file;
    files.insert(file.get<std::string>());
  }
  for (const std::string& file : files) renamed(RawFile(dir / file)).save(dir / file);
  map[vision] = "model-vision.safetensors";
  map[projector] = "model-vision.safetensors";
  std::ofstream(dir / "model-vision.safetensors") << "not a safetensors file";
  index["weight_map"] = map;
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(2);
}

ModelWeights gemma3_weights() {
  const std::string config = std::string(DUPLEX_TEST_DATA_DIR) + "/tiny-gemma3.json";
  ModelWeights w = random_weights(compiler::load_model(config), 7);
  w.numerics = config_numerics(config);
  return w;
}

// Two header entries over one byte range would alias two weights: refused naming the file and both tensors.
TEST(SafetensorsFile, TensorsThatShareBytesAreRefused) {
  const fs::path dir = testing::scratch_dir("aliased");
  write_checkpoint(dir.string(), random_weights(compiler::load_model("tiny-dense"), 2));
  const fs::path file = dir / "model.safetensors";
  testing::RawFile f(file);
  const std::string a = "model.layers.0.self_attn.q_proj.weight",
                    b = "model.layers.0.self_attn.o_proj.weight";
  ASSERT_EQ(f.header[a]["shape"], f.header[b]["shape"]);
  f.header[b]["data_offsets"] = f.header[a]["data_offsets"];
  f.save(file);
  const std::string error = testing::error_of([&] { load_checkpoint(dir.string()); });
  EXPECT_NE(error.find("share bytes (data_offsets overlap)"), std::string::npos) << error;
  EXPECT_NE(error.find(a), std::string::npos) << error;
  EXPECT_NE(error.find(b), std::string::npos) << error;
  fs::remove_all(dir);
}

// Both families, one file and 3 shards, both layouts: the same spec, numerics and tensors as the text
// checkpoint.
TEST(MultimodalCheckpoint, LanguageModelIsReadAndTheVisionTowerSkipped) {
  const std::pair<std::string, ModelWeights> models[] = {
      {"gemma3", gemma3_weights()}, {"llama4", random_weights(compiler::load_model("tiny-llama4"), 7)}};
  for (const auto& [type, w] : models) {
    for (const auto& [shards, newer] : {std::pair{1, false}, {3, false}, {1, true}, {3, true}}) {
      SCOPED_TRACE(fmt::format("{}, {} shard(s){}", type, shards, newer ? ", transformers >= 4.52" : ""));
      const fs::path dir =
          fs::temp_directory_path() / fmt::format("duplex_mm_{}_{}_{}", type, shards, ::getpid());
      fs::remove_all(dir);
      write_checkpoint(dir.string(), w, shards);
      make_multimodal(dir, type, newer);
      const ModelWeights back = load_checkpoint(dir.string());
      EXPECT_EQ(back.spec.params(), w.spec.params());
      EXPECT_EQ(back.spec.attention_chunk, w.spec.attention_chunk);
      EXPECT_EQ(back.spec.full_attention_layers, w.spec.full_attention_layers);
      EXPECT_EQ(back.numerics.rope_theta, w.numerics.rope_theta);
      EXPECT_EQ(back.numerics.local_rope_theta, w.numerics.local_rope_theta);
      EXPECT_EQ(back.numerics.norm_eps, w.numerics.norm_eps);
      EXPECT_EQ(back.numerics.rope_scaling.kind, w.numerics.rope_scaling.kind);
      EXPECT_NE(back.source.find(fmt::format("the language model under {}; 2 other tensors skipped",
                                             newer ? "model.language_model." : "language_model.")),
                std::string::npos)
          << back.source;
      ASSERT_EQ(back.tensors.size(), w.tensors.size());
      for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
      fs::remove_all(dir);
    }
  }
}

// A tensor under language_model. that the model lacks, or one it needs missing, is still an error; so is a
// text_config field that would make the emulation compute another model.
TEST(MultimodalCheckpoint, ErrorsNameTheLanguageModelsTensorsAndFields) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-llama4"), 8);
  const fs::path dir = fs::temp_directory_path() / fmt::format("duplex_mm_bad_{}", ::getpid());
  auto fresh = [&] {
    fs::remove_all(dir);
    write_checkpoint(dir.string(), w);
    make_multimodal(dir, "llama4");
  };
  fresh();
  RawFile f(dir / "model.safetensors");
  f.add_f16("language_model.model.layers.0.self_attn.extra.weight", 2, 2);
  f.save(dir / "model.safetensors");
  EXPECT_NE(error_of([&] {
              load_checkpoint(dir.string());
            }).find("unexpected tensor language_model.model.layers.0.self_attn.extra.weight"),
            std::string::npos);
  fresh();
  RawFile g(dir / "model.safetensors");
  g.header.erase("language_model.model.norm.weight");
  g.save(dir / "model.safetensors");
  EXPECT_NE(error_of([&] {
              load_checkpoint(dir.string());
            }).find("tensor language_model.model.norm.weight is missing"),
            std::string::npos);
  fresh();
  nlohmann::json config = read_json(dir / "config.json");
  config["text_config"]["partial_rotary_factor"] = 0.5;
  std::ofstream(dir / "config.json") << config.dump(2);
  const std::string error = error_of([&] { load_checkpoint(dir.string()); });
  EXPECT_NE(
      error.find(
          "config.json (text_config): partial_rotary_factor: 0.5 is not what functional emulation computes"),
      std::string::npos)
      << error;
  fs::remove_all(dir);
}

// DeepSeek-V3's release holds its multi-token-prediction layer after the model's (model.layers.61.* of 61
// layers), which HF does not load: skipped when config.json states num_nextn_predict_layers, an unexpected
// tensor otherwise; a bad count is an error naming the field.
TEST(DeepSeekCheckpoint, MultiTokenPredictionLayersAreSkippedWhenStated) {
  const ModelWeights w = random_weights(compiler::load_model("tiny-deepseek-v3"), 9);  // 3 layers
  const fs::path dir = fs::temp_directory_path() / fmt::format("duplex_mtp_{}", ::getpid());
  auto with_mtp = [&](const nlohmann::json& count) {
    fs::remove_all(dir);
    write_checkpoint(dir.string(), w);
    RawFile f(dir / "model.safetensors");
    f.add_f16("model.layers.3.eh_proj.weight", 4, 8);
    f.add_f16("model.layers.3.self_attn.q_a_proj.weight", 4, 8);
    f.save(dir / "model.safetensors");
    nlohmann::json config = read_json(dir / "config.json");
    if (!count.is_null()) config["num_nextn_predict_layers"] = count;
    std::ofstream(dir / "config.json", std::ios::trunc) << config.dump(2);
  };
  with_mtp(1);
  const ModelWeights back = load_checkpoint(dir.string());
  EXPECT_NE(back.source.find("(2 other tensors skipped)"), std::string::npos) << back.source;
  for (const auto& [name, t] : w.tensors) EXPECT_EQ(back.get(name).data, t.data) << name;
  with_mtp(nullptr);
  EXPECT_NE(error_of([&] {
              load_checkpoint(dir.string());
            }).find("unexpected tensor model.layers.3.eh_proj.weight"),
            std::string::npos);
  with_mtp("one");
  EXPECT_NE(error_of([&] {
              load_checkpoint(dir.string());
            }).find("config.json: num_nextn_predict_layers: \"one\" is not a non-negative integer"),
            std::string::npos);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace duplex::runtime::functional
