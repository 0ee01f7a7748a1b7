#pragma once
// Reading a sweep's result folder for `duplex report`, strictly: a missing, unreadable or malformed file,
// or a field the report needs that is absent or of the wrong type, is a duplex::Error naming the file (and
// the field). A point recorded as failed is not an error: the report shows it as failed.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace duplex::host {

struct PointRecord {
  std::string id, file;
  std::string model, system, load;
  std::int64_t input_len = 0, output_len = 0, batch = 0;
  bool ok = false;
  std::string error;                                  // failed points
  nlohmann::json result, roofs, steps, op_kinds, timeline;  // ok points (schema: sweep_point.hpp)
  // The point's setting without model and system, e.g. "1024/1024 b64 closed".
  std::string setting() const;
  double metric(const char* key, const char* sub = nullptr) const;  // a number from `result`
};

struct ResultFolder {
  std::string dir, study, description;
  nlohmann::json options;
  std::vector<std::string> models, systems;  // in study order
  std::vector<PointRecord> points;           // in study order
};

ResultFolder load_result_folder(const std::string& dir);

}  // namespace duplex::host
