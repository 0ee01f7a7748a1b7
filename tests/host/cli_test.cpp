// Runs the real `duplex` binary and checks what a user sees.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

struct CliRun {
  int exit_code = -1;
  std::string out;
};

CliRun run(const std::string& args) {
  CliRun r;
  const std::string cmd = std::string(DUPLEX_BINARY) + " " + args + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  std::size_t n = 0;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(CompileCli, JsonHasTheDocumentedFieldsAndPlacesMixtralDecodeAsThePaperDoes) {
  const CliRun r = run("compile --model mixtral-8x7b --system duplex --batch 64 --context 2048 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_NEAR(j["model"]["params"].get<double>() / 1e9, 46.7, 0.47);
  ASSERT_FALSE(j["ops"].empty());
  int pim_attention = 0, pim_experts = 0, xpu_fc = 0;
  for (const auto& op : j["ops"]) {
    for (const char* f : {"name", "kind", "layer", "flops", "bytes", "op_b", "unit"}) ASSERT_TRUE(op.contains(f)) << f;
    const std::string kind = op["kind"], unit = op["unit"];
    pim_attention += kind == "attn_decode" && unit == "pim";
    pim_experts += kind == "expert_ffn" && unit == "pim";
    xpu_fc += (kind == "qkv_proj" || kind == "o_proj") && unit == "xpu";
  }
  EXPECT_EQ(pim_attention, 32);
  EXPECT_EQ(pim_experts, 64);  // 2 local experts x 32 layers
  EXPECT_EQ(xpu_fc, 64);
}

// Mixtral on 4 GPUs, 16 decodes routed {1, 2 | 3, 4 | 10, 6 | 2, 4}: the plan holds device 2's experts 4 and
// 5 (16 rows, the most), or with --expert-group a given device's; an out-of-range group is an error naming
// the flag.
TEST(CompileCli, ExpertGroupShowsAGivenDevicesExperts) {
  auto experts = [](const std::string& extra) {
    const CliRun r =
        run("compile --model mixtral-8x7b --system gpu --devices 4 --batch 16 "
            "--routing counts:1,2,3,4,10,6,2,4 --json" +
            extra);
    EXPECT_EQ(r.exit_code, 0) << r.out;
    std::vector<std::string> names;
    const auto j = nlohmann::json::parse(r.out);
    for (const auto& op : j["ops"])
      if (op["kind"] == "expert_ffn" && op["layer"] == 0) names.push_back(op["name"].get<std::string>());
    return names;
  };
  EXPECT_EQ(experts(""), (std::vector<std::string>{"L0.expert4", "L0.expert5"}));
  EXPECT_EQ(experts(" --expert-group 1"), (std::vector<std::string>{"L0.expert2", "L0.expert3"}));
  const CliRun text = run("compile --model mixtral-8x7b --system gpu --devices 4 --summary");
  EXPECT_NE(text.out.find("each MoE layer's experts its busiest expert-parallel group's"), std::string::npos);
  EXPECT_NE(run("compile --model mixtral-8x7b --system gpu --devices 4 --expert-group 4").exit_code, 0);
}

// The step line says which kernels the all-to-all runs where the layout exchanges tokens (GLaM on two
// nodes): auto's normal kernels with a prefill, its per-row ones without; one node exchanges nothing; and a
// simulation's summary names the system's.
TEST(CompileCli, TheStepNamesTheAllToAllsKernels) {
  const std::string glam = "compile --model glam --system gpu --devices 16 --summary";  // auto, the default
  const CliRun prefill = run(glam + " --prefill-tokens 512");
  ASSERT_EQ(prefill.exit_code, 0) << prefill.out;
  EXPECT_NE(prefill.out.find("the all-to-all by DeepEP's normal kernels (a token once per node and device "
                             "holding its experts), as auto takes for a step with prefill tokens"),
            std::string::npos)
      << prefill.out;
  const CliRun decode = run(glam);
  EXPECT_NE(decode.out.find("the all-to-all per token-expert row (low-latency kernels), as auto takes for a "
                            "decode-only step"),
            std::string::npos)
      << decode.out;
  const CliRun pinned = run(glam + " --prefill-tokens 512 --set expert_all_to_all=low_latency");
  EXPECT_NE(pinned.out.find("the all-to-all per token-expert row (low-latency kernels)\n"), std::string::npos)
      << pinned.out;
  EXPECT_EQ(run("compile --model glam --system gpu --devices 8 --summary").out.find("; the all-to-all"),
            std::string::npos);
  // duplex simulate's summary names them too.
  const CliRun sim =
      run("simulate --model glam --system gpu --devices 16 --requests 4 --set expert_all_to_all=normal");
  ASSERT_EQ(sim.exit_code, 0) << sim.out;
  EXPECT_NE(sim.out.find("all-to-all gpu: normal kernels"), std::string::npos) << sim.out;
}

// Two-batch overlap: compile states the micro-batches and the step against them one after the other and as
// one batch, its JSON gives each op's start (each lane one op at a time, the step the last end); a single
// decoding request is not split, a lone prompt is (in two chunks) but not on DeepEP's low-latency kernels;
// simulate's timeline shows both micro-batches' ops, each lane's serial.
TEST(CompileCli, TwoBatchOverlapInterleavesTheMicroBatches) {
  const std::string step =
      "compile --model mixtral-8x7b --system duplex-pe --batch 64 --context 2048 --routing "
      "counts:10,20,12,18,30,12,10,16 --set two_batch_overlap=true";
  const CliRun text = run(step + " --summary");
  ASSERT_EQ(text.exit_code, 0) << text.out;
  EXPECT_NE(text.out.find("two-batch overlap: micro-batches of 32 and 32 tokens (ops mb0.* and mb1.*) "
                          "interleaved on the lanes, "),
            std::string::npos)
      << text.out;
  const CliRun table = run(step);  // the op table: each op's start on its lane, the last column
  EXPECT_NE(table.out.find("    pim_us   start_us\n"), std::string::npos) << table.out;
  const CliRun json = run(step + " --json");
  ASSERT_EQ(json.exit_code, 0) << json.out;
  const auto j = nlohmann::json::parse(json.out);
  EXPECT_EQ(j["totals"]["micro_batches"], 2);
  std::map<std::string, std::vector<std::pair<double, double>>> lanes;
  double end = 0;
  int second = 0;
  for (const auto& op : j["ops"]) {
    ASSERT_TRUE(op.contains("start_us")) << op["name"];
    const double start = op["start_us"], time = op["time_us"];
    lanes[op["unit"].get<std::string>()].push_back({start, start + time});
    end = std::max(end, start + time);
    second += op["name"].get<std::string>().rfind("mb1.", 0) == 0;
  }
  EXPECT_GT(second, 0);
  EXPECT_NEAR(j["totals"]["step_time_us"].get<double>(), end, 1e-9 * end);
  for (auto& [unit, spans] : lanes) {
    std::sort(spans.begin(), spans.end());
    for (std::size_t i = 1; i < spans.size(); ++i)
      EXPECT_GE(spans[i].first + 1e-9, spans[i - 1].second) << unit;
  }
  const CliRun one = run("compile --model mixtral-8x7b --system duplex-pe --batch 1 --summary --set "
                         "two_batch_overlap=true");
  EXPECT_NE(one.out.find("two-batch overlap: not this step, one batch (a micro-batch would hold no tokens)"),
            std::string::npos)
      << one.out;
  // A single prompt splits into two chunks; on DeepEP's low-latency kernels (GLaM on two nodes) it does not.
  const CliRun prompt = run("compile --model mixtral-8x7b --system duplex-pe --batch 0 --prefill-tokens 513 "
                            "--summary --set two_batch_overlap=true");
  EXPECT_NE(prompt.out.find("two-batch overlap: micro-batches of 256 and 257 tokens"), std::string::npos)
      << prompt.out;
  const CliRun low_latency =
      run("compile --model glam --system gpu --devices 16 --batch 0 --prefill-tokens 512 --summary --set "
          "two_batch_overlap=true --set expert_all_to_all=low_latency");
  EXPECT_NE(low_latency.out.find("two-batch overlap: not this step, one batch (a prompt's token exchange on "
                                 "DeepEP's low-latency kernels)"),
            std::string::npos)
      << low_latency.out;
  const std::string dir = ::testing::TempDir() + "/duplex_two_batch_overlap";
  const CliRun sim = run(
      "simulate --model mixtral-8x7b --system duplex-pe --requests 8 --batch 8 --input-len 64 --output-len 4 "
      "--set two_batch_overlap=true -o " +
      dir);
  ASSERT_EQ(sim.exit_code, 0) << sim.out;
  std::ifstream f(dir + "/duplex-pe/timeline.json");
  ASSERT_TRUE(f) << dir;
  const auto timeline = nlohmann::json::parse(f);
  std::map<int, std::vector<std::pair<double, double>>> tids;
  int mb1 = 0;
  for (const auto& e : timeline["traceEvents"]) {
    if (e["ph"] != "X") continue;
    const double ts = e["ts"], dur = e["dur"];
    tids[e["tid"].get<int>()].push_back({ts, ts + dur});
    mb1 += e["name"].get<std::string>().rfind("mb1.", 0) == 0;
  }
  EXPECT_GT(mb1, 0);
  for (auto& [tid, spans] : tids) {
    std::sort(spans.begin(), spans.end());
    for (std::size_t i = 1; i < spans.size(); ++i)
      EXPECT_GE(spans[i].first + 1e-6, spans[i - 1].second) << tid;
  }
}

TEST(CompileCli, HuggingFaceConfigGivesTheSameModelAsThePreset) {
  const CliRun a = run(std::string("compile --model ") + DUPLEX_TEST_DATA + "/mixtral_config.json --json");
  const CliRun b = run("compile --model mixtral-8x7b --json");
  ASSERT_EQ(a.exit_code, 0);
  ASSERT_EQ(b.exit_code, 0);
  EXPECT_EQ(nlohmann::json::parse(a.out)["model"]["params"], nlohmann::json::parse(b.out)["model"]["params"]);
}

// Mistral-7B-v0.1's config.json (sliding window 4096 on every layer): 7.24B parameters (model card), the
// window in the JSON, and decode attention's bytes capped by it: a step at context 8192 reads what one at
// context 4095 does (4096 tokens per request), while one at 2047 reads half as much.
TEST(CompileCli, SlidingWindowModelCapsDecodeAttentionReads) {
  auto attention_bytes = [](int context, nlohmann::json* model) {
    const CliRun r = run(std::string("compile --model ") + DUPLEX_TEST_DATA + "/mistral_config.json --batch 8 --context " +
                         std::to_string(context) + " --json");
    EXPECT_EQ(r.exit_code, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    if (model != nullptr) *model = j["model"];
    for (const auto& op : j["ops"])
      if (op["kind"] == "attn_decode" && op["layer"] == 0) return op["bytes"].get<double>();
    ADD_FAILURE() << "no decode attention op";
    return 0.0;
  };
  nlohmann::json model;
  const double at_8192 = attention_bytes(8192, &model);
  EXPECT_NEAR(model["params"].get<double>() / 1e9, 7.24, 0.07);
  EXPECT_EQ(model["sliding_window"], 4096);
  EXPECT_TRUE(model["full_attention_layers"].empty());
  EXPECT_EQ(at_8192, attention_bytes(4095, nullptr));
  EXPECT_LT(attention_bytes(2047, nullptr), 0.55 * at_8192);
}

// A Qwen2-MoE config.json: the JSON states what was imported (biases, the gated shared expert, routing not
// renormalised), the rope op holds the q/k/v biases and the router has one more output (the shared gate).
// Phi-3.5-MoE and Gemma: their routing, LM-head bias, FFN, norms and names are stated (lowering_test charges
// the bias and the embedding scale).
TEST(CompileCli, PhimoeAndGemmaFeaturesAreStated) {
  const CliRun phi = run("compile --model phi-3.5-moe --system duplex-pe --batch 8 --context 512 --json");
  ASSERT_EQ(phi.exit_code, 0) << phi.out;
  const auto p = nlohmann::json::parse(phi.out);
  EXPECT_EQ(p["model"]["router"], "sparsemixer");
  EXPECT_TRUE(p["model"]["lm_head_bias"].get<bool>());
  EXPECT_EQ(p["model"]["norm"], "layernorm");
  EXPECT_EQ(p["model"]["activation"], "silu");
  const CliRun gemma = run("compile --model gemma-7b --system duplex-pe --batch 8 --context 512 --json");
  ASSERT_EQ(gemma.exit_code, 0) << gemma.out;
  const auto g = nlohmann::json::parse(gemma.out);
  EXPECT_EQ(g["model"]["activation"], "gelu_tanh");
  EXPECT_EQ(g["model"]["ffn_kind"], "gated");
  EXPECT_EQ(g["model"]["norm_weight_offset"], 1.0);
  EXPECT_TRUE(g["model"]["scale_embedding"].get<bool>());
  EXPECT_EQ(g["model"]["weight_naming"], "mixtral");
}

// gpt-oss: its features in --json, and its MXFP4 experts in the expert ops' weight bytes (4.25 bits per
// weight; whole experts per device under expert parallelism).
TEST(CompileCli, GptOssFeaturesAndMxfp4ExpertsAreStated) {
  const CliRun r = run("compile --model gpt-oss-20b --system duplex-pe --batch 8 --context 512 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["model"]["activation"], "swiglu_oai");
  EXPECT_TRUE(j["model"]["attn_sinks"].get<bool>());
  EXPECT_TRUE(j["model"]["router_bias"].get<bool>());
  EXPECT_TRUE(j["model"]["mlp_bias"].get<bool>());
  EXPECT_EQ(j["model"]["dtype"], "bf16");
  EXPECT_EQ(j["model"]["expert_dtype"], "mxfp4");
  EXPECT_EQ(j["model"]["weight_naming"], "gpt_oss");
  bool expert_seen = false;
  for (const auto& op : j["ops"]) {
    if (op["kind"] == "qkv_proj") {
      EXPECT_EQ(op["dtype"], "bf16");
    }
    if (op["kind"] != "expert_ffn") continue;
    EXPECT_EQ(op["dtype"], "mxfp4");
    expert_seen = true;
    // Three 2880 x 2880 matrices at 4.25 bits, gate / up biases (2 x 2880) and the down bias in BF16.
    EXPECT_DOUBLE_EQ(op["bytes_weights"].get<double>(), 3.0 * 2880 * 2880 * 4.25 / 8 + 3.0 * 2880 * 2);
  }
  EXPECT_TRUE(expert_seen);
}

// An FP8 release's config.json (Qwen3-30B-A3B-FP8's quantization_config): the formats stated, each op's
// weights' format in ops[].dtype (projections and experts FP8, the router BF16), their bytes halved.
TEST(CompileCli, Fp8ReleaseConfigStatesEachOpsFormat) {
  const CliRun r = run(std::string("compile --model ") + DUPLEX_TEST_DATA +
                       "/qwen3_moe_fp8_config.json --system duplex-pe --batch 8 --context 512 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["model"]["dtype"], "bf16");
  EXPECT_EQ(j["model"]["linear_dtype"], "fp8_block128");
  EXPECT_EQ(j["model"]["expert_dtype"], "fp8_block128");
  std::map<std::string, std::string> formats;  // op kind -> dtype
  for (const auto& op : j["ops"]) formats[op["kind"]] = op["dtype"];
  EXPECT_EQ(formats["qkv_proj"], "fp8_block128");
  EXPECT_EQ(formats["o_proj"], "fp8_block128");
  EXPECT_EQ(formats["expert_ffn"], "fp8_block128");
  EXPECT_EQ(formats["router"], "bf16");
  EXPECT_EQ(formats["lm_head"], "bf16");
  EXPECT_EQ(formats["attn_decode"], "bf16");  // the KV cache: torch_dtype
}

// llm-compressor's FP8-dynamic release of Mixtral (compressed-tensors): per-channel FP8 projections and
// experts, the routers (ignored by regex) and the LM head in BF16.
TEST(CompileCli, Fp8DynamicReleaseConfigStatesEachOpsFormat) {
  const CliRun r = run(std::string("compile --model ") + DUPLEX_TEST_DATA +
                       "/mixtral_fp8_dynamic_config.json --system duplex-pe --batch 8 --context 512 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["model"]["linear_dtype"], "fp8_channel");
  EXPECT_EQ(j["model"]["expert_dtype"], "fp8_channel");
  EXPECT_EQ(j["model"]["kv_dtype"], "bf16");   // kv_cache_scheme null: K / V in torch_dtype
  std::map<std::string, std::string> formats;  // op kind -> dtype
  for (const auto& op : j["ops"]) formats[op["kind"]] = op["dtype"];
  EXPECT_EQ(formats["qkv_proj"], "fp8_channel");
  EXPECT_EQ(formats["expert_ffn"], "fp8_channel");
  EXPECT_EQ(formats["router"], "bf16");
  EXPECT_EQ(formats["lm_head"], "bf16");
}

// A quantized release of Llama-3.1-70B (its config.json in tests/host/data): its projections and dense FFNs
// in `dtype`, the LM head in BF16. Returns its tokens per second on the GPU over the BF16 model's at `batch`.
double dense_release_speedup(const std::string& file, const std::string& dtype, int batch) {
  const std::string config = std::string(DUPLEX_TEST_DATA) + "/" + file;
  const CliRun r = run("compile --model " + config + " --system duplex-pe --batch 8 --context 512 --json");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  if (r.exit_code != 0) return 0;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["model"]["linear_dtype"], dtype);
  std::map<std::string, std::string> formats;  // op kind -> dtype
  for (const auto& op : j["ops"]) formats[op["kind"]] = op["dtype"];
  EXPECT_EQ(formats["qkv_proj"], dtype);
  EXPECT_EQ(formats["dense_ffn"], dtype);
  EXPECT_EQ(formats["lm_head"], "bf16");
  const std::string sim = " --system gpu --requests 16 --input-len 128 --output-len 32 --batch " +
                          std::to_string(batch) + " --json";
  const CliRun quantized = run("simulate --model " + config + sim),
               bf16 = run("simulate --model llama3-70b" + sim);
  EXPECT_EQ(quantized.exit_code, 0) << quantized.out;
  EXPECT_EQ(bf16.exit_code, 0) << bf16.out;
  if (quantized.exit_code != 0 || bf16.exit_code != 0) return 0;
  return nlohmann::json::parse(quantized.out)["throughput_tok_s"].get<double>() /
         nlohmann::json::parse(bf16.out)["throughput_tok_s"].get<double>();
}

// llm-compressor's W8A8-INT8 release of Llama-3.1-70B (compressed-tensors int-quantized): INT8 projections
// and FFNs, the LM head (ignored) in BF16; the simulator runs them faster than the BF16 model on the GPU.
TEST(CompileCli, W8a8ReleaseConfigStatesEachOpsFormat) {
  EXPECT_GT(dense_release_speedup("llama31_70b_w8a8_config.json", "int8_channel", 8), 1.3);
}

// llm-compressor's static FP8 scheme on Llama-3.1-70B (neuralmagic/Meta-Llama-3.1-70B-Instruct-FP8 style:
// weights and input activations one scale per tensor, calibrated): fp8_tensor projections and FFNs, the LM
// head (ignored) in BF16, faster than the BF16 model on the GPU.
TEST(CompileCli, StaticFp8ReleaseConfigStatesEachOpsFormat) {
  EXPECT_GT(dense_release_speedup("llama31_70b_fp8_static_config.json", "fp8_tensor", 8), 1.3);
}

// A bitsandbytes 4-bit release of Llama-3.1-70B (unsloth's bnb-4bit config.json: NF4 with double
// quantization): NF4 projections and FFNs, the LM head in BF16. On the GPU one request's decode reads a
// quarter of the bytes (gemv_4bit), so it serves more than 1.5x the BF16 model's tokens per second; a batch
// of 8 dequantizes every matrix to 16 bits before its GEMM (bitsandbytes' matmul_4bit), so it serves fewer.
TEST(CompileCli, BitsandbytesReleaseConfigStatesEachOpsFormat) {
  EXPECT_GT(dense_release_speedup("llama31_70b_bnb_4bit_config.json", "nf4_dq", 1), 1.5);
  EXPECT_LT(dense_release_speedup("llama31_70b_bnb_4bit_config.json", "nf4_dq", 8), 1.0);
}

// A bitsandbytes 8-bit release of Llama-3.1-70B (load_in_8bit: LLM.int8()): INT8 projections and FFNs with an
// absmax per row, the LM head in BF16. Each matrix is a MatMul8bitLt call of three kernels (quantize the
// activations, INT8 GEMM, scale the INT32 sums); with the release's llm_int8_threshold 6 each call also masks
// its input and multiplies its outlier columns in 16 bits, 12 more kernels, which outweigh the halved weight
// bytes of a decode step: it serves fewer tokens per second than the BF16 model. Without a threshold (the
// same config with llm_int8_threshold 0) decode reads half the BF16 bytes in three kernels a matrix: more
// than the BF16 model, fewer than the W8A8-INT8 release's fused GEMMs.
TEST(CompileCli, Int8BitsandbytesReleaseConfigStatesEachOpsFormat) {
  for (const int batch : {1, 8}) {
    EXPECT_LT(dense_release_speedup("llama31_70b_bnb_8bit_config.json", "bnb_int8", batch), 1.0) << batch;
    const double plain =
        dense_release_speedup("llama31_70b_bnb_8bit_no_threshold_config.json", "bnb_int8", batch);
    EXPECT_GT(plain, 1.1) << batch;
    EXPECT_LT(plain, dense_release_speedup("llama31_70b_w8a8_config.json", "int8_channel", batch)) << batch;
  }
}

// Meta's FP8 release of Llama-3.1-405B (its config.json: fbgemm_fp8): FP8 FFNs but in the first and last
// layers, attention and the LM head in BF16, as the preset llama3-405b-fp8 states it op for op; it fits one
// node of 8 GPUs, which the BF16 model does not.
TEST(CompileCli, FbgemmReleaseConfigStatesEachOpsFormat) {
  const std::string config = std::string(DUPLEX_TEST_DATA) + "/llama31_405b_fp8_config.json";
  const std::string step = " --system gpu --devices 8 --batch 8 --context 512 --json";
  const CliRun r = run("compile --model " + config + step),
               preset = run("compile --model llama3-405b-fp8" + step);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  ASSERT_EQ(preset.exit_code, 0) << preset.out;
  const auto j = nlohmann::json::parse(r.out), p = nlohmann::json::parse(preset.out);
  EXPECT_EQ(j["model"]["linear_dtype"], "fp8_channel");
  EXPECT_EQ(j["model"]["unquantized_attention"], true);
  EXPECT_EQ(j["model"]["unquantized_ffn_layers"], nlohmann::json::array({0, 125}));
  EXPECT_EQ(j["model"]["activation_scale_ub"], 1200.0);
  std::map<std::pair<std::string, int>, std::string> formats;  // (op kind, layer) -> dtype
  for (const auto& op : j["ops"]) formats[{op["kind"], op["layer"]}] = op["dtype"];
  auto format_of = [&](const std::string& kind, int layer) { return formats[{kind, layer}]; };
  EXPECT_EQ(format_of("qkv_proj", 1), "bf16");
  EXPECT_EQ(format_of("o_proj", 1), "bf16");
  EXPECT_EQ(format_of("dense_ffn", 0), "bf16");
  EXPECT_EQ(format_of("dense_ffn", 1), "fp8_channel");
  EXPECT_EQ(format_of("dense_ffn", 125), "bf16");
  ASSERT_EQ(j["ops"].size(), p["ops"].size());
  for (std::size_t i = 0; i < j["ops"].size(); ++i) {
    EXPECT_EQ(j["ops"][i]["dtype"], p["ops"][i]["dtype"]) << j["ops"][i]["name"];
    EXPECT_EQ(j["ops"][i]["bytes"], p["ops"][i]["bytes"]) << j["ops"][i]["name"];
  }
  const std::string sim = " --system gpu --devices 8 --requests 16 --input-len 128 --output-len 16 --json";
  const CliRun fp8 = run("simulate --model " + config + sim),
               bf16 = run("simulate --model llama3-405b" + sim);
  EXPECT_EQ(fp8.exit_code, 0) << fp8.out;
  EXPECT_NE(bf16.exit_code, 0);  // its message: cli.bf16_405b_on_one_node
}

// AutoAWQ's release of Mixtral (TheBloke's config.json): 4-bit projections and experts, the routers
// ("gate", not converted) and the LM head in FP16.
TEST(CompileCli, AwqReleaseConfigStatesEachOpsFormat) {
  const CliRun r = run(std::string("compile --model ") + DUPLEX_TEST_DATA +
                       "/mixtral_awq_config.json --system duplex-pe --batch 8 --context 512 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["model"]["linear_dtype"], "int4_awq");
  EXPECT_EQ(j["model"]["expert_dtype"], "int4_awq");
  std::map<std::string, std::string> formats;  // op kind -> dtype
  for (const auto& op : j["ops"]) formats[op["kind"]] = op["dtype"];
  EXPECT_EQ(formats["qkv_proj"], "int4_awq");
  EXPECT_EQ(formats["expert_ffn"], "int4_awq");
  EXPECT_EQ(formats["router"], "fp16");
  EXPECT_EQ(formats["lm_head"], "fp16");
}

// A speculative verification step: the decoding requests' attention stays decode attention (no prefill
// attention appears), each op with 4x the FLOPs for 1 + 3 query rows per request; placement picks its unit.
TEST(CompileCli, DraftsMakeAVerificationStep) {
  const std::string base = "compile --model llama3-70b --system duplex-pe --batch 32 --context 1024 --json";
  const CliRun plain = run(base), verify = run(base + " --drafts 3");
  ASSERT_EQ(plain.exit_code, 0) << plain.out;
  ASSERT_EQ(verify.exit_code, 0) << verify.out;
  auto attention = [](const std::string& out) {
    std::map<std::string, double> flops;  // kind -> FLOPs over every layer
    const nlohmann::json j = nlohmann::json::parse(out);
    for (const auto& op : j["ops"])
      if (op["kind"] == "attn_decode" || op["kind"] == "attn_prefill")
        flops[op["kind"].get<std::string>()] += op["flops"].get<double>();
    return flops;
  };
  const auto a = attention(plain.out), b = attention(verify.out);
  EXPECT_EQ(b.count("attn_prefill"), 0u);
  EXPECT_NEAR(b.at("attn_decode") / a.at("attn_decode"), 4.0, 0.01);
  EXPECT_NE(run("compile --drafts 129").exit_code, 0);
  // A tree's 64 nodes: 65 query rows per request over the 1024 cached keys plus their own 65 x 66 / 2 scores
  // as a causal block (what a masked tree-attention kernel computes), against one row over 1025 keys.
  const CliRun tree = run(base + " --drafts 64");
  ASSERT_EQ(tree.exit_code, 0) << tree.out;
  EXPECT_NEAR(attention(tree.out).at("attn_decode") / a.at("attn_decode"), (65.0 * 1024 + 65 * 33) / 1025,
              0.01);
}

TEST(CompileCli, DeepSeekRoutingMlaAndPartialRopeAreStated) {
  const CliRun r = run("compile --model deepseek-v2 --system duplex-pe --batch 8 --context 512 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["model"]["attention"], "mla");
  EXPECT_EQ(j["model"]["router"], "group_limited_greedy");
  EXPECT_EQ(j["model"]["router_groups"], 8);
  EXPECT_EQ(j["model"]["router_topk_groups"], 3);
  EXPECT_EQ(j["model"]["routed_scaling"], 16.0);
  EXPECT_EQ(j["model"]["weight_naming"], "deepseek");
  EXPECT_EQ(j["model"]["shared_experts"], 2);
  const CliRun phi4 = run("compile --model phi-4-mini --system gpu --batch 8 --context 512 --json");
  ASSERT_EQ(phi4.exit_code, 0) << phi4.out;
  EXPECT_EQ(nlohmann::json::parse(phi4.out)["model"]["rotary_dim"], 96);
}

TEST(CompileCli, QwenMoeFeaturesAreStatedAndLowered) {
  const CliRun r = run("compile --model qwen2-57b-a14b --system duplex-pe --batch 8 --context 512 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["model"]["qkv_bias"].get<bool>());
  EXPECT_FALSE(j["model"]["o_bias"].get<bool>());
  EXPECT_EQ(j["model"]["qk_norm"], "none");
  EXPECT_EQ(j["model"]["shared_experts"], 1);
  EXPECT_TRUE(j["model"]["shared_expert_gate"].get<bool>());
  EXPECT_FALSE(j["model"]["router_renormalize"].get<bool>());
  bool rope = false, router = false;
  for (const auto& op : j["ops"]) {
    if (op["name"] == "L0.rope") rope = op["bytes_weights"].get<double>() > 0;
    if (op["name"] == "L0.router") router = op["shape"] == "8x65x3584";
  }
  EXPECT_TRUE(rope);
  EXPECT_TRUE(router);
}

// --save-weights writes a checkpoint that --weights runs to the same tokens; --logits adds the logits.
TEST(RunCli, SavedWeightsRunToTheSameTokensAndLogitsAreReported) {
  const std::string dir = ::testing::TempDir() + "duplex_cli_saved_qwen";
  const CliRun saved =
      run("run --model tiny-qwen-moe --system gpu --prompt 3,1,4 --max-new-tokens 3 --json --logits "
          "--save-weights " +
          dir + " --save-shards 2");
  ASSERT_EQ(saved.exit_code, 0) << saved.out;
  const CliRun loaded =
      run("run --weights " + dir + " --system duplex-pe --prompt 3,1,4 --max-new-tokens 3 --json");
  ASSERT_EQ(loaded.exit_code, 0) << loaded.out;
  const auto a = nlohmann::json::parse(saved.out), b = nlohmann::json::parse(loaded.out);
  EXPECT_EQ(a["tokens"], b["tokens"]);
  ASSERT_EQ(a["logits"].size(), 1u);
  ASSERT_EQ(a["logits"][0].size(), 3u);
  EXPECT_EQ(a["logits"][0][0].size(), 1024u);
  EXPECT_FALSE(b.contains("logits"));
}

TEST(CompileCli, SameInputsGiveIdenticalOutput) {
  const CliRun a = run("compile --model grok-1 --system duplex-pe --batch 32 --prefill-tokens 512 --routing zipf:1.1 --json");
  const CliRun b = run("compile --model grok-1 --system duplex-pe --batch 32 --prefill-tokens 512 --routing zipf:1.1 --json");
  ASSERT_EQ(a.exit_code, 0);
  EXPECT_EQ(a.out, b.out);
}

TEST(ConfigCli, ListsAndChecksEveryShippedSystem) {
  const CliRun l = run("config list systems");
  ASSERT_EQ(l.exit_code, 0);
  for (const char* s : {"gpu", "2xgpu", "duplex", "duplex-pe", "duplex-pe-et", "bank-pim"}) {
    EXPECT_NE(l.out.find(s), std::string::npos) << s;
    EXPECT_EQ(run(std::string("config check systems ") + s).exit_code, 0) << s;
  }
  // Every shipped workload preset checks too.
  const CliRun w = run("config list workloads");
  ASSERT_EQ(w.exit_code, 0);
  const CliRun checked = run("config check workloads closed-1024");
  EXPECT_EQ(checked.exit_code, 0) << checked.out;
  EXPECT_NE(checked.out.find(": ok ("), std::string::npos) << checked.out;
}

// The routing duplex run chose, replayed by duplex simulate and duplex compile: --routing-trace writes it,
// --routing trace:FILE reads it. A hand-made trace sending every token to experts 0 and 1 is slower than
// uniform routing (their expert parallel devices do all the work), so the simulator follows the trace; one of
// another model's shape is an error naming the file.
TEST(SimulateCli, RoutingTraceFromDuplexRunIsReplayed) {
  const std::string dir = ::testing::TempDir();
  const std::string trace = dir + "/duplex_cli_routing.csv", hot = dir + "/duplex_cli_hot_routing.csv";
  const CliRun ran =
      run("run --model tiny-moe --system duplex-pe --prompt 1,5,9,42 --prompt 7 --max-new-tokens 4 "
          "--routing-trace " +
          trace);
  ASSERT_EQ(ran.exit_code, 0) << ran.out;
  const std::string base =
      "simulate --model tiny-moe --system duplex-pe --requests 64 --input-len 64 --output-len 32 --batch 32 "
      "--json";
  const CliRun replayed = run(base + " --routing trace:" + trace);
  ASSERT_EQ(replayed.exit_code, 0) << replayed.out;
  EXPECT_GT(nlohmann::json::parse(replayed.out)["throughput_tok_s"].get<double>(), 0.0);
  {
    FILE* f = std::fopen(hot.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("step,layer,expert,count\n0,0,0,10\n0,0,1,10\n0,1,0,10\n0,1,1,10\n", f);
    std::fclose(f);
  }
  const CliRun uniform = run(base), skewed = run(base + " --routing trace:" + hot);
  ASSERT_EQ(uniform.exit_code, 0) << uniform.out;
  ASSERT_EQ(skewed.exit_code, 0) << skewed.out;
  EXPECT_LT(nlohmann::json::parse(skewed.out)["throughput_tok_s"].get<double>(),
            nlohmann::json::parse(uniform.out)["throughput_tok_s"].get<double>());
  EXPECT_NE(
      run("simulate --model tiny-gpt-oss --system duplex-pe --requests 4 --routing trace:" + hot).exit_code,
      0);
  // duplex compile takes the trace's first step, scaled to its batch: 16 tokens, each to experts 0 and 1.
  const CliRun compiled = run(
      "compile --model tiny-moe --system duplex-pe --batch 16 --context 64 --json --routing trace:" + hot);
  ASSERT_EQ(compiled.exit_code, 0) << compiled.out;
  int experts = 0;
  const auto plan = nlohmann::json::parse(compiled.out);
  for (const auto& op : plan["ops"])
    if (op["kind"] == "expert_ffn") {
      ++experts;
      EXPECT_LT(op["expert"].get<int>(), 2) << op["name"];
      EXPECT_EQ(op["shape"].get<std::string>().rfind("16x", 0), 0u) << op["shape"];
    }
  EXPECT_EQ(experts, 4);  // experts 0 and 1 of each of the 2 MoE layers
  std::remove(trace.c_str());
  std::remove(hot.c_str());
}

// --set changes the design a command sees: a faster Logic-PIM clock raises duplex-pe's PIM peak and its
// throughput, more GEMM modules its area; `config show` prints the resolved config with the override.
// Speculative decoding from the command line: the JSON states the drafts verified and accepted, the same on
// both systems (the draws follow the seed, request and tokens so far), and the draft model's weights.
TEST(SimulateCli, SpeculativeDecodingWithADraftModel) {
  const CliRun r =
      run("simulate --model llama3-70b --system gpu --system duplex-pe --requests 16 --input-len 128 "
          "--output-len 32 "
          "--length-spread 0 --batch 8 --speculative 2 --acceptance 0.75 --draft llama-3.2-1b --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["systems"].size(), 2u);
  for (const auto& s : j["systems"]) {
    EXPECT_GT(s["speculative"]["draft_tokens"].get<double>(), 0);
    EXPECT_EQ(s["speculative"]["accepted_tokens"], j["systems"][0]["speculative"]["accepted_tokens"]);
    EXPECT_GT(s["memory"]["draft_weights_gib_per_device"].get<double>(), 0.5);
    EXPECT_EQ(s["generated_tokens"], 16 * 32);
  }
}

// An EAGLE-3 head from its config.json drafts for Llama-3-70B: its weights (one layer, its fc over three
// states, its own 32000-token LM head) sit beside the target's.
TEST(SimulateCli, Eagle3HeadFromItsConfigJson) {
  const CliRun r =
      run(std::string("simulate --model llama3-70b --system gpu --requests 8 --input-len 64 "
                      "--output-len 16 --length-spread 0 --batch 4 --speculative 2 --acceptance 0.8 "
                      "--json --draft ") +
          DUPLEX_TEST_DATA + "/eagle3_head_config.json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["speculative"]["draft_tokens"].get<double>(), 0);
  // Its layer (8192 x (3 x 28672 + 2 x 8192 + 2 x 1024) + 2 norms), fc 3 x 8192^2, the q / k / v columns'
  // second half 8192 x (8192 + 2 x 1024), its 32000-row LM head and 2 fusion norms, 8192 each, and its final
  // norm: 1.403G parameters in BF16 over TP4, 0.6533 GiB per device.
  EXPECT_NEAR(j["memory"]["draft_weights_gib_per_device"].get<double>(), 0.6533, 0.0005);
}

// --acceptance by draft position: host drafts accepted with 0.95 at the first position and 0.3 after it
// accept far fewer than with 0.95 at every position, on the same draws.
TEST(SimulateCli, AcceptanceByDraftPosition) {
  auto accepted = [](const std::string& acceptance) {
    const CliRun r =
        run("simulate --model tiny-dense --system gpu --requests 16 --input-len 64 --output-len 64 "
            "--length-spread 0 --batch 8 --speculative 3 --draft ngram --json --acceptance " +
            acceptance);
    EXPECT_EQ(r.exit_code, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    return j["speculative"]["accepted_fraction"].get<double>();  // one system: its own object
  };
  const double flat = accepted("0.95"), falling = accepted("0.95,0.3");
  EXPECT_GT(flat, 0.8);
  EXPECT_LT(falling, 0.6);
  EXPECT_EQ(accepted("0.95,0.3,0.3"), falling);  // the last rate repeats
}

// Tree verification from the command line: the same accepted paths and tokens per verification as a chain of
// the same depth (the rates are per depth), more draft tokens verified (bad tree shapes:
// tests/host/CMakeLists).
TEST(SimulateCli, TreeVerification) {
  const std::string base =
      "simulate --model tiny-dense --system gpu --requests 16 --input-len 64 --output-len 64 --length-spread "
      "0 "
      "--batch 8 --speculative 3 --acceptance 0.8 --draft ngram --json";
  const CliRun chain = run(base), tree = run(base + " --tree-tokens 9 --draft-topk 3");
  ASSERT_EQ(chain.exit_code, 0) << chain.out;
  ASSERT_EQ(tree.exit_code, 0) << tree.out;
  const auto c = nlohmann::json::parse(chain.out)["speculative"],
             t = nlohmann::json::parse(tree.out)["speculative"];
  EXPECT_EQ(t["accepted_tokens"], c["accepted_tokens"]);
  EXPECT_EQ(t["tokens_per_verify"], c["tokens_per_verify"]);
  EXPECT_GT(t["draft_tokens"].get<double>(), 2.5 * c["draft_tokens"].get<double>());
}

TEST(SimulateCli, SetOverridesTheSystemConfig) {
  const std::string base = "simulate --system duplex-pe --requests 32 --input-len 128 --output-len 64 --batch 16 --json";
  const CliRun slow = run(base);
  const CliRun fast = run(base + " --set pim.clock=1300MHz");
  ASSERT_EQ(slow.exit_code, 0) << slow.out;
  ASSERT_EQ(fast.exit_code, 0) << fast.out;
  const auto a = nlohmann::json::parse(slow.out), b = nlohmann::json::parse(fast.out);
  EXPECT_GT(b["throughput_tok_s"].get<double>(), a["throughput_tok_s"].get<double>());
  // Area: a clock knob leaves it, a compute knob grows it (base/pim_area.hpp); gpu has none.
  EXPECT_EQ(b["pim_area"]["per_stack_mm2"]["total"], a["pim_area"]["per_stack_mm2"]["total"]);
  const CliRun wide = run(base + " --set pim.gemm_modules=64");
  ASSERT_EQ(wide.exit_code, 0) << wide.out;
  EXPECT_GT(nlohmann::json::parse(wide.out)["pim_area"]["die_fraction"].get<double>(),
            a["pim_area"]["die_fraction"].get<double>());
  const CliRun gpu = run("simulate --system gpu --requests 8 --input-len 64 --output-len 8 --json");
  ASSERT_EQ(gpu.exit_code, 0);
  EXPECT_FALSE(nlohmann::json::parse(gpu.out).contains("pim_area"));
  const CliRun shown = run("config show systems duplex-pe --set pim.clock=1300MHz");
  ASSERT_EQ(shown.exit_code, 0);
  EXPECT_NE(shown.out.find("clock: 1300MHz"), std::string::npos) << shown.out;
}

// A split system of several instances (xPyD) on the command line: 3 devices, 2 one-device prefill instances
// feeding one decode instance; JSON pools, the text line and requests.csv name the instances.
TEST(SimulateCli, SplitInstancesReportWhoServedWhat) {
  const std::string dir = ::testing::TempDir() + "duplex_split_instances_cli";
  const std::string args =
      "simulate --model llama-3.2-1b --system duplex-split --devices 3 --set split.prefill_instances=2 "
      "--requests 8 --input-len 64 --output-len 16 -o " +
      dir;
  const CliRun json = run(args + " --json");
  ASSERT_EQ(json.exit_code, 0) << json.out;
  const auto j = nlohmann::json::parse(json.out);
  EXPECT_EQ(j["pools"]["prefill0"]["requests"], 4);  // round-robin
  EXPECT_EQ(j["pools"]["prefill1"]["requests"], 4);
  EXPECT_EQ(j["pools"]["decode0"]["requests"], 8);
  EXPECT_EQ(j["pools"]["decode0"]["devices"], 1);
  const CliRun table = run(args);
  ASSERT_EQ(table.exit_code, 0) << table.out;
  EXPECT_NE(table.out.find(
                "split duplex-split: 1 replica; 2 prefill instances of 1 device, requests 4 4, xPU busy "),
            std::string::npos)
      << table.out;
  EXPECT_NE(table.out.find("(round-robin router); 1 decode instance of 1 device, requests 8, xPU busy "),
            std::string::npos)
      << table.out;
  EXPECT_NE(table.out.find(", PIM busy "), std::string::npos) << table.out;  // the decode instance's
  std::ifstream csv(dir + "/duplex-split/requests.csv");
  std::string header, row;
  ASSERT_TRUE(std::getline(csv, header));
  ASSERT_TRUE(std::getline(csv, row));
  EXPECT_TRUE(row.ends_with(",prefill0>decode0")) << row;
}

TEST(SimulateCli, ReplicasBehindARouterReportWhoServedWhat) {
  const std::string dir = ::testing::TempDir() + "duplex_replicas_cli";
  const std::string args =
      "simulate --model llama3-70b --system duplex-pe --replicas 2 --router cache-aware --turns 4 --requests "
      "32 "
      "--input-len 64 --output-len 16 --batch 8 -o " +
      dir;
  const CliRun json = run(args + " --json");
  ASSERT_EQ(json.exit_code, 0) << json.out;
  const auto j = nlohmann::json::parse(json.out);
  EXPECT_EQ(j["cluster"]["replicas"], 2);
  EXPECT_EQ(j["cluster"]["router"], "cache-aware");
  EXPECT_EQ(j["pools"]["replica0"]["requests"].get<int>() + j["pools"]["replica1"]["requests"].get<int>(),
            32);
  EXPECT_EQ(j["devices"].get<int>(), 2 * j["pools"]["replica0"]["devices"].get<int>());
  const CliRun table = run(args);
  ASSERT_EQ(table.exit_code, 0) << table.out;
  EXPECT_NE(
      table.out.find("cluster duplex-pe: 2 replicas of 4 devices, cache-aware router; requests per replica"),
      std::string::npos)
      << table.out;
  std::ifstream csv(dir + "/duplex-pe/requests.csv");
  std::string header, row;
  ASSERT_TRUE(std::getline(csv, header));
  EXPECT_TRUE(header.ends_with(",prefix_hit_tokens,pool")) << header;
  std::map<std::string, int> served;
  while (std::getline(csv, row)) ++served[row.substr(row.rfind(',') + 1)];
  EXPECT_EQ(served["replica0"], j["pools"]["replica0"]["requests"].get<int>());
  EXPECT_EQ(served["replica1"], j["pools"]["replica1"]["requests"].get<int>());
  std::ifstream steps(dir + "/duplex-pe/steps.csv");
  ASSERT_TRUE(std::getline(steps, header));
  EXPECT_TRUE(header.ends_with(",energy_j,pool")) << header;
}

TEST(SimulateCli, MaxRateSearchesEachSystemsCapacity) {
  const std::string dir = ::testing::TempDir() + "duplex_capacity_cli";
  const std::string args =
      "simulate --model mixtral-8x7b --system gpu --system duplex-pe --requests 64 --input-len 256 "
      "--output-len 32 --batch 16 --arrival poisson:2 --slo-ttft 400 --max-rate --rate-precision 0.05 -o " +
      dir;
  const CliRun json = run(args + " --json");
  ASSERT_EQ(json.exit_code, 0) << json.out;
  const auto j = nlohmann::json::parse(json.out);
  ASSERT_EQ(j["systems"].size(), 2u);
  for (const auto& c : j["systems"]) {
    EXPECT_EQ(c["probes"][0]["rate_per_s"].get<double>(), 2.0);  // --arrival's rate starts the search
    ASSERT_TRUE(c["converged"].get<bool>()) << c.dump(1);
    EXPECT_LE(c["failing_rate_per_s"].get<double>(), 1.05 * c["max_rate_per_s"].get<double>());
    EXPECT_GE(c["at_max"]["slo"]["attainment"].get<double>(), 0.9);
    EXPECT_EQ(c["attainment_target"].get<double>(), 0.9);
  }
  const CliRun table = run(args);
  ASSERT_EQ(table.exit_code, 0) << table.out;
  EXPECT_NE(
      table.out.find("capacity: the highest Poisson arrival rate (req/s) at which >= 90% of 64 requests "
                     "meet TTFT 400 ms and TPOT unbounded, bracketed to 5%"),
      std::string::npos)
      << table.out;
  EXPECT_NE(table.out.find("probes duplex-pe: 2 "), std::string::npos) << table.out;
  // The folder holds the runs at the max rates and the searches.
  std::ifstream capacity(dir + "/capacity.json");
  ASSERT_TRUE(capacity.good());
  EXPECT_EQ(nlohmann::json::parse(capacity)["systems"][1]["max_rate_per_s"],
            j["systems"][1]["max_rate_per_s"]);
  std::ifstream summary(dir + "/summary.json");
  ASSERT_TRUE(summary.good());
  EXPECT_EQ(nlohmann::json::parse(summary)["systems"][0]["slo"]["met"],
            j["systems"][0]["at_max"]["slo"]["met"]);
  EXPECT_TRUE(std::ifstream(dir + "/duplex-pe/requests.csv").good());
}

TEST(SimulateCli, AHostTierIsASystemKnob) {
  const CliRun r =
      run("simulate --model llama3-70b --system gpu --turns 3 --requests 24 --input-len 64 --output-len 16 "
          "--batch 8 "
          "--set links.host_kv_offload=8GiB --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["prefix_cache"]["host_kv_blocks"], 8LL * (1 << 30) / (16 * 81920));
  EXPECT_TRUE(j["prefix_cache"].contains("host_hit_tokens"));
}

TEST(MemtestCli, StreamReadsReachTheStackBandwidthAndJsonHasTheDocumentedFields) {
  const CliRun r = run("memtest --system duplex --pattern stream --no-refresh --channels 2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  for (const char* f : {"achieved_gbps", "peak_gbps", "efficiency", "refresh_share", "latency_ns"})
    ASSERT_TRUE(j.contains(f)) << f;
  EXPECT_GE(j["efficiency"].get<double>(), 0.97);
  EXPECT_TRUE(j["latency_ns"].contains("p99"));
}

TEST(MemtestCli, ControllerOptionsChangeWhatIsMeasured) {
  auto json = [](const std::string& args) {
    const CliRun r = run("memtest --no-refresh --channels 1 --json " + args);
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return nlohmann::json::parse(r.out);
  };
  // One request in flight per pseudo-channel: no overlap of commands, well under half the stream bandwidth.
  const auto deep = json("--pattern stream"), shallow = json("--pattern stream --queue-depth 1");
  EXPECT_LT(shallow["achieved_gbps"].get<double>(), 0.6 * deep["achieved_gbps"].get<double>());
  // Random rows never hit: closing rows right away saves the precharge on the next conflict.
  const auto open = json("--pattern random"), closed = json("--pattern random --page-policy closed");
  EXPECT_GE(closed["requests"].get<double>(), open["requests"].get<double>());
}

TEST(RunCli, TinyMoeOnDuplexPeMatchesThePlainReference) {
  const CliRun r = run("run --model tiny-moe --system duplex-pe --prompt 1,5,9,42 --prompt 7,3 --max-new-tokens 6 "
                       "--check --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j.contains("tokens"));
  EXPECT_EQ(j["tokens"], j["reference_tokens"]);
  EXPECT_LT(j["max_abs_logit_err"].get<double>(), 0.06);
}

TEST(RunCli, DevicesOptionShardsOverThatManyDevicesAndNamesTheirClasses) {
  const CliRun r = run("run --model tiny-dense --system duplex-pe --devices 2 --prompt 1,5,9 --max-new-tokens 3 "
                       "--check --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["devices"], 2);
  EXPECT_EQ(j["tokens"], j["reference_tokens"]);
  EXPECT_EQ(j["device_classes"]["dev1.xpu"].get<std::string>().rfind("XpuDevice", 0), 0u);
  EXPECT_EQ(j["device_classes"]["dev1.pim"].get<std::string>().rfind("LogicPimDevice", 0), 0u);
  const CliRun text = run("run --model tiny-dense --system bank-pim --devices 1 --prompt 1,5,9 --max-new-tokens 2");
  ASSERT_EQ(text.exit_code, 0) << text.out;
  EXPECT_NE(text.out.find("PIM: BankPimDevice"), std::string::npos) << text.out;
  EXPECT_NE(run("run --model tiny-dense --system duplex --devices 3").exit_code, 0);  // 8 heads over TP3
}

// Two-batch overlap in `duplex run`: the steps that split run as two micro-batches, said in the text and per
// step in the JSON, and the check passes.
TEST(RunCli, TwoBatchOverlapRunsMicroBatches) {
  const std::string cmd =
      "run --model tiny-moe --system gpu --set two_batch_overlap=true --prompt 1,5,9,42 "
      "--prompt 7,3 --prompt 11,12,13 --max-new-tokens 4 --check";
  const CliRun text = run(cmd);
  ASSERT_EQ(text.exit_code, 0) << text.out;
  EXPECT_NE(text.out.find("as two micro-batches)"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("PASS"), std::string::npos) << text.out;
  const CliRun r = run(cmd + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  int micro = 0;
  for (const auto& s : j["steps"]) micro += s["micro_batches"].get<bool>() ? 1 : 0;
  EXPECT_GT(micro, 0);
  EXPECT_EQ(j["tokens"], j["reference_tokens"]);
}

// --set reaches the functional emulation's system: nodes of 2 devices make 4 devices two data-parallel nodes.
TEST(RunCli, SetOverridesTheSystemItRunsOn) {
  const CliRun r = run("run --model tiny-moe --system duplex-pe --set links.devices_per_node=2 --devices 4 "
                       "--prompt 1,5,9 --prompt 7,3 --max-new-tokens 3 --check --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["layout"], "4 devices: TP2 x DP2, EP4 (2 experts/device)");
  EXPECT_EQ(j["tokens"], j["reference_tokens"]);
}

// On the GPU and on duplex-pe, whose prompts write their K/V into the prefill space: there the second prompt
// migrates only the block it computed.
TEST(RunCli, PrefixCachingReportsTheTokensTakenFromTheCache) {
  for (const char* system : {"gpu", "duplex-pe"}) {
    SCOPED_TRACE(system);
    const std::string args = std::string("run --model tiny-dense --system ") + system +
                             " --kv-block 8 --prompt 1,2,3,4,5,6,7,8,9 --prompt 1,2,3,4,5,6,7,8,42 "
                             "--max-new-tokens 3 --check";
    const CliRun r = run(args + " --prefix-caching --json");
    ASSERT_EQ(r.exit_code, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["prefix_cache"]["query_tokens"], 18);
    EXPECT_EQ(j["prefix_cache"]["hit_tokens"], 8);  // the second prompt's first block
    EXPECT_EQ(j["tokens"], j["reference_tokens"]);
    const auto plain = nlohmann::json::parse(run(args + " --json").out);
    EXPECT_EQ(plain["tokens"], j["tokens"]);
    EXPECT_FALSE(plain.contains("prefix_cache"));
    std::vector<std::int64_t> migrated;
    for (const auto& m : j["in_device_kv_migrations"]) migrated.push_back(m["tokens"].get<std::int64_t>());
    EXPECT_EQ(migrated,
              std::string(system) == "gpu" ? std::vector<std::int64_t>{} : std::vector<std::int64_t>({9, 1}));
  }
}

// Chunked prefill: a 9-token prompt in chunks of 4 over three steps, the second prompt admitted beside its
// last chunk; the tokens are the reference's.
TEST(RunCli, ChunkedPrefillSplitsPromptsOverSteps) {
  const CliRun r =
      run("run --model tiny-dense --system duplex-pe --prompt 1,2,3,4,5,6,7,8,9 --prompt 5,6 "
          "--max-new-tokens 3 --max-tokens-per-step 4 --chunked-prefill --check --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["tokens"], j["reference_tokens"]);
  ASSERT_EQ(j["in_device_kv_migrations"].size(), 2u);
  EXPECT_EQ(j["in_device_kv_migrations"][0]["step"], 2);
  EXPECT_EQ(j["in_device_kv_migrations"][0]["tokens"], 9);
}

// --prompts FILE: one request per line, comments and blank lines skipped; the same tokens as --prompt.
TEST(RunCli, PromptsFileGivesOneRequestPerLine) {
  const std::string path = ::testing::TempDir() + "duplex_run_prompts.txt";
  {
    std::ofstream f(path);
    f << "# two requests\n1,2,3\n\n  7,8\n";
  }
  const CliRun file = run("run --model tiny-dense --system gpu --max-new-tokens 3 --json --prompts " + path);
  const CliRun flags =
      run("run --model tiny-dense --system gpu --max-new-tokens 3 --json --prompt 1,2,3 --prompt 7,8");
  ASSERT_EQ(file.exit_code, 0) << file.out;
  ASSERT_EQ(flags.exit_code, 0) << flags.out;
  const auto j = nlohmann::json::parse(file.out);
  EXPECT_EQ(j["tokens"].size(), 2u);
  EXPECT_EQ(j["tokens"], nlohmann::json::parse(flags.out)["tokens"]);
}

// The model drafting for itself (--draft equal to --model, same seed): every draft accepted, the reference's
// tokens, fewer steps than without speculation.
TEST(RunCli, SpeculativeDecodingReportsItsAcceptance) {
  const std::string args =
      "run --model tiny-dense --system duplex-pe --prompt 1,2,3 --prompt 8,9 --max-new-tokens 9 --check "
      "--json";
  const CliRun r = run(args + " --speculative 3 --draft tiny-dense");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["speculative"]["draft"], "tiny-dense");
  EXPECT_EQ(j["speculative"]["verify_steps"], 2 * 2);  // 1 + 4 + 4 tokens, the prefill's first
  EXPECT_EQ(j["speculative"]["draft_tokens"], 2 * (3 + 3));
  EXPECT_EQ(j["speculative"]["accepted_tokens"], j["speculative"]["draft_tokens"]);
  EXPECT_EQ(j["speculative"]["acceptance_by_position"], nlohmann::json::array({1.0, 1.0, 1.0}));
  EXPECT_EQ(j["tokens"], j["reference_tokens"]);
  const auto plain = nlohmann::json::parse(run(args).out);
  EXPECT_EQ(plain["tokens"], j["tokens"]);
  EXPECT_LT(j["steps"].size(), plain["steps"].size());
  EXPECT_EQ(j["steps"][1]["draft_passes"], 3);  // the first verification's three drafts, one pass each
  EXPECT_FALSE(plain.contains("speculative"));
  EXPECT_FALSE(plain["steps"][1].contains("draft_passes"));
}

// N-gram drafts: tiny-opt's random weights cycle, so the drafts from its own tokens are accepted; the plain
// run's tokens, fewer steps, no draft pass; one of --prompt-lookup-min / _max sets the other (vLLM's rule).
TEST(RunCli, NgramDraftsComeFromTheSequence) {
  const std::string args =
      "run --model tiny-opt --system duplex-pe --prompt 1,5,9,42,1,5,9,42,1,5 --max-new-tokens 24 --check "
      "--json";
  const CliRun r = run(args + " --speculative 3 --draft ngram --prompt-lookup-max 2");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  const auto plain = nlohmann::json::parse(run(args).out);
  EXPECT_EQ(j["speculative"]["draft"], "ngram");
  EXPECT_GT(j["speculative"]["accepted_tokens"].get<int>(), 0);
  EXPECT_EQ(j["tokens"], plain["tokens"]);
  EXPECT_EQ(j["tokens"], j["reference_tokens"]);
  EXPECT_LT(j["steps"].size(), plain["steps"].size());
  for (const auto& step : j["steps"]) EXPECT_EQ(step["draft_passes"], 0);
  const auto one = nlohmann::json::parse(run(args + " --speculative 3 --draft ngram --prompt-lookup-min 2 "
                                                    "--prompt-lookup-max 2")
                                             .out);
  EXPECT_EQ(one["speculative"], j["speculative"]);
}

TEST(RunCli, PimOpsThroughTheDriverAndTheSystemCDeviceGiveTheSameTokens) {
  const std::string args = "run --model tiny-moe --system duplex-pe --prompt 2,7,1 --max-new-tokens 5 --check --json";
  const CliRun datapath = run(args);
  const CliRun device = run(args + " --pim-path device");
  ASSERT_EQ(datapath.exit_code, 0) << datapath.out;
  ASSERT_EQ(device.exit_code, 0) << device.out;
  EXPECT_EQ(nlohmann::json::parse(device.out)["tokens"], nlohmann::json::parse(datapath.out)["tokens"]);
}

}  // namespace
