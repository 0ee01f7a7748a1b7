#!/usr/bin/env python3
"""Cross-check of duplex's functional emulation against an independent NumPy forward pass.

For each model, `duplex run --save-weights DIR --json --logits` runs the model on a system and writes the
weights it ran as a HuggingFace checkpoint. This script then reads that checkpoint as the HF code would (the
config.json fields of its model_type, with HF's defaults; the safetensors files, sharded or not) and computes
the logits of every generated position in float64, teacher-forced along duplex's tokens, with the forward
pass of the HF modeling code (Llama / Mistral / Qwen2 / Qwen3 / Phi-3 (and Phi-4-mini's partial RoPE) / Gemma / Gemma 2 /
StarCoder2 / OPT / Mixtral / Phi-3.5-MoE / Qwen2-MoE / Qwen3-MoE / OLMoE / DBRX / gpt-oss, their sliding windows and
scaled RoPE (linear, llama3, YaRN (gpt-oss's untruncated too), LongRoPE and dynamic NTK as HF generate rotates them);
DeepSeek-V2 / DeepSeek-V3, with the hub's modeling_deepseek.py: MLA attention, interleaved RoPE with DeepSeek's
YaRN, and its greedy / group-limited / noaux_tc routing; Llama 4 (llama4_text, and the text model of the llama4
wrapper: its text_config, its language_model.* tensors): NoPE layers, interleaved RoPE, weightless q / k L2 norms,
chunked attention, attention temperature tuning, sigmoid-routed experts scaled at their input beside a shared
expert, dense layers in between), written here from those definitions and sharing no code with duplex. A
checkpoint whose quantization_config says fp8 (HF FineGrainedFP8: DeepSeek-V3's and Qwen3's FP8 releases) has its
F8_E4M3 matrices decoded from the E4M3 definition and multiplied by their weight_scale_inv blocks, one that says
compressed-tensors (llm-compressor's FP8-dynamic releases, and its W8A8-INT8 releases' I8 matrices) or
fbgemm_fp8 (Meta's Llama 3.1 FP8 releases) by their weight_scale rows; one that says awq or gptq
has its 4-bit matrices unpacked as AutoAWQ's dequantize_gemm and AutoGPTQ's dequantization do, as does one
whose compressed-tensors format is pack-quantized (llm-compressor's W4A16) as unpack_from_int32 does; one that says
bitsandbytes has its NF4 or FP4 matrices (and double-quantized block scales) decoded as dequantize_4bit does, its
LLM.int8() ones (load_in_8bit) by their rows' absmax as int8_vectorwise_dequant does; gpt-oss's MXFP4
experts (NAME_blocks / NAME_scales) are decoded as HF's convert_moe_packed_tensors does. A model
passes when every logit is within 2^-6 x max(1, max |logit|) (the bound of `duplex run --check`: FP16 storage on
duplex's side) and every token is the float64 argmax or a near tie (the margin within twice the logit error).

W8A8 activation quantization: where duplex's xPU quantized a GEMM's input (FP8 / INT8 checkpoints; the
Logic-PIM's GEMMs, 16-bit layers, the router, kv_b and the LM head take FP16 inputs), the run's JSON records
it ("quantization": [request][position][layer] -> {gemm: qkv / o_proj / ffn / shared_ffn / expert, expert,
slices, scales (per tensor), outlier_columns (LLM.int8()'s, per call: the batch's), inputs: duplex's input
vectors before quantization}). At each recorded GEMM input
the float64 pass takes duplex's vector in place of its own, as it takes duplex's tokens (FP8's 3 mantissa bits:
a value on either side of a rounding boundary moves an output by more than the bound), once the two agree
within 2^-6 x max(1, max |input|) (else the model fails; the worst ratio is reported), and fake-quantizes it as
duplex's kernels do (ActivationQuant, from the config's quantization_config: FP8 per token and 128 columns
(fp8 with weight_block_size), per tensor at duplex's recorded scales (AutoFP8's dynamic, compressed-tensors'
strategy tensor), per token (compressed-tensors' FP8-dynamic and W8A8-INT8; fbgemm_fp8 with its scales bounded
by activation_scale_ub; bitsandbytes' LLM.int8() with duplex's recorded outlier columns passing unchanged, each
checked to hold every element at or above llm_int8_threshold); the O projection's input and an FFN's
intermediate h per tensor-parallel slice). The
other GEMMs keep the float64 pass's own inputs; every recorded input must be reached.

Sensitivity: with --self-test the same comparison is run once more with one HF feature dropped on the NumPy
side (a scaled RoPE (DeepSeek: with its softmax mscale; dynamic NTK), a partial RoPE (as the whole head),
DeepSeek's routing correction bias (noaux_tc), group limit (group_limited_greedy as greedy), routed scaling
factor (as 1) or interleaved RoPE (as rotate-half), Llama 4's router scores on the experts' inputs (as on their
outputs), chunked attention (as full), attention temperature (as none) or interleaved RoPE (as rotate-half),
Gemma's norm offset, Gemma 2's attention soft-cap, gpt-oss's attention sinks, PhiMoE's sparsemixer (as softmax
top 2), the shared-expert gate, the q/k norms, OPT's learned positions, the FFN biases, the q/k/v biases, DBRX's
clamp of q / k / v, the routing renormalisation, the sliding window or a non-SiLU activation (as SiLU), the first
the model has (an FP8 checkpoint's block or row scales, as 1, a 4-bit one's zero points, as 0, an NF4 one's block
scales (double quantization: nested scales), as 1, a bitsandbytes FP4 one's code (its indices read as NF4's), or an
LLM.int8() one's row absmax, as 1,
before all); Llama 4's chunks and temperature only where
the test's sequences reach them); that comparison must
fail, or the check could not see the feature. --self-test=F[,F...] drops the features named instead, one
comparison each (any of HfModel's drops: chunked_attention, attn_temperature, router_input, qk_norm,
rope_interleave, window, ...; activation_quant ignores the quantization record: the inputs unquantized).

Usage: hf_crosscheck.py DUPLEX_BINARY [--self-test[=FEATURE,...]] MODEL[@SYSTEM[@DEVICES[@OPTION+OPTION...]]] ...
(OPTIONs go to duplex run as they are, e.g. --max-tokens-per-step=3+--kv-blocks=2.)
Exit status 0 when every model passes (and every self-test fails as it must), 1 otherwise.
"""
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

PROMPTS = [[1, 5, 9, 42], [7, 30, 12, 99, 3], [200]]
NEW_TOKENS = 6
RELATIVE_BOUND = 2.0 ** -6
# Llama4TextConfig's defaults (the fields HfModel reads; moe_layers, no_rope_layers, layer_types derived when absent).
LLAMA4_TEXT_DEFAULTS = {
    "hidden_size": 5120, "intermediate_size": 8192, "intermediate_size_mlp": 16384, "num_hidden_layers": 48,
    "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128, "hidden_act": "silu", "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False, "rope_theta": 500000.0, "rope_scaling": None, "num_experts_per_tok": 1,
    "num_local_experts": 16, "moe_layers": None, "interleave_moe_layer_step": 1, "use_qk_norm": True,
    "no_rope_layers": None, "no_rope_layer_interval": 4, "attention_chunk_size": 8192, "layer_types": None,
    "attn_temperature_tuning": True, "floor_scale": 8192, "attn_scale": 0.1}


def yarn_mscale(factor, mscale):  # DeepSeek's yarn_get_mscale
    return 0.1 * mscale * math.log(factor) + 1.0 if factor > 1 else 1.0


def e4m3(codes):
    """OCP FP8 E4M3FN codes as float64: bias 7, subnormals m x 2^-9, S.1111.111 NaN, no infinities."""
    c = codes.astype(np.int64)
    e, m = (c >> 3) & 15, c & 7
    v = np.where(e == 0, m * 2.0 ** -9, (8 + m) * np.exp2(e - 10.0))
    v = np.where((e == 15) & (m == 7), np.nan, v)
    return np.where(c & 0x80, -v, v)


def dequantize_fp8(config, tensors, scaled=True):
    """FP8 matrices times their scales; the weights as they are when not `scaled`.
    HF FineGrainedFP8 (quant_method fp8): each NAME.weight_scale_inv [ceil(r / b0), ceil(c / b1)] scales its
    NAME.weight's b0 x b1 blocks (DeepSeek's weight_dequant); without weight_block_size (AutoFP8's releases)
    one NAME.weight_scale ([] or [1]) scales the whole matrix, and a static release's MODULE.input_scale (its
    activations' scale, which duplex records where it quantizes with it) is dropped. compressed-tensors
    (llm-compressor's FP8-dynamic scheme, format float-quantized, or W8A8-INT8, int-quantized: I8 weights; weights strategy channel) and
    fbgemm_fp8 (Meta's Llama 3.1 FP8 releases, FbgemmFp8Linear): each NAME.weight_scale [r, 1] scales its row
    of NAME.weight; fbgemm's MODULE.input_scale_ub (the bound of its activation scales: ActivationQuant reads
    the config's activation_scale_ub) is dropped."""
    q = config.get("quantization_config") or {}
    method = q.get("quant_method")
    if method not in ("fp8", "compressed-tensors", "fbgemm_fp8") or q.get("format") == "pack-quantized":
        return dict(tensors)
    if method == "fbgemm_fp8":
        tensors = {name: a for name, a in tensors.items() if not name.endswith(".input_scale_ub")}
    blocks = method == "fp8" and "weight_block_size" in q
    if method == "fp8" and not blocks:
        tensors = {name: a for name, a in tensors.items() if not name.endswith(".input_scale")}
    suffix = "_scale_inv" if blocks else "_scale"
    b0, b1 = q.get("weight_block_size") or (128, 128)
    out = {}
    for name, a in tensors.items():
        if name.endswith(suffix):
            continue
        scale = tensors.get(name + suffix)
        if scale is not None and scaled:
            if blocks:
                a = a * np.repeat(np.repeat(scale, b0, axis=0), b1, axis=1)[: a.shape[0], : a.shape[1]]
            else:
                a = a * scale  # [r, 1] broadcast along each row, or one scale ([] or [1]) for the matrix
        out[name] = a
    return out


AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # AutoAWQ's GEMM packing: the output of its eight each field of a word holds


def nibbles(words, axis, bits=4):
    """I32 words as their 32 / bits fields (the first in the low bits), spread along `axis` (32 / bits x longer)."""
    n = 32 // bits
    w = words.astype(np.int64) & 0xFFFFFFFF
    fields = np.stack([(w >> (bits * i)) & ((1 << bits) - 1) for i in range(n)], axis=axis + 1)
    shape = list(words.shape)
    shape[axis] *= n
    return fields.reshape(shape)


def dequantize_int4(config, tensors, zeros=True):
    """4-bit matrices as NAME.weight [out, in], each element (q - zero) x scale rounded to FP16, the zero points
    taken as 0 when not `zeros`. quant_method awq (AutoAWQ's dequantize_gemm): NAME.qweight [in, out / 8] and
    NAME.qzeros [in / g, out / 8], the fields of a word holding outputs in AWQ_ORDER; NAME.scales [in / g, out]
    (group_size -1: g = in).
    quant_method gptq (AutoGPTQ, checkpoint_format gptq): NAME.qweight [in / 8, out], a word's fields inputs in
    order; NAME.qzeros as AWQ's but in order, holding zero - 1; input i in group NAME.g_idx[i]; with bits 8
    (Qwen's GPTQ-Int8) four 8-bit fields a word.
    compressed-tensors pack-quantized (unpack_from_int32, then dequantize): NAME.weight_packed [out, in / 8],
    a word's fields inputs in order, each the signed value + 8; NAME.weight_scale [out, in / g] (strategy
    channel, group_size null: [out, 1], g = in); with num_bits 8 (W8A16) four 8-bit fields a word, each the
    signed value + 128."""
    q = config.get("quantization_config") or {}
    method = q.get("quant_method")
    if method == "compressed-tensors" and q.get("format") == "pack-quantized":
        g = q["config_groups"]["group_0"]["weights"]["group_size"]
        bits = q["config_groups"]["group_0"]["weights"]["num_bits"]
        out = {}
        for name, a in tensors.items():
            if name.endswith(".weight_packed"):
                base = name[: -len("_packed")]
                shape = tuple(int(d) for d in tensors[base + "_shape"])
                w = nibbles(a, 1, bits)[:, : shape[1]] - ((1 << (bits - 1)) if zeros else 0)  # [out, in], signed
                values = w * np.repeat(tensors[base + "_scale"], g if g else shape[1], axis=1)
                out[base] = values.astype(np.float16).astype(np.float64)
            elif not name.endswith((".weight_scale", ".weight_shape")):
                out[name] = a
        return out
    if method not in ("awq", "gptq"):
        return dict(tensors)
    g = q["group_size"]
    out = {}
    for name, a in tensors.items():
        if not name.endswith(".qweight"):
            if not name.endswith((".qzeros", ".scales", ".g_idx")):
                out[name] = a
            continue
        base = name[: -len(".qweight")]
        scales = tensors[base + ".scales"]
        if method == "awq":
            order = np.arange(scales.shape[1]).reshape(-1, 8)[:, np.argsort(AWQ_ORDER)].reshape(-1)
            w = nibbles(a, 1)[:, order]
            z = nibbles(tensors[base + ".qzeros"], 1)[:, order]
            group = np.arange(w.shape[0]) // (g if g > 0 else w.shape[0])  # -1: one group per row
        else:
            bits = q.get("bits", 4)
            w = nibbles(a, 0, bits)
            z = nibbles(tensors[base + ".qzeros"], 1, bits) + 1
            group = tensors[base + ".g_idx"].astype(np.int64)
        values = (w - (z[group] if zeros else 0)) * scales[group]  # [in, out]
        out[base + ".weight"] = values.astype(np.float16).astype(np.float64).T
    return out


# bitsandbytes' CUDA dequantization tables, its kernels' float literals (dDequantizeNF4, dDequantizeFP4Tree):
# NF4's 16 values, and FP4's 8 magnitudes by the 3 bits below the sign bit (8), all in float32.
BNB_NF4 = np.array(
    [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
     -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
     0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0],
    dtype=np.float32,
)
BNB_FP4_MAGNITUDES = np.array(
    [0.0, 5.208333333e-03, 0.66666667, 1.0, 0.33333333, 0.5, 0.16666667, 0.25], dtype=np.float32
)
BNB_FP4 = np.concatenate([BNB_FP4_MAGNITUDES, -BNB_FP4_MAGNITUDES])


def dequantize_bnb4(config, tensors, scaled=True, own_table=True):
    """bitsandbytes' 4-bit matrices (quant_method bitsandbytes, load_in_4bit; bnb_4bit_quant_type nf4, or fp4 when
    absent) as NAME.weight [out, in]: NAME.weight U8 holds two 4-bit indices a byte, the first element in the high
    nibble, of the matrix flattened row-major; element i is table[index] x absmax[i // blocksize] in float32,
    rounded to FP16 (bitsandbytes' dequantize_4bit), table the CUDA kernel's own (BNB_NF4, BNB_FP4; it does not
    read the stored quant_map). With double quantization (bnb_4bit_use_double_quant) absmax is U8 codes into
    nested_quant_map, times nested_absmax[block // nested_blocksize], plus nested_offset (dequantize_blockwise);
    blocksize, shape and the nested fields come from NAME.weight.quant_state.bitsandbytes__<type> (JSON bytes).
    Without `scaled` the absmax (double quantization: the nested absmax) is taken as 1; without `own_table` the
    indices are read with the other type's table."""
    q = config.get("quantization_config") or {}
    if q.get("quant_method") != "bitsandbytes" or not q.get("load_in_4bit"):
        return dict(tensors)
    quant_type = q.get("bnb_4bit_quant_type", "fp4")
    table = {"nf4": BNB_NF4, "fp4": BNB_FP4}[quant_type if own_table else {"nf4": "fp4", "fp4": "nf4"}[quant_type]]
    suffix = ".quant_state.bitsandbytes__" + quant_type
    parts = (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", suffix)
    out = {name: a for name, a in tensors.items() if not name.endswith(parts)}
    for name, state_bytes in tensors.items():
        if not name.endswith(suffix):
            continue
        base = name[: -len(suffix)]
        state = json.loads(bytes(state_bytes.astype(np.uint8)).decode("utf-8"))
        assert state["quant_type"] == quant_type, name
        rows, cols = state["shape"]
        packed = tensors[base].astype(np.uint8).reshape(-1)
        index = np.empty(2 * packed.size, dtype=np.int64)
        index[0::2], index[1::2] = packed >> 4, packed & 15
        if "nested_offset" in state:
            nested = tensors[base + ".nested_absmax"].astype(np.float32)
            if not scaled:
                nested = np.ones_like(nested)
            nested_map = tensors[base + ".nested_quant_map"].astype(np.float32)
            codes = tensors[base + ".absmax"].astype(np.int64)
            per = np.repeat(nested, state["nested_blocksize"])[: codes.size]
            absmax = nested_map[codes] * per + np.float32(state["nested_offset"])
        else:
            absmax = tensors[base + ".absmax"].astype(np.float32)
            if not scaled:
                absmax = np.ones_like(absmax)
        n = rows * cols
        scale = np.repeat(absmax, state["blocksize"])[:n]
        values = (table[index[:n]] * scale).astype(np.float32)
        out[base] = values.astype(np.float16).astype(np.float64).reshape(rows, cols)
    return out


def dequantize_bnb_int8(config, tensors, scaled=True):
    """bitsandbytes' LLM.int8() matrices (quant_method bitsandbytes, load_in_8bit) as MODULE.weight [out, in]:
    MODULE.weight I8 (row-major: MODULE.weight_format U8 must hold 0) times MODULE.SCB F32 [out], each row's absmax,
    times float32(1 / 127), in float32 as bitsandbytes' int8_vectorwise_dequant computes it, rounded to FP16.
    (bitsandbytes' kernels round the activations to INT8 besides, their outlier columns aside; the float64 pass, as
    duplex's emulation, multiplies by the dequantized weights.) Without `scaled` each SCB is taken as 1."""
    q = config.get("quantization_config") or {}
    if q.get("quant_method") != "bitsandbytes" or not q.get("load_in_8bit"):
        return dict(tensors)
    out = {name: a for name, a in tensors.items() if not name.endswith((".SCB", ".weight_format"))}
    for name, scb in tensors.items():
        if not name.endswith(".SCB"):
            continue
        module = name[: -len(".SCB")]
        assert int(tensors[module + ".weight_format"]) == 0, module
        codes = tensors[module + ".weight"].astype(np.float32)
        absmax = scb.astype(np.float32) if scaled else np.ones_like(scb, dtype=np.float32)
        values = (codes * absmax[:, None]) * np.float32(7.874015718698502e-3)
        out[module + ".weight"] = values.astype(np.float32).astype(np.float16).astype(np.float64)
    return out


FP8_MAX, INT8_MAX = 448.0, 127.0  # the largest finite E4M3 value; INT8's grid is [-128, 127]
# The GEMM kinds of duplex's "quantization" record whose input is sliced (row-parallel: each tensor-parallel
# slice quantized on its own), by the index of that input: the O projection's only input, an FFN's h.
SLICED_INPUT = {"o_proj": 0, "ffn": 1, "shared_ffn": 1, "expert": 1}


def round_to_e4m3(q):
    """q (float64, |q| <= 448) to the nearest FP8 E4M3 value, ties to the even mantissa: in the binade
    [2^(e-1), 2^e) E4M3's values are the multiples of 2^(e-4), below its smallest normal 2^-6 (subnormals) the
    multiples of 2^-9; np.rint rounds half to even, and an even multiple of the quantum is an even mantissa."""
    _, e = np.frexp(q)  # |q| in [2^(e-1), 2^e); q = 0 gives e = 0
    quantum = np.maximum(e - 4, -9)
    return np.ldexp(np.rint(np.ldexp(q, -quantum)), quantum)


class ActivationQuant:
    """W8A8 activation quantization as duplex's xPU kernels fake-quantize a GEMM's input (vLLM's
    scaled_fp8_quant, per_token_group_quant_fp8, scaled_int8_quant), all in float32: each element v of a reach
    with scale s becomes float16(float32(grid(v / s) x s)), grid FP8 E4M3 (q clamped to +-448, then rounded)
    or INT8 (rint(q) clamped to [-128, 127]); s == 0 gives zeros. Per tensor, s is the one duplex recorded
    (it depends on the whole batch); otherwise the reach is the vector (per token) or each group of `group`
    columns (the last the shorter rest), s = max(min(amax, ub) / q_max, min_scale) (no bound when ub is 0),
    q_max 448 (FP8) or 127 (INT8). LLM.int8() (threshold > 0, bitsandbytes' MatMul8bitLt): INT8 per token, the
    columns duplex recorded as outliers (the batch's: where some token reached the threshold) pass unchanged,
    the others quantized at the token's largest magnitude below the threshold."""

    def __init__(self, int8=False, per_tensor=False, group=0, ub=0.0, min_scale=0.0, threshold=0.0):
        self.int8, self.per_tensor, self.group = int8, per_tensor, group
        self.ub, self.min_scale = np.float32(ub), np.float32(min_scale)
        self.q_max = np.float32(INT8_MAX if int8 else FP8_MAX)
        self.threshold = np.float32(threshold)

    @staticmethod
    def of(config):
        """The quantization of a W8A8 checkpoint's GEMM inputs by its quantization_config; None when duplex
        does not quantize them (16-bit or weight-only formats): bitsandbytes' load_in_8bit (LLM.int8()): INT8
        per token, llm_int8_threshold (default 6.0; 0: plain INT8 per token) its outliers' threshold;
        fp8 with weight_block_size (DeepSeek-V3's, Qwen3's FP8): FP8 per token and weight_block_size[1]
        columns, min_scale 1e-10 / 448; fp8 without it (AutoFP8): FP8 per tensor, dynamic or static (at the
        release's input scales, fused modules' largest: duplex's recorded scales either way);
        compressed-tensors' input_activations: strategy tensor, per tensor; else per token, type float (FP8)
        with min_scale 1 / (448 x 512), type int (INT8) with none; fbgemm_fp8: FP8 per token, min_scale
        1 / (448 x 512), the scales bounded by activation_scale_ub."""
        q = config.get("quantization_config") or {}
        method = q.get("quant_method")
        if (method == "bitsandbytes" or method is None) and q.get("load_in_8bit"):
            return ActivationQuant(int8=True, threshold=q.get("llm_int8_threshold", 6.0))
        per_token_min = np.float32(1.0) / np.float32(FP8_MAX * 512)
        if method == "fp8" and q.get("weight_block_size"):
            return ActivationQuant(group=q["weight_block_size"][1], min_scale=np.float32(1e-10) / np.float32(FP8_MAX))
        if method == "fp8":
            return ActivationQuant(per_tensor=True)  # dynamic, or static: at the scales duplex recorded
        if method == "fbgemm_fp8":
            return ActivationQuant(ub=q["activation_scale_ub"], min_scale=per_token_min)
        if method == "compressed-tensors":
            groups = (q.get("config_groups") or {}).values()
            acts = next((g["input_activations"] for g in groups if g.get("input_activations")), None)
            if acts is None:  # weight-only (W4A16, W8A16)
                return None
            int8 = acts.get("type") == "int"
            if acts.get("strategy") == "tensor":
                return ActivationQuant(int8, per_tensor=True)
            return ActivationQuant(int8, min_scale=0.0 if int8 else per_token_min)
        return None

    def scale(self, reach):  # a dynamic reach's scale (float32)
        if self.threshold > 0:  # LLM.int8(): the magnitudes below the threshold
            reach = reach[np.abs(reach) < self.threshold]
        a = np.float32(np.abs(reach).max()) if reach.size else np.float32(0.0)
        if self.ub > 0:
            a = min(a, self.ub)
        return max(np.float32(a / self.q_max), self.min_scale)

    def fake(self, reach, s):  # the reach's values (FP16, as float64) fake-quantized at scale s (float32)
        s = np.float32(s)
        if s == 0:
            return np.zeros_like(reach)
        q = (reach.astype(np.float32) / s).astype(np.float64)
        grid = np.clip(np.rint(q), -128.0, INT8_MAX) if self.int8 else round_to_e4m3(np.clip(q, -FP8_MAX, FP8_MAX))
        return (grid.astype(np.float32) * s).astype(np.float32).astype(np.float16).astype(np.float64)

    def apply(self, values, scale=None, outliers=None):
        """One vector (or slice) quantized on its own: at `scale` per tensor, else by its reaches' scales;
        LLM.int8(): the `outliers` columns (duplex's record) passing unchanged."""
        if self.per_tensor:
            return self.fake(values, scale)
        if self.threshold > 0:
            out = self.fake(values, self.scale(values))
            out[outliers] = values[outliers]
            return out
        step = self.group or max(1, values.size)
        return np.concatenate([values[:0]] + [self.fake(values[i : i + step], self.scale(values[i : i + step]))
                                              for i in range(0, values.size, step)])


FP4_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def dequantize_mxfp4(tensors):
    """gpt-oss's MXFP4 experts (HF convert_moe_packed_tensors): NAME_blocks [E, out, G, 16] (two E2M1 codes a
    byte, the first in the low nibble) times 2^(NAME_scales [E, out, G] - 127), as NAME [E, in, out]."""
    out = {}
    for name, a in tensors.items():
        if name.endswith("_scales") and name[: -len("_scales")] + "_blocks" in tensors:
            continue
        if not name.endswith("_blocks"):
            out[name] = a
            continue
        base = name[: -len("_blocks")]
        blocks, scales = a.astype(np.int64), tensors[base + "_scales"].astype(np.int64)
        codes = np.stack([blocks & 0x0F, blocks >> 4], axis=-1).reshape(*blocks.shape[:-1], -1)  # [E, out, G, 32]
        values = FP4_VALUES[codes] * np.exp2(scales - 127.0)[..., None]
        out[base] = values.reshape(values.shape[0], values.shape[1], -1).transpose(0, 2, 1)
    return out


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        begin, end = e["data_offsets"]
        raw = body[begin:end]
        if e["dtype"] == "F16":
            a = np.frombuffer(raw, dtype="<f2").astype(np.float64)
        elif e["dtype"] == "F32":
            a = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        elif e["dtype"] == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        elif e["dtype"] == "F8_E4M3":
            a = e4m3(np.frombuffer(raw, dtype=np.uint8))
        elif e["dtype"] == "I8":  # W8A8-INT8 and LLM.int8() weights, scaled by dequantize_fp8 / dequantize_bnb_int8
            a = np.frombuffer(raw, dtype=np.int8).astype(np.float64)
        elif e["dtype"] == "U8":  # MXFP4 blocks and scales, NF4 / FP4 parts, LLM.int8()'s weight_format
            a = np.frombuffer(raw, dtype=np.uint8)
        elif e["dtype"] == "I32":  # 4-bit words and GPTQ's g_idx, decoded by dequantize_int4
            a = np.frombuffer(raw, dtype="<i4")
        elif e["dtype"] == "I64":  # W4A16's weight_shape
            a = np.frombuffer(raw, dtype="<i8")
        else:
            raise ValueError(f"{path}: {name}: dtype {e['dtype']}")
        out[name] = a.reshape(e["shape"])
    return out


def dbrx_as_mixtral(c, tensors):
    """DBRX (HF DbrxForCausalLM, DbrxConfig's defaults) as Mixtral's fields and tensor names: its fused Wqkv
    split by rows into q / k / v, each expert's rows of the fused w1 / v1 / w2 (DbrxExperts: view(E, F, H)[e];
    DbrxExpertGLU multiplies by w1^T, v1^T and w2 untransposed, so Mixtral's w2 is w2[e]^T). The clamp, the
    bias-free LayerNorm and the p-norm of the routing weights stay DBRX's (HfModel)."""
    attn, ffn = c.get("attn_config") or {}, c.get("ffn_config") or {}
    hidden, heads, kv_heads = c["d_model"], c["n_heads"], attn.get("kv_n_heads", 1)
    experts, f = ffn["moe_num_experts"], ffn["ffn_hidden_size"]
    mixtral = {"model_type": "dbrx", "num_hidden_layers": c["n_layers"], "hidden_size": hidden,
               "num_attention_heads": heads, "num_key_value_heads": kv_heads,
               "rope_theta": attn.get("rope_theta", 10000.0), "tie_word_embeddings": c.get("tie_word_embeddings", False),
               "hidden_act": (ffn.get("ffn_act_fn") or {}).get("name", "silu"),
               "num_local_experts": experts, "num_experts_per_tok": ffn.get("moe_top_k", 1)}
    t = {"model.embed_tokens.weight": tensors["transformer.wte.weight"],
         "model.norm.weight": tensors["transformer.norm_f.weight"]}
    if "lm_head.weight" in tensors:
        t["lm_head.weight"] = tensors["lm_head.weight"]
    q, kv = hidden, kv_heads * (hidden // heads)
    for layer in range(c["n_layers"]):
        b, p = f"transformer.blocks.{layer}.", f"model.layers.{layer}."
        t[p + "input_layernorm.weight"] = tensors[b + "norm_attn_norm.norm_1.weight"]
        t[p + "post_attention_layernorm.weight"] = tensors[b + "norm_attn_norm.norm_2.weight"]
        qkv = tensors[b + "norm_attn_norm.attn.Wqkv.weight"]
        for name, rows in (("q", qkv[:q]), ("k", qkv[q : q + kv]), ("v", qkv[q + kv :])):
            t[p + f"self_attn.{name}_proj.weight"] = rows
        t[p + "self_attn.o_proj.weight"] = tensors[b + "norm_attn_norm.attn.out_proj.weight"]
        t[p + "block_sparse_moe.gate.weight"] = tensors[b + "ffn.router.layer.weight"]
        w1, v1, w2 = (tensors[b + "ffn.experts.mlp." + n].reshape(experts, f, hidden) for n in ("w1", "v1", "w2"))
        for e in range(experts):
            x = f"{p}block_sparse_moe.experts.{e}."
            t[x + "w1.weight"], t[x + "w3.weight"], t[x + "w2.weight"] = w1[e], v1[e], w2[e].T
    return mixtral, t


def read_checkpoint(directory):
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    index = os.path.join(directory, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        for name in files:
            tensors.update(read_safetensors(os.path.join(directory, name)))
    else:
        tensors = read_safetensors(os.path.join(directory, "model.safetensors"))
    return config, tensors


class HfModel:
    """The HF forward pass of one checkpoint, float64. `drop` names a feature to ignore (self-test)."""

    def __init__(self, config, tensors, drop=None):
        c = config
        q = c.get("quantization_config") or {}
        self.fp8 = q.get("quant_method") in ("fp8", "fbgemm_fp8") or q.get("format") in (
            "float-quantized",
            "int-quantized",
        )
        self.int4 = q.get("quant_method") in ("awq", "gptq") or q.get("format") == "pack-quantized"
        self.bnb4 = q.get("quant_method") == "bitsandbytes" and bool(q.get("load_in_4bit"))
        self.bnb_fp4 = self.bnb4 and q.get("bnb_4bit_quant_type", "fp4") == "fp4"
        self.bnb8 = q.get("quant_method") == "bitsandbytes" and bool(q.get("load_in_8bit"))
        # W8A8: the GEMM inputs duplex's "quantization" record holds (logits' `quantization`) are taken and
        # fake-quantized by self.act_quant (gemm_input); drop "activation_quant" ignores the record.
        self.act_quant_dropped = drop == "activation_quant"
        self.act_quant = None if self.act_quant_dropped else ActivationQuant.of(c)
        self.records, self.input_ratio, self.forced_inputs = {}, 0.0, 0
        tensors = dequantize_fp8(c, dequantize_mxfp4(tensors), scaled=drop != "fp8_scales")
        tensors = dequantize_int4(c, tensors, zeros=drop != "int4_zeros")
        tensors = dequantize_bnb4(c, tensors, scaled=drop != "bnb4_scales", own_table=drop != "bnb4_code")
        tensors = dequantize_bnb_int8(c, tensors, scaled=drop != "bnb8_scales")
        self.t = dict(tensors)
        if c["model_type"] == "llama4":  # Llama4ForConditionalGeneration: its text model, the vision parts dropped
            c = dict(c.get("text_config") or {}, model_type="llama4_text")
            prefix = "language_model."
            self.t = {name[len(prefix) :]: a for name, a in tensors.items() if name.startswith(prefix)}
        if c["model_type"] == "llama4_text":
            c = {**LLAMA4_TEXT_DEFAULTS, **c}
        # DBRX: DbrxAttention clamps Wqkv's output to +-clip_qkv; its LayerNorms have no bias (eps: torch's
        # 1e-5); DbrxRouter divides the top-k softmax probabilities by their p-norm (moe_normalize_expert_weights,
        # default 1: their sum; None: as they are).
        self.dbrx = c["model_type"] == "dbrx"
        self.clip, self.norm_bias = None, True
        if self.dbrx:
            self.clip = (c.get("attn_config") or {}).get("clip_qkv")
            p_norm = (c.get("ffn_config") or {}).get("moe_normalize_expert_weights", 1)
            assert p_norm in (1, None), "p-norms other than 1 are not what duplex emulates"
            c, self.t = dbrx_as_mixtral(c, tensors)
            c["norm_topk_prob"] = p_norm == 1
            self.norm_bias = False
        self.type = c["model_type"]
        # gpt-oss (GptOssConfig's defaults): a sink logit per head in every softmax, a biased router whose top-k
        # logits are softmaxed, experts fused (gate_up_proj with gate and up interleaved, input-major) and biased
        # under the clamped SwiGLU, q / k / v / o biased, a window on the layer_types layers (else the even ones).
        self.gpt_oss = self.type == "gpt_oss"
        self.layers = c["num_hidden_layers"]
        self.hidden = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.kv_heads = c.get("num_key_value_heads") or self.heads
        self.head_dim = c.get("head_dim") or self.hidden // self.heads
        # Phi3's partial RoPE (Phi-4-mini): int(head_dim x partial_rotary_factor) of each head rotated.
        self.partial = c.get("partial_rotary_factor", 1.0) if self.type == "phi3" else 1.0
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.theta = c.get("rope_theta", 150000.0 if self.gpt_oss else 10000.0)
        self.rope_scaling = c.get("rope_scaling")
        self.max_positions = c.get("max_position_embeddings")
        self.original_positions = c.get("original_max_position_embeddings")
        self.tied = c.get("tie_word_embeddings", False)
        # OPT and StarCoder2: LayerNorm (gain and bias), a two-matrix FFN with biases, every projection biased.
        self.opt, self.starcoder2 = self.type == "opt", self.type == "starcoder2"
        self.layer_norm = self.opt or self.starcoder2
        self.act = c.get("hidden_act", "silu")  # ACT2FN[hidden_act] in every family's MLP
        self.mlp_bias = False
        self.positions = self.opt  # OPTLearnedPositionalEmbedding: position p reads row p + 2
        if self.opt:
            self.eps = 1e-5  # torch.nn.LayerNorm's default; OPT's config has no eps
            self.tied = c.get("tie_word_embeddings", True)
            self.act = c.get("activation_function", "relu")
            self.mlp_bias = c.get("enable_bias", True)
            assert c.get("do_layer_norm_before", True) and c.get("word_embed_proj_dim", self.hidden) == self.hidden
        elif self.starcoder2:
            self.eps = c.get("norm_epsilon", 1e-5)
            self.tied = c.get("tie_word_embeddings", True)
            self.act = c.get("hidden_act", "gelu_pytorch_tanh")
            self.mlp_bias = c.get("use_bias", True)
        # Gemma: GemmaRMSNorm scales by (1 + weight); the embedding rows are multiplied by sqrt(hidden_size)
        # rounded to the model's dtype; GemmaMLP's activation is hidden_activation (else gelu_pytorch_tanh).
        self.gemma = self.type in ("gemma", "gemma2", "gemma3_text")
        self.gain_offset = 1.0 if self.gemma else 0.0
        # Gemma 2 (Gemma2DecoderLayer, Gemma2Attention, Gemma2ForCausalLM; Gemma2Config's defaults): each block's
        # output normed (post_attention_layernorm; the norm before the FFN is pre_feedforward_layernorm, and
        # post_feedforward_layernorm after it), scores scaled by query_pre_attn_scalar^-0.5 and soft-capped
        # (cap x tanh(s / cap)) before the mask, the logits soft-capped likewise.
        # Gemma 3 (Gemma3TextConfig's defaults): Gemma 2's layer with q / k norms per head (by 1 + weight), no caps
        # unless stated, its windowed layers rotated with rope_local_base_freq and default RoPE, the full ones with
        # rope_theta (1e6) and rope_scaling.
        self.gemma2 = self.type in ("gemma2", "gemma3_text")  # the post norms, scalar and caps
        self.gemma3 = self.type == "gemma3_text"
        self.scaling = self.head_dim ** -0.5
        self.attn_cap = self.final_cap = None
        if self.gemma2:
            self.scaling = c.get("query_pre_attn_scalar", 256) ** -0.5
            self.attn_cap = c.get("attn_logit_softcapping", None if self.gemma3 else 50.0)
            self.final_cap = c.get("final_logit_softcapping", None if self.gemma3 else 30.0)
        self.local_theta = None
        if self.gemma3:
            self.theta = c.get("rope_theta", 1e6)
            self.local_theta = c.get("rope_local_base_freq", 10000.0)
        self.embed_scale = 1.0
        if self.gemma:
            self.tied = c.get("tie_word_embeddings", True)
            self.act = c.get("hidden_activation") or "gelu_pytorch_tanh"
            assert c.get("torch_dtype") == "float16", "the normalizer is rounded to float16 here"
            self.embed_scale = float(np.float16(np.sqrt(self.hidden)))
        # Phi-3: Llama's layers with q / k / v stacked in self_attn.qkv_proj and gate / up in mlp.gate_up_proj
        # (Phi3Attention / Phi3MLP split them by rows); no biases.
        if self.type == "phi3":
            q, kv, f = self.heads * self.head_dim, self.kv_heads * self.head_dim, c["intermediate_size"]
            for layer in range(self.layers):
                p = f"model.layers.{layer}."
                qkv = self.t.pop(p + "self_attn.qkv_proj.weight")
                for name, rows in (("q", qkv[:q]), ("k", qkv[q : q + kv]), ("v", qkv[q + kv :])):
                    self.t[p + f"self_attn.{name}_proj.weight"] = rows
                gate_up = self.t.pop(p + "mlp.gate_up_proj.weight")
                self.t[p + "mlp.gate_proj.weight"], self.t[p + "mlp.up_proj.weight"] = gate_up[:f], gate_up[f:]
        # Phi-3.5-MoE: Mixtral's names, LayerNorm (eps rms_norm_eps), the sparsemixer router, an LM-head bias.
        self.phimoe = self.type == "phimoe"
        self.sparsemixer = self.phimoe
        self.jitter = c.get("router_jitter_noise", 0.01)
        self.lm_head_bias = self.phimoe and c.get("lm_head_bias", False)
        if self.phimoe:
            self.layer_norm = True
        if self.dbrx:
            self.layer_norm, self.eps = True, 1e-5
        moe_types = ("mixtral", "phimoe", "qwen2_moe", "qwen3_moe", "olmoe", "dbrx", "gpt_oss")
        self.moe = self.type in moe_types
        self.sinks = self.gpt_oss
        if self.gpt_oss:
            self.eps = c.get("rms_norm_eps", 1e-5)
            self.limit = c.get("swiglu_limit", 7.0)
        if self.type in ("mixtral", "phimoe", "dbrx", "gpt_oss"):
            self.experts, self.top_k = c["num_local_experts"], c["num_experts_per_tok"]
            # MixtralSparseMoeBlock always renormalises (PhiMoE: sparsemixer instead; DBRX: by its p-norm).
            self.norm_topk = c.get("norm_topk_prob", True)
        elif self.moe:
            self.experts, self.top_k = c["num_experts"], c["num_experts_per_tok"]
            self.norm_topk = c.get("norm_topk_prob", False)
        self.sparse_step = c.get("decoder_sparse_step", 1)
        self.mlp_only = c.get("mlp_only_layers", []) or []
        # Qwen2 / Qwen2-MoE: q, k, v always biased; the others by attention_bias (o too).
        if self.type in ("qwen2", "qwen2_moe"):
            self.qkv_bias, self.o_bias = True, False
        elif self.opt or self.starcoder2:
            self.qkv_bias = self.o_bias = self.mlp_bias
        else:
            self.qkv_bias = self.o_bias = bool(c.get("attention_bias", self.gpt_oss)) and self.type != "phi3"
        self.qk_norm = {"qwen3": "head", "qwen3_moe": "head", "olmoe": "whole", "gemma3_text": "head"}.get(self.type)
        self.shared = self.type == "qwen2_moe" and c.get("shared_expert_intermediate_size", 0) > 0
        # Sliding window per layer (None: full attention): Mistral / Mixtral window every layer; the Qwen
        # families when use_sliding_window, on the layers layer_types marks (else from max_window_layers on).
        window = c.get("sliding_window")
        self.windows = [None] * self.layers
        if window and self.type in ("mistral", "mixtral", "starcoder2", "phi3"):
            self.windows = [window] * self.layers
        elif self.gpt_oss and c.get("sliding_window", 128):  # layer_types, else the even layers
            types = c.get("layer_types")
            for layer in range(self.layers):
                sliding = types[layer] == "sliding_attention" if types else layer % 2 == 0
                self.windows[layer] = c.get("sliding_window", 128) if sliding else None
        elif self.gemma2 and c.get("sliding_window", 4096):  # layer_types, else Gemma 2's even / Gemma 3's pattern
            types = c.get("layer_types")
            pattern = c.get("sliding_window_pattern", 6)
            for layer in range(self.layers):
                if types:
                    sliding = types[layer] == "sliding_attention"
                else:
                    sliding = (layer + 1) % pattern != 0 if self.gemma3 else layer % 2 == 0
                self.windows[layer] = c.get("sliding_window", 4096) if sliding else None
        elif window and c.get("use_sliding_window") and self.type.startswith("qwen"):
            types = c.get("layer_types")
            for layer in range(self.layers):
                sliding = types[layer] == "sliding_attention" if types else layer >= c.get("max_window_layers", 0)
                self.windows[layer] = window if sliding else None
        self.interleave = False  # RoPE on the pairs (2i, 2i + 1) (DeepSeek, Llama 4), else HF's rotate_half
        # Llama 4 (Llama4TextModel, Llama4TextConfig's defaults): RoPE (interleaved) on the no_rope_layers layers,
        # then q and k L2-normed per head (use_qk_norm, no weight, eps rms_norm_eps); the other (NoPE) layers'
        # queries scaled by the attention temperature at their position; a chunked_attention layer's query sees
        # only its own chunk of attention_chunk_size positions; Llama4TextMoe on the moe_layers, whose top-k
        # experts (gate_up_proj / down_proj input-major, gate then up) take the input times the expert's sigmoid
        # score, beside a shared expert; the other layers a Llama MLP (feed_forward.*, intermediate_size_mlp).
        self.llama4 = self.type == "llama4_text"
        self.use_rope = [True] * self.layers
        self.chunks = [None] * self.layers  # chunked attention's chunk size per layer (None: full attention)
        self.temperature = False
        self.router_input_dropped = False
        if self.llama4:
            self.experts, self.top_k = c["num_local_experts"], c["num_experts_per_tok"]
            step, moe_layers = c["interleave_moe_layer_step"], c["moe_layers"]
            self.moe_layers = set(moe_layers if moe_layers is not None else range(step - 1, self.layers, step))
            interval = c["no_rope_layer_interval"]
            no_rope = c["no_rope_layers"] or [int((i + 1) % interval != 0) for i in range(self.layers)]
            self.use_rope = [bool(u) for u in no_rope[: self.layers]]
            types = c["layer_types"] or ["chunked_attention" if u else "full_attention" for u in self.use_rope]
            chunk = c["attention_chunk_size"]
            self.chunks = [chunk if kind == "chunked_attention" else None for kind in types[: self.layers]]
            self.qk_norm = "l2" if c["use_qk_norm"] else None
            self.temperature = bool(c["attn_temperature_tuning"])
            self.floor_scale, self.attn_scale = float(c["floor_scale"]), float(c["attn_scale"])
            self.interleave = True
        # DeepSeek-V2 / V3 (the hub's modeling_deepseek.py, whose config defaults these are): MLA attention (q by
        # q_proj or the q_a / q_b low-rank pair, k and v from the normalized kv_a latent, one k_pe for all heads),
        # the interleaved RoPE over qk_rope_head_dim, dense FFNs before first_k_dense_replace, then DeepSeek MoE.
        self.deepseek = self.type in ("deepseek_v2", "deepseek_v3")
        if self.deepseek:
            v3 = self.type == "deepseek_v3"
            self.q_lora, self.kv_lora = c.get("q_lora_rank", 1536), c.get("kv_lora_rank", 512)
            self.nope, self.rope_dim = c.get("qk_nope_head_dim", 128), c.get("qk_rope_head_dim", 64)
            self.v_dim = c.get("v_head_dim", 128)
            self.head_dim = self.rope_dim  # RoPE's dimension (inv_freq, rope)
            self.latent_eps = 1e-6  # q_a_layernorm / kv_a_layernorm are DeepseekV2RMSNorm(rank): the default eps
            self.interleave = c.get("rope_interleave", True)  # HF's DeepseekV3Config only; the hub's code always
            self.experts = c.get("n_routed_experts") or 0  # None: no MoE layer
            self.top_k = c.get("num_experts_per_tok")
            self.n_shared = c.get("n_shared_experts") or 0
            self.first_dense, self.moe_freq = c.get("first_k_dense_replace", 0), c.get("moe_layer_freq", 1)
            self.topk_method = c.get("topk_method", "noaux_tc" if v3 else "greedy")
            self.scoring = c.get("scoring_func", "sigmoid" if v3 else "softmax")
            self.n_group, self.topk_group = c.get("n_group") or 1, c.get("topk_group") or 1
            self.norm_topk = c.get("norm_topk_prob", False)
            self.routed_scaling = c.get("routed_scaling_factor", 1.0)
            self.correction_bias = self.topk_method == "noaux_tc"
            # The hub's MoEGate: V2 softmax with greedy / group_limited_greedy (HF's DeepseekV2Moe too), V3 sigmoid
            # with noaux_tc (HF's DeepseekV3MoE whatever topk_method says). V2's norm_topk_prob renormalises without
            # the routed scale in the hub's code and is ignored by HF's: no reference, refused.
            if v3 and (self.topk_method, self.scoring) != ("noaux_tc", "sigmoid"):
                raise ValueError(f"deepseek_v3: {self.topk_method} / {self.scoring} (noaux_tc / sigmoid only)")
            if not v3 and (self.topk_method not in ("greedy", "group_limited_greedy") or self.scoring != "softmax"):
                raise ValueError(f"deepseek_v2: {self.topk_method} / {self.scoring} (greedy or group_limited_greedy "
                                 "/ softmax only)")
            if not v3 and self.norm_topk and self.experts and self.top_k > 1:
                raise ValueError("deepseek_v2 with norm_topk_prob: the hub's code and HF's differ")
            if self.experts and self.topk_method != "greedy":
                group = self.experts // self.n_group
                assert group * self.n_group == self.experts and self.topk_group <= self.n_group, c
                assert group >= 2 or self.topk_method != "noaux_tc", "noaux_tc scores a group by its top 2"
        if drop == "qkv_bias":
            self.qkv_bias = False
        elif drop == "qk_norm":
            self.qk_norm = None
        elif drop == "norm_topk":
            self.norm_topk = not self.norm_topk
        elif drop == "positions":
            self.positions = False
        elif drop == "mlp_bias":
            self.mlp_bias = False
        elif drop == "activation":  # SiLU in the model's FFN instead
            self.act = "silu"
        elif drop == "gain_offset":  # Gemma's norms as Llama's
            self.gain_offset = 0.0
        elif drop == "sparsemixer":  # PhiMoE routed as Mixtral (softmax top 2, renormalised)
            self.sparsemixer = False
        elif drop == "lm_head_bias":
            self.lm_head_bias = False
        elif drop == "partial_rotary":  # the whole head rotated
            self.partial = 1.0
        elif drop == "rope_scaling":  # DeepSeek: the softmax mscale goes with it
            self.rope_scaling = None
        elif drop == "correction_bias":  # DeepSeek noaux_tc routed on the plain sigmoid scores
            self.correction_bias = False
        elif drop == "group_limit":  # DeepSeek group_limited_greedy as greedy
            self.topk_method = "greedy"
        elif drop == "routed_scaling":
            self.routed_scaling = 1.0
        elif drop == "clip_qkv":  # DBRX's q, k, v unclamped
            self.clip = None
        elif drop == "attn_softcap":  # Gemma 2's scores uncapped
            self.attn_cap = None
        elif drop == "sinks":  # gpt-oss's softmax without its sink logits
            self.sinks = False
        elif drop == "local_rope":  # Gemma 3's windowed layers rotated as its full ones
            self.local_theta = None
        elif drop == "rope_interleave":  # DeepSeek's q_pe / k_pe, Llama 4's q / k rotated by rotate_half as they are
            self.interleave = not self.interleave
        elif drop == "chunked_attention":  # Llama 4's chunked layers attending as its full ones
            self.chunks = [None] * self.layers
        elif drop == "attn_temperature":  # Llama 4's NoPE queries unscaled
            self.temperature = False
        elif drop == "router_input":  # Llama 4's router score on the expert's output instead of its input
            self.router_input_dropped = True
        self.shared_gate_dropped = drop == "shared_gate"
        if drop == "window":
            self.windows = [None] * self.layers

    def w(self, name):
        return self.t[name]

    def rms(self, x, gain, eps=None):
        var = np.mean(x * x, axis=-1, keepdims=True)
        return x / np.sqrt(var + (self.eps if eps is None else eps)) * (self.gain_offset + gain)

    def norm(self, x, name):  # the model's norm `name` (without ".weight"): RMSNorm, or LayerNorm (+ its bias)
        if not self.layer_norm:
            return self.rms(x, self.w(name + ".weight"))
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        y = (x - mean) / np.sqrt(var + self.eps) * self.w(name + ".weight")
        return y + self.w(name + ".bias") if self.norm_bias else y

    def layer_prefix(self, layer):
        return f"model.decoder.layers.{layer}." if self.opt else f"model.layers.{layer}."

    def activate(self, x):  # HF ACT2FN[self.act]
        if self.act == "relu":
            return np.maximum(x, 0.0)
        if self.act in ("silu", "swish"):
            return x / (1.0 + np.exp(-x))
        if self.act == "gelu":  # the exact form, x Phi(x)
            return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / np.sqrt(2.0)))
        if self.act in ("gelu_pytorch_tanh", "gelu_new", "gelu_fast"):
            return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))
        raise ValueError(f"activation {self.act}")

    def two_matrix_mlp(self, layer, x):  # OPT fc1 / fc2, StarCoder2 mlp.c_fc / c_proj
        p = self.layer_prefix(layer) + ("" if self.opt else "mlp.")
        fc1, fc2 = ("fc1", "fc2") if self.opt else ("c_fc", "c_proj")
        h = self.gemm_input(x, layer, "ffn", 0) @ self.w(p + fc1 + ".weight").T
        if self.mlp_bias:
            h = h + self.w(p + fc1 + ".bias")
        y = self.gemm_input(self.activate(h), layer, "ffn", 1) @ self.w(p + fc2 + ".weight").T
        return y + self.w(p + fc2 + ".bias") if self.mlp_bias else y

    def is_moe_layer(self, layer):
        if self.deepseek:  # DeepseekV2DecoderLayer
            return bool(self.experts) and layer >= self.first_dense and layer % self.moe_freq == 0
        if self.llama4:
            return layer in self.moe_layers
        if not self.moe:
            return False
        if self.type in ("mixtral", "olmoe", "dbrx", "gpt_oss"):
            return True
        return layer not in self.mlp_only and (layer + 1) % self.sparse_step == 0

    def rope_kind(self):
        r = self.rope_scaling
        return (r.get("rope_type") or r.get("type")) if r else "default"

    def attention_factor(self, long=False):  # on cos and sin: LongRoPE's (Phimoe: short / long_mscale), YaRN's
        r = self.rope_scaling
        if self.deepseek:  # DeepseekV2YarnRotaryEmbedding's _mscale
            if self.rope_kind() != "yarn":
                return 1.0
            return yarn_mscale(r["factor"], r.get("mscale", 1)) / yarn_mscale(r["factor"], r.get("mscale_all_dim", 0))
        if self.rope_kind() == "yarn":
            return r.get("attention_factor") or 0.1 * np.log(r["factor"]) + 1.0
        if self.rope_kind() not in ("longrope", "su"):
            return 1.0
        if self.phimoe and r.get("short_mscale"):  # PhimoeRotaryEmbedding: within / beyond the original length
            return r["long_mscale"] if long and r.get("long_mscale") else r["short_mscale"]
        if r.get("attention_factor"):
            return r["attention_factor"]
        original = self.original_positions or r.get("original_max_position_embeddings") or self.max_positions
        factor = self.max_positions / original  # _compute_longrope_parameters
        return 1.0 if factor <= 1.0 else np.sqrt(1 + np.log(factor) / np.log(original))

    def rotary(self):  # the elements of a head RoPE rotates (its first ones)
        return int(self.head_dim * self.partial)

    def inv_freq(self, long=False):  # HF ROPE_INIT_FUNCTIONS: default, linear, llama3, longrope
        d = self.rotary()
        inv_freq = 1.0 / (self.theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
        r = self.rope_scaling
        kind = self.rope_kind()
        if kind in ("longrope", "su"):  # the short factors within the original length, the long ones beyond
            return inv_freq / np.array(r["long_factor" if long else "short_factor"], dtype=np.float64)
        if kind == "linear":
            return inv_freq / r["factor"]
        if kind == "yarn":  # _compute_yarn_parameters (no mscale); DeepseekV2YarnRotaryEmbedding's too
            factor = r["factor"]
            original = r.get("original_max_position_embeddings") or (4096 if self.deepseek else self.max_positions)
            fast, slow = r.get("beta_fast") or 32, r.get("beta_slow") or 1

            def correction_dim(rotations):
                return d * np.log(original / (rotations * 2 * np.pi)) / (2 * np.log(self.theta))

            truncate = r.get("truncate", True)  # gpt-oss: False, the range not rounded to whole dimensions
            low = max(np.floor(correction_dim(fast)) if truncate else correction_dim(fast), 0)
            high = min(np.ceil(correction_dim(slow)) if truncate else correction_dim(slow), d - 1)
            if low == high:
                high += 0.001
            ramp = np.clip((np.arange(d // 2, dtype=np.float64) - low) / (high - low), 0, 1)
            extrapolation = 1 - ramp
            return inv_freq / factor * (1 - extrapolation) + inv_freq * extrapolation
        if kind == "llama3":  # _compute_llama3_parameters
            factor, low, high = r["factor"], r["low_freq_factor"], r["high_freq_factor"]
            old = r["original_max_position_embeddings"]
            wavelen = 2 * np.pi / inv_freq
            scaled = np.where(wavelen > old / low, inv_freq / factor, inv_freq)
            with np.errstate(divide="ignore", invalid="ignore"):  # high == low (Llama 4 Scout): no medium band
                smooth = (old / wavelen - low) / (high - low)
                smoothed = (1 - smooth) * scaled / factor + smooth * scaled
            medium = ~(wavelen < old / high) & ~(wavelen > old / low)
            return np.where(medium, smoothed, scaled)
        assert kind == "default", kind
        return inv_freq

    def dynamic_inv_freq(self, seq_len):  # _compute_dynamic_ntk_parameters at seq_len
        # HF generate (dynamic_rope_update): each forward's inv_freq is for its longest position, and cached keys
        # keep theirs, so the prompt is rotated at its length and each later token at its position + 1.
        d, original, factor = self.rotary(), self.max_positions, self.rope_scaling["factor"]
        seq_len = max(seq_len, original)
        base = self.theta * ((factor * seq_len / original) - (factor - 1)) ** (d / (d - 2))
        return 1.0 / (base ** (np.arange(0, d, 2, dtype=np.float64) / d))

    def rope(self, x, positions):  # x [T, heads, d]; HF rotate_half (DeepSeek, Llama 4: the interleaved pairs)
        d = self.rotary()
        if d < x.shape[-1]:  # partial RoPE: the first d rotated, the rest passed (HF Phi3's q_rot / q_pass)
            return np.concatenate([self.rope(x[..., :d], positions), x[..., d:]], axis=-1)
        # HF generate picks length-dependent frequencies per forward by its longest position and keeps cached
        # keys as rotated: the prompt's tokens at the prompt's length, each later token at its position + 1.
        lengths = [max(self.prompt_len, int(p) + 1) for p in positions]
        kind = self.rope_kind()
        if kind == "dynamic":
            freqs = np.stack([p * self.dynamic_inv_freq(n) for p, n in zip(positions, lengths)])
        elif kind in ("longrope", "su"):  # LongRoPE: the long factors beyond the original length
            original = self.original_positions or self.rope_scaling.get("original_max_position_embeddings")
            longs = [n > original for n in lengths]
            freqs = np.stack([p * self.inv_freq(long) for p, long in zip(positions, longs)])
            scale = np.array([self.attention_factor(long) for long in longs])[:, None, None]
        else:
            freqs = np.outer(positions, self.inv_freq())
        if kind not in ("longrope", "su"):
            scale = self.attention_factor()
        if self.interleave:  # x[2i] + i x[2i+1] times scale e^(i pos inv_freq[i])
            z = (x[..., 0::2] + 1j * x[..., 1::2]) * (scale * np.exp(1j * freqs))[:, None, :]
            return np.stack([z.real, z.imag], axis=-1).reshape(x.shape)
        emb = np.concatenate([freqs, freqs], axis=-1)
        cos, sin = scale * np.cos(emb)[:, None, :], scale * np.sin(emb)[:, None, :]
        rotated = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], axis=-1)
        return x * cos + rotated * sin

    def gated_ffn(self, x, w_gate, w_up, w_down, layer, gemm, expert=None, row=None):
        """act(x w_gate^T) * (x w_up^T), times w_down^T; x and the intermediate h as `gemm`'s inputs 0 and 1
        (gemm_input: x [T, H], or one position's [H] at `row`)."""
        x = self.gemm_input(x, layer, gemm, 0, expert, row)
        h = self.activate(x @ w_gate.T) * (x @ w_up.T)
        return self.gemm_input(h, layer, gemm, 1, expert, row) @ w_down.T

    def mlp(self, prefix, x, layer, gemm="ffn", expert=None, row=None):  # gate_proj / up_proj / down_proj
        w = [self.w(prefix + name + "_proj.weight") for name in ("gate", "up", "down")]
        return self.gated_ffn(x, *w, layer, gemm, expert, row)

    def gemm_input(self, x, layer, gemm, k=0, expert=None, row=None):
        """Input k of `gemm` ("qkv", "o_proj", "ffn", "shared_ffn", "expert" (of global `expert`)) in `layer`,
        as duplex's xPU quantized it: x [T, n] (row i: position i), or one position's [n] (`row`: its
        position). A position the record (self.records) holds takes duplex's input in place of x's row,
        checked against it and fake-quantized (quantize_input); the others stay as they are (no record: its
        GEMM ran unquantized, on the Logic-PIM or in 16 bits)."""
        if not self.records:
            return x
        rows, positions = (x[None], [row]) if row is not None else (x, range(x.shape[0]))
        out = rows
        for i, position in enumerate(positions):
            entry = self.records.get((int(position), layer, gemm, None if expert is None else int(expert)))
            if entry is not None:
                out = out.copy() if out is rows else out
                out[i] = self.quantize_input(rows[i], entry, k)
        return out[0] if row is not None else out

    def quantize_input(self, mine, entry, k):
        """Duplex's input k of a record entry (FP16 values before quantization) fake-quantized by
        self.act_quant, after checking it against the NumPy value `mine`: max |mine - duplex's| <= 2^-6 x
        max(1, max |mine|) (the worst ratio to that bound kept in self.input_ratio). The sliced input
        (SLICED_INPUT: the O projection's, an FFN's h) in entry["slices"] contiguous equal parts, each on its
        own; per tensor, the entry's scales in order: one per input, a sliced one's one per slice."""
        got = np.array(entry["inputs"][k], dtype=np.float64)
        if got.shape != mine.shape:
            raise ValueError(f"quantized {entry['gemm']} input {k}: {got.shape[0]} values, the model's {mine.shape}")
        bound = RELATIVE_BOUND * max(1.0, float(np.abs(mine).max()))
        self.input_ratio = max(self.input_ratio, float(np.abs(mine - got).max()) / bound)
        self.forced_inputs += 1
        counts = [entry["slices"] if SLICED_INPUT.get(entry["gemm"]) == j else 1 for j in range(len(entry["inputs"]))]
        first, n = sum(counts[:k]), counts[k]  # the input's first scale, its slices
        scales = entry.get("scales")
        if (scales is not None) != self.act_quant.per_tensor or (scales is not None and len(scales) != sum(counts)):
            raise ValueError(f"quantized {entry['gemm']}: scales {scales} for the config's quantization")
        outliers = entry.get("outlier_columns")
        if (outliers is not None) != (self.act_quant.threshold > 0) or (outliers is not None and len(outliers) != sum(counts)):
            raise ValueError(f"quantized {entry['gemm']}: outlier_columns {outliers} for the config's quantization")
        if got.size % n:
            raise ValueError(f"quantized {entry['gemm']}: {got.size} values in {n} slices")
        width = got.size // n
        parts = []
        for i in range(n):
            part = got[i * width : (i + 1) * width]
            columns = None
            if outliers is not None:  # every element at or above the threshold in a recorded column
                columns = np.array(outliers[first + i], dtype=np.int64)
                reached = np.flatnonzero(np.abs(part) >= self.act_quant.threshold)
                if not np.isin(reached, columns).all() or (columns.size and (columns.min() < 0 or columns.max() >= width)):
                    raise ValueError(f"quantized {entry['gemm']}: outlier_columns {outliers[first + i]} miss the input's")
            parts.append(self.act_quant.apply(part, scales[first + i] if scales is not None else None, columns))
        return np.concatenate(parts)

    def sparsemixer_route(self, logits):  # HF sparsemixer (inference): [(expert, weight)] x 2
        chosen, skip = [], None
        for _ in range(2):
            masked = logits.copy()
            if skip is not None:
                masked[skip] = -np.inf
            top = int(np.argmax(masked))
            m = logits[top]
            with np.errstate(invalid="ignore", divide="ignore"):
                far = (m - logits) / np.maximum(np.abs(logits), m) > 2 * self.jitter
            gates = np.where(far, -np.inf, masked)
            chosen.append((top, 1.0 / np.exp(gates - m).sum()))
            skip = top
        return chosen

    def gpt_oss_moe(self, layer, x):  # GptOssMLP: GptOssTopKRouter, then GptOssExperts
        p = f"model.layers.{layer}.mlp."
        logits = x @ self.w(p + "router.weight").T + self.w(p + "router.bias")
        gate_up, gate_up_bias = self.w(p + "experts.gate_up_proj"), self.w(p + "experts.gate_up_proj_bias")
        down, down_bias = self.w(p + "experts.down_proj"), self.w(p + "experts.down_proj_bias")
        out = np.zeros_like(x)
        for t in range(x.shape[0]):
            order = np.argsort(-logits[t], kind="stable")[: self.top_k]  # torch.topk of the logits
            weights = np.exp(logits[t, order] - logits[t, order].max())
            weights /= weights.sum()  # softmax over the chosen logits
            for e, wt in zip(order, weights):
                h = self.gemm_input(x[t], layer, "expert", 0, e, t) @ gate_up[e] + gate_up_bias[e]
                gate, up = np.minimum(h[0::2], self.limit), np.clip(h[1::2], -self.limit, self.limit)
                glu = gate / (1.0 + np.exp(-1.702 * gate))
                h = self.gemm_input((up + 1) * glu, layer, "expert", 1, e, t)
                out[t] += wt * (h @ down[e] + down_bias[e])
        return out

    def sparse_moe(self, layer, x):
        if self.gpt_oss:
            return self.gpt_oss_moe(layer, x)
        p = f"model.layers.{layer}."
        if self.type in ("mixtral", "phimoe", "dbrx"):
            gate_w = self.w(p + "block_sparse_moe.gate.weight")
        else:
            gate_w = self.w(p + "mlp.gate.weight")
        logits = x @ gate_w.T
        probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        out = np.zeros_like(x)
        for t in range(x.shape[0]):
            if self.sparsemixer:
                route = self.sparsemixer_route(logits[t])
            else:
                order = np.argsort(-probs[t], kind="stable")[: self.top_k]
                weights = probs[t, order]
                if self.norm_topk:
                    weights = weights / weights.sum()
                route = zip(order, weights)
            for e, wt in route:
                if self.type in ("mixtral", "phimoe", "dbrx"):
                    q = f"{p}block_sparse_moe.experts.{e}."
                    w = [self.w(q + name + ".weight") for name in ("w1", "w3", "w2")]
                    y = self.gated_ffn(x[t], *w, layer, "expert", e, t)
                else:
                    y = self.mlp(f"{p}mlp.experts.{e}.", x[t], layer, "expert", e, t)
                out[t] += wt * y
        if self.shared:
            shared = self.mlp(p + "mlp.shared_expert.", x, layer, "shared_ffn")
            if not self.shared_gate_dropped:
                g = x @ self.w(p + "mlp.shared_expert_gate.weight").T
                shared = shared / (1.0 + np.exp(-g))
            out += shared
        return out

    def llama4_moe(self, layer, x):  # Llama4TextMoe: Llama4Router, Llama4TextExperts, the shared Llama4TextMLP
        p = f"model.layers.{layer}.feed_forward."
        logits = x @ self.w(p + "router.weight").T
        gate_up, down = self.w(p + "experts.gate_up_proj"), self.w(p + "experts.down_proj")  # [E, H, 2F], [E, F, H]
        f = down.shape[1]
        out = self.mlp(p + "shared_expert.", x, layer, "shared_ffn")
        for t in range(x.shape[0]):
            for e in np.argsort(-logits[t], kind="stable")[: self.top_k]:  # torch.topk of the logits
                score = 1.0 / (1.0 + np.exp(-logits[t, e]))  # the others' sigmoid(-inf): a zero input, no output
                z = x[t] if self.router_input_dropped else score * x[t]
                h = self.gemm_input(z, layer, "expert", 0, e, t) @ gate_up[e]  # chunk(2): gate F, then up F
                y = self.gemm_input(self.activate(h[:f]) * h[f:], layer, "expert", 1, e, t) @ down[e]
                out[t] += score * y if self.router_input_dropped else y
        return out

    def deepseek_route(self, logits, bias):  # the hub's MoEGate (eval) on one token: [(expert, weight)]
        if self.scoring == "softmax":
            scores = np.exp(logits - logits.max())
            scores /= scores.sum()
        else:
            scores = 1.0 / (1.0 + np.exp(-logits))
        choice = scores
        if self.topk_method != "greedy":
            if self.topk_method == "noaux_tc" and bias is not None:
                choice = scores + bias
            groups = choice.reshape(self.n_group, -1)
            if self.topk_method == "group_limited_greedy":
                group_scores = groups.max(axis=-1)
            else:  # noaux_tc: a group's two best
                group_scores = np.sort(groups, axis=-1)[:, -2:].sum(axis=-1)
            kept = np.zeros(self.n_group, dtype=bool)
            kept[np.argsort(-group_scores, kind="stable")[: self.topk_group]] = True
            choice = np.where(np.repeat(kept, groups.shape[1]), choice, 0.0)  # masked_fill(~mask, 0.0)
        order = np.argsort(-choice, kind="stable")[: self.top_k]
        weights = scores[order]  # without the correction bias
        if self.top_k > 1 and self.norm_topk:  # V3 only (refused for V2)
            weights = weights / (weights.sum() + 1e-20)
        return list(zip(order.tolist(), weights * self.routed_scaling))

    def deepseek_moe(self, layer, x):  # DeepseekV2MoE / DeepseekV3MoE: routed experts plus the shared ones
        p = f"model.layers.{layer}.mlp."
        logits = x @ self.w(p + "gate.weight").T
        bias = None
        if self.topk_method == "noaux_tc" and self.correction_bias:
            bias = self.w(p + "gate.e_score_correction_bias")
        out = np.zeros_like(x)
        for t in range(x.shape[0]):
            for e, wt in self.deepseek_route(logits[t], bias):
                out[t] += wt * self.mlp(f"{p}experts.{e}.", x[t], layer, "expert", e, t)
        if self.n_shared:
            out += self.mlp(p + "shared_experts.", x, layer, "shared_ffn")
        return out

    def mla(self, layer, x):  # DeepseekV2Attention (the hub's, eager): multi-head latent attention, unabsorbed
        p = f"model.layers.{layer}.self_attn."
        T, H = x.shape[0], self.heads

        def linear(y, name, bias=False):
            out = y @ self.w(p + name + ".weight").T
            return out + self.w(p + name + ".bias") if bias else out

        # The quantized inputs (gemm_input's "qkv"): q_proj's, or q_a_proj's and q_b_proj's; then kv_a's.
        if self.q_lora is None:
            q = linear(self.gemm_input(x, layer, "qkv", 0), "q_proj")
        else:
            q_latent = linear(self.gemm_input(x, layer, "qkv", 0), "q_a_proj", self.qkv_bias)
            q_latent = self.rms(q_latent, self.w(p + "q_a_layernorm.weight"), self.latent_eps)
            q = linear(self.gemm_input(q_latent, layer, "qkv", 1), "q_b_proj")
        q = q.reshape(T, H, self.nope + self.rope_dim)
        q_nope, q_pe = q[..., : self.nope], q[..., self.nope :]
        kv_a = 1 if self.q_lora is None else 2
        compressed = linear(self.gemm_input(x, layer, "qkv", kv_a), "kv_a_proj_with_mqa", self.qkv_bias)
        latent, k_pe = compressed[:, : self.kv_lora], compressed[:, self.kv_lora :]
        kv = linear(self.rms(latent, self.w(p + "kv_a_layernorm.weight"), self.latent_eps), "kv_b_proj")
        kv = kv.reshape(T, H, self.nope + self.v_dim)
        k_nope, v = kv[..., : self.nope], kv[..., self.nope :]
        pos = np.arange(T, dtype=np.float64)
        q_pe, k_pe = self.rope(q_pe, pos), self.rope(k_pe[:, None, :], pos)[:, 0]  # k_pe: one for all heads
        scale = (self.nope + self.rope_dim) ** -0.5
        r = self.rope_scaling
        if r and r.get("mscale_all_dim"):  # the hub's softmax_scale under any rope_scaling
            scale *= yarn_mscale(r["factor"], r["mscale_all_dim"]) ** 2
        scores = (np.einsum("qhd,khd->hqk", q_nope, k_nope) + np.einsum("qhd,kd->hqk", q_pe, k_pe)) * scale
        visible = np.arange(T)[None, :] <= np.arange(T)[:, None]
        scores = np.where(visible[None], scores, -np.inf)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        attn = np.einsum("hqk,khd->qhd", scores, v).reshape(T, H * self.v_dim)
        return linear(self.gemm_input(attn, layer, "o_proj"), "o_proj", self.o_bias)

    def attention(self, layer, x):
        p = self.layer_prefix(layer) + "self_attn."
        T, d = x.shape[0], self.head_dim
        x = self.gemm_input(x, layer, "qkv")  # q / k / v's (Phi-3's qkv_proj, DBRX's Wqkv) one input

        def proj(name, bias):
            y = x @ self.w(p + name + ".weight").T
            return y + self.w(p + name + ".bias") if bias else y

        q, k, v = proj("q_proj", self.qkv_bias), proj("k_proj", self.qkv_bias), proj("v_proj", self.qkv_bias)
        if self.clip is not None:  # DBRX: qkv_states.clamp(min=-clip_qkv, max=clip_qkv)
            q, k, v = (np.clip(y, -self.clip, self.clip) for y in (q, k, v))
        if self.qk_norm == "whole":  # OLMoE: over the whole projection
            q, k = self.rms(q, self.w(p + "q_norm.weight")), self.rms(k, self.w(p + "k_norm.weight"))
        q = q.reshape(T, self.heads, d)
        k = k.reshape(T, self.kv_heads, d)
        v = v.reshape(T, self.kv_heads, d)
        if self.qk_norm == "head":  # Qwen3: per head over head_dim
            q, k = self.rms(q, self.w(p + "q_norm.weight")), self.rms(k, self.w(p + "k_norm.weight"))
        if self.llama4:  # Llama4TextAttention
            pos = np.arange(T, dtype=np.float64)
            if self.use_rope[layer]:
                q, k = self.rope(q, pos), self.rope(k, pos)
                if self.qk_norm:  # Llama4TextL2Norm after the RoPE
                    q, k = (y / np.sqrt(np.mean(y * y, axis=-1, keepdims=True) + self.eps) for y in (q, k))
            elif self.temperature:  # NoPE layers: the query at position p times log1p(floor((p + 1) / floor_scale))
                q = q * (np.log1p(np.floor((pos + 1) / self.floor_scale)) * self.attn_scale + 1)[:, None, None]
        elif not self.opt:  # OPT's positions are in its embeddings
            pos = np.arange(T, dtype=np.float64)
            if self.local_theta and self.windows[layer]:  # Gemma 3: a windowed layer's own base, default RoPE
                kept = (self.theta, self.rope_scaling)
                self.theta, self.rope_scaling = self.local_theta, None
                q, k = self.rope(q, pos), self.rope(k, pos)
                self.theta, self.rope_scaling = kept
            else:
                q, k = self.rope(q, pos), self.rope(k, pos)
        group = self.heads // self.kv_heads
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) * self.scaling
        if self.attn_cap:  # Gemma 2: soft-capped before the mask
            scores = self.attn_cap * np.tanh(scores / self.attn_cap)
        i, j = np.arange(T)[:, None], np.arange(T)[None, :]
        visible = j <= i
        if self.windows[layer]:  # query i sees keys (i - window, i]
            visible &= i - j < self.windows[layer]
        if self.chunks[layer]:  # Llama 4's chunked attention: keys of the query's chunk only
            visible &= i // self.chunks[layer] == j // self.chunks[layer]
        scores = np.where(visible[None], scores, -np.inf)
        if self.sinks:  # gpt-oss: each head's sink logit joins every row, its probability dropped
            sink = np.broadcast_to(self.w(p + "sinks")[:, None, None], (self.heads, T, 1))
            scores = np.concatenate([scores, sink], axis=-1)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        if self.sinks:
            scores = scores[..., :-1]
        attn = np.einsum("hqk,khd->qhd", scores, v).reshape(T, self.heads * d)
        o = "out_proj" if self.opt else "o_proj"
        out = self.gemm_input(attn, layer, "o_proj") @ self.w(p + o + ".weight").T
        return out + self.w(p + o + ".bias") if self.o_bias else out

    def index_records(self, quantization):
        """A sequence's quantization record ([position][layer] -> entries) by (position, layer, gemm, expert)."""
        entries = {}
        if self.act_quant_dropped:
            return entries
        for position, layers in enumerate(quantization or []):
            for layer, records in enumerate(layers):
                for e in records:
                    entries[(position, layer, e["gemm"], e.get("expert"))] = e
        if entries and self.act_quant is None:
            raise ValueError("a quantization record for a checkpoint whose quantization_config quantizes no input")
        return entries

    def logits(self, tokens, prompt_len=None, quantization=None):
        """The logits of every position of `tokens`. prompt_len: dynamic NTK's prompt (default: every token);
        quantization: duplex's record of the GEMM inputs its xPU quantized for this sequence ([position][layer]
        -> entries; gemm_input), ignored when activation_quant is dropped."""
        self.prompt_len = len(tokens) if prompt_len is None else prompt_len
        self.records = self.index_records(quantization)
        top = "model.decoder." if self.opt else "model."
        x = self.w(top + "embed_tokens.weight")[np.array(tokens)] * self.embed_scale
        if self.positions:
            x = x + self.w(top + "embed_positions.weight")[np.arange(len(tokens)) + 2]
        attn_norm, mlp_norm = (
            ("self_attn_layer_norm", "final_layer_norm") if self.opt else ("input_layernorm", "post_attention_layernorm"))
        if self.gemma2:
            mlp_norm = "pre_feedforward_layernorm"
        for layer in range(self.layers):
            p = self.layer_prefix(layer)
            attention = self.mla if self.deepseek else self.attention
            a = attention(layer, self.norm(x, p + attn_norm))
            x = x + (self.norm(a, p + "post_attention_layernorm") if self.gemma2 else a)
            n = self.norm(x, p + mlp_norm)
            if self.is_moe_layer(layer):
                moe = self.deepseek_moe if self.deepseek else self.llama4_moe if self.llama4 else self.sparse_moe
                f = moe(layer, n)
            elif self.layer_norm:
                f = self.two_matrix_mlp(layer, n)
            else:
                f = self.mlp(p + ("feed_forward." if self.llama4 else "mlp."), n, layer)
            x = x + (self.norm(f, p + "post_feedforward_layernorm") if self.gemma2 else f)
        x = self.norm(x, "model.decoder.final_layer_norm" if self.opt else "model.norm")
        head = self.w(top + "embed_tokens.weight") if self.tied else self.w("lm_head.weight")
        logits = x @ head.T + (self.w("lm_head.bias") if self.lm_head_bias else 0.0)
        if self.final_cap:  # Gemma 2
            logits = self.final_cap * np.tanh(logits / self.final_cap)
        return logits


def compare(model, run):
    """(ok, message): duplex's logits and tokens against the float64 forward along duplex's tokens."""
    worst, bound, ties = 0.0, 0.0, []
    records = run.get("quantization") or []  # per request; empty without W8A8 activation quantization
    model.input_ratio, model.forced_inputs = 0.0, 0
    for r, prompt in enumerate(PROMPTS):
        generated = run["tokens"][r]
        record = records[r] if r < len(records) else None
        ref = model.logits(prompt + generated[:-1], len(prompt), record)[len(prompt) - 1 :]
        got = np.array(run["logits"][r], dtype=np.float64)
        err = np.abs(got - ref)
        worst = max(worst, float(err.max()))
        bound = max(bound, RELATIVE_BOUND * max(1.0, float(np.abs(ref).max())))
        for i, token in enumerate(generated):
            best = int(np.argmax(ref[i]))
            if token != best:
                ties.append((r, i, float(ref[i, best] - ref[i, token]), float(err[i].max())))
    unexplained = [t for t in ties if t[2] > 2 * t[3]]
    # Every recorded input must have been taken (one the forward never reached: a GEMM it does not mark).
    recorded = 0 if model.act_quant_dropped else sum(
        len(e["inputs"]) for request in records for position in request for layer in position for e in layer)
    ok = worst <= bound and not unexplained and model.input_ratio <= 1.0 and model.forced_inputs == recorded
    msg = f"max |logit err| {worst:.4g} (bound {bound:.4g}), near ties {len(ties)}, unexplained {len(unexplained)}"
    if recorded:  # duplex's quantized GEMM inputs taken: the worst of their errors over its bound
        msg += (f", quantized inputs {model.forced_inputs} of {recorded} (max |input err| / bound "
                f"{model.input_ratio:.3g})")
    return ok, msg


def dropped_feature(model):
    if model.fp8:  # the block (or row) scales of its FP8 (or INT8) matrices
        return "fp8_scales"
    if model.int4:  # the zero points of its 4-bit matrices
        return "int4_zeros"
    if model.bnb_fp4:  # the FP4 code (read as NF4's): the scales are NF4's path, which its models drop
        return "bnb4_code"
    if model.bnb4:  # the block scales of its NF4 matrices (double quantization: their nested scales)
        return "bnb4_scales"
    if model.bnb8:  # the row absmax (SCB) of its LLM.int8() matrices
        return "bnb8_scales"
    if model.llama4:  # its own features first: the router's input scaling, then what the test's sequences reach
        longest = max(map(len, PROMPTS)) + NEW_TOKENS - 1  # the tokens of compare's longest forward
        if any(model.is_moe_layer(layer) for layer in range(model.layers)):
            return "router_input"
        if any(chunk and chunk < longest for chunk in model.chunks):
            return "chunked_attention"
        if model.temperature and not all(model.use_rope) and model.floor_scale <= longest:
            return "attn_temperature"
        if any(model.use_rope):
            return "rope_interleave"
    if model.gemma3:
        return "local_rope"
    if model.rope_scaling:
        return "rope_scaling"
    if model.partial < 1.0:
        return "partial_rotary"
    if model.deepseek:
        if model.experts and model.topk_method == "noaux_tc":
            return "correction_bias"
        if model.experts and model.topk_method == "group_limited_greedy" and model.topk_group < model.n_group:
            return "group_limit"
        if model.experts and model.routed_scaling != 1:
            return "routed_scaling"
        return "rope_interleave"
    if model.gemma2 and model.attn_cap:
        return "attn_softcap"
    if model.sinks:
        return "sinks"
    if model.gemma:
        return "gain_offset"
    if model.sparsemixer:
        return "sparsemixer"
    if model.shared:
        return "shared_gate"
    if model.qk_norm:
        return "qk_norm"
    if model.positions:
        return "positions"
    if model.mlp_bias:
        return "mlp_bias"
    if model.qkv_bias:
        return "qkv_bias"
    if model.clip is not None:
        return "clip_qkv"
    if model.moe:
        return "norm_topk"
    if any(model.windows):
        return "window"
    if model.act not in ("silu", "swish"):
        return "activation"
    return None


def main(argv):
    duplex, args = argv[1], argv[2:]
    tests = [a for a in args if a == "--self-test" or a.startswith("--self-test=")]
    self_test = bool(tests)
    forced = [f for a in tests for f in a.partition("=")[2].split(",") if f]  # features named by hand
    cases = [a for a in args if a not in tests]
    failures = 0
    for case in cases:
        parts = case.split("@")
        model_name = parts[0]
        system = parts[1] if len(parts) > 1 else "gpu"
        devices = parts[2] if len(parts) > 2 else "0"  # 0: the system's own
        extra = parts[3].split("+") if len(parts) > 3 else []  # more duplex run options, "+"-separated
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = os.path.join(tmp, "ckpt")
            cmd = [duplex, "run", "--model", model_name, "--system", system, "--devices", devices,
                   "--max-new-tokens", str(NEW_TOKENS), "--save-weights", ckpt, "--save-shards", "2",
                   "--json", "--logits"] + extra
            for p in PROMPTS:
                cmd += ["--prompt", ",".join(map(str, p))]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"FAIL {case}: duplex run exited {proc.returncode}: {proc.stderr.strip()}")
                failures += 1
                continue
            run = json.loads(proc.stdout)
            config, tensors = read_checkpoint(ckpt)
            ok, msg = compare(HfModel(config, tensors), run)
            print(f"{'PASS' if ok else 'FAIL'} {case} ({config['model_type']}): {msg}")
            failures += 0 if ok else 1
            if self_test:
                for feature in forced or [dropped_feature(HfModel(config, tensors))]:
                    if feature is None:
                        continue
                    ok, msg = compare(HfModel(config, tensors, drop=feature), run)
                    print(f"{'FAIL' if ok else 'PASS'} {case} without {feature} must differ: {msg}")
                    failures += 1 if ok else 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
