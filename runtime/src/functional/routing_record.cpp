#include "duplex/runtime/functional/routing_record.hpp"

#include "duplex/base/error.hpp"

namespace duplex::runtime::functional {

std::vector<std::vector<std::int64_t>> expert_load(const ExecutedRouting& routing, int experts) {
  std::vector<std::vector<std::int64_t>> load;
  for (const auto& request : routing)
    for (const auto& position : request)
      for (std::size_t layer = 0; layer < position.size(); ++layer) {
        if (load.size() <= layer)
          load.resize(layer + 1, std::vector<std::int64_t>(static_cast<std::size_t>(experts)));
        for (std::int32_t e : position[layer].experts) {
          DUPLEX_ASSERT(e >= 0 && e < experts, "a routed expert outside the model's");
          ++load[layer][static_cast<std::size_t>(e)];
        }
      }
  return load;
}

}  // namespace duplex::runtime::functional
