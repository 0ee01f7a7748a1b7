#pragma once
// Parses the --routing option shared by commands: "uniform", "zipf:S" (S > 0) or "counts:a,b,c" (tokens per
// expert, one MoE layer's worth, repeated for every layer). Throws duplex::Error naming the expected form.
#include <string>

#include "duplex/compiler/batch.hpp"

namespace duplex::host {

compiler::Routing parse_routing(const std::string& text);

}  // namespace duplex::host
