#pragma once
// safetensors files (https://github.com/huggingface/safetensors, format: 8-byte little-endian header length N,
// N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end)}, "__metadata__": {...}}, then the raw
// tensor bytes, offsets relative to the end of the header).
//
// Reading is strict: every tensor the ModelSpec needs must be present with dtype F16, BF16 or F32 and exactly
// the expected shape, its byte range inside the file and of the right size; no unexpected tensor. BF16 and F32
// tensors are rounded to FP16 (the emulated devices compute in FP16; the weights' source then says so), and a
// value FP16 cannot hold (beyond +-65504, inf, NaN) is an error. Every violation is a duplex::Error naming the
// file and the tensor.
#include <string>

#include "duplex/runtime/functional/model_weights.hpp"

namespace duplex::runtime::functional {

// Writes every tensor of `weights` as F16 (little-endian), in name order. Throws duplex::Error when the file
// cannot be written.
void write_safetensors(const std::string& path, const ModelWeights& weights);

// Reads the tensors `spec` needs from `path`.
ModelWeights read_safetensors(const std::string& path, const compiler::ModelSpec& spec);

// A checkpoint directory in HF layout: `config.json` (the ModelSpec, rms_norm_eps, rope_theta) beside the
// safetensors file. `path` is the .safetensors file or the directory holding model.safetensors.
ModelWeights load_checkpoint(const std::string& path);

// Writes `weights` as <dir>/model.safetensors plus <dir>/config.json (model_type mixtral or llama).
void write_checkpoint(const std::string& dir, const ModelWeights& weights);

}  // namespace duplex::runtime::functional
