#include "duplex/base/log.hpp"

#include <atomic>
#include <cstdio>

namespace duplex {
namespace {
std::atomic<LogLevel> g_level{LogLevel::kWarn};
}

void set_log_level(LogLevel level) { g_level.store(level); }
LogLevel log_level() { return g_level.load(); }

void log_line(LogLevel level, std::string_view message) {
  static constexpr const char* kNames[] = {"debug", "info", "warning", "error", ""};
  std::fprintf(stderr, "duplex: %s: %.*s\n", kNames[static_cast<int>(level)], static_cast<int>(message.size()),
               message.data());
}

}  // namespace duplex
