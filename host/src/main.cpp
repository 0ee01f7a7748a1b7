// duplex: the command-line front end. Subcommands are registered from their own files (commands.hpp).
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>

#include "commands.hpp"
#include "duplex/base/error.hpp"
#include "duplex/base/log.hpp"

int main(int argc, char** argv) {
  CLI::App app{"duplex: xPU + Logic-PIM co-design toolkit (compile, simulate, run, memtest, config)"};
  app.require_subcommand(1);
  int verbosity = 0;
  app.add_flag("-v,--verbose", verbosity, "More log output (-vv for debug)");
  duplex::host::add_compile_command(app);
  duplex::host::add_config_command(app);
  duplex::host::add_simulate_command(app);
  duplex::host::add_sweep_command(app);
  duplex::host::add_report_command(app);
  duplex::host::add_run_command(app);
  duplex::host::add_memtest_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const duplex::Error& e) {
    std::fprintf(stderr, "duplex: error: %s\n", e.what());
    return 1;
  } catch (const duplex::InternalError& e) {
    std::fprintf(stderr, "duplex: %s\n", e.what());
    return 3;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "duplex: unexpected error: %s\n", e.what());
    return 3;
  }
  // Output that did not reach its destination (a full disk, a closed pipe) is a failure, not a success.
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    std::fprintf(stderr, "duplex: error: cannot write the output to stdout: %s\n", std::strerror(errno));
    return 1;
  }
  return 0;
}
