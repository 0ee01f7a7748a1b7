#pragma once
// Parses the --routing option shared by commands: "uniform", "zipf:S" (S > 0) or "counts:a,b,c" (tokens per
// expert, one MoE layer's worth, repeated for every layer). Throws duplex::Error naming the expected form.
#include <cstdint>
#include <string>

#include "duplex/compiler/batch.hpp"
#include "duplex/compiler/model_spec.hpp"

namespace duplex::host {

compiler::Routing parse_routing(const std::string& text);

// parse_routing, or for "trace:FILE" (a routing trace CSV, step,layer,expert,count, e.g. duplex run
// --routing-trace's) its first recorded step scaled to `tokens` tokens of `model` (the simulator's replay:
// largest remainder per layer), as per-layer counts. Throws duplex::Error naming the file when the trace does
// not fit the model, or for a trace with a dense model.
compiler::Routing routing_for_step(const std::string& text, const compiler::ModelSpec& model,
                                   std::int64_t tokens);

}  // namespace duplex::host
