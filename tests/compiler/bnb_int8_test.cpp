// bitsandbytes' 8-bit releases (LLM.int8(): transformers' BitsAndBytesConfig load_in_8bit, HF quant_method
// "bitsandbytes") in the compiler: read from config.json as linear_dtype bnb_int8 (an INT8 code per weight,
// an FP32 absmax per row), what the xPU is charged for their GEMMs (INT8 tensor cores, three kernels:
// quantize the activations, INT8 GEMM, scale the INT32 sums; their INT8 activations and INT32 sums' traffic),
// and the configurations refused, naming the field.
#include <gtest/gtest.h>

#include <string>
#include <utility>

#include "config_errors.hpp"
#include "duplex/compiler/cost_model.hpp"
#include "duplex/compiler/hf_import.hpp"
#include "duplex/compiler/lower.hpp"
#include "duplex/compiler/model_spec.hpp"
#include "hf_configs.hpp"

namespace duplex::compiler {
namespace {

using testing::hf_config_error;
using testing::llama31_8b;
using testing::model_yaml_error;

// BitsAndBytesConfig(load_in_8bit=True).to_dict(), as an 8-bit release's config.json holds it; `more` adds or
// replaces fields.
std::string int8(const std::string& more = "") {
  return testing::bitsandbytes_config(false, more);
}

// The config.json in float16, as these releases keep it.
std::string llama31_8b_fp16(const std::string& quantization) {
  return llama31_8b(quantization, "float16");
}

TEST(BnbInt8, FormatAndItsBytes) {
  EXPECT_EQ(parse_dtype("bnb_int8"), DType::kBnbInt8);
  EXPECT_EQ(dtype_name(DType::kBnbInt8), "bnb_int8");
  EXPECT_TRUE(matrix_format(DType::kBnbInt8));
  EXPECT_TRUE(bitsandbytes(DType::kBnbInt8));
  EXPECT_TRUE(int8_weights(DType::kBnbInt8));
  EXPECT_FALSE(bnb_4bit(DType::kBnbInt8));
  EXPECT_FALSE(scaled_8bit(DType::kBnbInt8));  // not the FP8 / compressed-tensors checkpoint layout
  EXPECT_TRUE(bitsandbytes(DType::kNf4Dq));
  EXPECT_FALSE(bitsandbytes(DType::kInt8Channel));
  EXPECT_TRUE(int8_weights(DType::kInt8Channel));
  EXPECT_DOUBLE_EQ(dtype_bytes(DType::kBnbInt8), 1.0);  // its FP32 absmax per row left out, as int8_channel's
  const ModelSpec m = import_hf_config(llama31_8b_fp16(int8()), "l.json");
  EXPECT_EQ(m.linear_dtype, DType::kBnbInt8);
  EXPECT_EQ(m.kv_dtype, DType::kFp16);
  // Half the FP16 model's projection and FFN bytes; embeddings, LM head and norms stay 16-bit.
  const ModelSpec fp16 = import_hf_config(llama31_8b_fp16("null"), "l.json");
  EXPECT_LT(m.weight_bytes(), 0.6 * fp16.weight_bytes());
  EXPECT_GT(m.weight_bytes(), 0.5 * fp16.weight_bytes());
  // No outliers threshold (pure INT8), or the default taken when absent.
  EXPECT_EQ(import_hf_config(llama31_8b_fp16(int8(R"(, "llm_int8_threshold": 0.0)")), "l.json").linear_dtype,
            DType::kBnbInt8);
  EXPECT_EQ(read_model(ConfigNode::parse("name: x\nlayers: 2\nhidden: 64\nheads: 4\nffn: 128\nvocab: 10\n"
                                         "linear_dtype: bnb_int8\n",
                                         "x.yaml"))
                .linear_dtype,
            DType::kBnbInt8);
  EXPECT_NE(
      model_yaml_error("name: x\nlayers: 2\nhidden: 64\nheads: 4\nffn: 128\nvocab: 10\ndtype: bnb_int8\n")
          .find("bnb_int8 is a matrix format"),
      std::string::npos);
}

// The bytes one MatMul8bitLt call of m rows, n outputs and k inputs moves beyond the weights and 16-bit
// activations (Op::xpu_bytes): the INT8 activations and INT32 sums; with a threshold its input's mask, and
// with c outlier columns their 16-bit path. Written from bitsandbytes 0.45's code path, kernel by kernel.
double call_bytes(double m, double n, double k, bool threshold, double c) {
  double b = 2 * m * k + 8 * m * n;  // int8_vectorwise_quant's INT8 copy; int8_linear_matmul's INT32 sums
  if (!threshold) return b;
  b += (2 + 2) * m * k;    // A.abs(): FP16 in and out
  b += 2 * m * k + m * k;  // >= threshold: FP16 in, bool out
  b += m * k;              // outliers.any()
  b += m * k + k + k;      // outliers.any(dim=0), argwhere over its k
  if (c == 0) return b;
  b += m * c;                      // out_row[:, cols] = 0
  b += n * c + n * c;              // CB[:, cols]: INT8 gathered
  b += n * c + 4 * n + 4 * n * c;  // .t() * SCB (FP32)
  b += 4 * n * c + 4 * n * c;      // * 1 / 127
  b += 4 * n * c + 2 * n * c;      // .to(float16)
  b += 2 * m * c + 2 * m * c;      // A[:, cols].contiguous()
  b +=
      2 * m * c + 2 * n * c + 4 * m * n;  // output.addmm(subA, subB): its inputs, the output read and written
  return b;
}

// bitsandbytes' MatMul8bitLt, once per matrix (the QKV projection's q, k, v; an FFN's gate, up, down): it
// quantizes a GEMM's activations per row (a kernel writing them in INT8), runs the INT8 GEMM (INT32 sums
// written) and scales the sums to 16 bits (read back): three launches, 2 bytes per activation and 8 per
// output more than the weights and 16-bit activations, on the INT8 tensor cores as a W8A8-INT8 release's
// GEMMs. With llm_int8_threshold > 0 it masks its input (5 kernels, two of them waited for on the host) and,
// with the model's llm_int8_outlier_columns (6 by default), multiplies those columns in 16 bits (7 kernels, 6
// for one row). One decode request reads half the FP16 bytes: faster; the extra kernels are what it costs
// over int8_channel's fused GEMM.
TEST(BnbInt8, XpuGemmsQuantizeTheActivationsAndScaleTheSums) {
  const SystemSpec gpu = load_system("gpu");
  const double bandwidth = gpu.memory_bandwidth().si() * gpu.xpu.memory_efficiency;
  const double launch = gpu.xpu.launch_overhead.si();
  struct Case {
    const char* quantization;
    double threshold, columns;
  };
  for (const Case& k : {Case{"", 6.0, 6.0}, Case{R"(, "llm_int8_threshold": 0.0)", 0.0, 6.0},
                        Case{R"(, "llm_int8_threshold": 4.5)", 4.5, 6.0}}) {
    SCOPED_TRACE(k.quantization);
    ModelSpec m = import_hf_config(llama31_8b_fp16(int8(k.quantization)), "l.json");
    EXPECT_EQ(m.llm_int8_threshold, k.threshold);
    EXPECT_EQ(m.llm_int8_outlier_columns, k.columns);
    for (const double columns : {6.0, 0.0, 20000.0}) {  // 20000: more than any input has
      m.llm_int8_outlier_columns = columns;
      const ParallelLayout layout = ParallelLayout::make(m, gpu, 1);
      const CostModel cost(gpu, layout);
      for (const int requests : {1, 16}) {
        int checked = 0;
        for (const Op& o : lower(m, BatchState::decode_batch(requests, 1024), layout, Routing{}).ops) {
          if (o.kind != OpKind::kQkvProj && o.kind != OpKind::kOProj && o.kind != OpKind::kDenseFfn) continue;
          EXPECT_EQ(o.dtype, DType::kBnbInt8) << o.name;
          const bool threshold = k.threshold > 0, outliers = threshold && columns > 0;
          const int calls = o.kind == OpKind::kOProj ? 1 : 3;
          EXPECT_EQ(o.int8_lt_calls(), calls) << o.name;
          const int per_call = 3 + (threshold ? 5 : 0) + (outliers ? (requests > 1 ? 7 : 6) : 0);
          EXPECT_EQ(o.xpu_kernels(), calls * per_call) << o.name;
          const auto rows = static_cast<double>(o.m), ins = static_cast<double>(o.k),
                     outs = static_cast<double>(o.n);
          double extra = 0;
          if (o.kind == OpKind::kDenseFfn) {  // gate and up: hidden -> width; down: width -> hidden
            extra = 2 * call_bytes(rows, outs, ins, threshold, std::min(columns, ins)) +
                    call_bytes(rows, ins, outs, threshold, std::min(columns, outs));
          } else {  // q, k and v share their input (their outputs sum to n; the bytes are linear in them)
            const double c = std::min(columns, ins);
            extra = o.kind == OpKind::kOProj ? call_bytes(rows, outs, ins, threshold, c)
                                             : 3 * call_bytes(rows, outs / 3, ins, threshold, c);
          }
          EXPECT_NEAR(o.xpu_bytes(), o.bytes() + extra, 1e-9 * o.xpu_bytes()) << o.name;
          EXPECT_NEAR(cost.xpu_time(o).si(), o.xpu_bytes() / bandwidth + calls * per_call * launch, 1e-12)
              << o.name;
          Op channel = o, fp16 = o;
          channel.dtype = DType::kInt8Channel;
          EXPECT_NEAR(cost.xpu_time(o).si() - cost.xpu_time(channel).si(),
                      extra / bandwidth + (calls * per_call - 1) * launch, 1e-12)
              << o.name;
          fp16.dtype = DType::kFp16;
          fp16.bytes_weights = 2 * o.bytes_weights;
          // (The QKV projection's three calls' launches outweigh the bytes its smaller matrix saves.)
          if (requests == 1 && !threshold && o.kind != OpKind::kQkvProj) {
            EXPECT_LT(cost.xpu_time(o), cost.xpu_time(fp16)) << o.name;
          }
          ++checked;
        }
        EXPECT_EQ(checked, 32 * 3);
      }
    }
  }
  const ModelSpec m = import_hf_config(llama31_8b_fp16(int8()), "l.json");
  const ParallelLayout layout = ParallelLayout::make(m, gpu, 1);
  // A prefill's GEMMs are compute-bound at the INT8 rate, as int8_channel's (a device whose INT8 rate is
  // half its FP8 rate, to tell them apart).
  SystemSpec slow = gpu;
  slow.xpu.peak_int8 = slow.xpu.peak_fp8 * 0.5;
  const CostModel slow_cost(slow, layout);
  int prefills = 0;
  for (const Op& o : lower(m, BatchState::decode_batch(0, 0, 4096), layout, Routing{}).ops) {
    if (o.layer != 0 || o.kind != OpKind::kOProj) continue;
    Op compute_only = o, fp16 = o;
    compute_only.bytes_weights = compute_only.bytes_act = fp16.bytes_weights = fp16.bytes_act = 0;
    compute_only.m = fp16.m = 0;  // no INT8 activations or INT32 sums either: the GEMM alone
    fp16.dtype = DType::kFp16;
    EXPECT_NEAR((slow_cost.xpu_time(compute_only).si() - launch) / (slow_cost.xpu_time(fp16).si() - launch),
                slow.xpu.peak_fp16.si() / slow.xpu.peak_int8.si(), 1e-9);
    ++prefills;
  }
  EXPECT_EQ(prefills, 1);
}

// llm_int8_threshold (HF's, or our YAML's) and llm_int8_outlier_columns (timing's count) are model keys of a
// bnb_int8 model: numbers >= 0, refused on any other model, naming the key.
TEST(BnbInt8, ThresholdAndOutlierColumnsAreModelKeys) {
  const std::string base = "name: x\nlayers: 2\nhidden: 64\nheads: 4\nffn: 128\nvocab: 10\n";
  const ModelSpec m = read_model(ConfigNode::parse(
      base + "linear_dtype: bnb_int8\nllm_int8_threshold: 2.5\nllm_int8_outlier_columns: 12\n", "x.yaml"));
  EXPECT_EQ(m.llm_int8_threshold, 2.5);
  EXPECT_EQ(m.llm_int8_outlier_columns, 12.0);
  const ModelSpec d = read_model(ConfigNode::parse(base + "linear_dtype: bnb_int8\n", "x.yaml"));
  EXPECT_EQ(d.llm_int8_threshold, 6.0);  // BitsAndBytesConfig's default
  EXPECT_EQ(d.llm_int8_outlier_columns, 6.0);
  EXPECT_NE(model_yaml_error(base + "linear_dtype: bnb_int8\nllm_int8_threshold: -1\n")
                .find("llm_int8_threshold: is -1; expected a finite number >= 0"),
            std::string::npos)
      << model_yaml_error(base + "linear_dtype: bnb_int8\nllm_int8_threshold: -1\n");
  EXPECT_NE(model_yaml_error(base + "linear_dtype: bnb_int8\nllm_int8_outlier_columns: .nan\n")
                .find("llm_int8_outlier_columns: \".nan\" is not a number"),
            std::string::npos);
  EXPECT_NE(model_yaml_error(base + "llm_int8_outlier_columns: 3\n")
                .find("llm_int8_outlier_columns: is set with linear_dtype fp16; expected bnb_int8 matrices"),
            std::string::npos)
      << model_yaml_error(base + "llm_int8_outlier_columns: 3\n");
  EXPECT_EQ(
      import_hf_config(llama31_8b_fp16(int8(R"(, "llm_int8_threshold": 0.0)")), "l.json").llm_int8_threshold,
      0.0);
}

// transformers before 4.32 wrote BitsAndBytesConfig without quant_method; load_in_8bit or load_in_4bit true
// still says bitsandbytes (AutoHfQuantizer.from_config), neither is still a missing method.
TEST(BnbInt8, ConfigsWithoutQuantMethodAreBitsandbytesByTheirFlags) {
  const std::string legacy8 =
      R"({"load_in_8bit": true, "llm_int8_threshold": 6.0, "llm_int8_skip_modules": null,
    "llm_int8_enable_fp32_cpu_offload": false, "llm_int8_has_fp16_weight": false})";
  EXPECT_EQ(import_hf_config(llama31_8b_fp16(legacy8), "l.json").linear_dtype, DType::kBnbInt8);
  EXPECT_EQ(
      import_hf_config(llama31_8b_fp16(R"({"load_in_4bit": true, "bnb_4bit_quant_type": "nf4"})"), "l.json")
          .linear_dtype,
      DType::kNf4);
  EXPECT_NE(hf_config_error(llama31_8b_fp16(R"({"load_in_8bit": false})"))
                .find("config.json: quantization_config.quant_method: missing"),
            std::string::npos);
}

TEST(BnbInt8, OtherEightBitSchemesAreRefusedNamingTheField) {
  const std::string q = "config.json: quantization_config.";
  const std::pair<std::string, std::string> cases[] = {
      {int8(R"(, "load_in_4bit": true)"), q + "load_in_8bit: true beside load_in_4bit true"},
      {int8(R"(, "load_in_8bit": false)"), q + "load_in_4bit: false or absent, as load_in_8bit"},
      {int8(R"(, "llm_int8_has_fp16_weight": true)"),
       q + "llm_int8_has_fp16_weight: true: 16-bit weights quantized again at every step"},
      {int8(R"(, "llm_int8_threshold": -1.0)"), q + "llm_int8_threshold: -1; expected a number >= 0"},
      {int8(R"(, "llm_int8_threshold": "6")"), q + "llm_int8_threshold"},
      {int8(R"(, "llm_int8_skip_modules": ["lm_head", "o_proj"])"),
       q + "llm_int8_skip_modules[1]: \"o_proj\": a projection left unquantized is not modelled"},
  };
  for (const auto& [quantization, expected] : cases) {
    const std::string error = hf_config_error(llama31_8b_fp16(quantization));
    EXPECT_NE(error.find(expected), std::string::npos) << quantization << "\n" << error;
  }
  const std::string moe = hf_config_error(testing::mixtral_8x7b(int8()));
  EXPECT_NE(moe.find("quantization_config.quant_method: bitsandbytes on an MoE model quantizes its routers' "
                     "gates too: a router in 8 bits is not modelled"),
            std::string::npos)
      << moe;
}

}  // namespace
}  // namespace duplex::compiler
